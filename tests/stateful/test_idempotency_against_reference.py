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

The machine mixes keyed redemptions, rollbacks, balance updates (loyalty points with or
without ``expires_at``), point accruals, accrual cancellations (by transaction or order id) and
point transfers between two loyalty cards with retries of a recorded key (same request, or one
field changed: operation, amount, voucher, order, reason or expiry), retries of calls that
failed (same key and request: the retry may now succeed), unkeyed calls, clock moves (to just
before and exactly at a retention boundary, among others; points added with an expiry expire
on the way) and purges. After every step: the store holds exactly the redemptions and
transactions of the calls that acted (each keyed effect once, never twice), one FAILED
redemption per refused redemption that acted, and ``audit().ok``; and the log, replayed,
gives what the reference counted from the requests that acted: per card and transaction type,
how many and their sum, which rebuild every balance and total (less the points expired,
``POINTS_EXPIRATION`` being the one kind of transaction no call writes).

Runs on memory, and with fewer examples on SQLite and (when ``VOUCHERCORE_TEST_POSTGRES_DSN``
names a server) PostgreSQL.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections import Counter
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
    InvalidPayload,
    RedemptionStatus,
    SQLiteStore,
    VoucherError,
)
from vouchercore.testing import state_snapshot
from vouchercore.testing.stores import store_factory, unavailable_reason

