"""What the SQL stores share: the row layout of each table, rows ↔ records, and the unit of work
that remembers what the domain changed so a store can write it in one database transaction.

Nothing here decides a voucher rule. A SQL unit of work is loaded from rows (the voucher, locked
by the store, and its stored sessions), handed to the domain, which changes ``unit.record`` in
place and reports everything else it changes; :meth:`SqlUnit.changes` then lists the writes —
the voucher's new counters, sessions deleted and inserted, transactions, redemptions and
rollbacks appended — and the store renders them in its own dialect.

Instants are integer microseconds UTC here (the domain's unit); SQLite stores them as such,
PostgreSQL converts them to ``timestamptz`` at its boundary.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Final

import attrs

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
from vouchercore.domain.snapshots import Redemption, RedemptionRollback
from vouchercore.domain.values import DiscountType, TransactionType, VoucherType
from vouchercore.ports import SessionCounts

__all__ = [
    "CODE_PAGE",
    "COUNTERS_AT",
    "KEY_COLUMNS",
    "MIGRATIONS",
    "REDEMPTION_COLUMNS",
    "ROLLBACK_COLUMNS",
    "SCHEMA_VERSION",
    "SESSION_COLUMNS",
    "SESSION_REASONS",
    "TRANSACTION_COLUMNS",
    "VOUCHER_COLUMNS",
    "VOUCHER_MUTABLE_COLUMNS",
    "Changes",
    "SqlUnit",
    "detached_session",
    "first_seq_above",
    "paged_codes",
    "read_transactions_page",
    "record_from_row",
    "redemption_from_row",
    "schema_problem",
    "session_counts_from_row",
    "session_row",
    "transaction_from_row",
    "transaction_row",
    "voucher_row",
]

#: The schema version this release writes; a store refuses a database with a newer one and
#: migrates an older one (:data:`MIGRATIONS`).
SCHEMA_VERSION: Final = 2

#: Why a session left the ledger; each has a counter column ``sessions_<reason>`` on the voucher.
SESSION_REASONS: Final = ("redeemed", "released", "expired", "replaced", "dropped")

VOUCHER_COLUMNS: Final = (
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
    "category",
    "additional_info",
    "metadata",
    "campaign_id",
    "opening_redeemed_quantity",
    "opening_redeemed_amount",
    "created_at",
    "updated_at",
    "expired_points",
    "points_buckets",
    "points_due_at",
    "sessions_opened",
    *(f"sessions_{reason}" for reason in SESSION_REASONS),
)
#: Positions in :data:`VOUCHER_COLUMNS` of instants (for stores that convert them).
VOUCHER_INSTANTS: Final = (10, 11, 18, 19, 22)
#: Where the session counters start in :data:`VOUCHER_COLUMNS`.
COUNTERS_AT: Final = 23
#: The columns an operation may change, in the order :meth:`Changes.voucher` lists them.
VOUCHER_MUTABLE_COLUMNS: Final = (
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
#: Positions in :data:`VOUCHER_MUTABLE_COLUMNS` of instants.
VOUCHER_MUTABLE_INSTANTS: Final = (5, 8)
SESSION_COLUMNS: Final = ("voucher_id", "key", "credits", "points", "created_at", "expires_at")
SESSION_INSTANTS: Final = (4, 5)
TRANSACTION_COLUMNS: Final = (
    "seq",
    "voucher_id",
    "type",
    "amount",
    "balance",
    "created_at",
    "source_id",
    "source",
    "reason",
    "related_transaction_id",
    "details",
)
TRANSACTION_INSTANTS: Final = (5,)
#: Same order as :attr:`Redemption.FIELDS` (``date`` is microseconds).
REDEMPTION_COLUMNS: Final = (
    "id",
    "voucher_id",
    "voucher_code",
    "voucher_type",
    "status",
    "amount",
    "order_amount",
    "order_id",
    "session_key",
    "metadata",
    "date",
    "failure_code",
    "failure_message",
    "transaction_id",
    "rollback_id",
)
REDEMPTION_INSTANTS: Final = (10,)
ROLLBACK_COLUMNS: Final = (
    "id",
    "redemption_id",
    "voucher_id",
    "voucher_code",
    "amount",
    "reason",
    "date",
    "transaction_id",
)
ROLLBACK_INSTANTS: Final = (6,)
KEY_COLUMNS: Final = ("key", "fingerprint", "result", "created_at", "expires_at")
KEY_INSTANTS: Final = (3, 4)

_VOUCHER_TYPES: Final = {t.value: t for t in VoucherType}
_TX_TYPES: Final = {t.value: t for t in TransactionType}
_STATES: Final = tuple(VoucherState)


# --- the schema ------------------------------------------------------------------------------


#: Schema migrations, by the version they start from: the columns each adds to ``vouchers``
#: (name, SQLite type, PostgreSQL type), in order. Version 2: loyalty points buckets.
MIGRATIONS: Final[dict[int, tuple[tuple[str, str, str], ...]]] = {
    1: (
        (
            "expired_points",
            "INTEGER NOT NULL DEFAULT 0 CHECK (expired_points >= 0)",
            "bigint NOT NULL DEFAULT 0 CHECK (expired_points >= 0)",
        ),
        ("points_buckets", "TEXT", "text"),
        ("points_due_at", "INTEGER", "timestamptz"),
    ),
}


def schema_problem(tables: Sequence[str], version: object) -> str | None:
    """Why this release cannot use a database holding *tables* whose ``vouchercore_meta`` says
    schema *version* (``None`` when it has no meta table) — or None: it is ours (at this
    version or one :data:`MIGRATIONS` upgrades), or empty.

    One decision for every SQL store: a database with other tables and no vouchercore schema
    is someone else's; a newer version needs a newer vouchercore; an older one is migrated.
    """
    if "vouchercore_meta" not in tables:
        if tables:
            return f"holds other tables ({', '.join(sorted(tables)[:5])}) and no vouchercore schema"
        return None
    if version == SCHEMA_VERSION or (isinstance(version, int) and version in MIGRATIONS):
        return None
    newer = isinstance(version, int) and version > SCHEMA_VERSION
    return f"schema version {version}, this vouchercore reads version {SCHEMA_VERSION}" + (
        " (upgrade vouchercore)" if newer else ""
    )


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


def voucher_row(record: VoucherRecord) -> tuple[Any, ...]:
    """A new voucher's row, in :data:`VOUCHER_COLUMNS` order (no sessions yet: counters 0)."""
    info = record.info or VoucherInfo()
    return (
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
        0,
        *(0 for _ in SESSION_REASONS),
    )


