"""The reconciler end to end: the simulator over HTTP (Temu and Orange Connex), real Postgres.

What a seller would check: each return waiting for a label gets exactly one accepted upload,
with the right label, carrier, warehouse and pick-up schedule; labels OC issues late are
uploaded once ready; OC hears each tracking number and each cancellation once; a lost answer or
a crashed worker never leads to a second upload.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from engine.app.reconciler import build_reconciler, reconcile_once
from engine.app.runtime import Runtime, open_runtime
from engine.app.sim_settings import settings_for_simulator
from engine.cli.labels import import_labels
from engine.cli.status import cmd_status
from engine.config import Settings
from engine.reconcile.executor import BLOCKED, _TaskLease
from engine.reconcile.tasks import upload_key
from engine.reconcile.upload_label import UploadLabel
from engine.sim.catalog import CARRIERS_BY_NAME
from engine.sim.config import SimConfig
from engine.sim.server import Simulator
from engine.store.reconcile_store import ReconcileStore
from tests.fixtures_sim import SimFactory, past_the_lag

QPS = 200
OC_QPS = 200.0
SHOP = "shop-1"


async def load_from_temu(rt: Runtime) -> None:
    """Fills the database the way the engine does: one incremental sync pass, run as if the
    safety lag had passed since the simulator's last change."""
    await rt.sync_service(clock=past_the_lag(rt.settings.sync.safety_lag_s)).incremental_pass()
    assert not rt.counters.shops_failed


def make_settings(
    sim: Simulator, config: SimConfig, pg_url: str, schema: str, **kw: Any
) -> Settings:
    # interval 0: retries and polls are due at the next pass, so tests need no sleeping.
    reconciler = {"interval_s": 0.0, **kw.pop("reconciler", {})}
    settings = settings_for_simulator(
        sim, config, database_url=pg_url, schema=schema, reconciler=reconciler, **kw
    )
    # OC's default politeness (5/s) would make every test wait on the pacing, not the logic.
    return replace(settings, orange_connex=replace(settings.orange_connex, qps=OC_QPS))


@pytest.fixture
async def world(
    sim_factory: SimFactory, pg_url: str, schema: str
) -> AsyncIterator[tuple[Simulator, Runtime]]:
    config = SimConfig.default(orders=400, returns=120, shops=1, qps=QPS, seed=7)
    sim = await sim_factory(config)
    rt = await open_runtime(make_settings(sim, config, pg_url, schema))
    try:
        yield sim, rt
    finally:
        await rt.close()


def awaiting(sim: Simulator, shop: str = SHOP) -> list[dict[str, Any]]:
    return [
        r
        for r in sim.truth_returns(shop)
        if r["parentAfterSalesStatus"] == 8 and 10 in r["availableOperateList"]
    ]


def open_rma_of(sim: Simulator, sn: str) -> dict[str, Any] | None:
    for rma in sim.rmas():
        if rma["referenceNumber"] == sn and rma["status"] == "OPEN":
            return rma
    return None


async def passes(rt: Runtime, n: int) -> None:
    for _ in range(n):
        await reconcile_once(rt)


