"""Rate-limit pacing against the simulator: goodput, rejections, busiest second.

    python bench/pacing.py [--duration 30] [--callers 32] [--jitters 10,30]

For each jitter (latency 60 ms, strict sliding-window limit of 20/s) the simulator runs in its
own process (``bench/pacing.py serve``) so it shares neither CPU time nor the GIL with the
client. Many concurrent callers page through ``bg.order.list.v2.get`` via ``TemuShopApi`` for
``--duration`` seconds, first with the engine's ``AppPacer``, then with the bursting
``AsyncLimiter(20, 1)`` as a baseline. The simulator counts what it accepted and rejected at
arrival; those counts are the figures reported. Results go to bench/results/pacing.json.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import platform
import random
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import aiohttp
import orjson
from aiolimiter import AsyncLimiter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import AppSettings, Secret
from engine.temu.api import TemuShopApi
from engine.temu.errors import TemuError
from engine.temu.limiter import AppPacer, Lane, Send
from engine.temu.stats import CallStats
from engine.temu.transport import TemuTransport

SCRIPT = str(Path(__file__).resolve())
RESULTS = Path(__file__).resolve().parent / "results" / "pacing.json"
QPS = 20
LATENCY_MS = 60.0
PACER_OPTIONS: dict[str, float] = {}  # overrides for tuning runs (--pacer key=value)
TARGETS = {10.0: (19.6, 0.0), 30.0: (19.0, 1.0)}  # jitter -> (accepted/s >=, rejected % <=)


# -- the simulator process ---------------------------------------------------------------


async def serve(latency_ms: float, jitter_ms: float, strict: bool) -> None:
    """Runs the simulator; answers ``stats`` / ``reset`` lines on stdin until EOF."""
    from engine.sim.config import SimConfig
    from engine.sim.server import Simulator

    config = SimConfig.default(
        orders=2000,
        returns=10,
        shops=1,
        qps=QPS,
        latency_ms=latency_ms,
        jitter_ms=jitter_ms,
        strict_window=strict,
    )
    sim = Simulator(config)
    await sim.start("127.0.0.1", 0)
    info = sim.info()
    shop = info["shops"][0]
    app = info["apps"][0]
    hello = {
        "temu_url": info["temu_url"],
        "app_key": app["app_key"],
        "app_secret": app["app_secret"],
        "access_token": shop["access_token"],
        "data_range": info["data_range"],
    }
    sys.stdout.write(orjson.dumps(hello).decode() + "\n")
    sys.stdout.flush()
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()

    def read_stdin() -> None:
        # A thread, so the simulator's event loop never blocks on the pipe.
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line.strip())
        loop.call_soon_threadsafe(lines.put_nowait, "")

    threading.Thread(target=read_stdin, daemon=True).start()
    try:
        while command := await lines.get():
            if command == "stats":
                out: Any = sim.stats(arrivals=True)["apps"][app["app_key"]]
            elif command == "reset":
                sim.reset_stats()
                out = {"reset": True}
            else:
                out = {"error": f"unknown command {command!r}"}
            sys.stdout.write(orjson.dumps(out).decode() + "\n")
            sys.stdout.flush()
    finally:
        await sim.stop()


class SimProcess:
    def __init__(self, jitter_ms: float, strict: bool) -> None:
        self.jitter_ms = jitter_ms
        self.strict = strict
        self.proc: asyncio.subprocess.Process | None = None
        self.hello: dict[str, Any] = {}

    async def __aenter__(self) -> SimProcess:
        args = [str(LATENCY_MS), str(self.jitter_ms), "strict" if self.strict else "calendar"]
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            SCRIPT,
            "serve",
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,
        )
        self.hello = await self._read()
        return self

    async def _read(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError("simulator process exited")
        result: dict[str, Any] = orjson.loads(line)
        return result

    async def command(self, name: str) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(name.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self._read()

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


# -- the client ----------------------------------------------------------------------------


class BurstPacer(AppPacer):
    """The spec's counter-example: ``AsyncLimiter(qps, 1)``, a bucket that starts empty."""

    def __init__(self, qps: float) -> None:
        super().__init__(qps)
        self._burst = AsyncLimiter(qps, 1)

    @property
    def pace(self) -> float:
        return self.qps

    async def acquire(self, lane: Lane = Lane.INCREMENTAL) -> Send:
        await self._burst.acquire()
        self.sent += 1
        return Send(asyncio.get_running_loop().time())

    def on_answer(self, send: Send, *, answered: bool = True) -> None:
        pass

    def on_rate_limited(self) -> None:
        pass

    def on_success(self) -> None:
        pass


class ObservedPacer(AppPacer):
    """The engine's pacer, keeping every round trip for the report."""

    def __init__(self, qps: float, **options: float) -> None:
        super().__init__(qps, **options)  # type: ignore[arg-type]
        self.rtts: list[float] = []

    def on_answer(self, send: Send, *, answered: bool = True) -> None:
        super().on_answer(send, answered=answered)
        if send.rtt is not None and answered:
            self.rtts.append(send.rtt)


def percentile_ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2) if values else 0.0


def busiest_second(times: list[float]) -> int:
    times = sorted(times)
    return max((bisect.bisect_right(times, t + 1.0) - i for i, t in enumerate(times)), default=0)


