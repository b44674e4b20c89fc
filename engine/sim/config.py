"""Simulator settings: the apps and shops, how much data they hold, how hostile the network is."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

ALL_FAULT_KINDS: tuple[str, ...] = (
    "http502",
    "sys4000000",
    "truncated",
    "drop",
    "slow",
    "ratelimit_storm",
)

YEAR_S = 365 * 24 * 3600
# How an upload's answer is lost: the connection closes, or the answer comes too late.
LOST_ANSWER_HOW: tuple[str, ...] = ("close", "delay")


@dataclass(frozen=True)
class SimApp:
    app_key: str
    app_secret: str
    qps: int = 20


@dataclass(frozen=True)
class SimShop:
    shop_id: str
    app_key: str
    access_token: str
    orders: int = 1000
    returns: int = 100
    # bg.open.accesstoken.info.get (engine/sim/tokens.py): None = ten years after the
    # simulator is built / every API type the simulator serves.
    token_expires_at: int | None = None
    token_scopes: tuple[str, ...] | None = None


def default_app_secret(app: int, seed: int) -> str:
    """Temu's shape, 40 hex characters (temu-webhooks.md): the webhook AES key is the first 16
    bytes of the secret, so a shorter default could not deliver events. Stable per app and seed."""
    return hashlib.sha256(f"sim-secret-{app}-{seed}".encode()).hexdigest()[:40]


def _default_end() -> int:
    # An hour behind now so the default data never overlaps the engine's safety lag.
    return int(time.time()) - 3600


@dataclass(frozen=True)
class SimConfig:
    apps: tuple[SimApp, ...]
    shops: tuple[SimShop, ...]
    seed: int = 1
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    start_ts: int | None = None  # None: one year before end_ts
    end_ts: int | None = None  # None: now - 1 h, taken when the simulator is built
    fault_rate: float = 0.0
    fault_kinds: tuple[str, ...] = ALL_FAULT_KINDS
    fault_after_apply_rate: float = 0.0
    slow_s: float = 35.0
    drift_rate: float = 0.0
    # True: at most qps in ANY sliding second (the spec's strictest reading); False: per
    # calendar second, which lets up to 2*qps through across a boundary.
    strict_window: bool = True
    # True: refused requests count in the window too (the gateway counts every arrival).
    count_refused: bool = False
    oc_client_id: str = "oc-client"
    oc_refresh_token: str = "oc-refresh-0"
    oc_token_ttl_s: float = 3600.0
    oc_label_ready_after: int = 2
    oc_rotate_refresh: bool = True
    # Issue 14 modes, all off by default (engine/sim/modes.py documents each).
    oc_foreign_rmas: int = 0
    pickup_cases: bool = False
    refuse_mode_mismatch: bool = False
    lost_upload_answers: int = 0
    lost_answer_how: str = "close"
    lost_answer_delay_s: float = 35.0
    return_list_lag_s: float = 0.0
    empty_carrier_lists: int = 0
    oc_bare_labels: bool = False
    exclusive_order_filters: bool = False
    ignore_return_sn_filter: bool = False
    oc_business_success: bool = False
    string_error_codes: bool = False
    lines_max_page_size: int = 0
    nul_in_errors: bool = False  # issue 12
    logistics_not_ready: int = 0
    poison: bool = False
    accept_second_label: bool = False

    def __post_init__(self) -> None:
        app_keys = {a.app_key for a in self.apps}
        if len(app_keys) != len(self.apps):
            raise ValueError("duplicate app_key in SimConfig.apps")
        tokens = [s.access_token for s in self.shops]
        if len(set(tokens)) != len(tokens):
            raise ValueError("two shops share an access_token")
        if len({s.shop_id for s in self.shops}) != len(self.shops):
            raise ValueError("duplicate shop_id in SimConfig.shops")
        for shop in self.shops:
            if shop.app_key not in app_keys:
                raise ValueError(f"shop {shop.shop_id} uses unknown app_key {shop.app_key}")
        if self.lost_answer_how not in LOST_ANSWER_HOW:
            raise ValueError(f"lost_answer_how must be one of {', '.join(LOST_ANSWER_HOW)}")
        unknown = set(self.fault_kinds) - set(ALL_FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")

    def time_range(self) -> tuple[int, int]:
        end = self.end_ts if self.end_ts is not None else _default_end()
        start = self.start_ts if self.start_ts is not None else end - YEAR_S
        if start > end:
            raise ValueError("start_ts is after end_ts")
        return start, end

    @classmethod
    def default(
        cls,
        *,
        orders: int = 1000,
        returns: int = 100,
        shops: int = 2,
        apps: int = 1,
        qps: int = 20,
        seed: int = 1,
        **kwargs: object,
    ) -> SimConfig:
        """``apps`` apps (``sim-app-N``) and ``shops`` shops spread over them round-robin."""
        app_list = tuple(
            SimApp(f"sim-app-{i}", default_app_secret(i, seed), qps) for i in range(1, apps + 1)
        )
        shop_list = tuple(
            SimShop(
                shop_id=f"shop-{i}",
                app_key=app_list[(i - 1) % len(app_list)].app_key,
                access_token=f"sim-token-shop-{i}",
                orders=orders,
                returns=returns,
            )
            for i in range(1, shops + 1)
        )
        return cls(apps=app_list, shops=shop_list, seed=seed, **kwargs)  # type: ignore[arg-type]
