"""Bulk work on a store: CSV import and code generation in batches, the transaction log read in
chunks. Used by :class:`~vouchercore.engine.Engine`; no voucher rule lives here (records are made
by the engine's domain calls, the store only saves them).

**Batches.** Vouchers are written :data:`BATCH` (50,000) at a time through
``Store.insert_vouchers``: one store transaction per batch (one ``BEGIN IMMEDIATE`` on
SQLite, one database transaction on PostgreSQL, one hold of the index lock in memory), each
voucher stored whole or not at all, and each batch whole or not at all. A row whose code is
taken is reported, never half-written.

**Memory.** An import holds one batch (its records and the codes of its rows), the failures
so far, and nothing else: the codes of earlier batches are not remembered — the store's
uniqueness reports a code repeated in a later batch (a code repeated within one batch is caught
by the batch's own set, and named with the row that has it first). So memory stays flat however
long the file is (apart from the list of failed rows the report returns).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Final

from vouchercore.codes import CodeDrawer, GenerationReport
from vouchercore.csvio import ImportFailure, ImportReport, ParsedRow
from vouchercore.domain.records import (
    TransactionRecord,
    VoucherRecord,
    transaction_id,
    transaction_seq,
)
from vouchercore.errors import InvalidPayload, StorageError, VoucherError
from vouchercore.ports import AnyStore

__all__ = [
    "BATCH",
    "EXPORT_CHUNK",
    "generate",
    "import_rows",
    "iter_transactions",
]

#: Vouchers per store transaction (import, generation). Large on purpose: a SQL store writes
#: each index page a batch touches once per transaction, and random ids and codes touch pages
#: all over their indexes — into a SQLite file of 1,000,000 vouchers, batches of 50,000 ran
#: about twice as fast as batches of 10,000 (which ran twice as fast as 1,000), for ~35 MB of
#: records and rows held per batch.
BATCH: Final = 50_000
#: An import reports progress every this many rows read.
PROGRESS_EVERY: Final = 1_000
#: Transactions per keyset read of an export.
EXPORT_CHUNK: Final = 5_000
#: Generation gives up after this many batches in a row in which most drawn codes were taken.
CROWDED_ROUNDS: Final = 20


def _exists_reason(code: str) -> str:
    return (
        f"Code {code!r} exists already (in the store, or on an earlier row of this file); "
        "give the row another code"
    )


def import_rows(
    store: AnyStore,
    rows: Iterable[tuple[int, ParsedRow | ImportFailure]],
    make_record: Callable[[ParsedRow, int], VoucherRecord],
    now: Callable[[], int],
    progress: Callable[[int], None] | None,
    batch: int | None = None,
) -> ImportReport:
    """Import parsed CSV rows in batches of *batch* rows (README "CSV import").

    Args:
        store: where the vouchers go.
        rows: ``(row, parsed)`` pairs from :func:`~vouchercore.csvio.parse_voucher_rows`
            (without its own record of codes seen: see the module docstring).
        make_record: ``make_record(parsed, now)`` — the new voucher of a parsed row; raises a
            :class:`VoucherError` for a row the domain refuses.
        now: the clock, read once per batch (a batch is one operation).
        progress: called with the number of rows read so far, every
            :data:`PROGRESS_EVERY` rows and at the end.
        batch: rows per batch (rows read: good and bad; default :data:`BATCH`).

    Raises:
        StorageError: a batch could not be written; the message says which rows were imported
            (every earlier batch) and that the rest were not.
        InvalidPayload: the file turned out not to be text further down (rows before it that
            made full batches are imported; the message says how many).
    """
    batch = BATCH if batch is None else batch
    done = 0
    handled = 0
    failed: list[ImportFailure] = []
    pending: list[tuple[int, VoucherRecord]] = []
    batch_failed: list[ImportFailure] = []
    first_row: dict[str, int] = {}  # this batch's codes: the row each appears on first
    instant = now()

    def flush() -> None:
        nonlocal done, instant
        if pending:
            try:
                taken = store.insert_vouchers([record for _, record in pending])
            except StorageError as error:
                raise StorageError(
                    f"{error.message}; {done:,} vouchers of the rows before row "
                    f"{pending[0][0]:,} were imported, none from that row on: fix the store and "
                    "import the same file again (the imported codes are then reported as "
                    "existing)"
                ) from error
            for position in taken:
                row, record = pending[position]
                batch_failed.append(ImportFailure(record.code, row, _exists_reason(record.code)))
            done += len(pending) - len(taken)
        batch_failed.sort(key=_row_of)
        failed.extend(batch_failed)
        batch_failed.clear()
        pending.clear()
        first_row.clear()
        instant = now()

    try:
        for row, parsed in rows:
            handled += 1
            if isinstance(parsed, ImportFailure):
                batch_failed.append(parsed)
            else:
                code: str = parsed["code"]
                earlier = first_row.get(code)
                if earlier is not None:
                    reason = f"Code {code!r} appears earlier in the file (row {earlier})"
                    batch_failed.append(ImportFailure(code, row, reason))
                else:
                    try:
                        record = make_record(parsed, instant)
                    except VoucherError as error:
                        batch_failed.append(ImportFailure(code, row, error.message))
                    else:
                        first_row[code] = row
                        pending.append((row, record))
            if handled % batch == 0:
                flush()
            if progress is not None and handled % PROGRESS_EVERY == 0:
                progress(handled)
    except InvalidPayload as error:  # undecodable text further down
        raise InvalidPayload(
            f"{error.message}; {done:,} vouchers of the rows before it were imported"
        ) from error
    flush()
    if progress is not None and (handled % PROGRESS_EVERY or not handled):
        progress(handled)
    return ImportReport(done_count=done, failed_count=len(failed), failed=tuple(failed))


def _row_of(failure: ImportFailure) -> int:
    return failure.row


def generate(
    store: AnyStore,
    drawer: CodeDrawer,
    make_record: Callable[[str, int], VoucherRecord],
    now: Callable[[], int],
    count: int,
    *,
    progress: Callable[[int], None] | None = None,
    on_codes: Callable[[Sequence[str]], None] | None = None,
    keep_codes: int = 100,
    batch: int | None = None,
) -> GenerationReport:
    """Create *count* vouchers with fresh random codes, *batch* per store transaction.

    Each batch draws codes distinct among themselves; codes the store reports taken are drawn
    again in the next batch. After :data:`CROWDED_ROUNDS` batches in a row in which more than
    half of the codes drawn were taken, generation stops (the space is nearly full).

    Args:
        store: where the vouchers go.
        drawer: draws the codes.
        make_record: ``make_record(code, now)`` — the new voucher with this code.
        now: the clock, read once per batch.
        count: vouchers to create.
        progress: called with the number created after each batch.
        on_codes: called with each batch's stored codes, in creation order.
        keep_codes: how many of the first codes the report keeps.
        batch: vouchers per store transaction (default :data:`BATCH`).

    Raises:
        InvalidPayload: the code space ran full (the message says how many were created).
        StorageError: a batch could not be written (the message says how many were created).
    """
    batch = BATCH if batch is None else batch
    made = 0
    redrawn = 0
    crowded = 0
    kept: list[str] = []
    while made < count:
        want = min(batch, count - made)
        codes = list(dict.fromkeys(drawer.draw(want)))  # distinct, in drawn order
        instant = now()
        records = [make_record(code, instant) for code in codes]
        try:
            taken = store.insert_vouchers(records)
        except StorageError as error:
            raise StorageError(
                f"{error.message}; {made:,} of the {count:,} vouchers were generated before"
            ) from error
        lost = want - len(codes) + len(taken)
        redrawn += lost
        if taken:
            skipped = set(taken)
            codes = [code for i, code in enumerate(codes) if i not in skipped]
        made += len(codes)
        if len(kept) < keep_codes:
            kept.extend(codes[: keep_codes - len(kept)])
        if codes and on_codes is not None:
            on_codes(codes)
        if progress is not None:
            progress(made)
        crowded = crowded + 1 if lost * 2 > want else 0
        if crowded >= CROWDED_ROUNDS and made < count:
            raise InvalidPayload(
                f"the code space is nearly full: in {CROWDED_ROUNDS} batches in a row most "
                f"codes drawn were taken already; {made:,} of the {count:,} vouchers were "
                "generated — use more placeholders (or a longer length) or a larger charset"
            )
    return GenerationReport(count=made, codes=tuple(kept), redrawn=redrawn)


def iter_transactions(
    store: AnyStore,
    voucher_id: str,
    newest: str | None,
    *,
    descending: bool,
    chunk: int | None = None,
) -> Iterator[TransactionRecord]:
    """The voucher's transactions up to *newest* (the newest when the export began: later
    ones are left out, so the export is the log as of one instant), read *chunk* at a time by
    keyset (constant memory, each read served by the ``(voucher_id, seq)`` index).

    Args:
        newest: the id of the newest transaction to include (``None``: the log was empty).
        descending: newest first.
        chunk: transactions per read (default :data:`EXPORT_CHUNK`).
    """
    chunk = EXPORT_CHUNK if chunk is None else chunk
    if newest is None:
        return
    if descending:
        # start just above the newest: ids are fixed-width, so the next id bounds it
        after: str | None = transaction_id(transaction_seq(newest) + 1)
    else:
        after = None
    while True:
        page = store.transactions_page(voucher_id, after=after, descending=descending, limit=chunk)
        for tx in page:
            if not descending and tx.id > newest:
                return
            yield tx
        if len(page) < chunk:
            return
        after = page[-1].id
