"""One bad call never wedges a voucher: whatever is raised inside a unit of work — a bug's
ValueError or a KeyboardInterrupt (a BaseException) — at whatever step, every store ends the unit
and holds nothing afterwards.

Each test injects one exception deterministically (monkeypatch, never a sleep) at one step of a
keyed redemption that releases a LOCK session and writes a gift card transaction (so its commit
writes a key, the voucher, a session delete, a transaction and a redemption):

* inside ``begin``, once the voucher is locked (SQL stores: decoding the row raises);
* in the domain, before it decides, after it decides (before applying), and after it applied;
* at commit, while gathering the unit's changes; at each write of the commit, and at the
  ``COMMIT`` itself (PostgreSQL: also while the
  commit's round trip is in flight);
* the memory store's commit steps (settling the idempotency key, indexing a card's points).

After each, (a) the same voucher is usable at once from another thread and, for SQLite and
PostgreSQL, from another process (each bounded: a liveness bound, not a timing assertion), and
(b) nothing of the failed call is stored (the memory store applies the domain's changes in
place, so a failure *after* the domain applied them keeps them: only liveness is checked there).
Also the failures reported in the issue, reproduced through the public API: a lone surrogate in a
text field on SQLite, a huge integer in metadata on PostgreSQL.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.liveness import LIVENESS, bounded
from vouchercore import Engine, FakeClock
from vouchercore.domain import operations
from vouchercore.stores import _sql
from vouchercore.stores.memory import MemoryStore
from vouchercore.testing import state_snapshot

DSN = os.environ.get("VOUCHERCORE_TEST_POSTGRES_DSN")
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CARD = "GIFT-1"
OTHER = "GIFT-2"
LOYAL = "LOY-1"
HOLD = "ssn_hold"
#: how long a check waits for the other thread or process (a liveness bound)
PROBE = Path(__file__).with_name("wedge_probe.py")


class Injected(ValueError):
    """The ValueError the tests inject (a bug's exception)."""


RAISES: dict[str, Callable[[], BaseException]] = {
    "ValueError": lambda: Injected("injected fault"),
    "KeyboardInterrupt": KeyboardInterrupt,
}


@dataclass
class Book:
    kind: str
    url: str | None  # what another process opens (None: memory)
    engine: Engine


def _postgres_url(app: str, schema: str) -> str:
    assert DSN is not None
    separator = "&" if "?" in DSN else "?"
    return f"{DSN}{separator}schema={schema}&timeout=5&application_name={app}"


def _drop_postgres(app: str, schema: str) -> None:
    import psycopg  # noqa: PLC0415

    assert DSN is not None
    with psycopg.connect(DSN, autocommit=True) as conn:
        # a wedged connection (a failing run) would block the DROP: end it first
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (app,),
        )
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _make_book(kind: str, tmp_path: Path) -> Iterator[Book]:
    """A store of *kind* with a gift card holding a LOCK session, a second gift card and a
    loyalty card."""
    app = schema = ""
    if kind == "memory":
        url = None
        engine = Engine(MemoryStore(), clock=FakeClock(START), seed=5)
    elif kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'vouchers.db'}?busy_timeout=5"
        engine = Engine(url, clock=FakeClock(START), seed=5)
    else:
        if not DSN:
            pytest.skip("VOUCHERCORE_TEST_POSTGRES_DSN is not set: no PostgreSQL server")
        pytest.importorskip("psycopg")
        token = secrets.token_hex(6)
        app, schema = f"vcwedge_{token}", f"vc_wedge_{token}"
        url = _postgres_url(app, schema)
        engine = Engine(url, clock=FakeClock(START), seed=5)
    try:
        for code in (CARD, OTHER):
            engine.create_voucher(code, type="GIFT_VOUCHER", gift={"amount": 10_000})
        engine.create_voucher(LOYAL, loyalty_card={"points": 1_000})
        engine.validate_voucher(CARD, credits=100, session={"type": "LOCK", "key": HOLD})
        yield Book(kind, url, engine)
    finally:
        try:
            engine.close()
        finally:
            if kind == "postgres":
                _drop_postgres(app, schema)


