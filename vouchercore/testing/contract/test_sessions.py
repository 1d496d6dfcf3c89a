"""README "Validation", "LOCK sessions": LOCK sessions, keys, TTLs, expiry and release."""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime, timedelta

import pytest

from vouchercore import (
    Discount,
    Engine,
    FakeClock,
    InvalidArgument,
    NotFound,
    Session,
    TtlUnit,
)
from vouchercore.testing import state_snapshot
from vouchercore.testing.contract.conftest import MakeEngine

US = timedelta(microseconds=1)
SESSION_KEY = re.compile(r"ssn_[0-9A-Za-z]{32}")


def _lock(engine: Engine, code: str, key: str | None = None, **kwargs: object) -> Session:
    session: dict[str, object] = {"type": "LOCK"}
    if key is not None:
        session["key"] = key
    for name in ("ttl", "ttl_unit"):
        if name in kwargs:
            session[name] = kwargs.pop(name)
    result = engine.validate_voucher(code, session=session, **kwargs)  # type: ignore[arg-type]
    assert result.valid, result.error
    assert result.session is not None
    return result.session


def _keys(engine: Engine, code: str) -> list[str]:
    return [s.key for s in engine.list_sessions(code)]


# --- keys -----------------------------------------------------------------------------------


def test_generated_session_key_is_ssn_prefix_and_32_alphanumerics(engine: Engine) -> None:
    engine.create_voucher("D", discount=Discount.amount(1))
    keys = {_lock(engine, "D").key for _ in range(20)}
    assert len(keys) == 20
    for key in keys:
        assert SESSION_KEY.fullmatch(key), key


@pytest.mark.parametrize("session", [True, "LOCK", "lock", {"type": "LOCK"}, {}])
def test_session_shorthands_lock_with_defaults(engine: Engine, session: object) -> None:
    engine.create_voucher("D", discount=Discount.amount(1))
    result = engine.validate_voucher("D", session=session)  # type: ignore[arg-type]
    assert result.session is not None
    assert SESSION_KEY.fullmatch(result.session.key)
    assert result.session.type == "LOCK"


@pytest.mark.parametrize("session", [None, False])
def test_no_session_means_no_lock(engine: Engine, session: object) -> None:
    engine.create_voucher("D", discount=Discount.amount(1))
    result = engine.validate_voucher("D", session=session)  # type: ignore[arg-type]
    assert result.valid
    assert result.session is None
    assert engine.list_sessions("D") == ()


@pytest.mark.parametrize(
    "key", ["k", "K" * 200, "order-42/pos 3", "ключ-€"], ids=["1", "200", "spaces", "unicode"]
)
def test_caller_session_key_is_used_as_given(engine: Engine, key: str) -> None:
    engine.create_voucher("D", discount=Discount.amount(1))
    assert _lock(engine, "D", key).key == key
    assert _keys(engine, "D") == [key]


@pytest.mark.parametrize(
    "key",
    ["", "K" * 201, "a\nb", "a\x00b", " lead", "trail ", 5],
    ids=["empty", "201", "newline", "nul", "leading-space", "trailing-space", "int"],
)
def test_bad_caller_session_key_is_invalid_argument(engine: Engine, key: object) -> None:
    engine.create_voucher("D", discount=Discount.amount(1))
    with pytest.raises(InvalidArgument) as info:
        engine.validate_voucher("D", session={"type": "LOCK", "key": key})
    assert info.value.key == "invalid_payload"
    assert "session.key" in info.value.message
    assert engine.list_sessions("D") == ()


# --- the result carries the session ---------------------------------------------------------


def test_session_result_carries_key_type_ttl_unit_and_expiry(
    engine: Engine, clock: FakeClock
) -> None:
    v = engine.create_voucher("G", gift={"amount": 1000})
    session = _lock(engine, "G", "k1", credits=300, ttl=90, ttl_unit="MINUTES")
    assert session.key == "k1"
    assert session.type == "LOCK"
    assert (session.ttl, session.ttl_unit) == (90, TtlUnit.MINUTES)
    assert session.expires_at == clock.now() + timedelta(minutes=90)
    assert session.created_at == clock.now()
    assert (session.voucher_id, session.voucher_code) == (v.id, "G")
    assert (session.quantity, session.credits, session.points) == (1, 300, 0)