pytestmark = pytest.mark.slow

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MINUTE_US = 60 * 1_000_000
RETENTION_US = 60 * MINUTE_US  # one hour
KEYS = tuple(f"key-{i}" for i in range(6))
GIFTS = ("G1", "G2")
LOYALTY = "L1"
LOYALTY_2 = "L2"
CARDS = (LOYALTY, LOYALTY_2)
DISCOUNT = "D1"
CODES = (*GIFTS, *CARDS, DISCOUNT)
OPENING = {GIFTS[0]: 5_000, GIFTS[1]: 5_000, LOYALTY: 3_000, LOYALTY_2: 3_000}
ORDERS = ("o-1", "o-2", "o-3")
#: the one kind of transaction no call writes: points expire by themselves
EXPIRATION = "POINTS_EXPIRATION"
CANCELLATION = "POINTS_CANCELLATION"
#: the types that raise a card's total (``gift.amount``, ``loyalty_card.points``)
TOTAL_RAISING = {"CREDITS_ADDITION", "POINTS_ADDITION", "POINTS_ACCRUAL", "POINTS_TRANSFER_IN"}


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


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
    st.sampled_from(CODES),
    st.integers(1, 1_500),
    st.sampled_from((None, "o-1", "o-2")),
    st.sampled_from((None, 1, 2)),
)
# An expiry is drawn as an offset from now (``None``: no expiry; 0: not after now, refused)
# and made an instant when the call is made: a retry repeats the instant.
EXPIRY_OFFSETS = (None, None, None, 0, 10 * MINUTE_US, 30 * MINUTE_US, 2 * RETENTION_US)
balance_requests = st.tuples(
    st.just("balance"),
    st.sampled_from((*GIFTS, *CARDS)),
    st.integers(-800, 1_200).filter(lambda n: n != 0),
    st.sampled_from((None, "top-up", "fix")),
    st.sampled_from(EXPIRY_OFFSETS),  # refused on a gift card or a removal
)
accrual_requests = st.tuples(
    st.just("accrue"),
    st.sampled_from((*CARDS, *CARDS, GIFTS[0])),  # a gift card: invalid_voucher
    st.integers(1, 500),
    st.sampled_from((None, *ORDERS)),
    st.sampled_from(EXPIRY_OFFSETS),
    st.sampled_from((None, "purchase")),
)
transfer_requests = st.tuples(
    st.just("transfer"),
    st.sampled_from(
        ((LOYALTY, LOYALTY_2),) * 3
        + ((LOYALTY_2, LOYALTY),) * 3
        + (
            (LOYALTY, LOYALTY),  # the same card: invalid_payload
            (GIFTS[0], LOYALTY),  # a gift card: invalid_voucher
            (LOYALTY_2, GIFTS[0]),
        )
    ),
    st.integers(1, 2_500),  # more than available: loyalty_card_points_exceeded
    st.sampled_from((None, "gift")),
).map(lambda r: (r[0], *r[1], *r[2:]))
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
            self.engine.create_voucher(code, gift={"amount": OPENING[code]})
        for code in CARDS:
            self.engine.create_voucher(code, loyalty_card={"points": OPENING[code]})
        self.engine.create_voucher(DISCOUNT, discount={"type": "AMOUNT", "amount_off": 300})
        self.keys: dict[str, Recorded] = {}
        self.redemption_ids: list[str] = []  # succeeded redemptions, to roll back
        self.expected_redemptions: set[str] = set()  # non-FAILED redemptions that acted
        self.expected_transactions: set[str] = set()
        self.expected_failed = 0  # FAILED redemptions: refused redemptions that acted
        self.replays = self.reuses = self.acted = self.retried_failures = 0
        self.partial_cancellations = 0
        # what the calls that acted must have written, counted from their requests:
        # (code, transaction type) -> how many, and their amounts summed
        self.counts: Counter[tuple[str, str]] = Counter()
        self.sums: Counter[tuple[str, str]] = Counter()
        self.redeemed: dict[str, Request] = {}  # redemption id -> its request
        self.accruals: list[tuple[str, str]] = []  # (code, transaction id) of accruals made
        self.failed: list[tuple[Request, str]] = []  # keyed calls that failed, to retry

    def teardown(self) -> None:
        # what the example exercised (``pytest --hypothesis-show-statistics``)
        for name, count in (
            ("replays", self.replays),
            ("reuses", self.reuses),
            ("failed calls retried", self.retried_failures),
            ("transfers", sum(n for (_, k), n in self.counts.items() if k.endswith("_OUT"))),
            ("cancellations", sum(n for (_, k), n in self.counts.items() if k == CANCELLATION)),
            ("partial cancellations", self.partial_cancellations),
        ):
            event(f"{name}: {'none' if count == 0 else 'some'}")
        self.engine.close()

    # --- calls ------------------------------------------------------------------------------

    def _execute(self, request: Request, key: str | None) -> Any:
        kind = request[0]
        if kind == "redeem":
            _, code, amount, order_id, metadata = request
            ask: dict[str, Any] = {
                LOYALTY: {"points": amount},
                LOYALTY_2: {"points": amount},
                DISCOUNT: {"order_amount": amount * 10},
            }.get(code, {"credits": amount})
            return self.engine.redeem_voucher(
                code, order_id=order_id, metadata=metadata, idempotency_key=key, **ask
            )
        if kind == "balance":
            _, code, amount, reason, expires_at = request
            return self.engine.update_voucher_balance(
                code,
                amount,
                reason=reason,
                expires_at=None if expires_at is None else from_us(expires_at),
                idempotency_key=key,
            )
        if kind == "accrue":
            _, code, points, order_id, expires_at, reason = request
            return self.engine.accrue_points(
                code,
                points,
                order_id=order_id,
                expires_at=None if expires_at is None else from_us(expires_at),
                reason=reason,
                idempotency_key=key,
            )
        if kind == "cancel":
            _, code, transaction_id, order_id, reason = request
            return self.engine.cancel_points_accrual(
                code,
                transaction_id=transaction_id,
                order_id=order_id,
                reason=reason,
                idempotency_key=key,
            )
        if kind == "transfer":
            _, source, destination, points, reason = request
            return self.engine.transfer_points(
                source, destination, points, reason=reason, idempotency_key=key
            )
        _, redemption_id, reason = request
        return self.engine.rollback_redemption(redemption_id, reason=reason, idempotency_key=key)

    def _book(self, code: str, kind: str, amount: int, times: int = 1) -> None:
        """A call that acted wrote *times* transactions of *kind* on *code*, summing *amount*."""
        self.counts[code, kind] += times
        self.sums[code, kind] += amount

    def _acted(self, request: Request, outcome: Any) -> None:
        """Book the effect of a call that acted and succeeded: its transactions, counted and
        summed from the request (the engine's answer only names them)."""
        self.acted += 1
        kind = request[0]
        written: list[str | None] = []
        if kind == "redeem":
            assert outcome.status is RedemptionStatus.SUCCEEDED
            assert outcome.id not in self.expected_redemptions
            self.expected_redemptions.add(outcome.id)
            self.redemption_ids.append(outcome.id)
            self.redeemed[outcome.id] = request
            code, amount = request[1], request[2]
            if code in GIFTS:
                self._book(code, "CREDITS_REDEMPTION", -amount)
            elif code in CARDS:
                self._book(code, "POINTS_REDEMPTION", -amount)
            written.append(outcome.transaction_id)
        elif kind == "rollback":
            _, code, amount, *_ = self.redeemed[request[1]]
            if code in GIFTS:
                self._book(code, "CREDITS_REFUND", amount)
            elif code in CARDS:
                self._book(code, "POINTS_REFUND", amount)
            written.append(outcome.transaction_id)
        elif kind == "balance":
            code, amount = request[1], request[2]
            unit = "CREDITS" if code in GIFTS else "POINTS"
            self._book(code, f"{unit}_{'ADDITION' if amount > 0 else 'REMOVAL'}", amount)
            written.append(outcome.transaction_id)
        elif kind == "accrue":
            self._book(request[1], "POINTS_ACCRUAL", request[2])
            self.accruals.append((request[1], outcome.id))
            written.append(outcome.id)
        elif kind == "cancel":  # what is taken back depends on the card: the answer says
            taken = outcome.cancelled
            self.partial_cancellations += taken < outcome.accrued
            assert outcome.accrued - taken == outcome.not_cancelled >= 0, outcome
            self._book(request[1], "POINTS_CANCELLATION", -taken, len(outcome.transactions))
            written += [t.id for t in outcome.transactions]
        else:  # transfer
            _, source, destination, points, _ = request
            self._book(source, "POINTS_TRANSFER_OUT", -points)
            self._book(destination, "POINTS_TRANSFER_IN", points)
            written += [outcome.source.id, outcome.destination.id]
        for transaction_id in written:
            if transaction_id is not None:  # a discount voucher's redemption writes none
                assert transaction_id not in self.expected_transactions
                self.expected_transactions.add(transaction_id)

    def _refused(self, request: Request, key: str | None, error: VoucherError) -> None:
        assert not isinstance(error, IdempotencyKeyReused), (request, error)
        if request[0] == "redeem" and request[1] in CODES:
            self.expected_failed += 1
        if key is not None:
            self.failed = [*self.failed[-7:], (request, key)]

    def call(self, request: Request, key: str | None) -> None:
        now = self.clock.now_us()
        if request[0] == "transfer" and request[1] == request[2]:
            # malformed (README "Validation"): raised before anything is read, the key included
            before = state_snapshot(self.engine, include_failed=True)
            with pytest.raises(InvalidPayload):
                self._execute(request, key)
            assert state_snapshot(self.engine, include_failed=True) == before
            return
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
            self._refused(request, key, error)
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

    def _at(self, request: Request, index: int) -> Request:
        """*request* with its expiry (an offset from now at *index*) made an instant."""
        offset = request[index]
        if offset is None:
            return request
        return (*request[:index], self.clock.now_us() + offset, *request[index + 1 :])

    @rule(request=balance_requests, key=st.sampled_from((None, *KEYS)))
    def balance(self, request: Request, key: str | None) -> None:
        self.call(self._at(request, 4), key)

    @rule(request=accrual_requests, key=st.sampled_from((None, *KEYS)))
    def accrue(self, request: Request, key: str | None) -> None:
        self.call(self._at(request, 4), key)

    @rule(request=transfer_requests, key=st.sampled_from((None, *KEYS)))
    def transfer(self, request: Request, key: str | None) -> None:
        self.call(request, key)

    @rule(
        data=st.data(),
        by=st.sampled_from(("transaction",) * 4 + ("order", "order", "unknown")),
        elsewhere=st.sampled_from((False, False, False, True)),
        reason=st.sampled_from((None, "returned")),
        key=st.sampled_from((None, *KEYS)),
    )
    def cancel(
        self, data: st.DataObject, by: str, elsewhere: bool, reason: str | None, key: str | None
    ) -> None:
        """Cancel an accrual made (by its id, maybe on the other card: not_found), or the
        accruals of an order, or an id no accrual has (not_found)."""
        code, transaction_id, order_id = LOYALTY, None, None
        if by == "transaction" and self.accruals:
            code, transaction_id = data.draw(st.sampled_from(self.accruals))
        elif by == "order":
            code, order_id = data.draw(st.sampled_from(CARDS)), data.draw(st.sampled_from(ORDERS))
        else:
            transaction_id = "vtx_0"
        if elsewhere:
            code = LOYALTY_2 if code == LOYALTY else LOYALTY
        self.call(("cancel", code, transaction_id, order_id, reason), key)

    @precondition(lambda self: bool(self.failed))
    @rule(data=st.data())
    def retry_failed(self, data: st.DataObject) -> None:
        """A call that failed kept nothing under its key: its retry acts anew (and may now
        succeed, e.g. after points came in), unless the key was used since."""
        request, key = data.draw(st.sampled_from(self.failed))
        self.retried_failures += 1
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

    def _changed(self, recorded: Request, change: int) -> Request:
        """*recorded* with one thing changed (*change*: 0 the operation, 1 the amount, 2 the
        voucher, 3 an order id or reason, 4 the expiry, where the operation has one)."""
        request = list(recorded)
        kind = request[0]
        if change == 0:  # another operation on the same thing
            if kind == "balance":
                request = ["redeem", request[1], abs(request[2]), None, None]
            elif kind == "redeem" and request[1] != DISCOUNT:
                request = ["balance", request[1], request[2], None, None]
            elif kind == "accrue":
                request = ["balance", request[1], request[2], None, request[4]]
            else:
                request = ["balance", GIFTS[0], 1, None, None]
        elif change == 1 and kind in ("redeem", "balance", "accrue"):  # another amount (not 0)
            request[2] += 1 if request[2] != -1 else 2
        elif change == 1 and kind == "transfer":
            request[3] += 1
        elif change == 2 and kind in ("redeem", "balance"):  # another voucher
            request[1] = GIFTS[1] if request[1] == GIFTS[0] else GIFTS[0]
        elif change == 2 and kind in ("accrue", "cancel"):
            request[1] = LOYALTY_2 if request[1] == LOYALTY else LOYALTY
        elif change == 2 and kind == "transfer":  # the other direction
            request[1], request[2] = request[2], request[1]
        elif change == 4 and kind in ("balance", "accrue"):  # another expiry
            expires_at = request[4]
            request[4] = self.clock.now_us() + RETENTION_US if expires_at is None else None
        elif kind == "rollback":  # another reason
            request[2] = "other" if request[2] != "other" else None
        elif kind in ("redeem", "balance", "accrue"):  # another order id or reason
            request[3] = "changed" if request[3] != "changed" else None
        else:  # another reason (cancel, transfer)
            request[-1] = "other" if request[-1] != "other" else None
        changed = tuple(request)
        if changed == recorded:  # e.g. a transfer from a card to itself, turned around
            changed = ("balance", GIFTS[0], 1, "changed", None)
        return changed

    @precondition(lambda self: bool(self.keys))
    @rule(data=st.data(), change=st.integers(0, 4))
    def retry_changed(self, data: st.DataObject, change: int) -> None:
        """Same key, a request with one thing changed (or another operation)."""
        key = data.draw(st.sampled_from(self._retry_candidates()))
        changed = self._changed(self.keys[key].request, change)
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
        redemptions = [r for code in CODES for r in self.engine.list_redemptions(code)]
        succeeded = [r.id for r in redemptions if r.status is not RedemptionStatus.FAILED]
        assert len(succeeded) == len(set(succeeded))
        assert set(succeeded) == self.expected_redemptions
        failed = [r for r in redemptions if r.status is RedemptionStatus.FAILED]
        assert len(failed) == self.expected_failed
        transactions: list[str] = []
        counts: Counter[tuple[str, str]] = Counter()
        sums: Counter[tuple[str, str]] = Counter()
        expired: Counter[str] = Counter()
        for code in OPENING:
            self.engine.get_voucher(code)  # brings the card up to date: points due expire
            cursor = None
            while True:
                page = self.engine.list_voucher_transactions(
                    code, limit=100, order="id", starting_after_id=cursor
                )
                for t in page.data:
                    if str(t.type) == EXPIRATION:
                        expired[code] -= t.amount
                        continue
                    transactions.append(t.id)
                    counts[code, str(t.type)] += 1
                    sums[code, str(t.type)] += t.amount
                if not page.has_more:
                    break
                cursor = page.more_starting_after
        assert len(transactions) == len(set(transactions))
        assert set(transactions) == self.expected_transactions
        # the log, replayed, is what the requests that acted wrote: each exactly once
        assert +counts == +self.counts, (counts, self.counts)
        assert {k: v for k, v in sums.items() if v} == {k: v for k, v in self.sums.items() if v}
        for code, opening in OPENING.items():
            voucher = self.engine.get_voucher(code)
            mine = {kind: total for (c, kind), total in self.sums.items() if c == code}
            added = sum(total for kind, total in mine.items() if kind in TOTAL_RAISING)
            if code in GIFTS:
                assert voucher.gift is not None
                got = (voucher.gift.amount, voucher.gift.balance)
                assert got == (opening + added, opening + sum(mine.values())), (code, got)
            else:
                card = voucher.loyalty_card
                assert card is not None
                assert card.expired_points == expired[code], (code, card, expired)
                balance = opening + sum(mine.values()) - expired[code]
                assert (card.points, card.balance) == (opening + added, balance), (code, card)

    @invariant()
    def audit_is_clean(self) -> None:
        report = self.engine.audit()
        assert report.ok, str(report)


