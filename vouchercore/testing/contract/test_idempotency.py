"""Idempotent retries: ``idempotency_key=`` on ``redeem_voucher``, ``rollback_redemption``,
``update_voucher_balance``, ``redeem_stacked_discounts`` and ``rollback_stacked_redemptions``
(README "Idempotent retries", "Redemption", "Rollback", "Balance",
"Errors"; a failed call changes nothing: README "Concurrency and the audit").

- A key is 1–200 printable characters without leading/trailing space (like a session key);
  anything else is ``InvalidArgument`` naming ``idempotency_key`` (see ``test_bad_input.py``).
- The same key with the same request (operation and every argument) within the retention
  returns a result equal to the first one and changes nothing — no new redemption (FAILED
  ones and stacked parents included), transaction, session change or counter move, even when
  the request would now fail or the redemption has been rolled back since.
- The same key with a different request (argument, voucher or operation) is
  ``IdempotencyKeyReused`` (409) and changes nothing.
- A call that fails stores nothing for its key: the same key may be retried (and succeed).
- A key is kept while ``now < created_at + retention`` (the engine's clock, from the first
  call; replays do not extend it) and forgotten from ``created_at + retention`` on: the key
  then acts anew. ``expire_idempotency_keys`` purges the forgotten ones and says how many.
- Keys are store-wide: a second engine on the same store replays them too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from vouchercore import (
    AlreadyRolledBack,
    Discount,
    Engine,
    FakeClock,
    GiftAmountExceeded,
    IdempotencyKeyReused,
    InvalidAddBalanceParams,
    InvalidArgument,
    InvalidVoucher,
    NotFound,
    QuantityExceeded,
    RedemptionStatus,
    VoucherDisabled,
    VoucherError,
)
from vouchercore.testing import state_snapshot
from vouchercore.testing.contract.conftest import SEED

RETENTION = timedelta(hours=1)
DEFAULT_RETENTION = timedelta(days=7)
MICROSECOND = timedelta(microseconds=1)

Book = dict[str, str]
Call = Callable[[Engine, Book, str | None], Any]


def _snapshot(engine: Engine) -> dict[str, Any]:
    """The voucher book (FAILED redemptions too) and the stacked redemptions' parents."""
    return {
        "book": state_snapshot(engine, include_failed=True),
        "parents": list(engine.store.parent_redemptions()),
    }


def _fill(engine: Engine) -> Book:
    """Two gift cards, a loyalty card, a limited discount voucher, two redemptions to roll
    back (one per card), and a stacked redemption to roll back (of the discount voucher and the
    loyalty card)."""
    engine.create_voucher("GIFT", gift={"amount": 10_000})
    engine.create_voucher("GIFT2", gift={"amount": 10_000})
    engine.create_voucher("LOYAL", loyalty_card={"points": 1_000})
    engine.create_voucher("DISC", discount=Discount.amount(500), quantity=10)
    gift = engine.redeem_voucher("GIFT", credits=1_000)
    loyal = engine.redeem_voucher("LOYAL", points=100)
    stacked = engine.redeem_stacked_discounts(
        [
            {"object": "voucher", "id": "DISC"},
            {"object": "voucher", "id": "LOYAL", "reward": {"points": 10}},
        ],
        order_amount=2_000,
    )
    return {
        "gift_redemption": gift.id,
        "loyal_redemption": loyal.id,
        "stacked_redemption": stacked.parent_redemption.id,
    }


@pytest.fixture
def book(engine: Engine) -> Book:
    """See :func:`_fill`."""
    return _fill(engine)


def _redeem(code: str = "GIFT", **changes: Any) -> Call:
    kwargs: dict[str, Any] = {"order_id": "o-1", "metadata": {"till": 3}}
    if code.startswith("GIFT"):
        kwargs.update(credits=700, order_amount=5_000)
    elif code == "LOYAL":
        kwargs.update(points=50)
    else:
        kwargs.update(order_amount=5_000)
    kwargs.update(changes)
    return lambda e, b, key: e.redeem_voucher(code, idempotency_key=key, **kwargs)


def _rollback(which: str = "gift_redemption", **changes: Any) -> Call:
    kwargs: dict[str, Any] = {"reason": "returned"}
    kwargs.update(changes)
    return lambda e, b, key: e.rollback_redemption(b[which], idempotency_key=key, **kwargs)


