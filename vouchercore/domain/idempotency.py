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
from typing import Any, Final

import attrs

from vouchercore.domain.instants import MAX_US, from_us, to_us
from vouchercore.domain.snapshots import (
    BalanceUpdate,
    PointsCancellation,
    PointsTransfer,
    Redemption,
    RedemptionRollback,
    Transaction,
)
from vouchercore.domain.values import TransactionType
from vouchercore.errors import IdempotencyKeyReused

__all__ = [
    "DEFAULT_RETENTION_US",
    "KeyRecord",
    "decode_balance_update",
    "decode_points_cancellation",
    "decode_points_transfer",
    "decode_redemption",
    "decode_rollback",
    "decode_transaction",
    "encode_balance_update",
    "encode_points_cancellation",
    "encode_points_transfer",
    "encode_redemption",
    "encode_rollback",
    "encode_transaction",
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


# --- results as JSON text (exact round trips: decode(encode(x)) == x) -------------------------


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def encode_redemption(redemption: Redemption) -> str:
    """A redemption as JSON (its row: plain values, ``date`` in µs)."""
    return _dumps(list(redemption.to_row()))


def decode_redemption(text: str) -> Redemption:
    """The redemption :func:`encode_redemption` wrote."""
    return Redemption.from_row(tuple(json.loads(text)))


def encode_rollback(rollback: RedemptionRollback) -> str:
    """A rollback as JSON (``date`` in µs)."""
    fields = attrs.asdict(rollback)
    fields["date"] = to_us(rollback.date)
    return _dumps(fields)


def decode_rollback(text: str) -> RedemptionRollback:
    """The rollback :func:`encode_rollback` wrote."""
    fields = json.loads(text)
    fields["date"] = from_us(fields["date"])
    return RedemptionRollback(**fields)


def encode_balance_update(update: BalanceUpdate) -> str:
    """A balance update as JSON."""
    return _dumps(attrs.asdict(update))


def decode_balance_update(text: str) -> BalanceUpdate:
    """The balance update :func:`encode_balance_update` wrote."""
    return BalanceUpdate(**json.loads(text))


def _transaction_fields(tx: Transaction) -> dict[str, Any]:
    fields = attrs.asdict(tx)
    fields["type"] = tx.type.value
    fields["created_at"] = to_us(tx.created_at)
    return fields


def _transaction_from_fields(fields: dict[str, Any]) -> Transaction:
    fields["type"] = TransactionType(fields["type"])
    fields["created_at"] = from_us(fields["created_at"])
    return Transaction(**fields)


def encode_transaction(tx: Transaction) -> str:
    """A transaction (the answer of ``accrue_points``) as JSON (``created_at`` in µs)."""
    return _dumps(_transaction_fields(tx))


def decode_transaction(text: str) -> Transaction:
    """The transaction :func:`encode_transaction` wrote."""
    return _transaction_from_fields(json.loads(text))


def encode_points_cancellation(result: PointsCancellation) -> str:
    """A points cancellation as JSON."""
    return _dumps(
        {
            "accrued": result.accrued,
            "cancelled": result.cancelled,
            "not_cancelled": result.not_cancelled,
            "transactions": [_transaction_fields(tx) for tx in result.transactions],
        }
    )


def decode_points_cancellation(text: str) -> PointsCancellation:
    """The points cancellation :func:`encode_points_cancellation` wrote."""
    fields = json.loads(text)
    fields["transactions"] = tuple(_transaction_from_fields(tx) for tx in fields["transactions"])
    return PointsCancellation(**fields)


def encode_points_transfer(result: PointsTransfer) -> str:
    """A points transfer as JSON."""
    return _dumps(
        {
            "points": result.points,
            "source": _transaction_fields(result.source),
            "destination": _transaction_fields(result.destination),
        }
    )


def decode_points_transfer(text: str) -> PointsTransfer:
    """The points transfer :func:`encode_points_transfer` wrote."""
    fields = json.loads(text)
    return PointsTransfer(
        points=fields["points"],
        source=_transaction_from_fields(fields["source"]),
        destination=_transaction_from_fields(fields["destination"]),
    )
