"""The simulator in its own process, so it shares neither the GIL nor a core's time slice with
the engine being measured; the harness drives it over its ``/_sim`` control endpoints.

    python -m bench.simproc --orders 200000 --shops 1 --latency-ms 60 --jitter-ms 10

prints one JSON line (URLs, credentials, data range, settings) and serves until stdin closes
or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class SimSpec:
    """What the simulator holds and how its network behaves; recorded in every result."""

    orders: int
    returns: int = 10
    shops: int = 1
    qps: int = 20
    seed: int = 7
    latency_ms: float = 60.0
    jitter_ms: float = 10.0
    label_ready_after: int = 2
    # Per-shop sizes when the shops differ (a big history next to a small live shop).
    orders_by_shop: tuple[int, ...] = ()
    returns_by_shop: tuple[int, ...] = ()

    def argv(self) -> list[str]:
        return [
            "--orders-by-shop=" + ",".join(map(str, self.orders_by_shop)),
            "--returns-by-shop=" + ",".join(map(str, self.returns_by_shop)),
            f"--orders={self.orders}",
            f"--returns={self.returns}",
            f"--shops={self.shops}",
            f"--qps={self.qps}",
            f"--seed={self.seed}",
            f"--latency-ms={self.latency_ms}",
            f"--jitter-ms={self.jitter_ms}",
            f"--label-ready-after={self.label_ready_after}",
        ]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "apps": 1, "strict_window": True, "process": "separate"}


# -- the server side -----------------------------------------------------------------------


async def _serve(spec: SimSpec) -> None:
    from engine.sim.config import SimConfig
    from engine.sim.server import Simulator

    config = SimConfig.default(
        orders=spec.orders,
        returns=spec.returns,
        shops=spec.shops,
        apps=1,
        qps=spec.qps,
        seed=spec.seed,
        latency_ms=spec.latency_ms,
        jitter_ms=spec.jitter_ms,
        strict_window=True,
        oc_label_ready_after=spec.label_ready_after,
    )
    shops = tuple(
        replace(
            shop,
            orders=spec.orders_by_shop[i] if i < len(spec.orders_by_shop) else shop.orders,
            returns=spec.returns_by_shop[i] if i < len(spec.returns_by_shop) else shop.returns,
        )
        for i, shop in enumerate(config.shops)
    )
    sim = Simulator(replace(config, shops=shops))
    await sim.start("127.0.0.1", 0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    def wait_for_eof() -> None:
        # The harness holds our stdin open; if it dies, we must not outlive it.
        sys.stdin.buffer.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait_for_eof, daemon=True).start()
    hello = {**sim.info(), "oc_client_id": config.oc_client_id}
    sys.stdout.buffer.write(orjson.dumps(hello) + b"\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await sim.stop()


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, required=True)
    ap.add_argument("--returns", type=int, default=10)
    ap.add_argument("--shops", type=int, default=1)
    ap.add_argument("--qps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--latency-ms", type=float, default=60.0)
    ap.add_argument("--jitter-ms", type=float, default=10.0)
    ap.add_argument("--label-ready-after", type=int, default=2)
    ap.add_argument("--orders-by-shop", type=_ints, default=())
    ap.add_argument("--returns-by-shop", type=_ints, default=())
    a = ap.parse_args()
    spec = SimSpec(
        a.orders,
        a.returns,
        a.shops,
        a.qps,
        a.seed,
        a.latency_ms,
        a.jitter_ms,
        a.label_ready_after,
        a.orders_by_shop,
        a.returns_by_shop,
    )
    with contextlib.suppress(KeyboardInterrupt):
        try:
            import uvloop  # the engine's CLI serves the simulator on uvloop too
        except ImportError:
            asyncio.run(_serve(spec))
        else:
            uvloop.run(_serve(spec))


# -- the harness side ----------------------------------------------------------------------


class SimProcess:
    """``async with SimProcess(spec) as sim``: a running simulator and its control calls."""

    def __init__(self, spec: SimSpec) -> None:
        self.spec = spec
        self.info: dict[str, Any] = {}
        self._proc: asyncio.subprocess.Process | None = None
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> SimProcess:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.simproc",
            *self.spec.argv(),
            cwd=REPO,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self._proc.stdout is not None
        line = await self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the simulator process exited before it was ready")
        self.info = orjson.loads(line)
        self._http = aiohttp.ClientSession(base_url=self.info["root_url"])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.close()
        if self._proc is None or self._proc.returncode is not None:
            return
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        try:
            await asyncio.wait_for(self._proc.wait(), 10)
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def cpu_s(self) -> float:
        """CPU seconds the simulator process has used so far (to show it was not the limit)."""
        t = psutil.Process(self.pid).cpu_times()
        return float(t.user + t.system)

    async def _get(self, path: str, **params: str) -> Any:
        assert self._http is not None
        async with self._http.get(path, params=params) as resp:
            resp.raise_for_status()
            return orjson.loads(await resp.read())

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        assert self._http is not None
        async with self._http.post(path, data=orjson.dumps(body)) as resp:
            resp.raise_for_status()
            return orjson.loads(await resp.read())

    async def app_stats(self) -> dict[str, Any]:
        """The one app's counters, arrival timestamps included (epoch seconds)."""
        stats = await self._get("/_sim/stats")
        apps: dict[str, Any] = stats["apps"]
        return next(iter(apps.values()))

    async def reset_stats(self) -> None:
        await self._post("/_sim/reset-stats", {})

    async def mutate(self, shop: str, **counts: int) -> dict[str, Any]:
        result: dict[str, Any] = await self._post("/_sim/mutate", {"shop": shop, **counts})
        return result

    async def truth(self, kind: str, shop: str | None = None) -> Any:
        return await self._get(f"/_sim/truth/{kind}", **({"shop": shop} if shop else {}))

    async def return_status(self, shop: str, sn: str, status: int) -> dict[str, Any]:
        result: dict[str, Any] = await self._post(
            "/_sim/return-status", {"shop": shop, "sn": sn, "status": status}
        )
        return result

    async def open_rma(self, shop: str, sn: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._post("/_sim/rma", {"shop": shop, "sn": sn})
        return result

    async def configure_webhooks(self, **knobs: Any) -> dict[str, Any]:
        """Event delivery (engine/sim/control.py ``/_sim/webhooks``): url, rates, seed."""
        result: dict[str, Any] = await self._post("/_sim/webhooks", knobs)
        return result

    async def webhook_counts(self) -> dict[str, int]:
        result: dict[str, int] = await self._get("/_sim/webhooks")
        return result


if __name__ == "__main__":
    main()
