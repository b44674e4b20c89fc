"""Typed Temu Open API errors: one class per row of the spec's error table.

Each class says whether retrying can help (``retryable``) and what the caller should stop when
it surfaces (``scope``): the one call, the shop (its access token is bad), or the whole app
(its key or secret is bad). Messages never carry a secret: the server may echo the request
back in ``errorMsg``, so every known secret is scrubbed before the text is stored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from engine.logs import redact

Scope = Literal["call", "shop", "app"]


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Temu error texts without the call's secrets (and any the process knows): logs.redact."""
    return redact(text, secrets)


class TemuError(Exception):
    retryable: bool = False
    scope: Scope = "call"
    # Retryable errors that are a server verdict rather than congestion get fewer tries.
    max_attempts: int | None = None

    def __init__(
        self,
        api_type: str,
        code: int,
        message: str,
        request_id: str = "",
        *,
        secrets: Iterable[str] = (),
    ) -> None:
        self.api_type = api_type
        self.code = code
        self.message = scrub(message, secrets)
        self.request_id = request_id
        self.shop_id: str | None = None
        # Set by the transport: an app-scoped error must say which [[apps]] entry to fix.
        self.app_key: str | None = None
        # Set by the transport when the envelope said ``success: true`` beside this code:
        # whether the request was applied is then unknown (never proof that it was not).
        self.flagged_success = False
        super().__init__(api_type, code, self.message, request_id)

    # Set on Temu's verdicts about the app's own credentials: what the operator should fix.
    config_hint: str | None = None

    def __str__(self) -> str:
        shop = f" shop={self.shop_id}" if self.shop_id else ""
        text = (
            f"{self.api_type}{shop}: errorCode={self.code} errorMsg={self.message!r} "
            f"requestId={self.request_id or '-'}"
        )
        if self.config_hint and self.app_key:
            # Not retried and not the shop's fault: every shop of this app fails the same way.
            text += f" (configuration error of app {self.app_key}: {self.config_hint})"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self})"


class TransportError(TemuError):
    """No usable envelope: HTTP 5xx, connection failure, timeout, invalid JSON.

    ``code`` is the HTTP status when there was one, else 0.
    """

    retryable = True


class UnexpectedHttpStatus(TransportError):
    """A non-200, non-5xx answer without an envelope (e.g. a proxy's 403): retrying won't help."""

    retryable = False


class MalformedResponse(TransportError):
    """The envelope said success but ``result`` lacks the shape the API documents.

    Retryable (a gateway may truncate or mangle one answer) but raised by the API layer after the
    transport's retries, so the caller decides whether to try the page again.
    """


class RateLimited(TemuError):
    retryable = True


class SystemBusy(TemuError):
    retryable = True


class ApiFailure(TemuError):
    retryable = True
    max_attempts = 3


class BadParams(TemuError):
    pass


class BadSignature(TemuError):
    scope = "app"
    config_hint = "the signature was rejected; check that app's app_secret"


_SERVER_TIME = re.compile(r"(?<!\d)(1\d{9})(?:\d{3})?(?!\d)")


class TimestampRejected(TemuError):
    """3000011/3000012: the server disagrees with our clock by more than 300 s."""

    def __init__(
        self,
        api_type: str,
        code: int,
        message: str,
        request_id: str = "",
        *,
        secrets: Iterable[str] = (),
        local_timestamp: int | None = None,
        server_timestamp: int | None = None,
    ) -> None:
        super().__init__(api_type, code, message, request_id, secrets=secrets)
        self.local_timestamp = local_timestamp
        self.skew_s: int | None = None
        if local_timestamp is not None:
            # The server sometimes states its own time; then the skew can be given exactly.
            for m in _SERVER_TIME.finditer(self.message):
                server = int(m.group(1))
                if server != local_timestamp:
                    self.skew_s = local_timestamp - server
                    break
            if self.skew_s is None and server_timestamp is not None:
                # Else the answer's HTTP Date header (whole seconds, so within a second or
                # two): a rejection is only ever about a skew beyond 300 s.
                self.skew_s = local_timestamp - server_timestamp

    def __str__(self) -> str:
        base = super().__str__()
        if self.local_timestamp is None:
            return base
        if self.skew_s is not None and abs(self.skew_s) <= CLOCKS_AGREE_S:
            # Temu's window is +-300 s: a refusal with clocks this close is not our clock's.
            return (
                f"{base} (sent timestamp {self.local_timestamp}; the local clock agrees with "
                f"the server's within {abs(self.skew_s)} s: not this host's clock)"
            )
        if self.skew_s is not None:
            direction = "ahead of" if self.skew_s > 0 else "behind"
            return (
                f"{base} (sent timestamp {self.local_timestamp}; local clock is "
                f"{abs(self.skew_s)} s {direction} the server's: fix the host clock)"
            )
        return f"{base} (sent timestamp {self.local_timestamp}; check the host clock)"


