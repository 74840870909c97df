"""Rate limits: one interface, `await limiter.check(key)` (0 when the request is admitted, else
the seconds until one would be), used by every surface (the HTTP middleware for REST and
GraphQL, and every operation sent over a WebSocket: `runwatch.limits`, `runwatch.ws`).

Three stores behind it:

- `RateLimiter` (memory): counts in this process, a fixed window per key; with N replicas a
  token may get N times the limit. The SQLite default (one process).
- `PostgresRateLimiter`: counts in the `rate_limit_window` table (migration 0009), one atomic
  statement per check; the limit holds for every replica on the database.
- `RedisRateLimiter`: counts in Redis, one Lua script per check; same guarantee.

The shared stores use a sliding window counter: a key's count in the current fixed window
(aligned to the epoch) plus its count in the previous window weighted by how much of that window
still overlaps the last `window` seconds. A request is admitted, and counted, only if that
estimate stays within the limit, so over any `window` seconds a key gets about `limit` requests
(never the 2x burst of a plain fixed window at its boundary). Windows are numbered by each
replica's wall clock: replicas' clocks should agree to well under a window (NTP does).

Leases: a process takes its places from a shared store a few at a time. When a key has none
left in this window, the check asks the store for `lease` places at once (`lease` = the limit
/ `LEASE_FRACTION`, between 1 and `MAX_LEASE`) and admits the next `lease - 1` requests of that
key in the same window from memory, with no round trip. A place is counted in the store before
it is used, so the limit is never exceeded; places leased and not used by the end of the window
are lost, so a deployment of N processes may admit up to N * (lease - 1) fewer than the limit
in a window (2 % with two processes). When the store cannot grant a whole lease, the check asks
for one place (exact near the limit) and asks for single places for the rest of that window.
Limits under `2 * LEASE_FRACTION` a minute have a lease of 1: every request is one check.

Failure policy: when the shared store cannot be reached (or answers an error), the request is
admitted (fail open: a rate limit must not take the service down), `failures` counts it, and a
warning is logged at most once per `WARN_INTERVAL_SECONDS`.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Protocol

log = logging.getLogger("runwatch.rate_limits")

WINDOW_SECONDS = 60.0
MAX_TRACKED_KEYS = 100_000
WARN_INTERVAL_SECONDS = 60.0
# Old windows are deleted from PostgreSQL at most this often per process (one indexed DELETE).
CLEANUP_INTERVAL_SECONDS = 60.0
# Places taken from a shared store at once: a lease is this fraction of the limit (at least 1,
# at most MAX_LEASE).
LEASE_FRACTION = 100
MAX_LEASE = 100
# A Redis that does not answer within this long counts as unreachable (fail open).
REDIS_TIMEOUT_SECONDS = 0.5
TABLE = "rate_limit_window"


class Limiter(Protocol):
    limit: int

    async def check(self, key: Hashable) -> float:
        """Count a request of `key`: 0 when it is admitted, else the seconds until it would be."""
        ...


def store_key(key: Hashable) -> str:
    """A rate key (`rate_key`'s tuples, or anything else) as the text a shared store keys by."""
    if isinstance(key, tuple):
        return ":".join(str(part) for part in key)
    return str(key)


class RateLimiter:
    """At most `limit` requests per key in a fixed window of `window` seconds that starts at
    the key's first request (so `Retry-After` is exact). Across a window boundary a key can
    get up to twice `limit` requests in a short time: the price of keeping two numbers per key.

    Memory is bounded: windows are kept in the order they started (a new window re-inserts its
    key at the end), so the expired ones are always at the front and are dropped as new windows
    open; with `max_keys` live windows, the oldest is dropped (that key starts afresh).
    `clock` (monotonic seconds) is for tests.
    """

    backend = "memory"

    def __init__(
        self, limit: int, *, window: float = WINDOW_SECONDS, max_keys: int = MAX_TRACKED_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        self._windows: OrderedDict[Hashable, list[float]] = OrderedDict()  # key -> [start, n]

    def __len__(self) -> int:
        return len(self._windows)

    async def check(self, key: Hashable) -> float:
        return self.hit(key)

    def hit(self, key: Hashable) -> float:
        """Count a request of `key`: 0 when it is allowed, else the seconds until it would be."""
        now = self.clock()
        entry = self._windows.get(key)
        if entry is not None and now - entry[0] >= self.window:
            del self._windows[key]
            entry = None
        if entry is None:
            self._prune(now)
            self._windows[key] = [now, 1]
            return 0.0
        if entry[1] >= self.limit:
            return max(entry[0] + self.window - now, 0.001)
        entry[1] += 1
        return 0.0

    def _prune(self, now: float) -> None:
        windows = self._windows
        while windows:
            start = next(iter(windows.values()))[0]
            if now - start < self.window and len(windows) < self.max_keys:
                return
            windows.popitem(last=False)


def sliding_wait(previous: int, current: int, elapsed: float, window: float, limit: int) -> float:
    """Seconds from now until a key with `previous` requests in the last window and `current`
    in this one (`elapsed` seconds into it) gets its next request admitted (at least 1 ms)."""
    # Still in this window: previous * (1 - (elapsed + t) / window) + current + 1 <= limit.
    if current + 1 <= limit and previous > 0:
        t = window * (1 - (limit - current - 1) / previous) - elapsed
        if t < window - elapsed:
            return max(t, 0.001)
    # In the next window, this one's count is the weighted one.
    rest = window - elapsed
    if current <= 0:
        return max(rest, 0.001)
    return max(rest + max(window * (1 - (limit - 1) / current), 0.0), 0.001)


class SharedLimiter:
    """What the PostgreSQL and Redis stores share: the sliding window arithmetic, the
    fail-open policy and its counters."""

    backend = "shared"

    def __init__(
        self, limit: int, *, window: float = WINDOW_SECONDS, prefix: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limit = limit
        self.window = window
        self.prefix = prefix
        self.clock = clock
        self.failures = 0  # checks admitted because the store could not be reached
        self._warned_at: float | None = None
        self.lease = max(1, min(MAX_LEASE, limit // LEASE_FRACTION))
        # key -> (window number, places left from its lease, or None: single places only)
        self._leases: OrderedDict[str, tuple[int, int | None]] = OrderedDict()

    async def check(self, key: Hashable) -> float:
        now = self.clock()
        number = math.floor(now / self.window)
        elapsed = now - number * self.window
        weight = 1.0 - elapsed / self.window
        stored = self.prefix + store_key(key)
        held = self._leases.get(stored)
        if held is not None and held[0] != number:
            held = None  # a past window's places are gone
        if held is not None and held[1]:
            self._leases[stored] = (number, held[1] - 1)
            return 0.0
        single = held is not None and held[1] is None  # no whole lease was left this window
        try:
            if self.lease > 1 and not single:
                admitted, previous, current = await self._count(
                    stored, number, weight, self.lease)
                if admitted:
                    self._hold(stored, number, self.lease - 1)
                    return 0.0
                self._hold(stored, number, None)  # not a whole lease left: one at a time
            admitted, previous, current = await self._count(stored, number, weight, 1)
        except Exception as exc:  # any failure of the store: fail open
            self._fail_open(exc)
            return 0.0
        if admitted:
            return 0.0
        return sliding_wait(previous, current, elapsed, self.window, self.limit)

    def _hold(self, key: str, number: int, places: int | None) -> None:
        self._leases[key] = (number, places)
        self._leases.move_to_end(key)
        while len(self._leases) > MAX_TRACKED_KEYS:
            self._leases.popitem(last=False)

    def _fail_open(self, exc: BaseException) -> None:
        self.failures += 1
        now = time.monotonic()
        if self._warned_at is None or now - self._warned_at >= WARN_INTERVAL_SECONDS:
            self._warned_at = now
            log.warning("rate limit store (%s) unreachable, admitting requests without a "
                        "limit (%d so far): %s", self.backend, self.failures, exc)

    async def _count(self, key: str, number: int, weight: float,
                     places: int) -> tuple[bool, int, int]:
        """Admit and count `places` requests of `key` in window `number` if the estimate allows
        them all: (admitted, the previous window's count, this window's count before)."""
        raise NotImplementedError

    async def close(self) -> None:
        return None


# One statement per check. `prev`: the previous window's count. The INSERT … SELECT adds the
# window's row only if the estimate allows the first $6 places; ON CONFLICT adds $6 to an
# existing row only if the estimate with the row's current count (read under the row lock, so
# concurrent replicas cannot both take the last place) allows it. The outer SELECT reads this
# window's count as it was before the statement, for Retry-After.
_PG_CHECK = f"""
WITH prev AS (
    SELECT COALESCE((SELECT count FROM {TABLE} WHERE window_start = $3 AND key = $1), 0) AS n
), up AS (
    INSERT INTO {TABLE} AS w (window_start, key, count)
    SELECT $2, $1, $6::int FROM prev WHERE prev.n * $4::float8 + $6::int <= $5
    ON CONFLICT (window_start, key) DO UPDATE SET count = w.count + $6::int
    WHERE (SELECT n FROM prev) * $4::float8 + w.count + $6::int <= $5
    RETURNING w.count
)
SELECT (SELECT count FROM up) AS admitted, (SELECT n FROM prev) AS previous,
       COALESCE((SELECT count FROM {TABLE} WHERE window_start = $2 AND key = $1), 0) AS current
"""
_PG_CLEANUP = f"DELETE FROM {TABLE} WHERE window_start < $1"


class PostgresRateLimiter(SharedLimiter):
    """Counts in PostgreSQL's `rate_limit_window` (primary key (window_start, key)): one
    statement per check; windows older than the previous one are deleted at most once a
    minute per process, by a range on the primary key's first column."""

    backend = "postgres"

    def __init__(self, limit: int, *, connection: str = "default", **kwargs: Any) -> None:
        super().__init__(limit, **kwargs)
        self.connection = connection
        self._cleaned_at = -math.inf

    async def _count(self, key: str, number: int, weight: float,
                     places: int) -> tuple[bool, int, int]:
        from tortoise import connections

        client = connections.get(self.connection)
        now = time.monotonic()
        if now - self._cleaned_at >= CLEANUP_INTERVAL_SECONDS:
            self._cleaned_at = now
            await client.execute_query(_PG_CLEANUP, [number - 1])
        _, rows = await client.execute_query(
            _PG_CHECK, [key, number, number - 1, weight, self.limit, places])
        row = rows[0]
        return row["admitted"] is not None, int(row["previous"]), int(row["current"])


# KEYS[1]: this window's counter, KEYS[2]: the previous one's; ARGV: weight, limit, ttl,
# places.
_REDIS_CHECK = """
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local places = tonumber(ARGV[4])
if previous * tonumber(ARGV[1]) + current + places <= tonumber(ARGV[2]) then
    redis.call('INCRBY', KEYS[1], places)
    redis.call('EXPIRE', KEYS[1], ARGV[3])
    return {1, previous, current}
end
return {0, previous, current}
"""


class RedisRateLimiter(SharedLimiter):
    """Counts in Redis: one key per token and window, expiring after two windows; one Lua
    script per check (atomic on the server). `url`: `redis://host:port/db`."""

    backend = "redis"

    def __init__(self, limit: int, *, url: str, prefix: str = "runwatch:rl:",
                 timeout: float = REDIS_TIMEOUT_SECONDS, **kwargs: Any) -> None:
        super().__init__(limit, prefix=prefix, **kwargs)
        import redis.asyncio as aioredis

        self.client = aioredis.Redis.from_url(
            url, socket_connect_timeout=timeout, socket_timeout=timeout,
            retry_on_timeout=False)
        self.script = self.client.register_script(_REDIS_CHECK)

    async def _count(self, key: str, number: int, weight: float,
                     places: int) -> tuple[bool, int, int]:
        ttl = max(1, math.ceil(self.window * 2))
        admitted, previous, current = await self.script(
            keys=[f"{key}:{number}", f"{key}:{number - 1}"],
            args=[repr(weight), self.limit, ttl, places])
        return bool(admitted), int(previous), int(current)

    async def close(self) -> None:
        await self.client.aclose()


def build_limiter(backend: str, per_minute: int, *, redis_url: str = "",
                  prefix: str = "runwatch:rl:", window: float = WINDOW_SECONDS) -> Limiter | None:
    """The limiter `backend` ("memory", "postgres" or "redis") names; None when the limit is
    off (`per_minute` 0). `prefix` starts every key in the shared store; `window` scales the
    window (the limit is then per `window`)."""
    if per_minute <= 0:
        return None
    if backend == "postgres":
        return PostgresRateLimiter(per_minute, window=window, prefix=prefix)
    if backend == "redis":
        return RedisRateLimiter(per_minute, url=redis_url, window=window, prefix=prefix)
    return RateLimiter(per_minute, window=window)
