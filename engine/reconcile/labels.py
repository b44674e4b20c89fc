"""Return labels handed to the engine: ``labels import`` lines and the admin POST body.

Two shapes are accepted (spec interface.md, "Return labels: accepted input"): ecartAPI's
``returnFulfillment`` object and Jetti/Onport's purchase return label. Both become one
``LabelRequest``; a label that cannot be uploaded as given is refused here with a reason the
seller can act on, rather than failing later inside the reconciler.

Pure functions: no I/O, no configuration reads; the caller passes the configured shop ids.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson

from engine.jsonvalue import json_type

__all__ = [
    "LabelError",
    "LabelRequest",
    "map_carrier",
    "parse_label",
    "parse_label_lines",
]

Source = Literal["ecartapi", "jetti"]

SN_KEY = "parentAfterSalesSn"
SHOP_KEY = "shop"
ECART_KEY = "returnFulfillment"
JETTI_KEYS = ("labelUrl", "trackingNumber", "trackingCompany", "labelFileFormat")
JETTI_FILE_FORMATS = ("pdf", "png")
# Keys are lower-cased with separators removed: "dropOff", "DROPOFF", "drop_off" all match.
LOGISTIC_MODES = {"dropoff": "dropOff", "pickup": "pickUp"}

_SHOWN = 80  # longest user value quoted back in a reason
# A label is a flat object two levels deep; anything much deeper is not a label, and copying or
# storing it could exhaust the stack (a ~600-deep value did).
MAX_DEPTH = 16
_FUZZY_MIN = 3  # shorter names match too much by prefix/contains ("u" is in every carrier)


class LabelError(ValueError):
    """A label was refused; ``reason`` is meant for the seller and holds no secret."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class LabelRequest:
    parent_after_sales_sn: str
    shop_id: str | None
    tracking_number: str
    carrier_id: str | None
    carrier_name: str | None
    file_url: str
    location_id: str | None
    logistic_mode: str | None
    source: Source
    raw: dict[str, Any] = field(repr=False, compare=False)


# --- field helpers ------------------------------------------------------------------------------


def _shown(value: str) -> str:
    return repr(value if len(value) <= _SHOWN else value[:_SHOWN] + "...")


