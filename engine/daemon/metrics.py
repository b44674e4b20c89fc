"""Prometheus metrics for the daemon, on a registry of their own.

Owning the registry (instead of prometheus_client's process-global one) lets tests and several
engines in one process each count separately. Every metric is updated through a method here,
so the names and label sets exist in one place.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

__all__ = ["OUTBOX_STATES", "Metrics"]

OUTBOX_STATES = ("pending", "running", "done", "dead")


class Metrics:
    # generate_latest writes the classic 0.0.4 text format; announce exactly that.
    content_type = CONTENT_TYPE_PLAIN_0_0_4

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._requests = Counter(
            "temu_sync_requests_total",
            "Temu API calls by API type and outcome (ok, rate_limited, retry, error:<Class>).",
            ["app_key", "api_type", "outcome"],
            registry=r,
        )
        self._rate_limited = Counter(
            "temu_sync_rate_limited_total",
            "Temu answers with the rate-limit code 4000004.",
            ["app_key"],
            registry=r,
        )
        self._retries = Counter(
            "temu_sync_retries_total",
            "Temu sends that failed transiently (rate limiting excluded) and were sent again.",
            ["app_key"],
            registry=r,
        )
        self._pace = Gauge(
            "temu_sync_pace_requests_per_second",
            "Current request pace the limiter allows for the app.",
            ["app_key"],
            registry=r,
        )
        self._rows = Counter(
            "temu_sync_rows_total",
            "Rows seen by the diff writer, by entity and what happened to them.",
            ["entity", "op"],
            registry=r,
        )
        self._cursor_lag = Gauge(
            "temu_sync_cursor_lag_seconds",
            "How far a stream's incremental cursor is behind now.",
            ["shop", "stream"],
            registry=r,
        )
        self._outbox = Gauge(
            "temu_sync_outbox_tasks",
            "Outbox tasks by state.",
            ["state"],
            registry=r,
        )
        self._oc_refreshes = Counter(
            "temu_sync_oc_token_refreshes_total",
            "Orange Connex access-token refreshes.",
            registry=r,
        )
        self._last_success = Gauge(
            "temu_sync_last_success_timestamp_seconds",
            "Unix time of a stream's last successful pass.",
            ["shop", "stream"],
            registry=r,
        )
        self._loop_errors = Counter(
            "temu_sync_loop_errors_total",
            "Failed iterations of a daemon loop (it retries on the next tick).",
            ["loop"],
            registry=r,
        )
        # Series that should read 0 rather than be absent before the first event, so alerts
        # like `increase(...) > 0` and `outbox{state="dead"} > 0` work from the start.
        for state in OUTBOX_STATES:
            self._outbox.labels(state=state).set(0)

    def observe_request(self, app_key: str, api_type: str, outcome: str) -> None:
        """The Temu client's observer: one call per HTTP attempt."""
        self._requests.labels(app_key=app_key, api_type=api_type, outcome=outcome).inc()
        if outcome == "rate_limited":
            self._rate_limited.labels(app_key=app_key).inc()
        elif outcome == "retry":
            self._retries.labels(app_key=app_key).inc()

    def set_pace(self, app_key: str, requests_per_second: float) -> None:
        self._pace.labels(app_key=app_key).set(requests_per_second)

    def add_rows(self, entity: str, inserted: int, updated: int, unchanged: int) -> None:
        for op, n in (("inserted", inserted), ("updated", updated), ("unchanged", unchanged)):
            self._rows.labels(entity=entity, op=op).inc(max(0, n))

    def set_cursor_lag(self, shop: str, stream: str, seconds: float) -> None:
        self._cursor_lag.labels(shop=shop, stream=stream).set(max(0.0, seconds))

    def set_outbox(self, counts: Mapping[str, int]) -> None:
        """Sets every state; a state missing from ``counts`` has drained to 0."""
        for state in {*OUTBOX_STATES, *counts}:
            self._outbox.labels(state=state).set(counts.get(state, 0))

    def oc_token_refreshed(self) -> None:
        self._oc_refreshes.inc()

    def mark_success(self, shop: str, stream: str, at: float | None = None) -> None:
        """Records a successful pass at Unix time ``at`` (default: now)."""
        self._last_success.labels(shop=shop, stream=stream).set(time.time() if at is None else at)

    def loop_error(self, loop: str) -> None:
        self._loop_errors.labels(loop=loop).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
