"""The server's answers checked against Voucherify's own OpenAPI schemas.

The schemas are the parts of Voucherify's public OpenAPI document (repository
voucherifyio/voucherify-openapi, file ``production/readOnly-openAPI.json``, commit 65c33a7)
that describe the answers of the operations the server implements, kept in
``tests/http/openapi/voucherify.json`` (made by ``tests/http/openapi/extract.py``; see the
README there). One module fixture drives an in-memory server (Starlette's TestClient) through
every implemented endpoint — successes and refusals: 400 error objects, 401, 404, 405, 409,
500, ``valid: false`` validations, stacked validations with inapplicable and skipped
redeemables, stacked redemptions and their rollbacks, parent redemption gets (succeeded,
rolled back, failed), exports and their download, CSV imports through their async action
(each seen before and after it is done: the job is held, not raced) — and records each answer
under the document's path template, method and status. Each ``(path, method, status)`` of
:data:`EXPECTED` is then one test case: every answer recorded for it is validated with
``jsonschema`` against the schema the document gives for it.

**From OpenAPI 3.0 to JSON Schema.** OpenAPI 3.0's Schema Object extends JSON Schema draft
Wright-00, whose keywords draft 4 has (boolean ``exclusiveMinimum``; ``1.0`` is not an
``integer``), so the schemas are validated as draft 4 after :func:`_json_schema` made these
changes:

- ``nullable: true`` also accepts ``null`` (with an ``enum`` too, as the generated SDKs do).
- **``oneOf`` is treated as ``anyOf``.** The document's ``oneOf`` lists hold object schemas
  without required fields, so an answer matches more than one branch and a strict ``oneOf``
  refuses it, however right it is: a validated redeemable's ``result`` matches all five
  ``RedeemableResult…`` branches, a CSV import's async-action ``result`` twenty of the
  twenty-two ``AsyncAction`` result kinds, a ``UNIT`` discount both ``DiscountUnit`` and
  ``DiscountUnitMultiple``.
- Annotations (``description``, ``example``, ``discriminator``, ``readOnly`` …) are dropped;
  the ``date-time`` and ``date`` formats are checked.

**This test's own rules, on top of the schemas** (issue 13: "shapes as Voucherify's OpenAPI
spec has them"): an object whose schema has an ``object`` property carries it (the document
rarely lists it as required); no number is a float except a discount's ``percent_off`` (the
document types money as ``number``; vouchercore's amounts are integers in minor units);
every instant (``…_at``, ``date``, ``start_date``, ``expiration_date``) is UTC ISO 8601 with
a ``Z``. Enum values are the schemas' own ``enum`` checks. A test case per rule shows that each
check refuses an answer with one thing wrong.

**Where the document says nothing:**

- It lists only success answers (200, 202, 204), with no ``default``: every error answer is
  checked against its error object, ``components.schemas.Error`` (and its ``code`` against the
  HTTP status).
- It has no legacy ``POST /v1/vouchers/{code}/validate`` and ``…/redemption`` (the npm SDK
  2.9.0's): the redemption answer is checked against ``Redemption`` (the object it is), the
  validation answer (no schema anywhere in the document) by this test's own rules only, its
  ``error`` against ``Error``.
- ``GET /v1/exports/{id}?token=…`` is the document's ``download-export``
  (``/v1/exports/{export_Id}``): a ``text/plain`` string.

**The SDK as arbiter.** Every JSON success answer is also read by the PyPI SDK 6.1.1's model
of it (``from_dict``). No schema check is skipped: no answer the SDK needs contradicts the
document (the export filter's ``$is``, chosen because the document limits ``$in`` items to one
character, fits both; see :mod:`vouchercore.http.jobs`).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import pytest
from jsonschema import Draft4Validator, FormatChecker
from jsonschema.exceptions import ValidationError
from starlette.testclient import TestClient

from tests.conftest import START
from tests.http.conftest import AUTH, wait_for
from tests.liveness import LIVENESS
from vouchercore import Engine, FakeClock
from vouchercore.http import create_app

DOCUMENT: Final = json.loads(
    (Path(__file__).parent / "openapi" / "voucherify.json").read_text(encoding="utf-8")
)
_SCHEMAS: Final = "#/components/schemas/"

#: Answers of operations the document does not have: the schema each is checked against
#: (None: this test's own rules only).
LEGACY: Final[dict[tuple[str, str], str | None]] = {
    ("/v1/vouchers/{code}/validate", "post"): None,
    ("/v1/vouchers/{code}/redemption", "post"): "Redemption",
}

#: Every (path template, method, status) the drive must get, each one test case.
EXPECTED: Final = (
    ("/v1/vouchers", "post", 200),
    ("/v1/vouchers", "post", 400),
    ("/v1/vouchers/{code}", "get", 200),
    ("/v1/vouchers/{code}", "get", 401),
    ("/v1/vouchers/{code}", "get", 404),
    ("/v1/vouchers/{code}", "get", 500),
    ("/v1/vouchers/{code}", "post", 200),
    ("/v1/vouchers/{code}", "post", 400),
    ("/v1/vouchers/{code}", "post", 409),
    ("/v1/vouchers/{code}", "put", 200),
    ("/v1/vouchers/{code}", "put", 400),
    ("/v1/vouchers/{code}", "put", 404),
    ("/v1/vouchers/{code}", "delete", 204),
    ("/v1/vouchers/{code}", "delete", 404),
    ("/v1/vouchers/{code}", "patch", 405),
    ("/v1/vouchers/{code}/enable", "post", 200),
    ("/v1/vouchers/{code}/enable", "post", 404),
    ("/v1/vouchers/{code}/disable", "post", 200),
    ("/v1/vouchers/{code}/balance", "post", 200),
    ("/v1/vouchers/{code}/balance", "post", 400),
    ("/v1/vouchers/{code}/balance", "post", 404),
    ("/v1/vouchers/{code}/balance", "post", 409),
    ("/v1/vouchers/{code}/transactions", "get", 200),
    ("/v1/vouchers/{code}/transactions", "get", 400),
    ("/v1/vouchers/{code}/transactions", "get", 404),
    ("/v1/vouchers/{code}/transactions/export", "post", 200),
    ("/v1/vouchers/{code}/transactions/export", "post", 400),
    ("/v1/vouchers/{code}/transactions/export", "post", 404),
    ("/v1/vouchers/importCSV", "post", 202),
    ("/v1/vouchers/importCSV", "post", 400),
    ("/v1/vouchers/{code}/sessions/{sessionKey}", "delete", 204),
    ("/v1/vouchers/{code}/sessions/{sessionKey}", "delete", 404),
    ("/v1/vouchers/{code}/redemption", "get", 200),
    ("/v1/vouchers/{code}/redemption", "get", 404),
    ("/v1/vouchers/{code}/validate", "post", 200),
    ("/v1/vouchers/{code}/validate", "post", 400),
    ("/v1/vouchers/{code}/redemption", "post", 200),
    ("/v1/vouchers/{code}/redemption", "post", 400),
    ("/v1/vouchers/{code}/redemption", "post", 404),
    ("/v1/validations", "post", 200),
    ("/v1/validations", "post", 400),
    ("/v1/redemptions", "post", 200),
    ("/v1/redemptions", "post", 400),
    ("/v1/redemptions", "post", 404),
    ("/v1/redemptions", "post", 409),
    ("/v1/redemptions/{redemptionId}", "get", 200),
    ("/v1/redemptions/{redemptionId}", "get", 404),
    ("/v1/redemptions/{redemptionId}/rollback", "post", 200),
    ("/v1/redemptions/{redemptionId}/rollback", "post", 400),
    ("/v1/redemptions/{redemptionId}/rollback", "post", 404),
    ("/v1/redemptions/{parentRedemptionId}/rollbacks", "post", 200),
    ("/v1/redemptions/{parentRedemptionId}/rollbacks", "post", 400),
    ("/v1/redemptions/{parentRedemptionId}/rollbacks", "post", 404),
    ("/v1/exports/{exportId}", "get", 200),
    ("/v1/exports/{exportId}", "get", 404),
    ("/v1/exports/{exportId}", "delete", 204),
    ("/v1/exports/{exportId}", "delete", 404),
    ("/v1/exports/{export_Id}", "get", 200),
    ("/v1/async-actions/{asyncActionId}", "get", 200),
    ("/v1/async-actions/{asyncActionId}", "get", 404),
    ("/v1/no-such-route", "get", 404),
)

#: Numbers that may be floats: a discount's percentage (``12.5``).
FLOAT_FIELDS: Final = frozenset({"percent_off"})
#: Fields that hold an instant, and a calendar date.
INSTANT_FIELDS: Final = frozenset({"date", "start_date", "expiration_date"})
DATE_FIELDS: Final = frozenset({"next_expiration_date"})
_INSTANT: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z")
_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
_OTHER_INSTANT: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})"
)


# --- the schemas --------------------------------------------------------------------------------

#: OpenAPI keywords that only annotate (or that :func:`_json_schema` handles itself).
_DROPPED: Final = frozenset(
    {
        "description",
        "title",
        "example",
        "examples",
        "default",
        "discriminator",
        "readOnly",
        "writeOnly",
        "deprecated",
        "externalDocs",
        "xml",
        "nullable",
    }
)
#: Keywords whose value is data, not a schema.
_DATA: Final = frozenset({"enum", "required", "type", "format", "$ref", "pattern"})


def _json_schema(node: Any) -> Any:
    """An OpenAPI 3.0 schema as a JSON Schema draft 4 one (see the module docstring)."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key in _DATA:
            out[key] = value
        elif key == "properties":
            out[key] = {name: _json_schema(sub) for name, sub in value.items()}
        elif key == "oneOf":
            out["anyOf"] = _json_schema(value)
        else:
            out[key] = _json_schema(value)
    properties = out.get("properties")
    if isinstance(properties, dict) and "object" in properties:
        out["required"] = sorted({*out.get("required", ()), "object"})
    if node.get("nullable") is True:
        return {"anyOf": [{"type": "null"}, out]}
    return out