def test_default_ttl_is_seven_days(engine: Engine, clock: FakeClock) -> None:
    engine.create_voucher("D", discount=Discount.amount(1))
    session = _lock(engine, "D")
    assert (session.ttl, session.ttl_unit) == (7, TtlUnit.DAYS)
    assert session.expires_at == clock.now() + timedelta(days=7)


@pytest.mark.parametrize(
    ("ttl", "unit", "delta"),
    [
        (2, "DAYS", timedelta(days=2)),
        (3, "HOURS", timedelta(hours=3)),
        (45, "MINUTES", timedelta(minutes=45)),
        (86_401, "SECONDS", timedelta(seconds=86_401)),
        (1_500, "MILLISECONDS", timedelta(milliseconds=1_500)),
        (7, "MICROSECONDS", timedelta(microseconds=7)),
        (1, "NANOSECONDS", timedelta(microseconds=1)),
        (999, "NANOSECONDS", timedelta(microseconds=1)),
        (1_000, "NANOSECONDS", timedelta(microseconds=1)),
        (1_001, "NANOSECONDS", timedelta(microseconds=2)),
        (2_000, "NANOSECONDS", timedelta(microseconds=2)),
        (3_600_000_000_001, "NANOSECONDS", timedelta(hours=1, microseconds=1)),
        (10**12, "MICROSECONDS", timedelta(microseconds=10**12)),
        (1_000_000, "DAYS", timedelta(days=1_000_000)),
    ],
)
def test_ttl_in_every_unit_is_exact_and_nanoseconds_round_up(
    engine: Engine, clock: FakeClock, ttl: int, unit: str, delta: timedelta
) -> None:
    engine.create_voucher("D", discount=Discount.amount(1))
    session = _lock(engine, "D", ttl=ttl, ttl_unit=unit)
    assert session.expires_at - clock.now() == delta
    assert session.ttl == ttl
    assert session.ttl_unit == TtlUnit(unit)


def test_ttl_unit_is_accepted_as_enum_member_or_any_case(engine: Engine) -> None:
    engine.create_voucher("D", discount=Discount.amount(1))
    assert _lock(engine, "D", ttl=1, ttl_unit=TtlUnit.HOURS).ttl_unit is TtlUnit.HOURS
    assert _lock(engine, "D", ttl=1, ttl_unit="hours").ttl_unit is TtlUnit.HOURS


