"""Orange Connex wire format: every OC name (paths, headers, envelope and payload fields), the
envelope and result parsing, and the result types.

Most of the OC contract is ASSUMED (spec ``orange-connex-api.md``), so a rename seen in real
traffic must be a one-line change here.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

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
class Envelope:
    success: bool
    code: str
    message: str
    request_id: str
    fallback: bool
    result: Any


def new_message_id() -> str:
    """A fresh OC messageId. POST callers keep it with their task so a re-push reuses it."""
    return uuid.uuid4().hex


def as_text(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int | float):
        return str(value)
    return ""


def _opt(value: Any) -> str | None:
    return as_text(value) or None


def _exact(value: Any) -> str:
    """A referenceNumber as sent (a number as its digits), not trimmed: interface.md acts on
    an RMA only when it EQUALS the return's parentAfterSalesSn, so " PAS-1 " is not PAS-1."""
    if isinstance(value, str):
        return value
    return as_text(value)


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def first(d: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        if d.get(name) not in (None, ""):
            return d[name]
    return None


def loads(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None


def parse_envelope(body: Any) -> Envelope | None:
    if not isinstance(body, dict):
        return None
    code = as_text(body.get(ENV_ERROR_CODE))
    business = _flag(body.get(ENV_BUSINESS_EXCEPTION))
    if ENV_SUCCESS in body:
        # A business exception is a refusal even beside "success": true: taking it for
        # success would record a push OC did not apply as done.
        success = _flag(body.get(ENV_SUCCESS)) and not business
    else:
        # Loose parsing: without the flag, an error code or business exception means failure.
        success = not code and not business
    return Envelope(
        success=success,
        code=code,
        message=as_text(body.get(ENV_ERROR_MSG)) or as_text(body.get(ENV_MESSAGE)),
        request_id=as_text(body.get(ENV_REQUEST_ID)),
        fallback=_flag(body.get(ENV_FALLBACK)),
        result=body.get(ENV_RESULT),
    )


def token_trouble(env: Envelope) -> bool:
    return env.code in TOKEN_TROUBLE_CODES or bool(
        _TOKEN_TROUBLE.search(f"{env.code} {env.message}")
    )


def result_list(result: Any) -> list[Any]:
    if isinstance(result, list):
        return result
    if isinstance(result, dict):
        for key in RESULT_LIST_KEYS:
            if isinstance(result.get(key), list):
                return list(result[key])
    return []


def parse_rma(item: Any) -> Rma | None:
    if not isinstance(item, dict) or not as_text(item.get(F_ORDER_NUMBER)):
        return None
    return Rma(
        order_number=as_text(item.get(F_ORDER_NUMBER)),
        reference_number=_exact(item.get(F_REFERENCE_NUMBER)),
        status=as_text(item.get(F_STATUS)),
        tracking_number=_opt(item.get(F_TRACKING_NUMBER)),
        carrier_name=_opt(item.get(F_CARRIER_NAME)),
        raw=item,
    )


def parse_label(result: Any, order_number: str) -> Label | None:
    if not isinstance(result, dict) or not as_text(result.get(F_DOC_URL)):
        return None
    return Label(
        order_number=as_text(result.get(F_ORDER_NUMBER)) or order_number,
        reference_number=_exact(result.get(F_REFERENCE_NUMBER)) or None,
        service_type=_opt(result.get(F_SERVICE_TYPE)),
        tracking_number=_opt(result.get(F_TRACKING_NUMBER)),
        carrier_name=_opt(result.get(F_CARRIER_NAME)),
        doc_url=as_text(result.get(F_DOC_URL)),
        qr_code_url=_opt(result.get(F_QR_CODE_URL)),
        raw=result,
    )


# --- Client -------------------------------------------------------------------------------------


def oauth_detail(body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    parts = [as_text(first(body, TOK_ERROR_CODE)), as_text(first(body, TOK_ERROR_TEXT))]
    detail = " ".join(p for p in parts if p)
    return f": {detail}" if detail else ""
