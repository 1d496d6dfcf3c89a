"""README "Transactions" served by keyset reads on every store: ``Store.transactions_page`` and
``transaction_count`` against the whole log, cursors of any text, and the export read in
chunks (the same output whatever the chunk size, the log as of the call)."""

from __future__ import annotations

import csv
import io
import itertools

import pytest

from vouchercore import Engine, FakeClock, bulk
from vouchercore.domain.records import transaction_id


def _card(engine: Engine, clock: FakeClock, n: int, code: str = "G") -> list[str]:
    engine.create_voucher(code, gift={"amount": 0})
    ids = []
    for i in range(1, n + 1):
        clock.advance(seconds=1)
        ids.append(engine.update_voucher_balance(code, i, reason=f"r{i}").transaction_id)
    return ids


def test_a_page_is_the_slice_of_the_whole_log_it_names(engine: Engine, clock: FakeClock) -> None:
    _card(engine, clock, 7, "A")
    _card(engine, clock, 5, "B")  # interleaved ids of another voucher must not show
    store = engine.store
    voucher_id = engine.get_voucher("A").id
    log = [tx.id for tx in store.transactions(voucher_id)]
    assert store.transaction_count(voucher_id) == 7
    cursors = [None, "", "vtx_", "zzz", log[0], log[3], log[-1], transaction_id(10**6)]
    for after, descending, offset, limit in itertools.product(
        cursors, (False, True), (0, 2, 9), (1, 3, 100)
    ):
        ordered = log[::-1] if descending else log
        if after is not None:
            ordered = [i for i in ordered if (i < after if descending else i > after)]
        expected = ordered[offset : offset + limit]
        page = store.transactions_page(
            voucher_id, after=after, descending=descending, offset=offset, limit=limit
        )
        assert [tx.id for tx in page] == expected, (after, descending, offset, limit)


def test_a_voucher_without_transactions_has_empty_pages(engine: Engine) -> None:
    voucher = engine.create_voucher("D", discount={"type": "AMOUNT", "amount_off": 1})
    assert engine.store.transactions_page(voucher.id, limit=10) == []
    assert engine.store.transactions_page(voucher.id, descending=True, limit=10) == []
    assert engine.store.transaction_count(voucher.id) == 0


@pytest.mark.parametrize("cursor", ["vtx_", "zzz", "vtx_zzzzzzzzzzzzzzzzzz", "v"])
@pytest.mark.parametrize("order", ["-id", "id"])
def test_any_cursor_text_pages_as_ids_compare(
    engine: Engine, clock: FakeClock, cursor: str, order: str
) -> None:
    ids = _card(engine, clock, 4)
    page = engine.list_voucher_transactions("G", starting_after_id=cursor, order=order, limit=100)
    expected = (
        [i for i in ids[::-1] if i < cursor] if order == "-id" else [i for i in ids if i > cursor]
    )
    assert [t.id for t in page.data] == expected
    assert page.total == 4


def test_a_page_past_the_end_is_empty_and_has_no_more(engine: Engine, clock: FakeClock) -> None:
    _card(engine, clock, 3)
    page = engine.list_voucher_transactions("G", page=5, limit=2)
    assert (page.data, page.has_more, page.more_starting_after, page.total) == ((), False, None, 3)


def test_a_full_last_page_has_no_more(engine: Engine, clock: FakeClock) -> None:
    ids = _card(engine, clock, 4)
    page = engine.list_voucher_transactions("G", page=2, limit=2, order="id")
    assert [t.id for t in page.data] == ids[2:]
    assert page.has_more is False


def _export(engine: Engine, **kwargs: object) -> list[dict[str, str]]:
    out = io.StringIO()
    engine.export_voucher_transactions("G", out, **kwargs)  # type: ignore[arg-type]
    return list(csv.DictReader(io.StringIO(out.getvalue())))


@pytest.mark.parametrize("order", ["-created_at", "created_at"])
def test_the_export_is_the_same_whatever_the_chunk_size(
    engine: Engine, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, order: str
) -> None:
    ids = _card(engine, clock, 11)
    whole = _export(engine, order=order)
    assert [row["id"] for row in whole] == (ids[::-1] if order == "-created_at" else ids)
    for chunk in (1, 2, 5, 11):
        monkeypatch.setattr(bulk, "EXPORT_CHUNK", chunk)
        assert _export(engine, order=order) == whole


@pytest.mark.parametrize("order", ["-created_at", "created_at"])
def test_the_export_is_the_log_as_of_the_call(
    engine: Engine, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, order: str
) -> None:
    ids = _card(engine, clock, 6)
    monkeypatch.setattr(bulk, "EXPORT_CHUNK", 2)
    reads = 0
    page = engine.store.transactions_page

    def busy_page(*args: object, **kwargs: object) -> object:
        nonlocal reads
        reads += 1
        if reads == 2:  # a till adds credits while the export runs
            engine.update_voucher_balance("G", 1_000)
        return page(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine.store, "transactions_page", busy_page)
    rows = _export(engine, order=order)
    assert sorted(row["id"] for row in rows) == ids
    assert engine.store.transaction_count(engine.get_voucher("G").id) == 7


def test_the_export_reports_its_total_and_progress(
    engine: Engine, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _card(engine, clock, 7)
    monkeypatch.setattr(bulk, "EXPORT_CHUNK", 3)
    totals: list[int] = []
    progress: list[int] = []
    written = engine.export_voucher_transactions(
        "G", io.StringIO(), total_out=totals.append, progress=progress.append
    )
    assert written == 7
    assert totals == [7]
    assert progress == [3, 6, 7]
