"""The HTTP server's answers to requests no SDK sends on purpose — malformed, oversized,
unauthenticated, failing — and to the quirks the SDKs do send, through Starlette's TestClient
(in process, lifespan run)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.http.conftest import APP_ID, APP_TOKEN, AUTH, wait_for
from vouchercore import Engine, FakeClock, StorageError, Voucher
from vouchercore.http import create_app


def _made(client: TestClient, code: str, **body: Any) -> dict[str, Any]:
    answer = client.post(f"/v1/vouchers/{code}", json=body)
    assert answer.status_code == 200, answer.text
    made: dict[str, Any] = answer.json()
    return made


def _discount(client: TestClient, code: str = "D-5", quantity: int | None = None) -> None:
    _made(
        client,
        code,
        type="DISCOUNT_VOUCHER",
        discount={"type": "AMOUNT", "amount_off": 500},
        redemption=None if quantity is None else {"quantity": quantity},
    )


def _refused(answer: Any, status: int, key: str) -> dict[str, Any]:
    """The error object of *answer*, checked: *status*, *key*, every field of Voucherify's
    error object, a request id, and nothing of Python's insides."""
    assert answer.status_code == status, answer.text
    body: dict[str, Any] = answer.json()
    assert list(body) == [
        "code",
        "key",
        "message",
        "details",
        "request_id",
        "resource_id",
        "resource_type",
    ]
    assert (body["code"], body["key"]) == (status, key)
    assert re.fullmatch(r"v-[0-9a-f]{20}", body["request_id"])
    assert "Traceback" not in answer.text and 'File "' not in answer.text
    return body


# --- malformed requests -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b'{"type": "GIFT_VOUCHER", "gift": {"amount": ', "not valid JSON"),
        (b'{"type": "GIFT_VOUCHER", "gift": {"amount": NaN}}', "NaN is not a JSON number"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b"\xff\xfe\x00garbage", "not"),
    ],
    ids=["truncated", "nan", "deep", "not-utf8"],
)
def test_a_body_that_is_not_json_is_refused_and_nothing_is_created(
    client: TestClient, raw: bytes, words: str
) -> None:
    answer = client.post(
        "/v1/vouchers/G-1", content=raw, headers={"Content-Type": "application/json"}
    )
    assert words in _refused(answer, 400, "invalid_payload")["message"]
    _refused(client.get("/v1/vouchers/G-1"), 404, "not_found")


@pytest.mark.parametrize(
    ("path", "body", "key", "words"),
    [
        ("/v1/vouchers/G-1", [1, 2], "invalid_payload", "body must be a JSON object"),
        (
            "/v1/vouchers/G-1",
            {"type": "GIFT_VOUCHER", "gift": {"amount": "5000"}},
            "invalid_amount",
            "gift.amount",
        ),
        (
            "/v1/vouchers/G-1",
            {"type": "GIFT_VOUCHER", "gift": {"amount": 5000.0}},
            "invalid_amount",
            "gift.amount",
        ),
        ("/v1/vouchers/G-1", {"gift": {"amount": 1}, "active": "yes"}, "invalid_payload", "active"),
        ("/v1/vouchers/G-1", {"gift": {"amount": 1}, "colour": "red"}, "invalid_payload", "colour"),
        (
            "/v1/vouchers/G-1",
            {"gift": {"amount": 1}, "validity_timeframe": {"interval": "P1D"}},
            "invalid_payload",
            "validity_timeframe is not supported",
        ),
        (
            "/v1/vouchers/G-1",
            {"discount": {"type": "AMOUNT", "amount_off_formula": "2*x"}},
            "invalid_payload",
            "discount.amount_off_formula",
        ),
        (
            "/v1/vouchers/G-1",
            {"gift": {"amount": 1}, "start_date": "next tuesday"},
            "invalid_payload",
            "start_date",
        ),
        ("/v1/validations", {"redeemables": "G-1"}, "invalid_payload", "redeemables"),
        ("/v1/validations", {"redeemables": []}, "invalid_payload", "at least one"),
        (
            "/v1/validations",
            {"redeemables": [{"object": "voucher", "id": "G-1"}], "order": {"items": [{}]}},
            "invalid_payload",
            "items",
        ),
        (
            "/v1/validations",
            {"redeemables": [{"object": "voucher", "id": "G-1"}], "x": 1},
            "invalid_payload",
            "'x'",
        ),
        (
            "/v1/validations",
            {"redeemables": [{"object": "voucher", "id": f"V{i}"} for i in range(31)]},
            "redeemables_limit_exceeded",
            "31",
        ),
        (
            "/v1/redemptions",
            {"redeemables": [{"object": "promotion_tier", "id": "p"}]},
            "invalid_payload",
            "object",
        ),
    ],
    ids=[
        "body-a-list",
        "amount-a-string",
        "amount-a-float",
        "active-a-string",
        "unknown-field",
        "unsupported-field",
        "unsupported-discount-field",
        "bad-instant",
        "redeemables-a-string",
        "no-redeemables",
        "order-items",
        "unknown-top-field",
        "too-many-redeemables",
        "promotion-tier",
    ],
)
def test_a_malformed_request_is_refused_naming_what_is_wrong_and_nothing_changes(
    client: TestClient, engine: Engine, path: str, body: Any, key: str, words: str
) -> None:
    answer = client.post(path, json=body)
    assert words in _refused(answer, 400, key)["message"]
    assert engine.audit().vouchers == 0


