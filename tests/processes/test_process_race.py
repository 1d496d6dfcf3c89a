"""Four OS processes race on one hot limited voucher and one gift card (README "Validation",
"LOCK sessions", "Redemption", "Rollback", "Balance", "Concurrency and the audit").

Each process opens its own engine on the shared store (a SQLite file, or a PostgreSQL schema),
two without a seed and two with different seeds, and waits at a barrier so all four start
together. The main phase mixes validate(LOCK)→redeem(key), validate(LOCK)→release, plain
redemptions, rollbacks of their own redemptions and balance additions/removals; then, after a
second barrier, every process drains both vouchers (HOT until ``quantity_exceeded``, the card
until even 1 credit is refused), so demand exceeds supply and the final totals are exact.

Each process acknowledges every call (what it was told). The assertions are on what the
processes were told, set against what the store holds:

- HOT: successful minus rolled-back acknowledged redemptions is exactly the quantity (never
  more: no over-redemption; never less: nothing lost), and equals the stored counter;
- the card: its balance is exactly opening − Σ redeemed + Σ refunded + Σ added − Σ removed
  (acknowledged), which the drain brings to exactly 0, and no transaction balance is negative;
- every acknowledged redemption is in the store's log exactly once (amount, status, tag), and
  the log has no success nobody was told about; failed attempts match one for one;
- every acknowledged transaction is in the log exactly once, and the log holds no other;
- a held lock always redeems (its own lock counts as available);
- ``audit().ok``.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.processes.workers import (
    CARD,
    DISCOUNT,
    HOT,
    StoreSpec,
    open_engine,
    race_worker,
    read_acks,
    run_to_the_end,
)
from vouchercore import RedemptionStatus
from vouchercore.testing import all_transactions

pytestmark = [pytest.mark.processes, pytest.mark.slow]

WORKERS = 4
HOT_QUANTITY = 100
CARD_OPENING = 30_000
CALLS = 150  # main-phase calls per process
SEEDS = (None, None, 7_001, 7_002)  # each process: no seed, or a seed of its own


def run_race(spec: StoreSpec, tmp_path: Path) -> dict[str, list[dict[str, Any]]]:
    """Start the four processes together; their acknowledgements by incarnation name."""
    with open_engine(spec, seed=1) as engine:
        engine.create_voucher(
            HOT, discount={"type": "AMOUNT", "amount_off": DISCOUNT}, quantity=HOT_QUANTITY
        )
        engine.create_voucher(CARD, type="GIFT_VOUCHER", gift={"amount": CARD_OPENING})
    context = multiprocessing.get_context("spawn")
    start, drain = context.Barrier(WORKERS), context.Barrier(WORKERS)
    paths = {f"race{i}": str(tmp_path / f"race{i}.jsonl") for i in range(WORKERS)}
    processes = [
        context.Process(
            target=race_worker,
            args=(spec, name, SEEDS[i], 1_000 + i, start, drain, path, CALLS),
            daemon=True,
        )
        for i, (name, path) in enumerate(paths.items())
    ]
    run_to_the_end(processes, 240)
    acks = {name: read_acks(path) for name, path in paths.items()}
    crashes = [a["error"] for items in acks.values() for a in items if a["op"] == "crash"]
    assert not crashes, crashes[0]
    assert [p.exitcode for p in processes] == [0] * WORKERS
    return acks


def test_four_processes_never_over_redeem_or_overspend(
    store_spec: StoreSpec, tmp_path: Path
) -> None:
    acks = run_race(store_spec, tmp_path)
    everything = [a for items in acks.values() for a in items]
    assert not [a for a in everything if a["op"] == "held_lock_refused"], "a held lock was refused"

    redeemed = [a for a in everything if a["op"] == "redeem" and a["ok"]]
    by_id = {a["id"]: a for a in redeemed}
    assert len(by_id) == len(redeemed), "one redemption id acknowledged twice"
    rollbacks = [a for a in everything if a["op"] == "rollback"]
    assert all(a["ok"] for a in rollbacks), "a process could not roll back its own redemption"
    rolled_back = {a["redemption"]: a for a in rollbacks}
    assert len(rolled_back) == len(rollbacks), "a redemption rolled back twice"
    assert set(rolled_back) <= set(by_id)
    refused = Counter(
        (a["code"], a["error"]) for a in everything if a["op"] == "redeem" and not a["ok"]
    )

    # the workload raced where it should: both vouchers ran out, locks and rollbacks happened
    assert refused[(HOT, "quantity_exceeded")] >= WORKERS
    assert refused[(CARD, "gift_amount_exceeded")] >= WORKERS
    assert sum(1 for a in everything if a["op"] == "lock" and a["ok"]) > 50
    assert len(rolled_back) > 20
    for items in acks.values():  # every process's drain ended on a refusal of the right kind
        last = {a["code"]: a for a in items if a["op"] == "redeem"}
        assert last[HOT]["error"] == "quantity_exceeded"
        assert last[CARD]["error"] == "gift_amount_exceeded"

    with open_engine(store_spec) as engine:
        hot, card = engine.get_voucher(HOT), engine.get_voucher(CARD)
        log = [*engine.list_redemptions(HOT), *engine.list_redemptions(CARD)]
        transactions = all_transactions(engine, CARD)
        report = engine.audit()

    # HOT: exactly the quantity, never more
    hot_redeemed = sum(1 for a in redeemed if a["code"] == HOT)
    hot_rolled_back = sum(1 for rid in rolled_back if by_id[rid]["code"] == HOT)
    assert hot_redeemed - hot_rolled_back == HOT_QUANTITY, (
        f"{hot_redeemed} acknowledged HOT redemptions − {hot_rolled_back} rollbacks "
        f"≠ quantity {HOT_QUANTITY}"
    )
    assert hot.redeemed_quantity == HOT_QUANTITY
    assert hot.locked_quantity == 0
    assert all(a["amount"] == DISCOUNT for a in redeemed if a["code"] == HOT)

    # every acknowledged redemption in the log exactly once, and no other success
    ids = Counter(r.id for r in log)
    assert max(ids.values()) == 1, "a redemption id appears twice in the log"
    stored = {r.id: r for r in log if r.status is not RedemptionStatus.FAILED}
    assert set(stored) == set(by_id), (
        f"lost: {sorted(set(by_id) - set(stored))[:5]}, "
        f"unacknowledged: {sorted(set(stored) - set(by_id))[:5]}"
    )
    for rid, ack in by_id.items():
        redemption = stored[rid]
        assert redemption.amount == ack["amount"]
        assert redemption.metadata == {"tag": ack["tag"]}
        assert redemption.transaction_id == ack["tx"]
        expected = (
            RedemptionStatus.ROLLED_BACK if rid in rolled_back else RedemptionStatus.SUCCEEDED
        )
        assert redemption.status is expected
        if rid in rolled_back:
            assert redemption.rollback_id == rolled_back[rid]["id"]
    failed = Counter(
        (r.voucher_code, r.failure_code) for r in log if r.status is RedemptionStatus.FAILED
    )
    assert failed == refused

    # the card: exact totals from what the processes were told
    spent = sum(a["amount"] for a in redeemed if a["code"] == CARD)
    refunded = sum(-a["amount"] for rid, a in rolled_back.items() if by_id[rid]["code"] == CARD)
    assert refunded == sum(
        by_id[rid]["amount"] for rid in rolled_back if by_id[rid]["code"] == CARD
    )
    changes = [a for a in everything if a["op"] == "balance" and a["ok"]]
    added = sum(a["amount"] for a in changes if a["amount"] > 0)
    removed = sum(-a["amount"] for a in changes if a["amount"] < 0)
    assert removed > 0
    assert card.gift is not None
    assert card.gift.balance == CARD_OPENING - spent + refunded + added - removed
    assert card.gift.balance == 0  # drained: not one credit more, not one less
    assert card.gift.amount == CARD_OPENING + added

    # every acknowledged transaction exactly once, and no other; the log replays, never < 0
    acknowledged_tx = Counter(
        a["tx"] for a in everything if a.get("ok") and a.get("tx") is not None
    )
    assert max(acknowledged_tx.values()) == 1
    assert Counter(t.id for t in transactions) == acknowledged_tx
    balance = CARD_OPENING
    for transaction in transactions:
        balance += transaction.amount
        assert transaction.balance == balance >= 0, transaction
    assert balance == card.gift.balance

    assert report.ok, str(report)
