"""Malformed requests (README "Validation", "Errors"; a failed call changes nothing: README
"Concurrency and the audit"): every public call rejects bad input with an
``InvalidArgument`` (also a ``ValueError``) whose key is ``invalid_amount``, ``missing_amount``
or ``invalid_payload`` and whose message names the argument — and changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from vouchercore import Discount, Engine, InvalidArgument
from vouchercore.testing import state_snapshot

AMOUNT = "invalid_amount"
PAYLOAD = "invalid_payload"
MISSING = "missing_amount"

NAIVE = datetime(2026, 6, 1, 12, 0)  # naive on purpose

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
        ("int", 5),
        ("none", None),
    ]
    return [
        pytest.param(
            (lambda e, b, v=value: call(e, v)), PAYLOAD, name, id=f"{prefix}-{name}-{label}"
        )
        for label, value in values
    ]


def _bad_metadata(call: Callable[[Engine, object], Any], prefix: str) -> list[Any]:
    values: list[tuple[str, object]] = [
        ("int-key", {1: "a"}),
        ("object", {"a": object()}),
        ("nan", {"a": float("nan")}),
        ("not-mapping", "meta"),
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
]


@pytest.mark.parametrize(("call", "key", "argument"), CASES)
def test_bad_input_is_invalid_argument_naming_the_argument_and_changes_nothing(
    engine: Engine, book: Book, call: Call, key: str, argument: str
) -> None:
    before = state_snapshot(engine, include_failed=True)
    sessions_stored = engine.store.session_count()
    with pytest.raises(InvalidArgument) as info:
        call(engine, book)
    error = info.value
    assert isinstance(error, ValueError)
    assert error.key == key
    assert error.code == 400
    assert argument in error.message, error.message
    assert state_snapshot(engine, include_failed=True) == before
    assert engine.store.session_count() == sessions_stored
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
