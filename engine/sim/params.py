"""Reading an API's own parameters out of the flat request body, Temu's way: strictly."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.sim.codes import BAD_PARAMS, ApiError

Params = Mapping[str, Any]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def opt_int(
    p: Params, name: str, default: int | None = None, lo: int | None = None, hi: int | None = None
) -> int | None:
    value = p.get(name)
    if value is None:
        return default
    if not _is_int(value):
        raise ApiError(BAD_PARAMS, f"{name} must be an integer")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ApiError(BAD_PARAMS, f"{name} must be within [{lo}, {hi}]")
    return int(value)


def req_int(p: Params, name: str) -> int:
    value = opt_int(p, name)
    if value is None:
        raise ApiError(BAD_PARAMS, f"{name} is required")
    return value


def req_str(p: Params, name: str) -> str:
    value = p.get(name)
    if not isinstance(value, str) or not value:
        raise ApiError(BAD_PARAMS, f"{name} is required")
    return value


def opt_str_list(p: Params, name: str, max_len: int) -> list[str] | None:
    value = p.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(BAD_PARAMS, f"{name} must be a list of strings")
    if len(value) > max_len:
        raise ApiError(BAD_PARAMS, f"{name} holds at most {max_len} items")
    return value


def window(p: Params, start_key: str, end_key: str) -> tuple[int, int] | None:
    """A closed [start, end] pair in seconds; half a pair is an error, as the docs say."""
    start, end = opt_int(p, start_key), opt_int(p, end_key)
    if start is None and end is None:
        return None
    if start is None or end is None:
        raise ApiError(BAD_PARAMS, f"{start_key} and {end_key} must be used together")
    if start > end:
        raise ApiError(BAD_PARAMS, f"{start_key} is after {end_key}")
    return start, end


def refuse(p: Params, wrong: str, right: str) -> None:
    """Names a parameter that belongs to a sibling API, a classic copy-paste bug."""
    if wrong in p:
        raise ApiError(BAD_PARAMS, f"unknown parameter {wrong}; this API pages with {right}")
