"""README "Errors" on every store: errors the engine raises carry the key, code, resource and
message of what they concern (the error tree itself is tested in ``tests/test_errors.py``)."""

from __future__ import annotations

import pytest

from vouchercore import DuplicateFound, Engine, GiftAmountExceeded, NotFound, VoucherError


def test_error_can_be_caught_by_its_root(engine: Engine) -> None:
    with pytest.raises(VoucherError) as info:
        engine.get_voucher("NOPE")
    assert isinstance(info.value, NotFound)


# --- errors raised by the engine carry what they concern ---------------------------------


def test_engine_not_found_names_the_voucher(engine: Engine) -> None:
    with pytest.raises(NotFound) as info:
        engine.get_voucher("NOPE")
    assert (info.value.key, info.value.code) == ("not_found", 404)
    assert (info.value.resource_id, info.value.resource_type) == ("NOPE", "voucher")
    assert "NOPE" in info.value.message


def test_engine_rejection_names_the_voucher_and_explains(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 100})
    with pytest.raises(GiftAmountExceeded) as info:
        engine.redeem_voucher("G", credits=500)
    assert (info.value.resource_id, info.value.resource_type) == ("G", "voucher")
    assert "500" in info.value.message
    assert "100" in info.value.message


def test_validation_error_equals_the_one_redemption_raises(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 100})
    result = engine.validate_voucher("G", credits=500)
    with pytest.raises(GiftAmountExceeded) as info:
        engine.redeem_voucher("G", credits=500)
    assert result.error == info.value


def test_duplicate_names_the_code(engine: Engine) -> None:
    engine.create_voucher("DUP", gift={"amount": 1})
    with pytest.raises(DuplicateFound) as info:
        engine.create_voucher("DUP", gift={"amount": 1})
    assert info.value.resource_id == "DUP"
    assert info.value.code == 409
