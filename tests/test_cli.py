"""The ``vouchercore`` command: ``simulate`` (report, determinism, exit codes, plain output) and
the store commands (import, generate, voucher, transactions, export, release, balance, audit)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from vouchercore import Engine
from vouchercore.cli import (
    EXIT_BAD_INPUT,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_STORAGE,
    ProgressBar,
    main,
)
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
    # the default share of stacked carts is in that day, and replayed with it
    assert any(line.startswith("stacked redemptions (discount + gift card, 10%") for line in first)


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


def test_one_terminal_replays_the_same_day_with_another_stacked_share(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ("--seed", "4", "--terminals", "1", "--vouchers", "30", "--operations", "1500")
    status, first = _report_lines(capsys, *args, "--stacked-share", "0.5")
    again_status, again = _report_lines(capsys, *args, "--stacked-share", "0.5")
    default_status, default = _report_lines(capsys, *args)
    assert status == again_status == default_status == 0
    untimed = [line for line in first if not line.startswith("[timing]")]
    assert untimed == [line for line in again if not line.startswith("[timing]")]
    assert untimed != [line for line in default if not line.startswith("[timing]")]
    stacked = next(line for line in first if line.startswith("stacked redemptions"))
    assert re.fullmatch(
        r"stacked redemptions \(discount \+ gift card, 50% of carts\): "
        r"\d+ succeeded, \d+ failed, \d+ rolled back",
        stacked,
    )


def test_a_stacked_share_of_zero_prints_no_stacked_line(capsys: pytest.CaptureFixture[str]) -> None:
    status, lines = _report_lines(
        capsys, "--terminals", "1", "--operations", "500", "--stacked-share", "0"
    )
    assert status == 0
    assert not any(line.startswith("stacked") for line in lines)


@pytest.mark.parametrize("share", ["-0.1", "1.5", "abc", "nan", "inf", "", "10%"])
def test_a_stacked_share_that_is_not_a_number_from_0_to_1_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], share: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["simulate", "--operations", "10", "--stacked-share", share])
    assert exited.value.code == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"vouchercore: error: argument --stacked-share: must be a number from 0 to 1, "
        f"got {share!r} (see: vouchercore simulate --help)"
    ]


def test_the_simulate_help_documents_the_stacked_share(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["simulate", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--stacked-share SHARE" in text
    assert "discount code plus a gift card in one stacked call" in text
    assert "default 0.1; 0: none" in text


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


# --- the store commands -----------------------------------------------------------------------

CSV = (
    "Code,Voucher Type,Value,Discount Type\nG1,GIFT_VOUCHER,5000,\nD1,DISCOUNT_VOUCHER,500,AMOUNT\n"
)


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'book.db'}"


@pytest.fixture
def loaded(tmp_path: Path, store: str, capsys: pytest.CaptureFixture[str]) -> str:
    path = tmp_path / "codes.csv"
    path.write_text(CSV, encoding="utf-8")
    assert main(["import", str(path), "--store", store]) == EXIT_OK
    capsys.readouterr()
    return store


def test_import_then_show_a_voucher(
    tmp_path: Path, store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "codes.csv"
    path.write_text(CSV, encoding="utf-8")
    status, out, _ = _run(capsys, "import", str(path), "--store", store)
    assert status == EXIT_OK
    assert "imported 2 vouchers, 0 rows failed" in out
    status, out, _ = _run(capsys, "voucher", "G1", "--store", store, "--json")
    assert status == EXIT_OK
    shown = json.loads(out)
    assert (shown["code"], shown["type"], shown["gift"]) == (
        "G1",
        "GIFT_VOUCHER",
        {"amount": 5000, "balance": 5000},
    )


def test_an_import_with_bad_rows_exits_1_and_lists_them(
    tmp_path: Path, loaded: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "more.csv"
    path.write_text("Code,Voucher Type,Value\nG1,GIFT,1\nG2,GIFT,x\nG3,GIFT,1\n", "utf-8")
    status, out, _ = _run(capsys, "import", str(path), "--store", loaded, "--json")
    assert status == EXIT_REFUSED
    report = json.loads(out)
    assert report["done_count"] == 1
    assert [(f["code"], f["row"]) for f in report["failed"]] == [("G1", 1), ("G2", 2)]


def test_a_file_that_cannot_be_imported_exits_2_with_one_line(
    tmp_path: Path, store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(b"Code,Voucher Type\n\xff\xfe,GIFT\n")
    status, _out, err = _run(capsys, "import", str(path), "--store", store)
    assert status == EXIT_BAD_INPUT
    assert err.startswith("vouchercore: error: invalid_payload: the CSV file is not UTF-8")
    assert err.count("\n") == 1
    status, _, err = _run(capsys, "import", str(tmp_path / "missing.csv"), "--store", store)
    assert status == EXIT_BAD_INPUT
    assert "missing.csv" in err


def test_generate_writes_every_code_to_a_file(
    tmp_path: Path, store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    codes = tmp_path / "codes.txt"
    status, out, _ = _run(
        capsys,
        "generate", "25", "--type", "gift", "--amount", "1000", "--pattern", "GC-####",
        "--charset", "0123456789", "--store", store, "-o", str(codes), "--json",
    )  # fmt: skip
    assert status == EXIT_OK
    report = json.loads(out)
    written = codes.read_text(encoding="utf-8").split()
    assert report["count"] == len(written) == len(set(written)) == 25
    assert all(re.fullmatch(r"GC-\d{4}", code) for code in written)
    status, out, _ = _run(capsys, "voucher", written[-1], "--store", store, "--json")
    assert json.loads(out)["gift"] == {"amount": 1000, "balance": 1000}


def test_generate_a_percent_discount_with_dates_and_metadata(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = _run(
        capsys,
        "generate", "3", "--type", "DISCOUNT", "--discount-type", "percent", "--percent", "12.5",
        "--amount-limit", "900", "--expiration-date", "2027-01-31", "--metadata", "batch=7",
        "--quantity", "2", "--store", store, "--json",
    )  # fmt: skip
    assert status == EXIT_OK
    code = json.loads(out)["codes"][0]
    _, out, _ = _run(capsys, "voucher", code, "--store", store, "--json")
    shown = json.loads(out)
    assert shown["expiration_date"] == "2027-01-31T23:59:59.999Z"
    assert shown["metadata"] == {"batch": "7"}
    assert shown["quantity"] == 2


@pytest.mark.parametrize(
    "args",
    [
        ("generate", "100", "--type", "gift", "--pattern", "#", "--charset", "0123456789"),
        ("generate", "3", "--type", "gift", "--expiration-date", "2026-02-30"),
        ("generate", "3", "--type", "discount"),  # no --amount
        ("generate", "3", "--type", "gift", "--metadata", "novalue"),
        ("transactions", "G1", "--limit", "101"),
        ("export", "G1", "--fields", "id,colour"),
        ("balance", "G1", "0"),
    ],
)
def test_bad_input_exits_2(
    loaded: str, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    status, _, err = _run(capsys, *args, "--store", loaded)
    assert status == EXIT_BAD_INPUT
    assert err.startswith("vouchercore: error: ")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args",
    [("voucher", "NOPE"), ("transactions", "NOPE"), ("export", "NOPE"), ("release", "G1", "k1")],
)
def test_not_found_exits_3(
    loaded: str, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    status, out, err = _run(capsys, *args, "--store", loaded, "--json")
    assert status == EXIT_NOT_FOUND
    assert json.loads(out)["error"]["key"] == "not_found"
    assert err.startswith("vouchercore: error: not_found:")


def test_a_store_that_cannot_be_opened_exits_4(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "not-a-db").write_bytes(b"this is not a database" * 100)
    status, _, err = _run(capsys, "audit", "--store", f"sqlite:///{tmp_path / 'not-a-db'}")
    assert status == EXIT_STORAGE
    assert err.startswith("vouchercore: error: storage_error:")


def test_an_unknown_store_scheme_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = _run(capsys, "audit", "--store", "redis://localhost")
    assert status == EXIT_BAD_INPUT
    assert "unknown store" in err


def test_a_command_on_a_store_needs_store(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["audit"])
    assert exited.value.code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("vouchercore: error: the following arguments are required: --store")
    assert err.count("\n") == 1


def test_balance_transactions_and_export(
    tmp_path: Path, loaded: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(capsys, "balance", "G1", "500", "--reason", "top-up", "--store", loaded)[0] == 0
    status, out, _ = _run(capsys, "balance", "G1", "-200", "--source-id", "=x", "--store", loaded)
    assert status == EXIT_OK
    assert "balance 5300 of 5500" in out
    status, out, err = _run(capsys, "balance", "G1", "-99999", "--store", loaded)
    assert status == EXIT_REFUSED
    assert "invalid_add_balance_params" in err
    status, out, _ = _run(capsys, "transactions", "G1", "--limit", "1", "--store", loaded, "--json")
    page = json.loads(out)
    assert [t["amount"] for t in page["data"]] == [-200]
    assert page["has_more"] is True
    cursor = page["more_starting_after"]
    status, out, _ = _run(
        capsys, "transactions", "G1", "--starting-after", cursor, "--store", loaded
    )
    assert "CREDITS_ADDITION" in out and "1 of 2 transactions" in out
    target = tmp_path / "log.csv"
    status, out, _ = _run(
        capsys, "export", "G1", "-o", str(target), "--fields", "amount", "--fields", "source_id",
        "--order", "created_at", "--store", loaded,
    )  # fmt: skip
    assert status == EXIT_OK
    assert "exported 2 transactions" in out
    assert target.read_text(encoding="utf-8").splitlines() == [
        "amount,source_id",
        "500,",
        "-200,'=x",
    ]
    status, out, _ = _run(capsys, "export", "G1", "--format", "jsonl", "--store", loaded)
    assert [json.loads(line)["amount"] for line in out.splitlines()] == [-200, 500]


def test_audit_reports_ok_and_exits_0(loaded: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(capsys, "audit", "--store", loaded, "--json")
    assert status == EXIT_OK
    report = json.loads(out)
    assert (report["ok"], report["vouchers"], report["violations"]) == (True, 2, [])


def test_the_console_script_runs_the_store_commands_in_a_subprocess(
    tmp_path: Path, store: str
) -> None:
    script = Path(sys.executable).with_name("vouchercore")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "vouchercore.cli"]
    path = tmp_path / "codes.csv"
    path.write_text(CSV, encoding="utf-8")
    env = {**os.environ, "PYTHONWARNINGS": "error"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *args, "--store", store],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            env=env,
        )

    done = run("import", str(path))
    assert done.returncode == EXIT_OK, done.stderr
    assert "\r" not in done.stdout + done.stderr  # no progress bar when piped
    shown = run("voucher", "D1", "--json")
    assert json.loads(shown.stdout)["discount"]["amount_off"] == 500
    missing = run("voucher", "NOPE")
    assert missing.returncode == EXIT_NOT_FOUND
    assert missing.stderr.strip() == "vouchercore: error: not_found: voucher 'NOPE' not found"
    assert "Traceback" not in missing.stderr


def test_progress_bars_draw_only_on_a_terminal(
    tmp_path: Path, store: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = io.StringIO()
    terminal.isatty = lambda: True  # type: ignore[method-assign]
    monkeypatch.setattr(sys, "stderr", terminal)
    path = tmp_path / "codes.csv"
    path.write_text(CSV, encoding="utf-8")
    assert main(["import", str(path), "--store", store]) == EXIT_OK
    assert main(["generate", "50", "--type", "gift", "--store", store]) == EXIT_OK
    drawn = terminal.getvalue()
    assert "\rimporting [" in drawn
    assert "\rgenerating [" in drawn
    assert "50/50" in drawn


@pytest.mark.parametrize(
    "command", [["export", "CARD"], ["transactions", "CARD", "--limit", "100", "--json"]]
)
def test_a_reader_that_stops_early_ends_the_command_quietly(
    tmp_path: Path, command: list[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'book.db'}?synchronous=OFF"
    with Engine(url) as engine:
        engine.create_voucher("CARD", gift={"amount": 10**9})
        # more than a pipe holds (64 kB), or the command could write everything before the
        # reader stops: ~1.5 MB of export, ~100 kB for one page of 100 transactions as JSON
        for _ in range(1_500):
            engine.update_voucher_balance("CARD", 1, reason="x" * 1_000)
    process = subprocess.Popen(
        [sys.executable, "-m", "vouchercore.cli", *command, "--store", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    with process:
        process.stdout.readline()
        process.stdout.close()  # like `| head -1`
        stderr = process.stderr.read().decode()
        assert process.wait(timeout=60) == 1
    assert stderr == ""


# --- no traceback for any input ---------------------------------------------------------------


def test_a_huge_page_exits_2_without_a_traceback(
    loaded: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for page in ("99999999999999999999", str(2**62), str(-(2**70))):
        status, out, err = _run(capsys, "transactions", "G1", "--page", page, "--store", loaded)
        assert status == EXIT_BAD_INPUT, err
        assert err.startswith("vouchercore: error: invalid_payload: page")
        assert "Traceback" not in err + out
        assert err.count("\n") == 1
    with pytest.raises(SystemExit) as exited:  # too long for int(): argparse says so
        main(["transactions", "G1", "--page", "9" * 5000, "--store", loaded])
    assert exited.value.code == EXIT_BAD_INPUT
    assert capsys.readouterr().err.startswith("vouchercore: error: argument --page")


@pytest.mark.parametrize(
    "query",
    ["busy_timeout=nan", "busy_timeout=inf", "busy_timeout=-1", "busy_timeout=1e400"],
)
def test_a_store_url_option_that_is_not_a_finite_number_in_range_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], query: str
) -> None:
    store = f"sqlite:///{tmp_path / 'book.db'}?{query}"
    status, _, err = _run(capsys, "audit", "--store", store)
    assert status == EXIT_BAD_INPUT, err
    assert err.startswith("vouchercore: error: invalid_payload: busy_timeout")
    status, _, err = _run(capsys, "simulate", "--operations", "10", "--store", store)
    assert status == EXIT_BAD_INPUT, err
    assert "Traceback" not in err


def test_a_store_url_with_nul_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = _run(capsys, "audit", "--store", f"sqlite:///{tmp_path}/a%00b.db")
    assert status == EXIT_BAD_INPUT, err
    assert "NUL" in err


class _Stdin(io.TextIOWrapper):
    """A stdin whose text layer decodes like a C locale does (surrogateescape)."""


def test_import_from_stdin_decodes_as_a_file_is_decoded(
    tmp_path: Path,
    store: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = b"Code,Voucher Type\n\xff\xfe,GIFT\n"
    stdin = _Stdin(io.BytesIO(raw), encoding="utf-8", errors="surrogateescape")
    monkeypatch.setattr(sys, "stdin", stdin)
    status, out, err = _run(capsys, "import", "-", "--store", store)
    assert status == EXIT_BAD_INPUT, err
    assert err.startswith("vouchercore: error: invalid_payload: the CSV file is not UTF-8")
    assert "Traceback" not in err + out
    # the same bytes in a file give the same answer
    path = tmp_path / "bad.csv"
    path.write_bytes(raw)
    assert _run(capsys, "import", str(path), "--store", store)[2] == err
    # good UTF-8 (with CRLF line ends) imports as from a file
    good = "Code,Voucher Type,Value\r\nGÉ1,GIFT_VOUCHER,5\r\n".encode()
    monkeypatch.setattr(sys, "stdin", _Stdin(io.BytesIO(good), encoding="latin-1"))
    status, out, err = _run(capsys, "import", "-", "--store", store, "--json")
    assert status == EXIT_OK, err
    assert json.loads(out)["done_count"] == 1
    status, out, _ = _run(capsys, "voucher", "GÉ1", "--store", store, "--json")
    assert status == EXIT_OK


def test_import_of_non_utf8_stdin_in_a_subprocess_prints_one_line(
    tmp_path: Path, store: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "vouchercore.cli", "import", "-", "--store", store],
        input=b"Code,Voucher Type\nOK1,GIFT\n\xff\xfe,GIFT\n",
        capture_output=True,
        env={**os.environ, "LC_ALL": "C", "PYTHONIOENCODING": ""},
        check=False,
        timeout=120,
    )
    err = done.stderr.decode()
    assert done.returncode == EXIT_BAD_INPUT, err
    assert "Traceback" not in err
    assert err.startswith("vouchercore: error: invalid_payload:")
    assert err.count("\n") == 1


def test_a_stored_instant_out_of_range_is_a_storage_error_not_a_traceback(
    tmp_path: Path, loaded: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Creation refuses such dates now; a store written before may still hold one."""
    import sqlite3  # noqa: PLC0415

    from vouchercore.domain.instants import MAX_US  # noqa: PLC0415

    with contextlib.closing(sqlite3.connect(tmp_path / "book.db")) as conn, conn:
        conn.execute(
            "UPDATE vouchers SET expiration_date = ? WHERE code = 'G1'", (MAX_US + 86_400 * 10**6,)
        )
    for args in (("voucher", "G1"), ("voucher", "G1", "--json"), ("audit",)):
        status, out, err = _run(capsys, *args, "--store", loaded)
        assert "Traceback" not in err + out
        assert err.count("\n") <= 1
        if args[0] == "voucher":
            assert status == EXIT_STORAGE, err
            assert err.startswith("vouchercore: error: storage_error:")
