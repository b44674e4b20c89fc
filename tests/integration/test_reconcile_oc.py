"""Orange Connex side of the reconciler against the simulator: each push exactly once.

UPDATE_TRACKING when Temu shows a tracking number the RMA lacks, CANCEL when the Temu return is
cancelled or denied while the RMA is open; a lost answer is retried with the same messageId;
the OAuth refresh token OC rotates is kept in Postgres and used from then on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from engine.app.reconciler import build_reconciler, reconcile_once
from engine.app.runtime import Runtime, open_runtime
from engine.cli.labels import import_labels
from engine.oc.client import OCClient
from engine.reconcile.oc_rmas import PgTokenStore
from engine.sim.config import SimConfig
from engine.sim.data import logistics_entry
from engine.sim.server import Simulator
from tests.fixtures_sim import SimFactory
from tests.integration.test_reconcile_flow import (
    QPS,
    SHOP,
    awaiting,
    load_from_temu,
    make_settings,
    open_rma_of,
    passes,
)

TOKEN_TTL_S = 2.0


@pytest.fixture
async def world(
    sim_factory: SimFactory, pg_url: str, schema: str
) -> AsyncIterator[tuple[Simulator, Runtime]]:
    config = SimConfig.default(
        orders=400, returns=150, shops=1, qps=QPS, seed=11, oc_token_ttl_s=TOKEN_TTL_S
    )
    sim = await sim_factory(config)
    rt = await open_runtime(make_settings(sim, config, pg_url, schema))
    try:
        yield sim, rt
    finally:
        await rt.close()


def tracking_of(logistics: list[dict[str, Any]]) -> str | None:
    return next((x["trackingNumber"] for x in logistics if x.get("trackingNumber")), None)


def expected_pushes(sim: Simulator) -> tuple[set[str], set[tuple[str, str]], set[str]]:
    """(RMAs to cancel, (RMA, tracking) to update, RMAs of closed returns) from Temu's state."""
    status = {r["parentAfterSalesSn"]: r["parentAfterSalesStatus"] for r in sim.truth_returns(SHOP)}
    logistics = sim.truth_logistics(SHOP)
    cancels, updates, closed = set(), set(), set()
    for rma in sim.rmas(SHOP):
        if rma["status"] != "OPEN":
            continue
        sn = rma["referenceNumber"]
        tracking = tracking_of(logistics.get(sn, []))
        if status[sn] in (6, 7):
            cancels.add(rma["orderNumber"])
            closed.add(rma["orderNumber"])
        elif tracking and tracking != rma["trackingNumber"]:
            updates.add((rma["orderNumber"], tracking))
    return cancels, updates, closed


def pushes_by_kind(sim: Simulator) -> tuple[Counter[str], Counter[tuple[str, str]]]:
    cancels: Counter[str] = Counter()
    updates: Counter[tuple[str, str]] = Counter()
    for p in sim.oc_pushes():
        if p["operation"] == "CANCEL":
            cancels[p["orderNumber"]] += 1
        else:
            updates[(p["orderNumber"], p["trackingNumber"])] += 1
    return cancels, updates


async def test_tracking_updates_and_cancellations_reach_oc_once(
    world: tuple[Simulator, Runtime],
) -> None:
    sim, rt = world
    want_cancels, want_updates, closed = expected_pushes(sim)
    assert want_cancels and want_updates, "the seed must give both kinds of work"
    await load_from_temu(rt)
    await passes(rt, 4)

    cancels, updates = pushes_by_kind(sim)
    assert set(cancels) == want_cancels
    assert set(cancels.values()) == {1}
    # A closed return's RMA may hear its tracking before it is cancelled; nothing else extra.
    assert want_updates <= set(updates) <= want_updates | {u for u in updates if u[0] in closed}
    assert set(updates.values()) == {1}
    assert rt.counters.oc_updates == len(sim.oc_pushes())

    # Nothing changed: more passes push nothing.
    before = len(sim.oc_pushes())
    await passes(rt, 2)
    assert len(sim.oc_pushes()) == before


