"""The in-memory store: the default voucher book, in this process only.

Vouchers live as mutable records in two indexes (by code, by id). Each voucher has its own
lock, made on first use, so operations on one voucher are serialised and operations on
different vouchers never wait for each other. Changes are applied in place by the domain while
the unit holds the voucher's lock, so ``commit`` only releases it.

Redemptions and transactions are kept as plain tuples of strings and ints (and a redemption's
metadata) — rows — not as objects: CPython's garbage collector stops tracking such tuples, so a
book with millions of log entries costs the collector nothing, and a row is smaller than an
object. Rows are read by field name (:class:`~vouchercore.domain.rows.TransactionRows`,
``Redemption.column``) and become domain objects again when read.

The expiry index is a :class:`~sortedcontainers.SortedKeyList` of live sessions ordered by
``expires_at``, guarded by a small lock of its own: adding or removing a session costs
O(log n), and finding the k sessions that have expired costs O(k + log n) — never a scan.
"""

from __future__ import annotations

import bisect
import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from operator import attrgetter, itemgetter
from typing import Any, overload

from sortedcontainers import SortedKeyList, SortedList

from vouchercore.domain.idempotency import KeyRecord
from vouchercore.domain.records import (
    VISIBLE,
    SessionRecord,
    TransactionRecord,
    VoucherRecord,
    VoucherState,
    transaction_id,
)
from vouchercore.domain.rows import TransactionRows
from vouchercore.domain.snapshots import ParentRedemption, Redemption, RedemptionRollback
from vouchercore.domain.values import VoucherType
from vouchercore.errors import DuplicateFound
from vouchercore.ports import SessionCounts, Store, distinct_units

__all__ = ["MemoryStore"]

# --- rows: how the log is kept ---------------------------------------------------------------

TransactionRow = tuple[Any, ...]
RedemptionRow = tuple[Any, ...]

#: transactions as rows of plain values, their links spliced in flat (see TransactionRows)
_TRANSACTION_ROWS = TransactionRows()
_transaction_row = _TRANSACTION_ROWS.row
_transaction_from_row = _TRANSACTION_ROWS.record
#: a redemption row's voucher id and rollback id
_redemption_id = itemgetter(Redemption.column("id"))
_redeemed_voucher_id = itemgetter(Redemption.column("voucher_id"))
_rollback_id = itemgetter(Redemption.column("rollback_id"))


class _TransactionLog(Sequence[TransactionRecord]):
    """A read-only view of the first *length* rows of a voucher's log, decoded on access.

    Appends happen only at the end, under the voucher's lock, so the prefix is stable.
    """

    __slots__ = ("_length", "_rows")

    def __init__(self, rows: list[TransactionRow]) -> None:
        self._rows = rows
        self._length = len(rows)

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> TransactionRecord: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[TransactionRecord]: ...
    def __getitem__(self, index: int | slice) -> TransactionRecord | Sequence[TransactionRecord]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._length))]
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(index)
        return _transaction_from_row(self._rows[index])


_id = itemgetter(_TRANSACTION_ROWS.column("id"))  # a log row's transaction id

_LOYALTY = VoucherType.LOYALTY_CARD
_PURGED = VoucherState.PURGED
_row_id = itemgetter(ParentRedemption.column("id"))


def _each(end: Callable[[_Unit], None], units: Sequence[_Unit]) -> None:
    """``end(unit)`` for every unit, even after one raised; then the first error, if any."""
    error: BaseException | None = None
    for unit in units:
        try:
            end(unit)
        except BaseException as raised:
            if error is None:
                error = raised
    if error is not None:
        raise error


class _Stats:
    __slots__ = ("sessions_opened", "sessions_resolved")

    def __init__(self) -> None:
        self.sessions_opened = 0
        self.sessions_resolved: dict[str, int] = {}


