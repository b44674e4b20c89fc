"""Per-app request counting at arrival: the gateway's rate limit as temu-api.md assumes it."""

from __future__ import annotations

from collections import deque


class SlidingWindow:
    """At most ``limit`` accepted requests in ANY window (t - 1 s, t].

    Rejected requests are not remembered (they do not use up the window) unless
    ``count_refused``: then every arrival counts, refused ones included, so a client that keeps
    sending into a full window keeps it full (temu-api.md does not say which; this is the less
    convenient reading). With ``strict`` False the window is the calendar second instead, which
    admits up to 2 * limit across a boundary (what a naive gateway does; useful to show why
    clients must not rely on it).
    """

    def __init__(self, limit: int, *, strict: bool = True, count_refused: bool = False) -> None:
        self.limit = limit
        self.strict = strict
        self.count_refused = count_refused
        self._times: deque[float] = deque()
        self._second = -1
        self._in_second = 0

    def try_accept(self, now: float) -> int | None:
        """The number of accepted requests in the window ending now, or None when rejected."""
        if not self.strict:
            second = int(now)
            if second != self._second:
                self._second, self._in_second = second, 0
            self._in_second += 1
            if self._in_second > self.limit:
                if not self.count_refused:
                    self._in_second -= 1
                return None
            return self._in_second
        times = self._times
        horizon = now - 1.0
        while times and times[0] <= horizon:
            times.popleft()
        if len(times) >= self.limit:
            if self.count_refused:
                times.append(now)
            return None
        times.append(now)
        return len(times)