async def test_each_waiting_return_gets_one_upload_with_the_right_label(
    world: tuple[Simulator, Runtime], tmp_path: Path
) -> None:
    sim, rt = world
    shop_data = sim.world.shop(SHOP)
    waiting = awaiting(sim)
    with_rma: dict[str, dict[str, Any]] = {}
    for r in waiting:
        rma = open_rma_of(sim, r["parentAfterSalesSn"])
        if rma is not None:
            with_rma[r["parentAfterSalesSn"]] = rma
    pickups = [sn for sn in with_rma if shop_data.returns.by_sn[sn].delivery_type == 4]
    dropoffs = [sn for sn in with_rma if shop_data.returns.by_sn[sn].delivery_type == 3]
    assert len(pickups) >= 2 and dropoffs, "the seed must give both delivery types"
    # One pick-up with the buyer's slots, one without: both schedule modes.
    shop_data.returns.by_sn[pickups[0]].pickup_slots = [
        {"startTimestamp": 1_900_000_000_000, "endTimestamp": 1_900_014_400_000},
        {"startTimestamp": 1_900_100_000_000, "endTimestamp": 1_900_114_400_000},
    ]
    shop_data.returns.by_sn[pickups[1]].pickup_slots = []
    await load_from_temu(rt)
    # The merchant says "pick up" for those two (ecartAPI shape); every other label is an OC
    # label, which does not say, so the buyer's returnDeliveryType decides its mode
    # (interface.md "Return labels": label, else buyer, else reconciler.logistic_mode).
    certificates = {sn: f"https://cdn.example.com/pickup-{sn}.jpg" for sn in pickups[:2]}
    merchant = [
        {
            "parentAfterSalesSn": sn,
            "returnFulfillment": {
                "tracking": {"number": f"1Z99900000000000{i}", "companyId": "699272611"},
                "fileUrl": url,
                "logisticMode": "pickUp",
            },
        }
        for i, (sn, url) in enumerate(certificates.items())
    ]
    labels = tmp_path / "pickups.jsonl"
    labels.write_text("\n".join(orjson.dumps(m).decode() for m in merchant) + "\n")
    assert await import_labels(rt, str(labels)) == 0

    await reconcile_once(rt)
    assert sim.uploads() == [] or all(
        open_rma_of(sim, u["parentAfterSalesSn"]) for u in sim.uploads()
    )
    await passes(rt, 4)  # OC issues a label after a few queries (oc_label_ready_after)

    uploads = sim.uploads()
    per_return = Counter(u["parentAfterSalesSn"] for u in uploads)
    assert set(per_return) == set(with_rma), "every return with an OC RMA, and no other"
    assert set(per_return.values()) == {1}, "exactly one upload each"
    assert rt.counters.labels_uploaded == len(uploads)
    first_warehouse = shop_data.warehouses[0].warehouse_id
    for up in uploads:
        sn = up["parentAfterSalesSn"]
        rma = with_rma[sn]
        (dto,) = up["returnLabelDTOList"]
        assert dto["mallWarehouseId"] == first_warehouse
        if sn in certificates:
            assert dto["pickUpCertificateImageUrl"] == certificates[sn]
            assert "returnLabelUrl" not in dto
            assert dto["carrierId"] == 699272611
            continue
        assert dto["trackingNumber"] == rma["labelTracking"]
        assert dto["carrierId"] == CARRIERS_BY_NAME[rma["labelCarrier"]].carrier_id
        doc = f"https://labels.oc-sim.example/{rma['orderNumber']}/label.pdf"
        if sn in pickups:
            assert dto["pickUpCertificateImageUrl"] == doc and "returnLabelUrl" not in dto
            assert up["pickUpTimeScheduleMode"] in (1, 3)
            continue
        assert dto["returnLabelUrl"] == doc
        assert "pickUpCertificateImageUrl" not in dto
        assert "pickUpTimeScheduleMode" not in up
    by_sn = {u["parentAfterSalesSn"]: u for u in uploads}
    slot = by_sn[pickups[0]]
    assert (slot["pickUpTimeScheduleMode"], slot["startTimestamp"], slot["endTimestamp"]) == (
        1,
        1_900_000_000_000,
        1_900_014_400_000,
    )
    latest = by_sn[pickups[1]]
    assert latest["pickUpTimeScheduleMode"] == 3
    assert latest["latestTimestamp"] == shop_data.returns.by_sn[pickups[1]].latest_pickup_ms

    # What Temu shows now is stored, and more passes change nothing.
    row = await rt.store.get_return_logistics(SHOP, pickups[0])
    assert row is not None and row["tracking_number"] == "1Z999000000000000"
    await passes(rt, 2)
    assert len(sim.uploads()) == len(uploads)


async def test_label_not_ready_at_first_is_uploaded_when_ready(
    world: tuple[Simulator, Runtime],
) -> None:
    sim, rt = world
    sn = next(
        r["parentAfterSalesSn"] for r in awaiting(sim) if open_rma_of(sim, r["parentAfterSalesSn"])
    )
    await load_from_temu(rt)
    ready_after = sim.config.oc_label_ready_after
    for _ in range(ready_after):
        await reconcile_once(rt)
        assert sn not in {u["parentAfterSalesSn"] for u in sim.uploads()}
    task = await task_by_key(rt, upload_key(SHOP, sn))
    assert task["state"] == "pending" and task["attempts"] == 0, "waiting uses no attempt"
    assert "not ready" in task["last_error"]
    await reconcile_once(rt)
    assert [u["parentAfterSalesSn"] for u in sim.uploads()].count(sn) == 1
    task = await task_by_key(rt, upload_key(SHOP, sn))
    assert (task["state"], task["last_error"]) == ("done", None), "the wait is not its error"


