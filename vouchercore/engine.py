"""The facade: Voucherify's voucher verbs on an in-process store.

Every operation has the same shape: check the arguments (raising
:class:`~vouchercore.errors.InvalidArgument` before anything is read), read the clock once,
open one unit of work on the voucher, make one domain call, commit. Thread-safe: operations on
one voucher are serialised by its unit of work; operations on different vouchers run
independently.
"""

from __future__ import annotations

import builtins
import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TextIO, TypeVar

from vouchercore import bulk, csvio
from vouchercore.clock import Clock, SystemClock
from vouchercore.codes import (
    ALPHANUMERIC,
    CodeConfig,
    CodeDrawer,
    GenerationReport,
    check_code_space,
)
from vouchercore.domain import idempotency, operations
from vouchercore.domain.audit import audit_voucher
from vouchercore.domain.instants import to_us_or_none
from vouchercore.domain.operations import LockRequest, UseRequest
from vouchercore.domain.records import Discount, VoucherInfo, VoucherRecord
from vouchercore.domain.snapshots import (
    AuditReport,
    BalanceUpdate,
    PointsCancellation,
    PointsTransfer,
    Redemption,
    RedemptionRollback,
    Session,
    Transaction,
    TransactionPage,
    ValidationResult,
    Violation,
    Voucher,
)
from vouchercore.domain.values import (
    MAX_CODE_LENGTH,
    DiscountType,
    TtlUnit,
    VoucherType,
    require_amount,
    require_code,
    require_enum,
    require_metadata,
    require_optional_text,
    require_percent,
    require_session_key,
    require_signed_amount,
    ttl_to_us,
)
from vouchercore.errors import InvalidPayload, NotFound, VoucherError
from vouchercore.ids import IdGenerator
from vouchercore.ports import AnyStore
from vouchercore.stores import open_store

__all__ = ["Engine"]

T = TypeVar("T")

DEFAULT_TTL = 7
#: How many expired sessions :meth:`Engine.expire_sessions` reads from the store at a time.
SWEEP_BATCH = 1_000
DEFAULT_TTL_UNIT = TtlUnit.DAYS
#: How many distinct sets of voucher fields a CSV import keeps checked at a time.
_TEMPLATES_KEPT = 256


