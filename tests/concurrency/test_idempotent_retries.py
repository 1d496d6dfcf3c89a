"""Threads retrying one call with one idempotency key at the same instant (README "Redemption",
"Balance", "Concurrency and the audit"): the effect is applied exactly once and every caller
gets an equal result.

Eight threads wait at a barrier and then all call ``redeem_voucher`` on one gift card with the
same key and request (then ``update_voucher_balance``, then ``rollback_redemption``), on each
store (memory, SQLite, and PostgreSQL when ``VOUCHERCORE_TEST_POSTGRES_DSN`` is set). The card
holds credits for one redemption only, so a second execution would not go unnoticed: it would
fail ``gift_amount_exceeded`` and log a FAILED redemption. A last group sends one key with two
different requests (two cards): one request wins, its callers get equal results, the others
``idempotency_key_reused``, and the losing card is untouched. A third group retries a call
the card refuses: every caller acts and is refused (nothing is kept under the key while they
wait on it), and after a top-up the key serves one redemption. The interpreter's switch interval
is cut to a microsecond so threads are preempted inside operations as often as possible.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

import pytest

from vouchercore import (
    Engine,
    IdempotencyKeyReused,
    RedemptionStatus,
    TransactionType,
    VoucherError,
)

pytestmark = pytest.mark.slow

THREADS = 8
ROUNDS = 5


def _race(calls: list[Callable[[], Any]]) -> list[tuple[str, Any]]:
    """Run each call in its own thread, all released together; ("ok", result) or
    ("error", VoucherError) per call, in order."""
    barrier = threading.Barrier(len(calls))
    outcomes: list[tuple[str, Any] | None] = [None] * len(calls)
    crashes: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=60)
            try:
                outcomes[index] = ("ok", calls[index]())
            except VoucherError as error:
                outcomes[index] = ("error", error)
        except BaseException as crash:  # surface anything else
            crashes.append(crash)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not crashes, crashes
    assert all(outcome is not None for outcome in outcomes)
    return [outcome for outcome in outcomes if outcome is not None]


def _results(outcomes: list[tuple[str, Any]]) -> list[Any]:
    errors = [value for kind, value in outcomes if kind == "error"]
    assert not errors, errors
    return [value for _, value in outcomes]


def _types(engine: Engine, code: str) -> list[TransactionType]:
    page = engine.list_voucher_transactions(code, limit=100, order="id")
    assert not page.has_more
    return [t.type for t in page.data]


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_threads_retrying_one_key_apply_each_call_once(
    fast_switching: None, engine: Engine, round_: int
) -> None:
    card = f"CARD-{round_}"
    engine.create_voucher(card, gift={"amount": 1_000})

    # redeem: the card holds one redemption of 700
    redemptions = _results(
        _race(
            [
                lambda: engine.redeem_voucher(
                    card, credits=700, order_id="o-1", idempotency_key=f"redeem-{round_}"
                )
                for _ in range(THREADS)
            ]
        )
    )
    assert all(r == redemptions[0] for r in redemptions)
    assert redemptions[0].status is RedemptionStatus.SUCCEEDED
    log = engine.list_redemptions(card)
    assert [(r.id, r.status) for r in log] == [(redemptions[0].id, RedemptionStatus.SUCCEEDED)]

    # balance: one addition
    updates = _results(
        _race(
            [
                lambda: engine.update_voucher_balance(
                    card, 500, reason="top-up", idempotency_key=f"top-up-{round_}"
                )
                for _ in range(THREADS)
            ]
        )
    )
    assert all(u == updates[0] for u in updates)
    assert updates[0].balance == 800

    # rollback: one refund
    rollbacks = _results(
        _race(
            [
                lambda: engine.rollback_redemption(
                    redemptions[0].id, idempotency_key=f"undo-{round_}"
                )
                for _ in range(THREADS)
            ]
        )
    )
    assert all(r == rollbacks[0] for r in rollbacks)

    assert _types(engine, card) == [
        TransactionType.CREDITS_REDEMPTION,
        TransactionType.CREDITS_ADDITION,
        TransactionType.CREDITS_REFUND,
    ]
    voucher = engine.get_voucher(card)
    assert voucher.gift is not None
    assert (voucher.gift.amount, voucher.gift.balance) == (1_500, 1_500)
    assert voucher.redeemed_quantity == 0
    [redemption] = engine.list_redemptions(card)
    assert redemption.status is RedemptionStatus.ROLLED_BACK
    assert redemption.rollback_id == rollbacks[0].id
    report = engine.audit()
    assert report.ok, str(report)


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_threads_sending_one_key_with_two_requests_apply_exactly_one(
    fast_switching: None, engine: Engine, round_: int
) -> None:
    cards = (f"A-{round_}", f"B-{round_}")
    for card in cards:
        engine.create_voucher(card, gift={"amount": 1_000})
    key = f"shared-{round_}"
    calls: list[Callable[[], Any]] = []
    for i in range(THREADS):
        card = cards[i % 2]
        if i % 4 < 2:
            calls.append(
                functools.partial(engine.redeem_voucher, card, credits=700, idempotency_key=key)
            )
        else:  # the same key, another operation on the same card
            calls.append(
                functools.partial(engine.update_voucher_balance, card, 5, idempotency_key=key)
            )
    outcomes = _race(calls)
    won = [(i, value) for i, (kind, value) in enumerate(outcomes) if kind == "ok"]
    lost = [value for kind, value in outcomes if kind == "error"]
    assert won, "no caller succeeded"
    winner = won[0][0]
    # the winner's request: its callers (same card, same operation) all got the same result
    same_request = [i for i in range(THREADS) if i % 4 == winner % 4]
    assert [i for i, _ in won] == same_request
    assert all(value == won[0][1] for _, value in won)
    assert len(lost) == THREADS - len(same_request)
    assert all(isinstance(error, IdempotencyKeyReused) for error in lost), lost
    # exactly one effect, on one card; the other card untouched, no FAILED attempt anywhere
    effects = {card: _types(engine, card) for card in cards}
    assert sorted(len(types) for types in effects.values()) == [0, 1]
    for card in cards:
        assert all(r.status is RedemptionStatus.SUCCEEDED for r in engine.list_redemptions(card))
    assert sum(len(engine.list_redemptions(card)) for card in cards) == (winner % 4 < 2)
    report = engine.audit()
    assert report.ok, str(report)


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_threads_retrying_one_key_on_a_refused_call_all_act_and_keep_nothing(
    fast_switching: None, engine: Engine, round_: int
) -> None:
    """A refused call keeps nothing under its key, even while others wait on the key: every
    caller acts (and is refused, each attempt logged FAILED), and the key is free after."""
    card = f"EMPTY-{round_}"
    engine.create_voucher(card, gift={"amount": 100})
    key = f"refused-{round_}"
    outcomes = _race(
        [
            lambda: engine.redeem_voucher(card, credits=700, idempotency_key=key)
            for _ in range(THREADS)
        ]
    )
    assert [kind for kind, _ in outcomes] == ["error"] * THREADS
    assert {error.key for _, error in outcomes} == {"gift_amount_exceeded"}
    log = engine.list_redemptions(card)
    assert [r.status for r in log] == [RedemptionStatus.FAILED] * THREADS
    assert _types(engine, card) == []
    engine.update_voucher_balance(card, 600)
    redemptions = _results(
        _race(
            [
                lambda: engine.redeem_voucher(card, credits=700, idempotency_key=key)
                for _ in range(THREADS)
            ]
        )
    )
    assert all(r == redemptions[0] for r in redemptions)
    assert _types(engine, card) == [
        TransactionType.CREDITS_ADDITION,
        TransactionType.CREDITS_REDEMPTION,
    ]
    report = engine.audit()
    assert report.ok, str(report)
