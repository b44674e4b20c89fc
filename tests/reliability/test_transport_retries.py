"""Transport-level findings of the fault suite, pinned with canned answers (fast, exact).

- After a throttling storm, an unrelated 502 must back off like a first failure: the mixed
  fault run once waited 29 s (the backoff cap) after a 1 s storm, because rate-limit refusals
  counted towards the 502's exponent.
- A timestamp rejection states the skew in seconds from the answer's Date header when the
  message does not carry the server's time; an app-scoped error names the app.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from email.utils import formatdate

import aiohttp
import pytest
from aioresponses import aioresponses

from engine.temu.errors import BadSignature, TimestampRejected
from tests.unit.test_temu_transport import ROUTER, SECRET, Harness, _Response, fail, ok


@pytest.fixture
def mock() -> Iterator[aioresponses]:
    with aioresponses() as m:
        yield m


@pytest.fixture
async def h(mock: aioresponses) -> AsyncIterator[Harness]:
    async with aiohttp.ClientSession() as session:
        yield Harness(session, mock)


async def test_a_storm_does_not_stretch_the_backoff_of_a_later_502(h: Harness) -> None:
    h.answer(fail(4000004), fail(4000004), fail(4000004), 502, ok({"x": 1}))
    assert await h.call() == {"x": 1}
    # rng() == 1.0 shows each ceiling: storm 0.1, 0.2, 0.4; then the 502's first backoff.
    assert h.sleeps == [0.1, 0.2, 0.4, 0.5]


async def test_clock_skew_is_read_from_the_date_header(h: Harness, mock: aioresponses) -> None:
    for _ in range(2):  # one retry with a fresh timestamp, then it surfaces
        mock.post(
            ROUTER,
            response_class=_Response,
            payload=fail(3000012, "timestamp expired"),
            headers={"Date": formatdate(h.now + 1000, usegmt=True)},
        )
    with pytest.raises(TimestampRejected) as info:
        await h.call()
    skew = info.value.skew_s
    assert skew is not None and -1002 <= skew <= -998
    assert f"local clock is {abs(skew)} s behind the server's" in str(info.value)


async def test_app_scoped_errors_name_the_app_never_the_secret(h: Harness) -> None:
    h.answer(fail(3000001, f"sign mismatch for secret {SECRET}"))
    with pytest.raises(BadSignature) as info:
        await h.call()
    text = str(info.value)
    assert "configuration error of app ak-test" in text and "app_secret" in text
    assert SECRET not in text