class Probe:
    """The second process (:mod:`wedge_probe`), started once per module."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[str] | None = None

    def read(self, url: str, codes: list[str]) -> list[int | None]:
        """Read *codes* through units of work in the other process (bounded by LIVENESS)."""
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen(
                [sys.executable, str(PROBE)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        process = self.process
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(
            json.dumps({"url": url, "codes": codes, "now": START.isoformat()}) + "\n"
        )
        process.stdin.flush()
        answer: list[str] = []
        reader = threading.Thread(target=lambda: answer.append(process.stdout.readline()))
        reader.start()
        reader.join(LIVENESS)
        if reader.is_alive() or not answer or not answer[0]:
            self.close()
            reader.join()
            pytest.fail(f"another process could not read {codes} within {LIVENESS:g} s")
        reply = json.loads(answer[0])
        assert reply["ok"], f"another process failed to read {codes}: {reply['error']}"
        return list(reply["balances"])

    def close(self) -> None:
        if self.process is not None:
            process, self.process = self.process, None
            process.kill()
            process.communicate()  # waits, and closes the pipes


@pytest.fixture(scope="module")
def probe() -> Iterator[Probe]:
    made = Probe()
    yield made
    made.close()


def assert_released(
    book: Book,
    probe: Probe,
    before: dict[str, Any] | None,
    codes: tuple[str, ...] = (CARD,),
    key: str = "idem-1",
) -> dict[str, Any]:
    """(a) the vouchers are usable from another thread and another process, (b) the state is
    *before* (unless None); then a redemption keyed *key* runs (the failed call's key,
    ``idem-1``, was not kept). The state read before that redemption."""
    engine = book.engine
    for code in codes:
        bounded(lambda code=code: engine.get_voucher(code), f"another thread reading {code}")
    if book.url is not None:
        probe.read(book.url, list(codes))
    after: dict[str, Any] = bounded(lambda: state_snapshot(engine), "a snapshot")
    if before is not None:
        assert after == before
    redeemed = bounded(
        lambda: engine.redeem_voucher(CARD, credits=7, idempotency_key=key), "another redemption"
    )
    assert redeemed.amount == 7
    return after


def redeem(book: Book) -> Any:
    """The call the faults are injected into."""
    return book.engine.redeem_voucher(
        CARD, credits=500, session_key=HOLD, idempotency_key="idem-1", order_id="order-1"
    )


class Once:
    """Raises the injected exception the first time it is armed and asked, then never."""

    def __init__(self, make: Callable[[], BaseException]) -> None:
        self.make = make
        self.fired = False

    def fire(self) -> None:
        if not self.fired:
            self.fired = True
            raise self.make()


# --- injection points ---------------------------------------------------------------------------


def _in_begin(monkeypatch: pytest.MonkeyPatch, once: Once, book: Book) -> None:
    """SQL stores: decoding the locked voucher's row raises (inside begin, after the lock)."""
    real = _sql.record_from_row

    def record_from_row(*args: Any, **kwargs: Any) -> Any:
        once.fire()
        return real(*args, **kwargs)

    monkeypatch.setattr(_sql, "record_from_row", record_from_row)


def _before_decision(monkeypatch: pytest.MonkeyPatch, once: Once, book: Book) -> None:
    real = operations.redeem

    def redeem(*args: Any, **kwargs: Any) -> Any:
        once.fire()
        return real(*args, **kwargs)

    monkeypatch.setattr(operations, "redeem", redeem)


def _after_decision(monkeypatch: pytest.MonkeyPatch, once: Once, book: Book) -> None:
    """The domain has decided (the redemption passes), nothing applied yet."""
    real = operations.first_failure

    def first_failure(*args: Any, **kwargs: Any) -> Any:
        decided = real(*args, **kwargs)
        once.fire()
        return decided

    monkeypatch.setattr(operations, "first_failure", first_failure)