def test_lock_holds_gift_credits_from_the_request(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    assert _lock(engine, "G", "a", credits=250).credits == 250
    assert _lock(engine, "G", "b", order_amount=100).credits == 100
    v = engine.get_voucher("G")
    assert (v.locked_quantity, v.locked_credits) == (2, 350)
    assert v.gift is not None
    assert v.gift.balance == 1000  # a lock holds, it does not spend


def test_lock_holds_loyalty_points_from_the_request(engine: Engine) -> None:
    engine.create_voucher("L", loyalty_card={"points": 100})
    assert _lock(engine, "L", "a", points=30).points == 30
    assert engine.get_voucher("L").locked_points == 30


def test_lock_on_a_discount_voucher_holds_quantity_only(engine: Engine) -> None:
    engine.create_voucher("D", discount=Discount.amount(1), quantity=5)
    session = _lock(engine, "D", "a", order_amount=100)
    assert (session.quantity, session.credits, session.points) == (1, 0, 0)
    v = engine.get_voucher("D")
    assert (v.locked_quantity, v.locked_credits, v.locked_points) == (1, 0, 0)


def test_sessions_are_listed_soonest_to_expire_first(engine: Engine) -> None:
    engine.create_voucher("D", discount=Discount.amount(1))
    _lock(engine, "D", "late", ttl=3, ttl_unit="HOURS")
    _lock(engine, "D", "soon", ttl=1, ttl_unit="HOURS")
    _lock(engine, "D", "mid", ttl=2, ttl_unit="HOURS")
    assert _keys(engine, "D") == ["soon", "mid", "late"]


# --- expiry -------------------------------------------------------------------------------------


def test_session_is_live_one_microsecond_before_expires_at(
    engine: Engine, clock: FakeClock
) -> None:
    engine.create_voucher("D", discount=Discount.amount(1), quantity=1)
    session = _lock(engine, "D", "a", ttl=10, ttl_unit="MINUTES")
    clock.set(session.expires_at - US)
    assert _keys(engine, "D") == ["a"]
    result = engine.validate_voucher("D")
    assert result.error is not None
    assert result.error.key == "quantity_exceeded"


def test_expired_session_no_longer_holds_quantity(engine: Engine, clock: FakeClock) -> None:
    engine.create_voucher("D", discount=Discount.amount(1), quantity=1)
    session = _lock(engine, "D", "a", ttl=10, ttl_unit="MINUTES")
    clock.set(session.expires_at)
    assert engine.validate_voucher("D").valid  # no sweep has run
    assert engine.redeem_voucher("D").amount == 1


def test_expired_session_no_longer_holds_credits(engine: Engine, clock: FakeClock) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    session = _lock(engine, "G", "a", credits=1000, ttl=5, ttl_unit="SECONDS")
    clock.set(session.expires_at - US)
    assert not engine.validate_voucher("G", credits=1).valid
    clock.set(session.expires_at)
    assert engine.validate_voucher("G", credits=1000).valid
    v = engine.get_voucher("G")
    assert (v.locked_quantity, v.locked_credits) == (0, 0)
    assert engine.list_sessions("G") == ()


def test_one_nanosecond_lock_lives_exactly_one_microsecond(
    engine: Engine, clock: FakeClock
) -> None:
    engine.create_voucher("D", discount=Discount.amount(1), quantity=1)
    _lock(engine, "D", "a", ttl=1, ttl_unit="NANOSECONDS")
    assert not engine.validate_voucher("D").valid
    clock.advance_us(1)
    assert engine.validate_voucher("D").valid


def test_expired_session_cannot_be_released(engine: Engine, clock: FakeClock) -> None:
    engine.create_voucher("D", discount=Discount.amount(1))
    session = _lock(engine, "D", "a", ttl=1, ttl_unit="SECONDS")
    clock.set(session.expires_at)
    with pytest.raises(NotFound) as info:
        engine.release_validation_session("D", "a")
    assert info.value.resource_type == "session"


def test_expire_sessions_purges_expired_sessions_and_returns_how_many(
    engine: Engine, clock: FakeClock
) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    engine.create_voucher("D", discount=Discount.amount(1))
    _lock(engine, "G", "a", credits=10, ttl=1, ttl_unit="MINUTES")
    _lock(engine, "G", "b", credits=10, ttl=1, ttl_unit="HOURS")
    _lock(engine, "D", "c", ttl=30, ttl_unit="SECONDS")
    clock.advance(minutes=1)
    assert engine.store.session_count() == 3
    assert engine.expire_sessions() == 2
    assert engine.store.session_count() == 1
    assert engine.expire_sessions() == 0
    assert _keys(engine, "G") == ["b"]
    assert _keys(engine, "D") == []
    assert engine.audit().ok


def test_expire_sessions_returns_zero_when_nothing_expired(engine: Engine) -> None:
    engine.create_voucher("D", discount=Discount.amount(1))
    _lock(engine, "D", "a")
    assert engine.expire_sessions() == 0
    assert _keys(engine, "D") == ["a"]


def test_expire_sessions_does_not_purge_a_session_at_its_last_live_microsecond(
    engine: Engine, clock: FakeClock
) -> None:
    engine.create_voucher("D", discount=Discount.amount(1))
    session = _lock(engine, "D", "a", ttl=1, ttl_unit="SECONDS")
    clock.set(session.expires_at - US)
    assert engine.expire_sessions() == 0
    clock.set(session.expires_at)
    assert engine.expire_sessions() == 1


# --- same key again -----------------------------------------------------------------------------


def test_same_key_again_replaces_credits_and_restarts_the_ttl(
    engine: Engine, clock: FakeClock
) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    _lock(engine, "G", "a", credits=600, ttl=1, ttl_unit="HOURS")
    clock.advance(minutes=30)
    again = _lock(engine, "G", "a", credits=100, ttl=1, ttl_unit="HOURS")
    assert again.credits == 100
    assert again.expires_at == clock.now() + timedelta(hours=1)
    sessions = engine.list_sessions("G")
    assert [(s.key, s.credits, s.expires_at) for s in sessions] == [
        ("a", 100, clock.now() + timedelta(hours=1))
    ]
    v = engine.get_voucher("G")
    assert (v.locked_quantity, v.locked_credits) == (1, 100)
    assert engine.validate_voucher("G", credits=900).valid
    assert engine.audit().ok


def test_same_key_again_may_raise_its_own_lock_up_to_the_whole_balance(
    engine: Engine,
) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    _lock(engine, "G", "a", credits=600)
    assert _lock(engine, "G", "a", credits=1000).credits == 1000
    assert engine.get_voucher("G").locked_credits == 1000


def test_same_key_again_on_a_single_use_voucher_is_valid(engine: Engine) -> None:
    engine.create_voucher("D", discount=Discount.amount(1), quantity=1)
    _lock(engine, "D", "a")
    assert _lock(engine, "D", "a").key == "a"
    assert engine.get_voucher("D").locked_quantity == 1


def test_same_key_again_after_expiry_opens_a_fresh_session(
    engine: Engine, clock: FakeClock
) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    first = _lock(engine, "G", "a", credits=10, ttl=1, ttl_unit="MINUTES")
    clock.set(first.expires_at)
    second = _lock(engine, "G", "a", credits=20, ttl=1, ttl_unit="MINUTES")
    assert second.expires_at == clock.now() + timedelta(minutes=1)
    assert engine.get_voucher("G").locked_credits == 20
    assert engine.audit().ok


def test_invalid_validation_does_not_create_a_session(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 100})
    result = engine.validate_voucher("G", credits=500, session={"key": "a"})
    assert not result.valid
    assert result.session is None
    assert engine.list_sessions("G") == ()
    assert engine.store.session_count() == 0


