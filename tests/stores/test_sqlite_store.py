"""What only the SQLite store has: its file, schema, settings and faults.

Behaviour shared by every store is checked by the contract suite; here: the schema is created
and versioned, foreign, corrupt and newer files are refused with a clear StorageError, the
durability setting and busy timeout apply, CHECK constraints back the domain, the expiry sweep
uses its index, and a fault mid-commit leaves nothing half-written and the engine usable.
"""

from __future__ import annotations

import gc
import os
import sqlite3
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from vouchercore import Engine, FakeClock, StorageError
from vouchercore.errors import InvalidArgument
from vouchercore.stores import _schema
from vouchercore.stores._sql import SCHEMA_VERSION
from vouchercore.stores.sqlite import SQLiteStore
from vouchercore.testing import state_snapshot


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "book.db"


def _engine(db: Path, **options: object) -> Engine:
    return Engine(SQLiteStore(db, **options), clock=FakeClock(), seed=7)  # type: ignore[arg-type]


def test_new_file_gets_the_versioned_schema(db: Path) -> None:
    SQLiteStore(db).close()
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        version = conn.execute(
            "SELECT value FROM vouchercore_meta WHERE name = 'schema_version'"
        ).fetchone()[0]
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert {"vouchers", "sessions", "transactions", "redemptions", "rollbacks"} <= tables
    assert version == SCHEMA_VERSION == 3
    assert "parent_redemptions" in tables
    assert mode == "wal"


def _as_version_2(path: Path) -> None:
    """Turn a file of this release back into what vouchercore's schema version 2 wrote (no
    stacked redemptions, no order or customer details on a redemption)."""
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE parent_redemptions")
        for name in _schema.MIGRATIONS[2].columns:
            conn.execute(f"ALTER TABLE redemptions DROP COLUMN {name}")
        conn.execute("UPDATE vouchercore_meta SET value = 2 WHERE name = 'schema_version'")


def _as_version_1(path: Path) -> None:
    """Turn a file of this release back into what vouchercore's schema version 1 wrote (no
    loyalty points buckets either)."""
    _as_version_2(path)
    with sqlite3.connect(path) as conn:
        conn.execute("DROP INDEX vouchers_by_points_due")
        for name in ("expired_points", "points_buckets", "points_due_at"):
            conn.execute(f"ALTER TABLE vouchers DROP COLUMN {name}")
        conn.execute("UPDATE vouchercore_meta SET value = 1 WHERE name = 'schema_version'")


def test_a_version_2_file_is_migrated_on_open_and_stacks_on_its_vouchers(db: Path) -> None:
    engine = _engine(db)
    engine.create_voucher("GIFT", type="GIFT_VOUCHER", gift={"amount": 5_000})
    engine.create_voucher("TEN", discount={"type": "AMOUNT", "amount_off": 1_000})
    single = engine.redeem_voucher("GIFT", credits=500, order_id="o-1")
    engine.close()
    _as_version_2(db)

    engine = Engine(SQLiteStore(db), clock=FakeClock(), seed=8)  # migrates (new ids: new seed)
    old = engine.get_redemption(single.id)
    assert (old.amount, old.order_id, old.parent_id, old.customer) == (500, "o-1", None, None)
    stacked = engine.redeem_stacked_discounts(
        [{"object": "voucher", "id": "TEN"}, {"object": "voucher", "id": "GIFT"}],
        order={"id": "o-2", "amount": 3_000},
        customer={"source_id": "cust-1"},
    )
    assert [r.amount for r in stacked.redemptions] == [1_000, 2_000]
    assert engine.get_parent_redemption(stacked.parent_redemption.id) == stacked.parent_redemption
    engine.rollback_redemption(single.id)
    assert engine.audit().ok
    engine.close()
    with sqlite3.connect(db) as conn:
        version = conn.execute(
            "SELECT value FROM vouchercore_meta WHERE name = 'schema_version'"
        ).fetchone()[0]
    assert version == SCHEMA_VERSION


def test_a_version_1_file_is_migrated_on_open_and_keeps_its_vouchers(db: Path) -> None:
    engine = _engine(db)
    engine.create_voucher("LOY", type="LOYALTY_CARD", loyalty_card={"points": 500})
    engine.redeem_voucher("LOY", points=100)
    engine.close()
    _as_version_1(db)

    engine = _engine(db)  # migrates
    assert engine.get_voucher("LOY").loyalty_card.balance == 400  # type: ignore[union-attr]
    engine.clock.advance(timedelta(hours=1))  # type: ignore[attr-defined]
    expiry = engine.clock.now() + timedelta(days=1)
    engine.accrue_points("LOY", 50, order_id="o-1", expires_at=expiry)
    card = engine.get_voucher("LOY").loyalty_card
    assert card is not None and (card.balance, card.next_expiration_points) == (450, 50)
    assert engine.audit().ok
    engine.close()
    with sqlite3.connect(db) as conn:
        version = conn.execute(
            "SELECT value FROM vouchercore_meta WHERE name = 'schema_version'"
        ).fetchone()[0]
    assert version == SCHEMA_VERSION
    SQLiteStore(db).close()  # opening again finds it current


