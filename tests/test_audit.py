"""Engine.audit() names the invariant (I1–I4) a corruption breaks.

The corruptions reach into the in-memory store on purpose (``engine.store._by_code``), and into
the SQLite and PostgreSQL stores' tables with plain SQL: the audit exists to catch exactly what
the engine itself must never do. (That the audit is clean after real work, on every store, is
in the contract suite: ``vouchercore/testing/contract/test_audit.py``.)
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vouchercore import AuditReport, Engine, FakeClock
from vouchercore.domain.instants import to_us
from vouchercore.stores.sqlite import SQLiteStore
from vouchercore.testing.contract.test_audit import mixed_workload
from vouchercore.testing.stores import (
    POSTGRES_DSN_VARIABLE,
    postgres_store,
    sqlite_store,
    unavailable_reason,
)


@pytest.fixture
def worked(engine: Engine, clock: FakeClock) -> Engine:
    """An in-memory engine after the contract suite's mixed workload (audit clean)."""
    mixed_workload(engine, clock)
    return engine


def _invariants(report: AuditReport) -> set[str]:
    return {v.invariant for v in report.violations}


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


# --- corruptions written with SQL into the SQLite and PostgreSQL stores ----------------------

# Each statement breaks one invariant of the mixed workload's book; the databases' CHECK
# constraints refuse the corruptions the memory store takes above (negative counters and
# balances, redeemed beyond the limit), so those have no SQL version.
_GIFT_ID = "(SELECT id FROM vouchers WHERE code = 'GIFT')"
_LOYAL_ID = "(SELECT id FROM vouchers WHERE code = 'LOYAL')"
SQL_CORRUPTIONS: list[tuple[str, str, str, str | None]] = [
    ("bump_balance", "UPDATE vouchers SET balance = balance + 1 WHERE code = 'GIFT'", "I3", "GIFT"),
    (
        "edit_a_transaction",
        "UPDATE transactions SET balance = balance + 1 WHERE seq = "
        f"(SELECT MIN(seq) FROM transactions WHERE voucher_id = {_GIFT_ID})",
        "I3",
        "GIFT",
    ),
    (
        "drop_a_transaction",
        "DELETE FROM transactions WHERE seq = "
        f"(SELECT MAX(seq) FROM transactions WHERE voucher_id = {_LOYAL_ID})",
        "I3",
        "LOYAL",
    ),
    (
        "bump_redeemed_quantity",
        "UPDATE vouchers SET redeemed_quantity = redeemed_quantity + 1 WHERE code = 'DISC'",
        "I1",
        "DISC",
    ),
    (
        "bump_redeemed_amount",
        "UPDATE vouchers SET redeemed_amount = redeemed_amount + 7 WHERE code = 'GIFT'",
        "I1",
        "GIFT",
    ),
    (
        "lock_beyond_balance",
        f"UPDATE sessions SET points = points + 10000 WHERE voucher_id = {_LOYAL_ID}",
        "I2",
        "LOYAL",
    ),
    (
        "session_live_after_its_redemption",
        "UPDATE redemptions SET session_key = 'a', date = {later} "
        f"WHERE voucher_id = {_LOYAL_ID} AND status = 'SUCCEEDED'",
        "I4",
        "LOYAL",
    ),
    (
        "unbalanced_session_ledger",
        "UPDATE vouchers SET sessions_opened = sessions_opened + 1 WHERE code = 'LOYAL'",
        "I4",
        None,
    ),
]

RunSql = Callable[[str], None]
# a redemption's date one microsecond later: integer microseconds in SQLite, timestamptz in PG
LATER = {"sqlite": "date + 1", "postgres": "date + interval '1 microsecond'"}


def _sqlite_runner(store: SQLiteStore) -> RunSql:
    def run(statement: str) -> None:
        with contextlib.closing(sqlite3.connect(store.path)) as conn, conn:
            cursor = conn.execute(statement.format(later=LATER["sqlite"]))
            assert cursor.rowcount > 0, statement

    return run


def _postgres_runner(dsn: str, schema: str) -> RunSql:
    import psycopg  # noqa: PLC0415  (the optional "postgres" extra)
    from psycopg import sql  # noqa: PLC0415

    def run(statement: str) -> None:
        with psycopg.connect(dsn) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            cursor = conn.execute(statement.format(later=LATER["postgres"]))
            assert cursor.rowcount > 0, statement

    return run


@pytest.fixture(params=["sqlite", "postgres"])
def sql_worked(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> Iterator[tuple[Engine, RunSql]]:
    """An engine on a SQL store after the mixed workload, and a way to run SQL on its tables."""
    if request.param == "sqlite":
        with sqlite_store(tmp_path) as store:
            assert isinstance(store, SQLiteStore)
            engine = Engine(store, clock=clock, seed=1234)
            mixed_workload(engine, clock)
            yield engine, _sqlite_runner(store)
        return
    reason = unavailable_reason("postgres")
    if reason is not None:
        pytest.skip(reason)
    dsn = os.environ[POSTGRES_DSN_VARIABLE]
    with postgres_store(dsn)(tmp_path) as store:
        engine = Engine(store, clock=clock, seed=1234)
        mixed_workload(engine, clock)
        yield engine, _postgres_runner(dsn, store.schema)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("statement", "invariant", "code"),
    [c[1:] for c in SQL_CORRUPTIONS],
    ids=[c[0] for c in SQL_CORRUPTIONS],
)
def test_audit_names_the_invariant_a_sql_corruption_breaks(
    sql_worked: tuple[Engine, RunSql], statement: str, invariant: str, code: str | None
) -> None:
    engine, run_sql = sql_worked
    assert engine.audit().ok
    run_sql(statement)
    report = engine.audit()
    assert not report.ok
    named = [v for v in report.violations if v.invariant == invariant]
    assert any(v.code == code for v in named), str(report)
    for v in named:
        assert v.message
        if v.code is not None:
            assert v.voucher_id == engine.get_voucher(v.code).id
    assert {v.code for v in report.violations} <= {code}, str(report)


def test_a_session_the_redemption_should_have_ended_is_still_reported_after_a_clock_step(
    clock: FakeClock,
) -> None:
    """The rule that lets a key be locked again after its redemption (whatever the wall clock
    did) still reports real double use: a live session opened before a redemption with its
    key — the one that redemption should have ended."""
    from vouchercore.testing.contract.test_audit import SteppingClock  # noqa: PLC0415

    wall = SteppingClock(clock)
    engine = Engine(clock=wall, seed=7)
    engine.create_voucher("V", gift={"amount": 10_000})
    assert engine.validate_voucher("V", credits=500, session={"key": "k"}).valid
    wall.us += 1_000_000
    redeemed = engine.redeem_voucher("V", credits=500, session_key="k")
    wall.us -= 150_000_000
    assert engine.validate_voucher("V", credits=500, session={"key": "k"}).valid
    assert engine.audit().ok
    # the live session made to be the one the redemption used: opened before it
    [session] = _record(engine, "V").sessions
    session.created_at = to_us(redeemed.date) - 1_000_000
    report = engine.audit()
    assert [v.invariant for v in report.violations] == ["I4"], str(report)
    assert "live after a redemption with its key" in report.violations[0].message
