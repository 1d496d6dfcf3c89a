"""What only the PostgreSQL store has: its schema, connections, round trips and faults.

Runs against the server named by ``VOUCHERCORE_TEST_POSTGRES_DSN`` (skipped when unset). Each
test works in a schema of its own, dropped (``CASCADE``) afterwards. Checked here: the schema is
created and versioned; newer and foreign schemas are refused; an unreachable server is a
StorageError naming its address and never its password; killed connections cost at most one
failed call and leave nothing half-written; pools and connections handed to the store stay
open; URL options; the round trips each operation costs; row locks that serialise units across
stores; CHECK constraints; a forked child.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

psycopg = pytest.importorskip("psycopg")
psycopg_pool = pytest.importorskip("psycopg_pool")

from psycopg.conninfo import make_conninfo  # noqa: E402  (after the importorskip)
from psycopg.pq import Trace  # noqa: E402

from tests.liveness import LIVENESS, bounded  # noqa: E402
from vouchercore import Engine, FakeClock, StorageError  # noqa: E402
from vouchercore.errors import AlreadyRolledBack, InvalidArgument  # noqa: E402
from vouchercore.stores import _schema  # noqa: E402
from vouchercore.stores._sql import SCHEMA_VERSION  # noqa: E402
from vouchercore.stores.postgres import PostgresStore, parse_postgres_url  # noqa: E402
from vouchercore.testing import state_snapshot  # noqa: E402

DSN = os.environ.get("VOUCHERCORE_TEST_POSTGRES_DSN")

pytestmark = pytest.mark.skipif(
    not DSN, reason="VOUCHERCORE_TEST_POSTGRES_DSN is not set: no PostgreSQL server to test against"
)

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _admin() -> Any:
    assert DSN is not None
    return psycopg.connect(DSN, autocommit=True)


@pytest.fixture
def schema() -> Iterator[str]:
    """A fresh schema name; the schema (if made) is dropped after the test."""
    name = f"vctest_{uuid.uuid4().hex[:12]}"
    yield name
    with _admin() as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def open_stores() -> Iterator[Callable[..., PostgresStore]]:
    """``make(schema, **options)``: a store on the test server, closed after the test."""
    made: list[PostgresStore] = []

    def make(schema: str, conninfo: Any = None, **options: Any) -> PostgresStore:
        store = PostgresStore(DSN if conninfo is None else conninfo, schema=schema, **options)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def _engine(store: PostgresStore, seed: int = 7) -> Engine:
    return Engine(store, clock=FakeClock(START), seed=seed)


# --- schema ----------------------------------------------------------------------------------


def test_new_schema_is_created_with_its_version_constraints_and_indexes(
    schema: str, open_stores: Callable[..., PostgresStore]
) -> None:
    open_stores(schema)
    with _admin() as conn:
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
            )
        }
        version = conn.execute(
            f'SELECT value FROM "{schema}".vouchercore_meta WHERE name = %s', ("schema_version",)
        ).fetchone()[0]
        indexes = {
            row[0]
            for row in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = %s", (schema,)
            )
        }
        instant_type = conn.execute(
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = 'sessions' AND column_name = 'expires_at'",
            (schema,),
        ).fetchone()[0]
        sequence = conn.execute(
            "SELECT sequencename FROM pg_sequences WHERE schemaname = %s", (schema,)
        ).fetchall()
    assert tables == {
        "vouchercore_meta",
        "vouchers",
        "sessions",
        "transactions",
        "redemptions",
        "rollbacks",
        "idempotency_keys",
        "parent_redemptions",
    }
    assert version == SCHEMA_VERSION
    assert {
        "sessions_by_expiry",
        "transactions_by_voucher",
        "vouchers_code_key",
        "idempotency_keys_by_expiry",
    } <= indexes
    assert instant_type == "timestamp with time zone"
    assert ("transaction_seq",) in sequence


def test_a_voucher_book_survives_closing_and_reopening(
    schema: str, open_stores: Callable[..., PostgresStore]
) -> None:
    engine = _engine(open_stores(schema))
    engine.create_voucher("GIFT", type="GIFT_VOUCHER", gift={"amount": 5_000})
    engine.redeem_voucher("GIFT", credits=1_200, metadata={"till": 3})
    before = state_snapshot(engine)
    engine.store.close()
    again = _engine(open_stores(schema))
    assert state_snapshot(again) == before
    gift = again.get_voucher("GIFT").gift
    assert gift is not None
    assert gift.balance == 3_800
    assert again.audit().ok


def test_two_stores_opening_a_new_schema_at_once_both_succeed(schema: str) -> None:
    errors: list[BaseException] = []
    stores: list[PostgresStore] = []
    barrier = threading.Barrier(4)

    def open_one() -> None:
        barrier.wait()
        try:
            stores.append(PostgresStore(DSN, schema=schema))  # type: ignore[arg-type]
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    assert errors == []
    assert len(stores) == 4


def test_a_version_1_schema_is_migrated_by_every_store_opening_it_at_once(
    schema: str, open_stores: Callable[..., PostgresStore]
) -> None:
    engine = _engine(open_stores(schema))
    engine.create_voucher("LOY", type="LOYALTY_CARD", loyalty_card={"points": 500})
    engine.redeem_voucher("LOY", points=100)
    engine.store.close()
    with _admin() as conn:  # back to what schema version 1 was: no points buckets, no stacks
        conn.execute(f'DROP TABLE "{schema}".parent_redemptions')
        for name in _schema.MIGRATIONS[2].columns:
            conn.execute(f'ALTER TABLE "{schema}".redemptions DROP COLUMN {name}')
        conn.execute(f'DROP INDEX "{schema}".vouchers_by_points_due')
        for name in ("expired_points", "points_buckets", "points_due_at"):
            conn.execute(f'ALTER TABLE "{schema}".vouchers DROP COLUMN {name}')
        conn.execute(
            f"UPDATE \"{schema}\".vouchercore_meta SET value = 1 WHERE name = 'schema_version'"
        )
    stores: list[PostgresStore] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def open_one() -> None:
        barrier.wait()
        try:
            stores.append(open_stores(schema))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    engine = _engine(stores[0])
    assert engine.get_voucher("LOY").loyalty_card.balance == 400  # type: ignore[union-attr]
    engine.accrue_points("LOY", 50, expires_at=START + timedelta(days=1))
    assert engine.get_voucher("LOY").loyalty_card.next_expiration_points == 50  # type: ignore[union-attr]
    assert engine.audit().ok
    with _admin() as conn:
        version = conn.execute(
            f'SELECT value FROM "{schema}".vouchercore_meta WHERE name = %s', ("schema_version",)
        ).fetchone()[0]
    assert version == SCHEMA_VERSION


def test_a_newer_schema_version_is_refused(
    schema: str, open_stores: Callable[..., PostgresStore]
) -> None:
    open_stores(schema).close()
    with _admin() as conn:
        conn.execute(
            f'UPDATE "{schema}".vouchercore_meta SET value = %s WHERE name = %s',
            (SCHEMA_VERSION + 1, "schema_version"),
        )
    with pytest.raises(StorageError, match="upgrade vouchercore"):
        PostgresStore(DSN, schema=schema)  # type: ignore[arg-type]


def test_a_schema_holding_other_tables_is_refused(schema: str) -> None:
    with _admin() as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'CREATE TABLE "{schema}".orders (id int)')
    with pytest.raises(StorageError, match=r"other tables.*orders"):
        PostgresStore(DSN, schema=schema)  # type: ignore[arg-type]


def test_check_constraints_back_the_domain(
    schema: str, open_stores: Callable[..., PostgresStore]
) -> None:
    engine = _engine(open_stores(schema))
    engine.create_voucher("GIFT", type="GIFT_VOUCHER", gift={"amount": 100})
    engine.create_voucher("ONE", discount={"type": "AMOUNT", "amount_off": 1}, quantity=1)
    with _admin() as conn:
        for statement in (
            f"UPDATE \"{schema}\".vouchers SET balance = -1 WHERE code = 'GIFT'",
            f"UPDATE \"{schema}\".vouchers SET balance = total + 1 WHERE code = 'GIFT'",
            f"UPDATE \"{schema}\".vouchers SET redeemed_quantity = 2 WHERE code = 'ONE'",
            f"UPDATE \"{schema}\".vouchers SET sessions_released = -1 WHERE code = 'ONE'",
            f"UPDATE \"{schema}\".vouchers SET code = 'GIFT' WHERE code = 'ONE'",
        ):
            with pytest.raises(psycopg.IntegrityError):
                conn.execute(statement)


def test_the_expiry_sweep_reads_the_expiry_index(
    schema: str, open_stores: Callable[..., PostgresStore]
) -> None:
    store = open_stores(schema)
    engine = _engine(store)
    engine.create_voucher("D", discount={"type": "AMOUNT", "amount_off": 1})
    for key in ("b", "a", "c"):
        engine.validate_voucher("D", session={"key": key, "ttl": 1, "ttl_unit": "MINUTES"})
    clock = engine.clock
    assert isinstance(clock, FakeClock)
    clock.advance(timedelta(minutes=2))
    found = store.expiring_sessions(clock.now_us(), 10)
    assert [s.key for s in found] == ["a", "b", "c"]  # ties by key, as SQLite
    assert {s.voucher.code for s in found} == {"D"}
    with _admin() as conn:
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                f'EXPLAIN SELECT * FROM "{schema}".sessions WHERE expires_at <= now() '
                "ORDER BY expires_at, voucher_id, key LIMIT 10"
            )
        )
    assert "sessions_by_expiry" in plan
    assert "Sort" not in plan.replace("Sort Key", "")  # the order comes from the index
    assert engine.expire_sessions() == 3
    assert store.session_count() == 0
    assert engine.audit().ok


# --- connections ----------------------------------------------------------------------------


def test_an_unreachable_server_is_a_storage_error_naming_its_address_not_its_password() -> None:
    url = "postgresql://vc_user:s3cret-Passw0rd@127.0.0.1:1/vouchers_db?connect_timeout=3"
    with pytest.raises(StorageError) as caught:
        PostgresStore(url)
    message = str(caught.value)
    assert "127.0.0.1:1/vouchers_db" in message
    assert "s3cret-Passw0rd" not in message
    assert "s3cret-Passw0rd" not in repr(caught.value.__cause__ or "")
    with pytest.raises(StorageError) as through_engine:
        Engine(store=url)
    assert "s3cret-Passw0rd" not in str(through_engine.value)


def _backends(application_name: str) -> list[int]:
    with _admin() as conn:
        return [
            row[0]
            for row in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                (application_name,),
            )
        ]


def _terminate(pids: list[int]) -> None:
    with _admin() as conn:
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))


def test_the_engine_is_usable_again_after_its_connections_are_killed(
    schema: str, open_stores: Callable[..., PostgresStore]
) -> None:
    name = f"vc_kill_{uuid.uuid4().hex[:8]}"
    assert DSN is not None
    store = open_stores(schema, make_conninfo(DSN, application_name=name), min_size=3)
    engine = _engine(store)
    engine.create_voucher("GIFT", type="GIFT_VOUCHER", gift={"amount": 10_000})
    engine.redeem_voucher("GIFT", credits=1_000)
    pids = _backends(name)
    assert pids
    _terminate(pids)
    redeemed = 1
    try:
        engine.redeem_voucher("GIFT", credits=1_000)
        redeemed += 1
    except StorageError:
        pass
    engine.redeem_voucher("GIFT", credits=1_000)  # the one after succeeds
    redeemed += 1
    gift = engine.get_voucher("GIFT").gift
    assert gift is not None
    assert gift.balance == 10_000 - 1_000 * redeemed
    assert len(engine.list_redemptions("GIFT")) == redeemed
    assert engine.audit().ok


def test_a_connection_lost_at_commit_stores_nothing_and_the_next_call_works(
    schema: str, open_stores: Callable[..., PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_stores(schema)
    engine = _engine(store)
    engine.create_voucher("GIFT", type="GIFT_VOUCHER", gift={"amount": 10_000})
    before = state_snapshot(engine)
    real_commit = store.commit

    def commit_on_a_killed_connection(unit: Any) -> None:
        _terminate([unit.handle.conn.info.backend_pid])
        real_commit(unit)

    monkeypatch.setattr(store, "commit", commit_on_a_killed_connection)
    with pytest.raises(StorageError, match="commit failed"):
        engine.redeem_voucher("GIFT", credits=2_500)
    monkeypatch.undo()
    after = state_snapshot(engine)
    assert after == before
    redemption = engine.redeem_voucher("GIFT", credits=2_500)
    assert redemption.amount == 2_500
    assert engine.audit().ok


def test_a_pool_handed_to_the_store_is_used_and_left_open(schema: str) -> None:
    pool = psycopg_pool.ConnectionPool(DSN, min_size=1, max_size=2, open=True)
    try:
        store = PostgresStore(pool, schema=schema)
        engine = _engine(store)
        engine.create_voucher("GIFT", type="GIFT_VOUCHER", gift={"amount": 500})
        engine.redeem_voucher("GIFT", credits=100)
        store.close()
        assert not pool.closed
        with pool.connection() as conn:
            assert conn.autocommit is False  # the store gave it back as it found it
            assert conn.execute(f'SELECT count(*) FROM "{schema}".transactions').fetchone() == (1,)
    finally:
        pool.close()


def test_a_connection_handed_to_the_store_is_used_and_left_open(schema: str) -> None:
    with psycopg.connect(DSN) as conn:
        store = PostgresStore(conn, schema=schema)
        engine = _engine(store)
        engine.create_voucher("D", discount={"type": "AMOUNT", "amount_off": 300})
        engine.redeem_voucher("D", order_amount=1_000)
        assert engine.audit().ok
        store.close()
        assert not conn.closed
        assert conn.autocommit is False
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_single_connection_serves_threads_one_unit_at_a_time(schema: str) -> None:
    with psycopg.connect(DSN) as conn:
        store = PostgresStore(conn, schema=schema)
        engine = _engine(store)
        engine.create_voucher("D", discount={"type": "AMOUNT", "amount_off": 1}, quantity=40)
        errors: list[BaseException] = []

        def terminal() -> None:
            try:
                for _ in range(10):
                    engine.redeem_voucher("D", order_amount=10)
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=terminal) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert engine.get_voucher("D").redeemed_quantity == 40
        assert engine.audit().ok
        store.close()


def test_reads_inside_a_unit_reuse_its_connection(
    schema: str, open_stores: Callable[..., PostgresStore]
) -> None:
    # one connection in the pool: a read taking a second one would time out
    store = open_stores(schema, min_size=1, max_size=1, timeout=2)
    engine = _engine(store)
    engine.create_voucher("GIFT", type="GIFT_VOUCHER", gift={"amount": 500})
    engine.redeem_voucher("GIFT", credits=100)
    assert len(engine.list_voucher_transactions("GIFT").data) == 1
    assert len(engine.list_redemptions("GIFT")) == 1
    assert engine.audit().ok


def test_url_options_configure_the_store_and_the_rest_go_to_libpq(
    schema: str, open_stores: Callable[..., PostgresStore]
) -> None:
    url = (
        "postgresql://u:pw@db.example:6543/book?sslmode=disable&schema=tenant_1&max_size=7"
        "&min_size=2&timeout=4.5&retries=2&application_name=till"
    )
    conninfo, options = parse_postgres_url(url)
    assert options == {
        "schema": "tenant_1",
        "max_size": "7",
        "min_size": "2",
        "timeout": "4.5",
        "retries": "2",
    }
    assert (
        conninfo == "postgresql://u:pw@db.example:6543/book?sslmode=disable&application_name=till"
    )
    assert DSN is not None
    separator = "&" if "?" in DSN else "?"
    store = PostgresStore.from_url(f"{DSN}{separator}schema={schema}&max_size=3&timeout=5")
    try:
        assert (store.schema, store.max_size, store.timeout) == (schema, 3, 5.0)
        engine = Engine(store)
        engine.create_voucher("X", discount={"type": "AMOUNT", "amount_off": 1})
    finally:
        store.close()
    with _admin() as conn:
        assert conn.execute(f'SELECT count(*) FROM "{schema}".vouchers').fetchone() == (1,)
    with pytest.raises(InvalidArgument):
        PostgresStore.from_url(f"{DSN}{separator}max_size=many")


def test_an_engine_opened_by_url_owns_and_closes_its_store(schema: str) -> None:
    assert DSN is not None
    separator = "&" if "?" in DSN else "?"
    with Engine(store=f"{DSN}{separator}schema={schema}") as engine:
        assert isinstance(engine.store, PostgresStore)
        engine.create_voucher("X", discount={"type": "AMOUNT", "amount_off": 1})
    with pytest.raises(StorageError, match="closed"):
        engine.get_voucher("X")


# --- round trips ----------------------------------------------------------------------------


def _round_trips(trace: str) -> int:
    """Batches the client sent and then waited on: frontend → backend transitions."""
    trips = 0
    previous = ""
    for line in trace.splitlines():
        side = line[:1]
        if side == "B" and previous == "F":
            trips += 1
        if side in ("F", "B"):
            previous = side
    return trips


@contextlib.contextmanager
def _counting(conn: Any) -> Iterator[list[int]]:
    counted: list[int] = []
    with tempfile.TemporaryFile("w+") as file:
        conn.pgconn.trace(file.fileno())
        conn.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS | Trace.REGRESS_MODE)
        try:
            yield counted
        finally:
            conn.pgconn.untrace()
            file.seek(0)
            counted.append(_round_trips(file.read()))


def test_round_trips_per_operation(schema: str) -> None:
    with psycopg.connect(DSN, autocommit=True) as conn:
        store = PostgresStore(conn, schema=schema)
        engine = _engine(store)
        engine.create_voucher("D", discount={"type": "AMOUNT", "amount_off": 100})
        engine.create_voucher("GIFT", type="GIFT_VOUCHER", gift={"amount": 10_000})
        trips: dict[str, int] = {}
        operations: dict[str, Callable[[], object]] = {
            "insert": lambda: engine.create_voucher(
                "E", discount={"type": "PERCENT", "percent_off": 5}
            ),
            "get": lambda: engine.get_voucher("D"),
            "validate+lock": lambda: engine.validate_voucher("D", session={"key": "k"}),
            "redeem (no transaction)": lambda: engine.redeem_voucher("D", session_key="k"),
            "redeem (a transaction)": lambda: engine.redeem_voucher("GIFT", credits=500),
            "not found": lambda: engine.validate_voucher("NOPE"),
        }
        for name, operation in operations.items():
            with _counting(conn) as counted:
                operation()
            trips[name] = counted[0]
        redemption = engine.list_redemptions("GIFT")[0]
        with _counting(conn) as counted:
            engine.rollback_redemption(redemption.id)
        trips["rollback (a transaction)"] = counted[0]
        store.close()
    assert trips["insert"] == 1
    assert trips["get"] <= 2
    assert trips["validate+lock"] <= 2
    assert trips["redeem (no transaction)"] <= 2
    assert trips["redeem (a transaction)"] <= 3
    assert trips["rollback (a transaction)"] <= 3
    assert trips["not found"] <= 2


def test_a_unit_on_three_vouchers_costs_one_round_trip(schema: str) -> None:
    with psycopg.connect(DSN, autocommit=True) as conn:
        store = PostgresStore(conn, schema=schema)
        engine = _engine(store)
        for code in ("A", "B", "C"):
            engine.create_voucher(code, type="GIFT_VOUCHER", gift={"amount": 1_000})
        engine.validate_voucher("B", credits=100, session={"key": "cart"})
        b_id = engine.get_voucher("B").id
        with _counting(conn) as counted:
            units = store.begin_many(["C", b_id, "A", "B"])
        assert units is not None
        store.abort_many(units)
        with _counting(conn) as stacked:
            engine.redeem_stacked_discounts(
                [{"object": "voucher", "id": code} for code in ("A", "C")], order_amount=1_500
            )
        store.close()
    assert counted == [1]
    assert [unit.record.code for unit in units] == ["C", "B", "A", "B"]
    assert units[1] is units[3]  # a code and an id naming one voucher: one unit
    sessions = units[1].record.sessions
    assert sessions is not None and list(sessions.by_key) == ["cart"]
    assert units[0].record.sessions is None
    # open 1 + one transaction id per gift card + commit 1
    assert stacked == [4]


def test_a_unit_on_several_vouchers_is_not_planned_anew_each_time(schema: str) -> None:
    # its names are a VALUES list, not an array: an array's length is unknown to the generic
    # plan of a prepared statement, and PostgreSQL would then plan every execution anew
    with psycopg.connect(DSN, autocommit=True) as conn:
        store = PostgresStore(conn, schema=schema)
        engine = _engine(store)
        for code in ("A", "B", "C"):
            engine.create_voucher(code, discount={"type": "AMOUNT", "amount_off": 1})
        for _ in range(12):  # psycopg prepares a statement on its 5th run
            units = store.begin_many(["C", "A", "B"])
            assert units is not None
            store.abort_many(units)
        plans = conn.execute(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE %s",
            ("%VALUES%",),
        ).fetchall()
        store.close()
    assert len(plans) == 2  # the lock and the sessions read
    assert all(generic > 0 for generic, _ in plans)


def test_transaction_ids_are_taken_only_when_a_transaction_is_written(
    schema: str, open_stores: Callable[..., PostgresStore]
) -> None:
    engine = _engine(open_stores(schema))
    engine.create_voucher("D", discount={"type": "AMOUNT", "amount_off": 100})
    engine.create_voucher("GIFT", type="GIFT_VOUCHER", gift={"amount": 10_000})
    engine.redeem_voucher("D", order_amount=1_000)
    engine.validate_voucher("GIFT", credits=100)
    first = engine.redeem_voucher("GIFT", credits=100)
    engine.redeem_voucher("D", order_amount=1_000)
    engine.update_voucher_balance("GIFT", 50)
    ids = [tx.id for tx in engine.list_voucher_transactions("GIFT", order="id").data]
    assert first.transaction_id == "vtx_000000000000000001"
    assert ids == ["vtx_000000000000000001", "vtx_000000000000000002"]


# --- units across stores ---------------------------------------------------------------------


def test_a_unit_reads_sessions_the_previous_lock_holder_committed(
    schema: str, open_stores: Callable[..., PostgresStore]
) -> None:
    first = open_stores(schema)
    _engine(first).create_voucher("ONE", discount={"type": "AMOUNT", "amount_off": 1}, quantity=1)
    engines = [_engine(open_stores(schema), seed=i) for i in range(6)]
    barrier = threading.Barrier(len(engines))
    valid: list[bool] = []

    def terminal(index: int, engine: Engine) -> None:
        barrier.wait()
        result = engine.validate_voucher("ONE", session={"key": f"till-{index}"})
        valid.append(result.valid)

    threads = [
        threading.Thread(target=terminal, args=(i, engine)) for i, engine in enumerate(engines)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(valid) == [False] * 5 + [True]  # one lock on the one redemption left
    assert engines[0].audit().ok


def _waiting_for_a_lock(application_name: str) -> None:
    """Return once a backend of *application_name* waits for a lock (bounded: the test fails
    rather than hangs)."""

    def wait() -> None:
        with _admin() as conn:
            while not conn.execute(
                "SELECT 1 FROM pg_stat_activity WHERE application_name = %s "
                "AND wait_event_type = 'Lock'",
                (application_name,),
            ).fetchone():
                time.sleep(0.01)

    bounded(wait, f"{application_name} waiting for a lock")


def _locked_by_another(schema: str, voucher_id: str) -> bool:
    """Whether another transaction holds the voucher's row lock (tried with NOWAIT)."""
    with _admin() as conn:
        try:
            with conn.transaction():
                conn.execute(
                    f'SELECT 1 FROM "{schema}".vouchers WHERE id = %s FOR UPDATE NOWAIT',
                    (voucher_id,),
                )
        except psycopg.errors.LockNotAvailable:
            return True
    return False


