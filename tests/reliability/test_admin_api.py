"""The daemon's admin API under hostile requests (`temu-sync run` as a subprocess, its real
outbox in Postgres): without or with a wrong token a POST gets 401 and queues nothing;
oversized or malformed bodies get 4xx and queue nothing; the daemon keeps serving; a good
request is then accepted (202), so the endpoint under test really is the working one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

from engine.sim import SimConfig
from engine.store.pool import quote_ident
from tests.e2e.daemon_harness import eventually, free_port, write_config
from tests.fixtures_proc import EngineProcess
from tests.fixtures_sim import SimFactory

TOKEN = "admin-token-5c2e8a1f9b3d"
MAX_BODY = 4096
LABEL = {
    "returnFulfillment": {
        "tracking": {"number": "1Z999AA10123456784", "companyId": 699272611},
        "fileUrl": "https://labels.example/l.pdf",
    }
}


async def _outbox(conn: asyncpg.Connection, schema: str) -> list[tuple[Any, ...]]:
    rows = await conn.fetch(
        f"SELECT id, dedupe_key, state, payload::text AS p "
        f"FROM {quote_ident(schema)}.outbox ORDER BY id"
    )
    return [tuple(r) for r in rows]


async def test_admin_api_refuses_and_changes_nothing(
    sim_factory: SimFactory, pg_url: str, schema: str, tmp_path: Path
) -> None:
    sim = await sim_factory(SimConfig.default(orders=50, returns=60, shops=1, qps=200, seed=41))
    port = free_port()
    # The reconciler stays off so that only the admin API can write to the outbox.
    cfg = write_config(
        tmp_path / "config.toml",
        sim,
        db_url=pg_url,
        schema=schema,
        listen=f"127.0.0.1:{port}",
        admin_token=TOKEN,
        reconciler=False,
        extra=f"max_body_bytes = {MAX_BODY}\n",
    )
    waiting = [
        r["parentAfterSalesSn"]
        for r in sim.truth_returns("shop-1")
        if r["parentAfterSalesStatus"] == 8 and 10 in r["availableOperateList"]
    ]
    assert waiting, "the seed must give a return waiting for a label"
    sn = waiting[0]
    url = f"http://127.0.0.1:{port}/returns/{sn}/fulfillment"
    daemon = EngineProcess(tmp_path, "daemon", ["--config", str(cfg), "run"])
    conn = await asyncpg.connect(pg_url)
    try:
        await daemon.start()

        async def synced() -> bool:
            n = await conn.fetchval(
                f"SELECT count(*) FROM {quote_ident(schema)}.returns "
                "WHERE parent_after_sales_sn = $1",
                sn,
            )
            return bool(n)

        await eventually(synced, within=30, what="the return to be synced")
        before = await _outbox(conn, schema)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        refusals: list[tuple[str, dict[str, str], bytes, int]] = [
            ("no token", {}, b"", 401),
            ("wrong token", {"Authorization": "Bearer not-the-token"}, b"", 401),
            ("token without Bearer", {"Authorization": TOKEN}, b"", 401),
            ("token as a prefix", {"Authorization": f"Bearer {TOKEN[:-1]}"}, b"", 401),
            ("other scheme", {"Authorization": f"Basic {TOKEN}"}, b"", 401),
            ("oversized", auth, b'{"pad": "' + b"x" * (MAX_BODY * 4) + b'"}', 413),
            ("not JSON", auth, b"{returnFulfillment:", 400),
            ("not an object", auth, b"[1, 2, 3]", 400),
            ("empty body", auth, b"", 400),
            ("no label in it", auth, b'{"hello": "world"}', 422),
        ]
        async with aiohttp.ClientSession() as http:
            for case, headers, body, want in refusals:
                if want == 401:
                    body = orjson_dumps(LABEL)  # a perfect body: only the token is wrong
                hdrs = {"Content-Type": "application/json", **headers}
                async with http.post(url, data=body, headers=hdrs) as resp:
                    got = resp.status
                    text = await resp.text()
                assert got == want, f"{case}: {got} {text}"
                assert TOKEN not in text, f"{case}: the token was echoed"
            assert await _outbox(conn, schema) == before, "a refused request changed the outbox"

            async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status in (200, 503)  # still serving after the abuse
            async with http.post(
                url, data=orjson_dumps(LABEL), headers={"Content-Type": "application/json", **auth}
            ) as resp:
                assert resp.status == 202, await resp.text()
        after = await _outbox(conn, schema)
        assert len(after) == len(before) + 1 and sn in after[-1][1], after[-len(before) - 1 :]
    finally:
        await conn.close()
        await daemon.kill()
    assert TOKEN not in daemon.output


def orjson_dumps(value: Any) -> bytes:
    return orjson.dumps(value)
