"""The suite's result schema and summary: a broken result must not reach the README table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import results
from bench.profile import area_of, function_of, parse, summarise


def doc(**over: Any) -> dict[str, Any]:
    base = results.new_doc(
        "backfill",
        machine={"cores": 2, "cpu_model": "x", "python": "3.11", "postgres": "16"},
        simulator={"orders": 10},
        wall_s=1.234,
        headline={"orders/s": 1950.4, "rejected": 0},
        targets=[
            results.target("orders/s per app", 1950.4, ">=", 1950, "orders/s"),
            results.target("CPU per page", None, "<=", 5.0, "ms"),
        ],
        detail={},
        command="python -m bench",
    )
    return {**base, **over}


def test_target_verdicts_and_an_unmeasured_value_is_a_miss() -> None:
    assert results.target("a", 19.6, ">=", 19.6)["met"] is True
    assert results.target("a", 19.59, ">=", 19.6)["met"] is False
    assert results.target("b", 0, "<=", 0)["met"] is True
    assert results.target("c", None, "<=", 5.0)["met"] is False


def test_a_complete_document_validates_and_round_trips(tmp_path: Path) -> None:
    d = doc()
    assert results.validate(d) == []
    results.write(tmp_path / "backfill.json", d)
    assert results.read(tmp_path / "backfill.json") == d
    assert not list(tmp_path.glob("*.tmp"))


def test_an_incomplete_document_is_refused(tmp_path: Path) -> None:
    d = doc()
    del d["machine"]
    d["targets"].append({"name": "x", "value": 1, "op": "~", "threshold": 1, "met": True})
    problems = results.validate(d)
    assert any("machine" in p for p in problems) and any("op" in p for p in problems)
    with pytest.raises(ValueError, match="machine"):
        results.write(tmp_path / "bad.json", d)
    assert not (tmp_path / "bad.json").exists()


def test_summary_table_lists_every_target_and_marks_misses() -> None:
    md = results.summary_markdown([doc()])
    assert "| backfill | orders/s per app | 1,950 orders/s | >= 1,950 orders/s | yes |" in md
    assert "| backfill | CPU per page | n/a ms | <= 5.00 ms | **no** |" in md
    assert "Machine: 2 cores" in md
    s = results.summary_doc([doc()])
    assert (s["targets_met"], s["targets_total"]) == (1, 2)


def test_profile_charges_self_time_to_the_leaf_and_inclusive_once_per_stack() -> None:
    raw = [
        "main (bench/worker.py:10);call (/work/main/engine/temu/transport.py:88);"
        "sign (/work/main/engine/temu/signing.py:5) 30",
        "main (bench/worker.py:10);call (/work/main/engine/temu/transport.py:90);"
        "call (/work/main/engine/temu/transport.py:91) 10",
        "main (bench/worker.py:10);loads (/tmp/venv/lib/python3.11/site-packages/orjson/x.py:1) 60",
    ]
    s = summarise(parse(raw), rate_hz=100, pages=10)
    assert s["samples"] == 100
    top = {r["function"]: r for r in s["top_self"]}
    assert top["loads (orjson/x.py)"]["pct"] == 60.0
    incl = {r["function"]: r["samples"] for r in s["top_inclusive"]}
    assert incl["call (engine/temu/transport.py)"] == 40  # recursion counted once
    assert s["cpu_ms_per_page_sampled"] == 100.0  # 100 samples at 100 Hz over 10 pages
    assert area_of(function_of("sign (/work/main/engine/temu/signing.py:5)")).startswith(
        "engine: Temu"
    )
