"""A stream the daemon backs off from (it failed pass after pass) is still tried by a one-shot
`run --once`: whoever fixed the fault and runs the command by hand expects it to try now, not
to be told "backing off until ..." for up to an hour."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import orjson

from engine.sim import SimConfig
from engine.store.pool import quote_ident
from tests.e2e.daemon_harness import write_config
from tests.fixtures_proc import run_cli
from tests.fixtures_sim import SimFactory

ORDER_LIST = "bg.order.list.v2.get"


async def test_run_once_tries_a_stream_the_daemon_backs_off_from(
    sim_factory: SimFactory, pg_url: str, schema: str, tmp_path: Path
) -> None:
    sim = await sim_factory(SimConfig.default(orders=50, returns=10, shops=1))
    cfg = write_config(tmp_path / "config.toml", sim, db_url=pg_url, schema=schema, listen="")
    rc, out, err = (
        await run_cli(tmp_path, "first", ["--config", str(cfg), "run", "--once"])
    ).result()
    assert rc == 0, out + err
    # As the daemon leaves it after three failed passes: retry_after an hour away.
    conn = await asyncpg.connect(pg_url)
    try:
        marked = await conn.execute(
            f"UPDATE {quote_ident(schema)}.sync_state SET failures_in_row = 3, "
            "last_error = 'Temu was down', last_error_class = 'TemuError', "
            "retry_after = now() + interval '1 hour' "
            "WHERE stream = 'orders' AND kind = 'incremental'"
        )
        assert marked == "UPDATE 1", marked
        before = sim.stats(arrivals=False)["apps"]["sim-app-1"]["by_type"].get(ORDER_LIST, 0)
        rc, out, err = (
            await run_cli(tmp_path, "again", ["--config", str(cfg), "run", "--once", "--json"])
        ).result()
        assert rc == 0, out + err
        assert orjson.loads(out.strip().splitlines()[-1])["shops_failed"] == []
        after = sim.stats(arrivals=False)["apps"]["sim-app-1"]["by_type"].get(ORDER_LIST, 0)
        assert after > before, "run --once sent no order list request"
        row = await conn.fetchrow(
            f"SELECT failures_in_row, retry_after FROM {quote_ident(schema)}.sync_state "
            "WHERE stream = 'orders' AND kind = 'incremental'"
        )
        assert (row["failures_in_row"], row["retry_after"]) == (0, None), dict(row)
    finally:
        await conn.close()
