"""The engine's requests, checked: every argument a public call takes is parsed here into the
domain's terms (raising :class:`~vouchercore.errors.InvalidArgument` with a stable key) before
any unit of work opens.

- :class:`VoucherTemplate`: a new voucher's fields (:meth:`Engine.create_voucher
  <vouchercore.Engine.create_voucher>`, :meth:`~vouchercore.Engine.generate_vouchers`, one
  CSV row of an import).
- :func:`parse_discount`, :func:`lock_request`, :func:`use_request`: a discount, a
  validation's ``session``, the amounts and references of a validation or redemption.
- :func:`keyed_request`: an ``idempotency_key`` and the fingerprint of the request it covers.

The defaults of a LOCK session (:data:`DEFAULT_TTL` :data:`DEFAULT_TTL_UNIT`) are defined here,
once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import attrs

from vouchercore.domain import idempotency, operations
from vouchercore.domain.instants import MAX_US, MIN_US, to_us_or_none
from vouchercore.domain.operations import IdSource, LockRequest, UseRequest
from vouchercore.domain.records import Discount, VoucherInfo, VoucherRecord
from vouchercore.domain.values import (
    INT64_MAX,
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
    shown,
    ttl_to_us,
)
from vouchercore.errors import InvalidPayload

__all__ = [
    "DEFAULT_TTL",
    "DEFAULT_TTL_UNIT",
    "VoucherTemplate",
    "customer_request",
    "idempotency_key",
    "keyed_request",
    "lock_request",
    "order_request",
    "parse_discount",
    "redeemable_request",
    "stacked_session_key",
    "use_request",
]

#: A LOCK session's TTL when the request gives none: 7 days.
DEFAULT_TTL: Final = 7
DEFAULT_TTL_UNIT: Final = TtlUnit.DAYS


# --- a new voucher ----------------------------------------------------------------------------


@attrs.frozen(kw_only=True, slots=False)
class VoucherTemplate:
    """A new voucher's fields, checked: what every voucher made from it shares but its code.

    Made by :meth:`parse` from the arguments a caller gives (by name:
    ``type, discount, gift, loyalty_card, quantity, redemption, active, start_date,
    expiration_date, category, additional_info, metadata, campaign_id, redeemed_quantity,
    redeemed_amount``); :meth:`record` makes a voucher of it. A CSV import keeps one per
    distinct row shape, code generation one for every code.
    """

    type: VoucherType
    discount: Discount | None
    total: int  # gift credits or loyalty points it opens with
    quantity: int | None
    active: bool
    start_date: int | None
    expiration_date: int | None
    info: VoucherInfo | None

    @classmethod
    def parse(cls, fields: Mapping[str, Any]) -> VoucherTemplate:
        """The template of *fields*, read by name (a missing one takes its default: active,
        no limit, no dates, no free data, no opening counters). Engine verbs pass their own
        arguments (``locals()``): their signatures are the public face, the names are read
        here once.

        Raises:
            InvalidArgument: a malformed field (the message names it).
        """
        get = fields.get
        kind, discount, total = _parse_kind(
            get("type"), get("discount"), get("gift"), get("loyalty_card")
        )
        active = get("active", True)
        if not isinstance(active, bool):
            raise InvalidPayload(f"active must be a bool, got {shown(active)}")
        return cls(
            type=kind,
            discount=discount,
            total=total,
            quantity=_parse_quantity(get("quantity"), get("redemption")),
            active=active,
            start_date=to_us_or_none(get("start_date"), "start_date"),
            expiration_date=to_us_or_none(get("expiration_date"), "expiration_date"),
            info=_parse_info(
                get("category"),
                get("additional_info"),
                get("metadata"),
                get("campaign_id"),
                require_amount(get("redeemed_quantity", 0), "redeemed_quantity", allow_zero=True),
                require_amount(get("redeemed_amount", 0), "redeemed_amount", allow_zero=True),
            ),
        )

    def record(self, ids: IdSource, code: str, now: int) -> VoucherRecord:
        """A new voucher with these fields and *code*, created at *now* (the domain's
        cross-field checks: :func:`~vouchercore.domain.operations.new_voucher`)."""
        # the fields are new_voucher's keyword arguments, by name: a dict-backed attrs class
        # hands them over as its __dict__, without a copy per field
        return operations.new_voucher(ids, now, code=code, **vars(self))


def parse_discount(value: Discount | Mapping[str, Any]) -> Discount:
    """A :class:`Discount`, or Voucherify's discount object (``{"type": "AMOUNT",
    "amount_off": 500}``, ``PERCENT`` with ``percent_off`` and an optional ``amount_limit``,
    ``FIXED`` with ``fixed_amount``, ``UNIT`` with ``unit_off`` and ``unit_type``), checked."""
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
        raise InvalidPayload(f"discount must be a Discount or a mapping, got {shown(value)}")
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
        raise InvalidPayload(f"unit_type must be a non-empty string, got {shown(unit_type)}")
    return Discount(
        type=kind, unit_off=require_amount(fields.get("unit_off"), "unit_off"), unit_type=unit_type
    )


def _parse_kind(
    kind: VoucherType | str | None,
    discount: Discount | Mapping[str, Any] | None,
    gift: Mapping[str, Any] | None,
    loyalty_card: Mapping[str, Any] | None,
) -> tuple[VoucherType, Discount | None, int]:
    """The voucher type (given, or inferred from the one of *gift*, *loyalty_card*,
    *discount* given), its discount, and the credits or points it opens with."""
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
    parsed = None if discount is None else parse_discount(discount)
    total = 0
    if gift is not None:
        if kind is not VoucherType.GIFT_VOUCHER:
            raise InvalidPayload(f"gift applies to GIFT_VOUCHER only, not {kind.value}")
        if not isinstance(gift, Mapping):
            raise InvalidPayload(
                f"gift must be a mapping like {{'amount': 10000}}, got {shown(gift)}"
            )
        total = require_amount(gift.get("amount", 0), "gift.amount", allow_zero=True)
    if loyalty_card is not None:
        if kind is not VoucherType.LOYALTY_CARD:
            raise InvalidPayload(f"loyalty_card applies to LOYALTY_CARD only, not {kind.value}")
        if not isinstance(loyalty_card, Mapping):
            raise InvalidPayload(
                f"loyalty_card must be a mapping like {{'points': 500}}, got {shown(loyalty_card)}"
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
            raise InvalidPayload(f"redemption must be a mapping, got {shown(redemption)}")
        quantity = redemption.get("quantity")
    return None if quantity is None else require_amount(quantity, "quantity")


def _parse_info(
    category: str | None,
    additional_info: str | None,
    metadata: Mapping[str, Any] | None,
    campaign_id: str | None,
    redeemed_quantity: int,
    redeemed_amount: int,
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


# --- validation, redemption, idempotency ------------------------------------------------------


def keyed_request(key: object, operation: str, **request: Any) -> tuple[str, str] | None:
    """The checked idempotency *key* and the fingerprint of *operation* with its checked
    *request* arguments; ``None`` without a key."""
    checked = idempotency_key(key)
    return None if checked is None else (checked, idempotency.fingerprint(operation, **request))


def idempotency_key(value: object) -> str | None:
    """``None``, or a key: 1–200 printable characters, no leading/trailing whitespace."""
    return None if value is None else require_session_key(value, "idempotency_key")


def use_request(
    order_amount: object,
    credits: object,
    points: object,
    order_id: object,
    session_key: object,
    metadata: object,
    order: object = None,
    customer: object = None,
) -> UseRequest:
    """What a validation or redemption asks of a voucher, checked. *order* and *customer*
    are Voucherify's objects (:func:`order_request`, :func:`customer_request`)."""
    request = UseRequest(
        None if credits is None else require_amount(credits, "credits"),
        None if points is None else require_amount(points, "points"),
        None if order_amount is None else require_amount(order_amount, "order_amount"),
        None if order_id is None else require_optional_text(order_id, "order_id"),
        None if session_key is None else require_session_key(session_key),
        None if metadata is None else require_metadata(metadata),
    )
    if customer is not None:
        amount, order_id, context = order_request(order, request.order_amount, request.order_id)
        request.context = context + customer_request(customer)
    elif order is not None:
        amount, order_id, context = order_request(order, request.order_amount, request.order_id)
        if context is not _NO_ORDER_CONTEXT:
            request.context = context + _NO_CUSTOMER
    else:
        return request
    request.order_amount = amount
    request.order_id = order_id
    return request


