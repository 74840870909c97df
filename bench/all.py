"""`python -m bench.all` (`make bench`): the harness, then every other benchmark module present,
each in its own subprocess, and ONE combined table of their rows.

Every module writes `bench/results/<name>.json` as {"rows": [{"measure", "goal", "median",
"spread", "verdict", "rounds", "unit"}]}; this collects them, prints the table (measure | goal |
median | spread | verdict) and writes it as markdown to `bench/results/all.md`. A module that
is not there (written elsewhere, not merged yet) is reported on one line and skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
# In order: the harness first (it owns the database runwatch_bench while it runs).
MODULES = ("harness", "metrics_cost", "scale", "live", "ratelimit")
# A module's own hard limit is its business; this one is the backstop.
DEFAULT_MODULE_TIMEOUT = 2100  # past the harness's own 1800 s limit and its clean-up
ROW_KEYS = ("measure", "goal", "median", "spread", "verdict", "rounds", "unit")


@dataclass
class ModuleResult:
    name: str
    status: str  # "ok", "missing", "failed (exit N)", "timed out", "no results"
    seconds: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""


def module_present(name: str) -> bool:
    return importlib.util.find_spec(f"bench.{name}") is not None


def read_rows(path: Path) -> tuple[list[dict[str, Any]], str]:
    """The rows of one results file, each with every key of the common format; a problem as
    text (the file missing, not JSON, not in the format) instead of an exception."""
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        return [], f"{path.name} was not written"
    except (OSError, ValueError) as exc:
        return [], f"{path.name} could not be read: {exc}"
    rows = payload.get("rows") if isinstance(payload, dict) else None
    if not isinstance(rows, list):
        return [], f"{path.name} has no list of rows"
    good: list[dict[str, Any]] = []
    bad = 0
    for row in rows:
        if isinstance(row, dict) and isinstance(row.get("measure"), str):
            good.append({"measure": row["measure"], "goal": str(row.get("goal", "-")),
                         "median": _number(row.get("median")),
                         "spread": _number(row.get("spread")),
                         "verdict": str(row.get("verdict", "?")),
                         "rounds": [_number(x) for x in row.get("rounds") or []],
                         "unit": str(row.get("unit", ""))})
        else:
            bad += 1
    return good, (f"{bad} row(s) without a measure ignored" if bad else "")


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def run_module(name: str, args: list[str], timeout: float) -> ModuleResult:
    """`python -m bench.<name> ARGS` in its own session, bounded; its rows from its JSON."""
    if not module_present(name):
        return ModuleResult(name, "missing", note=f"bench/{name}.py not present: skipped")
    out = RESULTS_DIR / f"{name}.json"
    started = time.time()
    out_mtime = out.stat().st_mtime if out.exists() else None
    print(f"==> python -m bench.{name} {' '.join(args)}".rstrip(), flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    proc = subprocess.Popen([sys.executable, "-m", f"bench.{name}", *args], cwd=ROOT, env=env,
                            start_new_session=True)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(proc)
        return ModuleResult(name, "timed out", time.time() - started,
                            note=f"stopped after {timeout:.0f}s")
    except BaseException:
        _stop(proc)
        raise
    seconds = time.time() - started
    if not out.exists() or (out_mtime is not None and out.stat().st_mtime <= out_mtime):
        return ModuleResult(name, f"failed (exit {code})" if code else "no results", seconds,
                            note=f"bench/results/{name}.json not written by this run")
    rows, problem = read_rows(out)
    status = "ok" if code in (0, 1) else f"failed (exit {code})"  # 1: a MISS or INVALID
    return ModuleResult(name, status, seconds, rows, problem)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def fmt_number(value: float) -> str:
    if math.isnan(value):
        return "-"
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def fmt_spread(value: float) -> str:
    """The spread of the rounds, (max - min) / median, as a percentage."""
    return "-" if math.isnan(value) else f"{value * 100:.0f}%"


def table_rows(results: list[ModuleResult]) -> list[list[str]]:
    lines = []
    for result in results:
        for row in result.rows:
            median = fmt_number(row["median"])
            if row["unit"] not in ("", "count") and median != "-":
                median = f"{median} {row['unit']}"
            lines.append([row["measure"], row["goal"], median, fmt_spread(row["spread"]),
                          row["verdict"]])
    return lines


HEADER = ["measure", "goal", "median", "spread", "verdict"]


def format_text(results: list[ModuleResult]) -> str:
    body = table_rows(results)
    widths = [max(len(r[i]) for r in [HEADER, *body]) for i in range(len(HEADER))]
    lines = [" | ".join(h.ljust(w) for h, w in zip(HEADER, widths, strict=True)),
             "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    for result in results:
        if result.status != "ok" or result.note:
            lines.append(f"bench.{result.name}: {result.status}"
                         + (f" ({result.note})" if result.note else ""))
    return "\n".join(lines)


def format_markdown(results: list[ModuleResult]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in table_rows(results)]
    skipped = [f"`bench.{r.name}`: {r.status}" + (f" ({r.note})" if r.note else "")
               for r in results if r.status != "ok"]
    if skipped:
        lines += ["", "Not in the table: " + "; ".join(skipped) + "."]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.all",
        description="the harness, then the other benchmark modules present; one table")
    parser.add_argument("--only", default=",".join(MODULES),
                        help=f"comma-separated modules (default: {','.join(MODULES)})")
    parser.add_argument("--module-timeout", type=float, default=DEFAULT_MODULE_TIMEOUT,
                        help="hard stop for each module, seconds")
    parser.add_argument("harness_args", nargs=argparse.REMAINDER,
                        help="after --: arguments for the harness (python -m bench)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    names = [n.strip() for n in opts.only.split(",") if n.strip()]
    harness_args = [a for a in opts.harness_args if a != "--"]
    results: list[ModuleResult] = []
    for name in names:
        result = run_module(name, harness_args if name == "harness" else [],
                            opts.module_timeout)
        if result.status == "missing":
            print(f"--- bench.{name}: {result.note}", flush=True)
        else:
            print(f"--- bench.{name}: {result.status} in {result.seconds:.0f}s, "
                  f"{len(result.rows)} rows" + (f"; {result.note}" if result.note else ""),
                  flush=True)
        results.append(result)
    print()
    print(format_text(results))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / "all.md"
    out.write_text(format_markdown(results))
    print(f"\nwritten to {out.relative_to(ROOT)}")
    ran = [r for r in results if r.status != "missing"]
    if any(r.status != "ok" for r in ran):
        return 2
    return 1 if any(row["verdict"] in ("MISS", "INVALID") for r in ran for row in r.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