def _after_apply(monkeypatch: pytest.MonkeyPatch, once: Once, book: Book) -> None:
    real = operations.redeem

    def redeem(*args: Any, **kwargs: Any) -> Any:
        applied = real(*args, **kwargs)
        once.fire()
        return applied

    monkeypatch.setattr(operations, "redeem", redeem)


def _commit_prepare(monkeypatch: pytest.MonkeyPatch, once: Once, book: Book) -> None:
    """SQL stores: gathering the unit's changes at commit raises (as encoding a value the
    driver cannot take does), before any write is sent."""
    real = _sql.SqlUnit.changes

    def changes(self: _sql.SqlUnit) -> Any:
        once.fire()
        return real(self)

    monkeypatch.setattr(_sql.SqlUnit, "changes", changes)


def _memory_settle_keys(monkeypatch: pytest.MonkeyPatch, once: Once, book: Book) -> None:
    """Memory: storing the unit's idempotency record at commit raises (its expiry index)."""
    store = book.engine.store
    assert isinstance(store, MemoryStore)
    index = store._key_expiry
    real = index.add

    def add(record: Any) -> None:
        once.fire()
        real(record)

    monkeypatch.setattr(index, "add", add)


def _sqlite_statement(marker: str) -> Callable[[pytest.MonkeyPatch, Once, Book], None]:
    """SQLite: the first statement containing *marker* raises before it runs."""

    def inject(monkeypatch: pytest.MonkeyPatch, once: Once, book: Book) -> None:
        from vouchercore.stores import sqlite as sqlite_module  # noqa: PLC0415

        connection = sqlite_module._Connection
        for name in ("execute", "executemany"):
            real = getattr(connection, name)

            def statement(self: Any, sql: str, *args: Any, _real: Any = real) -> Any:
                if marker in sql:
                    once.fire()
                return _real(self, sql, *args)

            monkeypatch.setattr(connection, name, statement)

    return inject


def _postgres_statement(marker: str) -> Callable[[pytest.MonkeyPatch, Once, Book], None]:
    """PostgreSQL: the first statement containing *marker* raises as it is queued (inside the
    commit's pipeline)."""

    def inject(monkeypatch: pytest.MonkeyPatch, once: Once, book: Book) -> None:
        import psycopg  # noqa: PLC0415

        real = psycopg.Connection.execute

        def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(query, str) and marker in query:
                once.fire()
            return real(self, query, *args, **kwargs)

        monkeypatch.setattr(psycopg.Connection, "execute", execute)

    return inject


def _postgres_commit_in_flight(monkeypatch: pytest.MonkeyPatch, once: Once, book: Book) -> None:
    """PostgreSQL: once the commit's ``COMMIT`` is queued, waiting for the pipeline's answer
    raises (the connection's state is then unknown: statements may be half-sent)."""
    import psycopg  # noqa: PLC0415

    real_execute = psycopg.Connection.execute
    real_wait = psycopg.Connection.wait
    armed = [False]

    def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        result = real_execute(self, query, *args, **kwargs)
        if query == "COMMIT" and self._pipeline is not None:
            armed[0] = True
        return result

    def wait(self: Any, *args: Any, **kwargs: Any) -> Any:
        if armed[0]:
            armed[0] = False
            once.fire()
        return real_wait(self, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "execute", execute)
    monkeypatch.setattr(psycopg.Connection, "wait", wait)


