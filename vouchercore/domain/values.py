"""Enumerations and the checks every request argument goes through.

Each ``require_*`` function either returns the normalised value or raises an
:class:`~vouchercore.errors.InvalidArgument` whose message names the argument. They run before
anything is read or changed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Final, TypeVar

from vouchercore.errors import InvalidAmount, InvalidPayload

__all__ = [
    "INT64_MAX",
    "DiscountType",
    "RedemptionStatus",
    "TransactionType",
    "TtlUnit",
    "VoucherType",
    "require_amount",
    "require_code",
    "require_enum",
    "require_metadata",
    "require_optional_text",
    "require_session_key",
    "text_problem",
    "ttl_to_us",
]

INT64_MAX: Final = 2**63 - 1
MAX_CODE_LENGTH: Final = 100
MAX_SESSION_KEY_LENGTH: Final = 200


class VoucherType(StrEnum):
    """The three kinds of voucher."""

    DISCOUNT_VOUCHER = "DISCOUNT_VOUCHER"
    GIFT_VOUCHER = "GIFT_VOUCHER"
    LOYALTY_CARD = "LOYALTY_CARD"


class DiscountType(StrEnum):
    """How a discount voucher prices an order."""

    AMOUNT = "AMOUNT"
    PERCENT = "PERCENT"
    FIXED = "FIXED"
    UNIT = "UNIT"


class RedemptionStatus(StrEnum):
    """Outcome of a redemption attempt."""

    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    ROLLED_BACK = "ROLLED_BACK"


class TransactionType(StrEnum):
    """Kinds of credit and point movement in the transaction log."""

    CREDITS_REDEMPTION = "CREDITS_REDEMPTION"
    CREDITS_REFUND = "CREDITS_REFUND"
    CREDITS_ADDITION = "CREDITS_ADDITION"
    CREDITS_REMOVAL = "CREDITS_REMOVAL"
    POINTS_ACCRUAL = "POINTS_ACCRUAL"
    POINTS_CANCELLATION = "POINTS_CANCELLATION"
    POINTS_REDEMPTION = "POINTS_REDEMPTION"
    POINTS_REFUND = "POINTS_REFUND"
    POINTS_ADDITION = "POINTS_ADDITION"
    POINTS_REMOVAL = "POINTS_REMOVAL"
    POINTS_EXPIRATION = "POINTS_EXPIRATION"
    POINTS_TRANSFER_IN = "POINTS_TRANSFER_IN"
    POINTS_TRANSFER_OUT = "POINTS_TRANSFER_OUT"


class TtlUnit(StrEnum):
    """Units a session TTL may be given in; the value is the unit's name (``"DAYS"`` …).

    :func:`ttl_to_us` turns a TTL into microseconds (nanoseconds round up to a whole one).
    """

    DAYS = "DAYS"
    HOURS = "HOURS"
    MINUTES = "MINUTES"
    SECONDS = "SECONDS"
    MILLISECONDS = "MILLISECONDS"
    MICROSECONDS = "MICROSECONDS"
    NANOSECONDS = "NANOSECONDS"


_US_PER_UNIT: Final[dict[TtlUnit, int]] = {
    TtlUnit.DAYS: 86_400_000_000,
    TtlUnit.HOURS: 3_600_000_000,
    TtlUnit.MINUTES: 60_000_000,
    TtlUnit.SECONDS: 1_000_000,
    TtlUnit.MILLISECONDS: 1_000,
    TtlUnit.MICROSECONDS: 1,
}


def ttl_to_us(ttl: int, unit: TtlUnit) -> int:
    """A TTL in exact microseconds; a sub-microsecond remainder rounds UP.

    >>> ttl_to_us(1, TtlUnit.NANOSECONDS)
    1
    >>> ttl_to_us(2_000, TtlUnit.NANOSECONDS)
    2
    """
    if unit is TtlUnit.NANOSECONDS:
        return -(-ttl // 1000)
    return ttl * _US_PER_UNIT[unit]


E = TypeVar("E", bound=StrEnum)


def require_enum(enum: type[E], value: object, name: str) -> E:
    """*value* as a member of *enum* (members or their names, any case)."""
    if isinstance(value, enum):
        return value
    if isinstance(value, str):
        try:
            return enum(value.strip().upper())
        except ValueError:
            pass
    allowed = ", ".join(m.value for m in enum)
    raise InvalidPayload(f"{name} must be one of {allowed}; got {value!r}")


def require_amount(value: object, name: str, *, allow_zero: bool = False) -> int:
    """*value* as a positive (or, with *allow_zero*, non-negative) signed 64-bit integer.

    Floats, bools, strings and Decimals are rejected, never rounded.
    """
    if type(value) is not int:
        raise InvalidAmount(
            f"{name} must be an integer number of minor units or points, "
            f"got {type(value).__name__} {value!r}"
        )
    if value < 0 or (value == 0 and not allow_zero):
        bound = "≥ 0" if allow_zero else "> 0"
        raise InvalidAmount(f"{name} must be {bound}, got {value}")
    if value > INT64_MAX:
        raise InvalidAmount(f"{name} must fit in a signed 64-bit integer, got {value}")
    return value


def require_signed_amount(value: object, name: str) -> int:
    """*value* as a non-zero signed 64-bit integer (balance updates)."""
    if type(value) is not int:
        raise InvalidAmount(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value == 0:
        raise InvalidAmount(f"{name} must not be 0")
    if not -INT64_MAX <= value <= INT64_MAX:
        raise InvalidAmount(f"{name} must fit in a signed 64-bit integer, got {value}")
    return value


def text_problem(value: str, max_length: int) -> str | None:
    """What is wrong with *value* as a code or key (a phrase to follow its name), or None.

    The one statement of the rule: 1–*max_length* printable characters, no leading or
    trailing whitespace.
    """
    if not value:
        return "is empty"
    if len(value) > max_length:
        return f"is {len(value)} characters long; at most {max_length} are allowed"
    if not value.isprintable():
        return f"{_quoted(value)} contains control characters"
    if value != value.strip():
        return f"{_quoted(value)} begins or ends with whitespace"
    return None


def _quoted(value: str, limit: int = 40) -> str:
    return repr(value[:limit]) + "…" if len(value) > limit else repr(value)


def _require_text(value: object, name: str, max_length: int) -> str:
    if not isinstance(value, str):
        raise InvalidPayload(f"{name} must be a string, got {type(value).__name__}")
    problem = text_problem(value, max_length)
    if problem is not None:
        raise InvalidPayload(f"{name} {problem}")
    return value


def require_code(value: object, name: str = "code") -> str:
    """A voucher code: 1–100 printable characters, no leading/trailing space."""
    if (  # fast path for the common case: C-level checks only
        type(value) is str
        and 0 < len(value) <= MAX_CODE_LENGTH
        and value.isprintable()
        and value[0] != " "
        and value[-1] != " "
    ):
        return value
    return _require_text(value, name, MAX_CODE_LENGTH)


def require_session_key(value: object, name: str = "session_key") -> str:
    """A session key: 1–200 printable characters, no leading/trailing space."""
    if (
        type(value) is str
        and 0 < len(value) <= MAX_SESSION_KEY_LENGTH
        and value.isprintable()
        and value[0] != " "
        and value[-1] != " "
    ):
        return value
    return _require_text(value, name, MAX_SESSION_KEY_LENGTH)


def require_optional_text(value: object, name: str) -> str | None:
    """``None`` or a string (free text such as a reason or a category) without NUL characters
    (no SQL database keeps them in text, so no store accepts them: the same call behaves the
    same on every store)."""
    if value is None:
        return None
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidPayload(f"{name} must not contain NUL characters")
        return value
    raise InvalidPayload(f"{name} must be a string or None, got {type(value).__name__}")


def require_metadata(value: object, name: str = "metadata") -> dict[str, Any] | None:
    """A JSON-serialisable mapping with str keys at every level, deep-copied so callers cannot
    change it afterwards; ``None`` stays ``None``. Tuples become lists (as in JSON)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidPayload(f"{name} must be a mapping with str keys, got {type(value).__name__}")
    copied = _json_copy(value, name)
    assert isinstance(copied, dict)
    return copied


