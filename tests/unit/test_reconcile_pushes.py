"""Pushes that must happen once in effect, at the edges the simulator cannot show.

- OC refusing a repeated UPDATE_TRACKING / CANCEL whose first try landed: the task is done.
- An RMA holding the tracking number in another spelling (case, spaces) needs no push.
- A label upload never (re)sends past its lease cover: the transport stops at the deadline
  (4000004 storms), and the task then retries as "not sent".
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses

from engine.counters import RunCounters
from engine.oc.errors import OCBusinessError
from engine.oc.wire import Rma
from engine.reconcile.oc_cancel import OcCancel
from engine.reconcile.oc_rmas import RmaWait
from engine.reconcile.oc_tracking import OcTracking
from engine.reconcile.tasks import Done, Retry
from engine.reconcile.temu_side import TemuReturn
from engine.reconcile.upload_label import UPLOAD_COVER_S, UploadLabel
from engine.store.outbox import Task
from engine.store.reconcile_store import ReturnInfo
from engine.temu.errors import RateLimited
from engine.temu.limiter import Lane
from engine.temu.transport import DeadlinePassed
from tests.unit.test_temu_transport import API, TOKEN, Harness, fail

SN = "PAS-1"


def task(kind: str, **payload: Any) -> Task:
    now = dt.datetime.now(dt.UTC)
    body = {"sn": SN, "shop_id": "s1", "message_id": "ab" * 16, **payload}
    return Task(1, kind, "k", "s1", body, 1, now, "w", None, now)


class OC:
    """query/orders answers ``states`` in turn (the last one repeats); pushes raise ``refusal``."""

    def __init__(self, *states: Rma, refusal: str | None = None) -> None:
        self.states = list(states)
        self.refusal = refusal
        self.pushes: list[tuple[str, ...]] = []

    async def query_orders(self, sn: str) -> list[Rma]:
        return [self.states.pop(0) if len(self.states) > 1 else self.states[0]]

    async def update_tracking(self, order: str, tracking: str, carrier: str, **_: Any) -> None:
        self.pushes.append(("UPDATE_TRACKING", order, tracking))
        if self.refusal:
            raise OCBusinessError(f"business error {self.refusal}", code=self.refusal)

    async def cancel_rma(self, order: str, **_: Any) -> None:
        self.pushes.append(("CANCEL", order))
        if self.refusal:
            raise OCBusinessError(f"business error {self.refusal}", code=self.refusal)


def rma(status: str = "OPEN", tracking: str | None = None) -> Rma:
    return Rma("OC1", SN, status, tracking, "UPS" if tracking else None, {})


def tracking_handler(oc: OC) -> OcTracking:
    return OcTracking(oc=oc, counters=RunCounters(), no_rma=RmaWait(lambda n: 60, 3))  # type: ignore[arg-type]


async def test_a_refused_repeat_of_a_tracking_push_that_landed_is_done() -> None:
    # The push landed, its answer was lost; the retry is refused as a repeat.
    oc = OC(rma(), rma(tracking="1Z999"), refusal="DUPLICATE_MESSAGE")
    out = await tracking_handler(oc).run(
        task("oc_tracking", tracking_number="1Z999", carrier_name="UPS"),
        None,  # type: ignore[arg-type]
    )
    assert out == Done({"outcome": "pushed", "rmas": ["OC1"]})


async def test_a_refused_tracking_push_the_rma_does_not_show_still_fails() -> None:
    oc = OC(rma(), rma(tracking="OTHER"), refusal="PARAM_INVALID")
    with pytest.raises(OCBusinessError):
        await tracking_handler(oc).run(
            task("oc_tracking", tracking_number="1Z999", carrier_name="UPS"),
            None,  # type: ignore[arg-type]
        )


async def test_a_refused_cancel_of_an_rma_now_cancelled_is_done() -> None:
    oc = OC(rma(), rma(status="CANCELLED"), refusal="RMA_ALREADY_CANCELLED")
    handler = OcCancel(oc=oc, counters=RunCounters(), no_rma=RmaWait(lambda n: 60, 3))  # type: ignore[arg-type]
    out = await handler.run(task("oc_cancel"), None)  # type: ignore[arg-type]
    assert out == Done({"outcome": "no_open_rma", "rmas": []}), "done, not failed"


async def test_an_rma_holding_the_number_in_another_spelling_gets_no_push() -> None:
    oc = OC(rma(tracking=" 1z 999"))
    out = await tracking_handler(oc).run(
        task("oc_tracking", tracking_number="1Z999", carrier_name="UPS"),
        None,  # type: ignore[arg-type]
    )
    assert out == Done({"outcome": "up_to_date", "rmas": []})
    assert oc.pushes == []


# -- 5. the upload's deadline ---------------------------------------------------------------
@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    """test_temu_transport's harness: a transport on a mocked Temu router."""
    with aioresponses() as mock:
        async with aiohttp.ClientSession() as session:
            yield Harness(session, mock)


async def call_until(h: Harness, deadline: float) -> dict[str, Any]:
    return await h.transport.call(
        API, TOKEN, {"x": 1}, lane=Lane.RECONCILER, idempotent=False, deadline=deadline
    )