def _string(value: Any, name: str) -> str | None:
    """A trimmed non-empty string, or None when absent. Integers are accepted as ids."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    # JSON integers are common for ids; floats would silently lose digits, so they are refused.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise LabelError(f"{name} must be a string, got {json_type(value)}")


def _public_url(value: Any, name: str) -> str:
    """An absolute http(s) URL: Temu fetches the label or certificate from it, so a relative
    path, another scheme or embedded whitespace is refused here rather than by Temu later."""
    url = _string(value, name)
    if url is None:
        raise LabelError(f"missing {name}")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or re.search(r"\s", url):
        raise LabelError(f"{name} must be an http(s):// URL, got {_shown(url)}")
    return url


def _logistic_mode(value: Any, name: str) -> str | None:
    mode = _string(value, name)
    if mode is None:
        return None
    key = re.sub(r"[\s_\-]", "", mode).lower()
    if key not in LOGISTIC_MODES:
        raise LabelError(f"unknown {name} {_shown(mode)} (expected dropOff or pickUp)")
    return LOGISTIC_MODES[key]


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(items[:10])
    return shown + (", ..." if len(items) > 10 else "")


# --- shapes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fields:
    tracking_number: str
    carrier_id: str | None
    carrier_name: str | None
    file_url: str
    location_id: str | None
    logistic_mode: str | None
    source: Source


def _ecartapi(obj: dict[str, Any]) -> _Fields:
    rf = obj[ECART_KEY]
    if not isinstance(rf, dict):
        raise LabelError(f"{ECART_KEY} must be an object, got {json_type(rf)}")
    tracking = rf.get("tracking")
    if tracking is None:
        tracking = {}
    if not isinstance(tracking, dict):
        raise LabelError(f"{ECART_KEY}.tracking must be an object, got {json_type(tracking)}")
    number = _string(tracking.get("number"), f"{ECART_KEY}.tracking.number")
    if number is None:
        raise LabelError(f"missing tracking number ({ECART_KEY}.tracking.number)")
    carrier_id = _string(tracking.get("companyId"), f"{ECART_KEY}.tracking.companyId")
    if carrier_id is None:
        raise LabelError(f"missing carrier ({ECART_KEY}.tracking.companyId)")
    return _Fields(
        tracking_number=number,
        carrier_id=carrier_id,
        carrier_name=None,
        file_url=_public_url(rf.get("fileUrl"), f"{ECART_KEY}.fileUrl"),
        location_id=_string(rf.get("locationId"), f"{ECART_KEY}.locationId"),
        logistic_mode=_logistic_mode(rf.get("logisticMode"), f"{ECART_KEY}.logisticMode"),
        source="ecartapi",
    )


def _jetti(obj: dict[str, Any]) -> _Fields:
    if obj.get("labelRefund") is True:
        # A refunded label is void at the carrier; uploading it would strand the buyer.
        raise LabelError("label was refunded (labelRefund is true)")
    number = _string(obj.get("trackingNumber"), "trackingNumber")
    if number is None:
        raise LabelError("missing tracking number (trackingNumber)")
    company = _string(obj.get("trackingCompany"), "trackingCompany")
    if company is None:
        raise LabelError("missing carrier (trackingCompany)")
    if _string(obj.get("labelUrl"), "labelUrl") is None:
        problem = _string(obj.get("labelError"), "labelError")
        suffix = f"; Jetti reports labelError {_shown(problem)}" if problem else ""
        raise LabelError(f"missing labelUrl{suffix}")
    file_format = _string(obj.get("labelFileFormat"), "labelFileFormat")
    if file_format is not None and file_format.lower() not in JETTI_FILE_FORMATS:
        raise LabelError(f"labelFileFormat must be pdf or png, got {_shown(file_format)}")
    return _Fields(
        tracking_number=number,
        carrier_id=None,
        carrier_name=company,
        file_url=_public_url(obj.get("labelUrl"), "labelUrl"),
        location_id=None,
        logistic_mode=None,
        source="jetti",
    )


def _parent_sn(obj: dict[str, Any], from_path: str | None) -> str:
    in_body = _string(obj.get(SN_KEY), SN_KEY)
    if from_path is None:
        if in_body is None:
            raise LabelError(f"missing {SN_KEY}")
        return in_body
    path_sn = from_path.strip()
    if not path_sn:
        raise LabelError(f"missing {SN_KEY}")
    if in_body is not None and in_body != path_sn:
        raise LabelError(
            f"{SN_KEY} {_shown(in_body)} in the body differs from {_shown(path_sn)} in the path"
        )
    return path_sn


def _shop(obj: dict[str, Any], shops: Sequence[str], *, required: bool) -> str | None:
    given = _string(obj.get(SHOP_KEY), SHOP_KEY)
    if given is not None:
        if shops and given not in shops:
            raise LabelError(f"unknown shop {_shown(given)} (configured: {_listed(shops)})")
        return given
    if len(shops) == 1:
        return shops[0]
    if len(shops) > 1 and required:
        raise LabelError(
            f"missing {SHOP_KEY}: {len(shops)} shops are configured, say which one "
            f"({_listed(shops)})"
        )
    # The admin endpoint and Jetti lines: the caller resolves the shop from the stored return.
    return None


def _check_text(value: str, where: str) -> None:
    if "\x00" in value:
        raise LabelError(f"{where} contains U+0000 (a NUL character)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise LabelError(f"{where} is not valid Unicode text (a lone surrogate)") from None


def _check_value(obj: Any) -> None:
    """Refuses what Postgres or Python cannot take, before anything else looks at it: nesting
    past MAX_DEPTH and U+0000 in any key or string (jsonb and text refuse it). Iterative, so
    depth itself cannot overflow the stack here."""
    stack: list[tuple[Any, int, str]] = [(obj, 1, "")]
    while stack:
        value, depth, where = stack.pop()
        if depth > MAX_DEPTH:
            raise LabelError(f"nested too deeply (more than {MAX_DEPTH} levels)")
        if isinstance(value, str):
            _check_text(value, where or "a value")
        elif isinstance(value, dict):
            for key, item in value.items():
                name = f"{where}.{key}" if where else str(key)
                _check_text(str(key), "a key")
                stack.append((item, depth + 1, name))
        elif isinstance(value, list):
            stack.extend((item, depth + 1, f"{where}[{i}]") for i, item in enumerate(value))


def _private_copy(obj: dict[str, Any]) -> dict[str, Any]:
    """A deep copy through JSON (depth already bounded by _check_value)."""
    try:
        copied: dict[str, Any] = orjson.loads(orjson.dumps(obj))
    except (orjson.JSONEncodeError, orjson.JSONDecodeError) as exc:
        raise LabelError(f"not a plain JSON value: {exc}") from None
    return copied


# --- public -------------------------------------------------------------------------------------


def parse_label(
    obj: Any, *, parent_after_sales_sn: str | None = None, shops: Sequence[str]
) -> LabelRequest:
    """Validates one label in either accepted shape; raises LabelError with the reason.

    ``parent_after_sales_sn`` comes from the admin endpoint's path; without it (import) the
    object must carry ``parentAfterSalesSn``, and an ecartAPI line ``shop`` when several shops
    are configured (interface.md). The Jetti/Onport shape has no shop field: its shop, like
    the admin endpoint's, is the stored return's (LabelQueue; a key found in two shops is
    refused there, asking for ``shop``).
    """
    if not isinstance(obj, dict):
        raise LabelError(f"not a JSON object (got {json_type(obj)})")
    _check_value(obj)
    if parent_after_sales_sn is not None:
        _check_text(parent_after_sales_sn, SN_KEY)
    has_ecart = ECART_KEY in obj
    jetti_keys = [k for k in JETTI_KEYS if k in obj]
    if has_ecart and jetti_keys:
        raise LabelError(
            f"mixes the ecartAPI shape ({ECART_KEY}) with Jetti/Onport fields "
            f"({', '.join(jetti_keys)}); send one shape"
        )
    if has_ecart:
        fields = _ecartapi(obj)
    elif jetti_keys:
        fields = _jetti(obj)
    else:
        raise LabelError(
            f"unrecognised label: expected {ECART_KEY} (ecartAPI) or labelUrl, trackingNumber "
            "and trackingCompany (Jetti/Onport)"
        )
    return LabelRequest(
        parent_after_sales_sn=_parent_sn(obj, parent_after_sales_sn),
        shop_id=_shop(obj, shops, required=has_ecart and parent_after_sales_sn is None),
        tracking_number=fields.tracking_number,
        carrier_id=fields.carrier_id,
        carrier_name=fields.carrier_name,
        file_url=fields.file_url,
        location_id=fields.location_id,
        logistic_mode=fields.logistic_mode,
        source=fields.source,
        # A private copy: the request is frozen, and the caller's dict may be reused.
        raw=_private_copy(obj),
    )


def _lines(text_or_lines: str | bytes | Iterable[str | bytes]) -> Iterable[str | bytes]:
    if isinstance(text_or_lines, str | bytes):
        # split("\n"), not splitlines(): JSON strings may hold a raw U+2028, which splitlines
        # would treat as a line break.
        sep: Any = "\n" if isinstance(text_or_lines, str) else b"\n"
        return text_or_lines.split(sep)
    return text_or_lines


def parse_label_lines(
    text_or_lines: str | bytes | Iterable[str | bytes], shops: Sequence[str]
) -> tuple[list[tuple[int, LabelRequest]], list[tuple[int, str]]]:
    """JSON lines -> (good (line_no, request)), (bad (line_no, reason)), 1-based line numbers.

    Blank lines are skipped. A bad line never stops the others. A second label for the same
    return (shop, parentAfterSalesSn) is refused: which one should win is not for us to guess.
    """
    good: list[tuple[int, LabelRequest]] = []
    bad: list[tuple[int, str]] = []
    first_seen: dict[tuple[str | None, str], int] = {}
    for line_no, line in enumerate(_lines(text_or_lines), start=1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError:
                bad.append((line_no, "not valid UTF-8 text"))
                continue
        if line_no == 1:
            line = line.removeprefix("\ufeff")
        text = line.strip()
        if not text:
            continue
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            bad.append((line_no, f"invalid JSON: {exc}"))
            continue
        try:
            request = parse_label(obj, shops=shops)
        except LabelError as exc:
            bad.append((line_no, exc.reason))
            continue
        key = (request.shop_id, request.parent_after_sales_sn)
        if key in first_seen:
            bad.append(
                (
                    line_no,
                    f"{SN_KEY} {_shown(request.parent_after_sales_sn)} already given on line "
                    f"{first_seen[key]}",
                )
            )
            continue
        first_seen[key] = line_no
        good.append((line_no, request))
    return good, bad


# --- carriers -----------------------------------------------------------------------------------


def _folded(name: str) -> str:
    return unicodedata.normalize("NFKC", name).casefold()


def _compact(name: str) -> str:
    """Letters and digits only: "U.P.S." and "ups" compare equal."""
    return "".join(ch for ch in _folded(name) if ch.isalnum())


def _initials(name: str) -> str:
    words = re.findall(r"[^\W_]+", _folded(name))
    return "".join(w[0] for w in words) if len(words) >= 2 else ""


def map_carrier(name: str, carriers: Sequence[tuple[str, str]]) -> str | None:
    """The Temu carrier id for a carrier name, or None when there is no single best match.

    Tiers, best first: the name is already an id; equal ignoring case, spaces and punctuation;
    an acronym of the other's words ("UPS" / "United Parcel Service"); one a prefix of the
    other ("FedEx Ground" -> "FedEx"); one contained in the other. The first tier with any
    match decides, and a tier matching several different ids gives None: a guessed carrier
    would send the buyer to the wrong counter.
    """
    wanted = name.strip()
    if not wanted:
        return None
    for carrier_id, _ in carriers:
        if carrier_id == wanted:
            return carrier_id
    key = _compact(wanted)
    if not key:
        return None
    key_initials = _initials(wanted)
    table = [(cid, _compact(cname), _initials(cname)) for cid, cname in carriers if cname]

    def fuzzy(cn: str) -> bool:
        return min(len(cn), len(key)) >= _FUZZY_MIN

    tiers: list[Callable[[str, str], bool]] = [
        lambda cn, _ci: cn == key,
        lambda cn, ci: (bool(ci) and ci == key) or (bool(key_initials) and key_initials == cn),
        lambda cn, _ci: fuzzy(cn) and (cn.startswith(key) or key.startswith(cn)),
        lambda cn, _ci: fuzzy(cn) and (cn in key or key in cn),
    ]
    for matches in tiers:
        ids = {cid for cid, cn, ci in table if cn and matches(cn, ci)}
        if len(ids) == 1:
            return ids.pop()
        if ids:
            return None
    return None
