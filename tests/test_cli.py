"""The ``vouchercore simulate`` command: report, determinism, exit codes, plain output."""

from __future__ import annotations

import io
import subprocess
import sys
from typing import Any

import pytest

from vouchercore import Engine
from vouchercore.cli import ProgressBar, main
from vouchercore.simulation import simulate


def _report_lines(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    status = main(["simulate", *args])
    out = capsys.readouterr().out
    return status, out.splitlines()


def test_one_terminal_and_one_seed_print_the_same_report_apart_from_timing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ("--seed", "11", "--terminals", "1", "--vouchers", "40", "--operations", "3000")
    first_status, first = _report_lines(capsys, *args)
    second_status, second = _report_lines(capsys, *args)
    assert first_status == second_status == 0
    untimed = [line for line in first if not line.startswith("[timing]")]
    assert untimed == [line for line in second if not line.startswith("[timing]")]
    assert any(line.startswith("[timing]") for line in first)
    assert any(line.startswith("audit OK") for line in first)


def test_another_seed_gives_another_day(capsys: pytest.CaptureFixture[str]) -> None:
    _, first = _report_lines(capsys, "--seed", "1", "--terminals", "1", "--operations", "2000")
    _, second = _report_lines(capsys, "--seed", "2", "--terminals", "1", "--operations", "2000")
    assert [x for x in first if "[timing]" not in x] != [x for x in second if "[timing]" not in x]


def test_racing_terminals_keep_the_audit_clean_and_count_every_operation() -> None:
    report = simulate(seed=3, terminals=6, vouchers=30, operations=6_000)
    assert report.ok, str(report.audit)
    # every step counted once; a retry is the same step's second call, counted on its own row
    steps = sum(n for (op, _), n in report.outcomes.items() if not op.endswith(" retry"))
    assert steps <= 6_000
    kinds = {operation for operation, _ in report.outcomes}
    assert {"validate+lock", "redeem", "redeem(session_key)", "rollback", "top-up"} <= kinds
    assert report.sessions["opened"] >= report.sessions.get("expired", 0) > 0


def test_bad_arguments_exit_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["simulate", "--terminals", "0"])
    assert exited.value.code == 2
    assert "must be ≥ 1" in capsys.readouterr().err


def test_the_progress_bar_is_silent_when_output_is_not_a_terminal() -> None:
    stream = io.StringIO()
    bar = ProgressBar(100, "simulating", stream)
    bar(50)
    bar(100)
    bar.close()
    assert stream.getvalue() == ""


def test_the_console_script_runs_and_prints_plain_text_when_piped() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vouchercore.cli", "simulate", "--operations", "500"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stdout + result.stderr
    assert "audit OK" in result.stdout


def test_simulated_retries_replay_their_first_answer() -> None:
    report = simulate(seed=3, terminals=2, operations=3_000)
    replayed = sum(
        n
        for (op, outcome), n in report.outcomes.items()
        if op.endswith(" retry") and outcome == "replayed"
    )
    assert replayed > 0
    assert report.retries_double_applied == 0
    assert report.ok


def test_a_retry_applied_twice_fails_the_simulation(monkeypatch: pytest.MonkeyPatch) -> None:
    redeem = Engine.redeem_voucher

    def forgetful(self: Engine, *args: Any, idempotency_key: str | None = None, **kw: Any) -> Any:
        return redeem(self, *args, **kw)  # drops the key: a retry redeems again

    monkeypatch.setattr(Engine, "redeem_voucher", forgetful)
    report = simulate(seed=3, terminals=2, operations=3_000)
    assert report.retries_double_applied > 0
    assert not report.ok
    assert any("RETRIES APPLIED TWICE" in line for line in report.lines())
