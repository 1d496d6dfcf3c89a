"""The voucher rules: availability, the validation check table, pricing, the rollback window.

Everything that decides whether a voucher may be used, and for how much, is here — once —
and every store shares it. The other rules live beside it in :mod:`vouchercore.domain`, each
in one place:

- what a request may ask, and the order of an operation's steps (decide, then apply):
  :mod:`~vouchercore.domain.operations` (with :func:`~vouchercore.domain.operations.new_voucher`'s
  cross-field checks of a new voucher);
- when a session is live (:meth:`SessionRecord.live_at
  <vouchercore.domain.records.SessionRecord.live_at>`), why one ends
  (:class:`~vouchercore.domain.records.SessionEnd`), and which vouchers an operation finds
  (:data:`~vouchercore.domain.records.VISIBLE`): :mod:`~vouchercore.domain.records`;
- loyalty points buckets, their spending order and expiry: :mod:`~vouchercore.domain.points`;
- idempotent retries (replay, key reuse, the retention): :mod:`~vouchercore.domain.idempotency`;
- the invariants I1–I5 the audit checks: :mod:`~vouchercore.domain.audit`;
- the shape of every argument (codes, amounts, metadata, instants):
  :mod:`~vouchercore.domain.values` and :mod:`~vouchercore.domain.instants`.

A voucher is **available** to a request while it is active, started and not expired, and
while its quantity, credits or points not held by other live sessions cover the request; the
checks run in the order of :data:`CHECKS`, and the first that fails names the error.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from typing import Final

import attrs

from vouchercore.domain.instants import MAX_US, from_us, to_us
from vouchercore.domain.records import Discount, SessionRecord, VoucherRecord, VoucherState
from vouchercore.domain.values import DiscountType, VoucherType
from vouchercore.errors import (
    GiftAmountExceeded,
    LoyaltyCardPointsExceeded,
    QuantityExceeded,
    VoucherDisabled,
    VoucherExpired,
    VoucherNotActive,
    VoucherRejected,
)

# Enum members bound once: attribute lookups on an Enum class cost ~10x a global on the hot path.
_GIFT: Final = VoucherType.GIFT_VOUCHER
_LOYALTY: Final = VoucherType.LOYALTY_CARD
_DISABLED: Final = VoucherState.DISABLED

__all__ = [
    "CHECKS",
    "ROLLBACK_WINDOW_MONTHS",
    "Demand",
    "available_balance",
    "available_quantity",
    "discount_amount",
    "first_failure",
    "held_by_sessions",
    "rollback_deadline",
]


# --- availability -----------------------------------------------------------------------------


def available_quantity(record: VoucherRecord, own: SessionRecord | None) -> int | None:
    """Redemptions left for a request whose own live session is *own* (None = unlimited).

    ``quantity − redeemed_quantity − live sessions of other keys``. Expired sessions must have
    been purged from the record first (every operation does so on entry).
    """
    quantity = record.quantity
    if quantity is None:
        return None
    sessions = record.sessions
    others = 0 if sessions is None else len(sessions.by_key) - (own is not None)
    return quantity - record.redeemed_quantity - others


def held_by_sessions(record: VoucherRecord) -> int:
    """Credits (gift) or points (loyalty) held by all live sessions of the voucher."""
    sessions = record.sessions
    if sessions is None:
        return 0
    return sessions.points if record.type is _LOYALTY else sessions.credits


def available_balance(record: VoucherRecord, own: SessionRecord | None) -> int:
    """Credits or points a request may use: the balance minus what other keys' sessions hold."""
    if record.sessions is None:
        return record.balance
    held = held_by_sessions(record)
    if own is not None:
        held -= own.points if record.type is _LOYALTY else own.credits
    return record.balance - held


# --- the check table ----------------------------------------------------------------------------


class Demand:
    """What one validation or redemption asks of a voucher, at one instant, with what is
    available to it (computed once, here).

    ``own`` is the request's own live session, whose lock counts as available to it.
    ``credits``/``points`` are what the request would use; a gift card asked without explicit
    credits uses ``min(order amount, available credits)``.
    """

    __slots__ = (
        "balance_left",
        "credits",
        "kind",
        "now",
        "own",
        "points",
        "quantity_left",
        "record",
    )

    def __init__(
        self,
        record: VoucherRecord,
        now: int,
        own: SessionRecord | None,
        credits: int | None,
        points: int | None,
        order_amount: int | None,
    ) -> None:
        self.record = record
        self.kind = kind = record.type
        self.now = now
        self.own = own
        self.quantity_left = available_quantity(record, own)
        self.balance_left = left = available_balance(record, own)
        if credits is None and kind is _GIFT and order_amount is not None:
            credits = min(order_amount, left)
        self.credits = credits or 0
        self.points = points or 0


