"""Orange Connex edge: OAuth token refresh (persisted via a TokenStore) and the Return 2.0 API."""

from engine.oc.client import OCClient
from engine.oc.errors import OCAuthError, OCBusinessError, OCError
from engine.oc.tokens import MemoryTokenStore, StoredTokens, TokenStore
from engine.oc.wire import Label, Rma, new_message_id

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
