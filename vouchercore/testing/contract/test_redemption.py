"""redeem_voucher (README "Redemption") — effects on success, nothing but a FAILED entry on
failure."""

from __future__ import annotations

import re
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
    RedemptionStatus,
    TransactionType,
    VoucherDisabled,
    VoucherExpired,
    VoucherRejected,
    VoucherType,
)
from vouchercore.testing import state_snapshot

REDEMPTION_ID = re.compile(r"r_[0-9A-Za-z]{32}")


def _lock(engine: Engine, code: str, key: str, **kwargs: object) -> None:
    result = engine.validate_voucher(code, session={"key": key}, **kwargs)  # type: ignore[arg-type]
    assert result.valid, result.error


def _transactions(engine: Engine, code: str) -> list:  # type: ignore[type-arg]
    return list(engine.list_voucher_transactions(code, limit=100, order="id").data)


# --- success ------------------------------------------------------------------------------------


def test_gift_redemption_moves_counters_balance_and_writes_credits_redemption(
    engine: Engine, clock: FakeClock
) -> None:
    v = engine.create_voucher("G", gift={"amount": 5000}, quantity=10)
    r = engine.redeem_voucher(
        "G", credits=1200, order_amount=3000, order_id="ord_1", metadata={"pos": 3}
    )
    assert REDEMPTION_ID.fullmatch(r.id)
    assert r.status is RedemptionStatus.SUCCEEDED
    assert r.result == "SUCCESS"
    assert (r.amount, r.order_amount, r.order_id) == (1200, 3000, "ord_1")
    assert (r.voucher_id, r.voucher_code, r.voucher_type) == (v.id, "G", VoucherType.GIFT_VOUCHER)
    assert r.metadata == {"pos": 3}
    assert r.date == clock.now()
    assert r.failure_code is None

    after = engine.get_voucher("G")
    assert (after.redeemed_quantity, after.redeemed_amount) == (1, 1200)
    assert after.gift is not None
    assert (after.gift.amount, after.gift.balance) == (5000, 3800)

    [tx] = _transactions(engine, "G")
    assert tx.type is TransactionType.CREDITS_REDEMPTION
    assert (tx.amount, tx.balance) == (-1200, 3800)
    assert tx.id == r.transaction_id
    assert tx.voucher_id == v.id
    assert tx.details["redemption"]["id"] == r.id
    assert tx.details["order"]["id"] == "ord_1"
    assert tx.created_at == clock.now()
    assert engine.get_redemption(r.id) == r
    assert engine.list_redemptions("G") == (r,)


def test_loyalty_redemption_spends_points_and_writes_points_redemption(engine: Engine) -> None:
    engine.create_voucher("L", loyalty_card={"points": 500})
    r = engine.redeem_voucher("L", points=120)
    assert r.amount == 120
    after = engine.get_voucher("L")
    assert after.loyalty_card is not None
    assert (after.loyalty_card.points, after.loyalty_card.balance) == (500, 380)
    assert (after.redeemed_quantity, after.redeemed_points, after.redeemed_amount) == (1, 120, 0)
    [tx] = _transactions(engine, "L")
    assert tx.type is TransactionType.POINTS_REDEMPTION
    assert (tx.amount, tx.balance) == (-120, 380)
    assert tx.details["redemption"]["id"] == r.id


def test_discount_redemption_counts_but_writes_no_transaction(engine: Engine) -> None:
    engine.create_voucher("D", discount=Discount.amount(500), quantity=3)
    r = engine.redeem_voucher("D", order_amount=2000)
    assert r.amount == 500
    assert r.transaction_id is None
    after = engine.get_voucher("D")
    assert (after.redeemed_quantity, after.redeemed_amount) == (1, 500)
    assert _transactions(engine, "D") == []


