"""``POST /openapi/router``: Temu's gateway checks, in Temu's order, then the API itself."""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from email.utils import formatdate
from typing import Any

import orjson
from aiohttp import web

from engine.sim import codes, poison
from engine.sim.attempts import ACCEPTED, REFUSED
from engine.sim.codes import MESSAGES, ApiError
from engine.sim.data import ShopData
from engine.sim.network import Network, bad_gateway, client_gone, dropped, truncated
from engine.sim.ratelimit import SlidingWindow
from engine.sim.signature import sign_matches
from engine.sim.stats import AppStats, SimStats
from engine.sim.temu_api import HANDLERS, LIST_TYPES, MUTATING_TYPES, Call, Handler
from engine.sim.world import World

log = logging.getLogger(__name__)

TIMESTAMP_TOLERANCE_S = 300
_PRE_API_FAULTS = ("http502", "sys4000000", "truncated", "drop")


def envelope(
    request_id: str,
    result: Any = None,
    code: int = codes.SUCCESS,
    message: str | None = None,
    *,
    code_as_text: bool = False,
) -> bytes:
    """``code_as_text``: an error's code as a JSON string (mode string_error_codes)."""
    ok = code == codes.SUCCESS
    return orjson.dumps(
        {
            "success": ok,
            "errorCode": str(code) if code_as_text and not ok else code,
            "errorMsg": "" if ok else (message or MESSAGES.get(code, "ERROR")),
            "requestId": request_id,
            "result": result,
        }
    )