def _not_found(code: str) -> NotFound:
    return NotFound(f"voucher {code!r} not found", resource_id=code, resource_type="voucher")


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
            7 days): a retry within it returns the first result, after it runs anew.

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
        idempotency_retention: timedelta = timedelta(days=7),
    ) -> None:
        if not isinstance(idempotency_retention, timedelta) or idempotency_retention <= timedelta(
            0
        ):
            raise InvalidPayload(
                f"idempotency_retention must be a positive timedelta, got {idempotency_retention!r}"
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
        template = _Template(
            self._ids,
            type,
            discount,
            gift,
            loyalty_card,
            quantity,
            redemption,
            active,
            start_date,
            expiration_date,
            category,
            additional_info,
            metadata,
            campaign_id,
            redeemed_quantity,
            redeemed_amount,
        )
        if code is not None:
            code = require_code(code)
        now = self._clock.now_us()
        if code is None:
            length = require_amount(code_length, "code_length")
            if length > MAX_CODE_LENGTH:
                raise InvalidPayload(f"code_length must be at most {MAX_CODE_LENGTH}, got {length}")
            code = self._ids.choice("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ", length)
        record = template.record(code, now)
        self._store.insert_voucher(record)
        return Voucher.from_record(record)

    def get_voucher(self, code_or_id: str) -> Voucher:
        """The voucher with this code or ``v_`` id, as it is now.

        Raises:
            NotFound: unknown or deleted.
        """
        code_or_id = require_code(code_or_id, "code_or_id")
        return self._run(code_or_id, _snapshot)

    def enable_voucher(self, code_or_id: str) -> Voucher:
        """Enable the voucher (idempotent). Returns it."""
        code_or_id = require_code(code_or_id, "code_or_id")
        return self._run(code_or_id, _set_active, True)

    def disable_voucher(self, code_or_id: str) -> Voucher:
        """Disable the voucher (idempotent): it keeps its sessions, but every validation and
        redemption fails with ``voucher_disabled``. Returns it."""
        code_or_id = require_code(code_or_id, "code_or_id")
        return self._run(code_or_id, _set_active, False)

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
            raise InvalidPayload(f"force must be a bool, got {force!r}")
        now = self._clock.now_us()
        unit = self._store.begin(code_or_id, include_deleted=force)
        if unit is None:
            raise _not_found(code_or_id)
        try:
            operations.delete(unit, now, force=force)
        except BaseException:
            self._store.abort(unit)
            raise
        self._store.commit(unit)

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

        Raises:
            InvalidArgument: a malformed request (bad types or amounts, unknown ttl unit, a
                gift card with neither credits nor order amount, a loyalty card without points).
        """
        code = require_code(code)
        lock = _lock_request(session)
        own_key = lock.key if lock is not None else None
        request = _use_request(order_amount, credits, points, order_id, own_key, metadata)
        now = self._clock.now_us()
        if lock is not None:
            lock.expires_at(now)  # an unrepresentable expiry is malformed: raise before reading
        unit = self._store.begin(code)
        if unit is None:
            return ValidationResult(
                valid=False, code=code, voucher_id=None, type=None, error=_not_found(code)
            )
        try:
            result = operations.validate(unit, self._ids, now, request, lock)
        except BaseException:
            self._store.abort(unit)
            raise
        self._store.commit(unit)
        return result

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
    ) -> Redemption:
        """Redeem the voucher. Same checks as validation, with *session_key*'s own lock
        counted as available; on success its session is released. An unknown or expired
        session key is treated as no session.

        With *idempotency_key*, a retry of the same request returns this redemption again and
        changes nothing (README: "Idempotent retries"); a FAILED
        attempt keeps nothing under the key.

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
        request = _use_request(order_amount, credits, points, order_id, session_key, metadata)
        key = _idempotency_key(idempotency_key)
        fingerprint = (
            None
            if key is None
            else idempotency.fingerprint(
                "redeem_voucher",
                code=code,
                order_amount=request.order_amount,
                credits=request.credits,
                points=request.points,
                order_id=request.order_id,
                session_key=request.session_key,
                metadata=request.metadata,
            )
        )
        return self._keyed(
            code,
            key,
            fingerprint,
            lambda unit, now: operations.redeem(unit, self._ids, now, request),
            idempotency.encode_redemption,
            idempotency.decode_redemption,
        )

    def release_validation_session(self, code: str, session_key: str) -> None:
        """Release the lock *session_key* holds on this voucher.

        Raises:
            NotFound: no live session with that key on this voucher (``resource_type``
                ``"session"``), or no such voucher.
        """
        code = require_code(code)
        session_key = require_session_key(session_key)
        self._run(code, operations.release_session, session_key)

    def list_sessions(self, code: str) -> tuple[Session, ...]:
        """The voucher's live sessions, soonest to expire first (ties in key order)."""
        code = require_code(code)
        return self._run(code, _sessions)

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
                sessions = list(run)
                unit = self._store.begin(voucher_id, include_deleted=True)
                if unit is not None:
                    purged_now += self._finish(unit, now_us, _expire_sessions, sessions)
            purged += purged_now
            # a short page is the last; a page that purged nothing (every session in it was
            # resolved meanwhile by another caller) is re-read only if something moved
            if len(found) < SWEEP_BATCH or purged_now == 0:
                return purged

    # --- redemptions ----------------------------------------------------------------------

    def get_redemption(self, redemption_id: str) -> Redemption:
        """A redemption (any status) by id.

        Raises:
            NotFound: unknown id, or its voucher was force-deleted.
        """
        redemption_id = require_code(redemption_id, "redemption_id")
        found = self._store.get_redemption(redemption_id)
        if found is None:
            raise NotFound(
                f"redemption {redemption_id!r} not found",
                resource_id=redemption_id,
                resource_type="redemption",
            )
        return found

    def list_redemptions(self, code: str) -> tuple[Redemption, ...]:
        """The voucher's redemption log (every attempt, failed ones too), oldest first."""
        code = require_code(code)
        return self._run(code, lambda unit, now: tuple(self._store.redemptions(unit.record.id)))

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
        key, fingerprint = _keyed_request(
            idempotency_key,
            "rollback_redemption",
            redemption_id=redemption_id,
            reason=reason,
        )
        now = self._clock.now_us()
        opened = self._store.begin_redemption(redemption_id)
        if opened is None:
            raise NotFound(
                f"redemption {redemption_id!r} not found",
                resource_id=redemption_id,
                resource_type="redemption",
            )
        unit, redemption = opened
        return self._once(
            unit,
            now,
            key,
            fingerprint,
            lambda unit, now: (
                operations.rollback(unit, self._ids, now, redemption, reason)[0],
                None,
            ),
            idempotency.encode_rollback,
            idempotency.decode_rollback,
        )

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
        key, fingerprint = _keyed_request(
            idempotency_key,
            "update_voucher_balance",
            code=code,
            amount=amount,
            source_id=source_id,
            reason=reason,
            **({} if expires_us is None else {"expires_at": expires_us}),
        )
        return self._keyed(
            code,
            key,
            fingerprint,
            lambda unit, now: (
                operations.update_balance(
                    unit, now, amount, source_id=source_id, reason=reason, expires_at=expires_us
                ),
                None,
            ),
            idempotency.encode_balance_update,
            idempotency.decode_balance_update,
        )

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
        key, fingerprint = _keyed_request(
            idempotency_key,
            "accrue_points",
            code=code,
            points=points,
            order_id=order_id,
            source_id=source_id,
            expires_at=expires_us,
            reason=reason,
        )

        def step(unit: Any, now: int) -> tuple[Transaction, None]:
            tx = operations.accrue(
                unit,
                now,
                points,
                order_id=order_id,
                source_id=source_id,
                expires_at=expires_us,
                reason=reason,
            )
            return Transaction.from_record(tx, _campaign_of(unit)), None

        return self._keyed(
            code,
            key,
            fingerprint,
            step,
            idempotency.encode_transaction,
            idempotency.decode_transaction,
        )

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
        key, fingerprint = _keyed_request(
            idempotency_key,
            "cancel_points_accrual",
            code=code,
            transaction_id=transaction_id,
            order_id=order_id,
            reason=reason,
        )

        def step(unit: Any, now: int) -> tuple[PointsCancellation, None]:
            written, accrued, taken = operations.cancel_accrual(
                unit,
                now,
                self._store.transactions(unit.record.id),
                transaction_id=transaction_id,
                order_id=order_id,
                reason=reason,
            )
            campaign_id = _campaign_of(unit)
            result = PointsCancellation(
                accrued=accrued,
                cancelled=taken,
                not_cancelled=accrued - taken,
                transactions=tuple(Transaction.from_record(tx, campaign_id) for tx in written),
            )
            return result, None

        return self._keyed(
            code,
            key,
            fingerprint,
            step,
            idempotency.encode_points_cancellation,
            idempotency.decode_points_cancellation,
        )

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
        key, fingerprint = _keyed_request(
            idempotency_key,
            "transfer_points",
            source_code=source_code,
            destination_code=destination_code,
            points=points,
            reason=reason,
            source_id=source_id,
        )
        store = self._store
        now = self._clock.now_us()
        pair = store.begin_pair(source_code, destination_code)
        if pair is None:
            for code in (source_code, destination_code):
                self.get_voucher(code)  # raises NotFound for the missing one
            raise _not_found(source_code)  # both reappeared meanwhile: report as not found
        source, destination = pair

        def step(unit: Any, now: int) -> tuple[PointsTransfer, None]:
            sent, received = operations.transfer(
                source, destination, now, points, source_id=source_id, reason=reason
            )
            result = PointsTransfer(
                points=points,
                source=Transaction.from_record(sent, _campaign_of(source)),
                destination=Transaction.from_record(received, _campaign_of(destination)),
            )
            return result, None

        return self._once(
            source,
            now,
            key,
            fingerprint,
            step,
            idempotency.encode_points_transfer,
            idempotency.decode_points_transfer,
            finish=lambda commit: (
                store.commit_pair(source, destination)
                if commit
                else store.abort_pair(source, destination)
            ),
        )

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
                unit = self._store.begin(voucher_id)
                if unit is not None:  # else deleted meanwhile
                    expired += self._finish(unit, at, operations.expire_points)

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
            raise InvalidPayload(f"limit must be an int from 1 to 100, got {limit!r}")
        if page is not None and (type(page) is not int or page < 1):
            raise InvalidPayload(f"page must be an int ≥ 1, got {page!r}")
        if page is not None and starting_after_id is not None:
            raise InvalidPayload("give page or starting_after_id, not both")
        if starting_after_id is not None:
            starting_after_id = require_code(starting_after_id, "starting_after_id")
        if order not in ("-id", "id"):
            raise InvalidPayload(f"order must be '-id' or 'id', got {order!r}")
        newest_first = order == "-id"
        offset = 0 if page is None else (page - 1) * limit

        def read(unit: Any, now: int) -> TransactionPage:
            # inside the unit: the voucher's log cannot grow between the count and the page
            record = unit.record
            campaign_id = record.info.campaign_id if record.info else None
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

        return self._run(code, read)

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
        columns = csvio.check_export_fields(fields)
        if order not in ("-created_at", "created_at"):
            raise InvalidPayload(f"order must be '-created_at' or 'created_at', got {order!r}")
        writers = {"csv": csvio.write_records_csv, "jsonl": csvio.write_records_jsonl}
        write = writers.get(format)
        if write is None:
            raise InvalidPayload(f"format must be 'csv' or 'jsonl', got {format!r}")
        for name, hook in (("progress", progress), ("total_out", total_out)):
            if hook is not None and not callable(hook):
                raise InvalidPayload(f"{name} must be callable, got {hook!r}")
        voucher_id, campaign_id, newest, total = self._run(code, self._newest_transaction)
        if total_out is not None:
            total_out(total)
        log = bulk.iter_transactions(
            self._store, voucher_id, newest, descending=order == "-created_at"
        )
        rows = _counted(log, progress, bulk.EXPORT_CHUNK)
        if isinstance(out, str | os.PathLike):
            with open(out, "w", encoding="utf-8", newline="") as stream:
                return write(rows, stream, columns, campaign_id=campaign_id)
        return write(rows, out, columns, campaign_id=campaign_id)

    def _newest_transaction(self, unit: Any, now: int) -> tuple[str, str | None, str | None, int]:
        """The voucher's id, campaign id, newest transaction id and transaction count (read
        in its unit: one instant)."""
        record = unit.record
        newest = self._store.transactions_page(record.id, descending=True, limit=1)
        return (
            record.id,
            record.info.campaign_id if record.info else None,
            newest[0].id if newest else None,
            self._store.transaction_count(record.id),
        )

    def import_vouchers_using_csv(
        self,
        file: TextIO | Iterable[str] | str | os.PathLike[str],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> csvio.ImportReport:
        """Import standalone vouchers from a CSV file with Voucherify's headers (SPEC §10).

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
            raise InvalidPayload(f"progress must be callable, got {progress!r}")
        if isinstance(file, str | os.PathLike):
            try:
                stream = open(file, encoding="utf-8", newline="")  # noqa: SIM115 — closed below
            except OSError as error:
                raise InvalidPayload(f"cannot read the CSV file: {error}") from error
            with stream:
                return self._import_rows(stream, progress)
        return self._import_rows(file, progress)

    def _import_rows(
        self, lines: Iterable[str], progress: Callable[[int], None] | None
    ) -> csvio.ImportReport:
        rows = csvio.parse_voucher_rows(lines, remember_codes=False)
        # rows of a bulk file mostly differ only in their code: the checked fields of a row
        # are kept (a few hundred at most) and reused by the rows that repeat them
        templates: dict[tuple[Any, ...], _Template] = {}

        def imported(parsed: dict[str, Any], now: int) -> VoucherRecord:
            key = (
                parsed.shape  # the row's cells but the code: equal shapes, equal fields
                if isinstance(parsed, csvio.ParsedRow)
                else tuple(
                    tuple(value.items()) if builtins.type(value) is dict else value
                    for name, value in parsed.items()
                    if name != "code"
                )
            )
            template = templates.get(key)
            if template is None:
                if len(templates) >= _TEMPLATES_KEPT:
                    templates.clear()
                template = templates[key] = _Template(
                    self._ids,
                    parsed["type"],
                    parsed["discount"],
                    parsed["gift"],
                    parsed["loyalty_card"],
                    parsed["quantity"],
                    None,
                    parsed["active"],
                    parsed["start_date"],
                    parsed["expiration_date"],
                    parsed["category"],
                    parsed["additional_info"],
                    parsed["metadata"],
                    None,
                    parsed["redeemed_quantity"],
                    parsed["redeemed_amount"],
                )
            return template.record(parsed["code"], now)

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
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InvalidPayload(f"count must be an int ≥ 1, got {count!r}")
        if isinstance(keep_codes, bool) or not isinstance(keep_codes, int) or keep_codes < 0:
            raise InvalidPayload(f"keep_codes must be an int ≥ 0, got {keep_codes!r}")
        for name, hook in (("progress", progress), ("on_codes", on_codes)):
            if hook is not None and not callable(hook):
                raise InvalidPayload(f"{name} must be callable, got {hook!r}")
        config = CodeConfig(
            length=length, charset=charset, prefix=prefix, postfix=postfix, pattern=pattern
        )
        check_code_space(config, count)
        template = _Template(
            self._ids,
            type,
            discount,
            gift,
            loyalty_card,
            quantity,
            redemption,
            active,
            start_date,
            expiration_date,
            category,
            additional_info,
            metadata,
            campaign_id,
        )
        return bulk.generate(
            self._store,
            CodeDrawer(config, self._ids.random_bytes),
            template.record,
            self._clock.now_us,
            count,
            progress=progress,
            on_codes=on_codes,
            keep_codes=keep_codes,
        )

    # --- audit ----------------------------------------------------------------------------

    def audit(self) -> AuditReport:
        """Replay every voucher's log and check invariants I1–I4; a report naming each
        violation (``report.ok`` when none)."""
        now = self._clock.now_us()
        violations: list[Violation] = []
        vouchers = sessions = transactions = redemptions = 0
        for code in self._store.voucher_codes():
            unit = self._store.begin(code)
            if unit is None:
                continue
            try:
                log = self._store.transactions(unit.record.id)
                redeemed = self._store.redemptions(unit.record.id)
                found = audit_voucher(unit.record, now, log, redeemed)
            finally:
                self._store.abort(unit)
            violations.extend(found)
            vouchers += 1
            sessions += sum(1 for s in (unit.record.sessions or ()) if s.expires_at > now)
            transactions += len(log)
            redemptions += len(redeemed)
        counts = self._store.session_counts()
        resolved = sum(counts.resolved.values())
        if counts.opened - resolved != counts.stored:
            violations.append(
                Violation(
                    invariant="I4",
                    voucher_id=None,
                    code=None,
                    message=(
                        f"session ledger does not balance: {counts.opened} opened, "
                        f"{resolved} resolved, {counts.stored} stored"
                    ),
                )
            )
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

    def _keyed(
        self,
        code: str,
        key: str | None,
        fingerprint: str | None,
        step: Callable[[Any, int], tuple[T, VoucherError | None]],
        encode: Callable[[T], str],
        decode: Callable[[str], T],
    ) -> T:
        """One unit of work on a voucher, with an optional idempotency key: clock read, open,
        then :meth:`_once` with ``step(unit, now)``."""
        now = self._clock.now_us()
        unit = self._store.begin(code)
        if unit is None:
            raise _not_found(code)
        return self._once(unit, now, key, fingerprint, step, encode, decode)

    def _once(
        self,
        unit: Any,
        now: int,
        key: str | None,
        fingerprint: str | None,
        step: Callable[[Any, int], tuple[T, VoucherError | None]],
        encode: Callable[[T], str],
        decode: Callable[[str], T],
        finish: Callable[[bool], None] | None = None,
    ) -> T:
        """Finish an open unit: run ``step(unit, now)`` and commit (abort if it raised), then
        raise the error it reported, if any (a FAILED redemption is committed, then raised).
        *finish* (``finish(commit)``) ends the unit instead of the store's commit/abort (a
        pair of units).

        With *key*: first claim it in the unit; a live record for this request is replayed
        (nothing changes), one for another request raises
        :class:`~vouchercore.errors.IdempotencyKeyReused`; a call that succeeds keeps its
        result under the key, atomically with its effects; one that fails keeps nothing.
        """
        replayed: str | None = None
        try:
            if key is None:  # the hot path: nothing to claim or keep
                result, error = step(unit, now)
            else:
                assert fingerprint is not None
                replayed = idempotency.replay(
                    self._store.claim_key(unit, key), key, fingerprint, now
                )
                if replayed is None:
                    result, error = step(unit, now)
                    if error is None:
                        record = idempotency.keep(
                            key, fingerprint, encode(result), now, self._retention_us
                        )
                        self._store.keep_key(unit, record)
        except BaseException:
            if finish is None:
                self._store.abort(unit)
            else:
                finish(False)
            raise
        if replayed is not None:
            if finish is None:
                self._store.abort(unit)
            else:
                finish(False)
            return decode(replayed)
        if finish is None:
            self._store.commit(unit)
        else:
            finish(True)
        if error is not None:
            raise error
        return result

    def _run(self, code_or_id: str, step: Callable[..., T], *args: Any) -> T:
        """One unit of work on a voucher: clock read, open, ``step(unit, now, *args)``,
        commit (abort if it raised)."""
        now = self._clock.now_us()
        unit = self._store.begin(code_or_id)
        if unit is None:
            raise _not_found(code_or_id)
        return self._finish(unit, now, step, *args)

    def _finish(self, unit: Any, now: int, step: Callable[..., T], *args: Any) -> T:
        """``step(unit, now, *args)`` on an open unit, then commit (abort if it raised)."""
        try:
            result = step(unit, now, *args)
        except BaseException:
            self._store.abort(unit)
            raise
        self._store.commit(unit)
        return result


# --- steps run inside a unit (reads are purges too: expired sessions leave on every read) ----


def _expire_sessions(unit: Any, now: int, sessions: list[Any]) -> int:
    return sum(operations.expire_session(unit, now, session) for session in sessions)


def _campaign_of(unit: Any) -> str | None:
    info = unit.record.info
    return None if info is None else info.campaign_id


def _snapshot(unit: Any, now: int) -> Voucher:
    operations.purge_expired(unit, now)
    return Voucher.from_record(unit.record)


def _set_active(unit: Any, now: int, active: bool) -> Voucher:
    operations.set_active(unit, now, active)
    return Voucher.from_record(unit.record)


def _sessions(unit: Any, now: int) -> tuple[Session, ...]:
    operations.purge_expired(unit, now)
    stored = unit.record.sessions or ()
    # ties broken by key: the order must not depend on how a store happens to keep them
    return tuple(
        Session.from_record(s) for s in sorted(stored, key=lambda s: (s.expires_at, s.key))
    )


def _voucher_id_of(session: Any) -> str:
    voucher_id: str = session.voucher.id
    return voucher_id


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


# --- argument parsing -------------------------------------------------------------------------


class _Template:
    """A new voucher's fields, checked as :meth:`Engine.create_voucher` checks them (raising
    :class:`~vouchercore.errors.InvalidArgument` for a malformed one); :meth:`record` makes
    a voucher with them (CSV import: one template per row; generation: one for every code)."""

    __slots__ = ("_fields", "_ids")

    def __init__(
        self,
        ids: IdGenerator,
        type: VoucherType | str | None,
        discount: Discount | Mapping[str, Any] | None,
        gift: Mapping[str, Any] | None,
        loyalty_card: Mapping[str, Any] | None,
        quantity: int | None,
        redemption: Mapping[str, Any] | None,
        active: bool,
        start_date: datetime | None,
        expiration_date: datetime | None,
        category: str | None,
        additional_info: str | None,
        metadata: Mapping[str, Any] | None,
        campaign_id: str | None,
        redeemed_quantity: int = 0,
        redeemed_amount: int = 0,
    ) -> None:
        kind, parsed_discount, total = _parse_kind(type, discount, gift, loyalty_card)
        limit = _parse_quantity(quantity, redemption)
        if not isinstance(active, bool):
            raise InvalidPayload(f"active must be a bool, got {active!r}")
        self._ids = ids
        self._fields: dict[str, Any] = {
            "type": kind,
            "discount": parsed_discount,
            "total": total,
            "quantity": limit,
            "active": active,
            "start_date": to_us_or_none(start_date, "start_date"),
            "expiration_date": to_us_or_none(expiration_date, "expiration_date"),
            "info": _parse_info(
                category,
                additional_info,
                metadata,
                campaign_id,
                require_amount(redeemed_quantity, "redeemed_quantity", allow_zero=True),
                require_amount(redeemed_amount, "redeemed_amount", allow_zero=True),
            ),
        }

    def record(self, code: str, now: int) -> VoucherRecord:
        """A new voucher with these fields and *code*, created at *now* (the domain's
        cross-field checks: :func:`~vouchercore.domain.operations.new_voucher`)."""
        return operations.new_voucher(self._ids, now, code=code, **self._fields)


# --- argument parsing -------------------------------------------------------------------------


def _parse_discount(value: Discount | Mapping[str, Any]) -> Discount:
    if isinstance(value, Discount):
        fields: Mapping[str, Any] = {
            "type": value.type,
            "amount_off": value.amount_off,
            "percent_off": value.percent_off,
            "amount_limit": value.amount_limit,
            "fixed_amount": value.fixed_amount,
            "unit_off": value.unit_off,
            "unit_type": value.unit_type,
        }
    elif isinstance(value, Mapping):
        fields = value
    else:
        raise InvalidPayload(f"discount must be a Discount or a mapping, got {value!r}")
    kind = require_enum(DiscountType, fields.get("type"), "discount.type")
    if kind is DiscountType.AMOUNT:
        return Discount(
            type=kind, amount_off=require_amount(fields.get("amount_off"), "amount_off")
        )
    if kind is DiscountType.PERCENT:
        limit = fields.get("amount_limit")
        return Discount(
            type=kind,
            percent_off_bp=require_percent(fields.get("percent_off")),
            amount_limit=None if limit is None else require_amount(limit, "amount_limit"),
        )
    if kind is DiscountType.FIXED:
        return Discount(
            type=kind,
            fixed_amount=require_amount(
                fields.get("fixed_amount"), "fixed_amount", allow_zero=True
            ),
        )
    unit_type = require_optional_text(fields.get("unit_type"), "unit_type")
    if not unit_type:
        raise InvalidPayload(f"unit_type must be a non-empty string, got {unit_type!r}")
    return Discount(
        type=kind, unit_off=require_amount(fields.get("unit_off"), "unit_off"), unit_type=unit_type
    )


def _parse_kind(
    kind: VoucherType | str | None,
    discount: Discount | Mapping[str, Any] | None,
    gift: Mapping[str, Any] | None,
    loyalty_card: Mapping[str, Any] | None,
) -> tuple[VoucherType, Discount | None, int]:
    if kind is None:
        given = [gift is not None, loyalty_card is not None, discount is not None]
        if sum(given) != 1:
            raise InvalidPayload("give type, or exactly one of discount, gift, loyalty_card")
        kind = (
            VoucherType.GIFT_VOUCHER
            if gift is not None
            else VoucherType.LOYALTY_CARD
            if loyalty_card is not None
            else VoucherType.DISCOUNT_VOUCHER
        )
    kind = require_enum(VoucherType, kind, "type")
    parsed = None if discount is None else _parse_discount(discount)
    total = 0
    if gift is not None:
        if kind is not VoucherType.GIFT_VOUCHER:
            raise InvalidPayload(f"gift applies to GIFT_VOUCHER only, not {kind.value}")
        if not isinstance(gift, Mapping):
            raise InvalidPayload(f"gift must be a mapping like {{'amount': 10000}}, got {gift!r}")
        total = require_amount(gift.get("amount", 0), "gift.amount", allow_zero=True)
    if loyalty_card is not None:
        if kind is not VoucherType.LOYALTY_CARD:
            raise InvalidPayload(f"loyalty_card applies to LOYALTY_CARD only, not {kind.value}")
        if not isinstance(loyalty_card, Mapping):
            raise InvalidPayload(
                f"loyalty_card must be a mapping like {{'points': 500}}, got {loyalty_card!r}"
            )
        total = require_amount(
            loyalty_card.get("points", 0), "loyalty_card.points", allow_zero=True
        )
    return kind, parsed, total


def _parse_quantity(quantity: int | None, redemption: Mapping[str, Any] | None) -> int | None:
    if redemption is not None:
        if quantity is not None:
            raise InvalidPayload("give quantity or redemption={'quantity': …}, not both")
        if not isinstance(redemption, Mapping):
            raise InvalidPayload(f"redemption must be a mapping, got {redemption!r}")
        quantity = redemption.get("quantity")
    return None if quantity is None else require_amount(quantity, "quantity")


def _parse_info(
    category: str | None,
    additional_info: str | None,
    metadata: Mapping[str, Any] | None,
    campaign_id: str | None,
    redeemed_quantity: int = 0,
    redeemed_amount: int = 0,
) -> VoucherInfo | None:
    info = VoucherInfo(
        category=require_optional_text(category, "category"),
        additional_info=require_optional_text(additional_info, "additional_info"),
        metadata=require_metadata(metadata),
        campaign_id=require_optional_text(campaign_id, "campaign_id"),
        opening_redeemed_quantity=redeemed_quantity,
        opening_redeemed_amount=redeemed_amount,
    )
    return None if info == _EMPTY_INFO else info


_EMPTY_INFO = VoucherInfo()


def _keyed_request(
    idempotency_key: object, operation: str, **request: Any
) -> tuple[str | None, str | None]:
    """The checked idempotency key and, when there is one, the fingerprint of *operation* with
    its checked *request* arguments (``(None, None)`` without a key)."""
    key = _idempotency_key(idempotency_key)
    return key, None if key is None else idempotency.fingerprint(operation, **request)


def _idempotency_key(value: object) -> str | None:
    """``None``, or a key: 1–200 printable characters, no leading/trailing whitespace."""
    return None if value is None else require_session_key(value, "idempotency_key")


def _use_request(
    order_amount: object,
    credits: object,
    points: object,
    order_id: object,
    session_key: object,
    metadata: object,
) -> UseRequest:
    return UseRequest(
        None if credits is None else require_amount(credits, "credits"),
        None if points is None else require_amount(points, "points"),
        None if order_amount is None else require_amount(order_amount, "order_amount"),
        None if order_id is None else require_optional_text(order_id, "order_id"),
        None if session_key is None else require_session_key(session_key),
        None if metadata is None else require_metadata(metadata),
    )


_SESSION_FIELDS = frozenset({"type", "key", "ttl", "ttl_unit"})
_DEFAULT_LOCK = LockRequest(
    None, DEFAULT_TTL, DEFAULT_TTL_UNIT, ttl_to_us(DEFAULT_TTL, DEFAULT_TTL_UNIT)
)


def _lock_request(session: Mapping[str, Any] | str | bool | None) -> LockRequest | None:
    if session is None or session is False:
        return None
    if session is True:
        return _DEFAULT_LOCK
    if isinstance(session, str):
        session = {"type": session}
    if type(session) is not dict and not isinstance(session, Mapping):  # dict: skip the ABC
        raise InvalidPayload(f"session must be a mapping like {{'type': 'LOCK'}}, got {session!r}")
    for name in session:
        if name not in _SESSION_FIELDS:
            raise InvalidPayload(f"session has an unknown field {name!r}")
    kind = session.get("type", "LOCK")
    if kind != "LOCK" and (not isinstance(kind, str) or kind.strip().upper() != "LOCK"):
        raise InvalidPayload(f"session.type must be LOCK, got {kind!r}")
    if len(session) == 1 and "type" in session:
        return _DEFAULT_LOCK
    key = session.get("key")
    if key is not None:
        key = require_session_key(key, "session.key")
    ttl = session.get("ttl", DEFAULT_TTL)
    if type(ttl) is not int or ttl <= 0:
        raise InvalidPayload(f"session.ttl must be a positive int, got {ttl!r}")
    unit = require_enum(TtlUnit, session.get("ttl_unit", DEFAULT_TTL_UNIT), "session.ttl_unit")
    return LockRequest(key, ttl, unit, ttl_to_us(ttl, unit))
