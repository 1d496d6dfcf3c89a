"""CSV import of vouchers and export of the transaction log (README: "Transactions", "CSV
import").

Both directions stream: the export writes one row per transaction as the iterable yields it,
and the import reads one CSV record at a time. The only state the import keeps that grows with
the file is the set of codes seen so far (to report a code repeated within the file).

Export::

    fields = check_export_fields(["id", "amount", "created_at"])
    count = write_records_csv(store.transactions(voucher_id), out, fields)

Import::

    for row, parsed in parse_voucher_rows(file):
        if isinstance(parsed, ImportFailure):
            ...  # report it
        else:
            ...  # engine.create_voucher(**parsed) minus the redeemed_* counters
"""

from __future__ import annotations

import csv
import functools
import io
import json
import operator
import re
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, NoReturn, TextIO

import attrs

from vouchercore.domain.records import TransactionRecord
from vouchercore.domain.values import (
    INT64_MAX,
    MAX_CODE_LENGTH,
    DiscountType,
    VoucherType,
    text_problem,
)
from vouchercore.errors import InvalidExportFields, InvalidPayload

__all__ = [
    "EXPORT_FIELDS",
    "FIELD_SIZE_LIMIT",
    "IMPORT_COLUMNS",
    "ROW_SIZE_LIMIT",
    "ImportFailure",
    "ImportReport",
    "InvalidExportFields",
    "ParsedRow",
    "check_export_fields",
    "format_instant",
    "format_instant_us",
    "parse_instant",
    "parse_voucher_rows",
    "write_records_csv",
    "write_records_jsonl",
]

# --- export -------------------------------------------------------------------------------------

#: Every exportable transaction field, in the default column order.
EXPORT_FIELDS: Final[tuple[str, ...]] = (
    "id",
    "type",
    "source_id",
    "reason",
    "balance",
    "amount",
    "created_at",
    "voucher_id",
    "campaign_id",
    "source",
    "details",
    "related_transaction_id",
)

_FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")


def check_export_fields(fields: Sequence[str] | None) -> tuple[str, ...]:
    """The export columns asked for, checked.

    Args:
        fields: field names from :data:`EXPORT_FIELDS` (exact spelling, any order, each at most
            once), or ``None`` for all of them in the default order.

    Returns:
        The fields as a tuple, in the order given.

    Raises:
        InvalidExportFields: *fields* is a bare string, empty, names an unknown field, has a
            non-string entry, or repeats a field.
    """
    if fields is None:
        return EXPORT_FIELDS
    allowed = ", ".join(EXPORT_FIELDS)
    if isinstance(fields, str | bytes):
        raise InvalidExportFields(
            f"fields must be a sequence of field names such as ['id', 'amount'], "
            f"not a single string {fields!r}",
            details=f"allowed fields: {allowed}",
        )
    try:
        chosen = tuple(fields)
    except TypeError:
        raise InvalidExportFields(
            f"fields must be a sequence of field names, got {type(fields).__name__}",
            details=f"allowed fields: {allowed}",
        ) from None
    if not chosen:
        raise InvalidExportFields(
            "fields must name at least one field (or be None for all)",
            details=f"allowed fields: {allowed}",
        )
    seen: set[str] = set()
    for name in chosen:
        if not isinstance(name, str) or name not in EXPORT_FIELDS:
            raise InvalidExportFields(
                f"unknown export field {name!r}", details=f"allowed fields: {allowed}"
            )
        if name in seen:
            raise InvalidExportFields(f"export field {name!r} is given twice")
        seen.add(name)
    return chosen


def format_instant(value: datetime) -> str:
    """An instant as UTC ISO 8601 with milliseconds and ``Z``: ``2022-03-09T09:16:32.521Z``.

    Microseconds are truncated (not rounded) to milliseconds, so an instant is never shown
    later than it happened. A naive datetime is taken as UTC.

    Args:
        value: the instant.

    Returns:
        The formatted instant.
    """
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T"
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}."
        f"{value.microsecond // 1000:03d}Z"
    )


def _write_csv_rows(rows: Iterable[Sequence[str]], out: TextIO, fields: tuple[str, ...]) -> int:
    """Write the header *fields*, then each row of cells; how many rows."""
    writer = csv.writer(out, lineterminator="\n")
    # Older Pythons' csv.writer (3.11 among them) quotes a cell holding a character of the
    # line terminator but not a bare CR when the terminator is "\n": such a row would split
    # in two when read back. The rare row with a CR in a cell is written with every cell quoted.
    quoting_writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writerow(fields)
    count = 0

    def plain_rows() -> Iterator[Sequence[str]]:
        # handed to writerows, which writes each row as it is yielded: a row written here
        # with the quoting writer lands in its place
        nonlocal count
        for cells in rows:
            count += 1
            if "\r" in "".join(cells):
                quoting_writer.writerow(cells)
            else:
                yield cells

    writer.writerows(plain_rows())
    return count


_DAY_US: Final = 86_400 * 1_000_000
_EPOCH_DATE: Final = date(1970, 1, 1)
_json_text: Final[Callable[[str], str]] = json.encoder.encode_basestring_ascii


@functools.lru_cache(maxsize=1024)
def _day_text(day: int) -> str:
    """``YYYY-MM-DD`` of the *day*-th day after 1970-01-01."""
    return (_EPOCH_DATE + timedelta(days=day)).isoformat()


