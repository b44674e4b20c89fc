"""Orange Connex Return 2.0, as orange-connex-api.md describes it, under ``/oc``."""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from engine.sim.attempts import ACCEPTED, REFUSED, REPLAYED
from engine.sim.network import Network, bad_gateway, client_gone, dropped, truncated
from engine.sim.oc_foreign import with_foreign
from engine.sim.oc_state import CANCELLED, OPEN, Rma
from engine.sim.stats import SimStats
from engine.sim.world import World

log = logging.getLogger(__name__)

OAUTH_PATH = "/oc/oauth/token"
API_PREFIX = "/oc/openapi"
QUERY_ORDERS = "/3pp/returns/v1/query/orders"
QUERY_LABEL = "/3pp/returns/v1/query/label"
CANCEL_RMA = "/3pp/returns/v1/cancel/rma"
_FAULTS = ("http502", "sys4000000", "truncated", "drop", "slow")  # OC has no rate limit


class _Body:
    __slots__ = ("applied", "data", "replayed")

    def __init__(self, data: bytes, *, applied: bool = False, replayed: bool = False) -> None:
        self.data = data
        self.applied = applied
        self.replayed = replayed


# OC error codes -> the attempt log's refusal reasons (engine/sim/attempts.py).
_REASONS = {"RMA_ALREADY_CANCELLED": "already_cancelled"}


