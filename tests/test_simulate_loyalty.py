"""Loyalty traffic in ``vouchercore simulate``: accruals (some expiring within the day, some for
orders), their cancellations, transfers between cards (crossing ones on a hot pair), retried
keyed calls and ``expire_points()`` sweeps all show in the report, and the day still audits
clean — with threads, and with terminal processes on a shared SQLite file (and PostgreSQL when
``VOUCHERCORE_TEST_POSTGRES_DSN`` names a server)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from vouchercore import Engine, TransactionType
from vouchercore.simulation import POINTS_TALLIES, SimulationReport, simulate

POSTGRES_DSN = os.environ.get("VOUCHERCORE_TEST_POSTGRES_DSN")

LOYALTY_KINDS = {
    "accrual",
    "accrual (expiring)",
    "accrual cancellation",
    "points transfer",
    "points transfer (hot pair)",
    "expire_points sweep",
}


def _kinds(report: SimulationReport) -> Counter[str]:
    kinds: Counter[str] = Counter()
    for (operation, _), count in report.outcomes.items():
        kinds[operation] += count
    return kinds


def _check_loyalty_day(report: SimulationReport) -> None:
    assert report.ok, str(report.audit)
    kinds = _kinds(report)
    assert set(kinds) >= LOYALTY_KINDS, sorted(set(kinds))
    assert report.outcomes["points transfer", "ok"] > 0
    assert report.outcomes["points transfer (hot pair)", "ok"] > 0
    assert report.outcomes["accrual cancellation", "ok"] > 0
    retried = {op.removesuffix(" retry") for op, _ in report.outcomes if op.endswith(" retry")}
    assert {"accrual", "points transfer", "accrual cancellation"} <= retried
    assert set(report.points) == set(POINTS_TALLIES)
    assert report.points["accrued"] > 0
    assert report.points["cancelled"] > 0
    assert report.points["transferred"] > 0
    assert report.points["expired"] > 0  # expiring accruals reached their date within the day
    assert 0 <= report.points["swept"] <= report.points["expired"]
    line = next(x for x in report.lines() if x.startswith("loyalty points: "))
    assert f"accrued {report.points['accrued']}" in line
    assert f"expired {report.points['expired']}" in line


def test_threads_run_loyalty_traffic_and_the_day_audits_clean() -> None:
    report = simulate(seed=3, terminals=4, vouchers=40, operations=6_000)
    _check_loyalty_day(report)
    assert report.retries_double_applied == 0


def test_one_terminal_replays_the_same_loyalty_day() -> None:
    first = simulate(seed=8, terminals=1, vouchers=30, operations=2_000)
    second = simulate(seed=8, terminals=1, vouchers=30, operations=2_000)
    assert first.points == second.points
    assert first.outcomes == second.outcomes
    assert first.stacked == second.stacked  # the stacked carts are in the same day
    assert first.stacked["succeeded"] > 0
    assert [x for x in first.lines() if "[timing]" not in x] == [
        x for x in second.lines() if "[timing]" not in x
    ]


def test_the_report_table_fits_the_longest_operation_name() -> None:
    report = simulate(seed=3, terminals=1, vouchers=30, operations=1_500)
    header = next(line for line in report.lines() if line.startswith("operation "))
    rows = [line for line in report.lines() if line.startswith("points transfer (hot pair)")]
    assert rows
    column = header.index("outcome")
    assert all(row[column - 1] == " " and row[column] != " " for row in rows)


def test_a_transfer_retry_applied_twice_fails_the_simulation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    transfer = Engine.transfer_points

    def forgetful(self: Engine, *args: Any, idempotency_key: str | None = None, **kw: Any) -> Any:
        return transfer(self, *args, **kw)  # drops the key: a retry transfers again

    monkeypatch.setattr(Engine, "transfer_points", forgetful)
    report = simulate(seed=3, terminals=2, vouchers=30, operations=3_000)
    doubled = {op for (op, outcome), _ in report.outcomes.items() if outcome == "DOUBLE-APPLIED"}
    assert doubled and doubled <= {"points transfer retry", "points transfer (hot pair) retry"}
    assert not report.ok


def _check_transfers_in_the_store(url: str, report: SimulationReport) -> None:
    """Every POINTS_TRANSFER_OUT in the store has its IN on another card, and they move what
    the terminals were told (``points["transferred"]``)."""
    with Engine(url) as engine:
        out: dict[str, Any] = {}
        into: dict[str, Any] = {}
        for code in engine.store.voucher_codes():
            after = None
            while True:
                page = engine.list_voucher_transactions(
                    code, limit=100, order="id", starting_after_id=after
                )
                for tx in page.data:
                    if tx.type is TransactionType.POINTS_TRANSFER_OUT:
                        out[tx.id] = tx
                    elif tx.type is TransactionType.POINTS_TRANSFER_IN:
                        into[tx.id] = tx
                if not page.has_more:
                    break
                after = page.more_starting_after
    assert out and len(out) == len(into)
    for tx in out.values():
        pair = into[tx.related_transaction_id]
        assert pair.related_transaction_id == tx.id
        assert pair.amount == -tx.amount > 0
        assert pair.voucher_id != tx.voucher_id
    assert sum(tx.amount for tx in into.values()) == report.points["transferred"]


def test_terminal_processes_on_a_sqlite_file_run_loyalty_traffic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sim.db'}?synchronous=NORMAL"
    report = simulate(seed=4, terminals=3, vouchers=30, operations=3_000, store=url, processes=True)
    _check_loyalty_day(report)
    _check_transfers_in_the_store(url, report)


def test_terminal_processes_on_postgresql_run_loyalty_traffic(postgres_url: str) -> None:
    report = simulate(
        seed=4, terminals=3, vouchers=30, operations=2_000, store=postgres_url, processes=True
    )
    _check_loyalty_day(report)
    _check_transfers_in_the_store(postgres_url, report)