_COMPONENTS: Final = {
    "schemas": {
        name: _json_schema(schema) for name, schema in DOCUMENT["components"]["schemas"].items()
    }
}
_FORMATS: Final = FormatChecker(formats=())


@_FORMATS.checks("date-time", raises=ValueError)
def _is_instant(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if _OTHER_INSTANT.fullmatch(value) is None:
        raise ValueError(f"not an ISO 8601 instant: {value!r}")
    datetime.fromisoformat(value)
    return True


@_FORMATS.checks("date", raises=ValueError)
def _is_date(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if _DATE.fullmatch(value) is None:
        raise ValueError(f"not an ISO 8601 date: {value!r}")
    datetime.fromisoformat(value)
    return True


def _validator(schema: Mapping[str, Any]) -> Draft4Validator:
    """A validator of *schema* (an OpenAPI schema: a ``$ref`` or inline), its references
    resolved in the extracted components."""
    return Draft4Validator(
        {"allOf": [_json_schema(schema)], "components": _COMPONENTS}, format_checker=_FORMATS
    )


def _component(name: str) -> Draft4Validator:
    return _validator({"$ref": _SCHEMAS + name})


def _problems(validator: Draft4Validator, body: Any) -> list[str]:
    """What is wrong with *body* under *validator*, one line a problem (the deepest cause of
    each)."""
    lines = []
    for problem in sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path)):
        lines.append(_cause(problem))
    return lines


