"""The client a seller writes from Temu's documented Python sample: one synchronous request
at a time, a fixed sleep between calls as the only pacing, one window over the whole range,
``pageNumber`` up to the total. Written from the spec (signature section), sharing nothing
with the engine, as a seller's script would.

It only fetches (no database writes), which flatters it: a real script would also insert.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

ORDER_LIST = "bg.order.list.v2.get"
RATE_LIMITED = 4000004


def sign(params: dict[str, Any], secret: str) -> str:
    """MD5 over secret + sorted key/value pairs + secret; strings unquoted, the rest as
    compact JSON."""
    parts = []
    for key in sorted(params):
        value = params[key]
        text = (
            value
            if isinstance(value, str)
            else json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        )
        parts.append(f"{key}{text}")
    return hashlib.md5(f"{secret}{''.join(parts)}{secret}".encode()).hexdigest().upper()


@dataclass
class NaiveRun:
    started: float  # epoch
    elapsed_s: float = 0.0
    requests: int = 0
    rejected: int = 0
    other_errors: int = 0
    orders: int = 0
    progress: list[tuple[float, int]] = field(default_factory=list)  # (epoch, orders so far)


def fetch_all(
    url: str,
    app_key: str,
    secret: str,
    token: str,
    start: int,
    end: int,
    *,
    page_size: int = 100,
    pause_s: float = 0.05,
    max_orders: int | None = None,
) -> NaiveRun:
    run = NaiveRun(started=time.time())
    page, total = 1, None
    while total is None or run.orders < min(total, max_orders or total):
        params: dict[str, Any] = {
            "type": ORDER_LIST,
            "app_key": app_key,
            "access_token": token,
            "timestamp": int(time.time()),
            "data_type": "JSON",
            "pageNumber": page,
            "pageSize": page_size,
            "updateAtStart": start,
            "updateAtEnd": end,
        }
        body = json.dumps({**params, "sign": sign(params, secret)}).encode()
        request = urllib.request.Request(
            url, data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            answer = json.loads(resp.read())
        run.requests += 1
        if answer.get("success"):
            result = answer["result"]
            total = result["totalItemNum"]
            run.orders += len(result["pageItems"])
            run.progress.append((time.time(), run.orders))
            page += 1
        elif answer.get("errorCode") == RATE_LIMITED:
            run.rejected += 1  # the sample just tries the same page again after its sleep
        else:
            run.other_errors += 1
            if run.other_errors > 10:
                raise RuntimeError(f"naive client gives up: {answer}")
        time.sleep(pause_s)
    run.elapsed_s = time.time() - run.started
    return run
