"""The result document every scenario writes, target checks, and the summary table.

One schema for all scenarios so summary.json / summary.md are built without knowing any
scenario: ``headline`` holds the figures for the table, ``targets`` the pass/miss verdicts,
``detail`` whatever else the scenario wants to keep.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson

SCHEMA_VERSION = 1
REQUIRED_KEYS = (
    "schema",
    "scenario",
    "generated_at",
    "command",
    "machine",
    "simulator",
    "wall_s",
    "headline",
    "targets",
    "detail",
)
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
}


def target(
    name: str, value: float | None, op: str, threshold: float, unit: str = ""
) -> dict[str, Any]:
    """One verdict; a missing value (the scenario could not measure it) is a miss, not a pass."""
    met = value is not None and _OPS[op](value, threshold)
    return {
        "name": name,
        "value": value,
        "op": op,
        "threshold": threshold,
        "unit": unit,
        "met": met,
    }


def validate(doc: Mapping[str, Any]) -> list[str]:
    """Problems with a result document (empty when it is well formed)."""
    problems = [f"missing key {k!r}" for k in REQUIRED_KEYS if k not in doc]
    if doc.get("schema") not in (None, SCHEMA_VERSION):
        problems.append(f"schema {doc.get('schema')!r} is not {SCHEMA_VERSION}")
    for t in doc.get("targets", []):
        for k in ("name", "value", "op", "threshold", "met"):
            if k not in t:
                problems.append(f"target {t.get('name', '?')!r} lacks {k!r}")
        if t.get("op") not in _OPS:
            problems.append(f"target {t.get('name', '?')!r} has unknown op {t.get('op')!r}")
    if not isinstance(doc.get("headline", {}), dict):
        problems.append("headline is not an object")
    return problems


def write(path: Path, doc: Mapping[str, Any]) -> None:
    problems = validate(doc)
    if problems:
        raise ValueError(f"{path.name}: " + "; ".join(problems))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    tmp.replace(path)  # a reader never sees half a file


def read(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(path.read_bytes())
    return doc


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def summary_markdown(docs: Iterable[Mapping[str, Any]]) -> str:
    """Two tables: the targets (value, threshold, verdict) and every headline figure."""
    docs = list(docs)
    lines = ["| scenario | target | measured | wanted | met |", "|---|---|---|---|---|"]
    for doc in docs:
        for t in doc["targets"]:
            wanted = f"{t['op']} {_fmt(t['threshold'])} {t.get('unit', '')}".strip()
            measured = f"{_fmt(t['value'])} {t.get('unit', '')}".strip()
            lines.append(
                f"| {doc['scenario']} | {t['name']} | {measured} | {wanted} | "
                f"{'yes' if t['met'] else '**no**'} |"
            )
    lines += ["", "| scenario | figure | value |", "|---|---|---|"]
    for doc in docs:
        for key, value in doc["headline"].items():
            lines.append(f"| {doc['scenario']} | {key} | {_fmt(value)} |")
    if docs:
        m = docs[0]["machine"]
        lines += [
            "",
            f"Machine: {m.get('cores')} cores, {m.get('cpu_model')}, {m.get('memory_gib')} GiB; "
            f"Python {m.get('python')} ({m.get('event_loop')}); "
            f"Postgres {m.get('postgres')} ({m.get('database')}).",
        ]
    return "\n".join(lines) + "\n"


def summary_doc(docs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    docs = list(docs)
    targets = [dict(t, scenario=d["scenario"]) for d in docs for t in d["targets"]]
    return {
        "schema": SCHEMA_VERSION,
        "scenarios": {
            d["scenario"]: {"headline": d["headline"], "wall_s": d["wall_s"]} for d in docs
        },
        "targets": targets,
        "targets_met": sum(1 for t in targets if t["met"]),
        "targets_total": len(targets),
        "machine": docs[0]["machine"] if docs else {},
    }


def new_doc(
    scenario: str,
    *,
    machine: Mapping[str, Any],
    simulator: Mapping[str, Any] | None,
    wall_s: float,
    headline: Mapping[str, Any],
    targets: list[dict[str, Any]],
    detail: Mapping[str, Any],
    command: str,
) -> dict[str, Any]:
    from datetime import UTC, datetime

    return {
        "schema": SCHEMA_VERSION,
        "scenario": scenario,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "machine": dict(machine),
        "simulator": dict(simulator) if simulator is not None else None,
        "wall_s": round(wall_s, 2),
        "headline": dict(headline),
        "targets": targets,
        "detail": dict(detail),
    }
