"""The export (README: "Transactions"): csvio writes stored transaction records straight to CSV
and JSON Lines, each cell what the record's ``Transaction`` snapshot holds, formatted (instants
ISO 8601 with milliseconds, details compact JSON with sorted keys, formula guard in CSV only);
stored links read back exactly; instants in microseconds format as datetimes do."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vouchercore import TransactionType
from vouchercore.csvio import (
    EXPORT_FIELDS,
    format_instant,
    format_instant_us,
    parse_instant,
    write_records_csv,
    write_records_jsonl,
)
from vouchercore.domain.instants import from_us, to_us
from vouchercore.domain.records import TransactionRecord, transaction_id
from vouchercore.domain.rows import TransactionRows
from vouchercore.domain.snapshots import Transaction
from vouchercore.errors import InvalidPayload
from vouchercore.stores._sql import transaction_from_row, transaction_row

MIN_US = to_us(datetime(1, 1, 1, tzinfo=UTC))
MAX_US = to_us(datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC))

texts = st.one_of(
    st.none(),
    st.text(max_size=12),
    st.sampled_from(["=1+1", "+x", "-3", "@a", "\tt", "\rr", 'a,"b"', "line\nbreak", "é€"]),
)
links = st.one_of(
    st.none(),
    st.lists(st.tuples(st.sampled_from(["order", "redemption", "rollback", 'x"y']), st.text())).map(
        lambda pairs: tuple(value for pair in pairs for value in pair)
    ),
)
records = st.builds(
    TransactionRecord,
    st.integers(1, 2**40).map(transaction_id),
    st.text(min_size=1, max_size=10),
    st.sampled_from(list(TransactionType)),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(0, 2**63 - 1),
    st.integers(MIN_US, MAX_US),
    texts,
    texts,
    texts,
    texts,
    links,
)
field_choices = st.lists(st.sampled_from(EXPORT_FIELDS), min_size=1, unique=True).map(tuple)


def _expected(tx: TransactionRecord, campaign: str | None) -> dict[str, Any]:
    """Every export field of *tx* as plain JSON data, taken from its snapshot."""
    snapshot = Transaction.from_record(tx, campaign)
    values = {name: getattr(snapshot, name) for name in EXPORT_FIELDS}
    values["type"] = snapshot.type.value
    values["created_at"] = format_instant(snapshot.created_at)
    if snapshot.details is not None:
        values["details"] = dict(sorted(snapshot.details.items()))
    return values


def _csv_cell(name: str, value: Any) -> str:
    if value is None:
        return ""
    if name in ("amount", "balance"):
        return str(value)
    text = json.dumps(value, separators=(",", ":")) if name == "details" else value
    return "'" + text if text.startswith(("=", "+", "-", "@", "\t", "\r")) else text


@given(st.lists(records, max_size=5), field_choices, texts)
def test_records_write_csv_cells_of_their_snapshots(
    txs: list[TransactionRecord], fields: tuple[str, ...], campaign: str | None
) -> None:
    out = io.StringIO(newline="")
    assert write_records_csv(txs, out, fields, campaign_id=campaign) == len(txs)
    reader = csv.reader(io.StringIO(out.getvalue(), newline=""))
    assert next(reader) == list(fields)
    expected = [[_csv_cell(name, _expected(tx, campaign)[name]) for name in fields] for tx in txs]
    assert list(reader) == expected


@given(st.lists(records, max_size=5), field_choices, texts)
def test_records_write_json_lines_of_their_snapshots(
    txs: list[TransactionRecord], fields: tuple[str, ...], campaign: str | None
) -> None:
    out = io.StringIO()
    assert write_records_jsonl(txs, out, fields, campaign_id=campaign) == len(txs)
    expected = [{name: _expected(tx, campaign)[name] for name in fields} for tx in txs]
    # compact, ASCII, keys in the order asked, details' keys sorted
    assert out.getvalue() == "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in expected)


@given(st.integers(MIN_US, MAX_US))
def test_instants_in_microseconds_format_as_datetimes_do(us: int) -> None:
    assert format_instant_us(us) == format_instant(from_us(us))


@given(records)
def test_stored_links_read_back_exactly(tx: TransactionRecord) -> None:
    for again, details in (
        (transaction_from_row(transaction_row(tx)), tx.details),  # the SQL stores
        # the memory store: no links, spliced in flat, read back as None
        (TransactionRows().record(TransactionRows().row(tx)), tx.details or None),
    ):
        assert again.details == details
        assert (again.id, again.amount, again.created_at) == (tx.id, tx.amount, tx.created_at)


def test_parse_instant_reads_the_import_forms_and_refuses_impossible_dates() -> None:
    assert parse_instant("2026-02-28", "d", end_of_day=True) == datetime(
        2026, 2, 28, 23, 59, 59, 999_999, tzinfo=UTC
    )
    assert parse_instant("2026-02-28T10:30", "d", end_of_day=True) == datetime(
        2026, 2, 28, 10, 30, tzinfo=UTC
    )
    assert parse_instant("  ", "d", end_of_day=False) is None
    for bad in ("2026-02-30", "28.02.2026", "2026-02-28T24"):
        with pytest.raises(InvalidPayload, match="--expiration-date"):
            parse_instant(bad, "--expiration-date", end_of_day=True)