@functools.lru_cache(maxsize=4096)
def _minute_text(minute: int) -> str:
    """``YYYY-MM-DDTHH:MM:`` of the *minute*-th minute after the epoch."""
    day, minutes = divmod(minute, 1440)
    return f"{_day_text(day)}T{minutes // 60:02d}:{minutes % 60:02d}:"


def format_instant_us(us: int) -> str:
    """:func:`format_instant` of an instant in integer microseconds UTC (the stores' unit),
    without making a datetime: ``2022-03-09T09:16:32.521Z``."""
    minute, micro = divmod(us, 60_000_000)
    return f"{_minute_text(minute)}{micro // 1_000_000:02d}.{micro // 1000 % 1000:03d}Z"


def _text_cell(value: str | None) -> str:
    """A text cell: empty for None; ``'`` put before text a spreadsheet would read as a
    formula."""
    if value is None:
        return ""
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def _links_json(links: tuple[str, ...]) -> str:
    """The JSON of ``Transaction.details`` for stored links: compact, ASCII, keys sorted
    (``{"order":{"id":"o_1"},"redemption":{"id":"r_1"}}``)."""
    if len(links) == 4 and links[0] != links[2]:  # the common case: two kinds
        first, second = (0, 2) if links[0] < links[2] else (2, 0)
        return (
            f'{{{_json_text(links[first])}:{{"id":{_json_text(links[first + 1])}}},'
            f'{_json_text(links[second])}:{{"id":{_json_text(links[second + 1])}}}}}'
        )
    pairs = dict(zip(links[::2], links[1::2], strict=True))
    text = ",".join([f'{_json_text(k)}:{{"id":{_json_text(pairs[k])}}}' for k in sorted(pairs)])
    return "{" + text + "}"


def _record_csv_cells(tx: TransactionRecord, campaign: str) -> tuple[str, ...]:
    """Every export column of a stored transaction as CSV text, in :data:`EXPORT_FIELDS`
    order (*campaign*: the campaign cell, the same for every row)."""
    details = tx.details
    source_id, reason, source, related = (
        tx.source_id,
        tx.reason,
        tx.source,
        tx.related_transaction_id,
    )
    return (
        tx.id,
        tx.type.value,
        "" if source_id is None else _text_cell(source_id),
        "" if reason is None else _text_cell(reason),
        str(tx.balance),
        str(tx.amount),
        format_instant_us(tx.created_at),
        _text_cell(tx.voucher_id),
        campaign,
        "" if source is None else _text_cell(source),
        "" if details is None else _text_cell(_links_json(details)),
        "" if related is None else _text_cell(related),
    )


def _json_or_null(value: str | None) -> str:
    return "null" if value is None else _json_text(value)


def _record_json_values(tx: TransactionRecord, campaign: str) -> tuple[str, ...]:
    """Every export field of a stored transaction as JSON text, in :data:`EXPORT_FIELDS`
    order."""
    details = tx.details
    return (
        _json_text(tx.id),
        _json_text(tx.type.value),
        _json_or_null(tx.source_id),
        _json_or_null(tx.reason),
        str(tx.balance),
        str(tx.amount),
        '"' + format_instant_us(tx.created_at) + '"',
        _json_text(tx.voucher_id),
        campaign,
        _json_or_null(tx.source),
        "null" if details is None else _links_json(details),
        _json_or_null(tx.related_transaction_id),
    )


def _pick(fields: tuple[str, ...]) -> Callable[[tuple[str, ...]], tuple[str, ...]] | None:
    """Select *fields* from a tuple in :data:`EXPORT_FIELDS` order (None: all, as they are)."""
    if fields == EXPORT_FIELDS:
        return None
    positions = [EXPORT_FIELDS.index(name) for name in fields]
    if len(positions) == 1:
        only = positions[0]
        return lambda values: (values[only],)
    return operator.itemgetter(*positions)


def write_records_csv(
    records: Iterable[TransactionRecord],
    out: TextIO,
    fields: tuple[str, ...],
    *,
    campaign_id: str | None = None,
) -> int:
    """Write stored transaction records as CSV: a header row, then one row per transaction
    (what the engine's export streams; no :class:`~vouchercore.Transaction` is made).

    Streams: each record is written as the iterable yields it; nothing is collected.
    Instants are UTC ISO 8601 with milliseconds and ``Z``; ``details`` is compact JSON with
    sorted keys; ``None`` is an empty cell; ``type`` is its string value. Text cells that
    begin with ``=``, ``+``, ``-``, ``@``, tab or CR get a leading ``'`` (spreadsheet formula
    injection); the numeric columns ``balance`` and ``amount`` stay plain integers, negative
    ones included.

    Args:
        records: the stored transactions, in the order to write them.
        out: a text stream (open it with ``newline=""``); neither flushed nor closed.
        fields: the columns, as returned by :func:`check_export_fields`.
        campaign_id: the voucher's campaign (the ``campaign_id`` column).

    Returns:
        The number of data rows written (the header excluded).

    Raises:
        InvalidExportFields: *fields* is not a valid field selection (checked before
            anything is written).
    """
    fields = check_export_fields(fields)
    campaign = _text_cell(campaign_id)
    pick = _pick(fields)
    cells = (_record_csv_cells(tx, campaign) for tx in records)
    return _write_csv_rows(cells if pick is None else map(pick, cells), out, fields)


