"""What the engine needs from a store.

A store keeps vouchers, their sessions, redemptions, rollbacks and transactions. It loads and
saves; it never decides a voucher rule — every rule is in :mod:`vouchercore.domain`.

An operation on one voucher is a *unit of work*: a store opens it, the engine ends it with a
``with`` statement (:class:`Opened`)::

    unit = store.begin(code_or_id)         # the voucher, locked for this operation (or None)
    with Opened(store, unit):
        ...domain decides, then changes unit.record and reports what else changed to unit...
    # a normal exit commits (store.commit): all of it becomes visible at once; any exception,
    # BaseException included, aborts (store.abort): none of it does; the voucher is released
    # either way

:meth:`Store.begin_many` and :class:`OpenedMany` do the same for several vouchers in one
atomic unit (a points transfer, a stacked redemption). A store hands out every stored
voucher, deleted or not: who may see a deleted voucher is a rule the engine applies
(:data:`vouchercore.domain.records.VISIBLE`).

The unit's interface, :class:`~vouchercore.domain.operations.VoucherUnit`, is declared by the
domain (it is what the rules need) and re-exported here.

Guarantees every store gives (the memory, SQLite and PostgreSQL stores, and any store that
passes the contract suite in :mod:`vouchercore.testing.contract`):

* **Isolation:** between ``begin`` and ``commit``/``abort`` no other unit on the same voucher
  runs — in this process or, for a shared store, in any other process or host. Units on
  different vouchers do not wait for each other (SQLite, which has one writer per file, runs
  them one after another, briefly).
* **Atomicity:** after ``commit`` returns, every change reported to the unit is stored (and,
  for a durable store, on disk as its durability setting promises); after ``abort``, a failed
  ``commit``, or a crash before ``commit`` returns, none is.
* **Ordering:** transaction ids a store hands out increase strictly in creation order, and
  are never handed out twice (not even after the voucher that held them is force-deleted).
* **Liveness from the clock:** a store returns every stored session of a voucher, expired or
  not; the domain purges the expired ones with the operation's ``now``. A store never keeps a
  count of live sessions that only a sweep would correct.

Errors: infrastructure faults (a database that cannot be opened, is busy past its timeout,
goes away, or refuses a write) surface from every method as
:class:`~vouchercore.errors.StorageError`, with the driver's error as ``__cause__`` and nothing
half-written; the store is usable again once the fault is gone. A store never raises a domain
error except :class:`~vouchercore.errors.DuplicateFound` on insert.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Generic, Protocol, TypeVar

from vouchercore.domain.audit import SessionCounts
from vouchercore.domain.idempotency import KeyRecord
from vouchercore.domain.operations import VoucherUnit
from vouchercore.domain.records import SessionRecord, TransactionRecord, VoucherRecord
from vouchercore.domain.snapshots import ParentRedemption, Redemption

__all__ = [
    "AnyStore",
    "KeyRecord",
    "Opened",
    "OpenedMany",
    "SessionCounts",
    "Store",
    "VoucherUnit",
    "distinct_units",
]


Unit = TypeVar("Unit", bound=VoucherUnit)


def distinct_units(units: Sequence[Unit]) -> list[Unit]:
    """*units* of one :meth:`Store.begin_many` without repeats (codes naming one voucher
    share its unit), in their order: what :meth:`Store.commit_many` writes, once each."""
    return list({id(unit): unit for unit in units}.values())


class Opened(Generic[Unit]):
    """An open unit of work on one voucher, ended by a ``with`` statement::

        with Opened(store, store.begin(code)) as unit:  # (after checking begin's None)
            ...

    A normal exit commits the unit; an exception — any :class:`BaseException`: a
    :class:`~vouchercore.errors.VoucherError`, a bug, an interrupt — aborts it and propagates.
    Either way the voucher is released.
    """

    __slots__ = ("store", "unit")

    def __init__(self, store: Store[Unit], unit: Unit) -> None:
        self.store = store
        self.unit = unit

    def __enter__(self) -> Unit:
        return self.unit

    def __exit__(self, kind: type[BaseException] | None, error: object, trace: object) -> None:
        if kind is None:
            self.store.commit(self.unit)
        else:
            self.store.abort(self.unit)

    def abort(self) -> None:
        """End the unit now, storing nothing (for a unit given up before its ``with``)."""
        self.store.abort(self.unit)


class OpenedMany(Generic[Unit]):
    """An open unit of work on several vouchers (:meth:`Store.begin_many`), ended by a
    ``with`` statement as :class:`Opened` is: all committed, or all aborted."""

    __slots__ = ("store", "units")

    def __init__(self, store: Store[Unit], units: Sequence[Unit]) -> None:
        self.store = store
        self.units = tuple(units)

    def __enter__(self) -> tuple[Unit, ...]:
        return self.units

    def __exit__(self, kind: type[BaseException] | None, error: object, trace: object) -> None:
        if kind is None:
            self.store.commit_many(self.units)
        else:
            self.store.abort_many(self.units)

    def abort(self) -> None:
        """End the units now, storing nothing."""
        self.store.abort_many(self.units)


class Store(Protocol[Unit]):
    """A voucher book, handing out units of work of its own type ``Unit``. See the module
    docstring for the guarantees."""

    def insert_voucher(self, record: VoucherRecord) -> None:
        """Store a new voucher atomically.

        Raises:
            DuplicateFound: its code (or id) is taken by a live or soft-deleted voucher.
        """

    def insert_vouchers(self, records: Sequence[VoucherRecord]) -> list[int]:
        """Store new vouchers in one atomic step (one database transaction): every record
        whose code and id are free is stored, the others are skipped.

        Used by bulk work (CSV import, code generation): one call per batch, never one per
        code. A record whose code (or id) is taken — by a stored voucher, live or soft-deleted,
        or by an earlier record of the same batch — is not stored, and its position is returned.

        Returns:
            The positions in *records* of the records not stored (ascending; empty when every
            record was stored).

        Raises:
            StorageError: nothing of the batch was stored.
        """
        ...

    def begin(self, code_or_id: str) -> Unit | None:
        """Open a unit of work on a voucher, found by code or id, waiting for its lock.

        Returns ``None`` when no voucher has this code or id (never stored, or force-deleted).
        A soft-deleted voucher is returned like any other: the engine decides who sees it.

        Raises:
            StorageError: the voucher could not be read or locked (nothing is held).
        """
        ...

    def begin_many(self, codes: Sequence[str]) -> list[Unit] | None:
        """Open one unit of work on several vouchers, found by code or id: every one locked,
        committed or aborted together with :meth:`commit_many`/:meth:`abort_many`.

        Deadlock-free: units naming the same vouchers in different orders (A+B and B+A at
        once) never wait for each other in a cycle — the store locks in one global order (by
        voucher id). The units come back in the order of *codes*, one per code; codes naming
        one voucher share one unit. ``None`` (nothing held) when any code names no stored
        voucher.

        Raises:
            StorageError: the vouchers could not be read or locked (nothing is held).
        """
        ...

    def begin_redemption(self, redemption_id: str) -> tuple[Unit, Redemption] | None:
        """Open a unit of work on the voucher of a redemption, with the redemption as stored
        once the voucher is locked. ``None`` when the redemption is unknown or its voucher was
        force-deleted.
        """
        ...

    def commit(self, unit: Unit) -> None:
        """Make every change reported to *unit* durable and visible, and release the voucher.

        Raises:
            StorageError: nothing of the unit was stored (the voucher is released).
        """

    def abort(self, unit: Unit) -> None:
        """Discard *unit* and release the voucher. Changes already applied in place to a
        memory record are not undone: the domain applies nothing before it has decided."""

    def commit_many(self, units: Sequence[Unit]) -> None:
        """Commit the units of one :meth:`begin_many` atomically (all of them, or nothing).

        Raises:
            StorageError: nothing of any unit was stored (every voucher is released).
        """

    def abort_many(self, units: Sequence[Unit]) -> None:
        """Discard the units of one :meth:`begin_many` and release every voucher."""

    def claim_key(self, unit: Unit, key: str) -> KeyRecord | None:
        """Claim idempotency *key* for the open *unit*; the record stored under it, if any
        (expired or not: the domain decides).

        Until *unit* commits or aborts, every other unit claiming the same key — on any voucher,
        in any thread or process sharing the store — waits for it, then sees what it stored.

        Raises:
            StorageError: the key could not be read or claimed (the unit must be aborted).
        """
        ...

    def keep_key(self, unit: Unit, record: KeyRecord) -> None:
        """Store *record* (replacing the record under its key) atomically with the rest of
        *unit* at commit. A claimed key not kept is left as it was."""

    def expire_keys(self, now: int) -> int:
        """Delete the key records with ``expires_at <= now`` (through an index: the cost grows
        with what is deleted); how many."""
        ...

    def get_redemption(self, redemption_id: str) -> Redemption | None:
        """A redemption by id, or None (also when its voucher was force-deleted)."""
        ...

    def get_parent_redemption(self, parent_id: str) -> ParentRedemption | None:
        """The parent of a stacked redemption by id, as last committed, or None. A parent is
        kept even when the vouchers of its children are force-deleted."""
        ...

    def parent_redemptions(self) -> Iterator[ParentRedemption]:
        """Every parent redemption, in id order (read in pages: no long-held cursor or lock;
        parents recorded meanwhile may or may not be included)."""
        ...

    def transactions(self, voucher_id: str) -> Sequence[TransactionRecord]:
        """The voucher's transactions, oldest first (a consistent snapshot)."""
        ...

    def transactions_page(
        self,
        voucher_id: str,
        *,
        after: str | None = None,
        descending: bool = False,
        offset: int = 0,
        limit: int,
    ) -> list[TransactionRecord]:
        """Up to *limit* of the voucher's transactions in id order (newest first with
        *descending*), skipping *offset* of them — a keyset read: its cost grows with
        ``offset + limit``, never with the length of the log.

        Args:
            after: only transactions whose id sorts after this string in the order read
                (``id > after`` ascending, ``id < after`` descending); any string is allowed
                (ids are fixed-width ``vtx_`` strings that sort as they were created).
            descending: newest first.
            offset: how many of the matching transactions to skip first (page numbers).
            limit: the most to return (≥ 1).
        """
        ...

    def transaction_count(self, voucher_id: str) -> int:
        """How many transactions the voucher has (through an index on SQL stores)."""
        ...

    def redemptions(self, voucher_id: str) -> Sequence[Redemption]:
        """The voucher's redemption log, oldest first (a consistent snapshot)."""
        ...

    def expiring_sessions(self, now: int, limit: int | None = None) -> list[SessionRecord]:
        """Stored sessions with ``expires_at <= now``, soonest first (from the expiry index:
        cost grows with what is returned, not with how many sessions are stored)."""
        ...

    def points_due(self, now: int, limit: int | None = None) -> list[str]:
        """Ids of loyalty cards whose ``points_due_at`` (:attr:`VoucherRecord.points_due_at`,
        kept in an index as each unit commits) is ``<= now``, soonest first: the cost grows
        with what is due, not with how many cards are stored."""
        ...

    def voucher_codes(self) -> Iterator[str]:
        """Every live (not deleted) voucher's code."""
        ...

    def session_counts(self) -> SessionCounts:
        """Sessions opened, resolved by reason, and stored — one consistent reading."""
        ...

    def session_count(self) -> int:
        """How many sessions are stored (live, or expired and not yet purged)."""
        ...

    def close(self) -> None:
        """Release resources the store owns."""


#: A store of any unit type (what the engine holds).
AnyStore = Store[Any]
