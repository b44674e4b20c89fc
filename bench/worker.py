"""Runs ONE scenario in a fresh process (``python -m bench.worker NAME``), so its CPU time and
RSS belong to that scenario alone and a crash cannot take the rest of the suite with it."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import orjson

from bench import results
from bench.harness import RESULTS, BenchContext
from engine.cli import tune_gc


def _run(coro: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    tune_gc()  # as `temu-sync` does, so the figures are the CLI's figures
    try:
        import uvloop  # what `temu-sync` runs on, so the figures are the CLI's figures

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario")
    ap.add_argument("--database-url", required=True)
    ap.add_argument("--machine", required=True, help="JSON object describing the machine")
    ap.add_argument("--command", default="python -m bench")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ctx = BenchContext(
        database_url=args.database_url,
        quick=args.quick,
        machine=orjson.loads(args.machine),
        results=args.results,
    )
    module = importlib.import_module(f"bench.scenarios.{args.scenario}")
    doc = _run(module.run(ctx, args.command))
    results.write(args.results / f"{args.scenario}.json", doc)
    print(orjson.dumps({"scenario": args.scenario, "headline": doc["headline"]}).decode())


if __name__ == "__main__":
    main()