def _cause(problem: ValidationError) -> str:
    """*problem*, or for an ``anyOf`` the cause in its likeliest branch: not the ``null`` of
    a nullable field, then the one that got deepest into the answer."""
    if problem.context:
        causes = [e for e in problem.context if e.schema != {"type": "null"}] or problem.context
        return _cause(max(causes, key=lambda e: len(e.absolute_path)))
    where = "/".join(str(part) for part in problem.absolute_path) or "(body)"
    return f"{where}: {problem.message}"


# --- this test's own rules ----------------------------------------------------------------------


def _own_problems(body: Any, where: str = "") -> Iterator[str]:
    """Floats where integers belong and instants not in UTC ISO 8601 (see the module
    docstring), anywhere in *body*."""
    if isinstance(body, dict):
        items = [(str(name), value) for name, value in body.items()]
    elif isinstance(body, list):
        items = [(str(index), value) for index, value in enumerate(body)]
    else:
        return
    for name, value in items:
        here = f"{where}/{name}"
        if isinstance(value, float) and name not in FLOAT_FIELDS:
            yield f"{here}: {value!r} is a float"
        elif isinstance(value, str):
            if (name.endswith("_at") or name in INSTANT_FIELDS) and not _INSTANT.fullmatch(value):
                yield f"{here}: {value!r} is not a UTC ISO 8601 instant"
            if name in DATE_FIELDS and not _DATE.fullmatch(value):
                yield f"{here}: {value!r} is not an ISO 8601 date"
        else:
            yield from _own_problems(value, here)


# --- the drive ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One answer of the server, under the document's path template."""

    path: str
    method: str
    status: int
    content_type: str
    text: str
    url: str


