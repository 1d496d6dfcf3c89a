"""Differential mode: the same random steps on every store, in lockstep, must give the same answers.

:class:`StoresAgree` is the stateful machine of ``test_engine_against_model.py`` (its rules,
strategies and README model, unchanged), with its engine replaced by a :class:`Lockstep` of
engines on a :class:`~vouchercore.MemoryStore`, a :class:`~vouchercore.SQLiteStore` (a new file
per example) and, when ``VOUCHERCORE_TEST_POSTGRES_DSN`` is set, a ``PostgresStore`` (a new
schema per example, dropped after it). All engines read one :class:`~vouchercore.FakeClock` and
generate ids from the same seed. Every call is made on each engine in turn and must give an
equal result — the same values, ids, session keys and instants — or an equal error; after every
step every engine's whole observable state (:func:`~vouchercore.testing.state_snapshot`, FAILED
redemptions included: transaction ids and logs, sessions, redemptions) and the parent of every
stacked redemption must be equal, and every engine's audit clean. The engines share the
machine's small stacking rules (``STACKING``). The model's own checks still run: on the first
engine's answers to every call, and on the first engine's state after every step.

Examples are fewer than the in-memory machine's (each makes a SQLite file, and a PostgreSQL
schema): an eighth of the profile's ``max_examples`` (``dev`` 5, ``ci`` 25), 50 steps each.
:class:`LoyaltyCardsStoresAgree` does the same with the loyalty-cards-only machine.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis.stateful import invariant

from tests.stateful.test_engine_against_model import (
    STACKING,
    EngineAgainstModel,
    LoyaltyCardsAgainstModel,
)
from vouchercore import Engine, VoucherError
from vouchercore.testing import state_snapshot
from vouchercore.testing.stores import BUILT_IN_STORES, store_factory, unavailable_reason

pytestmark = pytest.mark.slow

SEED = 1234
#: The stores in the lockstep: the first one's answers are the ones the model checks.
STORES = tuple(name for name in BUILT_IN_STORES if unavailable_reason(name) is None)


class Lockstep:
    """Stands in for one :class:`Engine`: each method call is made on every engine, in order,
    and must return equal results or raise equal :class:`VoucherError` s; the first engine's
    result is returned (or its error raised)."""

    def __init__(self, engines: dict[str, Engine]) -> None:
        self.engines = engines

    def __getattr__(self, name: str) -> Callable[..., Any]:
        methods = {store: getattr(engine, name) for store, engine in self.engines.items()}

        def call(*args: Any, **kwargs: Any) -> Any:
            outcomes: dict[str, tuple[Any, VoucherError | None]] = {}
            for store, method in methods.items():
                try:
                    outcomes[store] = (method(*args, **kwargs), None)
                except VoucherError as error:
                    outcomes[store] = (None, error)
            (first, (result, error)), *others = outcomes.items()
            for store, (other_result, other_error) in others:
                if error is not None or other_error is not None:
                    got = None if other_error is None else other_error.as_dict()
                    expected = None if error is None else error.as_dict()
                    assert got == expected, (name, args, kwargs, first, expected, store, got)
                assert other_result == result, (name, args, kwargs, first, result, store)
            if error is not None:
                raise error
            return result

        return call


class StoresAgree(EngineAgainstModel):
    """The model machine, run on every store at once (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()  # the clock, the model (and an in-memory engine, replaced below)
        self._resources = contextlib.ExitStack()
        directory = Path(tempfile.mkdtemp(prefix="vouchercore-lockstep-"))
        self._resources.callback(shutil.rmtree, directory, ignore_errors=True)
        engines: dict[str, Engine] = {}
        for name in STORES:
            store = self._resources.enter_context(store_factory(name)(directory))
            engines[name] = Engine(store, clock=self.clock, seed=SEED, **STACKING)
        self.engines = engines
        self._stacks_compared: dict[str, str] = {}  # parent id: status, as last compared
        self.engine = Lockstep(engines)  # type: ignore[assignment]  # duck-typed stand-in

    def teardown(self) -> None:
        self._resources.close()

    @invariant()
    def engine_agrees_with_model(self) -> None:
        """The model's check, on the first store's engine only: the others must equal it
        (:meth:`stores_hold_the_same_state`), so reading them all again would add nothing."""
        lockstep = self.engine
        # Reading a loyalty card expires its due points, writing transactions: every store
        # must be read in the same order, or their transaction ids part ways.
        for code in sorted(self.model.vouchers):
            lockstep.get_voucher(code)
        self.engine = next(iter(self.engines.values()))
        try:
            super().engine_agrees_with_model()
        finally:
            self.engine = lockstep

    @invariant()
    def stores_hold_the_same_state(self) -> None:
        """Every store shows the same vouchers, sessions, redemptions, transactions, stacked
        redemptions' parents and ids, and passes its audit."""
        (first, engine), *others = self.engines.items()
        expected = state_snapshot(engine, include_failed=True)
        for name, other in others:
            assert state_snapshot(other, include_failed=True) == expected, (first, name)
        # the parents the model says were added or changed since the last step (the first
        # store's are compared with the model after every step)
        stacks = {p: parent.status for p, parent in self.model.parents.items()}
        changed = [p for p, status in stacks.items() if self._stacks_compared.get(p) != status]
        parents = [engine.get_parent_redemption(p) for p in changed]
        for name, other in others:
            assert [other.get_parent_redemption(p) for p in changed] == parents, (first, name)
        self._stacks_compared = stacks
        for name, each in self.engines.items():
            report = each.audit()
            assert report.ok, (name, str(report))


StoresAgree.TestCase.settings = settings(
    max_examples=max(5, settings.default.max_examples // 8), stateful_step_count=50
)
TestStoresAgree = StoresAgree.TestCase


class LoyaltyCardsStoresAgree(StoresAgree, LoyaltyCardsAgainstModel):
    """The loyalty-cards-only machine in lockstep on every store: point buckets, accruals,
    cancellations, transfers and expiry as each store keeps them."""


LoyaltyCardsStoresAgree.TestCase.settings = settings(
    max_examples=max(5, settings.default.max_examples // 8), stateful_step_count=50
)
TestLoyaltyCardsStoresAgree = LoyaltyCardsStoresAgree.TestCase


def test_postgres_is_in_the_lockstep() -> None:
    """Says, in the test report, whether PostgreSQL took part (it needs a server)."""
    reason = unavailable_reason("postgres")
    if reason is not None:
        pytest.skip(f"the lockstep ran on {', '.join(STORES)} only: {reason}")
    assert "postgres" in STORES
