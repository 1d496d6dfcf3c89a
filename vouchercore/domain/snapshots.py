"""Frozen public objects: what callers get back from the engine.

Built once per call at the API boundary from the domain's records; never mutated. Instants are
aware UTC datetimes, money and points integers. Field names follow Voucherify's objects.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import attrs

from vouchercore.domain import points
from vouchercore.domain.instants import from_us, to_us
from vouchercore.domain.records import (
    Discount,
    LoyaltyRecord,
    SessionRecord,
    TransactionRecord,
    VoucherRecord,
)
from vouchercore.domain.rows import Column, RowBacked, optional
from vouchercore.domain.values import (
    RedeemableStatus,
    RedemptionStatus,
    TransactionType,
    TtlUnit,
    VoucherType,
)
from vouchercore.errors import VoucherError

__all__ = [
    "AuditReport",
    "BalanceUpdate",
    "Customer",
    "GiftBalance",
    "LoyaltyBalance",
    "Order",
    "OrderSummary",
    "ParentRedemption",
    "ParentRollback",
    "PointsCancellation",
    "PointsTransfer",
    "RedeemableResult",
    "Redemption",
    "RedemptionRollback",
    "Session",
    "StackedRedemption",
    "StackedRollback",
    "StackedValidationResult",
    "Transaction",
    "TransactionPage",
    "ValidationResult",
    "Violation",
    "Voucher",
]


_VOUCHER_TYPES = {t.value: t for t in VoucherType}
_STATUSES = {s.value: s for s in RedemptionStatus}
_TTL_UNITS = {u.value: u for u in TtlUnit}


@attrs.frozen(kw_only=True)
class GiftBalance:
    """A gift card's credits: ``amount`` ever added, ``balance`` left."""

    amount: int
    balance: int


@attrs.frozen(kw_only=True)
class LoyaltyBalance:
    """A loyalty card's points: ``points`` ever added, ``balance`` left."""

    points: int
    balance: int
    expired_points: int = 0
    next_expiration_date: datetime | None = None
    next_expiration_points: int | None = None


@attrs.frozen(kw_only=True)
class Voucher:
    """A voucher as it is now, with what its live sessions hold (``locked_*``)."""

    id: str
    code: str
    type: VoucherType
    discount: Discount | None
    gift: GiftBalance | None
    loyalty_card: LoyaltyBalance | None
    quantity: int | None
    redeemed_quantity: int
    redeemed_amount: int
    redeemed_points: int
    locked_quantity: int
    locked_credits: int
    locked_points: int
    active: bool
    start_date: datetime | None
    expiration_date: datetime | None
    category: str | None
    additional_info: str | None
    metadata: dict[str, Any] | None
    campaign_id: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_record(cls, record: VoucherRecord) -> Voucher:
        """Snapshot of *record* (its sessions must have been purged of expired ones)."""
        sessions = record.sessions
        info = record.info
        is_gift = record.type is VoucherType.GIFT_VOUCHER
        is_loyalty = record.type is VoucherType.LOYALTY_CARD
        return cls(
            id=record.id,
            code=record.code,
            type=record.type,
            discount=record.discount,
            gift=GiftBalance(amount=record.total, balance=record.balance) if is_gift else None,
            loyalty_card=_loyalty_balance(record) if is_loyalty else None,
            quantity=record.quantity,
            redeemed_quantity=record.redeemed_quantity,
            redeemed_amount=0 if is_loyalty else record.redeemed_amount,
            redeemed_points=record.redeemed_amount if is_loyalty else 0,
            locked_quantity=len(sessions) if sessions else 0,
            locked_credits=sessions.credits if sessions else 0,
            locked_points=sessions.points if sessions else 0,
            active=record.active,
            start_date=None if record.start_date is None else from_us(record.start_date),
            expiration_date=(
                None if record.expiration_date is None else from_us(record.expiration_date)
            ),
            category=info.category if info else None,
            additional_info=info.additional_info if info else None,
            metadata=copy.deepcopy(info.metadata) if info and info.metadata is not None else None,
            campaign_id=info.campaign_id if info else None,
            created_at=from_us(record.created_at),
            updated_at=from_us(record.updated_at),
        )