#: the profile's example count (``dev`` 40, ``ci`` 200)
DEFAULT_EXAMPLES = settings().max_examples

IdempotencyAgainstReference.TestCase.settings = settings(
    max_examples=max(10, DEFAULT_EXAMPLES // 2), stateful_step_count=80
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


class IdempotencyAgainstReferenceOnPostgres(IdempotencyAgainstReference):
    """The same machine on PostgreSQL (a new schema per example, dropped after it), when
    ``VOUCHERCORE_TEST_POSTGRES_DSN`` names a server."""

    def make_store(self) -> Any:
        self.resources = contextlib.ExitStack()
        directory = Path(tempfile.mkdtemp(prefix="vouchercore-idempotency-"))
        self.resources.callback(shutil.rmtree, directory, ignore_errors=True)
        return self.resources.enter_context(store_factory("postgres")(directory))

    def teardown(self) -> None:
        super().teardown()
        self.resources.close()


# a schema per example on a server: fewer still (``dev`` 3, ``ci`` 10)
IdempotencyAgainstReferenceOnPostgres.TestCase.settings = settings(
    max_examples=max(3, DEFAULT_EXAMPLES // 20), stateful_step_count=30
)
TestIdempotencyAgainstReferenceOnPostgres = pytest.mark.skipif(
    unavailable_reason("postgres") is not None,
    reason=f"PostgreSQL: {unavailable_reason('postgres')}",
)(IdempotencyAgainstReferenceOnPostgres.TestCase)
