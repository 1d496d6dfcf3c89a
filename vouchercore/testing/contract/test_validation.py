"""README "Validation": check order, boundaries, pricing."""

from __future__ import annotations

from datetime import timedelta

import pytest

from vouchercore import (
    Discount,
    Engine,
    FakeClock,
    GiftAmountExceeded,
    LoyaltyCardPointsExceeded,
    NotFound,
    QuantityExceeded,
    VoucherDisabled,
    VoucherError,
    VoucherExpired,
    VoucherNotActive,
    VoucherRejected,
    VoucherType,
)
from vouchercore.testing import state_snapshot

US = timedelta(microseconds=1)


def _key(engine: Engine, code: str, **kwargs: object) -> str | None:
    result = engine.validate_voucher(code, **kwargs)  # type: ignore[arg-type]
    if result.valid:
        assert result.error is None
        return None
    assert result.error is not None
    return result.error.key


def _redeem_key(engine: Engine, code: str, **kwargs: object) -> str:
    with pytest.raises(VoucherRejected) as info:
        engine.redeem_voucher(code, **kwargs)  # type: ignore[arg-type]
    return info.value.key


# --- the check order ------------------------------------------------------------------------


def test_expired_disabled_exhausted_overdrawn_gift_card_reports_checks_in_spec_order(
    engine: Engine, clock: FakeClock
) -> None:
    """One gift card failing disabled, expired, quantity and credits at once: the first check
    in the README's order ("Validation") decides, and removing each failure in turn reveals the
    next one."""
    engine.create_voucher(
        "ALL", gift={"amount": 1000}, quantity=1, expiration_date=clock.now() + timedelta(hours=1)
    )
    assert engine.validate_voucher("ALL", credits=1000, session={"key": "other"}).valid
    clock.advance(hours=2)  # expired; the other session still holds quantity and credits
    engine.disable_voucher("ALL")
    ask = {"credits": 500}

    assert _key(engine, "ALL", **ask) == "voucher_disabled"
    assert _redeem_key(engine, "ALL", **ask) == "voucher_disabled"
    engine.enable_voucher("ALL")
    assert _key(engine, "ALL", **ask) == "voucher_expired"
    assert _redeem_key(engine, "ALL", **ask) == "voucher_expired"


def test_disabled_not_yet_started_overdrawn_card_reports_disabled_then_not_active(
    engine: Engine, clock: FakeClock
) -> None:
    engine.create_voucher(
        "EARLY",
        gift={"amount": 100},
        active=False,
        start_date=clock.now() + timedelta(days=1),
        expiration_date=clock.now() + timedelta(days=2),
    )
    assert _key(engine, "EARLY", credits=500) == "voucher_disabled"
    engine.enable_voucher("EARLY")
    assert _key(engine, "EARLY", credits=500) == "voucher_not_active"
    assert _redeem_key(engine, "EARLY", credits=500) == "voucher_not_active"
    clock.advance(days=1)
    assert _key(engine, "EARLY", credits=500) == "gift_amount_exceeded"


def test_quantity_exceeded_comes_before_gift_amount_exceeded(engine: Engine) -> None:
    engine.create_voucher("QG", gift={"amount": 1000}, quantity=1)
    assert engine.validate_voucher("QG", credits=1000, session={"key": "other"}).valid
    assert _key(engine, "QG", credits=5000) == "quantity_exceeded"
    assert _redeem_key(engine, "QG", credits=5000) == "quantity_exceeded"
    engine.release_validation_session("QG", "other")
    assert _key(engine, "QG", credits=5000) == "gift_amount_exceeded"


def test_quantity_exceeded_comes_before_loyalty_points_exceeded(engine: Engine) -> None:
    engine.create_voucher("QL", loyalty_card={"points": 100}, quantity=1)
    engine.redeem_voucher("QL", points=10)
    assert _key(engine, "QL", points=1000) == "quantity_exceeded"


def test_not_found_comes_before_every_other_check(engine: Engine, clock: FakeClock) -> None:
    engine.create_voucher(
        "DEL",
        gift={"amount": 10},
        active=False,
        expiration_date=clock.now() + timedelta(seconds=1),
    )
    engine.delete_voucher("DEL")
    clock.advance(seconds=5)
    result = engine.validate_voucher("DEL", credits=1000)
    assert result.valid is False
    assert isinstance(result.error, NotFound)
    assert result.error.key == "not_found"


