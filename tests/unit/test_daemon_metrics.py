from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from engine.daemon.metrics import Metrics


def _samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_render_contains_series_after_updates() -> None:
    m = Metrics()
    m.observe_request("k1", "bg.order.list.v2.get", "ok")
    m.observe_request("k1", "bg.order.list.v2.get", "ok")
    m.observe_request("k1", "bg.order.list.v2.get", "rate_limited")
    m.observe_request("k1", "bg.order.list.v2.get", "retry")
    m.observe_request("k1", "bg.order.list.v2.get", "error:ShopAuthError")
    m.set_pace("k1", 18.5)
    m.add_rows("order", inserted=3, updated=1, unchanged=96)
    m.set_cursor_lag("us-main", "orders", 42.0)
    m.set_outbox({"pending": 5, "dead": 1})
    m.oc_token_refreshed()
    m.mark_success("us-main", "orders", at=1_700_000_000.0)
    m.loop_error("reconciler")

    s = _samples(m)
    req = "temu_sync_requests_total"
    labels = (("api_type", "bg.order.list.v2.get"), ("app_key", "k1"))
    assert s[(req, (*labels, ("outcome", "ok")))] == 2
    assert s[(req, (*labels, ("outcome", "error:ShopAuthError")))] == 1
    assert s[(req, (*labels, ("outcome", "rate_limited")))] == 1
    assert s[(req, (*labels, ("outcome", "retry")))] == 1
    # Rate-limit hits also per app (interface.md: /metrics shows them); retries only here.
    assert s[("temu_sync_rate_limited_total", (("app_key", "k1"),))] == 1
    assert not any(name == "temu_sync_retries_total" for name, _ in s)
    assert s[("temu_sync_pace_requests_per_second", (("app_key", "k1"),))] == 18.5
    assert s[("temu_sync_rows_total", (("entity", "order"), ("op", "unchanged")))] == 96
    assert s[("temu_sync_rows_total", (("entity", "order"), ("op", "inserted")))] == 3
    shop_stream = (("shop", "us-main"), ("stream", "orders"))
    assert s[("temu_sync_cursor_lag_seconds", shop_stream)] == 42.0
    assert s[("temu_sync_last_success_timestamp_seconds", shop_stream)] == 1_700_000_000.0
    assert s[("temu_sync_outbox_tasks", (("state", "pending"),))] == 5
    assert s[("temu_sync_outbox_tasks", (("state", "running"),))] == 0
    assert s[("temu_sync_oc_token_refreshes_total", ())] == 1
    assert s[("temu_sync_loop_errors_total", (("loop", "reconciler"),))] == 1


def test_webhook_receiver_latency_by_status() -> None:
    m = Metrics()
    m.on_answer(200, 0.004)
    m.on_answer(200, 0.3)
    m.on_answer(401, 0.002)
    s = _samples(m)
    name = "temu_sync_webhook_receive_seconds"
    assert s[(f"{name}_count", (("status", "200"),))] == 2
    assert s[(f"{name}_bucket", (("le", "0.005"), ("status", "200")))] == 1
    assert s[(f"{name}_bucket", (("le", "0.5"), ("status", "200")))] == 2
    assert s[(f"{name}_count", (("status", "401"),))] == 1
    assert abs(s[(f"{name}_sum", (("status", "200"),))] - 0.304) < 1e-9


def test_outbox_state_that_drained_drops_to_zero() -> None:
    m = Metrics()
    m.set_outbox({"pending": 7})
    m.set_outbox({})
    assert _samples(m)[("temu_sync_outbox_tasks", (("state", "pending"),))] == 0


def test_alertable_series_exist_before_first_event() -> None:
    s = _samples(Metrics())
    assert s[("temu_sync_outbox_tasks", (("state", "dead"),))] == 0
    assert s[("temu_sync_oc_token_refreshes_total", ())] == 0