def _loyalty_balance(record: VoucherRecord) -> LoyaltyBalance:
    assert isinstance(record, LoyaltyRecord)
    due = points.next_expiration(record)
    return LoyaltyBalance(
        points=record.total,
        balance=record.balance,
        expired_points=record.expired_points,
        next_expiration_date=None if due is None else from_us(due[0]),
        next_expiration_points=None if due is None else due[1],
    )


class Session(RowBacked):
    """A LOCK session on one voucher: quantity 1 plus ``credits`` (gift) or ``points``
    (loyalty), live while now < ``expires_at``.

    ``ttl``/``ttl_unit`` are those of the request that set it; they are ``None`` on sessions
    listed later (the store keeps only ``expires_at``).
    """

    __slots__ = ()

    def __init__(
        self,
        *,
        key: str,
        voucher_id: str,
        voucher_code: str,
        credits: int = 0,
        points: int = 0,
        created_at: datetime,
        expires_at: datetime,
        ttl: int | None = None,
        ttl_unit: TtlUnit | str | None = None,
    ) -> None:
        row = (
            key,
            voucher_id,
            voucher_code,
            credits,
            points,
            to_us(created_at, "created_at"),
            to_us(expires_at, "expires_at"),
            ttl,
            None if ttl_unit is None else TtlUnit(ttl_unit).value,
        )
        object.__setattr__(self, "_row", row)

    @classmethod
    def from_record(
        cls, session: SessionRecord, ttl: int | None = None, ttl_unit: TtlUnit | None = None
    ) -> Session:
        """Snapshot of a stored session."""
        return cls.from_row(
            (
                session.key,
                session.voucher.id,
                session.voucher.code,
                session.credits,
                session.points,
                session.created_at,
                session.expires_at,
                ttl,
                None if ttl_unit is None else ttl_unit.value,
            )
        )

    key = Column[str](0, "The session key (yours, or ``ssn_`` + 32 alphanumerics).")
    voucher_id = Column[str](1, "The locked voucher's id.")
    voucher_code = Column[str](2, "The locked voucher's code.")
    credits = Column[int](3, "Gift credits held.")
    points = Column[int](4, "Loyalty points held.")
    created_at = Column[datetime](5, "When the session was first set (aware UTC).", from_us)
    expires_at = Column[datetime](6, "The instant it stops counting (aware UTC).", from_us)
    ttl = Column[int | None](7, "The TTL the request gave (None when listed).")
    ttl_unit = Column[TtlUnit | None](
        8, "The unit of ``ttl`` (None when listed).", optional(_TTL_UNITS.__getitem__)
    )

    @property
    def type(self) -> str:
        """Always ``"LOCK"``."""
        return "LOCK"

    @property
    def quantity(self) -> int:
        """Redemptions held: always 1."""
        return 1


class ValidationResult(RowBacked):
    """The answer of ``validate_voucher``: never raised, always returned.

    ``valid``; ``error``, the :class:`VoucherError` a redemption would raise (``None`` when
    valid); ``session`` when a LOCK was set; ``amount``, what the request would use — credits
    (gift), points (loyalty) or the discount; ``credits``, ``points``, ``discount``,
    ``discount_amount``, ``order_amount``; ``balance``, the card's balance.
    """

    __slots__ = ()

    def __init__(
        self,
        *,
        valid: bool,
        code: str,
        voucher_id: str | None,
        type: VoucherType | None,
        error: VoucherError | None = None,
        session: Session | None = None,
        amount: int = 0,
        credits: int = 0,
        points: int = 0,
        discount: Discount | None = None,
        discount_amount: int = 0,
        order_amount: int | None = None,
        balance: int | None = None,
    ) -> None:
        row = (
            valid,
            code,
            voucher_id,
            type,
            error,
            session,
            amount,
            credits,
            points,
            discount,
            discount_amount,
            order_amount,
            balance,
        )
        object.__setattr__(self, "_row", row)

    valid = Column[bool](0, "True when the voucher can be used for the request.")
    code = Column[str](1, "The code asked about.")
    voucher_id = Column[str | None](2, "The voucher's id (None when not found).")
    type = Column[VoucherType | None](3, "The voucher's type (None when not found).")
    error = Column[VoucherError | None](4, "The VoucherError a redemption would raise, or None.")
    session = Column["Session | None"](5, "The LOCK session this validation set, or None.")
    amount = Column[int](6, "Credits, points or discount the request would use.")
    credits = Column[int](7, "Gift credits the request would use.")
    points = Column[int](8, "Loyalty points the request would use.")
    discount = Column[Discount | None](9, "The voucher's discount (discount vouchers).")
    discount_amount = Column[int](10, "The discount on the order.")
    order_amount = Column[int | None](11, "The order amount asked about.")
    balance = Column[int | None](12, "The card's balance (gift and loyalty cards).")