_NO_ORDER_CONTEXT: Final = (None, None)
_NO_CUSTOMER: Final = (None, None, None)
_AMOUNT_ONLY: Final = frozenset({"amount", "object"})


_ORDER_FIELDS: Final = frozenset({"id", "source_id", "amount", "metadata", "object"})
_CUSTOMER_FIELDS: Final = frozenset({"id", "source_id", "metadata", "object"})


def _fields(value: object, name: str, known: frozenset[str]) -> Mapping[str, Any]:
    """*value* as a mapping whose keys are all *known* (a key of any other name is allowed
    only with the value None: clients send explicit nulls for fields they do not set)."""
    if type(value) is dict and value.keys() <= known:  # the common case, in C
        return value
    if not isinstance(value, Mapping):
        raise InvalidPayload(f"{name} must be a mapping, got {shown(value)}")
    for key, item in value.items():
        if key not in known and item is not None:
            raise InvalidPayload(
                f"{name} has an unknown field {shown(key)} (known: {', '.join(sorted(known))})"
            )
    return value


def _object_name(fields: Mapping[str, Any], name: str, expected: str) -> None:
    kind = fields.get("object")
    if kind is not None and kind != expected:
        raise InvalidPayload(f"{name}.object must be {expected!r}, got {shown(kind)}")


