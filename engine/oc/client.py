"""Orange Connex (OC) Return 2.0 client: the calls, paced and retried.

The wire names live in ``engine/oc/wire.py``, the OAuth token in ``engine/oc/auth.py``.

Secrets: the access token, refresh tokens and client key never appear in an exception message
or a log line. aiohttp exceptions are reduced to their class name, because some of them print
the request URL and the OAuth URL carries the refresh token in its query string.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import orjson
from aiolimiter import AsyncLimiter

from engine.config import OrangeConnexSettings
from engine.oc.auth import OCAuth
from engine.oc.errors import OCAuthError, OCBusinessError, OCError
from engine.oc.tokens import TokenStore
from engine.oc.wire import (
    F_CARRIER_NAME,
    F_DATA,
    F_MESSAGE_ID,
    F_OPERATION,
    F_ORDER_NUMBER,
    F_REFERENCE_NUMBER,
    F_TRACKING_NUMBER,
    HDR_ACCESS_TOKEN,
    HDR_CLIENT_KEY,
    OPERATION_CANCEL,
    OPERATION_UPDATE_TRACKING,
    PATH_CANCEL_RMA,
    PATH_QUERY_LABEL,
    PATH_QUERY_ORDERS,
    Envelope,
    Label,
    Rma,
    loads,
    new_message_id,
    parse_envelope,
    parse_label,
    parse_rma,
    result_list,
    token_trouble,
)
from engine.retry import full_jitter

__all__ = [
    "Label",
    "OCAuthError",
    "OCBusinessError",
    "OCClient",
    "OCError",
    "Rma",
    "new_message_id",
]

log = logging.getLogger("engine.oc")


class OCClient:
    """One per OC client id per process. Does not own ``session``.

    Counters (read by metrics): ``calls`` (API requests sent), ``retries`` (backoff sleeps),
    ``token_refreshes`` (successful OAuth refreshes), ``auth_retries`` (calls replayed after the
    token was rejected), ``outcomes`` ((operation, outcome) -> count). ``on_token_refresh`` is
    called after each successful refresh, for a metrics counter.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: OrangeConnexSettings,
        tokens: TokenStore,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        max_attempts: int = 5,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        refresh_margin_s: float = 60.0,
        budget_s: float | None = None,
        on_token_refresh: Callable[[], None] | None = None,
    ) -> None:
        self._session = session
        # Two request timeouts: a retry after one lost answer fits, a dead host does not
        # outlast a reconciler pass's stale limit (3 intervals + 30 s, 75 s by default).
        self._budget_s = budget_s if budget_s is not None else 2 * settings.timeout_s
        self._settings = settings
        self._tokens = tokens
        self._sleep = sleep
        self._rng = rng
        self._max_attempts = max(1, max_attempts)
        self._backoff_base = backoff_base_s
        self._backoff_cap = backoff_cap_s
        self._base_url = settings.base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
        # max_rate=1 per 1/qps seconds: evenly spaced requests, never a burst.
        self._limiter = AsyncLimiter(1, 1.0 / settings.qps)
        self._auth = OCAuth(
            session,
            settings,
            tokens,
            clock=clock,
            backoff=self._backoff,
            refresh_margin_s=refresh_margin_s,
            timeout=self._timeout,
            on_token_refresh=on_token_refresh,
        )

        self.calls = 0
        self.retries = 0
        self.auth_retries = 0
        self.outcomes: Counter[tuple[str, str]] = Counter()

    @property
    def token_refreshes(self) -> int:
        return self._auth.token_refreshes

    # --- public API ---

    async def query_orders(self, reference_number: str) -> list[Rma]:
        """The RMAs OC holds for a Temu ``parentAfterSalesSn`` (empty when none)."""
        env = await self._call(
            "query_orders", "GET", PATH_QUERY_ORDERS, query={F_REFERENCE_NUMBER: reference_number}
        )
        out: list[Rma] = []
        for item in result_list(env.result):
            rma = parse_rma(item)
            if rma is None:
                log.warning("OC query_orders: skipped an entry without %s", F_ORDER_NUMBER)
                continue
            out.append(rma)
        return out

    async def query_label(self, order_number: str) -> Label | None:
        """The RMA's return label, or None while OC has not issued it (ask again later)."""
        try:
            env = await self._call(
                "query_label", "GET", PATH_QUERY_LABEL, query={F_ORDER_NUMBER: order_number}
            )
        except OCBusinessError as exc:
            # The spec treats success=false as "not ready yet"; the code is kept for diagnosis.
            log.info("OC label for %s not ready: %s", order_number, exc)
            return None
        return parse_label(env.result, order_number)

    async def cancel_rma(self, order_number: str, *, message_id: str) -> dict[str, Any]:
        return await self._push(
            "cancel_rma", message_id, {F_ORDER_NUMBER: order_number, F_OPERATION: OPERATION_CANCEL}
        )

    async def update_tracking(
        self, order_number: str, tracking_number: str, carrier_name: str, *, message_id: str
    ) -> dict[str, Any]:
        return await self._push(
            "update_tracking",
            message_id,
            {
                F_ORDER_NUMBER: order_number,
                F_OPERATION: OPERATION_UPDATE_TRACKING,
                F_TRACKING_NUMBER: tracking_number,
                F_CARRIER_NAME: carrier_name,
            },
        )

    # --- calls ---

    async def _push(self, operation: str, message_id: str, data: dict[str, Any]) -> dict[str, Any]:
        if not message_id:
            raise ValueError("message_id is required so that a re-push is recognised by OC")
        env = await self._call(operation, "POST", PATH_CANCEL_RMA, data=data, message_id=message_id)
        return env.result if isinstance(env.result, dict) else {}

    async def _call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        data: dict[str, Any] | None = None,
        message_id: str | None = None,
    ) -> Envelope:
        """One logical operation within its budget: an OC (or its OAuth host) that accepts
        connections and never answers must not hold a reconciler pass for minutes (five
        attempts of ``timeout_s`` each, plus backoff). Out of budget, the operation fails as
        retryable; a push's retry reuses its messageId, so OC can tell a repeat."""
        stage = ["start"]
        try:
            async with asyncio.timeout(self._budget_s):
                return await self._attempts(
                    operation,
                    method,
                    path,
                    query=query,
                    data=data,
                    message_id=message_id,
                    stage=stage,
                )
        except TimeoutError:
            self.outcomes[(operation, "out_of_budget")] += 1
            if stage[0] == "auth":
                self._auth.note_no_answer()
            raise OCError(
                self._auth.msg(operation, f"no answer within {self._budget_s:g} s"),
                operation=operation,
                retryable=True,
            ) from None

    async def _attempts(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None,
        data: dict[str, Any] | None,
        message_id: str | None,
        stage: list[str],
    ) -> Envelope:
        """``stage[0]``: "auth" while waiting for the access token (what ran out of budget)."""
        url = self._base_url + path
        failures = 0
        auth_retried = False
        # One logical operation, one messageId: every retry below repeats it (spec: OC uses it
        # to recognise a repeated message).
        message_id = message_id or new_message_id()
        while True:
            stage[0] = "auth"
            token = await self._auth.access()
            stage[0] = "call"
            headers = {HDR_ACCESS_TOKEN: token}
            if self._settings.client_key:
                headers[HDR_CLIENT_KEY] = self._settings.client_key.get()
            params: dict[str, str] | None = None
            body: bytes | None = None
            if method == "GET":
                params = {**(query or {}), F_MESSAGE_ID: message_id}
            else:
                body = orjson.dumps({F_MESSAGE_ID: message_id, F_DATA: data})
                headers["Content-Type"] = "application/json"

            await self._limiter.acquire()
            self.calls += 1
            try:
                async with self._session.request(
                    method, url, params=params, data=body, headers=headers, timeout=self._timeout
                ) as resp:
                    status = resp.status
                    payload = await resp.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.outcomes[(operation, "transport_error")] += 1
                failures += 1
                await self._backoff(operation, failures, type(exc).__name__, None)
                continue

            env = parse_envelope(loads(payload))
            bad_token = env is not None and not env.success and token_trouble(env)
            if status == 401 or bad_token:
                self.outcomes[(operation, "auth_rejected")] += 1
                if auth_retried:
                    raise OCAuthError(
                        self._auth.msg(
                            operation, "access token rejected again right after a refresh"
                        ),
                        operation=operation,
                        status=status,
                        code=env.code if env else "",
                    )
                auth_retried = True
                self.auth_retries += 1
                log.info("OC %s: access token rejected; refreshing once", operation)
                stage[0] = "auth"
                await self._auth.replace_rejected(token)
                stage[0] = "call"
                continue
            if status >= 500 or status == 429:
                self.outcomes[(operation, "http_error")] += 1
                failures += 1
                await self._backoff(operation, failures, f"HTTP {status}", status)
                continue
            if status >= 400:
                self.outcomes[(operation, "http_error")] += 1
                detail = f": {env.code} {env.message}".rstrip() if env else ""
                raise OCError(
                    self._auth.msg(operation, f"HTTP {status}{detail}"),
                    operation=operation,
                    status=status,
                    code=env.code if env else "",
                    request_id=env.request_id if env else "",
                )
            if env is None:
                self.outcomes[(operation, "bad_json")] += 1
                failures += 1
                await self._backoff(operation, failures, "response is not a JSON object", None)
                continue
            if not env.success:
                if env.fallback:
                    # isFallback marks a degraded gateway answer, not a verdict on our request.
                    self.outcomes[(operation, "fallback")] += 1
                    failures += 1
                    await self._backoff(operation, failures, f"fallback answer {env.code}", None)
                    continue
                self.outcomes[(operation, "business_error")] += 1
                raise OCBusinessError(
                    self._auth.msg(operation, f"business error {env.code or '?'}: {env.message}"),
                    operation=operation,
                    status=status,
                    code=env.code,
                    request_id=env.request_id,
                )
            self.outcomes[(operation, "ok")] += 1
            return env

    async def _backoff(
        self, operation: str, failures: int, reason: str, status: int | None
    ) -> None:
        if failures >= self._max_attempts:
            raise OCError(
                self._auth.msg(operation, f"gave up after {failures} attempts ({reason})"),
                operation=operation,
                status=status,
                retryable=True,
            )
        # Full jitter: concurrent callers that failed together do not retry together.
        delay = full_jitter(self._backoff_base, self._backoff_cap, failures, self._rng)
        self.retries += 1
        log.warning(
            "OC %s failed (%s); retry %d/%d in %.2fs",
            operation,
            self._auth.scrub(reason),
            failures,
            self._max_attempts - 1,
            delay,
        )
        await self._sleep(delay)

    # --- tokens ---
