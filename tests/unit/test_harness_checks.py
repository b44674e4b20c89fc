"""The reliability suite's "never twice" check sees refused second pushes too."""

from __future__ import annotations

from tests.reliability.harness import repeated_uploads


def _a(sn: str, at: float, outcome: str, reason: str = "") -> dict[str, object]:
    return {"parentAfterSalesSn": sn, "at": at, "outcome": outcome, "reason": reason}


def test_a_refused_second_upload_counts_as_a_repeat() -> None:
    attempts = [
        _a("R1", 1.0, "accepted"),
        _a("R1", 5.0, "refused", "already_uploaded"),
        _a("R2", 2.0, "accepted"),
        _a("R2", 3.0, "refused", "not_awaiting_label"),
    ]
    assert repeated_uploads(attempts) == {"R1": 1, "R2": 1}


def test_gateway_refusals_and_tries_before_acceptance_do_not_count() -> None:
    attempts = [
        _a("R1", 1.0, "refused", "rate_limited"),
        _a("R1", 2.0, "refused", "fault:reset"),
        _a("R1", 3.0, "accepted"),
        _a("R1", 4.0, "refused", "token"),
        _a("R2", 1.0, "refused", "mode_mismatch"),
        _a("R2", 2.0, "accepted"),
    ]
    assert repeated_uploads(attempts) == {}