class _Unit:
    """The unit of work on one voucher of a :class:`MemoryStore`, with the voucher's lock.

    Made on the voucher's first use and kept by the store: only the thread holding ``lock``
    uses it, so one object per voucher serves every operation in turn.
    """

    __slots__ = ("_store", "claims", "kept", "lock", "purged", "record")

    def __init__(self, store: MemoryStore, record: VoucherRecord) -> None:
        self._store = store
        self.record = record
        self.lock = threading.Lock()
        self.purged = False
        #: idempotency keys claimed and records to keep, this operation (None: none)
        self.claims: list[str] | None = None
        self.kept: list[KeyRecord] | None = None

    def session_added(self, session: SessionRecord) -> None:
        store = self._store
        with store._expiry_lock:
            store._expiry.add(session)
            store._stats.sessions_opened += 1

    def session_removed(self, session: SessionRecord, reason: str) -> None:
        store = self._store
        with store._expiry_lock:
            store._expiry.remove(session)
            resolved = store._stats.sessions_resolved
            resolved[reason] = resolved.get(reason, 0) + 1

    def transaction_added(self, tx: TransactionRecord) -> None:
        log = self._store._transactions.get(tx.voucher_id)
        if log is None:
            self._store._transactions[tx.voucher_id] = [_transaction_row(tx)]
        else:
            log.append(_transaction_row(tx))

    def redemption_added(self, redemption: Redemption) -> None:
        store = self._store
        row = redemption.to_row()  # read by its getters: C calls, not descriptors (hot path)
        redemption_id = _redemption_id(row)
        store._redemptions[redemption_id] = row
        voucher_id = _redeemed_voucher_id(row)
        log = store._redemption_log.get(voucher_id)
        if log is None:
            store._redemption_log[voucher_id] = [redemption_id]
        else:
            log.append(redemption_id)

    def redemption_replaced(self, redemption: Redemption) -> None:
        row = redemption.to_row()
        self._store._redemptions[_redemption_id(row)] = row

    def rollback_added(self, rollback: RedemptionRollback) -> None:
        self._store._rollbacks[rollback.id] = rollback

    def parent_added(self, parent: ParentRedemption) -> None:
        row = parent.to_row()
        self._store._parents[_row_id(row)] = row

    def parent_replaced(self, parent: ParentRedemption) -> None:
        row = parent.to_row()
        self._store._parents[_row_id(row)] = row

    def voucher_purged(self) -> None:
        self.purged = True

    def next_transaction_id(self) -> str:
        return transaction_id(next(self._store._tx_seq))


