"""The voucher operations: validate, lock, redeem, roll back, release, balance, lifecycle.

Each function works on one open unit of work (:class:`~vouchercore.ports.VoucherUnit`) at one
instant ``now`` (integer µs UTC) and follows one shape: purge what has expired, **decide**
(raising or returning the failure before anything changes), then **apply** — plain
assignments and unit notifications that cannot fail. That is what keeps invariant I5 on every
store: a failed call changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from vouchercore.domain import points as loyalty
from vouchercore.domain.instants import MAX_US, from_us
from vouchercore.domain.records import (
    CardRecord,
    Discount,
    Links,
    LoyaltyRecord,
    SessionEnd,
    SessionRecord,
    TransactionRecord,
    VoucherInfo,
    VoucherRecord,
    VoucherSessions,
    VoucherState,
)
from vouchercore.domain.rules import (
    Demand,
    discount_amount,
    first_failure,
    held_by_sessions,
    rollback_deadline,
)
from vouchercore.domain.snapshots import (
    BalanceUpdate,
    ParentRedemption,
    Redemption,
    RedemptionRollback,
    Session,
    ValidationResult,
)
from vouchercore.domain.values import (
    INT64_MAX,
    RedemptionStatus,
    TransactionType,
    TtlUnit,
    VoucherType,
)
from vouchercore.errors import (
    AlreadyCancelled,
    AlreadyRolledBack,
    InvalidAddBalanceParams,
    InvalidAmount,
    InvalidPayload,
    InvalidRedemption,
    InvalidVoucher,
    LoyaltyCardPointsExceeded,
    MissingAmount,
    NotFound,
    RollbackWindowExceeded,
    VoucherRejected,
)

__all__ = [
    "NO_CONTEXT",
    "IdSource",
    "LockRequest",
    "UseRequest",
    "VoucherUnit",
    "accrue",
    "cancel_accrual",
    "check_payload",
    "check_rollback",
    "delete",
    "expire_points",
    "expire_session",
    "live_sessions",
    "new_voucher",
    "own_session",
    "purge_expired",
    "redeem",
    "release_session",
    "reverse",
    "rollback",
    "set_active",
    "set_lock",
    "settle",
    "touch",
    "transfer",
    "undo",
    "update_balance",
    "use",
    "validate",
]

# Enum members bound once: attribute lookups on an Enum class cost ~10x a global on the hot path.
_REDEEMED = SessionEnd.REDEEMED
_RELEASED = SessionEnd.RELEASED
_EXPIRED = SessionEnd.EXPIRED
_REPLACED = SessionEnd.REPLACED
_DROPPED = SessionEnd.DROPPED
_GIFT = VoucherType.GIFT_VOUCHER
_LOYALTY = VoucherType.LOYALTY_CARD
_DISCOUNT = VoucherType.DISCOUNT_VOUCHER
_TYPE_NAME = {t: t.value for t in VoucherType}


class IdSource(Protocol):
    """Where new ids and session keys come from (secure, or seeded for simulations)."""

    def voucher_id(self) -> str:
        """``v_`` + 32 alphanumerics."""
        ...

    def redemption_id(self) -> str:
        """``r_`` + 32 alphanumerics."""
        ...

    def rollback_id(self) -> str:
        """``rr_`` + 32 alphanumerics."""
        ...

    def session_key(self) -> str:
        """``ssn_`` + 32 alphanumerics from a cryptographically secure source (or seeded)."""
        ...


class VoucherUnit(Protocol):
    """One voucher, locked for one operation, and the log of what the operation changed.

    The domain changes ``record`` in place and calls the ``*_added``/``*_removed`` methods for
    everything else it changes, in the order it changes them.
    """

    @property
    def record(self) -> VoucherRecord:
        """The voucher's current state (mutable while the unit is open)."""
        ...

    def session_added(self, session: SessionRecord) -> None:
        """A session was stored (new key, or a same-key override after its removal)."""

    def session_removed(self, session: SessionRecord, reason: SessionEnd) -> None:
        """A session left the ledger, for *reason*."""

    def transaction_added(self, tx: TransactionRecord) -> None:
        """A transaction was appended to the voucher's log."""

    def redemption_added(self, redemption: Redemption) -> None:
        """A redemption attempt (succeeded or failed) was recorded."""

    def redemption_replaced(self, redemption: Redemption) -> None:
        """A recorded redemption changed (rolled back); same id."""

    def rollback_added(self, rollback: RedemptionRollback) -> None:
        """A rollback was recorded."""

    def parent_added(self, parent: ParentRedemption) -> None:
        """The parent of a stacked redemption was recorded (SUCCEEDED or FAILED), in the one
        transaction of the stack's units: reported to one of them."""

    def parent_replaced(self, parent: ParentRedemption) -> None:
        """A recorded parent changed (rolled back); same id."""

    def voucher_purged(self) -> None:
        """The voucher is force-deleted: at commit the store forgets it entirely (record,
        sessions, redemptions, rollbacks, transactions) and frees its code."""

    def next_transaction_id(self) -> str:
        """A new transaction id, greater than every id this store handed out before."""
        ...


