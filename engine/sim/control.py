"""``/_sim/*``: ground truth, stats and knobs over HTTP, for a simulator in another process.

Besides truth, stats, faults and network: ``/_sim/revoke`` and ``/_sim/unrevoke`` (``{"token"}``)
break and mend a shop's access token; ``/_sim/token`` (``{"shop", "expires_at"?, "scopes"?}``)
changes its grant (engine/sim/tokens.py); ``/_sim/modes`` (any of engine/sim/modes.py's names)
switches the issue 14 modes and answers them all. Truth kinds ``upload_attempts`` and
``oc_attempts`` list every write attempt with its outcome (engine/sim/attempts.py).
``/_sim/webhooks`` (POST ``{"url", "retry_scale"?, "duplicate_rate"?, "forge_rate"?,
"lost_ack_rate"?, "require_subscription"?, "seed"?}``) points event delivery at a receiver; GET
answers the delivery counts (engine/sim/webhooks.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from engine.sim.network import Network
from engine.sim.stats import SimStats
from engine.sim.webhooks import WebhookSender
from engine.sim.world import TRUTH_KINDS, World

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(value), status=status, content_type="application/json")


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise web.HTTPBadRequest(text="body is not JSON") from None
    if not isinstance(value, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return value


def _shop(body: dict[str, Any]) -> str:
    # Both spellings: "shop" as in the truth query string, "shop_id" as in the Python methods.
    return str(body["shop"] if "shop" in body else body["shop_id"])


def _guard(fn: Handler) -> Handler:
    """Turns a bad control request into a 400/404 with a reason instead of a 500."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await fn(request)
        except KeyError as err:
            return _json({"error": str(err.args[0] if err.args else err)}, 404)
        except (TypeError, ValueError) as err:
            return _json({"error": str(err)}, 400)

    return wrapped


