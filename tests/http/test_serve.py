"""``vouchercore serve``: no start without credentials; a real server process that stops
cleanly on SIGTERM or SIGINT, closing its engine, its vouchers kept in the store."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx2
import pytest
from starlette.testclient import TestClient

from tests.http.conftest import APP_ID, APP_TOKEN, AUTH
from tests.liveness import LIVENESS
from vouchercore import Engine
from vouchercore.cli import EXIT_BAD_INPUT, main
from vouchercore.http import from_environment


@pytest.mark.parametrize(
    "args",
    [[], ["--app-id", "a"], ["--app-token", "t"], ["--app-id", "", "--app-token", "t"]],
    ids=["none", "no-token", "no-id", "empty-id"],
)
def test_serve_refuses_to_start_without_credentials(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("VOUCHERCORE_APP_ID", raising=False)
    monkeypatch.delenv("VOUCHERCORE_APP_TOKEN", raising=False)
    assert main(["serve", *args]) == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("vouchercore: error: serve needs credentials")
    assert "VOUCHERCORE_APP_TOKEN" in line


def test_serve_refuses_a_bad_port_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["serve", "--port", "70000", "--app-id", "a", "--app-token", "t"])
    assert stopped.value.code == EXIT_BAD_INPUT
    assert len(capsys.readouterr().err.splitlines()) == 1


def _lines(stream: object, into: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.put(line)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_runs_until_a_signal_then_closes_its_engine_and_exits_0(
    tmp_path: Path, stop: signal.Signals
) -> None:
    book = tmp_path / "book.db"
    env = {
        **os.environ,
        "PYTHONWARNINGS": "error",
        "VOUCHERCORE_APP_ID": APP_ID,
        "VOUCHERCORE_APP_TOKEN": APP_TOKEN,
    }
    command = [sys.executable, "-m", "vouchercore.cli", "serve", "--store", f"sqlite:///{book}"]
    seen: list[str] = []
    with subprocess.Popen(
        [*command, "--port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as server:
        said: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=_lines, args=(server.stderr, said), daemon=True)
        reader.start()
        try:
            port = None
            while port is None:
                try:
                    line = said.get(timeout=LIVENESS)
                except queue.Empty:
                    pytest.fail(f"the server did not say where it listens: {seen}")
                seen.append(line)
                found = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line)
                port = None if found is None else int(found.group(1))
            with httpx2.Client(
                base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=LIVENESS
            ) as client:
                made = client.post("/v1/vouchers/KEPT-1", json={"gift": {"amount": 700}})
                assert made.status_code == 200, made.text
                assert client.get("/v1/vouchers/KEPT-1").json()["gift"]["balance"] == 700
            server.send_signal(stop)
            assert server.wait(LIVENESS) == 0
        finally:
            if server.poll() is None:
                server.kill()
                server.wait(LIVENESS)
        reader.join(LIVENESS)
    while not said.empty():
        seen.append(said.get())
    log = "".join(seen)
    assert "engine closed" in log and f"stopped by {stop.name}" in log
    assert "Traceback" not in log and APP_TOKEN not in log
    with Engine(f"sqlite:///{book}") as reopened:
        assert reopened.get_voucher("KEPT-1").gift.balance == 700  # type: ignore[union-attr]


def test_an_app_configured_by_the_environment_serves_its_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOUCHERCORE_STORE", f"sqlite:///{tmp_path / 'book.db'}")
    monkeypatch.setenv("VOUCHERCORE_APP_ID", APP_ID)
    monkeypatch.setenv("VOUCHERCORE_APP_TOKEN", APP_TOKEN)
    monkeypatch.setenv("VOUCHERCORE_JOBS_DIR", str(tmp_path / "jobs"))
    with TestClient(from_environment(), headers=AUTH) as client:
        assert client.post("/v1/vouchers/ENV-1", json={"gift": {"amount": 5}}).status_code == 200
    with Engine(f"sqlite:///{tmp_path / 'book.db'}") as reopened:
        assert reopened.get_voucher("ENV-1").gift.balance == 5  # type: ignore[union-attr]
    monkeypatch.delenv("VOUCHERCORE_APP_TOKEN")
    with pytest.raises(ValueError, match="VOUCHERCORE_APP_TOKEN"):
        from_environment()