def test_unknown_code_is_a_not_found_answer_not_an_exception(engine: Engine) -> None:
    result = engine.validate_voucher("NOPE", order_amount=100)
    assert result.valid is False
    assert result.error is not None
    assert result.error.key == "not_found"
    assert result.error.code == 404
    assert result.voucher_id is None


def test_validation_by_voucher_id_works_like_by_code(engine: Engine) -> None:
    v = engine.create_voucher("BYID", gift={"amount": 100})
    result = engine.validate_voucher(v.id, credits=50)
    assert result.valid
    assert result.voucher_id == v.id


# --- invalid answers never raise ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "ask", "error"),
    [
        ("disabled", {"credits": 10}, VoucherDisabled),
        ("not_active", {"credits": 10}, VoucherNotActive),
        ("expired", {"credits": 10}, VoucherExpired),
        ("exhausted", {"credits": 10}, QuantityExceeded),
        ("plain", {"credits": 10_000}, GiftAmountExceeded),
    ],
)
def test_invalid_validation_returns_valid_false_with_the_error_instead_of_raising(
    engine: Engine, clock: FakeClock, setup: str, ask: dict[str, int], error: type[VoucherError]
) -> None:
    now = clock.now()
    kwargs: dict[str, object] = {"gift": {"amount": 1000}}
    if setup == "disabled":
        kwargs["active"] = False
    if setup == "not_active":
        kwargs["start_date"] = now + timedelta(days=1)
    if setup == "expired":
        kwargs["expiration_date"] = now - timedelta(days=1)
    if setup == "exhausted":
        kwargs["quantity"] = 1
    engine.create_voucher("V", **kwargs)  # type: ignore[arg-type]
    if setup == "exhausted":
        engine.redeem_voucher("V", credits=1)
    result = engine.validate_voucher("V", **ask)  # type: ignore[arg-type]
    assert result.valid is False
    assert isinstance(result.error, error)
    assert result.error is not None
    assert result.error.key == error.key
    assert result.error.message
    assert result.code == "V"
    assert result.type is VoucherType.GIFT_VOUCHER
    assert result.session is None


def test_loyalty_points_beyond_balance_is_an_invalid_answer(engine: Engine) -> None:
    engine.create_voucher("L", loyalty_card={"points": 100})
    result = engine.validate_voucher("L", points=101)
    assert result.valid is False
    assert isinstance(result.error, LoyaltyCardPointsExceeded)
    assert engine.validate_voucher("L", points=100).valid


def test_validation_changes_nothing(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1000}, quantity=3)
    before = state_snapshot(engine, include_failed=True)
    assert engine.validate_voucher("G", credits=100).valid
    assert not engine.validate_voucher("G", credits=100_000).valid
    assert state_snapshot(engine, include_failed=True) == before


# --- start and expiration boundaries -----------------------------------------------------------


def test_voucher_is_not_active_one_microsecond_before_start_date(
    engine: Engine, clock: FakeClock
) -> None:
    start = clock.now() + timedelta(hours=1)
    engine.create_voucher("S", gift={"amount": 100}, start_date=start)
    clock.set(start - US)
    assert _key(engine, "S", credits=1) == "voucher_not_active"


def test_voucher_is_valid_exactly_at_start_date(engine: Engine, clock: FakeClock) -> None:
    start = clock.now() + timedelta(hours=1)
    engine.create_voucher("S", gift={"amount": 100}, start_date=start)
    clock.set(start)
    assert _key(engine, "S", credits=1) is None


def test_voucher_is_valid_exactly_at_expiration_date(engine: Engine, clock: FakeClock) -> None:
    end = clock.now() + timedelta(hours=1)
    engine.create_voucher("E", gift={"amount": 100}, expiration_date=end)
    clock.set(end)
    assert _key(engine, "E", credits=1) is None
    assert engine.redeem_voucher("E", credits=1).amount == 1


def test_voucher_is_expired_one_microsecond_after_expiration_date(
    engine: Engine, clock: FakeClock
) -> None:
    end = clock.now() + timedelta(hours=1)
    engine.create_voucher("E", gift={"amount": 100}, expiration_date=end)
    clock.set(end + US)
    assert _key(engine, "E", credits=1) == "voucher_expired"
    assert _redeem_key(engine, "E", credits=1) == "voucher_expired"


def test_voucher_valid_only_at_the_instant_where_start_equals_expiration(
    engine: Engine, clock: FakeClock
) -> None:
    at = clock.now() + timedelta(minutes=1)
    engine.create_voucher("ONCE", gift={"amount": 100}, start_date=at, expiration_date=at)
    clock.set(at - US)
    assert _key(engine, "ONCE", credits=1) == "voucher_not_active"
    clock.set(at)
    assert _key(engine, "ONCE", credits=1) is None
    clock.set(at + US)
    assert _key(engine, "ONCE", credits=1) == "voucher_expired"