def _balance(code: str = "GIFT", amount: int = 500, **changes: Any) -> Call:
    kwargs: dict[str, Any] = {"source_id": "s-1", "reason": "top-up"}
    kwargs.update(changes)
    return lambda e, b, key: e.update_voucher_balance(code, amount, idempotency_key=key, **kwargs)


#: The redeemables of ``_stacked()``: 500 off, 700 credits, 50 points.
STACK: list[dict[str, Any]] = [
    {"object": "voucher", "id": "DISC"},
    {"object": "voucher", "id": "GIFT2", "gift": {"credits": 700}},
    {"object": "voucher", "id": "LOYAL", "reward": {"points": 50}},
]


def _stacked(redeemables: list[dict[str, Any]] = STACK, **changes: Any) -> Call:
    kwargs: dict[str, Any] = {
        "order": {"id": "o-1", "amount": 5_000, "metadata": {"lane": 2}},
        "customer": {"source_id": "c-1"},
        "metadata": {"till": 3},
    }
    kwargs.update(changes)
    return lambda e, b, key: e.redeem_stacked_discounts(redeemables, idempotency_key=key, **kwargs)


def _stacked_rollback(**changes: Any) -> Call:
    kwargs: dict[str, Any] = {"reason": "returned"}
    kwargs.update(changes)
    return lambda e, b, key: e.rollback_stacked_redemptions(
        b["stacked_redemption"], idempotency_key=key, **kwargs
    )


#: One successful call of each kind (by id).
CALLS: dict[str, Call] = {
    "redeem-gift": _redeem("GIFT"),
    "redeem-gift-order-amount-only": (
        lambda e, b, key: e.redeem_voucher("GIFT", order_amount=2_500, idempotency_key=key)
    ),
    "redeem-loyalty": _redeem("LOYAL"),
    "redeem-discount": _redeem("DISC"),
    "rollback-gift": _rollback("gift_redemption"),
    "rollback-loyalty": _rollback("loyal_redemption", reason=None),
    "balance-add-credits": _balance("GIFT", 500),
    "balance-remove-credits": _balance("GIFT", -500),
    "balance-add-points": _balance("LOYAL", 25, source_id=None, reason=None),
    "balance-remove-points": _balance("LOYAL", -25),
    "redeem-stacked": _stacked(),
    "rollback-stacked": _stacked_rollback(),
}

#: (first call, a different request with the same key)
REUSES: list[Any] = [
    pytest.param(_redeem(), _redeem(credits=701), id="redeem-other-credits"),
    pytest.param(_redeem(), _redeem("GIFT2"), id="redeem-other-voucher"),
    pytest.param(_redeem(), _redeem(order_amount=5_001), id="redeem-other-order-amount"),
    pytest.param(_redeem(), _redeem(order_amount=None), id="redeem-no-order-amount"),
    pytest.param(_redeem(), _redeem(order_id="o-2"), id="redeem-other-order-id"),
    pytest.param(_redeem(), _redeem(order_id=None), id="redeem-no-order-id"),
    pytest.param(_redeem(), _redeem(metadata={"till": 4}), id="redeem-other-metadata"),
    pytest.param(_redeem(), _redeem(metadata=None), id="redeem-no-metadata"),
    pytest.param(_redeem(), _redeem(session_key="s"), id="redeem-with-session-key"),
    pytest.param(_redeem("LOYAL"), _redeem("LOYAL", points=51), id="redeem-other-points"),
    pytest.param(_redeem("DISC"), _redeem("GIFT"), id="redeem-other-voucher-type"),
    pytest.param(_redeem(), _balance("GIFT", 700), id="redeem-then-balance"),
    pytest.param(_redeem(), _rollback(), id="redeem-then-rollback"),
    pytest.param(_balance(), _balance(amount=501), id="balance-other-amount"),
    pytest.param(_balance(), _balance(amount=-500), id="balance-other-sign"),
    pytest.param(_balance(), _balance("GIFT2"), id="balance-other-voucher"),
    pytest.param(_balance(), _balance(source_id="s-2"), id="balance-other-source-id"),
    pytest.param(_balance(), _balance(source_id=None), id="balance-no-source-id"),
    pytest.param(_balance(), _balance(reason="other"), id="balance-other-reason"),
    pytest.param(_balance(), _balance(reason=None), id="balance-no-reason"),
    pytest.param(_balance(), _redeem(), id="balance-then-redeem"),
    pytest.param(_balance(), _rollback(), id="balance-then-rollback"),
    pytest.param(_rollback(), _rollback("loyal_redemption"), id="rollback-other-redemption"),
    pytest.param(_rollback(), _rollback(reason="other"), id="rollback-other-reason"),
    pytest.param(_rollback(), _rollback(reason=None), id="rollback-no-reason"),
    pytest.param(_rollback(), _redeem(), id="rollback-then-redeem"),
    pytest.param(_rollback(), _balance(), id="rollback-then-balance"),
    pytest.param(
        _stacked(),
        _stacked([STACK[0], {**STACK[1], "gift": {"credits": 701}}, STACK[2]]),
        id="stacked-other-credits",
    ),
    pytest.param(_stacked(), _stacked(STACK[::-1]), id="stacked-other-order-of-redeemables"),
    pytest.param(_stacked(), _redeem("GIFT2"), id="stacked-then-redeem-one-of-its-vouchers"),
    pytest.param(_redeem("DISC"), _stacked(), id="redeem-then-stacked"),
    pytest.param(
        _stacked_rollback(), _stacked_rollback(reason="other"), id="stacked-rollback-other-reason"
    ),
    pytest.param(_rollback(), _stacked_rollback(), id="rollback-then-stacked-rollback"),
]


