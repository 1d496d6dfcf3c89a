"""README "Errors": the error tree — stable keys, HTTP codes, messages, details, lookup by key."""

from __future__ import annotations

import pytest

from vouchercore import (
    AlreadyCancelled,
    AlreadyRolledBack,
    DuplicateFound,
    GiftAmountExceeded,
    InvalidAddBalanceParams,
    InvalidAmount,
    InvalidArgument,
    InvalidPayload,
    InvalidRedemption,
    InvalidVoucher,
    LoyaltyCardPointsExceeded,
    MissingAmount,
    NotFound,
    QuantityExceeded,
    RollbackWindowExceeded,
    StorageError,
    VoucherDisabled,
    VoucherError,
    VoucherExpired,
    VoucherNotActive,
    VoucherRejected,
)
from vouchercore.errors import error_class_for_key

KEYS: dict[type[VoucherError], tuple[str, int]] = {
    InvalidAmount: ("invalid_amount", 400),
    MissingAmount: ("missing_amount", 400),
    InvalidPayload: ("invalid_payload", 400),
    NotFound: ("not_found", 404),
    DuplicateFound: ("duplicate_found", 409),
    VoucherDisabled: ("voucher_disabled", 400),
    VoucherNotActive: ("voucher_not_active", 400),
    VoucherExpired: ("voucher_expired", 400),
    QuantityExceeded: ("quantity_exceeded", 400),
    GiftAmountExceeded: ("gift_amount_exceeded", 400),
    LoyaltyCardPointsExceeded: ("loyalty_card_points_exceeded", 400),
    AlreadyRolledBack: ("already_rolled_back", 400),
    AlreadyCancelled: ("already_cancelled", 400),
    InvalidRedemption: ("invalid_redemption", 400),
    RollbackWindowExceeded: ("rollback_window_exceeded", 400),
    InvalidVoucher: ("invalid_voucher", 400),
    InvalidAddBalanceParams: ("invalid_add_balance_params", 400),
    StorageError: ("storage_error", 503),
}


@pytest.mark.parametrize(
    ("cls", "expected"), list(KEYS.items()), ids=lambda x: getattr(x, "__name__", "")
)
def test_each_error_class_has_its_stable_key_and_http_code(
    cls: type[VoucherError], expected: tuple[str, int]
) -> None:
    key, code = expected
    assert (cls.key, cls.code) == (key, code)
    error = cls("something went wrong")
    assert (error.key, error.code) == (key, code)
    assert isinstance(error, VoucherError)


@pytest.mark.parametrize("cls", list(KEYS), ids=lambda c: c.__name__)
def test_error_class_for_key_finds_each_class(cls: type[VoucherError]) -> None:
    assert error_class_for_key(cls.key) is cls


def test_error_class_for_an_unknown_key_is_the_root() -> None:
    assert error_class_for_key("no_such_key") is VoucherError


def test_keys_are_unique_snake_case() -> None:
    keys = [cls.key for cls in KEYS]
    assert len(keys) == len(set(keys))
    for key in keys:
        assert key == key.lower()
        assert " " not in key


# --- the tree -----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [InvalidAmount, MissingAmount, InvalidPayload])
def test_invalid_arguments_are_value_errors(cls: type[VoucherError]) -> None:
    assert issubclass(cls, InvalidArgument)
    assert issubclass(cls, ValueError)
    assert issubclass(cls, VoucherError)


def test_invalid_argument_is_a_value_error() -> None:
    assert issubclass(InvalidArgument, ValueError)
    assert issubclass(InvalidArgument, VoucherError)
    assert InvalidArgument.code == 400


def test_not_found_is_a_lookup_error() -> None:
    assert issubclass(NotFound, LookupError)
    assert issubclass(NotFound, VoucherError)
    assert not issubclass(NotFound, ValueError)


@pytest.mark.parametrize(
    "cls",
    [
        VoucherDisabled,
        VoucherNotActive,
        VoucherExpired,
        QuantityExceeded,
        GiftAmountExceeded,
        LoyaltyCardPointsExceeded,
    ],
)
def test_validation_check_errors_are_voucher_rejected(cls: type[VoucherError]) -> None:
    assert issubclass(cls, VoucherRejected)
    assert not issubclass(cls, ValueError)


@pytest.mark.parametrize(
    "cls",
    [
        NotFound,
        DuplicateFound,
        AlreadyRolledBack,
        AlreadyCancelled,
        InvalidRedemption,
        RollbackWindowExceeded,
        InvalidVoucher,
        InvalidAddBalanceParams,
        StorageError,
    ],
)
def test_other_errors_are_neither_rejections_nor_invalid_arguments(
    cls: type[VoucherError],
) -> None:
    assert not issubclass(cls, VoucherRejected)
    assert not issubclass(cls, InvalidArgument)


def test_every_error_derives_from_exception_not_base_exception_only() -> None:
    assert issubclass(VoucherError, Exception)


# --- attributes ---------------------------------------------------------------------------


def test_error_carries_message_details_and_resource() -> None:
    error = QuantityExceeded(
        "no redemption left", details="quantity 1", resource_id="CODE", resource_type="voucher"
    )
    assert error.message == "no redemption left"
    assert error.details == "quantity 1"
    assert (error.resource_id, error.resource_type) == ("CODE", "voucher")
    assert error.as_dict() == {
        "code": 400,
        "key": "quantity_exceeded",
        "message": "no redemption left",
        "details": "quantity 1",
        "resource_id": "CODE",
        "resource_type": "voucher",
    }
    assert str(error) == "quantity_exceeded: no redemption left (quantity 1)"


def test_error_without_details_prints_key_and_message() -> None:
    error = NotFound("voucher 'X' not found")
    assert error.details is None
    assert error.resource_id is None
    assert str(error) == "not_found: voucher 'X' not found"
    assert error.as_dict()["code"] == 404


def test_errors_with_the_same_content_are_equal() -> None:
    assert NotFound("x", resource_id="A") == NotFound("x", resource_id="A")
    assert NotFound("x", resource_id="A") != NotFound("x", resource_id="B")
    assert hash(NotFound("x")) == hash(NotFound("x"))
