"""``expire_points`` visits only the cards with points due: the stores' points index.

A store that counts the units opened shows the sweep's work follows what expires, not how many
cards are stored; and the index follows every change of a card's next expiry (spent buckets,
deletions), on the memory and SQLite stores.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from vouchercore import Engine, FakeClock
from vouchercore.stores.memory import MemoryStore
from vouchercore.stores.sqlite import SQLiteStore

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class CountingStore:
    """A store that counts the units of work it opens."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.opened = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def begin(self, code_or_id: str) -> Any:
        self.opened += 1
        return self._inner.begin(code_or_id)


@pytest.fixture(params=["memory", "sqlite"])
def counted(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Engine, Any]]:
    inner = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "p.db")
    store = CountingStore(inner)
    engine = Engine(store, clock=FakeClock(START), seed=3)  # type: ignore[arg-type]
    yield engine, store
    inner.close()


def test_the_sweep_opens_only_the_cards_with_points_due(counted: tuple[Engine, Any]) -> None:
    engine, store = counted
    clock = engine.clock
    assert isinstance(clock, FakeClock)
    for i in range(300):
        engine.create_voucher(f"L{i}", loyalty_card={"points": 5})
        if i % 100 == 0:  # three cards with points due tomorrow
            engine.update_voucher_balance(f"L{i}", 10, expires_at=START + timedelta(days=1))
        elif i % 10 == 0:  # some due later
            engine.update_voucher_balance(f"L{i}", 10, expires_at=START + timedelta(days=9))
    store.opened = 0
    assert engine.expire_points() == 0
    assert store.opened == 0  # nothing due: no card is opened
    clock.advance(days=1)
    assert engine.expire_points() == 30
    assert store.opened == 3
    store.opened = 0
    assert engine.expire_points() == 0
    assert store.opened == 0


def test_the_index_follows_spent_and_deleted_buckets(counted: tuple[Engine, Any]) -> None:
    engine, store = counted
    clock = engine.clock
    assert isinstance(clock, FakeClock)
    engine.create_voucher("SPENT", loyalty_card={"points": 0})
    engine.create_voucher("GONE", loyalty_card={"points": 0})
    engine.create_voucher("MOVED", loyalty_card={"points": 0})
    for code in ("SPENT", "GONE", "MOVED"):
        engine.update_voucher_balance(code, 10, expires_at=START + timedelta(days=1))
    engine.redeem_voucher("SPENT", points=10)  # no bucket left: off the index
    engine.delete_voucher("GONE")  # deleted: off the index
    engine.update_voucher_balance("MOVED", 5, expires_at=START + timedelta(hours=1))
    clock.advance(hours=1)
    store.opened = 0
    assert engine.expire_points() == 5  # MOVED's earlier bucket
    assert store.opened == 1
    clock.advance(days=1)
    store.opened = 0
    assert engine.expire_points() == 10
    assert store.opened == 1  # MOVED again; SPENT and GONE are never opened
    assert engine.audit().ok
