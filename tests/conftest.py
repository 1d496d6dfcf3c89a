"""Shared fixtures and Hypothesis profiles.

Profiles: ``dev`` (default, quick), ``ci`` (more examples; ``.ci/run`` selects it through
``HYPOTHESIS_PROFILE=ci``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, settings

from vouchercore import Engine, FakeClock

settings.register_profile("dev", max_examples=40, deadline=None)
settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at 2026-03-01T12:00:00Z."""
    return FakeClock(START)


@pytest.fixture
def engine(clock: FakeClock) -> Engine:
    """An in-memory engine on the fake clock with seeded ids."""
    return Engine(clock=clock, seed=1234)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A store URL on a fresh schema of the test server (``VOUCHERCORE_TEST_POSTGRES_DSN``),
    dropped afterwards; skips the test when no server is named."""
    dsn = os.environ.get("VOUCHERCORE_TEST_POSTGRES_DSN")
    if not dsn:
        pytest.skip("VOUCHERCORE_TEST_POSTGRES_DSN is not set")
    psycopg = pytest.importorskip("psycopg")
    pytest.importorskip("vouchercore.stores.postgres")
    schema = f"vc_sim_{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in dsn else "?"
    yield f"{dsn}{separator}schema={schema}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
