"""README "Balance": update_voucher_balance — additions and removals on gift and loyalty cards."""

from __future__ import annotations

from decimal import Decimal

import pytest

from vouchercore import (
    BalanceUpdate,
    Discount,
    Engine,
    FakeClock,
    InvalidAddBalanceParams,
    InvalidAmount,
    InvalidArgument,
    InvalidVoucher,
    NotFound,
    TransactionType,
)
from vouchercore.testing import state_snapshot


def _transactions(engine: Engine, code: str) -> list:  # type: ignore[type-arg]
    return list(engine.list_voucher_transactions(code, limit=100, order="id").data)


# --- additions and removals ----------------------------------------------------------------


def test_adding_gift_credits_raises_amount_and_balance(engine: Engine, clock: FakeClock) -> None:
    v = engine.create_voucher("G", gift={"amount": 1000})
    update = engine.update_voucher_balance("G", 500, source_id="src_1", reason="top-up")
    assert isinstance(update, BalanceUpdate)
    assert (update.amount, update.total, update.balance) == (500, 1500, 1500)
    assert update.type == "gift_voucher"
    assert update.operation_type == "MANUAL"
    assert update.voucher_id == v.id
    after = engine.get_voucher("G")
    assert after.gift is not None
    assert (after.gift.amount, after.gift.balance) == (1500, 1500)
    [tx] = _transactions(engine, "G")
    assert tx.type is TransactionType.CREDITS_ADDITION
    assert (tx.amount, tx.balance) == (500, 1500)
    assert (tx.source_id, tx.reason) == ("src_1", "top-up")
    assert tx.id == update.transaction_id
    assert tx.created_at == clock.now()


