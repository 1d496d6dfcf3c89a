"""Request JSON and query strings as engine arguments: what the HTTP server reads.

Each function takes one request body (already parsed JSON) or query value and returns the
keyword arguments of one engine verb. Nothing here decides anything about a voucher: values are
handed to the engine as they came, and the engine checks them (types, ranges, enums, lengths)
and names the field in its :class:`~vouchercore.errors.InvalidArgument`. What is checked here
is the *shape* of Voucherify's request objects:

- **Explicit ``null`` is "not given"**, everywhere: generated clients (the Python SDK) send
  every field they know, unset ones as ``null``.
- **An unknown field is refused** (``invalid_payload`` naming it) unless it is ``null``: a
  newer client may send a field this server does not know, but never silently with a value.
- **A field of Voucherify's API that vouchercore cannot honour is refused when it has a
  value** — a validity timeframe, a discount formula, an order's items, a voucher update
  other than ``active`` — rather than ignored: it would change what the engine decides.
- **Descriptive data the engine has no place for is accepted and dropped**: a customer's
  name, email and address, ``tracking_id``, ``options``, and the customer, order and metadata
  a rollback may carry. They never change what the engine decides.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from vouchercore.csvio import EXPORT_FIELDS, check_export_fields
from vouchercore.domain.values import shown
from vouchercore.errors import InvalidPayload

__all__ = [
    "MAX_QUERY_STRING",
    "MAX_QUERY_VALUE",
    "balance_kwargs",
    "create_kwargs",
    "export_parameters",
    "generate_kwargs",
    "legacy_kwargs",
    "parse_json",
    "query_bool",
    "query_int",
    "query_text",
    "rollback_reason",
    "stacked_kwargs",
    "update_active",
]

#: The longest query string a request may carry (bytes).
MAX_QUERY_STRING: Final = 8_192
#: The longest single query value (characters): the engine's free-text limit.
MAX_QUERY_VALUE: Final = 4_096
#: The longest instant text accepted (``2026-03-01T12:00:00.000000+00:00`` is 32).
_MAX_INSTANT_TEXT: Final = 40

_NO_FIELDS: Final[frozenset[str]] = frozenset()


def parse_json(raw: bytes) -> Any:
    """The JSON document of a request body; ``None`` for an empty body.

    Raises:
        InvalidPayload: not JSON (the message says where), ``NaN``/``Infinity``, or nested
            too deep to read.
    """
    if not raw.strip():
        return None
    try:
        return _DECODER.decode(raw.decode())
    except RecursionError:
        raise InvalidPayload("the request body is nested too deeply to read") from None
    except UnicodeDecodeError:
        raise InvalidPayload("the request body is not UTF-8 text") from None
    except ValueError as problem:  # JSONDecodeError, or _no_constant's refusal
        raise InvalidPayload(f"the request body is not valid JSON: {problem}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


#: One decoder for every body (json.loads with an argument would make one per call).
_DECODER: Final = json.JSONDecoder(parse_constant=_no_constant)


def fields(
    value: object,
    where: str,
    known: frozenset[str],
    unsupported: frozenset[str] = _NO_FIELDS,
    dropped: frozenset[str] = _NO_FIELDS,
) -> dict[str, Any]:
    """The fields of the request object *value* that have a value (``null`` ones left out).

    Args:
        value: the object (``None`` is an empty object).
        where: its name in messages (``"body"``, ``"order"`` …).
        known: the fields handed on.
        unsupported: fields of Voucherify's API refused when they have a value.
        dropped: fields accepted whatever their value, and left out.

    Raises:
        InvalidPayload: not an object, an unknown field with a value, or an unsupported one.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidPayload(f"{where} must be a JSON object, got {shown(value)}")
    kept: dict[str, Any] = {}
    for name, item in value.items():
        if item is None or name in dropped:
            continue
        if name in known:
            kept[name] = item
        elif name in unsupported:
            raise InvalidPayload(
                f"{where}.{name} is not supported by vouchercore (send it as null or leave it out)"
            )
        else:
            allowed = ", ".join(sorted(known | unsupported | dropped))
            raise InvalidPayload(f"{where} has an unknown field {shown(name)} (known: {allowed})")
    return kept


def _compact(value: object) -> object:
    """An object with its ``null`` fields left out (anything else as it is: the engine
    refuses what is not an object)."""
    if isinstance(value, dict):
        return {name: item for name, item in value.items() if item is not None}
    return value


# --- instants -----------------------------------------------------------------------------------


