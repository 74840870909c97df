"""Processes the harness starts: the servers under test (uvicorn) and the load generator (wrk).

Everything binds to and targets 127.0.0.1 only. Servers run in their own session (process
group) and are stopped with SIGTERM, then SIGKILL after a grace period; wrk runs under a
timeout and is killed with it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the harness dies, even by SIGKILL (Linux)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class BenchError(RuntimeError):
    """The benchmark cannot run (or cannot go on); the message says why."""


# --------------------------------------------------------------------------------------- wrk


def _apt_get(*args: str) -> tuple[bool, str]:
    try:
        done = subprocess.run(["apt-get", *args], capture_output=True, text=True, timeout=240,
                              stdin=subprocess.DEVNULL,
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"apt-get {' '.join(args)}: {exc}"
    return done.returncode == 0, (done.stdout[-1500:] + done.stderr[-1500:])


def ensure_wrk() -> str:
    """The wrk binary; installs the Debian package when it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    if shutil.which("apt-get") is None:
        raise BenchError("wrk is not installed and apt-get is not available: install wrk "
                         "(Debian/Ubuntu package `wrk`) and run again.")
    print("wrk not found: running apt-get install -y wrk", flush=True)
    ok, output = _apt_get("install", "-y", "wrk")
    if not ok:
        print("apt-get install failed: running apt-get update, then installing again",
              flush=True)
        _apt_get("update")
        ok, output = _apt_get("install", "-y", "wrk")
    found = shutil.which("wrk")
    if not ok or not found:
        raise BenchError("could not install wrk with apt-get (root needed, and a reachable "
                         f"Debian mirror). Install the `wrk` package and run again.\n{output}")
    return found


@dataclass
class WrkResult:
    label: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: dict[str, int] = field(default_factory=dict)
    ids_used: int | None = None
    ids_available: int | None = None
    ids_cycled: int | None = None  # cycle mode: the requests went round this many runs
    server_cpu_ms: float | None = None  # CPU time of the server process per request
    db_cpu_ms: float | None = None  # CPU time of the server's PostgreSQL backends per request
    wal_bytes: float | None = None  # WAL PostgreSQL wrote per request (all databases)
    checkpoint: bool | None = None  # a checkpoint ran meanwhile (full-page writes follow)
    runs_completed: int | None = None  # runs of the id range the requests really completed
    rounds: int | None = None  # the Watcher round's script: rounds completed (4 requests each)
    problems: list[str] = field(default_factory=list)  # what makes this run invalid, besides
    details: dict[str, Any] = field(default_factory=dict)  # scenario-specific observations
    raw: str = ""

    @property
    def rounds_ps(self) -> float:
        """Watcher rounds a second (NaN when the script counted none)."""
        if self.rounds is None or not self.seconds:
            return float("nan")
        return self.rounds / self.seconds

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())

    @property
    def valid(self) -> bool:
        return self.errors == 0 and not self.problems

    def summary(self) -> str:
        text = "" if self.rounds is None else f"{self.rounds_ps:7.1f} rounds/s = "
        text += (f"{self.rps:9.1f} req/s  p50 {self.p50_ms:7.2f} ms  p99 {self.p99_ms:7.2f} ms  "
                f"({self.requests} requests in {self.seconds:.1f}s")
        if self.server_cpu_ms is not None:
            text += f", server CPU {self.server_cpu_ms:.2f} ms/req"
        if self.db_cpu_ms is not None:
            text += f", PostgreSQL CPU {self.db_cpu_ms:.2f} ms/req"
        if self.wal_bytes is not None and self.wal_bytes >= 1:
            text += f", WAL {self.wal_bytes:,.0f} B/req"
        if self.checkpoint:
            text += ", a checkpoint ran"
        if self.ids_used is not None:
            text += f", run ids used {self.ids_used}/{self.ids_available}"
        if self.ids_cycled is not None:
            text += f", over {self.ids_cycled} runs"
        text += ")"
        if not self.valid:
            text += (f"  INVALID: {self.non_2xx} non-2xx/3xx responses, socket errors "
                     f"{self.socket_errors}")
            for problem in self.problems:
                text += f"; {problem}"
        return text


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_DURATION_S = {"us": 1e-6, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _latency_ms(text: str, percentile: str) -> float:
    match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    if not match:
        raise BenchError(f"wrk output has no {percentile}% latency line:\n{text}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(label: str, text: str) -> WrkResult:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    total = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", text, re.M)
    if not rps or not total:
        raise BenchError(f"could not parse wrk output:\n{text}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    ids = re.search(r"BENCH_IDS_USED (\d+) of (\d+)", text)
    cycled = re.search(r"BENCH_IDS_CYCLED (\d+) over (\d+)", text)
    rounds = re.search(r"BENCH_ROUNDS (\d+)", text)
    no_id = re.search(r"BENCH_ROUND_STARTS_WITHOUT_ID (\d+)", text)
    problems = []
    if no_id and int(no_id.group(1)):
        problems.append(f"{no_id.group(1)} execution starts answered without an id")
    if ids and int(ids.group(1)) > int(ids.group(2)):
        problems.append(f"ran out of pre-created runs ({ids.group(1)} requests for "
                        f"{ids.group(2)} runs)")
    socket_errors = {}
    if sockets:
        socket_errors = dict(zip(("connect", "read", "write", "timeout"),
                                 (int(g) for g in sockets.groups()), strict=True))
    return WrkResult(
        label=label,
        rps=float(rps.group(1)),
        p50_ms=_latency_ms(text, "50"),
        p99_ms=_latency_ms(text, "99"),
        requests=int(total.group(1)),
        seconds=float(total.group(2)) * _DURATION_S[total.group(3)],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=socket_errors,
        ids_used=int(ids.group(1)) if ids else None,
        ids_available=int(ids.group(2)) if ids else None,
        ids_cycled=int(cycled.group(2)) if cycled else None,
        rounds=int(rounds.group(1)) if rounds else None,
        problems=problems,
        raw=text,
    )


def run_wrk(label: str, url: str, *, duration: float, connections: int,
            script: Path | None = None, script_env: dict[str, str] | None = None,
            headers: list[str] | None = None, timeout_s: int = 10,
            threads: int = 1) -> WrkResult:
    """One wrk run: `connections` keep-alive connections on one thread (one Lua state) unless
    `threads` says otherwise (the Watcher round: a thread, so a Lua state, per connection)."""
    if urlsplit(url).hostname != HOST:
        raise BenchError(f"refusing to load {url}: the benchmark only targets {HOST}")
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency",
           f"--timeout={timeout_s}s"]
    if script is not None:
        cmd += ["-s", str(script)]
    for header in headers or []:
        cmd += ["-H", header]
    cmd.append(url)
    env = {**os.environ, **(script_env or {})}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env,
                              stdin=subprocess.DEVNULL, timeout=duration + timeout_s + 20,
                              preexec_fn=_die_with_parent)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish in time ({label})") from None
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({label}), exit {done.returncode}:\n"
                         f"{done.stdout}\n{done.stderr}")
    return parse_wrk(label, done.stdout + done.stderr)


