"""The public names (README "Quick tour") — package exports and the Engine's Voucherify verbs."""

from __future__ import annotations

import importlib
import inspect

import pytest

import vouchercore
from vouchercore import Engine

EXPECTED_EXPORTS = {
    "ApplicableRedeemablesLimitExceeded",
    "Customer",
    "NoEffect",
    "Order",
    "OrderSummary",
    "ParentRedemption",
    "ParentRollback",
    "RedeemableResult",
    "RedeemableStatus",
    "RedeemablesLimitExceeded",
    "StackedRedemption",
    "StackedRollback",
    "StackedValidationResult",
    "StackingRules",
    "AlreadyCancelled",
    "AlreadyRolledBack",
    "AuditReport",
    "BalanceUpdate",
    "PointsCancellation",
    "PointsTransfer",
    "Clock",
    "Discount",
    "DiscountType",
    "DuplicateFound",
    "Engine",
    "FakeClock",
    "GiftAmountExceeded",
    "GiftBalance",
    "IdempotencyKeyReused",
    "IdGenerator",
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
    "PostgresStore",
    "MissingAmount",
    "NotFound",
    "QuantityExceeded",
    "Redemption",
    "RedemptionRollback",
    "RedemptionStatus",
    "RollbackWindowExceeded",
    "SQLiteStore",
    "Session",
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
}

#: Voucherify's verbs, in the order of its API reference.
VOUCHERIFY_METHODS = [
    "create_voucher",
    "get_voucher",
    "enable_voucher",
    "disable_voucher",
    "delete_voucher",
    "validate_voucher",
    "redeem_voucher",
    "rollback_redemption",
    "release_validation_session",
    "update_voucher_balance",
    "list_voucher_transactions",
    "export_voucher_transactions",
    "import_vouchers_using_csv",
    "audit",
]

#: Beyond those: loyalty points (README "Loyalty points"), with the same argument rules.
LOYALTY_METHODS = [
    "accrue_points",
    "cancel_points_accrual",
    "transfer_points",
    "expire_points",
]

#: How many leading parameters (after self) §15 shows as positional.
POSITIONAL = {
    "update_voucher_balance": 2,
    "release_validation_session": 2,
    "export_voucher_transactions": 2,
    "accrue_points": 2,
    "transfer_points": 3,
    "expire_points": 1,
}


def test_package_exports_exactly_the_expected_names() -> None:
    assert set(vouchercore.__all__) == EXPECTED_EXPORTS
    assert len(vouchercore.__all__) == len(set(vouchercore.__all__))


@pytest.mark.parametrize("name", sorted(EXPECTED_EXPORTS))
def test_every_exported_name_imports(name: str) -> None:
    module = importlib.import_module("vouchercore")
    assert getattr(module, name) is not None
    imported = __import__("vouchercore", fromlist=[name])
    assert getattr(imported, name) is getattr(module, name)


def test_version_is_a_string() -> None:
    assert isinstance(vouchercore.__version__, str)
    assert vouchercore.__version__.count(".") >= 1


def test_testing_helpers_are_public() -> None:
    testing = importlib.import_module("vouchercore.testing")
    assert set(testing.__all__) == {"FakeClock", "all_transactions", "state_snapshot"}
    assert testing.FakeClock is vouchercore.FakeClock


@pytest.mark.parametrize("name", VOUCHERIFY_METHODS)
def test_engine_has_each_spec_method(name: str) -> None:
    method = getattr(Engine, name, None)
    assert callable(method), f"Engine.{name} is missing"


@pytest.mark.parametrize("name", VOUCHERIFY_METHODS + LOYALTY_METHODS)
def test_engine_method_arguments_are_keyword_only_after_the_first(name: str) -> None:
    method = getattr(Engine, name, None)
    if method is None:
        pytest.skip(f"Engine.{name} is missing: reported by test_engine_has_each_spec_method")
    params = list(inspect.signature(method).parameters.values())[1:]  # drop self
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    assert len(positional) <= POSITIONAL.get(name, 1), [p.name for p in positional]


def test_engine_methods_have_docstrings() -> None:
    for name in VOUCHERIFY_METHODS + LOYALTY_METHODS:
        method = getattr(Engine, name, None)
        if method is not None:
            assert method.__doc__, f"Engine.{name} has no docstring"


def test_default_engine_runs_in_memory_on_the_system_clock() -> None:
    with Engine() as engine:
        assert isinstance(engine.clock, vouchercore.SystemClock)
        assert isinstance(engine.store, vouchercore.MemoryStore)
        engine.create_voucher("X", gift={"amount": 1})
        assert engine.get_voucher("X").gift.balance == 1  # type: ignore[union-attr]


def test_engine_accepts_the_memory_url_and_a_store_object() -> None:
    assert isinstance(Engine("memory://").store, vouchercore.MemoryStore)
    store = vouchercore.MemoryStore()
    engine = Engine(store)
    assert engine.store is store
    engine.create_voucher("X", gift={"amount": 1})
    assert Engine(store).get_voucher("X").code == "X"


@pytest.mark.parametrize("store", ["nosuch://x", 42])
def test_engine_rejects_an_unknown_store(store: object) -> None:
    with pytest.raises(vouchercore.InvalidArgument):
        Engine(store)
