"""Pure arithmetic over timestamps and samples; no I/O, so the unit tests cover all of it."""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence


def sliding_window_max(times: Sequence[float], window_s: float = 1.0) -> int:
    """Most events in any half-open window ``[t, t + window_s)``.

    Matches the simulator's count: an event exactly ``window_s`` after another no longer
    shares its window, so 20 sends spaced exactly 50 ms apart fit in one second.
    """
    ordered = sorted(times)
    best = 0
    for i, t in enumerate(ordered):
        best = max(best, bisect.bisect_left(ordered, t + window_s) - i)
    return best


def per_second(times: Sequence[float], t0: float, seconds: int) -> list[int]:
    """Events in each whole second ``[t0 + k, t0 + k + 1)`` for k in ``range(seconds)``."""
    counts = [0] * max(0, seconds)
    for t in times:
        k = math.floor(t - t0)
        if 0 <= k < len(counts):
            counts[k] += 1
    return counts


def span_rate(times: Sequence[float]) -> float:
    """Events per second between the first and the last event (n - 1 intervals).

    Counting intervals rather than events keeps a short run from reading above its true rate.
    """
    if len(times) < 2:
        return 0.0
    span = max(times) - min(times)
    return (len(times) - 1) / span if span > 0 else 0.0


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys over xs (0 when undefined)."""
    n = len(xs)
    if n < 2 or n != len(ys):
        return 0.0
    mx = sum(xs) / n
    my = sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, q in [0, 1]; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def jain_fairness(shares: Sequence[float]) -> float:
    """1.0 when every share is equal, 1/n when one takes everything."""
    total = sum(shares)
    square = sum(s * s for s in shares)
    if not shares or square == 0:
        return 0.0
    return total * total / (len(shares) * square)


def memory_trend(
    ts: Sequence[float], rss_mib: Sequence[float], *, warmup_s: float = 10.0
) -> dict[str, float | bool]:
    """First/last/max RSS and the slope after a warm-up (caches and pools fill first).

    "Flat" means the fitted growth over the measured span stays under 5% of the mean RSS or
    under 8 MiB, whichever is larger: allocator noise is a few MiB, a leak grows with the run.
    """
    if not rss_mib:
        return {
            "first_mib": 0.0,
            "last_mib": 0.0,
            "max_mib": 0.0,
            "slope_mib_per_min": 0.0,
            "growth_mib": 0.0,
            "flat": True,
        }
    start = ts[0] + warmup_s
    pairs = [(t, r) for t, r in zip(ts, rss_mib, strict=True) if t >= start]
    if len(pairs) < 3:
        pairs = list(zip(ts, rss_mib, strict=True))
    xs = [p[0] for p in pairs]
    ys = [p[1] for p in pairs]
    per_s = slope(xs, ys)
    growth = per_s * (xs[-1] - xs[0])
    mean = sum(ys) / len(ys)
    return {
        "first_mib": round(rss_mib[0], 1),
        "last_mib": round(rss_mib[-1], 1),
        "max_mib": round(max(rss_mib), 1),
        "slope_mib_per_min": round(per_s * 60, 3),
        "growth_mib": round(growth, 2),
        "flat": growth <= max(8.0, 0.05 * mean),
    }


def idle_gaps(times: Sequence[float], interval_s: float, *, late_s: float) -> dict[str, float]:
    """Where a run's sending time went, against a pacer sending every ``interval_s``.

    ``deficit_pct``: how far the achieved rate fell short of 1 / interval, in total.
    ``stalls`` / ``stall_s``: gaps longer than ``late_s`` and the time they lost beyond one
    interval; jitter alone never makes such gaps, a pipeline that ran dry (nothing queued at
    the pacer) does. Jitter-sized gaps are not summed: they are paid back by shorter ones.
    """
    ordered = sorted(times)
    stall_s = 0.0
    stalls = 0
    for a, b in itertools.pairwise(ordered):
        if b - a > late_s:
            stalls += 1
            stall_s += b - a - interval_s
    rate = span_rate(ordered)
    return {
        "deficit_pct": round(100 * (1 - rate * interval_s), 2) if rate else 0.0,
        "stalls": stalls,
        "stall_s": round(stall_s, 3),
    }


def longest_stall(t: list[float], rows: list[int], done: int) -> float:
    """Longest time an unfinished shop wrote nothing (starvation shows here, not in totals);
    a lower bound at the sampling resolution (1 s)."""
    longest, since = 0.0, t[0]
    for i in range(1, len(t)):
        if rows[i] != rows[i - 1] or rows[i - 1] >= done:
            since = t[i]
        longest = max(longest, t[i] - since)
    return round(longest, 1)