def test_invalid_validation_does_not_alter_an_existing_session(
    engine: Engine, clock: FakeClock
) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    _lock(engine, "G", "a", credits=100, ttl=1, ttl_unit="HOURS")
    before = state_snapshot(engine, include_failed=True)
    clock.advance(minutes=10)
    result = engine.validate_voucher(
        "G", credits=5000, session={"key": "a", "ttl": 5, "ttl_unit": "DAYS"}
    )
    assert not result.valid
    assert state_snapshot(engine, include_failed=True) == before


def test_invalid_validation_of_a_disabled_voucher_does_not_refresh_its_session(
    engine: Engine, clock: FakeClock
) -> None:
    engine.create_voucher("D", discount=Discount.amount(1))
    first = _lock(engine, "D", "a", ttl=1, ttl_unit="HOURS")
    engine.disable_voucher("D")
    clock.advance(minutes=30)
    refresh = {"key": "a", "ttl": 1, "ttl_unit": "DAYS"}
    assert not engine.validate_voucher("D", session=refresh).valid
    assert [s.expires_at for s in engine.list_sessions("D")] == [first.expires_at]


# --- release --------------------------------------------------------------------------------------


def test_release_frees_the_quantity_and_credits(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1000}, quantity=1)
    _lock(engine, "G", "a", credits=1000)
    assert not engine.validate_voucher("G", credits=1).valid
    assert engine.release_validation_session("G", "a") is None  # type: ignore[func-returns-value]  # it is None
    assert engine.validate_voucher("G", credits=1000).valid
    v = engine.get_voucher("G")
    assert (v.locked_quantity, v.locked_credits) == (0, 0)