async def test_a_cancel_whose_answer_is_lost_is_applied_once(
    world: tuple[Simulator, Runtime],
) -> None:
    sim, rt = world
    await load_from_temu(rt)
    await passes(rt, 4)
    # A return with an open RMA is cancelled by the buyer; OC applies the CANCEL but the
    # answer never arrives, so the client sends it again with the same messageId.
    sn = next(
        r["parentAfterSalesSn"]
        for r in sim.truth_returns(SHOP)
        if r["parentAfterSalesStatus"] not in (5, 6, 7)
        and open_rma_of(sim, r["parentAfterSalesSn"])
    )
    rma = open_rma_of(sim, sn)
    assert rma is not None
    sim.set_return_status(SHOP, sn, 6)
    await load_from_temu(rt)
    sim.set_faults(0.0, after_apply_rate=1.0)
    try:
        await passes(rt, 2)
    finally:
        sim.set_faults(0.0, after_apply_rate=0.0)
    assert sim.stats()["faults_after_apply"] >= 1, "the answer was really lost"
    mine = [p for p in sim.oc_pushes() if p["orderNumber"] == rma["orderNumber"]]
    assert [p["operation"] for p in mine if p["operation"] == "CANCEL"] == ["CANCEL"]
    assert open_rma_of(sim, sn) is None


