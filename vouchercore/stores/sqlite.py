"""The SQLite store: a voucher book in one file, shared by every thread and process on a machine.

Every unit of work is one ``BEGIN IMMEDIATE`` transaction: SQLite's write lock is taken before
the voucher is read, so two processes can never both read a voucher and then both write it
(the lost update behind every double redemption). The database runs in WAL mode, waits for a
busy lock up to ``busy_timeout`` seconds, and syncs every commit to disk (``synchronous=FULL``,
the default) or at WAL checkpoints (``NORMAL``: a power cut may lose the last commits, never
half of one). Instants are integer microseconds UTC. ``CHECK`` constraints back the domain —
counters and balances never below zero, redeemed quantity never above the limit — and codes are
``UNIQUE``.

Each thread opens its own connection on first use; a forked child opens its own too (SQLite
connections must not cross ``fork``).

Complexity: a unit of work reads the voucher by its unique index and its stored sessions by the
primary key prefix, O(log n + s). :meth:`SQLiteStore.expiring_sessions` walks the expiry index:
its cost grows with what has expired, not with the table.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final
from urllib.parse import parse_qsl, unquote

from vouchercore.domain.idempotency import KeyRecord
from vouchercore.domain.records import SessionRecord, TransactionRecord, VoucherState
from vouchercore.domain.snapshots import ParentRedemption, Redemption
from vouchercore.domain.values import free_text_problem, parse_number
from vouchercore.errors import DuplicateFound, InvalidPayload, StorageError
from vouchercore.ports import SessionCounts, Store, distinct_units
from vouchercore.stores import _schema, _sql
from vouchercore.stores._sql import (
    KEY_COLUMNS,
    PARENT_COLUMNS,
    REDEMPTION_COLUMNS,
    ROLLBACK_COLUMNS,
    SCHEMA_VERSION,
    SESSION_COLUMNS,
    TRANSACTION_COLUMNS,
    VOUCHER_COLUMNS,
    VOUCHER_MUTABLE_COLUMNS,
    SqlUnit,
)

__all__ = ["SQLiteStore"]

SYNCHRONOUS_MODES: Final = ("FULL", "NORMAL", "EXTRA", "OFF")
#: The page cache of a connection that has inserted vouchers in bulk (KiB).
BULK_CACHE_KIB: Final = 64 * 1024
_FIRST_BACKOFF: Final = 50e-6
_LAST_BACKOFF: Final = 2e-3

_V: Final = ", ".join(VOUCHER_COLUMNS)
_S: Final = ", ".join(SESSION_COLUMNS)
_T: Final = ", ".join(TRANSACTION_COLUMNS)
_R: Final = ", ".join(REDEMPTION_COLUMNS)


def _marks(n: int) -> str:
    return ", ".join("?" * n)


#: The schema, created statement by statement (see :mod:`vouchercore.stores._schema`).
_SQLITE: Final = _schema.Dialect.sqlite()
_SCHEMA: Final = _schema.create_statements(_SQLITE)

_SELECT_BY_CODE: Final = f"SELECT {_V} FROM vouchers WHERE code = ?"
_SELECT_BY_ID: Final = f"SELECT {_V} FROM vouchers WHERE id = ?"
_SELECT_TXS: Final = f"SELECT {_T} FROM transactions WHERE voucher_id = ?"
_SELECT_SESSIONS: Final = f"SELECT {_S} FROM sessions WHERE voucher_id = ?"
_UPDATE_VOUCHER: Final = (
    f"UPDATE vouchers SET {', '.join(f'{c} = ?' for c in VOUCHER_MUTABLE_COLUMNS)} WHERE id = ?"
)
_INSERT_VOUCHER: Final = f"INSERT INTO vouchers ({_V}) VALUES ({_marks(len(VOUCHER_COLUMNS))})"
_INSERT_NEW_VOUCHER: Final = f"{_INSERT_VOUCHER} ON CONFLICT DO NOTHING"
_INSERT_SESSION: Final = f"INSERT INTO sessions ({_S}) VALUES ({_marks(len(SESSION_COLUMNS))})"
_DELETE_SESSION: Final = "DELETE FROM sessions WHERE voucher_id = ? AND key = ?"
_INSERT_TX: Final = f"INSERT INTO transactions ({_T}) VALUES ({_marks(len(TRANSACTION_COLUMNS))})"
_INSERT_REDEMPTION: Final = (
    f"INSERT INTO redemptions ({_R}) VALUES ({_marks(len(REDEMPTION_COLUMNS))})"
)
_UPDATE_REDEMPTION: Final = "UPDATE redemptions SET status = ?, rollback_id = ? WHERE id = ?"
_INSERT_ROLLBACK: Final = (
    f"INSERT INTO rollbacks ({', '.join(ROLLBACK_COLUMNS)}) "
    f"VALUES ({_marks(len(ROLLBACK_COLUMNS))})"
)
_INSERT_PARENT: Final = (
    f"INSERT INTO parent_redemptions ({', '.join(PARENT_COLUMNS)}) "
    f"VALUES ({_marks(len(PARENT_COLUMNS))})"
)
_UPDATE_PARENT: Final = "UPDATE parent_redemptions SET status = ?, body = ? WHERE id = ?"
_SELECT_PARENT: Final = f"SELECT {', '.join(PARENT_COLUMNS)} FROM parent_redemptions WHERE id = ?"
_PARENTS_PAGE: Final = (
    f"SELECT {', '.join(PARENT_COLUMNS)} FROM parent_redemptions WHERE id > ? ORDER BY id LIMIT ?"
)
_SELECT_KEY: Final = f"SELECT {', '.join(KEY_COLUMNS)} FROM idempotency_keys WHERE key = ?"
_UPSERT_KEY: Final = (
    f"INSERT OR REPLACE INTO idempotency_keys ({', '.join(KEY_COLUMNS)}) "
    f"VALUES ({_marks(len(KEY_COLUMNS))})"
)
#: The last transaction seq handed out: the log's largest, or the high-water mark a forced
#: delete left (so a purged voucher's ids are never handed out again). Writers are serialised by
#: BEGIN IMMEDIATE, so reading it costs a lookup on the rowid's right edge and no page write.
_LAST_TX: Final = (
    "SELECT max(COALESCE((SELECT max(seq) FROM transactions), 0), "
    "(SELECT value FROM vouchercore_meta WHERE name = 'transaction_seq'))"
)
_KEEP_HIGH_WATER: Final = (
    "UPDATE vouchercore_meta SET value = max(value, "
    "COALESCE((SELECT max(seq) FROM transactions), 0)) WHERE name = 'transaction_seq'"
)
_PURGE: Final = (
    *(
        f"DELETE FROM {table} WHERE voucher_id = ?"
        for table in ("sessions", "transactions", "redemptions", "rollbacks")
    ),
    "DELETE FROM vouchers WHERE id = ?",
)

_DELETED: Final = int(VoucherState.DELETED)


class _Connection(sqlite3.Connection):
    """A connection the store can refer to weakly (the C type cannot be)."""


#: connections a forked child inherited: never used, never closed by the child
_FORSAKEN: list[_Connection] = []


def parse_sqlite_url(url: str) -> tuple[str, dict[str, str]]:
    """The file path and query options of ``sqlite:///relative.db`` or
    ``sqlite:////absolute/path.db?synchronous=NORMAL``.

    Raises:
        InvalidPayload: no path, or a path or option holding NUL or a lone surrogate.
    """
    _, sep, rest = url.partition("://")
    rest, _, query = rest.partition("?")
    path = unquote(rest[1:] if rest.startswith("/") else rest)
    if not sep or not path:
        raise InvalidPayload(f"a SQLite store URL needs a file path: {url!r}")
    options = dict(parse_qsl(query))
    for text in (path, *options, *options.values()):
        problem = free_text_problem(text, _MAX_URL_LENGTH)
        if problem is not None:
            raise InvalidPayload(f"the SQLite store URL {url!r} {problem}")
    return path, options


_MAX_URL_LENGTH: Final = 4_096
#: The longest ``busy_timeout`` a store URL may ask for, in seconds (one day).
MAX_BUSY_TIMEOUT: Final = 86_400.0


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    """Upgrade the schema from *version* to :data:`SCHEMA_VERSION`, in the open transaction
    (another process opening the file meanwhile waits, then finds it upgraded)."""
    for statement in _schema.upgrade_statements(_SQLITE, version):
        conn.execute(statement)


class SQLiteStore(Store[SqlUnit]):
    """Vouchers in a SQLite file. Thread- and process-safe; see the module docstring.

    Args:
        path: the database file (created with its schema on first open).
        synchronous: ``"FULL"`` (default: every commit is on disk when it returns) or
            ``"NORMAL"`` (faster; in WAL mode a power cut may lose the last commits, never half
            of one).
        busy_timeout: seconds to wait for another connection's write lock before giving up
            with :class:`~vouchercore.errors.StorageError`.

    Raises:
        StorageError: the file cannot be opened, is not a SQLite database, belongs to another
            application, or has a schema from a newer vouchercore.
        InvalidPayload: an unknown *synchronous* mode or a bad *busy_timeout*.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, synchronous: str = "FULL", busy_timeout: float = 30.0
    ) -> None:
        mode = str(synchronous).upper()
        if mode not in SYNCHRONOUS_MODES:
            raise InvalidPayload(
                f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, got {synchronous!r}"
            )
        if isinstance(busy_timeout, bool) or not isinstance(busy_timeout, int | float):
            raise InvalidPayload(f"busy_timeout must be a number of seconds, got {busy_timeout!r}")
        if not math.isfinite(busy_timeout) or not 0 <= busy_timeout <= MAX_BUSY_TIMEOUT:
            raise InvalidPayload(
                f"busy_timeout must be from 0 to {MAX_BUSY_TIMEOUT:g} seconds, got {busy_timeout!r}"
            )
        self.path = os.fspath(path)
        self.synchronous = mode
        self.busy_timeout = float(busy_timeout)
        self._local = threading.local()
        self._pid = os.getpid()
        #: every open connection (weakly: a thread's own connection closes when the thread
        #: ends and its thread-local goes; close() closes those still open)
        self._connections: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._connections_lock = threading.Lock()
        self._closed = False
        self._connect()  # open (and create the schema) now: a bad file fails here

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        """A store for ``sqlite:///path.db?synchronous=NORMAL&busy_timeout=5`` (``busy_timeout``
        in seconds, finite, 0 to :data:`MAX_BUSY_TIMEOUT`)."""
        path, options = parse_sqlite_url(url)
        unknown = set(options) - {"synchronous", "busy_timeout"}
        if unknown:
            raise InvalidPayload(f"unknown SQLite store option(s): {', '.join(sorted(unknown))}")
        timeout = options.get("busy_timeout", "30")
        seconds = parse_number(timeout, "busy_timeout", float, 0.0, MAX_BUSY_TIMEOUT)
        return cls(path, synchronous=options.get("synchronous", "FULL"), busy_timeout=seconds)

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r}, synchronous={self.synchronous})"

    # --- connections ----------------------------------------------------------------------

    def _fail(self, action: str, error: BaseException) -> StorageError:
        return StorageError(f"SQLite store {self.path!r}: {action} failed: {error}")

    def _connect(self) -> sqlite3.Connection:
        if self._closed:
            raise StorageError(f"SQLite store {self.path!r} is closed")
        try:
            conn = sqlite3.connect(
                self.path,
                factory=_Connection,
                timeout=self.busy_timeout,
                isolation_level=None,  # transactions are explicit: BEGIN IMMEDIATE … COMMIT
                check_same_thread=False,  # closed from close(); used by its own thread only
                cached_statements=64,
            )
        except sqlite3.Error as error:
            raise self._fail("open", error) from error
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            self._ensure_schema(conn)
            # from here on the write lock is waited for by _begin (short, jittered sleeps);
            # SQLite's own busy handler sleeps 1 ms to 100 ms at a time, which starves a hot
            # voucher shared by several processes. Reads never wait in WAL mode.
            conn.execute("PRAGMA busy_timeout = 0")
        except sqlite3.Error as error:
            conn.close()
            raise self._fail("open", error) from error
        except StorageError:
            conn.close()
            raise
        self._local.conn = conn
        with self._connections_lock:
            self._connections.add(conn)
        return conn

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            tables = {
                row[0]
                for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            version = None
            if "vouchercore_meta" in tables:
                row = conn.execute(
                    "SELECT value FROM vouchercore_meta WHERE name = 'schema_version'"
                ).fetchone()
                version = row[0] if row else None
            problem = _sql.schema_problem(sorted(tables), version)
            if problem is not None:
                raise StorageError(f"SQLite store {self.path!r}: the database {problem}")
            if isinstance(version, int) and version < SCHEMA_VERSION:
                _migrate(conn, version)
            if not tables:
                # statement by statement: executescript would commit the open transaction
                # first, and two processes creating the file at once must not both create
                for statement in _SCHEMA:
                    conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _conn(self) -> sqlite3.Connection:
        if self._pid != os.getpid():  # a forked child: never use the parent's connections
            self._pid = os.getpid()
            self._local = threading.local()
            # the parent's connections stay open for the parent: kept from the collector here,
            # so this process never closes them
            _FORSAKEN.extend(self._connections)
            self._connections = weakref.WeakSet()
            self._connections_lock = threading.Lock()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        return conn if conn is not None else self._connect()

    def _begin(self, conn: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE``, waiting for another connection's write lock up to
        ``busy_timeout`` with exponential, jittered sleeps from 50 µs to 2 ms.

        Raises:
            sqlite3.OperationalError: still busy after ``busy_timeout`` (or another error).
        """
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                raise
        deadline = time.monotonic() + self.busy_timeout
        delay = _FIRST_BACKOFF
        while True:
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, _LAST_BACKOFF)
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as error:
                if error.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                    raise

    @contextlib.contextmanager
    def _write(self, action: str) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction, committed on success, rolled back on error."""
        conn = self._conn()
        try:
            self._begin(conn)
        except BaseException as error:
            self._rollback(conn)  # an interrupt may land just after BEGIN succeeded
            if isinstance(error, sqlite3.Error):
                raise self._fail(action, error) from error
            raise
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as error:
            self._rollback(conn)
            if isinstance(error, sqlite3.Error):
                raise self._fail(action, error) from error
            raise

    def _rollback(self, conn: sqlite3.Connection) -> None:
        """End the connection's transaction, if it has one, storing nothing. A connection
        whose ``ROLLBACK`` fails — or is interrupted — is closed (SQLite rolls back on close)
        and forgotten, so the file's write lock is never left held."""
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return
        except sqlite3.Error:
            pass
        except BaseException:
            self._discard(conn)
            raise
        self._discard(conn)

    def _discard(self, conn: sqlite3.Connection) -> None:
        """Close *conn* (its open transaction, if any, rolls back) and forget it: this thread
        opens a new connection on its next call."""
        with contextlib.suppress(sqlite3.Error):
            conn.close()
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
            self._local.bulk = False

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as error:
            raise self._fail("read", error) from error

    # --- vouchers -------------------------------------------------------------------------

    def insert_voucher(self, record: Any) -> None:
        """Store a new voucher. Raises DuplicateFound when its code or id is taken."""
        try:
            with self._write("insert voucher") as conn:
                conn.execute(_INSERT_VOUCHER, _sql.voucher_row(record))
        except StorageError as error:
            cause = error.__cause__
            if isinstance(cause, sqlite3.IntegrityError) and "UNIQUE" in str(cause):
                what = "code" if "code" in str(cause) else "id"
                value = record.code if what == "code" else record.id
                raise DuplicateFound.voucher(what, value) from None
            raise

    def insert_vouchers(self, records: Sequence[Any]) -> list[int]:
        """Store the records whose code and id are free in one ``BEGIN IMMEDIATE``
        transaction (one ``executemany``; row by row only when the batch holds a taken code
        or id); the positions of the others."""
        rows = [_sql.voucher_row(record) for record in records]
        taken: list[int] = []
        with self._write("insert vouchers") as conn:
            if not getattr(self._local, "bulk", False):
                # a batch touches index pages all over the id (random) and code indexes: a
                # larger page cache for this connection keeps them (SQLite's default is 2 MiB)
                conn.execute(f"PRAGMA cache_size = -{BULK_CACHE_KIB}")
                self._local.bulk = True
            before = conn.total_changes
            conn.execute("SAVEPOINT batch")
            # in id order: consecutive inserts land on neighbouring pages of the id index
            ordered: list[tuple[Any, ...]] = sorted(rows, key=_sql.voucher_id)
            conn.executemany(_INSERT_NEW_VOUCHER, ordered)
            if conn.total_changes - before == len(rows):
                conn.execute("RELEASE batch")
                return taken
            # some code or id was taken: find which, one statement per row
            conn.execute("ROLLBACK TO batch")
            conn.execute("RELEASE batch")
            for position, row in enumerate(rows):
                if not conn.execute(_INSERT_NEW_VOUCHER, row).rowcount:
                    taken.append(position)
        return taken

    def _load(
        self,
        conn: sqlite3.Connection,
        code_or_id: str,
        by_id: bool = False,
        seqs: Callable[[], int] | None = None,
    ) -> SqlUnit | None:
        row = None if by_id else conn.execute(_SELECT_BY_CODE, (code_or_id,)).fetchone()
        if row is None:
            row = conn.execute(_SELECT_BY_ID, (code_or_id,)).fetchone()
        if row is None:
            return None
        sessions = conn.execute(_SELECT_SESSIONS, (_sql.voucher_id(row),)).fetchall()
        record = _sql.record_from_row(row, sessions)
        return SqlUnit(
            record,
            _sql.counters_of(row),
            conn,
            self._transaction_seqs(conn) if seqs is None else seqs,
        )

    @staticmethod
    def _transaction_seqs(conn: sqlite3.Connection) -> Callable[[], int]:
        """Hands out the unit's transaction seqs: the first read from the log, then counted
        (the unit's own transactions are inserted only at commit)."""
        last: int | None = None

        def next_seq() -> int:
            nonlocal last
            if last is None:
                last = conn.execute(_LAST_TX).fetchone()[0]
            assert last is not None
            last += 1
            return last

        return next_seq

    def begin(self, code_or_id: str) -> SqlUnit | None:
        """Open ``BEGIN IMMEDIATE`` and load the voucher and its sessions (None: not found).
        Anything raised after ``BEGIN`` rolls it back."""
        conn = self._conn()
        try:
            self._begin(conn)
            unit = self._load(conn, code_or_id)
        except BaseException as error:
            self._rollback(conn)
            if isinstance(error, sqlite3.Error):
                raise self._fail("begin", error) from error
            raise
        if unit is None:
            self._rollback(conn)
        return unit

    def begin_redemption(self, redemption_id: str) -> tuple[SqlUnit, Redemption] | None:
        """Open ``BEGIN IMMEDIATE`` on the voucher of a redemption, with the redemption."""
        conn = self._conn()
        try:
            self._begin(conn)
            row = conn.execute(
                f"SELECT {_R} FROM redemptions WHERE id = ?", (redemption_id,)
            ).fetchone()
            unit = (
                None
                if row is None
                else self._load(conn, _sql.redemption_voucher_id(row), by_id=True)
            )
        except BaseException as error:
            self._rollback(conn)
            if isinstance(error, sqlite3.Error):
                raise self._fail("begin", error) from error
            raise
        if unit is None or row is None:
            self._rollback(conn)
            return None
        return unit, _sql.redemption_from_row(row)

    def begin_many(self, codes: Sequence[str]) -> list[SqlUnit] | None:
        """One ``BEGIN IMMEDIATE`` holding several vouchers (the file's write lock orders every
        writer: two callers can never wait for each other). One unit per voucher, in the order
        of *codes*; None when a code names no voucher."""
        conn = self._conn()
        units: list[SqlUnit] = []
        try:
            self._begin(conn)
            seqs = self._transaction_seqs(conn)  # one counter: the units share a transaction
            for code in codes:
                unit = next((u for u in units if code in (u.record.code, u.record.id)), None)
                if unit is None:
                    unit = self._load(conn, code, seqs=seqs)
                    if unit is None:
                        break
                units.append(unit)
        except BaseException as error:
            self._rollback(conn)
            if isinstance(error, sqlite3.Error):
                raise self._fail("begin", error) from error
            raise
        if len(units) < len(codes):
            self._rollback(conn)
            return None
        return units

    def commit(self, unit: SqlUnit) -> None:
        """Write what the unit changed and ``COMMIT`` (all or nothing)."""
        self.commit_many((unit,))

    def commit_many(self, units: Sequence[SqlUnit]) -> None:
        """Write what the units changed and ``COMMIT`` (all or nothing). Anything raised
        on the way — a driver error (a :class:`StorageError`), a value the driver cannot bind,
        an interrupt — rolls the transaction back and propagates: nothing is stored and the
        write lock is released."""
        conn: sqlite3.Connection = units[0].handle
        try:
            distinct = distinct_units(units)
            if len(distinct) == 1:
                self._write_changes(conn, distinct[0].changes())
            else:
                self._write_all(conn, [unit.changes() for unit in distinct])
            conn.execute("COMMIT")
        except BaseException as error:
            self._rollback(conn)
            if isinstance(error, sqlite3.Error):
                raise self._fail("commit", error) from error
            raise

    def abort_many(self, units: Sequence[SqlUnit]) -> None:
        """``ROLLBACK`` the units' one transaction."""
        self._rollback(units[0].handle)

    @staticmethod
    def _write_changes(conn: sqlite3.Connection, changes: _sql.Changes) -> None:
        """Run one unit's writes (inside its open transaction)."""
        if changes.keys:
            conn.executemany(_UPSERT_KEY, changes.keys)
        if changes.parents:
            conn.executemany(_INSERT_PARENT, changes.parents)
        if changes.parent_updates:
            conn.executemany(_UPDATE_PARENT, changes.parent_updates)
        if changes.purged:
            conn.execute(_KEEP_HIGH_WATER)
            for sql in _PURGE:
                conn.execute(sql, (changes.voucher_id,))
        elif not changes.empty:
            voucher_id = changes.voucher_id
            if changes.voucher is not None:
                conn.execute(_UPDATE_VOUCHER, (*changes.voucher, voucher_id))
            if changes.session_deletes:
                conn.executemany(
                    _DELETE_SESSION, [(voucher_id, key) for key in changes.session_deletes]
                )
            if changes.session_inserts:
                conn.executemany(_INSERT_SESSION, changes.session_inserts)
            if changes.transactions:
                conn.executemany(_INSERT_TX, changes.transactions)
            if changes.redemptions:
                conn.executemany(_INSERT_REDEMPTION, changes.redemptions)
            if changes.redemption_updates:
                conn.executemany(_UPDATE_REDEMPTION, changes.redemption_updates)
            if changes.rollbacks:
                conn.executemany(_INSERT_ROLLBACK, changes.rollbacks)

    @classmethod
    def _write_all(cls, conn: sqlite3.Connection, every: Sequence[_sql.Changes]) -> None:
        """Run the writes of several units of one transaction (a stack, a transfer) one
        statement per kind for all of them, in the order one unit's are run: the same rows as
        unit after unit, with fewer calls into the driver. A purged unit's writes (a forced
        delete, never part of such a unit) are run on their own."""
        plain = [changes for changes in every if not changes.purged]
        for changes in every:
            if changes.purged:
                cls._write_changes(conn, changes)
        batches: tuple[tuple[str, list[tuple[Any, ...]]], ...] = (
            (_UPSERT_KEY, [row for c in plain for row in c.keys]),
            (_INSERT_PARENT, [row for c in plain for row in c.parents]),
            (_UPDATE_PARENT, [row for c in plain for row in c.parent_updates]),
            (
                _UPDATE_VOUCHER,
                [(*c.voucher, c.voucher_id) for c in plain if c.voucher is not None],
            ),
            (
                _DELETE_SESSION,
                [(c.voucher_id, key) for c in plain for key in c.session_deletes],
            ),
            (_INSERT_SESSION, [row for c in plain for row in c.session_inserts]),
            (_INSERT_TX, [row for c in plain for row in c.transactions]),
            (_INSERT_REDEMPTION, [row for c in plain for row in c.redemptions]),
            (_UPDATE_REDEMPTION, [row for c in plain for row in c.redemption_updates]),
            (_INSERT_ROLLBACK, [row for c in plain for row in c.rollbacks]),
        )
        for sql, rows in batches:
            if rows:
                conn.executemany(sql, rows)

    def abort(self, unit: SqlUnit) -> None:
        """``ROLLBACK``: nothing of the unit is stored."""
        self._rollback(unit.handle)

    # --- idempotency keys -----------------------------------------------------------------

    def claim_key(self, unit: SqlUnit, key: str) -> KeyRecord | None:
        """The record under *key*. The unit's ``BEGIN IMMEDIATE`` already holds the file's
        write lock: no other unit can store under the key until this one ends."""
        conn: sqlite3.Connection = unit.handle
        try:
            row = conn.execute(_SELECT_KEY, (key,)).fetchone()
        except sqlite3.Error as error:
            raise self._fail("read idempotency key", error) from error
        return None if row is None else _sql.key_from_row(row)

    def keep_key(self, unit: SqlUnit, record: KeyRecord) -> None:
        """Write *record* with the unit's other changes at commit."""
        unit.kept.append(record)

    def expire_keys(self, now: int) -> int:
        """Delete key records with ``expires_at <= now`` (through the expiry index)."""
        with self._write("expire idempotency keys") as conn:
            deleted: int = conn.execute(
                "DELETE FROM idempotency_keys WHERE expires_at <= ?", (now,)
            ).rowcount
        return deleted

    # --- reads ----------------------------------------------------------------------------

    def get_redemption(self, redemption_id: str) -> Redemption | None:
        """A redemption by id, or None."""
        rows = self._read(f"SELECT {_R} FROM redemptions WHERE id = ?", (redemption_id,))
        return _sql.redemption_from_row(rows[0]) if rows else None

    def get_parent_redemption(self, parent_id: str) -> ParentRedemption | None:
        """A parent redemption by id (one statement), or None."""
        rows = self._read(_SELECT_PARENT, (parent_id,))
        return _sql.parent_from_row(rows[0]) if rows else None

    def parent_redemptions(self) -> Iterator[ParentRedemption]:
        """Every parent redemption, in id order, read 1000 at a time by keyset."""
        after = ""
        while True:
            rows = self._read(_PARENTS_PAGE, (after, _sql.CODE_PAGE))
            for row in rows:
                yield _sql.parent_from_row(row)
            if len(rows) < _sql.CODE_PAGE:
                return
            after = _sql.parent_id(rows[-1])

    def transactions(self, voucher_id: str) -> Sequence[TransactionRecord]:
        """The voucher's transactions, oldest first."""
        rows = self._read(
            f"SELECT {_T} FROM transactions WHERE voucher_id = ? ORDER BY seq", (voucher_id,)
        )
        return [_sql.transaction_from_row(row) for row in rows]

    def transactions_page(
        self,
        voucher_id: str,
        *,
        after: str | None = None,
        descending: bool = False,
        offset: int = 0,
        limit: int,
    ) -> list[TransactionRecord]:
        """A keyset read through the ``(voucher_id, seq)`` index: O(log n + offset + limit)."""
        return _sql.read_transactions_page(
            self._read,
            _SELECT_TXS,
            "?",
            voucher_id,
            after=after,
            descending=descending,
            offset=offset,
            limit=limit,
        )

    def transaction_count(self, voucher_id: str) -> int:
        """How many transactions the voucher has (counted on the index)."""
        count: int = self._read(
            "SELECT COUNT(*) FROM transactions WHERE voucher_id = ?", (voucher_id,)
        )[0][0]
        return count

    def redemptions(self, voucher_id: str) -> Sequence[Redemption]:
        """The voucher's redemption log, oldest first."""
        rows = self._read(
            f"SELECT {_R} FROM redemptions WHERE voucher_id = ? ORDER BY seq", (voucher_id,)
        )
        return tuple(_sql.redemption_from_row(row) for row in rows)

    def expiring_sessions(self, now: int, limit: int | None = None) -> list[SessionRecord]:
        """Sessions with ``expires_at <= now``, soonest first, through the expiry index."""
        columns = ", ".join(
            "v.code" if c == "code" else f"s.{c}" for c in _sql.DETACHED_SESSION.names
        )
        rows = self._read(
            f"SELECT {columns} FROM sessions AS s JOIN vouchers AS v ON v.id = s.voucher_id"
            " WHERE s.expires_at <= ? ORDER BY s.expires_at LIMIT ?",
            (now, -1 if limit is None else limit),
        )
        return [_sql.detached_session(row) for row in rows]

    def points_due(self, now: int, limit: int | None = None) -> list[str]:
        """Ids of loyalty cards with points due to expire at *now*, soonest first (through the
        partial index on ``points_due_at``: cost grows with what is due)."""
        rows = self._read(
            "SELECT id FROM vouchers WHERE points_due_at IS NOT NULL AND points_due_at <= ? "
            "ORDER BY points_due_at, id LIMIT ?",
            (now, -1 if limit is None else limit),
        )
        return [row[0] for row in rows]

    def voucher_codes(self) -> Iterator[str]:
        """Every live voucher's code, in code order (read in pages: no long-held cursor)."""
        return _sql.paged_codes(
            lambda after: self._read(
                "SELECT code FROM vouchers WHERE state < ? AND code > ? ORDER BY code LIMIT ?",
                (_DELETED, after, _sql.CODE_PAGE),
            )
        )

    def session_counts(self) -> SessionCounts:
        """Sessions opened, resolved and stored, read in one statement (one snapshot)."""
        sums = ", ".join(f"COALESCE(SUM({c}), 0)" for c in _sql.COUNTER_COLUMNS)
        row = self._read(f"SELECT {sums}, (SELECT COUNT(*) FROM sessions) FROM vouchers")[0]
        return _sql.session_counts_from_row(row)

    def session_count(self) -> int:
        """How many sessions are stored (live, or expired and not yet purged)."""
        count: int = self._read("SELECT COUNT(*) FROM sessions")[0][0]
        return count

    def close(self) -> None:
        """Close every connection this store opened (in this process)."""
        self._closed = True
        with self._connections_lock:
            connections, self._connections = list(self._connections), weakref.WeakSet()
        for conn in connections:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()
