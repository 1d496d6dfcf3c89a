"""Real ``vouchercore serve`` processes sharing one store, for the multi-process HTTP tests.

Each process listens on a free port of 127.0.0.1 (``--port 0``: the port is read from
uvicorn's "running on" line); its output (stdout, with uvicorn's access log, and stderr) is read
all along, so that it never fills the pipe, and kept for the test. Every process is stopped by
SIGTERM when the block ends — killed if it does not stop within the liveness bound — however
the block ends.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import httpx2
import pytest

from tests.http.conftest import APP_ID, APP_TOKEN, AUTH
from tests.liveness import LIVENESS

_RUNNING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


@attrs.define
class Served:
    """What the server processes left: their base URLs, and once stopped, their exit codes and
    their output (uvicorn's lines, the access log, the server's own lines)."""

    urls: list[str] = attrs.field(factory=list)
    exit_codes: list[int | None] = attrs.field(factory=list)
    logs: list[str] = attrs.field(factory=list)


def _read(stream: object, into: queue.Queue[str | None]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.put(line)
    into.put(None)  # the stream ended: the process closed it or died


def _port(lines: queue.Queue[str | None], seen: list[str]) -> int:
    """The port of uvicorn's "running on" line (the lines read on the way kept in *seen*)."""
    deadline = time.monotonic() + LIVENESS
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"a server did not say where it listens: {''.join(seen)}")
        if line is None:
            pytest.fail(f"a server ended before it listened: {''.join(seen)}")
        seen.append(line)
        found = _RUNNING.search(line)
        if found is not None:
            return int(found.group(1))


def _answers(url: str) -> None:
    """Wait until the server at *url* answers an authenticated request (a liveness bound)."""
    deadline = time.monotonic() + LIVENESS
    with httpx2.Client(base_url=url, headers=AUTH, timeout=LIVENESS) as client:
        while True:
            try:
                if client.get("/v1/vouchers/readiness-probe").status_code == 404:
                    return
            except httpx2.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server at {url} does not answer")
            time.sleep(0.05)


def _stop(process: subprocess.Popen[str]) -> int | None:
    """SIGTERM, then SIGKILL after the liveness bound; the exit code (None: SIGKILLed)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(LIVENESS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(LIVENESS)
        return None


@contextlib.contextmanager
def serving(store_url: str, count: int, jobs_dir: Path) -> Iterator[Served]:
    """*count* ``vouchercore serve`` processes on *store_url*, each on its own free port,
    all answering when the block starts; stopped (SIGTERM, else SIGKILL) when it ends."""
    env = {
        **os.environ,
        "PYTHONWARNINGS": "error",
        "VOUCHERCORE_APP_ID": APP_ID,
        "VOUCHERCORE_APP_TOKEN": APP_TOKEN,
    }
    command = [
        *(sys.executable, "-m", "vouchercore.cli", "serve"),
        *("--store", store_url, "--port", "0", "--jobs-dir", str(jobs_dir)),
    ]
    served = Served()
    processes: list[subprocess.Popen[str]] = []
    readers: list[tuple[threading.Thread, queue.Queue[str | None], list[str]]] = []
    try:
        for _ in range(count):  # all started at once: they import and open the store together
            process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
            )
            processes.append(process)
            lines: queue.Queue[str | None] = queue.Queue()
            reader = threading.Thread(target=_read, args=(process.stdout, lines), daemon=True)
            reader.start()
            readers.append((reader, lines, []))
        for _, lines, seen in readers:
            served.urls.append(f"http://127.0.0.1:{_port(lines, seen)}")
        for url in served.urls:
            _answers(url)
        yield served
    finally:
        served.exit_codes = [_stop(process) for process in processes]
        for process, (reader, lines, seen) in zip(processes, readers, strict=True):
            reader.join(LIVENESS)
            while True:
                try:
                    line = lines.get_nowait()
                except queue.Empty:
                    break
                if line is not None:
                    seen.append(line)
            served.logs.append("".join(seen))
            if process.stdout is not None:
                process.stdout.close()
