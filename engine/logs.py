"""Logging setup for the CLI: text or JSON lines on stderr, with secrets redacted.

Under systemd, when stderr is the journal (``$JOURNAL_STREAM`` names its device and inode),
text lines start with a ``<N>`` syslog priority, which journald turns into the entry's
priority (``journalctl -p warning``), and carry no timestamp (journald stamps each entry).

Modules only ever call ``logging.getLogger(__name__)``; the CLI calls :func:`setup_logging`
once. Context that should appear on every line of a sync loop (shop, stream, ...) is set with
:func:`log_context`; it lives in a contextvar, so each asyncio task carries its own.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal, TextIO
from urllib.parse import quote

import orjson

__all__ = [
    "REDACTED",
    "Redactor",
    "add_secret",
    "current_context",
    "log_context",
    "redact",
    "setup_logging",
]

REDACTED = "***"
# Shorter secrets cannot be real credentials (and match everywhere): warned about at setup.
MIN_SECRET_LEN = 8
# A secret is replaced only as a whole token: not when a letter or digit touches either end, so
# a one-character "secret" cannot turn "temu-sync" into "***emu-***ync".
_EDGE_BEFORE, _EDGE_AFTER = r"(?<![0-9A-Za-z])", r"(?![0-9A-Za-z])"

log = logging.getLogger(__name__)

# Every attribute a bare LogRecord has; anything else on a record came from `extra=` or from
# the log context. `message`/`asctime` are added by Formatter.format, `taskName` by 3.12+.
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_CORE_JSON_KEYS = ("ts", "level", "logger", "msg", "exc", "stack")

_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "temu_sync_log_context", default=MappingProxyType({})
)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Adds ``fields`` to every log line emitted inside the block (and in tasks it creates)."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> dict[str, Any]:
    return dict(_context.get())


class Redactor:
    """Replaces every known secret with ``***``; secrets can be added while running."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        for s in secrets:
            self.add(s)

    def add(self, secret: str) -> bool:
        """Adds ``secret``; answers False when it is too short to be a real secret (it is still
        redacted, as a whole token only)."""
        if not secret:
            return True
        # A token can reach a log line URL-encoded (query strings) or JSON-escaped (a logged
        # request body), so those spellings are secrets too.
        forms = {secret, quote(secret, safe=""), json.dumps(secret)[1:-1]}
        with self._lock:
            if not forms <= self._secrets:
                self._secrets |= forms
                # Longest first, so a secret that contains another is replaced whole.
                ordered = sorted(self._secrets, key=len, reverse=True)
                alternatives = "|".join(re.escape(s) for s in ordered)
                self._pattern = re.compile(f"{_EDGE_BEFORE}(?:{alternatives}){_EDGE_AFTER}")
        return len(secret) >= MIN_SECRET_LEN

    def __call__(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None:
            return text
        return pattern.sub(REDACTED, text)

    def value(self, v: Any) -> Any:
        """Redacts a context value, keeping JSON-friendly types where it can."""
        if isinstance(v, str):
            return self(v)
        if v is None or isinstance(v, bool | int | float):
            return v
        if isinstance(v, Mapping):
            return {str(k): self.value(x) for k, x in v.items()}
        if isinstance(v, list | tuple | set | frozenset):
            return [self.value(x) for x in v]
        if isinstance(v, datetime):
            return v
        return self(str(v))


# One per process, like the root logger it protects: the OC client adds a rotated refresh
# token here without needing a handle on the logging setup.
_redactor = Redactor()


def add_secret(value: str) -> None:
    """Redacts ``value`` from every log line from now on (e.g. a freshly rotated token)."""
    if not _redactor.add(value):
        _warn_short(1)


def _warn_short(count: int) -> None:
    log.warning(
        "%d secret(s) shorter than %d characters: too short to be real credentials (check the "
        "configuration); redacted only where they stand alone",
        count,
        MIN_SECRET_LEN,
    )


def redact(text: str, extra: Iterable[str] = ()) -> str:
    """Redacts known secrets from text that leaves the process by another path (error
    columns in Postgres, HTTP error bodies); ``extra`` adds secrets only the caller knows
    (a client's own tokens), with the same rules (every spelling, longest first)."""
    extra = [s for s in extra if s]
    if extra:
        return Redactor(extra)(_redactor(text))
    return _redactor(text)


class _ContextAndRedactionFilter(logging.Filter):
    """Stamps the log context onto the record, then redacts message, args, exception text and
    every context field in place, so any formatter downstream sees only clean values."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        # Context first, then extra= (re-inserted so lines read "shop=.. stream=.. page=.."),
        # and an explicit extra= wins over the surrounding context.
        extras = {k: record.__dict__.pop(k) for k in _extra_keys(record)}
        record.__dict__.update(_context.get())
        record.__dict__.update(extras)
        r = self._redactor
        try:
            message = record.getMessage()
        except Exception:
            # A broken format string must not lose the line (or leak the args unredacted).
            message = f"{record.msg!s} (unformattable args: {record.args!r})"
        record.msg = r(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = r(record.exc_text)
        if record.stack_info:
            record.stack_info = r(record.stack_info)
        for key in _extra_keys(record):
            record.__dict__[key] = r.value(record.__dict__[key])
        return True


def _extra_keys(record: logging.LogRecord) -> list[str]:
    return [k for k in record.__dict__ if k not in _RECORD_ATTRS and not k.startswith("_")]


def _timestamp(record: logging.LogRecord) -> str:
    dt = datetime.fromtimestamp(record.created, UTC)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _plain(value: Any) -> str:
    if isinstance(value, str):
        s = value
    elif isinstance(value, datetime):
        s = value.isoformat()
    else:
        s = orjson.dumps(value, default=str).decode()
    if s and not any(c.isspace() or c in "\"'=" for c in s):
        return s
    return orjson.dumps(s).decode()


# sd-daemon(3) priorities: the kernel's syslog levels.
_SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a logging level (custom levels round down to the next one)."""
    for level, prio in _SYSLOG_PRIORITY.items():
        if levelno >= level:
            return prio
    return 7


def stderr_is_journal(env: Mapping[str, str], stream: TextIO) -> bool:
    """True when ``stream`` is the journald stream systemd connected (``JOURNAL_STREAM`` is
    ``DEVICE:INODE`` of it). A child whose stderr was redirected elsewhere inherits the
    variable, hence the comparison rather than the variable alone."""
    value = env.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep or not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (tests, closed)
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


class TextFormatter(logging.Formatter):
    """``2025-01-01T00:00:00.000Z INFO engine.sync: message shop=a stream=orders``, or for the
    journal ``<6>INFO engine.sync: message shop=a stream=orders``."""

    def __init__(self, journal: bool = False) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        line = self._format(record)
        if not self.journal:
            return line
        # journald makes each line its own entry: every line of a traceback keeps the level.
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + part for part in line.split("\n"))

    def _format(self, record: logging.LogRecord) -> str:
        head = f"{record.levelname} {record.name}: {record.getMessage()}"
        line = head if self.journal else f"{_timestamp(record)} {head}"
        extras = " ".join(f"{k}={_plain(record.__dict__[k])}" for k in _extra_keys(record))
        if extras:
            line = f"{line} {extras}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{record.stack_info}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for journald and log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in _extra_keys(record):
            # A context field must not overwrite a core key a shipper parses on.
            out[f"ctx.{key}" if key in _CORE_JSON_KEYS else key] = record.__dict__[key]
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return orjson.dumps(out, default=str).decode()


