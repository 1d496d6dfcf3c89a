"""Time bounds of the PostgreSQL store: a call waits at most its ``timeout`` for a row lock and
for each statement (``lock_timeout``/``statement_timeout`` on the store's connections), and a
server that stops answering is given up on (the store's watchdog), raising StorageError; the
voucher is usable again once the holder or the server is back.

Bounds asserted here are liveness bounds (a call *returns*, well within 60 s), never timings.
The frozen-server test starts a throwaway cluster of its own (``initdb`` + ``pg_ctl`` on a free
port, trust authentication, 127.0.0.1 only) and SIGSTOPs it: marked ``slow``, skipped when the
server binaries are missing.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

psycopg = pytest.importorskip("psycopg")

from tests.liveness import bounded  # noqa: E402
from vouchercore import Engine, FakeClock, StorageError  # noqa: E402

DSN = os.environ.get("VOUCHERCORE_TEST_POSTGRES_DSN")
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _url(dsn: str, **options: Any) -> str:
    separator = "&" if "?" in dsn else "?"
    return dsn + separator + "&".join(f"{name}={value}" for name, value in options.items())


@pytest.fixture
def schema() -> Iterator[str]:
    if not DSN:
        pytest.skip("VOUCHERCORE_TEST_POSTGRES_DSN is not set: no PostgreSQL server")
    name = f"vc_timeout_{secrets.token_hex(6)}"
    yield name
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def test_the_store_connections_carry_the_timeout(schema: str) -> None:
    assert DSN is not None
    with Engine(_url(DSN, schema=schema, timeout=2.5)) as engine:
        store: Any = engine.store
        assert store._read("SHOW lock_timeout") == [("2500ms",)]
        assert store._read("SHOW statement_timeout") == [("2500ms",)]


def test_a_frozen_client_holding_the_row_costs_a_storage_error_not_a_wedge(schema: str) -> None:
    """Another client locks the voucher's row and stops (a frozen process, a debugger): a call
    with ``timeout=2`` raises StorageError instead of waiting for ever; once the holder ends,
    the voucher is usable."""
    assert DSN is not None
    with Engine(_url(DSN, schema=schema, timeout=2), clock=FakeClock(START), seed=3) as engine:
        card = engine.create_voucher("GIFT-1", type="GIFT_VOUCHER", gift={"amount": 1_000})
        with psycopg.connect(DSN) as holder:  # a transaction left open, holding the row lock
            holder.execute(
                f'SELECT id FROM "{schema}".vouchers WHERE code = %s FOR UPDATE', ("GIFT-1",)
            )
            with pytest.raises(StorageError) as caught:
                bounded(lambda: engine.redeem_voucher("GIFT-1", credits=100), "a redemption", 60)
            raised = caught.value
            assert raised.key == "storage_error"
            assert "timeout" in str(raised)  # lock_timeout or statement_timeout: both are 2 s
            # reads that need no lock still work meanwhile
            assert engine.store.transaction_count(card.id) == 0
            holder.rollback()
        bounded(lambda: engine.redeem_voucher("GIFT-1", credits=100), "a redemption", 60)
        assert engine.get_voucher("GIFT-1").gift.balance == 900


# --- a frozen server ----------------------------------------------------------------------------


def _server_bindir() -> Path | None:
    """A directory holding ``initdb`` and ``pg_ctl`` (``VOUCHERCORE_TEST_PG_BINDIR``, the
    ``pg_config`` on PATH, or Debian's /usr/lib/postgresql/*/bin)."""
    candidates: list[str] = []
    if os.environ.get("VOUCHERCORE_TEST_PG_BINDIR"):
        candidates.append(os.environ["VOUCHERCORE_TEST_PG_BINDIR"])
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            found = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            )
            candidates.append(found.stdout.strip())
    candidates.extend(sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True))
    for candidate in candidates:
        path = Path(candidate)
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _children(pid: int) -> list[int]:
    """The processes whose parent is *pid* (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            # "pid (comm) state ppid …": comm may hold spaces and parentheses
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@contextlib.contextmanager
def _throwaway_cluster() -> Iterator[tuple[str, int]]:
    """A PostgreSQL cluster of its own on a free port: ``(dsn, postmaster pid)``; stopped and
    removed afterwards. Skips when the server binaries (or, as root, the ``postgres`` user to
    run them as) are missing."""
    bindir = _server_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) to start a cluster with")
    if not hasattr(signal, "SIGSTOP") or not Path("/proc").is_dir():
        pytest.skip("freezing a server needs SIGSTOP and /proc")
    run_as: list[str] = []
    owner = None
    if os.geteuid() == 0:  # initdb refuses to run as root
        runuser = shutil.which("runuser")
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            owner = None
        if runuser is None or owner is None:
            pytest.skip("running as root without runuser and a postgres user for initdb")
        run_as = [runuser, "-u", "postgres", "--"]
    top = Path(tempfile.mkdtemp(prefix="vc-frozen-"))
    if owner is not None:
        os.chown(top, owner.pw_uid, owner.pw_gid)
    data, port = top / "data", _free_port()

    def run(*command: str) -> None:
        subprocess.run([*run_as, *command], check=True, capture_output=True, timeout=120)

    started = False
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {top} -c fsync=off"
        log = str(top / "log")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", log, "-w", "start")
        started = True
        postmaster = int((data / "postmaster.pid").read_text().split()[0])
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres", postmaster
    finally:
        if started:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.slow
def test_a_frozen_server_costs_a_storage_error_not_a_wedge() -> None:
    """The server stops answering (SIGSTOP of the postmaster and every backend: the kernel
    still accepts and acknowledges, so only the client can notice): a call with ``timeout=2``
    raises StorageError; once the server runs again, the voucher is usable."""
    with _throwaway_cluster() as (dsn, postmaster):
        url = _url(dsn, timeout=2, min_size=1, max_size=2)
        with Engine(url, clock=FakeClock(START), seed=3) as engine:
            engine.create_voucher("GIFT-1", type="GIFT_VOUCHER", gift={"amount": 1_000})
            assert engine.redeem_voucher("GIFT-1", credits=100).amount == 100
            frozen = [postmaster, *_children(postmaster)]
            try:
                for pid in frozen:
                    os.kill(pid, signal.SIGSTOP)
                with pytest.raises(StorageError) as caught:
                    redeem = lambda: engine.redeem_voucher("GIFT-1", credits=100)  # noqa: E731
                    bounded(redeem, "a redemption", 60)
                raised = caught.value
                assert raised.key == "storage_error"
                assert "no answer from the database" in str(raised), raised
            finally:
                for pid in frozen:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)
            bounded(lambda: engine.redeem_voucher("GIFT-1", credits=100), "a redemption", 60)
            assert engine.get_voucher("GIFT-1").gift.balance == 800