def test_fields_the_sdk_sends_as_null_are_taken_as_not_given(client: TestClient) -> None:
    body = {
        "type": "GIFT_VOUCHER",
        "gift": {"amount": 2000, "subtracted_amount": None, "balance": None, "effect": None},
        "campaign": None,
        "category_id": None,
        "start_date": None,
        "validity_timeframe": None,
        "active": None,
        "metadata": None,
        "redemption": None,
        "a_field_of_a_newer_sdk": None,
    }
    made = _made(client, "G-1", **body)
    assert (made["gift"], made["active"], made["redemption"]["quantity"]) == (
        {"amount": 2000, "balance": 2000},
        True,
        None,
    )
    checked = client.post(
        "/v1/validations",
        json={
            "redeemables": [{"object": "voucher", "id": "G-1", "gift": None, "reward": None}],
            "order": {"amount": 1500, "id": None, "items": None, "metadata": None, "status": None},
            "customer": {"id": None, "source_id": "c-1", "name": "Ann", "email": None},
            "session": {"key": None, "type": "LOCK", "ttl": None, "ttl_unit": None},
            "options": None,
            "tracking_id": None,
            "metadata": None,
        },
    )
    assert checked.status_code == 200, checked.text
    answer = checked.json()
    assert answer["valid"] is True
    assert answer["session"]["key"].startswith("ssn_")
    assert (answer["session"]["ttl"], answer["session"]["ttl_unit"]) == (7, "DAYS")


