"""One signed POST to the Temu router per try, with pacing, retries and typed errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from engine.config import AppSettings
from engine.retry import full_jitter
from engine.temu import stats as outcomes
from engine.temu.decode import decode_body
from engine.temu.errors import (
    AppNotOwned,
    RateLimited,
    SystemBusy,
    TemuError,
    TimestampRejected,
    TransportError,
    UnexpectedHttpStatus,
    error_for,
)
from engine.temu.limiter import AppPacer, Lane, Send
from engine.temu.signing import signed_body
from engine.temu.stats import CallStats

log = logging.getLogger(__name__)

_JSON_HEADERS = {"Content-Type": "application/json"}
# 4000004 answers a call may take in a row, in units of apps.max_attempts (see _retry_delay).
RATE_LIMITED_TRIES_FACTOR = 3
SUCCESS_CODE = 1000000
_COMMON_KEYS = frozenset({"type", "app_key", "access_token", "timestamp", "data_type", "sign"})


class DeadlinePassed(TemuError):
    """A call with a ``deadline`` stopped before a (re)send that could still be in flight
    after it: nothing more was sent, so nothing was applied by this try (earlier tries of a
    non-idempotent call were resent only after refusals that prove that too)."""

    retryable = True


class TemuTransport:
    """One per app_key; every shop of the app calls through it (and through its pacer)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        app: AppSettings,
        pacer: AppPacer,
        stats: CallStats,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        rate_limited_backoff_s: float = 0.1,
        connection_slots: asyncio.Semaphore | None = None,
    ) -> None:
        self.session = session
        self._slots = connection_slots
        self.app = app
        self.pacer = pacer
        self.stats = stats
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self.max_attempts = max(1, max_attempts if max_attempts is not None else app.max_attempts)
        self._timeout = aiohttp.ClientTimeout(
            total=timeout_s if timeout_s is not None else app.timeout_s
        )
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._rate_limited_backoff_s = rate_limited_backoff_s

    async def call(
        self,
        api_type: str,
        access_token: str,
        params: dict[str, Any],
        *,
        lane: Lane,
        idempotent: bool = True,
        deadline: float | None = None,
    ) -> dict[str, Any]:
        """The envelope's ``result`` (``{}`` when null); raises a TemuError subclass.

        ``idempotent=False`` (a write such as a label upload): only failures that prove the
        request was not applied (the gateway's rate-limit, signature or timestamp refusal) are
        sent again; a lost or failed answer surfaces so the caller can re-read the state.

        ``deadline`` (the event loop's clock): no send starts unless its answer (or its
        timeout) comes by then; otherwise ``DeadlinePassed`` is raised instead of sending."""
        clash = _COMMON_KEYS.intersection(params)
        if clash:
            raise ValueError(f"{api_type}: params may not set {sorted(clash)}")
        secrets = (self.app.app_secret.get(), access_token)
        extra = {"app_key": self.app.app_key, "api_type": api_type}
        timestamp_retried = False
        attempt = 0
        # Backoff grows per family: a throttling storm's refusals must not stretch the wait
        # after an unrelated 502 to the cap (seen: 30 s after a 1 s storm), nor the reverse.
        failures = {True: 0, False: 0}  # rate limited? -> failures of that family so far
        while True:
            attempt += 1
            # A connection slot is taken before the grant and held until the answer: when
            # Temu is slow, callers wait for a slot without a grant, so grants never pile up
            # behind the connector and leave in a burst when connections free up.
            async with self._connection_slot():
                send = await self._grant(api_type, lane, deadline)
                timestamp = int(self._clock())
                body = signed_body(
                    {
                        "type": api_type,
                        "app_key": self.app.app_key,
                        "access_token": access_token,
                        "timestamp": timestamp,
                        "data_type": "JSON",
                        **params,
                    },
                    self.app.app_secret.get(),
                )
                self.stats.requests += 1
                if attempt > 1:
                    self.stats.retries += 1
                sent_at = time.monotonic()
                error: TemuError | None = None
                try:
                    result = await self._send(api_type, body, secrets, timestamp, send)
                except AppNotOwned:
                    # Fenced before any byte left (send_fence): no request reached Temu.
                    self.stats.requests -= 1
                    if attempt > 1:
                        self.stats.retries -= 1
                    raise
                except TemuError as failed:
                    error = failed
            if error is not None:
                self.stats.timed(self.app.app_key, api_type, time.monotonic() - sent_at)
                error.app_key = self.app.app_key
                failures[isinstance(error, RateLimited)] += 1
                retry_in = self._retry_delay(
                    error, attempt, timestamp_retried, failures[isinstance(error, RateLimited)]
                )
                # A write is sent again only after a refusal that proves it was not applied;
                # one that came flagged success proves nothing (it may have been applied).
                proves_unapplied = isinstance(error, RateLimited | TimestampRejected) and not (
                    error.flagged_success
                )
                if not idempotent and not proves_unapplied:
                    retry_in = None
                if isinstance(error, RateLimited):
                    self.pacer.on_rate_limited()
                    self.stats.record(self.app.app_key, api_type, outcomes.RATE_LIMITED)
                elif retry_in is None:
                    self.stats.record(self.app.app_key, api_type, outcomes.error_outcome(error))
                else:
                    self.stats.record(self.app.app_key, api_type, outcomes.RETRY)
                if not isinstance(error, TransportError | RateLimited | SystemBusy):
                    # The server answered, so the rate window accepted this send.
                    self.pacer.on_success()
                if retry_in is None:
                    log.warning("temu call failed: %s (attempt %d)", error, attempt, extra=extra)
                    raise error
                if isinstance(error, TimestampRejected):
                    timestamp_retried = True
                level = logging.DEBUG if isinstance(error, RateLimited) else logging.WARNING
                log.log(
                    level,
                    "temu call retrying in %.2fs: %s (attempt %d of %d)",
                    retry_in,
                    error,
                    attempt,
                    self.max_attempts,
                    extra=extra,
                )
                if deadline is not None and self._too_late(deadline, retry_in):
                    raise DeadlinePassed(api_type, 0, f"deadline before the resend after: {error}")
                if retry_in > 0:
                    await self._sleep(retry_in)
                continue
            self.stats.timed(self.app.app_key, api_type, time.monotonic() - sent_at)
            self.pacer.on_success()
            self.stats.record(self.app.app_key, api_type, outcomes.OK)
            log.debug("temu call ok (attempt %d)", attempt, extra=extra)
            return result

    def _too_late(self, deadline: float, wait_s: float = 0.0) -> bool:
        """A send starting ``wait_s`` from now could still be in flight at ``deadline``."""
        latest = asyncio.get_running_loop().time() + wait_s + (self._timeout.total or 0.0)
        return latest > deadline

    async def _grant(self, api_type: str, lane: Lane, deadline: float | None) -> Send:
        """The pacer's grant; with a deadline, only while a send could still end by then."""
        if deadline is None:
            return await self.pacer.acquire(lane)
        if self._too_late(deadline):
            raise DeadlinePassed(api_type, 0, "deadline reached before the send")
        try:
            # A cancelled pacer waiter is skipped by its dispatcher (limiter.py).
            async with asyncio.timeout_at(deadline - (self._timeout.total or 0.0)):
                return await self.pacer.acquire(lane)
        except TimeoutError:
            raise DeadlinePassed(api_type, 0, "deadline reached waiting for the pacer") from None

    @contextlib.asynccontextmanager
    async def _connection_slot(self) -> AsyncIterator[None]:
        if self._slots is None:
            yield
            return
        async with self._slots:
            yield

    def _retry_delay(
        self, exc: TemuError, attempt: int, timestamp_retried: bool, failures: int | None = None
    ) -> float | None:
        """Seconds to wait before the next try, or None to surface ``exc`` now.

        ``attempt`` counts every try (bounded by max_attempts); ``failures`` counts this
        error's family (rate limiting, or anything else) and sets the backoff."""
        if failures is None:
            failures = attempt
        if isinstance(exc, TimestampRejected):
            # A fresh timestamp fixes a request that sat in a queue; a second rejection is skew.
            return None if timestamp_retried or attempt >= self.max_attempts else 0.0
        if not exc.retryable:
            return None
        if isinstance(exc, RateLimited):
            # temu-api.md: 4000004 means "slow down, retry", with no cap. The pacer already
            # slowed down and queues the retry; the first retries only de-synchronise
            # callers, later ones back off (to backoff_max_s) so a throttling storm is
            # outlasted: this family gets three times the tries (minutes), not max_attempts.
            if failures >= RATE_LIMITED_TRIES_FACTOR * self.max_attempts:
                return None
            return full_jitter(
                self._rate_limited_backoff_s, self._backoff_max_s, failures, self._rng
            )
        limit = (
            self.max_attempts
            if exc.max_attempts is None
            else min(self.max_attempts, exc.max_attempts)
        )
        if attempt >= limit:
            return None
        # Full jitter: concurrent callers that failed together don't retry together.
        return full_jitter(self._backoff_base_s, self._backoff_max_s, failures, self._rng)

    async def _send(
        self, api_type: str, body: bytes, secrets: tuple[str, str], timestamp: int, send: Send
    ) -> dict[str, Any]:
        try:
            async with self.session.post(
                self.app.router_url,
                data=body,
                headers=_JSON_HEADERS,
                timeout=self._timeout,
                trace_request_ctx=self.pacer.gate,  # see send_fence()
            ) as resp:
                # The round trip bounds how late this send reached the rate window.
                self.pacer.on_answer(send)
                status = resp.status
                raw = await resp.read()
                server_time = _http_date(resp.headers.get("Date"))
        except TimeoutError:
            raise TransportError(api_type, 0, f"no answer within {self._timeout.total} s") from None
        except aiohttp.ClientError as exc:
            raise TransportError(
                api_type, 0, f"{type(exc).__name__}: {exc}", secrets=secrets
            ) from None
        return _parse_envelope(
            api_type, status, raw, secrets, timestamp, server_time, self.stats.tolerant_decode
        )


