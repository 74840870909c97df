"""The benchmark harness's pure parts: the ABAB order of the rounds, the verdict and the table
of a row, the common JSON rows, and bench/all.py's collection (a missing module is a line of
the report, not a crash)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench import all as bench_all
from bench.harness import Bench, Options, Row, format_table
from bench.procs import WrkResult


def options(**kw: object) -> Options:
    base = dict(duration=3, warmup=1, rounds=4, connections=16, latency_connections=4,
                time_limit=60, keep_db=False, show_sql=False)
    base.update(kw)
    return Options(**base)  # type: ignore[arg-type]


def recording_bench(opts: Options) -> tuple[Bench, list[str]]:
    """A Bench whose measurements only record their order."""
    bench = Bench.__new__(Bench)
    bench.opts = opts
    bench.log = lambda message="": None  # type: ignore[method-assign,assignment]
    order: list[str] = []
    bench.rest_report = lambda t, n: order.append(f"r{n} report {t}")  # type: ignore
    bench.graphql_report = lambda n: order.append(f"r{n} graphql")  # type: ignore
    bench.telemetry_throughput = lambda t, n: order.append(f"r{n} tele {t}")  # type: ignore
    bench.telemetry_latency = (  # type: ignore
        lambda size, n, server="runwatch": order.append(f"r{n} lat {server} {size}"))
    bench.append = lambda kind, t, n: order.append(f"r{n} {kind} {t}")  # type: ignore
    bench.watcher_round = lambda t, n: order.append(f"r{n} watcher {t}")  # type: ignore
    bench.runs_screen = lambda t, n: order.append(f"r{n} cost {t}")  # type: ignore
    return bench, order


def test_rounds_alternate_which_side_goes_first() -> None:
    bench, order = recording_bench(options(rounds=4, only=("report", "watcher", "cost")))
    bench.run()
    reports = [o for o in order if " report " in o]
    assert reports == ["r1 report baseline", "r1 report runwatch",
                       "r2 report runwatch", "r2 report baseline",
                       "r3 report baseline", "r3 report runwatch",
                       "r4 report runwatch", "r4 report baseline"]
    watcher = [o.split()[-1] for o in order if "watcher" in o]
    assert watcher == ["baseline", "runwatch", "runwatch", "baseline"] * 2
    cost = [o.split()[-1] for o in order if "cost" in o]
    assert cost == ["nocost", "runwatch", "runwatch", "nocost"] * 2


def test_the_default_is_more_shorter_rounds() -> None:
    from bench.harness import parse_args

    opts = parse_args([])
    assert opts.rounds >= 6 and opts.duration <= 3


def row(ratios: list[float], goal: float | None = 0.8, higher: bool = True,
        valid: bool = True, unit: str = "") -> Row:
    from statistics import median

    return Row("11 Watcher round", "rounds/s", 100.0, 120.0, median(ratios),
               "-" if goal is None else f">= {goal}", goal, higher, valid,
               round_ratios=ratios, ratio_unit=unit)


def test_row_verdict_is_the_abab_rule() -> None:
    assert row([0.85, 0.86, 0.84, 0.85]).verdict == "PASS"
    assert row([0.70, 0.71, 0.72]).verdict == "MISS"
    assert row([0.60, 0.95, 0.85]).verdict == "unstable"
    assert row([0.60, 0.95, 0.85], valid=False).verdict == "INVALID"
    assert row([0.5, 0.5], goal=None).verdict == "info"
    assert row([0.8, 0.9], goal=1.3, higher=False).verdict == "PASS"


def test_row_in_the_common_format() -> None:
    common = row([0.8, 0.9, 0.85, 0.95], unit="").common()
    assert set(common) == {"measure", "goal", "median", "spread", "verdict", "rounds", "unit"}
    assert common["median"] == pytest.approx(0.875)
    assert common["spread"] == pytest.approx(0.15 / 0.875, abs=1e-4)
    assert common["verdict"] == "unstable"
    assert common["rounds"] == [0.8, 0.9, 0.85, 0.95]
    json.dumps(common)  # plain JSON, no NaN objects
    single = row([math.nan]).common()
    assert single["median"] is None and single["rounds"] == [None]


def test_watcher_cpu_row_is_per_request_against_its_goal() -> None:
    bench = Bench.__new__(Bench)
    bench.measured = []
    bench.burst = {}
    from bench.harness import Measured

    for n, (rw_cpu, bl_cpu) in enumerate([(0.80, 0.30), (0.85, 0.31), (0.82, 0.29)], 1):
        for target, cpu, rps in (("runwatch", rw_cpu, 100.0), ("baseline", bl_cpu, 120.0)):
            result = WrkResult(label="x", rps=rps, p50_ms=1, p99_ms=2, requests=4000,
                               seconds=3, non_2xx=0)
            result.rounds = 1000
            result.server_cpu_ms = cpu
            bench.measured.append(Measured("11 Watcher round", target, n, result))
    rows = {r.scenario: r for r in bench.rows()}
    cpu = rows["11 Watcher CPU/request"]
    assert cpu.ratio == pytest.approx(0.82) and cpu.goal_value == 0.9
    assert cpu.verdict == "PASS" and cpu.common()["unit"] == "ms"
    assert rows["11 Watcher round"].goal_value == 0.8


def test_table_shows_median_spread_verdict_and_rounds() -> None:
    text = format_table([row([0.85, 0.86, 0.84]), row([0.60, 0.95, 0.85])])
    header = text.splitlines()[0]
    for word in ("median", "spread", "verdict", "rounds"):
        assert word in header
    lines = text.splitlines()
    assert "PASS" in lines[2] and "0.85 0.86 0.84" in lines[2] and "2%" in lines[2]
    assert "unstable" in lines[3] and "41%" in lines[3]


def test_collecting_rows_from_json(tmp_path: Path) -> None:
    path = tmp_path / "scale.json"
    path.write_text(json.dumps({"rows": [
        {"measure": "p99 at 1M", "goal": "<= 1.3", "median": 1.1, "spread": 0.05,
         "verdict": "PASS", "rounds": [1.1, 1.12, 1.08], "unit": ""},
        {"goal": "no measure"},
    ]}))
    rows, problem = bench_all.read_rows(path)
    assert [r["measure"] for r in rows] == ["p99 at 1M"]
    assert "1 row(s)" in problem
    assert bench_all.read_rows(tmp_path / "absent.json") == ([], "absent.json was not written")
    (tmp_path / "bad.json").write_text("{not json")
    assert "could not be read" in bench_all.read_rows(tmp_path / "bad.json")[1]

    results = [bench_all.ModuleResult("scale", "ok", 1.0, rows),
               bench_all.ModuleResult("live", "missing", note="bench/live.py not present")]
    text = bench_all.format_text(results)
    assert text.splitlines()[0].split(" | ")[0].strip() == "measure"
    assert "p99 at 1M" in text and "5%" in text and "PASS" in text
    assert "bench.live: missing" in text
    md = bench_all.format_markdown(results)
    assert md.startswith("| measure | goal | median | spread | verdict |\n|---|---|---|---|---|")
    assert "| p99 at 1M | <= 1.3 | 1.10 | 5% | PASS |" in md
    assert "`bench.live`: missing" in md


def test_a_missing_module_is_reported_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(bench_all, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(bench_all, "ROOT", tmp_path.parent)
    result = bench_all.run_module("no_such_benchmark", [], 5)
    assert result.status == "missing" and "not present" in result.note
    assert bench_all.main(["--only", "no_such_benchmark"]) == 0
    out = capsys.readouterr().out
    assert "bench.no_such_benchmark: bench/no_such_benchmark.py not present: skipped" in out
    assert (tmp_path / "all.md").exists()
