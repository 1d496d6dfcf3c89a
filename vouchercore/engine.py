"""The facade: Voucherify's voucher verbs on an in-process store.

Every operation has the same shape::

    code = require_code(code)                        # check the arguments (vouchercore.requests)
    now = self._clock.now_us()                       # read the clock once
    with self._open(code) as unit:                   # one unit of work (vouchercore.ports.Opened)
        return operations.something(unit, now, ...)  # one domain call
    # a normal exit commits; any exception, BaseException included, aborts and releases

Arguments are checked before anything is read (raising
:class:`~vouchercore.errors.InvalidArgument`). A keyed call (``idempotency_key=``) runs its
domain call through :meth:`Engine._once`, the one idempotency wrapper. Thread-safe: operations
on one voucher are serialised by its unit of work; operations on different vouchers run
independently.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TextIO, TypeVar

from vouchercore import bulk, csvio, requests
from vouchercore.clock import Clock, SystemClock
from vouchercore.codes import (
    ALPHANUMERIC,
    CodeConfig,
    CodeDrawer,
    GenerationReport,
    check_code_space,
)
from vouchercore.domain import idempotency, operations, stacking
from vouchercore.domain.audit import audit_session_ledger, audit_stacks, audit_voucher
from vouchercore.domain.instants import to_us_or_none
from vouchercore.domain.records import (
    VISIBLE,
    VISIBLE_OR_DELETED,
    Discount,
    SessionRecord,
    VoucherRecord,
)
from vouchercore.domain.snapshots import (
    AuditReport,
    BalanceUpdate,
    ParentRedemption,
    PointsCancellation,
    PointsTransfer,
    Redemption,
    RedemptionRollback,
    Session,
    StackedRedemption,
    StackedRollback,
    StackedValidationResult,
    Transaction,
    TransactionPage,
    ValidationResult,
    Violation,
    Voucher,
)
from vouchercore.domain.stacking import StackingRules
from vouchercore.domain.values import (
    MAX_CODE_LENGTH,
    RedemptionStatus,
    VoucherType,
    require_amount,
    require_code,
    require_optional_text,
    require_session_key,
    require_signed_amount,
    shown,
)
from vouchercore.errors import InvalidPayload, NotFound, RedeemablesLimitExceeded, VoucherError
from vouchercore.ids import IdGenerator
from vouchercore.ports import AnyStore, Opened, OpenedMany, VoucherUnit
from vouchercore.requests import VoucherTemplate
from vouchercore.stores import open_store

__all__ = ["Engine"]

T = TypeVar("T")
#: A result kept under an idempotency key.
R = TypeVar("R", bound=idempotency.Result)

#: How many expired sessions :meth:`Engine.expire_sessions` reads from the store at a time.
SWEEP_BATCH = 1_000
_DEFAULT_RETENTION = timedelta(microseconds=idempotency.DEFAULT_RETENTION_US)
#: How many distinct sets of voucher fields a CSV import keeps checked at a time.
_TEMPLATES_KEPT = 256
#: The most transactions a page of :meth:`Engine.list_voucher_transactions` may skip
#: (``(page - 1) * limit``): an offset every store takes (a signed 32-bit integer).
MAX_PAGE_OFFSET = 2**31 - 1
#: The most vouchers one :meth:`Engine.generate_vouchers` call may make (signed 64 bits).
_MAX_COUNT = 2**63 - 1
#: How many times opening several vouchers re-reads which of them are there while vouchers are
#: created and deleted under it, before giving up (``not_found``).
_OPEN_ATTEMPTS = 3


class Engine:
    """A voucher book with Voucherify's semantics, run in-process.

    Args:
        store: ``"memory://"`` (default), a store URL, or a store object (not closed by
            :meth:`close` when handed in).
        clock: where "now" comes from (default :class:`~vouchercore.clock.SystemClock`).
        seed: make ids and session keys reproducible (simulations, tests). Leave ``None``
            in production: session keys then come from the OS CSPRNG.
        ids: a custom id generator (overrides *seed*).
        idempotency_retention: how long an ``idempotency_key`` is kept (engine clock; default
            :data:`~vouchercore.domain.idempotency.DEFAULT_RETENTION_US`, 7 days): a retry within
            it returns the first result, after it runs anew.
        redeemables_limit: the most redeemables a stacked call may name (1–30, default 30:
            Voucherify's ``stacking_rules``); more is ``redeemables_limit_exceeded``.
        applicable_redeemables_limit: the most redeemables of a stack that may apply (1–30,
            default 5); the ones past it are SKIPPED
            (``applicable_redeemables_limit_exceeded``).

    Example:
        >>> from vouchercore import Engine, FakeClock
        >>> engine = Engine(clock=FakeClock(), seed=1)
        >>> card = engine.create_voucher("GIFT-1", type="GIFT_VOUCHER", gift={"amount": 5000})
        >>> engine.redeem_voucher("GIFT-1", credits=1200).amount
        1200
        >>> engine.get_voucher("GIFT-1").gift.balance
        3800
    """

    def __init__(
        self,
        store: str | AnyStore = "memory://",
        *,
        clock: Clock | None = None,
        seed: int | None = None,
        ids: IdGenerator | None = None,
        idempotency_retention: timedelta = _DEFAULT_RETENTION,
        redeemables_limit: int = stacking.DEFAULT_REDEEMABLES_LIMIT,
        applicable_redeemables_limit: int = stacking.DEFAULT_APPLICABLE_REDEEMABLES_LIMIT,
    ) -> None:
        self._stacking = stacking.StackingRules(
            redeemables_limit=redeemables_limit,
            applicable_redeemables_limit=applicable_redeemables_limit,
        )
        if not isinstance(idempotency_retention, timedelta) or idempotency_retention <= timedelta(
            0
        ):
            raise InvalidPayload(
                "idempotency_retention must be a positive timedelta, "
                f"got {shown(idempotency_retention)}"
            )
        self._retention_us = idempotency_retention // timedelta(microseconds=1)
        self._store, self._owns_store = open_store(store)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._ids: IdGenerator = ids if ids is not None else IdGenerator(seed)

    @property
    def store(self) -> AnyStore:
        """The store this engine runs on."""
        return self._store

    @property
    def clock(self) -> Clock:
        """The clock this engine reads."""
        return self._clock

    @property
    def stacking_rules(self) -> StackingRules:
        """The limits of a stacked validation or redemption on this engine."""
        return self._stacking

    def close(self) -> None:
        """Release the store if this engine opened it."""
        if self._owns_store:
            self._store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- lifecycle ------------------------------------------------------------------------

    def create_voucher(
        self,
        code: str | None = None,
        *,
        type: VoucherType | str | None = None,
        discount: Discount | Mapping[str, Any] | None = None,
        gift: Mapping[str, Any] | None = None,
        loyalty_card: Mapping[str, Any] | None = None,
        quantity: int | None = None,
        redemption: Mapping[str, Any] | None = None,
        active: bool = True,
        start_date: datetime | None = None,
        expiration_date: datetime | None = None,
        category: str | None = None,
        additional_info: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        campaign_id: str | None = None,
        code_length: int = 8,
        redeemed_quantity: int = 0,
        redeemed_amount: int = 0,
    ) -> Voucher:
        """Create a voucher (Voucherify's request shape).

        Args:
            code: the code (1–100 printable characters, case-sensitive); ``None`` generates
                one of *code_length* alphanumerics.
            type: ``DISCOUNT_VOUCHER``, ``GIFT_VOUCHER`` or ``LOYALTY_CARD``; inferred from
                *gift* / *loyalty_card* / *discount* when omitted.
            discount: a :class:`Discount` or ``{"type": "AMOUNT", "amount_off": 500}``,
                ``{"type": "PERCENT", "percent_off": 12.5, "amount_limit": 2000}``,
                ``{"type": "FIXED", "fixed_amount": 1000}``,
                ``{"type": "UNIT", "unit_off": 1, "unit_type": "sku_1"}``.
            gift: ``{"amount": 10000}`` — opening credits in minor units (≥ 0).
            loyalty_card: ``{"points": 500}`` — opening points (≥ 0).
            quantity: redemption limit (``None`` = unlimited); also accepted as
                ``redemption={"quantity": N}``.
            active: ``False`` creates it disabled.
            start_date, expiration_date: aware datetimes; valid while start ≤ now ≤ end.
            category, additional_info, metadata, campaign_id: free data (metadata a
                JSON-serialisable mapping with str keys).
            code_length: length of a generated code (1–100).
            redeemed_quantity, redeemed_amount: counters the voucher arrives with when it
                migrates from another system (CSV import): they count as redemptions already
                made — a card's balance is its amount minus *redeemed_amount*.

        Raises:
            InvalidArgument: any malformed field (the message names it).
            DuplicateFound: the code is taken (by a live or soft-deleted voucher).
        """
        template = VoucherTemplate.parse(locals())
        if code is not None:
            code = require_code(code)
        now = self._clock.now_us()
        if code is None:
            length = require_amount(code_length, "code_length")
            if length > MAX_CODE_LENGTH:
                raise InvalidPayload(f"code_length must be at most {MAX_CODE_LENGTH}, got {length}")
            code = self._ids.choice("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ", length)
        record = template.record(self._ids, code, now)
        self._store.insert_voucher(record)
        return Voucher.from_record(record)

    def get_voucher(self, code_or_id: str) -> Voucher:
        """The voucher with this code or ``v_`` id, as it is now.

        Raises:
            NotFound: unknown or deleted.
        """
        code_or_id = require_code(code_or_id, "code_or_id")
        now = self._clock.now_us()
        with self._open(code_or_id) as unit:
            operations.purge_expired(unit, now)
            return Voucher.from_record(unit.record)

    def enable_voucher(self, code_or_id: str) -> Voucher:
        """Enable the voucher (idempotent). Returns it."""
        return self._set_active(code_or_id, True)

    def disable_voucher(self, code_or_id: str) -> Voucher:
        """Disable the voucher (idempotent): it keeps its sessions, but every validation and
        redemption fails with ``voucher_disabled``. Returns it."""
        return self._set_active(code_or_id, False)

    def _set_active(self, code_or_id: str, active: bool) -> Voucher:
        code_or_id = require_code(code_or_id, "code_or_id")
        now = self._clock.now_us()
        with self._open(code_or_id) as unit:
            operations.set_active(unit, now, active)
            return Voucher.from_record(unit.record)

    def delete_voucher(self, code_or_id: str, *, force: bool = False) -> None:
        """Delete the voucher.

        Soft (default): hidden everywhere (``not_found``), sessions dropped, code reserved.
        ``force=True``: voucher, sessions, redemptions, rollbacks and transactions removed and
        the code freed (also for a voucher soft-deleted before).

        Raises:
            NotFound: unknown, or already deleted (a soft delete of a soft-deleted voucher).
        """
        code_or_id = require_code(code_or_id, "code_or_id")
        if not isinstance(force, bool):
            raise InvalidPayload(f"force must be a bool, got {shown(force)}")
        now = self._clock.now_us()
        with self._open(code_or_id, deleted=force) as unit:
            operations.delete(unit, now, force=force)

    # --- validation, sessions, redemption -------------------------------------------------

    def validate_voucher(
        self,
        code: str,
        *,
        order_amount: int | None = None,
        credits: int | None = None,
        points: int | None = None,
        order_id: str | None = None,
        session: Mapping[str, Any] | str | bool | None = None,
        metadata: Mapping[str, Any] | None = None,
        order: Mapping[str, Any] | None = None,
        customer: Mapping[str, Any] | None = None,
    ) -> ValidationResult:
        """Can this voucher be used for this order? Never raises for an invalid voucher: the
        result has ``valid=False`` and ``error`` (the error a redemption would raise).

        Args:
            code: the voucher's code or id.
            order_amount: the order total in minor units (prices discounts; for a gift card
                without *credits*, credits = min(order_amount, available credits)).
            credits: gift credits to use (gift cards only).
            points: loyalty points to use (loyalty cards: required).
            session: ``{"type": "LOCK", "key": …, "ttl": …, "ttl_unit": …}`` (all but type
                optional; default 7 DAYS and a generated ``ssn_`` key), or ``"LOCK"``/
                ``True`` for the defaults. A valid answer sets (or, same key again,
                replaces) the lock: quantity 1 plus the credits/points asked for.
            order: Voucherify's order object, ``{"id", "source_id", "amount", "metadata"}``
                (each optional): *order_amount* and *order_id* are shorthands for its amount
                and id.
            customer: Voucherify's customer object, ``{"id", "source_id", "metadata"}``.

        Raises:
            InvalidArgument: a malformed request (bad types or amounts, unknown ttl unit, a
                gift card with neither credits nor order amount, a loyalty card without points).
        """
        code = require_code(code)
        lock = requests.lock_request(session)
        own_key = lock.key if lock is not None else None
        request = requests.use_request(
            order_amount, credits, points, order_id, own_key, metadata, order, customer
        )
        now = self._clock.now_us()
        if lock is not None:
            lock.expires_at(now)  # an unrepresentable expiry is malformed: raise before reading
        try:
            work = self._open(code)
        except NotFound as missing:  # not an error for a validation: an invalid answer
            return ValidationResult(
                valid=False, code=code, voucher_id=None, type=None, error=missing
            )
        with work as unit:
            return operations.validate(unit, self._ids, now, request, lock)

    def redeem_voucher(
        self,
        code: str,
        *,
        order_amount: int | None = None,
        credits: int | None = None,
        points: int | None = None,
        order_id: str | None = None,
        session_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        order: Mapping[str, Any] | None = None,
        customer: Mapping[str, Any] | None = None,
    ) -> Redemption:
        """Redeem the voucher. Same checks as validation, with *session_key*'s own lock
        counted as available; on success its session is released. An unknown or expired
        session key is treated as no session.

        With *idempotency_key*, a retry of the same request returns this redemption again and
        changes nothing (README: "Idempotent retries"); a FAILED
        attempt keeps nothing under the key.

        *order* and *customer* are Voucherify's objects, as for :meth:`validate_voucher`; both
        are kept with the redemption (``Redemption.order``, ``Redemption.customer``).

        Returns:
            The SUCCEEDED redemption (``amount``: credits, points or discount used).

        Raises:
            IdempotencyKeyReused: *idempotency_key* was used for a different request.
            VoucherRejected: the failing check (``quantity_exceeded`` …); a FAILED redemption
                is recorded and nothing else changes.
            NotFound: unknown or deleted voucher (nothing recorded).
            InvalidArgument: a malformed request (nothing recorded).
        """
        code = require_code(code)
        request = requests.use_request(
            order_amount, credits, points, order_id, session_key, metadata, order, customer
        )
        keyed = (
            None
            if idempotency_key is None
            else requests.keyed_request(
                idempotency_key,
                "redeem_voucher",
                code=code,
                order_amount=request.order_amount,
                credits=request.credits,
                points=request.points,
                order_id=request.order_id,
                session_key=request.session_key,
                metadata=request.metadata,
                **_context(request),
            )
        )
        now = self._clock.now_us()
        with self._open(code) as unit:
            redemption, error = self._once(
                unit,
                now,
                keyed,
                Redemption,
                lambda: operations.redeem(unit, self._ids, now, request),
            )
        if error is not None:
            raise error  # a FAILED redemption: recorded, then raised
        return redemption

    def release_validation_session(self, code: str, session_key: str) -> None:
        """Release the lock *session_key* holds on this voucher.

        Raises:
            NotFound: no live session with that key on this voucher (``resource_type``
                ``"session"``), or no such voucher.
        """
        code = require_code(code)
        session_key = require_session_key(session_key)
        now = self._clock.now_us()
        with self._open(code) as unit:
            operations.release_session(unit, now, session_key)

    def list_sessions(self, code: str) -> tuple[Session, ...]:
        """The voucher's live sessions, soonest to expire first (ties in key order)."""
        code = require_code(code)
        now = self._clock.now_us()
        with self._open(code) as unit:
            return operations.live_sessions(unit, now)

    def expire_sessions(self, now: datetime | None = None) -> int:
        """Purge sessions expired at *now* (default: the clock's now); how many were purged.

        Optional housekeeping: expiry is exact without it. An instant later than the clock's
        now is clamped to it — a session never ends before its ``expires_at``. Cost grows with
        the number of expired sessions (the store's expiry index), not with how many are stored:
        expired sessions are read in pages of :data:`SWEEP_BATCH`, in expiry order, and each run
        of one voucher's sessions is purged in one unit of work (one database transaction on a
        SQL store).
        """
        now_us = self._sweep_now(now)
        purged = 0
        while True:
            found = self._store.expiring_sessions(now_us, SWEEP_BATCH)
            purged_now = 0
            # runs of one voucher's sessions share a unit; the order is the index's (a store's
            # index removes its front entry cheapest: regrouping a page costs O(k²) on ties)
            for voucher_id, run in itertools.groupby(found, key=_voucher_id_of):
                work = self._find(voucher_id, deleted=True)
                if work is not None:
                    with work as unit:
                        for session in run:
                            purged_now += operations.expire_session(unit, now_us, session)
            purged += purged_now
            # a short page is the last; a page that purged nothing (every session in it was
            # resolved meanwhile by another caller) is re-read only if something moved
            if len(found) < SWEEP_BATCH or purged_now == 0:
                return purged

    # --- stacked validation and redemption ------------------------------------------------

    def validate_stacked_discounts(
        self,
        redeemables: Sequence[Mapping[str, Any]],
        *,
        order: Mapping[str, Any] | None = None,
        customer: Mapping[str, Any] | None = None,
        session: Mapping[str, Any] | str | bool | None = None,
        metadata: Mapping[str, Any] | None = None,
        order_amount: int | None = None,
    ) -> StackedValidationResult:
        """Can these vouchers be used together for this order? Never raises for an invalid
        stack: the result has ``valid=False``, each redeemable's status and error, and the
        ``error`` a stacked redemption would raise.

        Args:
            redeemables: ``{"object": "voucher", "id": code}`` each, with
                ``"gift": {"credits": n}`` (gift cards) or ``"reward": {"points": n}``
                (loyalty cards: required); at most :attr:`stacking_rules`
                ``.redeemables_limit`` (30), no voucher twice.
            order: ``{"id", "source_id", "amount", "metadata"}`` (each optional; the amount
                prices the discounts and gift cards); *order_amount* is a shorthand for its
                amount.
            customer: ``{"id", "source_id", "metadata"}``.
            session: a LOCK, as for :meth:`validate_voucher`: a valid answer locks every
                voucher of the stack under one key (quantity 1 plus the credits or points
                each would use).

        Pricing: discounts apply first, in the order given, each to what is left of the order;
        gift cards then pay what remains (never more than the order still owes); loyalty
        cards spend their points. See README "Stacking vouchers".

        Raises:
            InvalidArgument: a malformed request: no redeemables, an unknown ``object``, a
                missing id, a voucher named twice, credits on a non-gift voucher, points on a
                non-loyalty voucher, no order amount where the pricing needs it, a bad
                session; ``redeemables_limit_exceeded`` for too many redeemables.
        """
        names, amounts = self._redeemables(redeemables)
        lock = requests.lock_request(session)
        shared = requests.use_request(
            order_amount,
            None,
            None,
            None,
            None if lock is None else lock.key,
            metadata,
            order,
            customer,
        )
        now = self._clock.now_us()
        if lock is not None:
            lock.expires_at(now)  # an unrepresentable expiry is malformed: raise before reading
        work, missing = self._open_found(names)
        found = [i for i in range(len(names)) if i not in missing]
        lost = [(i, _not_found(names[i])) for i in sorted(missing)]
        found_names = [names[i] for i in found]
        found_amounts = [amounts[i] for i in found]
        if work is None:  # not one of them is there
            return stacking.validate_stack(
                (), (), (), shared, self._ids, now, self._stacking, lock, lost
            )
        with work as units:
            return stacking.validate_stack(
                units,
                found_names,
                found_amounts,
                shared,
                self._ids,
                now,
                self._stacking,
                lock,
                lost,
            )

    def redeem_stacked_discounts(
        self,
        redeemables: Sequence[Mapping[str, Any]],
        *,
        order: Mapping[str, Any] | None = None,
        customer: Mapping[str, Any] | None = None,
        session: Mapping[str, Any] | str | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        order_amount: int | None = None,
    ) -> StackedRedemption:
        """Redeem several vouchers in one atomic step: all of them, or none.

        Same request and pricing as :meth:`validate_stacked_discounts`. *session* is the key
        (``"ssn_…"`` or ``{"key": …}``) of a stacked validation's LOCK: each voucher's lock
        counts as its own, and every one is released. An unknown or expired key is treated
        as no session.

        On success, one parent redemption (``r_``) and one child per voucher are recorded,
        each child as :meth:`redeem_voucher` records one. If any redeemable is not
        applicable, nothing is redeemed: one FAILED parent is recorded (``failure_code``: the
        failing redeemable's error key) and its error raised.

        With *idempotency_key*, a retry of the same request returns this stacked redemption
        again and changes nothing; a FAILED attempt keeps nothing under the key.

        Raises:
            VoucherRejected: the first redeemable, in request order, that is not applicable:
                its own check failed (``quantity_exceeded`` …), or the stack left it out
                (``applicable_redeemables_limit_exceeded``, ``no_effect``); its
                ``parent_redemption_id`` is the FAILED parent recorded (``details`` names it
                too).
            NotFound: a redeemable names no voucher (nothing recorded).
            IdempotencyKeyReused: *idempotency_key* was used for a different request.
            InvalidArgument: a malformed request (nothing recorded), as for
                :meth:`validate_stacked_discounts`.
        """
        names, amounts = self._redeemables(redeemables)
        session_key = requests.stacked_session_key(session)
        shared = requests.use_request(
            order_amount, None, None, None, session_key, metadata, order, customer
        )
        keyed = (
            None
            if idempotency_key is None
            else requests.keyed_request(
                idempotency_key,
                "redeem_stacked_discounts",
                redeemables=[[n, c, p] for n, (c, p) in zip(names, amounts, strict=True)],
                order_amount=shared.order_amount,
                order_id=shared.order_id,
                session_key=shared.session_key,
                metadata=shared.metadata,
                context=list(shared.context),
            )
        )
        now = self._clock.now_us()
        with self._open_many(names) as units:
            stacked, error = self._once(
                units[0],
                now,
                keyed,
                StackedRedemption,
                lambda: stacking.redeem_stack(
                    units, names, amounts, shared, self._ids, now, self._stacking
                ),
            )
        if error is not None:
            raise error  # a FAILED stack: its parent recorded, then raised
        return stacked

    def rollback_stacked_redemptions(
        self,
        parent_redemption_id: str,
        *,
        reason: str | None = None,
        idempotency_key: str | None = None,
    ) -> StackedRollback:
        """Roll back a whole stacked redemption: every child, and the parent, at once (within
        3 calendar months of it). A child cannot be rolled back alone.

        With *idempotency_key*, a retry returns this rollback again (not
        ``already_rolled_back``).

        Raises:
            NotFound: no parent redemption has this id, or a voucher of the stack is deleted.
            AlreadyRolledBack: the second time (without the first call's idempotency key).
            InvalidRedemption: the stacked redemption FAILED (nothing to reverse).
            RollbackWindowExceeded: more than 3 calendar months later.
            IdempotencyKeyReused: *idempotency_key* was used for a different request.
        """
        parent_id = require_code(parent_redemption_id, "parent_redemption_id")
        reason = require_optional_text(reason, "reason")
        keyed = requests.keyed_request(
            idempotency_key,
            "rollback_stacked_redemptions",
            parent_redemption_id=parent_id,
            reason=reason,
        )
        now = self._clock.now_us()
        parent = self._store.get_parent_redemption(parent_id)
        if parent is None:
            raise _redemption_not_found(parent_id)
        if not parent.voucher_ids:  # FAILED: nothing was redeemed, nothing to lock
            stacking.rollback_stack((), parent, (), self._ids, now, reason)
        store = self._store
        with self._open_many(parent.voucher_ids) as units:

            def step() -> tuple[StackedRollback, None]:
                current = store.get_parent_redemption(parent_id)  # as it is under the locks
                assert current is not None  # a parent is never deleted
                children = [store.get_redemption(child) for child in current.redemptions]
                return stacking.rollback_stack(
                    units, current, children, self._ids, now, reason
                ), None

            rollback, _ = self._once(units[0], now, keyed, StackedRollback, step)
        return rollback

    def get_parent_redemption(self, parent_redemption_id: str) -> ParentRedemption:
        """The parent of a stacked redemption, as it stands (SUCCEEDED, FAILED or
        ROLLED_BACK); its children are :meth:`get_redemption` of ``.redemptions``.

        Raises:
            NotFound: no parent redemption has this id.
        """
        parent_id = require_code(parent_redemption_id, "parent_redemption_id")
        found = self._store.get_parent_redemption(parent_id)
        if found is None:
            raise _redemption_not_found(parent_id)
        return found

    def _redeemables(
        self, redeemables: object
    ) -> tuple[list[str], list[tuple[int | None, int | None]]]:
        """The checked redeemables of a stacked call: their codes (or ids), and the credits
        and points of each."""
        if type(redeemables) is not list and not isinstance(redeemables, list | tuple):
            raise InvalidPayload(
                f"redeemables must be a list of {{'object': 'voucher', 'id': …}}, "
                f"got {shown(redeemables)}"
            )
        if not redeemables:
            raise InvalidPayload("redeemables must name at least one voucher")
        limit = self._stacking.redeemables_limit
        if len(redeemables) > limit:
            raise RedeemablesLimitExceeded(
                f"a stacked request may name at most {limit} redeemables, got {len(redeemables)}"
            )
        names: list[str] = []
        amounts: list[tuple[int | None, int | None]] = []
        for position, redeemable in enumerate(redeemables):
            code, credits, points = requests.redeemable_request(redeemable, position)
            amounts.append((credits, points))
            if code in names:
                raise InvalidPayload(f"redeemables name {code!r} twice")
            names.append(code)
        return names, amounts

    def _open_found(self, names: Sequence[str]) -> tuple[OpenedMany[VoucherUnit] | None, set[int]]:
        """One unit of work on the vouchers *names* name that the caller may see, and the
        positions of the names that name none (None when no name does).

        Raises:
            NotFound: vouchers kept appearing and disappearing under it (the first name).
        """
        missing: set[int] = set()
        for _ in range(_OPEN_ATTEMPTS):
            present = [i for i in range(len(names)) if i not in missing]
            if not present:
                return None, missing
            units = self._store.begin_many([names[i] for i in present])
            if units is not None:
                work = OpenedMany(self._store, units)
                try:
                    hidden = {
                        i
                        for i, u in zip(present, units, strict=True)
                        if u.record.state not in VISIBLE
                    }
                except BaseException:
                    work.abort()
                    raise
                if not hidden:
                    return work, missing
                work.abort()
                missing |= hidden
                continue
            for i in present:  # which names no voucher? (each looked up on its own)
                probe = self._find(names[i])
                if probe is None:
                    missing.add(i)
                else:
                    probe.abort()
        raise _not_found(names[0])

    # --- redemptions ----------------------------------------------------------------------

    def get_redemption(self, redemption_id: str) -> Redemption:
        """A redemption (any status) by id.

        Raises:
            NotFound: unknown id, or its voucher was force-deleted.
        """
        redemption_id = require_code(redemption_id, "redemption_id")
        found = self._store.get_redemption(redemption_id)
        if found is None:
            raise _redemption_not_found(redemption_id)
        return found

    def list_redemptions(self, code: str) -> tuple[Redemption, ...]:
        """The voucher's redemption log (every attempt, failed ones too), oldest first."""
        code = require_code(code)
        self._clock.now_us()  # every call reads the clock once, a pure read of the log too
        with self._open(code) as unit:
            return tuple(self._store.redemptions(unit.record.id))

    def rollback_redemption(
        self,
        redemption_id: str,
        *,
        reason: str | None = None,
        idempotency_key: str | None = None,
    ) -> RedemptionRollback:
        """Reverse a whole redemption within 3 calendar months of it: one redemption fewer,
        credits/points returned (``CREDITS_REFUND``/``POINTS_REFUND``). Allowed on a disabled
        or expired voucher.

        With *idempotency_key*, a retry returns this rollback again (not ``already_rolled_back``).

        Raises:
            NotFound: unknown redemption, or its voucher is deleted.
            AlreadyRolledBack: the second time (without the first call's idempotency key).
            IdempotencyKeyReused: *idempotency_key* was used for a different request.
            InvalidRedemption: the redemption FAILED.
            RollbackWindowExceeded: more than 3 calendar months later.
        """
        redemption_id = require_code(redemption_id, "redemption_id")
        reason = require_optional_text(reason, "reason")
        keyed = requests.keyed_request(
            idempotency_key,
            "rollback_redemption",
            redemption_id=redemption_id,
            reason=reason,
        )
        now = self._clock.now_us()
        found = self._store.begin_redemption(redemption_id)
        if found is not None and found[0].record.state not in VISIBLE:
            self._store.abort(found[0])
            found = None
        if found is None:
            raise _redemption_not_found(redemption_id)
        unit, redemption = found
        with Opened(self._store, unit):
            rollback, _ = self._once(
                unit,
                now,
                keyed,
                RedemptionRollback,
                lambda: (operations.rollback(unit, self._ids, now, redemption, reason)[0], None),
            )
        return rollback

    # --- balance and transactions ---------------------------------------------------------

    def update_voucher_balance(
        self,
        code: str,
        amount: int,
        *,
        source_id: str | None = None,
        reason: str | None = None,
        expires_at: datetime | None = None,
        idempotency_key: str | None = None,
    ) -> BalanceUpdate:
        """Add (amount > 0) or remove (amount < 0) gift credits or loyalty points.

        A removal may not take what live sessions hold; loyalty points are removed
        soonest-expiring first. Loyalty points added with *expires_at* expire then
        (``POINTS_EXPIRATION``). With *idempotency_key*, a retry of the same request returns
        this update again and changes nothing.

        Raises:
            InvalidVoucher: a discount voucher.
            InvalidAddBalanceParams: removing more than the balance not held by live sessions.
            InvalidAmount: amount 0, not an int, or beyond signed 64 bits.
            InvalidPayload: *expires_at* on a gift card or a removal, or not after now.
            IdempotencyKeyReused: *idempotency_key* was used for a different request.
        """
        code = require_code(code)
        amount = require_signed_amount(amount, "amount")
        source_id = require_optional_text(source_id, "source_id")
        reason = require_optional_text(reason, "reason")
        expires_us = to_us_or_none(expires_at, "expires_at")
        keyed = requests.keyed_request(
            idempotency_key,
            "update_voucher_balance",
            code=code,
            amount=amount,
            source_id=source_id,
            reason=reason,
            **({} if expires_us is None else {"expires_at": expires_us}),
        )
        now = self._clock.now_us()
        with self._open(code) as unit:
            update, _ = self._once(
                unit,
                now,
                keyed,
                BalanceUpdate,
                lambda: (
                    operations.update_balance(
                        unit, now, amount, source_id=source_id, reason=reason, expires_at=expires_us
                    ),
                    None,
                ),
            )
        return update

    # --- loyalty points -------------------------------------------------------------------

    def accrue_points(
        self,
        code: str,
        points: int,
        *,
        order_id: str | None = None,
        source_id: str | None = None,
        expires_at: datetime | None = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
    ) -> Transaction:
        """Earn *points* on a loyalty card (for an order): a ``POINTS_ACCRUAL`` transaction,
        linked to *order_id*, raising the card's points and balance. With *expires_at* the
        points expire then.

        Cancel it later with :meth:`cancel_points_accrual` (by its transaction id or order id).

        Returns:
            The ``POINTS_ACCRUAL`` transaction.

        Raises:
            NotFound: unknown or deleted voucher.
            InvalidVoucher: not a loyalty card.
            InvalidAmount: *points* not a positive int, or the card would pass signed 64 bits.
            InvalidPayload: *expires_at* not after now.
            IdempotencyKeyReused: *idempotency_key* was used for a different request.
        """
        code = require_code(code)
        points = require_amount(points, "points")
        order_id = require_optional_text(order_id, "order_id")
        source_id = require_optional_text(source_id, "source_id")
        reason = require_optional_text(reason, "reason")
        expires_us = to_us_or_none(expires_at, "expires_at")
        keyed = requests.keyed_request(
            idempotency_key,
            "accrue_points",
            code=code,
            points=points,
            order_id=order_id,
            source_id=source_id,
            expires_at=expires_us,
            reason=reason,
        )
        now = self._clock.now_us()
        with self._open(code) as unit:

            def step() -> tuple[Transaction, None]:
                tx = operations.accrue(
                    unit,
                    now,
                    points,
                    order_id=order_id,
                    source_id=source_id,
                    expires_at=expires_us,
                    reason=reason,
                )
                return Transaction.from_record(tx, unit.record.campaign_id), None

            accrual, _ = self._once(unit, now, keyed, Transaction, step)
        return accrual

    def cancel_points_accrual(
        self,
        code: str,
        *,
        transaction_id: str | None = None,
        order_id: str | None = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
    ) -> PointsCancellation:
        """Cancel a points accrual — the one with *transaction_id*, or every accrual of
        *order_id* on this card — writing one ``POINTS_CANCELLATION`` per accrual.

        Only what is left of the accrued points is taken back: points already spent or
        expired, and points live sessions hold, stay with the customer (``not_cancelled``).
        A cancellation that finds nothing left still writes its transaction (amount 0), so
        that the accrual reads as cancelled.

        Raises:
            NotFound: unknown voucher, or no such accrual on it.
            InvalidVoucher: not a loyalty card.
            AlreadyCancelled: the accrual (every accrual of the order) was cancelled already.
            InvalidPayload: neither or both of *transaction_id* and *order_id*.
            IdempotencyKeyReused: *idempotency_key* was used for a different request.
        """
        code = require_code(code)
        if (transaction_id is None) == (order_id is None):
            raise InvalidPayload("give transaction_id or order_id (one of them)")
        if transaction_id is not None:
            transaction_id = require_code(transaction_id, "transaction_id")
        order_id = require_optional_text(order_id, "order_id")
        reason = require_optional_text(reason, "reason")
        keyed = requests.keyed_request(
            idempotency_key,
            "cancel_points_accrual",
            code=code,
            transaction_id=transaction_id,
            order_id=order_id,
            reason=reason,
        )
        now = self._clock.now_us()
        with self._open(code) as unit:

            def step() -> tuple[PointsCancellation, None]:
                written, accrued, taken = operations.cancel_accrual(
                    unit,
                    now,
                    self._store.transactions(unit.record.id),
                    transaction_id=transaction_id,
                    order_id=order_id,
                    reason=reason,
                )
                campaign_id = unit.record.campaign_id
                result = PointsCancellation(
                    accrued=accrued,
                    cancelled=taken,
                    not_cancelled=accrued - taken,
                    transactions=tuple(Transaction.from_record(tx, campaign_id) for tx in written),
                )
                return result, None

            cancellation, _ = self._once(unit, now, keyed, PointsCancellation, step)
        return cancellation

    def transfer_points(
        self,
        source_code: str,
        destination_code: str,
        points: int,
        *,
        reason: str | None = None,
        source_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> PointsTransfer:
        """Move *points* from one loyalty card to another as one atomic step:
        ``POINTS_TRANSFER_OUT`` on the source, ``POINTS_TRANSFER_IN`` on the destination,
        each naming the other as ``related_transaction_id``.

        The source gives its soonest-expiring points first, never points live sessions hold;
        the points keep their expiry dates on the destination. Crossing transfers (A→B and
        B→A at once) never deadlock, on any store. Allowed on disabled cards (as balance
        updates are).

        Raises:
            NotFound: either card unknown or deleted (``resource_id`` names it).
            InvalidVoucher: either card is not a loyalty card.
            InvalidPayload: the same card twice.
            LoyaltyCardPointsExceeded: more than the source's points not held by live sessions.
            InvalidAmount: *points* not a positive int, or the destination would pass 64 bits.
            IdempotencyKeyReused: *idempotency_key* was used for a different request.
        """
        source_code = require_code(source_code, "source_code")
        destination_code = require_code(destination_code, "destination_code")
        points = require_amount(points, "points")
        reason = require_optional_text(reason, "reason")
        source_id = require_optional_text(source_id, "source_id")
        if source_code == destination_code:
            raise InvalidPayload(f"cannot transfer points from {source_code!r} to itself")
        keyed = requests.keyed_request(
            idempotency_key,
            "transfer_points",
            source_code=source_code,
            destination_code=destination_code,
            points=points,
            reason=reason,
            source_id=source_id,
        )
        now = self._clock.now_us()
        with self._open_many((source_code, destination_code)) as (source, destination):

            def step() -> tuple[PointsTransfer, None]:
                sent, received = operations.transfer(
                    source, destination, now, points, source_id=source_id, reason=reason
                )
                result = PointsTransfer(
                    points=points,
                    source=Transaction.from_record(sent, source.record.campaign_id),
                    destination=Transaction.from_record(received, destination.record.campaign_id),
                )
                return result, None

            # the key is claimed on the source (a store claims keys on any unit it holds)
            transfer, _ = self._once(source, now, keyed, PointsTransfer, step)
        return transfer

    def expire_points(self, now: datetime | None = None) -> int:
        """Expire every loyalty card's points due at *now* (default: the clock's now, and never
        later than it): one ``POINTS_EXPIRATION`` per bucket, each card in its own unit of
        work; how many points expired.

        Optional: expiry also happens lazily whenever a card is read or changed. The cost
        grows with the cards that have points due (the store's index), not with how many
        cards there are.
        """
        at = self._sweep_now(now)
        expired = 0
        seen: set[str] = set()
        while True:
            due = [i for i in self._store.points_due(at, SWEEP_BATCH) if i not in seen]
            if not due:
                return expired
            for voucher_id in due:
                seen.add(voucher_id)
                work = self._find(voucher_id)
                if work is not None:  # else deleted meanwhile
                    with work as unit:
                        expired += operations.expire_points(unit, at)

    def expire_idempotency_keys(self, now: datetime | None = None) -> int:
        """Forget idempotency keys whose retention ended at *now* (default: the clock's now,
        and never later than it); how many. Optional housekeeping: an expired key already acts
        as new without it. Cost grows with what expires (the store's expiry index)."""
        return self._store.expire_keys(self._sweep_now(now))

    def list_voucher_transactions(
        self,
        code: str,
        *,
        limit: int = 10,
        page: int | None = None,
        starting_after_id: str | None = None,
        order: str = "-id",
    ) -> TransactionPage:
        """One page of the voucher's credit/point transactions (newest first by default).

        Args:
            limit: 1–100 per page.
            page: 1-based page number (with *limit*); not together with *starting_after_id*.
            starting_after_id: cursor — the page after this transaction id in *order*
                (use the previous page's ``more_starting_after``).
            order: ``"-id"`` (newest first) or ``"id"`` (oldest first).

        Raises:
            NotFound: unknown voucher. A discount voucher has an empty list.
        """
        code = require_code(code)
        if type(limit) is not int or not 1 <= limit <= 100:
            raise InvalidPayload(f"limit must be an int from 1 to 100, got {shown(limit)}")
        if page is not None and (type(page) is not int or page < 1):
            raise InvalidPayload(f"page must be an int ≥ 1, got {shown(page)}")
        if page is not None and (page - 1) * limit > MAX_PAGE_OFFSET:
            raise InvalidPayload(
                f"page {shown(page)} of {limit} transactions skips more than "
                f"{MAX_PAGE_OFFSET:,} transactions, the most a page may skip"
            )
        if page is not None and starting_after_id is not None:
            raise InvalidPayload("give page or starting_after_id, not both")
        if starting_after_id is not None:
            starting_after_id = require_code(starting_after_id, "starting_after_id")
        if order not in ("-id", "id"):
            raise InvalidPayload(f"order must be '-id' or 'id', got {shown(order)}")
        newest_first = order == "-id"
        offset = 0 if page is None else (page - 1) * limit
        self._clock.now_us()  # every call reads the clock once, a pure read of the log too

        with self._open(code) as unit:
            # inside the unit: the voucher's log cannot grow between the count and the page
            record = unit.record
            campaign_id = record.campaign_id
            chunk = self._store.transactions_page(
                record.id,
                after=starting_after_id,
                descending=newest_first,
                offset=offset,
                limit=limit + 1,  # one more: is there a next page?
            )
            has_more = len(chunk) > limit
            del chunk[limit:]
            return TransactionPage(
                data=tuple(Transaction.from_record(tx, campaign_id) for tx in chunk),
                has_more=has_more,
                more_starting_after=chunk[-1].id if has_more else None,
                total=self._store.transaction_count(record.id),
            )

    def export_voucher_transactions(
        self,
        code: str,
        out: TextIO | str | os.PathLike[str],
        *,
        fields: Sequence[str] | None = None,
        order: str = "-created_at",
        format: str = "csv",
        progress: Callable[[int], None] | None = None,
        total_out: Callable[[int], None] | None = None,
    ) -> int:
        """Write the voucher's transactions as CSV (header row first) or JSON Lines.

        Args:
            code: the voucher's code or id.
            out: a text stream, or a path to write (created or truncated).
            fields: columns from ``id, type, source_id, reason, balance, amount, created_at,
                voucher_id, campaign_id, source, details, related_transaction_id`` (default:
                all, in that order).
            order: ``"-created_at"`` (newest first, default) or ``"created_at"``.
            format: ``"csv"`` or ``"jsonl"``.
            progress: called with the number of transactions written so far, every 5,000
                and at the end.
            total_out: called once, before anything is written, with how many transactions
                the export will write (for a progress bar).

        Instants are UTC ISO 8601 with milliseconds and ``Z``; ``details`` is JSON; text cells
        starting with ``=``, ``+``, ``-``, ``@``, tab or CR get a leading ``'`` (spreadsheet
        formula injection). Streams in constant memory: the log is read 5,000 transactions at
        a time by keyset (an index range per read, no long-held cursor or lock), and is the log
        as of the call (transactions made meanwhile are left out).

        Returns:
            How many transactions were written (a discount voucher: 0, header only).

        Raises:
            NotFound: unknown voucher.
            InvalidArgument: ``invalid_export_fields`` for an unknown field; a bad order/format.
        """
        code = require_code(code)
        if not isinstance(out, str | os.PathLike) and not callable(getattr(out, "write", None)):
            raise InvalidPayload(f"out must be a path or a text stream, got {shown(out)}")
        columns = csvio.check_export_fields(fields)
        if order not in ("-created_at", "created_at"):
            raise InvalidPayload(f"order must be '-created_at' or 'created_at', got {shown(order)}")
        writers = {"csv": csvio.write_records_csv, "jsonl": csvio.write_records_jsonl}
        write = writers.get(format)
        if write is None:
            raise InvalidPayload(f"format must be 'csv' or 'jsonl', got {shown(format)}")
        for name, hook in (("progress", progress), ("total_out", total_out)):
            if hook is not None and not callable(hook):
                raise InvalidPayload(f"{name} must be callable, got {shown(hook)}")
        self._clock.now_us()  # every call reads the clock once, a pure read of the log too
        with self._open(code) as unit:  # one instant: the newest transaction and the count
            voucher_id, campaign_id = unit.record.id, unit.record.campaign_id
            newest = self._store.transactions_page(voucher_id, descending=True, limit=1)
            total = self._store.transaction_count(voucher_id)
        if total_out is not None:
            total_out(total)
        log = bulk.iter_transactions(
            self._store,
            voucher_id,
            newest[0].id if newest else None,
            descending=order == "-created_at",
        )
        rows = _counted(log, progress, bulk.EXPORT_CHUNK)
        if isinstance(out, str | os.PathLike):
            try:
                stream = open(out, "w", encoding="utf-8", newline="")  # noqa: SIM115
            except (OSError, ValueError) as error:  # ValueError: a NUL in the path
                raise InvalidPayload(f"cannot write the export file: {error}") from error
            with stream:
                return write(rows, stream, columns, campaign_id=campaign_id)
        return write(rows, out, columns, campaign_id=campaign_id)

    def import_vouchers_using_csv(
        self,
        file: TextIO | Iterable[str] | str | os.PathLike[str],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> csvio.ImportReport:
        """Import standalone vouchers from a CSV file with Voucherify's headers.

        Headers (first line, any case): ``Code, Voucher Type, Value, Discount Type, Category,
        Start Date, Expiration Date, Redemption Limit, Redeemed Quantity, Redeemed Amount,
        Active, Additional Info``; any other header becomes a metadata key. Rows are
        independent: each good row is created, each bad one reported with its 1-based row
        number (header excluded) and a reason — a code already in the store or on an earlier
        row of the file included.

        Streams, in batches: 50,000 rows are parsed, their vouchers made (one clock read per
        batch), and stored in one store transaction (``Store.insert_vouchers``); each voucher
        is stored whole or not at all. Memory stays flat however long the file is: only the
        current batch and the failed rows are kept (a code repeated in a later batch is
        reported by the store's uniqueness; see :mod:`vouchercore.bulk`).

        Args:
            file: a path, a text stream, or any iterable of lines.
            progress: called with the number of rows read so far, every 1,000 rows and at
                the end (rows are stored 50,000 at a time: up to one batch behind).

        Raises:
            InvalidArgument: the file as a whole cannot be read (not text, no header, no
                ``Code`` or ``Voucher Type`` column) — nothing is imported; or it stops being
                UTF-8 text further down (the message says how many vouchers were imported).
            StorageError: the store failed; the message says how many were imported (every
                batch before the failing one), none after.
        """
        if progress is not None and not callable(progress):
            raise InvalidPayload(f"progress must be callable, got {shown(progress)}")
        if isinstance(file, str | os.PathLike):
            try:
                stream = open(file, encoding="utf-8", newline="")  # noqa: SIM115 — closed below
            except (OSError, ValueError) as error:  # ValueError: a NUL in the path
                raise InvalidPayload(f"cannot read the CSV file: {error}") from error
            with stream:
                return self._import_rows(stream, progress)
        return self._import_rows(file, progress)

    def _import_rows(
        self, lines: Iterable[str], progress: Callable[[int], None] | None
    ) -> csvio.ImportReport:
        rows = csvio.parse_voucher_rows(lines, remember_codes=False)
        # rows of a bulk file mostly differ only in their code: the checked fields of each row
        # shape are kept (a few hundred at most) and reused by the rows that repeat it
        templates: dict[tuple[str, ...], VoucherTemplate] = {}

        def imported(parsed: csvio.ParsedRow, now: int) -> VoucherRecord:
            template = templates.get(parsed.shape)
            if template is None:
                if len(templates) >= _TEMPLATES_KEPT:
                    templates.clear()
                template = templates[parsed.shape] = VoucherTemplate.parse(parsed)
            return template.record(self._ids, parsed["code"], now)

        return bulk.import_rows(self._store, rows, imported, self._clock.now_us, progress)

    def generate_vouchers(
        self,
        count: int,
        *,
        length: int = 8,
        charset: str = ALPHANUMERIC,
        prefix: str = "",
        postfix: str = "",
        pattern: str | None = None,
        type: VoucherType | str | None = None,
        discount: Discount | Mapping[str, Any] | None = None,
        gift: Mapping[str, Any] | None = None,
        loyalty_card: Mapping[str, Any] | None = None,
        quantity: int | None = None,
        redemption: Mapping[str, Any] | None = None,
        active: bool = True,
        start_date: datetime | None = None,
        expiration_date: datetime | None = None,
        category: str | None = None,
        additional_info: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        campaign_id: str | None = None,
        progress: Callable[[int], None] | None = None,
        on_codes: Callable[[Sequence[str]], None] | None = None,
        keep_codes: int = 100,
    ) -> GenerationReport:
        """Create *count* vouchers with unique random codes, all alike but for the code
        (Voucherify's ``code_config``; see :mod:`vouchercore.codes`).

        Codes are *length* characters from *charset*, or *pattern* with each ``#`` replaced
        by one (``"SPRING-####"``; *length* is then ignored), between *prefix* and *postfix*.
        They come from the OS CSPRNG, or from the engine's seeded generator when it has a seed
        (reproducible, not secret). Vouchers are stored 50,000 per store transaction, never one
        round trip per code; a code that is taken already is replaced by a fresh one.

        The voucher fields are those of :meth:`create_voucher` (checked once, before anything
        is stored).

        Args:
            count: how many vouchers (≥ 1).
            length, charset, prefix, postfix, pattern: the shape of the codes.
            progress: called with the number created so far after each batch.
            on_codes: called with each batch's codes, in creation order (to write them out:
                the report keeps only the first *keep_codes*).
            keep_codes: how many of the first codes the report returns (default 100).

        Returns:
            A :class:`~vouchercore.codes.GenerationReport`: the count, the first codes, and
            how many drawn codes were taken and drawn again.

        Raises:
            InvalidArgument: a malformed field, or a code space that cannot hold *count*
                codes with a margin of 2× (``charset ** placeholders < 2 × count``) — raised
                before anything is stored; or the space ran full on the way because the store
                holds many codes of this shape (the message says how many were created).
            StorageError: the store failed (the message says how many were created).
        """
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= _MAX_COUNT:
            raise InvalidPayload(f"count must be an int from 1 to 2**63 − 1, got {shown(count)}")
        if (
            isinstance(keep_codes, bool)
            or not isinstance(keep_codes, int)
            or not 0 <= keep_codes <= _MAX_COUNT
        ):
            raise InvalidPayload(
                f"keep_codes must be an int from 0 to 2**63 − 1, got {shown(keep_codes)}"
            )
        for name, hook in (("progress", progress), ("on_codes", on_codes)):
            if hook is not None and not callable(hook):
                raise InvalidPayload(f"{name} must be callable, got {shown(hook)}")
        config = CodeConfig(
            length=length, charset=charset, prefix=prefix, postfix=postfix, pattern=pattern
        )
        check_code_space(config, count)
        template = VoucherTemplate.parse(locals())
        return bulk.generate(
            self._store,
            CodeDrawer(config, self._ids.random_bytes),
            functools.partial(template.record, self._ids),
            self._clock.now_us,
            count,
            progress=progress,
            on_codes=on_codes,
            keep_codes=keep_codes,
        )

    # --- audit ----------------------------------------------------------------------------

    def audit(self) -> AuditReport:
        """Replay every voucher's log and check invariants I1–I4, and that every stacked
        redemption's children stand or fall with their parent (I5); a report naming each
        violation (``report.ok`` when none). Exact on a book at rest; under traffic, a stack
        committed while the audit runs may be reported half-seen."""
        now = self._clock.now_us()
        violations: list[Violation] = []
        vouchers = sessions = transactions = redemptions = 0
        audited: set[str] = set()
        children: dict[str, dict[str, RedemptionStatus]] = {}
        for code in self._store.voucher_codes():
            work = self._find(code)
            if work is None:  # deleted meanwhile
                continue
            with work as unit:
                log = self._store.transactions(unit.record.id)
                redeemed = self._store.redemptions(unit.record.id)
                violations.extend(audit_voucher(unit.record, now, log, redeemed))
                sessions += len(unit.record.live_sessions(now))
                audited.add(unit.record.id)
            for redemption in redeemed:
                parent_id = redemption.parent_id
                if parent_id is not None:
                    children.setdefault(parent_id, {})[redemption.id] = redemption.status
            vouchers += 1
            transactions += len(log)
            redemptions += len(redeemed)
        violations.extend(audit_session_ledger(self._store.session_counts()))
        violations.extend(audit_stacks(self._store.parent_redemptions(), children, audited))
        return AuditReport(
            vouchers=vouchers,
            sessions=sessions,
            transactions=transactions,
            redemptions=redemptions,
            violations=tuple(violations),
        )

    # --- plumbing -------------------------------------------------------------------------

    def _sweep_now(self, now: datetime | None) -> int:
        """The instant a sweep purges at: *now*, never later than the clock (nothing is ever
        purged before its time)."""
        now_us = self._clock.now_us()
        if now is None:
            return now_us
        asked = to_us_or_none(now, "now")
        assert asked is not None
        return min(now_us, asked)

    def _open(self, code_or_id: str, *, deleted: bool = False) -> Opened[VoucherUnit]:
        """The voucher's unit of work, open, for a ``with`` statement.

        Raises:
            NotFound: no voucher the caller may see has this code or id (nothing is held): a
                soft-deleted one is seen only with *deleted* (the rule:
                :data:`~vouchercore.domain.records.VISIBLE`).
        """
        store = self._store
        unit = store.begin(code_or_id)
        if unit is not None:
            try:
                if unit.record.state in (VISIBLE_OR_DELETED if deleted else VISIBLE):
                    return Opened(store, unit)
            except BaseException:  # an interrupt before the with statement owns the unit
                store.abort(unit)
                raise
            store.abort(unit)
        raise _not_found(code_or_id)

    def _find(self, code_or_id: str, *, deleted: bool = False) -> Opened[VoucherUnit] | None:
        """:meth:`_open`, or ``None`` instead of :class:`~vouchercore.errors.NotFound`."""
        try:
            return self._open(code_or_id, deleted=deleted)
        except NotFound:
            return None

    def _open_many(self, codes: Sequence[str]) -> OpenedMany[VoucherUnit]:
        """One unit of work on several vouchers, open, for a ``with`` statement.

        Raises:
            NotFound: a code names no voucher the caller may see (nothing held); its
                ``resource_id`` is the first such code.
        """
        work, missing = self._open_found(codes)
        if missing:
            if work is not None:
                work.abort()
            raise _not_found(codes[min(missing)])
        assert work is not None
        return work

    def _once(
        self,
        unit: VoucherUnit,
        now: int,
        keyed: tuple[str, str] | None,
        kind: type[R],
        step: Callable[[], tuple[R, VoucherError | None]],
    ) -> tuple[R, VoucherError | None]:
        """``step()`` in an open *unit*, at most once per idempotency key: its result, and the
        error it reports (a FAILED redemption is committed, then raised by the caller).

        *keyed* is ``(key, request fingerprint)`` (:func:`~vouchercore.requests.keyed_request`)
        or ``None``. With a key, it is claimed in the unit first: a live record for this
        request is replayed (``step`` does not run, nothing changes), one for another request
        raises :class:`~vouchercore.errors.IdempotencyKeyReused`; a step that succeeds keeps
        its result (of type *kind*: :func:`vouchercore.domain.idempotency.encode`) under the
        key, atomically with its effects; one that fails keeps nothing.
        """
        if keyed is None:  # the hot path: nothing to claim or keep
            return step()
        key, fingerprint = keyed
        replayed = idempotency.replay(self._store.claim_key(unit, key), key, fingerprint, now)
        if replayed is not None:
            return idempotency.decode(kind, replayed), None
        result, error = step()
        if error is None:
            kept = idempotency.keep(
                key, fingerprint, idempotency.encode(result), now, self._retention_us
            )
            self._store.keep_key(unit, kept)
        return result, error


# --- helpers ---------------------------------------------------------------------------------


def _not_found(code: str) -> NotFound:
    return NotFound(f"voucher {code!r} not found", resource_id=code, resource_type="voucher")


def _redemption_not_found(redemption_id: str) -> NotFound:
    return NotFound(
        f"redemption {redemption_id!r} not found",
        resource_id=redemption_id,
        resource_type="redemption",
    )


def _context(request: operations.UseRequest) -> dict[str, Any]:
    """A request's order and customer fields for its idempotency fingerprint: none when it
    gave none (the fingerprints of requests made before they existed stay the same)."""
    if request.context == operations.NO_CONTEXT:
        return {}
    return {"context": list(request.context)}


def _voucher_id_of(session: SessionRecord) -> str:
    return session.voucher.id


def _counted(items: Iterable[T], progress: Callable[[int], None] | None, every: int) -> Iterator[T]:
    """*items*, calling ``progress(n)`` after every *every* items and at the end."""
    if progress is None:
        yield from items
        return
    n = 0
    for item in items:
        yield item
        n += 1
        if n % every == 0:
            progress(n)
    if n % every or not n:
        progress(n)