def order_request(
    order: object, order_amount: int | None, order_id: str | None
) -> tuple[int | None, str | None, tuple[Any, ...]]:
    """Voucherify's ``order`` object (``{"id", "source_id", "amount", "metadata"}``, each
    optional), checked, merged with the ``order_amount``/``order_id`` shorthands: the order's
    amount, its id, and ``(source_id, metadata)``.

    Raises:
        InvalidPayload: not a mapping, an unknown field, a bad value, or an amount (id) given
            both ways with different values.
    """
    if order is None:
        return order_amount, order_id, _NO_ORDER_CONTEXT
    if (  # the common case, {"amount": n}, checked in C calls
        type(order) is dict
        and order.keys() <= _AMOUNT_ONLY
        and order.get("object", "order") == "order"
        and order_amount is None
    ):
        amount = order.get("amount")
        if amount is None or (type(amount) is int and 0 < amount <= INT64_MAX):
            return amount, order_id, _NO_ORDER_CONTEXT
    fields = _fields(order, "order", _ORDER_FIELDS)
    _object_name(fields, "order", "order")
    amount = fields.get("amount")
    if amount is not None:
        amount = require_amount(amount, "order.amount")
        if order_amount is not None and order_amount != amount:
            raise InvalidPayload(
                f"order_amount {order_amount} and order.amount {amount} differ: give one"
            )
        order_amount = amount
    given_id = require_optional_text(fields.get("id"), "order.id")
    if given_id is not None:
        if order_id is not None and order_id != given_id:
            raise InvalidPayload(
                f"order_id {order_id!r} and order.id {given_id!r} differ: give one"
            )
        order_id = given_id
    source_id = require_optional_text(fields.get("source_id"), "order.source_id")
    metadata = require_metadata(fields.get("metadata"), "order.metadata")
    if source_id is None and metadata is None:
        return order_amount, order_id, _NO_ORDER_CONTEXT
    return order_amount, order_id, (source_id, metadata)


def customer_request(customer: object) -> tuple[Any, ...]:
    """Voucherify's ``customer`` object (``{"id", "source_id", "metadata"}``, each optional),
    checked: ``(id, source_id, metadata)``.

    Raises:
        InvalidPayload: not a mapping, an unknown field, or a bad value.
    """
    if customer is None:
        return (None, None, None)
    fields = _fields(customer, "customer", _CUSTOMER_FIELDS)
    _object_name(fields, "customer", "customer")
    return (
        require_optional_text(fields.get("id"), "customer.id"),
        require_optional_text(fields.get("source_id"), "customer.source_id"),
        require_metadata(fields.get("metadata"), "customer.metadata"),
    )


# --- stacked requests -------------------------------------------------------------------------

_REDEEMABLE_FIELDS: Final = frozenset({"object", "id", "gift", "reward"})
_PLAIN_REDEEMABLE: Final = frozenset({"object", "id"})
#: the names of the redeemables' ids in error messages (a stack has at most 30 redeemables)
_ID_NAMES: Final = tuple(f"redeemables[{i}].id" for i in range(30))


