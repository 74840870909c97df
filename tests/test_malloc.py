"""The malloc arena cap of long-lived processes (`runwatch.malloc`)."""

from __future__ import annotations

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
