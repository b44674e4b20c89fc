"""Summarises py-spy's collapsed stacks (``--format raw``): where the engine's CPU goes.

Each line is ``frame;frame;...;leaf count`` with frames ``function (path:line)``. Self time is
charged to the leaf; inclusive time to every distinct function on the stack.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<path>[^():]+)(?::\d+)?\)$")
AREAS = (
    ("engine/temu", "engine: Temu client (signing, transport, pacer, parsing)"),
    ("engine/store", "engine: store (diff writer)"),
    ("engine/sync", "engine: sync (windows, pager)"),
    ("engine/", "engine: other"),
    ("asyncpg", "asyncpg"),
    ("aiohttp", "aiohttp"),
    ("yarl", "aiohttp"),
    ("multidict", "aiohttp"),
    ("orjson", "orjson"),
    ("aiolimiter", "aiolimiter"),
    ("asyncio", "asyncio / uvloop"),
    ("uvloop", "asyncio / uvloop"),
    ("bench/", "bench harness"),
)


def function_of(frame: str) -> str:
    """``name (path)`` without the line number, the path shortened to the package."""
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("path")
    for marker in ("site-packages/", "/work/main/", "lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "lib/python3.":
                path = "stdlib/" + path.split("/", 1)[-1]
            break
    return f"{m.group('func')} ({path})"


def area_of(function: str) -> str:
    for marker, area in AREAS:
        if marker in function:
            return area
    return "other (stdlib, interpreter)"


def parse(lines: Iterable[str]) -> list[tuple[list[str], int]]:
    stacks = []
    for line in lines:
        line = line.rstrip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        stacks.append(([function_of(f) for f in stack.split(";")], int(count)))
    return stacks


def in_run(stacks: list[tuple[list[str], int]]) -> list[tuple[list[str], int]]:
    """Samples of the measured run: inside the event loop, minus the harness's plotting.

    Start-up (imports, the simulator's launch) and the plot are not the engine's cost per page.
    """
    return [
        (frames, n)
        for frames, n in stacks
        if any(f.startswith("Runner.run ") for f in frames)
        and not any("bench/plot.py" in f for f in frames)
    ]


def summarise(
    stacks: list[tuple[list[str], int]], *, rate_hz: float, pages: int, top: int = 25
) -> dict[str, Any]:
    """Top functions by self and inclusive samples, and self time by area, in ms per page."""
    total = sum(n for _, n in stacks)
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    for frames, n in stacks:
        self_time[frames[-1]] += n
        areas[area_of(frames[-1])] += n
        for f in set(frames):
            inclusive[f] += n

    def ms_per_page(n: int) -> float:
        return round(1000 * n / rate_hz / pages, 3) if pages else 0.0

    def rows(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {
                "function": f,
                "samples": n,
                "pct": round(100 * n / total, 1),
                "ms_per_page": ms_per_page(n),
            }
            for f, n in counter.most_common(top)
        ]

    return {
        "samples": total,
        "rate_hz": rate_hz,
        "pages": pages,
        "cpu_ms_per_page_sampled": ms_per_page(total),
        "by_area": rows(areas),
        "top_self": rows(self_time),
        "top_inclusive": rows(inclusive),
    }