def instant(value: object, name: str, *, end_of_day: bool = False) -> datetime | None:
    """An ISO 8601 instant of a request (``2026-03-01T12:00:00Z``, with any offset or none —
    UTC then — or a date alone: the start of that day, or with *end_of_day* its last
    microsecond).

    Raises:
        InvalidPayload: not a string, or not an ISO 8601 date or instant.
    """
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > _MAX_INSTANT_TEXT:
        raise InvalidPayload(f"{name} must be an ISO 8601 instant, got {shown(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidPayload(f"{name} must be an ISO 8601 instant, got {shown(value)}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if end_of_day and "T" not in value and " " not in value:
        parsed += timedelta(days=1, microseconds=-1)
    return parsed


# --- vouchers -----------------------------------------------------------------------------------

_VOUCHER_FIELDS: Final = frozenset(
    {
        "type",
        "discount",
        "gift",
        "loyalty_card",
        "redemption",
        "active",
        "start_date",
        "expiration_date",
        "category",
        "additional_info",
        "metadata",
        "campaign_id",
    }
)
_VOUCHER_UNSUPPORTED: Final = frozenset(
    {
        "campaign",
        "category_id",
        "validity_timeframe",
        "validity_day_of_week",
        "validity_hours",
        "validation_rules",
    }
)
_DISCOUNT_FIELDS: Final = frozenset(
    {"type", "amount_off", "percent_off", "amount_limit", "fixed_amount", "unit_off", "unit_type"}
)
_DISCOUNT_UNSUPPORTED: Final = frozenset(
    {
        "amount_off_formula",
        "aggregated_amount_limit",
        "is_dynamic",
        "unit_off_formula",
        "product",
        "sku",
        "units",
        "percent_off_formula",
        "fixed_amount_formula",
    }
)
_CODE_CONFIG_FIELDS: Final = frozenset({"length", "charset", "prefix", "postfix", "pattern"})


def create_kwargs(body: object, code: str) -> dict[str, Any]:
    """``POST /v1/vouchers/{code}``: the keyword arguments of ``Engine.create_voucher``
    (the code comes from the path; the npm SDK's ``vouchers.create`` repeats it in the body).

    Raises:
        InvalidPayload: a malformed body, or a body ``code`` other than the path's.
    """
    given = fields(body, "body", _VOUCHER_FIELDS | {"code"}, _VOUCHER_UNSUPPORTED)
    _same_code(given.pop("code", None), code)
    return _voucher_kwargs(given)


def _same_code(given: object, code: str) -> None:
    """A ``code`` in the body (None: not given) must be the path's *code*."""
    if given is not None and given != code:
        raise InvalidPayload(
            f"the body's code {shown(given)} is not the code in the path ({shown(code)})"
        )


def generate_kwargs(body: object) -> tuple[str | None, dict[str, Any] | None, dict[str, Any]]:
    """``POST /v1/vouchers``: the code given (or None), the ``code_config`` (the keyword
    arguments of ``Engine.generate_vouchers`` that shape a code, or None), and the voucher's
    fields (those of ``Engine.create_voucher``).

    Raises:
        InvalidPayload: a malformed body, or both ``code`` and ``code_config``.
    """
    given = fields(body, "body", _VOUCHER_FIELDS | {"code", "code_config"}, _VOUCHER_UNSUPPORTED)
    code = given.pop("code", None)
    config = given.pop("code_config", None)
    if code is not None and config is not None:
        raise InvalidPayload("give code or code_config, not both")
    shape = None
    if config is not None:
        shape = fields(config, "code_config", _CODE_CONFIG_FIELDS, frozenset({"initial_count"}))
    return code, shape, _voucher_kwargs(given)


def _voucher_kwargs(given: dict[str, Any]) -> dict[str, Any]:
    if "discount" in given:
        discount = fields(
            given["discount"],
            "discount",
            _DISCOUNT_FIELDS,
            _DISCOUNT_UNSUPPORTED,
            frozenset({"effect"}),
        )
        _effect(given["discount"], "discount.effect")
        given["discount"] = discount
    if "gift" in given:
        gift = fields(
            given["gift"],
            "gift",
            frozenset({"amount"}),
            frozenset({"subtracted_amount", "balance"}),
            frozenset({"effect"}),
        )
        _effect(given["gift"], "gift.effect")
        given["gift"] = gift
    if "loyalty_card" in given:
        given["loyalty_card"] = fields(
            given["loyalty_card"],
            "loyalty_card",
            frozenset({"points"}),
            frozenset({"balance", "next_expiration_date", "next_expiration_points"}),
        )
    if "redemption" in given:
        given["redemption"] = fields(given["redemption"], "redemption", frozenset({"quantity"}))
    for name in ("start_date", "expiration_date"):
        if name in given:
            given[name] = instant(given[name], name, end_of_day=name == "expiration_date")
    return given


def _effect(part: object, name: str) -> None:
    """vouchercore applies a discount or a gift card to the whole order: an ``effect`` other
    than ``APPLY_TO_ORDER`` would price differently, and is refused."""
    effect = part.get("effect") if isinstance(part, dict) else None
    if effect is not None and effect != "APPLY_TO_ORDER":
        raise InvalidPayload(
            f"{name} {shown(effect)} is not supported: vouchercore applies it to the whole "
            "order (APPLY_TO_ORDER)"
        )


_UPDATE_TYPES: Final = frozenset({"DISCOUNT_VOUCHER", "GIFT_VOUCHER", "LOYALTY_CARD"})


def update_active(body: object, code: str) -> bool | None:
    """``PUT /v1/vouchers/{code}``: the ``active`` flag to set (None: leave it).

    The engine has no verb that changes a voucher's other fields: a value for any of them is
    refused, naming it. ``type`` is ignored — the Python SDK sends ``"DISCOUNT_VOUCHER"``
    whatever the voucher is — but must be one of the three types. ``code`` — the npm SDK's
    ``vouchers.update`` sends the whole voucher — must be the path's *code*.

    Raises:
        InvalidPayload: a field other than ``active`` with a value, or a malformed one.
    """
    if body is None:
        return None
    if not isinstance(body, dict):
        raise InvalidPayload(f"body must be a JSON object, got {shown(body)}")
    active = None
    for name, item in body.items():
        if item is None:
            continue
        if name == "active":
            if not isinstance(item, bool):
                raise InvalidPayload(f"active must be a bool, got {shown(item)}")
            active = item
        elif name == "code":
            _same_code(item, code)
        elif name == "type":
            if item not in _UPDATE_TYPES:
                raise InvalidPayload(
                    "type must be DISCOUNT_VOUCHER, GIFT_VOUCHER or LOYALTY_CARD, "
                    f"got {shown(item)}"
                )
        else:
            raise InvalidPayload(
                f"{shown(name)} cannot be changed: vouchercore updates only a voucher's "
                "active flag (enable or disable it)"
            )
    return active


def balance_kwargs(body: object) -> dict[str, Any]:
    """``POST /v1/vouchers/{code}/balance``: ``amount`` (required; the engine refuses a
    missing one), ``source_id``, ``reason``."""
    given = fields(body, "body", frozenset({"amount", "source_id", "reason"}))
    given.setdefault("amount", None)
    return given


def export_parameters(body: object) -> tuple[str, tuple[str, ...]]:
    """``POST /v1/vouchers/{code}/transactions/export``: the order and the columns.

    Raises:
        InvalidPayload: a malformed body, an order other than ``-created_at``/``created_at``,
            or ``filters`` (the voucher is the one in the path).
        InvalidExportFields: an unknown or repeated field.
    """
    outer = fields(body, "body", frozenset({"parameters"}))
    given = fields(
        outer.get("parameters"),
        "parameters",
        frozenset({"order", "fields"}),
        frozenset({"filters"}),
    )
    order = given.get("order", "-created_at")
    if order not in ("-created_at", "created_at"):
        raise InvalidPayload(
            f"parameters.order must be '-created_at' or 'created_at', got {shown(order)}"
        )
    chosen = given.get("fields")
    if chosen is not None and (
        not isinstance(chosen, list) or not all(isinstance(f, str) for f in chosen)
    ):
        raise InvalidPayload(
            f"parameters.fields must be a list of field names ({', '.join(EXPORT_FIELDS)})"
        )
    return order, check_export_fields(chosen)


# --- validations and redemptions ----------------------------------------------------------------

_STACKED_FIELDS: Final = frozenset({"redeemables", "order", "customer", "session", "metadata"})
_IGNORED_FIELDS: Final = frozenset({"tracking_id", "options"})
#: A customer's descriptive fields: Voucherify keeps them in its customer book, vouchercore
#: has none.
_CUSTOMER_DETAILS: Final = frozenset(
    {"name", "email", "phone", "description", "address", "birthdate", "birthday"}
)


def stacked_kwargs(body: object) -> dict[str, Any]:
    """``POST /v1/validations`` and ``POST /v1/redemptions``: the keyword arguments of
    ``validate_stacked_discounts`` / ``redeem_stacked_discounts`` (``redeemables``,
    ``order``, ``customer``, ``session``, ``metadata``), with the ``null`` fields of each
    object left out."""
    given = fields(body, "body", _STACKED_FIELDS, dropped=_IGNORED_FIELDS)
    redeemables = given.get("redeemables")
    if isinstance(redeemables, list):
        given["redeemables"] = [_redeemable(item) for item in redeemables]
    else:
        given["redeemables"] = redeemables
    _context(given)
    return given


def _redeemable(item: object) -> object:
    if not isinstance(item, dict):
        return item
    kept = {name: value for name, value in item.items() if value is not None}
    for part in ("gift", "reward"):
        if part in kept:
            kept[part] = _compact(kept[part])
    return kept


def _context(given: dict[str, Any]) -> None:
    """Leave the ``null`` fields of ``order``, ``customer`` and ``session`` out, and a
    customer's descriptive fields."""
    if "order" in given:
        given["order"] = _compact(given["order"])
    if "customer" in given:
        customer = given["customer"]
        if isinstance(customer, dict):
            customer = {
                name: value
                for name, value in customer.items()
                if value is not None and name not in _CUSTOMER_DETAILS
            }
        given["customer"] = customer
    if "session" in given:
        given["session"] = _compact(given["session"])


_LEGACY_FIELDS: Final = frozenset({"order", "customer", "session", "metadata", "gift", "reward"})


def legacy_kwargs(body: object) -> dict[str, Any]:
    """``POST /v1/vouchers/{code}/validate`` and ``…/redemption`` (the npm SDK's
    ``validations.validateVoucher`` and ``redemptions.redeem``): the keyword arguments of
    ``validate_voucher`` / ``redeem_voucher`` (``order``, ``customer``, ``session``,
    ``metadata``, ``credits`` from ``gift.credits``, ``points`` from ``reward.points``)."""
    given = fields(body, "body", _LEGACY_FIELDS, dropped=_IGNORED_FIELDS)
    gift = given.pop("gift", None)
    if gift is not None:
        credits = fields(gift, "gift", frozenset({"credits"})).get("credits")
        if credits is not None:
            given["credits"] = credits
    reward = given.pop("reward", None)
    if reward is not None:
        wanted = fields(reward, "reward", frozenset({"points"}), frozenset({"id"}))
        if "points" in wanted:
            given["points"] = wanted["points"]
    _context(given)
    return given


def rollback_reason(query_reason: str | None, body: object) -> str | None:
    """``POST /v1/redemptions/{id}/rollback(s)``: the reason, from the query or the body.

    Raises:
        InvalidPayload: a malformed body, or two different reasons.
    """
    given = fields(
        body,
        "body",
        frozenset({"reason"}),
        dropped=frozenset({"tracking_id", "customer", "order", "metadata"}),
    )
    reason = given.get("reason")
    if reason is not None and query_reason is not None and reason != query_reason:
        raise InvalidPayload("the reason in the query and in the body differ: give one")
    return query_reason if query_reason is not None else reason


# --- query strings ------------------------------------------------------------------------------


def query_text(params: Mapping[str, str], name: str) -> str | None:
    """A query value as text (None when absent).

    Raises:
        InvalidPayload: longer than :data:`MAX_QUERY_VALUE` characters.
    """
    value = params.get(name)
    if value is not None and len(value) > MAX_QUERY_VALUE:
        raise InvalidPayload(
            f"query parameter {name} is longer than {MAX_QUERY_VALUE:,} characters"
        )
    return value


def query_int(params: Mapping[str, str], name: str) -> int | None:
    """A query value as an integer (None when absent; the engine checks its range).

    Raises:
        InvalidPayload: not a whole number of at most 18 digits.
    """
    value = query_text(params, name)
    if value is None:
        return None
    digits = value[1:] if value.startswith("-") else value
    if not digits.isascii() or not digits.isdigit() or len(digits) > 18:
        raise InvalidPayload(f"query parameter {name} must be a whole number, got {shown(value)}")
    return int(value)


def query_bool(params: Mapping[str, str], name: str) -> bool:
    """A query flag: ``true`` or ``false`` (any case); absent is false.

    Raises:
        InvalidPayload: anything else.
    """
    value = query_text(params, name)
    if value is None:
        return False
    folded = value.lower()
    if folded not in ("true", "false"):
        raise InvalidPayload(f"query parameter {name} must be true or false, got {shown(value)}")
    return folded == "true"