def _retention_engine(engine: Engine, clock: FakeClock, retention: timedelta) -> Engine:
    """An engine on the same store and clock with another retention (the store is not
    closed by it: it was handed in)."""
    return Engine(engine.store, clock=clock, seed=SEED + 1, idempotency_retention=retention)


# --- replays --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CALLS))
def test_same_key_same_request_returns_an_equal_result_and_changes_nothing(
    engine: Engine, clock: FakeClock, book: Book, name: str
) -> None:
    call = CALLS[name]
    first = call(engine, book, "retry-1")
    after_first = _snapshot(engine)
    clock.advance(minutes=5)
    for _ in range(3):
        again = call(engine, book, "retry-1")
        assert again == first
        assert type(again) is type(first)
        assert _snapshot(engine) == after_first
    assert engine.audit().ok


@pytest.mark.parametrize("name", list(CALLS))
def test_the_first_keyed_call_acts_exactly_like_an_unkeyed_one(
    make_engine: Callable[..., Engine], clock: FakeClock, name: str
) -> None:
    """A fresh key changes nothing in what the call does: same result, same state, same ids."""
    keyed, plain = make_engine(clock=clock, seed=SEED), make_engine(clock=clock, seed=SEED)
    books = [_fill(keyed), _fill(plain)]
    assert CALLS[name](keyed, books[0], "k") == CALLS[name](plain, books[1], None)
    assert _snapshot(keyed) == _snapshot(plain)


@pytest.mark.parametrize("name", list(CALLS))
def test_keys_are_store_wide_another_engine_on_the_store_replays(
    engine: Engine, clock: FakeClock, book: Book, name: str
) -> None:
    first = CALLS[name](engine, book, "k")
    after_first = _snapshot(engine)
    other = Engine(engine.store, clock=clock, seed=SEED + 7)
    assert CALLS[name](other, book, "k") == first
    assert _snapshot(engine) == after_first


def test_a_replay_does_not_run_the_checks_again(engine: Engine) -> None:
    """The first call emptied the card: a replay returns it, no ``gift_amount_exceeded``,
    no FAILED redemption."""
    engine.create_voucher("G", gift={"amount": 1_000})
    first = engine.redeem_voucher("G", credits=1_000, idempotency_key="k")
    before = _snapshot(engine)
    assert engine.redeem_voucher("G", credits=1_000, idempotency_key="k") == first
    assert _snapshot(engine) == before
    assert [r.status for r in engine.list_redemptions("G")] == [RedemptionStatus.SUCCEEDED]
    with pytest.raises(GiftAmountExceeded):  # without the key, it is a new request
        engine.redeem_voucher("G", credits=1_000)


