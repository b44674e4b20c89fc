"""What the daemon knows about its own health: per loop, when it last made progress and how it
is failing; whether the database answers. Serves /healthz (``HealthSource``) and systemd's
one-line ``STATUS=``.

Loops and the database probe write here; readers never touch the database, so /healthz stays
fast and answers even while Postgres is down (that is exactly when it matters).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.logs import redact

__all__ = ["HealthBoard", "LoopState"]


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class LoopState:
    name: str
    interval_s: float
    registered: float  # monotonic
    labels: dict[str, str]
    last_progress: float | None = None  # monotonic
    last_progress_wall: float | None = None
    failures: int = 0  # consecutive
    failing_since_wall: float | None = None
    last_error: str | None = None
    failing_since: float | None = None  # monotonic


class HealthBoard:
    """A loop is healthy while it made progress within ``factor * interval + slack_s`` (or,
    before its first progress, since it was registered: a first sync can take a while, but
    its cursor moving counts as progress), and while it is not failing pass after pass: a
    loop that failed ``streak`` times in a row over more than ``failing_grace_s`` fails the
    check even before it goes stale (a table lock or a stalled write shows within about a
    minute, not three intervals). A single failure is reported as failing without failing the
    check: one timeout should not page anyone."""

    def __init__(
        self,
        *,
        factor: float = 3.0,
        slack_s: float = 30.0,
        failing_grace_s: float = 20.0,
        streak: int = 2,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._factor = factor
        self._slack = slack_s
        self._failing_grace = failing_grace_s
        self._streak = streak
        self._clock = clock
        self._wall = wall
        self._loops: dict[str, LoopState] = {}
        self._db_error: str | None = None
        self._db_down_since: float | None = None
        self._stopping = False
        # Extra sections of /healthz (e.g. which apps this daemon owns), read when asked.
        self._info: dict[str, Callable[[], Any]] = {}

    # -- writers --------------------------------------------------------------------------
    def register(self, name: str, interval_s: float, **labels: str) -> None:
        self._loops[name] = LoopState(name, interval_s, self._clock(), dict(labels))

    def add_info(self, key: str, source: Callable[[], Any]) -> None:
        self._info[key] = source

    def unregister(self, name: str) -> None:
        self._loops.pop(name, None)

    def progress(self, name: str) -> None:
        """The loop moved on (a cursor, a finished task): interface.md's /healthz is about
        progress, so a failure streak ends here, not only when a whole round succeeds (after
        an outage the reconciler's first round may take minutes of visible work)."""
        loop = self._loops[name]
        loop.last_progress = self._clock()
        loop.last_progress_wall = self._wall()
        loop.failures = 0
        loop.failing_since_wall = None
        loop.failing_since = None

    def succeeded(self, name: str) -> None:
        """A whole round went through: progress, and the failure streak is over."""
        self.progress(name)

    def failed(self, name: str, message: str, *, since: float | None = None) -> None:
        """``since``: when the failed attempt began (this board's clock), if earlier than now."""
        loop = self._loops[name]
        loop.failures += 1
        loop.last_error = redact(message)
        if loop.failing_since_wall is None:
            now = self._clock()
            began = now if since is None else min(since, now)
            loop.failing_since = began
            loop.failing_since_wall = self._wall() - (now - began)

    def database_ok(self) -> None:
        self._db_error = None
        self._db_down_since = None

    def database_down(self, message: str) -> None:
        self._db_error = message
        if self._db_down_since is None:
            self._db_down_since = self._wall()

    def stopping(self) -> None:
        self._stopping = True

    # -- readers --------------------------------------------------------------------------
    @property
    def database_up(self) -> bool:
        return self._db_error is None

    def names(self, kind: str | None = None) -> list[str]:
        return [n for n, s in self._loops.items() if kind is None or s.labels.get("kind") == kind]

    def loop(self, name: str) -> LoopState:
        return self._loops[name]

    def _stale_after(self, loop: LoopState) -> float:
        return self._factor * loop.interval_s + self._slack

    def _idle_s(self, loop: LoopState) -> float:
        since = loop.last_progress if loop.last_progress is not None else loop.registered
        return self._clock() - since

    def is_stale(self, name: str) -> bool:
        loop = self._loops[name]
        return self._idle_s(loop) > self._stale_after(loop)

    def idle_s(self, name: str) -> float:
        """Seconds since the loop's last progress (or registration)."""
        return self._idle_s(self._loops[name])

    def stale_after_s(self, name: str) -> float:
        return self._stale_after(self._loops[name])

    def _failing_too_long(self, loop: LoopState) -> bool:
        return (
            loop.failures >= self._streak
            and loop.failing_since is not None
            and self._clock() - loop.failing_since > self._failing_grace
        )

    def is_unhealthy(self, name: str) -> bool:
        loop = self._loops[name]
        return self.is_stale(name) or self._failing_too_long(loop)

    def _loop_details(self, loop: LoopState) -> dict[str, Any]:
        return {
            **loop.labels,
            "ok": not self.is_unhealthy(loop.name),
            "failing": loop.failures > 0,
            "last_progress": _iso(loop.last_progress_wall),
            "idle_s": round(self._idle_s(loop), 1),
            "stale_after_s": self._stale_after(loop),
            "failures": loop.failures,
            "failing_since": _iso(loop.failing_since_wall),
            "last_error": loop.last_error if loop.failures else None,
        }

    def _loop_reason(self, loop: LoopState) -> str:
        text = f"{loop.name}: no progress for {int(self._idle_s(loop))} s"
        if loop.failures:
            text += (
                f", failing since {_iso(loop.failing_since_wall)} "
                f"({loop.failures} in a row), last error: {loop.last_error}"
            )
        return text

    def health(self) -> tuple[bool, dict[str, Any]]:
        reasons: list[str] = []
        if self._stopping:
            reasons.append("shutting down")
        database: dict[str, Any] = {"ok": self._db_error is None}
        if self._db_error is not None:
            database |= {"error": self._db_error, "since": _iso(self._db_down_since)}
            reasons.append(
                f"database unavailable since {_iso(self._db_down_since)}: {self._db_error}"
            )
        loops = {name: self._loop_details(loop) for name, loop in self._loops.items()}
        reasons += [
            self._loop_reason(loop) for name, loop in self._loops.items() if self.is_unhealthy(name)
        ]
        details: dict[str, Any] = {"database": database, "loops": loops}
        details |= {key: source() for key, source in self._info.items()}
        degraded = [n for n, d in loops.items() if d["failing"] and d["ok"]]
        if degraded:
            details["failing"] = degraded
        if reasons:
            details["reason"] = "; ".join(reasons)
        return not reasons, details

    def status_line(self, shops: int, outbox: Mapping[str, Any] | None) -> str:
        """The one-line systemd STATUS, e.g. '2 shops, 4/4 streams ok, outbox 3 pending,
        0 dead'."""
        streams = [loop for loop in self._loops.values() if loop.labels.get("kind") == "sync"]
        bad = [
            f"{loop.labels.get('shop')}/{loop.labels.get('stream')}"
            for loop in streams
            if loop.failures > 0 or self.is_stale(loop.name)
        ]
        parts = [f"{shops} shops", f"{len(streams) - len(bad)}/{len(streams)} streams ok"]
        if bad:
            parts[-1] += f" (failing: {', '.join(bad)})"
        if outbox is not None:
            parts.append(f"outbox {outbox.get('pending', 0)} pending, {outbox.get('dead', 0)} dead")
        if self._db_error is not None:
            parts.append(f"database down since {_iso(self._db_down_since)}")
        others = [
            n
            for n, loop in self._loops.items()
            if loop.labels.get("kind") != "sync" and (loop.failures or self.is_stale(n))
        ]
        if others:
            parts.append(f"failing: {', '.join(others)}")
        return ", ".join(parts)
