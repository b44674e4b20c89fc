"""The returns stream: parent returns, their lines and their reverse logistics.

Lines and logistics cost extra calls, so they are fetched only for returns that are new or
changed, and logistics only where they can exist (a package is on its way or a label was
uploaded). They are fetched BEFORE the return row is written and committed in the same
transaction: a crash in between leaves the return looking changed, so the next read fetches
its lines again instead of leaving them missing forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from engine.retry import logistics_reread_delay
from engine.store.pool import pg_text
from engine.store.store import CursorAdvance
from engine.sync.shop_stream import ShopStream, key_as_sent
from engine.sync.windows import Window
from engine.temu.api import Page
from engine.temu.errors import BadParams, TemuError
from engine.temu.limiter import Lane

log = logging.getLogger(__name__)

LINES_BATCH = 20  # parentAfterSalesSnList size per call; Temu documents no larger maximum
# temu-api.md gives the child lines list no pageSize maximum (the parent list's is 200): 200 is
# asked first, and a 3000000 refusal halves it (down to LINES_MIN_PAGE_SIZE) for the rest of
# the process, instead of failing every returns page that needs lines.
LINES_PAGE_SIZE = 200
LINES_MIN_PAGE_SIZE = 25
# Pages of lines read per batch at most (like the pager's MAX_WINDOW_PAGES): 20 returns of
# lines fill a few pages; a total of 10**6 must not become 40,000 calls.
LINES_MAX_PAGES = 100
LOGISTICS_REREADS_PER_PASS = 50  # pending logistics read again per pass, at most
REFUND_ONLY = 1
# Statuses in which no return package can exist yet: requested, awaiting review, or waiting
# for its label. Any other status (cancelled and rejected included: goods may have been sent
# back first) may carry tracking, so its logistics are read; an unknown status too.
NO_PACKAGE_STATUSES = frozenset({1, 10, 11})
LABEL_PENDING = 8
OP_UPLOAD_LABEL = 10


def needs_logistics(item: dict[str, Any]) -> bool:
    """Whether a return's reverse logistics are worth a call. Total over hostile values: a
    status that is a list, an object or a float is read like an unknown status (its tracking
    may exist), never raises."""
    if item.get("afterSalesType") == REFUND_ONLY:
        return False
    status = item.get("parentAfterSalesStatus")
    if not isinstance(status, int) or isinstance(status, bool):
        return True  # unreadable: like an unknown status, its tracking may exist
    ops = item.get("availableOperateList") or []
    if status in NO_PACKAGE_STATUSES:
        return False
    # Status 8 with the upload operation: no label yet, so no tracking either.
    return not (
        status == LABEL_PENDING
        and isinstance(ops, list)
        and any(op == OP_UPLOAD_LABEL for op in ops if isinstance(op, int))
    )


class ReturnsAdapter(ShopStream):
    stream = "returns"
    entity = "return"

    max_page_size = 200
    lines_page_size = LINES_PAGE_SIZE  # lowered per shop when Temu refuses it (3000000)

    async def fetch(
        self, page: int, window: Window, lane: Lane, created: Window | None = None
    ) -> Page:
        return await self._api.list_parent_returns(
            page_no=page,
            page_size=self.page_size,
            update_start=window.start,
            update_end=window.end,
            create_start=None if created is None else created.start,
            create_end=None if created is None else created.end,
            lane=lane,
        )

    def key(self, item: dict[str, Any]) -> str | None:
        # As the store keys the return (a number too): its lines and logistics are asked for
        # with this text, or a return stored under "70000000001" would never get them.
        return key_as_sent(item.get("parentAfterSalesSn"))

    async def write(self, items: list[dict[str, Any]], advance: CursorAdvance | None) -> None:
        changed = set(await self._store.returns_changed(self.shop_id, items))
        # Postgres answers keys as it stores them (U+FFFD for a U+0000); Temu is asked with
        # the key it sent.
        changed_items = [i for i in items if pg_text(self.key(i)) in changed]
        lane = self._lane_for(advance)
        sns = [sn for sn in (self.key(i) for i in changed_items) if sn is not None]
        logistics_sns = [sn for sn, i in zip(sns, changed_items, strict=True) if needs_logistics(i)]
        # Concurrent: the app's pacer, not this loop, decides how fast calls go out.
        lines, found = await asyncio.gather(
            self._fetch_lines(sns, lane),
            asyncio.gather(*(self._read_logistics(sn, lane) for sn in logistics_sns)),
        )
        logistics = {sn: r for sn, (r, _) in zip(logistics_sns, found, strict=True) if r}
        missed = [(sn, e) for sn, (r, e) in zip(logistics_sns, found, strict=True) if r is None]
        if missed:
            # Before the returns commit: a crash in between only costs a needless read again.
            await self._store.want_logistics(self.shop_id, [sn for sn, _ in missed], missed[0][1])
        written = await self._store.write_returns_bundle(
            self.shop_id, items, lines=lines, logistics=logistics, advance=advance
        )
        self._book(written, {"return": "parentAfterSalesSn", "return_line": "afterSalesSn"})

    def _lane_for(self, advance: CursorAdvance | None) -> Lane:
        """The lane of the extra calls (lines, logistics) a page of returns needs."""
        if advance is not None and advance.kind != "incremental":
            return Lane.BACKFILL
        return Lane.INCREMENTAL

    async def _fetch_lines(self, sns: Sequence[str], lane: Lane) -> list[dict[str, Any]]:
        batches = [list(sns[i : i + LINES_BATCH]) for i in range(0, len(sns), LINES_BATCH)]
        pages = await asyncio.gather(*(self._fetch_line_batch(b, lane) for b in batches))
        return [item for page in pages for item in page]

    async def _fetch_line_batch(self, batch: list[str], lane: Lane) -> list[dict[str, Any]]:
        while True:
            size = self.lines_page_size
            try:
                return await self._read_line_batch(batch, size, lane)
            except BadParams as exc:
                if size <= LINES_MIN_PAGE_SIZE:
                    raise
                smaller = max(LINES_MIN_PAGE_SIZE, size // 2)
                log.warning(
                    "return lines list refused pageSize %d (%s): asking %d from now on",
                    size,
                    exc,
                    smaller,
                    extra={"shop": self.shop_id},
                )
                self.lines_page_size = min(self.lines_page_size, smaller)

    async def _read_line_batch(
        self, batch: list[str], size: int, lane: Lane
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for page_no in range(1, LINES_MAX_PAGES + 1):
            page = await self._api.list_return_lines(
                batch, page_no=page_no, page_size=size, lane=lane
            )
            out.extend(page.items)
            if page.odd:
                await self._set_aside("return_line", page.odd)
            if page.total_known:
                more = page_no * size < page.total
            else:  # no total in the answer: a full page may be followed by another
                more = len(page.items) + page.skipped >= size
            keys = {k for k in (key_as_sent(i.get("afterSalesSn")) for i in page.items) if k}
            # A page of lines all read before: the server ignores pageNo (or its total is a
            # lie), and asking on would never end.
            stale = bool(keys) and keys <= seen
            seen |= keys
            if not page.items or not more or stale:
                return out
        log.warning(
            "return lines of %d returns still listed after %d pages; reading no further",
            len(batch),
            LINES_MAX_PAGES,
            extra={"shop": self.shop_id},
        )
        return out

    async def _read_logistics(self, sn: str, lane: Lane) -> tuple[dict[str, Any] | None, str]:
        """(the answer, "") or (None, why): Temu has no reverse order for it yet (130010004)
        or the call failed. Not a sync failure: it is read again at a later pass. A failure
        of the shop or the app (token, key) is the stream's failure."""
        try:
            return await self._api.parent_return_order(sn, lane=lane), ""
        except TemuError as exc:
            if exc.scope != "call":
                raise
            log.info("reverse logistics of %s not read, read again later: %s", sn, exc)
            return None, str(exc)

    async def after_walk(self, lane: Lane, started: datetime) -> None:
        """Reads again the logistics earlier passes could not read (logistics_pending)."""
        due = await self._store.logistics_due(
            self.shop_id, LOGISTICS_REREADS_PER_PASS, before=started
        )
        if not due:
            return
        found = await asyncio.gather(*(self._read_logistics(sn, lane) for sn, _ in due))
        for (sn, attempts), (result, error) in zip(due, found, strict=True):
            if result is not None:
                await self._store.write_reread_logistics(self.shop_id, sn, result)
            else:
                delay = logistics_reread_delay(attempts + 1)
                await self._store.logistics_later(self.shop_id, sn, error, delay)
