"""What the SQL stores share: the rows of each table (their layouts come from the schema in
:mod:`vouchercore.stores._schema`), rows ↔ records by column name, and the unit of work that
remembers what the domain changed so a store can write it in one database transaction.

Nothing here decides a voucher rule. A SQL unit of work is loaded from rows (the voucher, locked
by the store, and its stored sessions), handed to the domain, which changes ``unit.record`` in
place and reports everything else it changes; :meth:`SqlUnit.changes` then lists the writes —
the voucher's new counters, sessions deleted and inserted, transactions, redemptions and
rollbacks appended — and the store renders them in its own dialect.

Instants are integer microseconds UTC here (the domain's unit); SQLite stores them as such,
PostgreSQL converts them to ``timestamptz`` at its boundary (at the positions each layout's
``instants`` names). Free JSON (discount, metadata, a transaction's links) is JSON text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Final

import attrs

from vouchercore.domain import idempotency
from vouchercore.domain.idempotency import KeyRecord
from vouchercore.domain.instants import to_us
from vouchercore.domain.records import (
    Discount,
    Links,
    LoyaltyRecord,
    PointsBucket,
    SessionRecord,
    TransactionRecord,
    VoucherInfo,
    VoucherRecord,
    VoucherSessions,
    VoucherState,
    transaction_id,
    transaction_seq,
)
from vouchercore.domain.rows import TRANSACTION_FIELDS, TransactionRows
from vouchercore.domain.snapshots import ParentRedemption, Redemption, RedemptionRollback
from vouchercore.domain.values import DiscountType, VoucherType
from vouchercore.ports import SessionCounts
from vouchercore.stores import _schema
from vouchercore.stores._schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    SESSION_REASONS,
    schema_problem,
)

__all__ = [
    "CODE_PAGE",
    "COUNTERS",
    "COUNTER_COLUMNS",
    "DETACHED_SESSION",
    "KEYS",
    "KEY_COLUMNS",
    "MIGRATIONS",
    "PARENTS",
    "PARENT_COLUMNS",
    "REDEMPTIONS",
    "REDEMPTION_COLUMNS",
    "ROLLBACKS",
    "ROLLBACK_COLUMNS",
    "SCHEMA_VERSION",
    "SESSIONS",
    "SESSION_COLUMNS",
    "SESSION_REASONS",
    "TRANSACTIONS",
    "TRANSACTION_COLUMNS",
    "VOUCHERS",
    "VOUCHER_COLUMNS",
    "VOUCHER_MUTABLE",
    "VOUCHER_MUTABLE_COLUMNS",
    "Changes",
    "SqlUnit",
    "counters_of",
    "detached_session",
    "first_seq_above",
    "key_from_row",
    "key_row",
    "paged_codes",
    "parent_from_row",
    "parent_id",
    "parent_row",
    "read_transactions_page",
    "record_from_row",
    "redemption_from_row",
    "redemption_voucher_id",
    "schema_problem",
    "session_counts_from_row",
    "session_key",
    "session_row",
    "session_voucher_id",
    "transaction_from_row",
    "transaction_row",
    "voucher_id",
    "voucher_row",
    "voucher_state",
]

# --- layouts: every position in a row comes from here ----------------------------------------

VOUCHERS: Final = _schema.VOUCHERS.layout
SESSIONS: Final = _schema.SESSIONS.layout
TRANSACTIONS: Final = _schema.TRANSACTIONS.layout
#: The columns of a redemption: its table's but ``seq`` (the database numbers the log).
REDEMPTIONS: Final = _schema.REDEMPTIONS.layout.subset(
    c.name for c in _schema.REDEMPTIONS.columns if c.type != "identity"
)
ROLLBACKS: Final = _schema.ROLLBACKS.layout
KEYS: Final = _schema.IDEMPOTENCY_KEYS.layout
#: The columns of a parent redemption.
PARENTS: Final = _schema.PARENT_REDEMPTIONS.layout
#: The voucher columns an operation may change, in the order :meth:`Changes.voucher` lists them.
VOUCHER_MUTABLE: Final = VOUCHERS.subset(
    (
        "state",
        "redeemed_quantity",
        "redeemed_amount",
        "total",
        "balance",
        "updated_at",
        "expired_points",
        "points_buckets",
        "points_due_at",
        "sessions_opened",
        *(f"sessions_{reason}" for reason in SESSION_REASONS),
    )
)
#: A session read by a sweep: its columns, then its voucher's code.
DETACHED_SESSION: Final = SESSIONS.extended("code")

VOUCHER_COLUMNS: Final = VOUCHERS.names
VOUCHER_MUTABLE_COLUMNS: Final = VOUCHER_MUTABLE.names
SESSION_COLUMNS: Final = SESSIONS.names
TRANSACTION_COLUMNS: Final = TRANSACTIONS.names
#: Same names as :attr:`Redemption.FIELDS` (``date`` is microseconds).
REDEMPTION_COLUMNS: Final = REDEMPTIONS.names
ROLLBACK_COLUMNS: Final = ROLLBACKS.names
KEY_COLUMNS: Final = KEYS.names
PARENT_COLUMNS: Final = PARENTS.names

#: The voucher's session counters (opened, then resolved by each of :data:`SESSION_REASONS`).
COUNTERS: Final = VOUCHERS.since("sessions_opened")
COUNTER_COLUMNS: Final = VOUCHER_COLUMNS[COUNTERS]
#: Named values of a row (voucher, session, redemption).
voucher_id: Final = VOUCHERS.getter("id")
voucher_state: Final = VOUCHERS.getter("state")
session_voucher_id: Final = SESSIONS.getter("voucher_id")
session_key: Final = SESSIONS.getter("key")
redemption_voucher_id: Final = REDEMPTIONS.getter("voucher_id")
parent_id: Final = PARENTS.getter("id")


def counters_of(row: Sequence[Any]) -> list[int]:
    """The session counters of a voucher row, as the unit's mutable list."""
    return list(row[COUNTERS])


