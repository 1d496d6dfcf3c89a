"""Engine.audit(): clean after real work, and names the invariant (I1–I4) a corruption breaks.

The corruptions reach into the in-memory store on purpose (``engine.store._by_code``): the
audit exists to catch exactly what the engine itself must never do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from vouchercore import AuditReport, Discount, Engine, FakeClock, GiftAmountExceeded
from vouchercore.testing import state_snapshot


def _workload(engine: Engine, clock: FakeClock) -> None:
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
    _workload(engine, clock)
    return engine


def _invariants(report: AuditReport) -> set[str]:
    return {v.invariant for v in report.violations}


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


# --- corruptions ----------------------------------------------------------------------------


def _record(engine: Engine, code: str) -> Any:
    """The store's mutable record of a voucher (private on purpose)."""
    return engine.store._by_code[code]


def _bump_balance(engine: Engine) -> None:
    _record(engine, "GIFT").balance += 1


def _bump_redeemed_quantity(engine: Engine) -> None:
    _record(engine, "DISC").redeemed_quantity += 1


def _negative_redeemed_quantity(engine: Engine) -> None:
    _record(engine, "LOYAL").redeemed_quantity = -1


def _bump_redeemed_amount(engine: Engine) -> None:
    _record(engine, "GIFT").redeemed_amount += 7


def _over_redeem(engine: Engine) -> None:
    _record(engine, "DISC").quantity = 0  # 1 redeemed > quantity 0


def _negative_balance(engine: Engine) -> None:
    _record(engine, "LOYAL").balance = -5


def _lock_beyond_balance(engine: Engine) -> None:
    record = _record(engine, "LOYAL")
    [session] = list(record.sessions)
    record.sessions.points += 10_000
    session.points += 10_000


def _ledger_total_mismatch(engine: Engine) -> None:
    _record(engine, "LOYAL").sessions.points += 1


def _tamper_log(engine: Engine, code: str, edit: Callable[[list[Any]], list[Any]]) -> None:
    """Make the store hand out *code*'s transaction log edited (however the store keeps it)."""
    original = engine.store.transactions
    voucher_id = _record(engine, code).id

    def tampered(wanted: str) -> Any:
        log = list(original(wanted))
        return edit(log) if wanted == voucher_id else log

    engine.store.transactions = tampered


def _edit_a_transaction(engine: Engine) -> None:
    def edit(log: list[Any]) -> list[Any]:
        log[0].balance += 1
        return log

    _tamper_log(engine, "GIFT", edit)


def _drop_a_transaction(engine: Engine) -> None:
    _tamper_log(engine, "LOYAL", lambda log: log[:-1])


def _hide_an_expiry(engine: Engine) -> None:
    sessions = _record(engine, "LOYAL").sessions
    [session] = list(sessions)
    sessions.next_expiry = session.expires_at + 1


def _unbalanced_session_ledger(engine: Engine) -> None:
    engine.store.stats.sessions_opened += 1


CORRUPTIONS: list[tuple[Callable[[Engine], None], str, str | None]] = [
    (_bump_balance, "I3", "GIFT"),
    (_edit_a_transaction, "I3", "GIFT"),
    (_drop_a_transaction, "I3", "LOYAL"),
    (_bump_redeemed_quantity, "I1", "DISC"),
    (_negative_redeemed_quantity, "I1", "LOYAL"),
    (_bump_redeemed_amount, "I1", "GIFT"),
    (_over_redeem, "I1", "DISC"),
    (_negative_balance, "I2", "LOYAL"),
    (_lock_beyond_balance, "I2", "LOYAL"),
    (_ledger_total_mismatch, "I2", "LOYAL"),
    (_hide_an_expiry, "I4", "LOYAL"),
    (_unbalanced_session_ledger, "I4", None),
]


@pytest.mark.parametrize(
    ("corrupt", "invariant", "code"),
    CORRUPTIONS,
    ids=[c[0].__name__.strip("_") for c in CORRUPTIONS],
)
def test_audit_names_the_violated_invariant(
    worked: Engine, corrupt: Callable[[Engine], None], invariant: str, code: str | None
) -> None:
    assert worked.audit().ok
    corrupt(worked)
    report = worked.audit()
    assert not report.ok
    assert invariant in _invariants(report), str(report)
    named = [v for v in report.violations if v.invariant == invariant]
    assert any(v.code == code for v in named), str(report)
    for v in named:
        assert v.message
        if v.code is not None:
            assert v.voucher_id == _record(worked, v.code).id
    text = str(report)
    assert "FAILED" in text
    assert invariant in text


def test_audit_reports_only_the_corrupted_voucher(worked: Engine) -> None:
    _bump_balance(worked)
    report = worked.audit()
    assert {v.code for v in report.violations} == {"GIFT"}


def test_audit_does_not_change_anything(worked: Engine) -> None:
    before = state_snapshot(worked, include_failed=True)
    worked.audit()
    assert state_snapshot(worked, include_failed=True) == before
