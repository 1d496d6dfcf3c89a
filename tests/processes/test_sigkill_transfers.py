"""Points transfers and accruals SIGKILLed at random moments, then retried with their
idempotency keys, apply exactly once and move points whole (README "Loyalty points",
"Concurrency and the audit": the log replays to each balance, audit invariant I3, and a failed
call changes nothing).

Four processes transfer points between four loyalty cards (crossing transfers all the time) and
accrue points, every call under an idempotency key. In rounds one of them is SIGKILLed a random
few tens of milliseconds into its work and a successor takes its slot; the successor first sends
the call its predecessor had in flight again, same request, same key (as a till retries after a
crash). The checks, after a clean stop:

- the audit is clean and no points were made or lost: the cards' balances sum to the opening
  points plus every accrual;
- each transfer is whole: one ``POINTS_TRANSFER_OUT`` and one ``POINTS_TRANSFER_IN`` naming each
  other, equal and opposite, on the two cards the call named;
- every call applied exactly once: the tags in the store are exactly the acknowledged
  successful calls, each once (a kill between the commit and the acknowledgement, then the
  retry, must not apply twice), and every acknowledged transaction id is stored.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.processes.crash_transfer_worker import CARDS, OPENING, transfer_crash_worker
from tests.processes.workers import StoreSpec, open_engine, read_acks
from vouchercore import TransactionType
from vouchercore.testing import all_transactions

pytestmark = [pytest.mark.processes, pytest.mark.slow]

WORKERS = 4
KILLS = 30
SEED = int(os.environ.get("VOUCHERCORE_PROCESSES_SEED", "20260301"))
TIME_LIMIT = 90.0


def _kill_rounds(spec: StoreSpec, tmp_path: Path) -> tuple[list[str], int]:
    """Run the workers through KILLS kills; the ack files of every incarnation, and how many
    were SIGKILLed."""
    rng = random.Random(SEED)
    with open_engine(spec, seed=1) as engine:
        for code in CARDS:
            engine.create_voucher(code, type="LOYALTY_CARD", loyalty_card={"points": OPENING})
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(
        ["tests.processes.crash_transfer_worker", "vouchercore.stores.postgres"]
    )
    progress = context.Array("q", WORKERS, lock=False)
    stop = context.RawValue("b", 0)
    paths: list[str] = []

    def launch(slot: int, previous: str | None) -> tuple[Any, str]:
        name = f"w{slot}i{len(paths)}"
        path = str(tmp_path / f"{name}.jsonl")
        paths.append(path)
        progress[slot] = 0
        process = context.Process(
            target=transfer_crash_worker,
            args=(spec, slot, name, previous, rng.randrange(2**32), progress, stop, path),
            daemon=True,
        )
        process.start()
        return process, path

    running = [launch(slot, None) for slot in range(WORKERS)]
    deadline = time.monotonic() + TIME_LIMIT
    kills = 0
    try:
        while kills < KILLS:
            slot = rng.randrange(WORKERS)
            calls = rng.randint(1, 5)
            while progress[slot] < calls:
                for other in range(WORKERS):
                    process, path = running[other]
                    exitcode = process.exitcode  # read once: it may change meanwhile
                    if exitcode == -signal.SIGKILL:  # killed itself: a successor
                        running[other] = launch(other, path)
                    else:
                        assert exitcode in (None, 0), "a worker crashed"
                if time.monotonic() > deadline:
                    for other, _ in running:
                        if other.is_alive():
                            os.kill(other.pid, signal.SIGUSR1)  # stacks on stderr
                    time.sleep(1)
                    pytest.fail(f"workers stopped making progress (deadlock?): {progress[:]}")
                time.sleep(0.001)
            time.sleep(rng.uniform(0.0, 0.05))
            victim, path = running[slot]
            victim.kill()  # nothing if it has just killed itself
            victim.join()
            kills += 1
            running[slot] = launch(slot, path)
            for other in range(WORKERS):  # successors for the workers that killed themselves
                process, path = running[other]
                if process.exitcode == -signal.SIGKILL:
                    running[other] = launch(other, path)
        time.sleep(0.3)
        stop.value = 1
        for slot in range(WORKERS):
            while True:
                process, path = running[slot]
                process.join(timeout=60)
                if process.exitcode != -signal.SIGKILL:
                    break
                running[slot] = launch(slot, path)  # killed itself: finish its call, stop
            assert process.exitcode == 0, "a worker did not stop cleanly"
    finally:
        for process, _ in running:
            if process.is_alive():
                process.kill()
                process.join()
    return paths, kills


def test_killed_and_retried_transfers_apply_exactly_once_and_whole(
    crash_store_spec: StoreSpec, tmp_path: Path
) -> None:
    started = time.monotonic()
    paths, kills = _kill_rounds(crash_store_spec, tmp_path)
    lines = [line for path in paths for line in read_acks(path)]
    crashes = [line for line in lines if line["op"] == "crash"]
    assert not crashes, crashes[:1]
    intents = {line["tag"]: line for line in lines if line["op"] == "intent"}
    answers = [line for line in lines if line["op"] != "intent"]
    answered = Counter(a["tag"] for a in answers)
    # every intent was answered (by its caller or, after a kill, by the successor's retry);
    # a retry of a call that was applied answers it once more, with the same result
    assert set(answered) == set(intents)
    by_tag: dict[str, dict[str, Any]] = {}
    for answer in answers:
        first = by_tag.setdefault(answer["tag"], answer)
        assert answer == first, f"a retry answered differently: {first} then {answer}"

    with open_engine(crash_store_spec) as engine:
        report = engine.audit()
        cards = {code: engine.get_voucher(code) for code in CARDS}
        log = [t for code in CARDS for t in all_transactions(engine, code)]
    assert report.ok, str(report)

    # points neither made nor lost
    accrued = sum(t.amount for t in log if t.type is TransactionType.POINTS_ACCRUAL)
    balances = sum(v.loyalty_card.balance for v in cards.values())  # type: ignore[union-attr]
    assert balances == len(CARDS) * OPENING + accrued
    assert all(v.loyalty_card.balance >= 0 for v in cards.values())  # type: ignore[union-attr]

    # each transfer whole: OUT and IN naming each other, on the cards the call named
    ids = {v.id: code for code, v in cards.items()}
    outs = {t.id: t for t in log if t.type is TransactionType.POINTS_TRANSFER_OUT}
    ins = {t.id: t for t in log if t.type is TransactionType.POINTS_TRANSFER_IN}
    assert len(outs) == len(ins)
    for out in outs.values():
        into = ins[out.related_transaction_id]  # type: ignore[index]
        assert into.related_transaction_id == out.id
        assert into.amount == -out.amount > 0
        assert into.source_id == out.source_id
        intent = intents[out.source_id]  # type: ignore[index]
        assert (ids[out.voucher_id], ids[into.voucher_id], into.amount) == (
            intent["source"],
            intent["destination"],
            intent["points"],
        )

    # every call applied exactly once, as acknowledged
    applied = Counter(
        t.source_id
        for t in log
        if t.type in (TransactionType.POINTS_TRANSFER_OUT, TransactionType.POINTS_ACCRUAL)
    )
    assert set(applied.values()) <= {1}, [tag for tag, n in applied.items() if n > 1][:5]
    succeeded = {tag for tag, answer in by_tag.items() if answer["ok"]}
    assert set(applied) == succeeded
    stored = {t.id for t in log}
    told = [a[f] for a in by_tag.values() if a["ok"] for f in ("out", "in", "tx") if f in a]
    assert set(told) <= stored, "an acknowledged transaction is not in the store"
    refused = Counter(a["error"] for a in by_tag.values() if not a["ok"])
    assert set(refused) <= {"loyalty_card_points_exceeded"}, refused
    written = Counter(line["tag"] for line in lines if line["op"] == "intent")
    retried = sum(1 for n in written.values() if n > 1)
    print(
        f"\n{crash_store_spec[0]}: {kills} kills, {len(paths)} incarnations, {len(by_tag)} calls "
        f"({len(outs)} transfers, {len(applied) - len(outs)} accruals, {sum(refused.values())} "
        f"refused), {retried} retried by a successor, "
        f"{time.monotonic() - started:.1f} s"
    )