async def test_an_oc_label_without_tracking_takes_it_from_the_rma(
    world: tuple[Simulator, Runtime],
) -> None:
    """orange-connex-api.md: only docUrl says a label is ready; an answer that leaves out
    trackingNumber/carrierName is completed from the RMA (query/orders), not waited on."""
    sim, rt = world
    sim.set_modes(oc_bare_labels=True)
    sn = next(
        r["parentAfterSalesSn"] for r in awaiting(sim) if open_rma_of(sim, r["parentAfterSalesSn"])
    )
    await load_from_temu(rt)
    for _ in range(sim.config.oc_label_ready_after + 2):
        await reconcile_once(rt)
        await make_due(rt)
    uploaded = [u for u in sim.uploads() if u["parentAfterSalesSn"] == sn]
    assert len(uploaded) == 1, await task_by_key(rt, upload_key(SHOP, sn))
    (dto,) = uploaded[0]["returnLabelDTOList"]
    rma = open_rma_of(sim, sn)
    assert dto["trackingNumber"] == rma["trackingNumber"] and dto["trackingNumber"]


async def test_a_list_ignoring_the_return_filter_still_gets_each_label_uploaded_once(
    sim_factory: SimFactory, pg_url: str, schema: str
) -> None:
    """temu-api.md lists parentAfterSalesSnList as an optional filter and no more: a list that
    answers the whole window instead must cost pages, not a label parked as "not listed".
    Every return here was created within two days, so each re-read's window holds them all."""
    end = int(time.time()) - 3600
    config = SimConfig.default(
        orders=400, returns=240, shops=1, qps=QPS, seed=7, start_ts=end - 2 * 86400, end_ts=end
    )
    sim = await sim_factory(config)
    rt = await open_runtime(make_settings(sim, config, pg_url, schema))
    try:
        sim.set_modes(ignore_return_sn_filter=True)
        waiting = [
            r["parentAfterSalesSn"]
            for r in awaiting(sim)
            if open_rma_of(sim, r["parentAfterSalesSn"])
        ]
        assert len(waiting) >= 3, "the seed must give several labels to upload"
        await load_from_temu(rt)
        for _ in range(sim.config.oc_label_ready_after + 3):
            await reconcile_once(rt)
            await make_due(rt)
        uploaded = Counter(u["parentAfterSalesSn"] for u in sim.uploads())
        assert set(waiting) <= set(uploaded) and set(uploaded.values()) == {1}
        parked = await rt.pool.fetch("SELECT last_error FROM outbox WHERE state = 'dead'")
        assert not [r for r in parked if "no longer lists" in (r["last_error"] or "")]
    finally:
        await rt.close()


async def make_due(rt: Runtime) -> None:
    """As if the waits of every pending task had passed."""
    await rt.pool.execute("UPDATE outbox SET next_attempt_at = now() WHERE state = 'pending'")


async def task_by_key(rt: Runtime, key: str) -> dict[str, Any]:
    row = await rt.pool.fetchrow("SELECT * FROM outbox WHERE dedupe_key = $1", key)
    assert row is not None, key
    return dict(row)


async def test_lost_upload_answer_leads_to_no_second_upload(
    world: tuple[Simulator, Runtime],
) -> None:
    sim, rt = world
    await load_from_temu(rt)
    await passes(rt, 2)  # OC labels become ready on the next query
    before = len(sim.uploads())
    # Every upload is applied by Temu but its answer is lost (timeout after sending).
    sim.set_faults(0.0, after_apply_rate=1.0)
    await reconcile_once(rt)
    applied = sim.uploads()[before:]
    assert applied, "uploads were sent"
    assert sim.stats()["faults_after_apply"] == len(applied), "and every answer was lost"
    retried = await rt.pool.fetch(
        "SELECT *, next_attempt_at > now() + interval '4 minutes' AS later FROM outbox "
        "WHERE kind = 'upload_label' AND state = 'pending' AND attempts = 1"
    )
    assert {r["payload"]["sn"] for r in retried} == {u["parentAfterSalesSn"] for u in applied}
    assert all(r["payload"]["attempted"] for r in retried)
    # An unanswered upload is looked at again after minutes, not at the next pass.
    assert all(r["later"] for r in retried)
    sim.set_faults(0.0, after_apply_rate=0.0)
    await passes(rt, 1)
    assert len(sim.uploads()) == before + len(applied)
    await make_due(rt)
    await passes(rt, 2)
    per_return = Counter(u["parentAfterSalesSn"] for u in sim.uploads())
    assert set(per_return.values()) == {1}
    done = await rt.pool.fetch(
        "SELECT payload, result FROM outbox WHERE kind = 'upload_label' AND state = 'done'"
    )
    assert {d["payload"]["sn"] for d in done} >= {u["parentAfterSalesSn"] for u in applied}
    assert all(
        d["result"]["confirmed_by_reread"]
        for d in done
        if d["payload"]["sn"] in {u["parentAfterSalesSn"] for u in applied}
    )
    assert rt.counters.labels_uploaded == len(sim.uploads())