def write_records_jsonl(
    records: Iterable[TransactionRecord],
    out: TextIO,
    fields: tuple[str, ...],
    *,
    campaign_id: str | None = None,
) -> int:
    """Write stored transaction records as JSON Lines: one compact JSON object per line.

    Same field selection, order and formatting as :func:`write_records_csv`, but with JSON
    types: ``balance`` and ``amount`` are numbers, ``details`` an object (keys sorted),
    ``None`` is ``null``. No formula guard (JSON is not read by spreadsheets). Streams.

    Args:
        records: the stored transactions, in the order to write them.
        out: a text stream; neither flushed nor closed.
        fields: the keys, as returned by :func:`check_export_fields`, in this order.
        campaign_id: the voucher's campaign (the ``campaign_id`` key).

    Returns:
        The number of lines written.

    Raises:
        InvalidExportFields: *fields* is not a valid field selection (checked before
            anything is written).
    """
    fields = check_export_fields(fields)
    campaign = _json_or_null(campaign_id)
    pick = _pick(fields)
    keys = [json.dumps(name) + ":" for name in fields]
    count = 0
    write = out.write
    for tx in records:
        values = _record_json_values(tx, campaign)
        if pick is not None:
            values = pick(values)
        write("{" + ",".join([k + v for k, v in zip(keys, values, strict=True)]) + "}\n")
        count += 1
    return count


# --- import ------------------------------------------------------------------------------------

#: The longest CSV row the import reads, in characters, its line ends included (16 MiB): a
#: longer row is one bad row, skipped to its end without being held (see :class:`_Lines`).
ROW_SIZE_LIMIT: Final = 16 * 1024 * 1024
#: The largest CSV cell the import reads: a cell is never longer than its row, so the csv
#: module's own limit (which leaves its reader in the middle of a record) is never reached.
FIELD_SIZE_LIMIT: Final = ROW_SIZE_LIMIT
_ROW_SIZE_TEXT: Final = f"{ROW_SIZE_LIMIT // (1024 * 1024)} MiB ({ROW_SIZE_LIMIT:,} characters)"
_OVERSIZED_REASON: Final = (
    f"the row is longer than {_ROW_SIZE_TEXT}; it was skipped to its end without being read"
)
#: A text stream is read this many characters at a time (a longer line in several pieces).
_PIECE: Final = 1024 * 1024

#: The recognised headers (matched case-insensitively after trimming); others are metadata.
IMPORT_COLUMNS: Final[tuple[str, ...]] = (
    "Code",
    "Voucher Type",
    "Value",
    "Discount Type",
    "Category",
    "Start Date",
    "Expiration Date",
    "Redemption Limit",
    "Redeemed Quantity",
    "Redeemed Amount",
    "Active",
    "Additional Info",
)

_COLUMN_BY_HEADER: Final = {name.casefold(): name for name in IMPORT_COLUMNS}
_REQUIRED_COLUMNS: Final = ("Code", "Voucher Type")

_VOUCHER_TYPES: Final = {
    "DISCOUNT_VOUCHER": VoucherType.DISCOUNT_VOUCHER,
    "DISCOUNT": VoucherType.DISCOUNT_VOUCHER,
    "GIFT_VOUCHER": VoucherType.GIFT_VOUCHER,
    "GIFT": VoucherType.GIFT_VOUCHER,
    "LOYALTY_CARD": VoucherType.LOYALTY_CARD,
    "LOYALTY": VoucherType.LOYALTY_CARD,
}
_DISCOUNT_TYPES: Final = {
    "AMOUNT": DiscountType.AMOUNT,
    "PERCENT": DiscountType.PERCENT,
    "FIXED": DiscountType.FIXED,
}

_INTEGER: Final = re.compile(r"[0-9]+")
_DECIMAL: Final = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_NEGATIVE: Final = re.compile(r"-\s*(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_INSTANT: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:T([0-9]{2})(?::([0-9]{2})(?::([0-9]{2})(?:(?:\.([0-9]{3}))?(Z))?)?)?)?"
)
_DATE_FORMS: Final = (
    "YYYY-MM-DD, YYYY-MM-DDTHH, YYYY-MM-DDTHH:mm, YYYY-MM-DDTHH:mm:ss, "
    "YYYY-MM-DDTHH:mm:ssZ or YYYY-MM-DDTHH:mm:ss.SSSZ"
)
_INT64_DIGITS: Final = len(str(INT64_MAX))


@attrs.frozen
class ImportFailure:
    """One CSV row that was not imported.

    Attributes:
        code: the row's Code cell when it has one of at most 100 characters, else ``None``.
        row: 1-based row number, the header excluded (blank rows count).
        reason: what is wrong, in words a person can act on.
    """

    code: str | None
    row: int
    reason: str


@attrs.frozen
class ImportReport:
    """The outcome of a CSV import.

    Attributes:
        done_count: rows imported.
        failed_count: rows not imported.
        failed: each row not imported, in file order.
    """

    done_count: int
    failed_count: int
    failed: tuple[ImportFailure, ...]


