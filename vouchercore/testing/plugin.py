"""The pytest plugin of vouchercore's storage contract suite: which stores it runs on.

The contract suite (:mod:`vouchercore.testing.contract`) is every behaviour test of the engine,
written once against the ``engine`` fixture and run on every selected store: each test gets a
fresh, empty store of its own (a new SQLite file, a new PostgreSQL schema dropped afterwards).

Selecting stores, first match wins:

1. ``--vouchercore-store=SPEC`` (repeatable), when this plugin is loaded (``-p
   vouchercore.testing.plugin``; vouchercore's own ``pyproject.toml`` loads it);
2. ``VOUCHERCORE_TEST_STORE=SPEC[,SPEC…]`` in the environment;
3. ``memory``, ``sqlite`` and ``postgres``. The ``postgres`` runs need
   ``VOUCHERCORE_TEST_POSTGRES_DSN`` (a server where the tests may create and drop schemas)
   and the ``postgres`` extra; without them they are skipped, with the reason.

A SPEC is ``memory``, ``sqlite``, ``postgres``, a ``postgresql://`` DSN, or
``package.module:factory`` — your own store. ``factory(directory)`` gets a scratch directory
and returns a new, empty store (closed after the test) or a context manager yielding one
(exited after the test); see :mod:`vouchercore.testing.stores`. For example::

    # mypackage/teststores.py
    import contextlib
    from mypackage import RedisStore

    @contextlib.contextmanager
    def fresh_store(directory):
        store = RedisStore("redis://localhost/15")
        store.flush()
        try:
            yield store
        finally:
            store.close()

    $ pytest -p vouchercore.testing.plugin --pyargs vouchercore.testing.contract \\
          --vouchercore-store=mypackage.teststores:fresh_store
    $ VOUCHERCORE_TEST_STORE=mypackage.teststores:fresh_store \\
          pytest --pyargs vouchercore.testing.contract

A store passes when every test passes on it: results, errors, ids (seeded), instants and logs
exactly as on the in-memory store. Tests are named ``test_…[SPEC]``: ``-k sqlite`` picks one.
"""

from __future__ import annotations

import os
from typing import Final

import pytest

from vouchercore.testing.stores import BUILT_IN_STORES

__all__ = ["OPTION", "STORE_VARIABLE", "pytest_addoption", "selected_stores"]

#: The command-line option naming a store to run the contract suite on.
OPTION: Final = "--vouchercore-store"
#: The environment variable doing the same (comma-separated specs).
STORE_VARIABLE: Final = "VOUCHERCORE_TEST_STORE"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register ``--vouchercore-store``."""
    parser.getgroup("vouchercore").addoption(
        OPTION,
        action="append",
        dest="vouchercore_store",
        default=None,
        metavar="SPEC",
        help=(
            "run vouchercore's contract suite on this store: memory, sqlite, postgres, "
            "a postgresql:// DSN or package.module:factory (repeatable; default: "
            f"${STORE_VARIABLE} or {','.join(BUILT_IN_STORES)})"
        ),
    )


def selected_stores(config: pytest.Config) -> list[str]:
    """The store specs the contract suite runs on (see the module docstring)."""
    given: list[str] | None = config.getoption("vouchercore_store", default=None)
    if given:
        return [spec for value in given for spec in value.split(",") if spec.strip()]
    from_env = os.environ.get(STORE_VARIABLE, "")
    specs = [spec.strip() for spec in from_env.split(",") if spec.strip()]
    return specs or list(BUILT_IN_STORES)
