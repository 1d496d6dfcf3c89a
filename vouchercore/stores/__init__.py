"""Stores: where a voucher book lives. ``open_store`` turns a URL or object into a store."""

from __future__ import annotations

from vouchercore.domain.values import free_text_problem
from vouchercore.errors import InvalidPayload
from vouchercore.ports import AnyStore
from vouchercore.stores.memory import MemoryStore
from vouchercore.stores.sqlite import SQLiteStore

__all__ = ["MAX_URL_LENGTH", "MemoryStore", "SQLiteStore", "open_store"]

#: The longest store URL :func:`open_store` takes.
MAX_URL_LENGTH = 4_096


def open_store(store: str | AnyStore) -> tuple[AnyStore, bool]:
    """The store for *store* and whether the caller owns it (and must close it).

    Accepts ``"memory://"``, ``"sqlite:///path/to.db"``, ``"postgresql://…"`` or a store
    object (anything with ``begin`` and ``commit``).

    Raises:
        InvalidPayload: an unknown URL scheme, a URL longer than :data:`MAX_URL_LENGTH`
            characters or holding NUL or a lone surrogate, a bad option (a store's own
            ``from_url`` says which: a number that is not finite or out of range …), or an
            object that is not a store.
    """
    if isinstance(store, str):
        problem = free_text_problem(store, MAX_URL_LENGTH)
        if problem is not None:
            raise InvalidPayload(f"the store URL {problem}")
        scheme = store.split("://", 1)[0].lower() if "://" in store else store.lower()
        if scheme == "memory":
            return MemoryStore(), True
        if scheme == "sqlite":
            return SQLiteStore.from_url(store), True
        if scheme in ("postgresql", "postgres"):
            # imported on demand: psycopg is the optional "postgres" extra
            from vouchercore.stores.postgres import PostgresStore  # noqa: PLC0415

            return PostgresStore.from_url(store), True
        raise InvalidPayload(
            f"unknown store {store.split('://', 1)[0]!r}: use 'memory://', "
            "'sqlite:///path/to.db' or 'postgresql://…'"
        )
    if all(hasattr(store, name) for name in ("begin", "commit", "abort", "insert_voucher")):
        return store, False
    raise InvalidPayload(f"store must be a URL or a store object, got {type(store).__name__}")
