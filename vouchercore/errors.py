"""The one exception tree of vouchercore.

Every failure a caller can see is a :class:`VoucherError` with a stable snake_case ``key``
(the keys Voucherify uses), the HTTP ``code`` Voucherify answers with, a human ``message``,
optional ``details``, and the resource it concerns where known::

    VoucherError
    ├── InvalidArgument (also ValueError)            400  malformed request, nothing read or changed
    │   ├── InvalidAmount                                 invalid_amount
    │   ├── MissingAmount                                 missing_amount
    │   ├── InvalidPayload                                invalid_payload
    │   ├── InvalidExportFields                           invalid_export_fields
    │   └── RedeemablesLimitExceeded                      redeemables_limit_exceeded
    ├── NotFound (also LookupError)                  404  not_found
    ├── DuplicateFound                               409  duplicate_found
    ├── VoucherRejected                              400  a check of the validation table failed
    │   ├── VoucherDisabled                               voucher_disabled
    │   ├── VoucherNotActive                              voucher_not_active
    │   ├── VoucherExpired                                voucher_expired
    │   ├── QuantityExceeded                              quantity_exceeded
    │   ├── GiftAmountExceeded                            gift_amount_exceeded
    │   ├── LoyaltyCardPointsExceeded                     loyalty_card_points_exceeded
    │   ├── ApplicableRedeemablesLimitExceeded            applicable_redeemables_limit_exceeded
    │   └── NoEffect                                      no_effect
    ├── AlreadyRolledBack                            400  already_rolled_back
    ├── AlreadyCancelled                             400  already_cancelled
    ├── InvalidRedemption                            400  invalid_redemption
    ├── RollbackWindowExceeded                       400  rollback_window_exceeded
    ├── InvalidVoucher                               400  invalid_voucher
    ├── InvalidAddBalanceParams                      400  invalid_add_balance_params
    ├── IdempotencyKeyReused                         409  idempotency_key_reused
    └── StorageError                                 503  storage_error

Every argument is checked before anything is read or changed, alike on every store
(:mod:`vouchercore.domain.values`, :mod:`vouchercore.domain.instants`, README "Limits of the
input"): a bad one is an ``InvalidArgument`` (``invalid_payload``, amounts ``invalid_amount``),
never a ``ValueError``, ``OverflowError``, ``UnicodeEncodeError`` or ``RecursionError`` of
Python or a driver.

Every failing call leaves the engine exactly as it was (README "Concurrency and the audit");
the only trace a failed
redemption leaves is its FAILED entry in the redemption log.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AlreadyCancelled",
    "AlreadyRolledBack",
    "ApplicableRedeemablesLimitExceeded",
    "DuplicateFound",
    "GiftAmountExceeded",
    "IdempotencyKeyReused",
    "InvalidAddBalanceParams",
    "InvalidAmount",
    "InvalidArgument",
    "InvalidExportFields",
    "InvalidPayload",
    "InvalidRedemption",
    "InvalidVoucher",
    "LoyaltyCardPointsExceeded",
    "MissingAmount",
    "NoEffect",
    "NotFound",
    "QuantityExceeded",
    "RedeemablesLimitExceeded",
    "RollbackWindowExceeded",
    "StorageError",
    "VoucherDisabled",
    "VoucherError",
    "VoucherExpired",
    "VoucherNotActive",
    "VoucherRejected",
    "error_class_for_key",
]


class VoucherError(Exception):
    """Root of every error vouchercore raises.

    Attributes:
        key: stable snake_case identifier (``"quantity_exceeded"``); match on this.
        code: the HTTP status Voucherify answers with for this error.
        message: a sentence for people.
        details: more context (what was asked, what was available), or ``None``.
        resource_id: the id or code of the resource concerned, where known.
        resource_type: ``"voucher"``, ``"session"``, ``"redemption"`` …, where known.
        parent_redemption_id: on the error a failed stacked redemption raises, the id of the
            FAILED parent redemption it recorded (``None`` otherwise).
    """

    key: ClassVar[str] = "error"
    code: ClassVar[int] = 400
    parent_redemption_id: str | None = None

    def __init__(
        self,
        message: str,
        *,
        details: str | None = None,
        resource_id: str | None = None,
        resource_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.resource_id = resource_id
        self.resource_type = resource_type

    def __str__(self) -> str:
        text = f"{self.key}: {self.message}"
        return f"{text} ({self.details})" if self.details else text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, key={self.key!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VoucherError):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    def __hash__(self) -> int:
        return hash((self.key, self.message))

    def as_dict(self) -> dict[str, Any]:
        """The error in Voucherify's JSON shape (``code``, ``key``, ``message``, ``details``…)."""
        return {
            "code": self.code,
            "key": self.key,
            "message": self.message,
            "details": self.details,
            "resource_id": self.resource_id,
            "resource_type": self.resource_type,
        }


class InvalidArgument(VoucherError, ValueError):
    """A malformed request: wrong type, out-of-range value, unknown enum member.

    Raised before anything is read or changed. The message names the argument.
    """

    key = "invalid_payload"