_VOUCHER_TYPES: Final = {t.value: t for t in VoucherType}
_STATES: Final = tuple(VoucherState)


def session_counts_from_row(row: Sequence[int]) -> SessionCounts:
    """The audit's session bookkeeping from one row: sessions opened, then resolved by each of
    :data:`SESSION_REASONS` (sums of the vouchers' counters), then sessions stored."""
    return SessionCounts(
        opened=row[0],
        resolved={r: n for r, n in zip(SESSION_REASONS, row[1:-1], strict=True) if n},
        stored=row[-1],
    )


#: How many codes :func:`paged_codes` reads at a time.
CODE_PAGE: Final = 1000


def paged_codes(read_page: Callable[[str], Sequence[Sequence[Any]]]) -> Iterator[str]:
    """Every code, in code order, read :data:`CODE_PAGE` at a time: ``read_page(after)`` returns
    the next rows ``(code,)`` with ``code > after`` (keyset pagination: no long-held cursor)."""
    after = ""
    while True:
        rows = read_page(after)
        for (code,) in rows:
            yield code
        if len(rows) < CODE_PAGE:
            return
        after = rows[-1][0]


#: The largest transaction seq a SQL store can hold (a signed 64-bit integer column).
_MAX_SEQ: Final = 2**63 - 1


def first_seq_above(after: str, *, strictly: bool = True) -> int:
    """The smallest transaction seq whose id sorts after *after* (``>``, or ``>=`` when not
    *strictly*): the keyset bound of a transaction cursor, for any string *after* (ids are
    fixed-width and sort as their seqs, so the bound is found by bisection over the seqs).

    A cursor above every id gives a bound above every seq (clamped to a signed 64-bit value).
    """
    low, high = 0, 16**18  # transaction ids have 18 hex digits
    while low < high:
        middle = (low + high) // 2
        tx_id = transaction_id(middle)
        if tx_id > after or (not strictly and tx_id == after):
            high = middle
        else:
            low = middle + 1
    return min(low, _MAX_SEQ)