def test_a_replayed_redemption_of_a_disabled_voucher_returns_the_original(
    engine: Engine,
) -> None:
    engine.create_voucher("D", discount=Discount.amount(100), quantity=1)
    first = engine.redeem_voucher("D", order_amount=1_000, idempotency_key="k")
    engine.disable_voucher("D")
    before = _snapshot(engine)
    assert engine.redeem_voucher("D", order_amount=1_000, idempotency_key="k") == first
    assert _snapshot(engine) == before


def test_a_replayed_redemption_after_its_rollback_returns_the_original(
    engine: Engine, clock: FakeClock
) -> None:
    engine.create_voucher("G", gift={"amount": 1_000})
    first = engine.redeem_voucher("G", credits=400, idempotency_key="k")
    assert first.status is RedemptionStatus.SUCCEEDED
    clock.advance(minutes=1)
    engine.rollback_redemption(first.id)
    before = _snapshot(engine)
    again = engine.redeem_voucher("G", credits=400, idempotency_key="k")
    assert again == first  # the original result, not a second redemption
    assert _snapshot(engine) == before
    assert engine.get_redemption(first.id).status is RedemptionStatus.ROLLED_BACK
    gift = engine.get_voucher("G").gift
    assert gift is not None and gift.balance == 1_000


def test_a_replayed_rollback_returns_the_same_rollback(engine: Engine, book: Book) -> None:
    rollback = engine.rollback_redemption(
        book["gift_redemption"], reason="returned", idempotency_key="undo-1"
    )
    before = _snapshot(engine)
    again = engine.rollback_redemption(
        book["gift_redemption"], reason="returned", idempotency_key="undo-1"
    )
    assert again == rollback
    assert (again.id, again.transaction_id, again.amount) == (
        rollback.id,
        rollback.transaction_id,
        -1_000,
    )
    assert _snapshot(engine) == before
    # a new key is a new request: the redemption is already rolled back
    with pytest.raises(AlreadyRolledBack):
        engine.rollback_redemption(book["gift_redemption"], reason="returned", idempotency_key="x")
    assert _snapshot(engine) == before


def test_a_replayed_redemption_with_a_session_key_does_not_touch_sessions(
    engine: Engine, clock: FakeClock
) -> None:
    engine.create_voucher("G", gift={"amount": 1_000})
    assert engine.validate_voucher("G", credits=300, session={"key": "s"}).valid
    first = engine.redeem_voucher("G", credits=300, session_key="s", idempotency_key="k")
    assert engine.list_sessions("G") == ()
    clock.advance(seconds=1)
    # the till locks again with the same session key; a retry of the first redemption
    # must neither release nor use the new lock
    assert engine.validate_voucher("G", credits=200, session={"key": "s"}).valid
    before = _snapshot(engine)
    assert engine.redeem_voucher("G", credits=300, session_key="s", idempotency_key="k") == first
    assert _snapshot(engine) == before
    [session] = engine.list_sessions("G")
    assert (session.key, session.credits) == ("s", 200)
    assert engine.get_voucher("G").locked_credits == 200
    assert engine.audit().ok


def test_metadata_with_the_same_items_in_another_order_is_the_same_request(
    engine: Engine,
) -> None:
    engine.create_voucher("G", gift={"amount": 1_000})
    first = engine.redeem_voucher(
        "G", credits=10, metadata={"a": 1, "b": [1, 2]}, idempotency_key="k"
    )
    before = _snapshot(engine)
    again = engine.redeem_voucher(
        "G", credits=10, metadata={"b": [1, 2], "a": 1}, idempotency_key="k"
    )
    assert again == first
    assert _snapshot(engine) == before


@pytest.mark.parametrize(
    "again",
    [
        {"order": {"amount": 100, "id": "o-1"}},
        {"order": {"amount": 100, "id": "o-1", "source_id": None, "metadata": None}},
        {"order_amount": 100, "order": {"id": "o-1"}},
        {"order_amount": 100, "order_id": "o-1", "customer": {}},
    ],
    ids=["order", "order-with-nulls", "amount-shorthand", "empty-customer"],
)
def test_an_order_given_by_shorthand_or_as_an_object_is_the_same_request(
    engine: Engine, again: dict[str, Any]
) -> None:
    engine.create_voucher("G", gift={"amount": 1_000})
    first = engine.redeem_voucher("G", order_amount=100, order_id="o-1", idempotency_key="k")
    before = _snapshot(engine)
    assert engine.redeem_voucher("G", idempotency_key="k", **again) == first
    assert _snapshot(engine) == before


