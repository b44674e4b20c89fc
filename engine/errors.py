"""The engine's shared error vocabulary: what a lost database raises, how any exception is
described for a log line or an error column (redacted), and the exit codes of every command.
"""

from __future__ import annotations

import enum
import subprocess

import asyncpg

from engine.logs import redact

__all__ = ["DATABASE_ERRORS", "STARTUP_ERRORS", "ExitCode", "describe"]

# What a lost, restarting or unreachable Postgres raises through asyncpg; a loop that sees one
# waits a little and tries again (the pool replaces broken connections on its own), a one-shot
# command fails with a clear message.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    ConnectionError,
    TimeoutError,
    OSError,
)
# At start-up the embedded Postgres may also fail to start (pg_ctl exits non-zero).
STARTUP_ERRORS: tuple[type[BaseException], ...] = (*DATABASE_ERRORS, subprocess.SubprocessError)


class ExitCode(enum.IntEnum):
    """interface.md's exit codes, plus the shells' convention for an interrupt."""

    OK = 0
    FAILURE = 1
    USAGE = 2  # usage or configuration error: the message names the key
    PARTIAL = 3  # finished, but some shops failed (the others completed)
    INTERRUPTED = 130  # 128 + SIGINT, what shells report for a Ctrl-C


def describe(exc: BaseException) -> str:
    """``Class: message`` (or the class alone), redacted: driver and HTTP exception texts can
    quote connection strings, tokens or request data."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    return redact(text if type(exc).__name__ in text else f"{type(exc).__name__}: {text}")
