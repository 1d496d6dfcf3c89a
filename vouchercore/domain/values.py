"""Enumerations and the checks every request argument goes through.

Each ``require_*`` function either returns the normalised value or raises an
:class:`~vouchercore.errors.InvalidArgument` whose message names the argument. They run before
anything is read or changed, and they accept only what every store can keep and read back
(README "Errors", "Limits of the input"):

- codes, ids, session and idempotency keys (:func:`require_code`, :func:`require_session_key`):
  1–:data:`MAX_CODE_LENGTH` (keys: 1–:data:`MAX_SESSION_KEY_LENGTH`) printable characters, no
  leading or trailing whitespace (printable excludes NUL and lone surrogates);
- free text (:func:`require_optional_text`: order ids, reasons, source ids, categories …): at
  most :data:`MAX_TEXT_LENGTH` characters, no NUL, no lone surrogate (it must encode as UTF-8);
- metadata (:func:`require_metadata`): a JSON object with str keys, nested at most
  :data:`MAX_METADATA_DEPTH` levels, at most :data:`MAX_METADATA_BYTES` bytes as compact UTF-8
  JSON, no cycle; its keys and strings are free text, its integers signed 64-bit
  (:data:`INT64_MIN` … :data:`INT64_MAX`; bools are bools), its floats finite;
- amounts: signed 64-bit integers (:func:`require_amount`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Final, TypeVar

from vouchercore.errors import InvalidAmount, InvalidPayload

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_METADATA_BYTES",
    "MAX_METADATA_DEPTH",
    "MAX_TEXT_LENGTH",
    "DiscountType",
    "RedeemableStatus",
    "RedemptionStatus",
    "TransactionType",
    "TtlUnit",
    "VoucherType",
    "free_text_problem",
    "parse_number",
    "require_amount",
    "require_code",
    "require_enum",
    "require_metadata",
    "require_optional_text",
    "require_session_key",
    "shown",
    "text_problem",
    "ttl_to_us",
]

INT64_MAX: Final = 2**63 - 1
INT64_MIN: Final = -(2**63)
#: The longest code (and voucher, redemption or transaction id) a request may name.
MAX_CODE_LENGTH: Final = 100
#: The longest session key or idempotency key.
MAX_SESSION_KEY_LENGTH: Final = 200
#: The longest free text (order id, reason, source id, category, additional info, campaign id,
#: unit type), in characters.
MAX_TEXT_LENGTH: Final = 4_096
#: How deeply metadata may nest: the mapping itself is level 1.
MAX_METADATA_DEPTH: Final = 32
#: The most metadata may weigh, as compact UTF-8 JSON (64 KiB).
MAX_METADATA_BYTES: Final = 65_536


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


class RedeemableStatus(StrEnum):
    """How a stacked validation finds one redeemable (Voucherify's redeemable statuses)."""

    APPLICABLE = "APPLICABLE"
    INAPPLICABLE = "INAPPLICABLE"
    SKIPPED = "SKIPPED"


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


def shown(value: object, limit: int = 60) -> str:
    """*value* for an error message: its repr, shortened to about *limit* characters; never
    failing (an integer too large to print is described by its size, a value whose repr fails
    by its type)."""
    if isinstance(value, int) and value.bit_length() > 128:
        return f"an integer of {value.bit_length():,} bits"
    try:
        text = repr(value)
    except Exception:
        return f"a {type(value).__name__}"
    return text if len(text) <= limit else text[:limit] + "…"


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
    raise InvalidPayload(f"{name} must be one of {allowed}; got {shown(value)}")


def require_amount(value: object, name: str, *, allow_zero: bool = False) -> int:
    """*value* as a positive (or, with *allow_zero*, non-negative) signed 64-bit integer.

    Floats, bools, strings and Decimals are rejected, never rounded.
    """
    if type(value) is not int:
        raise InvalidAmount(
            f"{name} must be an integer number of minor units or points, "
            f"got {type(value).__name__} {shown(value)}"
        )
    if value < 0 or (value == 0 and not allow_zero):
        bound = "≥ 0" if allow_zero else "> 0"
        raise InvalidAmount(f"{name} must be {bound}, got {shown(value)}")
    if value > INT64_MAX:
        raise InvalidAmount(f"{name} must fit in a signed 64-bit integer, got {shown(value)}")
    return value


def require_signed_amount(value: object, name: str) -> int:
    """*value* as a non-zero signed 64-bit integer (balance updates)."""
    if type(value) is not int:
        raise InvalidAmount(f"{name} must be an integer, got {type(value).__name__} {shown(value)}")
    if value == 0:
        raise InvalidAmount(f"{name} must not be 0")
    if not -INT64_MAX <= value <= INT64_MAX:
        raise InvalidAmount(f"{name} must fit in a signed 64-bit integer, got {shown(value)}")
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
    """``None`` or free text (an order id, a reason, a category …): a string of at most
    :data:`MAX_TEXT_LENGTH` characters without NUL characters (no SQL database keeps them in
    text) and without lone surrogates (text must encode as UTF-8): every store keeps what any
    store accepts."""
    if value is None:
        return None
    if (  # fast path for the common case: C-level checks only (ASCII has no surrogates)
        type(value) is str
        and value.isascii()
        and len(value) <= MAX_TEXT_LENGTH
        and "\x00" not in value
    ):
        return value
    if not isinstance(value, str):
        raise InvalidPayload(f"{name} must be a string or None, got {type(value).__name__}")
    problem = free_text_problem(value)
    if problem is not None:
        raise InvalidPayload(f"{name} {problem}")
    return value


def free_text_problem(value: str, max_length: int = MAX_TEXT_LENGTH) -> str | None:
    """What is wrong with *value* as free text (a phrase to follow its name), or None: longer
    than *max_length* characters, a NUL character, or a lone surrogate."""
    if len(value) > max_length:
        return f"is {len(value)} characters long; at most {max_length} are allowed"
    if "\x00" in value:
        return "must not contain NUL characters"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            return (
                f"must be Unicode text: it holds a lone surrogate "
                f"({value[error.start]!r} at position {error.start})"
            )
    return None


def require_metadata(value: object, name: str = "metadata") -> dict[str, Any] | None:
    """A JSON object: a mapping with str keys at every level, deep-copied so callers cannot
    change it afterwards; ``None`` stays ``None``. Tuples become lists (as in JSON).

    Refused (:class:`~vouchercore.errors.InvalidPayload`, naming the offending path): a value
    JSON has no form for; a key or string that is not free text (NUL, a lone surrogate); an
    integer beyond signed 64 bits; a float that is not finite; nesting deeper than
    :data:`MAX_METADATA_DEPTH` levels (a mapping or list that contains itself among them);
    more than :data:`MAX_METADATA_BYTES` bytes as compact UTF-8 JSON. The walk is bounded by
    both limits: no input makes it recurse deeply or run long.
    """
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidPayload(f"{name} must be a mapping with str keys, got {type(value).__name__}")
    copied = _JsonCopy(name).copy(value, name, 1)
    assert isinstance(copied, dict)
    size = len(json.dumps(copied, ensure_ascii=False, separators=(",", ":")).encode())
    if size > MAX_METADATA_BYTES:
        raise InvalidPayload(
            f"{name} is too large: {size:,} bytes as JSON, over the {MAX_METADATA_BYTES:,} allowed"
        )
    return copied


class _JsonCopy:
    """One deep copy of a JSON value, checked (:func:`require_metadata`).

    Each value spends a lower bound of its JSON size from a budget of
    :data:`MAX_METADATA_BYTES`: the walk stops as soon as the result must be too large, however
    much of the input repeats or shares itself; nesting stops at :data:`MAX_METADATA_DEPTH`.
    """

    __slots__ = ("left", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.left = MAX_METADATA_BYTES

    def spend(self, size: int) -> None:
        self.left -= size
        if self.left < 0:
            raise InvalidPayload(
                f"{self.name} is too large: over {MAX_METADATA_BYTES:,} bytes as JSON, the most "
                "allowed"
            )

    def text(self, value: str, path: str) -> str:
        self.spend(len(value) + 2)
        problem = free_text_problem(value, MAX_METADATA_BYTES)
        if problem is not None:
            raise InvalidPayload(f"{path} {problem}")
        return value if type(value) is str else str.__str__(value)

    def copy(self, value: object, path: str, depth: int) -> Any:
        """A copy of *value* (at *path*, nested *depth* levels deep when a container), or
        InvalidPayload naming the first offending path."""
        if value is None or isinstance(value, bool):
            self.spend(4)
            return None if value is None else bool(value)
        if isinstance(value, str):
            return self.text(value, path)
        if isinstance(value, int):
            self.spend(1)
            if not INT64_MIN <= value <= INT64_MAX:
                raise InvalidPayload(
                    f"{path} must fit in a signed 64-bit integer: an integer of "
                    f"{value.bit_length()} bits does not"
                )
            return int(value)
        if isinstance(value, float):
            self.spend(1)
            if not math.isfinite(value):
                raise InvalidPayload(f"{path} must be JSON-serialisable: {value!r} is not finite")
            return float(value)
        if not isinstance(value, Mapping | list | tuple):
            raise InvalidPayload(
                f"{path} must be JSON-serialisable: {type(value).__name__} is not a JSON value"
            )
        if depth > MAX_METADATA_DEPTH:
            raise InvalidPayload(
                f"{path} nests deeper than {MAX_METADATA_DEPTH} levels (or contains itself)"
            )
        self.spend(2)
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise InvalidPayload(f"{path} keys must be strings, got {shown(key)}")
                self.spend(1)
                name = self.text(key, f"{path} key {key[:40]!r}")
                out[name] = self.copy(item, f"{path}.{name}", depth + 1)
            return out
        copied: list[Any] = []
        for i, item in enumerate(value):
            self.spend(1)
            copied.append(self.copy(item, f"{path}[{i}]", depth + 1))
        return copied


N = TypeVar("N", int, float)


def parse_number(text: str, name: str, kind: type[N], low: N, high: N) -> N:
    """*text* (a store URL's option) as a finite *kind* from *low* to *high*.

    Raises:
        InvalidPayload: not a number of that kind, not finite, or out of range.
    """
    try:
        number = kind(text)
    except ValueError:  # not a number (or an integer too long to read)
        noun = "an integer" if kind is int else "a number"
        raise InvalidPayload(f"{name} must be {noun}, got {shown(text)}") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise InvalidPayload(f"{name} must be from {low:g} to {high:g}, got {shown(text)}")
    return number


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
        raise InvalidPayload(f"{name} must be a number, got {shown(value)}") from None
    if not number.is_finite() or not 0 < number <= 100:
        raise InvalidPayload(f"{name} must be > 0 and ≤ 100, got {shown(value)}")
    basis_points = number * 100
    if basis_points != basis_points.to_integral_value():
        raise InvalidPayload(f"{name} may have at most 2 decimals, got {shown(value)}")
    return int(basis_points)
