"""Engine objects as Voucherify's JSON: what the HTTP server answers.

Every function here turns one frozen engine object into the dict of the matching schema of
Voucherify's OpenAPI document (``v2018-08-01``): money and points stay integers in minor units,
instants are UTC ISO 8601 with milliseconds and ``Z``, enum values are the spec's, and each
object carries its ``object`` field. Nothing here decides anything about a voucher: the numbers
are the engine's, only renamed and nested the way Voucherify nests them.

Where the engine has a value the spec has no enum member for, the nearest spec value is shown
(a ``POINTS_CANCELLATION`` transaction is listed as ``POINTS_REMOVAL`` with
``details.cancellation: true``), so that a generated client that checks enums accepts it.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any, Final

from vouchercore.csvio import format_instant
from vouchercore.domain.instants import from_us
from vouchercore.domain.snapshots import (
    BalanceUpdate,
    Customer,
    Order,
    OrderSummary,
    ParentRedemption,
    ParentRollback,
    RedeemableResult,
    Redemption,
    RedemptionRollback,
    Session,
    StackedRedemption,
    StackedRollback,
    StackedValidationResult,
    Transaction,
    TransactionPage,
    ValidationResult,
    Voucher,
)
from vouchercore.domain.stacking import StackingRules
from vouchercore.domain.values import (
    RedeemableStatus,
    RedemptionStatus,
    TransactionType,
    VoucherType,
)
from vouchercore.errors import VoucherError

__all__ = [
    "balance_update",
    "error",
    "instant",
    "legacy_validation",
    "parent_redemption",
    "parent_rollback",
    "redemption",
    "redemption_rollback",
    "stacked_redemption",
    "stacked_rollback",
    "stacked_validation",
    "stacking_rules",
    "transaction",
    "transaction_page",
    "voucher",
    "voucher_redemptions",
]

_GIFT: Final = VoucherType.GIFT_VOUCHER
_LOYALTY: Final = VoucherType.LOYALTY_CARD
_FAILED: Final = RedemptionStatus.FAILED
_API_CHANNEL: Final = {"channel_type": "API"}


def instant(value: datetime | None) -> str | None:
    """An instant as ``2026-03-01T12:00:00.000Z`` (None stays None)."""
    return None if value is None else format_instant(value)


def error(problem: VoucherError, request_id: str | None = None) -> dict[str, Any]:
    """Voucherify's error object: ``{code, key, message, details, request_id, resource_id,
    resource_type}``, from the error's own :meth:`~vouchercore.errors.VoucherError.as_dict`."""
    body = problem.as_dict()
    return {
        "code": body["code"],
        "key": body["key"],
        "message": body["message"],
        "details": body["details"],
        "request_id": request_id,
        "resource_id": body["resource_id"],
        "resource_type": body["resource_type"],
    }


# --- vouchers -----------------------------------------------------------------------------------


def voucher(found: Voucher) -> dict[str, Any]:
    """A voucher (``VouchersGetResponseBody``; create, update, enable and disable answer the
    same object)."""
    kind = found.type
    gift = found.gift
    card = found.loyalty_card
    loyalty: dict[str, Any] | None = None
    if card is not None:
        due = card.next_expiration_date
        loyalty = {
            "points": card.points,
            "balance": card.balance,
            "expired_points": card.expired_points,
            "next_expiration_date": None if due is None else due.date().isoformat(),
            "next_expiration_points": card.next_expiration_points,
        }
    usage: dict[str, Any] = {
        "quantity": found.quantity,
        "redeemed_quantity": found.redeemed_quantity,
        "object": "list",
        "url": f"/v1/vouchers/{found.code}/redemption",
    }
    if kind is _LOYALTY:
        usage["redeemed_points"] = found.redeemed_points
    body: dict[str, Any] = {
        "id": found.id,
        "code": found.code,
        "campaign": None,
        "campaign_id": found.campaign_id,
        "category": found.category,
        "category_id": None,
        "type": kind.value,
        "gift": None if gift is None else {"amount": gift.amount, "balance": gift.balance},
        "loyalty_card": loyalty,
        "start_date": instant(found.start_date),
        "expiration_date": instant(found.expiration_date),
        "active": found.active,
        "additional_info": found.additional_info,
        "metadata": {} if found.metadata is None else found.metadata,
        "is_referral_code": False,
        "created_at": instant(found.created_at),
        "updated_at": instant(found.updated_at),
        "holder_id": None,
        "object": "voucher",
        "redemption": usage,
        "publish": {"object": "list", "count": 0, "url": f"/v1/vouchers/{found.code}/publications"},
        "categories": [],
    }
    if found.discount is not None:  # the spec's discount is not nullable: absent otherwise
        body["discount"] = found.discount.as_dict()
    return body