# --- availability: other sessions versus one's own -----------------------------------------------


def test_other_sessions_take_quantity_but_own_session_counts_as_available(
    engine: Engine,
) -> None:
    engine.create_voucher("Q2", discount=Discount.amount(100), quantity=2)
    assert engine.validate_voucher("Q2", session={"key": "a"}).valid
    assert engine.validate_voucher("Q2", session={"key": "b"}).valid
    assert _key(engine, "Q2") == "quantity_exceeded"
    assert _key(engine, "Q2", session={"key": "c"}) == "quantity_exceeded"
    assert engine.validate_voucher("Q2", session={"key": "a"}).valid
    assert engine.validate_voucher("Q2", session={"key": "b"}).valid


def test_redeemed_quantity_and_other_locks_add_up(engine: Engine) -> None:
    engine.create_voucher("Q3", discount=Discount.amount(100), quantity=3)
    engine.redeem_voucher("Q3")
    assert engine.validate_voucher("Q3", session={"key": "a"}).valid
    assert _key(engine, "Q3") is None  # 3 - 1 redeemed - 1 locked = 1 left
    assert engine.validate_voucher("Q3", session={"key": "b"}).valid
    assert _key(engine, "Q3") == "quantity_exceeded"


def test_other_sessions_hold_credits_but_own_locked_credits_are_available(
    engine: Engine,
) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    assert engine.validate_voucher("G", credits=600, session={"key": "a"}).valid
    assert _key(engine, "G", credits=401) == "gift_amount_exceeded"
    assert _key(engine, "G", credits=400) is None
    assert _key(engine, "G", credits=1000, session={"key": "a"}) is None


def test_other_sessions_hold_points_but_own_locked_points_are_available(engine: Engine) -> None:
    engine.create_voucher("L", loyalty_card={"points": 100})
    assert engine.validate_voucher("L", points=70, session={"key": "a"}).valid
    assert _key(engine, "L", points=31) == "loyalty_card_points_exceeded"
    assert _key(engine, "L", points=30) is None
    assert _key(engine, "L", points=100, session={"key": "a"}) is None


def test_unlimited_voucher_never_reports_quantity_exceeded(engine: Engine) -> None:
    engine.create_voucher("U", discount=Discount.amount(1))
    for i in range(20):
        assert engine.validate_voucher("U", session={"key": f"k{i}"}).valid
    for _ in range(5):
        engine.redeem_voucher("U")
    assert _key(engine, "U") is None


# --- gift credits derived from the order ---------------------------------------------------------


