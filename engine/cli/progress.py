"""A one-line progress bar for backfills on a terminal (silent elsewhere: logs suffice)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from engine.sync.windows import Window


def _fmt_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class BackfillProgress:
    """Tracks every (shop, stream) walk over the same ``[start, end]`` range."""

    def __init__(self, start: int, end: int, pairs: int, stream: TextIO | None = None) -> None:
        self._start = start
        self._span = max(1, end - start + 1)
        self._pairs = max(1, pairs)
        self._pos: dict[tuple[str, str], int] = {}
        self._windows = 0
        self._records = 0
        self._t0 = time.monotonic()
        self._out = stream if stream is not None else sys.stderr
        self._enabled = self._out.isatty()
        self._last_draw = 0.0

    def __call__(self, shop: str, stream: str, window: Window, records: int) -> None:
        self._pos[(shop, stream)] = window.end
        self._windows += 1
        self._records += records
        now = time.monotonic()
        if self._enabled and now - self._last_draw > 0.2:
            self._last_draw = now
            self._draw(now)

    def fraction(self) -> float:
        done = sum(min(self._span, p - self._start + 1) for p in self._pos.values())
        return min(1.0, done / (self._span * self._pairs))

    def _draw(self, now: float) -> None:
        frac = self.fraction()
        elapsed = now - self._t0
        rate = self._records / elapsed if elapsed > 0 else 0.0
        eta = elapsed * (1 - frac) / frac if frac > 0 else 0.0
        width = 24
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        self._out.write(
            f"\r[{bar}] {frac * 100:5.1f}%  windows {self._windows}  records "
            f"{self._records:,}  {rate:,.0f}/s  ETA {_fmt_duration(eta)} "
        )
        self._out.flush()

    def close(self) -> None:
        if self._enabled:
            self._draw(time.monotonic())
            self._out.write("\n")
            self._out.flush()