class _Driver:
    """A TestClient that records every answer under its path template."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.answers: list[Answer] = []

    def ask(
        self,
        method: str,
        template: str,
        status: int,
        *,
        url: str | None = None,
        headers: Mapping[str, str] | None = None,
        **values_and_kwargs: Any,
    ) -> Any:
        """``method template`` (its ``{names}`` filled from the keyword arguments of those
        names; the rest go to the client), expecting *status*; the JSON answer (None for an
        empty or non-JSON one)."""
        names = set(re.findall(r"{(\w+)}", template))
        values = {n: values_and_kwargs.pop(n) for n in names if n in values_and_kwargs}
        target = url or template.format(**values)
        response = self.client.request(method.upper(), target, headers=headers, **values_and_kwargs)
        assert response.status_code == status, (method, target, response.text)
        content_type = response.headers.get("content-type", "")
        self.answers.append(Answer(template, method, status, content_type, response.text, target))
        if content_type.startswith("application/json"):
            return response.json()
        return None


def _discount(driver: _Driver, code: str, discount: dict[str, Any], **more: Any) -> Any:
    return driver.ask(
        "post",
        "/v1/vouchers/{code}",
        200,
        code=code,
        json={"type": "DISCOUNT_VOUCHER", "discount": discount, **more},
    )


def _gift(driver: _Driver, code: str, amount: int, **more: Any) -> Any:
    return driver.ask(
        "post",
        "/v1/vouchers/{code}",
        200,
        code=code,
        json={"type": "GIFT_VOUCHER", "gift": {"amount": amount}, **more},
    )


def _loyalty(driver: _Driver, code: str, points: int) -> Any:
    return driver.ask(
        "post",
        "/v1/vouchers/{code}",
        200,
        code=code,
        json={"type": "LOYALTY_CARD", "loyalty_card": {"points": points}},
    )


def _vouchers(driver: _Driver) -> None:
    """Create (each kind, given and generated codes), get, update, enable, disable, delete."""
    later = (START + timedelta(days=30)).isoformat()
    _discount(
        driver,
        "AMOUNT-5",
        {"type": "AMOUNT", "amount_off": 500},
        redemption={"quantity": 3},
        metadata={"channel": "web"},
        category="summer",
        additional_info="five off",
        start_date=(START - timedelta(days=1)).isoformat(),
        expiration_date=later,
    )
    _discount(driver, "PERCENT-12", {"type": "PERCENT", "percent_off": 12.5, "amount_limit": 900})
    _discount(driver, "FIXED-70", {"type": "FIXED", "fixed_amount": 7000})
    _discount(driver, "UNIT-1", {"type": "UNIT", "unit_off": 1, "unit_type": "sku_1"})
    _discount(driver, "LATER", {"type": "AMOUNT", "amount_off": 100}, start_date=later)
    _gift(driver, "GIFT-100", 10_000)
    _loyalty(driver, "CARD-1", 1_000)
    driver.ask("post", "/v1/vouchers", 200, json={"type": "GIFT_VOUCHER", "gift": {"amount": 1}})
    driver.ask(
        "post",
        "/v1/vouchers",
        200,
        url="/v1/vouchers/",
        json={
            "type": "DISCOUNT_VOUCHER",
            "discount": {"type": "AMOUNT", "amount_off": 1},
            "code_config": {"length": 6, "prefix": "GEN-", "charset": "0123456789"},
        },
    )
    driver.ask("post", "/v1/vouchers", 400, json={"code_config": {"length": "six"}})
    driver.ask("post", "/v1/vouchers/{code}", 409, code="GIFT-100", json={"gift": {"amount": 5}})
    driver.ask("post", "/v1/vouchers/{code}", 400, code="BAD", json={"gift": {"amount": 5}, "x": 1})

    for code in ("AMOUNT-5", "PERCENT-12", "FIXED-70", "UNIT-1", "GIFT-100", "CARD-1"):
        driver.ask("get", "/v1/vouchers/{code}", 200, code=code)
    driver.ask("get", "/v1/vouchers/{code}", 404, code="NOPE")
    driver.ask(
        "get",
        "/v1/vouchers/{code}",
        200,
        code="AMOUNT-5",
        headers={"Content-Type": "application/json"},
    )

    driver.ask(
        "put",
        "/v1/vouchers/{code}",
        200,
        code="UNIT-1",
        json={"type": "DISCOUNT_VOUCHER", "active": False},
    )
    driver.ask("put", "/v1/vouchers/{code}", 200, code="UNIT-1", json={"active": None})
    driver.ask("put", "/v1/vouchers/{code}", 400, code="UNIT-1", json={"expiration_date": later})
    driver.ask("put", "/v1/vouchers/{code}", 404, code="NOPE", json={"active": True})
    driver.ask("post", "/v1/vouchers/{code}/enable", 200, code="UNIT-1")
    driver.ask("post", "/v1/vouchers/{code}/enable", 404, code="NOPE")
    driver.ask("post", "/v1/vouchers/{code}/disable", 200, code="UNIT-1")
    driver.ask("patch", "/v1/vouchers/{code}", 405, code="UNIT-1", json={})

    _gift(driver, "GONE-1", 100)
    driver.ask("delete", "/v1/vouchers/{code}", 204, code="GONE-1")
    driver.ask("delete", "/v1/vouchers/{code}", 404, code="GONE-1")
    driver.ask("delete", "/v1/vouchers/{code}", 204, code="GONE-1", params={"force": "true"})


def _balances(driver: _Driver, engine: Engine, clock: FakeClock) -> None:
    """Balance changes of a gift card and a loyalty card, and every kind of transaction."""
    driver.ask("post", "/v1/vouchers/{code}/balance", 200, code="GIFT-100", json={"amount": 500})
    driver.ask(
        "post",
        "/v1/vouchers/{code}/balance",
        200,
        code="GIFT-100",
        json={"amount": -200, "reason": "correction", "source_id": "src-1"},
    )
    driver.ask("post", "/v1/vouchers/{code}/balance", 200, code="CARD-1", json={"amount": 300})
    driver.ask("post", "/v1/vouchers/{code}/balance", 400, code="AMOUNT-5", json={"amount": 1})
    driver.ask("post", "/v1/vouchers/{code}/balance", 400, code="GIFT-100", json={"amount": 0.5})
    driver.ask("post", "/v1/vouchers/{code}/balance", 404, code="NOPE", json={"amount": 1})
    retried = {"Idempotency-Key": "balance-1"}
    driver.ask(
        "post",
        "/v1/vouchers/{code}/balance",
        200,
        code="GIFT-100",
        json={"amount": 10},
        headers=retried,
    )
    driver.ask(
        "post",
        "/v1/vouchers/{code}/balance",
        409,
        code="GIFT-100",
        json={"amount": 11},
        headers=retried,
    )

    # the loyalty kinds no HTTP endpoint makes: accrual, its cancellation, transfer, expiry
    _loyalty(driver, "CARD-2", 0)
    accrual = engine.accrue_points("CARD-1", 200, order_id="o-accrual")
    engine.cancel_points_accrual("CARD-1", transaction_id=accrual.id)
    engine.transfer_points("CARD-1", "CARD-2", 100, reason="gift to a friend")
    engine.update_voucher_balance("CARD-2", 50, expires_at=START + timedelta(days=1))
    clock.advance(timedelta(days=2))
    engine.expire_points()

    kinds: set[tuple[str, bool]] = set()
    for code in ("GIFT-100", "CARD-1", "CARD-2"):
        driver.ask("get", "/v1/vouchers/{code}", 200, code=code)
        listed = driver.ask("get", "/v1/vouchers/{code}/transactions", 200, code=code)
        kinds |= {(tx["type"], "cancellation" in tx["details"]) for tx in listed["data"]}
    assert kinds == {
        ("CREDITS_ADDITION", False),
        ("CREDITS_REMOVAL", False),
        ("POINTS_ADDITION", False),
        ("POINTS_ACCRUAL", False),
        ("POINTS_REMOVAL", True),  # the accrual's cancellation, as the spec's enum allows
        ("POINTS_TRANSFER_OUT", False),
        ("POINTS_TRANSFER_IN", False),
        ("POINTS_EXPIRATION", False),
    }
    driver.ask(
        "get",
        "/v1/vouchers/{code}/transactions",
        200,
        code="CARD-1",
        params={"limit": 2, "order": "id"},
    )
    driver.ask(
        "get", "/v1/vouchers/{code}/transactions", 400, code="CARD-1", params={"limit": "ten"}
    )
    driver.ask("get", "/v1/vouchers/{code}/transactions", 404, code="NOPE")


def _validations(driver: _Driver) -> None:
    """Stacked validations: valid with a LOCK, not valid, inapplicable and skipped
    redeemables; the legacy single validation; refusals."""
    amount = {"object": "voucher", "id": "AMOUNT-5"}
    gift = {"object": "voucher", "id": "GIFT-100"}
    once = {"object": "voucher", "id": "ONCE"}
    _discount(driver, "ONCE", {"type": "PERCENT", "percent_off": 10}, redemption={"quantity": 1})
    locked = driver.ask(
        "post",
        "/v1/validations",
        200,
        json={
            "redeemables": [amount, once],
            "order": {"amount": 10_000, "metadata": {"shop": "north"}},
            "customer": {"source_id": "alice", "metadata": {"tier": "gold"}},
            "session": {"type": "LOCK", "key": "cart-1", "ttl": 10, "ttl_unit": "MINUTES"},
        },
    )
    assert locked["valid"] is True and locked["session"]["key"] == "cart-1"
    everything = driver.ask(
        "post",
        "/v1/validations",
        200,
        json={
            "redeemables": [
                {"object": "voucher", "id": "PERCENT-12"},
                {"object": "voucher", "id": "FIXED-70"},
                {**gift, "gift": {"credits": 500}},
                {"object": "voucher", "id": "CARD-1", "reward": {"points": 100}},
            ],
            "order": {"id": "order-2", "amount": 20_000},
        },
    )
    assert everything["valid"] is True
    # inapplicable: locked by cart-1, unknown, not active yet, disabled, too many points
    refused = driver.ask(
        "post",
        "/v1/validations",
        200,
        json={
            "redeemables": [
                once,
                {"object": "voucher", "id": "NOPE"},
                {"object": "voucher", "id": "LATER"},
                {"object": "voucher", "id": "UNIT-1"},
                {"object": "voucher", "id": "CARD-1", "reward": {"points": 999_999}},
            ],
            "order": {"amount": 1_000},
        },
    )
    assert [item["result"]["error"]["key"] for item in refused["inapplicable_redeemables"]] == [
        "quantity_exceeded",
        "not_found",
        "voucher_not_active",
        "voucher_disabled",
        "loyalty_card_points_exceeded",
    ]
    # skipped: a gift card with nothing left to pay, and applicable ones past the limit (5)
    _discount(driver, "ALL-10", {"type": "AMOUNT", "amount_off": 1_000})
    nothing_owed = driver.ask(
        "post",
        "/v1/validations",
        200,
        json={
            "redeemables": [{"object": "voucher", "id": "ALL-10"}, gift],
            "order": {"amount": 1_000},
        },
    )
    many = [{"object": "voucher", "id": f"MANY-{i}"} for i in range(6)]
    for item in many:
        _discount(driver, item["id"], {"type": "AMOUNT", "amount_off": 1})
    past_limit = driver.ask(
        "post", "/v1/validations", 200, json={"redeemables": many, "order": {"amount": 1_000}}
    )
    skipped = [
        (item["id"], item["result"]["details"]["key"])
        for answer in (nothing_owed, past_limit)
        for item in answer["skipped_redeemables"]
    ]
    assert skipped == [
        ("GIFT-100", "no_effect"),
        ("MANY-5", "applicable_redeemables_limit_exceeded"),
    ]
    driver.ask("post", "/v1/validations", 400, json={"redeemables": []})
    driver.ask("post", "/v1/validations", 400, json={"redeemables": [amount]})  # no amount
    driver.ask(
        "post",
        "/v1/validations",
        400,
        json={"redeemables": [{"object": "voucher", "id": f"V{i}"} for i in range(31)]},
    )

    driver.ask(
        "post",
        "/v1/vouchers/{code}/validate",
        200,
        code="PERCENT-12",
        json={"order": {"amount": 4_000}, "session": {"type": "LOCK", "key": "legacy-1"}},
    )
    driver.ask(
        "post",
        "/v1/vouchers/{code}/validate",
        200,
        code="GIFT-100",
        json={"gift": {"credits": 300}, "order": {"amount": 4_000}},
    )
    driver.ask(
        "post",
        "/v1/vouchers/{code}/validate",
        200,
        code="CARD-1",
        json={"reward": {"points": 10}},
    )
    driver.ask("post", "/v1/vouchers/{code}/validate", 200, code="NOPE", json={})
    driver.ask(
        "post",
        "/v1/vouchers/{code}/validate",
        200,
        code="GIFT-100",
        json={"gift": {"credits": 9_999_999}},
    )
    driver.ask("post", "/v1/vouchers/{code}/validate", 400, code="GIFT-100", json={"x": 1})
    driver.ask(
        "delete",
        "/v1/vouchers/{code}/sessions/{sessionKey}",
        204,
        code="PERCENT-12",
        sessionKey="legacy-1",
    )
    driver.ask(
        "delete",
        "/v1/vouchers/{code}/sessions/{sessionKey}",
        404,
        code="PERCENT-12",
        sessionKey="legacy-1",
    )


def _redemptions(driver: _Driver) -> None:
    """Single, stacked and legacy redemptions, their gets and rollbacks, and refusals."""
    amount = {"object": "voucher", "id": "AMOUNT-5"}
    single = driver.ask(
        "post",
        "/v1/redemptions",
        200,
        json={
            "redeemables": [amount],
            "order": {"amount": 10_000},
            "session": {"key": "cart-1"},
            "customer": {"source_id": "alice"},
            "metadata": {"till": 4},
        },
    )
    stacked = driver.ask(
        "post",
        "/v1/redemptions",
        200,
        json={
            "redeemables": [
                {"object": "voucher", "id": "PERCENT-12"},
                {"object": "voucher", "id": "GIFT-100", "gift": {"credits": 1_000}},
                {"object": "voucher", "id": "CARD-1", "reward": {"points": 50}},
            ],
            "order": {"id": "order-3", "source_id": "shop-3", "amount": 8_000},
        },
        headers={"Idempotency-Key": "stack-1"},
    )
    driver.ask(
        "post",
        "/v1/redemptions",
        409,
        json={"redeemables": [amount], "order": {"amount": 1}},
        headers={"Idempotency-Key": "stack-1"},
    )
    driver.ask(
        "post",
        "/v1/redemptions",
        400,
        json={"redeemables": [{"object": "voucher", "id": "UNIT-1"}]},
    )
    driver.ask(
        "post",
        "/v1/redemptions",
        400,
        json={
            "redeemables": [amount, {"object": "voucher", "id": "GIFT-100"}],
            "order": {"amount": 500},
        },
    )
    driver.ask(
        "post", "/v1/redemptions", 404, json={"redeemables": [{"object": "voucher", "id": "NOPE"}]}
    )

    legacy = driver.ask(
        "post",
        "/v1/vouchers/{code}/redemption",
        200,
        code="GIFT-100",
        json={"gift": {"credits": 700}, "order": {"amount": 700}},
    )
    driver.ask(
        "post",
        "/v1/vouchers/{code}/redemption",
        200,
        code="CARD-1",
        json={"reward": {"points": 5}, "customer": {"source_id": "bob"}},
    )
    driver.ask(
        "post",
        "/v1/vouchers/{code}/redemption",
        400,
        code="GIFT-100",
        json={"gift": {"credits": 9_999_999}},
    )
    driver.ask("post", "/v1/vouchers/{code}/redemption", 404, code="NOPE", json={})

    assert [child["voucher"]["code"] for child in stacked["redemptions"]] == [
        "PERCENT-12",
        "GIFT-100",
        "CARD-1",
    ]
    parent = stacked["parent_redemption"]["id"]
    children = [child["id"] for child in stacked["redemptions"]]
    single_parent = single["parent_redemption"]["id"]
    for redemption_id in (parent, *children, single_parent, legacy["id"]):
        driver.ask("get", "/v1/redemptions/{redemptionId}", 200, redemptionId=redemption_id)
    driver.ask("get", "/v1/redemptions/{redemptionId}", 404, redemptionId="r_nothing")
    for code in ("AMOUNT-5", "GIFT-100", "CARD-1"):
        driver.ask("get", "/v1/vouchers/{code}/redemption", 200, code=code)
    driver.ask("get", "/v1/vouchers/{code}/redemption", 404, code="NOPE")

    # rollbacks: a single one, a whole stack (both endpoints), and refusals
    driver.ask(
        "post",
        "/v1/redemptions/{redemptionId}/rollback",
        200,
        redemptionId=legacy["id"],
        params={"reason": "returned"},
    )
    driver.ask(
        "post",
        "/v1/redemptions/{redemptionId}/rollback",
        400,
        redemptionId=legacy["id"],
    )
    driver.ask("post", "/v1/redemptions/{redemptionId}/rollback", 400, redemptionId=children[0])
    driver.ask("post", "/v1/redemptions/{redemptionId}/rollback", 404, redemptionId="r_nothing")
    driver.ask(
        "post",
        "/v1/redemptions/{parentRedemptionId}/rollbacks",
        200,
        parentRedemptionId=parent,
        json={"reason": "cancelled order"},
    )
    driver.ask(
        "post",
        "/v1/redemptions/{parentRedemptionId}/rollbacks",
        400,
        parentRedemptionId=parent,
    )
    driver.ask(
        "post",
        "/v1/redemptions/{parentRedemptionId}/rollbacks",
        404,
        parentRedemptionId="r_nothing",
    )
    driver.ask(
        "post",
        "/v1/redemptions/{redemptionId}/rollback",
        200,
        redemptionId=single_parent,
        json={"reason": "whole stack"},
    )
    for redemption_id in (parent, *children, single_parent, legacy["id"]):
        undone = driver.ask(
            "get", "/v1/redemptions/{redemptionId}", 200, redemptionId=redemption_id
        )
        assert undone["status"] == "ROLLED_BACK"
    for code in ("AMOUNT-5", "GIFT-100", "CARD-1"):
        driver.ask("get", "/v1/vouchers/{code}/redemption", 200, code=code)
        driver.ask("get", "/v1/vouchers/{code}/transactions", 200, code=code)


def _failed_parent(driver: _Driver) -> None:
    """A refused stacked redemption leaves a FAILED parent (its error's details name it):
    get it."""
    refused = driver.ask(
        "post",
        "/v1/redemptions",
        400,
        json={"redeemables": [{"object": "voucher", "id": "LATER"}], "order": {"amount": 1_000}},
    )
    (parent_id,) = re.findall(r"\br_\w+", refused["details"])
    failed = driver.ask("get", "/v1/redemptions/{redemptionId}", 200, redemptionId=parent_id)
    assert failed["status"] == "FAILED"


@contextlib.contextmanager
def _held(engine: Engine, verb: str) -> Iterator[None]:
    """Hold the engine's *verb* (an export or import, run by a job thread) until the block
    ends, so that the job's record is seen before it is done, whatever the scheduling."""
    gate = threading.Event()
    original = getattr(engine, verb)

    def held(*args: Any, **kwargs: Any) -> Any:
        assert gate.wait(LIVENESS), f"{verb} was held too long"
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, verb, held)
        try:
            yield
        finally:
            gate.set()