# Within this, local and server clocks agree (the Date header has whole seconds).
CLOCKS_AGREE_S = 5


class AppAuthError(TemuError):
    scope = "app"
    config_hint = "the app_key is missing, unknown, suspended or lacks the permission"


class AppNotOwned(TemuError):
    """Raised before sending, never by Temu: another process holds this app's lease (several
    daemons share one database), so a call from here could break the app's rate limit."""

    scope = "app"


class ShopAuthError(TemuError):
    scope = "shop"


class AftersalesStateError(TemuError):
    """The return is not in a state that allows the operation: re-read it, don't retry."""


class UnknownApiError(TemuError):
    pass


class EventSubscriptionError(TemuError):
    """``bg.tmc.message.update`` refused a subscription (temu-webhooks.md); ``explanation``
    says in words what the seller or the developer has to do. Only that call fails: the
    shop's sync does not depend on webhooks."""

    explanation = ""

    def __str__(self) -> str:
        return f"{super().__str__()} ({self.explanation})"


class EventSubscriptionTooFast(EventSubscriptionError):
    # Not retried by the transport, whose jittered backoff can be under the 1 s this API
    # wants; the subscriber spaces its calls and tries again after a second.
    explanation = "more than 1 request per second to bg.tmc.message.update; wait a second"


class EventNotAuthorized(EventSubscriptionError):
    explanation = (
        "the shop's access token has no access to this event: the seller must authorize the "
        "event topics in Seller Center, which issues a new access token to configure"
    )


class EventNotApproved(EventSubscriptionError):
    explanation = (
        "the app has no approved subscription to this event: set the callback URL and event "
        "topics in Temu's Partner Platform and wait for Temu's approval"
    )


SUCCESS_CODE = 1000000

_EXACT: dict[int, type[TemuError]] = {
    2000000: ApiFailure,
    7000000: ApiFailure,
    3000000: BadParams,
    3000001: BadSignature,
    3000011: TimestampRejected,
    3000012: TimestampRejected,
    4000000: SystemBusy,
    4000004: RateLimited,
    110020007: EventSubscriptionTooFast,
    110020008: EventNotAuthorized,
    110020009: EventNotApproved,
}
_RANGES: tuple[tuple[int, int, type[TemuError]], ...] = (
    (3000020, 3000028, AppAuthError),
    (3000030, 3000034, ShopAuthError),
    (5000000, 5000003, ShopAuthError),
    (130010004, 130010007, AftersalesStateError),
)


def classify(code: int) -> type[TemuError]:
    cls = _EXACT.get(code)
    if cls is not None:
        return cls
    for low, high, cls in _RANGES:
        if low <= code <= high:
            return cls
    return UnknownApiError


def error_for(
    api_type: str,
    code: int,
    msg: str,
    request_id: str,
    *,
    secrets: Iterable[str] = (),
    local_timestamp: int | None = None,
    server_timestamp: int | None = None,
) -> TemuError:
    cls = classify(code)
    if cls is TimestampRejected:
        return TimestampRejected(
            api_type,
            code,
            msg,
            request_id,
            secrets=secrets,
            local_timestamp=local_timestamp,
            server_timestamp=server_timestamp,
        )
    return cls(api_type, code, msg, request_id, secrets=secrets)
