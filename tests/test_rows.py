"""Rows: RowBacked objects read by field name, and the one codec of stored transactions
(:class:`vouchercore.domain.rows.TransactionRows`), in the memory store's form and a SQL
table's."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given

from tests.test_export_records import records
from vouchercore.domain.instants import to_us
from vouchercore.domain.records import Links, TransactionRecord, transaction_id, transaction_seq
from vouchercore.domain.rows import TRANSACTION_FIELDS, TransactionRows
from vouchercore.domain.snapshots import Redemption, Session
from vouchercore.stores import _sql


def _links_as_json(links: Links) -> str:
    return json.dumps(list(links), separators=(",", ":"))


def _links_from_json(text: str) -> Links:
    return tuple(json.loads(text))


#: a SQL table's form: the id as its sequence number, the links as one column of JSON text
SQL_ROWS = TransactionRows(
    id_to_row=transaction_seq,
    id_from_row=transaction_id,
    links_to_row=_links_as_json,
    links_from_row=_links_from_json,
)


def _fields(tx: TransactionRecord) -> tuple[Any, ...]:
    return tuple(getattr(tx, name) for name in (*TRANSACTION_FIELDS, "details"))


@pytest.mark.parametrize("rows", [TransactionRows(), SQL_ROWS], ids=["flat", "sql"])
@given(tx=records)
def test_a_transaction_row_reads_back_exactly(rows: TransactionRows, tx: TransactionRecord) -> None:
    row = rows.row(tx)
    expected = _fields(tx)
    if rows is not SQL_ROWS:  # no links, spliced in flat, read back as None
        expected = (*expected[:-1], tx.details or None)
    assert _fields(rows.record(row)) == expected
    assert row[rows.column("voucher_id")] == tx.voucher_id
    assert row[rows.column("type")] == tx.type.value


@given(records)
def test_a_flat_row_holds_plain_values_only(tx: TransactionRecord) -> None:
    row = TransactionRows().row(tx)
    assert all(value is None or type(value) in (str, int) for value in row)
    assert row[TransactionRows.column("id")] == tx.id
    assert len(row) == len(TRANSACTION_FIELDS) + len(tx.details or ())


@given(records)
def test_the_sql_form_is_the_sql_stores_row(tx: TransactionRecord) -> None:
    """What the SQL stores write today is this codec's SQL form."""
    assert SQL_ROWS.row(tx) == _sql.transaction_row(tx)
    assert _fields(_sql.transaction_from_row(SQL_ROWS.row(tx))) == _fields(tx)


def test_row_backed_fields_are_found_by_name() -> None:
    assert Redemption.column("id") == 0
    assert Redemption.column("date") == Redemption.column("date_us")
    assert [Session.column(name) for name in Session.FIELDS] == list(range(len(Session.FIELDS)))
    with pytest.raises(AttributeError):
        Redemption.column("result")  # a property, not a field of the row
    with pytest.raises(AttributeError):
        Redemption.column("nope")


def test_row_fields_and_from_fields_are_inverse() -> None:
    session = Session(
        key="k",
        voucher_id="v",
        voucher_code="C",
        credits=3,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        expires_at=datetime(2026, 1, 2, tzinfo=UTC),
    )
    fields = session.row_fields()
    assert list(fields) == list(Session.FIELDS)
    assert fields["created_at"] == to_us(session.created_at)
    assert Session.from_fields(dict(reversed(fields.items()))) == session
    with pytest.raises(KeyError):
        Session.from_fields({"key": "k"})
