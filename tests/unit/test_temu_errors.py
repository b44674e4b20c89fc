"""Every row of the spec's error table maps to a class with the right retry and scope."""

from __future__ import annotations

import pytest

from engine.temu.errors import (
    AftersalesStateError,
    ApiFailure,
    AppAuthError,
    BadParams,
    BadSignature,
    RateLimited,
    ShopAuthError,
    SystemBusy,
    TemuError,
    TimestampRejected,
    TransportError,
    UnknownApiError,
    classify,
    error_for,
)

TABLE: list[tuple[int, type[TemuError], bool, str]] = [
    (2000000, ApiFailure, True, "call"),
    (7000000, ApiFailure, True, "call"),
    (3000000, BadParams, False, "call"),
    (3000001, BadSignature, False, "app"),
    (3000011, TimestampRejected, False, "call"),
    (3000012, TimestampRejected, False, "call"),
    (4000000, SystemBusy, True, "call"),
    (4000004, RateLimited, True, "call"),
    (130010004, AftersalesStateError, False, "call"),
    (130010007, AftersalesStateError, False, "call"),
    (999, UnknownApiError, False, "call"),
    (3000029, UnknownApiError, False, "call"),
    (5000004, UnknownApiError, False, "call"),
]
TABLE += [(c, AppAuthError, False, "app") for c in range(3000020, 3000029)]
TABLE += [(c, ShopAuthError, False, "shop") for c in range(3000030, 3000035)]
TABLE += [(c, ShopAuthError, False, "shop") for c in range(5000000, 5000004)]


@pytest.mark.parametrize(("code", "cls", "retryable", "scope"), TABLE)
def test_classification(code: int, cls: type[TemuError], retryable: bool, scope: str) -> None:
    assert classify(code) is cls
    err = error_for("bg.order.list.v2.get", code, "msg", "rid-1")
    assert type(err) is cls
    assert err.retryable is retryable
    assert err.scope == scope


def test_transport_error_is_retryable_call_scoped() -> None:
    err = TransportError("t", 502, "HTTP 502")
    assert err.retryable and err.scope == "call"


def test_str_names_api_code_message_request_id() -> None:
    err = error_for("bg.order.list.v2.get", 3000000, "pageSize too big", "req-42")
    text = str(err)
    for part in ("bg.order.list.v2.get", "3000000", "pageSize too big", "req-42"):
        assert part in text


def test_secrets_echoed_by_server_are_scrubbed() -> None:
    secret, token = "s3cr3t-app-secret-value", "tok-abcdef-123456"
    msg = f"invalid sign for app_secret={secret} access_token={token}"
    err = error_for("x", 3000001, msg, "r", secrets=(secret, token))
    for text in (str(err), repr(err), err.message, str(err.args)):
        assert secret not in text
        assert token not in text
    assert "***" in str(err)


def test_timestamp_rejected_states_skew_when_server_gives_its_time() -> None:
    err = error_for(
        "x", 3000012, "timestamp expired, server time 1711009072", "r", local_timestamp=1711009672
    )
    assert isinstance(err, TimestampRejected)
    assert err.skew_s == 600
    assert "600 s ahead" in str(err)
    assert "1711009672" in str(err)


def test_timestamp_rejected_without_server_time_points_at_the_clock() -> None:
    err = error_for("x", 3000011, "timestamp invalid", "r", local_timestamp=1711009672)
    assert isinstance(err, TimestampRejected)
    assert err.skew_s is None
    assert "check the host clock" in str(err)


def test_timestamp_rejected_with_agreeing_clocks_does_not_blame_the_clock() -> None:
    """The Date header says the clocks agree: "0 s behind, fix the host clock" would send an
    operator after the wrong thing."""
    err = error_for(
        "x",
        3000011,
        "timestamp invalid",
        "r",
        local_timestamp=1711009672,
        server_timestamp=1711009672,
    )
    assert isinstance(err, TimestampRejected) and err.skew_s == 0
    assert "fix the host clock" not in str(err)
    assert "not this host's clock" in str(err)
