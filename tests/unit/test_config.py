"""config.toml loading: every mistake names the file and the key, and no secret leaks."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import ConfigError, load_config

GOOD = """
[database]
url = "postgresql://localhost/db"

[[apps]]
app_key = "k1"
app_secret = "s3cr3t-app"
qps = 20

[[shops]]
id = "us-main"
app_key = "k1"
access_token_env = "SHOP_TOKEN"

[sync]
start = "2025-01-01T00:00:00Z"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text)
    return p


def test_good_config_loads_with_secret_forms(tmp_path: Path) -> None:
    s = load_config(write(tmp_path, GOOD), env={"SHOP_TOKEN": "tok-123"})
    assert s.apps[0].app_secret.get() == "s3cr3t-app"
    assert s.shops[0].access_token.get() == "tok-123"
    assert s.apps[0].router_url == "https://openapi-b-us.temu.com/openapi/router"
    assert s.sync.start.year == 2025
    assert "s3cr3t-app" not in repr(s)
    assert "tok-123" not in repr(s)


def test_secret_from_file_is_trimmed(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("  from-file\n")
    text = GOOD.replace('access_token_env = "SHOP_TOKEN"', f'access_token_file = "{secret}"')
    s = load_config(write(tmp_path, text), env={})
    assert s.shops[0].access_token.get() == "from-file"


def test_relative_secret_file_is_a_systemd_credential(tmp_path: Path) -> None:
    # One config for the service and for `systemd-run -p LoadCredential=...` one-offs: each
    # gets its own $CREDENTIALS_DIRECTORY, the config names only the credential.
    service = tmp_path / "run" / "credentials" / "temu-sync.service"
    service.mkdir(parents=True)
    (service / "temu_access_token").write_text("service-token\n")
    cli = tmp_path / "run" / "credentials" / "temu-sync-cli.service"
    cli.mkdir(parents=True)
    (cli / "temu_access_token").write_text("cli-token\n")
    text = GOOD.replace(
        'access_token_env = "SHOP_TOKEN"', 'access_token_file = "temu_access_token"'
    )
    path = write(tmp_path, text)
    for creds, expected in ((service, "service-token"), (cli, "cli-token")):
        s = load_config(path, env={"CREDENTIALS_DIRECTORY": str(creds)})
        assert s.shops[0].access_token.get() == expected


def test_absolute_secret_file_ignores_credentials_directory(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("absolute")
    text = GOOD.replace('access_token_env = "SHOP_TOKEN"', f'access_token_file = "{secret}"')
    s = load_config(write(tmp_path, text), env={"CREDENTIALS_DIRECTORY": "/nonexistent"})
    assert s.shops[0].access_token.get() == "absolute"


def test_relative_secret_file_without_credentials_directory_says_so(tmp_path: Path) -> None:
    text = GOOD.replace('access_token_env = "SHOP_TOKEN"', 'access_token_file = "no_such_cred"')
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text), env={})
    assert exc.value.key == "shops[0].access_token_file"
    assert "CREDENTIALS_DIRECTORY" in str(exc.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mysql://app:pw-9f3@127.0.0.1/db", "scheme 'mysql'"),
        ("not a url", "no scheme"),
        ("host=127.0.0.1 user=postgres password=pw-9f3 dbname=db", "no scheme"),
    ],
)
def test_a_database_url_that_is_not_a_postgres_url_is_a_config_error(
    tmp_path: Path, url: str, shown: str
) -> None:
    """asyncpg takes postgresql:// and postgres:// URLs only: anything else is a usage error
    naming the key and the file (exit 2), not a connection failure later, and the URL itself
    (it may carry a password) is not repeated."""
    path = write(tmp_path, GOOD.replace("postgresql://localhost/db", url))
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={"SHOP_TOKEN": "t"})
    assert exc.value.key == "database.url"
    assert str(path) in str(exc.value) and shown in str(exc.value)
    assert "pw-9f3" not in str(exc.value)


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda t: t + "\n[bogus]\nx = 1\n", "bogus"),
        (lambda t: t.replace('url = "postgresql://localhost/db"', "url = 5"), "database.url"),
        (lambda t: t.replace("qps = 20", 'qps = "fast"'), "apps[0].qps"),
        (lambda t: t.replace('app_secret = "s3cr3t-app"', ""), "apps[0].app_secret"),
        (
            lambda t: t.replace(
                'access_token_env = "SHOP_TOKEN"', 'access_token_env = "NOT_SET_ANYWHERE"'
            ),
            "shops[0].access_token_env",
        ),
        (
            lambda t: t.replace(
                'access_token_env = "SHOP_TOKEN"', 'access_token_file = "/nonexistent/token"'
            ),
            "shops[0].access_token_file",
        ),
        (
            lambda t: t.replace(
                'id = "us-main"\napp_key = "k1"', 'id = "us-main"\napp_key = "nope"'
            ),
            "shops[0].app_key",
        ),
        (
            lambda t: t + '\n[[shops]]\nid = "us-main"\napp_key = "k1"\naccess_token = "x"\n',
            "shops[1].id",
        ),
        (lambda t: t.replace("[sync]", "[sync]\npoll_interval_s = -1"), "sync.poll_interval_s"),
        (
            lambda t: t.replace('start = "2025-01-01T00:00:00Z"', 'start = "yesterday"'),
            "sync.start",
        ),
        (lambda t: t + '\n[reconciler]\nlogistic_mode = "teleport"\n', "reconciler.logistic_mode"),
        (lambda t: t.replace("qps = 20", "qps = 20\nsurprise = true"), "apps[0].surprise"),
        (
            lambda t: t + '\n[orange_connex]\nenabled = true\nclient_id = "c"\n',
            "orange_connex.refresh_token",
        ),
        (lambda t: t.replace("[sync]", '[sync]\norders = "yes"'), "sync.orders"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, mutate: object, key: str) -> None:
    assert callable(mutate)
    path = write(tmp_path, mutate(GOOD))
    with pytest.raises(ConfigError) as err:
        load_config(path, env={"SHOP_TOKEN": "tok-123"})
    assert err.value.key == key
    assert str(path) in str(err.value)
    assert "s3cr3t-app" not in str(err.value)
    assert "tok-123" not in str(err.value)


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[database\n"))


def test_two_forms_of_one_secret_is_an_error(tmp_path: Path) -> None:
    text = GOOD.replace(
        'access_token_env = "SHOP_TOKEN"', 'access_token_env = "SHOP_TOKEN"\naccess_token = "x"'
    )
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), env={"SHOP_TOKEN": "t"})
    assert err.value.key == "shops[0].access_token"


