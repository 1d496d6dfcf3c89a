"""Stores: where a voucher book lives. ``open_store`` turns a URL or object into a store."""

from __future__ import annotations

from vouchercore.errors import InvalidPayload
from vouchercore.ports import AnyStore
from vouchercore.stores.memory import MemoryStore
from vouchercore.stores.sqlite import SQLiteStore

__all__ = ["MemoryStore", "SQLiteStore", "open_store"]


def open_store(store: str | AnyStore) -> tuple[AnyStore, bool]:
    """The store for *store* and whether the caller owns it (and must close it).

    Accepts ``"memory://"``, ``"sqlite:///path/to.db"``, ``"postgresql://…"`` or a store
    object (anything with ``begin`` and ``commit``).

    Raises:
        InvalidPayload: an unknown URL scheme or an object that is not a store.
    """
    if isinstance(store, str):
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
