"""`runwatch worker` under tracemalloc: where its memory goes over a soak.

`python -m bench.traced_worker OUT.json [SECONDS]` runs the worker exactly as `runwatch
worker` does (same settings from the environment), with `tracemalloc` tracing 12 frames.
Every SECONDS (default 60) a thread takes a snapshot and appends to OUT.json (one JSON object
a line) the size of the blocks allocated outside tracemalloc itself (`app_kb`), the traced
total and the 25 biggest differences by traceback against the first
snapshot taken after the warm-up (the second one), plus the process's RSS, so that growth can
be told from a plateau and put on a line of code. Used by `python -m bench.soak
--trace-worker` (mode B); not part of runwatch itself.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import tracemalloc
from pathlib import Path

FRAMES = 12
TOP = 25
IGNORE = (tracemalloc.__file__, "<frozen importlib._bootstrap>",
          "<frozen importlib._bootstrap_external>", "<unknown>")


def _rss_kb() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _snapshot() -> tracemalloc.Snapshot:
    return tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, name) for name in IGNORE])


def _tracer(out: Path, every: float, stop: threading.Event) -> None:
    reference: tracemalloc.Snapshot | None = None
    started = time.monotonic()
    n = 0
    while not stop.wait(every):
        n += 1
        snap = _snapshot()
        current, peak = tracemalloc.get_traced_memory()
        # traced_kb counts everything tracemalloc sees, its own snapshots included (the
        # reference snapshot kept below is several MB); app_kb counts only the blocks
        # allocated outside tracemalloc, which is what a leak in the worker would grow.
        app_kb = sum(stat.size for stat in snap.statistics("filename")) // 1024
        entry: dict = {"n": n, "t": round(time.monotonic() - started, 1),
                       "app_kb": app_kb, "traced_kb": current // 1024,
                       "peak_kb": peak // 1024, "rss_kb": _rss_kb()}
        if reference is None and n >= 2:  # after the warm-up minute
            reference = snap
        if reference is not None and snap is not reference:
            stats = snap.compare_to(reference, "traceback")
            entry["top"] = [{
                "size_diff_kb": round(s.size_diff / 1024, 1),
                "count_diff": s.count_diff,
                "size_kb": round(s.size / 1024, 1),
                "where": [f"{f.filename}:{f.lineno}" for f in s.traceback][-6:],
            } for s in stats[:TOP]]
        with out.open("a") as fh:
            fh.write(json.dumps(entry) + "\n")


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    every = float(argv[1]) if len(argv) > 1 else 60.0
    out.write_text("")
    tracemalloc.start(FRAMES)
    stop = threading.Event()
    thread = threading.Thread(target=_tracer, args=(out, every, stop), daemon=True)
    thread.start()
    from runwatch.cli import main as runwatch_main

    try:
        return runwatch_main(["worker"])
    finally:
        stop.set()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
