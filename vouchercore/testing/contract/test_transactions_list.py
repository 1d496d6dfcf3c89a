"""README "Transactions": list_voucher_transactions — order, pages, cursors, validation."""

from __future__ import annotations

import pytest

from vouchercore import (
    Discount,
    Engine,
    FakeClock,
    InvalidArgument,
    NotFound,
    TransactionType,
)


def _card_with_transactions(engine: Engine, clock: FakeClock, n: int, code: str = "G") -> list[str]:
    """A gift card with *n* CREDITS_ADDITION transactions of 1, 2, … n; their ids in order."""
    engine.create_voucher(code, gift={"amount": 0})
    ids = []
    for i in range(1, n + 1):
        clock.advance(seconds=1)
        ids.append(engine.update_voucher_balance(code, i).transaction_id)
    return ids


def test_newest_transaction_comes_first_by_default(engine: Engine, clock: FakeClock) -> None:
    ids = _card_with_transactions(engine, clock, 5)
    page = engine.list_voucher_transactions("G")
    assert [t.id for t in page.data] == ids[::-1]
    assert [t.amount for t in page.data] == [5, 4, 3, 2, 1]
    assert page.has_more is False
    assert page.more_starting_after is None
    assert page.total == 5


def test_order_id_lists_oldest_first(engine: Engine, clock: FakeClock) -> None:
    ids = _card_with_transactions(engine, clock, 5)
    page = engine.list_voucher_transactions("G", order="id")
    assert [t.id for t in page.data] == ids
    assert [t.balance for t in page.data] == [1, 3, 6, 10, 15]


def test_default_limit_is_ten(engine: Engine, clock: FakeClock) -> None:
    ids = _card_with_transactions(engine, clock, 12)
    page = engine.list_voucher_transactions("G")
    assert [t.id for t in page.data] == ids[::-1][:10]
    assert page.has_more is True
    assert page.more_starting_after == ids[2]


def test_limit_cuts_the_page_and_reports_more(engine: Engine, clock: FakeClock) -> None:
    ids = _card_with_transactions(engine, clock, 5)
    page = engine.list_voucher_transactions("G", limit=2)
    assert [t.id for t in page.data] == [ids[4], ids[3]]
    assert page.has_more is True
    assert page.more_starting_after == ids[3]


@pytest.mark.parametrize("limit", [1, 100])
def test_limit_bounds_are_accepted(engine: Engine, clock: FakeClock, limit: int) -> None:
    ids = _card_with_transactions(engine, clock, 3)
    page = engine.list_voucher_transactions("G", limit=limit)
    assert len(page.data) == min(limit, 3)
    assert page.data[0].id == ids[-1]


@pytest.mark.parametrize("limit", [0, -1, 101, 1.0, "10", True, None])
def test_limit_outside_one_to_hundred_is_rejected(engine: Engine, limit: object) -> None:
    engine.create_voucher("G", gift={"amount": 1})
    with pytest.raises(InvalidArgument) as info:
        engine.list_voucher_transactions("G", limit=limit)  # type: ignore[arg-type]
    assert "limit" in info.value.message


def test_page_number_selects_the_nth_page(engine: Engine, clock: FakeClock) -> None:
    ids = _card_with_transactions(engine, clock, 5)
    newest_first = ids[::-1]
    pages = [engine.list_voucher_transactions("G", limit=2, page=p) for p in (1, 2, 3, 4)]
    assert [[t.id for t in p.data] for p in pages] == [
        newest_first[0:2],
        newest_first[2:4],
        newest_first[4:5],
        [],
    ]
    assert [p.has_more for p in pages] == [True, True, False, False]


def test_page_number_with_ascending_order(engine: Engine, clock: FakeClock) -> None:
    ids = _card_with_transactions(engine, clock, 5)
    page = engine.list_voucher_transactions("G", limit=2, page=2, order="id")
    assert [t.id for t in page.data] == ids[2:4]


@pytest.mark.parametrize("page", [0, -1, 1.0, "2", True])
def test_bad_page_number_is_rejected(engine: Engine, page: object) -> None:
    engine.create_voucher("G", gift={"amount": 1})
    with pytest.raises(InvalidArgument) as info:
        engine.list_voucher_transactions("G", page=page)  # type: ignore[arg-type]
    assert "page" in info.value.message


def test_page_and_cursor_together_are_rejected(engine: Engine, clock: FakeClock) -> None:
    ids = _card_with_transactions(engine, clock, 3)
    with pytest.raises(InvalidArgument):
        engine.list_voucher_transactions("G", page=1, starting_after_id=ids[0])


@pytest.mark.parametrize("order", ["created_at", "-created_at", "ID", "", None])
def test_unknown_order_is_rejected(engine: Engine, order: object) -> None:
    engine.create_voucher("G", gift={"amount": 1})
    with pytest.raises(InvalidArgument) as info:
        engine.list_voucher_transactions("G", order=order)  # type: ignore[arg-type]
    assert "order" in info.value.message


