"""The health verdicts behind /healthz: stale loops, failing streaks, the database."""

from __future__ import annotations

from engine.daemon.health import HealthBoard


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_loop_goes_stale_after_three_intervals_plus_slack() -> None:
    clock = Clock()
    board = HealthBoard(slack_s=10, clock=clock, wall=lambda: 1.7e9)
    board.register("sync:a:orders", 30, kind="sync", shop="a", stream="orders")
    clock.t += 99
    assert board.health()[0] is True
    clock.t += 2
    ok, details = board.health()
    assert ok is False
    assert "sync:a:orders: no progress for 101 s" in details["reason"]
    board.succeeded("sync:a:orders")
    assert board.health()[0] is True


def test_failing_but_fresh_loop_is_reported_without_failing_the_check() -> None:
    clock = Clock()
    board = HealthBoard(slack_s=10, clock=clock, wall=lambda: 1.7e9)
    board.register("sync:b:orders", 30, kind="sync", shop="b", stream="orders")
    board.register("sync:a:orders", 30, kind="sync", shop="a", stream="orders")
    board.failed("sync:b:orders", "ShopAuthError 3000034")
    ok, details = board.health()
    assert ok is True
    assert details["failing"] == ["sync:b:orders"]
    assert details["loops"]["sync:b:orders"]["last_error"] == "ShopAuthError 3000034"
    line = board.status_line(2, {"pending": 3, "dead": 0})
    assert line == "2 shops, 1/2 streams ok (failing: b/orders), outbox 3 pending, 0 dead"
    clock.t += 101
    board.succeeded("sync:a:orders")
    ok, details = board.health()
    assert ok is False and "last error: ShopAuthError 3000034" in details["reason"]


def test_a_loop_failing_pass_after_pass_fails_the_check_before_it_goes_stale() -> None:
    """A table lock or a stalled write fails every pass: /healthz names the loop within the
    grace (20 s) of the streak, long before three intervals have passed."""
    clock = Clock()
    board = HealthBoard(slack_s=30, failing_grace_s=20, clock=clock, wall=lambda: 1.7e9)
    board.register("reconciler", 60, kind="reconciler")
    board.failed("reconciler", "QueryCanceledError: canceling statement due to lock timeout")
    clock.t += 25
    assert board.health()[0] is True  # one failure, however old, is not a streak
    board.failed("reconciler", "QueryCanceledError: canceling statement due to lock timeout")
    ok, details = board.health()
    assert ok is False
    assert details["reason"].startswith("reconciler: no progress for 25 s, failing since")
    assert "lock timeout" in details["reason"]
    assert details["loops"]["reconciler"]["ok"] is False
    board.succeeded("reconciler")
    assert board.health()[0] is True


def test_a_short_streak_does_not_fail_the_check() -> None:
    clock = Clock()
    board = HealthBoard(slack_s=30, failing_grace_s=20, clock=clock, wall=lambda: 1.7e9)
    board.register("sync:a:orders", 30, kind="sync", shop="a", stream="orders")
    board.failed("sync:a:orders", "timeout")
    clock.t += 5
    board.failed("sync:a:orders", "timeout")
    assert board.health()[0] is True
    clock.t += 16
    assert board.health()[0] is False


def test_database_down_fails_the_check_with_the_reason() -> None:
    board = HealthBoard(clock=Clock(), wall=lambda: 1.7e9)
    board.database_down("ConnectionRefusedError: [Errno 111]")
    ok, details = board.health()
    assert ok is False
    assert details["reason"].startswith("database unavailable since 2023-11-14T22:13:20Z")
    board.database_ok()
    assert board.health()[0] is True


def test_progress_after_a_failing_streak_makes_the_loop_healthy_again() -> None:
    """After an outage the reconciler's first round does minutes of visible work (tasks done)
    before it ends: the check is about progress, so that work ends the streak."""
    clock = Clock()
    board = HealthBoard(slack_s=30, failing_grace_s=20, clock=clock, wall=lambda: 1.7e9)
    board.register("reconciler", 15, kind="reconciler")
    board.failed("reconciler", "ConnectionResetError")
    clock.t += 25
    board.failed("reconciler", "ConnectionResetError")
    assert board.health()[0] is False
    clock.t += 5
    board.progress("reconciler")  # a task done in the round that is still running
    ok, details = board.health()
    assert ok is True, details.get("reason")
    assert details["loops"]["reconciler"]["failing"] is False
