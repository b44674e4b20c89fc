"""Temu gateway and API error codes the simulator answers with (temu-api.md, partner docs)."""

from __future__ import annotations

SUCCESS = 1000000
BAD_PARAMS = 3000000
SIGN_INVALID = 3000001
TYPE_MISSING = 3000002
TYPE_UNKNOWN = 3000003
TIMESTAMP_MISSING = 3000010
TIMESTAMP_INVALID = 3000011  # in the future beyond the tolerance, or not a number
TIMESTAMP_EXPIRED = 3000012
DATA_TYPE_MISSING = 3000013
DATA_TYPE_INVALID = 3000014
APP_KEY_MISSING = 3000025
APP_KEY_UNKNOWN = 3000026
TOKEN_MISSING = 3000030
TOKEN_UNKNOWN = 3000031
TOKEN_NO_SCOPE = 3000032
TOKEN_APP_MISMATCH = 3000033
TOKEN_EXPIRED = 3000034
SIGN_MISSING = 3000040
SYSTEM_EXCEPTION = 4000000
RATE_LIMITED = 4000004
ORDER_NOT_FOUND = 140020002
AFTERSALES_NOT_FOUND = 130010004
AFTERSALES_FORBIDDEN = 130010005
LABEL_INVALID = 130010006
TRACKING_INVALID = 130010007

MESSAGES: dict[int, str] = {
    SUCCESS: "SUCCESS",
    BAD_PARAMS: "BAD_PARAMS",
    SIGN_INVALID: "SIGN_UNVALID",
    TYPE_MISSING: "there is no type in body.",
    TYPE_UNKNOWN: "type not exists",
    TIMESTAMP_MISSING: "there is no timestamp in body.",
    TIMESTAMP_INVALID: "timestamp is invalid.",
    TIMESTAMP_EXPIRED: "timestamp is expired.",
    DATA_TYPE_MISSING: "there is no data_type in body.",
    DATA_TYPE_INVALID: "data_type is invalid",
    APP_KEY_MISSING: "there is no app_key in body.",
    APP_KEY_UNKNOWN: "app_key not exists.",
    TOKEN_MISSING: "there is no access_token in body.",
    TOKEN_UNKNOWN: "access_token not exists.",
    TOKEN_NO_SCOPE: "access_token don't have this api access, please ask for seller to "
    # Temu's own text, fullwidth comma included (partner docs' error table).
    "authorize this api in seller center first，and share the new access_token with you.",  # noqa: RUF001
    TOKEN_APP_MISMATCH: "access_token and app_key are not mapping.",
    TOKEN_EXPIRED: "access_token is expired or have been refreshed, please contact seller "
    "to share the new access_token with you.",
    SIGN_MISSING: "there is no sign in body.",
    SYSTEM_EXCEPTION: "SYSTEM_EXCEPTION",
    RATE_LIMITED: "RATE_LIMIT_EXCEED_EXCEPTION",
    ORDER_NOT_FOUND: "Order not found",
    AFTERSALES_NOT_FOUND: "after-sales order not found",
    AFTERSALES_FORBIDDEN: "operation not allowed in the current after-sales state",
    LABEL_INVALID: "return label invalid",
    TRACKING_INVALID: "tracking number invalid",
}


class ApiError(Exception):
    """A non-success answer; ``detail`` says which parameter, like Temu's own messages do."""

    def __init__(self, code: int, detail: str = "", *, reason: str = "") -> None:
        self.code = code
        self.reason = reason  # a short machine word for the attempt log, e.g. already_uploaded
        base = MESSAGES.get(code, "ERROR")
        self.message = f"{base}: {detail}" if detail else base
        super().__init__(self.message)