def test_gift_credits_default_to_the_order_amount_when_it_is_smaller(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    result = engine.validate_voucher("G", order_amount=300)
    assert result.valid
    assert (result.credits, result.amount) == (300, 300)
    assert result.balance == 1000
    assert result.order_amount == 300


def test_gift_credits_default_to_the_balance_when_the_order_is_larger(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    result = engine.validate_voucher("G", order_amount=5000)
    assert result.valid
    assert result.credits == 1000


def test_gift_credits_default_to_what_other_sessions_leave_available(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    assert engine.validate_voucher("G", credits=600, session={"key": "a"}).valid
    assert engine.validate_voucher("G", order_amount=5000).credits == 400
    assert engine.validate_voucher("G", order_amount=5000, session={"key": "a"}).credits == 1000


def test_redeem_without_credits_uses_min_of_order_and_available(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    assert engine.redeem_voucher("G", order_amount=250).amount == 250
    assert engine.redeem_voucher("G", order_amount=5000).amount == 750
    assert engine.get_voucher("G").gift.balance == 0  # type: ignore[union-attr]


def test_empty_gift_card_with_only_an_order_amount_is_invalid(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 0})
    assert _key(engine, "G", order_amount=100) == "gift_amount_exceeded"


def test_explicit_credits_win_over_the_order_amount(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    assert engine.validate_voucher("G", credits=200, order_amount=900).credits == 200


# --- discount pricing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount_off", "order", "expected"),
    [(500, 2000, 500), (500, 500, 500), (500, 300, 300), (500, 1, 1)],
)
def test_amount_discount_is_amount_off_capped_by_the_order(
    engine: Engine, amount_off: int, order: int, expected: int
) -> None:
    engine.create_voucher("A", discount=Discount.amount(amount_off))
    result = engine.validate_voucher("A", order_amount=order)
    assert result.valid
    assert result.discount_amount == expected
    assert result.amount == expected


@pytest.mark.parametrize(
    ("percent", "order", "expected"),
    [
        (10, 5000, 500),
        (12.5, 1000, 125),
        (12.5, 1, 0),  # 0.125 → 0
        (50, 1, 1),  # 0.5 → 1 (half up)
        (50, 3, 2),  # 1.5 → 2 (half up, not banker's)
        (50, 5, 3),  # 2.5 → 3 (half up, not banker's)
        (33.33, 150, 50),  # 49.995 → 50
        (33.33, 15, 5),  # 4.9995 → 5
        (1.01, 50, 1),  # 0.505 → 1
        (0.01, 4999, 0),  # 0.4999 → 0
        (0.01, 5000, 1),  # 0.5 → 1
        (100, 777, 777),
    ],
)
def test_percent_discount_rounds_half_up(
    engine: Engine, percent: float, order: int, expected: int
) -> None:
    engine.create_voucher("P", discount={"type": "PERCENT", "percent_off": percent})
    assert engine.validate_voucher("P", order_amount=order).discount_amount == expected


def test_percent_discount_is_capped_by_amount_limit(engine: Engine) -> None:
    engine.create_voucher("P", discount=Discount.percent(50, amount_limit=1000))
    assert engine.validate_voucher("P", order_amount=1000).discount_amount == 500
    assert engine.validate_voucher("P", order_amount=2000).discount_amount == 1000
    assert engine.validate_voucher("P", order_amount=10_000).discount_amount == 1000


def test_percent_discount_on_a_huge_order_is_exact(engine: Engine) -> None:
    engine.create_voucher("P", discount=Discount.percent(33.33))
    order = 2**62 + 1
    expected = (order * 3333 * 2 + 10_000) // 20_000
    assert engine.validate_voucher("P", order_amount=order).discount_amount == expected


@pytest.mark.parametrize(
    ("fixed", "order", "expected"),
    [(1000, 5000, 4000), (1000, 1000, 0), (1000, 500, 0), (0, 700, 700)],
)
def test_fixed_discount_brings_the_order_down_to_the_fixed_amount(
    engine: Engine, fixed: int, order: int, expected: int
) -> None:
    engine.create_voucher("F", discount=Discount.fixed(fixed))
    assert engine.validate_voucher("F", order_amount=order).discount_amount == expected


def test_amount_discount_without_an_order_is_the_amount_off(engine: Engine) -> None:
    engine.create_voucher("A", discount=Discount.amount(500))
    result = engine.validate_voucher("A")
    assert result.valid
    assert result.discount_amount == 500
    assert result.order_amount is None


@pytest.mark.parametrize(
    "discount", [Discount.percent(10), Discount.fixed(100), Discount.unit(1, "sku")]
)
def test_order_priced_discounts_without_an_order_grant_nothing(
    engine: Engine, discount: Discount
) -> None:
    engine.create_voucher("P", discount=discount)
    result = engine.validate_voucher("P")
    assert result.valid
    assert result.discount_amount == 0


def test_unit_discount_is_reported_but_not_priced(engine: Engine) -> None:
    engine.create_voucher("UNIT", discount=Discount.unit(2, "sku_1"))
    result = engine.validate_voucher("UNIT", order_amount=5000)
    assert result.valid
    assert result.discount == Discount.unit(2, "sku_1")
    assert result.discount_amount == 0


def test_discount_result_reports_the_discount_and_no_balance(engine: Engine) -> None:
    engine.create_voucher("A", discount=Discount.amount(100))
    result = engine.validate_voucher("A", order_amount=1000)
    assert result.discount == Discount.amount(100)
    assert result.balance is None
    assert result.type is VoucherType.DISCOUNT_VOUCHER


def test_redeeming_a_discount_records_the_priced_amount(engine: Engine) -> None:
    engine.create_voucher("P", discount=Discount.percent(10))
    redemption = engine.redeem_voucher("P", order_amount=12_345)
    assert redemption.amount == 1235  # 1234.5 → 1235
    assert engine.get_voucher("P").redeemed_amount == 1235


def test_loyalty_validation_reports_the_points_and_balance(engine: Engine) -> None:
    engine.create_voucher("L", loyalty_card={"points": 100})
    result = engine.validate_voucher("L", points=40)
    assert result.valid
    assert (result.points, result.amount, result.balance) == (40, 40, 100)
