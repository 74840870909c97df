"""The memory of long-lived processes (`runwatch.malloc`): the malloc arena cap, the heap's
trimming, start-up kept out of the cyclic collector."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys

import pytest

from runwatch import malloc

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="glibc only (mallopt)")


@glibc
def test_caps_arenas_and_tells_the_processes_it_starts():
    env: dict[str, str] = {}
    assert malloc.cap_arenas(env) == malloc.ARENAS
    assert env["MALLOC_ARENA_MAX"] == str(malloc.ARENAS)


def test_an_operators_choice_is_left_alone():
    env = {"MALLOC_ARENA_MAX": "8"}
    assert malloc.cap_arenas(env) == 8
    assert env == {"MALLOC_ARENA_MAX": "8"}
    zero = {"MALLOC_ARENA_MAX": "0"}  # glibc's default
    assert malloc.cap_arenas(zero) is None
    assert zero == {"MALLOC_ARENA_MAX": "0"}


@glibc
def test_a_started_process_inherits_the_cap():
    code = ("import os; from runwatch import malloc; malloc.cap_arenas(); "
            "import subprocess, sys; print(subprocess.run([sys.executable, '-c', "
            "'import os; print(os.environ.get(\"MALLOC_ARENA_MAX\"))'], capture_output=True, "
            "text=True).stdout.strip())")
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(malloc.ARENAS)


@glibc
def test_trim_gives_free_pages_inside_the_heap_back():
    """Memory freed below a block still in use stays in the process until `trim()`: the
    worker's slow growth in the one-hour soak (runwatch.malloc)."""
    code = '''
import re
from runwatch import malloc

def heap_kb():
    kb, name = 0, None
    for line in open("/proc/self/smaps").read().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            parts = line.split()
            name = parts[5] if len(parts) >= 6 else ""
        elif line.startswith("Rss:") and name == "[heap]":
            kb += int(line.split()[1])
    return kb

junk = [bytes(2000) for _ in range(50_000)]  # 100 MB through malloc (past pymalloc's 512 B)
keep = junk[::50]  # one block in 50 stays: the heap cannot shrink from its top
del junk
before = heap_kb()
malloc.trim()
print(before, heap_kb(), len(keep))
'''
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    before, after, _ = (int(x) for x in out.stdout.split())
    assert before > 80_000, before  # the freed blocks were still resident
    assert after < before / 3, (before, after)


async def test_trimming_runs_until_the_block_ends(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(malloc, "trim", lambda: calls.append(1) or True)
    monkeypatch.setattr(malloc, "_libc", lambda: object())
    async with malloc.trimming(0.01):
        await asyncio.sleep(0.1)
    done = len(calls)
    assert done >= 3
    await asyncio.sleep(0.05)
    assert len(calls) == done  # stopped with the block


async def test_a_serving_app_keeps_what_start_up_built_out_of_the_collector(app):
    # `app` is the suite's app with its lifespan running, as under `runwatch serve`.
    assert gc.get_freeze_count() > 10_000  # the schema, the models, the modules


def test_start_up_is_thawed_when_the_block_ends():
    before = gc.get_freeze_count()
    try:
        with malloc.startup_frozen() as frozen:
            assert frozen > 10_000
            assert gc.get_freeze_count() > 10_000
        assert gc.get_freeze_count() == 0
    finally:
        if before:  # the suite's app is serving: leave its start-up frozen again
            gc.freeze()
