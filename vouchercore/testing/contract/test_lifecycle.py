"""README "Lifecycle": enable, disable, soft and forced delete."""

from __future__ import annotations

import pytest

from vouchercore import (
    Discount,
    DuplicateFound,
    Engine,
    FakeClock,
    GiftAmountExceeded,
    InvalidArgument,
    NotFound,
    RedemptionStatus,
    VoucherDisabled,
)
from vouchercore.testing import state_snapshot

# --- enable / disable -----------------------------------------------------------------------


def test_disable_then_enable_toggles_active(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 100})
    assert engine.disable_voucher("G").active is False
    assert engine.get_voucher("G").active is False
    assert engine.enable_voucher("G").active is True
    assert engine.get_voucher("G").active is True


def test_disable_is_idempotent(engine: Engine, clock: FakeClock) -> None:
    engine.create_voucher("G", gift={"amount": 100})
    clock.advance(minutes=1)
    first = engine.disable_voucher("G")
    assert first.updated_at == clock.now()
    clock.advance(minutes=1)
    second = engine.disable_voucher("G")
    assert second.active is False
    assert second == first
    assert engine.get_voucher("G") == first


def test_enable_is_idempotent(engine: Engine, clock: FakeClock) -> None:
    created = engine.create_voucher("G", gift={"amount": 100})
    clock.advance(minutes=1)
    assert engine.enable_voucher("G") == created
    assert engine.enable_voucher("G") == created


def test_enable_and_disable_work_by_id(engine: Engine) -> None:
    v = engine.create_voucher("G", gift={"amount": 100})
    assert engine.disable_voucher(v.id).active is False
    assert engine.enable_voucher(v.id).active is True


def test_disabled_voucher_cannot_be_redeemed_and_logs_a_failed_attempt(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 100})
    engine.disable_voucher("G")
    with pytest.raises(VoucherDisabled) as info:
        engine.redeem_voucher("G", credits=1)
    assert info.value.key == "voucher_disabled"
    [failed] = engine.list_redemptions("G")
    assert failed.status is RedemptionStatus.FAILED
    assert engine.get_voucher("G").gift.balance == 100  # type: ignore[union-attr]


def test_enable_or_disable_of_unknown_voucher_is_not_found(engine: Engine) -> None:
    with pytest.raises(NotFound):
        engine.enable_voucher("NOPE")
    with pytest.raises(NotFound):
        engine.disable_voucher("NOPE")


# --- soft delete ----------------------------------------------------------------------------


@pytest.fixture
def deleted(engine: Engine) -> dict[str, str]:
    """A gift card with a redemption, a transaction and a session, soft-deleted."""
    v = engine.create_voucher("GONE", gift={"amount": 1000})
    r = engine.redeem_voucher("GONE", credits=100)
    assert engine.validate_voucher("GONE", credits=10, session={"key": "k"}).valid
    engine.create_voucher("KEEP", gift={"amount": 5})
    engine.delete_voucher("GONE")
    return {"id": v.id, "redemption": r.id}


@pytest.mark.parametrize("by", ["code", "id"])
def test_soft_deleted_voucher_is_not_found_by_code_or_id(
    engine: Engine, deleted: dict[str, str], by: str
) -> None:
    ref = "GONE" if by == "code" else deleted["id"]
    with pytest.raises(NotFound) as info:
        engine.get_voucher(ref)
    assert info.value.code == 404
    result = engine.validate_voucher(ref, credits=1)
    assert result.valid is False
    assert result.error is not None
    assert result.error.key == "not_found"


@pytest.mark.parametrize(
    "call",
    [
        lambda e: e.get_voucher("GONE"),
        lambda e: e.enable_voucher("GONE"),
        lambda e: e.disable_voucher("GONE"),
        lambda e: e.delete_voucher("GONE"),
        lambda e: e.redeem_voucher("GONE", credits=1),
        lambda e: e.release_validation_session("GONE", "k"),
        lambda e: e.update_voucher_balance("GONE", 10),
        lambda e: e.list_voucher_transactions("GONE"),
        lambda e: e.list_redemptions("GONE"),
        lambda e: e.list_sessions("GONE"),
    ],
    ids=[
        "get",
        "enable",
        "disable",
        "delete-again",
        "redeem",
        "release",
        "balance",
        "transactions",
        "redemptions",
        "sessions",
    ],
)
def test_soft_deleted_voucher_is_not_found_everywhere(
    engine: Engine, deleted: dict[str, str], call: object
) -> None:
    before = state_snapshot(engine, include_failed=True)
    with pytest.raises(NotFound):
        call(engine)  # type: ignore[operator]
    assert state_snapshot(engine, include_failed=True) == before


def test_soft_deleted_voucher_redemption_cannot_be_rolled_back(
    engine: Engine, deleted: dict[str, str]
) -> None:
    with pytest.raises(NotFound):
        engine.rollback_redemption(deleted["redemption"])


