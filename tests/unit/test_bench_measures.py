"""The benchmark's own arithmetic: if these are wrong, every figure in the README is."""

from __future__ import annotations

import pytest

from bench.measures import (
    idle_gaps,
    jain_fairness,
    longest_stall,
    memory_trend,
    per_second,
    percentile,
    sliding_window_max,
    slope,
    span_rate,
)


def test_sliding_window_finds_a_burst_across_a_calendar_second() -> None:
    # 20 at the end of one second and 19 at the start of the next: 39 in one sliding second,
    # though no calendar second holds more than 20 (what AsyncLimiter(20, 1) allows).
    times = [0.9 + i * 0.001 for i in range(20)] + [1.0 + i * 0.001 for i in range(19)]
    assert sliding_window_max(times) == 39
    assert max(per_second(times, 0.0, 2)) == 20


def test_sends_exactly_one_window_apart_do_not_share_it() -> None:
    # The simulator drops an arrival once it is a full second old: 20 sends 50 ms apart fit.
    times = [i * 0.05 for i in range(40)]
    assert sliding_window_max(times) == 20
    assert sliding_window_max([0.0, 1.0]) == 1
    assert sliding_window_max([]) == 0


def test_per_second_ignores_events_outside_the_range() -> None:
    assert per_second([-0.1, 0.0, 0.5, 1.2, 3.0], 0.0, 3) == [2, 1, 0]


def test_span_rate_counts_intervals_not_events() -> None:
    assert span_rate([0.0, 0.05, 0.10, 0.15, 0.20]) == pytest.approx(20.0)
    assert span_rate([1.0]) == 0.0
    assert span_rate([2.0, 2.0]) == 0.0


def test_slope_of_a_line_and_of_noise_free_constant() -> None:
    assert slope([0, 1, 2, 3], [1, 3, 5, 7]) == pytest.approx(2.0)
    assert slope([0, 1, 2], [4, 4, 4]) == 0.0
    assert slope([1, 1], [0, 5]) == 0.0


def test_percentile_nearest_rank() -> None:
    values = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert percentile(values, 0.5) == 3.0
    assert percentile(values, 1.0) == 5.0
    assert percentile(values, 0.0) == 1.0
    assert percentile([], 0.5) == 0.0


def test_fairness_is_one_when_equal_and_low_when_one_takes_all() -> None:
    assert jain_fairness([10, 10, 10]) == pytest.approx(1.0)
    assert jain_fairness([30, 0, 0]) == pytest.approx(1 / 3)


def test_memory_trend_tells_a_leak_from_a_warm_up() -> None:
    ts = [float(t) for t in range(120)]
    warm_then_flat = [80.0 + min(t, 8) * 5 for t in range(120)]  # caches fill, then flat
    leak = [100.0 + t * 0.5 for t in range(120)]  # 30 MiB a minute
    flat = memory_trend(ts, warm_then_flat)
    assert flat["flat"] is True and flat["first_mib"] == 80.0 and flat["max_mib"] == 120.0
    leaking = memory_trend(ts, leak)
    assert leaking["flat"] is False
    assert leaking["slope_mib_per_min"] == pytest.approx(30.0)


def test_idle_gaps_count_stalls_not_jitter() -> None:
    times = [0.0, 0.04, 0.10, 0.15, 0.35, 0.40]  # jitter around 50 ms, one 200 ms stall
    got = idle_gaps(times, 0.05, late_s=0.1)
    assert got["stalls"] == 1
    assert got["stall_s"] == pytest.approx(0.15)
    assert got["deficit_pct"] == pytest.approx(100 * (1 - (5 / 0.40) * 0.05), abs=0.01)
    assert idle_gaps([1.0], 0.05, late_s=0.1) == {"deficit_pct": 0.0, "stalls": 0, "stall_s": 0.0}


def test_longest_stall_ignores_the_time_after_a_shop_is_done() -> None:
    t = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    rows = [0, 10, 10, 10, 20, 30, 30]  # nothing new in the samples at 2 s and 3 s; done at 5 s
    # Once-a-second samples bound the stall from below: no write between 1 s and 3 s for sure.
    assert longest_stall(t, rows, 30) == 2.0
