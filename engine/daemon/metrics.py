"""Prometheus metrics for the daemon, on a registry of their own.

Owning the registry (instead of prometheus_client's process-global one) lets tests and several
engines in one process each count separately. Every metric is updated through a method here,
so the names and label sets exist in one place.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from engine.temu.stats import RATE_LIMITED

__all__ = ["OUTBOX_STATES", "Metrics"]

OUTBOX_STATES = ("pending", "running", "done", "dead")


ROW_ENTITIES = ("order", "order_line", "return", "return_line")
ROW_OPS = ("inserted", "updated", "unchanged")


class Metrics:
    # generate_latest writes the classic 0.0.4 text format; announce exactly that.
    content_type = CONTENT_TYPE_PLAIN_0_0_4

    def __init__(self, app_keys: Iterable[str] = (), *, webhook_events: Iterable[str] = ()) -> None:
        """``app_keys``: the configured apps, whose rate-limit counter reads 0 from the start;
        ``webhook_events``: the subscribed event codes (webhooks on), whose stored count does
        too. Rows written read 0 per entity and op from the start as well: a series that
        appears only at its first increment breaks `increase()` and absent-alerts."""
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._requests = Counter(
            "temu_sync_requests_total",
            "Temu API calls by API type and outcome (ok, rate_limited, retry, error:<Class>).",
            ["app_key", "api_type", "outcome"],
            registry=r,
        )
        # The same hits as requests_total{outcome="rate_limited"}, but per app only and present
        # at 0 before the first one (interface.md: /metrics shows rate limit hits), so
        # `increase(...) > 0` alerts work from the start.
        self._rate_limited = Counter(
            "temu_sync_rate_limited_total",
            "Temu answers 4000004 (rate limit exceeded) by app; each is retried after a backoff.",
            ["app_key"],
            registry=r,
        )
        for app_key in app_keys:
            self._rate_limited.labels(app_key=app_key)
        self._duration = Histogram(
            "temu_sync_request_duration_seconds",
            "Time from sending a Temu request to its answer (or failure), by API type.",
            ["app_key", "api_type"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=r,
        )
        self._build = Gauge(
            "temu_sync_build_info",
            "Always 1; the labels say which temu-sync and Python run.",
            ["version", "python"],
            registry=r,
        )
        self._build.labels(version=_version(), python=_python()).set(1)
        self._token_expiry = Gauge(
            "temu_sync_token_expiry_timestamp_seconds",
            "Unix time when a shop's Temu access token stops working (last check).",
            ["shop"],
            registry=r,
        )
        self._events = Counter(
            "temu_sync_webhook_events_total",
            "Temu event POSTs by event code and what the receiver did (stored, duplicate, "
            "bad_signature, bad_body, unknown_mall, mall_not_yet, not_subscribed, store_failed).",
            ["code", "outcome"],
            registry=r,
        )
        self._event_to_row = Histogram(
            "temu_sync_webhook_event_to_row_seconds",
            "From storing a Temu event (its receipt) to its re-read written to Postgres.",
            ["code", "outcome"],
            buckets=(0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0),
            registry=r,
        )
        self._receive = Histogram(
            "temu_sync_webhook_receive_seconds",
            "Time the webhook receiver took to answer a POST (Temu wants 200 within 0.5 s), "
            "by HTTP status.",
            ["status"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        # The standard process_*, python_info and python_gc_* series, on our own registry.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(_Shared(collector))
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
        for entity in ROW_ENTITIES:
            for op in ROW_OPS:
                self._rows.labels(entity=entity, op=op)
        for code in webhook_events:
            self._events.labels(code=code, outcome="stored")
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
        self._rejected = Gauge(
            "temu_sync_rejected_records",
            "Records set aside in rejected_records (they could not be stored even with NULL "
            "typed columns), by shop and stream.",
            ["shop", "stream"],
            registry=r,
        )
        self._inconsistent = Gauge(
            "temu_sync_inconsistent_windows",
            "One-second windows accepted although Temu never listed them consistently "
            "(records may be missing), by shop and stream; sync_state keeps the count.",
            ["shop", "stream"],
            registry=r,
        )
        self._failures_in_row = Gauge(
            "temu_sync_stream_failures_in_row",
            "Passes in a row a stream failed (0 after a success).",
            ["shop", "stream"],
            registry=r,
        )
        self._backoff_until = Gauge(
            "temu_sync_stream_backoff_until_timestamp_seconds",
            "Unix time until which a failing stream is skipped (0: not backing off).",
            ["shop", "stream"],
            registry=r,
        )
        # Series that should read 0 rather than be absent before the first event, so alerts
        # like `increase(...) > 0` and `outbox{state="dead"} > 0` work from the start.
        for state in OUTBOX_STATES:
            self._outbox.labels(state=state).set(0)
        self._rejected_seen: set[tuple[str, str]] = set()

    def observe_request(self, app_key: str, api_type: str, outcome: str) -> None:
        """The Temu client's observer: one call per HTTP attempt."""
        self._requests.labels(app_key=app_key, api_type=api_type, outcome=outcome).inc()
        if outcome == RATE_LIMITED:
            self._rate_limited.labels(app_key=app_key).inc()

    def observe_duration(self, app_key: str, api_type: str, seconds: float) -> None:
        self._duration.labels(app_key=app_key, api_type=api_type).observe(max(0.0, seconds))

    def on_event(self, code: str, outcome: str) -> None:
        """The webhook receiver's observer: one call per POST."""
        self._events.labels(code=code or "-", outcome=outcome).inc()

    def on_answer(self, status: int, seconds: float) -> None:
        """The webhook receiver's observer: one call per answer, whatever it was."""
        self._receive.labels(status=str(status)).observe(max(0.0, seconds))

    def on_processed(self, code: str, outcome: str, latency_s: float) -> None:
        """The event consumer's observer: an event's re-read is done (read, not_found, ...)."""
        self._event_to_row.labels(code=code, outcome=outcome).observe(max(0.0, latency_s))

    def set_token_expiry(self, shop: str, expires_at: float | None) -> None:
        if expires_at is not None:
            self._token_expiry.labels(shop=shop).set(expires_at)

    def export_oc(self, counters: Callable[[], Mapping[str, int]]) -> None:
        """Exports the Orange Connex client's own counters (calls, retries, ...) as
        ``temu_sync_oc_<name>_total``, read at scrape time."""
        self.registry.register(_OcCounters(counters))

    def export_decodes(self, count: Callable[[], int]) -> None:
        """Exports how many Temu answers only the tolerant decoder could read, as
        ``temu_sync_tolerant_decodes_total``, read at scrape time."""
        self.registry.register(_ReadCounter("temu_sync_tolerant_decodes", _DECODES_HELP, count))

    def set_rejected(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Sets every (shop, stream) given; one no longer given (pruned away) reads 0."""
        for labels in list(self._rejected_seen - set(counts)):
            self._rejected.labels(shop=labels[0], stream=labels[1]).set(0)
        for (shop, stream), n in counts.items():
            self._rejected.labels(shop=shop, stream=stream).set(n)
        self._rejected_seen |= set(counts)

    def set_stream_health(
        self,
        shop: str,
        stream: str,
        *,
        failures_in_row: int,
        backoff_until: float | None,
        inconsistent_windows: int,
    ) -> None:
        self._failures_in_row.labels(shop=shop, stream=stream).set(failures_in_row)
        self._backoff_until.labels(shop=shop, stream=stream).set(backoff_until or 0)
        self._inconsistent.labels(shop=shop, stream=stream).set(inconsistent_windows)

    def set_pace(self, app_key: str, requests_per_second: float) -> None:
        self._pace.labels(app_key=app_key).set(requests_per_second)

    def add_rows(self, entity: str, inserted: int, updated: int, unchanged: int) -> None:
        for op, n in zip(ROW_OPS, (inserted, updated, unchanged), strict=True):
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


def _version() -> str:
    try:
        return version("temu-sync")
    except PackageNotFoundError:
        return "unknown"


def _python() -> str:
    import platform

    return platform.python_version()


class _Shared(Collector):
    """Puts one of prometheus_client's process-wide collectors on our registry too."""

    def __init__(self, inner: Collector) -> None:
        self._inner = inner

    def collect(self) -> Iterator[object]:  # type: ignore[override]
        return iter(self._inner.collect())


_DECODES_HELP = (
    "Temu answers orjson refused (invalid UTF-8, lone surrogates, out-of-range numbers) that "
    "the tolerant decoder read."
)


class _ReadCounter(Collector):
    def __init__(self, name: str, documentation: str, count: Callable[[], int]) -> None:
        self._name, self._doc, self._count = name, documentation, count

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self._name, self._doc, self._count())


class _OcCounters(Collector):
    def __init__(self, counters: Callable[[], Mapping[str, int]]) -> None:
        self._counters = counters

    def collect(self) -> Iterator[CounterMetricFamily]:
        for name, value in sorted(self._counters().items()):
            yield CounterMetricFamily(
                f"temu_sync_oc_{name}", f"Orange Connex client: {name.replace('_', ' ')}.", value
            )
