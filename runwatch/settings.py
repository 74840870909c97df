"""Settings: the only module that reads the environment.

Every knob has a default that makes `runwatch serve` usable on a fresh machine: a SQLite file in
runwatch's data directory (the same file whatever directory a command is run from), the GraphiQL
console on, background workers running inside the server.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

DEFAULT_DATABASE_URL = "sqlite://runwatch.db"  # when no data directory can be found (no HOME)
DATABASE_FILE = "runwatch.db"
SQLITE_BUSY_TIMEOUT_MS = 10_000


class SettingsError(ValueError):
    """A setting has a value runwatch cannot use; the message names the variable."""


def normalise_database_url(url: str) -> str:
    """Accept the URL spellings people paste and hand Tortoise the one it understands.

    `postgres://`, `postgresql://` and `postgresql+asyncpg://` all mean asyncpg; SQLite URLs get
    a busy timeout so that concurrent writers wait for the lock instead of failing at once.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in {"postgres", "postgresql", "postgresql+asyncpg", "asyncpg"}:
        return urlunsplit(("asyncpg", parts.netloc, parts.path, parts.query, parts.fragment))
    if scheme == "sqlite":
        query = dict(parse_qsl(parts.query))
        query.setdefault("busy_timeout", str(SQLITE_BUSY_TIMEOUT_MS))
        # urlsplit keeps "sqlite://runwatch.db" as netloc="runwatch.db"; rebuild it verbatim.
        base = url.split("?", 1)[0]
        return f"{base}?{urlencode(query)}"
    raise SettingsError(
        f"DATABASE_URL scheme {parts.scheme!r} is not supported: use sqlite://PATH or "
        "postgres://USER@HOST:PORT/DB"
    )


def data_dir(env: dict[str, str]) -> Path | None:
    """Where the embedded database lives when `DATABASE_URL` is not set: `$RUNWATCH_HOME`, else
    `$XDG_DATA_HOME/runwatch`, else `~/.local/share/runwatch`; None without a home directory."""
    if env.get("RUNWATCH_HOME"):
        return Path(env["RUNWATCH_HOME"]).expanduser().absolute()
    if env.get("XDG_DATA_HOME"):
        return Path(env["XDG_DATA_HOME"]).expanduser().absolute() / "runwatch"
    if env.get("HOME"):
        return Path(env["HOME"]) / ".local" / "share" / "runwatch"
    return None


def default_database(env: dict[str, str], cwd: Path | None = None) -> tuple[str, str | None]:
    """The database URL when `DATABASE_URL` is not set, and a note for the operator (or None).

    The file in the data directory, so that every command finds the same database from any
    directory. One exception keeps existing installations working: before the data directory,
    the default was `./runwatch.db`; when that file exists in the working directory and the
    data directory has none (and `RUNWATCH_HOME` is not set), it is used, with a note saying
    how to move it.
    """
    home = data_dir(env)
    if home is None:
        return DEFAULT_DATABASE_URL, None
    target = home / DATABASE_FILE
    legacy = (cwd or Path.cwd()) / DATABASE_FILE
    if not env.get("RUNWATCH_HOME") and not target.exists() and legacy.is_file():
        return f"sqlite://{legacy.absolute()}", (
            f"using ./{DATABASE_FILE} in the working directory (the default before runwatch "
            f"kept its data in {home}); to use it from any directory, move it there "
            f"(mkdir -p {home} && mv {DATABASE_FILE}* {home}/) or set "
            f"DATABASE_URL=sqlite://{legacy.absolute()}")
    return f"sqlite://{target}", None