def test_a_voucher_book_survives_closing_and_reopening(db: Path) -> None:
    engine = _engine(db)
    engine.create_voucher("GIFT", type="GIFT_VOUCHER", gift={"amount": 5_000})
    engine.redeem_voucher("GIFT", credits=1_200)
    before = state_snapshot(engine)
    engine.store.close()
    again = _engine(db)
    assert state_snapshot(again) == before
    assert again.get_voucher("GIFT").gift is not None
    assert again.get_voucher("GIFT").gift.balance == 3_800  # type: ignore[union-attr]
    assert again.audit().ok


def test_url_selects_the_sqlite_store_and_its_options(db: Path) -> None:
    engine = Engine(f"sqlite:///{db}?synchronous=normal&busy_timeout=2.5")
    store = engine.store
    assert isinstance(store, SQLiteStore)
    assert (store.synchronous, store.busy_timeout) == ("NORMAL", 2.5)
    engine.close()


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///x.db?durability=high",
        "sqlite:///x.db?synchronous=SOMETIMES",
        "sqlite:///x.db?busy_timeout=soon",
        "sqlite://",
        "oracle://db/x",
    ],
)
def test_bad_store_urls_are_invalid_arguments(url: str) -> None:
    with pytest.raises(InvalidArgument):
        Engine(url)


@pytest.mark.parametrize(("mode", "value"), [("FULL", 2), ("NORMAL", 1)])
def test_synchronous_setting_applies_to_every_connection(db: Path, mode: str, value: int) -> None:
    store = SQLiteStore(db, synchronous=mode)
    seen: list[int] = []

    def probe() -> None:  # another thread opens its own connection
        seen.append(store._conn().execute("PRAGMA synchronous").fetchone()[0])

    probe()
    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    assert seen == [value, value]
    store.close()


