"""Stacked validation, redemption and rollback: several vouchers in one call, all or nothing.

A stack works on one open unit of work per voucher, all in one transaction
(:meth:`~vouchercore.ports.Store.begin_many`), and follows the shape of every operation: bring
each voucher up to ``now``, **decide** for every redeemable, then **apply** — only when every
redeemable is applicable.

The rules, once for every store:

- **Pricing.** Discount vouchers apply first, in the order given, each to what is left of the
  order after the ones before it; gift cards then pay, in the order given, what remains — a
  card's explicit ``credits`` are capped at what the order still owes, a card without them
  pays ``min(owed, available credits)``. Loyalty cards spend the points asked for and do not
  price the order. A stack with a priced discount (AMOUNT, PERCENT, FIXED), or a gift card
  without explicit credits, needs the order's amount.
- **Per-redeemable status.** Each redeemable is checked as a single validation checks it (the
  same check table, the same error keys), against what is left of the order at its turn:
  ``INAPPLICABLE`` with that error, or else ``APPLICABLE`` — unless the stack leaves it out
  (``SKIPPED``): a gift card with nothing left to pay (``no_effect``), or an applicable
  redeemable past the applicable limit, counted in pricing order
  (``applicable_redeemables_limit_exceeded``). The stack is valid only when every redeemable
  is applicable (Voucherify's ``ALL`` mode).
- **One session key.** A valid stacked validation with a LOCK sets one session under one key
  on every voucher; a stacked redemption with that key counts each lock as its own and
  releases them all.
- **All or nothing.** A valid stacked redemption records one parent (``r_``) and one child
  redemption per voucher, each child as a single redemption would be recorded (with the
  parent's id). An invalid one records one FAILED parent, naming the failing redeemable's
  error key, and changes nothing else. A parent is rolled back whole: every child at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import attrs

from vouchercore.domain import operations
from vouchercore.domain.instants import from_us
from vouchercore.domain.operations import (
    IdSource,
    LockRequest,
    UseRequest,
    VoucherUnit,
    check_rollback,
    reverse,
    use,
)
from vouchercore.domain.rules import Demand, discount_amount, first_failure
from vouchercore.domain.snapshots import (
    OrderSummary,
    ParentRedemption,
    ParentRollback,
    RedeemableResult,
    Redemption,
    Session,
    StackedRedemption,
    StackedRollback,
    StackedValidationResult,
)
from vouchercore.domain.values import (
    DiscountType,
    RedeemableStatus,
    RedemptionStatus,
    VoucherType,
)
from vouchercore.errors import (
    ApplicableRedeemablesLimitExceeded,
    GiftAmountExceeded,
    InvalidPayload,
    InvalidRedemption,
    MissingAmount,
    NoEffect,
    VoucherError,
)

__all__ = [
    "DEFAULT_APPLICABLE_REDEEMABLES_LIMIT",
    "DEFAULT_REDEEMABLES_LIMIT",
    "MAX_REDEEMABLES_LIMIT",
    "StackingRules",
    "redeem_stack",
    "rollback_stack",
    "validate_stack",
]

#: Voucherify's default ``stacking_rules``: at most 30 redeemables in a request, at most 5 of
#: them applicable.
DEFAULT_REDEEMABLES_LIMIT: Final = 30
DEFAULT_APPLICABLE_REDEEMABLES_LIMIT: Final = 5
#: The largest limit an engine may be configured with (Voucherify's maximum).
MAX_REDEEMABLES_LIMIT: Final = 30

_GIFT = VoucherType.GIFT_VOUCHER
_LOYALTY = VoucherType.LOYALTY_CARD
_DISCOUNT = VoucherType.DISCOUNT_VOUCHER
_APPLICABLE = RedeemableStatus.APPLICABLE
_INAPPLICABLE = RedeemableStatus.INAPPLICABLE
_SKIPPED = RedeemableStatus.SKIPPED
#: the order redeemables are priced in: discounts, then gift cards, then loyalty cards
_PRICING_RANK: Final = {_DISCOUNT: 0, _GIFT: 1, _LOYALTY: 2}


def _limit(value: object, name: str) -> int:
    if type(value) is not int or not 1 <= value <= MAX_REDEEMABLES_LIMIT:
        raise InvalidPayload(
            f"{name} must be an int from 1 to {MAX_REDEEMABLES_LIMIT}, got {value!r}"
        )
    return value


@attrs.frozen(kw_only=True)
class StackingRules:
    """The limits of a stack (Voucherify's ``stacking_rules``, the parts vouchercore applies):
    at most ``redeemables_limit`` redeemables in a request (more is
    ``redeemables_limit_exceeded``, raised before anything is read) and at most
    ``applicable_redeemables_limit`` applicable ones (the ones past it are SKIPPED:
    ``applicable_redeemables_limit_exceeded``). Each is 1–30."""

    redeemables_limit: int = attrs.field(default=DEFAULT_REDEEMABLES_LIMIT)
    applicable_redeemables_limit: int = attrs.field(default=DEFAULT_APPLICABLE_REDEEMABLES_LIMIT)

    @redeemables_limit.validator
    def _check_redeemables_limit(self, attribute: Any, value: object) -> None:
        _limit(value, attribute.name)

    @applicable_redeemables_limit.validator
    def _check_applicable_limit(self, attribute: Any, value: object) -> None:
        _limit(value, attribute.name)


class _Item:
    """One redeemable on its way through a stack: its unit, request, what it was decided."""

    __slots__ = (
        "amount",
        "demand",
        "error",
        "expiry",
        "name",
        "owed",
        "request",
        "status",
        "unit",
    )

    def __init__(self, name: str, unit: VoucherUnit, request: UseRequest) -> None:
        self.name = name
        self.unit = unit
        self.request = request
        self.demand: Demand | None = None
        self.error: VoucherError | None = None
        self.status = _APPLICABLE
        self.amount = 0
        self.owed: int | None = None
        self.expiry: Any = None


def _check_stack(items: Sequence[_Item], order_amount: int | None) -> None:
    """The request must fit the vouchers: each as a single request must, no voucher twice
    (by code and by id), and an order amount wherever the pricing needs one.

    Raises:
        InvalidArgument: the first misfit (nothing read has changed).
    """
    seen: dict[str, str] = {}
    for item in items:
        record = item.unit.record
        earlier = seen.get(record.id)
        if earlier is not None:
            raise InvalidPayload(
                f"redeemables name voucher {record.code!r} twice ({earlier!r} and {item.name!r})"
            )
        seen[record.id] = item.name
        operations.check_payload(record, item.request)
        if order_amount is None and record.type is _DISCOUNT:
            assert record.discount is not None
            if record.discount.type is not DiscountType.UNIT:
                raise MissingAmount(
                    f"discount voucher {record.code!r} in a stack needs order.amount: "
                    "discounts apply to what is left of the order",
                    resource_id=record.code,
                    resource_type="voucher",
                )


def _decide(
    items: Sequence[_Item], now: int, order_amount: int | None, limit: int
) -> tuple[int, int]:
    """Check and price every item, in pricing order (see the module docstring); what the
    applicable discounts took off and what the applicable gift cards pay."""
    owed = order_amount
    applicable = discounts = gifts = 0
    ranked: list[list[_Item]] = [[], [], []]
    for item in items:
        ranked[_PRICING_RANK[item.unit.record.type]].append(item)
    for item in (*ranked[0], *ranked[1], *ranked[2]):
        record = item.unit.record
        request = item.request
        kind = record.type
        credits = request.credits
        if kind is _GIFT and credits is not None and owed is not None:
            credits = min(credits, owed)  # no card pays more than the order still owes
        own = operations.own_session(record, request.session_key)
        demand = Demand(record, now, own, credits, request.points, owed)
        item.demand = demand
        item.owed = owed
        error: VoucherError | None = first_failure(demand)
        if error is not None:
            if kind is _GIFT and owed == 0 and isinstance(error, GiftAmountExceeded):
                item.status = _SKIPPED
                error = NoEffect(
                    f"gift card {record.code!r} has nothing left to pay: the vouchers before it "
                    "cover the whole order",
                    resource_id=record.code,
                    resource_type="voucher",
                )
            else:
                item.status = _INAPPLICABLE
            item.error = error
            continue
        if applicable >= limit:
            item.status = _SKIPPED
            item.error = ApplicableRedeemablesLimitExceeded(
                f"at most {limit} redeemables of a stack may apply; {record.code!r} is past "
                "the limit",
                resource_id=record.code,
                resource_type="voucher",
            )
            continue
        applicable += 1
        if kind is _DISCOUNT:
            assert record.discount is not None
            amount = item.amount = discount_amount(record.discount, owed)
            discounts += amount
        elif kind is _GIFT:
            amount = item.amount = demand.credits
            gifts += amount
        else:
            item.amount = demand.points
            continue
        if owed is not None:
            owed -= amount
    return discounts, gifts


def _first_error(items: Sequence[_Item]) -> tuple[_Item, VoucherError] | None:
    """The first redeemable, in request order, that is not applicable, and why."""
    for item in items:
        if item.error is not None:
            return item, item.error
    return None


def _summary(
    priced: tuple[int, int], order_amount: int | None, order_id: str | None, context: Any
) -> OrderSummary:
    discounts, gifts = priced
    total = discounts + gifts
    return OrderSummary.from_row(  # positional: see OrderSummary.FIELDS
        (
            order_id,
            context[0],
            order_amount,
            context[1],
            discounts,
            gifts,
            total,
            None if order_amount is None else order_amount - total,
        )
    )


def _result(item: _Item) -> RedeemableResult:
    record = item.unit.record
    demand = item.demand
    assert demand is not None
    kind = record.type
    applies = item.status is _APPLICABLE
    return RedeemableResult(
        status=item.status,
        id=item.name,
        voucher_id=record.id,
        code=record.code,
        type=kind,
        error=item.error,
        amount=item.amount,
        credits=item.amount if applies and kind is _GIFT else 0,
        points=item.amount if applies and kind is _LOYALTY else 0,
        discount=record.discount,
        discount_amount=item.amount if applies and kind is _DISCOUNT else 0,
        order_amount=item.owed,
        balance=None if kind is _DISCOUNT else record.balance,
    )


def _items(
    units: Sequence[VoucherUnit],
    names: Sequence[str],
    amounts: Sequence[tuple[int | None, int | None]],
    shared: UseRequest,
) -> list[_Item]:
    items = []
    for name, unit, (credits, points) in zip(names, units, amounts, strict=True):
        if credits is None and points is None:
            request = shared  # what the redeemables share is all it asks
        else:
            request = UseRequest(
                credits,
                points,
                shared.order_amount,
                shared.order_id,
                shared.session_key,
                shared.metadata,
            )
            request.context = shared.context
        items.append(_Item(name, unit, request))
    return items


def validate_stack(
    units: Sequence[VoucherUnit],
    names: Sequence[str],
    amounts: Sequence[tuple[int | None, int | None]],
    shared: UseRequest,
    ids: IdSource,
    now: int,
    rules: StackingRules,
    lock: LockRequest | None,
    missing: Sequence[tuple[int, VoucherError]] = (),
) -> StackedValidationResult:
    """Answer whether the stack can be redeemed; with *lock*, a valid answer also locks every
    voucher under one session key (an invalid one changes nothing).

    *units*, *names* (the codes or ids as given) and *amounts* (each redeemable's credits and
    points) are in request order, one per voucher found; *shared* holds what the redeemables
    share (the order, customer, session key and metadata); *missing* are the positions (in the
    whole request, ascending) of the redeemables that name no voucher the caller may see, with
    their ``not_found`` error: INAPPLICABLE.

    Raises:
        InvalidArgument: the request does not fit a voucher, names one twice, or lacks the
            order amount the pricing needs.
    """
    items = _items(units, names, amounts, shared)
    order_amount = shared.order_amount
    _check_stack(items, order_amount)
    expires_at = None if lock is None else lock.expires_at(now)
    for item in items:
        operations.purge_expired(item.unit, now)
    priced = _decide(items, now, order_amount, rules.applicable_redeemables_limit)
    results = [_result(item) for item in items]
    for position, error in missing:
        results.insert(
            position, RedeemableResult(status=_INAPPLICABLE, id=str(error.resource_id), error=error)
        )
    first = next((r.error for r in results if r.error is not None), None)
    sessions: tuple[Session, ...] = ()
    if first is None and lock is not None:
        assert expires_at is not None
        if lock.key is None:  # one key for the whole stack
            lock = LockRequest(ids.session_key(), lock.ttl, lock.ttl_unit, lock.ttl_us)
        locked = []
        for item in items:
            demand = item.demand
            assert demand is not None
            credits = item.amount if demand.kind is _GIFT else 0
            points = item.amount if demand.kind is _LOYALTY else 0
            stored = operations.set_lock(
                item.unit, ids, now, lock, demand.own, credits, points, expires_at
            )
            locked.append(Session.from_record(stored, lock.ttl, lock.ttl_unit))
        sessions = tuple(locked)
    return StackedValidationResult(
        valid=first is None,
        redeemables=tuple(results),
        order=_summary(priced, order_amount, shared.order_id, shared.context),
        error=first,
        sessions=sessions,
    )


def _parent(
    parent_id: str,
    status: str,
    amount: int,
    now: int,
    request: UseRequest,
    redemptions: str = "",
    voucher_ids: str = "",
    failure: tuple[str | None, str | None, str | None] = (None, None, None),
) -> ParentRedemption:
    """The parent's row (positional: see ``ParentRedemption.FIELDS``)."""
    context = request.context
    return ParentRedemption.from_row(
        (
            parent_id,
            status,
            amount,
            now,
            redemptions,
            voucher_ids,
            request.order_id,
            context[0],
            request.order_amount,
            context[1],
            context[2],
            context[3],
            context[4],
            request.metadata,
            request.session_key,
            *failure,
            None,
        )
    )


def redeem_stack(
    units: Sequence[VoucherUnit],
    names: Sequence[str],
    amounts: Sequence[tuple[int | None, int | None]],
    shared: UseRequest,
    ids: IdSource,
    now: int,
    rules: StackingRules,
) -> tuple[StackedRedemption, VoucherError | None]:
    """Redeem every voucher of the stack, or none; the stacked redemption and, if it FAILED,
    why (the error of the first redeemable, in request order, that is not applicable).

    On success, atomically: one parent and one child redemption per voucher, each child
    applied as a single redemption is. On failure only the FAILED parent is recorded.

    Raises:
        InvalidArgument: the request does not fit a voucher, names one twice, or lacks the
            order amount the pricing needs (nothing recorded).
    """
    items = _items(units, names, amounts, shared)
    order_amount = shared.order_amount
    _check_stack(items, order_amount)
    for item in items:
        item.expiry = operations.touch(item.unit, now)
    priced = _decide(items, now, order_amount, rules.applicable_redeemables_limit)
    summary = _summary(priced, order_amount, shared.order_id, shared.context)
    parent_id = ids.redemption_id()
    failed = _first_error(items)
    if failed is not None:
        for item in items:  # a FAILED stack changes nothing but the parents' log
            operations.undo(item.expiry)
        item, error = failed
        parent = _parent(
            parent_id, "FAILED", 0, now, shared, failure=(error.key, error.message, item.name)
        )
        units[0].parent_added(parent)
        error.parent_redemption_id = parent_id
        error.details = (
            f"stacked redemption {parent_id} failed at redeemable {items.index(item)} "
            f"({item.name!r}); nothing was redeemed"
        )
        return StackedRedemption(parent_redemption=parent, redemptions=(), order=summary), error
    children: list[Redemption] = []
    child_ids: list[str] = []
    voucher_ids: list[str] = []
    for item in items:
        unit = item.unit
        operations.settle(unit, now, item.expiry)
        demand = item.demand
        assert demand is not None
        child_id = ids.redemption_id()
        children.append(use(unit, now, demand, item.amount, item.request, child_id, parent_id))
        child_ids.append(child_id)
        voucher_ids.append(unit.record.id)
    parent = _parent(
        parent_id,
        "SUCCEEDED",
        summary.total_discount_amount,
        now,
        shared,
        ",".join(child_ids),
        ",".join(voucher_ids),
    )
    units[0].parent_added(parent)
    stacked = StackedRedemption(
        parent_redemption=parent, redemptions=tuple(children), order=summary
    )
    return stacked, None


def rollback_stack(
    units: Sequence[VoucherUnit],
    parent: ParentRedemption,
    children: Sequence[Redemption | None],
    ids: IdSource,
    now: int,
    reason: str | None,
) -> StackedRollback:
    """Roll back a whole stacked redemption: every child (on *units*, in the parent's order),
    then the parent; all at once.

    Raises:
        AlreadyRolledBack: the parent was rolled back already.
        InvalidRedemption: the parent FAILED (nothing to reverse), or a child is not there as
            the parent recorded it.
        RollbackWindowExceeded: more than 3 calendar months after the parent.
    """
    check_rollback(parent, now)
    for child_id, child in zip(parent.redemptions, children, strict=True):
        if child is None or child.status is not RedemptionStatus.SUCCEEDED:
            raise InvalidRedemption(
                f"stacked redemption {parent.id}: child {child_id} is "
                f"{'missing' if child is None else child.status.value}, not SUCCEEDED",
                resource_id=parent.id,
                resource_type="redemption",
            )
    parent_rollback_id = ids.rollback_id()
    rollbacks = []
    for unit, child in zip(units, children, strict=True):
        assert child is not None
        rolled, _ = reverse(unit, ids.rollback_id(), now, child, reason)
        rollbacks.append(rolled)
    rolled_back = parent.replace(
        status=RedemptionStatus.ROLLED_BACK, rollback_id=parent_rollback_id
    )
    units[0].parent_replaced(rolled_back)
    return StackedRollback(
        parent_rollback=ParentRollback(
            id=parent_rollback_id,
            redemption_id=parent.id,
            amount=-parent.amount,
            reason=reason,
            date=from_us(now),
        ),
        rollbacks=tuple(rollbacks),
    )
