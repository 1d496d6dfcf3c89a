"""Vouchers and create_voucher (README "Vouchers"): types, discounts, ids, codes, metadata."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from vouchercore import (
    Discount,
    DiscountType,
    DuplicateFound,
    Engine,
    FakeClock,
    InvalidArgument,
    VoucherType,
)

VOUCHER_ID = re.compile(r"v_[0-9A-Za-z]{32}")


# --- the three types ----------------------------------------------------------------------------


def test_discount_voucher_is_created_with_its_discount_and_no_balance(engine: Engine) -> None:
    v = engine.create_voucher("SAVE5", type="DISCOUNT_VOUCHER", discount=Discount.amount(500))
    assert v.type is VoucherType.DISCOUNT_VOUCHER
    assert v.discount == Discount(type=DiscountType.AMOUNT, amount_off=500)
    assert v.gift is None
    assert v.loyalty_card is None


def test_gift_voucher_opens_with_amount_equal_to_balance(engine: Engine) -> None:
    v = engine.create_voucher("GIFT", type="GIFT_VOUCHER", gift={"amount": 5000})
    assert v.type is VoucherType.GIFT_VOUCHER
    assert v.gift is not None
    assert (v.gift.amount, v.gift.balance) == (5000, 5000)
    assert v.discount is None
    assert v.loyalty_card is None


def test_loyalty_card_opens_with_points_equal_to_balance(engine: Engine) -> None:
    v = engine.create_voucher("LOYAL", type="LOYALTY_CARD", loyalty_card={"points": 300})
    assert v.type is VoucherType.LOYALTY_CARD
    assert v.loyalty_card is not None
    assert (v.loyalty_card.points, v.loyalty_card.balance) == (300, 300)
    assert v.gift is None


def test_gift_voucher_may_open_with_zero_credits(engine: Engine) -> None:
    v = engine.create_voucher("EMPTY", gift={"amount": 0})
    assert v.gift is not None
    assert v.gift.balance == 0


def test_new_voucher_has_zero_counters_and_is_active(engine: Engine) -> None:
    v = engine.create_voucher("NEW", gift={"amount": 100})
    assert (v.redeemed_quantity, v.redeemed_amount, v.redeemed_points) == (0, 0, 0)
    assert (v.locked_quantity, v.locked_credits, v.locked_points) == (0, 0, 0)
    assert v.active is True
    assert v.quantity is None


def test_voucher_can_be_created_disabled(engine: Engine) -> None:
    assert engine.create_voucher("OFF", gift={"amount": 1}, active=False).active is False


def test_created_and_updated_at_come_from_the_engine_clock(
    engine: Engine, clock: FakeClock
) -> None:
    v = engine.create_voucher("T", gift={"amount": 1})
    assert v.created_at == clock.now()
    assert v.updated_at == clock.now()


def test_get_voucher_finds_a_voucher_by_code_and_by_id(engine: Engine) -> None:
    v = engine.create_voucher("FIND", gift={"amount": 1})
    assert engine.get_voucher("FIND") == v
    assert engine.get_voucher(v.id) == v


def test_free_data_fields_are_kept(engine: Engine) -> None:
    start = datetime(2026, 3, 2, tzinfo=UTC)
    end = datetime(2026, 4, 2, tzinfo=UTC)
    v = engine.create_voucher(
        "DATA",
        gift={"amount": 1},
        category="promo",
        additional_info="for staff",
        campaign_id="camp_1",
        start_date=start,
        expiration_date=end,
    )
    assert (v.category, v.additional_info, v.campaign_id) == ("promo", "for staff", "camp_1")
    assert (v.start_date, v.expiration_date) == (start, end)


# --- the four discount kinds --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (Discount.amount(500), Discount(type=DiscountType.AMOUNT, amount_off=500)),
        (
            {"type": "AMOUNT", "amount_off": 500},
            Discount(type=DiscountType.AMOUNT, amount_off=500),
        ),
        (
            Discount.percent(12.5, amount_limit=2000),
            Discount(type=DiscountType.PERCENT, percent_off_bp=1250, amount_limit=2000),
        ),
        (
            {"type": "PERCENT", "percent_off": 12.5, "amount_limit": 2000},
            Discount(type=DiscountType.PERCENT, percent_off_bp=1250, amount_limit=2000),
        ),
        (
            {"type": "PERCENT", "percent_off": 100},
            Discount(type=DiscountType.PERCENT, percent_off_bp=10000),
        ),
        (Discount.fixed(1000), Discount(type=DiscountType.FIXED, fixed_amount=1000)),
        (
            {"type": "FIXED", "fixed_amount": 1000},
            Discount(type=DiscountType.FIXED, fixed_amount=1000),
        ),
        (
            Discount.unit(1, "sku_1"),
            Discount(type=DiscountType.UNIT, unit_off=1, unit_type="sku_1"),
        ),
        (
            {"type": "UNIT", "unit_off": 2, "unit_type": "sku_2"},
            Discount(type=DiscountType.UNIT, unit_off=2, unit_type="sku_2"),
        ),
    ],
    ids=[
        "amount-obj",
        "amount-dict",
        "percent-obj",
        "percent-dict",
        "percent-100",
        "fixed-obj",
        "fixed-dict",
        "unit-obj",
        "unit-dict",
    ],
)
def test_each_discount_kind_is_accepted_as_object_or_voucherify_dict(
    engine: Engine, given: object, expected: Discount
) -> None:
    v = engine.create_voucher("D", discount=given)  # type: ignore[arg-type]
    assert v.type is VoucherType.DISCOUNT_VOUCHER
    assert v.discount == expected


def test_percent_discount_reports_percent_off_as_a_number() -> None:
    assert Discount.percent(12.5).percent_off == 12.5
    assert Discount.percent(10).percent_off == 10


def test_discount_as_dict_has_voucherify_shape() -> None:
    assert Discount.amount(500).as_dict() == {"type": "AMOUNT", "amount_off": 500}
    assert Discount.percent(12.5, amount_limit=2000).as_dict() == {
        "type": "PERCENT",
        "percent_off": 12.5,
        "amount_limit": 2000,
    }
    assert Discount.fixed(1000).as_dict() == {"type": "FIXED", "fixed_amount": 1000}
    assert Discount.unit(1, "sku").as_dict() == {"type": "UNIT", "unit_off": 1, "unit_type": "sku"}


@pytest.mark.parametrize("percent", [0, -1, 100.01, 101, 12.345, "abc", True])
def test_percent_outside_zero_to_hundred_or_with_three_decimals_is_rejected(
    engine: Engine, percent: object
) -> None:
    with pytest.raises(InvalidArgument) as info:
        engine.create_voucher("P", discount={"type": "PERCENT", "percent_off": percent})
    assert "percent_off" in info.value.message
    with pytest.raises(LookupError):
        engine.get_voucher("P")


def test_discount_voucher_without_a_discount_is_rejected(engine: Engine) -> None:
    with pytest.raises(InvalidArgument):
        engine.create_voucher("X", type="DISCOUNT_VOUCHER")


def test_discount_on_a_gift_card_is_rejected(engine: Engine) -> None:
    with pytest.raises(InvalidArgument):
        engine.create_voucher("X", type="GIFT_VOUCHER", discount=Discount.amount(1))


def test_gift_on_a_loyalty_card_is_rejected(engine: Engine) -> None:
    with pytest.raises(InvalidArgument):
        engine.create_voucher("X", type="LOYALTY_CARD", gift={"amount": 1})


# --- type inference ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"gift": {"amount": 10}}, VoucherType.GIFT_VOUCHER),
        ({"loyalty_card": {"points": 10}}, VoucherType.LOYALTY_CARD),
        ({"discount": {"type": "AMOUNT", "amount_off": 10}}, VoucherType.DISCOUNT_VOUCHER),
    ],
)
def test_type_is_inferred_from_the_single_payload_given(
    engine: Engine, kwargs: dict[str, object], expected: VoucherType
) -> None:
    assert engine.create_voucher("INF", **kwargs).type is expected  # type: ignore[arg-type]


def test_type_cannot_be_inferred_from_nothing(engine: Engine) -> None:
    with pytest.raises(InvalidArgument):
        engine.create_voucher("X")


def test_type_cannot_be_inferred_from_two_payloads(engine: Engine) -> None:
    with pytest.raises(InvalidArgument):
        engine.create_voucher("X", gift={"amount": 1}, loyalty_card={"points": 1})


def test_type_is_accepted_as_enum_member(engine: Engine) -> None:
    v = engine.create_voucher("E", type=VoucherType.GIFT_VOUCHER, gift={"amount": 1})
    assert v.type is VoucherType.GIFT_VOUCHER


def test_gift_card_given_only_its_type_opens_with_zero_balance(engine: Engine) -> None:
    v = engine.create_voucher("G0", type="GIFT_VOUCHER")
    assert v.gift is not None
    assert v.gift.balance == 0


# --- ids ----------------------------------------------------------------------------------------


def test_voucher_id_is_v_prefix_and_32_alphanumerics(engine: Engine) -> None:
    for i in range(20):
        v = engine.create_voucher(f"C{i}", gift={"amount": 1})
        assert VOUCHER_ID.fullmatch(v.id), v.id


def test_voucher_ids_are_unique(engine: Engine) -> None:
    ids = {engine.create_voucher(f"C{i}", gift={"amount": 1}).id for i in range(50)}
    assert len(ids) == 50


# --- codes --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    ["A", "x" * 100, "a b", "Ünïcödé-€", "with-dash_and.dots", "v_lookalike"],
    ids=["one-char", "hundred-chars", "inner-space", "unicode", "punctuation", "id-like"],
)
def test_valid_codes_are_kept_exactly(engine: Engine, code: str) -> None:
    v = engine.create_voucher(code, gift={"amount": 1})
    assert v.code == code
    assert engine.get_voucher(code).id == v.id


@pytest.mark.parametrize(
    "code",
    ["", "x" * 101, "a\x00b", "tab\there", "line\nfeed", "bell\x07", "del\x7f", " lead", "trail "],
    ids=["empty", "101-chars", "nul", "tab", "newline", "bell", "del", "leading", "trailing"],
)
def test_invalid_codes_are_rejected_and_nothing_is_created(engine: Engine, code: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        engine.create_voucher(code, gift={"amount": 1})
    assert info.value.key == "invalid_payload"
    assert "code" in info.value.message
    assert list(engine.store.voucher_codes()) == []


def test_codes_are_case_sensitive(engine: Engine) -> None:
    upper = engine.create_voucher("SUMMER", gift={"amount": 1})
    lower = engine.create_voucher("summer", gift={"amount": 2})
    assert upper.id != lower.id
    assert engine.get_voucher("summer").gift.balance == 2  # type: ignore[union-attr]
    with pytest.raises(LookupError):
        engine.get_voucher("Summer")


def test_duplicate_code_of_a_live_voucher_is_rejected(engine: Engine) -> None:
    first = engine.create_voucher("DUP", gift={"amount": 1})
    with pytest.raises(DuplicateFound) as info:
        engine.create_voucher("DUP", loyalty_card={"points": 5})
    assert info.value.key == "duplicate_found"
    assert info.value.code == 409
    assert engine.get_voucher("DUP") == first


def test_duplicate_code_of_a_soft_deleted_voucher_is_rejected(engine: Engine) -> None:
    engine.create_voucher("GONE", gift={"amount": 1})
    engine.delete_voucher("GONE")
    with pytest.raises(DuplicateFound):
        engine.create_voucher("GONE", gift={"amount": 1})


def test_generated_code_is_eight_unambiguous_alphanumerics_by_default(engine: Engine) -> None:
    v = engine.create_voucher(None, gift={"amount": 1})
    assert re.fullmatch(r"[0-9A-Z]{8}", v.code), v.code
    assert not set(v.code) & {"I", "O"}
    assert engine.get_voucher(v.code).id == v.id


def test_generated_code_length_follows_code_length(engine: Engine) -> None:
    v = engine.create_voucher(gift={"amount": 1}, code_length=12)
    assert re.fullmatch(r"[0-9A-Z]{12}", v.code), v.code


def test_generated_codes_differ(engine: Engine) -> None:
    codes = {engine.create_voucher(gift={"amount": 1}).code for _ in range(30)}
    assert len(codes) == 30


def test_generated_code_never_breaks_the_hundred_character_rule(engine: Engine) -> None:
    """README "Vouchers": a code is 1–100 chars, also a generated one."""
    try:
        v = engine.create_voucher(gift={"amount": 1}, code_length=101)
    except InvalidArgument:
        return
    assert 1 <= len(v.code) <= 100, f"generated code has {len(v.code)} characters"


@pytest.mark.parametrize("length", [0, -1, 1.5, True])
def test_code_length_must_be_a_positive_int(engine: Engine, length: object) -> None:
    with pytest.raises(InvalidArgument) as info:
        engine.create_voucher(gift={"amount": 1}, code_length=length)  # type: ignore[arg-type]
    assert "code_length" in info.value.message


# --- metadata -----------------------------------------------------------------------------------


def test_metadata_is_kept(engine: Engine) -> None:
    meta = {"a": 1, "b": [1, 2, {"c": None}], "d": "x", "e": True, "f": 1.5}
    assert engine.create_voucher("M", gift={"amount": 1}, metadata=meta).metadata == meta


def test_metadata_is_copied_so_later_changes_by_the_caller_do_not_leak_in(
    engine: Engine,
) -> None:
    meta: dict[str, object] = {"tags": ["a"], "n": 1}
    engine.create_voucher("M", gift={"amount": 1}, metadata=meta)
    meta["n"] = 2
    meta["tags"].append("b")  # type: ignore[attr-defined]
    assert engine.get_voucher("M").metadata == {"tags": ["a"], "n": 1}


def test_metadata_of_a_returned_voucher_cannot_change_the_stored_one(engine: Engine) -> None:
    """Snapshots are frozen (snapshots.py): mutating a returned object must not reach the store."""
    engine.create_voucher("M", gift={"amount": 1}, metadata={"tags": ["a"], "n": 1})
    returned = engine.get_voucher("M")
    assert returned.metadata is not None
    returned.metadata["n"] = 99
    returned.metadata["tags"].append("b")
    assert engine.get_voucher("M").metadata == {"tags": ["a"], "n": 1}


@pytest.mark.parametrize(
    "meta",
    [{"nested": {2: "x"}}, {"nested": {1: "a", "1": "b"}}, {"nested": {None: 1, True: 2}}],
    ids=["int-key", "colliding-keys", "none-and-bool-keys"],
)
def test_nested_non_str_metadata_keys_are_rejected_not_silently_rewritten(
    engine: Engine, meta: dict[str, object]
) -> None:
    """README "Vouchers": metadata is a JSON dict with str keys; it is never silently altered."""
    try:
        v = engine.create_voucher("M", gift={"amount": 1}, metadata=meta)
    except InvalidArgument as exc:
        assert "metadata" in exc.message
        return
    assert v.metadata == meta, f"metadata silently rewritten to {v.metadata!r}"


def test_metadata_tuple_is_normalised_to_json_list(engine: Engine) -> None:
    v = engine.create_voucher("M", gift={"amount": 1}, metadata={"t": (1, 2)})
    assert v.metadata == {"t": [1, 2]}


@pytest.mark.parametrize(
    "meta",
    [
        {1: "int key"},
        {"obj": object()},
        {"nan": float("nan")},
        {"inf": float("inf")},
        {"set": {1, 2}},
        {"dt": datetime(2026, 1, 1, tzinfo=UTC)},
        "not a mapping",
        [("a", 1)],
    ],
    ids=["int-key", "object", "nan", "inf", "set", "datetime", "str", "list"],
)
def test_non_json_metadata_is_rejected(engine: Engine, meta: object) -> None:
    with pytest.raises(InvalidArgument) as info:
        engine.create_voucher("M", gift={"amount": 1}, metadata=meta)  # type: ignore[arg-type]
    assert info.value.key == "invalid_payload"
    assert "metadata" in info.value.message
    with pytest.raises(LookupError):
        engine.get_voucher("M")


# --- quantity -----------------------------------------------------------------------------------


def test_quantity_is_the_redemption_limit(engine: Engine) -> None:
    assert engine.create_voucher("Q", gift={"amount": 1}, quantity=3).quantity == 3


def test_redemption_quantity_dict_is_the_same_as_quantity(engine: Engine) -> None:
    v = engine.create_voucher("Q", gift={"amount": 1}, redemption={"quantity": 4})
    assert v.quantity == 4


def test_redemption_dict_without_quantity_means_unlimited(engine: Engine) -> None:
    assert engine.create_voucher("Q", gift={"amount": 1}, redemption={}).quantity is None


def test_quantity_and_redemption_together_are_rejected(engine: Engine) -> None:
    with pytest.raises(InvalidArgument):
        engine.create_voucher("Q", gift={"amount": 1}, quantity=1, redemption={"quantity": 1})


@pytest.mark.parametrize("quantity", [0, -1, 1.0, "2", True, 2**63])
def test_quantity_must_be_a_positive_int64(engine: Engine, quantity: object) -> None:
    with pytest.raises(InvalidArgument) as info:
        engine.create_voucher("Q", gift={"amount": 1}, quantity=quantity)  # type: ignore[arg-type]
    assert info.value.key == "invalid_amount"
    assert "quantity" in info.value.message


def test_largest_int64_quantity_is_accepted(engine: Engine) -> None:
    assert engine.create_voucher("Q", gift={"amount": 1}, quantity=2**63 - 1).quantity == 2**63 - 1


# --- dates ---------------------------------------------------------------------------------------


def test_dates_in_other_zones_are_stored_as_utc_instants(engine: Engine) -> None:
    plus2 = timezone(timedelta(hours=2))
    v = engine.create_voucher(
        "Z", gift={"amount": 1}, start_date=datetime(2026, 3, 2, 2, 0, tzinfo=plus2)
    )
    assert v.start_date == datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
    assert v.start_date is not None
    assert v.start_date.utcoffset() == timedelta(0)


def test_start_date_after_expiration_date_is_rejected(engine: Engine) -> None:
    with pytest.raises(InvalidArgument):
        engine.create_voucher(
            "X",
            gift={"amount": 1},
            start_date=datetime(2026, 5, 1, tzinfo=UTC),
            expiration_date=datetime(2026, 4, 1, tzinfo=UTC),
        )


def test_start_date_equal_to_expiration_date_is_accepted(engine: Engine) -> None:
    at = datetime(2026, 5, 1, tzinfo=UTC)
    v = engine.create_voucher("X", gift={"amount": 1}, start_date=at, expiration_date=at)
    assert v.start_date == v.expiration_date == at