@attrs.frozen(kw_only=True)
class Order:
    """The order a validation or redemption is for: the fields of Voucherify's order object
    that vouchercore keeps with each redemption (``amount`` in minor units)."""

    id: str | None = None
    source_id: str | None = None
    amount: int | None = None
    metadata: dict[str, Any] | None = None

    @property
    def object(self) -> str:
        """Voucherify's object name: ``"order"``."""
        return "order"

    @classmethod
    def of(
        cls,
        id: str | None,
        source_id: str | None,
        amount: int | None,
        metadata: dict[str, Any] | None,
    ) -> Order | None:
        """The order of these stored values; None when every one is None (no order given)."""
        if id is None and source_id is None and amount is None and metadata is None:
            return None
        return cls(id=id, source_id=source_id, amount=amount, metadata=copy.deepcopy(metadata))


@attrs.frozen(kw_only=True)
class Customer:
    """The customer a validation or redemption is for (Voucherify's customer object: its
    ``id``, ``source_id`` and metadata), kept with each redemption."""

    id: str | None = None
    source_id: str | None = None
    metadata: dict[str, Any] | None = None

    @property
    def object(self) -> str:
        """Voucherify's object name: ``"customer"``."""
        return "customer"

    @classmethod
    def of(
        cls, id: str | None, source_id: str | None, metadata: dict[str, Any] | None
    ) -> Customer | None:
        """The customer of these stored values; None when every one is None."""
        if id is None and source_id is None and metadata is None:
            return None
        return cls(id=id, source_id=source_id, metadata=copy.deepcopy(metadata))


