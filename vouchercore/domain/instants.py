"""Instants as integer microseconds since the Unix epoch, UTC — the domain's one time unit.

The domain never reads a clock; the engine reads it once per operation and passes ``now`` in
microseconds. Public objects carry aware UTC :class:`~datetime.datetime` values, converted
here and nowhere else.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

from vouchercore.errors import InvalidPayload, StorageError

__all__ = ["MAX_US", "MIN_US", "from_us", "to_us", "to_us_or_none"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)

#: The last instant a ``datetime`` can represent (9999-12-31T23:59:59.999999Z).
MAX_US: Final[int] = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _ONE_US
#: The first instant a ``datetime`` can represent (0001-01-01T00:00:00Z).
MIN_US: Final[int] = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // _ONE_US


def to_us(value: datetime, name: str = "instant") -> int:
    """Convert an aware datetime to microseconds since the epoch (UTC).

    Every instant a request gives goes through here: its UTC value must lie from
    0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z (:data:`MIN_US` … :data:`MAX_US`),
    the range every store keeps and reads back (``9999-12-31T23:00-12:00`` is in year 10000
    in UTC: refused).

    Raises:
        InvalidPayload: *value* is not a datetime, is naive, or lies outside that range (the
            message names *name*).
    """
    if not isinstance(value, datetime):
        raise InvalidPayload(f"{name} must be an aware datetime, got {type(value).__name__}")
    try:
        offset = value.utcoffset()
        us = None if offset is None else (value - _EPOCH) // _ONE_US
    except (ValueError, TypeError, OverflowError) as error:  # a tzinfo giving a bad offset
        raise InvalidPayload(f"{name} has an unusable time zone: {error}") from None
    if us is None:
        raise InvalidPayload(f"{name} must be timezone-aware (UTC), got a naive datetime")
    if not MIN_US <= us <= MAX_US:
        raise InvalidPayload(
            f"{name} must lie from 0001-01-01 to 9999-12-31 in UTC, got {value.isoformat()}"
        )
    return us


def to_us_or_none(value: datetime | None, name: str) -> int | None:
    """:func:`to_us`, passing ``None`` through."""
    return None if value is None else to_us(value, name)


def from_us(us: int) -> datetime:
    """Microseconds since the epoch to an aware UTC datetime.

    Raises:
        StorageError: *us* lies outside :data:`MIN_US` … :data:`MAX_US` — a store holding
            such an instant (written before requests were checked for it) cannot show it.
    """
    try:
        return _EPOCH + us * _ONE_US
    except OverflowError:
        raise StorageError(
            f"an instant of {us} µs since 1970 lies outside the years 1 to 9999: the store "
            "holds a value no datetime can show"
        ) from None
