"""The export's fast path (SPEC §9): csvio writes stored transaction records straight to CSV and
JSON Lines, with the same text as the writers of ``Transaction`` snapshots; stored links read
back exactly; instants in microseconds format as datetimes do."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

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
    write_transactions_csv,
    write_transactions_jsonl,
)
from vouchercore.domain.instants import from_us, to_us
from vouchercore.domain.records import TransactionRecord, transaction_id
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


@given(st.lists(records, max_size=5), field_choices, texts)
def test_records_write_the_same_csv_as_snapshots(
    txs: list[TransactionRecord], fields: tuple[str, ...], campaign: str | None
) -> None:
    fast, slow = io.StringIO(newline=""), io.StringIO(newline="")
    assert write_records_csv(txs, fast, fields, campaign_id=campaign) == len(txs)
    write_transactions_csv([Transaction.from_record(t, campaign) for t in txs], slow, fields)
    assert fast.getvalue() == slow.getvalue()


@given(st.lists(records, max_size=5), field_choices, texts)
def test_records_write_the_same_json_lines_as_snapshots(
    txs: list[TransactionRecord], fields: tuple[str, ...], campaign: str | None
) -> None:
    fast, slow = io.StringIO(), io.StringIO()
    assert write_records_jsonl(txs, fast, fields, campaign_id=campaign) == len(txs)
    write_transactions_jsonl([Transaction.from_record(t, campaign) for t in txs], slow, fields)
    assert fast.getvalue() == slow.getvalue()
    for line in fast.getvalue().splitlines():
        assert list(json.loads(line)) == list(fields)


@given(st.integers(MIN_US, MAX_US))
def test_instants_in_microseconds_format_as_datetimes_do(us: int) -> None:
    assert format_instant_us(us) == format_instant(from_us(us))


@given(records)
def test_stored_links_read_back_exactly(tx: TransactionRecord) -> None:
    again = transaction_from_row(transaction_row(tx))
    assert again.details == tx.details
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
