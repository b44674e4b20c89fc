"""Return label input: both accepted shapes, every refusal reason, line numbers, carriers."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from engine.reconcile.labels import (
    LabelError,
    LabelRequest,
    map_carrier,
    parse_label,
    parse_label_lines,
)

ONE_SHOP = ["us-main"]
TWO_SHOPS = ["us-main", "eu-main"]


def ecart(**rf: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "tracking": {"number": "1Z999AA10123456784", "companyId": "12"},
        "fileUrl": "https://cdn.example.com/return-label.pdf",
        "locationId": "WH-001",
        "logisticMode": "dropOff",
    }
    body.update(rf)
    return {"returnFulfillment": body, "parentAfterSalesSn": "PO-1-A"}


def jetti(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": 42,
        "labelUrl": "https://labels.example.com/42.pdf",
        "labelFileFormat": "pdf",
        "trackingNumber": "9400111",
        "trackingCompany": "USPS",
        "labelRefund": False,
        "parentAfterSalesSn": "PO-2-A",
    }
    body.update(kw)
    return body


def reason(obj: Any, **kw: Any) -> str:
    kw.setdefault("shops", ONE_SHOP)
    with pytest.raises(LabelError) as info:
        parse_label(obj, **kw)
    assert str(info.value) == info.value.reason
    return info.value.reason


# --- shapes -------------------------------------------------------------------------------------


def test_ecartapi_drop_off_seed() -> None:
    obj = ecart()
    req = parse_label(obj, shops=ONE_SHOP)
    assert req == LabelRequest(
        parent_after_sales_sn="PO-1-A",
        shop_id="us-main",
        tracking_number="1Z999AA10123456784",
        carrier_id="12",
        carrier_name=None,
        file_url="https://cdn.example.com/return-label.pdf",
        location_id="WH-001",
        logistic_mode="dropOff",
        source="ecartapi",
        raw=obj,
    )
    assert req.raw == obj and req.raw is not obj
    hash(req)  # frozen and usable as a key despite the raw dict


def test_ecartapi_pick_up_seed_without_location() -> None:
    obj = ecart(logisticMode="pickUp", fileUrl="https://cdn.example.com/pickup-certificate.jpg")
    del obj["returnFulfillment"]["locationId"]
    req = parse_label(obj, shops=ONE_SHOP)
    assert (req.logistic_mode, req.location_id) == ("pickUp", None)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("dropOff", "dropOff"),
        ("dropoff", "dropOff"),
        ("DROPOFF", "dropOff"),
        (" drop_off ", "dropOff"),
        ("PICKUP", "pickUp"),
        ("pick-up", "pickUp"),
        (None, None),
        ("", None),
    ],
)
def test_logistic_mode_is_case_insensitive(given: str | None, expected: str | None) -> None:
    assert parse_label(ecart(logisticMode=given), shops=ONE_SHOP).logistic_mode == expected


def test_integer_ids_are_accepted_as_strings() -> None:
    obj = ecart(tracking={"number": 123456789, "companyId": 12}, locationId=7)
    obj["parentAfterSalesSn"] = 555
    req = parse_label(obj, shops=ONE_SHOP)
    assert (req.tracking_number, req.carrier_id, req.location_id) == ("123456789", "12", "7")
    assert req.parent_after_sales_sn == "555"


def test_jetti_shape() -> None:
    req = parse_label(jetti(), shops=ONE_SHOP)
    assert req.source == "jetti"
    assert (req.tracking_number, req.carrier_id, req.carrier_name) == ("9400111", None, "USPS")
    assert req.file_url == "https://labels.example.com/42.pdf"
    assert (req.location_id, req.logistic_mode) == (None, None)
    assert req.parent_after_sales_sn == "PO-2-A"


def test_jetti_without_optional_file_format() -> None:
    req = parse_label(jetti(labelFileFormat=None), shops=ONE_SHOP)
    assert req.carrier_name == "USPS"


def test_path_sn_used_by_the_http_endpoint() -> None:
    obj = ecart()
    del obj["parentAfterSalesSn"]
    req = parse_label(obj, parent_after_sales_sn="PO-9", shops=TWO_SHOPS)
    assert req.parent_after_sales_sn == "PO-9"
    assert req.shop_id is None  # resolved later from the stored return


def test_shop_chosen_among_several() -> None:
    obj = jetti(shop="eu-main")
    assert parse_label(obj, shops=TWO_SHOPS).shop_id == "eu-main"


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("obj", [[1, 2], "label", 3, None, True])
def test_not_an_object(obj: Any) -> None:
    assert reason(obj).startswith("not a JSON object")


def test_unrecognised_shape() -> None:
    assert reason({"parentAfterSalesSn": "PO-1", "foo": 1}).startswith("unrecognised label")


def test_mixed_shapes() -> None:
    obj = ecart()
    obj["trackingNumber"] = "X"
    assert reason(obj).startswith("mixes the ecartAPI shape")


@pytest.mark.parametrize(
    "tracking",
    [{"companyId": "12"}, {"number": "", "companyId": "12"}, {"number": "  ", "companyId": "12"}],
)
def test_ecartapi_missing_tracking_number(tracking: dict[str, Any]) -> None:
    assert reason(ecart(tracking=tracking)).startswith("missing tracking number")


def test_ecartapi_missing_tracking_object() -> None:
    obj = ecart()
    del obj["returnFulfillment"]["tracking"]
    assert reason(obj).startswith("missing tracking number")


@pytest.mark.parametrize("company", [None, "", "   "])
def test_ecartapi_missing_carrier(company: str | None) -> None:
    r = reason(ecart(tracking={"number": "1Z", "companyId": company}))
    assert r == "missing carrier (returnFulfillment.tracking.companyId)"


@pytest.mark.parametrize("company", [None, ""])
def test_jetti_missing_carrier(company: str | None) -> None:
    assert reason(jetti(trackingCompany=company)) == "missing carrier (trackingCompany)"


def test_jetti_missing_tracking_number() -> None:
    assert reason(jetti(trackingNumber=None)) == "missing tracking number (trackingNumber)"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://cdn.example.com/label.pdf",
        "cdn.example.com/label.pdf",
        "https://",
        "https:///label.pdf",
        "https://cdn.example.com/my label.pdf",
    ],
)
def test_url_must_be_an_absolute_http_url(url: str) -> None:
    assert "must be an http(s):// URL" in reason(ecart(fileUrl=url))
    assert "labelUrl must be an http(s):// URL" in reason(jetti(labelUrl=url))


def test_public_http_and_https_urls_are_accepted_in_any_case() -> None:
    # The spec asks for a public URL, not for TLS.
    assert parse_label(ecart(fileUrl="HTTPS://cdn.example.com/l.pdf"), shops=ONE_SHOP)
    assert parse_label(ecart(fileUrl="http://cdn.example.com/l.pdf"), shops=ONE_SHOP)
    assert parse_label(jetti(labelUrl="http://cdn.example.com/l.png"), shops=ONE_SHOP)


def test_missing_url() -> None:
    assert reason(ecart(fileUrl=None)) == "missing returnFulfillment.fileUrl"
    assert reason(jetti(labelUrl=None)) == "missing labelUrl"


def test_missing_jetti_url_quotes_the_label_error() -> None:
    r = reason(jetti(labelUrl=None, labelError="address invalid"))
    assert r == "missing labelUrl; Jetti reports labelError 'address invalid'"


def test_refunded_jetti_label() -> None:
    assert reason(jetti(labelRefund=True)) == "label was refunded (labelRefund is true)"


def test_jetti_unknown_file_format() -> None:
    assert reason(jetti(labelFileFormat="zpl")) == "labelFileFormat must be pdf or png, got 'zpl'"


@pytest.mark.parametrize("mode", ["walkIn", "drop", "pick up later"])
def test_unknown_logistic_mode(mode: str) -> None:
    r = reason(ecart(logisticMode=mode))
    assert r.startswith("unknown returnFulfillment.logisticMode")
    assert "expected dropOff or pickUp" in r


def test_wrong_types() -> None:
    assert reason(ecart(tracking="1Z")).startswith("returnFulfillment.tracking must be an object")
    assert reason({"returnFulfillment": []}).startswith("returnFulfillment must be an object")
    r = reason(ecart(tracking={"number": 1.5e10, "companyId": "12"}))
    assert r == "returnFulfillment.tracking.number must be a string, got number"
    assert reason(jetti(trackingCompany=["UPS"])) == "trackingCompany must be a string, got array"


def test_missing_parent_after_sales_sn_on_import() -> None:
    obj = ecart()
    del obj["parentAfterSalesSn"]
    assert reason(obj) == "missing parentAfterSalesSn"
    assert reason(jetti(parentAfterSalesSn="")) == "missing parentAfterSalesSn"


def test_body_sn_must_agree_with_the_path() -> None:
    r = reason(ecart(), parent_after_sales_sn="PO-OTHER")
    assert r == "parentAfterSalesSn 'PO-1-A' in the body differs from 'PO-OTHER' in the path"
    assert parse_label(ecart(), parent_after_sales_sn="PO-1-A", shops=ONE_SHOP)


def test_shop_required_of_ecartapi_lines_when_several_are_configured() -> None:
    r = reason(ecart(), shops=TWO_SHOPS)
    assert r == "missing shop: 2 shops are configured, say which one (us-main, eu-main)"
    # interface.md gives the Jetti/Onport shape no shop: the stored return's is taken later.
    assert parse_label(jetti(), shops=TWO_SHOPS).shop_id is None


def test_unknown_shop() -> None:
    r = reason(jetti(shop="jp-main"), shops=TWO_SHOPS)
    assert r == "unknown shop 'jp-main' (configured: us-main, eu-main)"
    assert reason(jetti(shop="jp-main"), shops=ONE_SHOP).startswith("unknown shop")


# --- lines --------------------------------------------------------------------------------------


def dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def test_lines_keep_good_ones_and_number_bad_ones() -> None:
    text = "\n".join(
        [
            dumps(ecart()),  # 1
            "",  # 2
            "   ",  # 3
            "{not json",  # 4
            dumps(jetti(trackingNumber=None)),  # 5
            dumps(jetti()),  # 6
            dumps([1]),  # 7
            dumps(ecart(fileUrl="ftp://x.example/l.pdf")),  # 8: same sn as line 1, but bad
            dumps(ecart()),  # 9: duplicate of line 1
            "",
        ]
    )
    good, bad = parse_label_lines(text, ONE_SHOP)
    assert [(n, r.source) for n, r in good] == [(1, "ecartapi"), (6, "jetti")]
    assert [n for n, _ in bad] == [4, 5, 7, 8, 9]
    reasons = dict(bad)
    assert reasons[4].startswith("invalid JSON")
    assert reasons[5] == "missing tracking number (trackingNumber)"
    assert reasons[7].startswith("not a JSON object")
    assert "http(s)" in reasons[8]
    assert reasons[9] == "parentAfterSalesSn 'PO-1-A' already given on line 1"


def test_lines_from_a_file_like_iterable_with_crlf_and_bom() -> None:
    lines = ["\ufeff" + dumps(jetti()) + "\r\n", "\r\n", dumps(ecart()) + "\r\n"]
    good, bad = parse_label_lines(lines, ONE_SHOP)
    assert bad == []
    assert [n for n, _ in good] == [1, 3]


def test_lines_from_bytes_with_a_bad_encoding_line() -> None:
    data = dumps(jetti()).encode() + b"\n\xff\xfe{}\n" + dumps(ecart()).encode()
    good, bad = parse_label_lines(data, ONE_SHOP)
    assert [n for n, _ in good] == [1, 3]
    assert bad == [(2, "not valid UTF-8 text")]


def test_line_separator_inside_a_json_string_is_not_a_line_break() -> None:
    obj = jetti(note="a\u2028b")
    good, bad = parse_label_lines(dumps(obj), ONE_SHOP)
    assert bad == [] and len(good) == 1


def test_lines_with_several_shops() -> None:
    text = "\n".join(
        [
            dumps(jetti(shop="us-main")),
            dumps(jetti(shop="eu-main")),  # same sn, other shop: a different return
            dumps(ecart()),
            dumps(jetti(parentAfterSalesSn="PO-3-A")),  # no shop: the stored return's
        ]
    )
    good, bad = parse_label_lines(text, TWO_SHOPS)
    assert [(n, r.shop_id) for n, r in good] == [(1, "us-main"), (2, "eu-main"), (4, None)]
    assert bad == [(3, "missing shop: 2 shops are configured, say which one (us-main, eu-main)")]


def test_empty_input() -> None:
    assert parse_label_lines("", ONE_SHOP) == ([], [])


# --- carriers -----------------------------------------------------------------------------------

CARRIERS = [
    ("1", "UPS"),
    ("2", "FedEx"),
    ("3", "FedEx Ground"),
    ("4", "United States Postal Service"),
    ("5", "DHL eCommerce"),
    ("6", "OnTrac"),
]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("UPS", "1"),
        ("ups", "1"),
        (" U.P.S. ", "1"),
        ("United Parcel Service", "1"),  # its initials are the carrier's name
        ("FedEx Ground", "3"),  # exact beats the prefix match with "FedEx"
        ("fedex-ground", "3"),
        ("FEDEX", "2"),
        ("FedEx Home Delivery", "2"),  # prefix: starts with "fedex"
        ("USPS", "4"),  # acronym of the carrier's words
        ("dhl", "5"),  # prefix of "dhlecommerce"
        ("OnTrac Inc.", "6"),
        ("4", "4"),  # already an id
        ("Royal Mail", None),
        ("", None),
        ("...", None),
        ("u", None),  # too short to guess from
    ],
)
def test_map_carrier(name: str, expected: str | None) -> None:
    assert map_carrier(name, CARRIERS) == expected


def test_map_carrier_refuses_ambiguous_prefix() -> None:
    carriers = [("2", "FedEx Express"), ("3", "FedEx Ground")]
    assert map_carrier("fedex", carriers) is None
    assert map_carrier("FedEx Ground", carriers) == "3"


def test_map_carrier_same_name_different_ids_is_ambiguous() -> None:
    assert map_carrier("UPS", [("1", "UPS"), ("9", "U.P.S")]) is None
    assert map_carrier("UPS", [("1", "UPS"), ("1", "ups")]) == "1"


def test_map_carrier_unicode_and_empty_table() -> None:
    assert map_carrier("\uff35\uff30\uff33", CARRIERS) == "1"  # full-width letters fold to ASCII
    assert map_carrier("Deutsche Post", [("7", "deutsche  post")]) == "7"
    assert map_carrier("UPS", []) is None