def _voucher_ref(voucher_id: str, code: str, kind: VoucherType) -> dict[str, Any]:
    """The short voucher object a redemption or rollback names its voucher by."""
    return {"id": voucher_id, "code": code, "type": kind.value, "object": "voucher"}


# --- balance and transactions -------------------------------------------------------------------


def balance_update(update: BalanceUpdate) -> dict[str, Any]:
    """The answer of ``POST /v1/vouchers/{code}/balance``."""
    return {
        "amount": update.amount,
        "total": update.total,
        "balance": update.balance,
        "type": update.type,
        "operation_type": update.operation_type,
        "object": "balance",
        "related_object": {"type": "voucher", "id": update.voucher_id},
    }


_CREDIT_TYPES: Final = frozenset(
    {
        TransactionType.CREDITS_REDEMPTION,
        TransactionType.CREDITS_REFUND,
        TransactionType.CREDITS_ADDITION,
        TransactionType.CREDITS_REMOVAL,
    }
)
_AUTOMATIC: Final = frozenset(
    {
        TransactionType.CREDITS_REDEMPTION,
        TransactionType.CREDITS_REFUND,
        TransactionType.POINTS_REDEMPTION,
        TransactionType.POINTS_REFUND,
        TransactionType.POINTS_EXPIRATION,
    }
)

#: The ``details`` keys of a points transfer naming the other card (``SimpleVoucher``).
_TRANSFER_ENDS: Final = ("source_voucher", "destination_voucher")


def transaction(tx: Transaction) -> dict[str, Any]:
    """One entry of the credit/point log (``VoucherTransaction``): the change and the balance
    after it are in ``details.balance``, as Voucherify puts them."""
    gift = tx.type in _CREDIT_TYPES
    details: dict[str, Any] = dict(tx.details) if tx.details else {}
    for end in _TRANSFER_ENDS:  # a transfer names the other card: a voucher object
        if end in details:
            details[end] = {**details[end], "object": "voucher"}
    balance: dict[str, Any] = {
        "type": "gift_voucher" if gift else "loyalty_card",
        "total": tx.balance,
        "object": "balance",
        "balance": tx.balance,
        "operation_type": "AUTOMATIC" if tx.type in _AUTOMATIC else "MANUAL",
        "related_object": {"id": tx.voucher_id, "type": "voucher"},
    }
    balance["amount" if gift else "points"] = tx.amount
    details["balance"] = balance
    kind = tx.type.value
    if tx.type is TransactionType.POINTS_CANCELLATION:  # no such member in the spec's enum
        kind = TransactionType.POINTS_REMOVAL.value
        details["cancellation"] = True
    return {
        "id": tx.id,
        "source_id": tx.source_id,
        "voucher_id": tx.voucher_id,
        "campaign_id": tx.campaign_id,
        "source": tx.source,
        "reason": tx.reason,
        "type": kind,
        "details": details,
        "related_transaction_id": tx.related_transaction_id,
        "created_at": instant(tx.created_at),
    }


def transaction_page(page: TransactionPage) -> dict[str, Any]:
    """``GET /v1/vouchers/{code}/transactions``: one page, and the cursor to the next."""
    return {
        "object": "list",
        "data_ref": "data",
        "data": [transaction(tx) for tx in page.data],
        "has_more": page.has_more,
        "more_starting_after": page.more_starting_after,
    }


# --- orders and customers -----------------------------------------------------------------------


def _order(order: Order | None) -> dict[str, Any] | None:
    if order is None:
        return None
    return {
        "id": order.id,
        "source_id": order.source_id,
        "amount": order.amount,
        "metadata": {} if order.metadata is None else order.metadata,
        "object": "order",
    }


def order_summary(summary: OrderSummary) -> dict[str, Any]:
    """The order as a stacked call priced it (``OrderCalculated``)."""
    row = summary.to_row()
    discount = row[_S_DISCOUNT]
    total_discount = row[_S_TOTAL_DISCOUNT]
    return {
        "id": row[_S_ID],
        "source_id": row[_S_SOURCE_ID],
        "amount": row[_S_AMOUNT],
        "discount_amount": discount,
        "total_discount_amount": total_discount,
        "total_amount": row[_S_TOTAL],
        "applied_discount_amount": discount,
        "total_applied_discount_amount": total_discount,
        "metadata": _copied(row[_S_METADATA]),
        "object": "order",
    }