class Control:
    def __init__(
        self,
        world: World,
        network: Network,
        stats: SimStats,
        info: Callable[[], dict[str, Any]],
        webhooks: WebhookSender | None = None,
    ) -> None:
        self.world = world
        self.network = network
        self.stats = stats
        self.info = info
        self.webhooks = webhooks

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/_sim/info", _guard(self.get_info)),
            web.get("/_sim/stats", _guard(self.get_stats)),
            web.get("/_sim/truth/{kind}", _guard(self.get_truth)),
            web.post("/_sim/mutate", _guard(self.mutate)),
            web.post("/_sim/faults", _guard(self.faults)),
            web.post("/_sim/network", _guard(self.set_network)),
            web.post("/_sim/reset-stats", _guard(self.reset_stats)),
            web.post("/_sim/revoke", _guard(self.revoke)),
            web.post("/_sim/unrevoke", _guard(self.unrevoke)),
            web.post("/_sim/token", _guard(self.set_token)),
            web.post("/_sim/modes", _guard(self.set_modes)),
            web.post("/_sim/return-status", _guard(self.return_status)),
            web.post("/_sim/rma", _guard(self.open_rma)),
            web.post("/_sim/oc/expire-tokens", _guard(self.expire_oc_tokens)),
            web.post("/_sim/webhooks", _guard(self.configure_webhooks)),
            web.get("/_sim/webhooks", _guard(self.webhook_counts)),
        ]

    async def get_info(self, request: web.Request) -> web.StreamResponse:
        return _json(self.info())

    async def get_stats(self, request: web.Request) -> web.StreamResponse:
        arrivals = request.query.get("arrivals", "1") not in ("0", "false")
        return _json(self.stats.snapshot(arrivals=arrivals))

    async def get_truth(self, request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"].replace("-", "_")
        if kind not in TRUTH_KINDS:
            raise KeyError(f"unknown truth kind {kind!r}; one of {', '.join(TRUTH_KINDS)}")
        return _json(self.world.truth(kind, request.query.get("shop")))

    async def mutate(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        counts = {
            k: int(body.get(k, 0))
            for k in ("orders_changed", "orders_new", "returns_changed", "returns_new")
        }
        return _json(self.world.mutate(_shop(body), **counts))

    async def faults(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        kinds = body.get("kinds")
        after = body.get("fault_after_apply_rate")
        self.network.set_faults(
            float(body.get("rate", 0.0)),
            None if kinds is None else [str(k) for k in kinds],
            after_apply_rate=None if after is None else float(after),
        )
        return _json(self._knobs())

    async def set_network(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        net = self.network
        if "latency_ms" in body or "jitter_ms" in body:
            net.set_latency(
                float(body.get("latency_ms", net.latency_s * 1000)),
                float(body.get("jitter_ms", net.jitter_s * 1000)),
            )
        if "drift_rate" in body:
            net.drift_rate = float(body["drift_rate"])
        if "slow_s" in body:
            net.slow_s = float(body["slow_s"])
        return _json(self._knobs())

    def _knobs(self) -> dict[str, Any]:
        net = self.network
        return {
            "fault_rate": net.fault_rate,
            "fault_kinds": list(net.fault_kinds),
            "fault_after_apply_rate": net.fault_after_apply_rate,
            "latency_ms": net.latency_s * 1000,
            "jitter_ms": net.jitter_s * 1000,
            "drift_rate": net.drift_rate,
            "slow_s": net.slow_s,
        }

    async def reset_stats(self, request: web.Request) -> web.StreamResponse:
        self.stats.reset()
        return _json({"ok": True})

    async def revoke(self, request: web.Request) -> web.StreamResponse:
        token = str((await _body(request))["token"])
        if not self.world.revoke_token(token):
            raise KeyError("no shop has that token")
        return _json({"ok": True})

    async def unrevoke(self, request: web.Request) -> web.StreamResponse:
        token = str((await _body(request))["token"])
        if not self.world.unrevoke_token(token):
            raise KeyError("no shop has that token")
        return _json({"ok": True})

    async def set_token(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        return _json(
            self.world.set_token(
                _shop(body), expires_at=body.get("expires_at"), scopes=body.get("scopes")
            )
        )

    async def set_modes(self, request: web.Request) -> web.StreamResponse:
        self.world.modes.update(await _body(request))
        return _json(self.world.modes.snapshot())

    async def return_status(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        ops = body.get("operations")
        item = self.world.set_return_status(
            _shop(body),
            str(body["sn"] if "sn" in body else body["parentAfterSalesSn"]),
            int(body["status"]),
            None if ops is None else [int(x) for x in ops],
        )
        return _json(item)

    async def open_rma(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        sn = str(body["sn"] if "sn" in body else body["parentAfterSalesSn"])
        rma = self.world.open_rma(_shop(body), sn, status=str(body.get("status", "OPEN")))
        return _json(rma)

    def _sender(self) -> WebhookSender:
        if self.webhooks is None:
            raise KeyError("this simulator delivers no webhooks")
        return self.webhooks

    async def configure_webhooks(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        sub, seed = body.get("require_subscription"), body.get("seed")

        def rate(name: str) -> float | None:
            return None if body.get(name) is None else float(body[name])

        self._sender().configure(
            None if body.get("url") is None else str(body["url"]),
            retry_scale=rate("retry_scale"),
            duplicate_rate=rate("duplicate_rate"),
            forge_rate=rate("forge_rate"),
            lost_ack_rate=rate("lost_ack_rate"),
            require_subscription=None if sub is None else bool(sub),
            seed=None if seed is None else int(seed),
        )
        return _json({"ok": True, "mall_ids": self._sender().mall_ids})

    async def webhook_counts(self, request: web.Request) -> web.StreamResponse:
        return _json(dict(self._sender().counts))

    async def expire_oc_tokens(self, request: web.Request) -> web.StreamResponse:
        self.world.oc.tokens.expire_all()
        return _json({"ok": True})
