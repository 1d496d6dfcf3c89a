"""``simulate(processes=True)`` leaves no orphans: when the parent is SIGKILLed, its terminal
processes (and the multiprocessing resource tracker) exit instead of waiting forever.

The parent runs in a subprocess with the test hook ``VOUCHERCORE_SIMULATE_PAUSE_BEFORE_GO`` (see
``vouchercore/simulation.py``): once every terminal process has opened its engine and said
"ready", the parent writes the pids to a file and sleeps instead of telling them to go. The test
SIGKILLs the parent at that point — the terminals are started but not released, waiting for a
go that will never come — and then waits (up to a generous liveness bound, no timing claim)
until every terminal process and the resource tracker are gone.

Processes are read from ``/proc`` (Linux only): a pid counts as alive while its
``/proc/<pid>/stat`` exists with the start time recorded before the kill (so a reused pid is not
mistaken for it) and it is not a zombie (an orphan reparented to a process that does not reap
has exited all the same).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.processes,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)"),
]

#: How long the orphans get to exit after the parent's death (a liveness bound, not a timing
#: claim: with the fix they go within about a second).
LIVENESS_SECONDS = 30.0

#: How long the parent gets to start its terminal processes and reach the pause.
START_SECONDS = 120.0

PARENT = """
from vouchercore.simulation import simulate
simulate(seed=3, terminals=2, vouchers=10, operations=200, store={store!r}, processes=True)
"""


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of *pid* from ``/proc/<pid>/stat``; None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:  # FileNotFoundError, or ProcessLookupError (ESRCH) on a pid just gone
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    return fields[0], int(fields[1]), int(fields[19])


def _alive(pid: int, start: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[2] == start and stat[0] not in {"Z", "X"}


def _resource_trackers(parent: int) -> list[int]:
    """The children of *parent* that run ``multiprocessing.resource_tracker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat is None or stat[1] != parent:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"resource_tracker" in cmdline:
            found.append(int(entry.name))
    return found


def test_terminal_processes_and_the_resource_tracker_exit_when_the_parent_is_killed(
    tmp_path: Path,
) -> None:
    pids_file = tmp_path / "pids.json"
    env = {**os.environ, "VOUCHERCORE_SIMULATE_PAUSE_BEFORE_GO": str(pids_file)}
    store = f"sqlite:///{tmp_path / 'sim.db'}?synchronous=NORMAL"
    # a session of its own, so that whatever outlives the test can still be killed by group;
    # stderr to a file: a pipe nobody reads could block the orphans' last words
    with (tmp_path / "stderr.txt").open("wb") as stderr:
        parent = subprocess.Popen(
            [sys.executable, "-c", PARENT.format(store=store)],
            env=env,
            start_new_session=True,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + START_SECONDS
        while not pids_file.exists():
            if parent.poll() is not None:
                err = (tmp_path / "stderr.txt").read_text(errors="replace")
                pytest.fail(f"the parent exited ({parent.returncode}) before the pause:\n{err}")
            assert time.monotonic() < deadline, "the terminal processes did not get ready"
            time.sleep(0.05)
        pids = json.loads(pids_file.read_text(encoding="utf-8"))
        assert pids["parent"] == parent.pid
        trackers = _resource_trackers(parent.pid)
        assert len(trackers) == 1, f"expected one resource tracker child, found {trackers}"
        watched = {f"terminal process {i}": pid for i, pid in enumerate(pids["workers"])}
        watched["resource tracker"] = trackers[0]
        starts = {}
        for name, pid in watched.items():
            stat = _stat(pid)
            assert stat is not None, f"{name} ({pid}) is not running before the kill"
            assert stat[1] == parent.pid, f"{name} ({pid}) is not the parent's child"
            starts[name] = stat[2]

        parent.send_signal(signal.SIGKILL)  # started, ready, not released
        parent.wait()

        deadline = time.monotonic() + LIVENESS_SECONDS
        left = dict(watched)
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = {name: pid for name, pid in left.items() if _alive(pid, starts[name])}
        assert not left, f"still running {LIVENESS_SECONDS:.0f} s after the parent died: {left}"
    finally:
        with contextlib.suppress(ProcessLookupError):  # the orphans of a failed run, if any
            os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()