def _customer(customer: Customer | None) -> dict[str, Any] | None:
    if customer is None:
        return None
    return {
        "id": customer.id,
        "source_id": customer.source_id,
        "metadata": {} if customer.metadata is None else customer.metadata,
        "object": "customer",
    }


# --- redemptions --------------------------------------------------------------------------------


# The redemption-side answers are built on every redeem: they read the objects' rows (by field
# name, through ``column``, once here) rather than their properties, each of which costs a call
# and a copy of its metadata.
_R_ID: Final = Redemption.column("id")
_R_VOUCHER_ID: Final = Redemption.column("voucher_id")
_R_CODE: Final = Redemption.column("voucher_code")
_R_TYPE: Final = Redemption.column("voucher_type")
_R_STATUS: Final = Redemption.column("status")
_R_AMOUNT: Final = Redemption.column("amount")
_R_ORDER_AMOUNT: Final = Redemption.column("order_amount")
_R_ORDER_ID: Final = Redemption.column("order_id")
_R_SESSION: Final = Redemption.column("session_key")
_R_METADATA: Final = Redemption.column("metadata")
_R_DATE: Final = Redemption.column("date_us")
_R_FAILURE_CODE: Final = Redemption.column("failure_code")
_R_FAILURE_MESSAGE: Final = Redemption.column("failure_message")
_R_ROLLBACK: Final = Redemption.column("rollback_id")
_R_PARENT: Final = Redemption.column("parent_id")
_R_ORDER_SOURCE_ID: Final = Redemption.column("order_source_id")
_R_ORDER_METADATA: Final = Redemption.column("order_metadata")
_R_CUSTOMER_ID: Final = Redemption.column("customer_id")
_R_CUSTOMER_SOURCE_ID: Final = Redemption.column("customer_source_id")
_R_CUSTOMER_METADATA: Final = Redemption.column("customer_metadata")

_P_ID: Final = ParentRedemption.column("id")
_P_STATUS: Final = ParentRedemption.column("status")
_P_AMOUNT: Final = ParentRedemption.column("amount")
_P_DATE: Final = ParentRedemption.column("date_us")
_P_ORDER_ID: Final = ParentRedemption.column("order_id")
_P_ORDER_SOURCE_ID: Final = ParentRedemption.column("order_source_id")
_P_ORDER_AMOUNT: Final = ParentRedemption.column("order_amount")
_P_ORDER_METADATA: Final = ParentRedemption.column("order_metadata")
_P_CUSTOMER_ID: Final = ParentRedemption.column("customer_id")
_P_CUSTOMER_SOURCE_ID: Final = ParentRedemption.column("customer_source_id")
_P_CUSTOMER_METADATA: Final = ParentRedemption.column("customer_metadata")
_P_METADATA: Final = ParentRedemption.column("metadata")
_P_SESSION: Final = ParentRedemption.column("session_key")
_P_FAILURE_CODE: Final = ParentRedemption.column("failure_code")
_P_FAILURE_MESSAGE: Final = ParentRedemption.column("failure_message")
_P_ROLLBACK: Final = ParentRedemption.column("rollback_id")

_S_ID: Final = OrderSummary.column("id")
_S_SOURCE_ID: Final = OrderSummary.column("source_id")
_S_AMOUNT: Final = OrderSummary.column("amount")
_S_METADATA: Final = OrderSummary.column("metadata")
_S_DISCOUNT: Final = OrderSummary.column("discount_amount")
_S_TOTAL_DISCOUNT: Final = OrderSummary.column("total_discount_amount")
_S_TOTAL: Final = OrderSummary.column("total_amount")

_FAILED_VALUE: Final = RedemptionStatus.FAILED.value
_GIFT_VALUE: Final = VoucherType.GIFT_VOUCHER.value
_LOYALTY_VALUE: Final = VoucherType.LOYALTY_CARD.value
#: the epoch, naive: an instant kept in µs is added to it and shown as UTC, with a "Z"
_NAIVE_EPOCH: Final = datetime(1970, 1, 1)


#: the last second shown, and its text up to the seconds: a burst of answers shares it
_last_second: tuple[int, str] = (0, "1970-01-01T00:00:00")