#: the steps of the redemption, per store: (name, injector, whether the state must be unchanged)
Injector = Callable[[pytest.MonkeyPatch, Once, Book], None]
DOMAIN_STEPS: list[tuple[str, Injector]] = [
    ("before-decision", _before_decision),
    ("after-decision", _after_decision),
    ("after-apply", _after_apply),
]
STEPS: dict[str, list[tuple[str, Injector]]] = {
    "memory": [*DOMAIN_STEPS, ("commit-settle-keys", _memory_settle_keys)],
    "sqlite": [
        ("in-begin", _in_begin),
        *DOMAIN_STEPS,
        ("commit-prepare", _commit_prepare),
        ("write-key", _sqlite_statement("INSERT OR REPLACE INTO idempotency_keys")),
        ("write-voucher", _sqlite_statement("UPDATE vouchers SET")),
        ("write-session", _sqlite_statement("DELETE FROM sessions WHERE voucher_id = ? AND")),
        ("write-transaction", _sqlite_statement("INSERT INTO transactions")),
        ("write-redemption", _sqlite_statement("INSERT INTO redemptions")),
        ("commit", _sqlite_statement("COMMIT")),
    ],
    "postgres": [
        ("in-begin", _in_begin),
        *DOMAIN_STEPS,
        ("commit-prepare", _commit_prepare),
        ("write-key", _postgres_statement("ON CONFLICT (key) DO UPDATE")),
        ("write-voucher", _postgres_statement(".vouchers SET")),
        ("write-session", _postgres_statement(".sessions WHERE voucher_id = %s AND key")),
        ("write-transaction", _postgres_statement(".transactions (")),
        ("write-redemption", _postgres_statement(".redemptions (")),
        ("commit", _postgres_statement("COMMIT")),
        ("commit-in-flight", _postgres_commit_in_flight),
    ],
}


def _cases() -> list[Any]:
    return [
        pytest.param(kind, step, raised, id=f"{kind}-{step}-{raised}")
        for kind, steps in STEPS.items()
        for step, _ in steps
        for raised in RAISES
    ]


@pytest.mark.parametrize(("kind", "step", "raised"), _cases())
def test_a_fault_at_any_step_leaves_the_voucher_usable_and_unchanged(
    kind: str,
    step: str,
    raised: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    probe: Probe,
) -> None:
    book = _book_of(request, kind)
    before = state_snapshot(book.engine)
    once = Once(RAISES[raised])
    dict(STEPS[kind])[step](monkeypatch, once, book)
    with pytest.raises(Injected if raised == "ValueError" else KeyboardInterrupt):
        redeem(book)
    assert once.fired
    monkeypatch.undo()
    # the memory store applies the domain's changes in place: a fault after they were applied
    # keeps them (ports.Store.abort). A COMMIT already sent when the fault hit may have been
    # applied by the server: all of the redemption or none of it. Every other case stores
    # nothing.
    applied = kind == "memory" and step in {"after-apply", "commit-settle-keys"}
    in_flight = step == "commit-in-flight"
    unchanged = not (applied or in_flight)
    after = assert_released(
        book, probe, before if unchanged else None, key="idem-1" if unchanged else "idem-2"
    )
    if in_flight and after != before:
        card = after[CARD]
        assert card["voucher"].gift.balance == 9_500
        assert card["sessions"] == ()
        assert [r.amount for r in card["redemptions"]] == [500]
        assert len(card["transactions"]) == 1


def _book_of(request: pytest.FixtureRequest, kind: str) -> Book:
    """The ``<kind>_book`` fixture."""
    book: Book = request.getfixturevalue(f"{kind}_book")
    return book


@pytest.fixture
def memory_book(tmp_path: Path) -> Iterator[Book]:
    yield from _make_book("memory", tmp_path)


@pytest.fixture
def sqlite_book(tmp_path: Path) -> Iterator[Book]:
    yield from _make_book("sqlite", tmp_path)


@pytest.fixture
def postgres_book(tmp_path: Path) -> Iterator[Book]:
    yield from _make_book("postgres", tmp_path)


# --- several vouchers (begin_many / commit_many) ------------------------------------------------


TRANSFER_STEPS: dict[str, Injector] = {
    "memory": lambda monkeypatch, once, book: _memory_index_points(monkeypatch, once),
    "sqlite": _sqlite_statement("INSERT INTO transactions"),
    "postgres": _postgres_statement(".transactions ("),
}


def _memory_index_points(monkeypatch: pytest.MonkeyPatch, once: Once) -> None:
    """Memory: indexing the first card's points at commit raises (the second card's unit
    must be released all the same)."""
    real = MemoryStore._index_points

    def index(self: MemoryStore, record: Any) -> None:
        once.fire()
        real(self, record)

    monkeypatch.setattr(MemoryStore, "_index_points", index)


