"""One verdict rule for every benchmark: interleaved rounds, the median ratio and its spread.

Machines here are shared and noisy, and two long rounds cannot tell a real change from noise.
So a comparison runs A (runwatch) and B (its baseline) alternately in many short rounds
(A B A B …, or B A B A … on odd rounds so that neither side always goes first), takes the
ratio of each round, and reports the median ratio with the spread of the rounds. When the
rounds disagree by more than `UNSTABLE_SPREAD` of the median, the verdict is "unstable" rather
than PASS or MISS: the figure is not trustworthy on this machine at this moment.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from statistics import median

UNSTABLE_SPREAD = 0.15  # (max - min) / median of the round ratios


@dataclass
class Comparison:
    """The round ratios of one scenario and what they say against a goal."""

    ratios: list[float] = field(default_factory=list)
    goal: float | None = None  # None: for information only
    higher_is_better: bool = True

    @property
    def median(self) -> float:
        finite = [r for r in self.ratios if math.isfinite(r)]
        return median(finite) if finite else math.nan

    @property
    def spread(self) -> float:
        """(max - min) / median of the finite round ratios; nan with fewer than two."""
        finite = [r for r in self.ratios if math.isfinite(r)]
        mid = self.median
        if len(finite) < 2 or not mid:
            return math.nan
        return (max(finite) - min(finite)) / abs(mid)

    @property
    def unstable(self) -> bool:
        spread = self.spread
        return math.isfinite(spread) and spread > UNSTABLE_SPREAD

    @property
    def verdict(self) -> str:
        mid = self.median
        if math.isnan(mid):
            return "MISS"
        if self.unstable:
            return "unstable"
        if self.goal is None:
            return "info"
        ok = mid >= self.goal if self.higher_is_better else mid <= self.goal
        return "PASS" if ok else "MISS"

    def text(self) -> str:
        spread = self.spread
        rounds = " ".join(f"{r:.2f}" for r in self.ratios)
        spread_text = f"±{spread * 50:.0f}%" if math.isfinite(spread) else "single round"
        return f"{self.median:.2f} ({spread_text}; rounds {rounds}) {self.verdict}"


def interleave(measure_a: Callable[[int], float], measure_b: Callable[[int], float],
               rounds: int, *, goal: float | None = None, higher_is_better: bool = True,
               ratio: Callable[[float, float], float] | None = None) -> Comparison:
    """Run `measure_a(round)` and `measure_b(round)` alternately, `rounds` times each (B first
    on odd rounds), and compare them round by round. `ratio(a, b)` defaults to a / b (for a
    throughput; pass `lambda a, b: b / a` for a latency so that higher is still better, or set
    `higher_is_better=False` and keep a / b)."""
    compare = ratio or (lambda a, b: a / b if b else math.nan)
    result = Comparison(goal=goal, higher_is_better=higher_is_better)
    for n in range(rounds):
        if n % 2:
            b = measure_b(n)
            a = measure_a(n)
        else:
            a = measure_a(n)
            b = measure_b(n)
        result.ratios.append(compare(a, b))
    return result


def of_ratios(ratios: Sequence[float], *, goal: float | None = None,
              higher_is_better: bool = True) -> Comparison:
    """A Comparison of ratios measured elsewhere (e.g. one per round of a longer scenario)."""
    return Comparison(ratios=list(ratios), goal=goal, higher_is_better=higher_is_better)