def _instant_us(us: int) -> str:
    """An instant kept as µs since the epoch, as :func:`instant` shows it."""
    global _last_second  # noqa: PLW0603 - one tuple, swapped whole: safe across threads
    second, micros = divmod(us, 1_000_000)
    shown_second, text = _last_second
    if second != shown_second:
        try:
            moment = _NAIVE_EPOCH + timedelta(seconds=second)
        except OverflowError:  # from_us names the problem (a StorageError)
            return format_instant(from_us(us))
        text = moment.isoformat()
        _last_second = (second, text)
    return f"{text}.{micros // 1000:03d}Z"


def _copied(metadata: dict[str, Any] | None) -> dict[str, Any]:
    """Stored metadata as an answer shows it: a copy, ``{}`` for none."""
    return {} if metadata is None else copy.deepcopy(metadata)


def _stored_order(
    order_id: str | None, source_id: str | None, amount: int | None, metadata: Any
) -> dict[str, Any] | None:
    """:func:`_order` of the order's stored values (None when none was given)."""
    if order_id is None and source_id is None and amount is None and metadata is None:
        return None
    return {
        "id": order_id,
        "source_id": source_id,
        "amount": amount,
        "metadata": _copied(metadata),
        "object": "order",
    }


def _stored_customer(
    customer_id: str | None, source_id: str | None, metadata: Any
) -> dict[str, Any] | None:
    """:func:`_customer` of the customer's stored values (None when none was given)."""
    if customer_id is None and source_id is None and metadata is None:
        return None
    return {
        "id": customer_id,
        "source_id": source_id,
        "metadata": _copied(metadata),
        "object": "customer",
    }


def redemption(found: Redemption, voucher_object: dict[str, Any] | None = None) -> dict[str, Any]:
    """One redemption (``Redemption``): a single one, or a child of a stacked one
    (``redemption`` names its parent). *voucher_object* replaces the short voucher object."""
    row = found.to_row()
    status = row[_R_STATUS]
    kind = row[_R_TYPE]
    rollback_id = row[_R_ROLLBACK]
    voucher_id = row[_R_VOUCHER_ID]
    body: dict[str, Any] = {
        "id": row[_R_ID],
        "object": "redemption",
        "date": _instant_us(row[_R_DATE]),
        "customer_id": row[_R_CUSTOMER_ID],
        "tracking_id": None,
        "metadata": _copied(row[_R_METADATA]),
        "amount": row[_R_AMOUNT],
        "redemption": row[_R_PARENT],
        "result": "FAILURE" if status == _FAILED_VALUE else "SUCCESS",
        "status": status,
        "related_redemptions": {
            "rollbacks": [] if rollback_id is None else [{"id": rollback_id}],
            "redemptions": [],
        },
        "failure_code": row[_R_FAILURE_CODE],
        "failure_message": row[_R_FAILURE_MESSAGE],
        "order": _stored_order(
            row[_R_ORDER_ID], row[_R_ORDER_SOURCE_ID], row[_R_ORDER_AMOUNT], row[_R_ORDER_METADATA]
        ),
        "channel": _API_CHANNEL,
        "customer": _stored_customer(
            row[_R_CUSTOMER_ID], row[_R_CUSTOMER_SOURCE_ID], row[_R_CUSTOMER_METADATA]
        ),
        "related_object_type": "voucher",
        "related_object_id": voucher_id,
        "voucher": (
            voucher_object
            if voucher_object is not None
            else {"id": voucher_id, "code": row[_R_CODE], "type": kind, "object": "voucher"}
        ),
    }
    session_key = row[_R_SESSION]
    if session_key is not None:
        body["session"] = {"key": session_key}
    if kind == _GIFT_VALUE:
        body["gift"] = {"amount": row[_R_AMOUNT]}
    elif kind == _LOYALTY_VALUE:
        body["loyalty_card"] = {"points": row[_R_AMOUNT]}
    return body


