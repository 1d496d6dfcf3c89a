"""Stacked carts in ``vouchercore simulate``: a share of the carts pay with a discount code plus
a gift card in one ``redeem_stacked_discounts`` call (some after a stacked validation with a
LOCK, redeemed with its session key), retried with their idempotency key and sometimes rolled
back whole. The report counts the stacked redemptions that succeeded, failed and were rolled
back — as the store records their parents — the day audits clean, and one terminal replays the
same day from the same seed on memory and on SQLite."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from vouchercore import Engine, RedemptionStatus
from vouchercore.simulation import STACKED_TALLIES, SimulationReport, simulate

STACKED_KINDS = {
    "stacked validate+lock",
    "stacked redeem",
    "stacked redeem(session_key)",
    "stacked rollback",
}


def _sqlite_url(tmp_path: Path, name: str = "sim.db") -> str:
    return f"sqlite:///{tmp_path / name}?synchronous=NORMAL"


def _kinds(report: SimulationReport) -> set[str]:
    return {operation for operation, _ in report.outcomes}


def _stacked_line(report: SimulationReport) -> str:
    return next(line for line in report.lines() if line.startswith("stacked redemptions"))


def _untimed(report: SimulationReport) -> list[str]:
    return [line for line in report.lines() if not line.startswith("[timing]")]


def test_stacked_carts_redeem_roll_back_and_the_day_audits_clean() -> None:
    # one terminal: what this seed's day holds is fixed, whatever the scheduling
    report = simulate(seed=3, terminals=1, vouchers=60, operations=4_000, stacked_share=0.3)
    assert report.ok, str(report.audit)
    assert _kinds(report) >= STACKED_KINDS, sorted(_kinds(report))
    assert report.outcomes["stacked validate+lock", "ok"] > 0
    assert report.outcomes["stacked redeem(session_key)", "ok"] > 0
    assert report.outcomes["stacked redeem retry", "replayed"] > 0
    stacked = report.stacked
    assert set(stacked) == set(STACKED_TALLIES)
    assert stacked["succeeded"] > 0
    assert stacked["failed"] > 0  # spent cards and used-up codes fail whole stacks
    assert 0 < stacked["rolled back"] <= stacked["succeeded"]
    assert _stacked_line(report) == (
        "stacked redemptions (discount + gift card, 30% of carts): "
        f"{stacked['succeeded']} succeeded, {stacked['failed']} failed, "
        f"{stacked['rolled back']} rolled back"
    )


def test_racing_terminals_with_stacked_carts_keep_the_audit_clean() -> None:
    report = simulate(seed=5, terminals=4, vouchers=30, operations=3_000, stacked_share=0.3)
    assert report.ok, str(report.audit)
    assert report.retries_double_applied == 0


def test_the_stacked_tallies_are_the_parents_the_sqlite_store_recorded(tmp_path: Path) -> None:
    url = _sqlite_url(tmp_path)
    # two racing terminals: the tallies match the store whatever the interleaving
    report = simulate(seed=4, terminals=2, vouchers=30, operations=1_500, store=url)
    assert report.ok, str(report.audit)
    with Engine(url) as engine:
        parents = list(engine.store.parent_redemptions())
        statuses = Counter(parent.status for parent in parents)
        for parent in parents:
            assert parent.order is not None and parent.order.id is not None
            assert parent.order.id.startswith("cart-")
            assert parent.customer is not None and parent.customer.source_id is not None
            if parent.status is RedemptionStatus.FAILED:
                assert parent.redemptions == () and parent.failure_code
                continue
            children = [engine.get_redemption(child) for child in parent.redemptions]
            kinds = [engine.get_voucher(child.voucher_id).type.value for child in children]
            assert kinds == ["DISCOUNT_VOUCHER", "GIFT_VOUCHER"]  # one call, both vouchers
            assert all(child.parent_id == parent.id for child in children)
    stacked = report.stacked
    assert sum(stacked.values()) > 0
    assert statuses[RedemptionStatus.FAILED] == stacked["failed"]
    assert statuses[RedemptionStatus.ROLLED_BACK] == stacked["rolled back"]
    assert (
        statuses[RedemptionStatus.SUCCEEDED] + statuses[RedemptionStatus.ROLLED_BACK]
        == stacked["succeeded"]
    )


def test_one_terminal_replays_the_same_stacked_day_on_memory_and_on_sqlite(
    tmp_path: Path,
) -> None:
    def day(store: str) -> SimulationReport:
        return simulate(seed=6, terminals=1, vouchers=30, operations=1_200, store=store)

    memory, memory_again = day("memory://"), day("memory://")
    sqlite, sqlite_again = day(_sqlite_url(tmp_path, "a.db")), day(_sqlite_url(tmp_path, "b.db"))
    assert memory.stacked["succeeded"] > 0
    assert _untimed(memory) == _untimed(memory_again)
    # the header names the store (each run its own file); everything else is the same day
    assert _untimed(sqlite)[1:] == _untimed(sqlite_again)[1:]
    assert memory.outcomes == sqlite.outcomes
    assert memory.stacked == sqlite.stacked
    assert memory.sessions == sqlite.sessions
    assert memory.points == sqlite.points
    assert str(memory.audit) == str(sqlite.audit)
    # all but what the final sweep still found to purge: a failed call (a release that found
    # no live session) keeps the expired sessions it purged on the way in memory, a SQL
    # store rolls that back and leaves them to the sweep
    ignored = ("[timing]", "sessions purged by the final sweep", "vouchercore simulate:")
    assert [x for x in memory.lines() if not x.startswith(ignored)] == [
        x for x in sqlite.lines() if not x.startswith(ignored)
    ]


def test_a_share_of_zero_stacks_nothing() -> None:
    report = simulate(seed=3, terminals=2, vouchers=30, operations=1_500, stacked_share=0)
    assert report.ok, str(report.audit)
    assert not any(operation.startswith("stacked") for operation in _kinds(report))
    assert report.stacked == dict.fromkeys(STACKED_TALLIES, 0)
    assert not any(line.startswith("stacked redemptions") for line in report.lines())
    assert {"validate+lock", "redeem", "redeem(session_key)"} <= _kinds(report)


def test_a_share_of_one_stacks_every_cart() -> None:
    report = simulate(seed=3, terminals=1, vouchers=30, operations=1_500, stacked_share=1)
    assert report.ok, str(report.audit)
    assert _kinds(report) >= STACKED_KINDS
    assert not {"validate+lock", "redeem", "redeem(session_key)"} & _kinds(report)
    assert "100% of carts" in _stacked_line(report)


@pytest.mark.parametrize("share", [-0.1, 1.5, math.nan, math.inf, "0.1", True, None])
def test_a_stacked_share_that_is_not_a_number_from_0_to_1_is_refused(share: Any) -> None:
    with pytest.raises(ValueError, match="stacked share must be a number from 0 to 1"):
        simulate(seed=1, terminals=1, vouchers=5, operations=10, stacked_share=share)


def test_a_stacked_retry_applied_twice_fails_the_simulation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    redeem = Engine.redeem_stacked_discounts

    def forgetful(self: Engine, *args: Any, idempotency_key: str | None = None, **kw: Any) -> Any:
        return redeem(self, *args, **kw)  # drops the key: a retry redeems the stack again

    monkeypatch.setattr(Engine, "redeem_stacked_discounts", forgetful)
    report = simulate(seed=3, terminals=1, vouchers=30, operations=2_000, stacked_share=0.5)
    doubled = {op for (op, outcome), _ in report.outcomes.items() if outcome == "DOUBLE-APPLIED"}
    assert doubled and doubled <= {"stacked redeem retry", "stacked redeem(session_key) retry"}
    assert not report.ok