# ----------------------------------------------------------------------------------- servers


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc), None when unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def machine_busy(seconds: float = 1.0) -> float | None:
    """Fraction of all CPUs busy over `seconds` (Linux /proc/stat), None when unavailable."""
    def sample() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Server:
    """One uvicorn process: one worker, the same flags for every server under test."""

    def __init__(self, name: str, factory: str, env: dict[str, str], log_dir: Path,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.name = name
        self.factory = factory
        self.env = env
        self.extra_args = extra_args  # only for helpers (the webhook receiver), never for a
        # server under test: those all run with the same flags
        self.port = free_port()
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "uvicorn", "--factory", self.factory, "--host", HOST,
                "--port", str(self.port), "--no-access-log", "--log-level", "warning",
                *self.extra_args]

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(), cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_ready(self, path: str = "/health", timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited during start-up "
                                 f"(exit {self.proc.returncode if self.proc else '?'}):\n"
                                 f"{self.log_tail()}")
            try:
                response = httpx.get(self.url + path, timeout=2)
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.2)
        raise BenchError(f"{self.name} did not answer {path} within {timeout:.0f}s ({last}):\n"
                         f"{self.log_tail()}")

    def cpu_seconds(self) -> float | None:
        return process_cpu_seconds(self.proc.pid) if self.proc is not None else None

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise BenchError(f"{self.name} is not running any more:\n{self.log_tail()}")

    def stop(self, grace: float = 5) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)  # its own session: the process group is its own
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


class WorkerProcess(Server):
    """`runwatch worker` (the background workers alone: reaper, webhook deliveries, tasks), for
    the fair setup: API servers with `RUNWATCH_WORKERS_IN_SERVE=0` and this one process doing
    the background work. No port; ready when it prints `runwatch worker on ...`."""

    READY = "runwatch worker on"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "runwatch.cli", "worker"]

    def wait_ready(self, path: str = "", timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited during start-up:\n{self.log_tail()}")
            try:
                if self.READY in self.log_path.read_text(errors="replace"):
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise BenchError(f"{self.name} did not start within {timeout:.0f}s:\n{self.log_tail()}")