class Redemption(RowBacked):
    """One redemption attempt, kept in the redemption log whatever its outcome. Immutable.

    ``amount`` is the credits (gift) or points (loyalty) used, or the discount granted.
    ``status`` is SUCCEEDED, FAILED (with ``failure_code``/``failure_message``) or
    ROLLED_BACK (with ``rollback_id``).
    """

    __slots__ = ()

    def __init__(
        self,
        *,
        id: str,
        voucher_id: str,
        voucher_code: str,
        voucher_type: VoucherType,
        status: RedemptionStatus,
        amount: int,
        order_amount: int | None,
        order_id: str | None,
        session_key: str | None,
        metadata: dict[str, Any] | None,
        date: datetime,
        failure_code: str | None = None,
        failure_message: str | None = None,
        transaction_id: str | None = None,
        rollback_id: str | None = None,
        parent_id: str | None = None,
        order_source_id: str | None = None,
        order_metadata: dict[str, Any] | None = None,
        customer_id: str | None = None,
        customer_source_id: str | None = None,
        customer_metadata: dict[str, Any] | None = None,
    ) -> None:
        row = (
            id,
            voucher_id,
            voucher_code,
            VoucherType(voucher_type).value,
            RedemptionStatus(status).value,
            amount,
            order_amount,
            order_id,
            session_key,
            copy.deepcopy(metadata),
            to_us(date, "date"),
            failure_code,
            failure_message,
            transaction_id,
            rollback_id,
            parent_id,
            order_source_id,
            copy.deepcopy(order_metadata),
            customer_id,
            customer_source_id,
            copy.deepcopy(customer_metadata),
        )
        object.__setattr__(self, "_row", row)

    id = Column[str](0, "``r_`` + 32 alphanumerics.")
    voucher_id = Column[str](1, "The redeemed voucher's id.")
    voucher_code = Column[str](2, "The redeemed voucher's code.")
    voucher_type = Column[VoucherType](
        3, "The redeemed voucher's type.", _VOUCHER_TYPES.__getitem__
    )
    status = Column[RedemptionStatus](4, "SUCCEEDED, FAILED or ROLLED_BACK.", _STATUSES.__getitem__)
    amount = Column[int](5, "Credits, points or discount used (0 for a failed attempt).")
    order_amount = Column[int | None](6, "The order amount given with the request.")
    order_id = Column[str | None](7, "The order id given with the request.")
    session_key = Column[str | None](8, "The session key given with the request.")
    metadata = Column[dict[str, Any] | None](
        9, "The request's metadata (a copy: changing it changes nothing stored).", copy.deepcopy
    )
    date = Column[datetime](10, "When it was attempted (aware UTC).", from_us)
    date_us = Column[int](10, "``date`` in microseconds since the epoch.")
    failure_code = Column[str | None](11, "The error key of a FAILED attempt.")
    failure_message = Column[str | None](12, "The error message of a FAILED attempt.")
    transaction_id = Column[str | None](13, "The CREDITS_/POINTS_REDEMPTION transaction written.")
    rollback_id = Column[str | None](14, "The ``rr_`` rollback that reversed it, if any.")
    parent_id = Column[str | None](
        15, "The parent redemption of a stacked redemption this is a child of, or None."
    )
    order_source_id = Column[str | None](16, "The order's ``source_id`` given with the request.")
    order_metadata = Column[dict[str, Any] | None](
        17, "The order's metadata given with the request (a copy).", copy.deepcopy
    )
    customer_id = Column[str | None](18, "The customer's ``id`` given with the request.")
    customer_source_id = Column[str | None](
        19, "The customer's ``source_id`` given with the request."
    )
    customer_metadata = Column[dict[str, Any] | None](
        20, "The customer's metadata given with the request (a copy).", copy.deepcopy
    )

    #: fields from this one on were added in a later release: a row or record stored before
    #: them (an idempotency record) reads them as None
    ADDED_FROM = 15

    @property
    def result(self) -> str:
        """Voucherify's ``result``: ``"SUCCESS"`` or ``"FAILURE"``."""
        return "FAILURE" if self.status is RedemptionStatus.FAILED else "SUCCESS"

    @property
    def object(self) -> str:
        """Voucherify's object name: ``"redemption"``."""
        return "redemption"

    @property
    def order(self) -> Order | None:
        """The order given with the request (None when none was)."""
        row = self._row
        return Order.of(row[7], row[16], row[6], row[17])

    @property
    def customer(self) -> Customer | None:
        """The customer given with the request (None when none was)."""
        row = self._row
        return Customer.of(row[18], row[19], row[20])


@attrs.frozen(kw_only=True)
class RedemptionRollback:
    """The reversal of a whole redemption; ``amount`` is negative (what was given back)."""

    id: str
    redemption_id: str
    voucher_id: str
    voucher_code: str
    amount: int
    reason: str | None
    date: datetime
    transaction_id: str | None = None


@attrs.frozen(kw_only=True)
class Transaction:
    """One entry of the append-only credit/point log."""

    id: str
    type: TransactionType
    amount: int
    balance: int
    source_id: str | None
    source: str | None
    reason: str | None
    related_transaction_id: str | None
    details: dict[str, Any] | None
    voucher_id: str
    campaign_id: str | None
    created_at: datetime

    @classmethod
    def from_record(cls, tx: TransactionRecord, campaign_id: str | None = None) -> Transaction:
        """Snapshot of a stored transaction."""
        return cls(
            id=tx.id,
            type=tx.type,
            amount=tx.amount,
            balance=tx.balance,
            source_id=tx.source_id,
            source=tx.source,
            reason=tx.reason,
            related_transaction_id=tx.related_transaction_id,
            details=None if tx.details is None else _links_as_details(tx.details),
            voucher_id=tx.voucher_id,
            campaign_id=campaign_id,
            created_at=from_us(tx.created_at),
        )


