"""rollback_redemption (README "Rollback") — effects, refunds, errors and the 3-calendar-month
window."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from vouchercore import (
    AlreadyRolledBack,
    Discount,
    Engine,
    FakeClock,
    InvalidRedemption,
    NotFound,
    QuantityExceeded,
    RedemptionStatus,
    RollbackWindowExceeded,
    TransactionType,
)
from vouchercore.testing import state_snapshot

US = timedelta(microseconds=1)
ROLLBACK_ID = re.compile(r"rr_[0-9A-Za-z]{32}")


def _transactions(engine: Engine, code: str) -> list:  # type: ignore[type-arg]
    return list(engine.list_voucher_transactions(code, limit=100, order="id").data)


# --- effects --------------------------------------------------------------------------------------


def test_gift_rollback_restores_counters_and_balance_with_a_credits_refund(
    engine: Engine, clock: FakeClock
) -> None:
    v = engine.create_voucher("G", gift={"amount": 5000}, quantity=3)
    r = engine.redeem_voucher("G", credits=1200, order_id="ord_1")
    clock.advance(hours=1)
    rb = engine.rollback_redemption(r.id, reason="customer returned the goods")

    assert ROLLBACK_ID.fullmatch(rb.id)
    assert (rb.redemption_id, rb.voucher_id, rb.voucher_code) == (r.id, v.id, "G")
    assert rb.amount == -1200
    assert rb.reason == "customer returned the goods"
    assert rb.date == clock.now()

    after = engine.get_voucher("G")
    assert (after.redeemed_quantity, after.redeemed_amount) == (0, 0)
    assert after.gift is not None
    assert (after.gift.amount, after.gift.balance) == (5000, 5000)

    redemption_tx, refund = _transactions(engine, "G")
    assert redemption_tx.type is TransactionType.CREDITS_REDEMPTION
    assert refund.type is TransactionType.CREDITS_REFUND
    assert (refund.amount, refund.balance) == (1200, 5000)
    assert refund.id == rb.transaction_id
    assert refund.reason == "customer returned the goods"
    assert refund.details["redemption"]["id"] == r.id
    assert refund.details["rollback"]["id"] == rb.id
    assert refund.created_at == clock.now()

    rolled = engine.get_redemption(r.id)
    assert rolled.status is RedemptionStatus.ROLLED_BACK
    assert rolled.rollback_id == rb.id
    assert (rolled.amount, rolled.order_id) == (1200, "ord_1")
    assert engine.audit().ok


def test_loyalty_rollback_returns_points_with_a_points_refund(engine: Engine) -> None:
    engine.create_voucher("L", loyalty_card={"points": 500})
    r = engine.redeem_voucher("L", points=200)
    rb = engine.rollback_redemption(r.id)
    assert rb.amount == -200
    assert rb.reason is None
    after = engine.get_voucher("L")
    assert after.loyalty_card is not None
    assert (after.loyalty_card.balance, after.redeemed_points, after.redeemed_quantity) == (
        500,
        0,
        0,
    )
    refund = _transactions(engine, "L")[-1]
    assert refund.type is TransactionType.POINTS_REFUND
    assert (refund.amount, refund.balance) == (200, 500)
    assert refund.details["redemption"]["id"] == r.id
    assert refund.details["rollback"]["id"] == rb.id


def test_discount_rollback_restores_counters_without_a_transaction(engine: Engine) -> None:
    engine.create_voucher("D", discount=Discount.amount(300), quantity=1)
    r = engine.redeem_voucher("D", order_amount=1000)
    rb = engine.rollback_redemption(r.id)
    assert rb.amount == -300
    assert rb.transaction_id is None
    after = engine.get_voucher("D")
    assert (after.redeemed_quantity, after.redeemed_amount) == (0, 0)
    assert _transactions(engine, "D") == []


def test_rollback_reverses_only_its_own_redemption(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    first = engine.redeem_voucher("G", credits=100)
    second = engine.redeem_voucher("G", credits=200)
    engine.rollback_redemption(first.id)
    after = engine.get_voucher("G")
    assert (after.redeemed_quantity, after.redeemed_amount) == (1, 200)
    assert after.gift.balance == 800  # type: ignore[union-attr]
    assert engine.get_redemption(second.id).status is RedemptionStatus.SUCCEEDED


def test_rollback_does_not_touch_live_sessions(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1000}, quantity=5)
    r = engine.redeem_voucher("G", credits=100)
    assert engine.validate_voucher("G", credits=50, session={"key": "k"}).valid
    engine.rollback_redemption(r.id)
    assert [(s.key, s.credits) for s in engine.list_sessions("G")] == [("k", 50)]


# --- errors ---------------------------------------------------------------------------------------


def test_second_rollback_is_already_rolled_back_and_changes_nothing(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    r = engine.redeem_voucher("G", credits=100)
    engine.rollback_redemption(r.id)
    before = state_snapshot(engine, include_failed=True)
    with pytest.raises(AlreadyRolledBack) as info:
        engine.rollback_redemption(r.id)
    assert info.value.key == "already_rolled_back"
    assert info.value.resource_id == r.id
    assert state_snapshot(engine, include_failed=True) == before


def test_failed_redemption_cannot_be_rolled_back(engine: Engine) -> None:
    engine.create_voucher("D", discount=Discount.amount(1), quantity=1)
    engine.redeem_voucher("D")
    with pytest.raises(QuantityExceeded):
        engine.redeem_voucher("D")
    failed = engine.list_redemptions("D")[-1]
    assert failed.status is RedemptionStatus.FAILED
    before = state_snapshot(engine, include_failed=True)
    with pytest.raises(InvalidRedemption) as info:
        engine.rollback_redemption(failed.id)
    assert info.value.key == "invalid_redemption"
    assert state_snapshot(engine, include_failed=True) == before
    assert engine.get_redemption(failed.id).status is RedemptionStatus.FAILED


def test_unknown_redemption_is_not_found(engine: Engine) -> None:
    with pytest.raises(NotFound) as info:
        engine.rollback_redemption("r_" + "x" * 32)
    assert info.value.resource_type == "redemption"
    assert info.value.code == 404


def test_redemption_of_a_soft_deleted_voucher_is_not_found(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    r = engine.redeem_voucher("G", credits=100)
    engine.delete_voucher("G")
    with pytest.raises(NotFound):
        engine.rollback_redemption(r.id)


def test_redemption_of_a_force_deleted_voucher_is_not_found(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    r = engine.redeem_voucher("G", credits=100)
    engine.delete_voucher("G", force=True)
    with pytest.raises(NotFound):
        engine.rollback_redemption(r.id)


def test_rollback_is_allowed_on_a_disabled_voucher(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    r = engine.redeem_voucher("G", credits=100)
    engine.disable_voucher("G")
    engine.rollback_redemption(r.id)
    after = engine.get_voucher("G")
    assert after.gift.balance == 1000  # type: ignore[union-attr]
    assert after.active is False


def test_rollback_is_allowed_on_an_expired_voucher(engine: Engine, clock: FakeClock) -> None:
    engine.create_voucher(
        "G", gift={"amount": 1000}, expiration_date=clock.now() + timedelta(days=1)
    )
    r = engine.redeem_voucher("G", credits=100)
    clock.advance(days=2)
    assert engine.validate_voucher("G", credits=1).error.key == "voucher_expired"  # type: ignore[union-attr]
    engine.rollback_redemption(r.id)
    assert engine.get_voucher("G").gift.balance == 1000  # type: ignore[union-attr]


# --- the 3-calendar-month window ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("redeemed_at", "deadline"),
    [
        (datetime(2026, 3, 15, 9, 30, tzinfo=UTC), datetime(2026, 6, 15, 9, 30, tzinfo=UTC)),
        (datetime(2026, 5, 31, 23, 0, tzinfo=UTC), datetime(2026, 8, 31, 23, 0, tzinfo=UTC)),
        (datetime(2026, 8, 31, 12, 0, tzinfo=UTC), datetime(2026, 11, 30, 12, 0, tzinfo=UTC)),
        (datetime(2026, 11, 30, 10, 0, tzinfo=UTC), datetime(2027, 2, 28, 10, 0, tzinfo=UTC)),
        (datetime(2027, 11, 30, 10, 0, tzinfo=UTC), datetime(2028, 2, 29, 10, 0, tzinfo=UTC)),
        (datetime(2026, 12, 15, 0, 0, tzinfo=UTC), datetime(2027, 3, 15, 0, 0, tzinfo=UTC)),
        (
            datetime(2026, 10, 31, 23, 59, 59, 999_999, tzinfo=UTC),
            datetime(2027, 1, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        ),
    ],
    ids=[
        "mid-month",
        "may-31",
        "aug-31-to-nov-30",
        "nov-30-to-feb-28",
        "leap-feb-29",
        "across-year",
        "last-microsecond",
    ],
)
def test_rollback_is_allowed_at_the_deadline_and_rejected_one_microsecond_later(
    engine: Engine, clock: FakeClock, redeemed_at: datetime, deadline: datetime
) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    clock.set(redeemed_at)
    on_time = engine.redeem_voucher("G", credits=100)
    late = engine.redeem_voucher("G", credits=200)

    clock.set(deadline)
    engine.rollback_redemption(on_time.id)
    assert engine.get_redemption(on_time.id).status is RedemptionStatus.ROLLED_BACK

    clock.set(deadline + US)
    before = state_snapshot(engine, include_failed=True)
    with pytest.raises(RollbackWindowExceeded) as info:
        engine.rollback_redemption(late.id)
    assert info.value.key == "rollback_window_exceeded"
    assert state_snapshot(engine, include_failed=True) == before
    assert engine.get_redemption(late.id).status is RedemptionStatus.SUCCEEDED


def test_rollback_one_day_before_the_clamped_deadline_is_allowed(
    engine: Engine, clock: FakeClock
) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    clock.set(datetime(2026, 11, 30, 10, 0, tzinfo=UTC))
    r = engine.redeem_voucher("G", credits=100)
    clock.set(datetime(2027, 2, 27, 10, 0, tzinfo=UTC))
    engine.rollback_redemption(r.id)


def test_rollback_a_day_after_the_clamped_deadline_is_rejected(
    engine: Engine, clock: FakeClock
) -> None:
    """Redeemed 30 Nov: the deadline is 28 Feb, not 2 March (no overflow into March)."""
    engine.create_voucher("G", gift={"amount": 1000})
    clock.set(datetime(2026, 11, 30, 10, 0, tzinfo=UTC))
    r = engine.redeem_voucher("G", credits=100)
    clock.set(datetime(2027, 3, 1, 10, 0, tzinfo=UTC))
    with pytest.raises(RollbackWindowExceeded):
        engine.rollback_redemption(r.id)


def test_rolled_back_redemption_past_the_window_is_still_already_rolled_back(
    engine: Engine, clock: FakeClock
) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    r = engine.redeem_voucher("G", credits=100)
    engine.rollback_redemption(r.id)
    clock.advance(days=200)
    with pytest.raises(AlreadyRolledBack):
        engine.rollback_redemption(r.id)
