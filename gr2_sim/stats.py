"""Confidence intervals for success rates: Wilson's score interval, and Newcombe's interval for a difference.

With 20-200 episodes per setting the normal ("Wald") interval is wrong near 0 % and 100 % (it collapses to a
point at 0/n); Wilson's interval does not. Newcombe (1998, method 10) combines two Wilson intervals into one
for p1 - p2, e.g. "pre-trained minus scratch".

    wilson_interval(17, 20)            -> (0.640, 0.948)
    newcombe_difference(17, 20, 9, 20) -> (0.40, 0.104, 0.615)
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # two-sided 95 % standard normal quantile


def _check(successes: int, n: int) -> None:
    if n < 1:
        raise ValueError(f"a success rate needs at least one episode, got n={n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} must be in [0, n={n}]")


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """(low, high) of Wilson's score interval for a success rate of ``successes`` in ``n`` trials; in [0, 1]."""
    _check(successes, n)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends: no 0.99999.. from rounding
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def newcombe_difference(s1: int, n1: int, s2: int, n2: int, z: float = Z95) -> tuple[float, float, float]:
    """(p1 - p2, low, high): Newcombe's hybrid score interval for the difference of two independent rates."""
    _check(s1, n1)
    _check(s2, n2)
    p1, p2 = s1 / n1, s2 / n2
    l1, u1 = wilson_interval(s1, n1, z)
    l2, u2 = wilson_interval(s2, n2, z)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return d, max(-1.0, low), min(1.0, high)


def percentile_summary(values_ms: list[float]) -> dict[str, float | int | None]:
    """{"median", "p95", "mean", "n"} of latencies (ms); None values when there are none."""
    n = len(values_ms)
    if n == 0:
        return {"median": None, "p95": None, "mean": None, "n": 0}
    ordered = sorted(values_ms)

    def quantile(q: float) -> float:  # linear interpolation, as numpy's default
        pos = q * (n - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, n - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

    return {"median": quantile(0.5), "p95": quantile(0.95), "mean": sum(ordered) / n, "n": n}