class _BadRow(Exception):
    """Internal: the row cannot be imported, for *reason*."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@attrs.frozen
class _Layout:
    """Where each recognised column sits in a row, and the metadata columns."""

    width: int
    #: the cells of a row (with ``""`` appended) in the order of IMPORT_COLUMNS; an absent
    #: column reads the appended ``""``.
    pick: Callable[[list[str]], tuple[str, ...]]
    code_at: int  # position of the Code column
    metadata: tuple[tuple[int, str], ...]  # (position, metadata key)
    unnamed: tuple[int, ...]  # positions of columns with an empty header


class _Oversized(Exception):
    """Internal: the record being read is longer than :data:`ROW_SIZE_LIMIT`; it has been
    skipped to its end (the next line read starts the next record)."""


# Where a skipped record stands after a piece of text (the csv reader's states, strict, with
# the default dialect: ',' delimiter, '"' quote, doubled quotes, no escape character).
_FIELD_START: Final = 0  # a field starts here (a '"' opens a quoted field)
_UNQUOTED: Final = 1  # inside an unquoted field (a '"' is literal)
_QUOTED: Final = 2  # inside a quoted field (line ends are part of the cell)
_QUOTE: Final = 3  # just after a lone '"' in a quoted field (one more '"' makes a literal one)
_UNQUOTED_STOP: Final = re.compile(r',"|[\r\n]')  # what ends an unquoted stretch
_QUOTE_RUN: Final = re.compile('"+')


def _scan(text: str, state: int) -> int | None:
    """The state of a record after *text*, starting in *state*; ``None`` when the record
    ends in *text* — at a line end outside quotes, or where the strict csv reader gives up on
    the line (a closing quote followed by anything but ',' or a line end): either way the
    reader goes on with the next line. Jumps from one '"' or line end to the next (C speed)."""
    position = 0
    size = len(text)
    while position < size:
        if state == _QUOTED:
            quote = text.find('"', position)
            if quote < 0:
                return _QUOTED
            end = _QUOTE_RUN.match(text, quote).end()  # type: ignore[union-attr]
            position = end
            if (end - quote) % 2:  # pairs are literal quotes; an odd one closes the field
                state = _QUOTE
        elif state == _QUOTE:
            char = text[position]
            position += 1
            if char == '"':
                state = _QUOTED  # the pair of a '"' that ended the previous piece
            elif char == ",":
                state = _FIELD_START
            else:
                return None  # a line end, or the strict reader's "',' expected after '\"'"
        elif state == _FIELD_START and text[position] == '"':
            state = _QUOTED
            position += 1
        else:
            stop = _UNQUOTED_STOP.search(text, position)
            if stop is None:
                return _FIELD_START if text.endswith(",") else _UNQUOTED
            if stop.group() != ',"':
                return None
            state = _QUOTED
            position = stop.end()
    return state


class _Lines:
    """The lines of a CSV file as :func:`csv.reader` takes them, with the length of each
    record bounded by :data:`ROW_SIZE_LIMIT` (:func:`_lines` makes one).

    A record longer than that makes :meth:`__next__` raise :class:`_Oversized` instead of
    handing the reader its next line; by then the rest of the record has been read and
    dropped (tracking quotes the way the strict reader does), so the reader — which starts
    afresh after an exception from its input — begins its next record where the file's next
    record begins. Whoever reads the records sets :attr:`used` to 0 after each one.
    """

    __slots__ = ("used",)

    def __init__(self) -> None:
        #: characters of the current record handed to the reader so far
        self.used = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        raise NotImplementedError

    def _start_state(self) -> int:
        # a record goes on past a line end only inside a quoted field
        return _QUOTED if self.used else _FIELD_START


class _ItemLines(_Lines):
    """An iterable's items, each taken as the line it is (already in memory: only the
    records are bounded)."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[str]) -> None:
        super().__init__()
        self._items = iter(items)

    def __next__(self) -> str:
        line = next(self._items)
        try:
            used = self.used + len(line)
        except TypeError:
            return line  # not text: the reader says so
        if used > ROW_SIZE_LIMIT and isinstance(line, str):
            state = _scan(line, self._start_state())
            while state == _QUOTED:  # the record ends with the item unless inside quotes
                line = next(self._items, "")
                if not isinstance(line, str) or not line:
                    break
                state = _scan(line, state)
            self.used = 0
            raise _Oversized
        self.used = used
        return line


class _StreamLines(_Lines):
    """A text stream read :data:`_PIECE` characters at most at a time, so that even a line of
    gigabytes never sits in memory whole: a line is put together from its pieces only while
    its record stays within the limit."""

    __slots__ = ("_carry", "_read", "_readline")

    def __init__(self, stream: io.TextIOBase) -> None:
        super().__init__()
        self._carry = ""
        self._readline: Callable[[], str] = functools.partial(stream.readline, _PIECE)
        self._read: Callable[[], str] = self._readline

    def __next__(self) -> str:
        line = self._read()
        size = len(line)
        if size == _PIECE:
            return self._long_line(line)  # perhaps the first piece of a longer line
        if not size:
            raise StopIteration
        used = self.used + size
        if used > ROW_SIZE_LIMIT:
            self._skip([line])
        self.used = used
        return line

    def _from_carry(self) -> str:
        """The piece read ahead (after a line ending in a bare CR), then reading again."""
        self._read = self._readline
        piece, self._carry = self._carry, ""
        return piece

    def _carry_over(self, piece: str) -> None:
        self._carry = piece
        self._read = self._from_carry

    def _long_line(self, piece: str) -> str:
        """A line whose first piece is *piece* (:data:`_PIECE` characters)."""
        pieces: list[str] = []
        used = self.used
        while True:
            pieces.append(piece)
            used += len(piece)
            if used > ROW_SIZE_LIMIT:
                self._skip(pieces)
            if len(piece) < _PIECE or piece[-1] == "\n":
                break  # the line (or the file) ends here
            following = self._readline()
            if piece[-1] == "\r" and following != "\n":
                self._carry_over(following)  # a bare CR ended the line
                break
            piece = following
        self.used = used
        return "".join(pieces)

    def _skip(self, pieces: list[str]) -> NoReturn:
        """Drop the rest of the current record, whose line beginning with *pieces* makes it
        too long; raise :class:`_Oversized`."""
        state: int | None = self._start_state()
        for piece in pieces:
            if state is not None:  # else: the rest of the line, dropped below
                state = _scan(piece, state)
        last = pieces[-1]
        pieces.clear()
        while state is not None:
            last = self._read()
            if not last:
                break  # the file ends the record
            state = _scan(last, state)
        # the reader goes on at the next line: drop the rest of this one
        while len(last) == _PIECE and last[-1] != "\n":
            following = self._readline()
            if last[-1] == "\r":
                if following != "\n":
                    self._carry_over(following)
                break
            last = following
        self.used = 0
        raise _Oversized