async def test_task_of_a_crashed_worker_is_retaken_after_its_lease_without_second_upload(
    world: tuple[Simulator, Runtime],
) -> None:
    sim, rt = world
    await load_from_temu(rt)
    await passes(rt, 2)  # labels ready on the next query; nothing uploaded yet
    assert sim.uploads() == []
    # A worker claims one task, uploads, and dies before it can book the result.
    (task,) = await rt.store.claim(["upload_label"], limit=1, lease_s=1.5, owner="crashed")
    crashed = build_reconciler(rt, owner="crashed")
    handler = crashed.executor.handler("upload_label")
    assert isinstance(handler, UploadLabel)
    await handler.run(task, _TaskLease(ReconcileStore(rt.pool), task))
    assert [u["parentAfterSalesSn"] for u in sim.uploads()] == [task.payload["sn"]]

    await reconcile_once(rt)  # the lease still holds: the task is not touched
    assert (await task_by_key(rt, task.dedupe_key))["owner"] == "crashed"
    # Saving "attempted" stretched the lease to cover the upload call; let that time pass
    # (moved into the past, not slept through: a pass on a busy box may take over a second).
    await rt.pool.execute(
        "UPDATE outbox SET lease_expires_at = now() - interval '1 millisecond' WHERE id = $1",
        task.id,
    )
    await reconcile_once(rt)
    row = await task_by_key(rt, task.dedupe_key)
    assert row["state"] == "done" and row["owner"] != "crashed"
    assert row["result"]["confirmed_by_reread"] is True
    per_return = Counter(u["parentAfterSalesSn"] for u in sim.uploads())
    assert per_return[task.payload["sn"]] == 1
    assert set(per_return.values()) == {1}


async def test_no_upload_for_returns_not_waiting_for_a_label(
    world: tuple[Simulator, Runtime],
) -> None:
    sim, rt = world
    waiting = [
        r["parentAfterSalesSn"] for r in awaiting(sim) if open_rma_of(sim, r["parentAfterSalesSn"])
    ]
    gone = waiting[0]
    await load_from_temu(rt)
    await reconcile_once(rt)  # tasks planned from the stored state
    # Temu moves on before the label is ready (the buyer cancels): the stored row is stale.
    sim.set_return_status(SHOP, gone, 6)
    await passes(rt, 4)
    uploaded = {u["parentAfterSalesSn"] for u in sim.uploads()}
    assert gone not in uploaded
    assert uploaded == set(waiting) - {gone}
    row = await task_by_key(rt, upload_key(SHOP, gone))
    assert row["state"] == "done" and row["result"]["outcome"] == "not_needed"


def has_any_rma(sim: Simulator, sn: str) -> bool:
    return any(m["referenceNumber"] == sn for m in sim.rmas())


async def test_a_return_that_stops_waiting_stops_its_label_task_before_any_label(
    world: tuple[Simulator, Runtime],
) -> None:
    sim, rt = world
    sn = next(
        r["parentAfterSalesSn"]
        for r in awaiting(sim)
        if not has_any_rma(sim, r["parentAfterSalesSn"])
    )
    await load_from_temu(rt)
    await reconcile_once(rt)
    task = await task_by_key(rt, upload_key(SHOP, sn))
    assert task["state"] == "pending" and "no open Orange Connex RMA" in task["last_error"]
    # The refund is denied while OC still has no RMA; our stored row still says "waiting".
    sim.set_return_status(SHOP, sn, 7)
    await reconcile_once(rt)
    row = await task_by_key(rt, upload_key(SHOP, sn))
    assert row["state"] == "done"
    assert row["result"] == {"outcome": "not_needed", "temu_status": 7}
    assert sn not in {u["parentAfterSalesSn"] for u in sim.uploads()}


async def test_a_revoked_shop_token_blocks_its_tasks_without_using_attempts(
    world: tuple[Simulator, Runtime], capsys: pytest.CaptureFixture[str]
) -> None:
    sim, rt = world
    await load_from_temu(rt)
    assert sim.revoke_token(sim.config.shops[0].access_token)
    await passes(rt, 3)
    rows = await rt.pool.fetch(
        "SELECT state, attempts, last_error, next_attempt_at > now() + interval '10 minutes' "
        "AS later FROM outbox WHERE kind = 'upload_label'"
    )
    assert rows and sim.uploads() == []
    for r in rows:
        # 3000034 (token expired): a configuration problem, not the task's; it waits.
        assert (r["state"], r["attempts"], r["later"]) == ("pending", 0, True)
        assert r["last_error"].startswith(BLOCKED) and "errorCode=3000034" in r["last_error"]
    capsys.readouterr()
    assert await cmd_status(rt.settings, as_json=False) == 0
    out = capsys.readouterr().out
    assert f"{len(rows)} pending task(s) blocked" in out and "errorCode=3000034" in out
