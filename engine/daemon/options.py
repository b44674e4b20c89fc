"""Timings that are the daemon's business rather than the operator's (no config keys)."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.retry import Backoff

__all__ = ["DaemonOptions"]


@dataclass(frozen=True)
class DaemonOptions:
    """Timings that are the daemon's business rather than the operator's (no config keys)."""

    # Shutdown, worst case about 9 s, inside the 10 s the interface promises (systemd's
    # TimeoutStopSec is 20): the grace lets a page being written commit and covers the
    # reconciler's own 5 s stop grace (engine/daemon/reconciler_loop.py STOP_GRACE_S), after which
    # it cancels its pass itself; only then do we cancel what is left.
    grace_s: float = 6.0
    cancel_timeout_s: float = 1.0
    http_stop_timeout_s: float = 1.0
    close_timeout_s: float = 1.5
    # The monitor's round; also bounds how late /healthz notices a dead database.
    monitor_interval_s: float = 5.0
    probe_timeout_s: float = 3.0
    # COUNT(*) over the outbox grows with its history; a few times a minute is plenty.
    outbox_refresh_s: float = 30.0
    # A shop whose pass fails (revoked token, suspended app, Temu down) retries from the poll
    # interval up to this; other shops are unaffected.
    max_shop_backoff_s: float = 600.0
    startup_backoff: Backoff = field(default_factory=lambda: Backoff(base=1.0, cap=60.0))
    health_slack_s: float = 30.0