def test_removing_gift_credits_lowers_the_balance_but_not_the_amount(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    update = engine.update_voucher_balance("G", -300)
    assert (update.amount, update.total, update.balance) == (-300, 1000, 700)
    assert update.type == "gift_voucher"
    assert update.operation_type == "MANUAL"
    after = engine.get_voucher("G")
    assert after.gift is not None
    assert (after.gift.amount, after.gift.balance) == (1000, 700)
    [tx] = _transactions(engine, "G")
    assert tx.type is TransactionType.CREDITS_REMOVAL
    assert (tx.amount, tx.balance) == (-300, 700)


def test_adding_loyalty_points(engine: Engine) -> None:
    engine.create_voucher("L", loyalty_card={"points": 100})
    update = engine.update_voucher_balance("L", 50, reason="bonus")
    assert (update.amount, update.total, update.balance, update.type) == (
        50,
        150,
        150,
        "loyalty_card",
    )
    assert update.operation_type == "MANUAL"
    after = engine.get_voucher("L")
    assert after.loyalty_card is not None
    assert (after.loyalty_card.points, after.loyalty_card.balance) == (150, 150)
    [tx] = _transactions(engine, "L")
    assert tx.type is TransactionType.POINTS_ADDITION
    assert (tx.amount, tx.balance, tx.reason) == (50, 150, "bonus")


def test_removing_loyalty_points(engine: Engine) -> None:
    engine.create_voucher("L", loyalty_card={"points": 100})
    update = engine.update_voucher_balance("L", -40)
    assert (update.amount, update.total, update.balance, update.type) == (
        -40,
        100,
        60,
        "loyalty_card",
    )
    [tx] = _transactions(engine, "L")
    assert tx.type is TransactionType.POINTS_REMOVAL
    assert (tx.amount, tx.balance) == (-40, 60)


def test_removing_the_whole_balance_is_allowed(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    assert engine.update_voucher_balance("G", -1000).balance == 0


def test_removing_more_than_the_balance_is_rejected_and_changes_nothing(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    before = state_snapshot(engine, include_failed=True)
    with pytest.raises(InvalidAddBalanceParams) as info:
        engine.update_voucher_balance("G", -1001)
    assert info.value.key == "invalid_add_balance_params"
    assert info.value.code == 400
    assert state_snapshot(engine, include_failed=True) == before


def test_adding_to_an_empty_card_makes_it_usable(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 0})
    assert not engine.validate_voucher("G", credits=1).valid
    engine.update_voucher_balance("G", 10)
    assert engine.redeem_voucher("G", credits=10).amount == 10


def test_balance_updates_and_redemptions_interleave_in_the_log(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    engine.update_voucher_balance("G", 500)
    engine.redeem_voucher("G", credits=700)
    engine.update_voucher_balance("G", -100)
    assert [(t.type, t.amount, t.balance) for t in _transactions(engine, "G")] == [
        (TransactionType.CREDITS_ADDITION, 500, 1500),
        (TransactionType.CREDITS_REDEMPTION, -700, 800),
        (TransactionType.CREDITS_REMOVAL, -100, 700),
    ]
    assert engine.audit().ok


# --- locked credits may not be removed ------------------------------------------------------


def test_removal_may_not_take_credits_locked_by_a_session(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    assert engine.validate_voucher("G", credits=400, session={"key": "a"}).valid
    before = state_snapshot(engine, include_failed=True)
    with pytest.raises(InvalidAddBalanceParams):
        engine.update_voucher_balance("G", -601)
    assert state_snapshot(engine, include_failed=True) == before
    assert engine.update_voucher_balance("G", -600).balance == 400
    assert engine.redeem_voucher("G", credits=400, session_key="a").amount == 400


def test_removal_may_not_take_points_locked_by_sessions_of_any_key(engine: Engine) -> None:
    engine.create_voucher("L", loyalty_card={"points": 100})
    assert engine.validate_voucher("L", points=30, session={"key": "a"}).valid
    assert engine.validate_voucher("L", points=20, session={"key": "b"}).valid
    with pytest.raises(InvalidAddBalanceParams):
        engine.update_voucher_balance("L", -51)
    assert engine.update_voucher_balance("L", -50).balance == 50


def test_removal_may_take_credits_once_their_session_expired(
    engine: Engine, clock: FakeClock
) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    result = engine.validate_voucher(
        "G", credits=1000, session={"key": "a", "ttl": 1, "ttl_unit": "MINUTES"}
    )
    assert result.session is not None
    clock.set(result.session.expires_at)
    assert engine.update_voucher_balance("G", -1000).balance == 0
    assert engine.audit().ok


def test_adding_credits_is_allowed_while_sessions_hold_everything(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 100})
    assert engine.validate_voucher("G", credits=100, session={"key": "a"}).valid
    assert engine.update_voucher_balance("G", 50).balance == 150
    assert engine.validate_voucher("G", credits=50).valid


# --- wrong voucher or wrong amount ----------------------------------------------------------


def test_balance_of_a_discount_voucher_is_invalid_voucher(engine: Engine) -> None:
    engine.create_voucher("D", discount=Discount.amount(100))
    before = state_snapshot(engine, include_failed=True)
    for amount in (100, -100):
        with pytest.raises(InvalidVoucher) as info:
            engine.update_voucher_balance("D", amount)
        assert info.value.key == "invalid_voucher"
    assert state_snapshot(engine, include_failed=True) == before


def test_balance_of_an_unknown_voucher_is_not_found(engine: Engine) -> None:
    with pytest.raises(NotFound):
        engine.update_voucher_balance("NOPE", 1)


@pytest.mark.parametrize(
    "amount",
    [0, 1.0, -1.0, 0.5, True, False, "100", Decimal(100), None, 2**63, -(2**63)],
    ids=["zero", "float", "neg-float", "half", "true", "false", "str", "decimal", "none",
         "2**63", "-2**63"],
)  # fmt: skip
def test_bad_balance_amount_is_invalid_amount_and_changes_nothing(
    engine: Engine, amount: object
) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    before = state_snapshot(engine, include_failed=True)
    with pytest.raises(InvalidAmount) as info:
        engine.update_voucher_balance("G", amount)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    assert info.value.key == "invalid_amount"
    assert "amount" in info.value.message
    assert state_snapshot(engine, include_failed=True) == before


def test_addition_that_would_overflow_int64_is_rejected(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 2**63 - 11})
    before = state_snapshot(engine, include_failed=True)
    with pytest.raises(InvalidArgument):
        engine.update_voucher_balance("G", 11)
    assert state_snapshot(engine, include_failed=True) == before
    assert engine.update_voucher_balance("G", 10).total == 2**63 - 1


@pytest.mark.parametrize("field", ["source_id", "reason"])
def test_non_string_source_id_or_reason_is_rejected(engine: Engine, field: str) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    with pytest.raises(InvalidArgument) as info:
        engine.update_voucher_balance("G", 1, **{field: 5})  # type: ignore[arg-type]
    assert field in info.value.message
    assert _transactions(engine, "G") == []
