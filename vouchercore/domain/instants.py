"""Instants as integer microseconds since the Unix epoch, UTC — the domain's one time unit.

The domain never reads a clock; the engine reads it once per operation and passes ``now`` in
microseconds. Public objects carry aware UTC :class:`~datetime.datetime` values, converted
here and nowhere else.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

from vouchercore.errors import InvalidPayload

__all__ = ["MAX_US", "from_us", "to_us", "to_us_or_none"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)

#: The last instant a ``datetime`` can represent (9999-12-31T23:59:59.999999Z).
MAX_US: Final[int] = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _ONE_US


def to_us(value: datetime, name: str = "instant") -> int:
    """Convert an aware datetime to microseconds since the epoch (UTC).

    Raises:
        InvalidPayload: *value* is not a datetime, or is naive (the message names *name*).
    """
    if not isinstance(value, datetime):
        raise InvalidPayload(f"{name} must be an aware datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidPayload(f"{name} must be timezone-aware (UTC), got a naive datetime")
    return (value - _EPOCH) // _ONE_US


def to_us_or_none(value: datetime | None, name: str) -> int | None:
    """:func:`to_us`, passing ``None`` through."""
    return None if value is None else to_us(value, name)


def from_us(us: int) -> datetime:
    """Microseconds since the epoch to an aware UTC datetime."""
    return _EPOCH + us * _ONE_US