def _links_as_details(links: tuple[str, ...]) -> dict[str, Any]:
    """``("redemption", "r_1", "order", "o_1")`` → ``{"redemption": {"id": "r_1"}, …}``."""
    return {links[i]: {"id": links[i + 1]} for i in range(0, len(links), 2)}


@attrs.frozen(kw_only=True)
class TransactionPage:
    """One page of ``list_voucher_transactions``."""

    data: tuple[Transaction, ...]
    has_more: bool
    more_starting_after: str | None
    total: int


@attrs.frozen(kw_only=True)
class BalanceUpdate:
    """The answer of ``update_voucher_balance`` (Voucherify's balance object)."""

    amount: int
    total: int
    balance: int
    type: str  # "gift_voucher" or "loyalty_card"
    voucher_id: str
    transaction_id: str
    operation_type: str = "MANUAL"
    object: str = "balance"


@attrs.frozen(kw_only=True)
class PointsCancellation:
    """The answer of ``cancel_points_accrual``: the ``POINTS_CANCELLATION`` transactions
    written (one per accrual cancelled), the points those accruals brought, how many were
    taken back (``cancelled``), and how many stay with the customer (``not_cancelled``:
    spent, expired, or held by live sessions when the accrual was cancelled)."""

    accrued: int
    cancelled: int
    not_cancelled: int
    transactions: tuple[Transaction, ...]


@attrs.frozen(kw_only=True)
class PointsTransfer:
    """The answer of ``transfer_points``: the ``POINTS_TRANSFER_OUT`` transaction on the
    source card and the ``POINTS_TRANSFER_IN`` on the destination, each naming the other as
    ``related_transaction_id``."""

    points: int
    source: Transaction
    destination: Transaction


# --- stacked validation and redemption ---------------------------------------------------------


class OrderSummary(RowBacked):
    """The order as a stacked validation or redemption priced it: the order given, what the
    discount vouchers took off (``discount_amount``), what gift cards paid (``gift_amount``),
    both together (``total_discount_amount``), and what is left to pay (``total_amount``;
    None when the order has no amount). Immutable."""

    __slots__ = ()

    def __init__(
        self,
        *,
        id: str | None = None,
        source_id: str | None = None,
        amount: int | None = None,
        metadata: dict[str, Any] | None = None,
        discount_amount: int = 0,
        gift_amount: int = 0,
        total_discount_amount: int = 0,
        total_amount: int | None = None,
    ) -> None:
        row = (
            id,
            source_id,
            amount,
            copy.deepcopy(metadata),
            discount_amount,
            gift_amount,
            total_discount_amount,
            total_amount,
        )
        object.__setattr__(self, "_row", row)

    id = Column[str | None](0, "The order's id.")
    source_id = Column[str | None](1, "The order's ``source_id``.")
    amount = Column[int | None](2, "The order's amount (None when not given).")
    metadata = Column[dict[str, Any] | None](3, "The order's metadata (a copy).", copy.deepcopy)
    discount_amount = Column[int](4, "What the discount vouchers took off.")
    gift_amount = Column[int](5, "What the gift cards paid.")
    total_discount_amount = Column[int](6, "Discounts and gift credits together.")
    total_amount = Column[int | None](7, "What is left to pay (None without an amount).")

    @property
    def object(self) -> str:
        """Voucherify's object name: ``"order"``."""
        return "order"


@attrs.frozen(kw_only=True)
class RedeemableResult:
    """One redeemable of a stacked validation, as the stack would use it.

    ``status`` is ``APPLICABLE``, ``INAPPLICABLE`` (its own check failed: ``error`` is the
    error a single validation gives) or ``SKIPPED`` (fine on its own, but left out by the
    stack: over the applicable limit, or nothing left of the order to pay). ``amount`` is the
    discount, credits or points it would use; ``order_amount`` what was left of the order
    when it was priced.
    """

    status: RedeemableStatus
    id: str
    voucher_id: str | None = None
    code: str | None = None
    type: VoucherType | None = None
    error: VoucherError | None = None
    amount: int = 0
    credits: int = 0
    points: int = 0
    discount: Discount | None = None
    discount_amount: int = 0
    order_amount: int | None = None
    balance: int | None = None

    @property
    def object(self) -> str:
        """The redeemable's object: ``"voucher"``."""
        return "voucher"