def test_database_url_can_come_from_env_or_file_and_its_password_is_redacted(
    tmp_path: Path,
) -> None:
    url = "postgresql://sync:pg-pass-42@db.internal:5432/temu"
    text = GOOD.replace('url = "postgresql://localhost/db"', 'url_env = "DB_URL"')
    s = load_config(write(tmp_path, text), env={"DB_URL": url, "SHOP_TOKEN": "t"})
    assert s.database.url == url
    assert "pg-pass-42" in s.secrets()  # the log filter hides it

    cred = tmp_path / "db-url"
    cred.write_text(url + "\n")
    text = GOOD.replace('url = "postgresql://localhost/db"', f'url_file = "{cred}"')
    assert load_config(write(tmp_path, text), env={"SHOP_TOKEN": "t"}).database.url == url

    text = GOOD.replace('url = "postgresql://localhost/db"', 'url_env = "NOT_SET"')
    with pytest.raises(ConfigError, match=r"database\.url_env"):
        load_config(write(tmp_path, text), env={"SHOP_TOKEN": "t"})


@pytest.mark.parametrize(
    ("extra", "key", "needle"),
    [
        ('[http]\nlisten = ":9187"\n', "http.listen", "needs a host"),
        ('[http]\nlisten = "127.0.0.1:70000"\n', "http.listen", "1-65535"),
        ('[http]\nlisten = "localhost"\n', "http.listen", "HOST:PORT"),
        ("pool_min = 8\npool_max = 4\n", "database.pool_min", "<= pool_max"),
        ("pool_max = 1\n", "database.pool_max", ">= 4"),
        ("pool_max = 2\n", "database.pool_max", ">= 4"),
        ("pool_max = 3\n", "database.pool_max", ">= 4"),
        ("lock_timeout_s = 90\n", "database.lock_timeout_s", "statement_timeout_s"),
        ("[apps-extra]timeout_s = 61\n", "apps[0].timeout_s", "<= 60"),
        ('[reconciler]\nlease_s = 20\n', "reconciler.lease_s", "outlast one Temu call"),
    ],
)
def test_values_that_would_fail_at_start_fail_at_load(
    tmp_path: Path, extra: str, key: str, needle: str
) -> None:
    if extra.startswith("[apps-extra]"):
        text = GOOD.replace("qps = 20\n", "qps = 20\n" + extra.removeprefix("[apps-extra]"))
    elif extra.startswith("[http]") or extra.startswith("[reconciler]"):
        text = GOOD + extra
    else:
        text = GOOD.replace(
            'url = "postgresql://localhost/db"\n', 'url = "postgresql://localhost/db"\n' + extra
        )
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), env={"SHOP_TOKEN": "t"})
    assert err.value.key == key
    assert needle in str(err.value)


def test_deadlines_have_defaults_that_fit_a_page_write(tmp_path: Path) -> None:
    s = load_config(write(tmp_path, GOOD), env={"SHOP_TOKEN": "t"})
    assert s.database.statement_timeout_s == 60
    assert s.database.lock_timeout_s == 10
    assert s.database.pool_max >= 4
