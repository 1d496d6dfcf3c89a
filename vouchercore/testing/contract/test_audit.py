"""Engine.audit() on every store: clean when empty, after a mixed workload, after the sweep
and after lazy expiry; auditing changes nothing. (That the audit names the invariant a
corruption breaks is tested per store in ``tests/test_audit.py``.)"""

from __future__ import annotations

from datetime import datetime

import pytest

from vouchercore import Clock, Discount, Engine, FakeClock, GiftAmountExceeded
from vouchercore.domain.instants import from_us
from vouchercore.testing import state_snapshot
from vouchercore.testing.contract.conftest import MakeEngine


def mixed_workload(engine: Engine, clock: FakeClock) -> None:
    """A mixed workload touching every kind of voucher and operation."""
    engine.create_voucher("GIFT", gift={"amount": 10_000}, quantity=20)
    engine.create_voucher("LOYAL", loyalty_card={"points": 1_000})
    engine.create_voucher("DISC", discount=Discount.percent(10), quantity=5)
    engine.create_voucher("SOFT", gift={"amount": 100})
    engine.create_voucher("HARD", gift={"amount": 100})
    assert engine.validate_voucher("GIFT", credits=500, session={"key": "a"}).valid
    assert engine.validate_voucher(
        "GIFT", credits=300, session={"key": "b", "ttl": 1, "ttl_unit": "MINUTES"}
    ).valid
    assert engine.validate_voucher("LOYAL", points=100, session={"key": "a"}).valid
    assert engine.validate_voucher("DISC", order_amount=1000, session={"key": "c"}).valid
    r1 = engine.redeem_voucher("GIFT", credits=500, session_key="a")
    engine.redeem_voucher("GIFT", order_amount=1_234)
    engine.redeem_voucher("LOYAL", points=40)
    engine.redeem_voucher("DISC", order_amount=5_000, session_key="c")
    with pytest.raises(GiftAmountExceeded):
        engine.redeem_voucher("GIFT", credits=1_000_000)
    engine.update_voucher_balance("GIFT", 250)
    engine.update_voucher_balance("LOYAL", -10)
    engine.rollback_redemption(r1.id)
    engine.redeem_voucher("SOFT", credits=10)
    engine.delete_voucher("SOFT")
    engine.redeem_voucher("HARD", credits=10)
    engine.delete_voucher("HARD", force=True)
    clock.advance(minutes=2)  # session b has expired; nothing has swept it


@pytest.fixture
def worked(engine: Engine, clock: FakeClock) -> Engine:
    mixed_workload(engine, clock)
    return engine


def test_audit_of_an_empty_engine_is_clean(engine: Engine) -> None:
    report = engine.audit()
    assert report.ok
    assert (report.vouchers, report.sessions, report.transactions, report.redemptions) == (
        0,
        0,
        0,
        0,
    )


def test_audit_is_clean_after_a_mixed_workload(worked: Engine) -> None:
    report = worked.audit()
    assert report.ok, str(report)
    assert report.violations == ()
    assert report.vouchers == 3  # SOFT and HARD are deleted
    assert report.sessions == 1  # LOYAL/a; GIFT/b expired, a and c were redeemed
    assert report.transactions == 6  # GIFT 2 redemptions + addition + refund; LOYAL 2
    assert report.redemptions == 5  # GIFT 3 (one FAILED) + LOYAL 1 + DISC 1
    assert "OK" in str(report)


def test_audit_is_clean_after_the_sweep_too(worked: Engine) -> None:
    assert worked.expire_sessions() == 1
    assert worked.audit().ok


def test_audit_is_clean_after_lazy_expiry(worked: Engine) -> None:
    worked.get_voucher("GIFT")  # purges the expired session on read
    assert worked.expire_sessions() == 0
    assert worked.audit().ok


def test_audit_does_not_change_anything(worked: Engine) -> None:
    before = state_snapshot(worked, include_failed=True)
    worked.audit()
    assert state_snapshot(worked, include_failed=True) == before


class SteppingClock(Clock):
    """A wall clock that an NTP correction can step back (``FakeClock`` only moves forward)."""

    def __init__(self, start: FakeClock) -> None:
        self.us = start.now_us()

    def now(self) -> datetime:
        return from_us(self.us)

    def now_us(self) -> int:
        return self.us


@pytest.mark.parametrize("kind", ["gift", "discount"])
def test_a_key_locked_again_after_its_redemption_and_a_clock_step_back_is_no_double_use(
    make_engine: MakeEngine, clock: FakeClock, kind: str
) -> None:
    """Reported: lock with key k, redeem with k, the wall clock steps back 150 s (NTP), lock
    with k again: the audit said "session live after a redemption with its key" on every
    store, though nothing was used twice. The session the redemption ended is gone; the new
    lock is a new session, whatever the clock says."""
    wall = SteppingClock(clock)
    engine = make_engine(clock=wall, seed=7)
    if kind == "gift":
        engine.create_voucher("V", gift={"amount": 10_000})
        use = {"credits": 500}
    else:
        engine.create_voucher("V", discount=Discount.amount(100), quantity=5)
        use = {"order_amount": 1_000}
    assert engine.validate_voucher("V", session={"key": "k"}, **use).valid  # type: ignore[arg-type]
    wall.us += 1_000_000
    engine.redeem_voucher("V", session_key="k", **use)  # type: ignore[arg-type]
    wall.us -= 150_000_000
    assert engine.validate_voucher("V", session={"key": "k"}, **use).valid  # type: ignore[arg-type]
    report = engine.audit()
    assert report.ok, str(report)
    assert report.sessions == 1
    # the new session is used by a second redemption with the same key: still no double use
    wall.us += 1_000_000
    engine.redeem_voucher("V", session_key="k", **use)  # type: ignore[arg-type]
    assert engine.validate_voucher("V", session={"key": "k"}, **use).valid  # type: ignore[arg-type]
    report = engine.audit()
    assert report.ok, str(report)
