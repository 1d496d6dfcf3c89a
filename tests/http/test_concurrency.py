"""How the server calls the engine: the in-memory store straight from the event loop, a SQL
store in a bounded pool of worker threads — so that a slow database never blocks the loop."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx2

from tests.http.conftest import APP_ID, APP_TOKEN, AUTH, running
from tests.liveness import LIVENESS, bounded
from vouchercore import Engine, FakeClock, Voucher
from vouchercore.http import create_app


class _Watched(Engine):
    """An engine that records, for each ``get_voucher``, the thread it runs on and how many
    run at once; a call for ``SLOW-…`` waits for :attr:`release`."""

    def __init__(self, store: str, clock: FakeClock) -> None:
        super().__init__(store, clock=clock, seed=3)
        self.release = threading.Event()
        self.threads: list[str] = []
        self._lock = threading.Lock()
        self.active = 0
        self.most = 0

    def get_voucher(self, code_or_id: str) -> Voucher:
        with self._lock:
            self.threads.append(threading.current_thread().name)
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            if code_or_id.startswith("SLOW"):
                assert self.release.wait(LIVENESS), "never released"
            return super().get_voucher(code_or_id)
        finally:
            with self._lock:
                self.active -= 1


def _get(base_url: str, code: str) -> Any:
    with httpx2.Client(base_url=base_url, headers=AUTH, timeout=LIVENESS) as client:
        answer = client.get(f"/v1/vouchers/{code}")
        assert answer.status_code == 200, answer.text
        return answer.json()


def _book(engine: Engine, *codes: str) -> None:
    for code in codes:
        engine.create_voucher(code, gift={"amount": 100})


def test_a_slow_database_call_does_not_hold_up_other_requests(
    tmp_path: Path, clock: FakeClock
) -> None:
    engine = _Watched(f"sqlite:///{tmp_path / 'book.db'}", clock)
    _book(engine, "SLOW-1", "FAST-1")
    with running(create_app(engine, app_id=APP_ID, app_token=APP_TOKEN)) as url:
        slow = threading.Thread(target=_get, args=(url, "SLOW-1"))
        slow.start()
        bounded(lambda: _wait_until(lambda: engine.active == 1), "the slow call started")
        # the slow call holds a worker thread, not the event loop: this one is answered
        assert bounded(lambda: _get(url, "FAST-1"), "a request beside a slow call")["code"] == (
            "FAST-1"
        )
        engine.release.set()
        slow.join(LIVENESS)
        assert not slow.is_alive()
    assert "uvicorn" not in engine.threads


def test_no_more_engine_calls_run_at_once_than_the_thread_bound(
    tmp_path: Path, clock: FakeClock
) -> None:
    engine = _Watched(f"sqlite:///{tmp_path / 'book.db'}", clock)
    codes = [f"SLOW-{i}" for i in range(5)]
    _book(engine, *codes)
    app = create_app(engine, app_id=APP_ID, app_token=APP_TOKEN, threads=2)
    with running(app) as url:
        callers = [threading.Thread(target=_get, args=(url, code)) for code in codes]
        for caller in callers:
            caller.start()
        bounded(lambda: _wait_until(lambda: engine.active == 2), "two calls running")
        engine.release.set()
        for caller in callers:
            caller.join(LIVENESS)
            assert not caller.is_alive()
    assert engine.most == 2
    assert len(engine.threads) == 5


def test_the_in_memory_engine_is_called_on_the_event_loops_thread(clock: FakeClock) -> None:
    engine = _Watched("memory://", clock)
    _book(engine, "G-1", "G-2")
    with running(create_app(engine, app_id=APP_ID, app_token=APP_TOKEN)) as url:
        _get(url, "G-1")
        _get(url, "G-2")
    assert engine.threads == ["uvicorn", "uvicorn"]


def _wait_until(condition: Any) -> None:
    stop = threading.Event()
    while not condition():
        stop.wait(0.005)