@attrs.frozen
class Check:
    """One row of the check table: the error raised when ``fails(demand)`` is true."""

    error: type[VoucherRejected]
    fails: Callable[[Demand], bool]
    explain: Callable[[Demand], str]


def _quantity_fails(d: Demand) -> bool:
    return d.quantity_left is not None and d.quantity_left < 1


def _credits_fail(d: Demand) -> bool:
    return d.kind is _GIFT and not 0 < d.credits <= d.balance_left


def _points_fail(d: Demand) -> bool:
    return d.kind is _LOYALTY and d.points > d.balance_left


def _iso(us: int | None) -> str:
    return "-" if us is None else from_us(us).isoformat()


#: The checks, in the order that decides which error a request gets: disabled, not started,
#: expired, then quantity, credits and points (README: "Validation"). ``not_found`` comes
#: before all of them and is decided by the lookup (unknown or deleted voucher).
CHECKS: Final[tuple[Check, ...]] = (
    Check(
        VoucherDisabled,
        lambda d: d.record.state is _DISABLED,
        lambda d: "voucher is disabled",
    ),
    Check(
        VoucherNotActive,
        lambda d: d.record.start_date is not None and d.now < d.record.start_date,
        lambda d: f"voucher is not active yet (starts {_iso(d.record.start_date)})",
    ),
    Check(
        VoucherExpired,
        lambda d: d.record.expiration_date is not None and d.now > d.record.expiration_date,
        lambda d: f"voucher expired at {_iso(d.record.expiration_date)}",
    ),
    Check(
        QuantityExceeded,
        _quantity_fails,
        lambda d: (
            f"no redemption left: quantity {d.record.quantity}, redeemed "
            f"{d.record.redeemed_quantity}, locked by other sessions "
            f"{len(d.record.sessions or ()) - (d.own is not None)}"
        ),
    ),
    Check(
        GiftAmountExceeded,
        _credits_fail,
        lambda d: (
            f"gift credits asked {d.credits}, available {d.balance_left} "
            f"(balance {d.record.balance})"
        ),
    ),
    Check(
        LoyaltyCardPointsExceeded,
        _points_fail,
        lambda d: (
            f"points asked {d.points}, available {d.balance_left} (balance {d.record.balance})"
        ),
    ),
)


def first_failure(demand: Demand) -> VoucherRejected | None:
    """The error of the first failing check in :data:`CHECKS`, or None if all pass."""
    for check in CHECKS:
        if check.fails(demand):
            return check.error(
                check.explain(demand),
                resource_id=demand.record.code,
                resource_type="voucher",
            )
    return None


# --- pricing ----------------------------------------------------------------------------------


def discount_amount(discount: Discount, order_amount: int | None) -> int:
    """The discount granted on an order (0 when it cannot be priced).

    AMOUNT: ``min(amount_off, order)`` (``amount_off`` without an order); PERCENT:
    round-half-up(order × p / 100), capped by ``amount_limit`` and the order; FIXED:
    ``max(order − fixed_amount, 0)``; UNIT: reported, not priced (0).
    """
    kind = discount.type
    if kind is DiscountType.AMOUNT:
        off = discount.amount_off or 0
        return off if order_amount is None else min(off, order_amount)
    if order_amount is None:
        return 0
    if kind is DiscountType.PERCENT:
        bp = discount.percent_off_bp or 0
        amount = (order_amount * bp * 2 + 10_000) // 20_000  # half-up on exact integers
        if discount.amount_limit is not None:
            amount = min(amount, discount.amount_limit)
        return min(amount, order_amount)
    if kind is DiscountType.FIXED:
        return max(order_amount - (discount.fixed_amount or 0), 0)
    return 0


# --- rollback ---------------------------------------------------------------------------------

#: How long a redemption may be rolled back: 3 calendar months.
ROLLBACK_WINDOW_MONTHS: Final = 3


def rollback_deadline(redeemed_at: int) -> int:
    """The last instant a redemption made at *redeemed_at* may be rolled back: the same
    moment :data:`ROLLBACK_WINDOW_MONTHS` calendar months later (clamped to the month's last
    day: 30 Nov → 28/29 Feb)."""
    moment = from_us(redeemed_at)
    months = moment.month - 1 + ROLLBACK_WINDOW_MONTHS
    year, month = moment.year + months // 12, months % 12 + 1
    if year > 9999:
        return MAX_US
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return to_us(moment.replace(year=year, month=month, day=day))