@contextlib.contextmanager
def _opening(store: PostgresStore, codes: list[str]) -> Iterator[list[Any]]:
    """``store.begin_many(codes)`` in another thread; on exit, waits for it (bounded) and
    aborts what it opened. Yields the units, filled in once the call has returned."""
    opened: list[Any] = []
    thread = threading.Thread(target=lambda: opened.extend(store.begin_many(codes) or ()))
    thread.start()
    try:
        yield opened
    finally:
        thread.join(LIVENESS)
        if opened:
            store.abort_many(opened)
    assert not thread.is_alive(), "begin_many still waiting"


def test_a_unit_on_several_vouchers_locks_them_in_id_order_whatever_the_order_named(
    schema: str, open_stores: Callable[..., PostgresStore]
) -> None:
    name = f"vc_order_{uuid.uuid4().hex[:8]}"
    assert DSN is not None
    store = open_stores(schema, make_conninfo(DSN, application_name=name))
    other = open_stores(schema)
    engine = _engine(other)
    codes = {
        code: engine.create_voucher(code, discount={"type": "AMOUNT", "amount_off": 1}).id
        for code in ("A", "B", "C")
    }
    named = ["C", "B", "A"]
    lowest, middle, highest = sorted(codes.values())  # ids are random: not the named order
    holder = other.begin(middle)  # another unit holds the middle one
    assert holder is not None
    with _opening(store, named) as opened:
        try:
            _waiting_for_a_lock(name)
            # it waits for the middle one, having locked the lowest and not yet the highest
            locked = [_locked_by_another(schema, voucher_id) for voucher_id in (lowest, highest)]
        finally:
            other.abort(holder)
    assert locked == [True, False]
    assert [unit.record.id for unit in opened] == [codes[code] for code in named]


