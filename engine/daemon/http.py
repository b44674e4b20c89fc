"""The daemon's HTTP surface: /healthz, /metrics and the admin API for return labels.

Every answer is JSON except /metrics, including errors aiohttp would answer in plain text
(unknown route, wrong method, body too large), so scripts can always parse the reply.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from engine.config import Secret
from engine.daemon.metrics import Metrics
from engine.reconcile.ports import LabelRejected, LabelSubmitter, SubmitResult

__all__ = [
    "HealthSource",
    "LabelRejected",
    "LabelSubmitter",
    "SubmitResult",
    "build_app",
    "parse_listen",
    "start_http",
    "stop_http",
]

log = logging.getLogger(__name__)

# Headers of an aiohttp HTTPException worth keeping when it is re-answered as JSON.
_KEPT_HEADERS = ("Allow", "WWW-Authenticate")


class HealthSource(Protocol):
    def health(self) -> tuple[bool, dict[str, Any]]:
        """(ok, details); when not ok, details should carry a human-readable ``reason``."""
        ...


def _json(payload: dict[str, Any], status: int = 200, **headers: str) -> web.Response:
    return web.Response(
        body=orjson.dumps(payload, default=str),
        status=status,
        content_type="application/json",
        headers=headers or None,
    )


def _error(status: int, message: str, **headers: str) -> web.Response:
    return _json({"error": message}, status, **headers)


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kept = {h: exc.headers[h] for h in _KEPT_HEADERS if h in exc.headers}
        return _error(exc.status, exc.reason.lower(), **kept)
    except Exception:
        log.exception("unhandled error answering %s %s", request.method, request.path)
        return _error(500, "internal error")


class _Handlers:
    def __init__(
        self,
        metrics: Metrics,
        health: HealthSource,
        admin_token: Secret,
        label_submitter: LabelSubmitter | Callable[[], LabelSubmitter | None] | None,
        max_body_bytes: int,
    ) -> None:
        self._metrics = metrics
        self._started = time.monotonic()
        self._health = health
        # Only the digest is kept: comparing fixed-length digests keeps the comparison
        # constant-time even in the token's length.
        self._token_digest = (
            hashlib.sha256(admin_token.get().encode()).digest() if admin_token else None
        )
        # A provider when the queue appears later (the server is up before Postgres is).
        self._submitter = (
            label_submitter
            if label_submitter is None or callable(label_submitter)
            else (lambda: label_submitter)
        )
        self._max_body = max_body_bytes

    async def livez(self, request: web.Request) -> web.Response:
        """Liveness: answered by the event loop itself, so it depends on nothing outside the
        process (not Temu, not Orange Connex, not Postgres): a probe restarts only a wedged
        process, never one that waits correctly for a dependency."""
        return _json({"status": "alive", "uptime_s": round(time.monotonic() - self._started, 1)})

    async def healthz(self, request: web.Request) -> web.Response:
        try:
            ok, details = self._health.health()
        except Exception as exc:
            log.exception("health check raised")
            ok, details = False, {"reason": f"health check failed: {type(exc).__name__}"}
        rest = {k: v for k, v in details.items() if k != "status"}
        if ok:
            return _json({"status": "ok", **rest})
        rest.setdefault("reason", "unhealthy")
        return _json({"status": "unhealthy", **rest}, 503)

    def _authorized(self, request: web.Request) -> bool:
        assert self._token_digest is not None
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        digest = hashlib.sha256(presented.strip().encode()).digest()
        return hmac.compare_digest(digest, self._token_digest)

    async def fulfillment(self, request: web.Request) -> web.Response:
        if self._token_digest is None:
            return _error(403, "admin API is disabled: set [http] admin_token to enable it")
        if not self._authorized(request):
            log.warning("admin API: rejected credentials from %s", request.remote)
            return _error(401, "missing or wrong bearer token", **{"WWW-Authenticate": "Bearer"})
        # Checked before reading, so an oversized upload is refused without buffering it.
        if request.content_length is not None and request.content_length > self._max_body:
            return _error(413, f"body larger than {self._max_body} bytes")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"body larger than {self._max_body} bytes")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return _error(400, f"body is not valid JSON: {exc}")
        if not isinstance(body, dict):
            return _error(400, "body must be a JSON object")
        submitter = None if self._submitter is None else self._submitter()
        if submitter is None:
            if self._submitter is not None:
                return _error(503, "starting: waiting for the database", **{"Retry-After": "5"})
            return _error(503, "label queue is not available in this process")
        sn = request.match_info["sn"].strip()
        if not sn:
            return _error(404, "missing parentAfterSalesSn")
        try:
            result = await submitter.submit(sn, body)
        except LabelRejected as exc:
            return _error(exc.status, exc.reason)
        log.info(
            "admin API: label queued",
            extra={"parent_after_sales_sn": sn, "dedupe_key": result.dedupe_key},
        )
        return _json(
            {"status": "queued", "dedupe_key": result.dedupe_key, "duplicate": result.duplicate},
            202,
        )


def build_app(
    *,
    metrics: Metrics,
    health: HealthSource,
    admin_token: Secret,
    label_submitter: LabelSubmitter | Callable[[], LabelSubmitter | None] | None,
    max_body_bytes: int,
) -> web.Application:
    app = web.Application(middlewares=[_json_errors], client_max_size=max_body_bytes)
    h = _Handlers(metrics, health, admin_token, label_submitter, max_body_bytes)
    app.router.add_get("/livez", h.livez)
    app.router.add_get("/healthz", h.healthz)
    # prometheus_client's own handler: content negotiation (OpenMetrics) and gzip included.
    app.router.add_get("/metrics", make_aiohttp_handler(metrics.registry))
    app.router.add_post("/returns/{sn}/fulfillment", h.fulfillment)
    return app


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9187`` for IPv6) -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"listen address must be HOST:PORT, got {listen!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


async def start_http(
    app: web.Application, listen: str, *, handler_cancellation: bool = True
) -> web.AppRunner:
    """Serves ``app`` on ``listen``; ``runner.addresses`` gives the bound address (port 0).
    ``handler_cancellation=False``: a client hanging up does not cancel the handler half way
    (the webhook receiver's INSERT)."""
    host, port = parse_listen(listen)
    # A short shutdown grace: idle keep-alive scrapers must not eat systemd's stop timeout.
    runner = web.AppRunner(
        app, shutdown_timeout=5.0, handler_cancellation=handler_cancellation
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("HTTP listening", extra={"listen": listen})
    return runner


async def stop_http(runner: web.AppRunner) -> None:
    await runner.cleanup()