def _int(env: dict[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(env: dict[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not value >= minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _prefix(raw: str) -> str:
    """A path prefix: "" or "/something" (no trailing slash)."""
    raw = raw.strip().rstrip("/")
    if raw and (not raw.startswith("/") or " " in raw):
        raise SettingsError(f"RUNWATCH_WATCHER_PREFIX must be a path like /watcher, got {raw!r}")
    return raw


def _retention(env: dict[str, str]) -> int:
    days = _int(env, "RUNWATCH_RETENTION_DAYS", 0)
    if 0 < days < 90:
        raise SettingsError(f"RUNWATCH_RETENTION_DAYS must be 0 (keep everything) or at least "
                            f"90, got {days}")
    return days


def _bootstrap_token(raw: str) -> str:
    """`rw_<key id>_<secret>`: a key id of 1-16 letters or digits, a secret of 32+ characters
    (`runwatch token generate` prints one). The value is never echoed in the error."""
    raw = raw.strip()
    if not raw:
        return ""
    key_id, sep, secret = raw.removeprefix("rw_").partition("_")
    if not (raw.startswith("rw_") and sep and key_id.isalnum() and key_id.isascii()
            and len(key_id) <= 16 and len(secret) >= 32 and secret.isascii()
            and secret.replace("-", "").replace("_", "").isalnum()):
        raise SettingsError(
            "RUNWATCH_BOOTSTRAP_TOKEN must read rw_<key id>_<secret> (a key id of at most 16 "
            "letters or digits, a secret of at least 32 URL-safe characters); "
            "`runwatch token generate` prints one")
    return raw


def _public_url(raw: str) -> str:
    """`RUNWATCH_PUBLIC_URL`: an http(s) base address, kept without its trailing slash."""
    raw = raw.strip().rstrip("/")
    if raw and not (raw.startswith(("http://", "https://")) and len(raw) > len("https://")):
        raise SettingsError(f"RUNWATCH_PUBLIC_URL must be an http(s) address, not {raw!r}.")
    return raw


def _secrets_keys(raw: str) -> tuple[str, ...]:
    """`RUNWATCH_SECRETS_KEYS`: Fernet keys (url-safe base64 of 32 bytes), comma-separated."""
    from cryptography.fernet import Fernet

    keys = tuple(k.strip() for k in raw.split(",") if k.strip())
    for index, key in enumerate(keys):
        try:
            Fernet(key)
        except ValueError:
            raise SettingsError(
                f"RUNWATCH_SECRETS_KEYS: key {index + 1} is not a Fernet key (url-safe base64 "
                "of 32 bytes; Fernet.generate_key() makes one).") from None
    return keys


def _bool(env: dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be 1/0, true/false, yes/no or on/off, got {raw!r}")


@dataclass(frozen=True)
class Settings:
    database_url: str = normalise_database_url(DEFAULT_DATABASE_URL)
    host: str = "127.0.0.1"
    port: int = 8000
    # A run started and never completed past this window is orphaned (failed for telemetry).
    orphan_window_seconds: int = 2 * 60 * 60
    # How often the in-process reaper looks for orphaned runs; 0 disables it in this process.
    reaper_interval_seconds: int = 30
    # Whether `runwatch serve` runs the background workers itself (the embedded default).
    workers_in_serve: bool = True
    # How long an authenticated token is remembered by one process (at most 60 s, whatever
    # is set). Revocation takes at most this long to reach every replica.
    token_cache_seconds: int = 10
    graphiql: bool = True
    # The built-in status UI at `GET /` (browsers; API clients still get the JSON health).
    ui: bool = True
    # Memoise computed telemetry per process, validated by pipeline revisions on every read.
    telemetry_cache: bool = True
    # Number of most recent outcomes that must all have failed for status `error`.
    error_streak: int = 3
    recent_errors_limit: int = 10
    # Gateways: what the manifest tells them, and how long a claimed run survives without a
    # heartbeat from its gateway before the reaper times it out.
    gateway_poll_seconds: int = 5
    gateway_heartbeat_seconds: int = 30
    gateway_lease_seconds: int = 120
    # Webhooks: private and loopback targets are refused unless allowed (SSRF protection).
    webhook_allow_private: bool = False
    # The address people and receivers reach this deployment at (`RUNWATCH_PUBLIC_URL`, e.g.
    # https://runwatch.example.com): webhook bodies link to the run under it (`runUrl`).
    public_url: str = ""
    # Fernet keys that encrypt connection secrets (`RUNWATCH_SECRETS_KEYS`, comma-separated:
    # the first encrypts, every one decrypts, so keys can be rotated). None: secrets refused.
    secrets_keys: tuple[str, ...] = field(default=(), repr=False)
    webhook_timeout_seconds: int = 15
    # Deliveries one worker process sends at once (a slow receiver holds one slot).
    webhook_concurrency: int = 16
    # How often an idle worker looks for due deliveries (an enqueue in the same process wakes
    # it at once).
    webhook_poll_seconds: int = 1
    # How often a live subscription re-reads its run when nothing in this process changed it
    # (changes made through other replicas or workers).
    live_poll_seconds: float = 1.0
    # Watcher: where its routes live ("" = the documented paths at the root), how often the
    # freshness and timeliness sweeps and queue monitoring run (0 disables one), retention
    # of run history (0 keeps everything; otherwise at least 90 days), how often idle task
    # workers look for due tasks.
    watcher_prefix: str = ""
    check_interval_seconds: int = 300
    queue_monitor_interval_seconds: int = 60
    retention_days: int = 0
    retention_interval_seconds: int = 86_400
    task_poll_seconds: int = 1
    # Hardening. GraphQL cost bounds (checked before any resolver runs), batching, the
    # introspection switch; per-token rate limits (requests per minute, 0 = off: the
    # embedded SQLite default is off, PostgreSQL deployments default to 1200); request body
    # size; how long a rotated token keeps working.
    graphql_max_depth: int = 15
    graphql_max_aliases: int = 30
    graphql_max_tokens: int = 5000
    graphql_batching: bool = False
    graphql_introspection: bool = True
    # Worst-case nodes one GraphQL operation may return (0: unchecked); the longest list a
    # GraphQL variable may carry.
    graphql_max_cost: int = 200_000
    graphql_max_list_input: int = 1000
    # WebSocket: sockets one token (or one client address without a token) may hold open,
    # operations running at once on one socket and over all of a token's sockets.
    ws_max_sockets_per_token: int = 20
    ws_max_subscriptions_per_socket: int = 20
    ws_max_subscriptions_per_token: int = 100
    rate_limit_per_minute: int = 0
    max_body_bytes: int = 1_048_576
    token_rotation_overlap_seconds: int = 86_400
    # Health: how long `/ready` waits for the database before it answers 503.
    ready_timeout_seconds: float = 2.0
    # An admin token chosen by the operator (`RUNWATCH_BOOTSTRAP_TOKEN`): stored (hashed) for a
    # new organisation 1 when `serve` starts on a database without organisations; never printed.
    bootstrap_token: str = field(default="", repr=False)
    # Live updates (runwatch.services.notify): run changes published once per process (NOTIFY
    # on PostgreSQL, in memory on SQLite), coalesced per run over `live_coalesce_ms`; how often
    # the listening connection is checked; WebSocket per-message compression (~64 KB of zlib
    # state per socket when a client asks for it, so off by default).
    live_notify: bool = True
    live_coalesce_ms: int = 20
    live_listener_check_seconds: float = 5.0
    ws_compression: bool = False
    # Why this database was chosen, when the operator should know (see `default_database`).
    database_note: str | None = field(default=None, compare=False)
    # Rate limits across replicas (issue 14): where the counts live ("memory": this process,
    # the SQLite default; "postgres": the database, the PostgreSQL default; "redis", the
    # default when RUNWATCH_REDIS_URL is set), the Redis to count in, and the prefix of the
    # keys there (deployments sharing one Redis use different prefixes).
    rate_limit_backend: str = "memory"
    redis_url: str = field(default="", repr=False)
    rate_limit_key_prefix: str = "runwatch:rl:"
    # Metrics (Prometheus, `GET /metrics`): off unless asked for; an optional bearer token for
    # the scraper; organisation labels only when asked for.
    metrics: bool = False
    metrics_token: str = field(default="", repr=False)
    metrics_org_labels: bool = False
    # Several processes per host (`runwatch serve --workers N`, runwatch.supervisor): API
    # processes to run (0: one per core on PostgreSQL, one on SQLite), and how long a stopping
    # process lets in-flight requests and background work finish before giving work back.
    serve_workers: int = 0
    graceful_timeout_seconds: float = 20.0

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        note = None
        if not env.get("DATABASE_URL"):
            env["DATABASE_URL"], note = default_database(env)
        return cls(
            database_url=normalise_database_url(env["DATABASE_URL"]),
            database_note=note,
            host=env.get("RUNWATCH_HOST", "127.0.0.1"),
            # PORT: the platform's convention (containers, PaaS), when RUNWATCH_PORT is unset
            port=_int(env, "RUNWATCH_PORT", _int(env, "PORT", 8000, minimum=1), minimum=1),
            orphan_window_seconds=_int(env, "RUNWATCH_ORPHAN_WINDOW_SECONDS", 7200, minimum=60),
            reaper_interval_seconds=_int(env, "RUNWATCH_REAPER_INTERVAL_SECONDS", 30),
            workers_in_serve=_bool(env, "RUNWATCH_WORKERS_IN_SERVE", True),
            token_cache_seconds=_int(env, "RUNWATCH_TOKEN_CACHE_SECONDS", 10),
            graphiql=_bool(env, "RUNWATCH_GRAPHIQL", True),
            ui=_bool(env, "RUNWATCH_UI", True),
            telemetry_cache=_bool(env, "RUNWATCH_TELEMETRY_CACHE", True),
            error_streak=_int(env, "RUNWATCH_ERROR_STREAK", 3, minimum=1),
            recent_errors_limit=_int(env, "RUNWATCH_RECENT_ERRORS_LIMIT", 10, minimum=1),
            gateway_poll_seconds=_int(env, "RUNWATCH_GATEWAY_POLL_SECONDS", 5, minimum=1),
            gateway_heartbeat_seconds=_int(
                env, "RUNWATCH_GATEWAY_HEARTBEAT_SECONDS", 30, minimum=1),
            gateway_lease_seconds=_int(env, "RUNWATCH_GATEWAY_LEASE_SECONDS", 120, minimum=10),
            webhook_allow_private=_bool(env, "RUNWATCH_WEBHOOK_ALLOW_PRIVATE", False),
            public_url=_public_url(env.get("RUNWATCH_PUBLIC_URL", "")),
            secrets_keys=_secrets_keys(env.get("RUNWATCH_SECRETS_KEYS", "")),
            webhook_timeout_seconds=_int(env, "RUNWATCH_WEBHOOK_TIMEOUT_SECONDS", 15, minimum=1),
            webhook_concurrency=_int(env, "RUNWATCH_WEBHOOK_CONCURRENCY", 16, minimum=1),
            webhook_poll_seconds=_int(env, "RUNWATCH_WEBHOOK_POLL_SECONDS", 1, minimum=1),
            live_poll_seconds=_float(env, "RUNWATCH_LIVE_POLL_SECONDS", 1.0, minimum=0.05),
            watcher_prefix=_prefix(env.get("RUNWATCH_WATCHER_PREFIX", "")),
            check_interval_seconds=_int(env, "RUNWATCH_CHECK_INTERVAL_SECONDS", 300),
            queue_monitor_interval_seconds=_int(env, "RUNWATCH_QUEUE_MONITOR_INTERVAL_SECONDS",
                                                60),
            retention_days=_retention(env),
            retention_interval_seconds=_int(env, "RUNWATCH_RETENTION_INTERVAL_SECONDS", 86_400,
                                            minimum=60),
            task_poll_seconds=_int(env, "RUNWATCH_TASK_POLL_SECONDS", 1, minimum=1),
            graphql_max_depth=_int(env, "RUNWATCH_GRAPHQL_MAX_DEPTH", 15, minimum=1),
            graphql_max_aliases=_int(env, "RUNWATCH_GRAPHQL_MAX_ALIASES", 30, minimum=1),
            graphql_max_tokens=_int(env, "RUNWATCH_GRAPHQL_MAX_TOKENS", 5000, minimum=10),
            graphql_batching=_bool(env, "RUNWATCH_GRAPHQL_BATCHING", False),
            graphql_introspection=_bool(env, "RUNWATCH_GRAPHQL_INTROSPECTION", True),
            graphql_max_cost=_int(env, "RUNWATCH_GRAPHQL_MAX_COST", 200_000),
            graphql_max_list_input=_int(env, "RUNWATCH_GRAPHQL_MAX_LIST_INPUT", 1000,
                                        minimum=1),
            ws_max_sockets_per_token=_int(env, "RUNWATCH_WS_MAX_SOCKETS_PER_TOKEN", 20,
                                          minimum=1),
            ws_max_subscriptions_per_socket=_int(
                env, "RUNWATCH_WS_MAX_SUBSCRIPTIONS_PER_SOCKET", 20, minimum=1),
            ws_max_subscriptions_per_token=_int(
                env, "RUNWATCH_WS_MAX_SUBSCRIPTIONS_PER_TOKEN", 100, minimum=1),
            rate_limit_per_minute=_int(
                env, "RUNWATCH_RATE_LIMIT_PER_MINUTE",
                0 if normalise_database_url(env["DATABASE_URL"]).startswith("sqlite")
                else 1200),
            max_body_bytes=_int(env, "RUNWATCH_MAX_BODY_BYTES", 1_048_576, minimum=1024),
            token_rotation_overlap_seconds=_int(env, "RUNWATCH_TOKEN_ROTATION_OVERLAP_SECONDS",
                                                86_400),
            ready_timeout_seconds=_float(env, "RUNWATCH_READY_TIMEOUT_SECONDS", 2.0,
                                         minimum=0.1),
            bootstrap_token=_bootstrap_token(env.get("RUNWATCH_BOOTSTRAP_TOKEN", "")),
            # Live updates
            live_notify=_bool(env, "RUNWATCH_LIVE_NOTIFY", True),
            live_coalesce_ms=_int(env, "RUNWATCH_LIVE_COALESCE_MS", 20),
            live_listener_check_seconds=_float(env, "RUNWATCH_LIVE_LISTENER_CHECK_SECONDS", 5.0,
                                               minimum=0.1),
            ws_compression=_bool(env, "RUNWATCH_WS_COMPRESSION", False),
            # Rate limits across replicas (issue 14).
            rate_limit_backend=_rate_limit_backend(env),
            redis_url=env.get("RUNWATCH_REDIS_URL", "").strip(),
            rate_limit_key_prefix=env.get("RUNWATCH_RATE_LIMIT_KEY_PREFIX", "runwatch:rl:"),
            # Metrics
            metrics=_bool(env, "RUNWATCH_METRICS", False),
            metrics_token=env.get("RUNWATCH_METRICS_TOKEN", "").strip(),
            metrics_org_labels=_bool(env, "RUNWATCH_METRICS_ORG_LABELS", False),
            # Several processes per host (runwatch.supervisor)
            serve_workers=_int(env, "RUNWATCH_SERVE_WORKERS", 0),
            graceful_timeout_seconds=_float(env, "RUNWATCH_GRACEFUL_TIMEOUT_SECONDS", 20.0,
                                            minimum=0.0),
        )


# Rate limits across replicas (issue 14).
def _rate_limit_backend(env: dict[str, str]) -> str:
    """`RUNWATCH_RATE_LIMIT_BACKEND`: memory, postgres or redis; by default redis when
    `RUNWATCH_REDIS_URL` is set, else postgres on PostgreSQL, else memory."""
    sqlite = normalise_database_url(env["DATABASE_URL"]).startswith("sqlite")
    redis_url = env.get("RUNWATCH_REDIS_URL", "").strip()
    if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise SettingsError("RUNWATCH_REDIS_URL must read redis://HOST:PORT/DB (or rediss://, "
                            f"unix://), not {redis_url!r}")
    raw = env.get("RUNWATCH_RATE_LIMIT_BACKEND", "").strip().lower()
    if not raw:
        return "redis" if redis_url else "memory" if sqlite else "postgres"
    if raw not in {"memory", "postgres", "redis"}:
        raise SettingsError(f"RUNWATCH_RATE_LIMIT_BACKEND must be memory, postgres or redis, "
                            f"not {raw!r}")
    if raw == "postgres" and sqlite:
        raise SettingsError("RUNWATCH_RATE_LIMIT_BACKEND=postgres needs a PostgreSQL "
                            "DATABASE_URL (on SQLite use memory or redis)")
    if raw == "redis" and not redis_url:
        raise SettingsError("RUNWATCH_RATE_LIMIT_BACKEND=redis needs RUNWATCH_REDIS_URL")
    return raw
