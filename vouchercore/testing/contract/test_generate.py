"""Code generation (``Engine.generate_vouchers``) on every store: unique codes of the asked
shape, batches, collisions drawn again, a code space too small refused up front, a store
nearly full of the shape refused after a bounded number of tries, reproducible with a seed."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from vouchercore import Engine, FakeClock, InvalidArgument, bulk
from vouchercore.testing import state_snapshot
from vouchercore.testing.contract.conftest import START, MakeEngine


def _codes(engine: Engine) -> list[str]:
    return sorted(engine.store.voucher_codes())


def test_count_vouchers_with_distinct_codes_of_length_from_charset(engine: Engine) -> None:
    report = engine.generate_vouchers(500, length=6, charset="ABC123", gift={"amount": 2_500})
    codes = _codes(engine)
    assert report.count == len(codes) == 500
    assert all(re.fullmatch(r"[ABC123]{6}", code) for code in codes)
    assert set(report.codes) <= set(codes)
    assert len(report.codes) == 100  # the first 100 only
    card = engine.get_voucher(codes[0]).gift
    assert card is not None
    assert (card.amount, card.balance) == (2_500, 2_500)


def test_pattern_prefix_and_postfix_shape_the_codes(engine: Engine) -> None:
    report = engine.generate_vouchers(
        20,
        pattern="##-#",
        charset="0123456789",
        prefix="SPRING-",
        postfix="-X",
        length=99,  # ignored with a pattern
        discount={"type": "AMOUNT", "amount_off": 500},
    )
    assert all(re.fullmatch(r"SPRING-\d\d-\d-X", code) for code in report.codes)
    assert len(set(report.codes)) == 20


def test_every_template_field_is_applied_to_every_voucher(engine: Engine) -> None:
    end = datetime(2027, 1, 31, 23, 59, 59, tzinfo=UTC)
    report = engine.generate_vouchers(
        3,
        type="DISCOUNT_VOUCHER",
        discount={"type": "PERCENT", "percent_off": 15, "amount_limit": 2_000},
        quantity=2,
        active=False,
        start_date=START,
        expiration_date=end,
        category="spring",
        additional_info="batch 7",
        metadata={"channel": "print"},
        campaign_id="camp_1",
    )
    for code in report.codes:
        voucher = engine.get_voucher(code)
        assert voucher.discount is not None
        assert (voucher.discount.percent_off, voucher.discount.amount_limit) == (15, 2_000)
        assert (voucher.quantity, voucher.active) == (2, False)
        assert (voucher.start_date, voucher.expiration_date) == (START, end)
        assert (voucher.category, voucher.additional_info) == ("spring", "batch 7")
        assert (voucher.metadata, voucher.campaign_id) == ({"channel": "print"}, "camp_1")


def test_batches_go_to_the_store_whole_and_codes_reach_on_codes_in_order(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, batch_sizes: list[int]
) -> None:
    monkeypatch.setattr(bulk, "BATCH", 40)
    received: list[str] = []
    progress: list[int] = []
    report = engine.generate_vouchers(
        100,
        gift={"amount": 1},
        on_codes=received.extend,
        progress=progress.append,
        keep_codes=1_000,
    )
    assert batch_sizes == [40, 40, 20]
    assert progress == [40, 80, 100]
    assert received == list(report.codes)
    assert sorted(received) == _codes(engine)


def test_codes_taken_already_are_drawn_again(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 100 possible codes, 40 of them taken: the 30 new ones all avoid them
    for n in range(0, 80, 2):
        engine.create_voucher(f"{n:02d}", gift={"amount": 1})
    taken = set(_codes(engine))
    monkeypatch.setattr(bulk, "BATCH", 10)
    report = engine.generate_vouchers(
        30, pattern="##", charset="0123456789", gift={"amount": 5}, keep_codes=30
    )
    assert report.count == 30
    assert not set(report.codes) & taken
    assert len(_codes(engine)) == 70
    assert report.redrawn > 0
    old = engine.get_voucher("00").gift
    assert old is not None
    assert old.amount == 1  # a taken code's voucher is left as it was


def test_a_code_space_too_small_is_refused_before_anything_is_stored(engine: Engine) -> None:
    engine.create_voucher("KEEP", gift={"amount": 1})
    before = state_snapshot(engine)
    with pytest.raises(InvalidArgument) as caught:
        engine.generate_vouchers(6, pattern="#", charset="0123456789", gift={"amount": 1})
    assert "makes only 10 codes" in caught.value.message
    assert caught.value.key == "invalid_payload"
    with pytest.raises(InvalidArgument, match="makes only 3,844"):
        engine.generate_vouchers(2_000, length=2, gift={"amount": 1})
    assert state_snapshot(engine) == before


def test_a_store_nearly_full_of_the_shape_stops_after_bounded_tries(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(95):  # 5 free codes of 100
        engine.create_voucher(f"{n:02d}", gift={"amount": 1})
    monkeypatch.setattr(bulk, "BATCH", 10)
    with pytest.raises(InvalidArgument, match="nearly full") as caught:
        engine.generate_vouchers(50, pattern="##", charset="0123456789", gift={"amount": 1})
    created = len(_codes(engine)) - 95
    assert created <= 5
    assert f"{created:,} of the 50 vouchers were generated" in caught.value.message


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"count": 0}, "count"),
        ({"count": True}, "count"),
        ({"count": 1.0}, "count"),
        ({"length": 0}, "length"),
        ({"length": 101}, "length"),
        ({"charset": ""}, "charset"),
        ({"charset": "AAB"}, "repeats"),
        ({"charset": "AB C"}, "whitespace"),
        ({"charset": "AB\x00"}, "printable"),
        ({"pattern": "NOPE"}, "placeholder"),
        ({"pattern": 5}, "pattern"),
        ({"prefix": " X"}, "whitespace"),
        ({"prefix": "P" * 95}, "at most 100"),
        ({"gift": {"amount": -1}}, "gift.amount"),
        ({"gift": {"amount": 1}, "discount": {"type": "AMOUNT", "amount_off": 1}}, "exactly one"),
        ({"keep_codes": -1}, "keep_codes"),
        ({"on_codes": "file.txt"}, "on_codes"),
    ],
)
def test_malformed_arguments_are_refused_and_nothing_is_stored(
    engine: Engine, arguments: dict[str, Any], message: str
) -> None:
    call: dict[str, Any] = {"count": 5, "gift": {"amount": 1}}
    call.update(arguments)
    if "discount" in arguments:
        call["type"] = None
    with pytest.raises(InvalidArgument, match=message):
        engine.generate_vouchers(**call)
    assert _codes(engine) == []


def test_a_seeded_engine_generates_the_same_codes_on_every_store(make_engine: MakeEngine) -> None:
    first = make_engine(clock=FakeClock(START), seed=7).generate_vouchers(50, gift={"amount": 1})
    again = make_engine(clock=FakeClock(START), seed=7).generate_vouchers(50, gift={"amount": 1})
    other = make_engine(clock=FakeClock(START), seed=8).generate_vouchers(50, gift={"amount": 1})
    assert first.codes == again.codes
    assert first.codes != other.codes


def test_an_unseeded_engine_generates_different_codes_each_time(make_engine: MakeEngine) -> None:
    engine = make_engine()
    one = engine.generate_vouchers(20, length=12, gift={"amount": 1})
    two = engine.generate_vouchers(20, length=12, gift={"amount": 1})
    assert not set(one.codes) & set(two.codes)


def test_generated_vouchers_are_usable_and_pass_the_audit(engine: Engine) -> None:
    report = engine.generate_vouchers(10, gift={"amount": 1_000}, quantity=3)
    code = report.codes[0]
    engine.redeem_voucher(code, credits=400)
    card = engine.get_voucher(code).gift
    assert card is not None
    assert card.balance == 600
    assert engine.audit().ok
