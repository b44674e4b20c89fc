from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import orjson
import pytest

from engine.config import database_passwords
from engine.daemon.health import HealthBoard
from engine.logs import (
    Redactor,
    add_secret,
    log_context,
    redact,
    setup_logging,
    syslog_priority,
)
from engine.reconcile.oc_rmas import PgTokenStore

APP_SECRET = "appsecret-9f8e7d6c5b4a"
ACCESS_TOKEN = "shop+token/1234567890abcdef=="
ROTATED = "oc-rotated-refresh-token-77"

Setup = Callable[..., io.StringIO]


@pytest.fixture
def setup() -> Iterator[Setup]:
    installed: list[logging.Handler] = []
    root = logging.getLogger()
    saved_level = root.level

    def _setup(fmt: Literal["text", "json"] = "json", verbosity: int = 0) -> io.StringIO:
        out = io.StringIO()
        installed.append(setup_logging(fmt, verbosity, [APP_SECRET, ACCESS_TOKEN], out))
        return out

    yield _setup
    for h in installed:
        root.removeHandler(h)
    root.setLevel(saved_level)
    logging.getLogger("engine").setLevel(logging.NOTSET)


def _json_lines(out: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def test_json_lines_parse_and_carry_context_fields(setup: Setup) -> None:
    out = setup("json")
    log = logging.getLogger("engine.sync.orders")
    with log_context(shop="us-main", stream="orders"):
        log.info("page %d written", 3, extra={"api_type": "bg.order.list.v2.get"})
        with log_context(task=42):
            log.warning("nested")
    log.info("outside")

    first, nested, outside = _json_lines(out)
    assert first["msg"] == "page 3 written"
    assert first["level"] == "INFO"
    assert first["logger"] == "engine.sync.orders"
    assert str(first["ts"]).endswith("Z")
    assert first["shop"] == "us-main" and first["stream"] == "orders"
    assert first["api_type"] == "bg.order.list.v2.get"
    assert nested["task"] == 42 and nested["shop"] == "us-main"
    assert "shop" not in outside and "task" not in outside


async def test_context_is_per_asyncio_task(setup: Setup) -> None:
    out = setup("json")
    log = logging.getLogger("engine.sync")

    async def loop(shop: str) -> None:
        with log_context(shop=shop):
            await asyncio.sleep(0)
            log.info("tick")

    await asyncio.gather(loop("a"), loop("b"))
    assert sorted(str(line["shop"]) for line in _json_lines(out)) == ["a", "b"]


def test_explicit_extra_beats_context(setup: Setup) -> None:
    out = setup("json")
    with log_context(shop="outer"):
        logging.getLogger("engine").info("x", extra={"shop": "inner"})
    assert _json_lines(out)[0]["shop"] == "inner"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_secrets_never_reach_output(setup: Setup, fmt: Literal["text", "json"]) -> None:
    out = setup(fmt)
    log = logging.getLogger("engine.temu")
    add_secret(ROTATED)  # after setup: a token rotated at runtime

    log.info("calling with token %s", ACCESS_TOKEN)
    log.info(f"secret inline {APP_SECRET}")
    log.info("rotated", extra={"token": ROTATED, "nested": {"t": [ACCESS_TOKEN]}})
    with log_context(shop="s", auth=f"Bearer {ACCESS_TOKEN}"):
        log.info("in context")
    log.info("url-encoded %s", "access_token=" + quote(ACCESS_TOKEN, safe=""))
    try:
        raise RuntimeError(f"upstream said token {ROTATED} is invalid")
    except RuntimeError:
        log.exception("failed")

    text = out.getvalue()
    for secret in (APP_SECRET, ACCESS_TOKEN, ROTATED):
        assert secret not in text
    assert "1234567890abcdef" not in text
    assert text.count("***") >= 6
    assert "upstream said token *** is invalid" in text
    if fmt == "json":
        lines = _json_lines(out)
        assert all(isinstance(line, dict) for line in lines)
        assert "RuntimeError" in str(lines[-1]["exc"])
        assert lines[2]["nested"] == {"t": ["***"]}


def test_text_format_is_one_readable_line(setup: Setup) -> None:
    out = setup("text")
    with log_context(shop="us-main"):
        logging.getLogger("engine.x").info("hello", extra={"note": "two words"})
    line = out.getvalue().rstrip("\n")
    assert "\n" not in line
    assert " INFO engine.x: hello " in line
    assert line.endswith('shop=us-main note="two words"')


def test_verbosity_levels(setup: Setup) -> None:
    out = setup("json", 0)
    logging.getLogger("engine.a").debug("hidden")
    logging.getLogger("aiohttp.access").info("GET /metrics")
    assert out.getvalue() == ""

    out = setup("json", 1)
    logging.getLogger("engine.a").debug("shown")
    logging.getLogger("aiohttp.access").info("GET /metrics")
    assert [line["msg"] for line in _json_lines(out)] == ["shown"]

    out = setup("json", 2)
    logging.getLogger("aiohttp.access").info("GET /metrics")
    assert [line["msg"] for line in _json_lines(out)] == ["GET /metrics"]


def test_setup_twice_does_not_duplicate_lines(setup: Setup) -> None:
    first = setup("json")
    second = setup("json")
    logging.getLogger("engine").info("once")
    assert first.getvalue() == ""
    assert len(_json_lines(second)) == 1


def test_redact_for_other_sinks() -> None:
    add_secret("db-stored-error-secret")
    assert redact("error: db-stored-error-secret rejected") == "error: *** rejected"


def _journal_env(path: Path) -> dict[str, str]:
    st = path.stat()
    return {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


def _log_to_file(path: Path, env: dict[str, str], fmt: Literal["text", "json"] = "text") -> str:
    root = logging.getLogger()
    saved = root.level
    with path.open("w", encoding="utf-8") as f:
        handler = setup_logging(fmt, 0, [APP_SECRET], f, env=env)
        try:
            log = logging.getLogger("engine.test")
            log.info("hello %s", APP_SECRET)
            log.warning("slow", extra={"shop": "s1"})
            try:
                raise ValueError("boom")
            except ValueError:
                log.exception("failed")
        finally:
            root.removeHandler(handler)
            root.setLevel(saved)
            logging.getLogger("engine").setLevel(logging.NOTSET)
    return path.read_text(encoding="utf-8")


def test_lines_for_the_journal_carry_priorities_and_no_timestamp(tmp_path: Path) -> None:
    path = tmp_path / "stderr"
    path.touch()
    lines = _log_to_file(path, _journal_env(path)).splitlines()
    assert lines[0] == "<6>INFO engine.test: hello ***"
    assert lines[1] == "<4>WARNING engine.test: slow shop=s1"
    assert lines[2] == "<3>ERROR engine.test: failed"
    # Each traceback line is its own journal entry: it keeps the error's priority.
    assert lines[3:] and all(ln.startswith("<3>") for ln in lines[3:])
    assert lines[-1] == "<3>ValueError: boom"


def test_plain_lines_without_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "stderr"
    path.touch()
    other = tmp_path / "elsewhere"
    other.touch()
    # No JOURNAL_STREAM; one naming another file (inherited by a redirected child); garbage.
    for env in ({}, _journal_env(other), {"JOURNAL_STREAM": "not:numbers"}):
        first = _log_to_file(path, env).splitlines()[0]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z INFO engine\.test: hello \*\*\*", first)


def test_json_stays_json_under_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "stderr"
    path.touch()
    first = _log_to_file(path, _journal_env(path), "json").splitlines()[0]
    assert orjson.loads(first)["msg"] == "hello ***"


def test_syslog_priorities() -> None:
    assert [syslog_priority(n) for n in (5, 10, 20, 25, 30, 40, 50, 60)] == [7, 7, 6, 6, 4, 3, 2, 2]


def test_short_secrets_are_redacted_only_as_whole_tokens() -> None:
    r = Redactor()
    assert r.add("t") is False and r.add("s") is False  # too short to be real: flagged
    assert r.add("real-secret-123") is True
    assert r("temu-sync started, token t used") == "temu-sync started, token *** used"
    assert r("s") == "***"
    assert r("key=real-secret-123&x=1") == "key=***&x=1"
    # A secret inside a longer token is not a whole token: the message is left readable.
    assert r("xreal-secret-123y") == "xreal-secret-123y"


def test_setup_warns_about_secrets_too_short_to_be_real(setup: Setup) -> None:
    out = io.StringIO()
    handler = setup_logging("text", 0, ["Q7", APP_SECRET], out)
    try:
        logging.getLogger("engine.x").info("temu-sync Q7 ok")
    finally:
        logging.getLogger().removeHandler(handler)
    text = out.getvalue()
    assert "1 secret(s) shorter than 8 characters" in text
    assert "temu-sync *** ok" in text and "Q7" not in text


@pytest.mark.parametrize(
    ("url", "password"),
    [
        ("postgresql://u:pw-in-userinfo@db/x", "pw-in-userinfo"),
        ("postgresql://u@db/x?password=pw-in-query&sslmode=require", "pw-in-query"),
        ("host=db user=u password=pw-keyword dbname=x", "pw-keyword"),
        ("host=db password='pw with \\' quote' dbname=x", "pw with ' quote"),
    ],
)
def test_database_passwords_in_every_spelling_are_secrets(url: str, password: str) -> None:
    assert database_passwords(url) == [password]
    r = Redactor(database_passwords(url))
    assert password not in r(f"connect failed: {password}")


def test_health_and_rotated_oc_tokens_are_redacted() -> None:
    board = HealthBoard(slack_s=10, clock=lambda: 0.0, wall=lambda: 1.7e9)
    board.register("reconciler", 15)
    add_secret("health-visible-secret-42")
    board.failed("reconciler", "boom: health-visible-secret-42")
    _, details = board.health()
    assert "health-visible-secret-42" not in orjson.dumps(details).decode()


async def test_rotated_oc_tokens_reach_the_redactor() -> None:
    class _Store:
        async def save_oc_tokens(self, *args: object) -> None:
            return None

    tokens = PgTokenStore(_Store())  # type: ignore[arg-type]
    await tokens.save("client", "rotated-refresh-0001", "access-token-0001", 0.0)
    assert redact("sent rotated-refresh-0001 / access-token-0001") == "sent *** / ***"
