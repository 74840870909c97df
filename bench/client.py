"""The Python client's cost: `runwatch.client` against raw httpx doing the same requests, on one
`runwatch serve` (SQLite, a temporary home) on loopback.

    python -m bench.client [--rounds 8] [--seconds 1.0] [--time-limit 240]

Scenarios, each in interleaved ABAB rounds (`bench.abab`), ratio = throughput A / B:
- report: `with client.run(cid) as run:` (pre-create + report, 2 requests) against the same two
  requests with a bare `httpx.Client`. Goal >= 0.90 (the client's bookkeeping, retry
  generator and body building cost at most 10 %).
- elt: 40 log lines and 40 samples through `client.elt_run` (buffered, paired two to a PATCH)
  against one PATCH per line and per sample with httpx. For information: it shows what the
  pairing saves.

Writes bench/results/client.json. Loopback only; every round is bounded by --seconds, the whole
run by --time-limit (the server is stopped on any exit).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.abab import Comparison, interleave
from bench.procs import HOST, free_port
from runwatch.client import Client

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "client.json"


def start_server(home: Path, port: int) -> tuple[subprocess.Popen, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DATABASE_URL", "RUNWATCH_", "XDG_", "PORT"))}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT),
               RUNWATCH_RATE_LIMIT_PER_MINUTE=str(10**9))
    log = home / "serve.log"  # a file, not a pipe: nobody reads a pipe once it has started
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "runwatch.cli", "serve", "--host", HOST,
                                 "--port", str(port)], cwd=home, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    token, deadline = None, time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        text = log.read_text(errors="replace")
        token = next((x.strip() for x in text.splitlines() if x.strip().startswith("rw_")),
                     None)
        if "Uvicorn running" in text:
            break
        time.sleep(0.2)
    if token is None:
        stop(proc)
        raise SystemExit("runwatch serve did not start (or printed no token)")
    return proc, token


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def rate(seconds: float, work: Callable[[], None]) -> float:
    """Operations a second of `work`, run for about `seconds`."""
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        work()
        done += 1
    return done / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--time-limit", type=float, default=240)
    opts = parser.parse_args(argv)
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("time limit")))
    signal.alarm(int(opts.time_limit))
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc, token = start_server(Path(tmp), port)
        try:
            rows = run(f"http://{HOST}:{port}", token, opts)
        finally:
            stop(proc)
            signal.alarm(0)
    print(f"{'measure':<10} {'goal':<8} {'median':>7} {'spread':>7}  verdict   rounds")
    for row in rows:
        print(f"{row['measure']:<10} {row['goal']:<8} {row['median']:>7.2f} "
              f"{row['spread']:>7.2f}  {row['verdict']:<9} "
              + " ".join(f"{r:.2f}" for r in row["rounds"]))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"rows": rows}, indent=2))
    return 0


def row(measure: str, goal: str, c: Comparison) -> dict:
    return {"measure": measure, "goal": goal, "median": c.median, "spread": c.spread,
            "verdict": c.verdict, "rounds": c.ratios, "unit": "ratio (client / raw httpx)"}


def run(base: str, token: str, opts: argparse.Namespace) -> list[dict]:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=10) as raw, \
            Client(base, token, organisation=1) as client:
        cid = raw.post("/api/v1/organisations/1/integrations/warehouse-connections/",
                       json={"name": "bench", "type": "snowflake"}).raise_for_status().json()["id"]
        pipeline = raw.post("/api/elt/pipelines", json={"name": "bench-elt"}
                            ).raise_for_status().json()["pipeline"]["id"]
        metrics = f"/api/v1/organisations/1/integrations/warehouse-connections/{cid}/metrics/"

        def report_client() -> None:
            with client.run(cid) as r:
                r.events_delivered, r.evaluations, r.custom_events = 10, 6, 4

        def report_raw() -> None:
            run_id = raw.post(metrics, json={}).raise_for_status().json()["run_id"]
            raw.patch(f"{metrics}{run_id}/", json={
                "completed_at": datetime.now(UTC).isoformat(),
                "events_delivered": 10, "batches_dlq": 0, "error": None, "evaluations": 6,
                "custom_events": 4}).raise_for_status()

        def elt_client() -> None:
            with client.elt_run(pipeline, max_items=1000, max_seconds=3600) as job:
                for i in range(40):
                    job.log(f"line {i}")
                    job.sample(rows=i, progress=min(100, i * 2.5))

        def elt_raw() -> None:
            rid = raw.post("/api/elt/runs", json={"pipelineId": str(pipeline),
                                                  "status": "running"}
                           ).raise_for_status().json()["run"]["id"]
            for i in range(40):
                raw.patch(f"/api/elt/runs/{rid}", json={
                    "appendLog": {"level": "info", "message": f"line {i}"}}).raise_for_status()
                raw.patch(f"/api/elt/runs/{rid}", json={"appendTelemetrySample": {
                    "rows": i, "progress": min(100, i * 2.5)}}).raise_for_status()
            raw.patch(f"/api/elt/runs/{rid}", json={"status": "succeeded"}).raise_for_status()

        report_client(), report_raw()  # warm-up
        s = opts.seconds
        report = interleave(lambda _: rate(s, report_client), lambda _: rate(s, report_raw),
                            opts.rounds, goal=0.90)
        elt = interleave(lambda _: rate(s, elt_client), lambda _: rate(s, elt_raw),
                         max(2, opts.rounds // 2))
    return [row("report", ">= 0.90", report), row("elt", "info", elt)]


if __name__ == "__main__":
    sys.exit(main())