def _finished(driver: _Driver, url: str) -> Any:
    """The export or async action at *url* once it is no longer waiting or running."""

    def check() -> Any:
        found = driver.client.get(url).json()
        return None if found["status"] in {"SCHEDULED", "ENQUEUED", "IN_PROGRESS"} else found

    return wait_for(check, url)


def _jobs(driver: _Driver, engine: Engine) -> None:
    """Exports (made, seen running, done, downloaded, deleted) and CSV imports (their async
    actions seen waiting or running, done with a failed row, failed as a whole)."""
    with _held(engine, "export_voucher_transactions"):
        made = driver.ask(
            "post",
            "/v1/vouchers/{code}/transactions/export",
            200,
            code="GIFT-100",
            json={"parameters": {"order": "-created_at", "fields": ["id", "type", "amount"]}},
        )
        export_id = made["id"]
        running = driver.ask("get", "/v1/exports/{exportId}", 200, exportId=export_id)
        assert running["status"] in {"SCHEDULED", "IN_PROGRESS"}
    assert _finished(driver, f"/v1/exports/{export_id}")["status"] == "DONE"
    finished = driver.ask("get", "/v1/exports/{exportId}", 200, exportId=export_id)
    driver.ask(
        "get", "/v1/exports/{export_Id}", 200, url=finished["result"]["url"].split("testserver")[1]
    )
    other = driver.ask(
        "post", "/v1/vouchers/{code}/transactions/export", 200, code="CARD-1", json={}
    )
    _finished(driver, f"/v1/exports/{other['id']}")
    driver.ask("get", "/v1/exports/{exportId}", 200, exportId=other["id"])
    driver.ask(
        "post",
        "/v1/vouchers/{code}/transactions/export",
        400,
        code="GIFT-100",
        json={"parameters": {"fields": ["colour"]}},
    )
    driver.ask("post", "/v1/vouchers/{code}/transactions/export", 404, code="NOPE", json={})
    driver.ask("get", "/v1/exports/{exportId}", 404, exportId="exp_nothing")
    driver.ask("delete", "/v1/exports/{exportId}", 204, exportId=export_id)
    driver.ask("delete", "/v1/exports/{exportId}", 404, exportId=export_id)

    rows = "Code,Voucher Type,Value,Discount Type\nCSV-1,GIFT_VOUCHER,1000,\nCSV-2,NOPE,1,\n"
    for content, outcome in ((rows, "DONE"), ("no code column\n1\n", "FAILED")):
        with _held(engine, "import_vouchers_using_csv"):
            action = driver.ask(
                "post",
                "/v1/vouchers/importCSV",
                202,
                files={"file": ("vouchers.csv", content.encode(), "text/csv")},
            )
            action_id = action["async_action_id"]
            waiting = driver.ask(
                "get", "/v1/async-actions/{asyncActionId}", 200, asyncActionId=action_id
            )
            assert waiting["status"] in {"ENQUEUED", "IN_PROGRESS"}
        assert _finished(driver, f"/v1/async-actions/{action_id}")["status"] == outcome
        driver.ask("get", "/v1/async-actions/{asyncActionId}", 200, asyncActionId=action_id)
    driver.ask("post", "/v1/vouchers/importCSV", 400, content=b"Code\n")
    driver.ask("get", "/v1/async-actions/{asyncActionId}", 404, asyncActionId="aa_nothing")
    driver.ask("get", "/v1/vouchers/{code}", 200, code="CSV-1")


