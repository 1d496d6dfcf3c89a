"""The export and the import through the Engine facade (README "Transactions", "CSV import";
the formats are in test_csvio)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from vouchercore import Engine, FakeClock, ImportReport, InvalidExportFields, NotFound
from vouchercore.testing import state_snapshot

HEADER = "Code,Voucher Type,Value,Discount Type,Redemption Limit,Redeemed Quantity,Redeemed Amount"


def _import(engine: Engine, *rows: str) -> ImportReport:
    return engine.import_vouchers_using_csv(io.StringIO("\n".join((HEADER, *rows)) + "\n"))


def test_imported_vouchers_are_usable_and_their_opening_counters_pass_the_audit(
    engine: Engine,
) -> None:
    report = _import(
        engine, "G1,GIFT_VOUCHER,10000,,5,2,3000", "D1,DISCOUNT_VOUCHER,500,AMOUNT,3,1,"
    )
    assert (report.done_count, report.failed_count) == (2, 0)
    card = engine.get_voucher("G1")
    assert card.gift is not None
    assert (card.gift.amount, card.gift.balance) == (10_000, 7_000)
    assert (card.redeemed_quantity, card.redeemed_amount) == (2, 3_000)
    discount = engine.get_voucher("D1")
    assert (discount.quantity, discount.redeemed_quantity) == (3, 1)
    engine.redeem_voucher("G1", credits=500)
    engine.redeem_voucher("D1", order_amount=2_000)
    engine.redeem_voucher("D1", order_amount=2_000)
    refused = engine.validate_voucher("D1", order_amount=2_000).error
    assert refused is not None
    assert refused.key == "quantity_exceeded"
    audit = engine.audit()
    assert audit.ok, str(audit)


def test_import_reports_codes_already_in_the_store_as_bad_rows_and_keeps_the_rest(
    engine: Engine,
) -> None:
    engine.create_voucher("TAKEN", discount={"type": "AMOUNT", "amount_off": 1})
    engine.create_voucher("GONE", discount={"type": "AMOUNT", "amount_off": 1})
    engine.delete_voucher("GONE")  # soft-deleted: its code stays reserved
    report = _import(
        engine,
        "TAKEN,DISCOUNT_VOUCHER,100,AMOUNT,,,",
        "NEW,DISCOUNT_VOUCHER,100,AMOUNT,,,",
        "GONE,DISCOUNT_VOUCHER,100,AMOUNT,,,",
    )
    assert report.done_count == 1
    assert [(f.code, f.row) for f in report.failed] == [("TAKEN", 1), ("GONE", 3)]
    assert all("exists already" in f.reason for f in report.failed)
    assert engine.get_voucher("NEW").discount is not None


def test_import_rejects_opening_counters_beyond_the_limit_as_a_bad_row(engine: Engine) -> None:
    report = _import(engine, "OVER,DISCOUNT_VOUCHER,100,AMOUNT,2,3,")
    assert report.done_count == 0
    assert report.failed[0].row == 1


def test_import_reads_a_path_and_reports_progress(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "codes.csv"
    lines = [HEADER] + [f"C{i:05d},DISCOUNT_VOUCHER,100,AMOUNT,,," for i in range(2_500)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    seen: list[int] = []
    report = engine.import_vouchers_using_csv(path, progress=seen.append)
    assert report.done_count == 2_500
    assert seen == [1_000, 2_000, 2_500]


def test_import_of_a_file_without_a_code_column_raises_and_imports_nothing(engine: Engine) -> None:
    before = state_snapshot(engine)
    with pytest.raises(ValueError, match="Code"):
        engine.import_vouchers_using_csv(io.StringIO("Voucher Type,Value\nGIFT_VOUCHER,100\n"))
    assert state_snapshot(engine) == before


def _card_with_history(engine: Engine, clock: FakeClock) -> None:
    engine.create_voucher("CARD", type="GIFT_VOUCHER", gift={"amount": 10_000})
    engine.update_voucher_balance("CARD", 500, reason="=cmd|' /C calc'!A0")
    clock.advance(seconds=1)
    engine.redeem_voucher("CARD", credits=2_000, order_id="o-1")
    clock.advance(milliseconds=1_500)
    engine.update_voucher_balance("CARD", -300, source_id="-till-4")


def test_export_writes_every_transaction_newest_first_with_guarded_text(
    engine: Engine, clock: FakeClock
) -> None:
    _card_with_history(engine, clock)
    out = io.StringIO()
    assert engine.export_voucher_transactions("CARD", out) == 3
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["type"] for r in rows] == [
        "CREDITS_REMOVAL",
        "CREDITS_REDEMPTION",
        "CREDITS_ADDITION",
    ]
    assert [r["amount"] for r in rows] == ["-300", "-2000", "500"]  # numbers stay numbers
    assert [r["balance"] for r in rows] == ["8200", "8500", "10500"]
    assert rows[0]["source_id"] == "'-till-4"
    assert rows[2]["reason"].startswith("'=")
    assert rows[0]["created_at"] == "2026-03-01T12:00:02.500Z"
    details = json.loads(rows[1]["details"])
    assert details["order"] == {"id": "o-1"}
    assert details["redemption"]["id"].startswith("r_")


def test_export_honours_fields_order_and_jsonl(engine: Engine, clock: FakeClock) -> None:
    _card_with_history(engine, clock)
    out = io.StringIO()
    engine.export_voucher_transactions(
        "CARD", out, fields=["amount", "type"], order="created_at", format="jsonl"
    )
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines == [
        {"amount": 500, "type": "CREDITS_ADDITION"},
        {"amount": -2000, "type": "CREDITS_REDEMPTION"},
        {"amount": -300, "type": "CREDITS_REMOVAL"},
    ]


def test_export_to_a_path(engine: Engine, clock: FakeClock, tmp_path: Path) -> None:
    _card_with_history(engine, clock)
    path = tmp_path / "out.csv"
    assert engine.export_voucher_transactions("CARD", path, fields=["id"]) == 3
    assert path.read_text(encoding="utf-8").splitlines()[0] == "id"


def test_export_of_a_discount_voucher_is_a_header_only(engine: Engine) -> None:
    engine.create_voucher("D", discount={"type": "AMOUNT", "amount_off": 1})
    out = io.StringIO()
    assert engine.export_voucher_transactions("D", out, fields=["id", "amount"]) == 0
    assert out.getvalue() == "id,amount\n"


def test_export_rejects_unknown_fields_and_vouchers(engine: Engine) -> None:
    engine.create_voucher("D", discount={"type": "AMOUNT", "amount_off": 1})
    with pytest.raises(InvalidExportFields) as caught:
        engine.export_voucher_transactions("D", io.StringIO(), fields=["id", "colour"])
    assert caught.value.key == "invalid_export_fields"
    with pytest.raises(NotFound):
        engine.export_voucher_transactions("NOPE", io.StringIO())
    with pytest.raises(ValueError, match="order"):
        engine.export_voucher_transactions("D", io.StringIO(), order="-amount")


def test_a_migrated_voucher_arrives_with_its_counters_and_the_audit_starts_from_them(
    engine: Engine,
) -> None:
    card = engine.create_voucher(
        "OLD", gift={"amount": 5_000}, quantity=4, redeemed_quantity=3, redeemed_amount=1_200
    )
    assert card.gift is not None
    assert (card.gift.balance, card.redeemed_quantity, card.redeemed_amount) == (3_800, 3, 1_200)
    engine.redeem_voucher("OLD", credits=800)
    assert engine.validate_voucher("OLD", credits=1).error.key == "quantity_exceeded"  # type: ignore[union-attr]
    assert engine.audit().ok


@pytest.mark.parametrize(
    ("counters", "key"),
    [
        ({"redeemed_quantity": -1}, "invalid_amount"),
        ({"redeemed_amount": 1.5}, "invalid_amount"),
        ({"redeemed_quantity": 5}, "invalid_payload"),  # beyond quantity 4
        ({"redeemed_amount": 5_001}, "invalid_payload"),  # beyond the card's amount
    ],
)
def test_impossible_migrated_counters_are_rejected(
    engine: Engine, counters: dict[str, object], key: str
) -> None:
    with pytest.raises(ValueError) as caught:
        engine.create_voucher("OLD", gift={"amount": 5_000}, quantity=4, **counters)  # type: ignore[arg-type]
    assert caught.value.key == key  # type: ignore[attr-defined]
    with pytest.raises(NotFound):
        engine.get_voucher("OLD")