def _lines(lines: Iterable[str]) -> _Lines:
    """The bounded lines of a text stream (:class:`io.TextIOBase`: a file, ``sys.stdin``,
    ``io.StringIO``) or of any other iterable of lines."""
    if isinstance(lines, io.TextIOBase):
        return _StreamLines(lines)
    return _ItemLines(lines)


def parse_voucher_rows(
    lines: Iterable[str], *, remember_codes: bool = True
) -> Iterator[tuple[int, ParsedRow | ImportFailure]]:
    """Parse a voucher CSV (README: "CSV import"), one row at a time.

    The header row is read and checked at once (so a file that cannot be imported at all
    raises here, before any row); the rows are then parsed lazily as the returned iterator
    is consumed. Memory does not grow with the file, apart from the set of codes seen.

    Headers are matched case-insensitively after trimming (a UTF-8 byte-order mark is
    ignored): ``Code, Voucher Type, Value, Discount Type, Category, Start Date,
    Expiration Date, Redemption Limit, Redeemed Quantity, Redeemed Amount, Active,
    Additional Info``. Every other header is a metadata key (its trimmed text); non-empty
    cells under it become string metadata values. A column with an empty header is ignored
    while its cells are empty.

    Each good row yields the keyword arguments of ``Engine.create_voucher`` — ``code``,
    ``type``, ``discount``, ``gift``, ``loyalty_card``, ``quantity``, ``active``,
    ``start_date``, ``expiration_date``, ``category``, ``additional_info``, ``metadata`` —
    plus ``redeemed_quantity`` and ``redeemed_amount`` (ints, 0 when empty), which
    ``create_voucher`` does not take. ``type`` is a :class:`VoucherType`; ``discount`` is
    ``{"type": "AMOUNT", "amount_off": n}``, ``{"type": "FIXED", "fixed_amount": n}`` or
    ``{"type": "PERCENT", "percent_off": Decimal}``; a gift card gets ``gift={"amount": n}``
    and a loyalty card ``loyalty_card={"points": n}`` (Value, 0 when empty). Blank rows are
    skipped (but counted).

    A row is bad (an :class:`ImportFailure`, and parsing goes on) when it has more or fewer
    cells than the header, is not valid CSV, holds a NUL character, is longer than
    :data:`ROW_SIZE_LIMIT` (16 MiB of characters, line ends included: one bad row however
    many lines its quoted cells span; it is skipped to its end, quotes tracked, and the next
    row is read), has a value under a header-less column, an invalid code, a code of an
    earlier good row, or any value that does not parse (the reason says which and why). Only
    good rows reserve their code.

    Memory: a text stream (:class:`io.TextIOBase`) is read 1 MiB at a time and a row is held
    only while it stays within the limit, so memory stays within about 6 × 16 MiB for ASCII
    text (the row, its pieces, the csv module's cell buffer of 4 bytes a character) and
    12 × 16 MiB at worst, whatever the length of a line. Other iterables' lines are already
    in memory (only the rows made of them are bounded).

    Note:
        Raises the process-wide :func:`csv.field_size_limit` to :data:`FIELD_SIZE_LIMIT`
        if it is lower (it is never lowered).

    Args:
        lines: the file, as an iterable of text lines (a file opened in text mode with
            ``newline=""``, or any iterable of str). A single ``str`` is read as the whole
            file's text.
        remember_codes: keep the set of codes seen, to report a code of an earlier good row
            (default). ``False`` keeps memory flat for any file: the caller then catches
            repeated codes itself (the engine's import: per batch, and through the store's
            uniqueness).

    Returns:
        An iterator of ``(row, parsed)``: *row* 1-based with the header excluded, *parsed*
        the keyword arguments or an :class:`ImportFailure`.

    Raises:
        InvalidPayload: the file is empty, not text (bytes, undecodable, NUL characters in
            the header), its first line is not a header (no ``Code`` or ``Voucher Type``
            column), or a header is repeated. Raised by this call for the header; an
            undecodable line further down raises while iterating.
    """
    if isinstance(lines, bytes | bytearray | memoryview):
        raise InvalidPayload("the CSV file is not text: got bytes; open it in text mode")
    if isinstance(lines, str):
        lines = io.StringIO(lines, newline="")
    try:
        items = lines if isinstance(lines, io.TextIOBase) else iter(lines)
    except TypeError:
        raise InvalidPayload(
            f"the CSV file must be an iterable of text lines, got {type(lines).__name__}"
        ) from None
    if csv.field_size_limit() < FIELD_SIZE_LIMIT:
        csv.field_size_limit(FIELD_SIZE_LIMIT)
    source = _lines(items)
    reader = csv.reader(source, strict=True)
    layout = _read_header(reader)
    source.used = 0
    return _rows(reader, source, layout, remember_codes)


