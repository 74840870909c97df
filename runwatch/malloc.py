"""The memory of long-lived runwatch processes (`serve`, `worker`): the C allocator's arenas
and heap, and the cyclic garbage collector's view of what start-up built.

glibc's malloc gives every thread that allocates its own arena, up to eight per core, and
memory freed in one arena is reused only by allocations made there. runwatch serves from one
event-loop thread, but other threads allocate too (uvloop's libuv pool and the loop's
executor resolve names and run blocking calls, aiosqlite has its own), so a long-running
process can keep several half-empty arenas whose sum creeps up over hours while its Python
heap stays flat. A usual cap for such services; it changes nothing for a process with one
thread (a `runwatch worker` delivering to addresses given as IP literals has only one).

`cap_arenas` caps them at `ARENAS` for this process (`mallopt(M_ARENA_MAX)`) and for the
processes it starts (`MALLOC_ARENA_MAX`, read by glibc when a process starts: the API
processes of `serve --workers N`). An operator's own `MALLOC_ARENA_MAX` is left as it is;
`MALLOC_ARENA_MAX=0` restores glibc's default.

Even with one thread the main heap grows: the one-hour soak's `runwatch worker` (one thread)
gained 0.3 MB a minute in its `[heap]` mapping while its anonymous mappings (Python's own
arenas) stayed flat and tracemalloc saw a flat Python heap. That is memory freed in the
middle of the heap, which glibc gives back only from its top. `trim_periodically` calls
`malloc_trim(0)` every `TRIM_SECONDS`, which hands every free page inside the heap back to the
system; `serve` (each serving process) and `worker` run it. Without glibc (musl, macOS)
neither does anything.

Start-up builds hundreds of thousands of objects that live as long as the process (the
GraphQL schema and its graphql-core types, the ORM's models, every module imported). The
cyclic collector walks all of them at each full collection, which under load came every few
seconds and took tens of milliseconds: 23 µs per GraphQL request, measured with
`gc.callbacks` in a serving process under wrk (bench/README.md). `startup_frozen` collects
once and moves what survives out of the collector's reach (`gc.freeze`), after which the same
load spent 5 µs per request in collections. What start-up built is still freed by reference
counting when dropped; a cycle among those objects dropped while serving would stay until
shutdown (none is known: they are the process's own fixtures).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import gc
import os
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any

ARENAS = 2
M_ARENA_MAX = -8  # glibc's malloc.h
TRIM_SECONDS = 60.0


@functools.cache
def _libc() -> Any:
    """glibc, or None (not Linux, or a C library without mallopt and malloc_trim)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def cap_arenas(env: MutableMapping[str, str] | None = None) -> int | None:
    """Cap malloc arenas at `ARENAS` unless `MALLOC_ARENA_MAX` is set; the cap now in force
    for this process (None: glibc's default, or not glibc)."""
    env = os.environ if env is None else env
    chosen = env.get("MALLOC_ARENA_MAX", "").strip()
    if chosen:  # glibc read it when this process started
        return int(chosen) if chosen.isdigit() and int(chosen) > 0 else None
    libc = _libc()
    if libc is None or libc.mallopt(M_ARENA_MAX, ARENAS) != 1:
        return None
    env["MALLOC_ARENA_MAX"] = str(ARENAS)  # for the processes this one starts
    return ARENAS


@contextlib.contextmanager
def startup_frozen() -> Iterator[int]:
    """Collect once, then leave every object alive now out of the collections made while
    the block runs (enter it when start-up is over); yields how many were frozen. On exit
    they are collectable again, so that a process that builds several apps in turn (the
    test suite) does not keep the cycles of the ones it dropped."""
    gc.collect()
    gc.freeze()
    try:
        yield gc.get_freeze_count()
    finally:
        gc.unfreeze()


def trim() -> bool:
    """Give the free pages inside the C heap back to the system; whether glibc released any."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


async def trim_periodically(seconds: float = TRIM_SECONDS) -> None:
    """`trim()` every `seconds` until cancelled (a few milliseconds for a heap of tens of MB,
    on the event loop: nothing else runs meanwhile, which keeps the heap still)."""
    if _libc() is None:
        return
    while True:
        await asyncio.sleep(seconds)
        trim()


@contextlib.asynccontextmanager
async def trimming(seconds: float = TRIM_SECONDS):  # type: ignore[no-untyped-def]
    """`trim_periodically` for as long as the block runs."""
    task = asyncio.create_task(trim_periodically(seconds))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
