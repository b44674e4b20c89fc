"""Runs a benchmark script someone else owns (bench/pacing.py, bench/diff.py) as it is, and
returns its JSON unchanged; the scenario modules fold it into the suite's result schema."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

BENCH = Path(__file__).resolve().parent.parent


def _run_script(script: str, args: list[str], out: Path) -> dict[str, Any]:
    out.unlink(missing_ok=True)
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args, "--out", str(out)],
        cwd=BENCH.parent,
        stdout=subprocess.DEVNULL,
        check=False,
    )
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"bench/{script} exited with {proc.returncode}")
    try:
        doc: dict[str, Any] = orjson.loads(out.read_bytes())
    finally:
        out.unlink(missing_ok=True)  # the folded result is the record; no stray raw file
    return doc


async def run_script(script: str, args: list[str], out: Path) -> dict[str, Any]:
    """``python bench/<script> ARGS --out OUT``; its JSON, or an error naming the exit code."""
    return await asyncio.to_thread(_run_script, script, args, out)
