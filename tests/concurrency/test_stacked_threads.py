"""Threads redeem overlapping stacks of vouchers on one engine (issue 12: stacked redemptions).

The race of ``tests/processes/test_stacked_race.py`` with threads on one engine instead of
processes (memory store and SQLite): four limited discount vouchers and two gift cards,
stacks of 2–3 of them in every order, plain, keyed (with retries) or through a stacked LOCK
and its session key, rollbacks of whole stacks and refused rollbacks of a child alone, then a
drain (see ``tests/processes/stack_workers``). A second race crosses the same two stacks in
opposite orders from many threads at once: A+B against B+A, and the gift cards G+H against
H+G — each thread holds one voucher of the pair and wants the other, the classic lock cycle.

A hang FAILS the test (the threads are joined within the liveness bound of
``tests/liveness.py``). The checks are those of
:func:`~tests.processes.stack_workers.check_stacks`: every acknowledged stack stored exactly
once as told, no partial stack, no over-redemption, no card below 0, no lock left,
``audit().ok``. The interpreter's switch interval is cut to a microsecond (``fast_switching``)
so threads are preempted inside operations as often as possible.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from tests.liveness import LIVENESS, bounded
from tests.processes.stack_workers import SHAPES, StackTerminal, check_stacks, create_vouchers
from tests.processes.stack_workers import play as play_stacks
from vouchercore import Engine

pytestmark = pytest.mark.slow

#: the crossing race: even threads take the pairs one way, odd threads the other way
CROSSING = ((("A", "B"), ("G", "H")), (("B", "A"), ("H", "G")))
#: main-phase calls per thread: the memory store takes many more in the same time
CALLS = {"memory": 200, "sqlite": 40}


def race(
    engine: Engine,
    shapes: Sequence[Sequence[Sequence[str]]],
    calls: int,
    *,
    shuffle: bool,
    shared: bool,
    seed: int,
) -> list[dict[str, Any]]:
    """One thread per entry of *shapes* (the stacks it redeems; with *shared*, some under
    keys every thread sends), released together; every thread's acknowledgements. Fails if
    the threads are not all done within the bound."""
    create_vouchers(engine)
    workers = len(shapes)
    start, drain = threading.Barrier(workers), threading.Barrier(workers)
    acks: list[dict[str, Any]] = []  # list.append is atomic: the threads share it

    def run(index: int) -> None:
        terminal = StackTerminal(
            engine, f"t{index}", random.Random(seed * 100 + index), acks.append
        )
        try:
            start.wait(timeout=30)
            play_stacks(terminal, calls, shapes[index], shuffle=shuffle, shared=shared, drain=drain)
        except BaseException as crash:  # surfaced by the check
            drain.abort()  # the others stop waiting for this one
            acks.append({"op": "crash", "by": terminal.name, "error": repr(crash)})

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(workers)]
    for thread in threads:
        thread.start()

    def join_all() -> None:
        for thread in threads:
            thread.join()

    bounded(join_all, f"{workers} threads redeeming stacks", 4 * LIVENESS)
    return acks


@pytest.mark.parametrize("engine", ["memory", "sqlite"], indirect=True)
def test_threads_redeem_overlapping_stacks_all_or_nothing_and_never_over_redeem(
    fast_switching: None, engine: Engine, request: pytest.FixtureRequest
) -> None:
    workers = 6
    calls = CALLS[request.node.callspec.params["engine"]]
    acks = race(engine, [SHAPES] * workers, calls, shuffle=True, shared=True, seed=21)
    done = check_stacks(engine, acks, workers)
    # the first stack to commit met full vouchers; the drain ended on refusals
    assert done["stacked"] > 0 and done["failed"] >= workers, done


@pytest.mark.parametrize("engine", ["memory", "sqlite"], indirect=True)
def test_crossing_stacks_a_b_against_b_a_from_many_threads_never_deadlock(
    fast_switching: None, engine: Engine, request: pytest.FixtureRequest
) -> None:
    workers = 10
    shapes = [CROSSING[i % 2] for i in range(workers)]
    calls = CALLS[request.node.callspec.params["engine"]]
    acks = race(engine, shapes, calls, shuffle=False, shared=False, seed=22)
    done = check_stacks(engine, acks, workers)
    assert done["stacked"] > 0 and done["failed"] >= workers, done
    # both orders were asked for, as sent
    asked = {tuple(code for code, _ in a["stack"]) for a in acks if a["op"] == "redeem"}
    assert {("A", "B"), ("B", "A"), ("G", "H"), ("H", "G")} <= asked