def parent_redemption(parent: ParentRedemption) -> dict[str, Any]:
    """The parent of a stacked redemption (``Redemption`` with ``related_object_type``
    ``redemption``); its children are named in ``related_redemptions.redemptions``."""
    row = parent.to_row()
    status = row[_P_STATUS]
    date = _instant_us(row[_P_DATE])
    rollback_id = row[_P_ROLLBACK]
    body: dict[str, Any] = {
        "id": row[_P_ID],
        "object": "redemption",
        "date": date,
        "customer_id": row[_P_CUSTOMER_ID],
        "tracking_id": None,
        "metadata": _copied(row[_P_METADATA]),
        "amount": row[_P_AMOUNT],
        "redemption": None,
        "result": "FAILURE" if status == _FAILED_VALUE else "SUCCESS",
        "status": status,
        "related_redemptions": {
            "rollbacks": [] if rollback_id is None else [{"id": rollback_id}],
            "redemptions": [{"id": child, "date": date} for child in parent.redemptions],
        },
        "failure_code": row[_P_FAILURE_CODE],
        "failure_message": row[_P_FAILURE_MESSAGE],
        "order": _stored_order(
            row[_P_ORDER_ID], row[_P_ORDER_SOURCE_ID], row[_P_ORDER_AMOUNT], row[_P_ORDER_METADATA]
        ),
        "channel": _API_CHANNEL,
        "customer": _stored_customer(
            row[_P_CUSTOMER_ID], row[_P_CUSTOMER_SOURCE_ID], row[_P_CUSTOMER_METADATA]
        ),
        "related_object_type": "redemption",
        "related_object_id": row[_P_ID],
    }
    session_key = row[_P_SESSION]
    if session_key is not None:
        body["session"] = {"key": session_key}
    return body


def stacked_redemption(stacked: StackedRedemption) -> dict[str, Any]:
    """``POST /v1/redemptions``: the parent, its children in request order, and the order."""
    return {
        "redemptions": [redemption(child) for child in stacked.redemptions],
        "parent_redemption": parent_redemption(stacked.parent_redemption),
        "order": order_summary(stacked.order),
        "inapplicable_redeemables": [],
        "skipped_redeemables": [],
    }


def voucher_redemptions(found: Voucher, entries: tuple[Redemption, ...]) -> dict[str, Any]:
    """``GET /v1/vouchers/{code}/redemption``: the voucher's redemption log, newest first."""
    return {
        "quantity": found.quantity,
        "redeemed_quantity": found.redeemed_quantity,
        "object": "list",
        "url": f"/v1/vouchers/{found.code}/redemption",
        "data_ref": "redemption_entries",
        "total": len(entries),
        "redemption_entries": [redemption(entry) for entry in reversed(entries)],
    }


# --- rollbacks ----------------------------------------------------------------------------------


def redemption_rollback(rollback: RedemptionRollback) -> dict[str, Any]:
    """The rollback of one redemption (``RedemptionRollback``): ``amount`` is negative, what
    was given back."""
    return {
        "id": rollback.id,
        "object": "redemption_rollback",
        "date": instant(rollback.date),
        "customer_id": None,
        "tracking_id": None,
        "metadata": {},
        "amount": rollback.amount,
        "redemption": rollback.redemption_id,
        "reason": rollback.reason,
        "result": "SUCCESS",
        "status": "SUCCEEDED",
        "channel": _API_CHANNEL,
        "related_object_type": "voucher",
        "related_object_id": rollback.voucher_id,
        "voucher": {"id": rollback.voucher_id, "code": rollback.voucher_code, "object": "voucher"},
    }


def parent_rollback(rollback: ParentRollback) -> dict[str, Any]:
    """The rollback of a whole stacked redemption (``RedemptionRollback`` of the parent)."""
    return {
        "id": rollback.id,
        "object": rollback.object,
        "date": instant(rollback.date),
        "customer_id": None,
        "tracking_id": None,
        "metadata": {},
        "amount": rollback.amount,
        "redemption": rollback.redemption_id,
        "reason": rollback.reason,
        "result": rollback.result,
        "status": rollback.status,
        "channel": _API_CHANNEL,
        "related_object_type": "redemption",
        "related_object_id": rollback.redemption_id,
    }


def stacked_rollback(rolled: StackedRollback, order: Order | None) -> dict[str, Any]:
    """``POST /v1/redemptions/{parentRedemptionId}/rollbacks``: one rollback per child, the
    parent's, and the order of the stacked redemption."""
    return {
        "rollbacks": [redemption_rollback(child) for child in rolled.rollbacks],
        "parent_rollback": parent_rollback(rolled.parent_rollback),
        "order": _order(order),
    }


# --- validations --------------------------------------------------------------------------------