def _edges(driver: _Driver, engine: Engine) -> None:
    """A wrong token (401), no route (404), an unexpected failure (500)."""
    wrong = {"X-App-Token": "not-the-token"}
    driver.ask("get", "/v1/vouchers/{code}", 401, code="AMOUNT-5", headers=wrong)
    driver.ask("get", "/v1/no-such-route", 404)

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "get_voucher", broken)
        driver.ask("get", "/v1/vouchers/{code}", 500, code="AMOUNT-5")


@pytest.fixture(scope="module")
def answers() -> list[Answer]:
    """Every answer of one drive of an in-memory server through its endpoints."""
    clock = FakeClock(START)
    engine = Engine(clock=clock, seed=13)
    app = create_app(engine, app_id=AUTH["X-App-Id"], app_token=AUTH["X-App-Token"])
    with TestClient(app, headers=AUTH, raise_server_exceptions=False) as client:
        driver = _Driver(client)
        _vouchers(driver)
        _balances(driver, engine, clock)
        _validations(driver)
        _redemptions(driver)
        _failed_parent(driver)
        _jobs(driver, engine)
        _edges(driver, engine)
    return driver.answers


# --- the tests ----------------------------------------------------------------------------------


def _documented(path: str, method: str, status: int) -> Mapping[str, Any] | None:
    """The document's response object for *path*, *method*, *status*, or None."""
    operation = DOCUMENT["paths"].get(path, {}).get(method)
    if operation is None:
        return None
    response: Mapping[str, Any] | None = operation["responses"].get(str(status))
    return response


