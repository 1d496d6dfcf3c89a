"""The mutable state the domain works on: one voucher and the sessions that lock it.

These are plain slotted classes, not frozen attrs objects: the hot path (validate, lock,
redeem) changes a few counters in place, and rebuilding a frozen object per step would cost
more than the whole rest of the operation. They never leave the engine: callers get frozen
snapshots (:mod:`vouchercore.domain.snapshots`).

A record is only ever touched by the thread holding its voucher's unit of work (see
:mod:`vouchercore.ports`), and the domain decides everything before it changes anything, so
a failed check leaves a record as it was.

Instants are integer microseconds since the epoch, UTC (:mod:`vouchercore.domain.instants`).
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import IntEnum, StrEnum
from typing import Any, ClassVar, Final

import attrs

from vouchercore.domain.values import DiscountType, TransactionType, VoucherType, require_percent

__all__ = [
    "VISIBLE",
    "VISIBLE_OR_DELETED",
    "CardRecord",
    "Discount",
    "DiscountRecord",
    "GiftRecord",
    "Links",
    "LoyaltyRecord",
    "PointsBucket",
    "SessionEnd",
    "SessionRecord",
    "TransactionRecord",
    "VoucherInfo",
    "VoucherRecord",
    "VoucherSessions",
    "VoucherState",
    "transaction_id",
    "transaction_seq",
]


@attrs.frozen(kw_only=True)
class Discount:
    """How a discount voucher prices an order (Voucherify's ``discount`` object).

    Use the named constructors: ``Discount.amount(500)``, ``Discount.percent(12.5,
    amount_limit=2000)``, ``Discount.fixed(1000)``, ``Discount.unit(1, "sku_1")``.
    ``percent_off`` is kept exactly as basis points (``percent_off_bp``: 12.5 % → 1250).
    """

    type: DiscountType
    amount_off: int | None = None
    percent_off_bp: int | None = None
    amount_limit: int | None = None
    fixed_amount: int | None = None
    unit_off: int | None = None
    unit_type: str | None = None

    @classmethod
    def amount(cls, amount_off: int) -> Discount:
        """A fixed amount off the order (minor units)."""
        return cls(type=DiscountType.AMOUNT, amount_off=amount_off)

    @classmethod
    def percent(cls, percent_off: Any, *, amount_limit: int | None = None) -> Discount:
        """A percentage off (0 < p ≤ 100, up to 2 decimals), optionally capped."""
        return cls(
            type=DiscountType.PERCENT,
            percent_off_bp=require_percent(percent_off),
            amount_limit=amount_limit,
        )

    @classmethod
    def fixed(cls, fixed_amount: int) -> Discount:
        """The order total becomes *fixed_amount*."""
        return cls(type=DiscountType.FIXED, fixed_amount=fixed_amount)

    @classmethod
    def unit(cls, unit_off: int, unit_type: str) -> Discount:
        """*unit_off* free units of *unit_type* (reported, not priced)."""
        return cls(type=DiscountType.UNIT, unit_off=unit_off, unit_type=unit_type)

    @property
    def percent_off(self) -> float | None:
        """The percentage as a number (12.5), or None."""
        bp = self.percent_off_bp
        return None if bp is None else (bp // 100 if bp % 100 == 0 else bp / 100)

    def as_dict(self) -> dict[str, Any]:
        """Voucherify's JSON shape of the discount."""
        out: dict[str, Any] = {"type": self.type.value}
        if self.type is DiscountType.AMOUNT:
            out["amount_off"] = self.amount_off
        elif self.type is DiscountType.PERCENT:
            out["percent_off"] = self.percent_off
            if self.amount_limit is not None:
                out["amount_limit"] = self.amount_limit
        elif self.type is DiscountType.FIXED:
            out["fixed_amount"] = self.fixed_amount
        else:
            out["unit_off"] = self.unit_off
            out["unit_type"] = self.unit_type
        return out


@attrs.frozen(kw_only=True)
class VoucherInfo:
    """Rarely set data of a voucher; absent (``None`` on the record) when all empty.

    ``opening_redeemed_quantity``/``opening_redeemed_amount`` are counters a voucher came with
    (CSV import: "Redeemed Quantity", "Redeemed Amount") that no redemption in the log
    explains; the audit starts its replay from them.
    """

    category: str | None = None
    additional_info: str | None = None
    metadata: dict[str, Any] | None = attrs.field(default=None, eq=True, hash=False)
    campaign_id: str | None = None
    opening_redeemed_quantity: int = 0
    opening_redeemed_amount: int = 0


class VoucherState(IntEnum):
    """Lifecycle of a voucher record."""

    ACTIVE = 0
    DISABLED = 1
    DELETED = 2  # soft-deleted: hidden everywhere, code still reserved
    PURGED = 3  # force-deleted: gone; a unit still holding it must treat it as not found


#: The states in which an operation finds a voucher: active or disabled; a soft-deleted one
#: only for an operation that asks for deleted ones too (a force delete, a session sweep);
#: a force-deleted one never. Every store hands out deleted vouchers as well: the engine
#: applies this rule.
#: (Tuples: ``in`` finds a member by identity, where a set would hash the enum in Python.)
VISIBLE: Final = (VoucherState.ACTIVE, VoucherState.DISABLED)
VISIBLE_OR_DELETED: Final = (*VISIBLE, VoucherState.DELETED)


class SessionEnd(StrEnum):
    """Why a session left a voucher's ledger (each is counted: the audit's I4 balances
    sessions opened against sessions ended, by reason, and sessions stored)."""

    REDEEMED = "redeemed"  # its key's redemption used it
    RELEASED = "released"  # released by its key
    EXPIRED = "expired"  # purged at or after its expiry
    REPLACED = "replaced"  # a validation with the same key set a new lock
    DROPPED = "dropped"  # its voucher was deleted before it expired


class SessionRecord:
    """One LOCK session: ``(voucher, key)`` holding quantity 1 and some credits or points.

    Live while ``now < expires_at`` (:meth:`live_at`: the one place this rule is written).
    """

    __slots__ = ("created_at", "credits", "expires_at", "key", "points", "voucher")

    def __init__(
        self,
        voucher: VoucherRecord,
        key: str,
        credits: int,
        points: int,
        created_at: int,
        expires_at: int,
    ) -> None:
        self.voucher = voucher
        self.key = key
        self.credits = credits
        self.points = points
        self.created_at = created_at
        self.expires_at = expires_at

    def __repr__(self) -> str:
        return f"SessionRecord({self.voucher.code!r}, {self.key!r}, expires_at={self.expires_at})"

    def live_at(self, now: int) -> bool:
        """Whether the session still holds what it locked at *now*: until (not at) its
        ``expires_at``."""
        return now < self.expires_at


class VoucherSessions:
    """The session ledger of one voucher: its sessions by key and what they hold in total.

    Created on a voucher's first lock. Totals count every stored session; callers purge
    expired ones first (:meth:`purge_expired`), after which every stored session is live.

    Complexity: lookup, add, remove O(1); :meth:`purge_expired` O(s) for the voucher's s
    sessions, and only when the earliest stored expiry has passed.
    """

    __slots__ = ("by_key", "credits", "next_expiry", "points")

    def __init__(self) -> None:
        self.by_key: dict[str, SessionRecord] = {}
        self.credits = 0
        self.points = 0
        #: a lower bound of the stored sessions' expiries (None when there are none)
        self.next_expiry: int | None = None

    def __len__(self) -> int:
        return len(self.by_key)

    def __iter__(self) -> Iterator[SessionRecord]:
        return iter(self.by_key.values())

    def add(self, session: SessionRecord) -> None:
        """Store a new session (its key must not be stored yet)."""
        self.by_key[session.key] = session
        self.credits += session.credits
        self.points += session.points
        if self.next_expiry is None or session.expires_at < self.next_expiry:
            self.next_expiry = session.expires_at

    def remove(self, session: SessionRecord) -> None:
        """Forget a stored session."""
        del self.by_key[session.key]
        self.credits -= session.credits
        self.points -= session.points
        if not self.by_key:
            self.next_expiry = None

    def purge_expired(self, now: int) -> list[SessionRecord]:
        """Remove and return the sessions no longer live at *now*."""
        if self.next_expiry is None or now < self.next_expiry:
            return []
        expired = [s for s in self.by_key.values() if not s.live_at(now)]
        for session in expired:
            self.remove(session)
        self.next_expiry = min((s.expires_at for s in self.by_key.values()), default=None)
        return expired


class VoucherRecord:
    """The mutable state of one voucher; one subclass per voucher type.

    :class:`DiscountRecord` adds the ``discount``; :class:`GiftRecord` and
    :class:`LoyaltyRecord` add ``total`` (credits or points ever added) and ``balance`` (what is
    left). ``type`` is a class attribute. ``redeemed_amount`` counts redeemed credits (gift),
    points (loyalty) or granted discount (discount vouchers). Build one with :meth:`new`.

    Memory matters here (a POS can hold millions of codes): a record carries only the slots its
    type uses, fields that are usually empty live in ``info`` (None when empty), and sessions
    in a ledger created on the first lock.
    """

    __slots__ = (
        "code",
        "created_at",
        "expiration_date",
        "id",
        "info",
        "quantity",
        "redeemed_amount",
        "redeemed_quantity",
        "sessions",
        "start_date",
        "state",
        "updated_at",
    )
    type: ClassVar[VoucherType]
    # per type: a slot in one subclass, a constant class attribute in the others
    discount: Discount | None
    total: int
    balance: int

    def __init__(
        self,
        *,
        id: str,
        code: str,
        quantity: int | None,
        active: bool,
        start_date: int | None,
        expiration_date: int | None,
        info: VoucherInfo | None,
        created_at: int,
        redeemed_quantity: int = 0,
        redeemed_amount: int = 0,
        updated_at: int | None = None,
    ) -> None:
        self.id = id
        self.code = code
        self.quantity = quantity
        self.redeemed_quantity = redeemed_quantity
        self.redeemed_amount = redeemed_amount
        self.state = VoucherState.ACTIVE if active else VoucherState.DISABLED
        self.start_date = start_date
        self.expiration_date = expiration_date
        self.info = info
        self.created_at = created_at
        self.updated_at = created_at if updated_at is None else updated_at
        self.sessions: VoucherSessions | None = None

    @staticmethod
    def new(
        type: VoucherType,
        *,
        discount: Discount | None = None,
        total: int = 0,
        balance: int | None = None,
        **fields: Any,
    ) -> VoucherRecord:
        """A record of the class for *type*; *discount* for discount vouchers, *total* and
        *balance* (default: *total*) for cards; *fields* as for :class:`VoucherRecord`."""
        if type is VoucherType.DISCOUNT_VOUCHER:
            assert discount is not None
            return DiscountRecord(discount=discount, **fields)
        card = GiftRecord if type is VoucherType.GIFT_VOUCHER else LoyaltyRecord
        return card(total=total, balance=total if balance is None else balance, **fields)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, state={self.state.name})"

    @property
    def active(self) -> bool:
        """True unless disabled (or deleted)."""
        return self.state is VoucherState.ACTIVE

    def own_time(self, now: int) -> int:
        """*now* in the voucher's own time, which never goes back: never before its latest
        change (``updated_at``), whatever the wall clock did since (an NTP step back). The
        audit's I4 orders a voucher's sessions and redemptions in this time."""
        updated_at = self.updated_at
        return now if now > updated_at else updated_at

    def changed(self, now: int) -> None:
        """Date a change made at *now*: ``updated_at`` moves to :meth:`own_time`."""
        if now > self.updated_at:  # noqa: PLR1730 — no max() call: every change runs this
            self.updated_at = now

    @property
    def campaign_id(self) -> str | None:
        """The campaign it belongs to (None: a standalone voucher)."""
        info = self.info
        return None if info is None else info.campaign_id

    def live_sessions(self, now: int) -> list[SessionRecord]:
        """Its sessions live at *now* (stored ones may have expired since the last purge)."""
        sessions = self.sessions
        return [] if sessions is None else [s for s in sessions if s.live_at(now)]

    @property
    def points_due_at(self) -> int | None:
        """When the card's next points expire (loyalty cards; None for the others)."""
        return None


