"""Time windows over a record's update time (closed intervals, whole seconds).

Temu's list APIs take a closed ``[start, end]`` interval in seconds. The walker cuts a range into
windows whose record count fits a comfortable number of pages: big enough that the last,
partial page of each window wastes little of the rate limit, small enough that paging one
window is quick (less time for drift) and a crash re-reads little.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    start: int  # inclusive, Unix seconds
    end: int  # inclusive, Unix seconds

    @property
    def span(self) -> int:
        return self.end - self.start + 1

    def halves(self) -> tuple[Window, Window]:
        mid = self.start + self.span // 2 - 1
        return Window(self.start, mid), Window(mid + 1, self.end)


@dataclass
class SpanPlanner:
    """Adapts the window span to the observed record density.

    ``target_items`` is what one window should hold; ``max_items`` is where a window is cut
    before paging it (its first page told us the total).
    """

    span: int
    target_items: int
    max_items: int
    min_span: int = 1
    max_span: int = 366 * 86400

    def next_window(self, start: int, end: int) -> Window:
        return Window(start, min(end, start + self.span - 1))

    def shrink_for(self, window: Window, total: int) -> Window:
        """The window is too full: cut it to about ``target_items`` records."""
        span = max(self.min_span, window.span * self.target_items // max(total, 1))
        span = min(span, max(self.min_span, window.span // 2))
        self.span = span
        return Window(window.start, window.start + span - 1)

    def observe(self, window: Window, total: int) -> None:
        """After a window is read, size the next one from its density (growth capped at 8x)."""
        if total <= 0:
            grown = window.span * 8
        else:
            grown = window.span * self.target_items // total
            grown = min(grown, window.span * 8)
        self.span = max(self.min_span, min(self.max_span, grown))

    def too_full(self, total: int) -> bool:
        return total > self.max_items
