"""Four OS processes redeem overlapping stacks of vouchers at once (issue 12: stacked
redemptions), on a shared SQLite file and on PostgreSQL.

Four limited discount vouchers A, B, C, D and two gift cards G, H with limited balances. Each
process opens its own engine on the shared store (two without an id seed, two with seeds of
their own), waits at a barrier, then redeems stacks of 2–3 of them — A+B, B+A+C, C+D+A, B+D,
A+G, B+C+H, G+H, D+H+G, C+G, each shuffled per call, so the same vouchers are taken in
opposite orders by different processes: plain, under an idempotency key (sent again at once or
later), or through a stacked validation with a LOCK and a redemption with its session key; it
rolls back some of its own stacks and tries to roll back a child alone. After a second barrier
every process drains the vouchers one at a time until refused (see ``stack_workers``).

A process still running after the liveness bound is killed, after dumping its stacks: a
deadlock fails the test, it does not hang it. What the processes were told, set against the
store at rest (:func:`~tests.processes.stack_workers.check_stacks`): every acknowledged stack
stored exactly once as told (no partial stack: a SUCCEEDED parent has all its children
SUCCEEDED, a FAILED one none), no over-redemption (each voucher's SUCCEEDED children are its
``redeemed_quantity``, exactly its quantity after the drain), no card below 0, no lock left,
and ``audit().ok``.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from tests.liveness import LIVENESS
from tests.processes.stack_workers import check_stacks, create_vouchers, stack_worker
from tests.processes.workers import StoreSpec, open_engine, read_acks, run_to_the_end

pytestmark = pytest.mark.processes

WORKERS = 4
CALLS = 40  # main-phase calls per process (retries and the drain come on top)
SEEDS = (None, None, 9_001, 9_002)
STUCK = 4 * LIVENESS  # a process still running then is stuck: it dumps its stacks and exits


def test_four_processes_redeem_crossing_stacks_all_or_nothing_and_never_over_redeem(
    store_spec: StoreSpec, tmp_path: Path
) -> None:
    with open_engine(store_spec, seed=5) as engine:
        create_vouchers(engine)
    context = multiprocessing.get_context("spawn")
    start, drain = context.Barrier(WORKERS), context.Barrier(WORKERS)
    paths = [str(tmp_path / f"stack{i}.jsonl") for i in range(WORKERS)]
    processes = [
        context.Process(
            target=stack_worker,
            args=(store_spec, f"p{i}", SEEDS[i], 3_000 + i, start, drain, path, CALLS, STUCK),
            daemon=True,
        )
        for i, path in enumerate(paths)
    ]
    run_to_the_end(processes, STUCK + 10)
    acks = [a for path in paths for a in read_acks(path)]
    crashes = [a["error"] for a in acks if a["op"] == "crash"]
    assert not crashes, crashes[0]
    assert [p.exitcode for p in processes] == [0] * WORKERS, (
        "a process did not finish within the liveness bound (deadlock?) or failed: "
        "see its stderr for the stacks"
    )
    with open_engine(store_spec) as engine:
        done = check_stacks(engine, acks, WORKERS)
    # the first stack to commit met full vouchers; the drain ended on refusals
    assert done["stacked"] > 0 and done["failed"] >= WORKERS, done
