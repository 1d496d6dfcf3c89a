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
* **Fork.** A forked child never touches its parent's connections: it opens a pool of its own
  on first use (a single connection cannot cross ``fork``).
* **Errors** name the database's address (host, port, database), never its password.
"""

from __future__ import annotations

import os
import random
import threading
import time
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
    """A connection taken (from the pool or the one connection) that must be given back."""

    __slots__ = ("conn", "done", "held", "pool", "restore_autocommit")

    def __init__(self, conn: Conn, pool: ConnectionPool[Any] | None) -> None:
        self.conn = conn
        self.pool = pool
        self.restore_autocommit = False
        self.done = False
        self.held: list[Lease] | None = None  # the opening thread's open units, while open


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
        ``BEGIN``/``COMMIT`` itself, pipelined), ``TimeZone`` UTC, a connect timeout."""
        options = f"{params.get('options') or ''} -c TimeZone=UTC".strip()
        kwargs: dict[str, Any] = {"autocommit": True, "options": options}
        if not params.get("connect_timeout"):
            kwargs["connect_timeout"] = max(2, round(self.timeout))
        if not params.get("application_name"):
            kwargs["application_name"] = "vouchercore"
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
        """Roll back the connection's transaction, if it has one (errors ignored: a broken
        connection is discarded when given back)."""
        with suppress(psycopg.Error):
            if not conn.closed and conn.info.transaction_status != _IDLE:
                conn.execute("ROLLBACK")

    @staticmethod
    def end_quietly(conn: Conn) -> None:
        """End a transaction that wrote nothing (a unit's writes are only ever sent with its
        ``COMMIT``): ``COMMIT`` without waiting for the WAL flush its row lock would cost. Not
        ``ROLLBACK``: psycopg drops every prepared statement of a connection that rolls back.
        A transaction in error is rolled back."""
        with suppress(psycopg.Error):
            if conn.closed:
                return
            status = conn.info.transaction_status
            if status == _INTRANS:
                with conn.pipeline():
                    conn.execute(NO_FLUSH)
                    conn.execute("COMMIT")
            elif status != _IDLE:
                conn.execute("ROLLBACK")

    def _after_fork(self) -> None:
        """In a forked child: forget the parent's connections, open a pool of our own."""
        self._pid = os.getpid()
        self._local = threading.local()
        self._connection_lock = threading.Lock()
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

    def lease(self) -> Lease:
        """A connection for one unit or read: from the pool (waiting up to *timeout*) or the
        one connection (waiting for its other user)."""
        if self._closed:
            raise StorageError(f"PostgreSQL store {self.address} is closed")
        if self._pid != os.getpid():
            self._after_fork()
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
        conn = lease.conn
        if not conn.autocommit:  # a connection handed to us: the store writes BEGIN itself
            try:
                conn.autocommit = True
            except psycopg.Error as error:
                self.release(lease, rollback=True)
                raise self.fail("connect", error) from error
            lease.restore_autocommit = True
        return lease

    def release(self, lease: Lease, *, rollback: bool = False, quietly: bool = False) -> None:
        """Give the connection back, first rolling back or quietly ending (see
        :meth:`end_quietly`) its transaction if asked; idempotent."""
        if lease.done:
            return
        lease.done = True
        conn = lease.conn
        if rollback:
            self.rollback(conn)
        elif quietly:
            self.end_quietly(conn)
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
                pool.putconn(conn)  # a broken connection is discarded and replaced by the pool
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
                return lease, work(lease)
            except psycopg.Error as error:
                broken = lease.conn.closed
                self.release(lease, rollback=True)
                retry = (broken and pooled) or error.sqlstate in _RETRYABLE
                if attempt >= self.retries or not retry:
                    raise self.fail(action, error) from error
            except BaseException:
                self.release(lease, rollback=True)
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
            try:
                return held[-1].conn.execute(sql, params).fetchall()
            except psycopg.Error as error:
                raise self.fail("read", error) from error
        lease, rows = self.attempt("read", lambda lease: lease.conn.execute(sql, params).fetchall())
        self.release(lease)
        return rows

    def close(self) -> None:
        """Close our own pool (in this process); a pool or connection handed to us is left
        open. Idempotent."""
        self._closed = True
        pool, self._pool = self._pool, None
        if self._owns_pool and pool is not None and self._pid == os.getpid():
            pool.close()