def test_successive_redemptions_accumulate(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    for credits in (100, 200, 300):
        engine.redeem_voucher("G", credits=credits)
    after = engine.get_voucher("G")
    assert (after.redeemed_quantity, after.redeemed_amount) == (3, 600)
    assert [(t.amount, t.balance) for t in _transactions(engine, "G")] == [
        (-100, 900),
        (-200, 700),
        (-300, 400),
    ]


def test_redeeming_the_whole_balance_leaves_zero(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    engine.redeem_voucher("G", credits=1000)
    assert engine.get_voucher("G").gift.balance == 0  # type: ignore[union-attr]
    with pytest.raises(GiftAmountExceeded):
        engine.redeem_voucher("G", credits=1)


def test_redemption_releases_its_session(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1000}, quantity=5)
    _lock(engine, "G", "a", credits=300)
    _lock(engine, "G", "b", credits=100)
    r = engine.redeem_voucher("G", credits=300, session_key="a")
    assert r.session_key == "a"
    assert [s.key for s in engine.list_sessions("G")] == ["b"]
    v = engine.get_voucher("G")
    assert (v.locked_quantity, v.locked_credits) == (1, 100)
    assert engine.audit().ok


def test_redemption_releases_its_session_whatever_it_held(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    _lock(engine, "G", "a", credits=800)
    engine.redeem_voucher("G", credits=50, session_key="a")
    assert engine.list_sessions("G") == ()
    v = engine.get_voucher("G")
    assert v.gift is not None
    assert (v.gift.balance, v.locked_credits) == (950, 0)
    assert engine.validate_voucher("G", credits=950).valid


def test_redeem_with_own_key_succeeds_when_others_locked_everything_else(
    engine: Engine,
) -> None:
    engine.create_voucher("G", gift={"amount": 1000}, quantity=2)
    _lock(engine, "G", "mine", credits=300)
    _lock(engine, "G", "theirs", credits=700)
    with pytest.raises(QuantityExceeded):
        engine.redeem_voucher("G", credits=1)
    r = engine.redeem_voucher("G", credits=300, session_key="mine")
    assert r.status is RedemptionStatus.SUCCEEDED
    with pytest.raises(QuantityExceeded):
        engine.redeem_voucher("G", credits=1)
    assert engine.redeem_voucher("G", credits=700, session_key="theirs").amount == 700
    v = engine.get_voucher("G")
    assert (v.redeemed_quantity, v.gift.balance) == (2, 0)  # type: ignore[union-attr]


def test_redeem_with_own_loyalty_lock_when_others_hold_the_rest(engine: Engine) -> None:
    engine.create_voucher("L", loyalty_card={"points": 100})
    _lock(engine, "L", "mine", points=40)
    _lock(engine, "L", "theirs", points=60)
    with pytest.raises(LoyaltyCardPointsExceeded):
        engine.redeem_voucher("L", points=1)
    assert engine.redeem_voucher("L", points=40, session_key="mine").amount == 40


def test_unknown_session_key_is_treated_as_no_session(engine: Engine) -> None:
    engine.create_voucher("D", discount=Discount.amount(1), quantity=2)
    _lock(engine, "D", "theirs")
    r = engine.redeem_voucher("D", session_key="never-seen")
    assert r.status is RedemptionStatus.SUCCEEDED
    assert r.session_key == "never-seen"
    with pytest.raises(QuantityExceeded):
        engine.redeem_voucher("D", session_key="never-seen")
    assert [s.key for s in engine.list_sessions("D")] == ["theirs"]


def test_expired_session_key_is_treated_as_no_session(engine: Engine, clock: FakeClock) -> None:
    engine.create_voucher("G", gift={"amount": 1000}, quantity=1)
    engine.validate_voucher(
        "G", credits=1000, session={"key": "old", "ttl": 1, "ttl_unit": "MINUTES"}
    )
    clock.advance(minutes=1)
    r = engine.redeem_voucher("G", credits=1000, session_key="old")
    assert r.amount == 1000
    assert engine.list_sessions("G") == ()
    assert engine.audit().ok


def test_expired_own_key_gives_no_advantage_over_other_locks(
    engine: Engine, clock: FakeClock
) -> None:
    engine.create_voucher("D", discount=Discount.amount(1), quantity=1)
    engine.validate_voucher("D", session={"key": "old", "ttl": 1, "ttl_unit": "SECONDS"})
    clock.advance(seconds=1)
    _lock(engine, "D", "new")
    with pytest.raises(QuantityExceeded):
        engine.redeem_voucher("D", session_key="old")


def test_credits_above_the_lock_are_fine_if_available(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    _lock(engine, "G", "a", credits=300)
    assert engine.redeem_voucher("G", credits=1000, session_key="a").amount == 1000


def test_credits_above_the_lock_fail_beyond_what_others_leave(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    _lock(engine, "G", "a", credits=300)
    _lock(engine, "G", "b", credits=500)
    with pytest.raises(GiftAmountExceeded):
        engine.redeem_voucher("G", credits=501, session_key="a")
    assert [s.key for s in engine.list_sessions("G")] == ["a", "b"]
    assert engine.redeem_voucher("G", credits=500, session_key="a").amount == 500


def test_credits_below_the_lock_are_fine(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    _lock(engine, "G", "a", credits=300)
    assert engine.redeem_voucher("G", credits=10, session_key="a").amount == 10
    assert engine.get_voucher("G").gift.balance == 990  # type: ignore[union-attr]


# --- quantity limits ------------------------------------------------------------------------------


def test_quantity_limit_stops_redemptions(engine: Engine) -> None:
    engine.create_voucher("D", discount=Discount.amount(1), quantity=2)
    engine.redeem_voucher("D")
    engine.redeem_voucher("D")
    with pytest.raises(QuantityExceeded) as info:
        engine.redeem_voucher("D")
    assert info.value.key == "quantity_exceeded"
    assert engine.get_voucher("D").redeemed_quantity == 2


def test_rollback_gives_the_quantity_back(engine: Engine) -> None:
    engine.create_voucher("D", discount=Discount.amount(1), quantity=1)
    r = engine.redeem_voucher("D")
    with pytest.raises(QuantityExceeded):
        engine.redeem_voucher("D")
    engine.rollback_redemption(r.id)
    assert engine.redeem_voucher("D").status is RedemptionStatus.SUCCEEDED


def test_single_use_voucher_locked_by_another_cannot_be_redeemed(engine: Engine) -> None:
    engine.create_voucher("D", discount=Discount.amount(1), quantity=1)
    _lock(engine, "D", "a")
    with pytest.raises(QuantityExceeded):
        engine.redeem_voucher("D", session_key="b")


# --- failure: the FAILED entry and nothing else -------------------------------------------------


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("disabled", VoucherDisabled),
        ("expired", VoucherExpired),
        ("quantity", QuantityExceeded),
        ("credits", GiftAmountExceeded),
    ],
)
def test_failed_redemption_changes_nothing_but_logs_a_failed_entry(
    engine: Engine, clock: FakeClock, case: str, error: type[VoucherRejected]
) -> None:
    engine.create_voucher(
        "G",
        gift={"amount": 1000},
        quantity=3,
        expiration_date=clock.now() + timedelta(days=1),
    )
    engine.redeem_voucher("G", credits=100)
    _lock(engine, "G", "other", credits=500)
    if case == "quantity":
        _lock(engine, "G", "third", credits=1)
    if case == "disabled":
        engine.disable_voucher("G")
    if case == "expired":
        clock.advance(days=1, microseconds=1)
        engine.validate_voucher("G", credits=1)  # a read: purges nothing live
    before = state_snapshot(engine)
    logged_before = engine.list_redemptions("G")

    credits = 401 if case == "credits" else 1
    with pytest.raises(error) as info:
        engine.redeem_voucher(
            "G", credits=credits, order_id="ord_9", session_key="mine", metadata={"x": 1}
        )
    assert info.value.key == error.key

    assert state_snapshot(engine) == before
    logged = engine.list_redemptions("G")
    assert logged[: len(logged_before)] == logged_before
    [failed] = logged[len(logged_before) :]
    assert failed.status is RedemptionStatus.FAILED
    assert failed.result == "FAILURE"
    assert failed.failure_code == error.key
    assert failed.failure_message
    assert failed.amount == 0
    assert failed.transaction_id is None
    assert (failed.order_id, failed.session_key, failed.metadata) == ("ord_9", "mine", {"x": 1})
    assert engine.get_redemption(failed.id) == failed
    assert engine.audit().ok


def test_failed_redemption_does_not_release_the_key_it_named(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    _lock(engine, "G", "a", credits=100)
    with pytest.raises(GiftAmountExceeded):
        engine.redeem_voucher("G", credits=5000, session_key="a")
    assert [(s.key, s.credits) for s in engine.list_sessions("G")] == [("a", 100)]


def test_failed_loyalty_redemption_leaves_the_points(engine: Engine) -> None:
    engine.create_voucher("L", loyalty_card={"points": 50})
    before = state_snapshot(engine)
    with pytest.raises(LoyaltyCardPointsExceeded):
        engine.redeem_voucher("L", points=51)
    assert state_snapshot(engine) == before
    [failed] = engine.list_redemptions("L")
    assert failed.failure_code == "loyalty_card_points_exceeded"


def test_redeeming_an_unknown_voucher_is_not_found_and_logs_nothing(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 10})
    before = state_snapshot(engine, include_failed=True)
    with pytest.raises(NotFound) as info:
        engine.redeem_voucher("NOPE", credits=1)
    assert info.value.resource_type == "voucher"
    assert state_snapshot(engine, include_failed=True) == before


def test_redemption_log_lists_every_attempt_oldest_first(engine: Engine) -> None:
    engine.create_voucher("D", discount=Discount.amount(1), quantity=1)
    ok = engine.redeem_voucher("D")
    with pytest.raises(QuantityExceeded):
        engine.redeem_voucher("D")
    logged = engine.list_redemptions("D")
    assert [r.status for r in logged] == [RedemptionStatus.SUCCEEDED, RedemptionStatus.FAILED]
    assert logged[0] == ok


def test_redemption_metadata_is_copied(engine: Engine) -> None:
    engine.create_voucher("D", discount=Discount.amount(1))
    meta: dict[str, object] = {"tags": ["a"]}
    r = engine.redeem_voucher("D", metadata=meta)
    meta["tags"].append("b")  # type: ignore[attr-defined]
    assert engine.get_redemption(r.id).metadata == {"tags": ["a"]}


def test_metadata_of_a_returned_redemption_cannot_change_the_stored_one(engine: Engine) -> None:
    engine.create_voucher("D", discount=Discount.amount(1))
    r = engine.redeem_voucher("D", metadata={"tags": ["a"], "n": 1})
    assert r.metadata is not None
    r.metadata["n"] = 2
    r.metadata["tags"].append("b")
    assert engine.get_redemption(r.id).metadata == {"tags": ["a"], "n": 1}
    assert engine.list_redemptions("D")[0].metadata == {"tags": ["a"], "n": 1}