# --- a key with a different request ---------------------------------------------------------


@pytest.mark.parametrize(("first", "second"), REUSES)
def test_same_key_different_request_is_idempotency_key_reused_and_changes_nothing(
    engine: Engine, book: Book, first: Call, second: Call
) -> None:
    original = first(engine, book, "k")
    before = _snapshot(engine)
    with pytest.raises(IdempotencyKeyReused) as info:
        second(engine, book, "k")
    error = info.value
    assert isinstance(error, VoucherError)
    assert error.key == "idempotency_key_reused"
    assert error.code == 409
    assert _snapshot(engine) == before
    # the key still answers its own request
    assert first(engine, book, "k") == original
    assert _snapshot(engine) == before
    # and the other request runs under another key (a second rollback of one redemption is
    # refused for what it is, not for the key)
    with contextlib.suppress(AlreadyRolledBack):
        second(engine, book, "k2")
    assert engine.audit().ok


def test_a_reused_key_on_a_request_that_would_fail_records_no_failed_redemption(
    engine: Engine,
) -> None:
    engine.create_voucher("G", gift={"amount": 1_000})
    engine.create_voucher("EMPTY", gift={"amount": 0})
    engine.redeem_voucher("G", credits=10, idempotency_key="k")
    before = _snapshot(engine)
    with pytest.raises(IdempotencyKeyReused):
        engine.redeem_voucher("EMPTY", credits=10, idempotency_key="k")
    with pytest.raises(IdempotencyKeyReused):
        engine.redeem_voucher("G", credits=5_000, idempotency_key="k")
    assert _snapshot(engine) == before
    assert engine.list_redemptions("EMPTY") == ()


def test_idempotency_key_reused_is_part_of_the_error_tree() -> None:
    error = IdempotencyKeyReused("idempotency key 'k' was used for another request")
    assert isinstance(error, VoucherError)
    assert error.key == "idempotency_key_reused"
    assert error.code == 409
    assert error.as_dict()["key"] == "idempotency_key_reused"


# --- a failed call stores nothing -----------------------------------------------------------


def test_a_redemption_refused_for_credits_can_be_retried_with_its_key_after_a_top_up(
    engine: Engine,
) -> None:
    engine.create_voucher("G", gift={"amount": 100})
    with pytest.raises(GiftAmountExceeded):
        engine.redeem_voucher("G", credits=500, order_id="o-1", idempotency_key="k")
    [failed] = engine.list_redemptions("G")  # the attempt is logged, as README "Redemption" says
    assert (failed.status, failed.failure_code) == (RedemptionStatus.FAILED, "gift_amount_exceeded")
    engine.update_voucher_balance("G", 400)
    redemption = engine.redeem_voucher("G", credits=500, order_id="o-1", idempotency_key="k")
    assert redemption.status is RedemptionStatus.SUCCEEDED
    assert redemption.amount == 500
    before = _snapshot(engine)
    assert engine.redeem_voucher("G", credits=500, order_id="o-1", idempotency_key="k") == (
        redemption
    )
    assert _snapshot(engine) == before
    assert [r.status for r in engine.list_redemptions("G")] == [
        RedemptionStatus.FAILED,
        RedemptionStatus.SUCCEEDED,
    ]
    assert engine.audit().ok


def test_a_failed_redemption_leaves_its_key_free_for_another_request(engine: Engine) -> None:
    engine.create_voucher("D", discount=Discount.amount(100), quantity=1)
    engine.create_voucher("E", discount=Discount.amount(100))
    engine.redeem_voucher("D", order_amount=1_000)
    with pytest.raises(QuantityExceeded):
        engine.redeem_voucher("D", order_amount=1_000, idempotency_key="k")
    with pytest.raises(QuantityExceeded):  # retried: tried again (and logged again)
        engine.redeem_voucher("D", order_amount=1_000, idempotency_key="k")
    assert [r.failure_code for r in engine.list_redemptions("D")] == [
        None,
        "quantity_exceeded",
        "quantity_exceeded",
    ]
    assert engine.redeem_voucher("E", order_amount=1_000, idempotency_key="k").amount == 100


