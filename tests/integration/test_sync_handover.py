"""A pass cut short because another daemon took the app (``AppNotOwned`` from the send gate)
ends quietly: not a shop failure, nothing recorded as an error, nothing sent."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from engine.app.runtime import Observers, open_runtime
from engine.app.sim_settings import settings_for_simulator
from engine.sim.config import SimConfig
from engine.sim.server import Simulator
from engine.temu.errors import AppNotOwned

SimFactory = Callable[[SimConfig], Awaitable[Simulator]]


async def test_a_pass_of_an_app_handed_over_is_not_a_shop_failure(
    sim_factory: SimFactory, pg_url: str, schema: str
) -> None:
    config = SimConfig.default(orders=50, returns=0, shops=1, qps=100, seed=3)
    sim = await sim_factory(config)
    settings = settings_for_simulator(
        sim, config, database_url=pg_url, schema=schema, sync={"returns": False}
    )
    owned = {"yes": True}

    def gate_for(app_key: str) -> Callable[[], None]:
        def gate() -> None:
            if not owned["yes"]:
                raise AppNotOwned("(lease)", 0, f"app {app_key} is not leased to this process")

        return gate

    rt = await open_runtime(settings, observers=Observers(send_gate=gate_for))
    try:
        service = rt.sync_service()
        first = await service.incremental_pass()
        assert not first.failed
        app = sim.stats(arrivals=False)["apps"][settings.shops[0].app_key]
        before = app["accepted"] + app["rejected_rate_limit"] + app["other_errors"]

        owned["yes"] = False  # another daemon took the lease
        result = await service.incremental_pass()
        assert result.failed == {}
        assert not rt.counters.shops_failed
        errors = await rt.pool.fetch("SELECT last_error FROM sync_state WHERE last_error <> ''")
        assert [r["last_error"] for r in errors] == []
        app = sim.stats(arrivals=False)["apps"][settings.shops[0].app_key]
        after = app["accepted"] + app["rejected_rate_limit"] + app["other_errors"]
        assert after == before, "a fenced request reached Temu"
    finally:
        await rt.close()