def record_from_row(row: Sequence[Any], sessions: Iterable[Sequence[Any]] = ()) -> VoucherRecord:
    """The voucher record of a row in :data:`VOUCHER_COLUMNS` order, with its stored *sessions*
    (rows in :data:`SESSION_COLUMNS` order)."""
    has_info = any(row[i] is not None for i in (12, 13, 14, 15)) or row[16] or row[17]
    info = (
        VoucherInfo(
            category=row[12],
            additional_info=row[13],
            metadata=_unjson(row[14]),
            campaign_id=row[15],
            opening_redeemed_quantity=row[16],
            opening_redeemed_amount=row[17],
        )
        if has_info
        else None
    )
    kind = _VOUCHER_TYPES[row[2]]
    points: dict[str, Any] = {}
    if kind is VoucherType.LOYALTY_CARD:
        points["expired_points"] = row[20]
        if row[21] is not None:
            points["buckets"] = [PointsBucket(*b) for b in json.loads(row[21])]
    record = VoucherRecord.new(
        kind,
        **points,
        discount=_discount_from_json(row[9]),
        total=row[7],
        balance=row[8],
        id=row[0],
        code=row[1],
        quantity=row[4],
        redeemed_quantity=row[5],
        redeemed_amount=row[6],
        active=True,
        start_date=row[10],
        expiration_date=row[11],
        info=info,
        created_at=row[18],
        updated_at=row[19],
    )
    record.state = _STATES[row[3]]
    ledger = None
    for s in sessions:
        if ledger is None:
            ledger = record.sessions = VoucherSessions()
        ledger.add(SessionRecord(record, s[1], s[2], s[3], s[4], s[5]))
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


# --- sessions, transactions, redemptions -----------------------------------------------------


def detached_session(row: Sequence[Any]) -> SessionRecord:
    """A session read outside a unit of work (by a sweep): a row in :data:`SESSION_COLUMNS`
    order plus the voucher's code. Its ``voucher`` is a stand-in naming only the voucher's id
    and code — enough to open a unit on it, which then reads the session as stored."""
    voucher = VoucherRecord(
        id=row[0],
        code=row[6],
        quantity=None,
        active=True,
        start_date=None,
        expiration_date=None,
        info=None,
        created_at=0,
    )
    return SessionRecord(voucher, row[1], row[2], row[3], row[4], row[5])


def session_row(session: SessionRecord) -> tuple[Any, ...]:
    """A session's row, in :data:`SESSION_COLUMNS` order."""
    return (
        session.voucher.id,
        session.key,
        session.credits,
        session.points,
        session.created_at,
        session.expires_at,
    )


def transaction_row(tx: TransactionRecord) -> tuple[Any, ...]:
    """A transaction's row, in :data:`TRANSACTION_COLUMNS` order."""
    return (
        transaction_seq(tx.id),
        tx.voucher_id,
        tx.type.value,
        tx.amount,
        tx.balance,
        tx.created_at,
        tx.source_id,
        tx.source,
        tx.reason,
        tx.related_transaction_id,
        _json(list(tx.details)) if tx.details is not None else None,
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


def transaction_from_row(row: Sequence[Any]) -> TransactionRecord:
    """The transaction of a row in :data:`TRANSACTION_COLUMNS` order."""
    details: Links | None = None if row[10] is None else _links_from_json(row[10])
    return TransactionRecord(
        transaction_id(row[0]),
        row[1],
        _TX_TYPES[row[2]],
        row[3],
        row[4],
        row[5],
        row[6],
        row[7],
        row[8],
        row[9],
        details,
    )


def redemption_row(redemption: Redemption) -> tuple[Any, ...]:
    """A redemption's row, in :data:`REDEMPTION_COLUMNS` order (metadata as JSON)."""
    row = redemption.to_row()
    return (*row[:9], _json(row[9]), *row[10:])


def redemption_from_row(row: Sequence[Any]) -> Redemption:
    """The redemption of a row in :data:`REDEMPTION_COLUMNS` order."""
    return Redemption.from_row((*row[:9], _unjson(row[9]), *row[10:]))


def rollback_row(rollback: RedemptionRollback) -> tuple[Any, ...]:
    """A rollback's row, in :data:`ROLLBACK_COLUMNS` order (``date`` in microseconds)."""
    return (
        rollback.id,
        rollback.redemption_id,
        rollback.voucher_id,
        rollback.voucher_code,
        rollback.amount,
        rollback.reason,
        to_us(rollback.date),
        rollback.transaction_id,
    )


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
    (PostgreSQL) that no record replaces: delete them.
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

    @property
    def empty(self) -> bool:
        """Nothing to write (a read, or a check that failed)."""
        return not (
            self.keys
            or self.key_placeholders
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
            keys=[attrs.astuple(r) for r in self.kept],
            key_placeholders=[k for k in self.placeholders if all(r.key != k for r in self.kept)],
        )