def _read_header(reader: Iterator[list[str]]) -> _Layout:
    try:
        header = next(reader)
    except _Oversized:
        raise InvalidPayload(
            f"the CSV header row is longer than {_ROW_SIZE_TEXT}: the first line must be the "
            "header row naming the columns (at least Code and Voucher Type)"
        ) from None
    except StopIteration:
        raise InvalidPayload(
            "the CSV file is empty: its first line must be the header row naming the "
            "columns (at least Code and Voucher Type)"
        ) from None
    except UnicodeDecodeError as error:
        raise InvalidPayload(f"the CSV file is not UTF-8 text: {error}") from None
    except csv.Error as error:
        if "not bytes" in str(error):
            raise InvalidPayload(
                "the CSV file is not text: got bytes; open it in text mode"
            ) from None
        raise InvalidPayload(f"the CSV header row is not valid CSV: {error}") from None
    if header and header[0].startswith("\ufeff"):
        header[0] = header[0][1:]
    if any("\x00" in cell for cell in header):
        raise InvalidPayload("the CSV file is not text: its first line contains NUL characters")
    if not any(cell.strip() for cell in header):
        raise InvalidPayload(
            "the first line of the CSV file must be the header row naming the columns "
            "(at least Code and Voucher Type); it is empty"
        )
    index: dict[str, int] = {}
    metadata: list[tuple[int, str]] = []
    unnamed: list[int] = []
    seen: set[str] = set()
    for position, cell in enumerate(header):
        name = cell.strip()
        if not name:
            unnamed.append(position)
            continue
        folded = name.casefold()
        if folded in seen:
            raise InvalidPayload(f"the CSV header names the column {_show(name)} twice")
        seen.add(folded)
        column = _COLUMN_BY_HEADER.get(folded)
        if column is None:
            metadata.append((position, name))
        else:
            index[column] = position
    missing = [name for name in _REQUIRED_COLUMNS if name not in index]
    if missing:
        found = ", ".join(_show(cell) for cell in header[:20])
        if len(header) > 20:
            found += ", …"
        hint = ""
        if len(header) == 1 and ";" in header[0]:
            hint = "; it looks separated by ';' — the import expects commas"
        raise InvalidPayload(
            f"the CSV header has no {' or '.join(missing)} column; the first line must be "
            f"the header row (found: {found}){hint}"
        )
    width = len(header)
    return _Layout(
        width=width,
        pick=operator.itemgetter(*(index.get(name, width) for name in IMPORT_COLUMNS)),
        code_at=index["Code"],
        metadata=tuple(metadata),
        unnamed=tuple(unnamed),
    )


def _rows(
    reader: Iterator[list[str]], source: _Lines, layout: _Layout, remember_codes: bool
) -> Iterator[tuple[int, ParsedRow | ImportFailure]]:
    seen: set[str] = set()
    shapes: dict[tuple[str, ...], dict[str, Any]] = {}  # row cells (code blanked) → fields
    code_at = layout.code_at
    row = 0
    while True:
        row += 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError as error:
            raise InvalidPayload(
                f"the CSV file is not UTF-8 text (at row {row}): {error}"
            ) from None
        except _Oversized:
            yield row, ImportFailure(None, row, _OVERSIZED_REASON)
            continue
        except csv.Error as error:
            source.used = 0
            yield row, ImportFailure(None, row, _csv_error_reason(error))
            continue
        source.used = 0
        code_cell = cells[code_at] if code_at < len(cells) else ""
        if not code_cell.strip() and not any(cell.strip() for cell in cells):
            continue  # a blank row (or a row of empty cells): nothing to import
        shown_code = code_cell if 0 < len(code_cell) <= MAX_CODE_LENGTH else None
        # rows of a bulk file mostly repeat every cell but the code: a repeated row's fields
        # are parsed once (the code is still checked for every row)
        cells[code_at] = ""
        shape = tuple(cells)
        cells[code_at] = code_cell
        known = shapes.get(shape) if "\x00" not in code_cell else None
        try:
            if known is not None:
                parsed = _with_code(known, _code(code_cell), seen, shape)
            else:
                fields = _parse_row(cells, layout, seen)
                if len(shapes) >= _SHAPES_KEPT:
                    shapes.clear()
                shapes[shape] = fields
                parsed = _with_code(fields, fields["code"], (), shape)
        except _BadRow as bad:
            yield row, ImportFailure(shown_code, row, bad.reason)
            continue
        if remember_codes:
            seen.add(parsed["code"])
        yield row, parsed


#: How many distinct rows (all cells but the code) the parser keeps parsed at a time.
_SHAPES_KEPT: Final = 256
_NESTED: Final = ("discount", "gift", "loyalty_card", "metadata")


class ParsedRow(dict[str, Any]):
    """The keyword arguments of a good row (a plain dict to everyone else), with its
    ``shape``: the row's cells but the code. Rows of one shape differ only in their code, so
    a bulk import checks each shape's fields once (the engine keys its templates on it)."""

    __slots__ = ("shape",)

    shape: tuple[str, ...]