def test_a_newer_schema_is_refused_and_left_untouched(db: Path) -> None:
    SQLiteStore(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE vouchercore_meta SET value = 99 WHERE name = 'schema_version'")
    with pytest.raises(StorageError, match=r"schema version 99.*upgrade vouchercore"):
        SQLiteStore(db)
    with sqlite3.connect(db) as conn:
        version = conn.execute(
            "SELECT value FROM vouchercore_meta WHERE name = 'schema_version'"
        ).fetchone()[0]
    assert version == 99


def test_a_foreign_database_is_refused(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    with pytest.raises(StorageError, match=r"other tables.*invoices"):
        SQLiteStore(db)
    with sqlite3.connect(db) as conn:  # nothing was added to it
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
    assert names == ["invoices"]


def test_a_file_that_is_not_a_database_is_a_storage_error(db: Path) -> None:
    db.write_bytes(b"this is a shopping list, not a database\n" * 200)
    with pytest.raises(StorageError, match=str(db.name)) as caught:
        SQLiteStore(db)
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)


def test_a_missing_directory_is_a_storage_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "dir" / "book.db"
    with pytest.raises(StorageError, match="no/such/dir"):
        Engine(f"sqlite:///{path}")


def test_check_constraints_back_the_domain(db: Path) -> None:
    engine = _engine(db)
    engine.create_voucher("GIFT", type="GIFT_VOUCHER", gift={"amount": 100}, quantity=1)
    engine.store.close()
    with sqlite3.connect(db) as conn:
        for sql in (
            "UPDATE vouchers SET balance = -1",
            "UPDATE vouchers SET redeemed_quantity = 2",
            "UPDATE vouchers SET redeemed_amount = -5",
        ):
            with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
                conn.execute(sql)
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            conn.execute(
                "INSERT INTO vouchers SELECT 'v_other', code, type, state, quantity, "
                "redeemed_quantity, redeemed_amount, total, balance, discount, start_date, "
                "expiration_date, category, additional_info, metadata, campaign_id, "
                "opening_redeemed_quantity, opening_redeemed_amount, created_at, updated_at, "
                "expired_points, points_buckets, points_due_at, "
                "sessions_opened, sessions_redeemed, sessions_released, sessions_expired, "
                "sessions_replaced, sessions_dropped FROM vouchers"
            )


def test_duplicate_codes_are_refused_across_engines_on_one_file(db: Path) -> None:
    first, second = _engine(db), Engine(SQLiteStore(db), clock=FakeClock(), seed=8)
    first.create_voucher("SAME", discount={"type": "AMOUNT", "amount_off": 100})
    with pytest.raises(Exception) as caught:
        second.create_voucher("SAME", discount={"type": "AMOUNT", "amount_off": 100})
    assert getattr(caught.value, "key", None) == "duplicate_found"


def test_the_expiry_sweep_reads_through_the_expiry_index(db: Path) -> None:
    store = SQLiteStore(db)
    plan = (
        store._conn()
        .execute(
            "EXPLAIN QUERY PLAN SELECT s.voucher_id FROM sessions AS s JOIN vouchers AS v "
            "ON v.id = s.voucher_id WHERE s.expires_at <= ? ORDER BY s.expires_at LIMIT ?",
            (0, 10),
        )
        .fetchall()
    )
    assert any("sessions_by_expiry" in str(step) for step in plan), plan
    store.close()


def test_expire_sessions_purges_in_pages_and_leaves_live_ones(db: Path) -> None:
    clock = FakeClock()
    engine = Engine(SQLiteStore(db), clock=clock, seed=3)
    engine.create_voucher("D", discount={"type": "AMOUNT", "amount_off": 1})
    for i in range(30):
        ttl = 1 if i % 3 else 60
        engine.validate_voucher(
            "D", session={"type": "LOCK", "key": f"k{i}", "ttl": ttl, "ttl_unit": "SECONDS"}
        )
    clock.advance(timedelta(seconds=2))
    assert engine.expire_sessions() == 20
    assert engine.store.session_count() == 10
    assert len(engine.list_sessions("D")) == 10
    assert engine.audit().ok


def test_a_busy_database_times_out_with_a_storage_error_then_works(db: Path) -> None:
    engine = _engine(db, busy_timeout=0.2)
    engine.create_voucher("GIFT", type="GIFT_VOUCHER", gift={"amount": 500})
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with pytest.raises(StorageError, match="locked"):
            engine.redeem_voucher("GIFT", credits=100)
    finally:
        other.execute("ROLLBACK")
        other.close()
    engine.redeem_voucher("GIFT", credits=100)
    assert engine.get_voucher("GIFT").gift.balance == 400  # type: ignore[union-attr]
    assert engine.audit().ok


def test_a_fault_mid_commit_writes_nothing_and_the_engine_recovers(db: Path) -> None:
    engine = _engine(db)
    engine.create_voucher("GIFT", type="GIFT_VOUCHER", gift={"amount": 1_000}, quantity=5)
    engine.redeem_voucher("GIFT", credits=100)
    before = state_snapshot(engine, include_failed=True)
    # the database fails the transaction's last write: the voucher row and the redemption were
    # already written in the same transaction when the transaction insert fails
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TRIGGER fail_tx BEFORE INSERT ON transactions "
            "BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        )
    with pytest.raises(StorageError, match="disk says no"):
        engine.redeem_voucher("GIFT", credits=300)
    assert state_snapshot(engine, include_failed=True) == before
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TRIGGER fail_tx")
    engine.redeem_voucher("GIFT", credits=300)
    assert engine.get_voucher("GIFT").gift.balance == 600  # type: ignore[union-attr]
    assert engine.audit().ok


def test_transaction_ids_keep_increasing_after_a_forced_delete(db: Path) -> None:
    engine = _engine(db)
    engine.create_voucher("A", type="GIFT_VOUCHER", gift={"amount": 100})
    last = engine.update_voucher_balance("A", 5).transaction_id
    engine.delete_voucher("A", force=True)
    engine.create_voucher("B", type="GIFT_VOUCHER", gift={"amount": 100})
    following = engine.update_voucher_balance("B", 5).transaction_id
    assert last is not None and following is not None and following > last


def test_a_forked_child_opens_its_own_connection(db: Path) -> None:
    engine = _engine(db)
    engine.create_voucher("GIFT", type="GIFT_VOUCHER", gift={"amount": 1_000})
    parent_conn = engine.store._conn()  # type: ignore[attr-defined]
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            if engine.store._conn() is parent_conn:  # type: ignore[attr-defined]
                code = 3
            engine.redeem_voucher("GIFT", credits=250)
        except BaseException:
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert engine.get_voucher("GIFT").gift.balance == 750  # type: ignore[union-attr]
    assert engine.audit().ok


def test_connections_of_ended_threads_are_closed_and_close_closes_the_rest(db: Path) -> None:
    engine = _engine(db)
    engine.create_voucher("GIFT", type="GIFT_VOUCHER", gift={"amount": 1_000})
    store = engine.store
    assert isinstance(store, SQLiteStore)

    def use() -> None:
        engine.redeem_voucher("GIFT", credits=1)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    gc.collect()
    assert len(store._connections) == 1  # the main thread's; the threads' went with them
    mine = store._conn()
    store.close()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        mine.execute("SELECT 1")
    with pytest.raises(StorageError, match="closed"):
        engine.get_voucher("GIFT")