async def test_merchant_label_tracking_is_pushed_to_the_rma(
    world: tuple[Simulator, Runtime], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim, rt = world
    sn = next(
        r["parentAfterSalesSn"] for r in awaiting(sim) if open_rma_of(sim, r["parentAfterSalesSn"])
    )
    await load_from_temu(rt)
    line = {
        "parentAfterSalesSn": sn,
        "labelUrl": "https://labels.example.com/merchant.pdf",
        "labelFileFormat": "pdf",
        "trackingNumber": "1ZMERCHANT000001",
        "trackingCompany": "United Parcel Service",
    }
    path = tmp_path / "labels.jsonl"
    path.write_bytes(orjson.dumps(line) + b"\n")
    assert await import_labels(rt, str(path)) == 0
    await passes(rt, 2)
    (upload,) = [u for u in sim.uploads() if u["parentAfterSalesSn"] == sn]
    assert upload["returnLabelDTOList"][0]["trackingNumber"] == "1ZMERCHANT000001"
    rma = next(r for r in sim.rmas(SHOP) if r["referenceNumber"] == sn)
    pushes = [p for p in sim.oc_pushes() if p["orderNumber"] == rma["orderNumber"]]
    assert [(p["operation"], p["trackingNumber"]) for p in pushes] == [
        ("UPDATE_TRACKING", "1ZMERCHANT000001")
    ]


async def test_rotated_refresh_token_is_kept_in_postgres_and_used(
    world: tuple[Simulator, Runtime],
) -> None:
    sim, rt = world
    configured = sim.config.oc_refresh_token
    await load_from_temu(rt)
    await reconcile_once(rt)
    stored = await rt.store.get_oc_tokens(sim.config.oc_client_id)
    assert stored is not None
    assert stored.refresh_token == sim.world.oc.tokens.refresh_token != configured

    # The access token dies at OC (expired there; the engine's copy still looks valid); the
    # next pass (a new client, as after a restart) must refresh with the rotated token from
    # Postgres: the configured one is no longer accepted.
    sim.expire_oc_tokens()
    refreshes = sim.world.oc.tokens.refreshes
    await passes(rt, 3)
    assert sim.world.oc.tokens.refreshes > refreshes
    stored_again = await rt.store.get_oc_tokens(sim.config.oc_client_id)
    assert stored_again is not None
    assert stored_again.refresh_token == sim.world.oc.tokens.refresh_token
    assert stored_again.refresh_token != stored.refresh_token
    dead = await rt.pool.fetch("SELECT last_error FROM outbox WHERE state = 'dead'")
    assert dead == []


async def task_row(rt: Runtime, key: str) -> dict[str, Any]:
    row = await rt.pool.fetchrow("SELECT * FROM outbox WHERE dedupe_key = $1", key)
    assert row is not None, key
    return dict(row)


def quiet_return_without_rma(sim: Simulator, skip: int = 0) -> str:
    """A return with nothing in flight (requested, under review) and no RMA in OC at all."""
    sns = [
        r["parentAfterSalesSn"]
        for r in sim.truth_returns(SHOP)
        if r["parentAfterSalesStatus"] in (1, 10, 11)
        and r["afterSalesType"] == 2
        and not any(m["referenceNumber"] == r["parentAfterSalesSn"] for m in sim.rmas())
    ]
    assert len(sns) > skip, "the seed must give such returns"
    return sns[skip]


async def temu_moves(rt: Runtime, sim: Simulator, sn: str, status: int) -> None:
    sim.set_return_status(SHOP, sn, status)
    await load_from_temu(rt)


async def minutes_pass(rt: Runtime) -> None:
    """As if the minutes a task waits for an RMA had passed: every pending task is due."""
    await rt.pool.execute("UPDATE outbox SET next_attempt_at = now() WHERE state = 'pending'")


def pushes_to(sim: Simulator, order_number: str) -> list[tuple[str, str | None]]:
    return [
        (p["operation"], p.get("trackingNumber"))
        for p in sim.oc_pushes()
        if p["orderNumber"] == order_number
    ]


@pytest.mark.parametrize("claims_success", [False, True], ids=["success-false", "success-true"])
async def test_a_cancel_oc_refuses_while_the_rma_stays_open_is_parked_not_done(
    world: tuple[Simulator, Runtime], claims_success: bool
) -> None:
    """success-true: OC says "success": true with "hasBusinessException": true (the envelope
    carries both flags); the refusal is a refusal all the same."""
    sim, rt = world
    sim.set_modes(oc_business_success=claims_success)
    sn = quiet_return_without_rma(sim)
    # The parcel is already under way: OC keeps the RMA open and refuses to cancel it.
    rma = sim.open_rma(SHOP, sn, status="IN_TRANSIT")
    await load_from_temu(rt)
    await temu_moves(rt, sim, sn, 6)
    await passes(rt, 2)
    row = await task_row(rt, f"oc_cancel:{SHOP}:{sn}")
    assert row["state"] == "dead", "an open RMA that was not cancelled must not count as done"
    assert "CANCEL_NOT_ALLOWED" in row["last_error"]
    assert row["attempts"] == 1, "OC's verdict would repeat: parked at once"
    assert pushes_to(sim, rma["orderNumber"]) == []


async def test_a_cancel_finds_the_rma_closed_meanwhile_and_is_done(
    world: tuple[Simulator, Runtime],
) -> None:
    sim, rt = world
    sn = quiet_return_without_rma(sim)
    rma = sim.open_rma(SHOP, sn)
    await load_from_temu(rt)
    await temu_moves(rt, sim, sn, 7)

    class ClosedInTheMeantime(OCClient):
        async def cancel_rma(self, order_number: str, *, message_id: str) -> dict[str, Any]:
            # Someone cancels the RMA in OC between our query and our CANCEL.
            sim.world.oc.rmas[order_number].status = "CANCELLED"
            return await super().cancel_rma(order_number, message_id=message_id)

    oc = ClosedInTheMeantime(rt.session, rt.settings.orange_connex, PgTokenStore(rt.store))
    await build_reconciler(rt, oc=oc).run_pass()
    row = await task_row(rt, f"oc_cancel:{SHOP}:{sn}")
    assert (row["state"], row["result"]["outcome"]) == ("done", "no_open_rma")
    assert pushes_to(sim, rma["orderNumber"]) == []


async def test_a_cancel_waits_for_an_rma_opened_after_the_buyer_cancelled(
    world: tuple[Simulator, Runtime],
) -> None:
    sim, rt = world
    sn = quiet_return_without_rma(sim)
    await load_from_temu(rt)
    await temu_moves(rt, sim, sn, 6)
    await passes(rt, 2)
    row = await task_row(rt, f"oc_cancel:{SHOP}:{sn}")
    assert row["state"] == "pending" and "no Orange Connex RMA" in row["last_error"]
    assert row["attempts"] == 0, "looking again for an RMA uses no attempt"
    assert row["next_attempt_at"] > datetime.now(UTC) + timedelta(minutes=4), "not at every pass"
    rma = sim.open_rma(SHOP, sn)  # the merchant opens the RMA late
    await passes(rt, 1)
    assert pushes_to(sim, rma["orderNumber"]) == [], "looked again before its time"
    await minutes_pass(rt)
    await passes(rt, 1)
    assert pushes_to(sim, rma["orderNumber"]) == [("CANCEL", None)]
    row = await task_row(rt, f"oc_cancel:{SHOP}:{sn}")
    assert (row["state"], row["result"]["outcome"]) == ("done", "cancelled")


async def test_a_push_gives_up_on_a_missing_rma_after_the_configured_looks(
    world: tuple[Simulator, Runtime],
) -> None:
    sim, rt = world
    rt.settings = replace(rt.settings, reconciler=replace(rt.settings.reconciler, rma_wait_polls=2))
    sn = quiet_return_without_rma(sim)
    await load_from_temu(rt)
    await temu_moves(rt, sim, sn, 6)
    await passes(rt, 1)  # look 1
    await minutes_pass(rt)
    await passes(rt, 1)  # look 2
    assert (await task_row(rt, f"oc_cancel:{SHOP}:{sn}"))["state"] == "pending"
    await minutes_pass(rt)
    await passes(rt, 1)
    row = await task_row(rt, f"oc_cancel:{SHOP}:{sn}")
    assert (row["state"], row["result"]["outcome"]) == ("done", "no_rma")
    sim.open_rma(SHOP, sn)  # too late: the task is finished
    await minutes_pass(rt)
    await passes(rt, 1)
    assert [p for p in sim.oc_pushes() if p["referenceNumber"] == sn] == []


async def test_tracking_waits_for_an_rma_opened_after_the_buyer_shipped(
    world: tuple[Simulator, Runtime],
) -> None:
    sim, rt = world
    sn = quiet_return_without_rma(sim)
    await load_from_temu(rt)
    await temu_moves(rt, sim, sn, 2)  # the buyer ships: Temu shows a tracking number
    (shipped,) = sim.truth_logistics(SHOP)[sn]
    await passes(rt, 2)
    key = f"oc_tracking:{SHOP}:{sn}:{shipped['trackingNumber']}"
    assert (await task_row(rt, key))["state"] == "pending"
    rma = sim.open_rma(SHOP, sn)
    sim.world.oc.rmas[rma["orderNumber"]].tracking_number = ""  # OC does not know it yet
    await minutes_pass(rt)
    await passes(rt, 1)
    assert pushes_to(sim, rma["orderNumber"]) == [("UPDATE_TRACKING", shipped["trackingNumber"])]
    assert (await task_row(rt, key))["result"]["outcome"] == "pushed"


async def test_every_distinct_tracking_number_reaches_the_rma_once(
    world: tuple[Simulator, Runtime],
) -> None:
    sim, rt = world
    sn = quiet_return_without_rma(sim)
    rma = sim.open_rma(SHOP, sn)
    sim.world.oc.rmas[rma["orderNumber"]].tracking_number = ""
    await load_from_temu(rt)
    sim.set_return_status(SHOP, sn, 2)
    rec = sim.world.shop(SHOP).returns.by_sn[sn]
    (first,) = rec.logistics
    # Two packages, the first listed twice (once without a carrier), and an empty entry.
    rec.logistics += [
        logistics_entry("UPS", "1ZSECONDPACKAGE01"),
        {**first, "carrierName": ""},
        logistics_entry("UPS", ""),
    ]
    await load_from_temu(rt)
    await passes(rt, 3)
    pushed = pushes_to(sim, rma["orderNumber"])
    assert sorted(pushed) == sorted(
        [
            ("UPDATE_TRACKING", first["trackingNumber"]),
            ("UPDATE_TRACKING", "1ZSECONDPACKAGE01"),
        ]
    )
    carriers = {
        p["trackingNumber"]: p["carrierName"]
        for p in sim.oc_pushes()
        if p["orderNumber"] == rma["orderNumber"]
    }
    assert carriers[first["trackingNumber"]] == first["carrierName"]
    assert carriers["1ZSECONDPACKAGE01"] == "UPS"
    await passes(rt, 2)
    assert len(pushes_to(sim, rma["orderNumber"])) == 2, "each number once"


async def test_an_oc_refusal_carrying_nul_parks_the_task_with_its_message(
    world: tuple[Simulator, Runtime],
) -> None:
    sim, rt = world
    sim.set_modes(nul_in_errors=True)
    sn = quiet_return_without_rma(sim)
    rma = sim.open_rma(SHOP, sn, status="IN_TRANSIT")
    await load_from_temu(rt)
    await temu_moves(rt, sim, sn, 6)
    await passes(rt, 2)
    row = await task_row(rt, f"oc_cancel:{SHOP}:{sn}")
    # The bookkeeping write went through: parked once, OC's words kept (U+0000 as U+FFFD).
    assert row["state"] == "dead" and row["attempts"] == 1
    assert "CANCEL_NOT_ALLOWED" in row["last_error"] and "\ufffd(detail)" in row["last_error"]
    assert pushes_to(sim, rma["orderNumber"]) == []