@pytest.mark.parametrize("raised", list(RAISES))
@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres"])
def test_a_fault_in_a_transfer_commit_releases_both_cards(
    kind: str,
    raised: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    probe: Probe,
) -> None:
    book = _book_of(request, kind)
    engine = book.engine
    engine.create_voucher("LOY-2", loyalty_card={"points": 0})
    before = state_snapshot(engine)
    once = Once(RAISES[raised])
    TRANSFER_STEPS[kind](monkeypatch, once, book)
    with pytest.raises(Injected if raised == "ValueError" else KeyboardInterrupt):
        engine.transfer_points(LOYAL, "LOY-2", 10)
    assert once.fired
    monkeypatch.undo()
    assert_released(book, probe, before if kind != "memory" else None, codes=(LOYAL, "LOY-2"))
    moved = bounded(lambda: engine.transfer_points(LOYAL, "LOY-2", 10), "another transfer")
    assert moved is not None


# --- the failures reported in the issue, through the public API ---------------------------------


def test_a_lone_surrogate_on_sqlite_leaves_no_write_lock(sqlite_book: Book, probe: Probe) -> None:
    """Reported: a lone surrogate in a text field raised UnicodeEncodeError during the commit's
    writes and left ``BEGIN IMMEDIATE`` open (other processes: ``database is locked``)."""
    before = state_snapshot(sqlite_book.engine)
    with pytest.raises(Exception) as raised:  # argument checks may refuse it first
        sqlite_book.engine.redeem_voucher(CARD, credits=5, order_id="order-\ud800")
    assert not isinstance(raised.value, AssertionError)
    assert_released(sqlite_book, probe, before)


def test_a_huge_integer_on_postgres_leaves_no_connection_in_a_transaction(
    postgres_book: Book, probe: Probe
) -> None:
    """Reported: metadata holding a huge integer raised a raw ValueError at commit and left the
    pooled connection idle in transaction, holding the row lock."""
    before = state_snapshot(postgres_book.engine)
    with pytest.raises(Exception) as raised:  # argument checks may refuse it first
        postgres_book.engine.redeem_voucher(CARD, credits=5, metadata={"n": 10**5000})
    assert not isinstance(raised.value, AssertionError)
    assert_released(postgres_book, probe, before)


# --- a second fault while the unit is being aborted ---------------------------------------------


ABORTS = [
    pytest.param("sqlite", _sqlite_statement("ROLLBACK"), True, id="sqlite-rollback"),
    # a keyed unit wrote its key's placeholder row: its abort is a ROLLBACK; an unkeyed one
    # wrote nothing: its abort is a quiet COMMIT (pipelined)
    pytest.param("postgres", _postgres_statement("ROLLBACK"), True, id="postgres-rollback"),
    pytest.param(
        "postgres", _postgres_statement("synchronous_commit"), False, id="postgres-quiet-commit"
    ),
]


@pytest.mark.parametrize(("kind", "inject", "keyed"), ABORTS)
def test_an_interrupt_while_aborting_still_releases_the_voucher(
    kind: str,
    inject: Injector,
    keyed: bool,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    probe: Probe,
) -> None:
    """The domain raises, and the abort that follows is interrupted (a second Ctrl-C) before
    its statement runs: the unit still ends, nothing held, nothing stored."""
    book = _book_of(request, kind)
    before = state_snapshot(book.engine)
    first, second = Once(RAISES["ValueError"]), Once(RAISES["KeyboardInterrupt"])
    _before_decision(monkeypatch, first, book)
    inject(monkeypatch, second, book)
    with pytest.raises(KeyboardInterrupt):
        book.engine.redeem_voucher(
            CARD, credits=500, session_key=HOLD, idempotency_key="idem-1" if keyed else None
        )
    assert first.fired and second.fired
    monkeypatch.undo()
    assert_released(book, probe, before)