def test_rate_limit_hits_read_zero_per_app_before_the_first() -> None:
    m = Metrics(app_keys=["k1", "k2"])
    hits = "temu_sync_rate_limited_total"
    s = _samples(m)
    assert s[(hits, (("app_key", "k1"),))] == 0
    assert s[(hits, (("app_key", "k2"),))] == 0
    m.observe_request("k2", "bg.order.list.v2.get", "rate_limited")
    m.observe_request("k2", "bg.aftersales.parentaftersales.list.get", "rate_limited")
    m.observe_request("k2", "bg.order.list.v2.get", "retry")  # a 5xx retry is no hit
    s = _samples(m)
    assert s[(hits, (("app_key", "k1"),))] == 0
    assert s[(hits, (("app_key", "k2"),))] == 2


def test_instances_do_not_share_counts() -> None:
    a, b = Metrics(), Metrics()
    a.loop_error("sync")
    assert ("temu_sync_loop_errors_total", (("loop", "sync"),)) not in _samples(b)
    assert b"temu_sync_loop_errors_total" in b.render()  # HELP/TYPE still there
    assert b.content_type.startswith("text/plain")


def test_standard_collectors_build_info_histogram_and_token_expiry() -> None:
    m = Metrics()
    m.observe_duration("k1", "bg.order.list.v2.get", 0.3)
    m.observe_duration("k1", "bg.order.list.v2.get", 7.0)
    m.set_token_expiry("us-main", 1_800_000_000.0)
    m.export_oc(lambda: {"calls": 12, "retries": 2})
    s = _samples(m)
    names = {name for name, _ in s}
    assert any(n.startswith("process_") for n in names), names
    assert "python_info" in names
    build = [labels for name, labels in s if name == "temu_sync_build_info"]
    assert build and dict(build[0])["version"]
    hist = "temu_sync_request_duration_seconds"
    labels = (("api_type", "bg.order.list.v2.get"), ("app_key", "k1"))
    assert s[(f"{hist}_count", labels)] == 2
    assert s[(f"{hist}_bucket", (*labels, ("le", "0.5")))] == 1
    assert s[("temu_sync_token_expiry_timestamp_seconds", (("shop", "us-main"),))] == 1.8e9
    assert s[("temu_sync_oc_calls_total", ())] == 12
    assert s[("temu_sync_oc_retries_total", ())] == 2


def test_hostile_data_series() -> None:
    m = Metrics()
    decodes = [0]
    m.export_decodes(lambda: decodes[0])
    m.set_rejected({("us-main", "orders"): 3, ("us-main", "returns"): 1})
    m.set_stream_health(
        "us-main",
        "orders",
        failures_in_row=4,
        backoff_until=1_700_000_000.0,
        inconsistent_windows=2,
    )
    decodes[0] = 5  # read at scrape time
    s = _samples(m)
    shop = (("shop", "us-main"), ("stream", "orders"))
    assert s[("temu_sync_tolerant_decodes_total", ())] == 5
    assert s[("temu_sync_rejected_records", shop)] == 3
    assert s[("temu_sync_stream_failures_in_row", shop)] == 4
    assert s[("temu_sync_stream_backoff_until_timestamp_seconds", shop)] == 1_700_000_000.0
    assert s[("temu_sync_inconsistent_windows", shop)] == 2
    # Records pruned away: the series reads 0 instead of keeping its old value.
    m.set_rejected({("us-main", "orders"): 3})
    assert (
        _samples(m)[("temu_sync_rejected_records", (("shop", "us-main"), ("stream", "returns")))]
        == 0
    )


def test_rows_and_subscribed_events_read_zero_before_any_work() -> None:
    """interface.md lists rows written and webhook events among /metrics: present at 0 from
    the start, so `increase()` and absent-alerts work before the first row or event."""
    text = (
        Metrics(app_keys=["k1"], webhook_events=["bg_order_status_change_event"]).render().decode()
    )
    for entity in ("order", "order_line", "return", "return_line"):
        for op in ("inserted", "updated", "unchanged"):
            assert f'temu_sync_rows_total{{entity="{entity}",op="{op}"}} 0.0' in text
    assert (
        'temu_sync_webhook_events_total{code="bg_order_status_change_event",outcome="stored"} 0.0'
        in text
    )
    assert "temu_sync_webhook_events_total{" not in Metrics().render().decode()