def _push_key(raw: bytes) -> dict[str, Any]:
    """What a POST was about, read leniently: the attempt log keeps even a malformed one."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        body = {}
    data = body.get("data")
    if not isinstance(data, dict):
        data = {}
    return {
        "messageId": body.get("messageId"),
        "orderNumber": data.get("orderNumber"),
        "operation": data.get("operation"),
        "trackingNumber": data.get("trackingNumber"),
    }


class OcError(Exception):
    def __init__(self, code: str, message: str, *, business: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.business = business


def oc_envelope(
    request_id: str,
    result: Any = None,
    error: OcError | None = None,
    *,
    fallback: bool = False,
    claims_success: bool = False,
) -> bytes:
    """``claims_success``: a business refusal still says ``"success": true`` (mode
    oc_business_success); only ``hasBusinessException`` tells it apart."""
    return orjson.dumps(
        {
            "requestId": request_id,
            "success": error is None or claims_success,
            "hasBusinessException": error is not None and error.business,
            "errorCode": "" if error is None else error.code,
            "errorMsg": "" if error is None else error.message,
            "message": "success" if error is None else error.message,
            "result": result,
            "isFallback": fallback,
        }
    )


def _json(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json")


def _required(source: Mapping[str, Any], name: str) -> str:
    value = source.get(name)
    if not isinstance(value, str) or not value:
        raise OcError("PARAM_ERROR", f"{name} is required", business=False)
    return value


class OcApi:
    def __init__(self, world: World, network: Network, stats: SimStats) -> None:
        self.world = world
        self.oc = world.oc
        self.network = network
        self.stats = stats
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(4)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(OAUTH_PATH, self.token),
            web.get(API_PREFIX + QUERY_ORDERS, self.query_orders),
            web.get(API_PREFIX + QUERY_LABEL, self.query_label),
            web.post(API_PREFIX + CANCEL_RMA, self.cancel_rma),
        ]

    def _request_id(self) -> str:
        return f"oc-{self._prefix}-{next(self._ids)}"

    # -- OAuth ----------------------------------------------------------------------------
    async def token(self, request: web.Request) -> web.StreamResponse:
        await self.network.to_server("oc")
        q = request.query
        self.stats.oc_requests["oauth/token"] += 1
        if q.get("client_id") != self.oc.tokens.client_id:
            answer = _json(orjson.dumps({"error": "invalid_client"}), 401)
        elif q.get("grant_type") != "refresh_token":
            answer = _json(orjson.dumps({"error": "unsupported_grant_type"}), 400)
        else:
            issued = self.oc.tokens.refresh(q.get("refresh_token", ""))
            if issued is None:
                desc = "refresh token unknown, expired or already rotated"
                answer = _json(
                    orjson.dumps({"error": "invalid_grant", "error_description": desc}), 400
                )
            else:
                self.stats.oc_refreshes += 1
                answer = _json(orjson.dumps(issued))
        await self.network.to_client()
        return answer

    # -- API ------------------------------------------------------------------------------
    async def _serve(self, request: web.Request, name: str, *, write: bool) -> web.StreamResponse:
        raw = await request.read()
        await self.network.to_server("oc")
        request_id = self._request_id()
        note: dict[str, Any] = {}  # the attempt's outcome, logged for writes only
        answer = await self._answer(request, name, raw, request_id, note)
        if write:
            self._log_attempt(raw, request_id, note)
        await self.network.to_client()
        return answer

    def _log_attempt(self, raw: bytes, request_id: str, note: dict[str, Any]) -> None:
        key = _push_key(raw)
        rma = self.oc.rmas.get(str(key["orderNumber"]))
        self.world.attempts.record(
            "oc",
            shop_id=None if rma is None else rma.shop_id,
            outcome=note.get("outcome", REFUSED),
            reason=note.get("reason", ""),
            error_code=note.get("code"),
            at=self.world.clock(),
            request_id=request_id,
            referenceNumber=None if rma is None else rma.reference_number,
            **key,
        )["answerLost"] = note.get("lost", False)

    async def _answer(
        self, request: web.Request, name: str, raw: bytes, request_id: str, note: dict[str, Any]
    ) -> web.StreamResponse:
        self.stats.oc_requests[name] += 1
        if not self.oc.tokens.valid(request.headers.get("Access-Token")):
            self.stats.oc_unauthorized += 1
            note.update(reason="unauthorized", code="401")
            err = OcError("401", "access token invalid or expired", business=False)
            return _json(oc_envelope(request_id, None, err), 401)
        fault = self.network.pick(_FAULTS)
        if fault is not None:
            self.stats.oc_faults[fault] += 1
            note.update(reason=f"fault:{fault}")
        if fault == "http502":
            return bad_gateway()
        if fault == "drop":
            return dropped(request)
        if fault == "sys4000000":
            err = OcError("SYSTEM_ERROR", "system busy, please retry", business=False)
            return _json(oc_envelope(request_id, None, err, fallback=True))
        if fault == "truncated":
            return truncated(oc_envelope(request_id, None))
        if fault == "slow":
            await asyncio.sleep(self.network.slow_s)
            if client_gone(request):
                return dropped(request)
        note.clear()
        try:
            body = self._dispatch(request, name, raw, request_id)
        except OcError as err:
            note.update(reason=_REASONS.get(err.code, f"error:{err.code}"), code=err.code)
            err.message = self.world.modes.error_text(err.message)
            claims = err.business and self.world.modes.oc_business_success
            return _json(oc_envelope(request_id, None, err, claims_success=claims))
        except Exception:
            log.exception("simulator bug answering OC %s", name)
            note.update(reason="error:SYSTEM_ERROR", code="SYSTEM_ERROR")
            internal = OcError("SYSTEM_ERROR", "internal error", business=False)
            return _json(oc_envelope(request_id, None, internal))
        note.update(outcome=REPLAYED if body.replayed else ACCEPTED, code="")
        if body.applied and self.network.drop_after_apply():
            self.stats.faults_after_apply += 1
            note.update(lost=True)
            return dropped(request)
        return _json(body.data)

    def _dispatch(self, request: web.Request, name: str, raw: bytes, request_id: str) -> _Body:
        if name == "query/orders":
            q = request.query
            _required(q, "messageId")
            ref = _required(q, "referenceNumber")
            rmas = self.oc.by_reference.get(ref, [])
            rmas = with_foreign(self.oc, ref, rmas, self.world.modes.oc_foreign_rmas)
            return _Body(oc_envelope(request_id, [r.summary() for r in rmas]))
        if name == "query/label":
            q = request.query
            _required(q, "messageId")
            return _Body(oc_envelope(request_id, self._label(self._rma(q, "orderNumber"))))
        return self._push(raw, request_id)

    def _rma(self, source: Mapping[str, Any], key: str) -> Rma:
        number = _required(source, key)
        rma = self.oc.rmas.get(number)
        if rma is None:
            raise OcError("RMA_NOT_FOUND", f"no return order {number}")
        return rma

    def _label(self, rma: Rma) -> dict[str, Any]:
        if rma.status == CANCELLED:
            raise OcError("RMA_CANCELLED", f"return order {rma.order_number} is cancelled")
        rma.label_queries += 1
        n = rma.label_queries
        ready = n > self.oc.label_ready_after
        if not ready and n % 2 == 1:
            # The spec allows both shapes of "not ready"; alternate so clients handle each.
            raise OcError("LABEL_NOT_READY", "label is being generated, try again later")
        if ready and n == self.oc.label_ready_after + 1 and not rma.tracking_number:
            rma.tracking_number, rma.carrier_name = rma.label_tracking, rma.label_carrier
        base = f"https://labels.oc-sim.example/{rma.order_number}"
        bare = self.world.modes.oc_bare_labels
        return {
            "orderNumber": rma.order_number,
            "referenceNumber": rma.reference_number,
            "serviceType": rma.service_type,
            "trackingNumber": rma.label_tracking if ready and not bare else "",
            "carrierName": rma.label_carrier if ready and not bare else "",
            "docUrl": f"{base}/label.pdf" if ready else "",
            "qrCodeUrl": f"{base}/qr.png" if ready else "",
            "qrLink": f"{base}/qr" if ready else "",
        }

    def _push(self, raw: bytes, request_id: str) -> _Body:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise OcError("PARAM_ERROR", "body is not JSON", business=False) from None
        if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
            raise OcError("PARAM_ERROR", "data is required", business=False)
        message_id = _required(body, "messageId")
        previous = self.oc.answered.get(message_id)
        if previous is not None:
            # A retry of an applied message: same answer, no effect.
            return _Body(previous, replayed=True)
        data = body["data"]
        rma = self._rma(data, "orderNumber")
        operation = _required(data, "operation")
        if operation == "CANCEL":
            if rma.status == CANCELLED:
                raise OcError("RMA_ALREADY_CANCELLED", f"{rma.order_number} already cancelled")
            if rma.status != OPEN:
                # E.g. IN_TRANSIT: the parcel is under way; the RMA stays open, uncancelled.
                raise OcError("CANCEL_NOT_ALLOWED", f"{rma.order_number} is {rma.status}")
            rma.status = CANCELLED
            push = {"operation": operation}
        elif operation == "UPDATE_TRACKING":
            tracking = _required(data, "trackingNumber")
            carrier = _required(data, "carrierName")
            if rma.status != OPEN:
                raise OcError("RMA_CANCELLED", f"{rma.order_number} is cancelled")
            rma.tracking_number, rma.carrier_name = tracking, carrier
            push = {"operation": operation, "trackingNumber": tracking, "carrierName": carrier}
        else:
            raise OcError("PARAM_ERROR", f"unknown operation {operation}", business=False)
        self.oc.pushes.append(
            {
                "messageId": message_id,
                "orderNumber": rma.order_number,
                "referenceNumber": rma.reference_number,
                "shopId": rma.shop_id,
                **push,
                "at": self.world.now(),
            }
        )
        answer = oc_envelope(request_id, rma.summary())
        self.oc.answered[message_id] = answer
        return _Body(answer, applied=True)

    async def query_orders(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "query/orders", write=False)

    async def query_label(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "query/label", write=False)

    async def cancel_rma(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "cancel/rma", write=True)
