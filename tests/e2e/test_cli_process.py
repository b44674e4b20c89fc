"""`python -m engine` as an operator runs it: --version, and Ctrl-C on a one-shot command."""

from __future__ import annotations

import importlib.metadata
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def test_version_prints_and_exits_0() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "engine", "--version"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0
    assert out.stdout.strip() == f"temu-sync {importlib.metadata.version('temu-sync')}"


def test_sigint_during_a_one_shot_command_exits_130(tmp_path: Path) -> None:
    # A "Postgres" that accepts connections and never answers keeps `migrate` waiting.
    with socket.socket() as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen()
        port = black_hole.getsockname()[1]
        config = tmp_path / "config.toml"
        config.write_text(f'[database]\nurl = "postgresql://postgres@127.0.0.1:{port}/postgres"\n')
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "--config", str(config), "migrate"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            black_hole.settimeout(30)
            conn, _ = black_hole.accept()  # the command is now inside its event loop
            time.sleep(0.3)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
            conn.close()
        finally:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err


def test_an_error_under_the_journal_has_a_priority_prefix(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[database]\nurl = "postgresql://postgres@127.0.0.1:9/postgres"\n')
    stderr = tmp_path / "stderr"
    stderr.touch()
    st = stderr.stat()
    env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
    with stderr.open("w") as err:
        proc = subprocess.run(
            [sys.executable, "-m", "engine", "--config", str(config), "migrate"],
            stderr=err,
            env=env,
            timeout=60,
        )
    assert proc.returncode == 1
    assert stderr.read_text().startswith("<3>ERROR engine.cli: cannot use Postgres")