def _json_copy(value: object, path: str) -> Any:
    """A deep copy of a JSON value, or InvalidPayload naming the first offending *path*."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidPayload(f"{path} must be JSON-serialisable: {value!r} is not finite")
        return value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidPayload(f"{path} keys must be strings, got {key!r}")
            out[key] = _json_copy(item, f"{path}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [_json_copy(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise InvalidPayload(
        f"{path} must be JSON-serialisable: {type(value).__name__} is not a JSON value"
    )


def require_percent(value: object, name: str = "percent_off") -> int:
    """A percentage 0 < p ≤ 100 with at most 2 decimals, as basis points (12.5 → 1250).

    Accepts int, Decimal, a decimal string, or a float whose shortest repr has ≤ 2 decimals
    (JSON gives floats; ``12.5`` is fine, ``12.345`` is not).
    """
    if isinstance(value, bool):
        raise InvalidPayload(f"{name} must be a number, got bool")
    try:
        if isinstance(value, int | Decimal):
            number = Decimal(value)
        elif isinstance(value, float | str):
            number = Decimal(repr(value) if isinstance(value, float) else value.strip())
        else:
            raise InvalidPayload(f"{name} must be a number, got {type(value).__name__}")
    except InvalidOperation:
        raise InvalidPayload(f"{name} must be a number, got {value!r}") from None
    if not number.is_finite() or not 0 < number <= 100:
        raise InvalidPayload(f"{name} must be > 0 and ≤ 100, got {value!r}")
    basis_points = number * 100
    if basis_points != basis_points.to_integral_value():
        raise InvalidPayload(f"{name} may have at most 2 decimals, got {value!r}")
    return int(basis_points)
