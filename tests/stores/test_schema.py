"""The one schema specification (``vouchercore.stores._schema``): what each store creates follows
it column by column, its layouts give every position in a row, and rows map to records and back
by name."""

from __future__ import annotations

import os
import sqlite3
import uuid
from pathlib import Path

import pytest

from vouchercore.domain.idempotency import KeyRecord
from vouchercore.domain.records import TransactionRecord
from vouchercore.domain.values import TransactionType
from vouchercore.stores import _schema, _sql
from vouchercore.stores.sqlite import SQLiteStore


def test_a_layout_gives_positions_getters_and_arrangements_by_name() -> None:
    layout = _schema.Layout(("a", "b", "c"), instants=("c",))
    assert layout.index("b") == 1
    assert layout.instants == (2,)
    assert layout.getter("c", "a")((1, 2, 3)) == (3, 1)
    assert layout.arrange("c", "a", "b")((3, 1, 2)) == (1, 2, 3)
    assert layout.arrange("a", "b", "c") is tuple  # same order: no work
    assert (1, 2, 3)[layout.since("b")] == (2, 3)
    assert layout.extended("d", instants=("d",)).instants == (2, 3)
    assert layout.subset(("c", "a")).instants == (0,)
    with pytest.raises(ValueError):
        layout.arrange("a", "b")


def test_the_row_layouts_are_the_tables_columns() -> None:
    assert tuple(c.name for c in _schema.VOUCHERS.columns) == _sql.VOUCHER_COLUMNS
    assert _sql.VOUCHERS.instants == tuple(
        i for i, c in enumerate(_schema.VOUCHERS.columns) if c.type == "instant"
    )
    assert "seq" not in _sql.REDEMPTION_COLUMNS  # numbered by the database
    assert (
        "sessions_opened",
        *(f"sessions_{reason}" for reason in _schema.SESSION_REASONS),
    ) == _sql.COUNTER_COLUMNS
    assert set(_sql.VOUCHER_MUTABLE_COLUMNS) <= set(_sql.VOUCHER_COLUMNS)


def test_rows_and_records_round_trip_by_name() -> None:
    tx = TransactionRecord(
        "vtx_000000000000000007", "v_1", TransactionType.CREDITS_REDEMPTION, -5, 95, 10, None
    )
    row = _sql.transaction_row(tx)
    assert row[_sql.TRANSACTIONS.index("seq")] == 7
    back = _sql.transaction_from_row(row)
    assert (back.id, back.amount, back.balance, back.created_at) == (tx.id, -5, 95, 10)
    key = KeyRecord("k", "f", "{}", 1, 2)
    assert _sql.key_from_row(_sql.key_row(key)) == key


def test_sqlite_creates_the_specified_columns_and_indexes(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "s.db").close()
    with sqlite3.connect(tmp_path / "s.db") as conn:
        for table in _schema.TABLES:
            info = conn.execute(f"PRAGMA table_info({table.name})").fetchall()
            assert tuple(row[1] for row in info) == table.layout.names
            not_null = [
                bool(row[3]) for row, c in zip(info, table.columns, strict=True) if not c.primary
            ]
            assert not_null == [not c.null for c in table.columns if not c.primary]
            indexes = {row[1] for row in conn.execute(f"PRAGMA index_list({table.name})")}
            assert {index.name for index in table.indexes} <= indexes


def test_upgrade_statements_add_what_the_migrations_name() -> None:
    statements = _schema.upgrade_statements(_schema.Dialect.postgresql('"s"'), 1)
    assert statements[0] == (
        'ALTER TABLE "s".vouchers ADD COLUMN expired_points bigint NOT NULL DEFAULT 0 '
        "CHECK (expired_points >= 0)"
    )
    assert (
        'CREATE INDEX vouchers_by_points_due ON "s".vouchers (points_due_at, id) '
        "WHERE points_due_at IS NOT NULL"
    ) in statements
    assert 'ALTER TABLE "s".redemptions ADD COLUMN parent_id text COLLATE "C"' in statements
    assert any(s.startswith('CREATE TABLE "s".parent_redemptions (') for s in statements)
    assert _schema.upgrade_statements(_schema.Dialect.postgresql('"s"'), 2)[0] == (
        'ALTER TABLE "s".redemptions ADD COLUMN parent_id text COLLATE "C"'
    )
    assert statements[-1].endswith(
        f"SET value = {_schema.SCHEMA_VERSION} WHERE name = 'schema_version'"
    )


def test_postgres_creates_the_specified_columns_and_types() -> None:
    dsn = os.environ.get("VOUCHERCORE_TEST_POSTGRES_DSN")
    if not dsn:
        pytest.skip("VOUCHERCORE_TEST_POSTGRES_DSN is not set")
    psycopg = pytest.importorskip("psycopg")
    from vouchercore.stores.postgres import PostgresStore  # noqa: PLC0415

    schema = f"vc_spec_{uuid.uuid4().hex[:12]}"
    PostgresStore(dsn, schema=schema).close()
    try:
        with psycopg.connect(dsn) as conn:
            for table in _schema.TABLES:
                rows = conn.execute(
                    "SELECT column_name, udt_name, is_nullable = 'YES' "
                    "FROM information_schema.columns "
                    "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
                    (schema, table.name),
                ).fetchall()
                assert tuple(row[0] for row in rows) == table.layout.names
                types = {"key": "text", "text": "text", "int": "int8", "smallint": "int2"}
                types |= {"instant": "timestamptz", "json": "json", "identity": "int8"}
                assert [row[1] for row in rows] == [types[c.type] for c in table.columns]
                assert [row[2] for row in rows] == [c.null for c in table.columns]
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
