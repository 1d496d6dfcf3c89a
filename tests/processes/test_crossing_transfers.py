"""Four OS processes cross points transfers on three loyalty cards, with idempotent retries
(README "Loyalty points", "Concurrency and the audit"; issue 4 items 3–4), on a shared SQLite
file and on PostgreSQL.

Each process opens its own engine on the shared store (two without an id seed, two with seeds
of their own), waits at a barrier, then makes keyed calls on the cards A, B, C: transfers along
all six edges (A→B and B→A at once, and the ring both ways), additions of points that expire
a fraction of a second later, and ``expire_points()`` sweeps; a third of the calls are sent
again at once with the same key and request, some again later, and every tenth call of each
process is a key all four processes send with one request (see ``transfer_workers``). A
process still running after the deadline is killed (a stuck one first dumps its stacks): a
deadlock fails the test, it does not hang it.

What the processes were told, set against the store:

- every key's successful answers are one and the same (transaction ids): each acknowledged
  transfer and addition happened exactly once, shared keys included, and no retry was applied
  twice;
- the log's ``POINTS_TRANSFER_OUT``/``IN`` are exactly the acknowledged transfers' — one OUT on
  the source, one IN on the destination, of the amount, naming each other; refused transfers
  wrote nothing; the log's additions are exactly the acknowledged ones;
- points are conserved: Σ balances + Σ expired == Σ opening + Σ added, no balance ever below 0;
- ``audit().ok``.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.processes.transfer_workers import CARDS, crossing_worker, shared_request
from tests.processes.workers import StoreSpec, open_engine, read_acks, run_to_the_end
from vouchercore import TransactionType
from vouchercore.testing import all_transactions

pytestmark = [pytest.mark.processes, pytest.mark.slow]

WORKERS = 4
OPENING = 400
CALLS = 150  # keyed calls per process (retries come on top)
SEEDS = (None, None, 8_001, 8_002)
DEADLINE = 180.0


def run_crossing(spec: StoreSpec, tmp_path: Path) -> list[dict[str, Any]]:
    with open_engine(spec, seed=3) as engine:
        for code in CARDS:
            engine.create_voucher(code, type="LOYALTY_CARD", loyalty_card={"points": OPENING})
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(WORKERS)
    paths = [str(tmp_path / f"cross{i}.jsonl") for i in range(WORKERS)]
    processes = [
        context.Process(
            target=crossing_worker,
            args=(spec, f"p{i}", SEEDS[i], 2_000 + i, start, path, CALLS),
            daemon=True,
        )
        for i, path in enumerate(paths)
    ]
    run_to_the_end(processes, DEADLINE)
    acks = [a for path in paths for a in read_acks(path)]
    crashes = [a["error"] for a in acks if a["op"] == "crash"]
    assert not crashes, crashes[0]
    assert [p.exitcode for p in processes] == [0] * WORKERS, (
        "a process did not finish in time (deadlock?) or failed: see its stderr for the stacks"
    )
    assert sum(1 for a in acks if a["op"] == "finished") == WORKERS
    return acks


def test_four_processes_cross_transfers_with_retries_exactly_once(
    store_spec: StoreSpec, tmp_path: Path
) -> None:
    acks = run_crossing(store_spec, tmp_path)
    doubles = [a for a in acks if a["op"] == "double"]
    assert not doubles, f"{len(doubles)} retries answered differently, e.g. {doubles[:2]}"

    # per key: every successful answer is the same one
    answers: dict[str, set[tuple[Any, ...]]] = defaultdict(set)
    requests: dict[str, set[tuple[Any, ...]]] = defaultdict(set)
    for a in acks:
        if a["op"] in ("transfer", "add"):
            requests[a["key"]].add((a["op"], a.get("source"), a.get("destination"), a["points"]))
            if a["ok"]:
                answers[a["key"]].add((a.get("out"), a.get("into"), a.get("tx")))
    assert all(len(r) == 1 for r in requests.values())  # one request per key, as sent
    twice = {key: found for key, found in answers.items() if len(found) > 1}
    assert not twice, f"one key, several effects: {sorted(twice.items())[:3]}"
    first = {}
    for a in acks:
        if a["op"] in ("transfer", "add") and a["ok"]:
            first.setdefault(a["key"], a)
    transfers = {key: a for key, a in first.items() if a["op"] == "transfer"}
    additions = {key: a for key, a in first.items() if a["op"] == "add"}
    refusals = Counter(a["error"] for a in acks if a["op"] == "transfer" and not a["ok"])
    assert set(refusals) <= {"loyalty_card_points_exceeded"}, refusals
    add_errors = [a for a in acks if a["op"] == "add" and not a["ok"]]
    assert not add_errors, add_errors[:3]

    # the workload did what it should: crossing transfers, retries, shared keys, refusals
    sent = Counter(a["key"] for a in acks if a["op"] == "transfer")
    assert sum(1 for n in sent.values() if n > 1) > 50  # keys sent more than once
    shared = [key for key in transfers if key.startswith("shared.")]
    assert shared and all(sent[key] >= WORKERS for key in shared)
    for key in shared:
        j = int(key.split(".")[1])
        a = transfers[key]
        assert (a["source"], a["destination"], a["points"]) == shared_request(j)
    directions = Counter((a["source"], a["destination"]) for a in transfers.values())
    assert len(directions) == 6, directions
    assert refusals["loyalty_card_points_exceeded"] > 0
    assert len(transfers) > WORKERS * CALLS // 3

    with open_engine(store_spec) as engine:
        cards = {code: engine.get_voucher(code) for code in CARDS}
        logs = {code: all_transactions(engine, code) for code in CARDS}
        report = engine.audit()
    ids = {code: card.id for code, card in cards.items()}
    by_id = {tx.id: tx for log in logs.values() for tx in log}
    assert len(by_id) == sum(len(log) for log in logs.values())

    # every acknowledged transfer once in the log, as told; and no other transfer
    for key, a in transfers.items():
        out, into = by_id[a["out"]], by_id[a["into"]]
        assert out.type is TransactionType.POINTS_TRANSFER_OUT
        assert into.type is TransactionType.POINTS_TRANSFER_IN
        assert (out.voucher_id, out.amount, out.source_id) == (ids[a["source"]], -a["points"], key)
        assert (into.voucher_id, into.amount) == (ids[a["destination"]], a["points"])
        assert out.related_transaction_id == into.id and into.related_transaction_id == out.id
    kinds: dict[TransactionType, set[str]] = defaultdict(set)
    for tx in by_id.values():
        kinds[tx.type].add(tx.id)
    assert kinds[TransactionType.POINTS_TRANSFER_OUT] == {a["out"] for a in transfers.values()}
    assert kinds[TransactionType.POINTS_TRANSFER_IN] == {a["into"] for a in transfers.values()}
    assert kinds[TransactionType.POINTS_ADDITION] == {a["tx"] for a in additions.values()}

    # conservation, and never below zero
    added = sum(a["points"] for a in additions.values())
    balances = {code: card.loyalty_card for code, card in cards.items()}
    total = sum(b.balance for b in balances.values() if b is not None)
    expired = sum(b.expired_points for b in balances.values() if b is not None)
    assert total + expired == len(CARDS) * OPENING + added, (total, expired, added)
    assert expired > 0  # points expired while transfers moved them (lazily or swept)
    assert all(tx.balance >= 0 for tx in by_id.values())
    for code, log in logs.items():
        b = balances[code]
        assert b is not None and b.balance >= 0
        assert log[-1].balance == b.balance
        expirations = [tx for tx in log if tx.type is TransactionType.POINTS_EXPIRATION]
        assert -sum(tx.amount for tx in expirations) == b.expired_points
    assert report.ok, str(report)