def test_release_of_unknown_key_is_not_found_for_a_session(engine: Engine) -> None:
    engine.create_voucher("D", discount=Discount.amount(1))
    _lock(engine, "D", "a")
    before = state_snapshot(engine, include_failed=True)
    with pytest.raises(NotFound) as info:
        engine.release_validation_session("D", "b")
    assert info.value.key == "not_found"
    assert info.value.resource_type == "session"
    assert info.value.resource_id == "b"
    assert state_snapshot(engine, include_failed=True) == before


def test_release_twice_is_not_found_the_second_time(engine: Engine) -> None:
    engine.create_voucher("D", discount=Discount.amount(1))
    _lock(engine, "D", "a")
    engine.release_validation_session("D", "a")
    with pytest.raises(NotFound):
        engine.release_validation_session("D", "a")


def test_release_on_an_unknown_voucher_is_not_found(engine: Engine) -> None:
    with pytest.raises(NotFound) as info:
        engine.release_validation_session("NOPE", "a")
    assert info.value.resource_type == "voucher"


def test_release_only_removes_the_named_key(engine: Engine) -> None:
    engine.create_voucher("D", discount=Discount.amount(1))
    _lock(engine, "D", "a")
    _lock(engine, "D", "b")
    engine.release_validation_session("D", "a")
    assert _keys(engine, "D") == ["b"]


def test_one_key_locking_several_vouchers_is_released_per_voucher(engine: Engine) -> None:
    engine.create_voucher("V1", gift={"amount": 100})
    engine.create_voucher("V2", gift={"amount": 200})
    engine.create_voucher("V3", discount=Discount.amount(5))
    _lock(engine, "V1", "cart-7", credits=100)
    _lock(engine, "V2", "cart-7", credits=50)
    _lock(engine, "V3", "cart-7")
    engine.release_validation_session("V1", "cart-7")
    assert _keys(engine, "V1") == []
    assert _keys(engine, "V2") == ["cart-7"]
    assert engine.get_voucher("V2").locked_credits == 50
    engine.redeem_voucher("V3", session_key="cart-7")
    assert _keys(engine, "V3") == []
    assert _keys(engine, "V2") == ["cart-7"]
    with pytest.raises(NotFound):
        engine.release_validation_session("V1", "cart-7")


def test_same_key_on_two_vouchers_expires_independently(engine: Engine, clock: FakeClock) -> None:
    engine.create_voucher("V1", discount=Discount.amount(5))
    engine.create_voucher("V2", discount=Discount.amount(5))
    _lock(engine, "V1", "k", ttl=1, ttl_unit="MINUTES")
    _lock(engine, "V2", "k", ttl=1, ttl_unit="HOURS")
    clock.advance(minutes=1)
    assert _keys(engine, "V1") == []
    assert _keys(engine, "V2") == ["k"]


# --- disabled and deleted vouchers ----------------------------------------------------------------


