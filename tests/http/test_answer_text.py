"""The redemption answer written straight as JSON text (``shapes.stacked_redemption_json``,
the hot path of ``POST /v1/redemptions``) is byte for byte the encoding of the dict shape
(``json.dumps(shapes.stacked_redemption(...))``), whatever the fields hold."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from vouchercore import Engine
from vouchercore.domain.snapshots import (
    Customer,
    Order,
    OrderSummary,
    ParentRedemption,
    Redemption,
    StackedRedemption,
)
from vouchercore.domain.values import RedemptionStatus, VoucherType
from vouchercore.http import shapes

_text = st.text(max_size=12)  # any Unicode: quotes, backslashes, controls, astral characters
_maybe_text = st.none() | _text
_maybe_int = st.none() | st.integers(min_value=-(10**20), max_value=10**20)
_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_metadata = st.none() | st.dictionaries(_text, _json_values, max_size=3)
_instants = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)
_ids = st.text(alphabet='abcXYZ019_-é"\\', min_size=1, max_size=8)


@st.composite
def _orders(draw: st.DrawFn) -> Order | None:
    if draw(st.booleans()):
        return None
    return Order(
        id=draw(_maybe_text), source_id=draw(_maybe_text), amount=draw(_maybe_int),
        metadata=draw(_metadata),
    )  # fmt: skip


@st.composite
def _customers(draw: st.DrawFn) -> Customer | None:
    if draw(st.booleans()):
        return None
    return Customer(id=draw(_maybe_text), source_id=draw(_maybe_text), metadata=draw(_metadata))


@st.composite
def _redemptions(draw: st.DrawFn) -> Redemption:
    return Redemption(
        id=draw(_ids),
        voucher_id=draw(_ids),
        voucher_code=draw(_text),
        voucher_type=draw(st.sampled_from(VoucherType)),
        status=draw(st.sampled_from(RedemptionStatus)),
        amount=draw(st.integers(min_value=-(10**18), max_value=10**18)),
        order_amount=draw(_maybe_int),
        order_id=draw(_maybe_text),
        session_key=draw(_maybe_text),
        metadata=draw(_metadata),
        date=draw(_instants),
        failure_code=draw(_maybe_text),
        failure_message=draw(_maybe_text),
        rollback_id=draw(st.none() | _ids),
        parent_id=draw(st.none() | _ids),
        order_source_id=draw(_maybe_text),
        order_metadata=draw(_metadata),
        customer_id=draw(_maybe_text),
        customer_source_id=draw(_maybe_text),
        customer_metadata=draw(_metadata),
    )


@st.composite
def _stacks(draw: st.DrawFn) -> StackedRedemption:
    children = tuple(draw(st.lists(_redemptions(), max_size=3)))
    parent = ParentRedemption(
        id=draw(_ids),
        status=draw(st.sampled_from(RedemptionStatus)),
        amount=draw(st.integers(min_value=0, max_value=10**18)),
        date=draw(_instants),
        redemptions=[child.id for child in children],
        voucher_ids=[child.voucher_id for child in children],
        order=draw(_orders()),
        customer=draw(_customers()),
        metadata=draw(_metadata),
        session_key=draw(_maybe_text),
        failure_code=draw(_maybe_text),
        failure_message=draw(_maybe_text),
        rollback_id=draw(st.none() | _ids),
    )
    order = OrderSummary(
        id=draw(_maybe_text),
        source_id=draw(_maybe_text),
        amount=draw(_maybe_int),
        metadata=draw(_metadata),
        discount_amount=draw(st.integers(min_value=0, max_value=10**18)),
        total_discount_amount=draw(st.integers(min_value=0, max_value=10**18)),
        total_amount=draw(_maybe_int),
    )
    return StackedRedemption(parent_redemption=parent, redemptions=children, order=order)


def _encoded(stacked: StackedRedemption) -> bytes:
    return json.dumps(shapes.stacked_redemption(stacked)).encode()


@given(_stacks())
def test_the_redemption_text_is_the_encoding_of_the_redemption_shape(
    stacked: StackedRedemption,
) -> None:
    assert shapes.stacked_redemption_json(stacked) == _encoded(stacked)


def test_the_redemption_text_of_real_stacks_is_the_encoding_of_their_shape(
    engine: Engine,
) -> None:
    engine.create_voucher("D", discount={"type": "PERCENT", "percent_off": 10})
    engine.create_voucher("G", type="GIFT_VOUCHER", gift={"amount": 10_000})
    engine.create_voucher("L", type="LOYALTY_CARD", loyalty_card={"points": 500})
    stacks: list[tuple[list[dict[str, Any]], dict[str, Any]]] = [
        ([{"object": "voucher", "id": "D"}], {"order": {"amount": 1_000}}),
        (
            [
                {"object": "voucher", "id": "D"},
                {"object": "voucher", "id": "G", "gift": {"credits": 300}},
                {"object": "voucher", "id": "L", "reward": {"points": 20}},
            ],
            {
                "order": {"id": "o-1", "source_id": "ö", "amount": 5_000, "metadata": {"k": [1]}},
                "customer": {"source_id": 'c-"1"', "metadata": {"vip": True}},
                "metadata": {"till": 7, "note": "\u2028"},
            },
        ),
    ]
    for redeemables, context in stacks:
        validated = engine.validate_stacked_discounts(
            redeemables, session={"type": "LOCK"}, **context
        )
        stacked = engine.redeem_stacked_discounts(
            redeemables, session=validated.session_key, idempotency_key="k" + str(len(context)),
            **context,
        )  # fmt: skip
        assert shapes.stacked_redemption_json(stacked) == _encoded(stacked)


def test_an_instant_is_shown_to_the_millisecond_truncated_in_utc() -> None:
    date = datetime(2026, 3, 1, 12, 0, 0, 999_999, tzinfo=UTC)
    redemption = Redemption(
        id="r_1", voucher_id="v_1", voucher_code="C", voucher_type=VoucherType.DISCOUNT_VOUCHER,
        status=RedemptionStatus.SUCCEEDED, amount=1, order_amount=None, order_id=None,
        session_key=None, metadata=None, date=date + timedelta(0),
    )  # fmt: skip
    assert shapes.redemption(redemption)["date"] == "2026-03-01T12:00:00.999Z"
    assert shapes.instant(date) == "2026-03-01T12:00:00.999Z"