def test_a_body_over_the_cap_is_refused_before_anything_is_read(engine: Engine) -> None:
    app = create_app(engine, app_id=APP_ID, app_token=APP_TOKEN, max_body_bytes=1_024)
    body = {"type": "GIFT_VOUCHER", "gift": {"amount": 1}, "metadata": {"note": "x" * 2_000}}
    with TestClient(app, headers=AUTH) as client:
        declared = client.post("/v1/vouchers/BIG", json=body)
        assert "larger than 1,024 bytes" in _refused(declared, 400, "invalid_payload")["message"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
            yield json.dumps(body).encode()

        streamed = client.post(
            "/v1/vouchers/BIG", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert "larger than" in _refused(streamed, 400, "invalid_payload")["message"]
        _refused(client.get("/v1/vouchers/BIG"), 404, "not_found")


def test_an_oversize_query_is_refused_and_the_redemption_is_not_rolled_back(
    client: TestClient, engine: Engine
) -> None:
    _discount(client)
    redeemed = client.post(
        "/v1/redemptions",
        json={"redeemables": [{"object": "voucher", "id": "D-5"}], "order": {"amount": 900}},
    ).json()
    parent = redeemed["parent_redemption"]["id"]
    long_reason = client.post(f"/v1/redemptions/{parent}/rollback", params={"reason": "r" * 5_000})
    assert "reason is longer than 4,096" in _refused(long_reason, 400, "invalid_payload")["message"]
    long_query = client.post(
        f"/v1/redemptions/{parent}/rollback", params={f"p{i}": "x" * 90 for i in range(100)}
    )
    assert "query string is longer" in _refused(long_query, 400, "invalid_payload")["message"]
    bad_number = client.get("/v1/vouchers/D-5/transactions", params={"limit": "ten"})
    _refused(bad_number, 400, "invalid_payload")
    assert engine.get_parent_redemption(parent).status.value == "SUCCEEDED"


# --- authentication -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-App-Id": APP_ID},
        {"X-App-Id": APP_ID, "X-App-Token": APP_TOKEN + "x"},
        {"X-App-Id": "someone-else", "X-App-Token": APP_TOKEN},
        {"X-App-Id": APP_TOKEN, "X-App-Token": APP_ID},
    ],
    ids=["none", "no-token", "wrong-token", "wrong-id", "swapped"],
)
def test_a_request_without_the_right_credentials_gets_401_and_is_not_served(
    engine: Engine, headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = create_app(engine, app_id=APP_ID, app_token=APP_TOKEN)
    with TestClient(app, headers=headers) as client:
        _refused(client.post("/v1/vouchers/G-1", json={"gift": {"amount": 1}}), 401, "unauthorized")
        _refused(client.get("/v1/no/such/route"), 401, "unauthorized")
    assert engine.audit().vouchers == 0
    assert APP_TOKEN not in caplog.text


def test_the_credentials_are_never_logged_even_when_a_request_fails(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client.post("/v1/vouchers/G-1", content=b"{", headers={"Content-Type": "application/json"})
    client.get("/v1/vouchers/NOPE")
    assert APP_TOKEN not in caplog.text and APP_ID not in caplog.text


def test_credentials_must_be_given_to_create_an_app(engine: Engine) -> None:
    with pytest.raises(ValueError, match="app_token"):
        create_app(engine, app_id=APP_ID, app_token="")


# --- failures -----------------------------------------------------------------------------------


class _FailingOnce(Engine):
    """An engine whose next ``get_voucher`` fails as a broken driver would."""

    def __init__(self, problem: Exception, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.problem: Exception | None = problem

    def get_voucher(self, code_or_id: str) -> Voucher:
        problem, self.problem = self.problem, None
        if problem is not None:
            raise problem
        return super().get_voucher(code_or_id)


def test_an_unexpected_exception_answers_500_with_a_request_id_that_the_log_names(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    failing = _FailingOnce(RuntimeError("connect to 10.0.0.5 password=hunter2"), clock=clock)
    failing.create_voucher("D-1", discount={"type": "AMOUNT", "amount_off": 100})
    with TestClient(
        create_app(failing, app_id=APP_ID, app_token=APP_TOKEN), headers=AUTH
    ) as client:
        answer = client.get("/v1/vouchers/D-1")
        body = _refused(answer, 500, "internal_error")
        assert "hunter2" not in answer.text and "RuntimeError" not in answer.text
        assert body["request_id"] in body["message"]
        (logged,) = [r for r in caplog.records if body["request_id"] in r.getMessage()]
        assert logged.levelno == logging.ERROR and logged.exc_info is not None
        # the voucher stays usable
        assert client.get("/v1/vouchers/D-1").json()["code"] == "D-1"
        assert client.post("/v1/vouchers/D-1/disable").json()["active"] is False


def test_a_storage_error_answers_503_without_the_drivers_words(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    failing = _FailingOnce(
        StorageError("SQLite store '/srv/secret.db': disk I/O error"), clock=clock
    )
    with TestClient(
        create_app(failing, app_id=APP_ID, app_token=APP_TOKEN), headers=AUTH
    ) as client:
        answer = client.get("/v1/vouchers/D-1")
        body = _refused(answer, 503, "storage_error")
        assert "secret.db" not in answer.text and "disk I/O" not in answer.text
    assert "disk I/O error" in caplog.text and body["request_id"] in caplog.text


def test_an_unknown_route_is_404_and_a_wrong_method_405_as_error_objects(
    client: TestClient,
) -> None:
    _refused(client.get("/v1/nothing-here"), 404, "not_found")
    _refused(client.get("/v1/vouchers/A/B/C"), 404, "not_found")
    _refused(client.patch("/v1/vouchers/D-5"), 405, "method_not_allowed")


# --- what the SDKs send -------------------------------------------------------------------------


def test_get_and_delete_with_a_json_content_type_and_an_empty_body_are_served(
    client: TestClient,
) -> None:
    _discount(client)
    json_type = {"Content-Type": "application/json"}
    assert (
        client.request("GET", "/v1/vouchers/D-5", headers=json_type, content=b"").json()["code"]
        == "D-5"
    )
    assert client.request("POST", "/v1/vouchers/D-5/disable", headers=json_type).status_code == 200
    deleted = client.request("DELETE", "/v1/vouchers/D-5", headers=json_type, content=b"")
    assert deleted.status_code == 204 and deleted.content == b""
    _refused(client.get("/v1/vouchers/D-5"), 404, "not_found")


def test_an_update_always_typed_discount_voucher_changes_a_gift_cards_active_flag(
    client: TestClient,
) -> None:
    _made(client, "G-1", type="GIFT_VOUCHER", gift={"amount": 100})
    updated = client.put("/v1/vouchers/G-1", json={"active": False, "type": "DISCOUNT_VOUCHER"})
    assert (updated.json()["active"], updated.json()["type"]) == (False, "GIFT_VOUCHER")
    unchanged = client.put("/v1/vouchers/G-1", json={"type": "DISCOUNT_VOUCHER", "metadata": None})
    assert unchanged.json()["active"] is False
    refused = client.put("/v1/vouchers/G-1", json={"active": True, "expiration_date": "2030-01-01"})
    assert (
        "'expiration_date' cannot be changed"
        in _refused(refused, 400, "invalid_payload")["message"]
    )
    assert client.get("/v1/vouchers/G-1").json()["active"] is False


@pytest.mark.parametrize("path", ["/v1/vouchers", "/v1/vouchers/"])
def test_a_voucher_is_created_with_a_generated_code_with_or_without_a_trailing_slash(
    client: TestClient, path: str
) -> None:
    plain = client.post(path, json={"type": "GIFT_VOUCHER", "gift": {"amount": 100}}).json()
    assert re.fullmatch(r"[0-9A-Z]{8}", plain["code"])
    shaped = client.post(
        path,
        json={
            "gift": {"amount": 100},
            "code_config": {"length": 12, "prefix": "GC-", "charset": "0123456789"},
        },
    ).json()
    assert re.fullmatch(r"GC-[0-9]{12}", shaped["code"])
    given = client.post(path, json={"code": "MINE", "gift": {"amount": 100}}).json()
    assert given["code"] == "MINE"
    both = client.post(
        path, json={"code": "X", "code_config": {"length": 5}, "gift": {"amount": 1}}
    )
    _refused(both, 400, "invalid_payload")


# --- answers ------------------------------------------------------------------------------------


def test_an_invalid_validation_is_http_200_with_each_redeemables_status_and_error(
    client: TestClient, engine: Engine
) -> None:
    _discount(client, "D-5")
    _made(client, "G-0", type="GIFT_VOUCHER", gift={"amount": 0})
    answer = client.post(
        "/v1/validations",
        json={
            "redeemables": [
                {"object": "voucher", "id": "D-5"},
                {"object": "voucher", "id": "NOPE"},
                {"object": "voucher", "id": "G-0", "gift": {"credits": 100}},
            ],
            "order": {"amount": 1_000},
        },
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["valid"] is False
    assert [r["status"] for r in body["redeemables"]] == [
        "APPLICABLE",
        "INAPPLICABLE",
        "INAPPLICABLE",
    ]
    missing = body["redeemables"][1]["result"]
    assert (missing["error"]["key"], missing["details"]["key"]) == ("not_found", "not_found")
    assert body["redeemables"][2]["result"]["error"]["key"] == "gift_amount_exceeded"
    assert [r["id"] for r in body["inapplicable_redeemables"]] == ["NOPE", "G-0"]
    assert body["stacking_rules"]["redeemables_limit"] == engine.stacking_rules.redeemables_limit
    assert body["stacking_rules"]["redeemables_application_mode"] == "ALL"


def test_amounts_are_integers_in_minor_units_and_instants_iso_8601_utc(client: TestClient) -> None:
    _made(
        client,
        "P-12",
        discount={"type": "PERCENT", "percent_off": 12.5},
        start_date="2026-01-01T00:00:00+02:00",
        expiration_date="2026-12-31",
    )
    made = client.get("/v1/vouchers/P-12").json()
    assert made["discount"] == {"type": "PERCENT", "percent_off": 12.5}
    assert made["start_date"] == "2025-12-31T22:00:00.000Z"
    assert made["expiration_date"] == "2026-12-31T23:59:59.999Z"
    assert made["created_at"] == "2026-03-01T12:00:00.000Z"
    answer = client.post(
        "/v1/validations",
        json={"redeemables": [{"object": "voucher", "id": "P-12"}], "order": {"amount": 999}},
    )
    order = answer.json()["order"]
    assert (order["discount_amount"], order["total_amount"]) == (125, 874)
    assert all(type(order[k]) is int for k in ("amount", "discount_amount", "total_amount"))
    assert ".0," not in answer.text and ".0}" not in answer.text


def test_the_same_idempotency_key_returns_the_first_redemption_and_redeems_once(
    client: TestClient, engine: Engine
) -> None:
    _discount(client, "D-5", quantity=5)
    request = {"redeemables": [{"object": "voucher", "id": "D-5"}], "order": {"amount": 1_000}}
    first = client.post("/v1/redemptions", json=request, headers={"Idempotency-Key": "k-1"})
    again = client.post("/v1/redemptions", json=request, headers={"Idempotency-Key": "k-1"})
    assert first.json()["parent_redemption"]["id"] == again.json()["parent_redemption"]["id"]
    assert engine.get_voucher("D-5").redeemed_quantity == 1
    other = dict(request, order={"amount": 2_000})
    reused = client.post("/v1/redemptions", json=other, headers={"Idempotency-Key": "k-1"})
    _refused(reused, 409, "idempotency_key_reused")


def test_the_legacy_validate_and_redemption_endpoints_answer_the_npm_sdks_shapes(
    client: TestClient, engine: Engine
) -> None:
    _made(client, "GC-1", type="GIFT_VOUCHER", gift={"amount": 5_000})
    checked = client.post(
        "/v1/vouchers/GC-1/validate",
        json={"order": {"amount": 3_000}, "gift": {"credits": 1_000}, "session": {"type": "LOCK"}},
    ).json()
    assert (checked["valid"], checked["code"]) == (True, "GC-1")
    assert checked["gift"] == {"amount": 5_000, "balance": 5_000, "credits": 1_000}
    key = checked["session"]["key"]
    redeemed = client.post(
        "/v1/vouchers/GC-1/redemption",
        json={"order": {"amount": 3_000}, "gift": {"credits": 1_000}, "session": {"key": key}},
    ).json()
    assert (redeemed["object"], redeemed["result"], redeemed["gift"]) == (
        "redemption",
        "SUCCESS",
        {"amount": 1_000},
    )
    assert redeemed["voucher"]["gift"]["balance"] == 4_000
    too_much = client.post("/v1/vouchers/GC-1/validate", json={"gift": {"credits": 9_000}})
    assert too_much.status_code == 200
    assert (too_much.json()["valid"], too_much.json()["error"]["key"]) == (
        False,
        "gift_amount_exceeded",
    )
    refused = client.post("/v1/vouchers/GC-1/redemption", json={"gift": {"credits": 9_000}})
    _refused(refused, 400, "gift_amount_exceeded")
    rolled = client.post(f"/v1/redemptions/{redeemed['id']}/rollback", json={"reason": "refund"})
    assert (rolled.json()["object"], rolled.json()["amount"], rolled.json()["reason"]) == (
        "redemption_rollback",
        -1_000,
        "refund",
    )
    assert engine.get_voucher("GC-1").gift.balance == 5_000  # type: ignore[union-attr]
    both = client.post(
        f"/v1/redemptions/{redeemed['id']}/rollback", params={"reason": "a"}, json={"reason": "b"}
    )
    _refused(both, 400, "invalid_payload")


def test_a_redemption_is_found_by_its_id_and_a_stacked_one_by_its_parents(
    client: TestClient,
) -> None:
    _discount(client, "D-5")
    redeemed = client.post(
        "/v1/redemptions",
        json={"redeemables": [{"object": "voucher", "id": "D-5"}], "order": {"amount": 900}},
    ).json()
    parent, child = redeemed["parent_redemption"], redeemed["redemptions"][0]
    found_parent = client.get(f"/v1/redemptions/{parent['id']}").json()
    assert (
        found_parent["related_object_type"],
        found_parent["related_redemptions"]["redemptions"],
    ) == (
        "redemption",
        [{"id": child["id"], "date": parent["date"]}],
    )
    assert client.get(f"/v1/redemptions/{child['id']}").json()["redemption"] == parent["id"]
    _refused(client.get("/v1/redemptions/r_nothing"), 404, "not_found")
    rolled = client.post(f"/v1/redemptions/{parent['id']}/rollbacks", params={"reason": "x"}).json()
    assert [r["redemption"] for r in rolled["rollbacks"]] == [child["id"]]
    assert rolled["parent_rollback"]["reason"] == "x"
    single = client.post(f"/v1/redemptions/{child['id']}/rollbacks")
    _refused(single, 404, "not_found")


# --- exports and imports ------------------------------------------------------------------------


def test_an_export_names_its_voucher_in_a_filter_the_sdk_accepts_and_serves_its_file_by_token(
    client: TestClient,
) -> None:
    card = _made(client, "G-1", type="GIFT_VOUCHER", gift={"amount": 100})
    client.post("/v1/vouchers/G-1/balance", json={"amount": 50})
    made = client.post("/v1/vouchers/G-1/transactions/export", json={"parameters": None}).json()
    # the spec's $in allows one-character items only (the SDK enforces it): $is names the id
    assert made["parameters"]["filters"] == {"voucher_id": {"conditions": {"$is": [card["id"]]}}}
    assert made["status"] == "SCHEDULED" and "_token" not in made
    done = wait_for(
        lambda: (
            (found := client.get(f"/v1/exports/{made['id']}").json())["status"] == "DONE" and found
        ),
        "the export is done",
    )
    url = done["result"]["url"]
    token = url.split("token=", 1)[1]
    assert url.startswith("http://testserver/v1/exports/")
    download = client.get(f"/v1/exports/{made['id']}", params={"token": token})
    assert download.headers["content-type"] == "text/plain; charset=utf-8"
    assert download.text.splitlines()[0].startswith("id,type,")
    assert "CREDITS_ADDITION" in download.text
    wrong = client.get(f"/v1/exports/{made['id']}", params={"token": token[:-1] + "?"})
    _refused(wrong, 404, "not_found")
    for nothing in ("exp_nothing", "..%2F..%2Fetc%2Fpasswd", "exp_AAAAAAAAAAAAAAAAAAAAAAAA"):
        _refused(client.get(f"/v1/exports/{nothing}"), 404, "not_found")


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ({"parameters": {"fields": ["id", "colour"]}}, "invalid_export_fields"),
        ({"parameters": {"order": "amount"}}, "invalid_payload"),
        ({"parameters": {"filters": {"voucher_id": {}}}}, "invalid_payload"),
    ],
    ids=["unknown-field", "bad-order", "filters"],
)
def test_a_malformed_export_is_refused_before_it_is_scheduled(
    client: TestClient, body: dict[str, Any], key: str
) -> None:
    _made(client, "G-1", type="GIFT_VOUCHER", gift={"amount": 100})
    _refused(client.post("/v1/vouchers/G-1/transactions/export", json=body), 400, key)
    _refused(client.post("/v1/vouchers/NOPE/transactions/export", json={}), 404, "not_found")


def test_an_upload_over_its_cap_or_without_a_file_part_is_refused(engine: Engine) -> None:
    app = create_app(engine, app_id=APP_ID, app_token=APP_TOKEN, max_upload_bytes=2_000)
    big = b"Code,Voucher Type,Value,Discount Type\n" + b"C,DISCOUNT_VOUCHER,1,AMOUNT\n" * 100
    with TestClient(app, headers=AUTH) as client:
        over = client.post("/v1/vouchers/importCSV", files={"file": ("v.csv", big, "text/csv")})
        assert "larger than 2,000 bytes" in _refused(over, 400, "invalid_payload")["message"]
        other_part = client.post(
            "/v1/vouchers/importCSV", files={"upload": ("v.csv", b"Code\n", "text/csv")}
        )
        assert "no part 'file'" in _refused(other_part, 400, "invalid_payload")["message"]
        not_multipart = client.post("/v1/vouchers/importCSV", content=b"Code\n")
        _refused(not_multipart, 400, "invalid_payload")
        _refused(client.get("/v1/async-actions/aa_nothing"), 404, "not_found")
    assert engine.audit().vouchers == 0


def test_a_file_that_cannot_be_imported_at_all_fails_its_async_action(client: TestClient) -> None:
    sent = client.post(
        "/v1/vouchers/importCSV", files={"file": ("v.csv", b"Name,Colour\nx,y\n", "text/csv")}
    )
    assert sent.status_code == 202
    action_id = sent.json()["async_action_id"]
    done = wait_for(
        lambda: (
            (found := client.get(f"/v1/async-actions/{action_id}").json())["status"]
            in ("DONE", "FAILED")
            and found
        ),
        "the import ends",
    )
    assert (done["status"], done["operation_status"]) == ("FAILED", "FAILED")
    assert "Code" in done["result"]["message"]


def test_an_export_can_be_deleted_with_its_file(client: TestClient) -> None:
    _made(client, "G-1", type="GIFT_VOUCHER", gift={"amount": 100})
    made = client.post("/v1/vouchers/G-1/transactions/export", json={}).json()
    wait_for(
        lambda: client.get(f"/v1/exports/{made['id']}").json()["status"] == "DONE",
        "the export is done",
    )
    assert client.delete(f"/v1/exports/{made['id']}").status_code == 204
    _refused(client.get(f"/v1/exports/{made['id']}"), 404, "not_found")
    _refused(client.delete(f"/v1/exports/{made['id']}"), 404, "not_found")


def test_transactions_are_paged_by_number_or_by_cursor_in_either_order(client: TestClient) -> None:
    _made(client, "G-1", type="GIFT_VOUCHER", gift={"amount": 100})
    for amount in (1, 2, 3):
        client.post("/v1/vouchers/G-1/balance", json={"amount": amount})
    pages = [
        client.get("/v1/vouchers/G-1/transactions", params={"limit": 2, "page": page}).json()
        for page in (1, 2)
    ]
    amounts = [[tx["details"]["balance"]["amount"] for tx in p["data"]] for p in pages]
    assert amounts == [[3, 2], [1]]
    assert [p["has_more"] for p in pages] == [True, False]
    oldest = client.get("/v1/vouchers/G-1/transactions", params={"order": "id"}).json()
    assert [tx["details"]["balance"]["amount"] for tx in oldest["data"]] == [1, 2, 3]
    both = client.get(
        "/v1/vouchers/G-1/transactions", params={"page": 2, "starting_after_id": "vtx_1"}
    )
    _refused(both, 400, "invalid_payload")
    _refused(
        client.get("/v1/vouchers/G-1/transactions", params={"limit": 101}), 400, "invalid_payload"
    )


def test_a_content_length_that_is_not_a_number_is_refused(client: TestClient) -> None:
    answer = client.post(
        "/v1/vouchers/G-1",
        content=b'{"gift": {"amount": 1}}',
        headers={"Content-Type": "application/json", "Content-Length": "lots"},
    )
    _refused(answer, 400, "invalid_payload")


def test_an_import_running_at_shutdown_is_stopped_or_done_never_left_running(
    engine: Engine, tmp_path: Path
) -> None:
    rows = "".join(f"C{i},GIFT_VOUCHER,100,\n" for i in range(30_000))
    upload = ("Code,Voucher Type,Value,Discount Type\n" + rows).encode()
    jobs_dir = tmp_path / "jobs"
    app = create_app(engine, app_id=APP_ID, app_token=APP_TOKEN, jobs_dir=str(jobs_dir))
    with TestClient(app, headers=AUTH) as client:
        sent = client.post("/v1/vouchers/importCSV", files={"file": ("v.csv", upload, "text/csv")})
        action_id = sent.json()["async_action_id"]
    # the lifespan shutdown waited for the job: it ended, one way or the other
    record = json.loads((jobs_dir / f"{action_id}.json").read_text(encoding="utf-8"))
    assert record["status"] in ("DONE", "FAILED")
    if record["status"] == "FAILED":
        assert record["result"]["message"].startswith("stopped: the server shut down")
    imported = engine.audit()
    assert imported.ok
    # rows are stored in batches of 50,000: all of them, or (stopped before the end) none
    assert imported.vouchers in (0, 30_000)
    if record["status"] == "DONE":
        assert (imported.vouchers, record["result"]["done_count"]) == (30_000, 30_000)


def test_a_file_part_sent_without_a_filename_is_imported_all_the_same(
    client: TestClient, engine: Engine
) -> None:
    text = b"Code,Voucher Type,Value,Discount Type\nT-1,GIFT_VOUCHER,100,\n"
    sent = client.post("/v1/vouchers/importCSV", files={"file": (None, text)})
    assert sent.status_code == 202, sent.text
    action_id = sent.json()["async_action_id"]
    wait_for(
        lambda: client.get(f"/v1/async-actions/{action_id}").json()["status"] == "DONE",
        "the import is done",
    )
    assert engine.get_voucher("T-1").gift.balance == 100  # type: ignore[union-attr]
