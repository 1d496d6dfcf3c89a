"""The results kept under idempotency keys: one codec, by field name, that still reads the texts
stored before it (a redemption as a positional list of its row; the others as objects).

The ``STORED_*`` strings below were written by the encoders of the release before the codec
(``encode_redemption`` & co., since replaced by ``encode``/``decode``): they are what a store
upgraded in place holds, and must replay to equal results for as long as their keys live.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vouchercore.domain.idempotency import decode, encode
from vouchercore.domain.instants import MAX_US, from_us, to_us
from vouchercore.domain.snapshots import (
    BalanceUpdate,
    Customer,
    Order,
    OrderSummary,
    ParentRedemption,
    ParentRollback,
    PointsCancellation,
    PointsTransfer,
    Redemption,
    RedemptionRollback,
    StackedRedemption,
    StackedRollback,
    Transaction,
)
from vouchercore.domain.values import RedemptionStatus, TransactionType, VoucherType

WHEN = datetime(2024, 3, 5, 14, 7, 9, 123456, tzinfo=UTC)
MIN_US = to_us(datetime(1, 1, 1, tzinfo=UTC))

# --- texts stored by the release before the codec ---------------------------------------------

STORED_REDEMPTION = '["r_0123456789abcdefghijklmnopqrstuv","v_gift1","GIFT-2024-ÄÖ","GIFT_VOUCHER","SUCCEEDED",1250,4999,"ord_42","ssn_abc",{"channel":"pos","lane":3,"tags":["a","b"],"nested":{"x":null,"ok":true,"f":1.5}},1709647629123456,null,null,"vtx_00000000000000002a",null]'  # noqa: E501
STORED_FAILED_REDEMPTION = '["r_failed000000000000000000000001","v_disc1","SAVE10","DISCOUNT_VOUCHER","FAILED",0,null,null,null,null,1709647629123456,"quantity_exceeded","voucher\'s quantity of redemptions is exceeded",null,null]'  # noqa: E501
STORED_ROLLED_BACK_REDEMPTION = '["r_rolled00000000000000000000001","v_loy1","LOY-1","LOYALTY_CARD","ROLLED_BACK",300,1000,null,null,{},0,null,null,"vtx_000000000000000003","rr_x1"]'  # noqa: E501
STORED_ROLLBACK = '{"id":"rr_0123","redemption_id":"r_0123456789abcdefghijklmnopqrstuv","voucher_id":"v_gift1","voucher_code":"GIFT-2024-ÄÖ","amount":-1250,"reason":"customer changed mind","date":1709647634123456,"transaction_id":"vtx_00000000000000002b"}'  # noqa: E501
STORED_ROLLBACK_NO_TX = '{"id":"rr_0124","redemption_id":"r_x","voucher_id":"v_d","voucher_code":"D","amount":0,"reason":null,"date":1709647629123456,"transaction_id":null}'  # noqa: E501
STORED_BALANCE_UPDATE = '{"amount":-200,"total":5000,"balance":3550,"type":"gift_voucher","voucher_id":"v_gift1","transaction_id":"vtx_00000000000000002c","operation_type":"MANUAL","object":"balance"}'  # noqa: E501
STORED_ACCRUAL = '{"id":"vtx_00000000000000002d","type":"POINTS_ACCRUAL","amount":120,"balance":620,"source_id":"src-9","source":"API","reason":"purchase","related_transaction_id":null,"details":{"order":{"id":"o_1"},"redemption":{"id":"r_2"}},"voucher_id":"v_loy1","campaign_id":"camp_1","created_at":1709647629123456}'  # noqa: E501
STORED_POINTS_CANCELLATION = '{"accrued":150,"cancelled":100,"not_cancelled":50,"transactions":[{"id":"vtx_00000000000000002e","type":"POINTS_CANCELLATION","amount":-70,"balance":550,"source_id":null,"source":null,"reason":null,"related_transaction_id":"vtx_00000000000000002d","details":null,"voucher_id":"v_loy1","campaign_id":null,"created_at":1709647629123457},{"id":"vtx_00000000000000002f","type":"POINTS_CANCELLATION","amount":-30,"balance":520,"source_id":null,"source":null,"reason":"fraud","related_transaction_id":"vtx_000000000000000010","details":{"accrual":{"id":"vtx_000000000000000010"}},"voucher_id":"v_loy1","campaign_id":null,"created_at":1709647629123458}]}'  # noqa: E501
STORED_EMPTY_CANCELLATION = '{"accrued":0,"cancelled":0,"not_cancelled":0,"transactions":[]}'
STORED_POINTS_TRANSFER = '{"points":40,"source":{"id":"vtx_000000000000000030","type":"POINTS_TRANSFER_OUT","amount":-40,"balance":480,"source_id":"t-1","source":null,"reason":null,"related_transaction_id":"vtx_000000000000000031","details":null,"voucher_id":"v_loy1","campaign_id":null,"created_at":1709647629123456},"destination":{"id":"vtx_000000000000000031","type":"POINTS_TRANSFER_IN","amount":40,"balance":40,"source_id":"t-1","source":null,"reason":null,"related_transaction_id":"vtx_000000000000000030","details":null,"voucher_id":"v_loy2","campaign_id":"camp_2","created_at":1709647629123456}}'  # noqa: E501

# --- what they hold, built explicitly -----------------------------------------------------------

REDEMPTION = Redemption(
    id="r_0123456789abcdefghijklmnopqrstuv",
    voucher_id="v_gift1",
    voucher_code="GIFT-2024-ÄÖ",
    voucher_type=VoucherType.GIFT_VOUCHER,
    status=RedemptionStatus.SUCCEEDED,
    amount=1250,
    order_amount=4999,
    order_id="ord_42",
    session_key="ssn_abc",
    metadata={
        "channel": "pos",
        "lane": 3,
        "tags": ["a", "b"],
        "nested": {"x": None, "ok": True, "f": 1.5},
    },
    date=WHEN,
    transaction_id="vtx_00000000000000002a",
)
FAILED_REDEMPTION = Redemption(
    id="r_failed000000000000000000000001",
    voucher_id="v_disc1",
    voucher_code="SAVE10",
    voucher_type=VoucherType.DISCOUNT_VOUCHER,
    status=RedemptionStatus.FAILED,
    amount=0,
    order_amount=None,
    order_id=None,
    session_key=None,
    metadata=None,
    date=WHEN,
    failure_code="quantity_exceeded",
    failure_message="voucher's quantity of redemptions is exceeded",
)
ROLLED_BACK_REDEMPTION = Redemption(
    id="r_rolled00000000000000000000001",
    voucher_id="v_loy1",
    voucher_code="LOY-1",
    voucher_type=VoucherType.LOYALTY_CARD,
    status=RedemptionStatus.ROLLED_BACK,
    amount=300,
    order_amount=1000,
    order_id=None,
    session_key=None,
    metadata={},
    date=datetime(1970, 1, 1, tzinfo=UTC),
    transaction_id="vtx_000000000000000003",
    rollback_id="rr_x1",
)
ROLLBACK = RedemptionRollback(
    id="rr_0123",
    redemption_id="r_0123456789abcdefghijklmnopqrstuv",
    voucher_id="v_gift1",
    voucher_code="GIFT-2024-ÄÖ",
    amount=-1250,
    reason="customer changed mind",
    date=WHEN + timedelta(seconds=5),
    transaction_id="vtx_00000000000000002b",
)
ROLLBACK_NO_TX = RedemptionRollback(
    id="rr_0124",
    redemption_id="r_x",
    voucher_id="v_d",
    voucher_code="D",
    amount=0,
    reason=None,
    date=WHEN,
)
BALANCE_UPDATE = BalanceUpdate(
    amount=-200,
    total=5000,
    balance=3550,
    type="gift_voucher",
    voucher_id="v_gift1",
    transaction_id="vtx_00000000000000002c",
)
ACCRUAL = Transaction(
    id="vtx_00000000000000002d",
    type=TransactionType.POINTS_ACCRUAL,
    amount=120,
    balance=620,
    source_id="src-9",
    source="API",
    reason="purchase",
    related_transaction_id=None,
    details={"order": {"id": "o_1"}, "redemption": {"id": "r_2"}},
    voucher_id="v_loy1",
    campaign_id="camp_1",
    created_at=WHEN,
)


def _cancellation(tx_id: str, amount: int, balance: int, **fields: Any) -> Transaction:
    values: dict[str, Any] = {
        "source_id": None,
        "source": None,
        "reason": None,
        "details": None,
        "voucher_id": "v_loy1",
        "campaign_id": None,
    }
    values.update(fields)
    return Transaction(
        id=tx_id, type=TransactionType.POINTS_CANCELLATION, amount=amount, balance=balance, **values
    )


POINTS_CANCELLATION = PointsCancellation(
    accrued=150,
    cancelled=100,
    not_cancelled=50,
    transactions=(
        _cancellation(
            "vtx_00000000000000002e",
            -70,
            550,
            related_transaction_id="vtx_00000000000000002d",
            created_at=WHEN + timedelta(microseconds=1),
        ),
        _cancellation(
            "vtx_00000000000000002f",
            -30,
            520,
            reason="fraud",
            related_transaction_id="vtx_000000000000000010",
            details={"accrual": {"id": "vtx_000000000000000010"}},
            created_at=WHEN + timedelta(microseconds=2),
        ),
    ),
)
EMPTY_CANCELLATION = PointsCancellation(accrued=0, cancelled=0, not_cancelled=0, transactions=())


def _transfer_leg(
    tx_id: str, kind: TransactionType, amount: int, balance: int, **fields: Any
) -> Transaction:
    return Transaction(
        id=tx_id,
        type=kind,
        amount=amount,
        balance=balance,
        source_id="t-1",
        source=None,
        reason=None,
        details=None,
        created_at=WHEN,
        **fields,
    )


POINTS_TRANSFER = PointsTransfer(
    points=40,
    source=_transfer_leg(
        "vtx_000000000000000030",
        TransactionType.POINTS_TRANSFER_OUT,
        -40,
        480,
        related_transaction_id="vtx_000000000000000031",
        voucher_id="v_loy1",
        campaign_id=None,
    ),
    destination=_transfer_leg(
        "vtx_000000000000000031",
        TransactionType.POINTS_TRANSFER_IN,
        40,
        40,
        related_transaction_id="vtx_000000000000000030",
        voucher_id="v_loy2",
        campaign_id="camp_2",
    ),
)

STORED: list[tuple[str, Any]] = [
    (STORED_REDEMPTION, REDEMPTION),
    (STORED_FAILED_REDEMPTION, FAILED_REDEMPTION),
    (STORED_ROLLED_BACK_REDEMPTION, ROLLED_BACK_REDEMPTION),
    (STORED_ROLLBACK, ROLLBACK),
    (STORED_ROLLBACK_NO_TX, ROLLBACK_NO_TX),
    (STORED_BALANCE_UPDATE, BALANCE_UPDATE),
    (STORED_ACCRUAL, ACCRUAL),
    (STORED_POINTS_CANCELLATION, POINTS_CANCELLATION),
    (STORED_EMPTY_CANCELLATION, EMPTY_CANCELLATION),
    (STORED_POINTS_TRANSFER, POINTS_TRANSFER),
]
IDS = [
    "redemption",
    "failed-redemption",
    "rolled-back-redemption",
    "rollback",
    "rollback-without-transaction",
    "balance-update",
    "accrual",
    "points-cancellation",
    "empty-cancellation",
    "points-transfer",
]


@pytest.mark.parametrize(("text", "expected"), STORED, ids=IDS)
def test_texts_stored_before_the_codec_still_replay(text: str, expected: Any) -> None:
    decoded = decode(type(expected), text)
    assert decoded == expected
    assert type(decoded) is type(expected)


@pytest.mark.parametrize(("text", "expected"), STORED, ids=IDS)
def test_every_result_is_written_as_an_object_keyed_by_field_name(text: str, expected: Any) -> None:
    written = encode(expected)
    fields = json.loads(written)
    assert isinstance(fields, dict)
    assert decode(type(expected), written) == expected
    if isinstance(expected, Redemption):
        assert list(fields) == list(Redemption.FIELDS)
        assert fields["date"] == json.loads(text)[10]  # instants as integer microseconds
    else:  # the other results were already stored by name: the text is unchanged
        assert written == text


def test_a_redemption_reads_its_fields_by_name_in_any_order() -> None:
    fields = json.loads(encode(REDEMPTION))
    shuffled = json.dumps(dict(reversed(list(fields.items()))))
    assert decode(Redemption, shuffled) == REDEMPTION


def test_decoded_metadata_is_the_callers_own() -> None:
    first = decode(Redemption, STORED_REDEMPTION)
    assert first.metadata is not None
    first.metadata["lane"] = 99
    assert decode(Redemption, STORED_REDEMPTION) == REDEMPTION


def test_an_unknown_result_type_is_refused() -> None:
    with pytest.raises(TypeError):
        encode(object())


# --- round trips of any result -----------------------------------------------------------------

instants = st.integers(MIN_US, MAX_US).map(from_us)
texts = st.one_of(st.none(), st.text(max_size=8))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
redemptions = st.builds(
    Redemption,
    id=st.text(min_size=1, max_size=8),
    voucher_id=st.text(max_size=8),
    voucher_code=st.text(max_size=8),
    voucher_type=st.sampled_from(VoucherType),
    status=st.sampled_from(RedemptionStatus),
    amount=st.integers(0, 2**63 - 1),
    order_amount=st.none() | st.integers(0, 2**63 - 1),
    order_id=texts,
    session_key=texts,
    metadata=st.none() | st.dictionaries(st.text(max_size=5), json_values, max_size=4),
    date=instants,
    failure_code=texts,
    failure_message=texts,
    transaction_id=texts,
    rollback_id=texts,
    parent_id=texts,
    order_source_id=texts,
    order_metadata=st.none() | st.dictionaries(st.text(max_size=5), json_values, max_size=2),
    customer_id=texts,
    customer_source_id=texts,
    customer_metadata=st.none() | st.dictionaries(st.text(max_size=5), json_values, max_size=2),
)
ids = st.lists(st.from_regex(r"[rv]_[A-Za-z0-9]{1,6}", fullmatch=True), max_size=3).map(tuple)
parents = st.builds(
    ParentRedemption,
    id=st.text(min_size=1, max_size=8),
    status=st.sampled_from(RedemptionStatus),
    amount=st.integers(0, 2**63 - 1),
    date=instants,
    redemptions=ids,
    voucher_ids=ids,
    order=st.none()
    | st.builds(Order, id=texts, source_id=texts, amount=st.none() | st.integers(1, 2**63 - 1)),
    customer=st.none() | st.builds(Customer, id=texts, source_id=texts),
    metadata=st.none() | st.dictionaries(st.text(max_size=5), json_values, max_size=3),
    session_key=texts,
    failure_code=texts,
    failure_message=texts,
    failed_redeemable=texts,
    rollback_id=texts,
)
summaries = st.builds(
    OrderSummary,
    id=texts,
    source_id=texts,
    amount=st.none() | st.integers(0, 2**63 - 1),
    discount_amount=st.integers(0, 2**62),
    gift_amount=st.integers(0, 2**62),
    total_discount_amount=st.integers(0, 2**63 - 1),
    total_amount=st.none() | st.integers(-(2**63), 2**63 - 1),
)
details = st.none() | st.dictionaries(
    st.text(max_size=6), st.fixed_dictionaries({"id": st.text(max_size=6)}), max_size=3
)
transactions = st.builds(
    Transaction,
    id=st.text(max_size=8),
    type=st.sampled_from(TransactionType),
    amount=st.integers(-(2**63), 2**63 - 1),
    balance=st.integers(0, 2**63 - 1),
    source_id=texts,
    source=texts,
    reason=texts,
    related_transaction_id=texts,
    details=details,
    voucher_id=st.text(max_size=8),
    campaign_id=texts,
    created_at=instants,
)
results = st.one_of(
    redemptions,
    st.builds(
        RedemptionRollback,
        id=st.text(max_size=8),
        redemption_id=st.text(max_size=8),
        voucher_id=st.text(max_size=8),
        voucher_code=st.text(max_size=8),
        amount=st.integers(-(2**63), 0),
        reason=texts,
        date=instants,
        transaction_id=texts,
    ),
    st.builds(
        BalanceUpdate,
        amount=st.integers(-(2**63), 2**63 - 1),
        total=st.integers(0, 2**63 - 1),
        balance=st.integers(0, 2**63 - 1),
        type=st.sampled_from(["gift_voucher", "loyalty_card"]),
        voucher_id=st.text(max_size=8),
        transaction_id=st.text(max_size=8),
    ),
    transactions,
    st.builds(
        PointsCancellation,
        accrued=st.integers(0, 2**63 - 1),
        cancelled=st.integers(0, 2**63 - 1),
        not_cancelled=st.integers(0, 2**63 - 1),
        transactions=st.lists(transactions, max_size=3).map(tuple),
    ),
    st.builds(
        PointsTransfer,
        points=st.integers(1, 2**63 - 1),
        source=transactions,
        destination=transactions,
    ),
    parents,
    st.builds(
        StackedRedemption,
        parent_redemption=parents,
        redemptions=st.lists(redemptions, max_size=3).map(tuple),
        order=summaries,
    ),
    st.builds(
        StackedRollback,
        parent_rollback=st.builds(
            ParentRollback,
            id=st.text(max_size=8),
            redemption_id=st.text(max_size=8),
            amount=st.integers(-(2**63), 0),
            reason=texts,
            date=instants,
        ),
        rollbacks=st.lists(
            st.builds(
                RedemptionRollback,
                id=st.text(max_size=8),
                redemption_id=st.text(max_size=8),
                voucher_id=st.text(max_size=8),
                voucher_code=st.text(max_size=8),
                amount=st.integers(-(2**63), 0),
                reason=texts,
                date=instants,
                transaction_id=texts,
            ),
            max_size=3,
        ).map(tuple),
    ),
)


@given(results)
def test_every_result_round_trips_exactly(result: Any) -> None:
    again = decode(type(result), encode(result))
    assert again == result
    assert type(again) is type(result)


@given(redemptions)
def test_the_positional_form_of_a_redemption_still_reads(redemption: Redemption) -> None:
    old = json.dumps(list(redemption.to_row()), separators=(",", ":"), ensure_ascii=False)
    assert decode(Redemption, old) == redemption


#: A redemption as the codec wrote it by name before redemptions kept their parent, order and
#: customer details (schema version 2): the fields added since read as None.
STORED_REDEMPTION_BY_NAME_V2 = encode(REDEMPTION).replace(
    ',"parent_id":null,"order_source_id":null,"order_metadata":null,"customer_id":null,'
    '"customer_source_id":null,"customer_metadata":null',
    "",
)


def test_a_redemption_stored_by_name_before_its_order_and_customer_fields_still_replays() -> None:
    assert "parent_id" not in STORED_REDEMPTION_BY_NAME_V2
    again = decode(Redemption, STORED_REDEMPTION_BY_NAME_V2)
    assert again == REDEMPTION
    assert (again.parent_id, again.order_source_id, again.customer) == (None, None, None)
    assert again.order == Order(id="ord_42", amount=4999)


def test_a_redemption_missing_a_field_every_release_wrote_is_refused() -> None:
    fields = json.loads(encode(REDEMPTION))
    del fields["voucher_id"]
    with pytest.raises(KeyError):
        decode(Redemption, json.dumps(fields))
    with pytest.raises(ValueError, match="Redemption row"):
        decode(Redemption, json.dumps(list(REDEMPTION.to_row())[:14]))
