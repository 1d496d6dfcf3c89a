"""Fixtures of the thread tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from vouchercore import Engine, FakeClock
from vouchercore.testing.stores import store_factory, unavailable_reason

#: the stores the thread tests run on (PostgreSQL when VOUCHERCORE_TEST_POSTGRES_DSN is set)
STORES = ("memory", "sqlite", "postgres")


@pytest.fixture(params=STORES)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on a new store of each kind (skipped where the store is unavailable), on a
    fake clock, with seeded ids."""
    spec: str = request.param
    reason = unavailable_reason(spec)
    if reason is not None:
        pytest.skip(f"store {spec!r}: {reason}")
    with store_factory(spec)(tmp_path) as store:
        engine = Engine(store, clock=FakeClock(), seed=77)
        try:
            yield engine
        finally:
            engine.close()


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Threads switch every microsecond (CPython's default is 5 ms), so races show up."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)
