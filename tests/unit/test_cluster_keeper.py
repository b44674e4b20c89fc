"""Fair-share math, lease timing and the [cluster] config keys."""

from __future__ import annotations

import pytest

from engine.cluster.holdings import ClusterTiming
from engine.cluster.identity import owner_pid
from engine.cluster.keeper import fair_share
from engine.config import ConfigError, parse_config


@pytest.mark.parametrize(
    ("apps", "live", "share"),
    [(6, 1, 6), (6, 2, 3), (6, 3, 2), (6, 4, 2), (7, 3, 3), (2, 5, 1), (0, 3, 0), (6, 0, 6)],
)
def test_fair_share_is_the_ceiling(apps: int, live: int, share: int) -> None:
    assert fair_share(apps, live) == share
    # However the daemons are counted, their shares together cover every app.
    assert fair_share(apps, live) * max(1, live) >= apps


@pytest.mark.parametrize("lease_s", [3.0, 5.0, 30.0, 120.0])
def test_timing_keeps_a_gap_of_more_than_the_rate_window(lease_s: float) -> None:
    t = ClusterTiming(lease_s)
    # Stop sending more than one second before anyone else may start ...
    assert t.margin_s > 1.0
    # ... and leave room for at least one renewal attempt that times out before that.
    assert t.renew_every_s + t.call_timeout_s <= lease_s - t.margin_s
    assert t.renew_every_s * 3 == pytest.approx(lease_s)


def testowner_pid() -> None:
    assert owner_pid("host-1:4242:abcd1234") == 4242
    assert owner_pid("garbage") is None


def test_cluster_config() -> None:
    assert parse_config({"cluster": {"lease_s": 5}}, "c.toml", {}).cluster.lease_s == 5.0
    assert parse_config({}, "c.toml", {}).cluster.lease_s == 30.0
    with pytest.raises(ConfigError, match=r"cluster\.lease_s: must be >= 3"):
        parse_config({"cluster": {"lease_s": 2}}, "c.toml", {})
    with pytest.raises(ConfigError, match=r"cluster\.leases: unknown key"):
        parse_config({"cluster": {"leases": 2}}, "c.toml", {})
