"""The command line's own surface: global options before or after the command, --help's
epilog, and the exit code of an interrupted command."""

from __future__ import annotations

import argparse
import importlib.metadata
from collections.abc import Coroutine
from typing import Any

import pytest

from engine import cli
from engine.errors import ExitCode


def parse(*argv: str) -> argparse.Namespace:
    return cli._merge_global_options(cli.build_parser().parse_args(argv))


def test_global_options_work_after_the_command() -> None:
    args = parse("status", "--log-format", "json", "-v", "--config", "/etc/x.toml")
    assert (args.log_format, args.verbose, args.config) == ("json", 1, "/etc/x.toml")
    args = parse("labels", "import", "f.jsonl", "-vv")
    assert (args.file, args.verbose) == ("f.jsonl", 2)


def test_options_before_the_command_are_kept_and_later_ones_win() -> None:
    args = parse("--log-format", "json", "-v", "run", "--once")
    assert (args.log_format, args.verbose, args.once) == ("json", 1, True)
    args = parse("--log-format", "json", "-v", "run", "--log-format", "text", "-v")
    assert (args.log_format, args.verbose) == ("text", 2)
    assert parse("migrate").log_format == "text"


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"temu-sync {importlib.metadata.version('temu-sync')}\n"


def test_help_documents_exit_codes_environment_and_config_discovery(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    for needle in ("130", "TEMU_SYNC_CONFIG", "CREDENTIALS_DIRECTORY", "JOURNAL_STREAM"):
        assert needle in out
    assert "$TEMU_SYNC_CONFIG, else ./config.toml" in out


def test_ctrl_c_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(coro: Coroutine[Any, Any, int]) -> int:
        coro.close()
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_run", interrupted)
    assert cli.main(["simulate"]) == ExitCode.INTERRUPTED == 130
