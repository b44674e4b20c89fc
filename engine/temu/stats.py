"""Counters for Temu calls, shared by every transport of a run (the JSON summary reads them)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# (app_key, api_type, outcome); outcome is "ok", "rate_limited", "retry" or "error:<Class>".
Observer = Callable[[str, str, str], None]
# (app_key, api_type, seconds): how long one HTTP send took, answered or not.
DurationObserver = Callable[[str, str, float], None]

OK = "ok"
RATE_LIMITED = "rate_limited"
RETRY = "retry"


def error_outcome(exc: BaseException) -> str:
    return f"error:{type(exc).__name__}"


@dataclass
class CallStats:
    """Every HTTP send records exactly one outcome, so the outcomes sum to ``requests``."""

    requests: int = 0
    rate_limited: int = 0
    retries: int = 0
    tolerant_decodes: int = 0  # answers only the fallback decoder could read (decode.py)
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    observer: Observer | None = None
    duration_observer: DurationObserver | None = None

    def timed(self, app_key: str, api_type: str, seconds: float) -> None:
        if self.duration_observer is not None:
            try:
                self.duration_observer(app_key, api_type, seconds)
            except Exception:
                log.exception("call duration observer failed")

    def tolerant_decode(self) -> None:
        self.tolerant_decodes += 1

    def record(self, app_key: str, api_type: str, outcome: str) -> None:
        self.outcomes[(api_type, outcome)] += 1
        if outcome == RATE_LIMITED:
            self.rate_limited += 1
        if self.observer is not None:
            try:
                self.observer(app_key, api_type, outcome)
            except Exception:
                # Metrics must never break a sync.
                log.exception("call stats observer failed")
