"""Frozen public objects: what callers get back from the engine.

Built once per call at the API boundary from the domain's records; never mutated. Instants are
aware UTC datetimes, money and points integers. Field names follow Voucherify's objects.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

import attrs

from vouchercore.domain.instants import from_us
from vouchercore.domain.records import (
    Discount,
    SessionRecord,
    TransactionRecord,
    VoucherRecord,
)
from vouchercore.domain.values import RedemptionStatus, TransactionType, TtlUnit, VoucherType
from vouchercore.errors import VoucherError

__all__ = [
    "AuditReport",
    "BalanceUpdate",
    "GiftBalance",
    "LoyaltyBalance",
    "Redemption",
    "RedemptionRollback",
    "Session",
    "Transaction",
    "TransactionPage",
    "ValidationResult",
    "Violation",
    "Voucher",
]


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
            loyalty_card=(
                LoyaltyBalance(points=record.total, balance=record.balance) if is_loyalty else None
            ),
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


@attrs.frozen(kw_only=True)
class Session:
    """A LOCK session on one voucher.

    ``ttl``/``ttl_unit`` are those of the request that set it; they are ``None`` on sessions
    listed later (the store keeps only ``expires_at``).
    """

    key: str
    voucher_id: str
    voucher_code: str
    type: str = "LOCK"
    quantity: int = 1
    credits: int = 0
    points: int = 0
    created_at: datetime
    expires_at: datetime
    ttl: int | None = None
    ttl_unit: TtlUnit | None = None

    @classmethod
    def from_record(
        cls, session: SessionRecord, ttl: int | None = None, ttl_unit: TtlUnit | None = None
    ) -> Session:
        """Snapshot of a stored session."""
        return cls(
            key=session.key,
            voucher_id=session.voucher.id,
            voucher_code=session.voucher.code,
            credits=session.credits,
            points=session.points,
            created_at=from_us(session.created_at),
            expires_at=from_us(session.expires_at),
            ttl=ttl,
            ttl_unit=ttl_unit,
        )


@attrs.frozen(kw_only=True)
class ValidationResult:
    """The answer of ``validate_voucher``: never raised, always returned.

    ``error`` is the :class:`VoucherError` a redemption would raise (``None`` when valid).
    ``amount`` is what the request would use: credits (gift), points (loyalty) or the discount.
    """

    valid: bool
    code: str
    voucher_id: str | None
    type: VoucherType | None
    error: VoucherError | None = None
    session: Session | None = None
    amount: int = 0
    credits: int = 0
    points: int = 0
    discount: Discount | None = None
    discount_amount: int = 0
    order_amount: int | None = None
    balance: int | None = None


@attrs.frozen(kw_only=True)
class Redemption:
    """One redemption attempt, kept in the redemption log whatever its outcome.

    ``amount`` is the credits (gift) or points (loyalty) used, or the discount granted.
    """

    id: str
    voucher_id: str
    voucher_code: str
    voucher_type: VoucherType
    status: RedemptionStatus
    amount: int
    order_amount: int | None
    order_id: str | None
    session_key: str | None
    metadata: dict[str, Any] | None
    date: datetime
    failure_code: str | None = None
    failure_message: str | None = None
    transaction_id: str | None = None
    rollback_id: str | None = None

    @property
    def result(self) -> str:
        """Voucherify's ``result``: ``"SUCCESS"`` or ``"FAILURE"``."""
        return "FAILURE" if self.status is RedemptionStatus.FAILED else "SUCCESS"


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
            details=None if tx.details is None else {kind: {"id": id_} for kind, id_ in tx.details},
            voucher_id=tx.voucher_id,
            campaign_id=campaign_id,
            created_at=from_us(tx.created_at),
        )


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