def setup_logging(
    fmt: Literal["text", "json"],
    verbosity: int,
    secrets: Iterable[str],
    stream: TextIO | None = None,
    env: Mapping[str, str] | None = None,
) -> logging.Handler:
    """Installs the handler on the root logger; calling it again replaces the previous one.

    ``verbosity``: 0 = INFO, 1 (-v) = DEBUG for engine.*, 2+ (-vv) = DEBUG everywhere and the
    aiohttp access log. ``env`` (default: the process environment) is read for
    ``JOURNAL_STREAM`` only. Returns the handler (tests remove it again).
    """
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be 'text' or 'json', got {fmt!r}")
    short = sum(1 for s in secrets if not _redactor.add(s))

    out = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(out)
    handler.set_name("temu-sync")
    journal = stderr_is_journal(os.environ if env is None else env, out)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(journal=journal))
    handler.addFilter(_ContextAndRedactionFilter(_redactor))

    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "temu-sync":
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO)
    logging.getLogger("engine").setLevel(logging.DEBUG if verbosity >= 1 else logging.INFO)
    # One line per Prometheus scrape and health probe drowns the sync log.
    logging.getLogger("aiohttp.access").setLevel(
        logging.DEBUG if verbosity >= 2 else logging.WARNING
    )
    if short:
        _warn_short(short)
    return handler