def _with_code(
    fields: dict[str, Any], code: str, seen: Container[str], shape: tuple[str, ...]
) -> ParsedRow:
    """A copy of a parsed row's *fields* (nested dicts copied too) with *code*."""
    if code in seen:
        raise _BadRow(f"Code {_show(code)} appears earlier in the file")
    parsed = ParsedRow(fields)
    parsed.shape = shape
    parsed["code"] = code
    for name in _NESTED:
        value = parsed[name]
        if value is not None:
            parsed[name] = value.copy()
    return parsed


def _csv_error_reason(error: csv.Error) -> str:
    text = str(error)
    if "field larger than field limit" in text:
        return f"the row has a cell longer than {FIELD_SIZE_LIMIT} characters"
    if "not bytes" in text:
        return "the row is not text"
    return f"the row is not valid CSV: {text}"


def _parse_row(cells: list[str], layout: _Layout, seen: set[str]) -> dict[str, Any]:
    """The ``create_voucher`` keyword arguments of one row, or :class:`_BadRow`."""
    if len(cells) != layout.width:
        raise _BadRow(f"the row has {len(cells)} cells but the header has {layout.width} columns")
    for text in cells:
        if "\x00" in text:
            position = next(i for i, cell in enumerate(cells) if "\x00" in cell)
            raise _BadRow(f"cell {position + 1} contains a NUL character")
    for position in layout.unnamed:
        if cells[position].strip():
            raise _BadRow(
                f"cell {position + 1} has the value {_show(cells[position])} but its column "
                "has no header"
            )
    cells.append("")  # what an absent column reads
    (
        code_cell,
        type_cell,
        value_cell,
        discount_cell,
        category_cell,
        start_cell,
        end_cell,
        limit_cell,
        redeemed_quantity_cell,
        redeemed_amount_cell,
        active_cell,
        info_cell,
    ) = layout.pick(cells)
    code = _code(code_cell)
    if code in seen:
        raise _BadRow(f"Code {_show(code)} appears earlier in the file")
    kind = _voucher_type(type_cell)
    discount, gift, loyalty_card, value = _value(kind, discount_cell, value_cell)
    quantity = _limit(limit_cell)
    redeemed_quantity = _counter(redeemed_quantity_cell, "Redeemed Quantity")
    redeemed_amount = _counter(redeemed_amount_cell, "Redeemed Amount")
    if quantity is not None and redeemed_quantity > quantity:
        raise _BadRow(
            f"Redeemed Quantity ({redeemed_quantity}) is more than the Redemption Limit "
            f"({quantity})"
        )
    if value is not None and redeemed_amount > value:
        raise _BadRow(
            f"Redeemed Amount ({redeemed_amount}) is more than the card's Value ({value})"
        )
    start = _instant(start_cell, "Start Date", end_of_day=False)
    end = _instant(end_cell, "Expiration Date", end_of_day=True)
    if start is not None and end is not None and start > end:
        raise _BadRow(
            f"Start Date ({format_instant(start)}) is after Expiration Date ({format_instant(end)})"
        )
    metadata: dict[str, str] | None = None
    for position, key in layout.metadata:
        text = cells[position]
        if text.strip():
            if metadata is None:
                metadata = {}
            metadata[key] = text
    return {
        "code": code,
        "type": kind,
        "discount": discount,
        "gift": gift,
        "loyalty_card": loyalty_card,
        "quantity": quantity,
        "active": _active(active_cell),
        "start_date": start,
        "expiration_date": end,
        "category": _text(category_cell),
        "additional_info": _text(info_cell),
        "metadata": metadata,
        "redeemed_quantity": redeemed_quantity,
        "redeemed_amount": redeemed_amount,
    }


def _show(value: str, limit: int = 40) -> str:
    """*value* quoted for a message, cut to *limit* characters."""
    if len(value) > limit:
        return repr(value[:limit]) + "…"
    return repr(value)


def _code(cell: str) -> str:
    problem = text_problem(cell, MAX_CODE_LENGTH)  # the same rule create_voucher applies
    if problem is not None:
        raise _BadRow(f"Code {problem}")
    return cell


def _voucher_type(cell: str) -> VoucherType:
    text = cell.strip()
    if not text:
        raise _BadRow("Voucher Type is empty; use DISCOUNT_VOUCHER, GIFT_VOUCHER or LOYALTY_CARD")
    kind = _VOUCHER_TYPES.get(text.upper())
    if kind is None:
        raise _BadRow(
            f"Voucher Type {_show(text)} is not one of DISCOUNT_VOUCHER, GIFT_VOUCHER, "
            "LOYALTY_CARD (or DISCOUNT, GIFT, LOYALTY)"
        )
    return kind


