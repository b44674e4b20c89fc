"""Issue 14: the reconciler stays safe when the services answer the less convenient way.

Against the simulator's hostile modes (engine/sim/modes.py) over real HTTP and real Postgres:
OC answers holding other returns' RMAs, buyer-chosen pick-up with and without slots, an
upload whose answer is lost while the returns list lags, an empty carrier list. In each: no
foreign RMA is touched, every label goes to the right return in the buyer's mode, nothing is
uploaded twice (refused attempts counted too), and no task is parked dead that a later pass
could finish. Also: Temu asking again for a label, claims limited to configured shops, bad
label input refused line by line and with 4xx.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from engine.app.reconciler import label_submitter, reconcile_once
from engine.app.runtime import Runtime, open_runtime
from engine.cli.labels import import_labels
from engine.config import Secret
from engine.daemon.http import build_app, start_http, stop_http
from engine.daemon.metrics import Metrics
from engine.reconcile.tasks import upload_key
from engine.sim.catalog import CARRIERS_BY_NAME
from engine.sim.config import SimConfig
from engine.sim.server import Simulator
from tests.fixtures_sim import SimFactory
from tests.integration.test_reconcile_flow import (
    QPS,
    SHOP,
    awaiting,
    load_from_temu,
    make_due,
    make_settings,
    passes,
    task_by_key,
)

ADMIN = "admin-secret-for-safety-tests"
Open = Callable[..., Awaitable[tuple[Simulator, Runtime]]]


@pytest.fixture
async def open_world(sim_factory: SimFactory, pg_url: str, schema: str) -> AsyncIterator[Open]:
    runtimes: list[Runtime] = []

    async def _open(*, oc: bool = True, **modes: Any) -> tuple[Simulator, Runtime]:
        config = SimConfig.default(orders=300, returns=120, shops=1, qps=QPS, seed=7, **modes)
        sim = await sim_factory(config)
        rt = await open_runtime(make_settings(sim, config, pg_url, schema, oc_enabled=oc))
        runtimes.append(rt)
        await load_from_temu(rt)
        return sim, rt

    yield _open
    for rt in runtimes:
        await rt.close()


def own_rmas(sim: Simulator) -> dict[str, dict[str, Any]]:
    """Open RMA per return sn, as the simulator holds them (without foreign mixing)."""
    return {r["referenceNumber"]: r for r in sim.rmas(SHOP) if r["status"] == "OPEN"}


def refused(sim: Simulator) -> list[dict[str, Any]]:
    return [a for a in sim.upload_attempts(SHOP) if a["outcome"] != "accepted"]


async def dead_tasks(rt: Runtime) -> list[dict[str, Any]]:
    return [dict(r) for r in await rt.pool.fetch("SELECT * FROM outbox WHERE state = 'dead'")]


# -- a. foreign RMAs in OC's answers ----------------------------------------------------------
async def test_foreign_rmas_in_oc_answers_are_left_alone(open_world: Open) -> None:
    sim, rt = await open_world(oc_foreign_rmas=3)
    rmas = own_rmas(sim)
    waiting = {r["parentAfterSalesSn"] for r in awaiting(sim)}
    # Buyer cancellations after sync: their cancel tasks meet OC answers full of strangers.
    closing = [sn for sn in sorted(waiting) if sn not in rmas][:2]
    for sn in closing:
        sim.set_return_status(SHOP, sn, 6)
    await load_from_temu(rt)
    await passes(rt, 5)
    await make_due(rt)
    await passes(rt, 2)

    uploads = sim.uploads(SHOP)
    assert uploads, "labels were uploaded"
    for up in uploads:
        sn = up["parentAfterSalesSn"]
        (dto,) = up["returnLabelDTOList"]
        assert dto["trackingNumber"] == rmas[sn]["labelTracking"], "its own RMA's label"
        assert dto["carrierId"] == CARRIERS_BY_NAME[rmas[sn]["labelCarrier"]].carrier_id
    assert set(Counter(u["parentAfterSalesSn"] for u in uploads).values()) == {1}
    assert not refused(sim)
    # OC: every push went to an RMA of the return its task is about.
    by_order = {r["orderNumber"]: r["referenceNumber"] for r in sim.rmas(SHOP)}
    cancel_rows = await rt.pool.fetch(
        "SELECT payload, result FROM outbox WHERE kind IN ('oc_cancel', 'oc_tracking') "
        "AND state = 'done'"
    )
    for row in cancel_rows:
        for order in row["result"].get("rmas") or []:
            assert by_order[order] == row["payload"]["sn"]
    cancelled = {p["orderNumber"] for p in sim.oc_pushes() if p["operation"] == "CANCEL"}
    assert all(by_order[o] not in waiting or by_order[o] in closing for o in cancelled)
    assert not [a for a in sim.oc_attempts() if a["outcome"] == "refused"]
    assert await dead_tasks(rt) == []


# -- b. buyer-chosen pick-up ------------------------------------------------------------------
async def test_pickup_returns_get_their_label_in_the_buyers_mode(
    open_world: Open, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim, rt = await open_world(pickup_cases=True, refuse_mode_mismatch=True)
    cases = {c["case"]: c for c in sim.pickup_cases(SHOP)}
    await load_from_temu(rt)
    merchant = [cases["slots_merchant_label"], cases["no_slots_merchant_label"]]
    lines = [
        # Jetti's shape never says its mode: the buyer's choice (pick up) decides.
        {
            "parentAfterSalesSn": merchant[0]["parentAfterSalesSn"],
            "labelUrl": "https://cdn.example.com/cert-1.png",
            "labelFileFormat": "png",
            "trackingNumber": "748900001111222233",
            "trackingCompany": "FedEx",
        },
        {
            "parentAfterSalesSn": merchant[1]["parentAfterSalesSn"],
            "returnFulfillment": {
                "tracking": {"number": "1Z999AA10123456784", "companyId": "699272611"},
                "fileUrl": "https://cdn.example.com/cert-2.png",
            },
        },
    ]
    contradicting = {
        "parentAfterSalesSn": cases["slots_oc_label"]["parentAfterSalesSn"],
        "returnFulfillment": {
            "tracking": {"number": "1Z999AA10123456999", "companyId": "699272611"},
            "fileUrl": "https://cdn.example.com/l.pdf",
            "logisticMode": "dropOff",
        },
    }
    path = tmp_path / "labels.jsonl"
    path.write_text("\n".join(orjson.dumps(x).decode() for x in [*lines, contradicting]) + "\n")
    assert await import_labels(rt, str(path)) == 0
    _, err = capsys.readouterr()
    assert err.startswith("line 3:") and "dropOff" in err and "pickUp" in err

    await passes(rt, 5)
    by_sn = {u["parentAfterSalesSn"]: u for u in sim.uploads(SHOP)}
    for name, case in cases.items():
        up = by_sn[case["parentAfterSalesSn"]]
        (dto,) = up["returnLabelDTOList"]
        assert dto.get("pickUpCertificateImageUrl") and not dto.get("returnLabelUrl"), name
        assert up["pickUpTimeScheduleMode"] == (1 if case["slots"] else 3), name
    assert not refused(sim), "no attempt was refused (mode mismatch, twice, ...)"
    assert await dead_tasks(rt) == []


# -- c. lost answer while the list lags -------------------------------------------------------
async def test_lost_upload_answer_and_lagging_list_never_upload_twice(open_world: Open) -> None:
    sim, rt = await open_world(return_list_lag_s=60.0)
    await passes(rt, 2)  # OC labels ready at the next query; nothing uploaded yet
    assert sim.uploads(SHOP) == []
    sim.set_modes(lost_upload_answers=1000)
    await reconcile_once(rt)
    sim.set_modes(lost_upload_answers=0)
    applied = {u["parentAfterSalesSn"] for u in sim.uploads(SHOP)}
    assert applied
    rows = await rt.pool.fetch(
        "SELECT payload, state, next_attempt_at > now() + interval '4 minutes' AS later "
        "FROM outbox WHERE kind = 'upload_label' AND payload ->> 'sn' = ANY($1::text[])",
        sorted(applied),
    )
    assert rows and all(r["state"] == "pending" and r["later"] for r in rows)
    # Minutes pass for the tasks but not for Temu's list, which still offers operation 10.
    await make_due(rt)
    await load_from_temu(rt)
    stored = await rt.pool.fetch(
        "SELECT parent_after_sales_sn FROM returns "
        "WHERE status = 8 AND 10 = ANY(available_operations)"
    )
    assert applied <= {r["parent_after_sales_sn"] for r in stored}, "the list still lags"
    await passes(rt, 2)
    attempts = Counter(a["parentAfterSalesSn"] for a in sim.upload_attempts(SHOP))
    assert all(attempts[sn] == 1 for sn in applied), "one attempt each, refused ones counted"
    for sn in applied:
        row = await task_by_key(rt, upload_key(SHOP, sn))
        assert row["state"] == "done" and row["result"]["confirmed_by_reread"] is True
    assert await dead_tasks(rt) == []


# -- d. an empty carrier list once ------------------------------------------------------------
async def test_an_empty_carrier_list_delays_uploads_and_kills_none(open_world: Open) -> None:
    sim, rt = await open_world(empty_carrier_lists=1)
    rmas = own_rmas(sim)
    expected = {r["parentAfterSalesSn"] for r in awaiting(sim)} & set(rmas)
    await passes(rt, 4)
    assert await dead_tasks(rt) == []
    waiting = await rt.pool.fetch(
        "SELECT payload FROM outbox WHERE kind = 'upload_label' AND state = 'pending' "
        "AND last_error LIKE '%lists no carriers%'"
    )
    assert len(waiting) == 1, "the one upload that met the empty list waits"
    await make_due(rt)
    await passes(rt, 2)
    uploaded = Counter(u["parentAfterSalesSn"] for u in sim.uploads(SHOP))
    assert set(uploaded) == expected
    assert set(uploaded.values()) == {1}
    assert not refused(sim)
    assert await dead_tasks(rt) == []


# -- Temu asks again ------------------------------------------------------------------------
async def test_temu_asking_again_gets_one_new_upload(open_world: Open) -> None:
    sim, rt = await open_world()
    await passes(rt, 4)
    first = sim.uploads(SHOP)
    assert first
    sn = first[0]["parentAfterSalesSn"]
    # Temu rejects the label and asks again: the rejected label no longer shows on the return
    # (were it still shown, the engine would take the request for a lagging list).
    sim.set_return_status(SHOP, sn, 8, [10])
    sim.world.shop(SHOP).returns.by_sn[sn].logistics = []
    await load_from_temu(rt)
    await passes(rt, 3)
    await load_from_temu(rt)
    await passes(rt, 2)
    mine = [a for a in sim.upload_attempts(SHOP) if a["parentAfterSalesSn"] == sn]
    assert [a["outcome"] for a in mine] == ["accepted", "accepted"], "one new upload, no more"
    row = await task_by_key(rt, upload_key(SHOP, sn))
    assert row["state"] == "done" and row["payload"]["previous_result"]["outcome"] == "uploaded"


async def test_merchant_label_is_taken_again_when_temu_asks_again(
    open_world: Open, tmp_path: Path
) -> None:
    sim, rt = await open_world(oc=False)
    sn = awaiting(sim)[0]["parentAfterSalesSn"]
    submit = label_submitter(rt)
    label = {
        "returnFulfillment": {
            "tracking": {"number": "1Z999AA10123456784", "companyId": "699272611"},
            "fileUrl": "https://cdn.example.com/cert.png",
        }
    }
    await submit.submit(sn, label)
    await passes(rt, 1)
    sim.set_return_status(SHOP, sn, 8, [10])
    sim.world.shop(SHOP).returns.by_sn[sn].logistics = []  # the rejected label is gone
    await load_from_temu(rt)
    second = {
        "returnFulfillment": {
            "tracking": {"number": "1Z999AA10123456785", "companyId": "699272611"},
            "fileUrl": "https://cdn.example.com/cert-2.png",
        }
    }
    result = await submit.submit(sn, second)
    assert result.duplicate is False
    await passes(rt, 2)
    trackings = [u["returnLabelDTOList"][0]["trackingNumber"] for u in sim.uploads(SHOP)]
    assert trackings == ["1Z999AA10123456784", "1Z999AA10123456785"]


# -- one-shot passes claim configured shops only -------------------------------------------
async def test_one_shot_pass_leaves_tasks_of_other_shops_alone(open_world: Open) -> None:
    _, rt = await open_world(oc=False)
    await rt.pool.execute(
        "INSERT INTO outbox (kind, dedupe_key, shop_id, payload) VALUES "
        "('upload_label', 'upload_label:other-shop:RA-1', 'other-shop', "
        '\'{"shop_id": "other-shop", "sn": "RA-1"}\')'
    )
    await passes(rt, 2)
    row = await task_by_key(rt, "upload_label:other-shop:RA-1")
    assert (row["state"], row["attempts"], row["owner"]) == ("pending", 0, None)


# -- refund-only returns do not wait for an RMA ---------------------------------------------
async def test_cancelled_refund_only_returns_ask_oc_once(open_world: Open) -> None:
    _, rt = await open_world()
    await passes(rt, 2)
    rows = await rt.pool.fetch(
        "SELECT o.state, o.result FROM outbox AS o JOIN returns AS r "
        "ON r.shop_id = o.shop_id AND r.parent_after_sales_sn = o.payload ->> 'sn' "
        "WHERE o.kind = 'oc_cancel' AND r.after_sales_type = 1"
    )
    assert rows, "the seed must give cancelled refund-only returns"
    no_rma = [r for r in rows if r["result"] and r["result"]["outcome"] == "no_rma"]
    assert no_rma and all(r["state"] == "done" for r in no_rma)
    assert all(r["result"]["polls"] == 0 for r in no_rma)


# -- bad label input ------------------------------------------------------------------------
def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


async def test_bad_label_lines_and_bodies_are_refused_one_by_one(
    open_world: Open, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim, rt = await open_world(oc=False)
    good_a, good_b, other = (r["parentAfterSalesSn"] for r in awaiting(sim)[:3])
    label = {
        "tracking": {"number": "1Z999AA10123456784", "companyId": "699272611"},
        "fileUrl": "https://cdn.example.com/l.pdf",
    }

    def line(sn: str, **extra: Any) -> bytes:
        return orjson.dumps({"parentAfterSalesSn": sn, "returnFulfillment": label, **extra})

    deep_line = (
        b'{"parentAfterSalesSn": "'
        + other.encode()
        + b'", "returnFulfillment": '
        + orjson.dumps(label)
        + b', "note": '
        + deep(600).encode()
        + b"}"
    )
    lines = [
        line(good_a),  # 1
        deep_line,  # 2 ~600 levels deep
        line(other + "\u0000"),  # 3 NUL in parentAfterSalesSn
        line(other, note="a\u0000b"),  # 4 NUL elsewhere
        b'{"parentAfterSalesSn": "\\ud800"}',  # 5 lone surrogate
        b"\xff\xfe not utf-8",  # 6
        b"[1, 2]",  # 7 not an object
        b'{"a": ' + deep(2000).encode() + b"}",  # 8 deeper than the JSON parser takes
        line(good_b),  # 9
    ]
    path = tmp_path / "labels.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert await import_labels(rt, str(path)) == 0
    out, err = capsys.readouterr()
    reported = {int(x.split(":")[0].removeprefix("line ")): x for x in err.strip().splitlines()}
    assert sorted(reported) == [2, 3, 4, 5, 6, 7, 8]
    assert "nested too deeply" in reported[2]
    assert "U+0000" in reported[3] and "U+0000" in reported[4]
    assert "2 label(s) queued, 7 line(s) refused" in out
    queued = await rt.pool.fetch("SELECT payload ->> 'sn' AS sn FROM outbox")
    assert {r["sn"] for r in queued} == {good_a, good_b}

    # The admin API: 4xx for the same bodies and for bad paths, never 500.
    app = build_app(
        metrics=Metrics(),
        health=_Healthy(),
        admin_token=Secret(ADMIN),
        label_submitter=label_submitter(rt),
        max_body_bytes=1 << 20,
    )
    runner = await start_http(app, "127.0.0.1:0")
    host, port = runner.addresses[0][:2]
    base = f"http://{host}:{port}"
    headers = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
    bodies = [
        (other, deep_line),
        (other, orjson.dumps({"returnFulfillment": label, "note": "a\u0000b"})),
        (other, orjson.dumps({"returnFulfillment": label, "parentAfterSalesSn": other + "\0"})),
        (other, b'{"returnFulfillment": {"fileUrl": "\\ud800"}}'),
        (other, b"\xff\xfe"),
        (other, b'{"a": ' + deep(2000).encode() + b"}"),
        ("RA%00X", orjson.dumps({"returnFulfillment": label})),
        ("RA%FF%FE", orjson.dumps({"returnFulfillment": label})),
    ]
    try:
        async with aiohttp.ClientSession() as s:
            for sn, body in bodies:
                async with s.post(
                    f"{base}/returns/{sn}/fulfillment", data=body, headers=headers
                ) as r:
                    answer = await r.json()
                    assert 400 <= r.status < 500, (sn, body[:60], r.status, answer)
                    assert answer["error"]
    finally:
        await stop_http(runner)
    assert {r["sn"] for r in await rt.pool.fetch("SELECT payload ->> 'sn' AS sn FROM outbox")} == {
        good_a,
        good_b,
    }


class _Healthy:
    def health(self) -> tuple[bool, dict[str, Any]]:
        return True, {}
