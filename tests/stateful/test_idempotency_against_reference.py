"""Random call sequences with idempotency keys, checked against a small independent reference.

The reference is a dict ``key -> (request, result, created_at)`` kept from README's rules for
``idempotency_key=`` alone (nothing imported from ``vouchercore.domain``):

- a key is live while ``now < created_at + retention``;
- a live key with the same request returns the recorded result and changes nothing;
- a live key with another request (argument, voucher or operation) is
  ``IdempotencyKeyReused`` and changes nothing;
- otherwise the call acts; a success records ``(request, result, now)`` under the key, a
  failure records nothing;
- ``expire_idempotency_keys()`` purges the keys that are no longer live and says how many.

The machine mixes keyed redemptions, rollbacks and balance updates with retries of a recorded
key (same request, or one field changed), unkeyed calls, clock moves (to just before and exactly
at a retention boundary, among others) and purges. After every step: the store holds exactly
the redemptions and transactions of the calls that acted (each keyed effect once, never
twice), one FAILED redemption per refused redemption that acted, and ``audit().ok``.

Runs on memory, and with fewer examples on SQLite.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from vouchercore import (
    Engine,
    FakeClock,
    IdempotencyKeyReused,
    RedemptionStatus,
    SQLiteStore,
    VoucherError,
)
from vouchercore.testing import state_snapshot

pytestmark = pytest.mark.slow

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RETENTION_US = 60 * 60 * 1_000_000  # one hour
KEYS = tuple(f"key-{i}" for i in range(6))
GIFTS = ("G1", "G2")
LOYALTY = "L1"
DISCOUNT = "D1"

# a request, as plain data: every argument of the call
Request = tuple[Any, ...]


@dataclass
class Recorded:
    """What the reference remembers about a key."""

    request: Request
    result: Any
    created_us: int
    #: an expired entry on which a failed call acted anew: the store may or may not still
    #: hold its (expired) row, so a purge may or may not count it
    maybe_gone: bool = False


def _redeem_request(code: str, amount: int, order_id: str | None, tag: int | None) -> Request:
    return ("redeem", code, amount, order_id, None if tag is None else {"tag": tag})


redeem_requests = st.builds(
    _redeem_request,
    st.sampled_from((*GIFTS, LOYALTY, DISCOUNT)),
    st.integers(1, 1_500),
    st.sampled_from((None, "o-1", "o-2")),
    st.sampled_from((None, 1, 2)),
)
balance_requests = st.builds(
    lambda code, amount, reason: ("balance", code, amount, reason),
    st.sampled_from((*GIFTS, LOYALTY)),
    st.integers(-800, 1_200).filter(lambda n: n != 0),
    st.sampled_from((None, "top-up", "fix")),
)
CLOCK_STEPS = (  # mostly within a retention: keys live long enough to be retried
    1,
    1_000_000,
    60 * 1_000_000,
    10 * 60 * 1_000_000,
    RETENTION_US - 1,
    RETENTION_US,
)


class IdempotencyAgainstReference(RuleBasedStateMachine):
    """One engine, a reference of keys, and the effects the calls that acted must have left."""

    def make_store(self) -> Any:
        return "memory://"

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(START)
        self.engine = Engine(
            self.make_store(),
            clock=self.clock,
            seed=7,
            idempotency_retention=timedelta(microseconds=RETENTION_US),
        )
        for code in GIFTS:
            self.engine.create_voucher(code, gift={"amount": 5_000})
        self.engine.create_voucher(LOYALTY, loyalty_card={"points": 3_000})
        self.engine.create_voucher(DISCOUNT, discount={"type": "AMOUNT", "amount_off": 300})
        self.keys: dict[str, Recorded] = {}
        self.redemption_ids: list[str] = []  # succeeded redemptions, to roll back
        self.expected_redemptions: set[str] = set()  # non-FAILED redemptions that acted
        self.expected_transactions: set[str] = set()
        self.expected_failed = 0  # FAILED redemptions: refused redemptions that acted
        self.replays = self.reuses = self.acted = 0

    def teardown(self) -> None:
        # what the example exercised (``pytest --hypothesis-show-statistics``)
        for name, count in (("replays", self.replays), ("reuses", self.reuses)):
            event(f"{name}: {'none' if count == 0 else 'some'}")
        self.engine.close()

    # --- calls ------------------------------------------------------------------------------

    def _execute(self, request: Request, key: str | None) -> Any:
        kind = request[0]
        if kind == "redeem":
            _, code, amount, order_id, metadata = request
            ask: dict[str, Any] = {
                LOYALTY: {"points": amount},
                DISCOUNT: {"order_amount": amount * 10},
            }.get(code, {"credits": amount})
            return self.engine.redeem_voucher(
                code, order_id=order_id, metadata=metadata, idempotency_key=key, **ask
            )
        if kind == "balance":
            _, code, amount, reason = request
            return self.engine.update_voucher_balance(
                code, amount, reason=reason, idempotency_key=key
            )
        _, redemption_id, reason = request
        return self.engine.rollback_redemption(redemption_id, reason=reason, idempotency_key=key)

    def _acted(self, request: Request, outcome: Any) -> None:
        """Book the effect of a call that acted and succeeded."""
        self.acted += 1
        kind = request[0]
        if kind == "redeem":
            assert outcome.status is RedemptionStatus.SUCCEEDED
            assert outcome.id not in self.expected_redemptions
            self.expected_redemptions.add(outcome.id)
            self.redemption_ids.append(outcome.id)
        if outcome.transaction_id is not None:
            assert outcome.transaction_id not in self.expected_transactions
            self.expected_transactions.add(outcome.transaction_id)

    def _refused(self, request: Request, error: VoucherError) -> None:
        assert not isinstance(error, IdempotencyKeyReused), (request, error)
        if request[0] == "redeem":
            self.expected_failed += 1

    def call(self, request: Request, key: str | None) -> None:
        now = self.clock.now_us()
        recorded = None if key is None else self.keys.get(key)
        if recorded is not None and now < recorded.created_us + RETENTION_US:
            before = state_snapshot(self.engine, include_failed=True)
            if recorded.request == request:
                assert self._execute(request, key) == recorded.result
                self.replays += 1
            else:
                with pytest.raises(IdempotencyKeyReused):
                    self._execute(request, key)
                self.reuses += 1
            assert state_snapshot(self.engine, include_failed=True) == before
            return
        try:
            outcome = self._execute(request, key)
        except VoucherError as error:
            self._refused(request, error)
            if recorded is not None:
                recorded.maybe_gone = True
            return
        self._acted(request, outcome)
        if key is not None:
            self.keys[key] = Recorded(request, outcome, now)

    # --- rules ------------------------------------------------------------------------------

    @rule(request=redeem_requests, key=st.sampled_from((None, *KEYS)))
    def redeem(self, request: Request, key: str | None) -> None:
        self.call(request, key)

    @rule(request=balance_requests, key=st.sampled_from((None, *KEYS)))
    def balance(self, request: Request, key: str | None) -> None:
        self.call(request, key)

    @precondition(lambda self: bool(self.redemption_ids))
    @rule(
        data=st.data(),
        reason=st.sampled_from((None, "returned", "damaged")),
        key=st.sampled_from((None, *KEYS)),
    )
    def rollback(self, data: st.DataObject, reason: str | None, key: str | None) -> None:
        redemption_id = data.draw(st.sampled_from(self.redemption_ids))
        self.call(("rollback", redemption_id, reason), key)

    def _retry_candidates(self) -> list[str]:
        """Mostly live keys (a retry usually comes soon), expired ones when none is live."""
        now = self.clock.now_us()
        live = [k for k, r in sorted(self.keys.items()) if now < r.created_us + RETENTION_US]
        return live or sorted(self.keys)

    @precondition(lambda self: bool(self.keys))
    @rule(data=st.data())
    def retry_same(self, data: st.DataObject) -> None:
        """A till retries a call it made (the answer was lost): same key, same request."""
        key = data.draw(st.sampled_from(self._retry_candidates()))
        self.call(self.keys[key].request, key)

    @precondition(lambda self: bool(self.keys))
    @rule(data=st.data(), change=st.integers(0, 3))
    def retry_changed(self, data: st.DataObject, change: int) -> None:
        """Same key, a request with one thing changed (or another operation)."""
        key = data.draw(st.sampled_from(self._retry_candidates()))
        request = list(self.keys[key].request)
        if change == 0:  # another operation on the same thing
            if request[0] == "balance":
                request = ["redeem", request[1], abs(request[2]), None, None]
            elif request[0] == "redeem" and request[1] != DISCOUNT:
                request = ["balance", request[1], request[2], None]
            else:
                request = ["balance", GIFTS[0], 1, None]
        elif change == 1 and request[0] in ("redeem", "balance"):  # another amount (never 0)
            request[2] += 1 if request[2] != -1 else 2
        elif change == 2 and request[0] in ("redeem", "balance"):  # another voucher
            request[1] = GIFTS[1] if request[1] == GIFTS[0] else GIFTS[0]
        elif request[0] == "rollback":  # another reason
            request[2] = "other" if request[2] != "other" else None
        else:  # another order id (redeem) or reason (balance)
            request[3] = "changed" if request[3] != "changed" else None
        changed = tuple(request)
        assert changed != self.keys[key].request
        self.call(changed, key)

    @rule(step=st.sampled_from(CLOCK_STEPS))
    def advance(self, step: int) -> None:
        self.clock.advance_us(step)

    @precondition(lambda self: bool(self.keys))
    @rule(data=st.data(), offset=st.sampled_from((-1, 0)))
    def move_to_a_retention_boundary(self, data: st.DataObject, offset: int) -> None:
        """Jump to the last instant a key is kept, or to the first it is forgotten."""
        key = data.draw(st.sampled_from(sorted(self.keys)))
        target = self.keys[key].created_us + RETENTION_US + offset
        if target > self.clock.now_us():
            self.clock.advance_us(target - self.clock.now_us())

    @rule()
    def purge(self) -> None:
        now = self.clock.now_us()
        gone = {k: r for k, r in self.keys.items() if now >= r.created_us + RETENTION_US}
        certain = sum(1 for r in gone.values() if not r.maybe_gone)
        purged = self.engine.expire_idempotency_keys()
        assert certain <= purged <= len(gone), (purged, gone)
        for key in gone:
            del self.keys[key]
        assert self.engine.expire_idempotency_keys() == 0

    # --- invariants -------------------------------------------------------------------------

    @invariant()
    def the_store_holds_exactly_the_effects_of_the_calls_that_acted(self) -> None:
        redemptions = [
            r for code in (*GIFTS, LOYALTY, DISCOUNT) for r in self.engine.list_redemptions(code)
        ]
        succeeded = [r.id for r in redemptions if r.status is not RedemptionStatus.FAILED]
        assert len(succeeded) == len(set(succeeded))
        assert set(succeeded) == self.expected_redemptions
        failed = [r for r in redemptions if r.status is RedemptionStatus.FAILED]
        assert len(failed) == self.expected_failed
        transactions: list[str] = []
        for code in (*GIFTS, LOYALTY):
            cursor = None
            while True:
                page = self.engine.list_voucher_transactions(
                    code, limit=100, order="id", starting_after_id=cursor
                )
                transactions.extend(t.id for t in page.data)
                if not page.has_more:
                    break
                cursor = page.more_starting_after
        assert len(transactions) == len(set(transactions))
        assert set(transactions) == self.expected_transactions

    @invariant()
    def audit_is_clean(self) -> None:
        report = self.engine.audit()
        assert report.ok, str(report)


#: the profile's example count (``dev`` 40, ``ci`` 200)
DEFAULT_EXAMPLES = settings().max_examples

IdempotencyAgainstReference.TestCase.settings = settings(
    max_examples=max(10, DEFAULT_EXAMPLES // 2), stateful_step_count=50
)
TestIdempotencyAgainstReference = IdempotencyAgainstReference.TestCase


class IdempotencyAgainstReferenceOnSQLite(IdempotencyAgainstReference):
    """The same machine on a SQLite file (one per example)."""

    def make_store(self) -> Any:
        self.directory = Path(tempfile.mkdtemp(prefix="vouchercore-idempotency-"))
        return SQLiteStore(self.directory / "book.db")

    def teardown(self) -> None:
        super().teardown()
        self.engine.store.close()
        shutil.rmtree(self.directory, ignore_errors=True)


IdempotencyAgainstReferenceOnSQLite.TestCase.settings = settings(
    max_examples=max(5, DEFAULT_EXAMPLES // 8), stateful_step_count=30
)
TestIdempotencyAgainstReferenceOnSQLite = IdempotencyAgainstReferenceOnSQLite.TestCase
