"""The one way the tests run the CLI as a subprocess: ``python -m engine ARGS``.

Output goes to files (a pipe nobody reads fills up and blocks a process we are about to
kill or signal); every wait has a deadline and a process still running at its deadline is
killed and reported with the tail of its stderr. The environment of whatever runs the tests
is inherited minus systemd's notify variables (a CI job under systemd must not have the
child talk to its supervisor).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
_SYSTEMD_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")
KILL_WAIT_S = 30.0  # a SIGKILLed process is reaped within this, or the box is in trouble


class EngineProcess:
    """One ``python -m engine`` run; ``name`` names its output files in ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        args: Sequence[str],
        env: dict[str, str] | None = None,
    ) -> None:
        self.args = list(args)
        inherited = {k: v for k, v in os.environ.items() if k not in _SYSTEMD_VARS}
        self.env = {**inherited, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.out_path = workdir / f"{name}.stdout"
        self.err_path = workdir / f"{name}.stderr"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> EngineProcess:
        # The child keeps its own descriptors; ours close right after the spawn.
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "engine",
                *self.args,
                stdout=out,
                stderr=err,
                env=self.env,
                cwd=str(REPO),
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        assert self.proc is not None, "not started"
        return self.proc.returncode

    async def wait(self, within: float) -> int:
        """The exit code; a process still running after ``within`` s is killed and fails
        the test with its stderr."""
        assert self.proc is not None, "not started"
        try:
            return await asyncio.wait_for(self.proc.wait(), within)
        except TimeoutError:
            await self.kill()
            raise AssertionError(
                f"{self.args} did not finish within {within} s:\n{self.stderr[-3000:]}"
            ) from None

    def signal(self, sig: signal.Signals = signal.SIGTERM) -> None:
        assert self.proc is not None, "not started"
        self.proc.send_signal(sig)

    async def kill(self) -> None:
        """SIGKILL unless already ended, and reap it (bounded)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await asyncio.wait_for(self.proc.wait(), KILL_WAIT_S)

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace") if self.out_path.exists() else ""

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace") if self.err_path.exists() else ""

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def result(self) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) of a finished run."""
        rc = self.returncode
        assert rc is not None, "still running"
        return rc, self.stdout, self.stderr

    def summary(self) -> dict[str, Any]:
        """The ``--json`` summary: the last line of stdout."""
        lines = self.stdout.strip().splitlines()
        assert lines, f"no output; stderr:\n{self.stderr[-3000:]}"
        doc: dict[str, Any] = orjson.loads(lines[-1])
        return doc

    def assert_ok(self) -> EngineProcess:
        assert self.returncode == 0, f"{self.args} exited {self.returncode}:\n{self.stderr[-3000:]}"
        return self


async def run_cli(
    workdir: Path,
    name: str,
    args: Sequence[str],
    *,
    within: float = 90,
    env: dict[str, str] | None = None,
) -> EngineProcess:
    """Runs to the end (at most ``within`` s) and answers the finished process."""
    p = EngineProcess(workdir, name, args, env)
    await p.start()
    try:
        await p.wait(within)
    finally:
        await p.kill()
    return p