async def test_a_rate_limited_upload_stops_resending_at_its_deadline(h: Harness) -> None:
    h.answer(*[fail(4000004)] * 40)
    timeout = h.transport._timeout.total or 0.0
    # Room for the first send and one backoff of 0.1 s (rng 1.0), not for the next 0.2 s.
    deadline = asyncio.get_running_loop().time() + timeout + 0.15
    with pytest.raises(DeadlinePassed):
        await call_until(h, deadline)
    assert len(h.sent()) == 2


async def test_no_send_starts_that_could_outlast_the_deadline(h: Harness) -> None:
    h.answer(fail(4000004))
    deadline = asyncio.get_running_loop().time() + 1.0  # less than one request's timeout
    with pytest.raises(DeadlinePassed):
        await call_until(h, deadline)
    assert h.sent() == []


class Temu:
    shop_id = "s1"

    def __init__(self, refusal: Exception) -> None:
        self.refusal = refusal
        self.deadlines: list[float | None] = []

    async def current(self, sn: str, create_at: int | None) -> TemuReturn:
        item = {"parentAfterSalesStatus": 8, "availableOperateList": [10], "updateAt": 100}
        return TemuReturn({"parentAfterSalesSn": sn, "returnDeliveryType": 3, **item})

    async def prepare(self, sn: str, order: str) -> dict[str, Any]:
        return {"availableReturnWarehouseList": [{"warehouseId": 1, "warehouseName": "w"}]}

    async def carriers(self, region_id: int | None) -> list[dict[str, Any]]:
        return [{"carrierId": 7, "carrierName": "UPS"}]

    async def upload(self, params: dict[str, Any], *, deadline: float | None = None) -> None:
        self.deadlines.append(deadline)
        raise self.refusal


class Recon:
    async def find_returns(self, sn: str, shop_id: str | None = None) -> list[ReturnInfo]:
        return [ReturnInfo("s1", sn, "PO-1", 8, (10,), 3, 1000, 211, 100)]


class Carriers:
    async def resolve(self, **_: Any) -> int:
        return 7

    def as_listed(self, carrier: int) -> int:
        return carrier


class Lease:
    def __init__(self) -> None:
        self.payload: dict[str, Any] = {}

    async def save_progress(self, patch: dict[str, Any], *, cover_s: float) -> None:
        assert cover_s in (UPLOAD_COVER_S, 0.0)
        self.payload |= patch


@pytest.mark.parametrize(
    "refusal",
    [DeadlinePassed(API, 0, "deadline"), RateLimited(API, 200, "4000004")],
)
async def test_an_upload_stopped_unsent_retries_normally(refusal: Exception) -> None:
    temu = Temu(refusal)
    handler = UploadLabel(
        store=None,  # type: ignore[arg-type]
        recon=Recon(),  # type: ignore[arg-type]
        temu={"s1": temu},  # type: ignore[dict-item]
        carriers=Carriers(),  # type: ignore[arg-type]
        oc=None,
        counters=RunCounters(),
        default_mode="dropOff",
        poll_delay=lambda n: 60,
    )
    label = {"tracking_number": "1Z999", "carrier_id": 7, "file_url": "https://x/l.pdf"}
    started = asyncio.get_running_loop().time()
    lease = Lease()
    out = await handler.run(task("upload_label", label=label), lease)
    assert isinstance(out, Retry) and out.delay_s == 0.0 and "not sent" in out.reason
    # Nothing was applied, so the next run uploads without needing Temu to show a reverse
    # order first (it answers 130010004 for a return that never got a label).
    assert lease.payload["attempted"] is False
    (deadline,) = temu.deadlines
    assert deadline is not None and deadline <= started + UPLOAD_COVER_S + 0.5


async def test_a_rate_limit_flagged_success_is_a_lost_answer_not_a_refusal() -> None:
    """``success: true`` beside 4000004: the upload may have landed. It is neither sent
    again by the transport nor taken as "not sent": the next run reads the return first."""
    refusal = RateLimited(API, 200, "4000004")
    refusal.flagged_success = True
    handler = UploadLabel(
        store=None,  # type: ignore[arg-type]
        recon=Recon(),  # type: ignore[arg-type]
        temu={"s1": Temu(refusal)},  # type: ignore[dict-item]
        carriers=Carriers(),  # type: ignore[arg-type]
        oc=None,
        counters=RunCounters(),
        default_mode="dropOff",
        poll_delay=lambda n: 60,
    )
    label = {"tracking_number": "1Z999", "carrier_id": 7, "file_url": "https://x/l.pdf"}
    lease = Lease()
    out = await handler.run(task("upload_label", label=label), lease)
    assert isinstance(out, Retry) and "unanswered" in out.reason
    assert lease.payload["attempted"] is True


async def test_a_flagged_success_rate_limit_is_not_resent_for_a_write(h: Harness) -> None:
    flagged = {**fail(4000004), "success": True}
    h.answer(flagged, flagged)
    with pytest.raises(RateLimited) as info:
        await h.transport.call(API, TOKEN, {"x": 1}, lane=Lane.RECONCILER, idempotent=False)
    assert info.value.flagged_success
    assert len(h.sent()) == 1