def test_disabled_voucher_keeps_its_sessions_but_fails_validation(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    _lock(engine, "G", "a", credits=400)
    engine.disable_voucher("G")
    assert _keys(engine, "G") == ["a"]
    assert engine.get_voucher("G").locked_credits == 400
    for request in ({"credits": 1}, {"credits": 400, "session": {"key": "a"}}):
        result = engine.validate_voucher("G", **request)
        assert result.error is not None
        assert result.error.key == "voucher_disabled"
    engine.enable_voucher("G")
    assert engine.get_voucher("G").locked_credits == 400
    assert engine.redeem_voucher("G", credits=400, session_key="a").amount == 400
    assert _keys(engine, "G") == []


def test_disabled_voucher_sessions_still_expire_on_time(engine: Engine, clock: FakeClock) -> None:
    engine.create_voucher("D", discount=Discount.amount(1))
    session = _lock(engine, "D", "a", ttl=1, ttl_unit="MINUTES")
    engine.disable_voucher("D")
    clock.set(session.expires_at)
    assert _keys(engine, "D") == []


def test_soft_delete_drops_the_voucher_sessions(engine: Engine, clock: FakeClock) -> None:
    engine.create_voucher("G", gift={"amount": 1000})
    engine.create_voucher("KEEP", gift={"amount": 10})
    _lock(engine, "G", "a", credits=10, ttl=1, ttl_unit="HOURS")
    _lock(engine, "G", "b", credits=10, ttl=1, ttl_unit="HOURS")
    _lock(engine, "KEEP", "a", credits=10, ttl=1, ttl_unit="HOURS")
    engine.delete_voucher("G")
    assert engine.store.session_count() == 1
    with pytest.raises(NotFound):
        engine.release_validation_session("G", "a")
    clock.advance(hours=2)
    assert engine.expire_sessions() == 1  # only KEEP's
    assert engine.audit().ok


# --- expiry beyond the representable range ----------------------------------------------------


def test_session_expiring_past_year_9999_is_invalid_argument(engine: Engine) -> None:
    engine.create_voucher("D", discount=Discount.amount(1))
    before = state_snapshot(engine, include_failed=True)
    with pytest.raises(InvalidArgument) as info:
        engine.validate_voucher("D", session={"ttl": 10**7, "ttl_unit": "DAYS"})
    assert isinstance(info.value, ValueError)
    assert info.value.key == "invalid_payload"
    assert "ttl" in info.value.message
    assert state_snapshot(engine, include_failed=True) == before


def test_session_expiring_past_year_9999_is_invalid_even_for_an_invalid_voucher(
    engine: Engine,
) -> None:
    engine.create_voucher("D", discount=Discount.amount(1), active=False)
    with pytest.raises(InvalidArgument):
        engine.validate_voucher("D", session={"ttl": 10**7, "ttl_unit": "DAYS"})


def test_session_expiring_past_year_9999_is_invalid_even_for_an_unknown_code(
    engine: Engine,
) -> None:
    """README "Validation": malformed requests raise from validate before anything is read."""
    with pytest.raises(InvalidArgument):
        engine.validate_voucher("NOPE", session={"ttl": 10**7, "ttl_unit": "DAYS"})


def test_session_may_expire_at_the_last_representable_microsecond(
    make_engine: MakeEngine,
) -> None:
    last = datetime.max.replace(tzinfo=UTC)
    clock = FakeClock(last - 2 * US)
    engine = make_engine(clock=clock, seed=1)
    engine.create_voucher("D", discount=Discount.amount(1))
    session = _lock(engine, "D", "a", ttl=2, ttl_unit="MICROSECONDS")
    assert session.expires_at == last
    with pytest.raises(InvalidArgument):
        engine.validate_voucher("D", session={"key": "b", "ttl": 3, "ttl_unit": "MICROSECONDS"})
    assert _keys(engine, "D") == ["a"]


def test_sweep_given_a_future_instant_does_not_end_live_sessions_early(
    engine: Engine, clock: FakeClock
) -> None:
    """A session expires exactly at expires_at, never earlier, sweep or not (README "LOCK
    sessions")."""
    engine.create_voucher("D", discount=Discount.amount(1), quantity=1)
    session = _lock(engine, "D", "a", ttl=1, ttl_unit="HOURS")
    with contextlib.suppress(InvalidArgument):  # refusing a future instant is fine too
        engine.expire_sessions(clock.now() + timedelta(hours=2))
    assert clock.now() < session.expires_at
    assert _keys(engine, "D") == ["a"]
    assert not engine.validate_voucher("D").valid


def test_sessions_are_listed_soonest_expiry_first_and_ties_in_key_order(engine: Engine) -> None:
    """The order never depends on how a store keeps its rows (found by the lockstep test)."""
    engine.create_voucher("D", discount=Discount.amount(1))
    for key in ("m", "z", "a"):
        _lock(engine, "D", key, ttl=1, ttl_unit="HOURS")
    _lock(engine, "D", "late", ttl=2, ttl_unit="HOURS")
    _lock(engine, "D", "soon", ttl=1, ttl_unit="MINUTES")
    _lock(engine, "D", "m", ttl=1, ttl_unit="HOURS")  # same key again: same instant, same place
    assert _keys(engine, "D") == ["soon", "a", "m", "z", "late"]
