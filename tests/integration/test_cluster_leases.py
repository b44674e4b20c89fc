"""App leases and the daemons table against real Postgres: acquire, renew, expire, take over
after expiry, release with cooldown, races; the keeper's fair share and lost-lease stop."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import pytest

from engine.cluster.claims import OwnedShopsStore
from engine.cluster.holdings import ClusterTiming
from engine.cluster.identity import Identity
from engine.cluster.keeper import LeaseKeeper
from engine.store.leases import LeaseStore
from engine.store.store import Store
from engine.temu.errors import AppNotOwned


def ident(name: str, pid: int = 10, local: str = "elsewhere") -> Identity:
    return Identity(f"{name}:{pid}:x", name, pid, f"{local}-{name}")


async def take(leases: LeaseStore, app: str, who: str, ttl: float = 30.0, **kw: str) -> bool:
    return await leases.acquire(app, who, host="h", local_id="l", ttl_s=ttl, **kw) is not None


async def test_acquire_is_exclusive_and_idempotent_for_the_owner(pool: asyncpg.Pool) -> None:
    leases = LeaseStore(pool)
    first = await leases.acquire("app", "a", host="ha", local_id="la", ttl_s=30)
    assert first is not None and first.owner == "a"
    assert not await take(leases, "app", "b")
    await asyncio.sleep(0.01)
    again = await leases.acquire("app", "a", host="ha", local_id="la", ttl_s=30)
    assert again is not None and again.acquired_at == first.acquired_at
    assert again.expires_at > first.expires_at
    (row,) = await leases.leases()
    assert (row.owner, row.owner_host, row.live) == ("a", "ha", True)


async def test_renew_only_by_the_owner(pool: asyncpg.Pool) -> None:
    leases = LeaseStore(pool)
    assert await take(leases, "x", "a") and await take(leases, "y", "b")
    assert await leases.renew(["x", "y"], "a", ttl_s=30) == {"x"}
    assert await leases.renew([], "a", ttl_s=30) == set()


async def _time_passes(pool: asyncpg.Pool, table: str, owner: str) -> None:
    """The row's expiry moves into the past: stands in for its ttl elapsing, so no check
    races a sub-second expiry against database round trips on a busy machine."""
    await pool.execute(
        f"UPDATE {table} SET expires_at = now() - interval '1 millisecond' WHERE owner = $1",
        owner,
    )


async def test_expired_lease_is_taken_over_and_the_old_owner_cannot_renew(
    pool: asyncpg.Pool,
) -> None:
    leases = LeaseStore(pool)
    assert await take(leases, "app", "a")
    assert not await take(leases, "app", "b")
    await _time_passes(pool, "app_leases", "a")
    (row,) = await leases.leases()
    assert row.live is False
    assert await take(leases, "app", "b")
    assert await leases.renew(["app"], "a", ttl_s=30) == set()
    (row,) = await leases.leases()
    assert row.owner == "b" and row.live


async def test_release_keeps_a_cooldown_then_frees(pool: asyncpg.Pool) -> None:
    leases = LeaseStore(pool)
    assert await take(leases, "app", "a")
    assert await leases.release(["app"], "b", cooldown_s=30) == set()  # not b's to release
    assert await leases.release(["app"], "a", cooldown_s=30) == {"app"}
    # Within the cooldown nobody else may start: the old owner's last second is still open.
    assert not await take(leases, "app", "b")
    (row,) = await leases.leases()
    assert row.live and row.owner == "a"
    await _time_passes(pool, "app_leases", "a")  # the cooldown is over
    assert await take(leases, "app", "b")


async def test_release_never_extends_a_lease(pool: asyncpg.Pool) -> None:
    leases = LeaseStore(pool)
    lease = await leases.acquire("app", "a", host="h", local_id="l", ttl_s=0.5)
    assert lease is not None
    await leases.release(["app"], "a", cooldown_s=60)
    (row,) = await leases.leases()
    assert row.expires_at <= lease.expires_at + timedelta(milliseconds=1)


async def test_replacing_a_dead_owner_takes_a_live_lease(pool: asyncpg.Pool) -> None:
    leases = LeaseStore(pool)
    assert await take(leases, "app", "dead")
    assert not await take(leases, "app", "b", replacing="someone-else")
    assert await take(leases, "app", "b", replacing="dead")


async def test_racing_takers_exactly_one_wins(pg_url: str, schema: str) -> None:
    # Separate connections, so the INSERTs really run concurrently in Postgres.
    conns = [
        await asyncpg.connect(pg_url, server_settings={"search_path": schema}) for _ in range(8)
    ]
    try:
        from engine.store.queries import default_queries

        sql = default_queries()["lease_acquire"]
        for round_ in range(5):
            app = f"app-{round_}"
            rows = await asyncio.gather(
                *(c.fetchrow(sql, app, f"w{i}", "h", "l", 30.0, None) for i, c in enumerate(conns))
            )
            assert sum(r is not None for r in rows) == 1
    finally:
        for c in conns:
            await c.close()


async def test_daemons_heartbeat_lists_the_live_ones(pool: asyncpg.Pool) -> None:
    leases = LeaseStore(pool)
    common = {"host": "h", "pid": 1, "local_id": "l", "listen": ""}
    await leases.heartbeat("old", **common, ttl_s=30)
    live = await leases.heartbeat("a", **common, ttl_s=30)
    assert [d.owner for d in live] == ["a", "old"]
    await _time_passes(pool, "daemons", "old")  # "old" stopped beating
    live = await leases.heartbeat("b", **common, ttl_s=30)
    assert [d.owner for d in live] == ["b", "a"]
    assert {d.owner: d.live for d in await leases.daemons()} == {"old": False, "a": True, "b": True}
    await leases.remove_daemon("a")
    await leases.prune_daemons(0)
    assert [d.owner for d in await leases.daemons()] == ["b"]


async def test_claim_takes_only_tasks_of_owned_shops(pool: asyncpg.Pool) -> None:
    store = Store(pool)
    await store.enqueue("k", "mine", {}, shop_id="s1")
    await store.enqueue("k", "theirs", {}, shop_id="s2")
    await store.enqueue("k", "no-shop", {})
    scoped = OwnedShopsStore(pool, lambda: ["s1"])
    got = await scoped.claim(["k"], limit=10, lease_s=60, owner="w")
    assert sorted(t.dedupe_key for t in got) == ["mine", "no-shop"]
    (rest,) = await store.claim(["k"], limit=10, lease_s=60, owner="w2")
    assert rest.dedupe_key == "theirs"


class Hooks:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    async def start_app(self, app_key: str) -> None:
        self.events.append(("start", app_key))

    async def stop_app(self, app_key: str, *, graceful: bool) -> None:
        self.events.append(("stop" if graceful else "lost", app_key))


APPS = ["a1", "a2", "a3", "a4", "a5"]


async def test_keepers_share_the_apps_fairly_and_hand_over(pool: asyncpg.Pool) -> None:
    store = LeaseStore(pool)
    timing = ClusterTiming(3.0)
    ha, hb = Hooks(), Hooks()
    a = LeaseKeeper(store, APPS, ident("a"), timing=timing, hooks=ha)
    b = LeaseKeeper(store, APPS, ident("b"), timing=timing, hooks=hb)
    await a.tick()
    assert a.owned == APPS
    assert sorted(x for e, x in ha.events if e == "start") == APPS
    await b.tick()  # b registers; nothing is free yet
    assert b.owned == [] and b.target == 3
    await a.tick()  # a now sees two daemons: keeps ceil(5/2) = 3, hands 2 over
    assert a.target == 3
    await asyncio.gather(*list(a._releasing.values()))
    assert len(a.owned) == 3
    handed = {x for e, x in ha.events if e == "stop"}
    assert len(handed) == 2
    await b.tick()  # inside the cooldown: not yet
    assert b.owned == []
    await asyncio.sleep(1.3)
    await b.tick()
    assert set(b.owned) == handed
    assert not set(a.owned) & set(b.owned)
    await a.close()
    await b.close()
    assert await store.daemons() == []
    await asyncio.sleep(1.3)  # the release cooldown
    assert not any(lease.live for lease in await store.leases())


async def test_lost_lease_stops_the_app_and_closes_the_gate(pool: asyncpg.Pool) -> None:
    now = [1000.0]
    hooks = Hooks()
    keeper = LeaseKeeper(
        LeaseStore(pool),
        ["a1"],
        ident("a"),
        timing=ClusterTiming(6.0),
        hooks=hooks,
        clock=lambda: now[0],
    )
    await keeper.tick()
    gate = keeper.gate("a1")
    gate()  # owned: passes
    # No renewal for lease_s - margin: stop, although Postgres would still say it is ours.
    now[0] += 6.0 - ClusterTiming(6.0).margin_s
    assert not keeper.owns("a1")
    with pytest.raises(AppNotOwned):
        gate()
    await keeper.check_deadlines()
    assert ("lost", "a1") in hooks.events
    assert keeper.lost == 1


async def test_renewal_refused_means_lost(pool: asyncpg.Pool) -> None:
    store = LeaseStore(pool)
    hooks = Hooks()
    keeper = LeaseKeeper(store, ["a1"], ident("a"), timing=ClusterTiming(3.0), hooks=hooks)
    await keeper.tick()
    # Someone (an operator, a bug) gave the app away behind our back.
    await pool.execute("UPDATE app_leases SET owner = 'thief'")
    await keeper.tick()
    assert ("lost", "a1") in hooks.events and keeper.owned == []


async def test_dead_local_daemon_is_replaced_without_waiting(pool: asyncpg.Pool) -> None:
    store = LeaseStore(pool)
    local = "same-machine"
    dead = LeaseKeeper(
        store, ["a1"], Identity("h:111:x", "h", 111, local), timing=ClusterTiming(30.0)
    )
    await dead.tick()
    assert dead.owned == ["a1"]
    alive = LeaseKeeper(
        store,
        ["a1"],
        Identity("h:222:y", "h", 222, local),
        timing=ClusterTiming(30.0),
        is_alive=lambda pid: pid != 111,
    )
    await alive.tick()
    assert [lease.owner for lease in await store.leases()] == ["h:222:y"]
    assert [d.owner for d in await store.daemons()] == ["h:222:y"]
    # The dead process may have sent a request just before it died: the new owner's first
    # one waits more than the rate limit's one-second window.
    assert alive.owned == []
    await asyncio.sleep(1.25)
    assert alive.owned == ["a1"]


async def test_one_shot_refuses_an_app_a_daemon_owns(pool: asyncpg.Pool) -> None:
    from engine.cluster.oneshot import AppsBusy, take_leases_once

    store = LeaseStore(pool)
    daemon = LeaseKeeper(store, ["a1"], ident("d"), timing=ClusterTiming(30.0))
    await daemon.tick()
    with pytest.raises(AppsBusy, match="owned by the running daemon d:10:x"):
        await take_leases_once(store, ["a1"], ident("b"), timing=ClusterTiming(3.0))


async def test_one_shot_waits_for_another_runs_lease(pool: asyncpg.Pool) -> None:
    from engine.cluster.oneshot import take_leases_once

    store = LeaseStore(pool)
    # Another backfill (not a daemon) on another machine, its lease about to expire.
    assert await take(store, "a1", "other:1:x", ttl=0.5)
    (other,) = await store.leases()
    keeper = await take_leases_once(store, ["a1"], ident("b"), timing=ClusterTiming(3.0))
    try:
        assert keeper.owned == ["a1"]
        # It waited for that lease to end (by Postgres's clock, whatever the load here).
        (mine,) = await store.leases()
        assert mine.owner == "b:10:x" and mine.acquired_at >= other.expires_at
    finally:
        await keeper.close()
