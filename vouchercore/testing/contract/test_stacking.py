"""Stacked validation, redemption and rollback (README "Stacking vouchers") on every store:
pricing order, every failure position, the limits, ``no_effect``, one-key locks, parent/child
rollback, idempotent replays, and that a call that fails changes nothing but the parent log.

:func:`~vouchercore.testing.state_snapshot` covers every live voucher with its sessions,
redemptions (FAILED ones too, with ``include_failed``) and transactions; it does not cover the
parent redemptions, which these tests read from the store (``parent_redemptions()``) on their
own. Bad input to the stacked verbs is in the bad-input table (``test_bad_input.py``); their
idempotency keys are in the idempotency tables too (``test_idempotency.py``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from vouchercore import (
    AlreadyRolledBack,
    ApplicableRedeemablesLimitExceeded,
    Customer,
    Discount,
    Engine,
    FakeClock,
    GiftAmountExceeded,
    IdempotencyKeyReused,
    InvalidArgument,
    InvalidPayload,
    InvalidRedemption,
    NoEffect,
    NotFound,
    Order,
    OrderSummary,
    ParentRedemption,
    QuantityExceeded,
    RedeemablesLimitExceeded,
    RedeemableStatus,
    RedemptionStatus,
    RollbackWindowExceeded,
    StackedRedemption,
    StackingRules,
    TransactionType,
    VoucherDisabled,
    VoucherError,
    VoucherRejected,
    VoucherType,
)
from vouchercore.testing import all_transactions, state_snapshot
from vouchercore.testing.contract.conftest import SEED, START, MakeEngine

REDEMPTION_ID = re.compile(r"r_[0-9A-Za-z]{32}")
ROLLBACK_ID = re.compile(r"rr_[0-9A-Za-z]{32}")
SESSION_KEY = re.compile(r"ssn_[0-9A-Za-z]{32}")

APPLICABLE = RedeemableStatus.APPLICABLE
INAPPLICABLE = RedeemableStatus.INAPPLICABLE
SKIPPED = RedeemableStatus.SKIPPED

#: The order of most stacks here.
ORDER: dict[str, Any] = {"id": "o-1", "amount": 10_000}


def voucher(code: str, **extra: Any) -> dict[str, Any]:
    """A redeemable naming a voucher by code (or id)."""
    return {"object": "voucher", "id": code, **extra}


def gift(code: str, credits: int | None = None) -> dict[str, Any]:
    """A gift card redeemable, with explicit credits or without."""
    return voucher(code) if credits is None else voucher(code, gift={"credits": credits})


def loyalty(code: str, points: int) -> dict[str, Any]:
    """A loyalty card redeemable spending *points*."""
    return voucher(code, reward={"points": points})


def _parents(engine: Engine) -> list[ParentRedemption]:
    return list(engine.store.parent_redemptions())


def _state(engine: Engine) -> tuple[dict[str, Any], int]:
    """Everything observable but the parent log: vouchers, sessions, redemptions (FAILED ones
    too), transactions, and the number of sessions stored."""
    return state_snapshot(engine, include_failed=True), engine.store.session_count()


def _statuses(redeemables: Any) -> list[tuple[RedeemableStatus, str | None]]:
    return [(r.status, None if r.error is None else r.error.key) for r in redeemables]


def _balance(engine: Engine, code: str) -> int:
    v = engine.get_voucher(code)
    card = v.gift if v.gift is not None else v.loyalty_card
    assert card is not None
    return card.balance


def _stack_book(engine: Engine, **changes: dict[str, Any]) -> None:
    """A discount voucher D (500 off, quantity 5), a gift card G (5,000 credits) and a loyalty
    card L (1,000 points); *changes* are extra ``create_voucher`` arguments per code."""
    engine.create_voucher(
        "D", **{"discount": Discount.amount(500), "quantity": 5, **changes.get("D", {})}
    )
    engine.create_voucher("G", **{"gift": {"amount": 5_000}, **changes.get("G", {})})
    engine.create_voucher("L", **{"loyalty_card": {"points": 1_000}, **changes.get("L", {})})


#: The stack of the book: 500 off, then 2,000 credits, and 300 points.
STACK = [voucher("D"), gift("G", 2_000), loyalty("L", 300)]


def _redeemed(engine: Engine, **kwargs: Any) -> StackedRedemption:
    """The book, and its stack redeemed."""
    _stack_book(engine)
    return engine.redeem_stacked_discounts(STACK, order=ORDER, **kwargs)


# --- pricing -----------------------------------------------------------------------------------


def test_discounts_apply_in_the_order_given_each_to_what_is_left(engine: Engine) -> None:
    engine.create_voucher("P10", discount=Discount.percent(10), quantity=5)
    engine.create_voucher("A500", discount=Discount.amount(500), quantity=5)

    # 10 % of 10,000 = 1,000, leaving 9,000; then 500 off: 1,500 in all, 8,500 to pay
    first = engine.validate_stacked_discounts([voucher("P10"), voucher("A500")], order=ORDER)
    assert first.valid
    assert [(r.id, r.amount, r.discount_amount, r.order_amount) for r in first.redeemables] == [
        ("P10", 1_000, 1_000, 10_000),
        ("A500", 500, 500, 9_000),
    ]
    assert (first.order.discount_amount, first.order.total_amount) == (1_500, 8_500)

    # 500 off first, leaving 9,500; then 10 % of that = 950: 1,450 in all, 8,550 to pay
    second = engine.validate_stacked_discounts([voucher("A500"), voucher("P10")], order=ORDER)
    assert [(r.id, r.amount, r.order_amount) for r in second.redeemables] == [
        ("A500", 500, 10_000),
        ("P10", 950, 9_500),
    ]
    assert (second.order.discount_amount, second.order.total_amount) == (1_450, 8_550)

    stacked = engine.redeem_stacked_discounts([voucher("A500"), voucher("P10")], order=ORDER)
    assert [(c.voucher_code, c.amount) for c in stacked.redemptions] == [
        ("A500", 500),
        ("P10", 950),
    ]
    assert stacked.parent_redemption.amount == 1_450
    assert stacked.order == second.order
    assert engine.get_voucher("P10").redeemed_amount == 950
    assert engine.audit().ok


def test_a_fixed_price_discount_prices_what_the_discounts_before_it_left(engine: Engine) -> None:
    engine.create_voucher("A500", discount=Discount.amount(500))
    engine.create_voucher("FIX", discount=Discount.fixed(7_000))
    result = engine.validate_stacked_discounts([voucher("A500"), voucher("FIX")], order=ORDER)
    # 10,000 − 500 = 9,500 left; a fixed price of 7,000 takes off 2,500
    assert [(r.amount, r.order_amount) for r in result.redeemables] == [
        (500, 10_000),
        (2_500, 9_500),
    ]
    assert (result.order.discount_amount, result.order.total_amount) == (3_000, 7_000)
    assert engine.audit().ok


def test_gift_cards_pay_after_the_discounts_wherever_they_stand_in_the_request(
    engine: Engine,
) -> None:
    engine.create_voucher("G", gift={"amount": 20_000})
    engine.create_voucher("P10", discount=Discount.percent(10))
    engine.create_voucher("A500", discount=Discount.amount(500))
    stack = [gift("G"), voucher("P10"), voucher("A500")]

    result = engine.validate_stacked_discounts(stack, order=ORDER)
    assert result.valid
    # answered in request order; the card paid what the discounts left: 10,000 − 1,000 − 500
    g, p10, a500 = result.redeemables
    assert (g.id, g.type, g.amount, g.credits, g.order_amount, g.balance) == (
        "G",
        VoucherType.GIFT_VOUCHER,
        8_500,
        8_500,
        8_500,
        20_000,
    )
    assert (p10.amount, p10.order_amount, a500.amount, a500.order_amount) == (
        1_000,
        10_000,
        500,
        9_000,
    )
    assert (result.order.discount_amount, result.order.gift_amount) == (1_500, 8_500)
    assert (result.order.total_discount_amount, result.order.total_amount) == (10_000, 0)

    stacked = engine.redeem_stacked_discounts(stack, order=ORDER)
    assert [c.amount for c in stacked.redemptions] == [8_500, 1_000, 500]
    assert _balance(engine, "G") == 11_500
    assert engine.audit().ok


def test_explicit_gift_credits_are_capped_at_what_the_order_still_owes(engine: Engine) -> None:
    engine.create_voucher("P10", discount=Discount.percent(10))
    engine.create_voucher("G", gift={"amount": 20_000})
    # 10 % off leaves 9,000 to pay
    for credits, paid in ((9_500, 9_000), (9_000, 9_000), (4_000, 4_000)):
        result = engine.validate_stacked_discounts(
            [voucher("P10"), gift("G", credits)], order=ORDER
        )
        assert result.valid
        assert (result.redeemables[1].amount, result.redeemables[1].credits) == (paid, paid)
        assert result.order.total_amount == 9_000 - paid

    stacked = engine.redeem_stacked_discounts([voucher("P10"), gift("G", 9_500)], order=ORDER)
    assert stacked.redemptions[1].amount == 9_000
    assert _balance(engine, "G") == 11_000
    [tx] = all_transactions(engine, "G")
    assert (tx.type, tx.amount) == (TransactionType.CREDITS_REDEMPTION, -9_000)
    assert engine.audit().ok


def test_gift_cards_without_credits_pay_the_least_of_what_is_owed_and_what_they_hold(
    engine: Engine,
) -> None:
    engine.create_voucher("SMALL", gift={"amount": 3_000})
    engine.create_voucher("BIG", gift={"amount": 20_000})
    engine.create_voucher("A500", discount=Discount.amount(500))
    # the small card pays all it has (3,000 < 9,500 owed), the big one the rest (6,500)
    stack = [gift("SMALL"), gift("BIG"), voucher("A500")]
    result = engine.validate_stacked_discounts(stack, order=ORDER)
    assert [(r.amount, r.order_amount) for r in result.redeemables] == [
        (3_000, 9_500),
        (6_500, 6_500),
        (500, 10_000),
    ]
    assert (result.order.gift_amount, result.order.total_amount) == (9_500, 0)
    engine.redeem_stacked_discounts(stack, order=ORDER)
    assert (_balance(engine, "SMALL"), _balance(engine, "BIG")) == (0, 13_500)
    assert engine.audit().ok


def test_loyalty_cards_spend_the_points_asked_and_do_not_price_the_order(engine: Engine) -> None:
    engine.create_voucher("L", loyalty_card={"points": 1_000})
    engine.create_voucher("A500", discount=Discount.amount(500))
    stack = [loyalty("L", 250), voucher("A500")]
    result = engine.validate_stacked_discounts(stack, order=ORDER)
    card = result.redeemables[0]
    assert (card.type, card.amount, card.points, card.credits, card.balance) == (
        VoucherType.LOYALTY_CARD,
        250,
        250,
        0,
        1_000,
    )
    assert (result.order.total_discount_amount, result.order.total_amount) == (500, 9_500)

    stacked = engine.redeem_stacked_discounts(stack, order=ORDER)
    assert stacked.redemptions[0].amount == 250
    assert stacked.parent_redemption.amount == 500  # discounts and credits, not points
    after = engine.get_voucher("L")
    assert after.loyalty_card is not None
    assert (after.loyalty_card.balance, after.redeemed_points) == (750, 250)
    [tx] = all_transactions(engine, "L")
    assert (tx.type, tx.amount, tx.balance) == (TransactionType.POINTS_REDEMPTION, -250, 750)
    assert engine.audit().ok


def test_the_order_summary_gives_the_order_and_what_the_stack_took_off(engine: Engine) -> None:
    _stack_book(engine)
    order = {"id": "o-9", "source_id": "shop-9", "amount": 10_000, "metadata": {"till": 4}}
    result = engine.validate_stacked_discounts(STACK, order=order)
    assert result.order == OrderSummary(
        id="o-9",
        source_id="shop-9",
        amount=10_000,
        metadata={"till": 4},
        discount_amount=500,
        gift_amount=2_000,
        total_discount_amount=2_500,
        total_amount=7_500,
    )
    assert result.order.object == "order"
    stacked = engine.redeem_stacked_discounts(STACK, order=order)
    assert stacked.order == result.order
    assert engine.audit().ok


def test_expired_points_of_a_stacked_card_are_written_off_only_when_the_stack_succeeds(
    engine: Engine, clock: FakeClock
) -> None:
    engine.create_voucher("L", loyalty_card={"points": 100})
    engine.create_voucher("G", gift={"amount": 1_000}, active=False)
    engine.update_voucher_balance("L", 50, expires_at=clock.now() + timedelta(hours=1))
    clock.advance(hours=2)
    before = _state(engine)
    with pytest.raises(VoucherRejected):
        engine.redeem_stacked_discounts([loyalty("L", 30), gift("G", 10)])
    assert _state(engine) == before  # not even the expiry is written
    engine.enable_voucher("G")
    engine.redeem_stacked_discounts([loyalty("L", 30), gift("G", 10)])
    assert [(t.type, t.amount, t.balance) for t in all_transactions(engine, "L")] == [
        (TransactionType.POINTS_ADDITION, 50, 150),
        (TransactionType.POINTS_EXPIRATION, -50, 100),
        (TransactionType.POINTS_REDEMPTION, -30, 70),
    ]
    assert engine.audit().ok


def test_a_stack_that_needs_no_pricing_needs_no_order_amount(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 5_000})
    engine.create_voucher("L", loyalty_card={"points": 1_000})
    engine.create_voucher("U", discount=Discount.unit(1, "sku-1"))
    stack = [gift("G", 700), loyalty("L", 10), voucher("U")]
    result = engine.validate_stacked_discounts(stack)
    assert result.valid
    assert result.order == OrderSummary(gift_amount=700, total_discount_amount=700)
    stacked = engine.redeem_stacked_discounts(stack)
    assert [c.amount for c in stacked.redemptions] == [700, 10, 0]
    assert stacked.parent_redemption.order is None
    assert engine.audit().ok


def test_a_stacked_redemption_records_a_parent_and_one_child_per_voucher_as_given(
    engine: Engine, clock: FakeClock
) -> None:
    _stack_book(engine)
    ids = {code: engine.get_voucher(code).id for code in "DGL"}
    order = {"id": "o-1", "source_id": "shop-1", "amount": 10_000, "metadata": {"till": 3}}
    customer = {"id": "cust_1", "source_id": "alice@example.com", "metadata": {"tier": "gold"}}
    clock.advance(minutes=5)
    # L named by its id: the child is still the voucher's, the request names it as given
    stack = [voucher("D"), gift("G", 2_000), loyalty(ids["L"], 300)]
    stacked = engine.redeem_stacked_discounts(
        stack, order=order, customer=customer, metadata={"channel": "pos"}
    )

    parent = stacked.parent_redemption
    assert REDEMPTION_ID.fullmatch(parent.id)
    assert (parent.status, parent.result, parent.object) == (
        RedemptionStatus.SUCCEEDED,
        "SUCCESS",
        "redemption",
    )
    assert parent.amount == 500 + 2_000
    assert parent.date == clock.now()
    assert parent.redemptions == tuple(c.id for c in stacked.redemptions)
    assert parent.voucher_ids == (ids["D"], ids["G"], ids["L"])
    assert parent.order == Order(id="o-1", source_id="shop-1", amount=10_000, metadata={"till": 3})
    assert parent.customer == Customer(
        id="cust_1", source_id="alice@example.com", metadata={"tier": "gold"}
    )
    assert parent.metadata == {"channel": "pos"}
    assert (parent.session_key, parent.rollback_id) == (None, None)
    assert (parent.failure_code, parent.failure_message, parent.failed_redeemable) == (
        None,
        None,
        None,
    )
    assert engine.get_parent_redemption(parent.id) == parent

    d, g, lo = stacked.redemptions
    assert [(c.voucher_code, c.voucher_type, c.amount) for c in stacked.redemptions] == [
        ("D", VoucherType.DISCOUNT_VOUCHER, 500),
        ("G", VoucherType.GIFT_VOUCHER, 2_000),
        ("L", VoucherType.LOYALTY_CARD, 300),
    ]
    for child in stacked.redemptions:
        assert REDEMPTION_ID.fullmatch(child.id)
        assert child.id != parent.id
        assert child.status is RedemptionStatus.SUCCEEDED
        assert child.parent_id == parent.id
        assert child.date == clock.now()
        assert (child.order_id, child.order_amount) == ("o-1", 10_000)
        assert child.order == parent.order
        assert (child.order_source_id, child.order_metadata) == ("shop-1", {"till": 3})
        assert child.customer == parent.customer
        assert (child.customer_id, child.customer_source_id) == ("cust_1", "alice@example.com")
        assert child.metadata == {"channel": "pos"}
        assert engine.get_redemption(child.id) == child
        assert engine.list_redemptions(child.voucher_code) == (child,)
    assert d.transaction_id is None
    [g_tx] = all_transactions(engine, "G")
    [l_tx] = all_transactions(engine, "L")
    assert (g_tx.id, g_tx.type, g_tx.amount) == (
        g.transaction_id,
        TransactionType.CREDITS_REDEMPTION,
        -2_000,
    )
    assert (l_tx.id, l_tx.type, l_tx.amount) == (
        lo.transaction_id,
        TransactionType.POINTS_REDEMPTION,
        -300,
    )
    assert g_tx.details is not None and g_tx.details["redemption"]["id"] == g.id

    assert (engine.get_voucher("D").redeemed_quantity, engine.get_voucher("D").redeemed_amount) == (
        1,
        500,
    )
    assert (_balance(engine, "G"), _balance(engine, "L")) == (3_000, 700)
    assert _parents(engine) == [parent]
    assert engine.audit().ok


# --- every failure position ---------------------------------------------------------------------

FUTURE = START + timedelta(days=1)
PAST = START - timedelta(days=1)

#: (position in STACK, the error key, what breaks the book)
FAILURES: list[Any] = [
    pytest.param(0, "voucher_disabled", {"D": {"active": False}}, id="1st-disabled"),
    pytest.param(0, "voucher_not_active", {"D": {"start_date": FUTURE}}, id="1st-not-active"),
    pytest.param(0, "voucher_expired", {"D": {"expiration_date": PAST}}, id="1st-expired"),
    pytest.param(
        0,
        "quantity_exceeded",
        {"D": {"quantity": 1, "redeemed_quantity": 1}},
        id="1st-quantity-exceeded",
    ),
    pytest.param(1, "voucher_disabled", {"G": {"active": False}}, id="2nd-disabled"),
    pytest.param(1, "voucher_expired", {"G": {"expiration_date": PAST}}, id="2nd-expired"),
    pytest.param(
        1, "gift_amount_exceeded", {"G": {"gift": {"amount": 1_999}}}, id="2nd-gift-amount"
    ),
    pytest.param(
        2,
        "loyalty_card_points_exceeded",
        {"L": {"loyalty_card": {"points": 299}}},
        id="3rd-loyalty-points",
    ),
    pytest.param(2, "voucher_disabled", {"L": {"active": False}}, id="3rd-disabled"),
    pytest.param(
        2,
        "quantity_exceeded",
        {"L": {"quantity": 1, "redeemed_quantity": 1}},
        id="3rd-quantity-exceeded",
    ),
]


@pytest.mark.parametrize(("position", "key", "breaks"), FAILURES)
def test_a_stack_failing_at_any_position_records_one_failed_parent_and_changes_nothing_else(
    engine: Engine, position: int, key: str, breaks: dict[str, dict[str, Any]]
) -> None:
    _stack_book(engine, **breaks)
    code = "DGL"[position]
    before = _state(engine)

    # the validation answers for each redeemable and, invalid, locks nothing
    result = engine.validate_stacked_discounts(STACK, order=ORDER, session={"key": "till"})
    assert result.valid is False
    expected: list[tuple[RedeemableStatus, str | None]] = [(APPLICABLE, None)] * 3
    expected[position] = (INAPPLICABLE, key)
    assert _statuses(result.redeemables) == expected
    assert result.error is not None and result.error.key == key
    assert result.inapplicable_redeemables == (result.redeemables[position],)
    assert (result.sessions, result.session_key) == ((), None)
    assert _state(engine) == before
    assert _parents(engine) == []

    with pytest.raises(VoucherRejected) as info:
        engine.redeem_stacked_discounts(STACK, order=ORDER, metadata={"m": 1})
    error = info.value
    assert (error.key, error.resource_id, error.resource_type) == (key, code, "voucher")
    [failed] = _parents(engine)
    assert failed.id in (error.details or "")
    assert REDEMPTION_ID.fullmatch(failed.id)
    assert (failed.status, failed.result) == (RedemptionStatus.FAILED, "FAILURE")
    assert (failed.failure_code, failed.failure_message) == (key, error.message)
    assert failed.failed_redeemable == code
    assert (failed.amount, failed.redemptions, failed.voucher_ids) == (0, (), ())
    assert failed.order == Order(id="o-1", amount=10_000)
    assert failed.metadata == {"m": 1}
    assert engine.get_parent_redemption(failed.id) == failed
    assert _state(engine) == before  # no child, FAILED or not, on any voucher
    assert engine.audit().ok


def test_the_error_raised_is_the_first_failing_redeemable_in_request_order(
    engine: Engine,
) -> None:
    # L comes first in the request, D first in pricing order: both fail
    _stack_book(engine, D={"active": False}, L={"loyalty_card": {"points": 10}})
    stack = [loyalty("L", 300), gift("G", 100), voucher("D")]
    result = engine.validate_stacked_discounts(stack, order=ORDER)
    assert _statuses(result.redeemables) == [
        (INAPPLICABLE, "loyalty_card_points_exceeded"),
        (APPLICABLE, None),
        (INAPPLICABLE, "voucher_disabled"),
    ]
    assert result.error is not None and result.error.key == "loyalty_card_points_exceeded"
    with pytest.raises(VoucherRejected) as info:
        engine.redeem_stacked_discounts(stack, order=ORDER)
    assert info.value.key == "loyalty_card_points_exceeded"
    [failed] = _parents(engine)
    assert (failed.failure_code, failed.failed_redeemable) == ("loyalty_card_points_exceeded", "L")
    assert engine.audit().ok


def test_a_failed_parent_names_the_failing_redeemable_as_the_request_gave_it(
    engine: Engine,
) -> None:
    _stack_book(engine, G={"active": False})
    g_id = engine.get_voucher("G").id
    with pytest.raises(VoucherRejected):
        engine.redeem_stacked_discounts([voucher("D"), gift(g_id, 100)], order=ORDER)
    [failed] = _parents(engine)
    assert failed.failed_redeemable == g_id
    assert engine.audit().ok


def test_an_unknown_voucher_in_a_stack_is_inapplicable_not_found_and_a_redemption_records_nothing(
    engine: Engine,
) -> None:
    _stack_book(engine)
    stack = [voucher("D"), voucher("NOPE"), gift("G", 100)]
    result = engine.validate_stacked_discounts(stack, order=ORDER, session=True)
    assert _statuses(result.redeemables) == [
        (APPLICABLE, None),
        (INAPPLICABLE, "not_found"),
        (APPLICABLE, None),
    ]
    assert result.redeemables[1].id == "NOPE"
    assert result.error is not None and result.error.key == "not_found"
    assert result.sessions == ()
    before = _state(engine)
    with pytest.raises(NotFound) as info:
        engine.redeem_stacked_discounts(stack, order=ORDER)
    assert info.value.resource_id == "NOPE"
    assert _state(engine) == before
    assert _parents(engine) == []  # not even a FAILED parent
    assert engine.audit().ok


def test_a_soft_deleted_voucher_in_a_stack_is_not_found_and_nothing_is_recorded(
    engine: Engine,
) -> None:
    _stack_book(engine)
    engine.delete_voucher("G")
    result = engine.validate_stacked_discounts(STACK, order=ORDER)
    assert _statuses(result.redeemables)[1] == (INAPPLICABLE, "not_found")
    before = _state(engine)
    with pytest.raises(NotFound):
        engine.redeem_stacked_discounts(STACK, order=ORDER)
    assert _state(engine) == before
    assert _parents(engine) == []
    assert engine.audit().ok


# --- limits -------------------------------------------------------------------------------------


def test_an_engine_has_voucherify_s_default_stacking_rules() -> None:
    with Engine() as engine:
        assert engine.stacking_rules == StackingRules(
            redeemables_limit=30, applicable_redeemables_limit=5
        )


def test_more_redeemables_than_the_limit_is_refused_before_anything_is_read(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine.create_voucher("G", gift={"amount": 1_000})
    before = _state(engine)
    thirty = [voucher(f"NOPE-{i}") for i in range(30)]
    # thirty are allowed: each answered (not there)
    assert [r.status for r in engine.validate_stacked_discounts(thirty).redeemables] == [
        INAPPLICABLE
    ] * 30

    def no_read(*args: object) -> None:
        raise AssertionError("the store was read")

    monkeypatch.setattr(engine.store, "begin_many", no_read)
    monkeypatch.setattr(engine.store, "begin", no_read)
    for stack in ([*thirty, voucher("G")], [*thirty, gift("G", 10), voucher("X")]):
        with pytest.raises(RedeemablesLimitExceeded) as info:
            engine.validate_stacked_discounts(stack)
        assert isinstance(info.value, InvalidArgument)
        assert (info.value.key, info.value.code) == ("redeemables_limit_exceeded", 400)
        with pytest.raises(RedeemablesLimitExceeded):
            engine.redeem_stacked_discounts(stack, idempotency_key="k")
    monkeypatch.undo()
    assert _state(engine) == before
    assert _parents(engine) == []
    assert engine.audit().ok


def test_applicable_redeemables_past_the_limit_are_skipped_counted_in_pricing_order(
    engine: Engine,
) -> None:
    engine.create_voucher("G", gift={"amount": 5_000})
    for i in range(1, 6):
        engine.create_voucher(f"D{i}", discount=Discount.amount(100))
    # G comes first in the request but is priced after the five discounts: the 6th applicable
    stack = [gift("G"), *[voucher(f"D{i}") for i in range(1, 6)]]
    result = engine.validate_stacked_discounts(stack, order=ORDER, session=True)
    assert _statuses(result.redeemables) == [
        (SKIPPED, "applicable_redeemables_limit_exceeded"),
        *[(APPLICABLE, None)] * 5,
    ]
    assert result.skipped_redeemables == (result.redeemables[0],)
    assert result.redeemables[0].amount == 0
    assert (result.valid, result.sessions) == (False, ())
    assert (result.order.discount_amount, result.order.gift_amount) == (500, 0)
    before = _state(engine)

    with pytest.raises(ApplicableRedeemablesLimitExceeded) as info:
        engine.redeem_stacked_discounts(stack, order=ORDER)
    assert info.value.key == "applicable_redeemables_limit_exceeded"
    [failed] = _parents(engine)
    assert (failed.failure_code, failed.failed_redeemable) == (
        "applicable_redeemables_limit_exceeded",
        "G",
    )
    assert _state(engine) == before

    # an inapplicable redeemable does not count: with D1 disabled, G is the 5th applicable
    engine.disable_voucher("D1")
    result = engine.validate_stacked_discounts(stack, order=ORDER)
    assert _statuses(result.redeemables)[:2] == [
        (APPLICABLE, None),
        (INAPPLICABLE, "voucher_disabled"),
    ]
    # five applicable redeemables are fine
    five = [gift("G"), *[voucher(f"D{i}") for i in range(2, 6)]]
    stacked = engine.redeem_stacked_discounts(five, order=ORDER)
    assert [c.amount for c in stacked.redemptions] == [5_000, 100, 100, 100, 100]
    assert engine.audit().ok


def test_an_engine_applies_the_limits_it_was_configured_with(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(
        clock=clock, seed=SEED, redeemables_limit=2, applicable_redeemables_limit=1
    )
    assert engine.stacking_rules == StackingRules(
        redeemables_limit=2, applicable_redeemables_limit=1
    )
    _stack_book(engine)
    with pytest.raises(RedeemablesLimitExceeded):
        engine.validate_stacked_discounts(STACK, order=ORDER)
    with pytest.raises(RedeemablesLimitExceeded):
        engine.redeem_stacked_discounts(STACK, order=ORDER)
    assert _parents(engine) == []

    # two may be named, one may apply: the gift card, priced after D, is skipped
    two = [gift("G", 100), voucher("D")]
    result = engine.validate_stacked_discounts(two, order=ORDER)
    assert _statuses(result.redeemables) == [
        (SKIPPED, "applicable_redeemables_limit_exceeded"),
        (APPLICABLE, None),
    ]
    with pytest.raises(ApplicableRedeemablesLimitExceeded):
        engine.redeem_stacked_discounts(two, order=ORDER)
    assert engine.redeem_stacked_discounts([gift("G", 100)]).parent_redemption.amount == 100
    assert engine.audit().ok


def test_a_stack_of_30_vouchers_all_applicable_is_redeemed_and_rolled_back_whole(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(clock=clock, seed=SEED, applicable_redeemables_limit=30)
    engine.create_voucher("G", gift={"amount": 100_000})
    codes = [f"D{i:02}" for i in range(29)]
    for code in codes:
        engine.create_voucher(code, discount=Discount.amount(10), quantity=1)
    stack = [gift("G"), *(voucher(code) for code in codes)]
    result = engine.validate_stacked_discounts(stack, order=ORDER, session=True)
    assert result.valid
    assert (len(result.sessions), result.order.discount_amount) == (30, 290)
    assert (result.order.gift_amount, result.order.total_amount) == (9_710, 0)
    stacked = engine.redeem_stacked_discounts(stack, order=ORDER, session=result.session_key)
    assert len(stacked.redemptions) == 30
    assert engine.store.session_count() == 0
    rollback = engine.rollback_stacked_redemptions(stacked.parent_redemption.id)
    assert len(rollback.rollbacks) == 30
    assert _balance(engine, "G") == 100_000
    assert engine.audit().ok


@pytest.mark.parametrize("name", ["redeemables_limit", "applicable_redeemables_limit"])
@pytest.mark.parametrize("value", [0, 31, -1, "5", True, 5.0, None], ids=repr)
def test_an_engine_with_a_bad_stacking_limit_is_invalid_payload(name: str, value: object) -> None:
    with pytest.raises(InvalidPayload) as info:
        Engine(**{name: value})  # type: ignore[arg-type]
    assert info.value.key == "invalid_payload"
    assert name in info.value.message


@pytest.mark.parametrize("value", [1, 30])
def test_an_engine_accepts_stacking_limits_from_1_to_30(value: int) -> None:
    with Engine(redeemables_limit=value, applicable_redeemables_limit=value) as engine:
        assert engine.stacking_rules == StackingRules(
            redeemables_limit=value, applicable_redeemables_limit=value
        )


# --- no effect ------------------------------------------------------------------------------------


def test_a_gift_card_after_a_full_discount_is_skipped_for_no_effect(engine: Engine) -> None:
    engine.create_voucher("ALL", discount=Discount.percent(100))
    engine.create_voucher("G", gift={"amount": 5_000})
    before = _state(engine)
    for credits in (None, 100):
        stack = [gift("G", credits), voucher("ALL")]
        result = engine.validate_stacked_discounts(stack, order=ORDER)
        assert _statuses(result.redeemables) == [(SKIPPED, "no_effect"), (APPLICABLE, None)]
        assert (result.redeemables[0].amount, result.redeemables[0].order_amount) == (0, 0)
        assert result.valid is False
        assert result.order.total_amount == 0
        with pytest.raises(NoEffect) as info:
            engine.redeem_stacked_discounts(stack, order=ORDER)
        assert info.value.key == "no_effect"
        failed = _parents(engine)[-1]
        assert (failed.failure_code, failed.failed_redeemable) == ("no_effect", "G")
    assert len(_parents(engine)) == 2
    assert _state(engine) == before
    assert engine.audit().ok


def test_an_empty_gift_card_with_something_left_to_pay_is_inapplicable_not_skipped(
    engine: Engine,
) -> None:
    engine.create_voucher("G", gift={"amount": 0})
    result = engine.validate_stacked_discounts([gift("G")], order=ORDER)
    assert _statuses(result.redeemables) == [(INAPPLICABLE, "gift_amount_exceeded")]
    assert engine.audit().ok


# --- one session key for the stack ---------------------------------------------------------------


def _tight_book(engine: Engine) -> None:
    """D may be redeemed once, G holds 3,000 credits, L 400 points: a LOCK of the stack below
    holds every one of them whole."""
    engine.create_voucher("D", discount=Discount.amount(500), quantity=1)
    engine.create_voucher("G", gift={"amount": 3_000})
    engine.create_voucher("L", loyalty_card={"points": 400})


#: G pays min(9,500 owed, 3,000 held): all it has.
TIGHT = [voucher("D"), gift("G"), loyalty("L", 400)]


def test_a_locking_stacked_validation_locks_every_voucher_under_one_key(
    engine: Engine, clock: FakeClock
) -> None:
    _tight_book(engine)
    result = engine.validate_stacked_discounts(
        TIGHT,
        order=ORDER,
        session={"type": "LOCK", "key": "till-1", "ttl": 5, "ttl_unit": "MINUTES"},
    )
    assert result.valid
    assert result.session_key == "till-1"
    assert [(s.key, s.voucher_code, s.credits, s.points) for s in result.sessions] == [
        ("till-1", "D", 0, 0),
        ("till-1", "G", 3_000, 0),
        ("till-1", "L", 0, 400),
    ]
    for session in result.sessions:
        assert session.expires_at == clock.now() + timedelta(minutes=5)
        [listed] = engine.list_sessions(session.voucher_code)
        assert (listed.key, listed.credits, listed.points, listed.expires_at) == (
            session.key,
            session.credits,
            session.points,
            session.expires_at,
        )
    d, g, lo = (engine.get_voucher(code) for code in "DGL")
    assert (d.locked_quantity, g.locked_quantity, lo.locked_quantity) == (1, 1, 1)
    assert (g.locked_credits, lo.locked_points) == (3_000, 400)
    assert engine.audit().ok


def test_a_stacked_lock_without_a_key_gets_one_generated_key_for_every_voucher(
    engine: Engine,
) -> None:
    _tight_book(engine)
    result = engine.validate_stacked_discounts(TIGHT, order=ORDER, session=True)
    assert result.session_key is not None and SESSION_KEY.fullmatch(result.session_key)
    assert {s.key for s in result.sessions} == {result.session_key}
    stacked = engine.redeem_stacked_discounts(
        TIGHT, order=ORDER, session={"key": result.session_key}
    )
    assert stacked.parent_redemption.session_key == result.session_key
    assert all(engine.list_sessions(code) == () for code in "DGL")
    assert engine.audit().ok


def test_a_stacked_lock_holds_the_credits_as_priced_not_as_asked(engine: Engine) -> None:
    engine.create_voucher("P10", discount=Discount.percent(10))
    engine.create_voucher("G", gift={"amount": 20_000})
    result = engine.validate_stacked_discounts(
        [voucher("P10"), gift("G", 9_500)], order=ORDER, session={"key": "k"}
    )
    assert result.valid
    [session] = engine.list_sessions("G")
    assert session.credits == 9_000  # what 10,000 − 10 % leaves to pay
    assert engine.get_voucher("G").locked_credits == 9_000
    assert engine.audit().ok


def test_a_stacked_lock_may_take_over_a_single_lock_of_the_same_key(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 5_000})
    engine.create_voucher("L", loyalty_card={"points": 100})
    assert engine.validate_voucher("G", credits=4_000, session={"key": "k"}).valid
    # the 4,000 held by k count as k's own: 3,000 of them are there for it
    stack = [gift("G", 3_000), loyalty("L", 100)]
    assert engine.validate_stacked_discounts(stack, session={"key": "k"}).valid
    assert [(s.key, s.credits) for s in engine.list_sessions("G")] == [("k", 3_000)]
    assert engine.get_voucher("G").locked_credits == 3_000
    assert engine.audit().ok


def test_the_same_key_again_replaces_each_voucher_s_lock(engine: Engine) -> None:
    _stack_book(engine)
    assert engine.validate_stacked_discounts(STACK, order=ORDER, session={"key": "k"}).valid
    again = [voucher("D"), gift("G", 1_000), loyalty("L", 50)]
    assert engine.validate_stacked_discounts(again, order=ORDER, session={"key": "k"}).valid
    assert [len(engine.list_sessions(code)) for code in "DGL"] == [1, 1, 1]
    assert (engine.get_voucher("G").locked_credits, engine.get_voucher("L").locked_points) == (
        1_000,
        50,
    )
    assert engine.audit().ok


def test_other_callers_see_the_vouchers_of_a_stacked_lock_as_taken(engine: Engine) -> None:
    _tight_book(engine)
    assert engine.validate_stacked_discounts(TIGHT, order=ORDER, session={"key": "till-1"}).valid
    assert engine.validate_voucher("D", order_amount=1_000).error.key == "quantity_exceeded"  # type: ignore[union-attr]
    assert engine.validate_voucher("G", credits=1).error.key == "gift_amount_exceeded"  # type: ignore[union-attr]
    assert engine.validate_voucher("L", points=1).error.key == "loyalty_card_points_exceeded"  # type: ignore[union-attr]
    result = engine.validate_stacked_discounts(TIGHT, order=ORDER)
    assert _statuses(result.redeemables) == [
        (INAPPLICABLE, "quantity_exceeded"),
        (INAPPLICABLE, "gift_amount_exceeded"),
        (INAPPLICABLE, "loyalty_card_points_exceeded"),
    ]
    before = _state(engine)
    with pytest.raises(QuantityExceeded):
        engine.redeem_stacked_discounts(TIGHT, order=ORDER)
    assert _state(engine) == before
    assert engine.audit().ok


def test_the_balance_a_stacked_lock_holds_is_taken_for_other_callers(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 3_000})
    engine.create_voucher("L", loyalty_card={"points": 400})
    stack = [gift("G", 2_000), loyalty("L", 300)]
    assert engine.validate_stacked_discounts(stack, order=ORDER, session={"key": "k"}).valid
    assert engine.validate_voucher("G", credits=1_001).error.key == "gift_amount_exceeded"  # type: ignore[union-attr]
    assert engine.validate_voucher("G", credits=1_000).valid
    assert engine.validate_voucher("L", points=101).error.key == "loyalty_card_points_exceeded"  # type: ignore[union-attr]
    assert engine.validate_voucher("L", points=100).valid
    assert engine.audit().ok


@pytest.mark.parametrize(
    "session", ["till-1", {"key": "till-1"}, {"type": "LOCK", "key": "till-1"}]
)
def test_redeeming_with_the_stack_s_key_uses_and_releases_every_lock(
    engine: Engine, session: Any
) -> None:
    _tight_book(engine)
    assert engine.validate_stacked_discounts(TIGHT, order=ORDER, session={"key": "till-1"}).valid
    # the locks hold the whole quantity of D and all of G and L: counted as the stack's own
    stacked = engine.redeem_stacked_discounts(
        TIGHT, order=ORDER, session={"type": "LOCK", "key": "till-1"}
    )
    assert [c.amount for c in stacked.redemptions] == [500, 3_000, 400]
    assert stacked.parent_redemption.session_key == "till-1"
    assert [c.session_key for c in stacked.redemptions] == ["till-1"] * 3
    assert all(engine.list_sessions(code) == () for code in "DGL")
    assert engine.store.session_count() == 0
    d, g, lo = (engine.get_voucher(code) for code in "DGL")
    assert (d.locked_quantity, g.locked_credits, lo.locked_points) == (0, 0, 0)
    assert (d.redeemed_quantity, _balance(engine, "G"), _balance(engine, "L")) == (1, 0, 0)
    assert engine.audit().ok


def test_a_failed_stacked_redemption_with_the_stack_s_key_keeps_every_lock(
    engine: Engine,
) -> None:
    _tight_book(engine)
    assert engine.validate_stacked_discounts(TIGHT, order=ORDER, session={"key": "till-1"}).valid
    engine.disable_voucher("L")
    before = _state(engine)
    with pytest.raises(VoucherRejected) as info:
        engine.redeem_stacked_discounts(TIGHT, order=ORDER, session="till-1")
    assert info.value.key == "voucher_disabled"
    assert _state(engine) == before
    assert [len(engine.list_sessions(code)) for code in "DGL"] == [1, 1, 1]
    assert engine.audit().ok


def test_an_invalid_locking_stacked_validation_sets_no_session(engine: Engine) -> None:
    _stack_book(engine, L={"active": False})
    before = _state(engine)
    result = engine.validate_stacked_discounts(STACK, order=ORDER, session=True)
    assert result.valid is False
    assert (result.sessions, result.session_key) == ((), None)
    assert _state(engine) == before
    assert all(engine.list_sessions(code) == () for code in "DGL")
    assert engine.audit().ok


def test_an_unknown_session_key_is_no_session(engine: Engine) -> None:
    _tight_book(engine)
    assert engine.validate_stacked_discounts(TIGHT, order=ORDER, session={"key": "till-1"}).valid
    before = _state(engine)
    for session in ("till-2", {"key": "nobody"}, None):
        with pytest.raises(QuantityExceeded):
            engine.redeem_stacked_discounts(TIGHT, order=ORDER, session=session)
    assert _state(engine) == before  # the locks are still there
    assert len(_parents(engine)) == 3
    assert engine.audit().ok


def test_an_expired_session_key_is_no_session(engine: Engine, clock: FakeClock) -> None:
    _tight_book(engine)
    lock = {"key": "till-1", "ttl": 5, "ttl_unit": "MINUTES"}
    assert engine.validate_stacked_discounts(TIGHT, order=ORDER, session=lock).valid
    clock.advance(minutes=5, microseconds=1)
    assert all(engine.list_sessions(code) == () for code in "DGL")
    # another till takes D meanwhile: the expired key holds nothing any more
    assert engine.validate_voucher("D", order_amount=1_000, session={"key": "till-2"}).valid
    with pytest.raises(QuantityExceeded):
        engine.redeem_stacked_discounts(TIGHT, order=ORDER, session="till-1")
    [session] = engine.list_sessions("D")
    assert session.key == "till-2"
    # without the other till's lock, the expired key redeems as no session would
    engine.release_validation_session("D", "till-2")
    stacked = engine.redeem_stacked_discounts(TIGHT, order=ORDER, session="till-1")
    assert stacked.parent_redemption.session_key == "till-1"
    assert engine.audit().ok


# --- rollback of a stack --------------------------------------------------------------------------


def test_rolling_back_a_stack_refunds_every_child_and_marks_parent_and_children_rolled_back(
    engine: Engine, clock: FakeClock
) -> None:
    stacked = _redeemed(engine)
    parent = stacked.parent_redemption
    clock.advance(hours=1)
    rollback = engine.rollback_stacked_redemptions(parent.id, reason="returned")

    pr = rollback.parent_rollback
    assert ROLLBACK_ID.fullmatch(pr.id)
    assert (pr.redemption_id, pr.amount, pr.reason, pr.date) == (
        parent.id,
        -2_500,
        "returned",
        clock.now(),
    )
    assert (pr.object, pr.status, pr.result) == ("redemption_rollback", "SUCCEEDED", "SUCCESS")
    assert [(r.redemption_id, r.voucher_code, r.amount, r.reason) for r in rollback.rollbacks] == [
        (child.id, child.voucher_code, -child.amount, "returned") for child in stacked.redemptions
    ]
    ids = [pr.id, *(r.id for r in rollback.rollbacks)]
    assert len(set(ids)) == 4 and all(ROLLBACK_ID.fullmatch(i) for i in ids)

    rolled = engine.get_parent_redemption(parent.id)
    assert rolled.status is RedemptionStatus.ROLLED_BACK
    assert rolled.rollback_id == pr.id
    assert (rolled.amount, rolled.redemptions, rolled.order) == (
        parent.amount,
        parent.redemptions,
        parent.order,
    )
    for child, child_rollback in zip(stacked.redemptions, rollback.rollbacks, strict=True):
        now = engine.get_redemption(child.id)
        assert now.status is RedemptionStatus.ROLLED_BACK
        assert (now.rollback_id, now.parent_id, now.amount) == (
            child_rollback.id,
            parent.id,
            child.amount,
        )

    d = engine.get_voucher("D")
    assert (d.redeemed_quantity, d.redeemed_amount) == (0, 0)
    g, lo = engine.get_voucher("G"), engine.get_voucher("L")
    assert (g.redeemed_quantity, g.redeemed_amount, _balance(engine, "G")) == (0, 0, 5_000)
    assert (lo.redeemed_quantity, lo.redeemed_points, _balance(engine, "L")) == (0, 0, 1_000)
    _, g_refund = all_transactions(engine, "G")
    _, l_refund = all_transactions(engine, "L")
    assert (g_refund.type, g_refund.amount, g_refund.balance) == (
        TransactionType.CREDITS_REFUND,
        2_000,
        5_000,
    )
    assert (l_refund.type, l_refund.amount, l_refund.balance) == (
        TransactionType.POINTS_REFUND,
        300,
        1_000,
    )
    assert (g_refund.id, l_refund.id) == (
        rollback.rollbacks[1].transaction_id,
        rollback.rollbacks[2].transaction_id,
    )
    assert g_refund.reason == "returned"
    assert g_refund.details is not None
    assert g_refund.details["rollback"]["id"] == rollback.rollbacks[1].id
    assert rollback.rollbacks[0].transaction_id is None
    assert engine.audit().ok


def test_a_stack_rolled_back_twice_is_already_rolled_back_and_changes_nothing(
    engine: Engine,
) -> None:
    parent = _redeemed(engine).parent_redemption
    engine.rollback_stacked_redemptions(parent.id)
    before, parents = _state(engine), _parents(engine)
    with pytest.raises(AlreadyRolledBack) as info:
        engine.rollback_stacked_redemptions(parent.id)
    assert (info.value.key, info.value.resource_id) == ("already_rolled_back", parent.id)
    assert (_state(engine), _parents(engine)) == (before, parents)
    assert engine.audit().ok


def test_a_failed_stack_cannot_be_rolled_back(engine: Engine) -> None:
    _stack_book(engine, G={"active": False})
    with pytest.raises(VoucherRejected):
        engine.redeem_stacked_discounts(STACK, order=ORDER)
    [failed] = _parents(engine)
    before = _state(engine)
    with pytest.raises(InvalidRedemption) as info:
        engine.rollback_stacked_redemptions(failed.id)
    assert info.value.key == "invalid_redemption"
    assert (_state(engine), _parents(engine)) == (before, [failed])
    assert engine.audit().ok


def test_an_unknown_stacked_redemption_is_not_found(engine: Engine) -> None:
    for call in (engine.rollback_stacked_redemptions, engine.get_parent_redemption):
        with pytest.raises(NotFound) as info:
            call("r_" + "x" * 32)
        assert (info.value.resource_type, info.value.code) == ("redemption", 404)
    assert engine.audit().ok


def test_a_child_cannot_be_rolled_back_alone_nor_read_as_a_parent(engine: Engine) -> None:
    stacked = _redeemed(engine)
    before, parents = _state(engine), _parents(engine)
    for child in stacked.redemptions:
        with pytest.raises(InvalidRedemption) as info:
            engine.rollback_redemption(child.id)
        assert info.value.key == "invalid_redemption"
        with pytest.raises(NotFound):
            engine.rollback_stacked_redemptions(child.id)
        with pytest.raises(NotFound):
            engine.get_parent_redemption(child.id)
    assert (_state(engine), _parents(engine)) == (before, parents)
    assert engine.audit().ok


def test_a_child_of_a_rolled_back_or_old_stack_is_still_refused_as_a_child(
    engine: Engine, clock: FakeClock
) -> None:
    stacked = _redeemed(engine)
    engine.rollback_stacked_redemptions(stacked.parent_redemption.id)
    clock.set(datetime(2027, 1, 1, tzinfo=UTC))  # past the rollback window as well
    for child in stacked.redemptions:
        with pytest.raises(InvalidRedemption) as info:
            engine.rollback_redemption(child.id)
        assert stacked.parent_redemption.id in info.value.message
    assert engine.audit().ok


def test_the_error_of_a_failed_stack_names_the_failed_parent(engine: Engine) -> None:
    _stack_book(engine, D={"active": False})
    with pytest.raises(VoucherDisabled) as info:
        engine.redeem_stacked_discounts(STACK, order=ORDER)
    [failed] = _parents(engine)
    assert info.value.parent_redemption_id == failed.id
    assert failed.status is RedemptionStatus.FAILED
    assert VoucherDisabled("x").parent_redemption_id is None  # only a failed stack sets it


def test_a_stack_is_rolled_back_until_3_calendar_months_after_and_not_one_microsecond_later(
    engine: Engine, clock: FakeClock
) -> None:
    _stack_book(engine)
    on_time = engine.redeem_stacked_discounts(STACK, order=ORDER).parent_redemption
    late = engine.redeem_stacked_discounts(STACK, order=ORDER).parent_redemption
    clock.set(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))  # START + 3 calendar months
    engine.rollback_stacked_redemptions(on_time.id)
    clock.advance_us(1)
    before, parents = _state(engine), _parents(engine)
    with pytest.raises(RollbackWindowExceeded) as info:
        engine.rollback_stacked_redemptions(late.id)
    assert info.value.key == "rollback_window_exceeded"
    assert (_state(engine), _parents(engine)) == (before, parents)
    assert engine.get_parent_redemption(late.id).status is RedemptionStatus.SUCCEEDED
    assert engine.audit().ok


def test_a_stack_with_a_soft_deleted_voucher_is_not_found_and_nothing_changes(
    engine: Engine,
) -> None:
    stacked = _redeemed(engine)
    engine.delete_voucher("L")
    before, parents = _state(engine), _parents(engine)
    with pytest.raises(NotFound):
        engine.rollback_stacked_redemptions(stacked.parent_redemption.id)
    assert (_state(engine), _parents(engine)) == (before, parents)
    for child in stacked.redemptions:
        assert engine.get_redemption(child.id).status is RedemptionStatus.SUCCEEDED
    assert engine.audit().ok


def test_a_stack_is_rolled_back_whole_even_with_a_disabled_or_expired_voucher_in_it(
    engine: Engine, clock: FakeClock
) -> None:
    _stack_book(engine, D={"expiration_date": START + timedelta(days=1)})
    parent = engine.redeem_stacked_discounts(STACK, order=ORDER).parent_redemption
    clock.advance(days=2)
    engine.disable_voucher("G")
    rollback = engine.rollback_stacked_redemptions(parent.id)
    assert [r.amount for r in rollback.rollbacks] == [-500, -2_000, -300]
    assert (_balance(engine, "G"), _balance(engine, "L")) == (5_000, 1_000)
    assert engine.get_voucher("D").redeemed_quantity == 0
    assert engine.audit().ok


def test_a_rolled_back_stack_frees_what_it_used(engine: Engine) -> None:
    _tight_book(engine)
    parent = engine.redeem_stacked_discounts(TIGHT, order=ORDER).parent_redemption
    assert engine.validate_stacked_discounts(TIGHT, order=ORDER).valid is False
    engine.rollback_stacked_redemptions(parent.id)
    assert engine.validate_stacked_discounts(TIGHT, order=ORDER).valid
    again = engine.redeem_stacked_discounts(TIGHT, order=ORDER)
    assert [c.amount for c in again.redemptions] == [500, 3_000, 400]
    assert engine.audit().ok


# --- idempotent replays ---------------------------------------------------------------------------


def test_a_keyed_stacked_redemption_replays_whole_and_changes_nothing(
    engine: Engine, clock: FakeClock
) -> None:
    _stack_book(engine)
    request: dict[str, Any] = {
        "order": {"id": "o-1", "source_id": "s-1", "amount": 10_000, "metadata": {"a": [1]}},
        "customer": {"id": "cust_1", "source_id": "c-1", "metadata": {"b": {"c": 2}}},
        "metadata": {"till": 3},
    }
    first = engine.redeem_stacked_discounts(STACK, idempotency_key="k", **request)
    before, parents = _state(engine), _parents(engine)
    clock.advance(minutes=5)
    for _ in range(2):
        again = engine.redeem_stacked_discounts(STACK, idempotency_key="k", **request)
        assert again == first
        assert (_state(engine), _parents(engine)) == (before, parents)
    # after its rollback too, the key answers with the original redemption
    engine.rollback_stacked_redemptions(first.parent_redemption.id)
    before, parents = _state(engine), _parents(engine)
    again = engine.redeem_stacked_discounts(STACK, idempotency_key="k", **request)
    assert again == first
    assert (_state(engine), _parents(engine)) == (before, parents)
    assert engine.audit().ok


#: Changes to the keyed request of ``test_a_stacked_key_with_a_different_request…``.
CHANGES: list[dict[str, Any]] = [
    {"redeemables": [voucher("D"), gift("G", 2_001), loyalty("L", 300)]},
    {"redeemables": [gift("G", 2_000), voucher("D"), loyalty("L", 300)]},
    {"redeemables": STACK[:2]},
    {"order": {"id": "o-1", "amount": 10_001}},
    {"order": {"id": "o-2", "amount": 10_000}},
    {"order": {"id": "o-1", "amount": 10_000, "metadata": {"a": 1}}},
    {"customer": {"source_id": "c-2"}},
    {"customer": None},
    {"metadata": {"m": 2}},
    {"session": "s"},
]


def test_a_stacked_key_with_a_different_request_is_idempotency_key_reused(
    engine: Engine,
) -> None:
    request: dict[str, Any] = {
        "redeemables": STACK,
        "order": ORDER,
        "customer": {"source_id": "c-1"},
        "metadata": {"m": 1},
    }
    _stack_book(engine)
    first = engine.redeem_stacked_discounts(idempotency_key="k", **request)
    before, parents = _state(engine), _parents(engine)
    for change in CHANGES:
        with pytest.raises(IdempotencyKeyReused) as info:
            engine.redeem_stacked_discounts(idempotency_key="k", **{**request, **change})
        assert (info.value.key, info.value.code) == ("idempotency_key_reused", 409), change
        assert (_state(engine), _parents(engine)) == (before, parents)  # not a FAILED parent
    assert engine.redeem_stacked_discounts(idempotency_key="k", **request) == first
    # the same request by another key is a new request
    assert engine.redeem_stacked_discounts(idempotency_key="k2", **request) != first
    assert engine.audit().ok


def test_a_failed_stacked_redemption_keeps_nothing_under_its_key(engine: Engine) -> None:
    _stack_book(engine, G={"gift": {"amount": 1_000}})
    with pytest.raises(GiftAmountExceeded):
        engine.redeem_stacked_discounts(STACK, order=ORDER, idempotency_key="k")
    [failed] = _parents(engine)
    engine.update_voucher_balance("G", 1_000)
    stacked = engine.redeem_stacked_discounts(STACK, order=ORDER, idempotency_key="k")
    assert stacked.parent_redemption.status is RedemptionStatus.SUCCEEDED
    assert _parents(engine) == sorted([failed, stacked.parent_redemption], key=lambda p: p.id)
    assert engine.redeem_stacked_discounts(STACK, order=ORDER, idempotency_key="k") == stacked
    assert len(_parents(engine)) == 2
    assert engine.audit().ok


def test_a_keyed_stacked_rollback_replays_and_changes_nothing(engine: Engine) -> None:
    parent = _redeemed(engine).parent_redemption
    first = engine.rollback_stacked_redemptions(parent.id, reason="r", idempotency_key="undo")
    before, parents = _state(engine), _parents(engine)
    assert (
        engine.rollback_stacked_redemptions(parent.id, reason="r", idempotency_key="undo") == first
    )
    assert (_state(engine), _parents(engine)) == (before, parents)
    with pytest.raises(IdempotencyKeyReused):
        engine.rollback_stacked_redemptions(parent.id, reason="other", idempotency_key="undo")
    with pytest.raises(AlreadyRolledBack):  # a new key is a new request
        engine.rollback_stacked_redemptions(parent.id, reason="r", idempotency_key="undo-2")
    assert (_state(engine), _parents(engine)) == (before, parents)
    assert engine.audit().ok


# --- determinism ----------------------------------------------------------------------------------


def _script(engine: Engine, clock: FakeClock) -> list[Any]:
    """A fixed stacked workload; returns everything it observed."""
    seen: list[Any] = []
    _stack_book(engine)
    engine.create_voucher("P10", discount=Discount.percent(10))
    stack = [voucher("P10"), *STACK]
    seen.append(engine.validate_stacked_discounts(stack, order=ORDER, session=True))
    clock.advance(minutes=1)
    seen.append(
        engine.redeem_stacked_discounts(
            stack, order=ORDER, session=seen[-1].session_key, idempotency_key="k"
        )
    )
    try:
        engine.redeem_stacked_discounts([*stack, voucher("NOPE")], order=ORDER)
    except VoucherError as exc:
        seen.append(exc.as_dict())
    try:
        engine.redeem_stacked_discounts([gift("G", 9_999), voucher("D")], order=ORDER)
    except VoucherError as exc:
        seen.append(exc.as_dict())
    clock.advance(minutes=1)
    seen.append(engine.rollback_stacked_redemptions(seen[1].parent_redemption.id))
    seen.append(engine.redeem_stacked_discounts(STACK, order=ORDER))
    seen.append(_parents(engine))
    seen.append(state_snapshot(engine, include_failed=True))
    return seen


def test_same_seed_gives_the_same_stacked_ids_and_logs_as_the_memory_store(
    make_engine: MakeEngine,
) -> None:
    runs = []
    for on_memory in (False, True):
        clock = FakeClock(START)
        engine = Engine(clock=clock, seed=42) if on_memory else make_engine(clock=clock, seed=42)
        runs.append(_script(engine, clock))
        assert engine.audit().ok
        engine.close()
    assert runs[0] == runs[1]