def read_transactions_page(
    read: Callable[[str, Sequence[Any]], Sequence[Sequence[Any]]],
    select: str,
    mark: str,
    voucher_id: str,
    *,
    after: str | None,
    descending: bool,
    offset: int,
    limit: int,
    convert: Callable[[Sequence[Any]], Sequence[Any]] | None = None,
) -> list[TransactionRecord]:
    """``Store.transactions_page`` for a SQL store: one keyset query, served by the
    ``(voucher_id, seq)`` index.

    Args:
        read: runs a statement with parameters and returns its rows.
        select: the columns of :data:`TRANSACTION_COLUMNS` of one voucher's transactions,
            ending in ``WHERE voucher_id = <placeholder>``.
        mark: the dialect's placeholder (``?`` or ``%s``).
        convert: what the store does to a row before :func:`transaction_from_row` (instants).
    """
    if descending:
        bound = _MAX_SEQ if after is None else first_seq_above(after, strictly=False)
        sql = f"{select} AND seq < {mark} ORDER BY seq DESC LIMIT {mark} OFFSET {mark}"
    else:
        bound = 0 if after is None else first_seq_above(after)
        sql = f"{select} AND seq >= {mark} ORDER BY seq LIMIT {mark} OFFSET {mark}"
    rows = read(sql, (voucher_id, bound, limit, offset))
    if convert is not None:
        rows = [convert(row) for row in rows]
    return [transaction_from_row(row) for row in rows]


# --- values ----------------------------------------------------------------------------------


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), sort_keys=True)