def test_a_voucher_created_meanwhile_under_a_name_that_resolved_by_id_is_not_read_instead(
    schema: str, open_stores: Callable[..., PostgresStore]
) -> None:
    name = f"vc_meanwhile_{uuid.uuid4().hex[:8]}"
    assert DSN is not None
    store = open_stores(schema, make_conninfo(DSN, application_name=name))
    other = open_stores(schema)
    engine = _engine(other)
    first = engine.create_voucher("FIRST", type="GIFT_VOUCHER", gift={"amount": 1_000}).id
    engine.create_voucher("SECOND", discount={"type": "AMOUNT", "amount_off": 1})
    engine.validate_voucher("FIRST", credits=300, session={"key": "cart"})
    holder = other.begin("FIRST")
    assert holder is not None
    with _opening(store, [first, "SECOND"]) as opened:
        try:
            _waiting_for_a_lock(name)
            # a new voucher whose code is the id FIRST was named by: the name resolves to it now
            engine.create_voucher(first, discount={"type": "AMOUNT", "amount_off": 1})
        finally:
            other.abort(holder)
    assert [unit.record.code for unit in opened] == ["FIRST", "SECOND"]
    sessions = opened[0].record.sessions
    assert sessions is not None and list(sessions.by_key) == ["cart"]  # FIRST's, read by id


