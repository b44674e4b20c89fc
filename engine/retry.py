"""Every backoff and wait-unless-stopping policy of the engine, in one place.

The formulas (n = consecutive failures, 1 for the first; rng() uniform in [0, 1)):

- ``capped_exponential(base, cap, n)`` = min(cap, base * 2**(n-1)); the exponent is bounded so
  months of failures never overflow.
- ``full_jitter(base, cap, n)`` = rng() * capped_exponential(base, cap, n): callers that failed
  together (one Temu or OC hiccup seen by many tasks) do not retry together. Used by the Temu
  transport and the Orange Connex client for retries inside one call.
- ``Backoff(base, cap, factor, jitter).delay(n)`` = min(cap, base * factor**(n-1)) *
  (1 - jitter * rng()): the daemon's loops and supervisor; a little jitter below the nominal
  delay keeps loops that failed together (a database restart) apart.
- ``exponential_backoff(base, cap)(attempts)`` = min(cap, base * 2**(attempts-1)), no jitter:
  the reconciler's outbox retries (the outbox row holds the time, a restart keeps it).
- ``poll_schedule(base, eager, cap)(polls)`` = 0 for the first ``eager`` polls (the next passes),
  then min(cap, max(base, 1) * 2**(polls - eager)): waiting for an Orange Connex label.
- ``rma_wait_schedule(first, cap)(polls)`` = min(cap, first * 2**polls): looking again for an
  RMA that OC does not have yet (merchants open them minutes or hours after Temu's event).

- ``failing_stream_delay(poll_s, cap)(failures)`` = 0 for the first two failed passes in a row
  (the next polls retry), then min(cap, max(poll_s, 60) * 2**(failures - 3)): a sync stream
  failing pass after pass for the same reason (kept in ``sync_state.retry_after``, so a restart
  or a one-shot ``run --once`` honours it too).

- ``logistics_reread_delay(attempts)`` = 0 for the first three reads again (the next passes),
  then min(1 day, 5 min * 2**(attempts - 3)): reverse logistics Temu could not give yet
  (130010004 or a failed call), read again until it answers.

``sleep_or_stop`` / ``sleep_rest_of``: the one way a loop waits, so a SIGTERM never waits out
a sleep.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "Backoff",
    "capped_exponential",
    "exponential_backoff",
    "failing_stream_delay",
    "full_jitter",
    "logistics_reread_delay",
    "poll_schedule",
    "rma_wait_schedule",
    "sleep_or_stop",
    "sleep_rest_of",
]

# 2**64 seconds is already forever: a larger exponent only risks an OverflowError.
_MAX_EXPONENT = 64


def capped_exponential(base: float, cap: float, failures: int, factor: float = 2.0) -> float:
    exponent = min(max(0, failures - 1), _MAX_EXPONENT)
    return float(min(cap, base * factor**exponent))


def full_jitter(
    base: float, cap: float, failures: int, rng: Callable[[], float] = random.random
) -> float:
    return rng() * capped_exponential(base, cap, failures)


@dataclass(frozen=True)
class Backoff:
    """Exponential delays: ``base``, ``base*factor``, ... capped at ``cap``, with jitter so
    loops that failed together (a database restart) do not retry in lockstep."""

    base: float
    cap: float
    factor: float = 2.0
    jitter: float = 0.1

    def delay(self, failures: int, rng: Callable[[], float] = random.random) -> float:
        """Delay after the ``failures``-th consecutive failure (1 = the first)."""
        capped = capped_exponential(self.base, self.cap, failures, self.factor)
        return capped * (1 - self.jitter * rng())


def exponential_backoff(base_s: float, cap_s: float) -> Callable[[int], float]:
    """Delay before try ``attempts + 1``: base, 2*base, 4*base, ... up to cap."""

    def delay(attempts: int) -> float:
        return capped_exponential(base_s, cap_s, attempts)

    return delay


def poll_schedule(base_s: float, *, eager: int, cap_s: float) -> Callable[[int], float]:
    """The first ``eager`` looks come at the next passes, then the wait doubles up to cap."""

    def delay(polls: int) -> float:
        if polls < eager:
            return 0.0
        return float(min(cap_s, max(base_s, 1.0) * 2 ** min(polls - eager, _MAX_EXPONENT)))

    return delay


FAILING_STREAM_EAGER = 2  # failed passes retried at the next polls before backing off


def failing_stream_delay(poll_s: float, cap_s: float = 3600.0) -> Callable[[int], float]:
    """Seconds a stream that failed ``failures`` passes in a row is skipped."""
    # failures counts from 1: poll_schedule's "eager" polls are 0 .. EAGER, 0 never comes.
    schedule = poll_schedule(max(poll_s, 60.0), eager=FAILING_STREAM_EAGER + 1, cap_s=cap_s)

    def delay(failures: int) -> float:
        return schedule(failures)

    return delay


_LOGISTICS_SCHEDULE = poll_schedule(300.0, eager=3, cap_s=86400.0)


def logistics_reread_delay(attempts: int) -> float:
    """Seconds until reverse logistics are read again after ``attempts`` reads again failed."""
    return _LOGISTICS_SCHEDULE(attempts)


def rma_wait_schedule(first_s: float, cap_s: float) -> Callable[[int], float]:
    """first, 2*first, 4*first, ... up to cap (polls counts from 0)."""

    def delay(polls: int) -> float:
        return float(min(cap_s, first_s * 2 ** min(polls, _MAX_EXPONENT)))

    return delay


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleeps ``seconds`` unless ``stop`` is set first; True when stopping."""
    if stop.is_set():
        return True
    if seconds <= 0:
        return False
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


async def sleep_rest_of(
    stop: asyncio.Event,
    interval: float,
    started: float,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """The drift-free tick (arq's): the next round starts ``interval`` after this one started,
    not after it ended, so a 30 s poll stays a 30 s poll however long the pass took. A pass
    longer than the interval is followed at once by the next. True when stopping."""
    return await sleep_or_stop(stop, interval - (clock() - started))


async def sleep_or_any(seconds: float, *events: asyncio.Event) -> None:
    """Sleeps ``seconds`` or until any of ``events`` is set."""
    if any(e.is_set() for e in events):
        return
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