def stacking_rules(rules: StackingRules) -> dict[str, Any]:
    """The engine's stacking rules (``StackingRules``): its two limits, every redeemable
    required (``ALL``), applied in the order given, a gift card with nothing to pay skipped."""
    return {
        "redeemables_limit": rules.redeemables_limit,
        "applicable_redeemables_limit": rules.applicable_redeemables_limit,
        "applicable_exclusive_redeemables_limit": 1,
        "exclusive_categories": [],
        "joint_categories": [],
        "redeemables_application_mode": "ALL",
        "redeemables_sorting_rule": "REQUESTED_ORDER",
        "redeemables_no_effect_rule": "SKIP",
        "redeemables_rollback_order_mode": "WITH_ORDER",
    }


def _redeemable(item: RedeemableResult) -> dict[str, Any]:
    status = item.status
    body: dict[str, Any] = {"status": status.value, "id": item.id, "object": "voucher"}
    problem = item.error
    if status is RedeemableStatus.APPLICABLE:
        kind = item.type
        if kind is _GIFT:
            result: dict[str, Any] = {"gift": {"balance": item.balance, "credits": item.credits}}
        elif kind is _LOYALTY:
            result = {"loyalty_card": {"points": item.points}}
        else:
            result = {"discount": None if item.discount is None else item.discount.as_dict()}
        body["order"] = {
            "amount": item.order_amount,
            "discount_amount": item.discount_amount,
            "applied_discount_amount": item.discount_amount,
            "object": "order",
        }
        body["result"] = result
    elif problem is not None:
        reason = {"key": problem.key, "message": problem.message}
        if status is RedeemableStatus.INAPPLICABLE:
            body["result"] = {"error": error(problem), "details": reason}
        else:
            body["result"] = {"details": reason}
    else:
        body["result"] = {}
    body["metadata"] = {}
    body["categories"] = []
    return body


def stacked_validation(result: StackedValidationResult, rules: StackingRules) -> dict[str, Any]:
    """``POST /v1/validations``: valid or not (HTTP 200 either way), each redeemable's status
    with its result or error, the order as priced, the LOCK when one was set, and the
    stacking rules (the Python SDK requires them)."""
    items = [_redeemable(item) for item in result.redeemables]
    body: dict[str, Any] = {
        "valid": result.valid,
        "redeemables": items,
        "skipped_redeemables": [
            body
            for body, item in zip(items, result.redeemables, strict=True)
            if item.status is RedeemableStatus.SKIPPED
        ],
        "inapplicable_redeemables": [
            body
            for body, item in zip(items, result.redeemables, strict=True)
            if item.status is RedeemableStatus.INAPPLICABLE
        ],
        "order": order_summary(result.order),
        "tracking_id": None,
        "stacking_rules": stacking_rules(rules),
    }
    if result.sessions:
        body["session"] = _session(result.sessions[0])
    return body


def _session(session: Session) -> dict[str, Any]:
    unit = session.ttl_unit
    return {
        "key": session.key,
        "type": "LOCK",
        "ttl": session.ttl,
        "ttl_unit": None if unit is None else unit.value,
    }


def legacy_validation(result: ValidationResult, found: Voucher | None) -> dict[str, Any]:
    """``POST /v1/vouchers/{code}/validate`` (the npm SDK's ``validations.validateVoucher``):
    Voucherify's older flat answer — ``valid``, ``code``, the discount, gift or loyalty part,
    the order, the LOCK; ``reason`` and ``error`` when not valid. *found* is the voucher, for
    its dates and metadata (None when it does not exist)."""
    body: dict[str, Any] = {"valid": result.valid, "code": result.code, "tracking_id": None}
    if found is not None:
        body["campaign_id"] = found.campaign_id
        body["metadata"] = {} if found.metadata is None else found.metadata
        body["start_date"] = instant(found.start_date)
        body["expiration_date"] = instant(found.expiration_date)
    if result.valid:
        kind = result.type
        if kind is _GIFT:
            body["gift"] = {
                "amount": None if found is None or found.gift is None else found.gift.amount,
                "balance": result.balance,
                "credits": result.credits,
            }
        elif kind is _LOYALTY:
            body["loyalty"] = {"points_cost": result.points}
        elif result.discount is not None:
            body["discount"] = result.discount.as_dict()
        amount = result.order_amount
        body["order"] = {
            "amount": amount,
            "discount_amount": result.discount_amount,
            "total_discount_amount": result.discount_amount,
            "total_amount": None if amount is None else amount - result.discount_amount,
            "applied_discount_amount": result.discount_amount,
            "total_applied_discount_amount": result.discount_amount,
            "object": "order",
        }
        if result.session is not None:
            body["session"] = _session(result.session)
    elif result.error is not None:
        body["reason"] = result.error.message
        body["error"] = error(result.error)
    return body
