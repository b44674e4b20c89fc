"""Orange Connex errors: one base class; messages never contain a token or the client key."""

from __future__ import annotations


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
