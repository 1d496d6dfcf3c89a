"""Four OS processes retry one call with one idempotency key at once (README "Redemption",
"Rollback", "Balance", "Concurrency and the audit"): on a shared SQLite file or PostgreSQL
schema the key holds
across processes.

Each process opens its own engine on the shared store and, round after round, waits at a
barrier with the others and then makes the call of the phase:

- ``redeem``: all four redeem 700 of a 1,000-credit card with the same key and request — a
  second execution would be refused ``gift_amount_exceeded`` (and logged FAILED);
- ``balance``: all four add 500 to that card with the same key and request;
- ``rollback``: all four roll that redemption back with the same key and request;
- ``different``: all four use one key with four different requests (two top-ups of different
  amounts on the card, two redemptions on another card).

Each process writes what it was told (the result's ``repr``, or the error key) to its own file.
Same request: exactly one effect in the store, and all four were told the same result.
Different requests: exactly one succeeded, the other three were told
``idempotency_key_reused``, and only the winner's effect is in the store.
"""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from tests.processes.workers import StoreSpec, open_engine, run_to_the_end
from vouchercore import RedemptionStatus, TransactionType, VoucherError

pytestmark = [pytest.mark.processes, pytest.mark.slow]

WORKERS = 4
ROUNDS = 8
PHASES = ("redeem", "balance", "rollback", "different")


def _card(round_: int) -> str:
    return f"CARD-{round_}"


def _other(round_: int) -> str:
    return f"OTHER-{round_}"


def _call(engine: Any, phase: str, round_: int, worker: int, redemption_id: str | None) -> Any:
    card = _card(round_)
    if phase == "redeem":
        return engine.redeem_voucher(
            card, credits=700, order_id=f"o-{round_}", idempotency_key=f"redeem-{round_}"
        )
    if phase == "balance":
        return engine.update_voucher_balance(
            card, 500, reason="top-up", idempotency_key=f"balance-{round_}"
        )
    if phase == "rollback":
        assert redemption_id is not None
        return engine.rollback_redemption(
            redemption_id, reason="returned", idempotency_key=f"rollback-{round_}"
        )
    key = f"different-{round_}"
    if worker < 2:
        return engine.update_voucher_balance(card, 100 + worker, idempotency_key=key)
    return engine.redeem_voucher(_other(round_), credits=10 + worker, idempotency_key=key)


def idempotency_worker(spec: StoreSpec, worker: int, barrier: Any, result_path: str) -> None:
    """Every phase of every round, each after a barrier; results as JSON lines."""
    records: list[dict[str, Any]] = []
    try:
        with open_engine(spec) as engine:
            for round_ in range(ROUNDS):
                redemption_id: str | None = None
                for phase in PHASES:
                    barrier.wait(timeout=60)
                    record: dict[str, Any] = {"round": round_, "phase": phase}
                    if phase == "rollback" and redemption_id is None:  # its redemption failed
                        records.append({**record, "ok": False, "error": "nothing_to_roll_back"})
                        continue
                    try:
                        result = _call(engine, phase, round_, worker, redemption_id)
                    except VoucherError as error:
                        record.update(ok=False, error=error.key)
                    else:
                        record.update(ok=True, repr=repr(result), id=getattr(result, "id", None))
                        if phase == "redeem":
                            redemption_id = result.id
                    records.append(record)
    except BaseException as crash:
        records.append({"crash": repr(crash)})
        raise
    finally:
        with open(result_path, "w", encoding="utf-8") as file:
            json.dump(records, file)


def _transaction_types(engine: Any, code: str) -> list[tuple[TransactionType, int]]:
    page = engine.list_voucher_transactions(code, limit=100, order="id")
    assert not page.has_more
    return [(t.type, t.amount) for t in page.data]


def test_processes_retrying_one_key_apply_each_call_once(
    store_spec: StoreSpec, tmp_path: Path
) -> None:
    with open_engine(store_spec, seed=1) as engine:
        for round_ in range(ROUNDS):
            engine.create_voucher(_card(round_), gift={"amount": 1_000})
            engine.create_voucher(_other(round_), gift={"amount": 1_000})
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(WORKERS)
    paths = [tmp_path / f"worker{i}.json" for i in range(WORKERS)]
    processes = [
        context.Process(
            target=idempotency_worker, args=(store_spec, i, barrier, str(path)), daemon=True
        )
        for i, path in enumerate(paths)
    ]
    run_to_the_end(processes, 300)
    told: list[list[dict[str, Any]]] = []
    for path in paths:
        with open(path, encoding="utf-8") as file:
            told.append(json.load(file))
    crashes = [r["crash"] for records in told for r in records if "crash" in r]
    assert not crashes, crashes
    assert [p.exitcode for p in processes] == [0] * WORKERS
    assert all(len(records) == ROUNDS * len(PHASES) for records in told)

    with open_engine(store_spec) as engine:
        for round_ in range(ROUNDS):
            by_phase = {
                phase: [
                    next(r for r in records if r["round"] == round_ and r["phase"] == phase)
                    for records in told
                ]
                for phase in PHASES
            }
            # the same request: every process was told the same result
            for phase in ("redeem", "balance", "rollback"):
                answers = by_phase[phase]
                assert all(a["ok"] for a in answers), (round_, phase, answers)
                assert len({a["repr"] for a in answers}) == 1, (round_, phase, answers)
            # one key, four requests: one won, three were told the key was reused
            different = by_phase["different"]
            winners = [i for i, a in enumerate(different) if a["ok"]]
            assert len(winners) == 1, (round_, different)
            assert (
                sorted(str(a.get("error")) for a in different if not a["ok"])
                == ["idempotency_key_reused"] * 3
            ), (round_, different)
            [winner] = winners

            card, other = _card(round_), _other(round_)
            [redemption] = engine.list_redemptions(card)  # no second one, no FAILED one
            assert redemption.id == by_phase["redeem"][0]["id"]
            assert redemption.status is RedemptionStatus.ROLLED_BACK
            assert redemption.rollback_id == by_phase["rollback"][0]["id"]
            expected = [
                (TransactionType.CREDITS_REDEMPTION, -700),
                (TransactionType.CREDITS_ADDITION, 500),
                (TransactionType.CREDITS_REFUND, 700),
            ]
            other_redemptions = engine.list_redemptions(other)
            if winner < 2:
                expected.append((TransactionType.CREDITS_ADDITION, 100 + winner))
                assert other_redemptions == ()
                assert _transaction_types(engine, other) == []
            else:
                [won] = other_redemptions
                assert (won.id, won.amount) == (different[winner]["id"], 10 + winner)
                assert _transaction_types(engine, other) == [
                    (TransactionType.CREDITS_REDEMPTION, -(10 + winner))
                ]
            assert _transaction_types(engine, card) == expected
        report = engine.audit()
        assert report.ok, str(report)
