"""Loyalty points (README "Loyalty points") — expiring buckets spent soonest-first,
expiry (lazy, swept, and never under a live lock), accrual and its cancellation, transfers
between cards, and idempotent retries of each."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from vouchercore import (
    AlreadyCancelled,
    Engine,
    FakeClock,
    IdempotencyKeyReused,
    InvalidAddBalanceParams,
    InvalidAmount,
    InvalidPayload,
    InvalidVoucher,
    LoyaltyCardPointsExceeded,
    NotFound,
    PointsCancellation,
    PointsTransfer,
    Transaction,
    TransactionType,
)
from vouchercore.domain.snapshots import LoyaltyBalance
from vouchercore.testing import state_snapshot

US = timedelta(microseconds=1)
DAY = timedelta(days=1)


def _card(engine: Engine, code: str) -> LoyaltyBalance:
    card = engine.get_voucher(code).loyalty_card
    assert card is not None
    return card


def _log(engine: Engine, code: str) -> list[Transaction]:
    return list(engine.list_voucher_transactions(code, limit=100, order="id").data)


def _types(engine: Engine, code: str) -> list[tuple[str, int, int]]:
    return [(t.type.value, t.amount, t.balance) for t in _log(engine, code)]


def _lock(engine: Engine, code: str, points: int, key: str, ttl_hours: int) -> None:
    result = engine.validate_voucher(
        code,
        points=points,
        session={"type": "LOCK", "key": key, "ttl": ttl_hours, "ttl_unit": "HOURS"},
    )
    assert result.valid, result.error


@pytest.fixture
def loyal(engine: Engine) -> Engine:
    """A loyalty card ``L`` with 100 points that never expire."""
    engine.create_voucher("L", loyalty_card={"points": 100})
    return engine


# --- buckets and spending order -------------------------------------------------------------


def test_points_added_with_an_expiry_show_as_the_next_expiration(
    loyal: Engine, clock: FakeClock
) -> None:
    soon, later = clock.now() + 2 * DAY, clock.now() + 5 * DAY
    loyal.update_voucher_balance("L", 30, expires_at=later)
    loyal.update_voucher_balance("L", 20, expires_at=soon)
    loyal.update_voucher_balance("L", 5, expires_at=soon)
    card = _card(loyal, "L")
    assert (card.points, card.balance, card.expired_points) == (155, 155, 0)
    assert card.next_expiration_date == soon
    assert card.next_expiration_points == 25


def test_a_card_without_expiring_points_has_no_next_expiration(loyal: Engine) -> None:
    card = _card(loyal, "L")
    assert (card.next_expiration_date, card.next_expiration_points) == (None, None)


def test_redemption_spends_the_soonest_expiring_points_first(
    loyal: Engine, clock: FakeClock
) -> None:
    soon, later = clock.now() + 2 * DAY, clock.now() + 5 * DAY
    loyal.update_voucher_balance("L", 30, expires_at=later)
    loyal.update_voucher_balance("L", 20, expires_at=soon)
    loyal.redeem_voucher("L", points=25)  # all 20 of `soon`, then 5 of `later`
    card = _card(loyal, "L")
    assert (card.balance, card.next_expiration_date, card.next_expiration_points) == (
        125,
        later,
        25,
    )
    clock.set(later)
    card = _card(loyal, "L")
    assert (card.balance, card.expired_points) == (100, 25)  # the 100 without expiry remain


def test_a_removal_spends_the_soonest_expiring_points_first(
    loyal: Engine, clock: FakeClock
) -> None:
    soon = clock.now() + DAY
    loyal.update_voucher_balance("L", 50, expires_at=soon)
    loyal.update_voucher_balance("L", -40)
    assert _card(loyal, "L").next_expiration_points == 10
    clock.set(soon)
    card = _card(loyal, "L")
    assert (card.balance, card.expired_points) == (100, 10)


def test_points_without_expiry_are_spent_last(loyal: Engine, clock: FakeClock) -> None:
    loyal.update_voucher_balance("L", 50, expires_at=clock.now() + DAY)
    loyal.redeem_voucher("L", points=120)  # 50 expiring, then 70 of the 100 without expiry
    card = _card(loyal, "L")
    assert (card.balance, card.next_expiration_date) == (30, None)
    clock.advance(days=2)
    assert _card(loyal, "L").expired_points == 0


# --- expiry ---------------------------------------------------------------------------------


def test_points_expire_exactly_at_their_instant_with_one_transaction_per_bucket(
    loyal: Engine, clock: FakeClock
) -> None:
    first, second = clock.now() + DAY, clock.now() + 2 * DAY
    loyal.update_voucher_balance("L", 30, expires_at=first)
    loyal.update_voucher_balance("L", 20, expires_at=second)
    clock.set(first - US)
    assert _card(loyal, "L").balance == 150
    clock.set(second)  # both are due: two transactions, oldest bucket first
    card = _card(loyal, "L")
    assert (card.balance, card.expired_points, card.next_expiration_date) == (100, 50, None)
    expirations = [t for t in _log(loyal, "L") if t.type is TransactionType.POINTS_EXPIRATION]
    assert [(t.amount, t.balance) for t in expirations] == [(-30, 120), (-20, 100)]
    assert expirations[0].created_at == second  # applied when the card was read
    assert expirations[0].reason is not None and first.isoformat() in expirations[0].reason
    assert loyal.audit().ok


def test_expired_points_are_not_available_to_a_redemption(loyal: Engine, clock: FakeClock) -> None:
    loyal.update_voucher_balance("L", 50, expires_at=clock.now() + DAY)
    clock.advance(days=1)
    with pytest.raises(LoyaltyCardPointsExceeded):
        loyal.redeem_voucher("L", points=120)
    result = loyal.validate_voucher("L", points=100)
    assert result.valid


def test_expire_points_sweeps_every_due_card_once(engine: Engine, clock: FakeClock) -> None:
    due = clock.now() + DAY
    for i in range(5):
        engine.create_voucher(f"L{i}", loyalty_card={"points": 10})
        engine.update_voucher_balance(f"L{i}", 7, expires_at=due if i < 3 else due + DAY)
    assert engine.expire_points() == 0
    clock.set(due)
    assert engine.expire_points() == 21
    assert engine.expire_points() == 0
    assert [_card(engine, f"L{i}").balance for i in range(5)] == [10, 10, 10, 17, 17]
    assert [len(_log(engine, f"L{i}")) for i in range(5)] == [2, 2, 2, 1, 1]
    assert engine.audit().ok


def test_expire_points_never_expires_ahead_of_the_clock(loyal: Engine, clock: FakeClock) -> None:
    loyal.update_voucher_balance("L", 50, expires_at=clock.now() + DAY)
    assert loyal.expire_points(clock.now() + 2 * DAY) == 0
    assert _card(loyal, "L").balance == 150


def test_a_failed_call_leaves_due_points_unexpired_and_a_read_expires_them(
    loyal: Engine, clock: FakeClock
) -> None:
    loyal.update_voucher_balance("L", 50, expires_at=clock.now() + DAY)
    clock.advance(days=1)
    before = len(_log(loyal, "L"))
    with pytest.raises(InvalidAddBalanceParams):
        loyal.update_voucher_balance("L", -101)
    with pytest.raises(LoyaltyCardPointsExceeded):
        loyal.redeem_voucher("L", points=101)
    with pytest.raises(NotFound):
        loyal.release_validation_session("L", "no-such-key")
    assert len(_log(loyal, "L")) == before  # nothing written by the failed calls
    assert _card(loyal, "L").expired_points == 50  # the read applies the expiry
    assert len(_log(loyal, "L")) == before + 1


def test_a_deleted_card_is_never_swept(loyal: Engine, clock: FakeClock) -> None:
    loyal.update_voucher_balance("L", 50, expires_at=clock.now() + DAY)
    loyal.delete_voucher("L")
    clock.advance(days=2)
    assert loyal.expire_points() == 0


def test_a_force_deleted_card_leaves_nothing_to_sweep(loyal: Engine, clock: FakeClock) -> None:
    loyal.update_voucher_balance("L", 50, expires_at=clock.now() + DAY)
    loyal.delete_voucher("L", force=True)
    clock.advance(days=2)
    assert loyal.expire_points() == 0


# --- expiry under live locks ------------------------------------------------------------------


def test_a_live_lock_keeps_its_points_through_their_expiry(
    engine: Engine, clock: FakeClock
) -> None:
    engine.create_voucher("L", loyalty_card={"points": 10})
    engine.update_voucher_balance("L", 50, expires_at=clock.now() + timedelta(hours=1))
    _lock(engine, "L", 40, "cart", ttl_hours=3)  # holds 40 of 60
    clock.advance(hours=1)  # the bucket of 50 is due; the lock needs 40 of the balance
    card = _card(engine, "L")
    assert (card.balance, card.expired_points) == (40, 20)
    assert card.next_expiration_date == clock.now() + timedelta(hours=2)  # the lock's end
    assert card.next_expiration_points == 30
    redemption = engine.redeem_voucher("L", points=40, session_key="cart")
    assert redemption.amount == 40
    card = _card(engine, "L")
    assert (card.balance, card.next_expiration_date) == (0, None)
    assert engine.audit().ok


def test_points_a_lock_kept_expire_when_the_lock_ends(engine: Engine, clock: FakeClock) -> None:
    engine.create_voucher("L", loyalty_card={"points": 0})
    engine.update_voucher_balance("L", 50, expires_at=clock.now() + timedelta(hours=1))
    _lock(engine, "L", 30, "cart", ttl_hours=2)
    clock.advance(hours=1, minutes=30)
    assert _card(engine, "L").balance == 30  # 20 expired, 30 still held
    clock.advance(minutes=30)  # the lock ends: its points expire with it
    card = _card(engine, "L")
    assert (card.balance, card.expired_points) == (0, 50)
    assert engine.list_sessions("L") == ()
    assert engine.audit().ok


def test_a_card_read_late_expires_as_if_on_time(engine: Engine, clock: FakeClock) -> None:
    engine.create_voucher("L", loyalty_card={"points": 0})
    engine.update_voucher_balance("L", 50, expires_at=clock.now() + timedelta(hours=1))
    _lock(engine, "L", 30, "cart", ttl_hours=2)
    clock.advance(hours=5)  # nobody read the card while the bucket or the lock expired
    card = _card(engine, "L")
    assert (card.balance, card.expired_points) == (0, 50)
    assert engine.audit().ok


def test_a_released_lock_lets_its_kept_points_expire_at_the_lock_s_original_end(
    engine: Engine, clock: FakeClock
) -> None:
    engine.create_voucher("L", loyalty_card={"points": 0})
    engine.update_voucher_balance("L", 50, expires_at=clock.now() + timedelta(hours=1))
    _lock(engine, "L", 30, "cart", ttl_hours=2)
    clock.advance(hours=1)
    engine.release_validation_session("L", "cart")
    assert _card(engine, "L").balance == 30
    clock.advance(hours=1)
    assert _card(engine, "L").balance == 0


def test_a_lock_set_after_the_expiry_protects_nothing_that_expired(
    engine: Engine, clock: FakeClock
) -> None:
    engine.create_voucher("L", loyalty_card={"points": 10})
    engine.update_voucher_balance("L", 50, expires_at=clock.now() + timedelta(hours=1))
    clock.advance(hours=1)
    result = engine.validate_voucher("L", points=30, session={"type": "LOCK", "key": "late"})
    assert not result.valid  # 10 left
    assert result.error is not None and result.error.key == "loyalty_card_points_exceeded"


# --- accrual --------------------------------------------------------------------------------


def test_accrual_raises_points_and_balance_with_one_transaction(
    loyal: Engine, clock: FakeClock
) -> None:
    tx = loyal.accrue_points("L", 40, order_id="o-1", source_id="pos-7", reason="purchase")
    assert isinstance(tx, Transaction)
    assert (tx.type, tx.amount, tx.balance) == (TransactionType.POINTS_ACCRUAL, 40, 140)
    assert tx.details == {"order": {"id": "o-1"}}
    assert (tx.source_id, tx.reason, tx.created_at) == ("pos-7", "purchase", clock.now())
    card = _card(loyal, "L")
    assert (card.points, card.balance) == (140, 140)
    assert _log(loyal, "L") == [tx]


def test_accrued_points_with_an_expiry_expire(loyal: Engine, clock: FakeClock) -> None:
    tx = loyal.accrue_points("L", 40, expires_at=clock.now() + DAY)
    clock.advance(days=1)
    card = _card(loyal, "L")
    assert (card.balance, card.expired_points) == (100, 40)
    expired = _log(loyal, "L")[-1]
    assert expired.type is TransactionType.POINTS_EXPIRATION
    assert expired.details == {"accrual": {"id": tx.id}}


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"points": 0}, InvalidAmount),
        ({"points": -5}, InvalidAmount),
        ({"points": 1.5}, InvalidAmount),
        ({"points": True}, InvalidAmount),
        ({"points": 5, "order_id": 7}, InvalidPayload),
        ({"points": 5, "expires_at": datetime(2026, 1, 1)}, InvalidPayload),  # naive
    ],
)
def test_bad_accruals_are_refused_and_change_nothing(
    loyal: Engine, kwargs: dict[str, object], error: type[Exception]
) -> None:
    before = state_snapshot(loyal)
    with pytest.raises(error):
        loyal.accrue_points("L", **kwargs)  # type: ignore[arg-type]
    assert state_snapshot(loyal) == before


def test_accrual_expiring_now_or_earlier_is_invalid(loyal: Engine, clock: FakeClock) -> None:
    with pytest.raises(InvalidPayload, match="expires_at"):
        loyal.accrue_points("L", 5, expires_at=clock.now())


def test_accrual_on_a_gift_card_or_discount_is_invalid_voucher(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 100})
    with pytest.raises(InvalidVoucher):
        engine.accrue_points("G", 5)
    with pytest.raises(NotFound):
        engine.accrue_points("NOPE", 5)


def test_expiry_on_gift_credits_or_on_a_removal_is_invalid(loyal: Engine, clock: FakeClock) -> None:
    loyal.create_voucher("G", gift={"amount": 100})
    with pytest.raises(InvalidPayload):
        loyal.update_voucher_balance("G", 5, expires_at=clock.now() + DAY)
    with pytest.raises(InvalidPayload):
        loyal.update_voucher_balance("L", -5, expires_at=clock.now() + DAY)


# --- cancellation -----------------------------------------------------------------------------


def test_cancelling_an_unspent_accrual_takes_it_all_back(loyal: Engine) -> None:
    tx = loyal.accrue_points("L", 40, order_id="o-1")
    result = loyal.cancel_points_accrual("L", transaction_id=tx.id, reason="returned")
    assert isinstance(result, PointsCancellation)
    assert (result.accrued, result.cancelled, result.not_cancelled) == (40, 40, 0)
    (cancel,) = result.transactions
    assert (cancel.type, cancel.amount, cancel.balance) == (
        TransactionType.POINTS_CANCELLATION,
        -40,
        100,
    )
    assert cancel.related_transaction_id == tx.id
    assert (cancel.details, cancel.reason) == ({"order": {"id": "o-1"}}, "returned")
    card = _card(loyal, "L")
    assert (card.points, card.balance) == (140, 100)  # points counts what was ever added
    assert loyal.audit().ok


def test_cancelling_takes_back_only_what_is_left_of_the_accrual(
    engine: Engine, clock: FakeClock
) -> None:
    engine.create_voucher("L", loyalty_card={"points": 10})
    tx = engine.accrue_points("L", 40, expires_at=clock.now() + DAY)  # spent before the pool
    engine.redeem_voucher("L", points=25)  # 25 of the accrual
    result = engine.cancel_points_accrual("L", transaction_id=tx.id)
    assert (result.accrued, result.cancelled, result.not_cancelled) == (40, 15, 25)
    assert _card(engine, "L").balance == 10


def test_an_accrual_without_expiry_is_spent_after_the_pool(loyal: Engine) -> None:
    tx = loyal.accrue_points("L", 40)
    loyal.redeem_voucher("L", points=110)  # the 100 of the pool, then 10 of the accrual
    result = loyal.cancel_points_accrual("L", transaction_id=tx.id)
    assert (result.cancelled, result.not_cancelled) == (30, 10)
    assert _card(loyal, "L").balance == 0


def test_cancelling_by_order_cancels_each_accrual_of_the_order(loyal: Engine) -> None:
    loyal.accrue_points("L", 10, order_id="o-1")
    loyal.accrue_points("L", 20, order_id="o-2")
    loyal.accrue_points("L", 30, order_id="o-1")
    result = loyal.cancel_points_accrual("L", order_id="o-1")
    assert (result.accrued, result.cancelled) == (40, 40)
    assert [t.amount for t in result.transactions] == [-10, -30]
    assert _card(loyal, "L").balance == 120


def test_a_second_cancellation_is_already_cancelled_and_changes_nothing(loyal: Engine) -> None:
    tx = loyal.accrue_points("L", 40, order_id="o-1")
    loyal.cancel_points_accrual("L", transaction_id=tx.id)
    before = state_snapshot(loyal)
    with pytest.raises(AlreadyCancelled) as info:
        loyal.cancel_points_accrual("L", order_id="o-1")
    assert info.value.key == "already_cancelled"
    with pytest.raises(AlreadyCancelled):
        loyal.cancel_points_accrual("L", transaction_id=tx.id)
    assert state_snapshot(loyal) == before


def test_a_spent_accrual_is_cancelled_with_a_zero_transaction(loyal: Engine) -> None:
    tx = loyal.accrue_points("L", 40, order_id="o-1")
    loyal.redeem_voucher("L", points=140)
    result = loyal.cancel_points_accrual("L", transaction_id=tx.id)
    assert (result.cancelled, result.not_cancelled) == (0, 40)
    assert [t.amount for t in result.transactions] == [0]
    with pytest.raises(AlreadyCancelled):
        loyal.cancel_points_accrual("L", transaction_id=tx.id)


def test_points_live_locks_hold_are_not_cancelled(loyal: Engine) -> None:
    tx = loyal.accrue_points("L", 40)
    _lock(loyal, "L", 120, "cart", ttl_hours=1)
    result = loyal.cancel_points_accrual("L", transaction_id=tx.id)
    assert (result.cancelled, result.not_cancelled) == (20, 20)
    assert loyal.redeem_voucher("L", points=120, session_key="cart").amount == 120
    assert loyal.audit().ok


def test_unknown_accruals_are_not_found(loyal: Engine) -> None:
    update = loyal.update_voucher_balance("L", 5)
    with pytest.raises(NotFound):
        loyal.cancel_points_accrual("L", transaction_id=update.transaction_id)  # not an accrual
    with pytest.raises(NotFound):
        loyal.cancel_points_accrual("L", order_id="o-404")
    with pytest.raises(InvalidPayload):
        loyal.cancel_points_accrual("L")
    with pytest.raises(InvalidPayload):
        loyal.cancel_points_accrual("L", transaction_id="vtx_1", order_id="o-1")


def test_an_accrual_of_another_card_is_not_found_on_this_one(loyal: Engine) -> None:
    loyal.create_voucher("M", loyalty_card={"points": 0})
    tx = loyal.accrue_points("M", 40)
    with pytest.raises(NotFound):
        loyal.cancel_points_accrual("L", transaction_id=tx.id)


# --- transfers --------------------------------------------------------------------------------


@pytest.fixture
def pair(engine: Engine) -> Engine:
    """Loyalty cards ``A`` (100 points) and ``B`` (10 points)."""
    engine.create_voucher("A", loyalty_card={"points": 100})
    engine.create_voucher("B", loyalty_card={"points": 10})
    return engine


def test_a_transfer_writes_out_and_in_naming_each_other(pair: Engine, clock: FakeClock) -> None:
    a, b = pair.get_voucher("A"), pair.get_voucher("B")
    result = pair.transfer_points("A", "B", 30, reason="gift", source_id="app")
    assert isinstance(result, PointsTransfer)
    out, into = result.source, result.destination
    assert (out.type, out.amount, out.balance, out.voucher_id) == (
        TransactionType.POINTS_TRANSFER_OUT,
        -30,
        70,
        a.id,
    )
    assert (into.type, into.amount, into.balance, into.voucher_id) == (
        TransactionType.POINTS_TRANSFER_IN,
        30,
        40,
        b.id,
    )
    assert out.related_transaction_id == into.id and into.related_transaction_id == out.id
    assert out.id < into.id
    assert out.details == {"destination_voucher": {"id": b.id}}
    assert into.details == {"source_voucher": {"id": a.id}}
    assert (out.reason, into.source_id, into.created_at) == ("gift", "app", clock.now())
    assert (_card(pair, "A").balance, _card(pair, "A").points) == (70, 100)
    assert (_card(pair, "B").balance, _card(pair, "B").points) == (40, 40)
    assert _log(pair, "A") == [out] and _log(pair, "B") == [into]
    assert pair.audit().ok


def test_transferred_points_keep_their_expiry(pair: Engine, clock: FakeClock) -> None:
    soon = clock.now() + DAY
    pair.update_voucher_balance("A", 20, expires_at=soon)
    pair.transfer_points("A", "B", 25)  # the 20 expiring at `soon`, then 5 without expiry
    b = _card(pair, "B")
    assert (b.balance, b.next_expiration_date, b.next_expiration_points) == (35, soon, 20)
    assert _card(pair, "A").next_expiration_date is None
    clock.set(soon)
    assert pair.expire_points() == 20
    assert (_card(pair, "B").balance, _card(pair, "B").expired_points) == (15, 20)


def test_a_transfer_beyond_the_available_points_changes_nothing(pair: Engine) -> None:
    _lock(pair, "A", 80, "cart", ttl_hours=1)
    before = state_snapshot(pair)
    with pytest.raises(LoyaltyCardPointsExceeded) as info:
        pair.transfer_points("A", "B", 21)  # 100 − 80 locked = 20 available
    assert info.value.resource_id == "A"
    assert state_snapshot(pair) == before
    pair.transfer_points("A", "B", 20)
    assert pair.audit().ok


@pytest.mark.parametrize(
    ("source", "destination", "error", "resource"),
    [
        ("A", "NOPE", NotFound, "NOPE"),
        ("NOPE", "B", NotFound, "NOPE"),
        ("A", "G", InvalidVoucher, "G"),
        ("G", "A", InvalidVoucher, "G"),
        ("A", "A", InvalidPayload, None),
    ],
)
def test_bad_transfers_are_refused_and_change_nothing(
    pair: Engine, source: str, destination: str, error: type[Exception], resource: str | None
) -> None:
    pair.create_voucher("G", gift={"amount": 100})
    before = state_snapshot(pair)
    with pytest.raises(error) as info:
        pair.transfer_points(source, destination, 5)
    if resource is not None:
        assert getattr(info.value, "resource_id", None) == resource
    assert state_snapshot(pair) == before


def test_a_transfer_by_id_to_the_same_card_by_code_is_refused(pair: Engine) -> None:
    a = pair.get_voucher("A")
    with pytest.raises(InvalidPayload):
        pair.transfer_points(a.id, "A", 5)


def test_transfers_between_disabled_cards_are_allowed(pair: Engine) -> None:
    pair.disable_voucher("A")
    pair.disable_voucher("B")
    pair.transfer_points("A", "B", 5)
    assert _card(pair, "B").balance == 15


def test_a_transfer_expires_both_cards_first(pair: Engine, clock: FakeClock) -> None:
    pair.update_voucher_balance("A", 50, expires_at=clock.now() + DAY)
    pair.update_voucher_balance("B", 5, expires_at=clock.now() + DAY)
    clock.advance(days=1)
    with pytest.raises(LoyaltyCardPointsExceeded):
        pair.transfer_points("A", "B", 101)
    result = pair.transfer_points("A", "B", 100)
    types = [t.type for t in _log(pair, "A")] + [t.type for t in _log(pair, "B")]
    assert types.count(TransactionType.POINTS_EXPIRATION) == 2
    expired_b = _log(pair, "B")[-2]
    assert expired_b.type is TransactionType.POINTS_EXPIRATION
    assert expired_b.id < result.source.id < result.destination.id
    assert pair.audit().ok


# --- idempotent retries -------------------------------------------------------------------------


def test_a_retried_accrual_returns_the_first_and_accrues_once(loyal: Engine) -> None:
    first = loyal.accrue_points("L", 40, order_id="o-1", idempotency_key="k1")
    again = loyal.accrue_points("L", 40, order_id="o-1", idempotency_key="k1")
    assert again == first
    assert _card(loyal, "L").balance == 140
    with pytest.raises(IdempotencyKeyReused):
        loyal.accrue_points("L", 41, order_id="o-1", idempotency_key="k1")


def test_a_retried_cancellation_returns_the_first(loyal: Engine) -> None:
    tx = loyal.accrue_points("L", 40, order_id="o-1")
    first = loyal.cancel_points_accrual("L", order_id="o-1", idempotency_key="c1")
    again = loyal.cancel_points_accrual("L", order_id="o-1", idempotency_key="c1")
    assert again == first
    with pytest.raises(AlreadyCancelled):
        loyal.cancel_points_accrual("L", order_id="o-1", idempotency_key="c2")
    with pytest.raises(IdempotencyKeyReused):
        loyal.cancel_points_accrual("L", transaction_id=tx.id, idempotency_key="c1")


def test_a_retried_transfer_moves_the_points_once(pair: Engine) -> None:
    first = pair.transfer_points("A", "B", 30, idempotency_key="t1")
    snapshot = state_snapshot(pair)
    again = pair.transfer_points("A", "B", 30, idempotency_key="t1")
    assert again == first
    assert state_snapshot(pair) == snapshot
    with pytest.raises(IdempotencyKeyReused):
        pair.transfer_points("B", "A", 30, idempotency_key="t1")
    with pytest.raises(IdempotencyKeyReused):
        pair.update_voucher_balance("A", 5, idempotency_key="t1")


def test_a_failed_transfer_keeps_nothing_under_its_key(pair: Engine) -> None:
    with pytest.raises(LoyaltyCardPointsExceeded):
        pair.transfer_points("A", "B", 500, idempotency_key="t1")
    pair.update_voucher_balance("A", 400)
    result = pair.transfer_points("A", "B", 500, idempotency_key="t1")
    assert result.points == 500
    assert _card(pair, "B").balance == 510


def test_an_addition_with_expiry_is_part_of_its_request(loyal: Engine, clock: FakeClock) -> None:
    loyal.update_voucher_balance("L", 5, expires_at=clock.now() + DAY, idempotency_key="a1")
    with pytest.raises(IdempotencyKeyReused):
        loyal.update_voucher_balance("L", 5, expires_at=clock.now() + 2 * DAY, idempotency_key="a1")
    with pytest.raises(IdempotencyKeyReused):
        loyal.update_voucher_balance("L", 5, idempotency_key="a1")
