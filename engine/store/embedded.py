"""Embedded Postgres (pgserver) kept under ``data_dir/pg`` and reused across runs."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

# pgserver logs every pg_ctl command line and its output at INFO; an operator wants none of it
# unless something fails (failures are logged at ERROR and still show).
_PGSERVER_LOGGER = "pgserver"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_our_postmaster(pid: int, pgdata: Path) -> bool:
    """True when ``pid`` is a live postgres serving ``pgdata`` (not a recycled pid)."""
    try:
        import psutil

        proc = psutil.Process(pid)
        return proc.name() == "postgres" and str(pgdata) in " ".join(proc.cmdline())
    except Exception:  # gone, access denied, no psutil: any doubt means "not ours"
        return False


def clear_stale_state(pgdata: Path) -> list[str]:
    """Removes what a crashed run leaves behind; returns what it removed (for the log).

    - ``postmaster.pid`` naming a dead process, or a pid now reused by something else:
      pgserver would take it for a running server and hand out a dead socket.
    - dead pids in pgserver's handle list: with them present the last live user never
      stops the server, because it does not believe it is the last.
    """
    removed: list[str] = []
    pidfile = pgdata / "postmaster.pid"
    try:
        first = pidfile.read_text().splitlines()[0].strip()
        pid = int(first)
    except (OSError, IndexError, ValueError):
        pid = None
    if pidfile.exists() and (pid is None or not _is_our_postmaster(pid, pgdata)):
        pidfile.unlink(missing_ok=True)
        removed.append(f"stale postmaster.pid (pid {pid})")
    handles = pgdata / ".handle_pids.json"
    try:
        pids = [int(p) for p in json.loads(handles.read_text())]
    except (OSError, ValueError, TypeError):
        pids = []
    live = [p for p in pids if _pid_alive(p)]
    if live != pids:
        handles.write_text(json.dumps(live))
        removed.append(f"dead handle pids {sorted(set(pids) - set(live))}")
    return removed


class EmbeddedPostgres:
    """``start()`` returns a libpq URL (Unix socket); ``stop()`` stops the server when this
    process is its last user. ``cleanup="delete"`` also removes the data (tests)."""

    def __init__(self, data_dir: Path, *, cleanup: Literal["stop", "delete"] = "stop") -> None:
        self.data_dir = Path(data_dir)
        self.pgdata = self.data_dir.resolve() / "pg"
        self.cleanup = cleanup
        self._server: Any = None

    def start(self) -> str:
        logging.getLogger(_PGSERVER_LOGGER).setLevel(logging.WARNING)
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (services, containers);
            # its /tmp fallback is fine for pgserver's lock file.
            warnings.simplefilter("ignore")
            from pgserver.postgres_server import PostgresServer, get_server

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        with PostgresServer._lock:
            for what in clear_stale_state(self.pgdata) if self.pgdata.exists() else []:
                log.warning("embedded Postgres: removed %s left by a crashed run", what)
        self._server = get_server(self.pgdata, cleanup_mode=self.cleanup)
        url: str = self._server.get_uri()
        log.info("embedded Postgres running, data in %s", self.pgdata)
        return url

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("embedded Postgres not started")
        url: str = self._server.get_uri()
        return url

    def stop(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        server.cleanup()
        log.info("embedded Postgres stopped (%s)", self.pgdata)

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