class InvalidAmount(InvalidArgument):
    """An amount, credit or point count that is not a positive signed 64-bit integer."""

    key = "invalid_amount"


class MissingAmount(InvalidArgument):
    """A gift card request with neither credits nor an order amount."""

    key = "missing_amount"


class InvalidPayload(InvalidArgument):
    """Any other malformed request (types, enums, codes, keys, metadata, instants)."""

    key = "invalid_payload"


class NotFound(VoucherError, LookupError):
    """Unknown (or soft-deleted) voucher, unknown session or redemption."""

    key = "not_found"
    code = 404


class DuplicateFound(VoucherError):
    """A voucher with this code exists already (live or soft-deleted)."""

    key = "duplicate_found"
    code = 409

    @classmethod
    def voucher(cls, field: str, value: str) -> DuplicateFound:
        """The error every store raises when a new voucher's *field* (``"code"`` or ``"id"``)
        is taken by *value*."""
        return cls(
            f"a voucher with {field} {value!r} exists already",
            resource_id=value,
            resource_type="voucher",
        )


class VoucherRejected(VoucherError):
    """A check of the validation table failed: the voucher cannot be used for this request."""


class VoucherDisabled(VoucherRejected):
    """The voucher is disabled (``active`` is false)."""

    key = "voucher_disabled"


class VoucherNotActive(VoucherRejected):
    """The voucher's ``start_date`` is still ahead."""

    key = "voucher_not_active"


class VoucherExpired(VoucherRejected):
    """The voucher's ``expiration_date`` has passed."""

    key = "voucher_expired"


class QuantityExceeded(VoucherRejected):
    """No redemption left once redemptions and other sessions' locks are counted."""

    key = "quantity_exceeded"


class GiftAmountExceeded(VoucherRejected):
    """More credits asked for than the card has available."""

    key = "gift_amount_exceeded"


class LoyaltyCardPointsExceeded(VoucherRejected):
    """More points asked for than the card has available."""

    key = "loyalty_card_points_exceeded"


class ApplicableRedeemablesLimitExceeded(VoucherRejected):
    """A stack holds more applicable redeemables than the engine's
    ``applicable_redeemables_limit`` (5 by default): the ones past it are SKIPPED."""

    key = "applicable_redeemables_limit_exceeded"


class NoEffect(VoucherRejected):
    """A gift card in a stack would pay nothing: the vouchers before it cover the whole
    order."""

    key = "no_effect"


class AlreadyRolledBack(VoucherError):
    """The redemption has been rolled back already."""

    key = "already_rolled_back"


class AlreadyCancelled(VoucherError):
    """The points accrual has been cancelled already."""

    key = "already_cancelled"


class InvalidRedemption(VoucherError):
    """The redemption cannot be rolled back (it FAILED, so nothing was applied)."""

    key = "invalid_redemption"


class RollbackWindowExceeded(VoucherError):
    """The redemption is older than the rollback window (3 calendar months)."""

    key = "rollback_window_exceeded"


class InvalidVoucher(VoucherError):
    """The operation does not apply to this kind of voucher (e.g. balance on a discount)."""

    key = "invalid_voucher"


class InvalidAddBalanceParams(VoucherError):
    """A removal larger than the balance not held by live sessions."""

    key = "invalid_add_balance_params"


class InvalidExportFields(InvalidArgument):
    """An export asked for a field that does not exist (or twice)."""

    key = "invalid_export_fields"


class RedeemablesLimitExceeded(InvalidArgument):
    """A stacked request names more redeemables than the engine's ``redeemables_limit``
    (30 by default)."""

    key = "redeemables_limit_exceeded"


class IdempotencyKeyReused(VoucherError):
    """An idempotency key, still within its retention, was sent with a different request (or
    to a different voucher or operation) than the one it was first used for. Nothing changed."""

    key = "idempotency_key_reused"
    code = 409


class StorageError(VoucherError):
    """The store failed (driver error, unreachable database); the driver error is the cause."""

    key = "storage_error"
    code = 503


_BY_KEY: dict[str, type[VoucherError]] = {
    cls.key: cls
    for cls in (
        InvalidAmount,
        MissingAmount,
        InvalidPayload,
        NotFound,
        DuplicateFound,
        VoucherDisabled,
        VoucherNotActive,
        VoucherExpired,
        QuantityExceeded,
        GiftAmountExceeded,
        LoyaltyCardPointsExceeded,
        ApplicableRedeemablesLimitExceeded,
        NoEffect,
        RedeemablesLimitExceeded,
        AlreadyRolledBack,
        AlreadyCancelled,
        InvalidRedemption,
        RollbackWindowExceeded,
        InvalidVoucher,
        InvalidAddBalanceParams,
        InvalidExportFields,
        IdempotencyKeyReused,
        StorageError,
    )
}


def error_class_for_key(key: str) -> type[VoucherError]:
    """The error class whose stable ``key`` is *key* (``VoucherError`` if unknown)."""
    return _BY_KEY.get(key, VoucherError)