class LockRequest:
    """``session={"type": "LOCK", …}`` of a validation, checked: key (None = generate),
    TTL as given and in exact microseconds."""

    __slots__ = ("key", "ttl", "ttl_unit", "ttl_us")

    def __init__(self, key: str | None, ttl: int, ttl_unit: TtlUnit, ttl_us: int) -> None:
        self.key = key
        self.ttl = ttl
        self.ttl_unit = ttl_unit
        self.ttl_us = ttl_us

    def __repr__(self) -> str:
        return f"LockRequest(key={self.key!r}, ttl={self.ttl}, ttl_unit={self.ttl_unit.value})"

    def expires_at(self, now: int) -> int:
        """When a lock set at *now* expires.

        Raises:
            InvalidPayload: past the last representable instant.
        """
        expires = now + self.ttl_us
        if expires > MAX_US:
            raise InvalidPayload(
                f"session ttl {self.ttl} {self.ttl_unit.value} ends past the last "
                "representable instant (9999-12-31T23:59:59.999999Z)"
            )
        return expires


#: A request's context when it gives no order beyond its amount and id, and no customer.
NO_CONTEXT: tuple[Any, ...] = (None, None, None, None, None)


class UseRequest:
    """A checked validation or redemption request (types and ranges already verified).

    ``context`` is what is kept with the redemption about its order and customer beyond the
    order's amount and id: ``(order source_id, order metadata, customer id, customer
    source_id, customer metadata)``, in the order of the redemption's fields.
    """

    __slots__ = (
        "context",
        "credits",
        "metadata",
        "order_amount",
        "order_id",
        "points",
        "session_key",
    )

    def __init__(
        self,
        credits: int | None = None,
        points: int | None = None,
        order_amount: int | None = None,
        order_id: str | None = None,
        session_key: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.credits = credits
        self.points = points
        self.order_amount = order_amount
        self.order_id = order_id
        self.session_key = session_key
        self.metadata = metadata
        self.context = NO_CONTEXT


# --- creation ---------------------------------------------------------------------------------


def new_voucher(
    ids: IdSource,
    now: int,
    *,
    code: str,
    type: VoucherType,
    discount: Discount | None,
    total: int,
    quantity: int | None,
    active: bool,
    start_date: int | None,
    expiration_date: int | None,
    info: VoucherInfo | None,
) -> VoucherRecord:
    """A new voucher record, after the cross-field checks: a discount voucher has a discount and
    no credits or points, a card no discount, a start date is not after the expiration date, and
    opening counters stay within the quantity and the total.

    Counters it comes with (``info.opening_redeemed_*``, from a CSV import) are applied:
    a card's balance is its total minus the opening redeemed amount.

    Raises:
        InvalidPayload: a discount on a card, no discount on a discount voucher, a start date
            after the expiration date, or opening counters beyond the quantity or the total.
    """
    if type is _DISCOUNT and discount is None:
        raise InvalidPayload("discount is required for a DISCOUNT_VOUCHER")
    if type is not _DISCOUNT and discount is not None:
        raise InvalidPayload(f"discount applies to DISCOUNT_VOUCHER only, not {type.value}")
    if type is _DISCOUNT and total:
        raise InvalidPayload("gift credits or loyalty points need a GIFT_VOUCHER or LOYALTY_CARD")
    if start_date is not None and expiration_date is not None and start_date > expiration_date:
        raise InvalidPayload("start_date must not be after expiration_date")
    redeemed_quantity = info.opening_redeemed_quantity if info else 0
    redeemed_amount = info.opening_redeemed_amount if info else 0
    if quantity is not None and redeemed_quantity > quantity:
        raise InvalidPayload(
            f"redeemed quantity {redeemed_quantity} exceeds the redemption limit {quantity}"
        )
    if type is not _DISCOUNT and redeemed_amount > total:
        raise InvalidPayload(f"redeemed amount {redeemed_amount} exceeds the card's total {total}")
    return VoucherRecord.new(
        type,
        discount=discount,
        total=total,
        balance=total - redeemed_amount if type is not _DISCOUNT else 0,
        id=ids.voucher_id(),
        code=code,
        quantity=quantity,
        redeemed_quantity=redeemed_quantity,
        redeemed_amount=redeemed_amount,
        active=active,
        start_date=start_date,
        expiration_date=expiration_date,
        info=info,
        created_at=now,
    )


# --- sessions ---------------------------------------------------------------------------------


def purge_expired(unit: VoucherUnit, now: int) -> int:
    """Bring the voucher up to *now*: expire a loyalty card's due points (one
    ``POINTS_EXPIRATION`` per bucket), then drop the sessions with ``expires_at <= now``; how
    many sessions were dropped.

    Every operation does this first (reads included), so a session stops counting exactly at
    ``expires_at``, and points at theirs, whether or not a sweep ever runs.
    """
    record = unit.record
    if record.type is _LOYALTY and record.points_due_at is not None:  # points that expire
        settle(unit, now, _expire_points(record, now))
    return _purge_sessions(unit, now)


def live_sessions(unit: VoucherUnit, now: int) -> tuple[Session, ...]:
    """The voucher brought up to *now* (:func:`purge_expired`), then its sessions, soonest to
    expire first (ties in key order: the order never depends on how a store keeps them)."""
    purge_expired(unit, now)
    stored = unit.record.sessions or ()
    return tuple(
        Session.from_record(s) for s in sorted(stored, key=lambda s: (s.expires_at, s.key))
    )


def _purge_sessions(unit: VoucherUnit, now: int) -> int:
    sessions = unit.record.sessions
    if sessions is None or sessions.next_expiry is None or now < sessions.next_expiry:
        return 0
    expired = sessions.purge_expired(now)
    for session in expired:
        unit.session_removed(session, _EXPIRED)
    return len(expired)


def _expire_points(record: VoucherRecord, now: int) -> loyalty.PointsExpiry | None:
    """Expire the card's due points in place (before its expired sessions are purged: the
    sessions live at each bucket's instant protect what they hold); None if none were due."""
    due = record.points_due_at
    if due is None or due > now:
        return None
    assert isinstance(record, LoyaltyRecord)
    return loyalty.expire_due(record, now, tuple(record.sessions or ()))


def touch(unit: VoucherUnit, now: int) -> loyalty.PointsExpiry | None:
    """:func:`purge_expired` for an operation that may still fail: the points expiry is applied
    to the record but its transactions are not written yet. The caller then either
    :func:`settle` s it (before writing its own transactions) or undoes it and fails — a
    failed call changes nothing (purging expired sessions changes nothing anyone can see)."""
    record = unit.record
    # the common cases skip both calls: not a loyalty card with points that expire, no sessions
    if record.type is _LOYALTY and record.points_due_at is not None:
        expiry = _expire_points(record, now)
    else:
        expiry = None
    if record.sessions is not None:
        _purge_sessions(unit, now)
    return expiry


def settle(unit: VoucherUnit, now: int, expiry: loyalty.PointsExpiry | None) -> None:
    """Write the ``POINTS_EXPIRATION`` transactions of an applied expiry (each with the
    balance right after it)."""
    if expiry is None or not expiry.expired:
        return
    record = unit.record
    record.changed(now)
    balance = record.balance + sum(e.points for e in expiry.expired)
    for expired in expiry.expired:
        balance -= expired.points
        unit.transaction_added(
            TransactionRecord(
                unit.next_transaction_id(),
                record.id,
                TransactionType.POINTS_EXPIRATION,
                -expired.points,
                balance,
                now,
                None,
                None,
                f"points that expired at {from_us(expired.expires_at).isoformat()}",
                None,
                None if expired.accrual_id is None else ("accrual", expired.accrual_id),
            )
        )


def undo(expiry: loyalty.PointsExpiry | None) -> None:
    """Undo a tentative expiry (:func:`touch`) of an operation that fails."""
    if expiry is not None:
        expiry.undo()


def _fail(expiry: loyalty.PointsExpiry | None, error: BaseException) -> BaseException:
    """Undo a tentative expiry and hand back *error* to raise."""
    undo(expiry)
    return error


def own_session(record: VoucherRecord, key: str | None) -> SessionRecord | None:
    """The live session of *key* on the voucher (expired ones are purged already)."""
    if key is None or record.sessions is None:
        return None
    return record.sessions.by_key.get(key)


def _remove_session(unit: VoucherUnit, session: SessionRecord, reason: SessionEnd) -> None:
    sessions = unit.record.sessions
    assert sessions is not None
    sessions.remove(session)
    unit.session_removed(session, reason)


def set_lock(
    unit: VoucherUnit,
    ids: IdSource,
    now: int,
    lock: LockRequest,
    own: SessionRecord | None,
    credits: int,
    points: int,
    expires_at: int,
) -> SessionRecord:
    """Set (or, same key again, replace) the LOCK session, expiring at *expires_at*; returns
    it."""
    record = unit.record
    # a session is never dated before the voucher's latest change (a redemption with this
    # key included), whatever the wall clock did since: the audit's I4 compares the two
    created_at = record.own_time(now)
    if own is not None:
        created_at = own.created_at
        _remove_session(unit, own, _REPLACED)
    key = lock.key if lock.key is not None else ids.session_key()
    session = SessionRecord(record, key, credits, points, created_at, expires_at)
    if record.sessions is None:
        record.sessions = VoucherSessions()
    record.sessions.add(session)
    unit.session_added(session)
    return session


def release_session(unit: VoucherUnit, now: int, key: str) -> None:
    """Release the live session *key* on the unit's voucher.

    Raises:
        NotFound: no live session with that key on this voucher.
    """
    expiry = touch(unit, now)
    own = own_session(unit.record, key)
    if own is None:
        raise _fail(
            expiry,
            NotFound(
                f"no live session {key!r} on voucher {unit.record.code!r}",
                resource_id=key,
                resource_type="session",
            ),
        )
    settle(unit, now, expiry)
    _remove_session(unit, own, _RELEASED)


# --- validation and redemption ----------------------------------------------------------------


def check_payload(record: VoucherRecord, request: UseRequest) -> None:
    """The request must fit the voucher's type: credits for gift cards only, points for
    loyalty cards only (which need them), a gift card needs credits or an order amount."""
    kind = record.type
    if request.credits is not None and kind is not _GIFT:
        raise InvalidPayload(f"credits apply to gift vouchers only; {record.code!r} is {kind}")
    if request.points is not None and kind is not _LOYALTY:
        raise InvalidPayload(f"points apply to loyalty cards only; {record.code!r} is {kind}")
    if kind is _GIFT and request.credits is None:
        if request.order_amount is None:
            raise MissingAmount(
                f"gift card {record.code!r} needs credits or an order amount",
                resource_id=record.code,
                resource_type="voucher",
            )
    elif kind is _LOYALTY and request.points is None:
        raise InvalidPayload(f"loyalty card {record.code!r} needs points")


def _demand(record: VoucherRecord, now: int, request: UseRequest) -> Demand:
    own = own_session(record, request.session_key)
    return Demand(record, now, own, request.credits, request.points, request.order_amount)


def _amount(record: VoucherRecord, demand: Demand, request: UseRequest) -> int:
    """What the request uses: credits, points, or the discount granted."""
    kind = demand.kind
    if kind is _GIFT:
        return demand.credits
    if kind is _LOYALTY:
        return demand.points
    assert record.discount is not None
    return discount_amount(record.discount, request.order_amount)


def validate(
    unit: VoucherUnit,
    ids: IdSource,
    now: int,
    request: UseRequest,
    lock: LockRequest | None,
) -> ValidationResult:
    """Answer whether the voucher can be used for *request*; with *lock*, a valid answer also
    sets the LOCK session (an invalid one changes nothing).

    Raises:
        InvalidArgument: the request does not fit the voucher's type.
    """
    record = unit.record
    check_payload(record, request)
    expires_at = None if lock is None else lock.expires_at(now)
    purge_expired(unit, now)
    demand = _demand(record, now, request)
    error = first_failure(demand)
    if error is not None:
        return ValidationResult(
            valid=False, code=record.code, voucher_id=record.id, type=record.type, error=error
        )
    session = None
    if lock is not None:
        assert expires_at is not None
        own = demand.own
        stored = set_lock(unit, ids, now, lock, own, demand.credits, demand.points, expires_at)
        session = Session.from_record(stored, lock.ttl, lock.ttl_unit)
    amount = _amount(record, demand, request)
    is_discount = record.type is _DISCOUNT
    return ValidationResult.from_row(  # positional: see ValidationResult.FIELDS
        (
            True,
            record.code,
            record.id,
            record.type,
            None,
            session,
            amount,
            demand.credits,
            demand.points,
            record.discount,
            amount if is_discount else 0,
            request.order_amount,
            None if is_discount else record.balance,
        )
    )


def _details(redemption_id: str, order_id: str | None, rollback_id: str | None = None) -> Links:
    """What a redemption or refund transaction links to."""
    links: Links = ("redemption", redemption_id)
    if order_id is not None:
        links += ("order", order_id)
    if rollback_id is not None:
        links += ("rollback", rollback_id)
    return links


def _transaction(
    unit: VoucherUnit,
    now: int,
    kind: TransactionType,
    amount: int,
    *,
    source_id: str | None = None,
    source: str | None = None,
    reason: str | None = None,
    details: Links | None = None,
) -> TransactionRecord:
    """Append a transaction (after the balance has moved: it records the balance after)."""
    record = unit.record
    tx = TransactionRecord(
        unit.next_transaction_id(),
        record.id,
        kind,
        amount,
        record.balance,
        now,
        source_id,
        source,
        reason,
        None,
        details,
    )
    unit.transaction_added(tx)
    return tx


def redeem(
    unit: VoucherUnit, ids: IdSource, now: int, request: UseRequest
) -> tuple[Redemption, VoucherRejected | None]:
    """Redeem the voucher for *request*; the redemption and, if it FAILED, why.

    On success, atomically: one more redemption, credits/points taken from the balance with a
    transaction, the request's session released. On failure only the FAILED redemption is
    recorded.

    Raises:
        InvalidArgument: the request does not fit the voucher's type (nothing recorded).
    """
    record = unit.record
    check_payload(record, request)
    expiry = touch(unit, now)
    demand = _demand(record, now, request)
    error = first_failure(demand)
    redemption_id = ids.redemption_id()
    if error is not None:
        _fail(expiry, error)  # a FAILED attempt changes nothing but the redemption log
        failed = Redemption.from_row(  # positional: see Redemption.FIELDS
            (
                redemption_id,
                record.id,
                record.code,
                _TYPE_NAME[demand.kind],
                "FAILED",
                0,
                request.order_amount,
                request.order_id,
                request.session_key,
                request.metadata,
                now,
                error.key,
                error.message,
                None,
                None,
                None,
                *request.context,
            )
        )
        unit.redemption_added(failed)
        return failed, error
    settle(unit, now, expiry)
    return use(unit, now, demand, _amount(record, demand, request), request, redemption_id), None


def use(
    unit: VoucherUnit,
    now: int,
    demand: Demand,
    amount: int,
    request: UseRequest,
    redemption_id: str,
    parent_id: str | None = None,
) -> Redemption:
    """Apply a redemption decided already (every check passed for *demand*, the voucher's due
    points settled): one more redemption, *amount* credits/points taken from the balance with a
    transaction, the request's own session released, the SUCCEEDED redemption recorded (the
    child of *parent_id* in a stack)."""
    record = unit.record
    record.redeemed_quantity += 1
    record.redeemed_amount += amount
    record.changed(now)
    if demand.own is not None:
        _remove_session(unit, demand.own, _REDEEMED)
    tx_id = None
    if isinstance(record, CardRecord):
        if isinstance(record, LoyaltyRecord) and record.buckets is not None:
            loyalty.spend_points(record, amount)  # soonest-expiring first
        else:  # credits, or points that all never expire
            record.balance -= amount
        kind = (
            TransactionType.CREDITS_REDEMPTION
            if demand.kind is _GIFT
            else TransactionType.POINTS_REDEMPTION
        )
        tx_id = _transaction(
            unit, now, kind, -amount, details=_details(redemption_id, request.order_id)
        ).id
    redemption = Redemption.from_row(  # positional: see Redemption.FIELDS
        (
            redemption_id,
            record.id,
            record.code,
            _TYPE_NAME[demand.kind],
            "SUCCEEDED",
            amount,
            request.order_amount,
            request.order_id,
            request.session_key,
            request.metadata,
            now,
            None,
            None,
            tx_id,
            None,
            parent_id,
            *request.context,
        )
    )
    unit.redemption_added(redemption)
    return redemption


# --- rollback ---------------------------------------------------------------------------------


def rollback(
    unit: VoucherUnit,
    ids: IdSource,
    now: int,
    redemption: Redemption,
    reason: str | None,
) -> tuple[RedemptionRollback, Redemption]:
    """Reverse a whole redemption; returns the rollback and the redemption as it now stands.

    Allowed on a disabled or expired voucher.

    Raises:
        AlreadyRolledBack: the second time.
        InvalidRedemption: the redemption FAILED (nothing to reverse), or it is the child of a
            stacked redemption (roll back its parent: every child goes back together).
        RollbackWindowExceeded: more than 3 calendar months after the redemption.
    """
    if redemption.parent_id is not None:  # whatever its state: the parent decides
        raise InvalidRedemption(
            f"redemption {redemption.id} is part of stacked redemption {redemption.parent_id}: "
            "roll back the parent (its vouchers go back together)",
            resource_id=redemption.id,
            resource_type="redemption",
        )
    check_rollback(redemption, now)
    return reverse(unit, ids.rollback_id(), now, redemption, reason)


def check_rollback(redemption: Redemption | ParentRedemption, now: int) -> None:
    """Can *redemption* (a single one, or the parent of a stack) be rolled back at *now*?

    Raises:
        AlreadyRolledBack: it was rolled back already.
        InvalidRedemption: it FAILED (nothing to reverse).
        RollbackWindowExceeded: more than 3 calendar months after it.
    """
    if redemption.status is RedemptionStatus.ROLLED_BACK:
        raise AlreadyRolledBack(
            f"redemption {redemption.id} was rolled back already ({redemption.rollback_id})",
            resource_id=redemption.id,
            resource_type="redemption",
        )
    if redemption.status is RedemptionStatus.FAILED:
        raise InvalidRedemption(
            f"redemption {redemption.id} failed ({redemption.failure_code}); nothing to roll back",
            resource_id=redemption.id,
            resource_type="redemption",
        )
    deadline = rollback_deadline(redemption.date_us)
    if now > deadline:
        raise RollbackWindowExceeded(
            f"redemption {redemption.id} can be rolled back until {from_us(deadline).isoformat()}",
            resource_id=redemption.id,
            resource_type="redemption",
        )


def reverse(
    unit: VoucherUnit,
    rollback_id: str,
    now: int,
    redemption: Redemption,
    reason: str | None,
) -> tuple[RedemptionRollback, Redemption]:
    """Apply the rollback *rollback_id* of a SUCCEEDED *redemption* (checked already: see
    :func:`check_rollback`): one redemption fewer, credits/points returned with a
    ``CREDITS_REFUND``/``POINTS_REFUND``, the rollback recorded and the redemption marked
    ROLLED_BACK. Returns the rollback and the redemption as it now stands."""
    record = unit.record
    purge_expired(unit, now)
    amount = redemption.amount
    record.redeemed_quantity -= 1
    record.redeemed_amount -= amount
    record.changed(now)
    tx_id = None
    if isinstance(record, CardRecord):
        record.balance += amount
        kind = (
            TransactionType.CREDITS_REFUND
            if record.type is _GIFT
            else TransactionType.POINTS_REFUND
        )
        tx_id = _transaction(
            unit,
            now,
            kind,
            amount,
            reason=reason,
            details=_details(redemption.id, redemption.order_id, rollback_id),
        ).id
    result = RedemptionRollback(
        id=rollback_id,
        redemption_id=redemption.id,
        voucher_id=record.id,
        voucher_code=record.code,
        amount=-amount,
        reason=reason,
        date=from_us(now),
        transaction_id=tx_id,
    )
    rolled_back = redemption.replace(status=RedemptionStatus.ROLLED_BACK, rollback_id=rollback_id)
    unit.rollback_added(result)
    unit.redemption_replaced(rolled_back)
    return result, rolled_back


# --- balance ----------------------------------------------------------------------------------


def update_balance(
    unit: VoucherUnit,
    now: int,
    amount: int,
    *,
    source_id: str | None,
    reason: str | None,
    expires_at: int | None = None,
) -> BalanceUpdate:
    """Add (amount > 0) or remove (amount < 0) gift credits or loyalty points.

    Loyalty points added with *expires_at* expire then (a bucket); removed points are taken
    soonest-expiring first.

    Raises:
        InvalidVoucher: the voucher is a discount voucher.
        InvalidAddBalanceParams: a removal larger than the balance not held by live sessions.
        InvalidAmount: an addition would take the card past signed 64 bits.
        InvalidPayload: *expires_at* on a gift card, on a removal, or not after now.
    """
    record = unit.record
    if not isinstance(record, CardRecord):
        raise InvalidVoucher(
            f"{record.code!r} is a discount voucher; only gift and loyalty cards have a balance",
            resource_id=record.code,
            resource_type="voucher",
        )
    is_gift = record.type is _GIFT
    if expires_at is not None:
        _check_points_expiry(record, now, expires_at)
        if amount < 0:
            raise InvalidPayload("expires_at applies to points added, not removed")
    expiry = touch(unit, now)
    if amount > 0:
        if record.total + amount > INT64_MAX:
            raise _fail(
                expiry, InvalidAmount(f"amount {amount} would take the card past signed 64 bits")
            )
        kind = TransactionType.CREDITS_ADDITION if is_gift else TransactionType.POINTS_ADDITION
    else:
        removable = record.balance - held_by_sessions(record)
        if -amount > removable:
            raise _fail(
                expiry,
                InvalidAddBalanceParams(
                    f"cannot remove {-amount}: balance {record.balance}, of which "
                    f"{held_by_sessions(record)} is held by live sessions",
                    resource_id=record.code,
                    resource_type="voucher",
                ),
            )
        kind = TransactionType.CREDITS_REMOVAL if is_gift else TransactionType.POINTS_REMOVAL
    settle(unit, now, expiry)
    if amount > 0:
        record.total += amount
    if isinstance(record, LoyaltyRecord):
        if amount > 0:
            loyalty.add_points(record, amount, expires_at)
        else:
            loyalty.spend_points(record, -amount)
    else:
        record.balance += amount
    record.changed(now)
    tx = _transaction(unit, now, kind, amount, source_id=source_id, reason=reason)
    return BalanceUpdate(
        amount=amount,
        total=record.total,
        balance=record.balance,
        type="gift_voucher" if is_gift else "loyalty_card",
        voucher_id=record.id,
        transaction_id=tx.id,
    )


# --- lifecycle --------------------------------------------------------------------------------


def set_active(unit: VoucherUnit, now: int, active: bool) -> None:
    """Enable or disable the voucher (idempotent: no change, no new ``updated_at``).

    A disabled voucher keeps its sessions; they still expire on time.
    """
    purge_expired(unit, now)
    record = unit.record
    state = VoucherState.ACTIVE if active else VoucherState.DISABLED
    if record.state is not state:
        record.state = state
        record.changed(now)


def delete(unit: VoucherUnit, now: int, *, force: bool) -> None:
    """Soft delete (hidden, code kept reserved) or, with *force*, remove for good.

    Either way the voucher's sessions are dropped.
    """
    record = unit.record
    if record.sessions is not None:
        for session in list(record.sessions):
            end = _DROPPED if session.live_at(now) else _EXPIRED
            _remove_session(unit, session, end)
    record.changed(now)
    if force:
        record.state = VoucherState.PURGED
        unit.voucher_purged()
    else:
        record.state = VoucherState.DELETED


def expire_session(unit: VoucherUnit, now: int, session: SessionRecord) -> int:
    """Purge one session found by a sweep, if it is still stored and has expired (1), else 0.

    O(1) for a voucher without points due: the sweep names the session, so nothing else of
    the voucher is scanned (a loyalty card's due points are expired first). The session
    is matched by key, not identity (a SQL store hands the sweep a copy): whatever is stored
    under that key now is purged only if it has itself expired.
    """
    sessions = unit.record.sessions
    stored = None if sessions is None else sessions.by_key.get(session.key)
    if stored is None or stored.live_at(now):
        return 0
    # a loyalty card's due points expire first, while the session that may have protected
    # them at their instant is still stored
    settle(unit, now, _expire_points(unit.record, now))
    _remove_session(unit, stored, _EXPIRED)
    return 1


# --- loyalty points ---------------------------------------------------------------------------


def _loyalty_card(record: VoucherRecord, what: str) -> LoyaltyRecord:
    if not isinstance(record, LoyaltyRecord):
        raise InvalidVoucher(
            f"{what} applies to loyalty cards; {record.code!r} is {record.type.value}",
            resource_id=record.code,
            resource_type="voucher",
        )
    return record


def _check_points_expiry(record: VoucherRecord, now: int, expires_at: int) -> None:
    if record.type is not _LOYALTY:
        raise InvalidPayload(
            f"expires_at applies to loyalty points; {record.code!r} is {record.type.value}"
        )
    if expires_at <= now:
        raise InvalidPayload(
            f"expires_at {from_us(expires_at).isoformat()} is not after now "
            f"({from_us(now).isoformat()})"
        )


def _check_total(record: VoucherRecord, points: int) -> None:
    if record.total + points > INT64_MAX:
        raise InvalidAmount(f"{points} points would take {record.code!r} past signed 64 bits")


def expire_points(unit: VoucherUnit, now: int) -> int:
    """Expire the card's points due at *now* (and purge its expired sessions); how many points
    expired. What a sweep runs on each card its store lists as due."""
    expiry = _expire_points(unit.record, now)
    settle(unit, now, expiry)
    _purge_sessions(unit, now)
    return 0 if expiry is None else sum(e.points for e in expiry.expired)


def accrue(
    unit: VoucherUnit,
    now: int,
    points: int,
    *,
    order_id: str | None,
    source_id: str | None,
    expires_at: int | None,
    reason: str | None,
) -> TransactionRecord:
    """Earn *points* on a loyalty card (``POINTS_ACCRUAL``, linked to *order_id*): they raise
    ``total`` and the balance, expire at *expires_at* if given, and stay identifiable so that
    cancelling the accrual can take back what is left of them.

    Raises:
        InvalidVoucher: not a loyalty card.
        InvalidPayload: *expires_at* not after now.
        InvalidAmount: the card's total would pass signed 64 bits.
    """
    record = _loyalty_card(unit.record, "points accrual")
    if expires_at is not None:
        _check_points_expiry(record, now, expires_at)
    _check_total(record, points)
    purge_expired(unit, now)
    tx_id = unit.next_transaction_id()
    record.total += points
    loyalty.add_points(record, points, expires_at, accrual_id=tx_id)
    record.changed(now)
    tx = TransactionRecord(
        tx_id,
        record.id,
        TransactionType.POINTS_ACCRUAL,
        points,
        record.balance,
        now,
        source_id,
        None,
        reason,
        None,
        None if order_id is None else ("order", order_id),
    )
    unit.transaction_added(tx)
    return tx


def cancel_accrual(
    unit: VoucherUnit,
    now: int,
    log: Sequence[TransactionRecord],
    *,
    transaction_id: str | None,
    order_id: str | None,
    reason: str | None,
) -> tuple[list[TransactionRecord], int, int]:
    """Cancel the card's accrual *transaction_id*, or every accrual of *order_id*, given the
    card's transaction *log*: each gets a ``POINTS_CANCELLATION`` taking back the points of it
    still on the card (not spent, not expired, not held by live sessions; possibly 0 — the
    transaction still records that the accrual was cancelled). What is not taken back stays
    with the customer. Returns the transactions, the points accrued, the points taken back.

    Raises:
        InvalidVoucher: not a loyalty card.
        NotFound: no such accrual on this card.
        AlreadyCancelled: every accrual named was cancelled already.
    """
    record = _loyalty_card(unit.record, "points cancellation")
    matches = [
        tx
        for tx in log
        if tx.type is TransactionType.POINTS_ACCRUAL
        and (
            tx.id == transaction_id
            if transaction_id is not None
            else tx.details is not None and _links_to(tx.details, "order", order_id)
        )
    ]
    if not matches:
        what = (
            f"accrual {transaction_id!r}"
            if transaction_id is not None
            else f"accrual for order {order_id!r}"
        )
        raise NotFound(
            f"no {what} on loyalty card {record.code!r}",
            resource_id=transaction_id or order_id,
            resource_type="transaction",
        )
    cancelled = {
        tx.related_transaction_id for tx in log if tx.type is TransactionType.POINTS_CANCELLATION
    }
    pending = [tx for tx in matches if tx.id not in cancelled]
    if not pending:
        raise AlreadyCancelled(
            f"the accrual{'s' if len(matches) > 1 else ''} "
            f"{', '.join(tx.id for tx in matches)} on {record.code!r} "
            "were cancelled already"
            if len(matches) > 1
            else f"the accrual {matches[0].id} on {record.code!r} was cancelled already",
            resource_id=matches[0].id,
            resource_type="transaction",
        )
    purge_expired(unit, now)
    written: list[TransactionRecord] = []
    accrued = taken = 0
    for accrual in pending:
        free = record.balance - held_by_sessions(record)
        take = min(loyalty.accrual_points_left(record, accrual.id), max(0, free))
        loyalty.take_accrual(record, accrual.id, take)
        record.changed(now)
        tx = TransactionRecord(
            unit.next_transaction_id(),
            record.id,
            TransactionType.POINTS_CANCELLATION,
            -take,
            record.balance,
            now,
            accrual.source_id,
            None,
            reason,
            accrual.id,
            accrual.details,
        )
        unit.transaction_added(tx)
        written.append(tx)
        accrued += accrual.amount
        taken += take
    return written, accrued, taken


def _links_to(links: Links, kind: str, target: str | None) -> bool:
    return any(links[i] == kind and links[i + 1] == target for i in range(0, len(links), 2))


def transfer(
    source_unit: VoucherUnit,
    destination_unit: VoucherUnit,
    now: int,
    points: int,
    *,
    source_id: str | None,
    reason: str | None,
) -> tuple[TransactionRecord, TransactionRecord]:
    """Move *points* from one loyalty card to another, as one step: ``POINTS_TRANSFER_OUT``
    on the source and ``POINTS_TRANSFER_IN`` on the destination, each naming the other as
    ``related_transaction_id``. The source gives its soonest-expiring points first and they
    keep their expiry dates on the destination (a transfer never extends a point's life).

    Allowed on disabled or expired cards (as balance updates are).

    Raises:
        InvalidVoucher: either card is not a loyalty card.
        InvalidPayload: both are the same card.
        LoyaltyCardPointsExceeded: more than the source's points not held by live sessions.
        InvalidAmount: the destination's total would pass signed 64 bits.
    """
    source = _loyalty_card(source_unit.record, "a points transfer")
    destination = _loyalty_card(destination_unit.record, "a points transfer")
    if source.id == destination.id:
        raise InvalidPayload(f"cannot transfer points from {source.code!r} to itself")
    _check_total(destination, points)
    out_expiry = touch(source_unit, now)
    available = source.balance - held_by_sessions(source)
    if points > available:
        raise _fail(
            out_expiry,
            LoyaltyCardPointsExceeded(
                f"cannot transfer {points} points from {source.code!r}: {available} available "
                f"(balance {source.balance}, {held_by_sessions(source)} held by live sessions)",
                resource_id=source.code,
                resource_type="voucher",
            ),
        )
    settle(source_unit, now, out_expiry)
    purge_expired(destination_unit, now)
    out_id = source_unit.next_transaction_id()
    in_id = destination_unit.next_transaction_id()
    for expires_at, chunk in loyalty.spend_points(source, points):
        loyalty.add_points(destination, chunk, expires_at)
    destination.total += points
    for card in (source, destination):
        card.changed(now)
    sent = TransactionRecord(
        out_id,
        source.id,
        TransactionType.POINTS_TRANSFER_OUT,
        -points,
        source.balance,
        now,
        source_id,
        None,
        reason,
        in_id,
        ("destination_voucher", destination.id),
    )
    received = TransactionRecord(
        in_id,
        destination.id,
        TransactionType.POINTS_TRANSFER_IN,
        points,
        destination.balance,
        now,
        source_id,
        None,
        reason,
        out_id,
        ("source_voucher", source.id),
    )
    source_unit.transaction_added(sent)
    destination_unit.transaction_added(received)
    return sent, received