def _json(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json")


class TemuRouter:
    def __init__(
        self,
        world: World,
        network: Network,
        stats: SimStats,
        extra_handlers: Mapping[str, Handler] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.handlers: dict[str, Handler] = {**HANDLERS, **(extra_handlers or {})}
        # Arrival times (the rate limit, storms, stats) are read from ``clock``: a test can
        # step it instead of sleeping through the sliding second.
        self._clock = clock
        self.world = world
        self.network = network
        self.stats = stats
        config = world.config
        self.windows = {
            a.app_key: SlidingWindow(
                a.qps, strict=config.strict_window, count_refused=config.count_refused
            )
            for a in config.apps
        }
        self._ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(4)
        self._mono0 = clock()
        self._wall0 = time.time()

    def _request_id(self) -> str:
        return f"sim-{self._id_prefix}-{next(self._ids)}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        await self.network.to_server(_peek_type(body))
        arrival = self._clock()
        request_id = self._request_id()
        response = await self._answer(request, body, arrival, request_id)
        # The gateway's own clock, like a real server's: a client can read a skew from it.
        response.headers["Date"] = formatdate(self.world.clock(), usegmt=True)
        await self.network.answer_gate()
        await self.network.to_client()
        return response

    def _error(self, app: AppStats | None, request_id: str, err: ApiError) -> web.Response:
        if app is None:
            self.stats.unattributed[err.code] += 1
        else:
            app.errors[err.code] += 1
        message = self.world.modes.error_text(err.message or MESSAGES.get(err.code, "ERROR"))
        return _json(self._error_envelope(request_id, err.code, message))

    def _error_envelope(self, request_id: str, code: int, message: str | None = None) -> bytes:
        as_text = self.world.modes.string_error_codes
        return envelope(request_id, None, code, message, code_as_text=as_text)

    async def _answer(
        self, request: web.Request, body: bytes, arrival: float, request_id: str
    ) -> web.StreamResponse:
        try:
            params = orjson.loads(body)
        except orjson.JSONDecodeError:
            return self._error(None, request_id, ApiError(codes.BAD_PARAMS, "body is not JSON"))
        if not isinstance(params, dict):
            return self._error(None, request_id, ApiError(codes.BAD_PARAMS, "body not an object"))
        app_key = params.get("app_key")
        if not isinstance(app_key, str) or not app_key:
            return self._error(None, request_id, ApiError(codes.APP_KEY_MISSING))
        app = self.world.apps.get(app_key)
        if app is None:
            return self._error(None, request_id, ApiError(codes.APP_KEY_UNKNOWN))
        app_stats = self.stats.apps[app_key]
        try:
            api_type, shop = self._authenticate(params, app.app_secret, app_key)
        except ApiError as err:
            self._attempt(params, None, request_id, REFUSED, err.reason or "token", err.code)
            return self._error(app_stats, request_id, err)

        limited = None
        fault = None
        if self.network.storming(app_key, arrival):
            limited = True
        else:
            fault = self.network.pick()
            if fault == "ratelimit_storm":
                self.stats.faults[fault] += 1
                self.network.start_storm(app_key, arrival)
                limited = True
            elif self.windows[app_key].try_accept(arrival) is None:
                limited = False
        if limited is not None:
            self._attempt(params, shop, request_id, REFUSED, "rate_limited", codes.RATE_LIMITED)
            return self._rate_limited(app_stats, request_id, arrival, storm=limited)
        app_stats.note_accepted(api_type, arrival, self._epoch(arrival))

        if fault is not None:
            self.stats.faults[fault] += 1
        call = Call(
            world=self.world,
            shop=shop,
            params=params,
            request_id=request_id,
            rng=self.network.rng,
            drift_wanted=fault is None and api_type in LIST_TYPES and self.network.drift_now(),
        )
        if fault in _PRE_API_FAULTS:
            self._attempt(params, shop, request_id, REFUSED, f"fault:{fault}")
            return self._fault(request, fault, api_type, call)
        if fault == "slow":
            await asyncio.sleep(self.network.slow_s)
            if client_gone(request):
                self._attempt(params, shop, request_id, REFUSED, "fault:slow")
                return dropped(request)  # the client gave up: nothing was applied
        try:
            result = self.handlers[api_type](call)
        except ApiError as err:
            reason = err.reason or f"error:{err.code}"
            self._attempt(params, shop, request_id, REFUSED, reason, err.code)
            return self._error(app_stats, request_id, err)
        except Exception:
            log.exception("simulator bug answering %s", api_type)
            self._attempt(params, shop, request_id, REFUSED, "error:4000000", 4000000)
            return self._error(app_stats, request_id, ApiError(codes.SYSTEM_EXCEPTION))
        finally:
            if call.drifted:
                self.stats.drift_events += len(call.drifted)
                self.stats.drift_by_shop[shop.shop.shop_id] += len(call.drifted)
        attempt = self._attempt(params, shop, request_id, ACCEPTED, "", codes.SUCCESS)
        body = envelope(request_id, result)
        answer = _json(poison.inject(body) if self.world.modes.poison else body)
        if api_type in MUTATING_TYPES and self.network.drop_after_apply():
            self.stats.faults_after_apply += 1
            return await self._lose(attempt, request, None)
        if api_type in MUTATING_TYPES and self.world.modes.take_lost_answer():
            self.stats.lost_answers += 1
            return await self._lose(attempt, request, answer)
        return answer

    def _attempt(
        self,
        params: dict[str, Any],
        shop: ShopData | None,
        request_id: str,
        outcome: str,
        reason: str,
        code: int | None = None,
    ) -> dict[str, Any] | None:
        """Logs a write attempt (engine/sim/attempts.py); reads are not logged."""
        if params.get("type") not in MUTATING_TYPES:
            return None
        if shop is None:
            shop = self.world.by_token.get(str(params.get("access_token")))
        return self.world.attempts.record(
            "temu",
            shop_id=None if shop is None else shop.shop.shop_id,
            outcome=outcome,
            reason=reason,
            error_code=code,
            at=self.world.clock(),
            request_id=request_id,
            apiType=params.get("type"),
            parentAfterSalesSn=params.get("parentAfterSalesSn"),
            parentOrderSn=params.get("parentOrderSn"),
        )

    async def _lose(
        self, attempt: dict[str, Any] | None, request: web.Request, answer: web.Response | None
    ) -> web.StreamResponse:
        """An applied write whose answer never reaches the client: the connection closes now
        (``answer`` None, or lost_answer_how "close"), or the answer waits past its timeout."""
        if attempt is not None:
            attempt["answerLost"] = True
        modes = self.world.modes
        if answer is None or modes.lost_answer_how == "close":
            return dropped(request)
        await asyncio.sleep(modes.lost_answer_delay_s)
        if client_gone(request):
            return dropped(request)
        # A client that waited this long gets it after all, but it was lost to a normal one.
        return answer

    def _authenticate(self, params: dict[str, Any], secret: str, app_key: str) -> tuple[str, Any]:
        if "sign" not in params:
            raise ApiError(codes.SIGN_MISSING)
        if not sign_matches(params, secret):
            raise ApiError(codes.SIGN_INVALID)
        ts = params.get("timestamp")
        if ts is None:
            raise ApiError(codes.TIMESTAMP_MISSING)
        if isinstance(ts, str) and ts.isdigit():
            ts = int(ts)
        if not isinstance(ts, int) or isinstance(ts, bool):
            raise ApiError(codes.TIMESTAMP_INVALID)
        now = self.world.now()
        if ts > now + TIMESTAMP_TOLERANCE_S:
            raise ApiError(codes.TIMESTAMP_INVALID)
        if ts < now - TIMESTAMP_TOLERANCE_S:
            raise ApiError(codes.TIMESTAMP_EXPIRED)
        data_type = params.get("data_type")
        if data_type is None:
            raise ApiError(codes.DATA_TYPE_MISSING)
        if not isinstance(data_type, str) or data_type.lower() != "json":
            raise ApiError(codes.DATA_TYPE_INVALID)
        api_type = params.get("type")
        if not isinstance(api_type, str) or not api_type:
            raise ApiError(codes.TYPE_MISSING)
        if api_type not in self.handlers:
            raise ApiError(codes.TYPE_UNKNOWN, api_type)
        token = params.get("access_token")
        if not isinstance(token, str) or not token:
            raise ApiError(codes.TOKEN_MISSING)
        shop = self.world.by_token.get(token)
        if shop is None:
            raise ApiError(codes.TOKEN_UNKNOWN)
        if shop.shop.app_key != app_key:
            raise ApiError(codes.TOKEN_APP_MISMATCH)
        if token in self.world.revoked:
            raise ApiError(codes.TOKEN_EXPIRED)
        self.world.grants[shop.shop.shop_id].check(api_type, now)
        return api_type, shop

    def _epoch(self, mono: float) -> float:
        return round(self._wall0 + (mono - self._mono0), 6)

    def _rate_limited(
        self, app: AppStats, request_id: str, arrival: float, *, storm: bool
    ) -> web.Response:
        if storm:
            app.rejected_storm += 1
        else:
            app.rejected_rate_limit += 1
        app.rejected_at.append(self._epoch(arrival))
        return _json(self._error_envelope(request_id, codes.RATE_LIMITED))

    def _fault(self, request: web.Request, fault: str, api_type: str, call: Call) -> web.Response:
        request_id = call.request_id
        if fault == "http502":
            return bad_gateway()
        if fault == "sys4000000":
            return _json(self._error_envelope(request_id, codes.SYSTEM_EXCEPTION))
        if fault == "drop":
            return dropped(request)
        return truncated(self._would_answer(api_type, call))

    def _would_answer(self, api_type: str, call: Call) -> bytes:
        """The answer a read would have got; a write is not applied, so it gets a stand-in."""
        if api_type in MUTATING_TYPES:
            return envelope(call.request_id, None)
        try:
            return envelope(call.request_id, self.handlers[api_type](call))
        except ApiError as err:
            return self._error_envelope(call.request_id, err.code, err.message)


def _peek_type(body: bytes) -> str:
    """The API type a request names, for the network's hold count ("" when unreadable)."""
    try:
        api_type = orjson.loads(body).get("type")
    except (orjson.JSONDecodeError, AttributeError):
        return ""
    return api_type if isinstance(api_type, str) else ""