class DiscountRecord(VoucherRecord):
    """A discount voucher: its ``discount``; no balance (``total``/``balance`` read 0)."""

    __slots__ = ("discount",)
    type = VoucherType.DISCOUNT_VOUCHER
    total = 0
    balance = 0

    def __init__(self, *, discount: Discount, **fields: Any) -> None:
        super().__init__(**fields)
        self.discount = discount


class CardRecord(VoucherRecord):
    """A card with a balance: gift credits or loyalty points (``discount`` reads None)."""

    __slots__ = ("balance", "total")
    discount = None

    def __init__(self, *, total: int, balance: int, **fields: Any) -> None:
        super().__init__(**fields)
        self.total = total
        self.balance = balance


class GiftRecord(CardRecord):
    """A gift card: ``total``/``balance`` in credits (minor units)."""

    __slots__ = ()
    type = VoucherType.GIFT_VOUCHER


class PointsBucket:
    """Points of a loyalty card that expire together, or that one accrual brought.

    ``expires_at`` (µs) is when they expire, or ``None`` (an accrual without expiry, kept
    apart only so that cancelling the accrual knows what is left of it). ``accrual_id`` is the
    ``POINTS_ACCRUAL`` transaction the points came from, if any.
    """

    __slots__ = ("accrual_id", "expires_at", "points")

    def __init__(self, expires_at: int | None, points: int, accrual_id: str | None = None) -> None:
        self.expires_at = expires_at
        self.points = points
        self.accrual_id = accrual_id

    def __repr__(self) -> str:
        return f"PointsBucket({self.expires_at}, {self.points}, {self.accrual_id!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PointsBucket):
            return NotImplemented
        return (self.expires_at, self.points, self.accrual_id) == (
            other.expires_at,
            other.points,
            other.accrual_id,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def as_list(self) -> list[Any]:
        """``[expires_at, points, accrual_id]`` (how stores keep it)."""
        return [self.expires_at, self.points, self.accrual_id]


class LoyaltyRecord(CardRecord):
    """A loyalty card: ``total``/``balance`` in points.

    ``buckets`` (None when empty) are the points that expire, soonest first, then the points
    of accruals without expiry, oldest first (see :mod:`vouchercore.domain.points`); the rest
    of the balance — the *pool* — never expires. ``expired_points`` counts every point that
    ever expired.
    """

    __slots__ = ("buckets", "expired_points")
    type = VoucherType.LOYALTY_CARD

    def __init__(
        self,
        *,
        buckets: list[PointsBucket] | None = None,
        expired_points: int = 0,
        **fields: Any,
    ) -> None:
        super().__init__(**fields)
        self.buckets = buckets or None
        self.expired_points = expired_points

    @property
    def points_due_at(self) -> int | None:
        """When the next points expire (None: none will), for the stores' expiry index; None
        for a deleted card too (nothing of it is ever touched again)."""
        buckets = self.buckets
        if not buckets or self.state >= VoucherState.DELETED:
            return None
        return buckets[0].expires_at


#: What a transaction links to, as a flat tuple of kind/id pairs: ``("redemption", "r_…",
#: "order", "o_1")``, shown to callers as Voucherify's ``{"redemption": {"id": "r_…"}, …}``.
#: Flat, so that a stored log entry holds only strings and CPython's collector can stop
#: tracking it.
Links = tuple[str, ...]


def transaction_id(seq: int) -> str:
    """The id of a store's *seq*-th transaction: ``vtx_`` + 18 hex digits, so that ids sort
    as their sequence numbers do (every store numbers its transactions 1, 2, 3 …)."""
    return f"vtx_{seq:018x}"


def transaction_seq(tx_id: str) -> int:
    """The sequence number inside a transaction id (inverse of :func:`transaction_id`)."""
    return int(tx_id[4:], 16)


class TransactionRecord:
    """One credit or point movement, as stored; ids order the log store-wide."""

    __slots__ = (
        "amount",
        "balance",
        "created_at",
        "details",
        "id",
        "reason",
        "related_transaction_id",
        "source",
        "source_id",
        "type",
        "voucher_id",
    )

    def __init__(
        self,
        id: str,
        voucher_id: str,
        type: TransactionType,
        amount: int,
        balance: int,
        created_at: int,
        source_id: str | None = None,
        source: str | None = None,
        reason: str | None = None,
        related_transaction_id: str | None = None,
        details: Links | None = None,
    ) -> None:
        self.id = id
        self.voucher_id = voucher_id
        self.type = type
        self.amount = amount
        self.balance = balance
        self.created_at = created_at
        self.source_id = source_id
        self.source = source
        self.reason = reason
        self.related_transaction_id = related_transaction_id
        self.details = details
