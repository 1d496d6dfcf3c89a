"""``vouchercore simulate`` on shared stores: terminals as OS processes on a SQLite file (and on
PostgreSQL when ``VOUCHERCORE_TEST_POSTGRES_DSN`` names a server), and the argument mistakes
that stop it with exit status 2 and one readable line."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from vouchercore.cli import main
from vouchercore.simulation import SIMULATION_START, SharedClock, simulate

POSTGRES_DSN = os.environ.get("VOUCHERCORE_TEST_POSTGRES_DSN")


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], list[str]]:
    status = main(["simulate", *args])
    captured = capsys.readouterr()
    return status, captured.out.splitlines(), captured.err.splitlines()


def _sqlite_url(tmp_path: Path, name: str = "sim.db") -> str:
    return f"sqlite:///{tmp_path / name}?synchronous=NORMAL"


def test_two_terminal_processes_on_a_sqlite_file_pass_the_audit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = _run(
        capsys,
        "--store", _sqlite_url(tmp_path), "--processes", "2",
        "--vouchers", "30", "--operations", "1500",
    )  # fmt: skip
    assert status == 0, err
    assert out[0].startswith("vouchercore simulate: seed 1, 2 terminal process(es), 30 vouchers")
    assert any(line.startswith("audit OK: 30 vouchers") for line in out)
    assert any(line.startswith("[timing]") for line in out)
    # a tenth of the carts (the default) paid with a discount plus a gift card in one call
    assert any(line.startswith("stacked redemptions (discount + gift card, 10%") for line in out)


def test_terminal_processes_share_one_simulated_day_and_count_their_operations(
    tmp_path: Path,
) -> None:
    report = simulate(
        seed=5, terminals=2, vouchers=20, operations=1_000, store=_sqlite_url(tmp_path),
        processes=True,
    )  # fmt: skip
    assert report.ok, str(report.audit)
    assert report.processes
    steps = sum(n for (op, _), n in report.outcomes.items() if not op.endswith(" retry"))
    assert 0 < steps <= 1_000  # a retry is its step's second call, counted on its own row
    assert {"validate+lock", "redeem", "top-up"} <= {operation for operation, _ in report.outcomes}
    assert {"stacked validate+lock", "stacked redeem"} <= {op for op, _ in report.outcomes}
    # both processes advanced the one shared clock: about a simulated day in all
    assert 12 * 3600 < report.simulated_seconds < 36 * 3600
    assert report.sessions["opened"] >= report.sessions.get("expired", 0) > 0


def test_threads_on_a_sqlite_file_pass_the_audit(tmp_path: Path) -> None:
    report = simulate(seed=2, terminals=3, vouchers=20, operations=600, store=_sqlite_url(tmp_path))
    assert report.ok, str(report.audit)
    assert not report.processes
    assert report.lines()[0].endswith(f"on {_sqlite_url(tmp_path)}")


def test_a_shared_clock_moves_only_forward() -> None:
    clock = SharedClock(SIMULATION_START)
    clock.advance(microseconds=1_500_000)
    assert clock.now() == SIMULATION_START + timedelta(seconds=1.5)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(microseconds=-1)


def test_two_terminal_processes_on_postgresql_pass_the_audit(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = _run(
        capsys,
        "--store", postgres_url, "--processes", "2", "--vouchers", "30", "--operations", "1500",
        "--stacked-share", "0.3",
    )  # fmt: skip
    assert status == 0, err
    assert any(line.startswith("audit OK: 30 vouchers") for line in out)
    stacked = next(line for line in out if line.startswith("stacked redemptions"))
    assert stacked.startswith("stacked redemptions (discount + gift card, 30% of carts): ")
    assert any(line.startswith("stacked redeem(session_key)") for line in out)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--processes", "2"), "--processes needs a store shared between processes"),
        (("--store", "memory://", "--processes", "2"), "--processes needs a store shared"),
        (
            ("--store", "sqlite:///unused.db", "--terminals", "2", "--processes", "2"),
            "give --terminals (threads) or --processes (processes), not both",
        ),
        (("--store", "redis://localhost", "--processes", "2"), "unknown store 'redis'"),
        (("--store", "sqlite://", "--processes", "2"), "a SQLite store URL needs a file path"),
    ],
)
def test_bad_combinations_exit_2_with_one_readable_line(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    status, out, err = _run(capsys, *args)
    assert status == 2
    assert out == []
    assert len(err) == 1
    assert err[0].startswith("vouchercore: error: ")
    assert message in err[0]


def test_a_store_that_holds_vouchers_already_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = _sqlite_url(tmp_path)
    first, _, _ = _run(capsys, "--store", url, "--terminals", "1", "--operations", "50")
    assert first == 0
    status, out, err = _run(capsys, "--store", url, "--processes", "2", "--operations", "50")
    assert status == 2
    assert out == []
    assert len(err) == 1
    assert "holds vouchers already" in err[0]
