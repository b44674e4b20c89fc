"""The simulator as one aiohttp app: Temu's router, Orange Connex under /oc, control under /_sim."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from engine.sim.config import SimConfig
from engine.sim.control import Control
from engine.sim.network import Network
from engine.sim.oc import API_PREFIX, OcApi
from engine.sim.stats import SimStats
from engine.sim.temu import TemuRouter
from engine.sim.webhooks import WebhookSender, tmc_handlers
from engine.sim.world import World

TEMU_PATH = "/openapi/router"
_MAX_BODY = 4 * 1024 * 1024


class Simulator:
    """Temu + Orange Connex in one process. Build (generates the data), ``start``, ``stop``."""

    def __init__(
        self, config: SimConfig, *, arrival_clock: Callable[[], float] | None = None
    ) -> None:
        self.config = config
        self.world = World(config)
        self.network = Network(config, random.Random(f"{config.seed}:network"))
        self._stats = SimStats([a.app_key for a in config.apps])
        self.webhooks = WebhookSender(
            {a.app_key: a.app_secret for a in config.apps},
            {s.shop_id: s.app_key for s in config.shops},
            self.world.mall_ids,
        )
        self.world.listeners.append(self.webhooks)
        self._temu = TemuRouter(
            self.world,
            self.network,
            self._stats,
            extra_handlers=tmc_handlers(self.webhooks),
            clock=arrival_clock or time.monotonic,
        )
        self._oc = OcApi(self.world, self.network, self._stats)
        self._control = Control(
            self.world, self.network, self._stats, self.info, webhooks=self.webhooks
        )
        self._runner: web.AppRunner | None = None
        self._root = ""

    def app(self) -> web.Application:
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_post(TEMU_PATH, self._temu.handle)
        app.add_routes(self._oc.routes())
        app.add_routes(self._control.routes())
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in str(bound_host) else str(bound_host)
        self._root = f"http://{shown}:{bound_port}"

    async def stop(self) -> None:
        await self.webhooks.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- addresses ------------------------------------------------------------------------
    @property
    def root_url(self) -> str:
        if not self._root:
            raise RuntimeError("simulator not started")
        return self._root

    @property
    def temu_url(self) -> str:
        return self.root_url + TEMU_PATH

    @property
    def oc_base_url(self) -> str:
        return self.root_url + API_PREFIX

    @property
    def oc_oauth_url(self) -> str:
        return self.root_url + "/oc"

    # DESIGN.md's names for the same two URLs.
    oc_url = oc_base_url
    oauth_url = oc_oauth_url

    def info(self) -> dict[str, Any]:
        return {
            "root_url": self.root_url,
            "temu_url": self.temu_url,
            "oc_base_url": self.oc_base_url,
            "oc_oauth_url": self.oc_oauth_url,
            "apps": [
                {"app_key": a.app_key, "app_secret": a.app_secret, "qps": a.qps}
                for a in self.config.apps
            ],
            "shops": [
                {
                    "shop_id": s.shop_id,
                    "app_key": s.app_key,
                    "access_token": s.access_token,
                    "orders": s.orders,
                    "returns": s.returns,
                }
                for s in self.config.shops
            ],
            "oc": {
                "client_id": self.config.oc_client_id,
                "refresh_token": self.world.oc.tokens.refresh_token,
            },
            "data_range": {"start_ts": self.world.start_ts, "end_ts": self.world.end_ts},
        }

    def config_toml(self) -> str:
        """A config.toml fragment that points the engine at this simulator."""
        parts = []
        for a in self.config.apps:
            parts.append(
                f'[[apps]]\napp_key = "{a.app_key}"\napp_secret = "{a.app_secret}"\n'
                f'region = "us"\nbase_url = "{self.temu_url}"\nqps = {a.qps}\n'
            )
        for s in self.config.shops:
            parts.append(
                f'[[shops]]\nid = "{s.shop_id}"\napp_key = "{s.app_key}"\n'
                f'access_token = "{s.access_token}"\n'
            )
        parts.append(
            f'[orange_connex]\nenabled = true\nbase_url = "{self.oc_base_url}"\n'
            f'oauth_base_url = "{self.oc_oauth_url}"\nclient_id = "{self.config.oc_client_id}"\n'
            f'refresh_token = "{self.world.oc.tokens.refresh_token}"\n'
        )
        return "\n".join(parts)

    # -- knobs ----------------------------------------------------------------------------
    def set_faults(
        self,
        rate: float,
        kinds: Iterable[str] | None = None,
        *,
        after_apply_rate: float | None = None,
    ) -> None:
        self.network.set_faults(rate, kinds, after_apply_rate=after_apply_rate)

    def set_latency(self, latency_ms: float, jitter_ms: float = 0.0) -> None:
        self.network.set_latency(latency_ms, jitter_ms)

    def hold_requests(self) -> None:
        """Every request (Temu and OC) waits at arrival until ``release_requests``."""
        self.network.hold()

    def release_requests(self) -> None:
        self.network.release()

    def held_requests(self, kind: str | None = None) -> int:
        """How many requests wait at arrival now: all, or of one Temu API type ("oc": OC)."""
        held = self.network.held
        return sum(held.values()) if kind is None else held[kind]

    def set_drift(self, rate: float) -> None:
        self.network.drift_rate = rate

    # -- changes --------------------------------------------------------------------------
    def mutate(
        self,
        shop_id: str,
        orders_changed: int = 0,
        orders_new: int = 0,
        returns_changed: int = 0,
        returns_new: int = 0,
    ) -> dict[str, Any]:
        return self.world.mutate(shop_id, orders_changed, orders_new, returns_changed, returns_new)

    def set_return_status(
        self, shop_id: str, sn: str, status: int, operations: list[int] | None = None
    ) -> dict[str, Any]:
        return self.world.set_return_status(shop_id, sn, status, operations)

    def revoke_token(self, token: str) -> bool:
        return self.world.revoke_token(token)

    def unrevoke_token(self, token: str) -> bool:
        return self.world.unrevoke_token(token)

    def set_token(
        self, shop_id: str, *, expires_at: int | None = None, scopes: list[str] | None = None
    ) -> dict[str, Any]:
        """A shop's token grant: expiry (Unix seconds) and/or granted API types."""
        return self.world.set_token(shop_id, expires_at=expires_at, scopes=scopes)

    def set_modes(self, **modes: Any) -> dict[str, Any]:
        """Switches issue 14 modes (engine/sim/modes.py); answers them all."""
        self.world.modes.update(modes)
        return self.world.modes.snapshot()

    def open_rma(self, shop_id: str, sn: str, *, status: str = "OPEN") -> dict[str, Any]:
        return self.world.open_rma(shop_id, sn, status=status)

    def expire_oc_tokens(self) -> None:
        self.world.oc.tokens.expire_all()

    # -- ground truth and stats -----------------------------------------------------------
    def truth_orders(self, shop_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.world.truth("orders", shop_id)
        return result

    def truth_returns(self, shop_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.world.truth("returns", shop_id)
        return result

    def truth_return_lines(self, shop_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.world.truth("return_lines", shop_id)
        return result

    def truth_logistics(self, shop_id: str) -> dict[str, list[dict[str, Any]]]:
        result: dict[str, list[dict[str, Any]]] = self.world.truth("logistics", shop_id)
        return result

    def poisoned(self, shop_id: str) -> dict[str, dict[str, str]]:
        """{"orders": {parentOrderSn: kind}, "returns": {parentAfterSalesSn: kind}}: the
        records the ``poison`` mode poisons (engine/sim/poison.py), by their clean key."""
        result: dict[str, dict[str, str]] = self.world.truth("poisoned", shop_id)
        return result

    def uploads(self, shop_id: str | None = None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.world.truth("uploads", shop_id)
        return result

    def oc_pushes(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.world.truth("oc_pushes", None)
        return result

    def upload_attempts(self, shop_id: str | None = None) -> list[dict[str, Any]]:
        """Every label-upload attempt with its outcome, refused ones included."""
        result: list[dict[str, Any]] = self.world.truth("upload_attempts", shop_id)
        return result

    def oc_attempts(self, shop_id: str | None = None) -> list[dict[str, Any]]:
        """Every OC cancel/rma POST with its outcome, refused and replayed ones included."""
        result: list[dict[str, Any]] = self.world.truth("oc_attempts", shop_id)
        return result

    def pickup_cases(self, shop_id: str | None = None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.world.truth("pickup_cases", shop_id)
        return result

    def rmas(self, shop_id: str | None = None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.world.truth("rmas", shop_id)
        return result

    def stats(self, *, arrivals: bool = True) -> dict[str, Any]:
        return self._stats.snapshot(arrivals=arrivals)

    def reset_stats(self) -> None:
        self._stats.reset()


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen must be HOST:PORT, got {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


async def serve_forever(listen: str, config: SimConfig) -> None:
    """``temu-sync simulate``: serve until SIGINT/SIGTERM, after printing how to connect."""
    host, port = parse_listen(listen)
    sim = Simulator(config)
    await sim.start(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        info = sim.info()
        print(f"Temu router:        {info['temu_url']}")
        print(f"Orange Connex API:  {info['oc_base_url']}")
        print(f"Orange Connex auth: {info['oc_oauth_url']}")
        print(f"Control:            {info['root_url']}/_sim/stats")
        for shop in info["shops"]:
            print(
                f"shop {shop['shop_id']}: app {shop['app_key']}, token {shop['access_token']}, "
                f"{shop['orders']} orders, {shop['returns']} returns"
            )
        print("\n# config.toml for the engine\n" + sim.config_toml(), flush=True)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(sig)
        await sim.stop()