def _value(
    kind: VoucherType, discount_cell: str, value_cell: str
) -> tuple[dict[str, Any] | None, dict[str, int] | None, dict[str, int] | None, int | None]:
    """``(discount, gift, loyalty_card, card_value)`` for the row's type, Discount Type and
    Value; *card_value* is the opening credits or points of a card (None for a discount)."""
    discount_text = discount_cell.strip()
    value_text = value_cell.strip()
    if kind is not VoucherType.DISCOUNT_VOUCHER:
        if discount_text:
            raise _BadRow(
                f"Discount Type {_show(discount_text)} applies to DISCOUNT_VOUCHER only, "
                f"not {kind.value}; leave it empty"
            )
        amount = 0 if not value_text else _integer(value_text, "Value")
        if kind is VoucherType.GIFT_VOUCHER:
            return None, {"amount": amount}, None, amount
        return None, None, {"points": amount}, amount
    if not discount_text:
        raise _BadRow("Discount Type is empty; a DISCOUNT_VOUCHER needs AMOUNT, PERCENT or FIXED")
    discount = _DISCOUNT_TYPES.get(discount_text.upper())
    if discount is None:
        if discount_text.upper() == "UNIT":
            raise _BadRow(
                "Discount Type UNIT cannot be imported from CSV (there is no column for the "
                "unit type); create it with create_voucher"
            )
        raise _BadRow(f"Discount Type {_show(discount_text)} is not one of AMOUNT, PERCENT, FIXED")
    if not value_text:
        raise _BadRow(f"Value is empty; a {discount.value} discount needs one")
    if discount is DiscountType.PERCENT:
        return {"type": "PERCENT", "percent_off": _percent(value_text)}, None, None, None
    amount = _integer(value_text, "Value")
    if discount is DiscountType.AMOUNT:
        if amount == 0:
            raise _BadRow("Value must be greater than 0 for an AMOUNT discount")
        return {"type": "AMOUNT", "amount_off": amount}, None, None, None
    return {"type": "FIXED", "fixed_amount": amount}, None, None, None


def _integer(text: str, column: str) -> int:
    """A non-negative whole number of minor units, points or redemptions."""
    if not _INTEGER.fullmatch(text):
        if _NEGATIVE.fullmatch(text):
            raise _BadRow(f"{column} {_show(text)} must not be negative")
        if _DECIMAL.fullmatch(text):
            raise _BadRow(
                f"{column} {_show(text)} must be a whole number (amounts are in minor "
                "units: 1050 for 10.50)"
            )
        raise _BadRow(f"{column} {_show(text)} is not a number")
    digits = text.lstrip("0") or "0"
    if len(digits) > _INT64_DIGITS or int(digits) > INT64_MAX:
        raise _BadRow(f"{column} {_show(text)} is too large (at most {INT64_MAX})")
    return int(digits)


def _limit(cell: str) -> int | None:
    """Redemption Limit: a whole number ≥ 1, or ``None`` (unlimited) for an empty cell."""
    text = cell.strip()
    if not text:
        return None
    number = _integer(text, "Redemption Limit")
    if number < 1:
        raise _BadRow("Redemption Limit must be at least 1; leave it empty for unlimited")
    return number


def _counter(cell: str, column: str) -> int:
    """An imported counter: a whole number ≥ 0, 0 for an empty cell."""
    text = cell.strip()
    return _integer(text, column) if text else 0


def _percent(text: str) -> Decimal:
    """A percentage 0 < p ≤ 100 with at most 2 decimals (a trailing ``%`` is allowed)."""
    number_text = text[:-1].rstrip() if text.endswith("%") else text
    if not _DECIMAL.fullmatch(number_text):
        if _NEGATIVE.fullmatch(number_text):
            raise _BadRow(f"Value {_show(text)} must not be negative")
        raise _BadRow(f"Value {_show(text)} is not a percentage such as 12.5")
    if len(number_text) > 40:
        raise _BadRow(f"Value {_show(text)} is not a percentage from 0 to 100")
    number = Decimal(number_text)
    if not 0 < number <= 100:
        raise _BadRow(f"Value {_show(text)} must be a percentage greater than 0 and at most 100")
    if (number * 100) != (number * 100).to_integral_value():
        raise _BadRow(f"Value {_show(text)} may have at most 2 decimals")
    return number


def _instant(cell: str, column: str, *, end_of_day: bool) -> datetime | None:
    """An aware UTC instant in one of the six accepted forms, or ``None`` for an empty cell.

    A date alone is the start of that day, or with *end_of_day* its last microsecond.
    """
    text = cell.strip()
    if not text:
        return None
    match = _INSTANT.fullmatch(text)
    if match is None:
        raise _BadRow(f"{column} {_show(text)} is not in a supported form ({_DATE_FORMS})")
    year, month, day, hour, minute, second, millis, _zone = match.groups()
    try:
        if hour is None and end_of_day:
            return datetime(int(year), int(month), int(day), 23, 59, 59, 999_999, tzinfo=UTC)
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int(millis or 0) * 1000,
            tzinfo=UTC,
        )
    except ValueError:
        raise _BadRow(f"{column} {_show(text)} is not a valid date") from None


def parse_instant(text: str, name: str, *, end_of_day: bool) -> datetime | None:
    """An instant in one of the six forms of the CSV import (a date alone is the start of the
    day, or with *end_of_day* its last microsecond; no zone means UTC); ``None`` for blank
    text. For other front ends (the ``vouchercore`` command).

    Raises:
        InvalidPayload: not one of the forms, or not a date (``2026-02-30``); the message
            names *name*.
    """
    try:
        return _instant(text, name, end_of_day=end_of_day)
    except _BadRow as bad:
        raise InvalidPayload(bad.reason) from None


def _active(cell: str) -> bool:
    text = cell.strip().casefold()
    if not text or text == "true":
        return True
    if text == "false":
        return False
    raise _BadRow(f"Active {_show(cell.strip())} must be true or false (empty means true)")


def _text(cell: str) -> str | None:
    """Free text kept as written; a blank cell is ``None``."""
    return cell if cell.strip() else None
