"""What an operator sees from the CLI when the configuration is wrong or Postgres
refuses connections at start-up: a clear message naming the key or the server, the documented
exit code, and never a secret.

(The loader itself is unit-tested in tests/unit/test_config.py; Postgres restarting under a
running daemon in tests/e2e/test_daemon_db_restart.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.cli import main
from tests.e2e.daemon_harness import free_port
from tests.fixtures_proc import run_cli

APP_SECRET = "app-secret-7f3c9e1d5b"
TOKEN = "shop-token-2a8d4f6b0c"
DB_PASSWORD = "db-pass-4e1b7a9c3d"
SECRETS = (APP_SECRET, TOKEN, DB_PASSWORD)

GOOD_APP = (
    f'[[apps]]\napp_key = "k1"\napp_secret = "{APP_SECRET}"\nbase_url = "http://127.0.0.1:9/x"\n'
)
GOOD_SHOP = f'[[shops]]\nid = "s1"\napp_key = "k1"\naccess_token = "{TOKEN}"\n'
DB = '[database]\nurl = "postgresql://postgres@127.0.0.1:9/postgres"\n'

# (case, config text, what the message must name)
BAD_CONFIGS = [
    (
        "unknown key",
        DB + GOOD_APP + GOOD_SHOP + "[sync]\npoll_intervall_s = 5\n",
        "sync.poll_intervall_s",
    ),
    ("unknown table", DB + GOOD_APP + GOOD_SHOP + "[syncing]\norders = true\n", "syncing"),
    (
        "wrong type",
        DB + GOOD_APP.replace("base_url", 'qps = "fast"\nbase_url') + GOOD_SHOP,
        "apps[0].qps",
    ),
    ("wrong type (bool)", DB + GOOD_APP + GOOD_SHOP + '[sync]\norders = "yes"\n', "sync.orders"),
    (
        "missing secret",
        DB + GOOD_APP.replace(f'app_secret = "{APP_SECRET}"\n', "") + GOOD_SHOP,
        "apps[0].app_secret",
    ),
    (
        "unreadable _file",
        DB
        + GOOD_APP
        + GOOD_SHOP.replace(
            f'access_token = "{TOKEN}"', 'access_token_file = "/nonexistent/dir/token"'
        ),
        "shops[0].access_token_file",
    ),
    (
        "_file is a directory",
        DB + GOOD_APP + GOOD_SHOP.replace(f'access_token = "{TOKEN}"', 'access_token_file = "/"'),
        "shops[0].access_token_file",
    ),
    (
        "unset _env",
        DB
        + GOOD_APP.replace(
            f'app_secret = "{APP_SECRET}"', 'app_secret_env = "TEMU_SYNC_TEST_SURELY_UNSET"'
        )
        + GOOD_SHOP,
        "apps[0].app_secret_env",
    ),
    (
        "two forms of one secret",
        DB
        + GOOD_APP.replace(
            f'app_secret = "{APP_SECRET}"', f'app_secret = "{APP_SECRET}"\napp_secret_env = "HOME"'
        )
        + GOOD_SHOP,
        "apps[0].app_secret",
    ),
    ("duplicate shop id", DB + GOOD_APP + GOOD_SHOP + GOOD_SHOP, "shops[1].id"),
    (
        "shop names an unknown app",
        DB + GOOD_APP + GOOD_SHOP.replace('app_key = "k1"', 'app_key = "k9"'),
        "shops[0].app_key",
    ),
    ("not TOML", DB + GOOD_APP + GOOD_SHOP + "[sync\n", "config.toml"),
]


def _check_refusal(case: str, key: str, cfg: Path, rc: int, out: str, err: str) -> None:
    output = out + err
    assert rc == 2, output
    assert "configuration error" in output and key in output, output
    assert str(cfg) in output, output  # and the file
    assert "Traceback" not in output, output
    for secret in SECRETS:
        assert secret not in output, f"{case}: a secret was printed: {output}"
    assert out == "", "no summary for a run that never started"


@pytest.mark.parametrize(("case", "text", "key"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_exits_2_naming_the_key(
    case: str, text: str, key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # In-process: the configuration is refused before any event loop, logging set-up or
    # connection, so the CLI's own entry point gives exactly what the process would print.
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    rc = main(["--config", str(cfg), "run", "--once", "--json"])
    captured = capsys.readouterr()
    _check_refusal(case, key, cfg, rc, captured.out, captured.err)


async def test_bad_config_from_the_real_process(tmp_path: Path) -> None:
    # One case end to end: the exit code and streams of `python -m engine` itself.
    case, text, key = BAD_CONFIGS[0]
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    cli = await run_cli(
        tmp_path, "cli", ["--config", str(cfg), "run", "--once", "--json"], within=30
    )
    _check_refusal(case, key, cfg, *cli.result())


def _db_config(tmp_path: Path, url: str) -> Path:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[database]\nurl = "{url}"\n' + GOOD_APP + GOOD_SHOP)
    return cfg


@pytest.mark.parametrize(
    "command",
    [
        ["migrate"],
        ["status"],
        ["run", "--once", "--json"],
        ["reconcile", "--once", "--json"],
        ["backfill", "--since", "2025-01-01T00:00:00Z", "--json"],
    ],
)
async def test_postgres_refusing_connections_at_startup(command: list[str], tmp_path: Path) -> None:
    """A port nobody listens on: one-shot commands do not wait for Postgres (the daemon does);
    they say which server could not be used and exit 1, without the URL's password."""
    port = free_port()
    cfg = _db_config(tmp_path, f"postgresql://postgres:{DB_PASSWORD}@127.0.0.1:{port}/postgres")
    cli = await run_cli(tmp_path, "cli", ["--config", str(cfg), *command], within=30)
    output = cli.stdout + cli.stderr
    assert cli.returncode == 1, output
    assert f"cannot use Postgres at 127.0.0.1:{port}/postgres" in output, output
    assert "refused" in output.lower(), output
    assert "Traceback" not in output, output
    for secret in SECRETS:
        assert secret not in output, f"a secret was printed: {output}"
