"""Fresh, empty stores for tests: one per call, cleaned up when its context exits.

A *store factory* is a callable ``factory(directory) -> context manager yielding a store``:
*directory* is a scratch directory the store may use (the test's ``tmp_path``); the store must
be empty, must not be shared with any other store the factory made, and is closed (and its
data removed, where that applies) when the context exits.

:func:`store_factory` resolves the names the contract suite accepts:

* ``memory`` — a :class:`~vouchercore.stores.memory.MemoryStore`;
* ``sqlite`` — a :class:`~vouchercore.stores.sqlite.SQLiteStore` in a new file under *directory*;
* ``postgres`` — a :class:`~vouchercore.stores.postgres.PostgresStore` in a new schema on the
  server named by ``VOUCHERCORE_TEST_POSTGRES_DSN``, dropped afterwards;
* ``postgresql://…`` — the same on that server;
* ``package.module:callable`` — your own store factory (see above). A callable that returns a
  store rather than a context manager is accepted too: the store is closed afterwards.

Nothing here imports pytest; the contract suite's fixtures (``vouchercore.testing.contract``)
and the differential stateful test build on it.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Final

from vouchercore.ports import AnyStore
from vouchercore.stores.memory import MemoryStore
from vouchercore.stores.sqlite import SQLiteStore

__all__ = [
    "BUILT_IN_STORES",
    "POSTGRES_DSN_VARIABLE",
    "StoreFactory",
    "StoreUnavailable",
    "memory_store",
    "postgres_store",
    "sqlite_store",
    "store_factory",
    "unavailable_reason",
]

#: The environment variable naming the PostgreSQL server the tests may create schemas on.
POSTGRES_DSN_VARIABLE: Final = "VOUCHERCORE_TEST_POSTGRES_DSN"

#: The stores the contract suite runs on unless told otherwise.
BUILT_IN_STORES: Final = ("memory", "sqlite", "postgres")

StoreFactory = Callable[[Path], AbstractContextManager[AnyStore]]


class StoreUnavailable(Exception):
    """The store cannot be made here (no server configured, driver or store not installed).

    Test fixtures turn it into a skip with this message as the reason.
    """


@contextlib.contextmanager
def memory_store(directory: Path) -> Iterator[AnyStore]:
    """A new in-memory store (*directory* is not used)."""
    del directory
    store = MemoryStore()
    try:
        yield store
    finally:
        store.close()


@contextlib.contextmanager
def sqlite_store(directory: Path) -> Iterator[AnyStore]:
    """A new SQLite store in a file of its own under *directory* (left for the caller to
    remove with the directory)."""
    path = Path(directory) / f"vouchercore-{secrets.token_hex(6)}.db"
    store = SQLiteStore(path)
    try:
        yield store
    finally:
        store.close()


def _postgres_store_class() -> Any:
    try:  # by name: the module needs the optional "postgres" extra
        module = importlib.import_module("vouchercore.stores.postgres")
    except ImportError as error:
        raise StoreUnavailable(f"PostgresStore is not available: {error}") from error
    return module.PostgresStore


_drop_connections: dict[str, Any] = {}


def _drop_schema(dsn: str, schema: str) -> None:
    """Drop *schema* on one connection per server, kept for the next drop (closed at exit)."""
    import psycopg  # noqa: PLC0415  (the optional "postgres" extra)
    from psycopg import sql  # noqa: PLC0415

    conn = _drop_connections.get(dsn)
    if conn is None or conn.closed:
        conn = _drop_connections[dsn] = psycopg.connect(dsn, autocommit=True)
        atexit.register(conn.close)
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _without_commit_flush(dsn: str) -> str:
    """*dsn* with ``synchronous_commit=off`` for its sessions (unless it sets options itself):
    a commit returns before its WAL record is flushed. Nothing a test can observe changes —
    only what a server crash would keep — and schema setup is several times faster."""
    if "options" in dsn:
        return dsn
    if "://" in dsn:
        return f"{dsn}{'&' if '?' in dsn else '?'}options=-c%20synchronous_commit%3Doff"
    return f"{dsn} options='-c synchronous_commit=off'"


def postgres_store(dsn: str | None = None) -> StoreFactory:
    """A factory of PostgreSQL stores, each in a new schema ``vctest_<random>`` dropped when its
    context exits. Their sessions run with ``synchronous_commit=off`` (see
    :func:`_without_commit_flush`) unless the DSN sets ``options``.

    Args:
        dsn: the server (default: ``$VOUCHERCORE_TEST_POSTGRES_DSN``, read when a store is made).

    The factory raises :class:`StoreUnavailable` when no DSN is configured or PostgresStore
    (or its driver) is not installed. A server that is configured but unreachable is an error,
    not a skip.
    """

    @contextlib.contextmanager
    def make(directory: Path) -> Iterator[AnyStore]:
        del directory
        server = dsn if dsn is not None else os.environ.get(POSTGRES_DSN_VARIABLE)
        if not server:
            raise StoreUnavailable(
                f"{POSTGRES_DSN_VARIABLE} is not set: no PostgreSQL server to test against"
            )
        store_class = _postgres_store_class()
        server = _without_commit_flush(server)
        schema = f"vctest_{secrets.token_hex(8)}"
        try:
            store = store_class(server, schema=schema)
            try:
                yield store
            finally:
                store.close()
        finally:
            _drop_schema(server, schema)

    return make


def unavailable_reason(spec: str) -> str | None:
    """Why stores of *spec* cannot be made here (``None``: they can, as far as can be told
    without connecting)."""
    name = spec.strip()
    if name in ("postgres", "postgresql") or name.startswith(("postgresql://", "postgres://")):
        if name in ("postgres", "postgresql") and not os.environ.get(POSTGRES_DSN_VARIABLE):
            return f"{POSTGRES_DSN_VARIABLE} is not set: no PostgreSQL server to test against"
        try:
            _postgres_store_class()
        except StoreUnavailable as unavailable:
            return str(unavailable)
    return None


def _imported_factory(spec: str) -> StoreFactory:
    module_name, _, attribute = spec.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{spec!r} is not callable")
    made: Callable[[Path], Any] = target

    @contextlib.contextmanager
    def make(directory: Path) -> Iterator[AnyStore]:
        result = made(directory)
        if hasattr(result, "__enter__") and not hasattr(result, "begin"):
            with result as store:
                yield store
            return
        try:
            yield result
        finally:
            result.close()

    return make


def store_factory(spec: str) -> StoreFactory:
    """The store factory *spec* names (see the module docstring for the accepted forms).

    Raises:
        ValueError: *spec* is none of the accepted forms.
        ImportError, AttributeError: a ``module:callable`` that cannot be found.
    """
    name = spec.strip()
    if name == "memory":
        return memory_store
    if name == "sqlite":
        return sqlite_store
    if name in ("postgres", "postgresql"):
        return postgres_store()
    if name.startswith(("postgresql://", "postgres://")):
        return postgres_store(name)
    if ":" in name and "://" not in name:
        return _imported_factory(name)
    raise ValueError(
        f"unknown store {spec!r}: use memory, sqlite, postgres, a postgresql:// DSN "
        "or package.module:factory"
    )
