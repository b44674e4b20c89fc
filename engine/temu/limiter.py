"""Per-app_key send pacing: strict spacing, an arrival-aware window, lanes, adaptive pace.

Temu counts requests per app_key in a window it does not document; the strictest reading is
"at most N in ANY sliding second", counted at ARRIVAL. Two gates hold every send:

1. Spacing. A bucket that allows a burst of N (``AsyncLimiter(N, 1)``) admits up to 2N-1 in one
   second, so sends are spaced by a bucket of three, ``AsyncLimiter(1 + slack, (1 + slack) /
   pace)`` with slack 2: on average ``pace``/s, never more than three back to back. The spare
   slots let a late event-loop timer (epoll rounds timeouts up), or sends the window held back,
   be caught up instead of pushing every later send back: the window opens at uneven times
   when arrivals jitter, and each send it holds late would otherwise delay the next ones too
   (measured at +-30 ms: a bucket of two +0.6 % goodput over one; three +0.5 % over two in
   virtual time, tests/unit/test_temu_limiter.py).
2. The window. Send n waits until at most N-1 earlier sends can arrive within the second
   before it does. Arrival is not observable, but its bound is: a send's forward delay exceeds
   the fastest one's by at most its round trip's excess over the fastest round trip. So send n
   may go at ``Nth_largest(granted[m] + excess[m] for m < n) + 1 s + margin``. With jitter
   beyond the spacing sends arrive out of order, so it is the N-th latest bound, not the latest
   bound among the sends N or more back (that one also waited for a late send already among
   the N-1 latest: 0.3 % of the limit at +-30 ms in virtual-time runs). A send may also beat
   the fastest round trip seen so far, by about the spread of round trips over their number
   (``_unseen_below_min``): a cold start's first samples are few. Spacing alone must absorb
   the whole jitter range (the spec: +-30 ms needs <= 18.9/s); the window only pays each
   send's actual delay, about half the range on average. Unanswered sends count
   ``excess_cap_s``.

The pace starts a little under the limit, backs off a step on each 4000004, and creeps back up
while calls succeed. The window alone already keeps send times within N per second; both gates
together keep arrivals there unless a forward delay outgrows its measured round trip.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import heapq
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiolimiter import AsyncLimiter

# The window gate absorbs jitter, so spacing only needs to stay clear of the limit itself.
DEFAULT_HEADROOM = 0.005
# Low enough to get under a real limit far below the configured one (an operator's typo, or
# another integration spending the same app's budget): a floor above it would keep the
# window full of refusals forever.
DEFAULT_FLOOR_RATIO = 0.1
# One step per overshoot: rejections of the sends already in flight report the same overshoot.
DEFAULT_DECREASE = 0.01
DEFAULT_COALESCE_S = 1.0
# Overshoots in consecutive seconds double the step, up to this: an isolated jitter-edge
# refusal costs 1 %, a limit well below the pace is found in seconds, not minutes.
DEFAULT_MAX_DECREASE = 0.25
# Per successful call, as a fraction of the ceiling: about 1% back per 100 successes.
DEFAULT_RECOVER_STEP = 0.0001
# Extra bucket capacity, in sends, for catching up late or window-held sends.
DEFAULT_SLACK = 2.0
# Timer and scheduling noise on top of the one-second window.
DEFAULT_MARGIN_S = 0.002
# Forward delay assumed for a send whose answer never came (lost, cancelled, timed out), and
# the most any answered send is charged: longer round trips are server work, not transit.
DEFAULT_EXCESS_CAP_S = 0.2
_RTT_SAMPLES = 256
# ln(1/p) for the chance p that a send beats the fastest round trip seen by more than
# _unseen_below_min allows: 3 makes it about 5 % (the margin on top); rarer in practice,
# since the window is not always tight (virtual-time runs: tests/unit/test_temu_limiter.py).
UNSEEN_FACTOR = 3.0


class Lane(enum.IntEnum):
    """Lower value is served first when several calls wait."""

    RECONCILER = 0
    # Re-reads asked for by a webhook event: a few calls that bring a change in seconds, so
    # they go ahead of polling and backfill (which would find the change much later).
    EVENTS = 1
    INCREMENTAL = 2
    BACKFILL = 3


@dataclass(slots=True)
class Send:
    """One granted send; hand it back to ``AppPacer.on_answer`` when the answer arrives."""

    granted_at: float  # event-loop time
    rtt: float | None = None
    answered: bool = False


class AppPacer:
    """One per app_key per process, shared by every shop and loop of that app.

    Not thread-safe and bound to the event loop that first uses it.
    """

    def __init__(
        self,
        qps: float,
        *,
        headroom: float = DEFAULT_HEADROOM,
        floor_ratio: float = DEFAULT_FLOOR_RATIO,
        decrease: float = DEFAULT_DECREASE,
        max_decrease: float = DEFAULT_MAX_DECREASE,
        recover_step: float = DEFAULT_RECOVER_STEP,
        coalesce_s: float = DEFAULT_COALESCE_S,
        slack: float = DEFAULT_SLACK,
        margin_s: float = DEFAULT_MARGIN_S,
        excess_cap_s: float = DEFAULT_EXCESS_CAP_S,
        clock: Callable[[], float] = time.monotonic,
        gate: Callable[[], None] | None = None,
    ) -> None:
        if qps <= 0:
            raise ValueError("qps must be > 0")
        if not 0 < headroom < 1:
            raise ValueError("headroom must be > 0 and < 1")
        if not 0 < floor_ratio <= 1 - headroom:
            raise ValueError("floor_ratio must be > 0 and <= 1 - headroom")
        self.qps = qps
        self.window_limit = max(1, math.floor(qps))
        self.ceiling = qps * (1 - headroom)
        self.floor = qps * floor_ratio
        self.decrease = decrease
        self.max_decrease = max(decrease, max_decrease)
        self._step = decrease
        self.recover_per_success = recover_step * self.ceiling
        self.coalesce_s = coalesce_s
        self.slack = slack
        self.margin_s = margin_s
        self.excess_cap_s = excess_cap_s
        self._clock = clock
        self._pace = self.ceiling
        self._last_slowdown: float | None = None
        self.sent = 0
        self.slowdowns = 0

        self._limiter = self._new_limiter(self._pace)
        self._limiter_pace = self._pace
        # Enough history to look past the N-1 newest sends at everything within the window.
        self._sends: collections.deque[Send] = collections.deque(maxlen=2 * self.window_limit + 8)
        self._rtts: collections.deque[float] = collections.deque(maxlen=_RTT_SAMPLES)
        self._rtt_min: float | None = None
        self._unseen = 0.0
        self._waiters: list[tuple[int, int, asyncio.Future[Send]]] = []
        self._order = itertools.count()
        self._dispatcher: asyncio.Task[None] | None = None
        # From a daemon sharing the database with others: raises when this process no
        # longer holds the app's lease. Checked after the wait, right before the send, since
        # the lease can be lost while a call is queued here.
        self.gate = gate

    @property
    def pace(self) -> float:
        """Current allowed sends per second (the spacing gate)."""
        return self._pace

    @property
    def rtt_min(self) -> float | None:
        """Fastest recent round trip, seconds (None before the first answer)."""
        return self._rtt_min

    @property
    def waiting(self) -> int:
        return sum(1 for _, _, fut in self._waiters if not fut.done())

    async def acquire(self, lane: Lane = Lane.INCREMENTAL) -> Send:
        """Returns when this call may be sent."""
        send = await self._acquire(lane)
        if self.gate is not None:
            self.gate()
        return send

    async def _acquire(self, lane: Lane) -> Send:
        loop = asyncio.get_running_loop()
        if (
            self._dispatcher is None
            and not self._waiters
            and loop.time() >= self._window_opens()
            and self._limiter.has_capacity()
        ):
            # Nobody queued and both gates open: no suspension, no task switch.
            await self._limiter.acquire()
            return await self._grant(loop)
        fut: asyncio.Future[Send] = loop.create_future()
        heapq.heappush(self._waiters, (int(lane), next(self._order), fut))
        if self._dispatcher is None:
            self._dispatcher = asyncio.create_task(self._dispatch(), name="temu-pacer")
        # A cancelled waiter leaves a cancelled future that the dispatcher skips.
        return await fut

    def on_answer(self, send: Send, *, answered: bool = True) -> None:
        """The HTTP answer for ``send`` arrived (``answered=False``: it never will)."""
        if send.answered or not answered:
            return
        send.answered = True
        rtt = asyncio.get_running_loop().time() - send.granted_at
        send.rtt = rtt
        self._rtts.append(rtt)
        self._rtt_min = min(self._rtts)
        self._unseen = self._unseen_below_min()

    def _unseen_below_min(self) -> float:
        """How much faster than the fastest round trip seen a send may still reach Temu.

        The window takes the fastest round trip for the next send's own forward delay, but
        the fastest seen is only the least of the samples so far: from n samples spread over
        a range r, the true least lies about r/n lower, and below r*ln(1/p)/n with
        probability 1-p. Twenty samples at the start (arrivals +-30 ms, r = 60 ms) may leave
        it ~10 ms off, enough for a 21st arrival in the first seconds; 256 leave ~1 ms. The
        range is read at the 90th percentile: one stalled answer must not widen it.
        """
        n = len(self._rtts)
        if n < 2:
            return 0.0
        ordered = sorted(self._rtts)
        spread = ordered[int(0.9 * (n - 1))] - ordered[0]
        return UNSEEN_FACTOR * spread / n

    def on_rate_limited(self) -> None:
        now = self._clock()
        last = self._last_slowdown
        if last is not None and now - last < self.coalesce_s:
            return
        # An overshoot in the second after the last one: the step was not enough.
        streak = last is not None and now - last < 2 * self.coalesce_s
        self._step = min(self.max_decrease, 2 * self._step) if streak else self.decrease
        self._last_slowdown = now
        self.slowdowns += 1
        self._pace = max(self.floor, self._pace * (1 - self._step))

    def on_success(self) -> None:
        if self._pace < self.ceiling:
            self._pace = min(self.ceiling, self._pace + self.recover_per_success)

    def _window_opens(self) -> float:
        """Loop time from which the next send cannot make N+1 arrivals in one second.

        The next send arrives no earlier than its grant plus the fastest forward delay, so it
        is safe once at most N-1 earlier sends can arrive later than one second before that:
        one second after the N-th latest bound on the earlier sends' arrivals. Not after the
        latest bound of every send at least N back: when the jitter exceeds the spacing,
        arrivals reorder, and a late send N+1 back already sits among the N-1 latest (the
        window then waits for its neighbour, which arrived earlier). Later sends check this
        one in turn, so while the bounds hold no window ever holds more than N (the proof:
        take the window's latest-granted send; at most N-1 earlier ones arrive after the
        second before it).
        """
        # Slowed down, the window holds no more sends than the pace allows: the bucket's slack
        # must not put the limit's worth of sends into one second after a refusal said the
        # real limit is lower than the configured one.
        n = min(self.window_limit, max(1, math.ceil(self._pace)))
        if len(self._sends) < n:
            return 0.0
        bounds = heapq.nlargest(n, (s.granted_at + self._excess(s) for s in self._sends))
        return bounds[-1] + 1.0 + self.margin_s + self._unseen

    def _excess(self, send: Send) -> float:
        if send.rtt is None or self._rtt_min is None:
            return self.excess_cap_s
        return min(self.excess_cap_s, send.rtt - self._rtt_min)

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._prune():
                delay = self._window_opens() - loop.time()
                if delay > 0:
                    # Re-evaluated after the sleep: a waiter may have gone, an answer come in.
                    await asyncio.sleep(delay)
                    continue
                await self._limiter.acquire()
                # The lane is chosen when the slot opens, not when the wait began, so a call
                # that arrived during the wait still overtakes queued lower-lane calls.
                if self._prune():
                    _, _, fut = heapq.heappop(self._waiters)
                    send = await self._grant(loop)
                    if not fut.done():
                        fut.set_result(send)
                # A slot with no taker is dropped, not banked: banking would allow a burst.
        finally:
            self._dispatcher = None
            if self._waiters:
                # Only reachable if the dispatcher died (loop shutdown): never strand waiters.
                for _, _, fut in self._waiters:
                    if not fut.done():
                        fut.set_exception(RuntimeError("temu pacer stopped"))
                self._waiters.clear()

    def _prune(self) -> bool:
        """Drops cancelled waiters from the top; True while someone still waits."""
        while self._waiters and self._waiters[0][2].done():
            heapq.heappop(self._waiters)
        return bool(self._waiters)

    async def _grant(self, loop: asyncio.AbstractEventLoop) -> Send:
        send = Send(loop.time())
        self._sends.append(send)
        self.sent += 1
        pace = self._pace
        # Small upward changes are batched to avoid churning limiters on every success.
        if pace < self._limiter_pace or pace > self._limiter_pace * 1.001:
            # A fresh bucket, filled at the moment of this grant, spaces the NEXT send by the
            # new pace measured from this one: no gap is skipped and none is granted early.
            limiter = self._new_limiter(pace)
            await limiter.acquire()  # an empty bucket: returns without suspending
            self._limiter = limiter
            self._limiter_pace = pace
        return send

    def _new_limiter(self, pace: float) -> AsyncLimiter:
        capacity = 1 + self.slack
        return AsyncLimiter(capacity, capacity / pace)
