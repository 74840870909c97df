"""The benchmark's verdict rule (bench/abab.py): interleaving order, median, spread, unstable."""

from __future__ import annotations

import math

from bench.abab import interleave, of_ratios


def test_rounds_alternate_which_side_goes_first() -> None:
    order: list[str] = []

    def a(n: int) -> float:
        order.append(f"a{n}")
        return 90.0

    def b(n: int) -> float:
        order.append(f"b{n}")
        return 100.0

    result = interleave(a, b, 4, goal=0.8)
    assert order == ["a0", "b0", "b1", "a1", "a2", "b2", "b3", "a3"]
    assert result.ratios == [0.9] * 4
    assert result.median == 0.9 and result.spread == 0.0
    assert result.verdict == "PASS"


def test_a_miss_and_an_unstable_result_are_told_apart() -> None:
    assert of_ratios([0.70, 0.72, 0.71], goal=0.75).verdict == "MISS"
    noisy = of_ratios([0.60, 0.95, 0.80], goal=0.75)
    assert noisy.median == 0.80
    assert math.isclose(noisy.spread, 0.35 / 0.80)
    assert noisy.unstable and noisy.verdict == "unstable"


def test_lower_is_better_and_information_only() -> None:
    assert of_ratios([1.1, 1.2, 1.15], goal=1.3, higher_is_better=False).verdict == "PASS"
    assert of_ratios([1.0, 1.05], goal=None).verdict == "info"
    assert of_ratios([math.nan], goal=1.0).verdict == "MISS"
    assert "single round" in of_ratios([1.0], goal=0.5).text()
