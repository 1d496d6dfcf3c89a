"""Real threads racing on one hot voucher and one gift card: counts stay exact
(README "Concurrency and the audit").

Eight threads start together behind a barrier and mix validate(LOCK)+redeem(key) pairs with
plain redemptions. The interpreter's switch interval is cut to a microsecond so threads are
preempted inside operations as often as possible.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest

from vouchercore import Engine, FakeClock, QuantityExceeded, VoucherError

pytestmark = pytest.mark.slow

THREADS = 8
HOT_QUANTITY = 100
CARD_CREDITS = 100_000
CREDITS_PER_SALE = 100  # so the card has exactly 1,000 sales in it


@dataclass
class Tally:
    """What one thread saw succeed and fail."""

    hot_redeemed: int = 0
    card_redeemed: int = 0
    locks_held: int = 0
    locked_redeem_failures: list[str] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)

    def failed(self, error: VoucherError) -> None:
        self.failures[error.key] = self.failures.get(error.key, 0) + 1


def _race(engine: Engine, attempts: int) -> list[Tally]:
    barrier = threading.Barrier(THREADS)
    tallies = [Tally() for _ in range(THREADS)]
    errors: list[BaseException] = []

    def terminal(index: int) -> None:
        tally = tallies[index]
        try:
            barrier.wait()
            for i in range(attempts):
                code = "HOT" if i % 2 == 0 else "CARD"
                ask = {"order_amount": 5_000} if code == "HOT" else {"credits": CREDITS_PER_SALE}
                if (i + index) % 3 == 0:
                    # plain redemption, no session
                    try:
                        engine.redeem_voucher(code, **ask)  # type: ignore[arg-type]
                    except VoucherError as error:
                        tally.failed(error)
                        continue
                else:
                    result = engine.validate_voucher(code, session="LOCK", **ask)  # type: ignore[arg-type]
                    if not result.valid:
                        assert result.error is not None
                        tally.failed(result.error)
                        continue
                    tally.locks_held += 1
                    assert result.session is not None
                    try:
                        engine.redeem_voucher(code, session_key=result.session.key, **ask)  # type: ignore[arg-type]
                    except VoucherError as error:  # a held lock must always redeem
                        tally.locked_redeem_failures.append(error.key)
                        continue
                if code == "HOT":
                    tally.hot_redeemed += 1
                else:
                    tally.card_redeemed += 1
        except BaseException as exc:  # surface assertion errors from the thread
            errors.append(exc)

    threads = [threading.Thread(target=terminal, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a terminal thread hung"
    assert not errors, errors
    return tallies


@pytest.mark.parametrize("round_", range(5))
def test_racing_terminals_never_over_redeem_a_limited_voucher_or_overspend_a_card(
    fast_switching: None, round_: int
) -> None:
    engine = Engine(clock=FakeClock(), seed=99 + round_)
    engine.create_voucher("HOT", discount={"type": "AMOUNT", "amount_off": 500}, quantity=100)
    engine.create_voucher("CARD", type="GIFT_VOUCHER", gift={"amount": CARD_CREDITS})

    # each thread tries the hot voucher 200 times and the card 200 times: far more than stock
    tallies = _race(engine, attempts=400)

    hot = engine.get_voucher("HOT")
    card = engine.get_voucher("CARD")
    assert sum(t.hot_redeemed for t in tallies) == HOT_QUANTITY
    assert hot.redeemed_quantity == HOT_QUANTITY
    assert sum(t.card_redeemed for t in tallies) == CARD_CREDITS // CREDITS_PER_SALE
    assert card.gift is not None and card.gift.balance == 0
    assert card.redeemed_amount == CARD_CREDITS
    # every lock a terminal was granted turned into a redemption: a lock is a promise
    assert [k for t in tallies for k in t.locked_redeem_failures] == []
    assert hot.locked_quantity == card.locked_quantity == 0
    # the losers were told why
    failures: dict[str, int] = {}
    for tally in tallies:
        for key, count in tally.failures.items():
            failures[key] = failures.get(key, 0) + count
    assert set(failures) <= {QuantityExceeded.key, "gift_amount_exceeded"}
    assert failures[QuantityExceeded.key] == THREADS * 200 - HOT_QUANTITY
    # the logs agree with the counters
    transactions = engine.list_voucher_transactions("CARD", limit=1)
    assert transactions.total == CARD_CREDITS // CREDITS_PER_SALE
    report = engine.audit()
    assert report.ok, str(report)


def test_threads_on_different_vouchers_do_not_share_a_lock() -> None:
    """A unit of work held open on one voucher does not block work on another."""
    engine = Engine(clock=FakeClock(), seed=5)
    engine.create_voucher("A", discount={"type": "AMOUNT", "amount_off": 1})
    engine.create_voucher("B", discount={"type": "AMOUNT", "amount_off": 1})
    unit = engine.store.begin("A")  # hold voucher A's unit of work open
    assert unit is not None
    done = threading.Event()

    def redeem_b() -> None:
        engine.redeem_voucher("B")
        done.set()

    worker = threading.Thread(target=redeem_b)
    worker.start()
    try:
        assert done.wait(timeout=10), "an operation on B waited for A's lock"
    finally:
        engine.store.abort(unit)
        worker.join()
    # and one on A waits until A is released
    blocked = threading.Event()

    def redeem_a() -> None:
        engine.redeem_voucher("A")
        blocked.set()

    unit = engine.store.begin("A")
    assert unit is not None
    worker = threading.Thread(target=redeem_a)
    worker.start()
    assert not blocked.wait(timeout=0.2), "an operation on A ran while A was held"
    engine.store.abort(unit)
    worker.join(timeout=10)
    assert blocked.is_set()
    assert engine.get_voucher("A").redeemed_quantity == 1
