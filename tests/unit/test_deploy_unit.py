"""deploy/: the systemd unit says what the guide and the engine rely on, the guide's config
loads with the unit's credentials, and systemd itself accepts the unit (where installed)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import load_config

DEPLOY = Path(__file__).parents[2] / "deploy"
UNIT = DEPLOY / "temu-sync.service"
GUIDE = DEPLOY / "README-systemd.md"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd's syntax as far as this unit uses it: sections, repeatable keys, comments."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"line {n}: not KEY=VALUE inside a section: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit[section][key]
    assert len(values) == 1, (section, key, values)
    return values[0]


def test_the_unit_runs_the_daemon_as_the_engine_expects() -> None:
    unit = parse_unit(UNIT.read_text())
    svc = "Service"
    argv = one(unit, svc, "ExecStart").split()
    assert argv[0].endswith("/bin/temu-sync") and argv[-1] == "run"
    assert "--log-format" not in argv  # text lines with journald priorities (JOURNAL_STREAM)
    assert one(unit, svc, "Type") == "notify"
    assert one(unit, svc, "NotifyAccess") == "main"
    assert one(unit, svc, "RestartPreventExitStatus") == "2"  # configuration error
    assert one(unit, svc, "Restart") == "on-failure"
    assert int(one(unit, svc, "WatchdogSec")) >= 60  # the daemon pings every 30 s
    assert one(unit, svc, "User") == "temu-sync"
    assert one(unit, "Install", "WantedBy") == "multi-user.target"


def test_the_guides_config_loads_with_the_units_credentials(tmp_path: Path) -> None:
    unit = parse_unit(UNIT.read_text())
    creds = dict(v.split(":", 1) for v in unit["Service"]["LoadCredential"])
    assert set(creds) == {"temu_app_secret", "temu_access_token"}
    (toml,) = re.findall(r"```toml\n(.*?)```", GUIDE.read_text(), re.S)
    config = tmp_path / "config.toml"
    config.write_text(toml)
    credentials_directory = tmp_path / "credentials"
    credentials_directory.mkdir()
    for name in creds:
        (credentials_directory / name).write_text(f"value-of-{name}\n")
    settings = load_config(config, env={"CREDENTIALS_DIRECTORY": str(credentials_directory)})
    assert settings.apps[0].app_secret.get() == "value-of-temu_app_secret"
    assert settings.shops[0].access_token.get() == "value-of-temu_access_token"
    # The guide no longer needs a rewritten copy of the config for one-off commands.
    assert "sed " not in GUIDE.read_text()
    assert "--config /etc/temu-sync/config.toml status" in GUIDE.read_text()


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here (the parse tests above still ran)")
    # verify insists the program exists: point ExecStart at this environment's temu-sync.
    program = Path(sys.executable).parent / "temu-sync"
    assert program.exists()
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={program}", UNIT.read_text(), flags=re.M)
    unit = tmp_path / "temu-sync.service"
    unit.write_text(text)
    out = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [ln for ln in out.stderr.splitlines() if "temu-sync.service" in ln]
    assert out.returncode == 0 and not problems, out.stderr
