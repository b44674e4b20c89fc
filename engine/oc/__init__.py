"""Orange Connex edge: OAuth token refresh (persisted via a TokenStore) and the Return 2.0 API."""

from engine.oc.client import (
    Label,
    OCAuthError,
    OCBusinessError,
    OCClient,
    OCError,
    Rma,
    new_message_id,
)
from engine.oc.tokens import MemoryTokenStore, StoredTokens, TokenStore

__all__ = [
    "Label",
    "MemoryTokenStore",
    "OCAuthError",
    "OCBusinessError",
    "OCClient",
    "OCError",
    "Rma",
    "StoredTokens",
    "TokenStore",
    "new_message_id",
]