class MemoryStore(Store[_Unit]):
    """Vouchers, sessions, redemptions and transactions in this process's memory.

    Thread-safe. Nothing survives the process; use the SQLite or PostgreSQL store for that.
    """

    def __init__(self) -> None:
        self._by_code: dict[str, VoucherRecord] = {}
        self._by_id: dict[str, VoucherRecord] = {}
        self._index_lock = threading.Lock()  # guards inserts/removals in the two indexes
        #: each touched voucher's unit of work (and lock), by voucher id, made on first use:
        #: a voucher nobody has used costs nothing here
        self._units: dict[str, _Unit] = {}
        self._transactions: dict[str, list[TransactionRow]] = {}
        self._redemptions: dict[str, RedemptionRow] = {}
        self._redemption_log: dict[str, list[str]] = {}
        self._rollbacks: dict[str, RedemptionRollback] = {}
        #: parents of stacked redemptions, as rows, by id
        self._parents: dict[str, tuple[Any, ...]] = {}
        self._expiry: SortedKeyList = SortedKeyList(key=attrgetter("expires_at"))
        self._expiry_lock = threading.Lock()
        self._tx_seq = itertools.count(1)
        self._stats = _Stats()
        #: idempotency keys: records, their expiry index, and the keys claimed by open units
        #: (each with the event its waiters wait on), all guarded by one lock
        self._keys: dict[str, KeyRecord] = {}
        self._key_expiry: SortedKeyList = SortedKeyList(key=attrgetter("expires_at"))
        self._claims: dict[str, threading.Event] = {}
        self._keys_lock = threading.Lock()
        #: loyalty cards with points that will expire: ``(points_due_at, voucher id)``, and
        #: each indexed card's entry, guarded by one lock
        self._points_due: SortedList = SortedList()
        self._points_indexed: dict[str, int] = {}
        self._points_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._by_id)} vouchers)"

    # --- vouchers -------------------------------------------------------------------------

    def insert_voucher(self, record: VoucherRecord) -> None:
        with self._index_lock:
            if record.code in self._by_code:
                raise DuplicateFound.voucher("code", record.code)
            if record.id in self._by_id:
                raise DuplicateFound.voucher("id", record.id)
            self._by_code[record.code] = record
            self._by_id[record.id] = record

    def insert_vouchers(self, records: Sequence[VoucherRecord]) -> list[int]:
        """Store every record whose code and id are free, under the index lock (one atomic
        step for the batch); the positions of the others."""
        taken: list[int] = []
        by_code = self._by_code
        by_id = self._by_id
        with self._index_lock:
            for position, record in enumerate(records):
                if record.code in by_code or record.id in by_id:
                    taken.append(position)
                    continue
                by_code[record.code] = record
                by_id[record.id] = record
        return taken

    def _open(self, record: VoucherRecord) -> _Unit | None:
        unit = self._units.get(record.id)
        if unit is None:  # first use: setdefault is atomic, so racing threads share one unit
            unit = self._units.setdefault(record.id, _Unit(self, record))
        unit.lock.acquire()
        try:
            if record.state is not _PURGED:
                return unit
        except BaseException:  # an interrupt right after the lock was taken: give it back
            unit.lock.release()
            raise
        unit.lock.release()  # force-deleted while this thread waited: gone
        return None

    def begin(self, code_or_id: str) -> _Unit | None:
        # _find, inlined: begin is on every call's hot path
        record = self._by_code.get(code_or_id)
        if record is None:
            record = self._by_id.get(code_or_id)
            if record is None:
                return None
        return self._open(record)

    def begin_redemption(self, redemption_id: str) -> tuple[_Unit, Redemption] | None:
        row = self._redemptions.get(redemption_id)
        if row is None:
            return None
        record = self._by_id.get(_redeemed_voucher_id(row))
        if record is None:
            return None
        unit = self._open(record)
        if unit is None:
            return None
        try:
            row = self._redemptions.get(redemption_id)  # re-read under the voucher's lock
            found = None if row is None else Redemption.from_row(row)
        except BaseException:
            self.abort(unit)
            raise
        if found is None:
            self.abort(unit)
            return None
        return unit, found

    def begin_many(self, codes: Sequence[str]) -> list[_Unit] | None:
        """The vouchers' units, locked in id order (two callers naming the same vouchers in
        other orders queue rather than deadlock); one unit per voucher. None (nothing held)
        when a code names no voucher."""
        by_code = self._by_code
        by_id = self._by_id
        records: dict[str, VoucherRecord] = {}  # by id: codes naming one voucher share it
        ids: list[str] = []
        for code in codes:
            record = by_code.get(code)
            if record is None:
                record = by_id.get(code)
                if record is None:
                    return None
            records[record.id] = record
            ids.append(record.id)
        units: dict[str, _Unit] = {}
        try:
            for voucher_id in sorted(records):
                unit = self._open(records[voucher_id])
                if unit is None:  # force-deleted meanwhile
                    self.abort_many(list(units.values()))
                    return None
                units[voucher_id] = unit
            return [units[voucher_id] for voucher_id in ids]
        except BaseException:  # interrupted while waiting for a lock: release those taken
            self.abort_many(list(units.values()))
            raise

    def commit_many(self, units: Sequence[_Unit]) -> None:
        """Release every unit (their changes are in place already), each one even if ending
        another raised (the first error is raised once all are released)."""
        _each(self.commit, distinct_units(units))

    def abort_many(self, units: Sequence[_Unit]) -> None:
        """Release every unit (see :meth:`commit_many`)."""
        _each(self.abort, distinct_units(units))

    def _find(self, code_or_id: str) -> VoucherRecord | None:
        record = self._by_code.get(code_or_id)
        return record if record is not None else self._by_id.get(code_or_id)

    def commit(self, unit: _Unit) -> None:
        # whatever raises here (a bug, an interrupt), the claims and the lock are released
        try:
            if unit.record.type is _LOYALTY:
                self._index_points(unit.record)
            if unit.purged:
                unit.purged = False
                self._forget(unit.record)
        except BaseException:
            unit.kept = None  # a commit that failed keeps no idempotency record
            raise
        finally:
            if unit.claims is None:  # the hot path: no keys to settle
                unit.purged = False
                unit.lock.release()
            else:
                self._release(unit)

    def abort(self, unit: _Unit) -> None:
        # what the domain applied in place stays applied (it applies nothing it has not
        # decided): the index follows the record either way
        unit.kept = None
        try:
            if unit.record.type is _LOYALTY:
                self._index_points(unit.record)
        finally:
            self._release(unit)

    def _release(self, unit: _Unit) -> None:
        """Settle the unit's idempotency keys (if it claimed any), then release its lock —
        the lock even if settling raised."""
        try:
            if unit.claims is not None:
                self._settle_keys(unit)
        finally:
            try:
                if unit.claims is not None:  # settling raised before it released them
                    unit.kept = None
                    self._settle_keys(unit)
            finally:
                unit.purged = False
                unit.lock.release()

    def _index_points(self, record: VoucherRecord) -> None:
        """Keep the card's entry in the points expiry index equal to its ``points_due_at``."""
        due = record.points_due_at
        indexed = self._points_indexed.get(record.id)
        if due == indexed:
            return
        with self._points_lock:
            if indexed is not None:
                self._points_due.remove((indexed, record.id))
                del self._points_indexed[record.id]
            if due is not None:
                self._points_due.add((due, record.id))
                self._points_indexed[record.id] = due

    def points_due(self, now: int, limit: int | None = None) -> list[str]:
        """Ids of loyalty cards with points due at *now*, soonest first: O(k + log n)."""
        with self._points_lock:
            found = self._points_due.irange(maximum=(now, "\U0010ffff"))
            taken = found if limit is None else itertools.islice(found, limit)
            return [voucher_id for _, voucher_id in taken]

    # --- idempotency keys -----------------------------------------------------------------

    def claim_key(self, unit: _Unit, key: str) -> KeyRecord | None:
        """The record under *key*, once no other open unit claims it (waiting for that one)."""
        while True:
            with self._keys_lock:
                claimed = self._claims.get(key)
                if claimed is None or (unit.claims is not None and key in unit.claims):
                    if claimed is None:
                        self._claims[key] = threading.Event()
                        if unit.claims is None:
                            unit.claims = []
                        unit.claims.append(key)
                    return self._keys.get(key)
            claimed.wait()  # the other unit commits or aborts, then sets it

    def keep_key(self, unit: _Unit, record: KeyRecord) -> None:
        """Keep *record* when *unit* commits."""
        if unit.kept is None:
            unit.kept = []
        unit.kept.append(record)

    def _settle_keys(self, unit: _Unit) -> None:
        """Store the unit's kept records, then release its claims (waking their waiters)."""
        with self._keys_lock:
            try:
                for record in unit.kept or ():
                    old = self._keys.get(record.key)
                    if old is not None:
                        self._key_expiry.remove(old)
                    self._keys[record.key] = record
                    self._key_expiry.add(record)
            finally:  # the claims are released whatever storing the records raised
                claims, unit.claims, unit.kept = unit.claims, None, None
                for key in claims or ():
                    claimed = self._claims.pop(key, None)
                    if claimed is not None:
                        claimed.set()

    def expire_keys(self, now: int) -> int:
        """Forget key records with ``expires_at <= now``, soonest first: O(k log n)."""
        with self._keys_lock:
            expired = list(self._key_expiry.irange_key(max_key=now))
            del self._key_expiry[: len(expired)]  # they are the index's first entries
            for record in expired:
                del self._keys[record.key]
            return len(expired)

    def _forget(self, record: VoucherRecord) -> None:
        with self._index_lock:
            self._by_code.pop(record.code, None)
            self._by_id.pop(record.id, None)
        self._units.pop(record.id, None)  # a thread still waiting on it sees PURGED
        self._transactions.pop(record.id, None)
        for redemption_id in self._redemption_log.pop(record.id, ()):
            row = self._redemptions.pop(redemption_id, None)
            if row is not None and _rollback_id(row) is not None:
                self._rollbacks.pop(_rollback_id(row), None)

    # --- reads ----------------------------------------------------------------------------

    def get_redemption(self, redemption_id: str) -> Redemption | None:
        row = self._redemptions.get(redemption_id)
        return None if row is None else Redemption.from_row(row)

    def get_parent_redemption(self, parent_id: str) -> ParentRedemption | None:
        row = self._parents.get(parent_id)
        return None if row is None else ParentRedemption.from_row(row)

    def parent_redemptions(self) -> Iterator[ParentRedemption]:
        for parent_id in sorted(self._parents):
            row = self._parents.get(parent_id)
            if row is not None:
                yield ParentRedemption.from_row(row)

    def transactions(self, voucher_id: str) -> Sequence[TransactionRecord]:
        return _TransactionLog(self._transactions.get(voucher_id, []))

    def transactions_page(
        self,
        voucher_id: str,
        *,
        after: str | None = None,
        descending: bool = False,
        offset: int = 0,
        limit: int,
    ) -> list[TransactionRecord]:
        """A slice of the voucher's log found by bisection on the ids: O(log n + limit)."""
        rows = self._transactions.get(voucher_id)
        if not rows:
            return []
        total = len(rows)  # the stable prefix: appends happen at the end only
        if descending:
            stop = total if after is None else bisect.bisect_left(rows, after, hi=total, key=_id)
            stop -= offset
            start = max(stop - limit, 0)
            chosen = rows[start:stop] if stop > 0 else []
            chosen.reverse()
        else:
            start = 0 if after is None else bisect.bisect_right(rows, after, hi=total, key=_id)
            start += offset
            chosen = rows[start : min(start + limit, total)]
        return [_transaction_from_row(row) for row in chosen]

    def transaction_count(self, voucher_id: str) -> int:
        """The length of the voucher's log: O(1)."""
        return len(self._transactions.get(voucher_id, ()))

    def redemptions(self, voucher_id: str) -> Sequence[Redemption]:
        ids = tuple(self._redemption_log.get(voucher_id, ()))
        rows = (self._redemptions.get(i) for i in ids)
        return tuple(Redemption.from_row(row) for row in rows if row is not None)

    def expiring_sessions(self, now: int, limit: int | None = None) -> list[SessionRecord]:
        with self._expiry_lock:
            # irange_key walks the sublists from the front: no positional index to rebuild,
            # so the cost is O(log n + k) whatever n is
            found = self._expiry.irange_key(max_key=now)
            return list(found if limit is None else itertools.islice(found, limit))

    def voucher_codes(self) -> Iterator[str]:
        for record in list(self._by_code.values()):
            if record.state in VISIBLE:
                yield record.code

    @property
    def stats(self) -> _Stats:
        """The live session counters (see :meth:`session_counts` for a consistent reading)."""
        return self._stats

    def session_counts(self) -> SessionCounts:
        with self._expiry_lock:
            return SessionCounts(
                opened=self._stats.sessions_opened,
                resolved=dict(self._stats.sessions_resolved),
                stored=len(self._expiry),
            )

    def session_count(self) -> int:
        """How many sessions are stored (live, or expired and not yet purged)."""
        return len(self._expiry)

    def close(self) -> None:
        """Nothing to release."""
