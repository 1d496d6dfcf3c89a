"""In-memory engine benchmark: redeem, lock+redeem, stacked redeem, the plain-dict floor, purge
cost, memory.

Run: ``python benchmarks/bench_memory.py`` (``--quick`` for a smaller run). Prints figures;
asserts nothing. Everything is measured in this one run, on this machine:

* ``redeem_voucher`` on a gift card without a session (system clock, secure ids);
* the pair ``validate_voucher(session=LOCK)`` + ``redeem_voucher(session_key=…)``;
* a hand-written floor: the fewest dict operations a redeem needs (look the card up, check
  and move the balance and counter, append a transaction tuple, store a redemption tuple);
* the ratio of each engine figure to the floor;
* ``redeem_stacked_discounts`` of a stack of 2 — a discount voucher (100 off) and a gift card
  (1 credit) on a 1,000 order — beside the single ``redeem_voucher`` of the gift card, and the
  ratio of their times (issue 12's target: a stack of 2 costs ≤ 1.5× a single redemption);
* ``expire_sessions`` purging k = 1, 1,000, 100,000 expired sessions among 1,000,000 live;
* ``transfer_points`` between random pairs of 1,000 loyalty cards, and back and forth on one
  hot pair;
* ``expire_points`` sweeping k = 10, 1,000, 100,000 expiring buckets (one per card) among
  1,000,000 loyalty cards, and a sweep that finds nothing due: the cost follows k, not the
  number of cards;
* bytes per voucher and per live session (tracemalloc).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from vouchercore import Engine, FakeClock


def per_second(run: Callable[[int], None], n: int, repeats: int = 5) -> float:
    """Best-of-*repeats* rate of ``run(n)`` (operations per second)."""
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        run(n)
        best = min(best, time.perf_counter() - start)
    return n / best


def bench_redeem(n: int) -> float:
    engine = Engine()
    engine.create_voucher("GIFT", type="GIFT_VOUCHER", gift={"amount": 10**15})
    redeem = engine.redeem_voucher

    def run(count: int) -> None:
        for _ in range(count):
            redeem("GIFT", credits=1)

    return per_second(run, n)


STACK: list[dict[str, Any]] = [
    {"object": "voucher", "id": "DISCOUNT"},
    {"object": "voucher", "id": "GIFT", "gift": {"credits": 1}},
]


def stacked_engine() -> Engine:
    """An engine holding the stack's two vouchers: a discount (100 off, no quantity limit) and
    a gift card that never runs dry."""
    engine = Engine()
    engine.create_voucher("DISCOUNT", discount={"type": "AMOUNT", "amount_off": 100})
    engine.create_voucher("GIFT", type="GIFT_VOUCHER", gift={"amount": 10**15})
    return engine


def bench_stacked(n: int, repeats: int = 5) -> tuple[float, float]:
    """Rates of the single redeem of a gift card (1 credit) and of the stack of 2 (discount +
    gift card, 1 credit, on a 1,000 order): best of *repeats*, the two interleaved repeat by
    repeat so that a burst of load from elsewhere hits both."""
    single = Engine()
    single.create_voucher("GIFT", type="GIFT_VOUCHER", gift={"amount": 10**15})
    redeem, stack = single.redeem_voucher, stacked_engine().redeem_stacked_discounts

    def run_single(count: int) -> None:
        for _ in range(count):
            redeem("GIFT", credits=1)

    def run_stack(count: int) -> None:
        for _ in range(count):
            stack(STACK, order_amount=1_000)

    best = [0.0, 0.0]
    for _ in range(repeats):
        best[0] = max(best[0], per_second(run_single, n, repeats=1))
        best[1] = max(best[1], per_second(run_stack, n // 2, repeats=1))
    return best[0], best[1]


def bench_lock_redeem(n: int) -> float:
    engine = Engine()
    engine.create_voucher("GIFT", type="GIFT_VOUCHER", gift={"amount": 10**15})
    validate, redeem = engine.validate_voucher, engine.redeem_voucher
    lock = {"type": "LOCK"}

    def run(count: int) -> None:
        for _ in range(count):
            key = validate("GIFT", credits=1, session=lock).session.key  # type: ignore[union-attr]
            redeem("GIFT", credits=1, session_key=key)

    return per_second(run, n)


def bench_floor(n: int) -> float:
    """The least a redeem can do in Python: dict lookup, checks, two counter moves, a
    transaction and a redemption appended as tuples."""
    cards = {"GIFT": {"balance": 10**15, "redeemed": 0, "quantity": None, "active": True}}
    log: list[tuple[int, int, int]] = []
    redemptions: dict[int, tuple[str, int]] = {}
    seq = itertools.count()

    def run(count: int) -> None:
        for _ in range(count):
            card = cards["GIFT"]
            credits = 1
            if card["active"] and card["balance"] >= credits:
                card["balance"] -= credits
                card["redeemed"] += 1
                i = next(seq)
                log.append((i, -credits, card["balance"]))
                redemptions[i] = ("GIFT", credits)

    return per_second(run, n)


def bench_purge(live: int, ks: tuple[int, ...]) -> list[tuple[int, float]]:
    """Median time of ``expire_sessions`` purging k sessions while *live* others stay live.

    One engine holds *live* sessions that last 7 days (100 per card) plus, for each k, a few
    batches of k sessions that expire at known instants; the clock moves to each batch's
    expiry in turn, so every sweep purges exactly k sessions among more than *live*.
    """
    clock = FakeClock()
    engine = Engine(clock=clock, seed=7)
    cards = max(1, live // 100)
    for i in range(cards):
        engine.create_voucher(f"C{i}", type="GIFT_VOUCHER", gift={"amount": 10**12})
    validate = engine.validate_voucher
    for i in range(live):
        validate(f"C{i % cards}", credits=1, session={"type": "LOCK", "ttl": 7, "ttl_unit": "DAYS"})
    repeats = {k: max(3, min(25, 200_000 // (k * 4) or 3)) for k in ks}
    batches: list[tuple[int, int]] = []  # (k, ttl in seconds)
    ttl = 60
    for k in ks:
        for _ in range(repeats[k]):
            for i in range(k):
                validate(
                    f"C{i % cards}",
                    credits=1,
                    session={"type": "LOCK", "ttl": ttl, "ttl_unit": "SECONDS"},
                )
            batches.append((k, ttl))
            ttl += 60
    start = clock.now()
    timings: dict[int, list[float]] = {k: [] for k in ks}
    for k, expires in batches:
        clock.set(start + timedelta(seconds=expires))
        began = time.perf_counter()
        purged = engine.expire_sessions()
        timings[k].append(time.perf_counter() - began)
        assert purged == k, (purged, k)
    return [(k, statistics.median(timings[k])) for k in ks]


def bench_transfers(n: int, cards: int) -> tuple[float, float]:
    """Transfers per second: 1 point between random pairs of *cards* loyalty cards, and 1 point
    back and forth on one hot pair (A→B, B→A, …). The pairs are drawn before timing."""
    engine = Engine()
    codes = [f"L{i:05d}" for i in range(cards)]
    for code in codes:
        engine.create_voucher(code, type="LOYALTY_CARD", loyalty_card={"points": 10**12})
    rng = random.Random(1)
    pairs = [tuple(rng.sample(codes, 2)) for _ in range(n)]
    hot = [(codes[0], codes[1]) if i % 2 == 0 else (codes[1], codes[0]) for i in range(n)]
    transfer = engine.transfer_points

    def run_over(chosen: list[tuple[str, ...]]) -> Callable[[int], None]:
        def run(count: int) -> None:
            for source, destination in itertools.islice(chosen, count):
                transfer(source, destination, 1)

        return run

    random_pairs = per_second(run_over(pairs), n, repeats=3)
    hot_pair = per_second(run_over(hot), n, repeats=3)
    return random_pairs, hot_pair


def bench_expire_points(
    cards: int, ks: tuple[int, ...]
) -> tuple[list[tuple[int, float]], float, float]:
    """Median time of ``expire_points`` expiring k buckets among *cards* loyalty cards, the
    median time of a sweep that finds nothing due, and the seconds it took to make the cards.

    For each k, a few batches: k cards (the first k) each get one bucket of 5 points expiring
    at the batch's instant; the clock moves to each instant in turn, so every sweep expires
    exactly k buckets, while every other card keeps points that never expire.
    """
    clock = FakeClock()
    engine = Engine(clock=clock, seed=11)
    began = time.perf_counter()
    create = engine.create_voucher
    for i in range(cards):
        create(f"L{i:07d}", type="LOYALTY_CARD", loyalty_card={"points": 100})
    made = time.perf_counter() - began
    add = engine.update_voucher_balance
    start = clock.now()
    repeats = {k: max(3, min(15, 100_000 // (k * 4) or 3)) for k in ks}
    batches: list[tuple[int, int]] = []  # (k, seconds after start)
    at = 60
    for k in ks:
        for _ in range(repeats[k]):
            expires = start + timedelta(seconds=at)
            for i in range(k):
                add(f"L{i:07d}", 5, expires_at=expires)
            batches.append((k, at))
            at += 60
    timings: dict[int, list[float]] = {k: [] for k in ks}
    idle: list[float] = []
    for k, after in batches:
        clock.set(start + timedelta(seconds=after))
        gc.collect()
        began = time.perf_counter()
        expired = engine.expire_points()
        timings[k].append(time.perf_counter() - began)
        assert expired == 5 * k, (expired, k)
        began = time.perf_counter()
        nothing = engine.expire_points()  # right after: nothing is due
        idle.append(time.perf_counter() - began)
        assert nothing == 0
    return [(k, statistics.median(timings[k])) for k in ks], statistics.median(idle), made


def memory_per_voucher(n: int) -> tuple[float, float]:
    """Bytes the engine holds per gift card: (excluding, including) the caller's code string."""
    codes = [f"GIFT-{i:08d}" for i in range(n)]
    engine = Engine(clock=FakeClock(), seed=3)
    create = engine.create_voucher
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for code in codes:
        create(code, type="GIFT_VOUCHER", gift={"amount": 5000})
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    code_bytes = sum(len(c) + 49 for c in codes) / n  # what the caller's strings weigh
    per = (after - before) / n
    return per, per + code_bytes