def redeemable_request(redeemable: object, position: int) -> tuple[str, int | None, int | None]:
    """One redeemable of a stacked request — ``{"object": "voucher", "id": code}``, with
    ``gift: {"credits": n}`` (gift cards) or ``reward: {"points": n}`` (loyalty cards) —
    checked: its code (or id), credits and points.

    Raises:
        InvalidPayload: not a mapping, an unknown field, an object other than ``voucher``, a
            missing id, a reward id (vouchercore has no reward catalogue), or a bad value.
    """
    if (  # the common case: {"object": "voucher", "id": code}, checked in C calls
        type(redeemable) is dict
        and redeemable.keys() <= _PLAIN_REDEEMABLE
        and redeemable.get("object", "voucher") == "voucher"
    ):
        code = redeemable.get("id")
        if code is not None:
            return require_code(code, _ID_NAMES[position]), None, None
    name = f"redeemables[{position}]"
    fields = _fields(redeemable, name, _REDEEMABLE_FIELDS)
    kind = fields.get("object")
    if kind is not None and kind != "voucher":
        raise InvalidPayload(
            f"{name}.object must be 'voucher' (the only redeemable vouchercore knows), "
            f"got {shown(kind)}"
        )
    code = fields.get("id")
    if code is None:
        raise InvalidPayload(f"{name} has no id (the voucher's code or id)")
    code = require_code(code, f"{name}.id")
    credits = points = None
    gift = fields.get("gift")
    if gift is not None:
        credits = _fields(gift, f"{name}.gift", frozenset({"credits"})).get("credits")
        if credits is not None:
            credits = require_amount(credits, f"{name}.gift.credits")
    reward = fields.get("reward")
    if reward is not None:
        reward = _fields(reward, f"{name}.reward", frozenset({"id", "points"}))
        if reward.get("id") is not None:
            raise InvalidPayload(
                f"{name}.reward.id: vouchercore has no rewards; give reward.points to pay with "
                "a loyalty card's points"
            )
        points = reward.get("points")
        if points is not None:
            points = require_amount(points, f"{name}.reward.points")
    return code, credits, points


def stacked_session_key(session: object) -> str | None:
    """The session of a stacked redemption: ``None``, a key, or ``{"key": …}`` (with
    ``type: "LOCK"`` optional): the key, checked."""
    if session is None:
        return None
    if isinstance(session, str):
        return require_session_key(session, "session")
    fields = _fields(session, "session", _SESSION_FIELDS)
    kind = fields.get("type")
    if kind is not None and kind != "LOCK":
        raise InvalidPayload(f"session.type must be LOCK, got {shown(kind)}")
    key = fields.get("key")
    return None if key is None else require_session_key(key, "session.key")


_SESSION_FIELDS = frozenset({"type", "key", "ttl", "ttl_unit"})
_DEFAULT_LOCK = LockRequest(
    None, DEFAULT_TTL, DEFAULT_TTL_UNIT, ttl_to_us(DEFAULT_TTL, DEFAULT_TTL_UNIT)
)


def lock_request(session: Mapping[str, Any] | str | bool | None) -> LockRequest | None:
    """A validation's ``session``: ``None``/``False`` for none, ``True``/``"LOCK"`` for the
    defaults, or ``{"type": "LOCK", "key": …, "ttl": …, "ttl_unit": …}`` (all but type
    optional), checked."""
    if session is None or session is False:
        return None
    if session is True:
        return _DEFAULT_LOCK
    if isinstance(session, str):
        session = {"type": session}
    if type(session) is not dict and not isinstance(session, Mapping):  # dict: skip the ABC
        raise InvalidPayload(
            f"session must be a mapping like {{'type': 'LOCK'}}, got {shown(session)}"
        )
    for name in session:
        if name not in _SESSION_FIELDS:
            raise InvalidPayload(f"session has an unknown field {name!r}")
    kind = session.get("type", "LOCK")
    if kind != "LOCK" and (not isinstance(kind, str) or kind.strip().upper() != "LOCK"):
        raise InvalidPayload(f"session.type must be LOCK, got {shown(kind)}")
    if len(session) == 1 and "type" in session:
        return _DEFAULT_LOCK
    key = session.get("key")
    if key is not None:
        key = require_session_key(key, "session.key")
    ttl = session.get("ttl", DEFAULT_TTL)
    if type(ttl) is not int or ttl <= 0:
        raise InvalidPayload(f"session.ttl must be a positive int, got {shown(ttl)}")
    unit = require_enum(TtlUnit, session.get("ttl_unit", DEFAULT_TTL_UNIT), "session.ttl_unit")
    ttl_us = ttl_to_us(ttl, unit)
    if ttl_us > MAX_US - MIN_US:  # past 9999-12-31 whenever it starts
        raise InvalidPayload(
            f"session.ttl {shown(ttl)} {unit.value} ends past the last representable instant "
            "(9999-12-31T23:59:59.999999Z)"
        )
    return LockRequest(key, ttl, unit, ttl_us)
