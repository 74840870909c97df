"""The C allocator of long-lived runwatch processes (`serve`, `worker`).

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
`MALLOC_ARENA_MAX=0` restores glibc's default. Without glibc (musl, macOS) nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from collections.abc import MutableMapping

ARENAS = 2
M_ARENA_MAX = -8  # glibc's malloc.h


def cap_arenas(env: MutableMapping[str, str] | None = None) -> int | None:
    """Cap malloc arenas at `ARENAS` unless `MALLOC_ARENA_MAX` is set; the cap now in force
    for this process (None: glibc's default, or not glibc)."""
    env = os.environ if env is None else env
    chosen = env.get("MALLOC_ARENA_MAX", "").strip()
    if chosen:  # glibc read it when this process started
        return int(chosen) if chosen.isdigit() and int(chosen) > 0 else None
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(M_ARENA_MAX, ARENAS) != 1:
        return None
    env["MALLOC_ARENA_MAX"] = str(ARENAS)  # for the processes this one starts
    return ARENAS