@attrs.frozen(kw_only=True)
class StackedValidationResult:
    """The answer of ``validate_stacked_discounts``: never raised, always returned.

    ``valid`` when every redeemable is ``APPLICABLE``; ``error`` is then None, otherwise the
    error a stacked redemption would raise (that of the first redeemable, in request order,
    that is not applicable). ``sessions``: the LOCK set on each voucher under one key, when a
    valid validation asked for one.
    """

    valid: bool
    redeemables: tuple[RedeemableResult, ...]
    order: OrderSummary
    error: VoucherError | None = None
    sessions: tuple[Session, ...] = ()

    @property
    def session_key(self) -> str | None:
        """The key every voucher of the stack is locked under (None: no lock was set)."""
        return self.sessions[0].key if self.sessions else None

    @property
    def inapplicable_redeemables(self) -> tuple[RedeemableResult, ...]:
        """The redeemables whose own check failed."""
        return tuple(r for r in self.redeemables if r.status is RedeemableStatus.INAPPLICABLE)

    @property
    def skipped_redeemables(self) -> tuple[RedeemableResult, ...]:
        """The redeemables the stack left out."""
        return tuple(r for r in self.redeemables if r.status is RedeemableStatus.SKIPPED)


def _ids(joined: str) -> tuple[str, ...]:
    return tuple(joined.split(",")) if joined else ()


class ParentRedemption(RowBacked):
    """The parent of a stacked redemption: one per call, SUCCEEDED (holding one child
    redemption per voucher, ``redemptions``, on the vouchers ``voucher_ids``), FAILED (no
    child: ``failure_code`` is the error key of the redeemable that failed,
    ``failed_redeemable`` the id it was given by) or ROLLED_BACK (every child with it).
    Immutable.

    ``amount`` is what the stack took off the order: discounts plus gift credits.
    """

    __slots__ = ()

    def __init__(
        self,
        *,
        id: str,
        status: RedemptionStatus | str,
        amount: int,
        date: datetime,
        redemptions: Sequence[str] = (),
        voucher_ids: Sequence[str] = (),
        order: Order | None = None,
        customer: Customer | None = None,
        metadata: dict[str, Any] | None = None,
        session_key: str | None = None,
        failure_code: str | None = None,
        failure_message: str | None = None,
        failed_redeemable: str | None = None,
        rollback_id: str | None = None,
    ) -> None:
        row = (
            id,
            RedemptionStatus(status).value,
            amount,
            to_us(date, "date"),
            ",".join(redemptions),
            ",".join(voucher_ids),
            None if order is None else order.id,
            None if order is None else order.source_id,
            None if order is None else order.amount,
            None if order is None else copy.deepcopy(order.metadata),
            None if customer is None else customer.id,
            None if customer is None else customer.source_id,
            None if customer is None else copy.deepcopy(customer.metadata),
            copy.deepcopy(metadata),
            session_key,
            failure_code,
            failure_message,
            failed_redeemable,
            rollback_id,
        )
        object.__setattr__(self, "_row", row)

    id = Column[str](0, "``r_`` + 32 alphanumerics.")
    status = Column[RedemptionStatus](1, "SUCCEEDED, FAILED or ROLLED_BACK.", _STATUSES.__getitem__)
    amount = Column[int](2, "Discounts plus gift credits the stack took off the order.")
    date = Column[datetime](3, "When it was made (aware UTC).", from_us)
    date_us = Column[int](3, "``date`` in microseconds since the epoch.")
    redemptions = Column[tuple[str, ...]](4, "The child redemptions' ids, in request order.", _ids)
    voucher_ids = Column[tuple[str, ...]](5, "The children's vouchers, in the same order.", _ids)
    order_id = Column[str | None](6, "The order's id given with the request.")
    order_source_id = Column[str | None](7, "The order's ``source_id``.")
    order_amount = Column[int | None](8, "The order's amount.")
    order_metadata = Column[dict[str, Any] | None](
        9, "The order's metadata (a copy).", copy.deepcopy
    )
    customer_id = Column[str | None](10, "The customer's id given with the request.")
    customer_source_id = Column[str | None](11, "The customer's ``source_id``.")
    customer_metadata = Column[dict[str, Any] | None](
        12, "The customer's metadata (a copy).", copy.deepcopy
    )
    metadata = Column[dict[str, Any] | None](13, "The request's metadata (a copy).", copy.deepcopy)
    session_key = Column[str | None](14, "The session key given with the request.")
    failure_code = Column[str | None](15, "The error key of a FAILED stack.")
    failure_message = Column[str | None](16, "The error message of a FAILED stack.")
    failed_redeemable = Column[str | None](17, "The id the failing redeemable was given by.")
    rollback_id = Column[str | None](18, "The ``rr_`` rollback that reversed it, if any.")

    @property
    def object(self) -> str:
        """Voucherify's object name: ``"redemption"``."""
        return "redemption"

    @property
    def result(self) -> str:
        """Voucherify's ``result``: ``"SUCCESS"`` or ``"FAILURE"``."""
        return "FAILURE" if self.status is RedemptionStatus.FAILED else "SUCCESS"

    @property
    def order(self) -> Order | None:
        """The order given with the request (None when none was)."""
        row = self._row
        return Order.of(row[6], row[7], row[8], row[9])

    @property
    def customer(self) -> Customer | None:
        """The customer given with the request (None when none was)."""
        row = self._row
        return Customer.of(row[10], row[11], row[12])

    def replace(self, **changes: Any) -> ParentRedemption:
        """A copy with some fields changed (``status``, ``rollback_id`` …)."""
        fields = self.row_fields()
        for name, value in changes.items():
            if name not in fields:
                raise TypeError(f"ParentRedemption has no field {name!r}")
            fields[name] = value.value if isinstance(value, RedemptionStatus) else value
        return ParentRedemption.from_fields(fields)


