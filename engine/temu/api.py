"""One typed method per Temu API type the engine uses, for one shop (one access token).

Results are checked only for the shape the caller relies on (a list and its total); records are
returned exactly as sent, unknown fields included, because the store keeps them verbatim.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.temu.errors import MalformedResponse, TemuError
from engine.temu.limiter import Lane
from engine.temu.token_info import ACCESS_TOKEN_INFO, TokenInfo, parse_token_info
from engine.temu.transport import TemuTransport

log = logging.getLogger(__name__)

ORDER_LIST = "bg.order.list.v2.get"
ORDER_DETAIL = "bg.order.detail.v2.get"
PARENT_RETURN_LIST = "bg.aftersales.parentaftersales.list.get"
RETURN_LINE_LIST = "bg.aftersales.aftersales.list.get"
PARENT_RETURN_ORDER = "bg.aftersales.parentreturnorder.get"
RETURNLABEL_PREPARE = "temu.aftersales.returnlabel.prepare.get"
UPLOAD_RETURNLABEL = "temu.aftersales.upload.returnlabel"
CARRIERS = "temu.aftersales.carrier.get"
LOGISTICS_COMPANIES = "bg.logistics.companies.get"
# ACCESS_TOKEN_INFO = "bg.open.accesstoken.info.get" (engine/temu/token_info.py)
TMC_MESSAGE_UPDATE = "bg.tmc.message.update"
MAX_EVENT_CODES = 20  # per list, per call (temu-webhooks.md)

ORDERS_MAX_PAGE_SIZE = 100
RETURNS_MAX_PAGE_SIZE = 200


# A list answer that does not have the documented shape is asked for again this many times
# in all: a gateway mangling one answer must not fail the whole stream for the pass.
MALFORMED_ATTEMPTS = 3


@dataclass(frozen=True)
class Page:
    total: int
    items: list[dict[str, Any]]
    # Elements of the list that were not objects (null, a number, a string...): kept out of
    # ``items`` (nothing downstream reads fields of them), handed to the writer to be set
    # aside in rejected_records, and counted by the pager: they still took a place.
    odd: tuple[Any, ...] = ()
    # False when the answer carried no total (child return lines): ``total`` is then only what
    # this page held, and a full page means there may be more.
    total_known: bool = True

    @property
    def skipped(self) -> int:
        return len(self.odd)


class TemuShopApi:
    def __init__(self, transport: TemuTransport, shop_id: str, access_token: str) -> None:
        self.transport = transport
        self.shop_id = shop_id
        self._access_token = access_token

    def __repr__(self) -> str:
        return f"TemuShopApi(shop_id={self.shop_id!r}, app_key={self.app_key!r})"

    @property
    def app_key(self) -> str:
        return self.transport.app.app_key

    @property
    def token_fingerprint(self) -> str:
        """Names the token without revealing it (SHA-256): a stored check belongs to the
        token it was made with, so a replaced token in config.toml is checked afresh."""
        return hashlib.sha256(self._access_token.encode()).hexdigest()

    async def access_token_info(self, *, lane: Lane) -> TokenInfo:
        """``bg.open.accesstoken.info.get``: expiry, granted API types, mallId. An expired
        token raises ShopAuthError (3000034) like any other call."""
        result = await self._call(ACCESS_TOKEN_INFO, {}, lane)
        try:
            return parse_token_info(result)
        except MalformedResponse as exc:
            exc.shop_id = self.shop_id
            raise

    async def _call(
        self,
        api_type: str,
        params: dict[str, Any],
        lane: Lane,
        *,
        idempotent: bool = True,
        deadline: float | None = None,
    ) -> dict[str, Any]:
        token = self._access_token
        try:
            if deadline is None:
                return await self.transport.call(
                    api_type, token, params, lane=lane, idempotent=idempotent
                )
            return await self.transport.call(
                api_type, token, params, lane=lane, idempotent=idempotent, deadline=deadline
            )
        except TemuError as exc:
            # The transport serves every shop of the app; only here is the shop known.
            exc.shop_id = self.shop_id
            raise

    async def list_orders(
        self,
        *,
        page_number: int,
        page_size: int,
        update_start: int,
        update_end: int,
        create_after: int | None = None,
        create_before: int | None = None,
        lane: Lane,
    ) -> Page:
        """Orders updated in the closed window [update_start, update_end], newest first;
        optionally only those created in [create_after, create_before]."""
        _check_page(page_number, page_size, ORDERS_MAX_PAGE_SIZE)
        params: dict[str, Any] = {
            "pageNumber": page_number,
            "pageSize": page_size,
            "updateAtStart": update_start,
            "updateAtEnd": update_end,
            "sortby": "updateTime",
        }
        if create_after is not None and create_before is not None:
            params["createAfter"] = create_after
            params["createBefore"] = create_before
        return await self._list(ORDER_LIST, params, lane, "totalItemNum", "pageItems")

    async def order_detail(self, parent_order_sn: str, *, lane: Lane) -> dict[str, Any]:
        return await self._call(ORDER_DETAIL, {"parentOrderSn": parent_order_sn}, lane)

    async def list_parent_returns(
        self,
        *,
        page_no: int,
        page_size: int,
        update_start: int | None = None,
        update_end: int | None = None,
        create_start: int | None = None,
        create_end: int | None = None,
        parent_after_sales_sns: Sequence[str] | None = None,
        lane: Lane,
    ) -> Page:
        """Parent returns in a closed window (updateAt or createAt; Temu requires one pair),
        optionally only the given ``parentAfterSalesSn``s."""
        _check_page(page_no, page_size, RETURNS_MAX_PAGE_SIZE)
        params: dict[str, Any] = {"pageNo": page_no, "pageSize": page_size}
        if update_start is not None and update_end is not None:
            params["updateAtStart"] = update_start
            params["updateAtEnd"] = update_end
        if create_start is not None and create_end is not None:
            params["createAtStart"] = create_start
            params["createAtEnd"] = create_end
        if "updateAtStart" not in params and "createAtStart" not in params:
            raise ValueError("list_parent_returns needs an updateAt or a createAt window pair")
        if parent_after_sales_sns:
            params["parentAfterSalesSnList"] = list(parent_after_sales_sns)
        return await self._list(PARENT_RETURN_LIST, params, lane, "total", "data")

    async def list_return_lines(
        self, parent_after_sales_sns: Sequence[str], *, page_no: int, page_size: int, lane: Lane
    ) -> Page:
        _check_page(page_no, page_size, RETURNS_MAX_PAGE_SIZE)
        if isinstance(parent_after_sales_sns, str) or not parent_after_sales_sns:
            raise ValueError("parent_after_sales_sns must be a non-empty sequence of strings")
        params = {
            "parentAfterSalesSnList": list(parent_after_sales_sns),
            "pageNo": page_no,
            "pageSize": page_size,
        }
        # The docs show no total for child lines; the list length stands in when it is absent.
        return await self._list(
            RETURN_LINE_LIST, params, lane, "total", "data", total_optional=True
        )

    async def parent_return_order(
        self, parent_after_sales_sn: str, *, lane: Lane
    ) -> dict[str, Any]:
        return await self._call(
            PARENT_RETURN_ORDER, {"parentAfterSalesSn": parent_after_sales_sn}, lane
        )

    async def returnlabel_prepare(
        self, parent_after_sales_sn: str, parent_order_sn: str, *, lane: Lane
    ) -> dict[str, Any]:
        params = {"parentAfterSalesSn": parent_after_sales_sn, "parentOrderSn": parent_order_sn}
        return await self._call(RETURNLABEL_PREPARE, params, lane)

    async def upload_returnlabel(
        self, params: dict[str, Any], *, lane: Lane, deadline: float | None = None
    ) -> dict[str, Any]:
        """Success has no result body: ``{}``. State errors raise AftersalesStateError.
        ``deadline``: see ``TemuTransport.call`` (the caller's lease must outlast the send)."""
        # Not idempotent: a lost answer may hide an applied upload, so it is never resent
        # blindly; the caller re-reads the return instead.
        return await self._call(
            UPLOAD_RETURNLABEL, params, lane, idempotent=False, deadline=deadline
        )

    async def carriers(self, region_id: int, *, lane: Lane) -> list[dict[str, Any]]:
        result = await self._call(CARRIERS, {"returnWarehouseRegionId1": region_id}, lane)
        return self._items(CARRIERS, result, "carrierDTOList", required=True)

    async def logistics_companies(self, *, lane: Lane) -> list[dict[str, Any]]:
        """``bg.logistics.companies.get``, the carrier list for no particular region, as
        ``carriers`` answers it (``carrierId``, ``carrierName``). temu-api.md names its items'
        fields (``logisticsServiceProviderId``/``Name``) but not the list's key: the first
        list in the result holding such items is taken."""
        result = await self._call(LOGISTICS_COMPANIES, {}, lane)
        for value in result.values():
            if isinstance(value, list) and any(
                isinstance(i, dict) and "logisticsServiceProviderId" in i for i in value
            ):
                return [
                    {
                        "carrierId": i["logisticsServiceProviderId"],
                        "carrierName": i.get("logisticsServiceProviderName"),
                    }
                    for i in value
                    if isinstance(i, dict) and i.get("logisticsServiceProviderId") is not None
                ]
        return []

    async def update_event_subscription(
        self,
        permit: Sequence[str] = (),
        cancel: Sequence[str] = (),
        *,
        lane: Lane = Lane.RECONCILER,
    ) -> dict[str, Any]:
        """Subscribes this shop to webhook events (``permitEventCodeList``) and/or cancels
        some (``cancelEventCodeList``). At most 1 request/s is allowed for this API: use
        ``engine.temu.subscriptions.subscribe_shops`` to space calls. Refusals raise an
        EventSubscriptionError subclass that explains the fix."""
        for name, codes in (("permit", permit), ("cancel", cancel)):
            if isinstance(codes, str) or len(codes) > MAX_EVENT_CODES:
                raise ValueError(f"{name} must be a list of at most {MAX_EVENT_CODES} event codes")
        if not permit and not cancel:
            raise ValueError("nothing to subscribe or cancel")
        params: dict[str, Any] = {}
        if permit:
            params["permitEventCodeList"] = list(permit)
        if cancel:
            params["cancelEventCodeList"] = list(cancel)
        # Setting a subscription twice leaves it the same: safe to resend.
        return await self._call(TMC_MESSAGE_UPDATE, params, lane)

    async def _list(
        self,
        api_type: str,
        params: dict[str, Any],
        lane: Lane,
        total_key: str,
        items_key: str,
        *,
        total_optional: bool = False,
    ) -> Page:
        for attempt in range(1, MALFORMED_ATTEMPTS + 1):
            result = await self._call(api_type, params, lane)
            try:
                return self._page(
                    api_type, result, total_key, items_key, total_optional=total_optional
                )
            except MalformedResponse as exc:
                if attempt == MALFORMED_ATTEMPTS:
                    raise
                log.warning(
                    "%s; asking again (attempt %d of %d)",
                    exc,
                    attempt,
                    MALFORMED_ATTEMPTS,
                    extra={"shop": self.shop_id},
                )
        raise AssertionError("unreachable")

    def _page(
        self,
        api_type: str,
        result: dict[str, Any],
        total_key: str,
        items_key: str,
        *,
        total_optional: bool = False,
    ) -> Page:
        total = _count(result.get(total_key))
        if total is None:
            # temu-api.md: parse defensively, a missing field is no error. Without a readable
            # count (absent, -1, "many") the page is still a page: the pager reads on while
            # pages come back full and notes the window as not checked (pager._Pass). A
            # result with neither a count nor a list (``result: null`` on success, which the
            # transport hands over as {}) says nothing at all: asked again, and failing the
            # pass if it persists, never read as "nothing listed" (the window's cursor would
            # move past records a glitching gateway did not show).
            if total_key not in result and items_key not in result and not total_optional:
                raise self._malformed(api_type, f"neither {total_key} nor {items_key}")
            if total_key in result and not total_optional:
                log.info(
                    "%s shop=%s: %s is %r, not a count: paging until a short page",
                    api_type,
                    self.shop_id,
                    total_key,
                    result.get(total_key),
                    extra={"shop": self.shop_id},
                )
            items, odd = self._objects(api_type, result, items_key, required=False)
            return Page(total=len(items) + len(odd), items=items, odd=odd, total_known=False)
        # An empty page may come back with the list null or absent; a non-empty one may not.
        items, odd = self._objects(api_type, result, items_key, required=total > 0)
        return Page(total=total, items=items, odd=odd)

    def _items(
        self, api_type: str, result: dict[str, Any], key: str, *, required: bool
    ) -> list[dict[str, Any]]:
        return self._objects(api_type, result, key, required=required)[0]

    def _objects(
        self, api_type: str, result: dict[str, Any], key: str, *, required: bool
    ) -> tuple[list[dict[str, Any]], tuple[Any, ...]]:
        """The list's objects, and the elements that were something else (logged; one bad
        element must not cost the page's good records)."""
        items = result.get(key)
        if items is None and not required:
            return [], ()
        if not isinstance(items, list):
            raise self._malformed(api_type, f"{key} is {type(items).__name__}, not a list")
        objects = [item for item in items if isinstance(item, dict)]
        odd = tuple(item for item in items if not isinstance(item, dict))
        if odd:
            kinds = sorted({type(i).__name__ for i in odd})
            log.warning(
                "%s shop=%s: %d element(s) of %s are not objects (%s): set aside",
                api_type,
                self.shop_id,
                len(odd),
                key,
                ", ".join(kinds),
                extra={"shop": self.shop_id},
            )
        return objects, odd

    def _malformed(self, api_type: str, problem: str) -> MalformedResponse:
        exc = MalformedResponse(api_type, 0, f"malformed result: {problem}")
        exc.shop_id = self.shop_id
        return exc


def _count(value: Any) -> int | None:
    """A list's total as a count: an int, a digit string or a whole float (12.0); None when
    it is absent or no count at all (negative, a bool, a fraction, words)."""
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _check_page(page: int, page_size: int, max_size: int) -> None:
    # Out-of-range paging is our bug: fail before spending a rate-limited request on it.
    if page < 1:
        raise ValueError(f"page numbers start at 1, got {page}")
    if not 1 <= page_size <= max_size:
        raise ValueError(f"page size must be 1..{max_size}, got {page_size}")
