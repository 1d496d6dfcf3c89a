"""Fixtures of the HTTP server tests: a real uvicorn server on 127.0.0.1 (a free port), the
PyPI ``voucherify`` SDK pointed at it, and Starlette's TestClient for requests no SDK sends."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.testclient import TestClient

from tests.liveness import LIVENESS
from vouchercore import Engine, FakeClock
from vouchercore.http import create_app

APP_ID = "test-app"
APP_TOKEN = "test-token-0123456789"
AUTH = {"X-App-Id": APP_ID, "X-App-Token": APP_TOKEN}


@contextlib.contextmanager
def running(app: Starlette) -> Iterator[str]:
    """Serve *app* with uvicorn on 127.0.0.1 (a free port the OS picks) in a thread; its base
    URL. The server is stopped, its lifespan shutdown run, when the block ends."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + LIVENESS
    while not server.started:  # a liveness bound on startup, not a timing assertion
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the uvicorn server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(LIVENESS)
        assert not thread.is_alive(), "the uvicorn server did not stop"


def wait_for(check: Callable[[], Any], what: str) -> Any:
    """Poll *check* until it returns something truthy (a liveness bound: the test fails
    rather than hangs); that value."""
    deadline = time.monotonic() + LIVENESS
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {LIVENESS:g} s")
        time.sleep(0.02)


@pytest.fixture(params=["memory", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The in-memory store (called from the event loop) and a SQLite file (called in worker
    threads)."""
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'book.db'}"


@pytest.fixture
def served_engine(store_url: str, clock: FakeClock) -> Engine:
    """A seeded engine on the fake clock, on each store (closed by the server's shutdown)."""
    return Engine(store_url, clock=clock, seed=7)


@pytest.fixture
def base_url(served_engine: Engine, tmp_path: Path) -> Iterator[str]:
    """A real uvicorn server over :func:`served_engine`; its base URL."""
    app = create_app(
        served_engine, app_id=APP_ID, app_token=APP_TOKEN, jobs_dir=str(tmp_path / "jobs")
    )
    with running(app) as url:
        yield url


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    """Starlette's TestClient over an in-memory engine (the conftest's ``engine``), with the
    credentials; lifespan run."""
    app = create_app(engine, app_id=APP_ID, app_token=APP_TOKEN)
    with TestClient(app, headers=AUTH) as test_client:
        yield test_client