def test_a_redemption_of_a_disabled_voucher_can_be_retried_once_enabled(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1_000}, active=False)
    with pytest.raises(VoucherDisabled):
        engine.redeem_voucher("G", credits=10, idempotency_key="k")
    engine.enable_voucher("G")
    assert engine.redeem_voucher("G", credits=10, idempotency_key="k").amount == 10


def test_not_found_stores_nothing_for_the_key(engine: Engine) -> None:
    with pytest.raises(NotFound):
        engine.redeem_voucher("LATER", credits=10, idempotency_key="k")
    with pytest.raises(NotFound):
        engine.update_voucher_balance("LATER", 10, idempotency_key="k")
    with pytest.raises(NotFound):
        engine.rollback_redemption("r_" + "0" * 32, idempotency_key="k")
    with pytest.raises(NotFound):
        engine.redeem_stacked_discounts(
            [{"id": "LATER", "gift": {"credits": 10}}], idempotency_key="k"
        )
    with pytest.raises(NotFound):
        engine.rollback_stacked_redemptions("r_" + "0" * 32, idempotency_key="k")
    engine.create_voucher("LATER", gift={"amount": 1_000})
    redemption = engine.redeem_voucher("LATER", credits=10, idempotency_key="k")
    assert redemption.amount == 10
    assert engine.redeem_voucher("LATER", credits=10, idempotency_key="k") == redemption


def test_invalid_argument_stores_nothing_for_the_key(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1_000})
    for bad in (
        lambda: engine.redeem_voucher("G", credits=1.5, idempotency_key="k"),  # type: ignore[arg-type]
        lambda: engine.redeem_voucher("G", idempotency_key="k"),  # missing_amount
        lambda: engine.update_voucher_balance("G", 0, idempotency_key="k"),
        lambda: engine.rollback_redemption("", idempotency_key="k"),
        lambda: engine.redeem_stacked_discounts([], idempotency_key="k"),
        lambda: engine.redeem_stacked_discounts(
            [{"id": "G"}], idempotency_key="k"
        ),  # missing_amount
        lambda: engine.rollback_stacked_redemptions("", idempotency_key="k"),
    ):
        with pytest.raises(InvalidArgument):
            bad()
    assert engine.list_redemptions("G") == ()
    update = engine.update_voucher_balance("G", 5, idempotency_key="k")
    assert update.balance == 1_005
    assert engine.update_voucher_balance("G", 5, idempotency_key="k") == update


def test_a_refused_balance_removal_can_be_retried_with_its_key(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 100})
    before = _snapshot(engine)
    with pytest.raises(InvalidAddBalanceParams):
        engine.update_voucher_balance("G", -500, idempotency_key="k")
    assert _snapshot(engine) == before
    engine.update_voucher_balance("G", 400)
    update = engine.update_voucher_balance("G", -500, idempotency_key="k")
    assert update.balance == 0
    assert engine.update_voucher_balance("G", -500, idempotency_key="k") == update


def test_a_refused_balance_update_on_a_discount_voucher_stores_nothing(engine: Engine) -> None:
    engine.create_voucher("D", discount=Discount.amount(100))
    engine.create_voucher("G", gift={"amount": 100})
    with pytest.raises(InvalidVoucher):
        engine.update_voucher_balance("D", 5, idempotency_key="k")
    assert engine.update_voucher_balance("G", 5, idempotency_key="k").balance == 105


def test_a_refused_rollback_stores_nothing_for_its_key(engine: Engine, book: Book) -> None:
    engine.rollback_redemption(book["gift_redemption"])
    with pytest.raises(AlreadyRolledBack):
        engine.rollback_redemption(book["gift_redemption"], idempotency_key="k")
    rollback = engine.rollback_redemption(book["loyal_redemption"], idempotency_key="k")
    assert rollback.redemption_id == book["loyal_redemption"]
    assert engine.rollback_redemption(book["loyal_redemption"], idempotency_key="k") == rollback


# --- without a key --------------------------------------------------------------------------


