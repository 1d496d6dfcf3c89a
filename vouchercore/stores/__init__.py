"""Stores: where a voucher book lives. ``open_store`` turns a URL or object into a store."""

from __future__ import annotations

from vouchercore.errors import InvalidPayload
from vouchercore.ports import AnyStore
from vouchercore.stores.memory import MemoryStore

__all__ = ["MemoryStore", "open_store"]


def open_store(store: str | AnyStore) -> tuple[AnyStore, bool]:
    """The store for *store* and whether the caller owns it (and must close it).

    Accepts ``"memory://"`` or a store object (anything with ``begin`` and ``commit``).

    Raises:
        InvalidPayload: an unknown URL scheme or an object that is not a store.
    """
    if isinstance(store, str):
        scheme = store.split("://", 1)[0].lower() if "://" in store else store.lower()
        if scheme == "memory":
            return MemoryStore(), True
        raise InvalidPayload(
            f"unknown store {store.split('://', 1)[0]!r}: this version supports 'memory://'"
        )
    if all(hasattr(store, name) for name in ("begin", "commit", "abort", "insert_voucher")):
        return store, False
    raise InvalidPayload(f"store must be a URL or a store object, got {type(store).__name__}")
