"""A small aiohttp server that answers like Temu's router for the list APIs the sync uses, with
whatever records (and whatever malformed answers) a test hands it. A test double, not the
simulator: it checks no signature and knows no state machine; the engine still talks HTTP to
it exactly as it would to Temu.

Records are filtered by a hidden update time (``ts``) rather than by their payload's own
``updateTime``, so a record whose fields are garbage is still served in its window, as Temu
would serve it.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

ORDERS = "bg.order.list.v2.get"
RETURNS = "bg.aftersales.parentaftersales.list.get"
RETURN_LINES = "bg.aftersales.aftersales.list.get"
RETURN_ORDER = "bg.aftersales.parentreturnorder.get"

# (api_type, params, result) -> result to send; lets a test mangle one answer.
Hook = Callable[[str, dict[str, Any], Any], Any]  # may answer bytes: sent as the raw result
# (api_type, params) -> the whole envelope to send as it is, or None for the usual answer.
RawHook = Callable[[str, dict[str, Any]], bytes | None]


@dataclass
class Shop:
    token: str
    orders: list[tuple[int, Any]] = field(default_factory=list)  # (ts, record)
    returns: list[tuple[int, Any]] = field(default_factory=list)
    lines: dict[str, list[Any]] = field(default_factory=dict)  # parentAfterSalesSn -> lines


class TemuDouble:
    def __init__(self) -> None:
        self.shops: dict[str, Shop] = {}
        self.hook: Hook | None = None
        self.raw: RawHook | None = None
        self.calls: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/openapi/router", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/openapi/router"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _envelope(self, result: Any) -> web.Response:
        """``result`` as bytes is sent as it is (JSON no encoder would write)."""
        body = {
            "success": True,
            "errorCode": 1000000,
            "errorMsg": "",
            "requestId": f"double-{next(self._ids)}",
            "result": None if isinstance(result, bytes) else result,
        }
        data = orjson.dumps(body)
        if isinstance(result, bytes):
            data = data.replace(b'"result":null', b'"result":' + result)
        return web.Response(body=data, content_type="application/json")

    async def _handle(self, request: web.Request) -> web.Response:
        params = orjson.loads(await request.read())
        api_type = params["type"]
        self.calls[api_type] += 1
        shop = next(s for s in self.shops.values() if s.token == params["access_token"])
        raw = None if self.raw is None else self.raw(api_type, params)
        if raw is not None:
            return web.Response(body=raw, content_type="application/json")
        result = self._result(api_type, params, shop)
        if self.hook is not None:
            result = self.hook(api_type, params, result)
        return self._envelope(result)

    def _result(self, api_type: str, p: dict[str, Any], shop: Shop) -> dict[str, Any]:
        if api_type in (ORDERS, RETURNS):
            records = shop.orders if api_type == ORDERS else shop.returns
            hits = sorted(
                ((ts, r) for ts, r in records if p["updateAtStart"] <= ts <= p["updateAtEnd"]),
                key=lambda x: -x[0],
            )
            page = p["pageNumber"] if api_type == ORDERS else p["pageNo"]
            size = p["pageSize"]
            items = [r for _, r in hits[(page - 1) * size : page * size]]
            if api_type == ORDERS:
                return {"totalItemNum": len(hits), "pageItems": items}
            return {"total": len(hits), "pageNumber": page, "data": items}
        if api_type == RETURN_LINES:
            sns = p["parentAfterSalesSnList"]
            data = [line for sn in sns for line in shop.lines.get(sn, [])]
            return {"total": len(data), "data": data}
        if api_type == RETURN_ORDER:
            return {"logisticsInfoList": []}
        raise AssertionError(f"the double does not serve {api_type}")


def double_config(tmp_path: Path, d: TemuDouble, pg_url: str, schema: str, since: str) -> Path:
    """A config.toml for two shops ("bad", "good") of one app on the double, small pages."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'[database]\nurl = "{pg_url}"\nschema = "{schema}"\n\n'
        f'[[apps]]\napp_key = "double-app"\napp_secret = "double-secret-0123"\n'
        f'base_url = "{d.url}"\nqps = 500\nmax_attempts = 3\n\n'
        '[[shops]]\nid = "bad"\napp_key = "double-app"\naccess_token = "tok-bad"\n\n'
        '[[shops]]\nid = "good"\napp_key = "double-app"\naccess_token = "tok-good"\n\n'
        f'[sync]\nstart = "{since}"\nsafety_lag_s = 1\norders_page_size = 10\n'
        "returns_page_size = 10\n\n[reconciler]\nenabled = false\n"
    )
    return cfg