@attrs.frozen(kw_only=True)
class StackedRedemption:
    """The answer of ``redeem_stacked_discounts``: the parent redemption, its children in
    request order, and the order as priced."""

    parent_redemption: ParentRedemption
    redemptions: tuple[Redemption, ...]
    order: OrderSummary


@attrs.frozen(kw_only=True)
class ParentRollback:
    """The reversal of a whole stacked redemption; ``amount`` is negative (the parent's
    amount given back)."""

    id: str
    redemption_id: str
    amount: int
    reason: str | None
    date: datetime

    @property
    def object(self) -> str:
        """Voucherify's object name: ``"redemption_rollback"``."""
        return "redemption_rollback"

    @property
    def status(self) -> str:
        """Always ``"SUCCEEDED"``: a rollback that fails raises instead."""
        return "SUCCEEDED"

    @property
    def result(self) -> str:
        """Always ``"SUCCESS"``."""
        return "SUCCESS"


@attrs.frozen(kw_only=True)
class StackedRollback:
    """The answer of ``rollback_stacked_redemptions``: the parent's rollback and one rollback
    per child, in the parent's order."""

    parent_rollback: ParentRollback
    rollbacks: tuple[RedemptionRollback, ...]


@attrs.frozen(kw_only=True)
class Violation:
    """One broken invariant found by ``audit()``."""

    invariant: str  # "I1" … "I4"
    voucher_id: str | None
    code: str | None
    message: str


@attrs.frozen(kw_only=True)
class AuditReport:
    """What ``Engine.audit()`` replayed and what it found; ``ok`` when nothing is broken."""

    vouchers: int
    sessions: int
    transactions: int
    redemptions: int
    violations: tuple[Violation, ...]

    @property
    def ok(self) -> bool:
        """True when no invariant is violated."""
        return not self.violations

    def __str__(self) -> str:
        head = (
            f"audit {'OK' if self.ok else 'FAILED'}: {self.vouchers} vouchers, "
            f"{self.sessions} live sessions, {self.transactions} transactions, "
            f"{self.redemptions} redemptions replayed"
        )
        lines = [head] + [
            f"  {v.invariant} {v.code or v.voucher_id or '-'}: {v.message}" for v in self.violations
        ]
        return "\n".join(lines)
