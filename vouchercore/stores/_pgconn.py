"""The PostgreSQL store's connections: where they come from, how a unit of work or a read holds
one (a :class:`Lease`) and gives it back, which failures are retried, and what a forked child
does. Nothing here knows the store's tables; :mod:`vouchercore.stores.postgres` runs its
statements on the leases :class:`Connections` hands out.

* **Sources.** Given a conninfo string or URL, :class:`Connections` opens its own
  :class:`psycopg_pool.ConnectionPool` (autocommit connections, ``TimeZone`` UTC) and closes it
  in :meth:`Connections.close`. Given a pool or a :class:`psycopg.Connection` it uses it and
  never closes it; a single connection serves one lease at a time (others wait for it, up to
  *timeout*). A connection handed over in a transaction-per-statement mode is switched to
  autocommit while leased (the store writes ``BEGIN``/``COMMIT`` itself) and switched back.
* **Leases.** A unit of work holds its lease until commit or abort; :meth:`Connections.held`
  lists the leases the calling thread holds, so a read made by that thread runs on its open
  unit's connection (:meth:`Connections.read`).
* **Retries.** :meth:`Connections.attempt` runs some work on a fresh lease and runs it again,
  with jittered exponential backoff, on a serialization failure or deadlock (SQLSTATE
  ``40001``/``40P01``), and at once on a pooled connection found dead (the pool's idle
  connections are checked first). A connection whose transaction state is unknown after an
  error is rolled back or, if broken, discarded by the pool and replaced.
* **Time bounds.** Every wait is bounded by *timeout*: for a pooled connection (the pool's
  ``getconn``); on the server, for a lock and for each statement — the store's own connections
  are opened with ``lock_timeout`` and ``statement_timeout`` equal to *timeout* (libpq
  ``options``, no round trip), a ``connect_timeout``, TCP keepalives and ``tcp_user_timeout``
  (a dead peer or network). A server that accepts a round trip and never answers (frozen, or
  its host gone silent) is caught by a watchdog thread: a round trip of a lease still waiting
  after twice *timeout* (at least *timeout* + 1 s) has its socket shut down, and the call
  raises :class:`StorageError`. Lease holders arm the watchdog around each round trip
  (:meth:`Connections.arm`): two stores of a float, no lock.
* **What a failure leaves.** A lease is given back only with its connection idle (no
  transaction open). Any error other than psycopg's — a bug, a value the driver refuses, an
  interrupt (``KeyboardInterrupt``) — while a lease holds a connection marks it *broken*: its
  state is unknown (a statement or pipeline may be half-sent), so it is closed — the server
  rolls back and releases every lock — and the pool replaces it. A connection that cannot be
  brought back to idle is closed too. The one connection handed to the store is rolled back
  when possible and closed only if that fails.
* **Fork.** A forked child never touches its parent's connections: it opens a pool of its own
  on first use (a single connection cannot cross ``fork``).
* **Errors** name the database's address (host, port, database), never its password.
"""

from __future__ import annotations

import math
import os
import random
import socket
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from vouchercore.domain.values import free_text_problem, parse_number
from vouchercore.errors import InvalidPayload, StorageError

__all__ = [
    "NO_FLUSH",
    "STORE_OPTIONS",
    "Conn",
    "Connections",
    "Lease",
    "number_option",
    "parse_postgres_url",
]

#: ``from_url`` query parameters that configure the store (every other one goes to libpq).
STORE_OPTIONS: Final = ("schema", "min_size", "max_size", "timeout", "retries")

#: Sent before the ``COMMIT`` of a transaction that wrote nothing: its row lock need not be
#: flushed.
NO_FLUSH: Final = "SET LOCAL synchronous_commit TO OFF"

_RETRYABLE: Final = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
_FIRST_BACKOFF: Final = 0.01
_MAX_BACKOFF: Final = 1.0
_IDLE: Final = TransactionStatus.IDLE
_INTRANS: Final = TransactionStatus.INTRANS
_INERROR: Final = TransactionStatus.INERROR
#: a lease's deadline while it is not in a round trip
NEVER: Final = math.inf
_monotonic = time.monotonic

