"""SQL store benchmark: the engine on SQLite (FULL, NORMAL) and PostgreSQL beside a raw-SQL floor.

Run: ``python benchmarks/bench_sql.py`` (``--quick`` for a smoke run, ``--store sqlite`` or
``--store postgres`` for one kind, ``--seconds`` per measurement, ``--dsn`` for the server).
Prints figures; asserts nothing. Everything is measured in this one run, on this machine, on
fresh files and schemas that are removed afterwards. For each store configuration:

* the raw-SQL floor: the minimal hand-written transaction for one redeem on a table pair
  ``card(id, balance)`` / ``tx(seq, card_id, amount, balance, created_at)`` — ``BEGIN``
  (``IMMEDIATE`` on SQLite), read the balance, update it, insert the transaction, ``COMMIT``;
  on PostgreSQL also the same work as one ``WITH … UPDATE … RETURNING … INSERT`` statement
  (for reference: round trips are the cost there);
* ``redeem_voucher(code, credits=1)`` on a gift card, and its ratio to the floor;
* ``validate_voucher(session=LOCK)`` + ``redeem_voucher(session_key=…)`` pairs;
* ``redeem_stacked_discounts`` of a stack of 2 — a discount voucher (100 off) and a gift card
  (1 credit) on a 1,000 order — interleaved with the single redemption above, and the ratio of
  their times (issue 12's target: a stack of 2 costs ≤ 1.5× a single redemption);
* throughput of 1, 2, 4 and 8 concurrent terminals — OS processes, each with its own engine
  (threads would measure the GIL) — redeeming on one hot card, and on spread cards (each
  terminal its own), as total redemptions per second over a fixed duration;
* ``transfer_points`` (1 point) between random pairs of 100 loyalty cards and back and forth on
  one hot pair (single terminal), and 1, 2, 4 terminal processes crossing transfers on the hot
  pair (half A→B, half B→A: the pair is locked in id order, so they queue, never deadlock).

``--part redeem`` or ``--part transfers`` runs one half only; ``--part stacked`` only the single
redemption and the stack of 2 (no floors, no terminals).

Single-terminal figures are the best of a few rounds, raw and engine interleaved so that a
burst of load from elsewhere hits both. Engines use the system clock and secure session keys,
as in production. The PostgreSQL part runs only when ``vouchercore.stores.postgres`` imports
and the server answers (DSN: ``--dsn``, else ``VOUCHERCORE_TEST_POSTGRES_DSN``, else the local
test server).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import itertools
import multiprocessing
import os
import queue
import random
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from vouchercore import Engine
from vouchercore.ids import IdGenerator
from vouchercore.stores._sql import (
    REDEMPTION_COLUMNS,
    SESSION_COLUMNS,
    TRANSACTION_COLUMNS,
    VOUCHER_COLUMNS,
)

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
TERMINALS = (1, 2, 4, 8)
TRANSFER_TERMINALS = (1, 2, 4)
TRANSFER_CARDS = 100
AMPLE = 10**15  # a gift card that never runs dry

# --- timing ----------------------------------------------------------------------------------


def rate(step: Callable[[], object], seconds: float) -> float:
    """Calls of *step* per second, run for about *seconds* (the clock read every 16 calls)."""
    clock = time.perf_counter
    started = clock()
    deadline = started + seconds
    count = 0
    while True:
        for _ in range(16):
            step()
        count += 16
        now = clock()
        if now >= deadline:
            return count / (now - started)


def best_of(
    rounds: int, seconds: float, benches: dict[str, Callable[[float], float]]
) -> dict[str, float]:
    """Each bench's best rate over *rounds* of *seconds*, the benches interleaved round by
    round."""
    best = dict.fromkeys(benches, 0.0)
    for _ in range(rounds):
        for name, bench in benches.items():
            best[name] = max(best[name], bench(seconds))
    return best


# --- raw-SQL floors --------------------------------------------------------------------------

RAW_TABLES = (
    "CREATE TABLE card (id TEXT PRIMARY KEY, balance BIGINT NOT NULL)",
    "CREATE TABLE tx (seq {serial} PRIMARY KEY, card_id TEXT NOT NULL, amount BIGINT NOT NULL,"
    " balance BIGINT NOT NULL, created_at {instant} NOT NULL)",
)


def sqlite_raw(path: str, synchronous: str) -> Callable[[float], float]:
    """The floor on SQLite: BEGIN IMMEDIATE, SELECT, UPDATE, INSERT, COMMIT (WAL, as the store)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    for sql in RAW_TABLES:
        conn.execute(sql.format(serial="INTEGER", instant="INTEGER"))
    conn.execute("INSERT INTO card VALUES ('GIFT', ?)", (AMPLE,))
    execute = conn.execute
    now_us = time.time_ns

    def redeem() -> None:
        execute("BEGIN IMMEDIATE")
        (balance,) = execute("SELECT balance FROM card WHERE id = ?", ("GIFT",)).fetchone()
        balance -= 1
        execute("UPDATE card SET balance = ? WHERE id = ?", (balance, "GIFT"))
        execute(
            "INSERT INTO tx (card_id, amount, balance, created_at) VALUES (?, ?, ?, ?)",
            ("GIFT", -1, balance, now_us() // 1000),
        )
        execute("COMMIT")

    return lambda seconds: rate(redeem, seconds)


def sqlite_raw_store_schema(url: str) -> Callable[[float], float]:
    """A diagnostic floor: the statements the SQLite store runs for one redeem, hand-written on
    its own schema (BEGIN IMMEDIATE; the voucher row; its sessions; the last transaction seq;
    UPDATE the voucher; INSERT the transaction and the redemption; COMMIT). The engine's
    distance to this floor is its Python cost; this floor's distance to the minimal one is the
    schema's (more columns, more indexes, more pages written per commit)."""
    with Engine(url) as engine:
        engine.create_voucher("GIFT", type="GIFT_VOUCHER", gift={"amount": AMPLE})
        path = engine.store.path  # type: ignore[attr-defined]  # a SQLiteStore
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA synchronous = {url.rsplit('=', 1)[1]}")
    execute = conn.execute
    select_voucher = f"SELECT {', '.join(VOUCHER_COLUMNS)} FROM vouchers WHERE code = ?"
    select_sessions = f"SELECT {', '.join(SESSION_COLUMNS)} FROM sessions WHERE voucher_id = ?"
    update = (
        "UPDATE vouchers SET redeemed_quantity = ?, redeemed_amount = ?, balance = ?, "
        "updated_at = ? WHERE id = ?"
    )
    insert_tx = (
        f"INSERT INTO transactions ({', '.join(TRANSACTION_COLUMNS)}) "
        f"VALUES ({', '.join('?' * len(TRANSACTION_COLUMNS))})"
    )
    insert_redemption = (
        f"INSERT INTO redemptions ({', '.join(REDEMPTION_COLUMNS)}) "
        f"VALUES ({', '.join('?' * len(REDEMPTION_COLUMNS))})"
    )
    ids = IdGenerator()

    def redeem() -> None:
        now = time.time_ns() // 1000
        execute("BEGIN IMMEDIATE")
        row = execute(select_voucher, ("GIFT",)).fetchone()
        execute(select_sessions, (row[0],)).fetchall()
        seq = execute("SELECT COALESCE(max(seq), 0) FROM transactions").fetchone()[0] + 1
        balance = row[8] - 1
        execute(update, (row[5] + 1, row[6] + 1, balance, now, row[0]))
        redemption = ids.redemption_id()
        details = f'["{redemption}",null,null]'
        execute(
            insert_tx,
            (seq, row[0], "CREDITS_REDEMPTION", -1, balance, now, redemption, "redemption",
             None, None, details),
        )  # fmt: skip
        execute(
            insert_redemption,
            (redemption, row[0], "GIFT", "GIFT_VOUCHER", "SUCCEEDED", 1, None, None, None, None,
             now, None, None, f"vtx_{seq:018x}", None),
        )  # fmt: skip
        execute("COMMIT")

    return lambda seconds: rate(redeem, seconds)


def postgres_raw(dsn: str, schema: str, variant: str) -> Callable[[float], float]:
    """The floor on PostgreSQL, *variant*:

    * ``"transaction"`` — BEGIN, SELECT … FOR UPDATE, UPDATE, INSERT, COMMIT: five round trips;
    * ``"pipelined"`` — the same statements in psycopg's pipeline mode, as the store sends
      them: BEGIN + SELECT in one round trip, UPDATE + INSERT + COMMIT in a second;
    * ``"one_statement"`` — the same work as one ``WITH … UPDATE … RETURNING … INSERT`` in
      autocommit: one round trip.
    """
    import psycopg  # noqa: PLC0415 - the optional postgres extra

    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    conn.execute(f'SET search_path TO "{schema}"')
    for sql in RAW_TABLES:
        conn.execute(sql.format(serial="BIGSERIAL", instant="TIMESTAMPTZ"))
    conn.execute("INSERT INTO card VALUES ('GIFT', %s)", (AMPLE,))
    execute = conn.execute
    select = "SELECT balance FROM card WHERE id = %s FOR UPDATE"
    update = "UPDATE card SET balance = %s WHERE id = %s"
    insert = "INSERT INTO tx (card_id, amount, balance, created_at) VALUES (%s, %s, %s, now())"

    def redeem() -> None:
        execute("BEGIN")
        row = execute(select, ("GIFT",), prepare=True).fetchone()
        assert row is not None
        balance = row[0] - 1
        execute(update, (balance, "GIFT"), prepare=True)
        execute(insert, ("GIFT", -1, balance), prepare=True)
        execute("COMMIT")

    def redeem_pipelined() -> None:
        with conn.pipeline() as pipeline:
            execute("BEGIN")
            cursor = execute(select, ("GIFT",), prepare=True)
            pipeline.sync()
            row = cursor.fetchone()
            assert row is not None
            balance = row[0] - 1
            execute(update, (balance, "GIFT"), prepare=True)
            execute(insert, ("GIFT", -1, balance), prepare=True)
            execute("COMMIT")

    def redeem_one_statement() -> None:
        execute(
            "WITH c AS (UPDATE card SET balance = balance - 1 WHERE id = %s AND balance >= 1"
            " RETURNING id, balance)"
            " INSERT INTO tx (card_id, amount, balance, created_at)"
            " SELECT id, -1, balance, now() FROM c RETURNING seq",
            ("GIFT",),
            prepare=True,
        ).fetchone()

    steps = {
        "transaction": redeem,
        "pipelined": redeem_pipelined,
        "one_statement": redeem_one_statement,
    }
    step = steps[variant]
    return lambda seconds: rate(step, seconds)


# --- the engine ------------------------------------------------------------------------------


def engine_redeem(url: str) -> tuple[Engine, Callable[[float], float]]:
    engine = Engine(url)
    engine.create_voucher("GIFT", type="GIFT_VOUCHER", gift={"amount": AMPLE})
    redeem = engine.redeem_voucher
    return engine, lambda seconds: rate(lambda: redeem("GIFT", credits=1), seconds)


def engine_lock_redeem(url: str) -> tuple[Engine, Callable[[float], float]]:
    engine = Engine(url)
    engine.create_voucher("GIFT", type="GIFT_VOUCHER", gift={"amount": AMPLE})
    validate, redeem = engine.validate_voucher, engine.redeem_voucher
    lock = {"type": "LOCK"}

    def pair() -> None:
        key = validate("GIFT", credits=1, session=lock).session.key  # type: ignore[union-attr]
        redeem("GIFT", credits=1, session_key=key)

    return engine, lambda seconds: rate(pair, seconds)


STACK: list[dict[str, Any]] = [
    {"object": "voucher", "id": "DISCOUNT"},
    {"object": "voucher", "id": "GIFT", "gift": {"credits": 1}},
]


def engine_stacked(url: str) -> tuple[Engine, Callable[[float], float]]:
    """A stack of 2: a discount (100 off, no quantity limit) and a gift card (1 credit) on a
    1,000 order, one ``redeem_stacked_discounts`` call."""
    engine = Engine(url)
    engine.create_voucher("DISCOUNT", discount={"type": "AMOUNT", "amount_off": 100})
    engine.create_voucher("GIFT", type="GIFT_VOUCHER", gift={"amount": AMPLE})
    redeem = engine.redeem_stacked_discounts
    return engine, lambda seconds: rate(lambda: redeem(STACK, order_amount=1_000), seconds)


def engine_transfers(url: str, hot: bool) -> tuple[Engine, Callable[[float], float]]:
    """1-point transfers: between random pairs of TRANSFER_CARDS loyalty cards (drawn before
    timing), or back and forth on one hot pair."""
    engine = Engine(url)
    codes = [f"LOYAL-{i:03d}" for i in range(TRANSFER_CARDS)]
    for code in codes:
        engine.create_voucher(code, type="LOYALTY_CARD", loyalty_card={"points": AMPLE})
    rng = random.Random(7)
    pairs = (
        [(codes[0], codes[1]), (codes[1], codes[0])]
        if hot
        else [(a, b) for a, b in (rng.sample(codes, 2) for _ in range(4_096))]
    )
    cycle = itertools.cycle(pairs)
    transfer = engine.transfer_points

    def step() -> None:
        source, destination = next(cycle)
        transfer(source, destination, 1)

    return engine, lambda seconds: rate(step, seconds)


# --- concurrent terminals (processes) --------------------------------------------------------


def _terminal(
    url: str,
    code: str,
    start: Any,
    seconds: float,
    ready: Any,
    results: Any,
    destination: str | None = None,
) -> None:
    """One terminal process: open an engine, say ready, wait for the parent's start instant
    (wall clock, in *start*), redeem 1 credit on *code* for *seconds* (or, with *destination*,
    transfer 1 point from *code* to it); report (calls, error)."""
    try:
        with Engine(url) as engine:
            redeem, transfer = engine.redeem_voucher, engine.transfer_points
            engine.get_voucher(code)  # connect before the start
            ready.put(None)
            while start.value == 0.0:
                time.sleep(0.005)
            time.sleep(max(0.0, start.value - time.time()))
            deadline = start.value + seconds
            done = 0
            while time.time() < deadline:
                if destination is None:
                    redeem(code, credits=1)
                else:
                    transfer(code, destination, 1)
                done += 1
        results.put((done, None))
    except BaseException as error:  # reported to the parent
        ready.put(None)
        results.put((0, f"{type(error).__name__}: {error}"))


def _next(messages: Any, procs: list[Any]) -> Any:
    """The next message from a terminal; exits if one died without a word."""
    while True:
        try:
            return messages.get(timeout=0.5)
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise SystemExit(f"a terminal process died (exit code {dead[0]})") from None


def run_terminals(url: str, calls: list[tuple[str, str | None]], seconds: float) -> int:
    """One terminal process per ``(code, destination)`` of *calls* (see :func:`_terminal`),
    all started at one instant once every one is ready; the calls they made in all."""
    ctx = multiprocessing.get_context("spawn")
    ready, results = ctx.Queue(), ctx.Queue()
    start = ctx.Value("d", 0.0)
    procs = [
        ctx.Process(
            target=_terminal,
            args=(url, code, start, seconds, ready, results, destination),
            daemon=True,
        )
        for code, destination in calls
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        _next(ready, procs)
    start.value = time.time() + 0.1
    total = 0
    for _ in procs:
        done, error = _next(results, procs)
        if error is not None:
            print(f"   terminal failed: {error}", file=sys.stderr)
        total += done
    for proc in procs:
        proc.join()
    return total


def concurrent_transfer_rates(url: str, seconds: float) -> dict[int, float]:
    """Total transfers/s of 1, 2, 4 terminal processes crossing 1-point transfers on one hot
    pair: terminal i sends A→B when i is even, B→A when odd."""
    with Engine(url) as engine:
        for code in ("HOT-A", "HOT-B"):
            engine.create_voucher(code, type="LOYALTY_CARD", loyalty_card={"points": AMPLE})
    out: dict[int, float] = {}
    for n in TRANSFER_TERMINALS:
        calls: list[tuple[str, str | None]] = [
            ("HOT-A", "HOT-B") if i % 2 == 0 else ("HOT-B", "HOT-A") for i in range(n)
        ]
        out[n] = run_terminals(url, calls, seconds) / seconds
        print(
            f"   crossing on the hot pair, {n} terminal(s): {out[n]:>9,.0f} transfers/s", flush=True
        )
    return out


def concurrent_rates(url: str, seconds: float) -> dict[tuple[str, int], float]:
    """Total redemptions/s of 1, 2, 4, 8 terminal processes on one hot card and on spread
    cards (terminal i on card i), all started at one instant once every one is ready."""
    with Engine(url) as engine:
        engine.create_voucher("HOT", type="GIFT_VOUCHER", gift={"amount": AMPLE})
        for i in range(max(TERMINALS)):
            engine.create_voucher(f"CARD-{i}", type="GIFT_VOUCHER", gift={"amount": AMPLE})
    out: dict[tuple[str, int], float] = {}
    for layout in ("hot", "spread"):
        for n in TERMINALS:
            calls: list[tuple[str, str | None]] = [
                ("HOT" if layout == "hot" else f"CARD-{i}", None) for i in range(n)
            ]
            total = run_terminals(url, calls, seconds)
            out[layout, n] = total / seconds
            print(
                f"   {layout:<6} {n} terminal(s): {total / seconds:>9,.0f} redemptions/s",
                flush=True,
            )
    return out


# --- store configurations --------------------------------------------------------------------


class SQLiteConfig:
    """A SQLite store mode: files in a temporary folder."""

    kind = "sqlite"

    def __init__(self, folder: str, synchronous: str, ratio_target: float) -> None:
        self.name = f"SQLite {synchronous}"
        self.folder = folder
        self.synchronous = synchronous
        self.ratio_target = ratio_target
        self.raw_label = "raw SQL: BEGIN IMMEDIATE; SELECT; UPDATE; INSERT; COMMIT"

    def url(self, tag: str) -> str:
        path = os.path.join(self.folder, f"{self.synchronous.lower()}-{tag}.db")
        return f"sqlite:///{path}?synchronous={self.synchronous}"

    def raw(self) -> dict[str, Callable[[float], float]]:
        path = os.path.join(self.folder, f"{self.synchronous.lower()}-raw.db")
        return {
            "raw": sqlite_raw(path, self.synchronous),
            "rawstore": sqlite_raw_store_schema(self.url("rawstore")),
        }

    def cleanup(self) -> None:
        """Files go with the temporary folder."""


class PostgresConfig:
    """PostgreSQL: each figure in a schema of its own, dropped at the end."""

    kind = "postgres"

    def __init__(self, dsn: str) -> None:
        self.name = "PostgreSQL" + (
            " (synchronous_commit=off)" if "synchronous_commit" in dsn else ""
        )
        self.dsn = dsn
        self.ratio_target = 0.87
        self.raw_label = "raw SQL: BEGIN; SELECT FOR UPDATE; UPDATE; INSERT; COMMIT"
        self.run = uuid.uuid4().hex[:8]
        self.schemas: list[str] = []

    def _schema(self, tag: str) -> str:
        name = f"vc_bench_{self.run}_{tag}"
        self.schemas.append(name)
        return name

    def url(self, tag: str) -> str:
        separator = "&" if "?" in self.dsn else "?"
        return f"{self.dsn}{separator}schema={self._schema(tag)}"

    def raw(self) -> dict[str, Callable[[float], float]]:
        return {
            "raw": postgres_raw(self.dsn, self._schema("raw"), "transaction"),
            "rawpipe": postgres_raw(self.dsn, self._schema("rawpipe"), "pipelined"),
            "raw1": postgres_raw(self.dsn, self._schema("raw1"), "one_statement"),
        }

    def cleanup(self) -> None:
        import psycopg  # noqa: PLC0415 - the optional postgres extra

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for schema in self.schemas:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def postgres_problem(dsn: str) -> str | None:
    """Why the PostgreSQL part cannot run (None: it can)."""
    try:
        importlib.import_module("vouchercore.stores.postgres")
        import psycopg  # noqa: PLC0415 - the optional postgres extra
    except ImportError as error:
        return f"PostgresStore is not importable ({error})"
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as error:
        return f"server not reachable at {dsn} ({str(error).strip()})"
    return None


# --- the run ---------------------------------------------------------------------------------


Figures = tuple[dict[str, float], dict[tuple[str, int], float]]


def bench(config: Any, seconds: float, rounds: int, concurrency_seconds: float) -> Figures:
    print(f"== {config.name}", flush=True)
    engines: list[Engine] = []
    try:
        benches = config.raw()
        engine, benches["engine"] = engine_redeem(config.url("redeem"))
        engines.append(engine)
        engine, benches["pair"] = engine_lock_redeem(config.url("lock"))
        engines.append(engine)
        engine, benches["stack"] = engine_stacked(config.url("stack"))
        engines.append(engine)
        best = _measured(benches, engines, seconds, rounds)
        return best, concurrent_rates(config.url("conc"), concurrency_seconds)
    finally:
        for engine in engines:
            engine.close()
        config.cleanup()


def _measured(
    benches: dict[str, Callable[[float], float]],
    engines: list[Engine],
    seconds: float,
    rounds: int,
) -> dict[str, float]:
    """Warm each bench up, take the best of *rounds*, print it, then close the engines."""
    for bench_ in benches.values():
        bench_(min(0.2, seconds))  # warm up: caches, prepared statements, the WAL
    best = best_of(rounds, seconds, benches)
    for name, value in best.items():
        print(f"   {name:<6} {value:>9,.0f} /s  {1e6 / value:8.1f} µs", flush=True)
    for engine in engines:
        engine.close()
    engines.clear()
    return best


def bench_stacked(config: Any, seconds: float, rounds: int) -> dict[str, float]:
    """The single redemption and the stack of 2 only, interleaved round by round."""
    print(f"== {config.name}: stacked redemption", flush=True)
    engines: list[Engine] = []
    try:
        benches: dict[str, Callable[[float], float]] = {}
        engine, benches["engine"] = engine_redeem(config.url("redeem"))
        engines.append(engine)
        engine, benches["stack"] = engine_stacked(config.url("stack"))
        engines.append(engine)
        return _measured(benches, engines, seconds, rounds)
    finally:
        for engine in engines:
            engine.close()
        config.cleanup()


def stacked_lines(figures: dict[str, float]) -> list[str]:
    """The stack of 2 beside the single redemption, and the ratio of their times."""
    single, stack = figures["engine"], figures["stack"]
    ratio = single / stack
    return [
        f"  {'engine redeem_stacked_discounts, discount + gift card':<62}"
        f" {stack:>9,.0f} /s {1e6 / stack:7.1f} µs",
        f"  {'stack of 2 / single redeem_voucher (time)':<62} {ratio:>9.2f}              "
        f"target ≤ 1.50: {verdict(ratio <= 1.5)}",
    ]


TransferFigures = tuple[dict[str, float], dict[int, float]]


def bench_transfers(
    config: Any, seconds: float, rounds: int, concurrency_seconds: float
) -> TransferFigures:
    print(f"== {config.name}: transfer_points", flush=True)
    engines: list[Engine] = []
    try:
        benches: dict[str, Callable[[float], float]] = {}
        engine, benches["random"] = engine_transfers(config.url("xfer"), hot=False)
        engines.append(engine)
        engine, benches["hot"] = engine_transfers(config.url("xferhot"), hot=True)
        engines.append(engine)
        best = _measured(benches, engines, seconds, rounds)
        return best, concurrent_transfer_rates(config.url("xferconc"), concurrency_seconds)
    finally:
        for engine in engines:
            engine.close()
        config.cleanup()


def transfer_table(config: Any, results: TransferFigures) -> list[str]:
    figures, conc = results
    lines = [f"{config.name}: transfer_points(1 point)"]
    for name, label in (
        ("random", f"random pairs of {TRANSFER_CARDS} loyalty cards, one terminal"),
        ("hot", "one hot pair, back and forth, one terminal"),
    ):
        value = figures[name]
        lines.append(f"  {label:<62} {value:>9,.0f} /s {1e6 / value:7.1f} µs")
    cells = "  ".join(f"{n}: {conc[n]:>7,.0f}" for n in TRANSFER_TERMINALS)
    lines.append(f"  {'terminals (processes) crossing on the hot pair':<44} {cells}  transfers/s")
    return lines


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def table(config: Any, results: Figures) -> list[str]:
    figures, conc = results
    raw, eng, pair = figures["raw"], figures["engine"], figures["pair"]
    ratio = eng / raw
    lines = [
        f"{config.name}",
        f"  {config.raw_label:<62} {raw:>9,.0f} /s {1e6 / raw:7.1f} µs",
    ]
    for name, label in (
        ("rawstore", "raw SQL, the store's schema and statements (diagnostic)"),
        ("rawpipe", "raw SQL, same statements pipelined (2 round trips)"),
        ("raw1", "raw SQL, one statement: WITH … UPDATE … RETURNING … INSERT"),
    ):
        if name in figures:
            value = figures[name]
            lines.append(
                f"  {label:<62} {value:>9,.0f} /s {1e6 / value:7.1f} µs"
                f"  ({value / raw:.1f}× the transaction)"
            )
    lines += [
        f"  {'engine redeem_voucher(credits=1), gift card':<62} {eng:>9,.0f} /s"
        f" {1e6 / eng:7.1f} µs",
        f"  {'engine / raw transaction':<62} {ratio:>9.2f}              "
        f"target ≥ {config.ratio_target:.2f}: {verdict(ratio >= config.ratio_target)}",
        f"  {'validate(LOCK) + redeem(session_key) pairs':<62} {pair:>9,.0f} /s"
        f" {1e6 / pair:7.1f} µs",
        *stacked_lines(figures),
    ]
    for layout in ("hot", "spread"):
        cells = "  ".join(f"{n}: {conc[layout, n]:>7,.0f}" for n in TERMINALS)
        label = "one hot card" if layout == "hot" else "spread cards (one each)"
        lines.append(f"  {'terminals (processes), ' + label:<44} {cells}  redemptions/s")
    hot1, hot8 = conc["hot", 1], conc["hot", 8]
    lines.append(
        f"  {'hot card, 8 terminals / 1 terminal':<62} {hot8 / hot1:>9.2f}              "
        f"target ≥ 1.00: {verdict(hot8 >= hot1)}"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short measurements (a smoke run)")
    parser.add_argument(
        "--store", choices=("sqlite", "postgres", "all"), default="all", help="default all"
    )
    parser.add_argument(
        "--seconds", type=float, default=None, help="seconds per measurement (default 2; quick 0.5)"
    )
    parser.add_argument("--dsn", default=None, help="PostgreSQL DSN (default: env, then local)")
    parser.add_argument(
        "--part",
        choices=("redeem", "transfers", "stacked", "all"),
        default="all",
        help="redemptions (with the stack of 2), points transfers, or both (default all); "
        "stacked: the single redemption and the stack of 2 only",
    )
    parser.add_argument(
        "--pg-async-commit",
        action="store_true",
        help="diagnostic: synchronous_commit=off on every PostgreSQL connection (raw and "
        "engine alike), so the figures show round trips and CPU rather than the WAL flush",
    )
    args = parser.parse_args()
    seconds = args.seconds or (0.5 if args.quick else 2.0)
    rounds = 1 if args.quick else 3
    concurrency_seconds = seconds if args.quick else 2 * seconds
    dsn = args.dsn or os.environ.get("VOUCHERCORE_TEST_POSTGRES_DSN") or DEFAULT_DSN
    if args.pg_async_commit:
        dsn += ("&" if "?" in dsn else "?") + "options=-c%20synchronous_commit%3Doff"

    print(
        f"vouchercore SQL benchmark: {seconds:g} s per measurement, best of {rounds}; "
        f"{os.cpu_count()} CPU(s); figures are noisy while anything else runs",
        flush=True,
    )
    results: list[tuple[Any, Figures]] = []
    transfers: list[tuple[Any, TransferFigures]] = []
    stacks: list[tuple[Any, dict[str, float]]] = []
    with tempfile_folder() as folder:
        configs: list[Any] = []
        if args.store in ("sqlite", "all"):
            configs += [SQLiteConfig(folder, "FULL", 0.90), SQLiteConfig(folder, "NORMAL", 0.77)]
        if args.store in ("postgres", "all"):
            problem = postgres_problem(dsn)
            if problem is None:
                configs.append(PostgresConfig(dsn))
            else:
                print(f"== PostgreSQL skipped: {problem}", flush=True)
        for config in configs:
            if args.part in ("redeem", "all"):
                results.append((config, bench(config, seconds, rounds, concurrency_seconds)))
            if args.part in ("transfers", "all"):
                figures = bench_transfers(config, seconds, rounds, concurrency_seconds)
                transfers.append((config, figures))
            if args.part == "stacked":
                stacks.append((config, bench_stacked(config, seconds, rounds)))
    print()
    print(
        "== summary (single terminal: best of rounds; terminals: total over "
        f"{concurrency_seconds:g} s)"
    )
    for config, figures in results:
        for line in table(config, figures):
            print(line)
    for config, transfer_figures in transfers:
        for line in transfer_table(config, transfer_figures):
            print(line)
    for config, stack_figures in stacks:
        single = stack_figures["engine"]
        print(f"{config.name}")
        print(
            f"  {'engine redeem_voucher(credits=1), gift card':<62} {single:>9,.0f} /s"
            f" {1e6 / single:7.1f} µs"
        )
        for line in stacked_lines(stack_figures):
            print(line)


@contextlib.contextmanager
def tempfile_folder() -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix="vouchercore-bench-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
