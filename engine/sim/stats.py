"""Counters the tests and the benchmark read: what each app sent and what it was answered."""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

MAX_ARRIVALS = 1_000_000  # per app; about 14 hours at 20 requests/s


class AppStats:
    def __init__(self) -> None:
        self.accepted = 0
        self.rejected_rate_limit = 0
        self.rejected_storm = 0
        self.max_in_window = 0
        self.by_type: Counter[str] = Counter()
        self.errors: Counter[int] = Counter()  # non-success codes other than rate limiting
        self.accepted_at: deque[float] = deque(maxlen=MAX_ARRIVALS)  # epoch seconds
        self.rejected_at: deque[float] = deque(maxlen=MAX_ARRIVALS)
        self._last_second: deque[float] = deque()

    def note_accepted(self, api_type: str, arrival: float, epoch: float) -> None:
        self.accepted += 1
        self.by_type[api_type] += 1
        self.accepted_at.append(epoch)
        # Measured over a sliding second whatever window the limiter uses, so a lenient
        # limiter's bursts show up here.
        window = self._last_second
        window.append(arrival)
        while window[0] <= arrival - 1.0:
            window.popleft()
        self.max_in_window = max(self.max_in_window, len(window))

    def snapshot(self, *, arrivals: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "accepted": self.accepted,
            "rejected_rate_limit": self.rejected_rate_limit,
            "rejected_storm": self.rejected_storm,
            "errors": {str(k): v for k, v in sorted(self.errors.items())},
            "other_errors": sum(self.errors.values()),
            "max_accepted_in_1s": self.max_in_window,
            "by_type": dict(sorted(self.by_type.items())),
        }
        if arrivals:
            out["accepted_at"] = list(self.accepted_at)
            out["rejected_at"] = list(self.rejected_at)
        return out


class SimStats:
    def __init__(self, app_keys: list[str]) -> None:
        self.app_keys = app_keys
        self.reset()

    def reset(self) -> None:
        self.apps = {k: AppStats() for k in self.app_keys}
        self.unattributed: Counter[int] = Counter()  # errors before an app was known
        self.drift_events = 0
        self.drift_by_shop: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.faults_after_apply = 0
        self.lost_answers = 0  # lost_upload_answers mode (engine/sim/modes.py)
        self.oc_requests: Counter[str] = Counter()
        self.oc_unauthorized = 0
        self.oc_refreshes = 0
        self.oc_faults: Counter[str] = Counter()

    def snapshot(self, *, arrivals: bool = True) -> dict[str, Any]:
        return {
            "apps": {k: v.snapshot(arrivals=arrivals) for k, v in self.apps.items()},
            "unattributed_errors": {str(k): v for k, v in sorted(self.unattributed.items())},
            "drift_events": self.drift_events,
            "drift_by_shop": dict(self.drift_by_shop),
            "faults": dict(sorted(self.faults.items())),
            "faults_after_apply": self.faults_after_apply,
            "lost_answers": self.lost_answers,
            "oc": {
                "requests": dict(sorted(self.oc_requests.items())),
                "unauthorized": self.oc_unauthorized,
                "refreshes": self.oc_refreshes,
                "faults": dict(sorted(self.oc_faults.items())),
            },
        }