async def drive(
    sim: SimProcess, strategy: str, duration_s: float, callers: int, seed: int
) -> dict[str, Any]:
    hello = sim.hello
    app = AppSettings(
        app_key=hello["app_key"],
        app_secret=Secret(hello["app_secret"]),
        base_url=hello["temu_url"],
        qps=QPS,
        max_attempts=8,
        timeout_s=10,
    )
    pacer = ObservedPacer(QPS, **PACER_OPTIONS) if strategy == "adaptive" else BurstPacer(QPS)
    stats = CallStats()
    start_ts = hello["data_range"]["start_ts"]
    end_ts = hello["data_range"]["end_ts"]
    rng = random.Random(seed)
    failed: dict[str, int] = {}
    paces: list[float] = []
    await sim.command("reset")
    connector = aiohttp.TCPConnector(limit=callers)
    async with aiohttp.ClientSession(connector=connector) as session:
        transport = TemuTransport(session, app, pacer, stats)
        api = TemuShopApi(transport, "bench", hello["access_token"])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + duration_s

        async def caller() -> None:
            while loop.time() < deadline:
                try:
                    await api.list_orders(
                        page_number=rng.randint(1, 20),
                        page_size=100,
                        update_start=start_ts,
                        update_end=end_ts,
                        lane=Lane.BACKFILL,
                    )
                except TemuError as exc:
                    name = type(exc).__name__
                    failed[name] = failed.get(name, 0) + 1

        async def sample_pace() -> None:
            while loop.time() < deadline:
                paces.append(pacer.pace)
                await asyncio.sleep(1)

        started = time.time()
        await asyncio.gather(sample_pace(), *(caller() for _ in range(callers)))
        ended = time.time()
    server = await sim.command("stats")
    accepted_at = [t for t in server["accepted_at"] if started <= t <= ended + 1]
    span = (max(accepted_at) - min(accepted_at)) if len(accepted_at) > 1 else 0.0
    accepted = server["accepted"]
    rejected = server["rejected_rate_limit"] + server["rejected_storm"]
    total = accepted + rejected
    return {
        "strategy": strategy,
        "accepted": accepted,
        "accepted_per_s": round((len(accepted_at) - 1) / span, 3) if span else 0.0,
        "rejected": rejected,
        "rejected_pct": round(100 * rejected / total, 3) if total else 0.0,
        "max_accepted_in_1s": server["max_accepted_in_1s"],
        "max_accepted_in_1s_recomputed": busiest_second(accepted_at),
        "other_server_errors": server["other_errors"],
        "final_pace": round(pacer.pace, 4),
        "min_pace": round(min(paces, default=pacer.pace), 4),
        "slowdowns": pacer.slowdowns,
        "rtt_ms": {
            q: percentile_ms(pacer.rtts, p)
            for q, p in (("min", 0.0), ("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
        }
        if isinstance(pacer, ObservedPacer)
        else None,
        "client": {
            "requests": stats.requests,
            "rate_limited": stats.rate_limited,
            "retries": stats.retries,
            "failed_calls": failed,
        },
        "wall_s": round(ended - started, 2),
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    runs = []
    for jitter in args.jitters:
        async with SimProcess(jitter, strict=True) as sim:
            for strategy in ("adaptive", "burst_baseline"):
                result = await drive(sim, strategy, args.duration, args.callers, args.seed)
                result = {
                    "latency_ms": LATENCY_MS,
                    "jitter_ms": jitter,
                    "strict_window": True,
                    **result,
                }
                if strategy == "adaptive" and jitter in TARGETS:
                    want_rate, max_rej = TARGETS[jitter]
                    result["target"] = {
                        "accepted_per_s_min": want_rate,
                        "rejected_pct_max": max_rej,
                    }
                    result["target_met"] = (
                        result["accepted_per_s"] >= want_rate and result["rejected_pct"] <= max_rej
                    )
                runs.append(result)
                print(_line(result), flush=True)
    probe = AppPacer(QPS, **cast(dict[str, Any], PACER_OPTIONS))
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "host": {"python": platform.python_version(), "machine": platform.machine()},
        "qps_limit": QPS,
        "duration_s": args.duration,
        "callers": args.callers,
        "pacer": {
            "ceiling": round(probe.ceiling, 4),
            "floor": round(probe.floor, 4),
            "decrease": probe.decrease,
            "recover_per_success": round(probe.recover_per_success, 6),
            "coalesce_s": probe.coalesce_s,
            "slack": probe.slack,
            "margin_s": probe.margin_s,
            "excess_cap_s": probe.excess_cap_s,
        },
        "runs": runs,
    }


def _line(r: dict[str, Any]) -> str:
    return (
        f"jitter ±{r['jitter_ms']:g} ms {r['strategy']:>15}: {r['accepted_per_s']:.3f} accepted/s, "
        f"{r['rejected']} rejected ({r['rejected_pct']:.2f}%), busiest second "
        f"{r['max_accepted_in_1s']}, final pace {r['final_pace']:.3f}"
        + (f", target met: {r['target_met']}" if "target_met" in r else "")
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        latency, jitter, window = sys.argv[2:5]
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(float(latency), float(jitter), window == "strict"))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--jitters", default="10,30", help="comma-separated, in ms")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--pacer", action="append", default=[], help="AppPacer option key=value")
    args = parser.parse_args()
    for option in args.pacer:
        key, _, value = option.partition("=")
        PACER_OPTIONS[key] = float(value)
    args.jitters = [float(j) for j in args.jitters.split(",")]
    report = asyncio.run(bench(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
