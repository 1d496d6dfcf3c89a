"""Shared stores for the cross-process tests: a SQLite file, or a fresh PostgreSQL schema.

PostgreSQL runs when ``VOUCHERCORE_TEST_POSTGRES_DSN`` is set (CI sets it) and the
``PostgresStore`` can be imported; otherwise those variants skip and say why. Each PostgreSQL
test gets its own schema, dropped afterwards.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes.workers import StoreSpec

DSN_VARIABLE = "VOUCHERCORE_TEST_POSTGRES_DSN"


def _postgres_spec() -> Iterator[StoreSpec]:
    dsn = os.environ.get(DSN_VARIABLE)
    if not dsn:
        pytest.skip(f"{DSN_VARIABLE} is not set: no PostgreSQL server to test against")
    try:
        import psycopg  # noqa: PLC0415

        from vouchercore.stores.postgres import PostgresStore  # noqa: PLC0415, F401
    except ImportError as error:
        pytest.skip(f"the PostgreSQL store cannot be imported: {error}")
    schema = f"vc_processes_{secrets.token_hex(6)}"
    try:
        yield ("postgres", dsn, schema)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _spec(kind: str, tmp_path: Path) -> Iterator[StoreSpec]:
    if kind == "sqlite":
        yield ("sqlite", str(tmp_path / "vouchers.db"))  # synchronous=FULL, the default
    elif kind == "sqlite-normal":
        yield ("sqlite", str(tmp_path / "vouchers.db"), "NORMAL")
    else:
        yield from _postgres_spec()


@pytest.fixture(params=["sqlite", "postgres"])
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreSpec]:
    """Where the processes meet: a SQLite file (synchronous=FULL) or a PostgreSQL schema."""
    yield from _spec(request.param, tmp_path)


@pytest.fixture(params=["sqlite", "sqlite-normal", "postgres"])
def crash_store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreSpec]:
    """As :func:`store_spec`, plus SQLite with ``synchronous=NORMAL``: a SIGKILL (unlike a
    power cut) loses nothing committed even then — the WAL is in the OS's page cache."""
    yield from _spec(request.param, tmp_path)