@pytest.mark.parametrize(
    ("path", "method", "status"),
    EXPECTED,
    ids=[f"{method.upper()} {path} {status}" for path, method, status in EXPECTED],
)
def test_each_answer_matches_the_schema_voucherify_documents_for_it(
    answers: list[Answer], path: str, method: str, status: int
) -> None:
    mine = [a for a in answers if (a.path, a.method, a.status) == (path, method, status)]
    assert mine, f"the drive got no {status} answer from {method.upper()} {path}"
    response = _documented(path, method, status)
    problems: list[str] = []
    for answer in mine:
        where = f"{method.upper()} {answer.url} → {status}"
        if status == 204:
            assert response is not None and "content" not in response
            assert answer.text == "", where
            continue
        if status >= 400:
            assert response is None, f"the document now has a {status} answer for {path}"
            validator = _component("Error")
        elif response is None:
            legacy = LEGACY[(path, method)]
            validator = _component(legacy) if legacy is not None else _validator({})
        else:
            ((content_type, media),) = response["content"].items()
            assert answer.content_type.startswith(content_type), where
            if content_type != "application/json":  # the export's file: a string
                assert answer.text, where
                continue
            validator = _validator(media["schema"])
        assert answer.content_type.startswith("application/json"), where
        body = json.loads(answer.text)
        found = _problems(validator, body) + list(_own_problems(body))
        if status >= 400 and body.get("code") != status:
            found.append(f"code: {body.get('code')!r} is not the HTTP status")
        if (path, method) in LEGACY and body.get("error") is not None:  # a refused validation
            found += [f"error/{line}" for line in _problems(_component("Error"), body["error"])]
        problems += [f"{where}: {line}" for line in found]
    assert not problems, "\n".join(problems)


