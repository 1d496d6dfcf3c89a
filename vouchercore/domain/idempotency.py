"""Idempotent retries: a keyed call's request is remembered with its result and replayed.

A POS that times out or crashes does not know whether its call took effect. Sent again with the
same ``idempotency_key``, the call returns the first call's result and changes nothing; sent
with the same key but a different request, it is refused (:class:`IdempotencyKeyReused`). A call
that failed stores nothing, so its retry runs anew. A key is kept for a retention (7 days by
default) measured on the engine's clock: it is live while ``now < expires_at``.

The rule is here; stores keep :class:`KeyRecord` rows and make one key's claims wait for each
other (see :mod:`vouchercore.ports`).
"""

from __future__ import annotations

import hashlib
import json
import operator
import types
import typing
from collections.abc import Callable
from datetime import datetime
from enum import Enum
from typing import Any, Final, TypeVar

import attrs

from vouchercore.domain.instants import MAX_US, from_us, to_us
from vouchercore.domain.rows import RowBacked
from vouchercore.domain.snapshots import (
    BalanceUpdate,
    ParentRedemption,
    PointsCancellation,
    PointsTransfer,
    Redemption,
    RedemptionRollback,
    StackedRedemption,
    StackedRollback,
    Transaction,
)
from vouchercore.errors import IdempotencyKeyReused

__all__ = [
    "DEFAULT_RETENTION_US",
    "KeyRecord",
    "Result",
    "decode",
    "encode",
    "fingerprint",
    "keep",
    "replay",
]

#: Seven days, in microseconds.
DEFAULT_RETENTION_US: Final = 7 * 24 * 3600 * 1_000_000


@attrs.frozen
class KeyRecord:
    """What a store keeps under an idempotency key: the request's fingerprint, the result (JSON
    text), when it was stored and when it is forgotten (integer µs UTC)."""

    key: str
    fingerprint: str
    result: str
    created_at: int
    expires_at: int


def fingerprint(operation: str, **request: Any) -> str:
    """A digest of the operation and its (checked, JSON-shaped) arguments: equal for equal
    requests, whatever the order the arguments were given in."""
    canonical = json.dumps(
        [operation, request], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def replay(stored: KeyRecord | None, key: str, request: str, now: int) -> str | None:
    """The result to return for a call with *key* and request fingerprint *request* at *now*:
    the stored one if the key is live and was used for this request, ``None`` if the call must
    run (no record, or its retention is over).

    Raises:
        IdempotencyKeyReused: the key is live and was used for a different request.
    """
    if stored is None or now >= stored.expires_at:
        return None
    if stored.fingerprint != request:
        raise IdempotencyKeyReused(
            f"idempotency key {key!r} was used for a different request; it is kept until "
            f"{from_us(stored.expires_at).isoformat()}",
            resource_id=key,
            resource_type="idempotency_key",
        )
    return stored.result


def keep(key: str, request: str, result: str, now: int, retention_us: int) -> KeyRecord:
    """The record of a call that succeeded at *now*, kept for *retention_us*."""
    return KeyRecord(key, request, result, now, min(now + retention_us, MAX_US))


# --- results as JSON text: one codec, by field name ---------------------------------------------
#
# Every result is written as a JSON object keyed by its field names, so that a stored key still
# replays after the result classes gain, lose or reorder fields. Values are written as the
# stores keep them: instants as integer microseconds UTC, enums as their string values, tuples
# as lists, nested results as objects (a transaction inside a points transfer, say); anything
# else (text, integers, metadata) as it is. decode(type(x), encode(x)) == x for every result.
#
# Before the codec a redemption was stored as the JSON list of its row (its fields by
# position); decode still reads that form (a list where an object is expected).

#: The results a keyed call keeps.
Result = (
    Redemption
    | RedemptionRollback
    | BalanceUpdate
    | Transaction
    | PointsCancellation
    | PointsTransfer
    | StackedRedemption
    | StackedRollback
    | ParentRedemption
)
R = TypeVar("R", bound=Result)

_Convert = Callable[[Any], Any]


@attrs.frozen
class _Shape:
    """How one result type is written: its fields by name with the JSON form of each, from
    the object (``fields``) and back (``build``); ``legacy`` builds it from the positional list
    of the format before the codec (None: the type was always stored by name)."""

    fields: Callable[[Any], dict[str, Any]]
    build: Callable[[dict[str, Any]], Any]
    legacy: Callable[[list[Any]], Any] | None = None


_SHAPES: dict[type, _Shape] = {}


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _shape(kind: type) -> _Shape:
    """The shape of *kind*, made on first use from its fields and their types."""
    shape = _SHAPES.get(kind)
    if shape is None:
        if issubclass(kind, RowBacked):
            # its row already holds every value in JSON form (see RowBacked.to_row)
            shape = _Shape(kind.row_fields, kind.from_fields, kind.from_stored_row)
        elif attrs.has(kind):
            shape = _attrs_shape(kind)
        else:
            raise TypeError(f"{kind.__name__} is not a result kept under idempotency keys")
        _SHAPES[kind] = shape
    return shape


def _attrs_shape(kind: type) -> _Shape:
    """The shape of an attrs class: each field converted by what its annotation says."""
    attrs.resolve_types(kind)
    plan = [(field.name, *_converters(field.type)) for field in attrs.fields(kind)]

    def fields(obj: Any) -> dict[str, Any]:
        values = {}
        for name, out, _ in plan:
            value = getattr(obj, name)
            values[name] = value if out is None or value is None else out(value)
        return values

    def build(values: dict[str, Any]) -> Any:
        for name, _, back in plan:
            value = values.get(name)
            if back is not None and value is not None:
                values[name] = back(value)
        return kind(**values)

    return _Shape(fields, build)


def _converters(hint: Any) -> tuple[_Convert | None, _Convert | None]:
    """How a value of type *hint* becomes JSON and back (None: as it is). ``X | None`` is
    converted as ``X`` (None stays None)."""
    if isinstance(hint, types.UnionType):
        others = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _converters(others[0]) if len(others) == 1 else (None, None)
    if typing.get_origin(hint) is tuple:
        out, back = _converters(typing.get_args(hint)[0])
        return (
            None if out is None else (lambda items: [out(item) for item in items]),
            tuple if back is None else (lambda items: tuple(back(item) for item in items)),
        )
    if hint is datetime:
        return to_us, from_us
    if isinstance(hint, type) and issubclass(hint, Enum):
        return operator.attrgetter("value"), hint
    if isinstance(hint, type) and (attrs.has(hint) or issubclass(hint, RowBacked)):
        nested = _shape(hint)
        return nested.fields, nested.build
    return None, None


def encode(result: Result) -> str:
    """A result as JSON text: an object of its fields by name (instants in integer µs, enums
    as their values, nested results as objects).

    Raises:
        TypeError: *result* is not of a result type (:data:`Result`).
    """
    return _dumps(_shape(type(result)).fields(result))


def decode(kind: type[R], text: str) -> R:
    """The result of type *kind* that :func:`encode` wrote as *text*; also reads the
    positional form a redemption was stored in before (a JSON list of its row)."""
    shape = _shape(kind)
    values = json.loads(text)
    if isinstance(values, list) and shape.legacy is not None:
        return typing.cast(R, shape.legacy(values))
    return typing.cast(R, shape.build(values))


# The names the engine passes to its keyed calls: encode, and decode bound to each type.