def _unjson(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _discount_json(discount: Discount | None) -> str | None:
    if discount is None:
        return None
    fields = attrs.asdict(discount)
    fields["type"] = discount.type.value
    return _json({k: v for k, v in fields.items() if v is not None})


def _discount_from_json(text: str | None) -> Discount | None:
    if text is None:
        return None
    fields = json.loads(text)
    fields["type"] = DiscountType(fields["type"])
    return Discount(**fields)


# --- vouchers --------------------------------------------------------------------------------

#: The columns of a voucher's :class:`VoucherInfo`, in its fields' order.
_INFO_COLUMNS: Final = (
    "category",
    "additional_info",
    "metadata",
    "campaign_id",
    "opening_redeemed_quantity",
    "opening_redeemed_amount",
)
#: A new voucher's values, given in this order, put in column order.
_ARRANGE_VOUCHER: Final = VOUCHERS.arrange(
    "id",
    "code",
    "type",
    "state",
    "quantity",
    "redeemed_quantity",
    "redeemed_amount",
    "total",
    "balance",
    "discount",
    "start_date",
    "expiration_date",
    *_INFO_COLUMNS,
    "created_at",
    "updated_at",
    "expired_points",
    "points_buckets",
    "points_due_at",
    *COUNTER_COLUMNS,
)


def voucher_row(record: VoucherRecord) -> tuple[Any, ...]:
    """A new voucher's row, in :data:`VOUCHER_COLUMNS` order (no sessions yet: counters 0)."""
    info = record.info or VoucherInfo()
    return _ARRANGE_VOUCHER(
        (
            record.id,
            record.code,
            record.type.value,
            int(record.state),
            record.quantity,
            record.redeemed_quantity,
            record.redeemed_amount,
            record.total,
            record.balance,
            _discount_json(record.discount),
            record.start_date,
            record.expiration_date,
            info.category,
            info.additional_info,
            _json(info.metadata),
            info.campaign_id,
            info.opening_redeemed_quantity,
            info.opening_redeemed_amount,
            record.created_at,
            record.updated_at,
            *_points_state(record),
            *(0 for _ in COUNTER_COLUMNS),
        )
    )


#: Columns read as the record's constructor arguments of the same name.
_RECORD_ARGUMENTS: Final = (
    "id",
    "code",
    "quantity",
    "redeemed_quantity",
    "redeemed_amount",
    "total",
    "balance",
    "start_date",
    "expiration_date",
    "created_at",
    "updated_at",
)
_READ_ARGUMENTS: Final = VOUCHERS.getter(*_RECORD_ARGUMENTS)
_READ_INFO: Final = VOUCHERS.getter(*_INFO_COLUMNS)
_READ_REST: Final = VOUCHERS.getter("type", "state", "discount", "expired_points", "points_buckets")
#: A stored session's values, in :class:`SessionRecord`'s order after its voucher.
_READ_SESSION: Final = SESSIONS.getter("key", "credits", "points", "created_at", "expires_at")


def record_from_row(row: Sequence[Any], sessions: Iterable[Sequence[Any]] = ()) -> VoucherRecord:
    """The voucher record of a row in :data:`VOUCHER_COLUMNS` order, with its stored *sessions*
    (rows in :data:`SESSION_COLUMNS` order)."""
    type_, state, discount, expired_points, points_buckets = _READ_REST(row)
    category, additional_info, metadata, campaign_id, opening_quantity, opening_amount = _READ_INFO(
        row
    )
    has_info = (
        category is not None
        or additional_info is not None
        or metadata is not None
        or campaign_id is not None
        or opening_quantity
        or opening_amount
    )
    info = (
        VoucherInfo(
            category=category,
            additional_info=additional_info,
            metadata=_unjson(metadata),
            campaign_id=campaign_id,
            opening_redeemed_quantity=opening_quantity,
            opening_redeemed_amount=opening_amount,
        )
        if has_info
        else None
    )
    kind = _VOUCHER_TYPES[type_]
    points: dict[str, Any] = {}
    if kind is VoucherType.LOYALTY_CARD:
        points["expired_points"] = expired_points
        if points_buckets is not None:
            points["buckets"] = [PointsBucket(*b) for b in json.loads(points_buckets)]
    record = VoucherRecord.new(
        kind,
        **points,
        **dict(zip(_RECORD_ARGUMENTS, _READ_ARGUMENTS(row), strict=True)),
        discount=_discount_from_json(discount),
        active=True,
        info=info,
    )
    record.state = _STATES[state]
    ledger = None
    for s in sessions:
        if ledger is None:
            ledger = record.sessions = VoucherSessions()
        ledger.add(SessionRecord(record, *_READ_SESSION(s)))
    return record


def _points_state(record: VoucherRecord) -> tuple[int, str | None, int | None]:
    """``expired_points``, ``points_buckets`` (JSON) and ``points_due_at`` of a record."""
    if not isinstance(record, LoyaltyRecord):
        return (0, None, None)
    buckets = record.buckets
    return (
        record.expired_points,
        None if not buckets else _json([b.as_list() for b in buckets]),
        record.points_due_at,
    )


def _mutable_state(record: VoucherRecord, counters: Sequence[int]) -> tuple[Any, ...]:
    """The values of :data:`VOUCHER_MUTABLE_COLUMNS` (that layout is this list of names)."""
    return (
        int(record.state),
        record.redeemed_quantity,
        record.redeemed_amount,
        record.total,
        record.balance,
        record.updated_at,
        *_points_state(record),
        *counters,
    )


# --- sessions, transactions, redemptions, keys -----------------------------------------------

_READ_DETACHED: Final = DETACHED_SESSION.getter(
    "voucher_id", "code", "key", "credits", "points", "created_at", "expires_at"
)


def detached_session(row: Sequence[Any]) -> SessionRecord:
    """A session read outside a unit of work (by a sweep): a row in :data:`DETACHED_SESSION`
    order (the session's columns, then the voucher's code). Its ``voucher`` is a stand-in
    naming only the voucher's id and code — enough to open a unit on it, which then reads the
    session as stored."""
    voucher_id_, code, key, credits, points, created_at, expires_at = _READ_DETACHED(row)
    voucher = VoucherRecord(
        id=voucher_id_,
        code=code,
        quantity=None,
        active=True,
        start_date=None,
        expiration_date=None,
        info=None,
        created_at=0,
    )
    return SessionRecord(voucher, key, credits, points, created_at, expires_at)


_ARRANGE_SESSION: Final = SESSIONS.arrange(
    "voucher_id", "key", "credits", "points", "created_at", "expires_at"
)


def session_row(session: SessionRecord) -> tuple[Any, ...]:
    """A session's row, in :data:`SESSION_COLUMNS` order."""
    return _ARRANGE_SESSION(
        (
            session.voucher.id,
            session.key,
            session.credits,
            session.points,
            session.created_at,
            session.expires_at,
        )
    )


def _links_from_json(text: str) -> Links:
    """Stored links (a compact JSON list of strings) as a tuple. Without a backslash no string
    in it holds an escape or a quote, so splitting at ``","`` is exact (and 10× faster than
    :func:`json.loads`, which is used otherwise)."""
    if "\\" in text:
        return tuple(json.loads(text))
    if text == "[]":
        return ()
    return tuple(text[2:-2].split('","'))


def _links_to_json(links: Links) -> str | None:
    return _json(list(links))


#: The one transaction-row codec (:class:`~vouchercore.domain.rows.TransactionRows`), as a
#: table keeps it: the id as its sequence number, the links as one column of JSON text.
_TRANSACTION_ROWS: Final = TransactionRows(
    id_to_row=transaction_seq,
    id_from_row=transaction_id,
    links_to_row=_links_to_json,
    links_from_row=_links_from_json,
)
#: the codec's field order, with the seq in place of the id and the links last
_TRANSACTION_ORDER: Final = ("seq", *TRANSACTION_FIELDS[1:], "details")
_ARRANGE_TRANSACTION: Final = TRANSACTIONS.arrange(*_TRANSACTION_ORDER)
_READ_TRANSACTION: Final = TRANSACTIONS.getter(*_TRANSACTION_ORDER)


def transaction_row(tx: TransactionRecord) -> tuple[Any, ...]:
    """A transaction's row, in :data:`TRANSACTION_COLUMNS` order (links as JSON text)."""
    return _ARRANGE_TRANSACTION(_TRANSACTION_ROWS.row(tx))


def transaction_from_row(row: Sequence[Any]) -> TransactionRecord:
    """The transaction of a row in :data:`TRANSACTION_COLUMNS` order."""
    return _TRANSACTION_ROWS.record(_READ_TRANSACTION(row))


#: A redemption's row (:meth:`Redemption.to_row`, in ``Redemption.FIELDS`` order) in column
#: order, and back; ``metadata`` is JSON text in the database.
_ARRANGE_REDEMPTION: Final = REDEMPTIONS.arrange(*Redemption.FIELDS)
_READ_REDEMPTION: Final = REDEMPTIONS.getter(*Redemption.FIELDS)
_METADATA_NAMES: Final = ("metadata", "order_metadata", "customer_metadata")
_REDEMPTION_METADATA: Final = tuple(REDEMPTIONS.index(name) for name in _METADATA_NAMES)
_FIELDS_METADATA: Final = tuple(Redemption.FIELDS.index(name) for name in _METADATA_NAMES)


def redemption_row(redemption: Redemption) -> tuple[Any, ...]:
    """A redemption's row, in :data:`REDEMPTION_COLUMNS` order (metadata as JSON)."""
    row = list(_ARRANGE_REDEMPTION(redemption.to_row()))
    for at in _REDEMPTION_METADATA:
        if row[at] is not None:
            row[at] = _json(row[at])
    return tuple(row)


def redemption_from_row(row: Sequence[Any]) -> Redemption:
    """The redemption of a row in :data:`REDEMPTION_COLUMNS` order."""
    fields = list(_READ_REDEMPTION(row))
    for at in _FIELDS_METADATA:
        if fields[at] is not None:
            fields[at] = _unjson(fields[at])
    return Redemption.from_row(tuple(fields))


_ARRANGE_ROLLBACK: Final = ROLLBACKS.arrange(
    "id",
    "redemption_id",
    "voucher_id",
    "voucher_code",
    "amount",
    "reason",
    "date",
    "transaction_id",
)


def rollback_row(rollback: RedemptionRollback) -> tuple[Any, ...]:
    """A rollback's row, in :data:`ROLLBACK_COLUMNS` order (``date`` in microseconds)."""
    return _ARRANGE_ROLLBACK(
        (
            rollback.id,
            rollback.redemption_id,
            rollback.voucher_id,
            rollback.voucher_code,
            rollback.amount,
            rollback.reason,
            to_us(rollback.date),
            rollback.transaction_id,
        )
    )


_KEY_FIELDS: Final = tuple(field.name for field in attrs.fields(KeyRecord))
_ARRANGE_KEY: Final = KEYS.arrange(*_KEY_FIELDS)
_READ_KEY: Final = KEYS.getter(*_KEY_FIELDS)


def key_row(record: KeyRecord) -> tuple[Any, ...]:
    """An idempotency key record's row, in :data:`KEY_COLUMNS` order."""
    return _ARRANGE_KEY(attrs.astuple(record))


def key_from_row(row: Sequence[Any]) -> KeyRecord:
    """The idempotency key record of a row in :data:`KEY_COLUMNS` order."""
    return KeyRecord(*_READ_KEY(row))


_PARENT_BODY: Final = PARENTS.index("body")


def parent_row(parent: ParentRedemption) -> tuple[Any, ...]:
    """A parent redemption's row, in :data:`PARENT_COLUMNS` order: its id, status and date
    (µs) beside the whole parent as the domain's codec writes it."""
    return PARENTS.arrange("id", "status", "date", "body")(
        (parent.id, parent.status.value, to_us(parent.date), idempotency.encode(parent))
    )


def parent_from_row(row: Sequence[Any]) -> ParentRedemption:
    """The parent redemption of a row in :data:`PARENT_COLUMNS` order."""
    return idempotency.decode(ParentRedemption, row[_PARENT_BODY])


# --- the unit of work ------------------------------------------------------------------------


@attrs.frozen
class Changes:
    """The writes one unit of work makes, in the order a store must apply them.

    ``voucher`` — the new values of :data:`VOUCHER_MUTABLE_COLUMNS` (None when unchanged);
    ``session_deletes`` — keys of stored sessions to delete; ``session_inserts`` — rows to
    insert (after the deletes: a same-key override deletes then inserts);
    ``redemption_updates`` — ``(status, rollback_id, id)`` of redemptions rolled back;
    ``purged`` — delete the voucher and everything of it instead (key records are
    store-wide: written either way); ``keys`` — idempotency key records to upsert
    (:data:`KEY_COLUMNS` order); ``key_placeholders`` — keys whose claim wrote a placeholder row
    (PostgreSQL) that no record replaces: delete them; ``parents`` — parent redemption rows
    to insert (:data:`PARENT_COLUMNS` order), ``parent_updates`` — ``(status, body, id)`` of
    parents rolled back (both store-wide: written either way).
    """

    voucher_id: str
    voucher: tuple[Any, ...] | None
    session_deletes: list[str]
    session_inserts: list[tuple[Any, ...]]
    transactions: list[tuple[Any, ...]]
    redemptions: list[tuple[Any, ...]]
    redemption_updates: list[tuple[Any, ...]]
    rollbacks: list[tuple[Any, ...]]
    purged: bool
    keys: list[tuple[Any, ...]] = attrs.Factory(list)
    key_placeholders: list[str] = attrs.Factory(list)
    parents: list[tuple[Any, ...]] = attrs.Factory(list)
    parent_updates: list[tuple[Any, ...]] = attrs.Factory(list)

    @property
    def empty(self) -> bool:
        """Nothing to write (a read, or a check that failed)."""
        return not (
            self.keys
            or self.key_placeholders
            or self.parents
            or self.parent_updates
            or self.voucher
            or self.session_deletes
            or self.session_inserts
            or self.transactions
            or self.redemptions
            or self.redemption_updates
            or self.rollbacks
            or self.purged
        )


class SqlUnit:
    """A unit of work of a SQL store: the voucher as loaded, and what the domain changed.

    ``counters`` are the voucher's session bookkeeping (opened, then resolved by each of
    :data:`SESSION_REASONS`), kept on its row so that the audit's store-wide session check is
    a sum, and no store-wide counter row serialises operations on different vouchers.
    ``handle`` is the store's own (its connection).
    """

    __slots__ = (
        "_added",
        "_before",
        "_loaded_keys",
        "_next_tx",
        "_removed",
        "counters",
        "handle",
        "kept",
        "parent_updates",
        "parents",
        "placeholders",
        "purged",
        "record",
        "redemption_updates",
        "redemptions",
        "rollbacks",
        "transactions",
    )

    def __init__(
        self,
        record: VoucherRecord,
        counters: list[int],
        handle: Any,
        next_transaction_seq: Callable[[], int],
    ) -> None:
        self.record = record
        self.counters = counters
        self.handle = handle
        self._next_tx = next_transaction_seq
        self._before = _mutable_state(record, counters)
        self._loaded_keys = set(record.sessions.by_key) if record.sessions else set()
        self._added: dict[str, SessionRecord] = {}
        self._removed: set[str] = set()
        self.transactions: list[TransactionRecord] = []
        self.redemptions: list[Redemption] = []
        self.redemption_updates: list[Redemption] = []
        self.rollbacks: list[RedemptionRollback] = []
        self.purged = False
        #: idempotency key records to write at commit, and keys whose claim wrote a
        #: placeholder row (a store that needs one to make other claims wait)
        self.kept: list[KeyRecord] = []
        self.placeholders: list[str] = []
        #: parents of stacked redemptions recorded, and rolled back, by this unit
        self.parents: list[ParentRedemption] = []
        self.parent_updates: list[ParentRedemption] = []

    def __repr__(self) -> str:
        return f"SqlUnit({self.record.code!r})"

    # --- VoucherUnit -----------------------------------------------------------------------

    def session_added(self, session: SessionRecord) -> None:
        self._added[session.key] = session
        self.counters[0] += 1

    def session_removed(self, session: SessionRecord, reason: str) -> None:
        self._added.pop(session.key, None)  # added earlier in this unit: never written
        self._removed.add(session.key)  # deleted at commit if it was stored before
        self.counters[1 + SESSION_REASONS.index(reason)] += 1

    def transaction_added(self, tx: TransactionRecord) -> None:
        self.transactions.append(tx)

    def redemption_added(self, redemption: Redemption) -> None:
        self.redemptions.append(redemption)

    def redemption_replaced(self, redemption: Redemption) -> None:
        self.redemption_updates.append(redemption)

    def rollback_added(self, rollback: RedemptionRollback) -> None:
        self.rollbacks.append(rollback)

    def parent_added(self, parent: ParentRedemption) -> None:
        self.parents.append(parent)

    def parent_replaced(self, parent: ParentRedemption) -> None:
        self.parent_updates.append(parent)

    def voucher_purged(self) -> None:
        self.purged = True

    def next_transaction_id(self) -> str:
        return transaction_id(self._next_tx())

    # --- for the store ---------------------------------------------------------------------

    def changes(self) -> Changes:
        """What to write at commit."""
        after = _mutable_state(self.record, self.counters)
        return Changes(
            voucher_id=self.record.id,
            voucher=after if after != self._before else None,
            session_deletes=sorted(self._removed & self._loaded_keys),
            session_inserts=[session_row(s) for s in self._added.values()],
            transactions=[transaction_row(tx) for tx in self.transactions],
            redemptions=[redemption_row(r) for r in self.redemptions],
            redemption_updates=[
                (r.status.value, r.rollback_id, r.id) for r in self.redemption_updates
            ],
            rollbacks=[rollback_row(r) for r in self.rollbacks],
            purged=self.purged,
            keys=[key_row(r) for r in self.kept],
            key_placeholders=[k for k in self.placeholders if all(r.key != k for r in self.kept)],
            parents=[parent_row(p) for p in self.parents],
            parent_updates=[
                (p.status.value, idempotency.encode(p), p.id) for p in self.parent_updates
            ],
        )
