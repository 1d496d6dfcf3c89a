"""vouchercore — vouchers with Voucherify's semantics, in-process.

Discount codes, gift cards and loyalty cards; LOCK validation sessions with a TTL; redemptions
and rollbacks; an append-only transaction log; an audit of the invariants. Start with
:class:`Engine`::

    from vouchercore import Engine
    engine = Engine()
    engine.create_voucher("SUMMER10", discount={"type": "PERCENT", "percent_off": 10})
    engine.validate_voucher("SUMMER10", order_amount=5000).discount_amount   # 500
"""

from typing import TYPE_CHECKING, Any

from vouchercore.clock import Clock, FakeClock, SystemClock
from vouchercore.csvio import ImportFailure, ImportReport
from vouchercore.domain.records import Discount
from vouchercore.domain.snapshots import (
    AuditReport,
    BalanceUpdate,
    Customer,
    GiftBalance,
    LoyaltyBalance,
    Order,
    OrderSummary,
    ParentRedemption,
    ParentRollback,
    PointsCancellation,
    PointsTransfer,
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
    Violation,
    Voucher,
)
from vouchercore.domain.stacking import StackingRules
from vouchercore.domain.values import (
    DiscountType,
    RedeemableStatus,
    RedemptionStatus,
    TransactionType,
    TtlUnit,
    VoucherType,
)
from vouchercore.engine import Engine
from vouchercore.errors import (
    AlreadyCancelled,
    AlreadyRolledBack,
    ApplicableRedeemablesLimitExceeded,
    DuplicateFound,
    GiftAmountExceeded,
    IdempotencyKeyReused,
    InvalidAddBalanceParams,
    InvalidAmount,
    InvalidArgument,
    InvalidExportFields,
    InvalidPayload,
    InvalidRedemption,
    InvalidVoucher,
    LoyaltyCardPointsExceeded,
    MissingAmount,
    NoEffect,
    NotFound,
    QuantityExceeded,
    RedeemablesLimitExceeded,
    RollbackWindowExceeded,
    StorageError,
    VoucherDisabled,
    VoucherError,
    VoucherExpired,
    VoucherNotActive,
    VoucherRejected,
)
from vouchercore.ids import IdGenerator
from vouchercore.stores.memory import MemoryStore
from vouchercore.stores.sqlite import SQLiteStore

if TYPE_CHECKING:
    from vouchercore.stores.postgres import PostgresStore

__version__ = "0.1.0"

__all__ = [
    "AlreadyCancelled",
    "AlreadyRolledBack",
    "ApplicableRedeemablesLimitExceeded",
    "AuditReport",
    "BalanceUpdate",
    "Clock",
    "Customer",
    "Discount",
    "DiscountType",
    "DuplicateFound",
    "Engine",
    "FakeClock",
    "GiftAmountExceeded",
    "GiftBalance",
    "IdGenerator",
    "IdempotencyKeyReused",
    "ImportFailure",
    "ImportReport",
    "InvalidAddBalanceParams",
    "InvalidAmount",
    "InvalidArgument",
    "InvalidExportFields",
    "InvalidPayload",
    "InvalidRedemption",
    "InvalidVoucher",
    "LoyaltyBalance",
    "LoyaltyCardPointsExceeded",
    "MemoryStore",
    "MissingAmount",
    "NoEffect",
    "NotFound",
    "Order",
    "OrderSummary",
    "ParentRedemption",
    "ParentRollback",
    "PointsCancellation",
    "PointsTransfer",
    "PostgresStore",
    "QuantityExceeded",
    "RedeemableResult",
    "RedeemableStatus",
    "RedeemablesLimitExceeded",
    "Redemption",
    "RedemptionRollback",
    "RedemptionStatus",
    "RollbackWindowExceeded",
    "SQLiteStore",
    "Session",
    "StackedRedemption",
    "StackedRollback",
    "StackedValidationResult",
    "StackingRules",
    "StorageError",
    "SystemClock",
    "Transaction",
    "TransactionPage",
    "TransactionType",
    "TtlUnit",
    "ValidationResult",
    "Violation",
    "Voucher",
    "VoucherDisabled",
    "VoucherError",
    "VoucherExpired",
    "VoucherNotActive",
    "VoucherRejected",
    "VoucherType",
    "__version__",
]


def __getattr__(name: str) -> Any:
    """``PostgresStore`` is imported on first use: psycopg is the optional ``postgres`` extra
    (``pip install 'vouchercore[postgres]'``)."""
    if name == "PostgresStore":
        from vouchercore.stores.postgres import PostgresStore  # noqa: PLC0415 - optional extra

        return PostgresStore
    raise AttributeError(f"module 'vouchercore' has no attribute {name!r}")
