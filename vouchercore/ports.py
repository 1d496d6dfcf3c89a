"""What the engine needs from a store.

A store keeps vouchers, their sessions, redemptions, rollbacks and transactions. It loads and
saves; it never decides a voucher rule — every rule is in :mod:`vouchercore.domain`.

An operation on one voucher is a *unit of work*::

    unit = store.begin(code_or_id)        # the voucher, locked for this operation (or None)
    ...domain decides, then changes unit.record and reports what else changed to unit...
    store.commit(unit)                    # all of it becomes visible at once
    # or store.abort(unit)                # none of it does

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
from typing import Any, Protocol, TypeVar

import attrs

from vouchercore.domain.idempotency import KeyRecord
from vouchercore.domain.operations import VoucherUnit
from vouchercore.domain.records import SessionRecord, TransactionRecord, VoucherRecord
from vouchercore.domain.snapshots import Redemption

__all__ = ["AnyStore", "KeyRecord", "SessionCounts", "Store", "VoucherUnit"]


@attrs.frozen(kw_only=True)
class SessionCounts:
    """The store's session bookkeeping, read at one instant (for the audit's I4 check):
    every session stored was opened once and resolved at most once, so
    ``opened − Σ resolved == stored``."""

    opened: int
    resolved: dict[str, int]  # by reason: redeemed, released, expired, replaced, dropped
    stored: int


Unit = TypeVar("Unit", bound=VoucherUnit)


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

    def begin(self, code_or_id: str, *, include_deleted: bool = False) -> Unit | None:
        """Open a unit of work on a voucher, found by code or id, waiting for its lock.

        Returns ``None`` when there is no such voucher or it is deleted (force-deleted, or
        soft-deleted unless *include_deleted*).

        Raises:
            StorageError: the voucher could not be read or locked (nothing is held).
        """
        ...

    def begin_redemption(self, redemption_id: str) -> tuple[Unit, Redemption] | None:
        """Open a unit of work on the voucher of a redemption, with the redemption as stored.

        Returns ``None`` when the redemption is unknown or its voucher is deleted.
        """
        ...

    def begin_pair(self, first: str, second: str) -> tuple[Unit, Unit] | None:
        """Open one unit of work on two vouchers (a points transfer), found by code or id:
        both locked, committed or aborted together with :meth:`commit_pair`/:meth:`abort_pair`.

        Deadlock-free: two pairs naming the same vouchers in opposite orders (A→B and B→A at
        once) never wait for each other in a cycle — the store locks in one global order
        (by voucher id). When both name one voucher, the same unit twice. ``None`` (nothing
        held) when either is missing or deleted. Idempotency keys are claimed on *first*.

        Raises:
            StorageError: the vouchers could not be read or locked (nothing is held).
        """
        ...

    def commit_pair(self, first: Unit, second: Unit) -> None:
        """Commit both units of :meth:`begin_pair` atomically (all of both, or nothing).

        Raises:
            StorageError: nothing of either unit was stored (both vouchers are released).
        """

    def abort_pair(self, first: Unit, second: Unit) -> None:
        """Discard both units of :meth:`begin_pair` and release both vouchers."""

    def commit(self, unit: Unit) -> None:
        """Make every change reported to *unit* durable and visible, and release the voucher.

        Raises:
            StorageError: nothing of the unit was stored (the voucher is released).
        """

    def abort(self, unit: Unit) -> None:
        """Discard *unit* and release the voucher. Changes already applied in place to a
        memory record are not undone: the domain applies nothing before it has decided."""

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