def test_soft_deleted_voucher_is_left_out_of_the_book(
    engine: Engine, deleted: dict[str, str]
) -> None:
    assert list(state_snapshot(engine)) == ["KEEP"]
    assert engine.audit().vouchers == 1


def test_soft_delete_keeps_the_code_reserved(engine: Engine, deleted: dict[str, str]) -> None:
    with pytest.raises(DuplicateFound):
        engine.create_voucher("GONE", discount=Discount.amount(1))


def test_soft_delete_drops_the_sessions(engine: Engine, deleted: dict[str, str]) -> None:
    assert engine.store.session_count() == 0
    assert engine.audit().ok


def test_soft_delete_of_unknown_voucher_is_not_found(engine: Engine) -> None:
    with pytest.raises(NotFound):
        engine.delete_voucher("NOPE")


def test_delete_returns_nothing(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1})
    assert engine.delete_voucher("G") is None  # type: ignore[func-returns-value]  # it is None


def test_soft_delete_by_id(engine: Engine) -> None:
    v = engine.create_voucher("G", gift={"amount": 1})
    engine.delete_voucher(v.id)
    with pytest.raises(NotFound):
        engine.get_voucher("G")


# --- forced delete ----------------------------------------------------------------------------


def test_force_delete_frees_the_code(engine: Engine) -> None:
    old = engine.create_voucher("G", gift={"amount": 1000})
    engine.delete_voucher("G", force=True)
    with pytest.raises(NotFound):
        engine.get_voucher("G")
    new = engine.create_voucher("G", loyalty_card={"points": 5})
    assert new.id != old.id
    assert engine.get_voucher("G").loyalty_card is not None


def test_force_delete_removes_redemptions_and_transactions(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    ok = engine.redeem_voucher("G", credits=100)
    with pytest.raises(GiftAmountExceeded):
        engine.redeem_voucher("G", credits=10_000)
    failed = engine.list_redemptions("G")[-1]
    rolled = engine.redeem_voucher("G", credits=50)
    engine.rollback_redemption(rolled.id)
    engine.update_voucher_balance("G", 5)
    engine.delete_voucher("G", force=True)

    for redemption_id in (ok.id, failed.id, rolled.id):
        with pytest.raises(NotFound) as info:
            engine.get_redemption(redemption_id)
        assert info.value.resource_type == "redemption"
    engine.create_voucher("G", gift={"amount": 7})
    assert engine.list_voucher_transactions("G").data == ()
    assert engine.list_redemptions("G") == ()
    assert engine.audit().ok


def test_force_delete_removes_the_sessions(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    assert engine.validate_voucher("G", credits=10, session={"key": "k"}).valid
    engine.delete_voucher("G", force=True)
    assert engine.store.session_count() == 0
    engine.create_voucher("G", gift={"amount": 1000})
    assert engine.list_sessions("G") == ()
    with pytest.raises(NotFound):
        engine.release_validation_session("G", "k")
    assert engine.audit().ok


def test_force_delete_after_soft_delete_frees_the_code(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    r = engine.redeem_voucher("G", credits=1)
    engine.delete_voucher("G")
    with pytest.raises(DuplicateFound):
        engine.create_voucher("G", gift={"amount": 1})
    engine.delete_voucher("G", force=True)
    with pytest.raises(NotFound):
        engine.get_redemption(r.id)
    assert engine.create_voucher("G", gift={"amount": 1}).gift.balance == 1  # type: ignore[union-attr]


def test_force_delete_of_unknown_voucher_is_not_found(engine: Engine) -> None:
    with pytest.raises(NotFound):
        engine.delete_voucher("NOPE", force=True)


def test_force_delete_twice_is_not_found_the_second_time(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1})
    engine.delete_voucher("G", force=True)
    with pytest.raises(NotFound):
        engine.delete_voucher("G", force=True)


def test_force_delete_leaves_other_vouchers_alone(engine: Engine) -> None:
    engine.create_voucher("A", gift={"amount": 100})
    engine.create_voucher("B", gift={"amount": 100})
    ra = engine.redeem_voucher("A", credits=1)
    rb = engine.redeem_voucher("B", credits=2)
    engine.delete_voucher("A", force=True)
    assert engine.get_redemption(rb.id) == rb
    assert len(engine.list_voucher_transactions("B").data) == 1
    with pytest.raises(NotFound):
        engine.get_redemption(ra.id)


@pytest.mark.parametrize("force", [1, "yes", None])
def test_force_must_be_a_bool(engine: Engine, force: object) -> None:
    engine.create_voucher("G", gift={"amount": 1})
    with pytest.raises(InvalidArgument) as info:
        engine.delete_voucher("G", force=force)  # type: ignore[arg-type]
    assert "force" in info.value.message
    assert engine.get_voucher("G").code == "G"
