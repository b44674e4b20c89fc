"""What the figures were measured on: they mean little without cores, CPU and versions."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import asyncpg


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def load_average() -> list[float]:
    # Other people's tests on the same box show up here; a noisy figure can be judged by it.
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


async def postgres_version(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        version: str = await conn.fetchval("SHOW server_version")
        return version
    finally:
        await conn.close()


def describe(*, postgres: str, database: str, event_loop: str) -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": memory_gib(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "event_loop": event_loop,
        "postgres": postgres,
        "database": database,
        "load_average_at_start": load_average(),
    }
