"""A deterministic interleaving across processes, in the spirit of saleor's race tests.

Process A redeems the last unit of a voucher (quantity 1) but is stopped just before its commit
— its unit of work open, the voucher's lock held. Process B then redeems the same voucher: it
must wait for A (not decide on the state it read before A's write), and, once A commits, be
refused with ``quantity_exceeded``. Without the lock B would redeem too: an over-redemption.

On PostgreSQL the lock is the voucher's row: a process redeeming ANOTHER voucher meanwhile does
not wait (README: "Concurrency and the audit"). SQLite has one writer per file, so there every
unit of work waits.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest

from tests.processes.workers import (
    DISCOUNT,
    HOT,
    OTHER,
    StoreSpec,
    open_engine,
    paused_redeemer,
    redeemer,
)
from vouchercore import RedemptionStatus

pytestmark = [pytest.mark.processes, pytest.mark.slow]

WAIT = 1.0  # seconds B must still be waiting while A holds the voucher


def _result(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as file:
        result: dict[str, Any] = json.load(file)
    return result


def test_a_redemption_held_open_in_one_process_makes_another_wait(
    store_spec: StoreSpec, tmp_path: Path
) -> None:
    with open_engine(store_spec, seed=1) as engine:
        for code in (HOT, OTHER):
            engine.create_voucher(
                code, discount={"type": "AMOUNT", "amount_off": DISCOUNT}, quantity=1
            )
    context = multiprocessing.get_context("spawn")
    paused, resume = context.Event(), context.Event()
    b_ready, b_go, b_done = context.Event(), context.Event(), context.Event()
    c_ready, c_go, c_done = context.Event(), context.Event(), context.Event()
    a = context.Process(
        target=paused_redeemer,
        args=(store_spec, HOT, paused, resume, str(tmp_path / "a.json")),
        daemon=True,
    )
    b = context.Process(
        target=redeemer,
        args=(store_spec, HOT, b_ready, b_go, b_done, str(tmp_path / "b.json")),
        daemon=True,
    )
    c = context.Process(
        target=redeemer,
        args=(store_spec, OTHER, c_ready, c_go, c_done, str(tmp_path / "c.json")),
        daemon=True,
    )
    processes = [a, b, c]
    postgres = store_spec[0] == "postgres"
    try:
        b.start()
        c.start()
        # B and C connect before A takes the voucher (opening a SQLite store writes)
        assert b_ready.wait(60) and c_ready.wait(60)
        a.start()
        assert paused.wait(60), "A never reached its commit"

        go_at = time.monotonic()
        b_go.set()  # A holds HOT: B must wait
        assert not b_done.wait(WAIT), "B finished while A held the voucher: it did not wait"
        if postgres:  # another voucher's redemption does not wait for HOT's lock
            c_go.set()
            assert c_done.wait(30), "C waited for A although it redeems another voucher"
            assert not b_done.is_set()

        resumed_at = time.monotonic()
        resume.set()  # A commits: B may go on, and must see A's redemption
        for process in processes:
            if process is c and not postgres:
                c_go.set()
            process.join(timeout=60)
            assert process.exitcode == 0, process
    finally:
        resume.set()
        b_go.set()
        c_go.set()
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()

    first, second, other = (_result(tmp_path / f"{p}.json") for p in "abc")
    assert first["ok"], first
    # B saw A's redemption (the last unit is gone) ...
    assert second == {**second, "ok": False, "error": "quantity_exceeded"}
    # ... so it answered after A was let go, and at least WAIT after it was told to go. These
    # are causal orders (B's answer needs A's commit, which needs resume, set after WAIT);
    # time.monotonic() is one clock for every process of the machine. Not asserted: that B
    # answered after A's own process noted its commit: B may see the commit first.
    assert second["done"] > resumed_at >= go_at + WAIT
    assert other["ok"], other

    with open_engine(store_spec) as engine:
        hot = engine.get_voucher(HOT)
        log = engine.list_redemptions(HOT)
        report = engine.audit()
    assert hot.redeemed_quantity == 1
    assert [(r.id, r.status) for r in log if r.status is not RedemptionStatus.FAILED] == [
        (first["id"], RedemptionStatus.SUCCEEDED)
    ]
    assert [r.failure_code for r in log if r.status is RedemptionStatus.FAILED] == [
        "quantity_exceeded"
    ]
    assert report.ok, str(report)
