"""The hostile network between the engine and the simulated services: latency and faults."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Iterable

from aiohttp import web

from engine.sim.config import ALL_FAULT_KINDS, SimConfig

STORM_S = 1.0
_BAD_GATEWAY = (
    "<html><head><title>502 Bad Gateway</title></head>"
    "<body><center><h1>502 Bad Gateway</h1></center></body></html>"
)


class Network:
    def __init__(self, config: SimConfig, rng: random.Random) -> None:
        self.rng = rng
        self.latency_s = config.latency_ms / 1000
        self.jitter_s = config.jitter_ms / 1000
        self.slow_s = config.slow_s
        self.drift_rate = config.drift_rate
        self.fault_rate = 0.0
        self.fault_kinds: tuple[str, ...] = ()
        self.fault_after_apply_rate = config.fault_after_apply_rate
        self.set_faults(config.fault_rate, config.fault_kinds)
        self._storm_until: dict[str, float] = {}
        # hold(): requests wait at arrival until release(), so a test can have a pass in
        # flight (and know it is) at the moment it signals the engine.
        self._released = asyncio.Event()
        self._released.set()
        self.held: Counter[str] = Counter()  # what is waiting now, by kind (a Temu API type)
        # Set: answers go out as usual. Cleared (hold_answers): every answer waits until it
        # is set again, then all leave at once (a Temu that stalls, then catches up).
        self._answers = asyncio.Event()
        self._answers.set()
        self.answers_held = 0

    def hold_answers(self) -> None:
        self._answers.clear()

    def release_answers(self) -> None:
        self._answers.set()

    async def answer_gate(self) -> None:
        if self._answers.is_set():
            return
        self.answers_held += 1
        try:
            await self._answers.wait()
        finally:
            self.answers_held -= 1

    def set_faults(
        self,
        rate: float,
        kinds: Iterable[str] | None = None,
        *,
        after_apply_rate: float | None = None,
    ) -> None:
        kinds = tuple(kinds) if kinds is not None else self.fault_kinds or ALL_FAULT_KINDS
        unknown = set(kinds) - set(ALL_FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
        if not 0.0 <= rate <= 1.0:
            raise ValueError("fault rate must be within [0, 1]")
        self.fault_rate = rate
        self.fault_kinds = kinds
        if after_apply_rate is not None:
            self.fault_after_apply_rate = after_apply_rate

    def set_latency(self, latency_ms: float, jitter_ms: float) -> None:
        self.latency_s = latency_ms / 1000
        self.jitter_s = jitter_ms / 1000

    def hold(self) -> None:
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    # -- latency: half the round trip before arrival (jittered), half after ---------------
    async def to_server(self, kind: str = "") -> None:
        if not self._released.is_set():
            self.held[kind] += 1
            try:
                await self._released.wait()
            finally:
                self.held[kind] -= 1
        half = self.latency_s / 2
        if half > 0 or self.jitter_s > 0:
            delay = self.rng.uniform(half - self.jitter_s, half + self.jitter_s)
            if delay > 0:
                await asyncio.sleep(delay)

    async def to_client(self) -> None:
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s / 2)

    # -- faults ---------------------------------------------------------------------------
    def pick(self, allowed: tuple[str, ...] = ALL_FAULT_KINDS) -> str | None:
        if self.fault_rate <= 0 or self.rng.random() >= self.fault_rate:
            return None
        kinds = [k for k in self.fault_kinds if k in allowed]
        return self.rng.choice(kinds) if kinds else None

    def drop_after_apply(self) -> bool:
        return self.fault_after_apply_rate > 0 and self.rng.random() < self.fault_after_apply_rate

    def drift_now(self) -> bool:
        return self.drift_rate > 0 and self.rng.random() < self.drift_rate

    def storming(self, app_key: str, now: float) -> bool:
        return self._storm_until.get(app_key, 0.0) > now

    def start_storm(self, app_key: str, now: float) -> None:
        self._storm_until[app_key] = now + STORM_S


def bad_gateway() -> web.Response:
    return web.Response(status=502, text=_BAD_GATEWAY, content_type="text/html")


def truncated(body: bytes) -> web.Response:
    return web.Response(body=body[: len(body) // 2], content_type="application/json")


def dropped(request: web.Request) -> web.Response:
    """Closes the connection without an answer; the returned response is never written."""
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=204)


def client_gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()
