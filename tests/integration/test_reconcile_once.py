"""Irreversible pushes happen once in effect: a label upload whose outcome the engine cannot
read, a lagging returns list that looks like a new request, a replacement label sent while an
upload is unconfirmed, tracking numbers differing only in case or spaces.

The simulator's ``accept_second_label`` mode applies a second upload on top of the first, so
a double upload shows in ``sim.uploads`` instead of hiding behind a refusal.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from engine.app.reconciler import label_submitter, reconcile_once
from engine.app.runtime import Runtime
from engine.cli.labels import import_labels
from engine.reconcile.ports import LabelRejected
from engine.reconcile.tasks import upload_key
from engine.sim.server import Simulator
from engine.store.reconcile_store import ReconcileStore
from tests.integration.test_reconcile_flow import (
    SHOP,
    awaiting,
    make_due,
    passes,
    task_by_key,
)
from tests.integration.test_reconcile_safety import Open, open_world

__all__ = ["open_world"]  # the fixture, shared with test_reconcile_safety

LABEL_A = {
    "returnFulfillment": {
        "tracking": {"number": "1Z999AA10123456784", "companyId": "699272611"},
        "fileUrl": "https://cdn.example.com/a.pdf",
    }
}
LABEL_B = {
    "returnFulfillment": {
        "tracking": {"number": "1Z999AA10123456785", "companyId": "699272611"},
        "fileUrl": "https://cdn.example.com/b.pdf",
    }
}


def uploads_per_return(sim: Simulator) -> Counter[str]:
    return Counter(u["parentAfterSalesSn"] for u in sim.uploads(SHOP))


async def upload_rows(rt: Runtime, sns: set[str]) -> list[dict[str, Any]]:
    rows = await rt.pool.fetch(
        "SELECT state, payload, result, last_error FROM outbox "
        "WHERE kind = 'upload_label' AND payload ->> 'sn' = ANY($1::text[])",
        sorted(sns),
    )
    return [dict(r) for r in rows]


async def lose_answers(sim: Simulator, rt: Runtime) -> set[str]:
    """One pass whose uploads are applied but unanswered; the sns they were for."""
    sim.set_modes(lost_upload_answers=1000)
    await reconcile_once(rt)
    sim.set_modes(lost_upload_answers=0)
    applied = set(uploads_per_return(sim))
    assert applied
    return applied


# -- 1. an unreadable read-back is no "not landed" -------------------------------------------
async def test_an_unreadable_read_back_never_leads_to_a_second_upload(open_world: Open) -> None:
    sim, rt = await open_world(return_list_lag_s=3600.0, accept_second_label=True)
    await passes(rt, 2)  # OC labels ready at the next query; nothing uploaded yet
    assert sim.uploads(SHOP) == []
    applied = await lose_answers(sim, rt)
    # Temu cannot show the reverse order now (130010004): that proves nothing either way.
    sim.set_modes(logistics_not_ready=100_000)
    await make_due(rt)
    await passes(rt, 2)
    assert set(uploads_per_return(sim).values()) == {1}, "no second upload"
    rows = await upload_rows(rt, applied)
    assert rows and all(r["state"] == "pending" for r in rows)
    assert all("cannot tell whether the earlier label upload" in r["last_error"] for r in rows)

    # Temu shows the numbers in its own spelling (case, spaces): still ours, still landed.
    await rt.pool.execute(
        "UPDATE outbox SET payload = jsonb_set(payload, '{attempt,tracking_number}', "
        "to_jsonb(' ' || lower(payload -> 'attempt' ->> 'tracking_number')))"
        "WHERE kind = 'upload_label' AND payload ->> 'sn' = ANY($1::text[])",
        sorted(applied),
    )
    sim.set_modes(logistics_not_ready=0)
    await make_due(rt)
    await passes(rt, 2)
    assert set(uploads_per_return(sim).values()) == {1}, "no second upload"
    rows = await upload_rows(rt, applied)
    assert all(r["state"] == "done" and r["result"]["confirmed_by_reread"] for r in rows)


async def test_a_return_without_reverse_order_yet_still_gets_its_first_upload(
    open_world: Open,
) -> None:
    sim, rt = await open_world(logistics_not_ready=100_000)
    expected = {r["parentAfterSalesSn"] for r in awaiting(sim)}
    await passes(rt, 4)
    uploaded = uploads_per_return(sim)
    assert uploaded and set(uploaded) <= expected
    assert set(uploaded.values()) == {1}
    rows = await upload_rows(rt, set(uploaded))
    assert all(r["state"] == "done" and r["result"]["outcome"] == "uploaded" for r in rows)


# -- 2. our own upload moving updateAt is no new request ---------------------------------------
async def bump_update_at(rt: Runtime, sns: set[str]) -> None:
    """The poller stored the return again: updateAt moved (our upload) while the list still
    shows status 8 with operation 10."""
    await rt.pool.execute(
        "UPDATE returns SET update_at = update_at + interval '1 minute' "
        "WHERE parent_after_sales_sn = ANY($1::text[])",
        sorted(sns),
    )


async def test_a_lagging_list_after_our_upload_is_not_asked_again(open_world: Open) -> None:
    sim, rt = await open_world(return_list_lag_s=3600.0, accept_second_label=True)
    await passes(rt, 4)
    first = uploads_per_return(sim)
    assert first and set(first.values()) == {1}
    await bump_update_at(rt, set(first))
    await passes(rt, 3)
    assert uploads_per_return(sim) == first, "no second upload of the same label"
    for sn in first:
        row = await task_by_key(rt, upload_key(SHOP, sn))
        assert row["state"] == "done" and row["result"]["confirmed_by_reread"] is True
        assert row["payload"]["previous_result"]["outcome"] == "uploaded"


async def test_a_merchant_label_sent_again_after_its_upload_is_not_uploaded_again(
    open_world: Open,
) -> None:
    sim, rt = await open_world(oc=False, return_list_lag_s=3600.0, accept_second_label=True)
    sn = awaiting(sim)[0]["parentAfterSalesSn"]
    submit = label_submitter(rt)
    await submit.submit(sn, LABEL_A)
    await passes(rt, 1)
    assert uploads_per_return(sim) == {sn: 1}
    await bump_update_at(rt, {sn})
    await submit.submit(sn, LABEL_A)  # a client that lost our 202 sends it again
    await passes(rt, 2)
    assert uploads_per_return(sim) == {sn: 1}
    row = await task_by_key(rt, upload_key(SHOP, sn))
    assert row["state"] == "done" and row["result"]["confirmed_by_reread"] is True


async def test_another_merchant_label_answering_a_new_request_is_uploaded(
    open_world: Open,
) -> None:
    """Temu asks again (the first label rejected, say) while its logistics still show the old
    parcel: a merchant label for another parcel is the answer, and goes up once."""
    sim, rt = await open_world(oc=False, return_list_lag_s=3600.0, accept_second_label=True)
    sn = awaiting(sim)[0]["parentAfterSalesSn"]
    submit = label_submitter(rt)
    await submit.submit(sn, LABEL_A)
    await passes(rt, 1)
    await bump_update_at(rt, {sn})
    assert not (await submit.submit(sn, LABEL_B)).duplicate
    await passes(rt, 2)
    assert uploads_per_return(sim) == {sn: 2}
    last = sim.uploads(SHOP)[-1]["returnLabelDTOList"][0]
    assert last["trackingNumber"] == "1Z999AA10123456785"


# -- 3. no replacement label while an upload is unconfirmed -----------------------------------
async def test_a_replacement_label_is_refused_while_an_upload_is_unconfirmed(
    open_world: Open, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim, rt = await open_world(oc=False, return_list_lag_s=3600.0, accept_second_label=True)
    sn = awaiting(sim)[0]["parentAfterSalesSn"]
    submit = label_submitter(rt)
    await submit.submit(sn, LABEL_A)
    assert await lose_answers(sim, rt) == {sn}

    with pytest.raises(LabelRejected) as info:
        await submit.submit(sn, LABEL_B)
    assert info.value.status == 409 and "unconfirmed" in str(info.value)
    path = tmp_path / "labels.jsonl"
    path.write_text(orjson.dumps({"parentAfterSalesSn": sn, **LABEL_B}).decode() + "\n")
    assert await import_labels(rt, str(path)) == 1
    _, err = capsys.readouterr()
    assert err.startswith("line 1:") and "unconfirmed" in err
    assert (await submit.submit(sn, LABEL_A)).duplicate, "the same label again is fine"

    await make_due(rt)
    await passes(rt, 2)
    (up,) = sim.uploads(SHOP)
    assert up["returnLabelDTOList"][0]["trackingNumber"] == "1Z999AA10123456784"
    row = await task_by_key(rt, upload_key(SHOP, sn))
    assert row["state"] == "done" and row["result"]["confirmed_by_reread"] is True
    assert row["payload"]["label"]["file_url"] == "https://cdn.example.com/a.pdf"


async def test_a_new_label_revives_a_dead_task_whose_upload_is_unconfirmed(
    open_world: Open,
) -> None:
    """A dead task finds out nothing more by itself: refusing every other label with 409
    would block the return for good. The new label is taken; the revived task still reads
    the return before any upload (its attempt mark stays)."""
    sim, rt = await open_world(oc=False, return_list_lag_s=3600.0, accept_second_label=True)
    sn = awaiting(sim)[0]["parentAfterSalesSn"]
    submit = label_submitter(rt)
    await submit.submit(sn, LABEL_A)
    assert await lose_answers(sim, rt) == {sn}
    await rt.pool.execute(
        "UPDATE outbox SET state = 'dead' WHERE dedupe_key = $1", upload_key(SHOP, sn)
    )

    assert not (await submit.submit(sn, LABEL_B)).duplicate
    row = await task_by_key(rt, upload_key(SHOP, sn))
    assert row["state"] == "pending" and row["payload"]["attempted"] is True

    await make_due(rt)
    await passes(rt, 2)
    (up,) = sim.uploads(SHOP)  # the first upload had landed: no second one
    assert up["returnLabelDTOList"][0]["trackingNumber"] == "1Z999AA10123456784"


# -- 6. one OC push per parcel, whatever the spelling -----------------------------------------
async def test_tracking_numbers_differing_in_case_or_spaces_are_one_oc_push(
    open_world: Open,
) -> None:
    sim, rt = await open_world()
    await passes(rt, 4)
    up = sim.uploads(SHOP)[0]
    sn, number = up["parentAfterSalesSn"], up["returnLabelDTOList"][0]["trackingNumber"]
    (rma,) = [r for r in sim.rmas(SHOP) if r["referenceNumber"] == sn]
    pushes_before = len(sim.oc_pushes())
    # Temu's logistics now spell the same parcel differently (the sync stores them so).
    spelled = " " + number.lower()[:4] + " " + number.lower()[4:]
    logistics = {"logisticsInfoList": [{"trackingNumber": spelled, "carrierName": "UPS"}]}
    await rt.store.write_return_logistics(SHOP, sn, logistics)
    await rt.pool.execute(
        "INSERT INTO changes (shop_id, entity, entity_key, op) VALUES ($1, 'return', $2, 'update')",
        SHOP,
        sn,
    )
    assert not await ReconcileStore(rt.pool).enqueue_tracking(SHOP, sn, spelled, "UPS", "ab" * 16)
    await passes(rt, 2)
    keys = await rt.pool.fetch(
        "SELECT dedupe_key FROM outbox WHERE kind = 'oc_tracking' AND payload ->> 'sn' = $1", sn
    )
    assert [k["dedupe_key"] for k in keys] == [f"oc_tracking:{SHOP}:{sn}:{number.upper()}"]
    assert [
        p for p in sim.oc_pushes()[pushes_before:] if p["orderNumber"] == rma["orderNumber"]
    ] == [], "OC already holds that parcel"