#: Pools a forked child inherited: kept referenced (never closed, never collected) so that the
#: child never writes to its parent's sockets.
_FORSAKEN: list[object] = []

Conn = psycopg.Connection[Any]
T = TypeVar("T")


def parse_postgres_url(url: str) -> tuple[str, dict[str, str]]:
    """Split ``postgresql://…?schema=NAME&max_size=N&sslmode=…`` into the URL libpq gets (every
    other query parameter kept) and the store's own options (:data:`STORE_OPTIONS`).

    Raises:
        InvalidPayload: the URL, or one of its decoded parameters, holds NUL or a lone
            surrogate.
    """
    try:
        parts = urlsplit(url)
    except ValueError as error:  # e.g. a malformed IPv6 host
        raise InvalidPayload(f"malformed PostgreSQL store URL: {error}") from None
    options: dict[str, str] = {}
    kept: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        for text in (name, value):
            problem = free_text_problem(text, 4_096)
            if problem is not None:
                raise InvalidPayload(f"the PostgreSQL store URL's parameter {name!r} {problem}")
        if name in STORE_OPTIONS:
            options[name] = value
        else:
            kept.append((name, value))
    query = urlencode(kept, quote_via=quote)
    return urlunsplit(parts._replace(query=query)), options


#: The range of each numeric store option a URL may give (``timeout`` in seconds).
OPTION_RANGES: Final[dict[str, tuple[float, float]]] = {
    "min_size": (0, 10_000),
    "max_size": (1, 10_000),
    "timeout": (0.001, 86_400.0),
    "retries": (0, 1_000),
}


def number_option(options: dict[str, str], name: str, kind: Callable[[str], T], default: T) -> T:
    """The option *name* of a store URL as a finite number in its :data:`OPTION_RANGES`
    (*default* when absent).

    Raises:
        InvalidPayload: not a number, not finite, or out of range.
    """
    if name not in options:
        return default
    low, high = OPTION_RANGES[name]
    if kind is int:
        return parse_number(options[name], name, int, int(low), int(high))  # type: ignore[return-value]
    return parse_number(options[name], name, float, low, high)  # type: ignore[return-value]


def _pool_settings(pool: ConnectionPool[Any]) -> tuple[str, dict[str, Any]]:
    """The conninfo and connection arguments a pool connects with (as of now)."""
    conninfo = pool.conninfo() if callable(pool.conninfo) else pool.conninfo
    kwargs = pool.kwargs() if callable(pool.kwargs) else pool.kwargs
    return conninfo, dict(kwargs or {})


class Lease:
    """A connection taken (from the pool or the one connection) that must be given back.

    ``deadline`` is when the watchdog shuts the connection's socket if the round trip in
    flight has not been answered (:data:`NEVER` between round trips); ``broken`` marks a
    connection whose state is unknown (closed when given back); ``timed_out`` one the
    watchdog shut.
    """

    __slots__ = (
        "broken",
        "conn",
        "deadline",
        "done",
        "held",
        "pool",
        "restore_autocommit",
        "timed_out",
    )

    def __init__(self, conn: Conn, pool: ConnectionPool[Any] | None) -> None:
        self.conn = conn
        self.pool = pool
        self.restore_autocommit = False
        self.done = False
        self.held: list[Lease] | None = None  # the opening thread's open units, while open
        self.deadline = NEVER
        self.broken = False
        self.timed_out = False