def send_fence() -> aiohttp.TraceConfig:
    """For the session's ``trace_configs``: checks the app's lease gate again once the
    connection is ready, just before the request is written.

    The pacer checks the gate when it grants a send, but a process paused between that grant
    and the write (SIGSTOP, a VM freeze, a long GC) would, on waking, send for an app another
    process took over meanwhile, and the two would together exceed the app's limit. Raising
    here (``AppNotOwned``) aborts the request before any byte leaves."""

    async def check(_session: aiohttp.ClientSession, ctx: Any, _params: Any) -> None:
        gate = ctx.trace_request_ctx
        if gate is not None:
            gate()

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(check)
    trace.on_connection_reuseconn.append(check)
    return trace


def _http_date(value: str | None) -> int | None:
    """The server's clock from an HTTP Date header (Unix seconds), None if absent or bad."""
    if not value:
        return None
    try:
        return int(parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _parse_envelope(
    api_type: str,
    status: int,
    raw: bytes,
    secrets: tuple[str, str],
    timestamp: int,
    server_time: int | None = None,
    on_repaired: Callable[[], None] | None = None,
) -> dict[str, Any]:
    if status >= 500:
        raise TransportError(api_type, status, f"HTTP {status}: {_snippet(raw)}", secrets=secrets)
    if status == 429:
        # A gateway in front of the router may throttle with HTTP instead of 4000004.
        raise RateLimited(api_type, status, f"HTTP 429: {_snippet(raw)}", secrets=secrets)
    try:
        decoded = decode_body(raw)
    except ValueError:
        cls = TransportError if status == 200 else UnexpectedHttpStatus
        raise cls(
            api_type, status, f"HTTP {status}, not JSON: {_snippet(raw)}", secrets=secrets
        ) from None
    envelope = decoded.value
    if decoded.repaired:
        # Once per page: the tolerant decoder kept what orjson refused or bent (decode.py).
        log.warning(
            "%s: answer decoded tolerantly (invalid UTF-8, lone surrogate or out-of-range "
            "number kept as close to the original as Postgres allows)",
            api_type,
        )
        if on_repaired is not None:
            on_repaired()
    if not isinstance(envelope, dict) or not isinstance(envelope.get("success"), bool):
        cls = TransportError if status == 200 else UnexpectedHttpStatus
        raise cls(
            api_type, status, f"HTTP {status}, no Temu envelope: {_snippet(raw)}", secrets=secrets
        )
    request_id = str(envelope.get("requestId") or "")
    code = envelope.get("errorCode")
    # temu-api.md: "Errors are in errorCode". A success flag beside another code (seen:
    # 4000004) is that error, so a rate limit still slows the pacer and is retried. A code
    # that is no number at all (absent, null, words) leaves the flag to decide.
    if envelope["success"] and _error_code(code) in (0, SUCCESS_CODE):
        result = envelope.get("result")
        if result is None:
            return {}
        if not isinstance(result, dict):
            raise TransportError(
                api_type, status, f"result is {type(result).__name__}, not an object", request_id
            )
        return result
    message = envelope.get("errorMsg")
    error = error_for(
        api_type,
        _error_code(code),
        message if isinstance(message, str) else "",
        request_id,
        secrets=secrets,
        local_timestamp=timestamp,
        server_timestamp=server_time,
    )
    error.flagged_success = envelope["success"]
    raise error


def _error_code(value: Any) -> int:
    """errorCode as a number, also when it comes quoted ("4000004") or as 4000004.0: its
    meaning (rate limit, token refused...) must not depend on its JSON type. 0: unreadable."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value.strip())
    return 0


def _snippet(raw: bytes, limit: int = 200) -> str:
    return raw[:limit].decode("utf-8", "replace")
