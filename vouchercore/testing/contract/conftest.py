"""Fixtures of the contract suite, parametrised over the selected stores.

* ``vouchercore_store_factory`` — the store factory of this run (one parameter per store spec,
  see :mod:`vouchercore.testing.plugin`);
* ``clock`` — a :class:`~vouchercore.FakeClock` at :data:`START`;
* ``make_engine`` — ``make_engine(clock=…, seed=…, **options)``: a new engine on a new, empty
  store of the kind under test, closed after the test (skips the test if the store is
  unavailable here); *options* are the engine's other keyword arguments
  (``redeemables_limit=``, …);
* ``engine`` — ``make_engine(clock=clock, seed=SEED)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from vouchercore import Clock, Engine, FakeClock
from vouchercore.testing.plugin import selected_stores
from vouchercore.testing.stores import (
    StoreFactory,
    StoreUnavailable,
    store_factory,
    unavailable_reason,
)

#: The fake clock's starting instant.
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
#: The id seed of the ``engine`` fixture.
SEED = 1234

MakeEngine = Callable[..., Engine]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One run of each test per selected store."""
    if "vouchercore_store_factory" in metafunc.fixturenames:
        specs = selected_stores(metafunc.config)
        metafunc.parametrize("vouchercore_store_factory", specs, indirect=True, ids=specs)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip, before any fixture is made, the runs on a store that cannot be made here
    (one line in the summary for all of them)."""
    callspec = getattr(item, "callspec", None)
    spec = None if callspec is None else callspec.params.get("vouchercore_store_factory")
    reason = None if spec is None else _unavailable(spec)
    if reason is not None:
        pytest.skip(f"store {spec!r}: {reason}")


_reasons: dict[str, str | None] = {}


def _unavailable(spec: str) -> str | None:
    if spec not in _reasons:
        _reasons[spec] = unavailable_reason(spec)
    return _reasons[spec]


@pytest.fixture
def vouchercore_store_factory(request: pytest.FixtureRequest) -> StoreFactory:
    """The factory of the store spec this test runs on."""
    spec: str = request.param
    return store_factory(spec)


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at 2026-03-01T12:00:00Z."""
    return FakeClock(START)


@pytest.fixture
def make_engine(vouchercore_store_factory: StoreFactory, tmp_path: Path) -> Iterator[MakeEngine]:
    """Make engines, each on a new, empty store of the kind under test."""
    with contextlib.ExitStack() as stores:

        def make(*, clock: Clock | None = None, seed: int | None = None, **options: Any) -> Engine:
            try:
                store = stores.enter_context(vouchercore_store_factory(tmp_path))
            except StoreUnavailable as unavailable:
                pytest.skip(str(unavailable))
            return Engine(store, clock=clock, seed=seed, **options)

        yield make


@pytest.fixture
def engine(make_engine: MakeEngine, clock: FakeClock) -> Engine:
    """An engine on a fresh store of the kind under test, on the fake clock, ids seeded."""
    return make_engine(clock=clock, seed=SEED)


@pytest.fixture
def batch_sizes(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every batch the ``engine`` fixture's store is given by
    ``insert_vouchers``, in call order (bulk work: import, generation)."""
    sizes: list[int] = []
    insert = engine.store.insert_vouchers

    def recording(records: Sequence[Any]) -> list[int]:
        sizes.append(len(records))
        return insert(records)

    monkeypatch.setattr(engine.store, "insert_vouchers", recording)
    return sizes
