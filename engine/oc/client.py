"""Orange Connex (OC) Return 2.0 client: OAuth refresh with persisted rotation, paced calls.

Every OC wire name (paths, headers, envelope and payload fields) is a constant in this module:
most of the OC contract is ASSUMED (spec ``orange-connex-api.md``), so a rename seen in real
traffic must be a one-line change here.

Secrets: the access token, refresh tokens and client key never appear in an exception message
or a log line. aiohttp exceptions are reduced to their class name, because some of them print
the request URL and the OAuth URL carries the refresh token in its query string.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiolimiter import AsyncLimiter

from engine.config import OrangeConnexSettings
from engine.logs import redact
from engine.oc.tokens import StoredTokens, TokenStore

log = logging.getLogger("engine.oc")

# --- OC wire names ------------------------------------------------------------------------------
PATH_OAUTH_TOKEN = "/oauth/token"
PATH_QUERY_ORDERS = "/3pp/returns/v1/query/orders"
PATH_QUERY_LABEL = "/3pp/returns/v1/query/label"
PATH_CANCEL_RMA = "/3pp/returns/v1/cancel/rma"

HDR_ACCESS_TOKEN = "Access-Token"
HDR_CLIENT_KEY = "clientKey"

Q_CLIENT_ID = "client_id"
Q_GRANT_TYPE = "grant_type"
Q_REFRESH_TOKEN = "refresh_token"
GRANT_REFRESH_TOKEN = "refresh_token"

# OAuth answer: snake case per the spec; camel case tolerated in case the gateway rewrites it.
TOK_ACCESS = ("access_token", "accessToken")
TOK_REFRESH = ("refresh_token", "refreshToken")
TOK_EXPIRES_IN = ("expires_in", "expiresIn")
TOK_ERROR_CODE = ("error", "errorCode")
TOK_ERROR_TEXT = ("error_description", "errorMsg", "message")
TOK_WRAPPERS = ("result", "data")
DEFAULT_TOKEN_LIFETIME_S = 3600

ENV_REQUEST_ID = "requestId"
ENV_SUCCESS = "success"
ENV_BUSINESS_EXCEPTION = "hasBusinessException"
ENV_ERROR_CODE = "errorCode"
ENV_ERROR_MSG = "errorMsg"
ENV_MESSAGE = "message"
ENV_RESULT = "result"
ENV_FALLBACK = "isFallback"

F_MESSAGE_ID = "messageId"
F_DATA = "data"
F_ORDER_NUMBER = "orderNumber"
F_REFERENCE_NUMBER = "referenceNumber"
F_STATUS = "status"
F_TRACKING_NUMBER = "trackingNumber"
F_CARRIER_NAME = "carrierName"
F_SERVICE_TYPE = "serviceType"
F_DOC_URL = "docUrl"
F_QR_CODE_URL = "qrCodeUrl"
F_OPERATION = "operation"
OPERATION_CANCEL = "CANCEL"
OPERATION_UPDATE_TRACKING = "UPDATE_TRACKING"

# OC does not document its RMA statuses; these end an RMA. ASSUMED: any other status (OPEN,
# CREATED, IN_TRANSIT, ...) is an RMA that can still change.
CLOSED_STATUSES = frozenset(
    {"CANCELLED", "CANCELED", "CLOSED", "COMPLETED", "COMPLETE", "FINISHED", "RECEIVED"}
)

# query/orders is documented as a bare list; a paged wrapper object is tolerated.
RESULT_LIST_KEYS = ("list", "records", "data", "orders", "items")

# OC reports a bad token either as HTTP 401 or as an error code/message in a 200 envelope;
# codes come in several spellings (TOKEN_EXPIRE, ACCESS_TOKEN_EXPIRED, "invalid token", "401").
_TOKEN_TROUBLE = re.compile(
    r"token.{0,40}(invalid|expir\w*|illegal|not\s*exist)"
    r"|(invalid|expir\w*|illegal).{0,40}token"
    r"|unauthori[sz]ed",
    re.IGNORECASE | re.DOTALL,
)
TOKEN_TROUBLE_CODES = frozenset({"401"})
_MAX_TEXT = 300  # server-provided text quoted in errors is cut here
_REMEMBERED_TOKENS = 16


# --- Errors -------------------------------------------------------------------------------------


class OCError(Exception):
    """An Orange Connex call failed. The message never contains a token or the client key."""

    def __init__(
        self,
        message: str,
        *,
        operation: str = "",
        status: int | None = None,
        code: str = "",
        request_id: str = "",
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.operation = operation
        self.status = status
        self.code = code
        self.request_id = request_id
        self.retryable = retryable


class OCAuthError(OCError):
    """OC refused our credentials even after a refresh: a configuration problem to fix."""


class OCBusinessError(OCError):
    """OC answered ``success: false`` with a business error (``code`` carries errorCode)."""


# --- Results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rma:
    order_number: str
    reference_number: str
    status: str
    tracking_number: str | None
    carrier_name: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def is_open(self) -> bool:
        return self.status.strip().upper() not in CLOSED_STATUSES


@dataclass(frozen=True)
class Label:
    order_number: str
    reference_number: str | None
    service_type: str | None
    tracking_number: str | None
    carrier_name: str | None
    doc_url: str
    qr_code_url: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class _Envelope:
    success: bool
    code: str
    message: str
    request_id: str
    fallback: bool
    result: Any


def new_message_id() -> str:
    """A fresh OC messageId. POST callers keep it with their task so a re-push reuses it."""
    return uuid.uuid4().hex


def _text(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int | float):
        return str(value)
    return ""


def _opt(value: Any) -> str | None:
    return _text(value) or None


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def _first(d: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        if d.get(name) not in (None, ""):
            return d[name]
    return None


def _loads(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None


def _envelope(body: Any) -> _Envelope | None:
    if not isinstance(body, dict):
        return None
    code = _text(body.get(ENV_ERROR_CODE))
    if ENV_SUCCESS in body:
        success = _flag(body.get(ENV_SUCCESS))
    else:
        # Loose parsing: without the flag, an error code or business exception means failure.
        success = not code and not _flag(body.get(ENV_BUSINESS_EXCEPTION))
    return _Envelope(
        success=success,
        code=code,
        message=_text(body.get(ENV_ERROR_MSG)) or _text(body.get(ENV_MESSAGE)),
        request_id=_text(body.get(ENV_REQUEST_ID)),
        fallback=_flag(body.get(ENV_FALLBACK)),
        result=body.get(ENV_RESULT),
    )


def _token_trouble(env: _Envelope) -> bool:
    return env.code in TOKEN_TROUBLE_CODES or bool(
        _TOKEN_TROUBLE.search(f"{env.code} {env.message}")
    )


def _result_list(result: Any) -> list[Any]:
    if isinstance(result, list):
        return result
    if isinstance(result, dict):
        for key in RESULT_LIST_KEYS:
            if isinstance(result.get(key), list):
                return list(result[key])
    return []


def _rma(item: Any) -> Rma | None:
    if not isinstance(item, dict) or not _text(item.get(F_ORDER_NUMBER)):
        return None
    return Rma(
        order_number=_text(item.get(F_ORDER_NUMBER)),
        reference_number=_text(item.get(F_REFERENCE_NUMBER)),
        status=_text(item.get(F_STATUS)),
        tracking_number=_opt(item.get(F_TRACKING_NUMBER)),
        carrier_name=_opt(item.get(F_CARRIER_NAME)),
        raw=item,
    )


def _label(result: Any, order_number: str) -> Label | None:
    if not isinstance(result, dict) or not _text(result.get(F_DOC_URL)):
        return None
    return Label(
        order_number=_text(result.get(F_ORDER_NUMBER)) or order_number,
        reference_number=_opt(result.get(F_REFERENCE_NUMBER)),
        service_type=_opt(result.get(F_SERVICE_TYPE)),
        tracking_number=_opt(result.get(F_TRACKING_NUMBER)),
        carrier_name=_opt(result.get(F_CARRIER_NAME)),
        doc_url=_text(result.get(F_DOC_URL)),
        qr_code_url=_opt(result.get(F_QR_CODE_URL)),
        raw=result,
    )


# --- Client -------------------------------------------------------------------------------------


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
        on_token_refresh: Callable[[], None] | None = None,
    ) -> None:
        self._session = session
        self._settings = settings
        self._tokens = tokens
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._max_attempts = max(1, max_attempts)
        self._backoff_base = backoff_base_s
        self._backoff_cap = backoff_cap_s
        self._margin = refresh_margin_s
        self._on_token_refresh = on_token_refresh
        self._base_url = settings.base_url.rstrip("/")
        self._oauth_url = settings.oauth_base_url.rstrip("/") + PATH_OAUTH_TOKEN
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
        # max_rate=1 per 1/qps seconds: evenly spaced requests, never a burst.
        self._limiter = AsyncLimiter(1, 1.0 / settings.qps)
        # One refresh at a time: two racing refreshes would burn a rotated refresh token.
        self._lock = asyncio.Lock()

        self._refresh_token = settings.refresh_token.get()
        self._access_token = ""
        self._expires_at = 0.0
        self._lifetime: float | None = None
        self._unsaved = False
        self._seen_tokens: list[str] = []

        self.calls = 0
        self.retries = 0
        self.token_refreshes = 0
        self.auth_retries = 0
        self.outcomes: Counter[tuple[str, str]] = Counter()

    # --- public API ---

    async def query_orders(self, reference_number: str) -> list[Rma]:
        """The RMAs OC holds for a Temu ``parentAfterSalesSn`` (empty when none)."""
        env = await self._call(
            "query_orders", "GET", PATH_QUERY_ORDERS, query={F_REFERENCE_NUMBER: reference_number}
        )
        out: list[Rma] = []
        for item in _result_list(env.result):
            rma = _rma(item)
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
        return _label(env.result, order_number)

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
    ) -> _Envelope:
        url = self._base_url + path
        failures = 0
        auth_retried = False
        # One logical operation, one messageId: every retry below repeats it (spec: OC uses it
        # to recognise a repeated message).
        message_id = message_id or new_message_id()
        while True:
            token = await self._access()
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
                await self._backoff(operation, failures, type(exc).__name__)
                continue

            env = _envelope(_loads(payload))
            token_trouble = env is not None and not env.success and _token_trouble(env)
            if status == 401 or token_trouble:
                self.outcomes[(operation, "auth_rejected")] += 1
                if auth_retried:
                    raise OCAuthError(
                        self._msg(operation, "access token rejected again right after a refresh"),
                        operation=operation,
                        status=status,
                        code=env.code if env else "",
                    )
                auth_retried = True
                self.auth_retries += 1
                log.info("OC %s: access token rejected; refreshing once", operation)
                await self._replace_rejected(token)
                continue
            if status >= 500 or status == 429:
                self.outcomes[(operation, "http_error")] += 1
                failures += 1
                await self._backoff(operation, failures, f"HTTP {status}", status=status)
                continue
            if status >= 400:
                self.outcomes[(operation, "http_error")] += 1
                detail = f": {env.code} {env.message}".rstrip() if env else ""
                raise OCError(
                    self._msg(operation, f"HTTP {status}{detail}"),
                    operation=operation,
                    status=status,
                    code=env.code if env else "",
                    request_id=env.request_id if env else "",
                )
            if env is None:
                self.outcomes[(operation, "bad_json")] += 1
                failures += 1
                await self._backoff(operation, failures, "response is not a JSON object")
                continue
            if not env.success:
                if env.fallback:
                    # isFallback marks a degraded gateway answer, not a verdict on our request.
                    self.outcomes[(operation, "fallback")] += 1
                    failures += 1
                    await self._backoff(operation, failures, f"fallback answer {env.code}")
                    continue
                self.outcomes[(operation, "business_error")] += 1
                raise OCBusinessError(
                    self._msg(operation, f"business error {env.code or '?'}: {env.message}"),
                    operation=operation,
                    status=status,
                    code=env.code,
                    request_id=env.request_id,
                )
            self.outcomes[(operation, "ok")] += 1
            return env

    async def _backoff(
        self, operation: str, failures: int, reason: str, *, status: int | None = None
    ) -> None:
        if failures >= self._max_attempts:
            raise OCError(
                self._msg(operation, f"gave up after {failures} attempts ({reason})"),
                operation=operation,
                status=status,
                retryable=True,
            )
        # Full jitter: concurrent callers that failed together do not retry together.
        delay = self._rng() * min(self._backoff_cap, self._backoff_base * 2 ** (failures - 1))
        self.retries += 1
        log.warning(
            "OC %s failed (%s); retry %d/%d in %.2fs",
            operation,
            self._scrub(reason),
            failures,
            self._max_attempts - 1,
            delay,
        )
        await self._sleep(delay)

    # --- tokens ---

    def _fresh(self) -> bool:
        if not self._access_token or self._unsaved:
            return False
        margin = self._margin
        if self._lifetime is not None:
            # Short-lived tokens (simulator, tests) would otherwise always look expired.
            margin = min(margin, self._lifetime / 2)
        return self._clock() < self._expires_at - margin

    async def _access(self) -> str:
        if self._fresh():
            return self._access_token
        async with self._lock:
            if not self._fresh():
                await self._renew(rejected=None)
            return self._access_token

    async def _replace_rejected(self, token: str) -> None:
        async with self._lock:
            if self._access_token != token and self._fresh():
                return  # a concurrent caller already replaced it
            await self._renew(rejected=token)

    async def _renew(self, *, rejected: str | None) -> None:
        """Under the lock: adopt a usable stored token, else refresh. Never two at once."""
        if self._unsaved:
            # A rotated refresh token that is not in the store yet must get there before any
            # store read could hand us the older one back.
            await self._persist()
            if rejected is None and self._fresh():
                return
        async with self._tokens.exclusive(self._settings.client_id):
            stored = await self._load()
            if stored is not None:
                self._remember(stored.refresh_token, stored.access_token)
                if stored.refresh_token:
                    self._refresh_token = stored.refresh_token
                usable = stored.access_token and stored.access_token != rejected
                if usable and self._clock() < stored.expires_at - self._margin:
                    # After a restart, or when another process refreshed: no refresh needed.
                    self._access_token = stored.access_token
                    self._expires_at = stored.expires_at
                    self._lifetime = None
                    return
            await self._refresh()

    async def _refresh(self) -> None:
        candidates = [t for t in (self._refresh_token, self._settings.refresh_token.get()) if t]
        candidates = list(dict.fromkeys(candidates))
        if not candidates:
            raise OCAuthError(
                self._msg("token refresh", "no refresh token (set orange_connex.refresh_token)"),
                operation="token refresh",
            )
        for i, refresh_token in enumerate(candidates):
            try:
                await self._refresh_with(refresh_token)
                return
            except OCAuthError:
                if i + 1 == len(candidates):
                    raise
                # The operator may have re-authorised and put a new token in the config.
                log.warning(
                    "OC rejected the stored refresh token; trying the configured one instead"
                )

    async def _refresh_with(self, refresh_token: str) -> None:
        operation = "token refresh"
        params = {
            Q_CLIENT_ID: self._settings.client_id,
            Q_GRANT_TYPE: GRANT_REFRESH_TOKEN,
            Q_REFRESH_TOKEN: refresh_token,
        }
        failures = 0
        while True:
            try:
                async with self._session.post(
                    self._oauth_url, params=params, timeout=self._timeout
                ) as resp:
                    status = resp.status
                    payload = await resp.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                failures += 1
                await self._backoff(operation, failures, type(exc).__name__)
                continue
            if status >= 500 or status == 429:
                failures += 1
                await self._backoff(operation, failures, f"HTTP {status}", status=status)
                continue
            body = _loads(payload)
            if status >= 400:
                raise OCAuthError(
                    self._msg(operation, f"rejected (HTTP {status}){_oauth_detail(body)}"),
                    operation=operation,
                    status=status,
                )
            if not isinstance(body, dict):
                failures += 1
                await self._backoff(operation, failures, "response is not a JSON object")
                continue
            if not isinstance(body.get(TOK_ACCESS[0]), str):
                for wrapper in TOK_WRAPPERS:
                    if isinstance(body.get(wrapper), dict):
                        body = body[wrapper]
                        break
            access = _text(_first(body, TOK_ACCESS))
            if not access:
                raise OCAuthError(
                    self._msg(operation, f"no access token in the answer{_oauth_detail(body)}"),
                    operation=operation,
                    status=status,
                )
            new_refresh = _text(_first(body, TOK_REFRESH)) or refresh_token
            try:
                lifetime = float(_first(body, TOK_EXPIRES_IN) or DEFAULT_TOKEN_LIFETIME_S)
            except (TypeError, ValueError):
                lifetime = float(DEFAULT_TOKEN_LIFETIME_S)
            self._remember(access, new_refresh)
            self._access_token = access
            self._refresh_token = new_refresh
            self._lifetime = lifetime
            self._expires_at = self._clock() + lifetime
            self._unsaved = True
            self.token_refreshes += 1
            if self._on_token_refresh is not None:
                self._on_token_refresh()
            await self._persist()
            log.info(
                "OC access token refreshed (valid %ds%s)",
                int(lifetime),
                "; refresh token rotated" if new_refresh != refresh_token else "",
            )
            return

    async def _load(self) -> StoredTokens | None:
        try:
            return await self._tokens.get(self._settings.client_id)
        except Exception as exc:
            raise OCError(
                self._msg("token store", f"cannot read tokens ({type(exc).__name__})"),
                operation="token store",
                retryable=True,
            ) from None

    async def _persist(self) -> None:
        try:
            await self._tokens.save(
                self._settings.client_id, self._refresh_token, self._access_token, self._expires_at
            )
        except Exception as exc:
            # Kept unsaved: the next call saves again before it uses the token.
            raise OCError(
                self._msg("token store", f"cannot save refreshed tokens ({type(exc).__name__})"),
                operation="token store",
                retryable=True,
            ) from None
        self._unsaved = False

    # --- secrecy ---

    def _remember(self, *tokens: str) -> None:
        for t in tokens:
            if t and t not in self._seen_tokens:
                self._seen_tokens.append(t)
        del self._seen_tokens[:-_REMEMBERED_TOKENS]

    def _scrub(self, text: str) -> str:
        secrets = [
            *self._seen_tokens,
            self._access_token,
            self._refresh_token,
            self._settings.refresh_token.get(),
            self._settings.client_key.get(),
        ]
        return redact(text, secrets)

    def _msg(self, operation: str, text: str) -> str:
        text = self._scrub(text)
        if len(text) > _MAX_TEXT:
            text = text[:_MAX_TEXT] + "..."
        return f"OC {operation}: {text}"


def _oauth_detail(body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    parts = [_text(_first(body, TOK_ERROR_CODE)), _text(_first(body, TOK_ERROR_TEXT))]
    detail = " ".join(p for p in parts if p)
    return f": {detail}" if detail else ""