def memory_per_session(n: int, per_voucher: int) -> float:
    """Bytes per live session (generated ``ssn_`` keys), *per_voucher* sessions on each card.

    With one per card, each lock also pays for its card's session ledger (made on the first
    lock); with many per card, the ledgers already exist and only the sessions are counted.
    """
    clock = FakeClock()
    engine = Engine(clock=clock, seed=5)
    cards = max(1, n // per_voucher)
    for i in range(cards):
        engine.create_voucher(f"C{i}", type="GIFT_VOUCHER", gift={"amount": 10**9})
    validate = engine.validate_voucher
    lock = {"type": "LOCK"}
    codes = [f"C{i % cards}" for i in range(n)]
    if per_voucher > 1:
        for i in range(cards):  # make the ledgers first: only sessions are measured
            validate(f"C{i}", credits=1, session=lock)
        codes = codes[cards:]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for code in codes:
        clock.advance(microseconds=1)  # distinct instants, as in real traffic
        validate(code, credits=1, session=lock)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / len(codes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    parser.add_argument(
        "--part",
        choices=("all", "hot", "stacked", "sessions", "points", "memory"),
        default="all",
        help="run one part only: the hot path (with the stacked figure), the stacked figure "
        "alone (beside a single redemption), session expiry, loyalty points, memory",
    )
    args = parser.parse_args()
    run = {args.part} if args.part != "all" else {"hot", "sessions", "points", "memory"}
    n = 20_000 if args.quick else 200_000
    live = 10_000 if args.quick else 1_000_000
    ks = (1, 1_000) if args.quick else (1, 1_000, 100_000)

    if "hot" in run:
        hot_path(n)
    if "stacked" in run:
        print(
            "== stacked redemption: discount (D) + gift card (G) vs redeem_voucher(G), interleaved"
        )
        stacked(n)
    if "sessions" in run:
        print(f"== expire_sessions: k expired among {live:,}+ live sessions (median of repeats)")
        for k, seconds in bench_purge(live, ks):
            print(
                f"k = {k:>7,}: {seconds * 1e3:10.3f} ms  ({seconds / k * 1e6:8.2f} µs per session)"
            )
    if "points" in run:
        points(n, quick=args.quick)
    if "memory" in run:
        memory(quick=args.quick)


def hot_path(n: int) -> None:
    """redeem and lock+redeem beside the plain-dict floor."""
    floor = bench_floor(n)
    redeem = bench_redeem(n)
    pair = bench_lock_redeem(n // 2)
    print("== in-memory hot path (single thread, system clock, secure session keys)")
    print(f"floor (plain dicts) redeem : {floor:>12,.0f} /s  {1e6 / floor:6.2f} µs")
    print(
        f"engine redeem_voucher      : {redeem:>12,.0f} /s  {1e6 / redeem:6.2f} µs"
        f"  floor/engine = {floor / redeem:5.1f}x   (target ≥ 200,000 /s)"
    )
    print(
        f"engine lock+redeem pair    : {pair:>12,.0f} /s  {1e6 / pair:6.2f} µs"
        f"  floor/engine = {floor / pair:5.1f}x   (target ≥ 80,000 /s)"
    )
    print("== stacked redemption: discount (D) + gift card (G) vs redeem_voucher(G), interleaved")
    stacked(n)


def stacked(n: int) -> None:
    """A stack of 2 (discount + gift card) beside a single redeem of the gift card."""
    single, stack = bench_stacked(n // 2)
    print(f"single redeem_voucher(G)   : {single:>12,.0f} /s  {1e6 / single:6.2f} µs")
    print(
        f"stack of 2 (D + G)         : {stack:>12,.0f} /s  {1e6 / stack:6.2f} µs"
        f"  stack/single = {single / stack:4.2f}x   (target ≤ 1.5x)"
    )


def points(n: int, *, quick: bool) -> None:
    """transfer_points throughput, and expire_points for k buckets among many cards."""
    t = n // 4
    random_pairs, hot_pair = bench_transfers(t, 1_000)
    print(f"== transfer_points (1 point, {t:,} transfers, best of 3)")
    print(f"random pairs of 1,000 cards : {random_pairs:>10,.0f} /s  {1e6 / random_pairs:6.2f} µs")
    print(f"one hot pair, back and forth: {hot_pair:>10,.0f} /s  {1e6 / hot_pair:6.2f} µs")

    cards = 10_000 if quick else 1_000_000
    point_ks = (10, 1_000) if quick else (10, 1_000, 100_000)
    swept, idle, made = bench_expire_points(cards, point_ks)
    print(
        f"== expire_points: k expiring buckets among {cards:,} loyalty cards "
        f"(median of repeats; cards made in {made:.0f} s)"
    )
    for k, seconds in swept:
        print(f"k = {k:>7,}: {seconds * 1e3:10.3f} ms  ({seconds / k * 1e6:8.2f} µs per bucket)")
    print(f"nothing due : {idle * 1e6:10.2f} µs")


def memory(*, quick: bool) -> None:
    """Bytes per voucher and per live session."""
    m = 20_000 if quick else 200_000
    sizes = (20_000,) if quick else (100_000, 200_000, 1_000_000)
    print(f"== memory (gift cards; sessions: {m:,} spread 1 and 100 per card)")
    for size in sizes:
        per_voucher, with_code = memory_per_voucher(size)
        print(
            f"per voucher, {size:>9,} cards: {per_voucher:4.0f} B held by the engine "
            f"({with_code:.0f} B with the caller's code string)   (target ≤ 350 B)"
        )
    for spread in (1, 100):
        print(
            f"per live session, {spread:>3} per card: {memory_per_session(m, spread):6.0f} B"
            "   (target ≤ 300 B)"
        )


if __name__ == "__main__":
    main()
