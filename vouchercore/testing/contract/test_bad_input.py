"""Malformed requests (README "Validation", "Errors"; a failed call changes nothing: README
"Concurrency and the audit"): every public call rejects bad input with an
``InvalidArgument`` (also a ``ValueError``) whose key is ``invalid_amount``, ``missing_amount``
or ``invalid_payload`` and whose message names the argument — and changes nothing, on every
store alike.

The table covers each kind of input (README "Errors", "Limits of the input"): codes and keys;
the redeemables of a stacked call (README "Stacking vouchers"; too many of them is
``redeemables_limit_exceeded``, also an ``InvalidArgument``);
free text (NUL, lone surrogates, over :data:`~vouchercore.domain.values.MAX_TEXT_LENGTH`);
metadata (cycles, nesting, size, integers beyond 64 bits, non-finite floats, bad keys or
strings); instants outside the years 1–9999 in UTC; page numbers, limits, counts and lengths
(integers of any size, never printed in full); amounts. Store URLs with bad options are
refused the same way (:func:`test_a_bad_store_url_is_invalid_payload`).
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from vouchercore import Discount, Engine, InvalidArgument
from vouchercore.stores.sqlite import SQLiteStore
from vouchercore.testing import state_snapshot
from vouchercore.testing.stores import POSTGRES_DSN_VARIABLE

AMOUNT = "invalid_amount"
PAYLOAD = "invalid_payload"
MISSING = "missing_amount"
LIMIT = "redeemables_limit_exceeded"

NAIVE = datetime(2026, 6, 1, 12, 0)  # naive on purpose
#: 9999-12-31T23:00 at −12:00 is 10000-01-01T11:00 in UTC: no store can keep it.
PAST_9999 = datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-12)))
#: 0001-01-01T01:00 at +12:00 is in year 0 in UTC.
BEFORE_YEAR_1 = datetime(1, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=12)))
HUGE = 10**5000  # too long to print: str() raises ValueError


def _cycle() -> dict[str, Any]:
    cyclic: dict[str, Any] = {"a": 1}
    cyclic["self"] = cyclic
    return cyclic


def _list_cycle() -> list[Any]:
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    return cyclic


def nested_metadata(levels: int) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for _ in range(levels - 1):
        nested = {"n": nested}
    return nested


def shared_metadata(levels: int) -> list[Any]:
    """Small in memory, 2**levels leaves as JSON."""
    shared: list[Any] = [0]
    for _ in range(levels):
        shared = [shared, shared]
    return shared


Book = dict[str, str]
Call = Callable[[Engine, Book], Any]


@pytest.fixture
def book(engine: Engine) -> Book:
    """A small voucher book with a live session, a redemption and a transaction log."""
    engine.create_voucher("DISC", discount=Discount.amount(500), quantity=10)
    engine.create_voucher("GIFT", gift={"amount": 10_000}, quantity=10, metadata={"m": 1})
    assert engine.validate_voucher("GIFT", credits=1000, session={"key": "held"}).valid
    engine.create_voucher("LOYAL", loyalty_card={"points": 1000})
    redemption = engine.redeem_voucher("LOYAL", points=100)
    engine.update_voucher_balance("GIFT", 50)
    engine.create_voucher("OFF", gift={"amount": 10}, active=False)
    engine.create_voucher("CARD", loyalty_card={"points": 10})
    engine.accrue_points("LOYAL", 7, order_id="o")
    return {"redemption": redemption.id}


def _bad_amounts(prefix: str, name: str, call: Callable[[Engine, object], Any]) -> list[Any]:
    """Amount cases: wrong types and out-of-range ints, all ``invalid_amount``."""
    values: list[tuple[str, object]] = [
        ("float", 1.5),
        ("whole-float", 100.0),
        ("true", True),
        ("false", False),
        ("str", "100"),
        ("decimal", Decimal(100)),
        ("zero", 0),
        ("negative", -5),
        ("2**63", 2**63),
    ]
    return [
        pytest.param(
            (lambda e, b, v=value: call(e, v)), AMOUNT, name, id=f"{prefix}-{name}-{label}"
        )
        for label, value in values
    ]


def _bad_codes(prefix: str, name: str, call: Callable[[Engine, object], Any]) -> list[Any]:
    """Code / key / id cases, all ``invalid_payload``."""
    values: list[tuple[str, object]] = [
        ("empty", ""),
        ("too-long", "x" * 201 if "key" in name else "x" * 101),
        ("nul", "a\x00b"),
        ("newline", "a\nb"),
        ("leading-space", " GIFT"),
        ("trailing-space", "GIFT "),
        ("surrogate", "a\ud800b"),
        ("int", 5),
        ("none", None),
    ]
    return [
        pytest.param(
            (lambda e, b, v=value: call(e, v)), PAYLOAD, name, id=f"{prefix}-{name}-{label}"
        )
        for label, value in values
    ]


def _bad_text(prefix: str, name: str, call: Callable[[Engine, object], Any]) -> list[Any]:
    """Free text cases (order ids, reasons …; None is allowed), all ``invalid_payload``."""
    values: list[tuple[str, object]] = [
        ("nul", "a\x00b"),
        ("surrogate", "\ud800"),
        ("low-surrogate-inside", "order \udfff 1"),
        ("too-long", "x" * 4097),
        ("too-long-non-ascii", "é" * 4097),
        ("int", 5),
        ("bytes", b"text"),
    ]
    return [
        pytest.param(
            (lambda e, b, v=value: call(e, v)), PAYLOAD, name, id=f"{prefix}-{name}-text-{label}"
        )
        for label, value in values
    ]


def _bad_metadata(call: Callable[[Engine, object], Any], prefix: str) -> list[Any]:
    values: list[tuple[str, object]] = [
        ("int-key", {1: "a"}),
        ("huge-int-key", {HUGE: "a"}),
        ("object", {"a": object()}),
        ("nan", {"a": float("nan")}),
        ("inf-in-list", {"a": [1.0, float("-inf")]}),
        ("not-mapping", "meta"),
        ("cycle", _cycle()),
        ("list-cycle", {"a": _list_cycle()}),
        ("33-levels", nested_metadata(33)),
        ("5000-levels", nested_metadata(5000)),
        ("shared-2**30-leaves", {"a": shared_metadata(30)}),
        ("2**63", {"a": 2**63}),
        ("-2**63-1", {"a": -(2**63) - 1}),
        ("huge-int", {"a": HUGE}),
        ("huge-int-in-list", {"a": [1, HUGE]}),
        ("surrogate-value", {"a": "\ud800"}),
        ("surrogate-key", {"\udc80": 1}),
        ("nul-value", {"a": "x\x00"}),
        ("nul-key", {"\x00": 1}),
        ("over-64-KiB", {"a": "x" * 65_536}),
        ("over-64-KiB-in-pieces", {str(i): "é" * 100 for i in range(400)}),
    ]
    return [
        pytest.param(
            (lambda e, b, v=value: call(e, v)), PAYLOAD, "metadata", id=f"{prefix}-meta-{label}"
        )
        for label, value in values
    ]


def _create(**kwargs: Any) -> Call:
    kwargs.setdefault("code", "NEW")
    code = kwargs.pop("code")
    return lambda e, b: e.create_voucher(code, **kwargs)


def _session(**session: Any) -> Call:
    return lambda e, b: e.validate_voucher("DISC", session=session)


def _code_and_its_id(engine: Engine) -> list[Any]:
    return [{"id": "DISC"}, {"object": "voucher", "id": engine.get_voucher("DISC").id}]


def _stacked(
    label: str,
    redeemables: object,
    key: str,
    argument: str,
    *,
    verbs: tuple[str, ...] = ("validate", "redeem"),
    **kwargs: Any,
) -> list[Any]:
    """The same bad request to ``validate_stacked_discounts`` and ``redeem_stacked_discounts``
    (or to the *verbs* named); *redeemables* may be a function of the engine."""

    def call(verb: str) -> Call:
        def stacked(e: Engine, b: Book) -> Any:
            given = redeemables(e) if callable(redeemables) else redeemables
            return getattr(e, f"{verb}_stacked_discounts")(given, **kwargs)

        return stacked

    return [pytest.param(call(verb), key, argument, id=f"{verb}-stacked-{label}") for verb in verbs]


def _stacked_session(label: str, session: object) -> list[Any]:
    """A bad session key: in a stacked validation's LOCK, and as a stacked redemption's
    session."""
    stack = [{"id": "DISC"}]
    return [
        pytest.param(
            lambda e, b: e.validate_stacked_discounts(
                stack, order_amount=1_000, session={"key": session}
            ),
            PAYLOAD,
            "session.key",
            id=f"validate-stacked-session-key-{label}",
        ),
        pytest.param(
            lambda e, b: e.redeem_stacked_discounts(stack, order_amount=1_000, session=session),
            PAYLOAD,
            "session",
            id=f"redeem-stacked-session-{label}",
        ),
    ]


CASES: list[Any] = [
    # --- create_voucher ------------------------------------------------------------------
    # (None is left out: it asks for a generated code)
    *_bad_codes("create", "code", lambda e, v: e.create_voucher(v, gift={"amount": 1}))[:-1],
    pytest.param(_create(type="COUPON"), PAYLOAD, "type", id="create-unknown-type"),
    pytest.param(_create(type=5), PAYLOAD, "type", id="create-int-type"),
    pytest.param(
        _create(discount={"type": "BOGUS", "amount_off": 1}),
        PAYLOAD,
        "discount.type",
        id="create-unknown-discount-type",
    ),
    pytest.param(_create(discount="AMOUNT"), PAYLOAD, "discount", id="create-discount-str"),
    pytest.param(
        _create(discount={"type": "AMOUNT"}), AMOUNT, "amount_off", id="create-amount-off-missing"
    ),
    *_bad_amounts(
        "create",
        "amount_off",
        lambda e, v: e.create_voucher("NEW", discount={"type": "AMOUNT", "amount_off": v}),
    ),
    pytest.param(
        _create(discount=Discount.amount(1.5)),
        AMOUNT,
        "amount_off",
        id="create-discount-object-float",
    ),
    *[
        pytest.param(
            _create(discount={"type": "PERCENT", "percent_off": p}),
            PAYLOAD,
            "percent_off",
            id=f"create-percent-{p!r}",
        )
        for p in (0, -5, 100.5, 12.345, True, "ten", None)
    ],
    *_bad_amounts(
        "create",
        "amount_limit",
        lambda e, v: e.create_voucher(
            "NEW", discount={"type": "PERCENT", "percent_off": 10, "amount_limit": v}
        ),
    ),
    *[
        pytest.param(
            _create(discount={"type": "FIXED", "fixed_amount": v}),
            AMOUNT,
            "fixed_amount",
            id=f"create-fixed-{label}",
        )
        for label, v in (("neg", -1), ("float", 1.0), ("str", "1"), ("2**63", 2**63))
    ],
    *_bad_amounts(
        "create",
        "unit_off",
        lambda e, v: e.create_voucher(
            "NEW", discount={"type": "UNIT", "unit_off": v, "unit_type": "sku"}
        ),
    ),
    pytest.param(
        _create(discount={"type": "UNIT", "unit_off": 1, "unit_type": ""}),
        PAYLOAD,
        "unit_type",
        id="create-unit-type-empty",
    ),
    *[
        pytest.param(
            _create(gift={"amount": v}), AMOUNT, "gift.amount", id=f"create-gift-amount-{label}"
        )
        for label, v in (
            ("neg", -1),
            ("float", 1.5),
            ("str", "100"),
            ("bool", True),
            ("decimal", Decimal(1)),
            ("2**63", 2**63),
        )
    ],
    pytest.param(_create(type="GIFT_VOUCHER", gift=100), PAYLOAD, "gift", id="create-gift-int"),
    *[
        pytest.param(
            _create(loyalty_card={"points": v}),
            AMOUNT,
            "loyalty_card.points",
            id=f"create-points-{label}",
        )
        for label, v in (("neg", -1), ("float", 2.0), ("str", "5"), ("2**63", 2**63))
    ],
    *_bad_amounts(
        "create", "quantity", lambda e, v: e.create_voucher("NEW", gift={"amount": 1}, quantity=v)
    ),
    pytest.param(
        _create(gift={"amount": 1}, redemption={"quantity": 0}),
        AMOUNT,
        "quantity",
        id="create-redemption-quantity-zero",
    ),
    pytest.param(
        _create(gift={"amount": 1}, redemption="5"),
        PAYLOAD,
        "redemption",
        id="create-redemption-str",
    ),
    pytest.param(
        _create(gift={"amount": 1}, start_date=NAIVE),
        PAYLOAD,
        "start_date",
        id="create-naive-start",
    ),
    pytest.param(
        _create(gift={"amount": 1}, expiration_date=NAIVE),
        PAYLOAD,
        "expiration_date",
        id="create-naive-expiration",
    ),
    pytest.param(
        _create(gift={"amount": 1}, start_date="2026-06-01"),
        PAYLOAD,
        "start_date",
        id="create-str-start",
    ),
    *_bad_metadata(lambda e, v: e.create_voucher("NEW", gift={"amount": 1}, metadata=v), "create"),
    pytest.param(_create(gift={"amount": 1}, active="yes"), PAYLOAD, "active", id="create-active"),
    pytest.param(
        _create(gift={"amount": 1}, category=5), PAYLOAD, "category", id="create-category"
    ),
    pytest.param(
        _create(gift={"amount": 1}, additional_info=5),
        PAYLOAD,
        "additional_info",
        id="create-additional-info",
    ),
    pytest.param(
        _create(gift={"amount": 1}, campaign_id=5), PAYLOAD, "campaign_id", id="create-campaign"
    ),
    pytest.param(
        _create(code=None, gift={"amount": 1}, code_length=0),
        AMOUNT,
        "code_length",
        id="create-code-length-zero",
    ),
    # --- get / enable / disable / delete ------------------------------------------------
    *_bad_codes("get", "code_or_id", lambda e, v: e.get_voucher(v)),
    pytest.param(lambda e, b: e.enable_voucher(""), PAYLOAD, "code_or_id", id="enable-empty"),
    pytest.param(lambda e, b: e.disable_voucher(" X"), PAYLOAD, "code_or_id", id="disable-space"),
    pytest.param(lambda e, b: e.delete_voucher("a\tb"), PAYLOAD, "code_or_id", id="delete-tab"),
    pytest.param(
        lambda e, b: e.delete_voucher("GIFT", force="yes"), PAYLOAD, "force", id="delete-force-str"
    ),
    pytest.param(
        lambda e, b: e.delete_voucher("GIFT", force=1), PAYLOAD, "force", id="delete-force-int"
    ),
    # --- validate_voucher -----------------------------------------------------------------
    *_bad_codes("validate", "code", lambda e, v: e.validate_voucher(v, order_amount=1)),
    *_bad_amounts(
        "validate", "order_amount", lambda e, v: e.validate_voucher("DISC", order_amount=v)
    ),
    *_bad_amounts("validate", "credits", lambda e, v: e.validate_voucher("GIFT", credits=v)),
    *_bad_amounts("validate", "points", lambda e, v: e.validate_voucher("LOYAL", points=v)),
    pytest.param(
        lambda e, b: e.validate_voucher("GIFT"), MISSING, "credits", id="validate-gift-no-amount"
    ),
    pytest.param(
        lambda e, b: e.validate_voucher("GIFT", session={"key": "new"}),
        MISSING,
        "credits",
        id="validate-gift-no-amount-with-session",
    ),
    pytest.param(
        lambda e, b: e.validate_voucher("OFF"),
        MISSING,
        "credits",
        id="validate-disabled-gift-no-amount",
    ),
    pytest.param(
        lambda e, b: e.validate_voucher("LOYAL", order_amount=100),
        PAYLOAD,
        "points",
        id="validate-loyalty-no-points",
    ),
    pytest.param(
        lambda e, b: e.validate_voucher("DISC", credits=5),
        PAYLOAD,
        "credits",
        id="validate-credits-on-discount",
    ),
    pytest.param(
        lambda e, b: e.validate_voucher("GIFT", points=5),
        PAYLOAD,
        "points",
        id="validate-points-on-gift",
    ),
    *[
        pytest.param(_session(ttl=t), PAYLOAD, "session.ttl", id=f"validate-ttl-{label}")
        for label, t in (
            ("zero", 0),
            ("neg", -1),
            ("float", 1.5),
            ("whole-float", 2.0),
            ("str", "5"),
            ("bool", True),
            ("none", None),
        )
    ],
    *[
        pytest.param(
            _session(ttl=1, ttl_unit=u), PAYLOAD, "session.ttl_unit", id=f"validate-unit-{u!r}"
        )
        for u in ("WEEKS", "MONTHS", "ns", "", 5, None)
    ],
    *_bad_codes(
        "validate", "session.key", lambda e, v: e.validate_voucher("DISC", session={"key": v})
    )[:-1],
    pytest.param(_session(type="UNLOCK"), PAYLOAD, "session.type", id="validate-session-type"),
    pytest.param(_session(type=1), PAYLOAD, "session.type", id="validate-session-type-int"),
    pytest.param(_session(foo=1), PAYLOAD, "session", id="validate-session-unknown-field"),
    pytest.param(
        lambda e, b: e.validate_voucher("DISC", session=5),
        PAYLOAD,
        "session",
        id="validate-session-int",
    ),
    pytest.param(
        lambda e, b: e.validate_voucher("DISC", session="UNLOCK"),
        PAYLOAD,
        "session",
        id="validate-session-str",
    ),
    pytest.param(_session(ttl=10**8, ttl_unit="DAYS"), PAYLOAD, "ttl", id="validate-ttl-past-9999"),
    *_bad_metadata(lambda e, v: e.validate_voucher("DISC", metadata=v), "validate"),
    pytest.param(
        lambda e, b: e.validate_voucher("DISC", order_id=5),
        PAYLOAD,
        "order_id",
        id="validate-order-id",
    ),
    # --- redeem_voucher -------------------------------------------------------------------
    *_bad_codes("redeem", "code", lambda e, v: e.redeem_voucher(v, order_amount=1)),
    *_bad_amounts("redeem", "order_amount", lambda e, v: e.redeem_voucher("DISC", order_amount=v)),
    *_bad_amounts("redeem", "credits", lambda e, v: e.redeem_voucher("GIFT", credits=v)),
    *_bad_amounts("redeem", "points", lambda e, v: e.redeem_voucher("LOYAL", points=v)),
    pytest.param(
        lambda e, b: e.redeem_voucher("GIFT"), MISSING, "credits", id="redeem-gift-no-amount"
    ),
    pytest.param(
        lambda e, b: e.redeem_voucher("GIFT", session_key="held"),
        MISSING,
        "credits",
        id="redeem-gift-no-amount-own-session",
    ),
    pytest.param(
        lambda e, b: e.redeem_voucher("LOYAL"), PAYLOAD, "points", id="redeem-loyalty-no-points"
    ),
    pytest.param(
        lambda e, b: e.redeem_voucher("DISC", credits=1),
        PAYLOAD,
        "credits",
        id="redeem-credits-on-discount",
    ),
    *_bad_codes(
        "redeem", "session_key", lambda e, v: e.redeem_voucher("GIFT", credits=1, session_key=v)
    )[:-1],
    *_bad_metadata(lambda e, v: e.redeem_voucher("DISC", metadata=v), "redeem"),
    pytest.param(
        lambda e, b: e.redeem_voucher("DISC", order_id=5), PAYLOAD, "order_id", id="redeem-order-id"
    ),
    # --- rollback / get_redemption --------------------------------------------------------
    *_bad_codes("rollback", "redemption_id", lambda e, v: e.rollback_redemption(v)),
    pytest.param(
        lambda e, b: e.rollback_redemption(b["redemption"], reason=5),
        PAYLOAD,
        "reason",
        id="rollback-reason-int",
    ),
    pytest.param(
        lambda e, b: e.get_redemption(""), PAYLOAD, "redemption_id", id="get-redemption-empty"
    ),
    # --- stacked validation, redemption and rollback ---------------------------------------
    # both verbs: each rule of a stacked request
    *_stacked("empty", [], PAYLOAD, "redeemables"),
    *_stacked("mapping", {"object": "voucher", "id": "DISC"}, PAYLOAD, "redeemables"),
    *_stacked("31-unknown", [{"id": f"NEW-{i}"} for i in range(31)], LIMIT, "redeemables"),
    *_stacked(
        "unknown-object",
        [{"object": "promotion_tier", "id": "DISC"}],
        PAYLOAD,
        "redeemables[0].object",
        order_amount=1_000,
    ),
    *_stacked("missing-id", [{"object": "voucher"}], PAYLOAD, "redeemables[0]"),
    *_stacked(
        "same-code-twice",
        [{"id": "DISC"}, {"id": "DISC"}],
        PAYLOAD,
        "redeemables",
        order_amount=1_000,
    ),
    *_stacked("code-and-its-id", _code_and_its_id, PAYLOAD, "redeemables", order_amount=1_000),
    *_stacked(
        "credits-on-a-discount",
        [{"id": "DISC", "gift": {"credits": 100}}],
        PAYLOAD,
        "credits",
        order_amount=1_000,
    ),
    *_stacked(
        "points-on-a-gift-card",
        [{"id": "GIFT", "reward": {"points": 5}}],
        PAYLOAD,
        "points",
        order_amount=1_000,
    ),
    *_stacked("loyalty-card-without-points", [{"id": "LOYAL"}], PAYLOAD, "points"),
    *_stacked("gift-card-without-credits-or-order-amount", [{"id": "GIFT"}], MISSING, "credits"),
    *_stacked(
        "discount-without-order-amount",
        [{"id": "GIFT", "gift": {"credits": 1}}, {"id": "DISC"}],
        MISSING,
        "order.amount",
    ),
    *_stacked(
        "reward-id",
        [{"id": "LOYAL", "reward": {"id": "rew_1", "points": 5}}],
        PAYLOAD,
        "reward.id",
    ),
    *_stacked(
        "order-unknown-field",
        [{"id": "DISC"}],
        PAYLOAD,
        "order",
        order={"amount": 1_000, "total": 1_000},
    ),
    *_stacked(
        "order-amounts-differ",
        [{"id": "DISC"}],
        PAYLOAD,
        "order_amount",
        order_amount=1_000,
        order={"amount": 999},
    ),
    *_stacked_session("empty", ""),
    *_stacked_session("leading-space", " x"),
    *_stacked_session("too-long", "x" * 201),
    *_stacked_session("int", 5),
    # one verb: checks both verbs share
    *[
        case
        for label, value, key, argument, kwargs in (
            ("str", "DISC", PAYLOAD, "redeemables", {}),
            ("none", None, PAYLOAD, "redeemables", {}),
            ("31-the-same", [{"id": "DISC"}] * 31, LIMIT, "redeemables", {"order_amount": 1}),
            ("item-str", ["DISC"], PAYLOAD, "redeemables[0]", {}),
            (
                "second-missing-id",
                [{"id": "DISC"}, {"object": "voucher", "id": None}],
                PAYLOAD,
                "redeemables[1]",
                {"order_amount": 1},
            ),
            ("id-empty", [{"id": ""}], PAYLOAD, "redeemables[0].id", {}),
            ("id-int", [{"id": 5}], PAYLOAD, "redeemables[0].id", {}),
            ("unknown-field", [{"id": "DISC", "code": "DISC"}], PAYLOAD, "redeemables[0]", {}),
            (
                "gift-card-own-session-without-credits-or-order-amount",
                [{"id": "GIFT"}],
                MISSING,
                "credits",
                {"session": {"key": "held"}},
            ),
            (
                "gift-unknown-field",
                [{"id": "GIFT", "gift": {"amount": 5}}],
                PAYLOAD,
                "redeemables[0].gift",
                {},
            ),
            ("gift-str", [{"id": "GIFT", "gift": "5"}], PAYLOAD, "redeemables[0].gift", {}),
            (
                "credits-zero",
                [{"id": "GIFT", "gift": {"credits": 0}}],
                AMOUNT,
                "redeemables[0].gift.credits",
                {},
            ),
            ("order-amount-zero", [{"id": "DISC"}], AMOUNT, "order_amount", {"order_amount": 0}),
            ("order-str", [{"id": "DISC"}], PAYLOAD, "order", {"order": "o-1"}),
            (
                "customer-unknown-field",
                [{"id": "DISC"}],
                PAYLOAD,
                "customer",
                {"order_amount": 1, "customer": {"email": "a@example.com"}},
            ),
            (
                "metadata-nan",
                [{"id": "DISC"}],
                PAYLOAD,
                "metadata",
                {"order_amount": 1, "metadata": {"a": math.nan}},
            ),
        )
        for case in _stacked(label, value, key, argument, verbs=("redeem",), **kwargs)
    ],
    pytest.param(
        lambda e, b: e.validate_stacked_discounts(
            [{"id": "DISC"}], order_amount=1, session={"ttl": 0}
        ),
        PAYLOAD,
        "session.ttl",
        id="validate-stacked-session-ttl-zero",
    ),
    pytest.param(
        lambda e, b: e.redeem_stacked_discounts(
            [{"id": "DISC"}], order_amount=1, session={"key": " x"}
        ),
        PAYLOAD,
        "session.key",
        id="redeem-stacked-session-key-leading-space",
    ),
    pytest.param(
        lambda e, b: e.redeem_stacked_discounts(
            [{"id": "DISC"}], order_amount=1, session={"type": "UNLOCK", "key": "held"}
        ),
        PAYLOAD,
        "session.type",
        id="redeem-stacked-session-type",
    ),
    *[
        pytest.param(
            (
                lambda e, b, v=value: e.redeem_stacked_discounts(
                    [{"id": "GIFT", "gift": {"credits": 1}}], idempotency_key=v
                )
            ),
            PAYLOAD,
            "idempotency_key",
            id=f"redeem-stacked-idempotency_key-{label}",
        )
        for label, value in (("leading-space", " k"),)
    ],
    *[
        pytest.param(
            (lambda e, b, v=value: e.rollback_stacked_redemptions(v)),
            PAYLOAD,
            "parent_redemption_id",
            id=f"rollback-stacked-parent_redemption_id-{label}",
        )
        for label, value in (("empty", ""),)
    ],
    pytest.param(
        lambda e, b: e.rollback_stacked_redemptions("r_unknown", reason=5),
        PAYLOAD,
        "reason",
        id="rollback-stacked-reason-int",
    ),
    pytest.param(
        lambda e, b: e.rollback_stacked_redemptions("r_unknown", idempotency_key=" k"),
        PAYLOAD,
        "idempotency_key",
        id="rollback-stacked-idempotency-key",
    ),
    pytest.param(
        lambda e, b: e.get_parent_redemption(""),
        PAYLOAD,
        "parent_redemption_id",
        id="get-parent-redemption-empty",
    ),
    # --- release_validation_session -------------------------------------------------------
    *_bad_codes("release", "code", lambda e, v: e.release_validation_session(v, "held")),
    *_bad_codes("release", "session_key", lambda e, v: e.release_validation_session("GIFT", v)),
    # --- update_voucher_balance -----------------------------------------------------------
    *[
        pytest.param(
            (lambda e, b, v=value: e.update_voucher_balance("GIFT", v)),
            AMOUNT,
            "amount",
            id=f"balance-{label}",
        )
        for label, value in (
            ("zero", 0),
            ("float", 1.5),
            ("neg-float", -1.0),
            ("true", True),
            ("str", "5"),
            ("decimal", Decimal(5)),
            ("none", None),
            ("2**63", 2**63),
            ("-2**63", -(2**63)),
        )
    ],
    *_bad_codes("balance", "code", lambda e, v: e.update_voucher_balance(v, 1)),
    pytest.param(
        lambda e, b: e.update_voucher_balance("GIFT", 1, source_id=5),
        PAYLOAD,
        "source_id",
        id="balance-source-id",
    ),
    pytest.param(
        lambda e, b: e.update_voucher_balance("GIFT", 1, reason=[]),
        PAYLOAD,
        "reason",
        id="balance-reason",
    ),
    # free text with NUL: no SQL store can keep it, so no store accepts it
    pytest.param(
        lambda e, b: e.update_voucher_balance("GIFT", 1, reason="a\x00b"),
        PAYLOAD,
        "reason",
        id="balance-reason-nul",
    ),
    pytest.param(
        lambda e, b: e.update_voucher_balance("GIFT", 1, source_id="\x00"),
        PAYLOAD,
        "source_id",
        id="balance-source-id-nul",
    ),
    pytest.param(
        lambda e, b: e.redeem_voucher("DISC", order_id="o\x00"),
        PAYLOAD,
        "order_id",
        id="redeem-order-id-nul",
    ),
    pytest.param(
        lambda e, b: e.rollback_redemption(b["redemption"], reason="\x00"),
        PAYLOAD,
        "reason",
        id="rollback-reason-nul",
    ),
    pytest.param(
        _create(gift={"amount": 1}, category="c\x00"), PAYLOAD, "category", id="create-category-nul"
    ),
    pytest.param(
        _create(discount={"type": "UNIT", "unit_off": 1, "unit_type": "sku\x00"}),
        PAYLOAD,
        "unit_type",
        id="create-unit-type-nul",
    ),
    # --- idempotency keys (None means no key) -------------------------------------------
    *_bad_codes(
        "redeem",
        "idempotency_key",
        lambda e, v: e.redeem_voucher("GIFT", credits=1, idempotency_key=v),
    )[:-1],
    *_bad_codes(
        "rollback",
        "idempotency_key",
        lambda e, v: e.rollback_redemption("r_unknown", idempotency_key=v),
    )[:-1],
    *_bad_codes(
        "balance",
        "idempotency_key",
        lambda e, v: e.update_voucher_balance("GIFT", 1, idempotency_key=v),
    )[:-1],
    *[
        pytest.param(
            (lambda e, b, v=value: e.redeem_voucher("GIFT", credits=1, idempotency_key=v)),
            PAYLOAD,
            "idempotency_key",
            id=f"redeem-idempotency_key-{label}",
        )
        for label, value in (
            ("tab", "a\tb"),
            ("del", "a\x7fb"),
            ("bytes", b"key"),
            ("leading-nbsp", "\u00a0key"),
            ("list", ["key"]),
        )
    ],
    pytest.param(
        lambda e, b: e.rollback_redemption(b["redemption"], idempotency_key=" k"),
        PAYLOAD,
        "idempotency_key",
        id="rollback-idempotency_key-known-redemption",
    ),
    pytest.param(
        lambda e, b: e.expire_idempotency_keys(NAIVE),
        PAYLOAD,
        "now",
        id="expire-idempotency-keys-naive-now",
    ),
    pytest.param(
        lambda e, b: e.expire_idempotency_keys("2026"),
        PAYLOAD,
        "now",
        id="expire-idempotency-keys-str-now",
    ),
    # --- list_voucher_transactions, list_sessions, list_redemptions, expire_sessions -------
    *_bad_codes("list", "code", lambda e, v: e.list_voucher_transactions(v)),
    *[
        pytest.param(
            (lambda e, b, v=value: e.list_voucher_transactions("GIFT", limit=v)),
            PAYLOAD,
            "limit",
            id=f"list-limit-{value!r}",
        )
        for value in (0, 101, 1.5, True, "10")
    ],
    pytest.param(
        lambda e, b: e.list_voucher_transactions("GIFT", page=0), PAYLOAD, "page", id="list-page-0"
    ),
    pytest.param(
        lambda e, b: e.list_voucher_transactions("GIFT", order="newest"),
        PAYLOAD,
        "order",
        id="list-order",
    ),
    pytest.param(
        lambda e, b: e.list_voucher_transactions("GIFT", starting_after_id=""),
        PAYLOAD,
        "starting_after_id",
        id="list-cursor-empty",
    ),
    pytest.param(lambda e, b: e.list_sessions(""), PAYLOAD, "code", id="list-sessions-empty"),
    pytest.param(lambda e, b: e.list_redemptions(5), PAYLOAD, "code", id="list-redemptions-int"),
    pytest.param(lambda e, b: e.expire_sessions(NAIVE), PAYLOAD, "now", id="expire-naive-now"),
    pytest.param(lambda e, b: e.expire_sessions("2026"), PAYLOAD, "now", id="expire-str-now"),
    # --- free text: NUL, lone surrogates, length, type --------------------------------------
    *_bad_text("validate", "order_id", lambda e, v: e.validate_voucher("DISC", order_id=v)),
    *_bad_text("redeem", "order_id", lambda e, v: e.redeem_voucher("GIFT", credits=1, order_id=v)),
    *_bad_text("rollback", "reason", lambda e, v: e.rollback_redemption("r_x", reason=v)),
    *_bad_text("balance", "reason", lambda e, v: e.update_voucher_balance("GIFT", 1, reason=v)),
    *_bad_text(
        "balance", "source_id", lambda e, v: e.update_voucher_balance("GIFT", 1, source_id=v)
    ),
    *_bad_text("accrue", "order_id", lambda e, v: e.accrue_points("LOYAL", 1, order_id=v)),
    *_bad_text("accrue", "source_id", lambda e, v: e.accrue_points("LOYAL", 1, source_id=v)),
    *_bad_text("accrue", "reason", lambda e, v: e.accrue_points("LOYAL", 1, reason=v)),
    *_bad_text("cancel", "order_id", lambda e, v: e.cancel_points_accrual("LOYAL", order_id=v)),
    *_bad_text(
        "cancel",
        "reason",
        lambda e, v: e.cancel_points_accrual("LOYAL", order_id="o", reason=v),
    ),
    *_bad_text("transfer", "reason", lambda e, v: e.transfer_points("LOYAL", "CARD", 1, reason=v)),
    *_bad_text(
        "transfer", "source_id", lambda e, v: e.transfer_points("LOYAL", "CARD", 1, source_id=v)
    ),
    *_bad_text("create", "category", lambda e, v: e.create_voucher("NEW", gift={}, category=v)),
    *_bad_text(
        "create",
        "additional_info",
        lambda e, v: e.create_voucher("NEW", additional_info=v, gift={}),
    ),
    *_bad_text(
        "create", "campaign_id", lambda e, v: e.create_voucher("NEW", gift={}, campaign_id=v)
    ),
    *_bad_text(
        "create",
        "unit_type",
        lambda e, v: e.create_voucher(
            "NEW", discount={"type": "UNIT", "unit_off": 1, "unit_type": v}
        ),
    ),
    *_bad_codes(
        "accrue", "idempotency_key", lambda e, v: e.accrue_points("LOYAL", 1, idempotency_key=v)
    )[:-1],
    *_bad_codes("transfer", "destination_code", lambda e, v: e.transfer_points("LOYAL", v, 1)),
    # --- metadata on every verb that takes it -----------------------------------------------
    *_bad_metadata(lambda e, v: e.generate_vouchers(2, gift={"amount": 1}, metadata=v), "generate"),
    # --- instants outside the years 1–9999 in UTC -------------------------------------------
    *[
        pytest.param(
            _create(gift={"amount": 1}, **{field: when}),
            PAYLOAD,
            field,
            id=f"create-{field}-{label}",
        )
        for field in ("start_date", "expiration_date")
        for label, when in (("past-9999", PAST_9999), ("before-year-1", BEFORE_YEAR_1))
    ],
    pytest.param(
        lambda e, b: e.generate_vouchers(2, gift={"amount": 1}, expiration_date=PAST_9999),
        PAYLOAD,
        "expiration_date",
        id="generate-expiration-past-9999",
    ),
    pytest.param(
        lambda e, b: e.update_voucher_balance("LOYAL", 5, expires_at=PAST_9999),
        PAYLOAD,
        "expires_at",
        id="balance-expires-at-past-9999",
    ),
    pytest.param(
        lambda e, b: e.accrue_points("LOYAL", 5, expires_at=PAST_9999),
        PAYLOAD,
        "expires_at",
        id="accrue-expires-at-past-9999",
    ),
    pytest.param(
        lambda e, b: e.accrue_points("LOYAL", 5, expires_at=BEFORE_YEAR_1),
        PAYLOAD,
        "expires_at",
        id="accrue-expires-at-before-year-1",
    ),
    *[
        pytest.param(
            (lambda e, b, s=sweep: getattr(e, s)(BEFORE_YEAR_1)),
            PAYLOAD,
            "now",
            id=f"{sweep}-now-before-year-1",
        )
        for sweep in ("expire_sessions", "expire_points", "expire_idempotency_keys")
    ],
    pytest.param(
        lambda e, b: e.expire_points(PAST_9999), PAYLOAD, "now", id="expire_points-now-past-9999"
    ),
    # --- numbers of any size: pages, limits, counts, lengths, amounts ------------------------
    *[
        pytest.param(
            (lambda e, b, p=page, n=limit: e.list_voucher_transactions("GIFT", page=p, limit=n)),
            PAYLOAD,
            "page",
            id=f"list-page-{label}",
        )
        for label, page, limit in (
            ("2**62", 2**62, 10),
            ("2**31+1-limit-1", 2**31 + 1, 1),
            ("offset-over-2**31", 2**31 // 100 + 2, 100),
            ("huge", HUGE, 10),
            ("-huge", -HUGE, 10),
            ("float-inf", float("inf"), 10),
        )
    ],
    pytest.param(
        lambda e, b: e.list_voucher_transactions("GIFT", limit=HUGE),
        PAYLOAD,
        "limit",
        id="list-limit-huge",
    ),
    pytest.param(
        lambda e, b: e.generate_vouchers(HUGE, gift={"amount": 1}),
        PAYLOAD,
        "count",
        id="generate-count-huge",
    ),
    pytest.param(
        lambda e, b: e.generate_vouchers(2**63, gift={"amount": 1}),
        PAYLOAD,
        "count",
        id="generate-count-2**63",
    ),
    pytest.param(
        lambda e, b: e.generate_vouchers(1, gift={"amount": 1}, keep_codes=-HUGE),
        PAYLOAD,
        "keep_codes",
        id="generate-keep-codes-huge",
    ),
    pytest.param(
        lambda e, b: e.generate_vouchers(1, gift={"amount": 1}, length=HUGE),
        PAYLOAD,
        "length",
        id="generate-length-huge",
    ),
    pytest.param(
        _create(code=None, gift={"amount": 1}, code_length=HUGE),
        AMOUNT,
        "code_length",
        id="create-code-length-huge",
    ),
    pytest.param(
        lambda e, b: e.redeem_voucher("GIFT", credits=HUGE), AMOUNT, "credits", id="redeem-huge"
    ),
    pytest.param(
        lambda e, b: e.update_voucher_balance("GIFT", -HUGE),
        AMOUNT,
        "amount",
        id="balance-minus-huge",
    ),
    pytest.param(
        _create(discount={"type": "PERCENT", "percent_off": HUGE}),
        PAYLOAD,
        "percent_off",
        id="create-percent-huge",
    ),
    pytest.param(_session(ttl=HUGE), PAYLOAD, "ttl", id="validate-ttl-huge"),
    pytest.param(_session(ttl=-HUGE), PAYLOAD, "ttl", id="validate-ttl-minus-huge"),
    pytest.param(
        lambda e, b: e.validate_voucher("DISC", session={"ttl": 2**62, "ttl_unit": "DAYS"}),
        PAYLOAD,
        "ttl",
        id="validate-ttl-2**62-days",
    ),
    pytest.param(
        lambda e, b: e.validate_voucher("DISC", session={"key": "k", "ttl_unit": HUGE}),
        PAYLOAD,
        "ttl_unit",
        id="validate-ttl-unit-huge",
    ),
]


@pytest.mark.parametrize(("call", "key", "argument"), CASES)
def test_bad_input_is_invalid_argument_naming_the_argument_and_changes_nothing(
    engine: Engine, book: Book, call: Call, key: str, argument: str
) -> None:
    before = state_snapshot(engine, include_failed=True)
    sessions_stored = engine.store.session_count()
    parents = list(engine.store.parent_redemptions())
    with pytest.raises(InvalidArgument) as info:
        call(engine, book)
    error = info.value
    assert isinstance(error, ValueError)
    assert error.key == key
    assert error.code == 400
    assert argument in error.message, error.message
    assert state_snapshot(engine, include_failed=True) == before
    assert engine.store.session_count() == sessions_stored
    assert list(engine.store.parent_redemptions()) == parents
    assert engine.audit().ok


def test_every_case_id_is_unique() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))


def test_largest_int64_amounts_are_accepted(engine: Engine) -> None:
    big = 2**63 - 1
    engine.create_voucher("G", gift={"amount": big})
    assert engine.validate_voucher("G", credits=big).valid
    engine.create_voucher("D", discount=Discount.amount(big))
    assert engine.validate_voucher("D", order_amount=big).discount_amount == big
    assert engine.redeem_voucher("G", credits=big).amount == big


def test_invalid_argument_from_redeem_records_no_failed_redemption(
    engine: Engine, book: Book
) -> None:
    before = engine.list_redemptions("GIFT")
    with pytest.raises(InvalidArgument):
        engine.redeem_voucher("GIFT", credits=1.5)
    with pytest.raises(InvalidArgument):
        engine.redeem_voucher("GIFT")
    assert engine.list_redemptions("GIFT") == before


def test_instants_at_the_ends_of_the_range_are_kept_and_read_back(engine: Engine) -> None:
    first = datetime.min.replace(tzinfo=UTC)
    last = datetime.max.replace(tzinfo=UTC)
    created = engine.create_voucher("EDGE", gift={"amount": 1}, start_date=first)
    assert engine.get_voucher("EDGE") == created
    assert created.start_date == first
    engine.create_voucher("LAST", gift={"amount": 1}, expiration_date=last)
    assert engine.get_voucher("LAST").expiration_date == last
    # the same instant in another zone, inside the range in UTC
    late = datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=1)))
    assert engine.create_voucher("TZ", gift={"amount": 1}, expiration_date=late).expiration_date
    assert engine.audit().ok


def test_metadata_at_its_limits_is_kept(engine: Engine) -> None:
    deepest = nested_metadata(32)
    edge = {"int": 2**63 - 1, "neg": -(2**63), "flag": True, "text": "é\u00a0\U0001f600"}
    engine.create_voucher("META", gift={"amount": 1}, metadata={"deep": deepest["n"], **edge})
    metadata = engine.get_voucher("META").metadata
    assert metadata is not None
    assert {k: metadata[k] for k in edge} == edge
    assert engine.audit().ok


def _bad_urls(directory: Path) -> list[str]:
    sqlite = f"sqlite:///{directory / 'bad.db'}"
    urls = [
        f"{sqlite}?busy_timeout=nan",
        f"{sqlite}?busy_timeout=inf",
        f"{sqlite}?busy_timeout=-1",
        f"{sqlite}?busy_timeout=1e300",
        f"{sqlite}?busy_timeout={'9' * 5000}",
        f"{sqlite}?busy_timeout=soon",
        f"{sqlite}?synchronous=\x00",
        f"{sqlite}?journal=off",
        f"sqlite:///{directory}/a\x00.db",
        f"sqlite:///{directory}/a%00.db",
        f"sqlite:///{directory}/\ud800.db",
        "sqlite",
        "sqlite://",
        "x" * 5000,
    ]
    dsn = os.environ.get(POSTGRES_DSN_VARIABLE)
    if dsn:
        join = "&" if "?" in dsn else "?"
        urls += [
            f"{dsn}{join}timeout=nan",
            f"{dsn}{join}timeout=inf",
            f"{dsn}{join}timeout=0",
            f"{dsn}{join}max_size=99999999999999999999",
            f"{dsn}{join}min_size=-1",
            f"{dsn}{join}retries=1.5",
            f"{dsn}{join}schema=%00",
            f"{dsn}{join}sslmode=%00",
            f"{dsn}\x00",
            "postgresql://[::1",
        ]
    return urls


def test_a_bad_store_url_is_invalid_payload(tmp_path: Path) -> None:
    """Store URL options (any store): NUL, lone surrogates, numbers that are not finite or out
    of range — an InvalidPayload, never a ValueError or OverflowError of the driver."""
    failures = []
    for url in _bad_urls(tmp_path):
        try:
            Engine(url).close()
        except InvalidArgument as error:
            if error.key != PAYLOAD:
                failures.append((url[:80], repr(error)))
        except Exception as error:
            failures.append((url[:80], repr(error)[:200]))
        else:
            failures.append((url[:80], "accepted"))
    assert not failures


@pytest.mark.parametrize("seconds", [math.nan, math.inf, -1.0, 1e300, True, "5"])
def test_a_bad_timeout_handed_to_a_store_is_invalid_payload(seconds: object) -> None:
    """The stores' own constructors check their timeouts as their URLs do: finite, in range."""
    with pytest.raises(InvalidArgument) as raised:
        SQLiteStore(":memory:", busy_timeout=seconds)
    assert raised.value.key == PAYLOAD
    try:  # the PostgreSQL store needs the postgres extra
        postgres = importlib.import_module("vouchercore.stores.postgres")
    except ImportError:
        return
    with pytest.raises(InvalidArgument) as raised:  # refused before any connection is made
        postgres.PostgresStore("postgresql://127.0.0.1:1/none", timeout=seconds)
    assert raised.value.key == PAYLOAD
