"""README "CSV import" on every store: the CSV import in batches, and bad input tried on purpose.

Batches are made small here (``bulk.BATCH``) so that a few rows cross several of them: a
repeated code in a later batch, failures in file order across batches, a store failure in the
middle. Each bad file gives one clear ``InvalidArgument`` with nothing imported, or per-row
failures with the good rows imported whole.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from vouchercore import (
    Engine,
    IdGenerator,
    ImportReport,
    InvalidArgument,
    NotFound,
    StorageError,
    VoucherType,
    bulk,
)
from vouchercore.domain import operations
from vouchercore.domain.records import VoucherRecord
from vouchercore.testing import state_snapshot

HEADER = "Code,Voucher Type,Value,Discount Type,Category"


def _import(engine: Engine, *rows: str, header: str = HEADER) -> ImportReport:
    return engine.import_vouchers_using_csv(io.StringIO("\n".join((header, *rows)) + "\n"))


def _codes(engine: Engine) -> list[str]:
    return sorted(engine.store.voucher_codes())


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> int:
    """Three rows per store transaction."""
    monkeypatch.setattr(bulk, "BATCH", 3)
    return 3


def test_rows_beyond_one_batch_are_all_imported(engine: Engine, small_batches: int) -> None:
    rows = [f"G{i},GIFT_VOUCHER,{100 + i},," for i in range(10)]
    report = _import(engine, *rows)
    assert (report.done_count, report.failed_count) == (10, 0)
    assert _codes(engine) == sorted(f"G{i}" for i in range(10))
    card = engine.get_voucher("G7").gift
    assert card is not None
    assert card.balance == 107


def test_each_batch_is_one_store_call(
    engine: Engine, small_batches: int, batch_sizes: list[int]
) -> None:
    _import(engine, *(f"G{i},GIFT_VOUCHER,1,," for i in range(7)))
    assert batch_sizes == [3, 3, 1]


def test_a_code_repeated_within_a_batch_names_the_first_row(
    engine: Engine, small_batches: int
) -> None:
    report = _import(engine, "A,GIFT_VOUCHER,1,,", "A,GIFT_VOUCHER,2,,", "B,GIFT_VOUCHER,3,,")
    assert report.done_count == 2
    [failure] = report.failed
    assert (failure.code, failure.row) == ("A", 2)
    assert "appears earlier in the file (row 1)" in failure.reason
    card = engine.get_voucher("A").gift
    assert card is not None
    assert card.amount == 1  # the first row wins


def test_a_code_repeated_in_a_later_batch_is_reported_by_the_store(
    engine: Engine, small_batches: int
) -> None:
    rows = ["A,GIFT_VOUCHER,1,,", "B,GIFT_VOUCHER,1,,", "C,GIFT_VOUCHER,1,,", "A,GIFT_VOUCHER,9,,"]
    report = _import(engine, *rows)
    assert report.done_count == 3
    [failure] = report.failed
    assert (failure.code, failure.row) == ("A", 4)
    assert "exists already" in failure.reason
    assert "earlier row of this file" in failure.reason
    card = engine.get_voucher("A").gift
    assert card is not None
    assert card.amount == 1


def test_failures_come_in_file_order_across_batches(engine: Engine, small_batches: int) -> None:
    engine.create_voucher("TAKEN", gift={"amount": 1})
    rows = [
        "ok1,GIFT_VOUCHER,1,,",
        "TAKEN,GIFT_VOUCHER,1,,",  # the store says so at the batch's end
        "bad,GIFT_VOUCHER,x,,",  # the parser says so at once
        "ok2,GIFT_VOUCHER,1,,",
        "bad2,GIFT_VOUCHER,-1,,",
        "TAKEN,GIFT_VOUCHER,1,,",
        "ok3,GIFT_VOUCHER,1,,",
    ]
    report = _import(engine, *rows)
    assert [f.row for f in report.failed] == [2, 3, 5, 6]
    assert report.done_count == 3
    assert report.failed_count == 4


def test_a_store_failure_keeps_earlier_batches_and_writes_nothing_after(
    engine: Engine, small_batches: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    insert = engine.store.insert_vouchers
    calls = 0

    def failing_second(records: Sequence[Any]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise StorageError("disk full")
        return insert(records)

    monkeypatch.setattr(engine.store, "insert_vouchers", failing_second)
    with pytest.raises(StorageError) as caught:
        _import(engine, *(f"G{i},GIFT_VOUCHER,1,," for i in range(9)))
    assert _codes(engine) == ["G0", "G1", "G2"]
    assert calls == 2
    assert "3 vouchers" in caught.value.message
    assert "row 4" in caught.value.message


def test_importing_the_same_file_again_reports_every_row_and_changes_nothing(
    engine: Engine, small_batches: int
) -> None:
    rows = [f"G{i},GIFT_VOUCHER,1,," for i in range(5)]
    _import(engine, *rows)
    before = state_snapshot(engine)
    report = _import(engine, *rows)
    assert report.done_count == 0
    assert [f.row for f in report.failed] == [1, 2, 3, 4, 5]
    assert state_snapshot(engine) == before


def test_progress_counts_rows_read(engine: Engine, small_batches: int) -> None:
    seen: list[int] = []
    engine.import_vouchers_using_csv(
        io.StringIO("\n".join([HEADER, *(f"G{i},GIFT,1,," for i in range(2_500))]) + "\n"),
        progress=seen.append,
    )
    assert seen == [1_000, 2_000, 2_500]


def test_repeated_rows_differing_only_in_code_get_their_own_vouchers(engine: Engine) -> None:
    report = _import(engine, *(f"R{i},DISCOUNT_VOUCHER,12.5,PERCENT,spring" for i in range(300)))
    assert report.done_count == 300
    ids = {engine.get_voucher(f"R{i}").id for i in (0, 150, 299)}
    assert len(ids) == 3
    voucher = engine.get_voucher("R299")
    assert voucher.category == "spring"
    assert voucher.discount is not None
    assert voucher.discount.percent_off == 12.5


# --- bad input, tried on purpose --------------------------------------------------------------


def test_a_file_that_is_not_utf8_imports_nothing(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("Code,Voucher Type\nCAFÉ,GIFT_VOUCHER\n".encode("latin-1"))
    with pytest.raises(InvalidArgument, match="not UTF-8"):
        engine.import_vouchers_using_csv(path)
    assert _codes(engine) == []


def test_a_byte_order_mark_before_the_header_is_read_as_utf8(
    engine: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfCode,Voucher Type,Value\nB1,GIFT_VOUCHER,700\n")
    report = engine.import_vouchers_using_csv(path)
    assert report.done_count == 1
    card = engine.get_voucher("B1").gift
    assert card is not None
    assert card.amount == 700


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("G1,GIFT_VOUCHER,100\nG2,GIFT_VOUCHER,100\n", "Code"),  # no header line
        ("Voucher Type,Value\nGIFT_VOUCHER,1\n", "no Code column"),
        ("Code,Value\nG1,1\n", "no Voucher Type column"),
        ("Code;Voucher Type\nG1;GIFT\n", "separated by ';'"),
    ],
)
def test_a_file_that_cannot_be_imported_raises_one_error_and_imports_nothing(
    engine: Engine, text: str, message: str
) -> None:
    engine.create_voucher("KEEP", gift={"amount": 1})
    before = state_snapshot(engine)
    with pytest.raises(InvalidArgument, match=message):
        engine.import_vouchers_using_csv(io.StringIO(text))
    assert state_snapshot(engine) == before


def test_a_missing_file_is_invalid_argument(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="cannot read"):
        engine.import_vouchers_using_csv(tmp_path / "nope.csv")


def test_ragged_rows_are_bad_rows_and_the_rest_is_imported(engine: Engine) -> None:
    report = _import(
        engine, "SHORT,GIFT_VOUCHER", "LONG,GIFT_VOUCHER,1,,,extra", "OK,GIFT_VOUCHER,1,,"
    )
    assert report.done_count == 1
    assert [(f.code, f.row) for f in report.failed] == [("SHORT", 1), ("LONG", 2)]
    assert all("cells but the header has 5 columns" in f.reason for f in report.failed)
    with pytest.raises(NotFound):
        engine.get_voucher("SHORT")


def test_a_10_mb_code_is_a_bad_row(engine: Engine) -> None:
    huge = "X" * (10 * 1024 * 1024)
    report = _import(engine, f"{huge},GIFT_VOUCHER,1,,", "OK,GIFT_VOUCHER,1,,")
    assert report.done_count == 1
    [failure] = report.failed
    assert failure.code is None  # too long to echo
    assert "at most 100" in failure.reason
    assert len(failure.reason) < 200


def test_a_multi_line_cell_over_the_row_limit_is_one_bad_row_and_the_rows_after_it_import(
    engine: Engine, tmp_path: Path
) -> None:
    """A quoted cell of 17 MB over many lines: one bad row with its number; the reader finds
    the next record, so every good row after it is imported."""
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(HEADER + '\nA1,GIFT_VOUCHER,1,,\nA2,GIFT_VOUCHER,1,,\nBIG,GIFT_VOUCHER,1,,"')
        line = "y" * 99 + "\n"
        for _ in range(170_000):
            out.write(line)
        out.write('"\nB1,GIFT_VOUCHER,1,,"a ""quoted"" category"\nB2,GIFT_VOUCHER,1,,\n')
    report = engine.import_vouchers_using_csv(path)
    [failure] = report.failed
    assert (failure.row, failure.code) == (3, None)
    assert "longer than 16 MiB" in failure.reason
    assert report.done_count == 4
    assert _codes(engine) == ["A1", "A2", "B1", "B2"]
    assert engine.get_voucher("B1").category == 'a "quoted" category'


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("D1,DISCOUNT_VOUCHER,5,AMOUNT,,2026-02-30", "not a valid date"),
        ("D2,DISCOUNT_VOUCHER,5,AMOUNT,,2026-13-01", "not a valid date"),
        ("D3,DISCOUNT_VOUCHER,5,AMOUNT,,01/03/2026", "not in a supported form"),
        ("D4,DISCOUNT_VOUCHER,5,AMOUNT,,2026-03-01T25", "not a valid date"),
        ("G1,GIFT_VOUCHER,-100,,,", "must not be negative"),
        ("G2,GIFT_VOUCHER,ten,,,", "is not a number"),
        ("G3,GIFT_VOUCHER,10.50,,,", "whole number"),
        ("P1,DISCOUNT_VOUCHER,-5,PERCENT,,", "must not be negative"),
        ("P2,DISCOUNT_VOUCHER,101,PERCENT,,", "at most 100"),
        ("Q1,GIFT_VOUCHER,1,,,,-2", "must not be negative"),
        ("Q2,GIFT_VOUCHER,1,,,,x", "is not a number"),
    ],
)
def test_bad_values_are_bad_rows_that_say_why(engine: Engine, row: str, reason: str) -> None:
    header = "Code,Voucher Type,Value,Discount Type,Category,Expiration Date,Redemption Limit"
    padded = row + "," * (header.count(",") - row.count(","))
    report = _import(engine, padded, "OK,GIFT_VOUCHER,1,,,,", header=header)
    assert report.done_count == 1
    [failure] = report.failed
    assert failure.row == 1
    assert reason in failure.reason
    assert _codes(engine) == ["OK"]


def test_duplicates_within_the_file_and_against_the_store_are_bad_rows(engine: Engine) -> None:
    engine.create_voucher("OLD", gift={"amount": 1})
    report = _import(engine, "NEW,GIFT,1,,", "OLD,GIFT,1,,", "NEW,GIFT,2,,")
    assert report.done_count == 1
    assert [(f.code, f.row) for f in report.failed] == [("OLD", 2), ("NEW", 3)]
    assert "exists already" in report.failed[0].reason
    assert "appears earlier in the file" in report.failed[1].reason


def test_a_header_only_file_imports_nothing_and_fails_nothing(engine: Engine) -> None:
    report = _import(engine)
    assert (report.done_count, report.failed_count, report.failed) == (0, 0, ())


def test_an_undecodable_line_further_down_keeps_the_earlier_batches_whole(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk, "BATCH", 100)
    path = tmp_path / "mixed.csv"
    good = "".join(f"G{i:04d},GIFT_VOUCHER,1,,\n" for i in range(1_000))  # ~25 KB
    path.write_bytes((HEADER + "\n" + good).encode() + b"\xff\xfe,GIFT_VOUCHER,1,,\n")
    with pytest.raises(InvalidArgument, match="not UTF-8") as caught:
        engine.import_vouchers_using_csv(path)
    codes = _codes(engine)
    # text is decoded a buffer at a time: the error comes once the reader reaches the bad
    # bytes; every batch before it is stored whole, the batch it interrupts not at all
    assert codes == [f"G{i:04d}" for i in range(len(codes))]
    assert 0 < len(codes) < 1_000
    assert len(codes) % 100 == 0
    assert f"{len(codes):,} vouchers" in caught.value.message


# --- the port: Store.insert_vouchers ---------------------------------------------------------


def _records(*codes: str) -> list[VoucherRecord]:
    ids = IdGenerator(99)
    return [
        operations.new_voucher(
            ids,
            1_000,
            code=code,
            type=VoucherType.GIFT_VOUCHER,
            discount=None,
            total=100,
            quantity=None,
            active=True,
            start_date=None,
            expiration_date=None,
            info=None,
        )
        for code in codes
    ]


def test_insert_vouchers_stores_the_free_and_names_the_taken(engine: Engine) -> None:
    engine.create_voucher("LIVE", gift={"amount": 1})
    engine.create_voucher("SOFT", gift={"amount": 1})
    engine.delete_voucher("SOFT")
    batch = _records("N1", "LIVE", "N2", "N1", "SOFT", "N3")
    taken = engine.store.insert_vouchers(batch)
    assert taken == [1, 3, 4]
    assert _codes(engine) == ["LIVE", "N1", "N2", "N3"]
    assert engine.get_voucher("N1").id == batch[0].id  # the first of the two N1s
    live = engine.get_voucher("LIVE").gift
    assert live is not None
    assert live.amount == 1  # untouched


def test_insert_vouchers_refuses_a_taken_id(engine: Engine) -> None:
    [first] = _records("A")
    assert engine.store.insert_vouchers([first]) == []
    [again] = _records("B")  # the same seed: the same id as A's
    assert again.id == first.id
    assert engine.store.insert_vouchers([again]) == [0]
    with pytest.raises(NotFound):
        engine.get_voucher("B")


def test_an_empty_batch_stores_nothing(engine: Engine) -> None:
    assert engine.store.insert_vouchers([]) == []
