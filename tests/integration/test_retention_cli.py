"""`temu-sync prune [--dry-run] [--json]` as an operator runs it: a subprocess, a config file."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import orjson

from tests.fixtures_proc import run_cli


async def test_prune_command_dry_run_counts_then_prune_removes(
    pool: asyncpg.Pool, pg_url: str, schema: str, tmp_path: Path
) -> None:
    await pool.execute(
        """INSERT INTO changes (shop_id, entity, entity_key, op, changed_at)
           SELECT 's', 'order', 'k' || g, 'insert',
                  now() - CASE WHEN g <= 40 THEN interval '40 days' ELSE interval '1 day' END
           FROM generate_series(1, 50) AS g"""
    )
    config = tmp_path / "config.toml"
    config.write_text(
        f'[database]\nurl = "{pg_url}"\nschema = "{schema}"\n\n'
        "[retention]\nchanges_days = 30\nbatch_rows = 100\n"
    )
    base = ["--config", str(config), "prune"]

    rc, out, err = (await run_cli(tmp_path, "dry", [*base, "--dry-run", "--json"])).result()
    assert rc == 0, err
    assert "would remove 40 changes" in out
    assert orjson.loads(out.strip().splitlines()[-1])["removed"]["changes"] == 40
    assert await pool.fetchval("SELECT count(*) FROM changes") == 50

    rc, out, err = (await run_cli(tmp_path, "real", [*base, "--json"])).result()
    assert rc == 0, err
    assert orjson.loads(out.strip().splitlines()[-1])["removed"]["changes"] == 40
    assert await pool.fetchval("SELECT count(*) FROM changes") == 10

    config.write_text(config.read_text().replace("changes_days = 30", "changes_days = -1"))
    rc, out, err = (await run_cli(tmp_path, "bad", base)).result()
    assert rc == 2 and "retention.changes_days" in err
