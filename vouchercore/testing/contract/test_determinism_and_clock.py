"""One clock read per operation, aware UTC instants, seeded runs — on every store (README
"Time, ids and reproducible runs").

FakeClock and SystemClock themselves are tested in ``tests/test_clock.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from vouchercore import (
    Clock,
    Discount,
    Engine,
    FakeClock,
    InvalidArgument,
    VoucherError,
)
from vouchercore.testing import state_snapshot
from vouchercore.testing.contract.conftest import MakeEngine

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

# --- one clock read per operation ----------------------------------------------------------


class CountingClock(Clock):
    """A clock that moves 1 µs at every read and counts the reads."""

    def __init__(self) -> None:
        self.inner = FakeClock(START)
        self.reads = 0

    def now(self) -> datetime:
        self.reads += 1
        self.inner.advance_us(1)
        return self.inner.now()

    def now_us(self) -> int:
        self.reads += 1
        self.inner.advance_us(1)
        return self.inner.now_us()


def test_engine_reads_its_clock_once_per_operation(make_engine: MakeEngine) -> None:
    clock = CountingClock()
    engine = make_engine(clock=clock, seed=3)
    calls: list[tuple[str, Any]] = [
        ("create", lambda: engine.create_voucher("G", gift={"amount": 1000}, quantity=5)),
        ("create-gen", lambda: engine.create_voucher(discount=Discount.amount(1))),
        ("validate", lambda: engine.validate_voucher("G", credits=10, session={"key": "k"})),
        ("redeem", lambda: engine.redeem_voucher("G", credits=10, session_key="k")),
        ("balance", lambda: engine.update_voucher_balance("G", 5)),
        ("get", lambda: engine.get_voucher("G")),
        ("disable", lambda: engine.disable_voucher("G")),
        ("enable", lambda: engine.enable_voucher("G")),
        ("list", lambda: engine.list_voucher_transactions("G")),
        ("sessions", lambda: engine.list_sessions("G")),
        ("expire", engine.expire_sessions),
        ("audit", engine.audit),
        ("delete", lambda: engine.delete_voucher("G")),
    ]
    for name, call in calls:
        before = clock.reads
        call()
        assert clock.reads - before == 1, f"{name} read the clock {clock.reads - before} times"


def test_instants_of_one_operation_agree_even_if_the_clock_moves_on_every_read(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(clock=CountingClock(), seed=3)
    created = engine.create_voucher("G", gift={"amount": 1000})
    assert created.created_at == created.updated_at
    redemption = engine.redeem_voucher("G", credits=10)
    [tx] = engine.list_voucher_transactions("G").data
    assert tx.created_at == redemption.date
    result = engine.validate_voucher("G", credits=1, session={"ttl": 5, "ttl_unit": "SECONDS"})
    assert result.session is not None
    assert result.session.expires_at - result.session.created_at == timedelta(seconds=5)


# --- aware UTC instants everywhere ----------------------------------------------------------


def test_every_instant_the_engine_returns_is_aware_utc(engine: Engine) -> None:
    plus2 = timezone(timedelta(hours=2))
    v = engine.create_voucher(
        "G",
        gift={"amount": 1000},
        start_date=datetime(2026, 3, 1, 10, 0, tzinfo=plus2),
        expiration_date=datetime(2026, 12, 1, tzinfo=plus2),
    )
    result = engine.validate_voucher("G", credits=5, session={"key": "k"})
    redemption = engine.redeem_voucher("G", credits=5)
    rollback = engine.rollback_redemption(redemption.id)
    [tx, refund] = engine.list_voucher_transactions("G", order="id").data
    assert result.session is not None
    instants = [
        v.created_at,
        v.updated_at,
        v.start_date,
        v.expiration_date,
        result.session.created_at,
        result.session.expires_at,
        redemption.date,
        rollback.date,
        tx.created_at,
        refund.created_at,
    ]
    for instant in instants:
        assert instant is not None
        assert instant.tzinfo is not None
        assert instant.utcoffset() == timedelta(0)
    assert v.start_date == datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


# --- seeded determinism -----------------------------------------------------------------------


def _script(engine: Engine, clock: FakeClock) -> list[Any]:
    """A fixed workload; returns everything it observed."""
    seen: list[Any] = []
    seen.append(engine.create_voucher(gift={"amount": 5000}, quantity=10))
    code = seen[-1].code
    seen.append(engine.create_voucher("L", loyalty_card={"points": 300}))
    seen.append(engine.create_voucher(discount=Discount.percent(12.5)))
    for i in range(3):
        clock.advance(minutes=5)
        seen.append(engine.validate_voucher(code, credits=100 + i, session=True))
        seen.append(
            engine.validate_voucher("L", points=10, session={"ttl": 1, "ttl_unit": "HOURS"})
        )
    seen.append(engine.redeem_voucher(code, credits=200))
    seen.append(engine.redeem_voucher("L", points=50))
    seen.append(engine.update_voucher_balance(code, 777, reason="top-up"))
    seen.append(engine.rollback_redemption(seen[-3].id))
    try:
        engine.redeem_voucher("L", points=10_000)
    except VoucherError as exc:
        seen.append(exc.as_dict())
    clock.advance(hours=2)
    seen.append(engine.expire_sessions())
    seen.append(engine.list_redemptions("L"))
    seen.append(state_snapshot(engine, include_failed=True))
    return seen


def test_same_seed_and_same_calls_give_the_same_ids_keys_and_logs(make_engine: MakeEngine) -> None:
    runs = []
    for _ in range(2):
        clock = FakeClock(START)
        runs.append(_script(make_engine(clock=clock, seed=42), clock))
    assert runs[0] == runs[1]


def test_different_seeds_give_different_ids(make_engine: MakeEngine) -> None:
    ids = []
    for seed in (1, 2):
        engine = make_engine(clock=FakeClock(START), seed=seed)
        v = engine.create_voucher("G", gift={"amount": 100})
        r = engine.redeem_voucher("G", credits=1)
        s = engine.validate_voucher("G", credits=1, session=True).session
        assert s is not None
        ids.append((v.id, r.id, s.key))
    a, b = ids
    assert a[0] != b[0]
    assert a[1] != b[1]
    assert a[2] != b[2]


def test_seeded_generated_codes_repeat_with_the_seed(make_engine: MakeEngine) -> None:
    codes = [
        make_engine(clock=FakeClock(START), seed=9).create_voucher(gift={"amount": 1}).code
        for _ in range(2)
    ]
    assert codes[0] == codes[1]


def test_unseeded_session_keys_differ_between_engines(make_engine: MakeEngine) -> None:
    keys = []
    for _ in range(2):
        engine = make_engine(clock=FakeClock(START))
        engine.create_voucher("D", discount=Discount.amount(1))
        session = engine.validate_voucher("D", session=True).session
        assert session is not None
        keys.append(session.key)
    assert keys[0] != keys[1]


def test_unseeded_ids_and_codes_differ_between_engines(make_engine: MakeEngine) -> None:
    made = [
        make_engine(clock=FakeClock(START)).create_voucher(gift={"amount": 1}) for _ in range(2)
    ]
    assert made[0].id != made[1].id
    assert made[0].code != made[1].code


def test_engine_uses_the_clock_it_was_given(clock: FakeClock, make_engine: MakeEngine) -> None:
    engine = make_engine(clock=clock)
    assert engine.clock is clock
    clock.advance(days=3)
    assert engine.create_voucher("G", gift={"amount": 1}).created_at == START + timedelta(days=3)


def test_naive_now_for_expire_sessions_is_invalid_argument(engine: Engine) -> None:
    with pytest.raises(InvalidArgument):
        engine.expire_sessions(datetime(2026, 3, 2))  # naive on purpose