@pytest.mark.parametrize("order", ["-id", "id"])
def test_cursor_walks_every_transaction_exactly_once(
    engine: Engine, clock: FakeClock, order: str
) -> None:
    ids = _card_with_transactions(engine, clock, 7)
    expected = ids[::-1] if order == "-id" else ids
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = engine.list_voucher_transactions("G", limit=3, starting_after_id=cursor, order=order)
        pages += 1
        seen.extend(t.id for t in page.data)
        if not page.has_more:
            assert page.more_starting_after is None
            break
        assert page.more_starting_after == page.data[-1].id
        cursor = page.more_starting_after
    assert seen == expected
    assert pages == 3


def test_cursor_at_the_last_transaction_gives_an_empty_page(
    engine: Engine, clock: FakeClock
) -> None:
    ids = _card_with_transactions(engine, clock, 3)
    page = engine.list_voucher_transactions("G", starting_after_id=ids[0])
    assert page.data == ()
    assert page.has_more is False


def test_cursor_resumes_after_new_transactions_arrive(engine: Engine, clock: FakeClock) -> None:
    ids = _card_with_transactions(engine, clock, 4)
    first = engine.list_voucher_transactions("G", limit=2, order="id")
    assert first.more_starting_after == ids[1]
    engine.update_voucher_balance("G", 100)
    rest = engine.list_voucher_transactions(
        "G", limit=10, order="id", starting_after_id=first.more_starting_after
    )
    assert [t.id for t in rest.data][:2] == ids[2:]
    assert len(rest.data) == 3


def test_transaction_ids_increase_strictly_in_creation_order_across_vouchers(
    engine: Engine,
) -> None:
    engine.create_voucher("A", gift={"amount": 1000})
    engine.create_voucher("B", loyalty_card={"points": 1000})
    made = []
    for i in range(10):
        code = "A" if i % 2 else "B"
        if i % 3 == 0:
            made.append(engine.update_voucher_balance(code, 5).transaction_id)
        else:
            field = "credits" if code == "A" else "points"
            made.append(engine.redeem_voucher(code, **{field: 1}).transaction_id)  # type: ignore[arg-type]
    assert all(isinstance(t, str) and t.startswith("vtx_") for t in made)
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_listed_transaction_carries_voucher_and_campaign(engine: Engine) -> None:
    v = engine.create_voucher("G", gift={"amount": 100}, campaign_id="camp_9")
    engine.update_voucher_balance("G", 1, source_id="s", reason="r")
    [tx] = engine.list_voucher_transactions("G").data
    assert (tx.voucher_id, tx.campaign_id) == (v.id, "camp_9")
    assert (tx.source_id, tx.reason) == ("s", "r")
    assert tx.type is TransactionType.CREDITS_ADDITION
    assert tx.related_transaction_id is None


def test_discount_voucher_has_an_empty_transaction_list(engine: Engine) -> None:
    engine.create_voucher("D", discount=Discount.amount(100))
    engine.redeem_voucher("D", order_amount=1000)
    page = engine.list_voucher_transactions("D")
    assert page.data == ()
    assert page.has_more is False
    assert page.more_starting_after is None


def test_new_card_has_an_empty_transaction_list(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 100})
    assert engine.list_voucher_transactions("G").data == ()


def test_transactions_of_an_unknown_code_are_not_found(engine: Engine) -> None:
    with pytest.raises(NotFound) as info:
        engine.list_voucher_transactions("NOPE")
    assert info.value.key == "not_found"


def test_transactions_can_be_listed_by_voucher_id(engine: Engine, clock: FakeClock) -> None:
    ids = _card_with_transactions(engine, clock, 2)
    v = engine.get_voucher("G")
    assert [t.id for t in engine.list_voucher_transactions(v.id).data] == ids[::-1]


def test_transactions_of_other_vouchers_are_not_listed(engine: Engine, clock: FakeClock) -> None:
    a = _card_with_transactions(engine, clock, 2, "A")
    b = _card_with_transactions(engine, clock, 2, "B")
    assert [t.id for t in engine.list_voucher_transactions("A", order="id").data] == a
    assert [t.id for t in engine.list_voucher_transactions("B", order="id").data] == b


def test_details_of_a_returned_transaction_cannot_change_the_log(engine: Engine) -> None:
    engine.create_voucher("G", gift={"amount": 100})
    r = engine.redeem_voucher("G", credits=10, order_id="o1")
    [tx] = engine.list_voucher_transactions("G").data
    assert tx.details is not None
    tx.details["redemption"]["id"] = "r_forged"
    tx.details["extra"] = {"id": "x"}
    [again] = engine.list_voucher_transactions("G").data
    assert again.details == {"redemption": {"id": r.id}, "order": {"id": "o1"}}
