"""A TCP proxy in front of Postgres that can go silent: while frozen it forwards nothing in
either direction and leaves new connections hanging, like a frozen host or a black-holed
network (a lock or a stopped server answers; this does not, not even a cancel request)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit


class SilentPostgres:
    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        socket_dir = parse_qs(parts.query).get("host", [""])[0]
        self._port = parts.port or 5432
        self._unix = f"{socket_dir}/.s.PGSQL.{self._port}" if socket_dir.startswith("/") else None
        self._host = parts.hostname or "127.0.0.1"
        self._user = parts.username or "postgres"
        self._db = parts.path.lstrip("/") or "postgres"
        self._awake = asyncio.Event()
        self._awake.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.url = ""

    def freeze(self) -> None:
        self._awake.clear()

    def thaw(self) -> None:
        self._awake.set()

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._unix is not None:
            return await asyncio.open_unix_connection(self._unix)
        return await asyncio.open_connection(self._host, self._port)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await src.read(65536):
                await self._awake.wait()
                dst.write(data)
                await dst.drain()
        dst.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._awake.wait()
        up_r, up_w = await self._open()
        for pipe in (self._pipe(reader, up_w), self._pipe(up_r, writer)):
            task = asyncio.ensure_future(pipe)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[SilentPostgres]:
        server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        self.url = f"postgresql://{self._user}@127.0.0.1:{port}/{self._db}"
        try:
            yield self
        finally:
            self.thaw()
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