def test_without_a_key_every_call_acts(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1_000})
    first = engine.redeem_voucher("G", credits=100)
    second = engine.redeem_voucher("G", credits=100, idempotency_key=None)
    assert first.id != second.id
    a = engine.update_voucher_balance("G", 10)
    b = engine.update_voucher_balance("G", 10, idempotency_key=None)
    assert a.transaction_id != b.transaction_id
    gift = engine.get_voucher("G").gift
    assert gift is not None and gift.balance == 1_000 - 200 + 20
    assert engine.expire_idempotency_keys() == 0


def test_keys_of_every_allowed_shape_are_accepted(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1_000})
    for key in ("x" * 200, "a", "till 3 · ünïcødé / 2026-03-01T12:00", "k\u00e9y-\U0001f600"):
        first = engine.redeem_voucher("G", credits=1, idempotency_key=key)
        assert engine.redeem_voucher("G", credits=1, idempotency_key=key) == first
    assert len(engine.list_redemptions("G")) == 4


def test_keys_are_case_sensitive(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 1_000})
    first = engine.redeem_voucher("G", credits=1, idempotency_key="key")
    assert engine.redeem_voucher("G", credits=1, idempotency_key="KEY") != first
    assert len(engine.list_redemptions("G")) == 2


# --- retention ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["redeem-gift", "balance-add-credits", "balance-add-points"])
def test_a_key_replays_until_retention_ends_and_acts_anew_from_then(
    engine: Engine, clock: FakeClock, book: Book, name: str
) -> None:
    short = _retention_engine(engine, clock, RETENTION)
    call = CALLS[name]
    created = clock.now()
    first = call(short, book, "k")
    after_first = _snapshot(short)
    clock.set(created + RETENTION / 2)
    assert call(short, book, "k") == first  # a replay does not restart the retention
    clock.set(created + RETENTION - MICROSECOND)
    assert call(short, book, "k") == first
    assert _snapshot(short) == after_first
    clock.set(created + RETENTION)
    anew = call(short, book, "k")
    assert anew != first
    assert _snapshot(short) != after_first
    after_anew = _snapshot(short)
    # the key now answers for the new call, kept for a retention from its own instant
    clock.set(created + 2 * RETENTION - MICROSECOND)
    assert call(short, book, "k") == anew
    assert _snapshot(short) == after_anew
    assert short.audit().ok


def test_a_rollback_key_past_retention_acts_anew(
    engine: Engine, clock: FakeClock, book: Book
) -> None:
    short = _retention_engine(engine, clock, RETENTION)
    created = clock.now()
    rollback = short.rollback_redemption(book["gift_redemption"], idempotency_key="k")
    clock.set(created + RETENTION - MICROSECOND)
    assert short.rollback_redemption(book["gift_redemption"], idempotency_key="k") == rollback
    clock.set(created + RETENTION)
    before = _snapshot(short)
    with pytest.raises(AlreadyRolledBack):  # acted anew: the redemption is rolled back already
        short.rollback_redemption(book["gift_redemption"], idempotency_key="k")
    assert _snapshot(short) == before


def test_a_key_past_retention_may_serve_another_request(
    engine: Engine, clock: FakeClock, book: Book
) -> None:
    short = _retention_engine(engine, clock, RETENTION)
    created = clock.now()
    short.redeem_voucher("GIFT", credits=10, idempotency_key="k")
    clock.set(created + RETENTION - MICROSECOND)
    with pytest.raises(IdempotencyKeyReused):
        short.update_voucher_balance("GIFT2", 10, idempotency_key="k")
    clock.set(created + RETENTION)
    update = short.update_voucher_balance("GIFT2", 10, idempotency_key="k")
    assert update.balance == 10_010
    with pytest.raises(IdempotencyKeyReused):
        short.redeem_voucher("GIFT", credits=10, idempotency_key="k")


def test_the_default_retention_is_seven_days(engine: Engine, clock: FakeClock) -> None:
    engine.create_voucher("G", gift={"amount": 1_000})
    created = clock.now()
    first = engine.redeem_voucher("G", credits=10, idempotency_key="k")
    clock.set(created + DEFAULT_RETENTION - MICROSECOND)
    assert engine.redeem_voucher("G", credits=10, idempotency_key="k") == first
    assert engine.expire_idempotency_keys() == 0
    clock.set(created + DEFAULT_RETENTION)
    anew = engine.redeem_voucher("G", credits=10, idempotency_key="k")
    assert anew.id != first.id
    assert len(engine.list_redemptions("G")) == 2


