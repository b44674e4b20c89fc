"""Merchant labels: ``labels import`` reports bad lines by number and queues the rest; the admin
endpoint answers 202 / 404 / 409 / 422; the daemon loop wakes on NOTIFY and stops promptly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from engine.app.reconciler import build_reconciler, label_submitter, temu_returns
from engine.app.runtime import Runtime, open_runtime
from engine.cli.labels import import_labels
from engine.config import Secret
from engine.daemon.http import build_app, start_http, stop_http
from engine.daemon.metrics import Metrics
from engine.daemon.reconciler_loop import reconciler_loop
from engine.reconcile.carriers import CarrierDirectory, UnknownCarrier
from engine.sim.config import SimConfig
from engine.sim.server import Simulator
from tests.fixtures_sim import SimFactory
from tests.integration.test_reconcile_flow import (
    QPS,
    SHOP,
    awaiting,
    load_from_temu,
    make_settings,
    passes,
)

ADMIN = "admin-secret-for-tests"


@pytest.fixture
async def world(
    sim_factory: SimFactory, pg_url: str, schema: str
) -> AsyncIterator[tuple[Simulator, Runtime]]:
    # Orange Connex off: merchant labels are the only source, so every upload here is theirs.
    config = SimConfig.default(orders=300, returns=120, shops=1, qps=QPS, seed=7)
    sim = await sim_factory(config)
    rt = await open_runtime(make_settings(sim, config, pg_url, schema, oc_enabled=False))
    try:
        await load_from_temu(rt)
        yield sim, rt
    finally:
        await rt.close()


def ecart(sn: str, tracking: str = "1Z999AA10123456784", **extra: Any) -> dict[str, Any]:
    return {
        "parentAfterSalesSn": sn,
        "returnFulfillment": {
            "tracking": {"number": tracking, "companyId": "699272611"},
            "fileUrl": "https://cdn.example.com/return-label.pdf",
            **extra,
        },
    }


def jetti(sn: str, company: str = "FedEx", url: str = "https://cdn.example.com/l.pdf") -> Any:
    return {
        "parentAfterSalesSn": sn,
        "labelUrl": url,
        "labelFileFormat": "pdf",
        "trackingNumber": "748900001111222233",
        "trackingCompany": company,
    }


async def test_import_reports_bad_lines_by_number_and_queues_the_rest(
    world: tuple[Simulator, Runtime], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim, rt = world
    a, b, c = (r["parentAfterSalesSn"] for r in awaiting(sim)[:3])
    not_waiting = next(
        r["parentAfterSalesSn"] for r in sim.truth_returns(SHOP) if r["parentAfterSalesStatus"] == 5
    )
    lines = [
        orjson.dumps(ecart(a, locationId="WH-01-002")).decode(),  # 1 good
        "{not json",  # 2
        orjson.dumps(jetti(b)).decode(),  # 3 good
        orjson.dumps(jetti(c, url="ftp://cdn.example.com/l.pdf")).decode(),  # 4 not http(s)
        orjson.dumps(jetti("RA-211-00000000000000000")).decode(),  # 5 unknown return
        orjson.dumps(jetti(c, company="Pigeon Post")).decode(),  # 6 unknown carrier
        "",  # 7 blank: skipped
        orjson.dumps(
            {"parentAfterSalesSn": c, "returnFulfillment": {"fileUrl": "https://x.example/l.pdf"}}
        ).decode(),  # 8
        orjson.dumps(jetti(not_waiting)).decode(),  # 9 not waiting for a label
    ]
    path = tmp_path / "labels.jsonl"
    path.write_text("\n".join(lines) + "\n")

    # Bad lines are reported and skipped, the good ones queued: the import did its job (0).
    assert await import_labels(rt, str(path)) == 0
    out, err = capsys.readouterr()
    reported = {int(x.split(":")[0].removeprefix("line ")): x for x in err.strip().splitlines()}
    assert sorted(reported) == [2, 4, 5, 6, 8, 9]
    assert "invalid JSON" in reported[2]
    assert "http(s)" in reported[4]
    assert "unknown return" in reported[5]
    assert "Pigeon Post" in reported[6]
    assert "tracking" in reported[8]
    assert "not waiting for a label" in reported[9]
    assert "2 label(s) queued, 6 line(s) refused" in out

    await passes(rt, 1)
    uploads = {u["parentAfterSalesSn"]: u for u in sim.uploads()}
    assert set(uploads) == {a, b}
    (dto_a,) = uploads[a]["returnLabelDTOList"]
    assert dto_a["mallWarehouseId"] == "WH-01-002"  # locationId chosen by the merchant
    assert dto_a["carrierId"] == 699272611
    assert dto_a["trackingNumber"] == "1Z999AA10123456784"
    (dto_b,) = uploads[b]["returnLabelDTOList"]
    assert dto_b["carrierId"] == 699272613  # "FedEx" mapped through temu.aftersales.carrier.get
    assert dto_b["mallWarehouseId"] == "WH-01-001"  # no locationId: the first warehouse
    assert rt.counters.labels_uploaded == 2
    # What a downstream reader sees: the uploaded label on the normalized return.
    row = await rt.pool.fetchrow(
        "SELECT label_state, label_outcome, label_url, tracking_number FROM returns_normalized"
        " WHERE parent_after_sales_sn = $1",
        a,
    )
    assert tuple(row) == (
        "done",
        "uploaded",
        "https://cdn.example.com/return-label.pdf",
        "1Z999AA10123456784",
    )


async def test_import_exit_codes(
    world: tuple[Simulator, Runtime], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim, rt = world
    sn = awaiting(sim)[0]["parentAfterSalesSn"]
    assert await import_labels(rt, str(tmp_path / "missing.jsonl")) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text(orjson.dumps(jetti(sn, company="Pigeon Post")).decode() + "\n")
    assert await import_labels(rt, str(bad)) == 1
    good = tmp_path / "good.jsonl"
    good.write_text(orjson.dumps(ecart(sn)).decode() + "\n")
    assert await import_labels(rt, str(good)) == 0
    assert await import_labels(rt, str(good)) == 0  # the same label again: idempotent
    capsys.readouterr()


@pytest.fixture
async def admin_url(world: tuple[Simulator, Runtime]) -> AsyncIterator[str]:
    _, rt = world
    app = build_app(
        metrics=Metrics(),
        health=_Healthy(),
        admin_token=Secret(ADMIN),
        label_submitter=label_submitter(rt),
        max_body_bytes=65536,
    )
    runner = await start_http(app, "127.0.0.1:0")
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await stop_http(runner)


class _Healthy:
    def health(self) -> tuple[bool, dict[str, Any]]:
        return True, {}


async def post(url: str, sn: str, body: Any) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{url}/returns/{sn}/fulfillment", json=body, headers=headers) as r,
    ):
        return r.status, await r.json()


async def test_admin_endpoint_answers_202_404_409_422(
    world: tuple[Simulator, Runtime], admin_url: str
) -> None:
    sim, rt = world
    sn, other = (r["parentAfterSalesSn"] for r in awaiting(sim)[:2])
    label = {"returnFulfillment": ecart(sn)["returnFulfillment"] | {"logisticMode": "DROPOFF"}}

    status, body = await post(admin_url, sn, label)
    assert status == 202 and body["duplicate"] is False
    status, body = await post(admin_url, sn, label)
    assert status == 202 and body["duplicate"] is True

    status, body = await post(admin_url, "RA-211-00000000000000000", label)
    assert status == 404 and "unknown return" in body["error"]

    no_tracking = {"returnFulfillment": {"fileUrl": "https://cdn.example.com/l.pdf"}}
    status, body = await post(admin_url, other, no_tracking)
    assert status == 422 and "tracking" in body["error"]
    status, body = await post(admin_url, other, jetti(other, company="Pigeon Post"))
    assert status == 422 and "Pigeon Post" in body["error"]
    status, body = await post(admin_url, other, jetti(other, url="ftp://x.example/l.pdf"))
    assert status == 422 and "http(s)" in body["error"]

    await passes(rt, 1)
    assert [u["parentAfterSalesSn"] for u in sim.uploads()] == [sn]
    status, body = await post(admin_url, sn, jetti(sn))  # a different label, too late
    assert status == 409 and "already uploaded" in body["error"]


async def test_the_same_label_posted_again_while_its_upload_runs_is_202(
    world: tuple[Simulator, Runtime], admin_url: str
) -> None:
    """A client that lost the 202 sends the same label again while the reconciler is uploading
    it: still 202 (a duplicate). Only a different label meets 409 then."""
    sim, rt = world
    sn = awaiting(sim)[0]["parentAfterSalesSn"]
    label = {"returnFulfillment": ecart(sn)["returnFulfillment"] | {"logisticMode": "DROPOFF"}}
    status, body = await post(admin_url, sn, label)
    assert status == 202 and body["duplicate"] is False
    # As the executor leaves it while it uploads.
    await rt.pool.execute(
        "UPDATE outbox SET state = 'running', lease_expires_at = now() + interval '5 minutes' "
        "WHERE dedupe_key = $1",
        body["dedupe_key"],
    )
    status, body = await post(admin_url, sn, label)
    assert (status, body.get("duplicate")) == (202, True), body
    status, body = await post(admin_url, sn, jetti(sn))
    assert status == 409 and "in progress" in body["error"]


async def test_daemon_loop_wakes_on_notify_and_stops_promptly(
    world: tuple[Simulator, Runtime],
) -> None:
    sim, rt = world
    rt.settings = _with_interval(rt, 60.0)  # the timer alone would not fire during the test
    stop = asyncio.Event()
    reconciler = build_reconciler(rt)
    first_pass = asyncio.Event()
    run_pass = reconciler.run_pass

    async def counted() -> Any:
        result = await run_pass()
        first_pass.set()
        return result

    reconciler.run_pass = counted  # type: ignore[method-assign]
    loop = asyncio.create_task(reconciler_loop(rt, stop, reconciler=reconciler))
    try:
        await asyncio.wait_for(first_pass.wait(), 30)  # first pass done, now waiting
        sn = awaiting(sim)[0]["parentAfterSalesSn"]
        await label_submitter(rt).submit(sn, {"returnFulfillment": ecart(sn)["returnFulfillment"]})
        deadline = time.monotonic() + 30  # the timer alone would take 60 s
        while not sim.uploads():
            assert time.monotonic() < deadline, "the NOTIFY did not wake the loop"
            await asyncio.sleep(0.05)
        assert [u["parentAfterSalesSn"] for u in sim.uploads()] == [sn]
    finally:
        stop.set()
        # A loop sleeping on its 60 s timer must end on stop, not at the next tick.
        await asyncio.wait_for(loop, timeout=5)


def _with_interval(rt: Runtime, interval: float) -> Any:
    from dataclasses import replace

    return replace(rt.settings, reconciler=replace(rt.settings.reconciler, interval_s=interval))


async def test_jetti_lines_need_no_shop_when_several_shops_are_configured(
    sim_factory: SimFactory, pg_url: str, schema: str, tmp_path: Path
) -> None:
    """interface.md gives the Jetti/Onport shape no shop field: with two shops configured, a
    line is queued for the shop that holds the return (an ecartAPI line still names it)."""
    config = SimConfig.default(orders=300, returns=120, shops=2, qps=QPS, seed=7)
    sim = await sim_factory(config)
    rt = await open_runtime(make_settings(sim, config, pg_url, schema, oc_enabled=False))
    try:
        await load_from_temu(rt)
        first, second = (s.id for s in rt.settings.shops)
        mine = awaiting(sim, second)[0]["parentAfterSalesSn"]
        path = tmp_path / "labels.jsonl"
        path.write_text(
            orjson.dumps(jetti(mine)).decode()
            + "\n"
            + orjson.dumps(ecart(awaiting(sim, first)[0]["parentAfterSalesSn"])).decode()
            + "\n"
        )
        assert await import_labels(rt, str(path)) == 0  # one queued, one line refused
        await passes(rt, 1)
        assert [u["parentAfterSalesSn"] for u in sim.uploads(second)] == [mine]
        assert sim.uploads(first) == []
    finally:
        await rt.close()


async def test_a_label_for_a_return_of_unknown_region_maps_through_the_region_less_list(
    world: tuple[Simulator, Runtime],
) -> None:
    """A return whose order is not stored and whose order number carries no region: the
    carrier is mapped against bg.logistics.companies.get (temu-api.md's other carrier list)
    instead of waiting for a region that will never be known."""
    sim, rt = world
    temu = temu_returns(rt)[SHOP]
    directory = CarrierDirectory()
    got = await directory.resolve(
        carrier_id=None, carrier_name="FedEx", region_id=None, fetch=temu.carriers
    )
    assert got == "699272613"  # the same id the region's own list gives FedEx
    by_type = sim.stats()["apps"][rt.settings.shops[0].app_key]["by_type"]
    assert by_type.get("bg.logistics.companies.get") == 1, by_type
    with pytest.raises(UnknownCarrier, match="Pigeon Post"):
        await directory.resolve(
            carrier_id=None, carrier_name="Pigeon Post", region_id=None, fetch=temu.carriers
        )