def test_units_naming_the_same_vouchers_in_crossing_orders_never_deadlock(
    schema: str, open_stores: Callable[..., PostgresStore]
) -> None:
    # no retries: a deadlock (PostgreSQL aborts one of the two) is a StorageError here. Each
    # round is only the lock statement and a commit, so the two callers' statements overlap
    # often (locking in the order named deadlocks within a few hundred rounds)
    stores = [open_stores(schema, retries=0) for _ in range(2)]
    engine = _engine(stores[0])
    for code in ("A", "B", "C"):
        engine.create_voucher(code, discount={"type": "AMOUNT", "amount_off": 1})
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    opened: list[list[str]] = []

    def terminal(store: PostgresStore, codes: list[str]) -> None:
        barrier.wait()
        try:
            for _ in range(500):
                units = store.begin_many(codes)
                assert units is not None
                opened.append([unit.record.code for unit in units])
                store.commit_many(units)
        except BaseException as error:
            errors.append(error)

    threads = [
        threading.Thread(target=terminal, args=(stores[0], ["A", "B", "C"])),
        threading.Thread(target=terminal, args=(stores[1], ["C", "B", "A"])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(LIVENESS)
    assert errors == []
    assert sorted(map(tuple, opened)) == [("A", "B", "C")] * 500 + [("C", "B", "A")] * 500


def test_a_redemption_rolled_back_from_two_stores_at_once_is_rolled_back_once(
    schema: str, open_stores: Callable[..., PostgresStore]
) -> None:
    engines = [_engine(open_stores(schema), seed=i) for i in range(2)]
    engines[0].create_voucher("GIFT", type="GIFT_VOUCHER", gift={"amount": 1_000})
    redemption = engines[0].redeem_voucher("GIFT", credits=400)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def roll_back(engine: Engine) -> None:
        barrier.wait()
        try:
            engine.rollback_redemption(redemption.id)
            outcomes.append("rolled back")
        except AlreadyRolledBack:
            outcomes.append("already")

    threads = [threading.Thread(target=roll_back, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["already", "rolled back"]
    gift = engines[1].get_voucher("GIFT").gift
    assert gift is not None
    assert gift.balance == 1_000
    assert engines[1].audit().ok


def test_end_to_end_redeem_rollback_balance_and_locks(
    schema: str, open_stores: Callable[..., PostgresStore]
) -> None:
    engine = _engine(open_stores(schema))
    engine.create_voucher(
        "GIFT",
        type="GIFT_VOUCHER",
        gift={"amount": 10_000},
        quantity=5,
        metadata={"zeta": 1, "alpha": {"nested": [1, "two"]}},
        category="cards",
    )
    engine.create_voucher("LOYAL", type="LOYALTY_CARD", loyalty_card={"points": 300})
    locked = engine.validate_voucher(
        "GIFT", credits=3_000, session={"key": "cart-1", "ttl": 90, "ttl_unit": "SECONDS"}
    )
    assert locked.valid
    assert engine.get_voucher("GIFT").locked_credits == 3_000
    redemption = engine.redeem_voucher("GIFT", credits=3_000, session_key="cart-1")
    assert engine.get_voucher("GIFT").locked_credits == 0
    engine.validate_voucher("GIFT", credits=1_000, session={"key": "cart-2"})
    engine.release_validation_session("GIFT", "cart-2")
    engine.update_voucher_balance("GIFT", -500, reason="fix")
    rollback = engine.rollback_redemption(redemption.id, reason="returned")
    engine.redeem_voucher("LOYAL", points=120)
    voucher = engine.get_voucher("GIFT")
    assert voucher.gift is not None
    assert voucher.gift.balance == 9_500
    assert voucher.metadata == {"zeta": 1, "alpha": {"nested": [1, "two"]}}
    assert voucher.category == "cards"
    assert rollback.amount == -3_000
    assert [tx.type.value for tx in engine.list_voucher_transactions("GIFT", order="id").data] == [
        "CREDITS_REDEMPTION",
        "CREDITS_REMOVAL",
        "CREDITS_REFUND",
    ]
    assert engine.get_voucher("LOYAL").loyalty_card.balance == 180  # type: ignore[union-attr]
    engine.delete_voucher("LOYAL", force=True)
    engine.delete_voucher("GIFT")
    assert engine.audit().ok


# --- processes -------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_uses_a_pool_of_its_own(
    schema: str, open_stores: Callable[..., PostgresStore]
) -> None:
    store = open_stores(schema)
    engine = _engine(store)
    engine.create_voucher("D", discount={"type": "AMOUNT", "amount_off": 1}, quantity=10)
    engine.redeem_voucher("D", order_amount=10)  # the parent's pool holds a live connection
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with the pool's threads
        pid = os.fork()
    if pid == 0:  # the child
        status = 1
        try:
            child = Engine(store, clock=FakeClock(START), seed=99)
            child.redeem_voucher("D", order_amount=10)
            status = 0
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    engine.redeem_voucher("D", order_amount=10)  # the parent's connections still work
    assert engine.get_voucher("D").redeemed_quantity == 3
    assert engine.audit().ok