class Connections:
    """The connections of one PostgreSQL store; see the module docstring.

    Args:
        source: a libpq connection string or URL (a pool of our own is opened by
            :meth:`open`), a pool or a connection (used, never closed).
        schema: the store's schema (named in errors and in the pool's name).
        min_size, max_size: the size of our own pool.
        timeout: seconds to wait for a free connection (and to establish one of our own).
        retries: how many times :meth:`attempt` runs its work again.

    Raises:
        InvalidPayload: *source* is not a connection string, pool or connection.
    """

    def __init__(
        self,
        source: str | ConnectionPool[Any] | Conn,
        *,
        schema: str,
        min_size: int,
        max_size: int,
        timeout: float,
        retries: int,
    ) -> None:
        self.schema = schema
        self.min_size = min_size
        self.max_size = max_size
        self.timeout = timeout
        self.retries = retries
        self.address = ""
        self._password = ""
        self._local = threading.local()
        self._pid = os.getpid()
        self._closed = False
        self._pool: ConnectionPool[Any] | None = None
        self._owns_pool = False
        self._connection: Conn | None = None
        self._connection_lock = threading.Lock()
        self._conninfo = ""
        self._kwargs: dict[str, Any] = {}
        #: how long a round trip may go unanswered before the watchdog ends it
        self.bound = timeout + max(timeout, 1.0)
        #: the leases given out and not yet given back (the watchdog's to check), its lock,
        #: and the watchdog (started on the first lease, in each process)
        self._active: set[Lease] = set()
        self._active_lock = threading.Lock()
        self._watchdog: threading.Thread | None = None
        self._watchdog_pid = 0
        self._stop = threading.Event()
        if isinstance(source, str):
            self._conninfo = source
            self._kwargs = self._own_kwargs(self._describe(source, {}))
        elif isinstance(source, ConnectionPool):
            self._pool = source
            self._describe(*_pool_settings(source))
        elif isinstance(source, psycopg.Connection):
            self._connection = source
            info = source.info
            self.address = f"{info.host}:{info.port}/{info.dbname}"
        else:
            raise InvalidPayload(
                "conninfo must be a connection string or URL, a psycopg_pool.ConnectionPool or "
                f"a psycopg.Connection, got {type(source).__name__}"
            )

    def open(self, setup: Callable[[Conn], None]) -> None:
        """Run *setup* on a first connection — one of our own, closed afterwards, so that an
        unreachable database fails here with libpq's reason; or a lease of the connection or
        pool handed to us — then open our own pool if we are to have one."""
        if self._pool is not None or self._connection is not None:
            lease = self.lease()
            try:
                setup(lease.conn)
            finally:
                self.release(lease, rollback=True)
            return
        try:
            conn = psycopg.Connection.connect(self._conninfo, **self._kwargs)
        except psycopg.Error as error:
            raise self.fail("connect", error) from None
        try:
            setup(conn)
        finally:
            conn.close()
        self._pool = self._open_pool(self._conninfo, self._kwargs)
        self._owns_pool = True

    def _describe(self, conninfo: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Parse *conninfo*; remember the address to name in errors and the password to keep
        out of them."""
        try:
            params: dict[str, Any] = dict(conninfo_to_dict(conninfo, **kwargs))
        except psycopg.Error as error:
            raise InvalidPayload(f"not a PostgreSQL connection string: {error}") from None
        host = params.get("host") or params.get("hostaddr") or "localhost"
        port = params.get("port") or "5432"
        dbname = params.get("dbname") or params.get("user") or "(default database)"
        self.address = f"{host}:{port}/{dbname}"
        self._password = str(params.get("password") or "")
        return params

    def _own_kwargs(self, params: dict[str, Any]) -> dict[str, Any]:
        """Connection settings of our own connections: autocommit (the store writes
        ``BEGIN``/``COMMIT`` itself, pipelined), ``TimeZone`` UTC, and the time bounds (see
        the module docstring) — each unless the connection string sets it already."""
        given = str(params.get("options") or "")
        options = [given, "-c TimeZone=UTC"] if given else ["-c TimeZone=UTC"]
        milliseconds = max(1, round(self.timeout * 1000))
        for setting in ("lock_timeout", "statement_timeout"):
            if setting not in given:
                options.append(f"-c {setting}={milliseconds}")
        kwargs: dict[str, Any] = {"autocommit": True, "options": " ".join(options)}
        seconds = max(1, math.ceil(self.timeout))
        defaults: dict[str, Any] = {
            "connect_timeout": max(2, seconds),
            "application_name": "vouchercore",
            # a peer that stopped answering at the TCP level (host down, network cut)
            "keepalives": 1,
            "keepalives_idle": seconds,
            "keepalives_interval": seconds,
            "keepalives_count": 3,
            "tcp_user_timeout": round(self.bound * 1000),
        }
        for name, value in defaults.items():
            if not params.get(name):
                kwargs[name] = value
        return kwargs

    def _open_pool(self, conninfo: str, kwargs: dict[str, Any]) -> ConnectionPool[Any]:
        return ConnectionPool(
            conninfo,
            kwargs=kwargs,
            min_size=self.min_size,
            max_size=self.max_size,
            timeout=self.timeout,
            name=f"vouchercore:{self.schema}",
            open=True,
        )

    def timed_out(self, action: str) -> StorageError:
        """The error to raise when the watchdog ended a round trip of *action*."""
        return StorageError(
            f"PostgreSQL store {self.address} (schema {self.schema!r}): {action} failed: no "
            f"answer from the database within {self.bound:g} s (connection closed)"
        )

    @staticmethod
    def interruption(error: psycopg.Error) -> BaseException | None:
        """The non-psycopg exception *error* replaced, if any: psycopg raises its own error
        when it cannot leave pipeline mode after, say, a ``KeyboardInterrupt`` in the
        pipeline — the interrupt is what the caller must see."""
        context = error.__context__
        if context is not None and not isinstance(context, psycopg.Error):
            return context
        return None

    def failed(self, lease: Lease, action: str, error: psycopg.Error) -> StorageError:
        """:meth:`fail`, or :meth:`timed_out` if the watchdog ended the lease's round trip."""
        return self.timed_out(action) if lease.timed_out else self.fail(action, error)

    def fail(self, action: str, error: BaseException) -> StorageError:
        """The error to raise for *error* while doing *action* (any password blanked out)."""
        message = str(error).strip()
        if self._password:
            message = message.replace(self._password, "***")
        return StorageError(
            f"PostgreSQL store {self.address} (schema {self.schema!r}): {action} failed: {message}"
        )

    @staticmethod
    def rollback(conn: Conn) -> None:
        """Roll back the connection's transaction, if it has one (errors ignored: a
        connection left in a transaction is closed when given back)."""
        with suppress(psycopg.Error):
            if not conn.closed and conn.pgconn.transaction_status != _IDLE:
                conn.execute("ROLLBACK")

    @staticmethod
    def end_quietly(conn: Conn) -> None:
        """End a transaction that wrote nothing (a unit's writes are only ever sent with its
        ``COMMIT``): ``COMMIT`` without waiting for the WAL flush its row lock would cost. Not
        ``ROLLBACK``: psycopg drops every prepared statement of a connection that rolls back.
        A transaction in error is rolled back. Driver errors are ignored (a connection left
        in a transaction is closed when given back); an interrupt psycopg's own error hides is
        raised."""
        try:
            if conn.closed:
                return
            status = conn.pgconn.transaction_status
            if status == _INTRANS:
                with conn.pipeline():
                    conn.execute(NO_FLUSH)
                    conn.execute("COMMIT")
            elif status != _IDLE:
                conn.execute("ROLLBACK")
        except psycopg.Error as error:
            interrupted = Connections.interruption(error)
            if interrupted is not None:
                raise interrupted from None

    def _after_fork(self) -> None:
        """In a forked child: forget the parent's connections, open a pool of our own."""
        self._pid = os.getpid()
        self._local = threading.local()
        self._connection_lock = threading.Lock()
        self._active = set()  # the parent's leases are the parent's to watch
        self._active_lock = threading.Lock()
        if self._connection is not None:
            raise StorageError(
                f"PostgreSQL store {self.address}: a store on a single connection cannot be "
                "used in a forked child; give it a connection string or a pool"
            )
        parent = self._pool
        _FORSAKEN.append(parent)  # never closed here: its sockets are the parent's
        if not self._owns_pool and parent is not None:
            self._conninfo, kwargs = _pool_settings(parent)
            self._kwargs = {**kwargs, "autocommit": True}
        self._pool = self._open_pool(self._conninfo, self._kwargs)
        self._owns_pool = True

    # --- the watchdog ---------------------------------------------------------------------

    def arm(self, lease: Lease) -> None:
        """A round trip on *lease* starts: the watchdog ends it after :attr:`bound` seconds.
        (Set ``lease.deadline = NEVER`` when it is answered.)"""
        lease.deadline = _monotonic() + self.bound

    def _start_watchdog(self) -> None:
        self._watchdog_pid = os.getpid()
        self._stop = threading.Event()
        tick = min(1.0, max(0.05, self.timeout / 4))
        thread = threading.Thread(
            target=_watch,
            args=(weakref.ref(self), self._stop, tick),
            name=f"vouchercore-watchdog:{self.schema}",
            daemon=True,
        )
        thread.start()
        self._watchdog = thread

    def check_deadlines(self) -> None:
        """Shut the socket of every lease whose round trip is past its deadline (the
        blocked call then fails with a connection error, raised as a StorageError)."""
        now = _monotonic()
        for lease in self._active.copy():
            if lease.deadline > now:
                continue
            with self._active_lock:
                if lease not in self._active or lease.deadline > now:
                    continue  # given back meanwhile (its connection may serve another lease)
                lease.timed_out = lease.broken = True
                _shut(lease.conn)

    # --- leases ---------------------------------------------------------------------------

    def lease(self) -> Lease:
        """A connection for one unit or read: from the pool (waiting up to *timeout*) or the
        one connection (waiting for its other user)."""
        if self._closed:
            raise StorageError(f"PostgreSQL store {self.address} is closed")
        if self._pid != os.getpid():
            self._after_fork()
        if self._watchdog_pid != self._pid:
            with self._active_lock:
                if self._watchdog_pid != self._pid:
                    self._start_watchdog()
        if self._connection is not None:
            if any(lease.conn is self._connection for lease in self.held()):
                raise StorageError(
                    f"PostgreSQL store {self.address}: this thread holds the store's one "
                    "connection in an open unit of work"
                )
            if not self._connection_lock.acquire(timeout=self.timeout):
                raise StorageError(
                    f"PostgreSQL store {self.address}: the connection stayed busy for "
                    f"{self.timeout:g} s"
                )
            lease = Lease(self._connection, None)
        else:
            pool = self._pool
            assert pool is not None
            try:
                conn = pool.getconn(self.timeout)
            except PoolTimeout:
                raise StorageError(
                    f"PostgreSQL store {self.address}: no database connection within "
                    f"{self.timeout:g} s (is the server reachable?)"
                ) from None
            except PoolClosed as error:
                raise self.fail("connect", error) from error
            lease = Lease(conn, pool)
        self._active.add(lease)
        conn = lease.conn
        if not conn.autocommit:  # a connection handed to us: the store writes BEGIN itself
            try:
                conn.autocommit = True
            except psycopg.Error as error:
                self.release(lease, rollback=True)
                raise self.fail("connect", error) from error
            except BaseException:
                lease.broken = True
                self.release(lease)
                raise
            lease.restore_autocommit = True
        return lease

    def release(self, lease: Lease, *, rollback: bool = False, quietly: bool = False) -> None:
        """Give the connection back, first rolling back or quietly ending (see
        :meth:`end_quietly`) its transaction if asked; idempotent.

        The connection goes back idle or not at all: a *broken* lease's connection, one
        interrupted while ending its transaction, or one still in a transaction after it, is
        closed (see :meth:`_discard`) — the server then rolls back and releases its locks —
        and the pool replaces it."""
        if lease.done:
            return
        lease.done = True
        conn = lease.conn
        try:
            if not lease.broken:
                self.arm(lease)
                try:
                    if rollback:
                        self.rollback(conn)
                    elif quietly:
                        self.end_quietly(conn)
                except BaseException:
                    lease.broken = True  # interrupted mid-statement: its state is unknown
                    raise
                finally:
                    lease.deadline = NEVER
        finally:
            try:
                if lease.broken or (not conn.closed and conn.pgconn.transaction_status != _IDLE):
                    self._discard(lease)
            finally:
                self._give_back(lease)

    def _discard(self, lease: Lease) -> None:
        """Close the lease's connection (its transaction rolls back on the server). The one
        connection handed to the store is the caller's: it is rolled back if it can be, and
        closed only if it cannot."""
        conn = lease.conn
        if conn.closed:
            return
        try:
            if lease.pool is None and not lease.timed_out:
                with suppress(psycopg.Error):
                    self.arm(lease)
                    if conn.pgconn.transaction_status in (_INTRANS, _INERROR):
                        conn.rollback()
                lease.deadline = NEVER
        finally:
            if conn.pgconn.transaction_status != _IDLE or lease.pool is not None:
                conn.close()

    def _give_back(self, lease: Lease) -> None:
        """Hand the connection back to where it came from (the pool discards a closed one)."""
        conn = lease.conn
        with self._active_lock:
            self._active.discard(lease)
        if lease.held is not None:
            with suppress(ValueError):
                lease.held.remove(lease)
            lease.held = None
        if lease.restore_autocommit:
            lease.restore_autocommit = False
            with suppress(psycopg.Error):
                if not conn.closed:
                    conn.autocommit = False
        if lease.pool is not None:
            pool, lease.pool = lease.pool, None
            with suppress(psycopg.Error):
                pool.putconn(conn)  # a closed connection is discarded and replaced by the pool
        elif conn is self._connection:
            with suppress(RuntimeError):
                self._connection_lock.release()

    def held(self) -> list[Lease]:
        """The leases of units open in this thread, oldest first."""
        held: list[Lease] | None = getattr(self._local, "held", None)
        if held is None:
            held = self._local.held = []
        return held

    def attempt(self, action: str, work: Callable[[Lease], T]) -> tuple[Lease, T]:
        """Run *work* on a fresh lease, retrying on a serialization failure or deadlock (with
        backoff) and on a dead pooled connection. Returns the lease (still held) and result."""
        delay = _FIRST_BACKOFF
        attempt = 0
        while True:
            lease = self.lease()
            pooled = lease.pool is not None
            try:
                lease.deadline = _monotonic() + self.bound
                result = work(lease)
                lease.deadline = NEVER
                return lease, result
            except psycopg.Error as error:
                broken = lease.conn.closed
                timed_out = lease.timed_out
                self.release(lease, rollback=True)
                if timed_out:
                    raise self.timed_out(action) from error
                retry = (broken and pooled) or error.sqlstate in _RETRYABLE
                if attempt >= self.retries or not retry:
                    raise self.fail(action, error) from error
            except BaseException:
                lease.broken = True
                self.release(lease)
                raise
            attempt += 1
            if broken:
                # the server (or the network) dropped connections: test the idle ones now
                # rather than fail once more on each
                pool = self._pool
                if pool is not None:
                    with suppress(psycopg.Error):
                        pool.check()
            else:
                time.sleep(delay * (0.5 + random.random()))  # jitter, not a secret
                delay = min(delay * 2, _MAX_BACKOFF)

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """One statement (one snapshot): on the connection of this thread's open unit if it
        has one, else on a connection of its own."""
        held = self.held()
        if held:
            lease = held[-1]
            try:
                self.arm(lease)
                rows = lease.conn.execute(sql, params).fetchall()
                lease.deadline = NEVER
                return rows
            except psycopg.Error as error:
                raise self.failed(lease, "read", error) from error
            except BaseException:
                lease.broken = True
                raise
        lease, rows = self.attempt("read", lambda lease: lease.conn.execute(sql, params).fetchall())
        self.release(lease)
        return rows

    def close(self) -> None:
        """Close our own pool (in this process); a pool or connection handed to us is left
        open. Stops the watchdog. Idempotent."""
        self._closed = True
        self._stop.set()
        pool, self._pool = self._pool, None
        if self._owns_pool and pool is not None and self._pid == os.getpid():
            pool.close()


def _watch(ref: weakref.ReferenceType[Connections], stop: threading.Event, tick: float) -> None:
    """The watchdog's loop: every *tick* seconds, until the store is closed or collected."""
    while not stop.wait(tick):
        connections = ref()
        if connections is None:
            return
        connections.check_deadlines()
        del connections


def _shut(conn: Conn) -> None:
    """Shut down *conn*'s socket (not close its descriptor, which libpq owns): a call waiting
    on it wakes up to a closed connection."""
    with suppress(Exception):
        duplicate = socket.socket(fileno=os.dup(conn.pgconn.socket))
        try:
            duplicate.shutdown(socket.SHUT_RDWR)
        finally:
            duplicate.close()