def test_a_failed_call_on_a_key_past_retention_does_not_revive_it(
    engine: Engine, clock: FakeClock
) -> None:
    short = _retention_engine(engine, clock, RETENTION)
    short.create_voucher("G", gift={"amount": 100})
    created = clock.now()
    short.redeem_voucher("G", credits=100, idempotency_key="k")
    clock.set(created + RETENTION)
    with pytest.raises(GiftAmountExceeded):  # acts anew, and fails
        short.redeem_voucher("G", credits=100, idempotency_key="k")
    short.update_voucher_balance("G", 100)
    assert short.redeem_voucher("G", credits=100, idempotency_key="k").amount == 100


# --- expire_idempotency_keys ----------------------------------------------------------------


def test_expire_idempotency_keys_purges_exactly_the_keys_past_retention(
    engine: Engine, clock: FakeClock, book: Book
) -> None:
    short = _retention_engine(engine, clock, RETENTION)
    assert short.expire_idempotency_keys() == 0
    created = clock.now()
    redemption = short.redeem_voucher("GIFT", credits=10, idempotency_key="a")
    short.rollback_redemption(book["gift_redemption"], idempotency_key="b")
    short.update_voucher_balance("LOYAL", 5, idempotency_key="c")
    short.redeem_voucher("GIFT", credits=10)  # no key: nothing to purge
    with pytest.raises(GiftAmountExceeded):  # failed: nothing stored
        short.redeem_voucher("GIFT", credits=10**9, idempotency_key="failed")
    clock.set(created + RETENTION / 2)
    later = short.update_voucher_balance("GIFT2", 5, idempotency_key="d")

    clock.set(created + RETENTION - MICROSECOND)
    assert short.expire_idempotency_keys() == 0
    assert short.redeem_voucher("GIFT", credits=10, idempotency_key="a") == redemption
    clock.set(created + RETENTION)
    before = _snapshot(short)
    assert short.expire_idempotency_keys() == 3
    assert _snapshot(short) == before  # housekeeping changes nothing observable
    assert short.expire_idempotency_keys() == 0
    assert short.update_voucher_balance("GIFT2", 5, idempotency_key="d") == later
    anew = short.redeem_voucher("GIFT", credits=10, idempotency_key="a")
    assert anew.id != redemption.id
    clock.set(created + RETENTION + RETENTION / 2)
    # "d" is past retention, "a" (made anew at created + RETENTION) is not
    assert short.expire_idempotency_keys() == 1
    assert short.expire_idempotency_keys() == 0
    assert short.redeem_voucher("GIFT", credits=10, idempotency_key="a") == anew
    assert short.audit().ok


def test_expire_idempotency_keys_at_an_earlier_instant(
    engine: Engine, clock: FakeClock, book: Book
) -> None:
    short = _retention_engine(engine, clock, RETENTION)
    created = clock.now()
    short.update_voucher_balance("GIFT", 5, idempotency_key="early")
    clock.set(created + RETENTION / 2)
    short.update_voucher_balance("GIFT", 5, idempotency_key="late")
    clock.set(created + 3 * RETENTION)
    assert short.expire_idempotency_keys(created + RETENTION - MICROSECOND) == 0
    assert short.expire_idempotency_keys(created + RETENTION) == 1
    assert short.expire_idempotency_keys(created + RETENTION) == 0
    assert short.expire_idempotency_keys() == 1


def test_expire_idempotency_keys_uses_the_engine_clock_by_default(
    engine: Engine, clock: FakeClock
) -> None:
    engine.create_voucher("G", gift={"amount": 1_000})
    engine.update_voucher_balance("G", 5, idempotency_key="k")
    assert engine.expire_idempotency_keys() == 0
    clock.advance(DEFAULT_RETENTION)
    assert engine.expire_idempotency_keys() == 1


def test_expire_idempotency_keys_rejects_a_naive_instant(engine: Engine) -> None:
    with pytest.raises(InvalidArgument) as info:
        engine.expire_idempotency_keys(datetime(2026, 3, 1, 12, 0))  # naive on purpose
    assert "now" in info.value.message