#: The Python SDK 6.1.1's model of each documented success answer (its ``operationId``).
SDK_MODELS: Final = {
    "generate-random-code": "VouchersCreateResponseBody",
    "get-voucher": "VouchersGetResponseBody",
    "create-voucher": "VouchersCreateResponseBody",
    "update-voucher": "VouchersUpdateResponseBody",
    "enable-voucher": "VouchersEnableResponseBody",
    "disable-voucher": "VouchersDisableResponseBody",
    "update-voucher-balance": "VouchersBalanceUpdateResponseBody",
    "list-voucher-transactions": "VouchersTransactionsListResponseBody",
    "export-voucher-transactions": "VouchersTransactionsExportCreateResponseBody",
    "import-vouchers-using-csv": "VouchersImportCsvCreateResponseBody",
    "get-voucher-redemptions": "VouchersRedemptionGetResponseBody",
    "validate-stacked-discounts": "ValidationsValidateResponseBody",
    "redeem-stacked-discounts": "RedemptionsRedeemResponseBody",
    "get-redemption": "RedemptionsGetResponseBody",
    "rollback-redemption": "RedemptionsRollbackCreateResponseBody",
    "rollback-stacked-redemptions": "RedemptionsRollbacksCreateResponseBody",
    "get-export": "ExportsGetResponseBody",
    "get-async-action": "AsyncActionGetResponseBody",
}


def test_every_json_success_answer_is_read_by_the_python_sdks_model_of_it(
    answers: list[Answer],
) -> None:
    """The arbiter where the document and the SDK could disagree: the PyPI SDK 6.1.1's
    generated models (pydantic) read each answer."""
    models = pytest.importorskip("voucherify.models")
    read = set()
    for answer in answers:
        operation = DOCUMENT["paths"].get(answer.path, {}).get(answer.method)
        if (
            operation is None
            or answer.status >= 300
            or not answer.content_type.startswith("application/json")
        ):
            continue
        model = getattr(models, SDK_MODELS[operation["operationId"]])
        model.from_dict(json.loads(answer.text))  # raises on a shape the SDK refuses
        read.add(operation["operationId"])
    assert read == set(SDK_MODELS)


def test_every_answer_of_the_drive_is_one_of_the_checked_cases(answers: list[Answer]) -> None:
    got = {(a.path, a.method, a.status) for a in answers}
    assert got <= set(EXPECTED), sorted(got - set(EXPECTED))


def test_every_success_answer_the_document_gives_for_the_implemented_operations_is_driven() -> None:
    documented = {
        (path, method, int(status))
        for path, operations in DOCUMENT["paths"].items()
        for method, operation in operations.items()
        for status in operation["responses"]
    }
    assert documented <= set(EXPECTED), sorted(documented - set(EXPECTED))


def test_the_extracted_document_holds_only_schemas_the_checked_answers_reference() -> None:
    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    yield value.removeprefix(_SCHEMAS)
                else:
                    yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    schemas = DOCUMENT["components"]["schemas"]
    reached: set[str] = set()
    waiting = [*refs(DOCUMENT["paths"]), "Error", *(n for n in LEGACY.values() if n)]
    while waiting:
        name = waiting.pop()
        if name not in reached:
            reached.add(name)
            waiting.extend(refs(schemas[name]))
    assert reached == set(schemas)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda body: body["gift"].update(amount=100.0), "100.0 is not of type 'integer'"),
        (lambda body: body.update(type="COUPON"), "'COUPON' is not one of"),
        (lambda body: body.pop("object"), "'object' is a required property"),
        (lambda body: body.update(created_at="1 March 2026"), "is not a 'date-time'"),
        (lambda body: body.update(created_at="2026-03-01T12:00:00+01:00"), "UTC ISO 8601"),
        (lambda body: body.update(active="yes"), "'yes' is not of type 'boolean'"),
    ],
    ids=["float amount", "enum", "object missing", "not an instant", "not UTC", "wrong type"],
)
def test_the_checks_refuse_a_voucher_with_one_thing_wrong(
    answers: list[Answer], change: Any, words: str
) -> None:
    gift = next(
        json.loads(a.text)
        for a in answers
        if (a.method, a.url, a.status) == ("get", "/v1/vouchers/GIFT-100", 200)
    )
    response = _documented("/v1/vouchers/{code}", "get", 200)
    assert response is not None
    validator = _validator(response["content"]["application/json"]["schema"])
    assert not _problems(validator, gift) and not list(_own_problems(gift))
    change(gift)
    found = _problems(validator, gift) + list(_own_problems(gift))
    assert any(words in line for line in found), found


def test_the_checks_refuse_a_validated_redeemable_whose_status_no_branch_allows(
    answers: list[Answer],
) -> None:
    validation = next(
        json.loads(a.text)
        for a in answers
        if (a.path, a.status) == ("/v1/validations", 200) and '"SKIPPED"' in a.text
    )
    response = _documented("/v1/validations", "post", 200)
    assert response is not None
    validator = _validator(response["content"]["application/json"]["schema"])
    assert not _problems(validator, validation)
    validation["redeemables"][0]["status"] = "MAYBE"
    assert any("'MAYBE' is not one of" in line for line in _problems(validator, validation))
