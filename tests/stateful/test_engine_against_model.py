"""The real :class:`Engine` driven in lockstep with a small reference model of SPEC.md.

The model below is written from SPEC.md alone (§2 availability, §3 validation and its check
order, §4 redemption, §5 rollback, §6 sessions, §7 balance, §11 lifecycle): plain dataclasses,
dicts and ints, nothing imported from ``vouchercore.domain``. After every step the engine must
pass its own audit (I1–I4) and agree with the model on every observable value.

Where SPEC.md leaves a point open, the model decides as a Voucherify user would expect:

- a malformed request (credits on a non-gift voucher, points on a non-loyalty one, a gift card
  with neither credits nor order amount, a loyalty card without points) raises before the
  check table runs, even on a disabled or expired voucher; the key of "a loyalty card without
  points" may be ``invalid_payload`` or ``missing_amount``;
- PERCENT and FIXED discounts without an order amount price at 0; a discount voucher's
  ``redeemed_amount`` sums the discounts granted (and loses them on rollback);
- a LOCK on a gift card priced from the order amount holds the credits computed;
- a rollback exactly 3 calendar months after its redemption is still "within" the window;
  a FAILED or rolled-back redemption past the window may answer either error.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    precondition,
    rule,
)

from vouchercore import Engine, FakeClock, VoucherError

pytestmark = pytest.mark.slow

# --- time in integer microseconds ------------------------------------------------------------

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MILLISECOND = 1_000
SECOND = 1_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR


def to_us(instant: datetime) -> int:
    """An aware datetime as microseconds since the Unix epoch."""
    return (instant - EPOCH) // timedelta(microseconds=1)


def from_us(us: int) -> datetime:
    """Microseconds since the Unix epoch as an aware UTC datetime."""
    return EPOCH + timedelta(microseconds=us)


def add_calendar_months(us: int, months: int) -> int:
    """*us* moved by whole calendar months, the day clipped to the target month's length."""
    instant = from_us(us)
    index = instant.month - 1 + months
    year, month = instant.year + index // 12, index % 12 + 1
    day = min(instant.day, calendar.monthrange(year, month)[1])
    return to_us(instant.replace(year=year, month=month, day=day))


# §3: a ttl unit in exact microseconds; a sub-microsecond remainder rounds UP.
TTL_UNIT_US = {
    "DAYS": DAY,
    "HOURS": HOUR,
    "MINUTES": MINUTE,
    "SECONDS": SECOND,
    "MILLISECONDS": MILLISECOND,
    "MICROSECONDS": 1,
}
DEFAULT_TTL = (7, "DAYS")  # §3


def ttl_to_us(ttl: int, unit: str) -> int:
    """The session length SPEC §3 asks for, in microseconds."""
    if unit == "NANOSECONDS":
        return -(-ttl // 1000)
    return ttl * TTL_UNIT_US[unit]


ROLLBACK_WINDOW_MONTHS = 3  # §5
GENERATED_KEY = re.compile(r"ssn_[0-9A-Za-z]{32}")

GIFT = "GIFT_VOUCHER"
LOYALTY = "LOYALTY_CARD"
DISCOUNT = "DISCOUNT_VOUCHER"
SUCCEEDED, FAILED, ROLLED_BACK = "SUCCEEDED", "FAILED", "ROLLED_BACK"


# --- the reference model ---------------------------------------------------------------------


class Refusal(Exception):
    """The model predicts that the engine raises, with one of ``keys`` as the error key.

    More than one key only where SPEC.md leaves the precedence of two errors open.
    """

    def __init__(self, *keys: str) -> None:
        super().__init__(", ".join(sorted(keys)))
        self.keys = frozenset(keys)


@dataclass
class ModelSession:
    """A LOCK session: quantity 1 plus these credits/points, live while now < expires_at."""

    credits: int
    points: int
    expires_at: int


@dataclass(eq=False)
class ModelVoucher:
    """One voucher incarnation (a code freed by a forced delete gets a new one)."""

    code: str
    kind: str
    discount: dict[str, Any] | None
    total: int  # gift.amount / loyalty_card.points: everything ever added
    balance: int
    quantity: int | None
    start: int | None
    end: int | None
    active: bool
    redeemed_quantity: int = 0
    redeemed_amount: int = 0  # credits, points or discount granted by live redemptions
    deleted: bool = False
    sessions: dict[str, ModelSession] = field(default_factory=dict)
    transactions: list[tuple[str, int, int]] = field(default_factory=list)  # type, amount, bal
    redemptions: list[ModelRedemption] = field(default_factory=list)


@dataclass(eq=False)
class ModelRedemption:
    """One entry of a voucher's redemption log."""

    voucher: ModelVoucher
    status: str
    amount: int
    date: int
    failure_code: str | None = None


@dataclass(frozen=True)
class Verdict:
    """What a validation (or the checks of a redemption) answers."""

    error: str | None
    amount: int = 0
    credits: int = 0
    points: int = 0


def discount_amount(discount: dict[str, Any], order_amount: int | None) -> int:
    """§3 pricing. Without an order amount PERCENT and FIXED have nothing to discount (0)."""
    kind = discount["type"]
    if kind == "AMOUNT":  # min(amount_off, order); amount_off when there is no order
        off: int = discount["amount_off"]
        return off if order_amount is None else min(off, order_amount)
    if order_amount is None:
        return 0
    if kind == "PERCENT":  # round-half-up(order * p / 100), capped by amount_limit and order
        basis_points = int(Decimal(str(discount["percent_off"])) * 100)
        value = (order_amount * basis_points + 5_000) // 10_000
        limit = discount.get("amount_limit")
        if limit is not None:
            value = min(value, limit)
        return min(value, order_amount)
    # FIXED: the order total becomes fixed_amount
    fixed: int = discount["fixed_amount"]
    return max(order_amount - fixed, 0)


class Model:
    """SPEC.md restated with plain data: the engine's expected behaviour, step by step."""

    def __init__(self, now: int) -> None:
        self.now = now
        self.vouchers: dict[str, ModelVoucher] = {}  # live vouchers by code
        self.reserved: set[str] = set()  # codes of soft-deleted vouchers (§11)
        self.redemptions: dict[str, ModelRedemption] = {}  # by the engine's redemption id

    # -- reading ------------------------------------------------------------------------------

    def live_sessions(self, voucher: ModelVoucher) -> dict[str, ModelSession]:
        """§1: a session is live while now < expires_at (expired ones never count, I4)."""
        return {k: s for k, s in voucher.sessions.items() if self.now < s.expires_at}

    def voucher(self, code: str) -> ModelVoucher:
        """The live voucher with this code, or ``not_found``."""
        if code not in self.vouchers:
            raise Refusal("not_found")
        return self.vouchers[code]

    def evaluate(
        self,
        code: str,
        *,
        order_amount: int | None,
        credits: int | None,
        points: int | None,
        key: str | None,
    ) -> Verdict:
        """§3 validation (and the checks of §4 redemption) for a request carrying *key*.

        Raises:
            Refusal: a malformed request (§3: InvalidArgument, before any check).
        """
        voucher = self.vouchers.get(code)
        if voucher is None:
            return Verdict("not_found")
        # §3 malformed requests: raised, never answered.
        if voucher.kind == GIFT:
            if points is not None:
                raise Refusal("invalid_payload")
            if credits is None and order_amount is None:
                raise Refusal("missing_amount")
        elif voucher.kind == LOYALTY:
            if credits is not None:
                raise Refusal("invalid_payload")
            if points is None:  # "a loyalty card without points"; the key is not pinned down
                raise Refusal("invalid_payload", "missing_amount")
        elif credits is not None or points is not None:
            raise Refusal("invalid_payload")
        # §2: the caller's own lock counts as available to itself; everyone else's is taken.
        others = [s for k, s in self.live_sessions(voucher).items() if k != key]
        # §3 check order.
        if not voucher.active:
            return Verdict("voucher_disabled")
        if voucher.start is not None and self.now < voucher.start:
            return Verdict("voucher_not_active")
        if voucher.end is not None and self.now > voucher.end:
            return Verdict("voucher_expired")
        if voucher.quantity is not None:
            available_quantity = voucher.quantity - voucher.redeemed_quantity - len(others)
            if available_quantity < 1:
                return Verdict("quantity_exceeded")
        if voucher.kind == GIFT:
            available = voucher.balance - sum(s.credits for s in others)
            # Without explicit credits: min(order amount, available); 0 of them is too few.
            use = credits if credits is not None else min(order_amount or 0, available)
            if use <= 0 or use > available:
                return Verdict("gift_amount_exceeded")
            return Verdict(None, amount=use, credits=use)
        if voucher.kind == LOYALTY:
            assert points is not None
            if points > voucher.balance - sum(s.points for s in others):
                return Verdict("loyalty_card_points_exceeded")
            return Verdict(None, amount=points, points=points)
        assert voucher.discount is not None
        return Verdict(None, amount=discount_amount(voucher.discount, order_amount))

    def rollback_refusal(self, redemption_id: str) -> ModelRedemption:
        """§5: the redemption a rollback would reverse, or the refusal."""
        redemption = self.redemptions.get(redemption_id)
        if redemption is None or redemption.voucher.deleted:
            raise Refusal("not_found")
        keys = set()
        if redemption.status == FAILED:
            keys.add("invalid_redemption")
        elif redemption.status == ROLLED_BACK:
            keys.add("already_rolled_back")
        # "within 3 calendar months": at exactly three months it is still within.
        if self.now > add_calendar_months(redemption.date, ROLLBACK_WINDOW_MONTHS):
            keys.add("rollback_window_exceeded")
        if keys:
            raise Refusal(*keys)
        return redemption

    def instants(self, kind: str) -> list[int]:
        """Boundaries worth landing on: session expiries, start/expiration dates, rollback
        deadlines."""
        found: list[int] = []
        for voucher in self.vouchers.values():
            if kind == "session_expiry":
                found += [s.expires_at for s in self.live_sessions(voucher).values()]
            elif kind == "start_date" and voucher.start is not None:
                found.append(voucher.start)
            elif kind == "expiration_date" and voucher.end is not None:
                found.append(voucher.end)
        if kind == "rollback_deadline":
            found += [
                add_calendar_months(r.date, ROLLBACK_WINDOW_MONTHS)
                for r in self.redemptions.values()
                if r.status == SUCCEEDED and not r.voucher.deleted
            ]
        return sorted(set(found))

    # -- changing -----------------------------------------------------------------------------

    def move_to(self, instant: int) -> None:
        """Time moves only forward; expired sessions are gone for good (I4)."""
        assert instant >= self.now
        self.now = instant
        for voucher in self.vouchers.values():
            voucher.sessions = self.live_sessions(voucher)

    def create(self, voucher: ModelVoucher) -> None:
        """§1: a code is unique among live AND soft-deleted vouchers."""
        if voucher.code in self.vouchers or voucher.code in self.reserved:
            raise Refusal("duplicate_found")
        self.vouchers[voucher.code] = voucher

    def lock(self, code: str, key: str, verdict: Verdict, ttl_us: int) -> None:
        """§3: a valid answer sets (same key again: replaces, TTL restarted) the session."""
        self.vouchers[code].sessions[key] = ModelSession(
            verdict.credits, verdict.points, self.now + ttl_us
        )

    def redeem(self, code: str, verdict: Verdict, key: str | None, redemption_id: str) -> None:
        """§4 success: one more redemption, credits/points taken, the key's session released."""
        voucher = self.vouchers[code]
        voucher.redeemed_quantity += 1
        voucher.redeemed_amount += verdict.amount
        if voucher.kind == GIFT:
            voucher.balance -= verdict.credits
            voucher.transactions.append(("CREDITS_REDEMPTION", -verdict.credits, voucher.balance))
        elif voucher.kind == LOYALTY:
            voucher.balance -= verdict.points
            voucher.transactions.append(("POINTS_REDEMPTION", -verdict.points, voucher.balance))
        if key is not None:
            voucher.sessions.pop(key, None)
        self._log(
            voucher, redemption_id, ModelRedemption(voucher, SUCCEEDED, verdict.amount, self.now)
        )

    def record_failure(self, code: str, failure_code: str, redemption_id: str) -> None:
        """§4 failure: only a FAILED entry in the redemption log."""
        voucher = self.vouchers[code]
        self._log(
            voucher, redemption_id, ModelRedemption(voucher, FAILED, 0, self.now, failure_code)
        )

    def _log(self, voucher: ModelVoucher, redemption_id: str, entry: ModelRedemption) -> None:
        voucher.redemptions.append(entry)
        self.redemptions[redemption_id] = entry

    def rollback(self, redemption: ModelRedemption) -> None:
        """§5: one redemption fewer, credits/points refunded."""
        voucher = redemption.voucher
        redemption.status = ROLLED_BACK
        voucher.redeemed_quantity -= 1
        voucher.redeemed_amount -= redemption.amount
        if voucher.kind != DISCOUNT:
            voucher.balance += redemption.amount
            kind = "CREDITS_REFUND" if voucher.kind == GIFT else "POINTS_REFUND"
            voucher.transactions.append((kind, redemption.amount, voucher.balance))

    def release(self, code: str, key: str) -> None:
        """§6: release a live session; ``not_found`` if there is none with that key."""
        voucher = self.voucher(code)
        if key not in self.live_sessions(voucher):
            raise Refusal("not_found")
        del voucher.sessions[key]

    def update_balance(self, code: str, amount: int) -> ModelVoucher:
        """§7: add or remove credits/points; never remove what live sessions hold."""
        if amount == 0:  # malformed: raised before anything is read
            raise Refusal("invalid_amount")
        voucher = self.voucher(code)
        if voucher.kind == DISCOUNT:
            raise Refusal("invalid_voucher")
        credits = voucher.kind == GIFT
        if amount > 0:
            voucher.total += amount
            voucher.balance += amount
            kind = "CREDITS_ADDITION" if credits else "POINTS_ADDITION"
        else:
            held = sum(
                s.credits if credits else s.points for s in self.live_sessions(voucher).values()
            )
            if -amount > voucher.balance - held:
                raise Refusal("invalid_add_balance_params")
            voucher.balance += amount
            kind = "CREDITS_REMOVAL" if credits else "POINTS_REMOVAL"
        voucher.transactions.append((kind, amount, voucher.balance))
        return voucher

    def set_active(self, code: str, active: bool) -> None:
        """§11: enable/disable, idempotent."""
        self.voucher(code).active = active

    def delete(self, code: str, *, force: bool) -> None:
        """§11: soft delete hides and reserves the code; force frees it (soft-deleted too)."""
        if code in self.vouchers:
            voucher = self.vouchers.pop(code)
            voucher.deleted = True
            voucher.sessions.clear()
            if not force:
                self.reserved.add(code)
        elif force and code in self.reserved:
            self.reserved.discard(code)
        else:
            raise Refusal("not_found")


# --- strategies ------------------------------------------------------------------------------

CODES = ("C1", "C2", "C3", "C4")
OWN_KEYS = ("key-a", "key-b", "shared-key")  # one key may lock several vouchers


def sometimes_none(values: st.SearchStrategy[int], none_in: int) -> st.SearchStrategy[int | None]:
    """*values*, or ``None`` about once in *none_in* draws."""
    keep = st.sampled_from((True,) * (none_in - 1) + (False,))
    return st.builds(lambda value, kept: value if kept else None, values, keep)


# (order_amount, amount, misplaced): the amount goes to credits (gift) or points (loyalty);
# a "misplaced" amount goes to the field the voucher type does not accept. A missing amount
# makes a gift card price from the order amount and a loyalty card request malformed.
requests = st.tuples(
    sometimes_none(st.integers(1, 6_000), 3),
    sometimes_none(st.integers(1, 3_000), 8),
    st.sampled_from((False,) * 7 + (True,)),
)
ttls = st.one_of(
    st.none(),  # default: 7 DAYS
    st.none(),
    st.tuples(st.integers(1, 2), st.just("DAYS")),
    st.tuples(st.integers(1, 3), st.just("HOURS")),
    st.tuples(st.integers(1, 5), st.just("MINUTES")),
    st.tuples(st.integers(1, 30), st.just("SECONDS")),
    st.tuples(st.sampled_from((1, 500, 1_000)), st.just("MILLISECONDS")),
    st.tuples(st.sampled_from((1, 2, 1_000)), st.just("MICROSECONDS")),
    st.tuples(st.sampled_from((1, 999, 1_000, 1_001, 2_500)), st.just("NANOSECONDS")),
)
discounts = st.one_of(
    st.builds(lambda off: {"type": "AMOUNT", "amount_off": off}, st.integers(1, 5_000)),
    st.builds(
        lambda p, limit: {"type": "PERCENT", "percent_off": p, "amount_limit": limit},
        st.sampled_from((1, 10, 12.5, 33.33, 50, 99.99, 100)),
        st.none() | st.integers(1, 2_000),
    ),
    st.builds(lambda fixed: {"type": "FIXED", "fixed_amount": fixed}, st.integers(0, 3_000)),
)
quantities = st.none() | st.integers(1, 3)
# (start offset from now, length of validity): dates near the current fake time.
windows = st.tuples(
    st.sampled_from((None,) * 12 + (-HOUR, 0, 1, SECOND, MINUTE, HOUR, DAY)),
    st.sampled_from((None,) * 10 + (0, 1, SECOND, MINUTE, HOUR, DAY)),
)
actives = st.sampled_from((True, True, True, False))
clock_steps = st.sampled_from((1, 1, 999, MILLISECOND, SECOND, SECOND, MINUTE, HOUR))
boundaries = st.sampled_from(
    ("session_expiry", "start_date", "expiration_date", "rollback_deadline")
)


def outcome(call: Callable[[], Any]) -> tuple[Any, str | None]:
    """Run an engine call: (its result, None) or (None, the VoucherError key it raised)."""
    try:
        return call(), None
    except VoucherError as error:
        return None, error.key


# --- the machine -----------------------------------------------------------------------------


class EngineAgainstModel(RuleBasedStateMachine):
    """Drive an in-memory :class:`Engine` on a :class:`FakeClock` and :class:`Model` together.

    Every rule makes one engine call and asks the model what SPEC.md says it must do: the
    outcome (result values, or the error key raised) must match, then the model takes the
    same step. The invariant compares every observable value of every voucher and runs the
    engine's audit.
    """

    vouchers = Bundle("vouchers")  # codes
    session_keys = Bundle("session_keys")  # keys that established a session at some point
    stale_keys = Bundle("stale_keys")  # keys released by hand
    redemptions = Bundle("redemptions")  # redemption ids (SUCCEEDED and FAILED)

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(START)
        self.engine = Engine(clock=self.clock, seed=1234)
        self.model = Model(to_us(START))

    # -- helpers ------------------------------------------------------------------------------

    def _use_args(self, code: str, request: tuple[int | None, int | None, bool]) -> dict[str, Any]:
        """The request's keyword arguments for the voucher's type."""
        order_amount, amount, misplaced = request
        voucher = self.model.vouchers.get(code)
        kind = voucher.kind if voucher is not None else GIFT
        field_for = {GIFT: "credits", LOYALTY: "points", DISCOUNT: None}
        wrong_for = {GIFT: "points", LOYALTY: "credits", DISCOUNT: "credits"}
        target = wrong_for[kind] if misplaced else field_for[kind]
        args: dict[str, Any] = {"order_amount": order_amount, "credits": None, "points": None}
        if target is not None:
            args[target] = amount
        return args

    def _expect(self, code: str, args: dict[str, Any], key: str | None) -> Verdict | Refusal:
        try:
            return self.model.evaluate(code, key=key, **args)
        except Refusal as refusal:
            return refusal

    def _create(self, code: str, voucher: ModelVoucher, **kwargs: Any) -> Any:
        start = None if voucher.start is None else from_us(voucher.start)
        end = None if voucher.end is None else from_us(voucher.end)
        created, error = outcome(
            lambda: self.engine.create_voucher(
                code,
                type=voucher.kind,
                quantity=voucher.quantity,
                active=voucher.active,
                start_date=start,
                expiration_date=end,
                **kwargs,
            )
        )
        try:
            self.model.create(voucher)
        except Refusal as refusal:
            assert error in refusal.keys, (error, refusal.keys)
            return multiple()
        assert error is None, error
        assert created.code == code
        return code

    def _voucher(
        self,
        code: str,
        kind: str,
        total: int,
        quantity: int | None,
        window: tuple[int | None, int | None],
        active: bool,
        discount: dict[str, Any] | None = None,
    ) -> ModelVoucher:
        start_offset, length = window
        start = None if start_offset is None else self.model.now + start_offset
        end = None if length is None else (start or self.model.now) + length
        return ModelVoucher(code, kind, discount, total, total, quantity, start, end, active=active)

    def _validate(
        self,
        code: str,
        request: tuple[int | None, int | None, bool],
        session: dict[str, Any] | None,
    ) -> str | None:
        """Validate on both; the key of the session set, if any."""
        args = self._use_args(code, request)
        key = None if session is None else session.get("key")
        expected = self._expect(code, args, key)
        result, error = outcome(lambda: self.engine.validate_voucher(code, session=session, **args))
        if isinstance(expected, Refusal):
            assert error in expected.keys, (error, expected.keys)
            return None
        assert error is None, error
        assert result.valid == (expected.error is None), (result, expected)
        if expected.error is not None:
            # An invalid answer names the failing check and changes nothing (§3).
            assert result.error is not None
            assert result.error.key == expected.error, (result.error.key, expected.error)
            assert result.session is None
            return None
        assert result.error is None
        got_use = (result.amount, result.credits, result.points)
        assert got_use == (expected.amount, expected.credits, expected.points), (got_use, expected)
        if session is None:
            assert result.session is None
            return None
        ttl, unit = session.get("ttl", DEFAULT_TTL[0]), session.get("ttl_unit", DEFAULT_TTL[1])
        ttl_us = ttl_to_us(ttl, unit)
        got = result.session
        assert got is not None
        if key is None:
            assert GENERATED_KEY.fullmatch(got.key), got.key
        else:
            assert got.key == key
        # §3: the result carries the session (key, type, ttl, ttl_unit, expires_at).
        assert (got.type, got.ttl, str(got.ttl_unit)) == ("LOCK", ttl, unit), got
        assert to_us(got.expires_at) == self.model.now + ttl_us, (got.expires_at, ttl_us)
        self.model.lock(code, got.key, expected, ttl_us)
        return str(got.key)

    def _redeem(
        self, code: str, request: tuple[int | None, int | None, bool], key: str | None
    ) -> Any:
        args = self._use_args(code, request)
        expected = self._expect(code, args, key)
        redemption, error = outcome(
            lambda: self.engine.redeem_voucher(code, session_key=key, **args)
        )
        if isinstance(expected, Refusal):
            assert error in expected.keys, (error, expected.keys)
            return multiple()
        if expected.error is None:
            assert error is None, error
            assert redemption.amount == expected.amount, (redemption.amount, expected)
            assert str(redemption.status) == SUCCEEDED
            self.model.redeem(code, expected, key, redemption.id)
            return redemption.id
        assert error == expected.error, (error, expected.error)
        if expected.error == "not_found":
            return multiple()  # nothing to record for an unknown voucher
        failed = self.engine.list_redemptions(code)[-1]
        assert str(failed.status) == FAILED and failed.failure_code == expected.error
        self.model.record_failure(code, expected.error, failed.id)
        return failed.id

    def _move_clock_to(self, instant: int) -> None:
        self.clock.set(from_us(instant))
        self.model.move_to(instant)

    # -- lifecycle ----------------------------------------------------------------------------

    @precondition(lambda self: len(self.model.vouchers) < len(CODES))
    @rule(
        target=vouchers,
        code=st.sampled_from(CODES),
        discount=discounts,
        quantity=quantities,
        window=windows,
        active=actives,
    )
    def create_discount_voucher(
        self,
        code: str,
        discount: dict[str, Any],
        quantity: int | None,
        window: tuple[int | None, int | None],
        active: bool,
    ) -> Any:
        voucher = self._voucher(code, DISCOUNT, 0, quantity, window, active, discount)
        return self._create(code, voucher, discount=discount)

    @precondition(lambda self: len(self.model.vouchers) < len(CODES))
    @rule(
        target=vouchers,
        code=st.sampled_from(CODES),
        amount=st.integers(0, 5_000),
        quantity=quantities,
        window=windows,
        active=actives,
    )
    def create_gift_voucher(
        self,
        code: str,
        amount: int,
        quantity: int | None,
        window: tuple[int | None, int | None],
        active: bool,
    ) -> Any:
        voucher = self._voucher(code, GIFT, amount, quantity, window, active)
        return self._create(code, voucher, gift={"amount": amount})

    @precondition(lambda self: len(self.model.vouchers) < len(CODES))
    @rule(
        target=vouchers,
        code=st.sampled_from(CODES),
        points=st.integers(0, 500),
        quantity=quantities,
        window=windows,
        active=actives,
    )
    def create_loyalty_card(
        self,
        code: str,
        points: int,
        quantity: int | None,
        window: tuple[int | None, int | None],
        active: bool,
    ) -> Any:
        voucher = self._voucher(code, LOYALTY, points, quantity, window, active)
        return self._create(code, voucher, loyalty_card={"points": points})

    @rule(code=vouchers, active=actives)
    def enable_or_disable(self, code: str, active: bool) -> None:
        call = self.engine.enable_voucher if active else self.engine.disable_voucher
        _, error = outcome(lambda: call(code))
        try:
            self.model.set_active(code, active)
        except Refusal as refusal:
            assert error in refusal.keys, (error, refusal.keys)
            return
        assert error is None, error

    @rule(code=consumes(vouchers), force=st.booleans())
    def delete_voucher(self, code: str, force: bool) -> None:
        _, error = outcome(lambda: self.engine.delete_voucher(code, force=force))
        try:
            self.model.delete(code, force=force)
        except Refusal as refusal:
            assert error in refusal.keys, (error, refusal.keys)
            return
        assert error is None, error

    @precondition(lambda self: bool(self.model.reserved))
    @rule(pick=st.integers(0, 3))
    def force_delete_soft_deleted_code(self, pick: int) -> None:
        code = sorted(self.model.reserved)[pick % len(self.model.reserved)]
        _, error = outcome(lambda: self.engine.delete_voucher(code, force=True))
        assert error is None, error
        self.model.delete(code, force=True)

    # -- validation and sessions --------------------------------------------------------------

    @rule(code=vouchers, request=requests)
    def validate_without_session(
        self, code: str, request: tuple[int | None, int | None, bool]
    ) -> None:
        self._validate(code, request, None)

    def _validate_with_lock(
        self,
        code: str,
        request: tuple[int | None, int | None, bool],
        key: str | None,
        ttl: tuple[int, str] | None,
    ) -> Any:
        """Validate with ``session={"type": "LOCK", ...}``; the key of the session set."""
        session: dict[str, Any] = {"type": "LOCK"}
        if key is not None:
            session["key"] = key
        if ttl is not None:
            session["ttl"], session["ttl_unit"] = ttl
        set_key = self._validate(code, request, session)
        return multiple() if set_key is None else set_key

    @rule(
        target=session_keys,
        code=vouchers,
        request=requests,
        key=st.sampled_from(OWN_KEYS),
        ttl=ttls,
    )
    def validate_with_caller_key(
        self,
        code: str,
        request: tuple[int | None, int | None, bool],
        key: str,
        ttl: tuple[int, str] | None,
    ) -> Any:
        """A LOCK under the caller's own key (may replace that key's lock on this voucher)."""
        return self._validate_with_lock(code, request, key, ttl)

    @rule(target=session_keys, code=vouchers, request=requests, ttl=ttls)
    def validate_with_generated_key(
        self,
        code: str,
        request: tuple[int | None, int | None, bool],
        ttl: tuple[int, str] | None,
    ) -> Any:
        """A LOCK under a generated ``ssn_`` key."""
        return self._validate_with_lock(code, request, None, ttl)

    @rule(code=vouchers, key=session_keys, request=requests, ttl=ttls)
    def validate_again_with_same_key(
        self,
        code: str,
        key: str,
        request: tuple[int | None, int | None, bool],
        ttl: tuple[int, str] | None,
    ) -> None:
        """Same key again: replaces credits/points and restarts the TTL (§3). The key may
        belong to another voucher (then it is a new lock here) or have expired."""
        self._validate_with_lock(code, request, key, ttl)

    @rule(target=stale_keys, code=vouchers, key=consumes(session_keys))
    def release_validation_session(self, code: str, key: str) -> str:
        self._release(code, key)
        return key

    def _release(self, code: str, key: str) -> None:
        _, error = outcome(lambda: self.engine.release_validation_session(code, key))
        try:
            self.model.release(code, key)
        except Refusal as refusal:
            assert error in refusal.keys, (error, refusal.keys)
            return
        assert error is None, error

    # -- redemption and rollback --------------------------------------------------------------

    @rule(target=redemptions, code=vouchers, request=requests)
    def redeem_without_key(self, code: str, request: tuple[int | None, int | None, bool]) -> Any:
        return self._redeem(code, request, None)

    @rule(target=redemptions, code=vouchers, key=session_keys, request=requests)
    def redeem_with_session_key(
        self, code: str, key: str, request: tuple[int | None, int | None, bool]
    ) -> Any:
        """The key may hold a live lock here, or have expired, or belong to another voucher."""
        return self._redeem(code, request, key)

    @rule(
        target=redemptions,
        code=vouchers,
        key=stale_keys | st.just("never-issued"),
        request=requests,
    )
    def redeem_with_stale_key(
        self, code: str, key: str, request: tuple[int | None, int | None, bool]
    ) -> Any:
        """A released or unknown key is treated as no session (§4)."""
        return self._redeem(code, request, key)

    @rule(redemption_id=redemptions | st.just("r_unknown"))
    def rollback_redemption(self, redemption_id: str) -> None:
        rollback, error = outcome(lambda: self.engine.rollback_redemption(redemption_id))
        try:
            redemption = self.model.rollback_refusal(redemption_id)
        except Refusal as refusal:
            assert error in refusal.keys, (error, refusal.keys)
            return
        assert error is None, error
        assert rollback.amount == -redemption.amount, (rollback.amount, redemption.amount)
        self.model.rollback(redemption)

    # -- balance ------------------------------------------------------------------------------

    def _update_balance(self, code: str, amount: int) -> None:
        update, error = outcome(lambda: self.engine.update_voucher_balance(code, amount))
        try:
            voucher = self.model.update_balance(code, amount)
        except Refusal as refusal:
            assert error in refusal.keys, (error, refusal.keys)
            return
        assert error is None, error
        got = (update.amount, update.total, update.balance, update.operation_type)
        assert got == (amount, voucher.total, voucher.balance, "MANUAL"), got

    @rule(code=vouchers, amount=st.integers(-3_000, 3_000))
    def update_voucher_balance(self, code: str, amount: int) -> None:
        self._update_balance(code, amount)

    @precondition(
        lambda self: any(
            v.kind != DISCOUNT and self.model.live_sessions(v) for v in self.model.vouchers.values()
        )
    )
    @rule(pick=st.integers(0, 3), extra=st.sampled_from((0, 1)))
    def remove_balance_up_to_locked(self, pick: int, extra: int) -> None:
        """Remove exactly the unlocked balance (fine) or 1 more (eats a lock: must fail)."""
        cards = [
            v
            for v in self.model.vouchers.values()
            if v.kind != DISCOUNT and self.model.live_sessions(v)
        ]
        self._remove_unlocked_balance(cards[pick % len(cards)], extra)

    def _remove_unlocked_balance(self, voucher: ModelVoucher, extra: int) -> None:
        sessions = self.model.live_sessions(voucher).values()
        held = sum(s.credits if voucher.kind == GIFT else s.points for s in sessions)
        self._update_balance(voucher.code, -max(voucher.balance - held + extra, 1))

    # -- unknown and deleted codes ------------------------------------------------------------

    @rule(code=st.sampled_from((*CODES, "NOPE")), request=requests)
    def use_any_code(self, code: str, request: tuple[int | None, int | None, bool]) -> None:
        """Deleted (soft or forced) and never-created codes are ``not_found`` everywhere."""
        self._validate(code, request, None)
        if code not in self.model.vouchers:
            self._redeem(code, request, None)
            _, error = outcome(lambda: self.engine.get_voucher(code))
            assert error == "not_found"

    # -- time ---------------------------------------------------------------------------------

    @rule(step=clock_steps)
    def advance_clock(self, step: int) -> None:
        self.clock.advance(microseconds=step)
        self.model.move_to(self.model.now + step)

    @precondition(
        lambda self: any(
            t + 1 >= self.model.now
            for kind in ("session_expiry", "start_date", "expiration_date", "rollback_deadline")
            for t in self.model.instants(kind)
        )
    )
    @rule(boundary=boundaries, pick=st.integers(0, 7), offset=st.sampled_from((-1, 0, 1)))
    def move_clock_to_boundary(self, boundary: str, pick: int, offset: int) -> None:
        """Land 1 µs before, exactly on, or 1 µs after a tracked instant (never backwards)."""
        targets = [
            t + offset for t in self.model.instants(boundary) if t + offset >= self.model.now
        ]
        if targets:
            self._move_clock_to(targets[pick % len(targets)])

    @precondition(lambda self: bool(self.model.instants("session_expiry")))
    @rule(
        target=redemptions,
        pick=st.integers(0, 7),
        offset=st.sampled_from((-1, 0, 1)),
        action=st.sampled_from(
            ("validate", "relock", "redeem", "redeem_with_key", "release", "remove_balance")
        ),
        request=requests,
    )
    def act_right_at_session_expiry(
        self, pick: int, offset: int, action: str, request: tuple[int | None, int | None, bool]
    ) -> Any:
        """Land 1 µs before, on or after a session's expiry and act at once, before the
        invariant's reads can purge it: expiry must be exact on every path (§1, I4)."""
        sessions = sorted(
            (s.expires_at + offset, code, key)
            for code, voucher in self.model.vouchers.items()
            for key, s in self.model.live_sessions(voucher).items()
            if s.expires_at + offset >= self.model.now
        )
        if not sessions:
            return multiple()
        instant, code, key = sessions[pick % len(sessions)]
        self._move_clock_to(instant)
        voucher = self.model.vouchers[code]
        if action == "validate":
            self._validate(code, request, None)
        elif action == "relock":
            self._validate_with_lock(code, request, key, None)
        elif action == "redeem":
            return self._redeem(code, request, None)
        elif action == "redeem_with_key":
            return self._redeem(code, request, key)
        elif action == "release":
            self._release(code, key)
        elif voucher.kind != DISCOUNT:
            self._remove_unlocked_balance(voucher, 0)
        return multiple()

    # -- agreement ----------------------------------------------------------------------------

    @invariant()
    def engine_agrees_with_model(self) -> None:
        """The audit is clean and every voucher looks exactly as the model says."""
        assert to_us(self.clock.now()) == self.model.now
        report = self.engine.audit()
        assert report.ok, str(report)
        for code in self.model.reserved:  # soft-deleted: hidden, code still reserved
            _, error = outcome(partial(self.engine.get_voucher, code))
            assert error == "not_found", (code, error)
        for code, voucher in self.model.vouchers.items():
            self._compare_voucher(code, voucher)

    def _compare_voucher(self, code: str, voucher: ModelVoucher) -> None:
        got = self.engine.get_voucher(code)
        gift = got.gift is not None and (got.gift.amount, got.gift.balance)
        card = got.loyalty_card is not None and (got.loyalty_card.points, got.loyalty_card.balance)
        sessions = self.model.live_sessions(voucher).values()
        observed = {
            "type": str(got.type),
            "quantity": got.quantity,
            "active": got.active,
            "redeemed_quantity": got.redeemed_quantity,
            "redeemed_amount": got.redeemed_amount,
            "redeemed_points": got.redeemed_points,
            "gift": gift,
            "loyalty_card": card,
            "locked_quantity": got.locked_quantity,
            "locked_credits": got.locked_credits,
            "locked_points": got.locked_points,
        }
        loyalty = voucher.kind == LOYALTY
        totals = (voucher.total, voucher.balance)
        expected = {
            "type": voucher.kind,
            "quantity": voucher.quantity,
            "active": voucher.active,
            "redeemed_quantity": voucher.redeemed_quantity,
            "redeemed_amount": 0 if loyalty else voucher.redeemed_amount,
            "redeemed_points": voucher.redeemed_amount if loyalty else 0,
            "gift": voucher.kind == GIFT and totals,
            "loyalty_card": loyalty and totals,
            "locked_quantity": len(sessions),
            "locked_credits": sum(s.credits for s in sessions),
            "locked_points": sum(s.points for s in sessions),
        }
        assert observed == expected, (code, observed, expected)

        listed = {
            s.key: (s.credits, s.points, to_us(s.expires_at))
            for s in self.engine.list_sessions(code)
        }
        model_sessions = {
            k: (s.credits, s.points, s.expires_at)
            for k, s in self.model.live_sessions(voucher).items()
        }
        assert listed == model_sessions, (code, listed, model_sessions)

        page = self.engine.list_voucher_transactions(code, limit=100, order="id")
        assert not page.has_more
        log = [(str(t.type), t.amount, t.balance) for t in page.data]
        assert log == voucher.transactions, (code, log, voucher.transactions)

        attempts = [
            (str(r.status), None if str(r.status) == FAILED else r.amount, r.failure_code)
            for r in self.engine.list_redemptions(code)
        ]
        model_attempts = [
            (r.status, None if r.status == FAILED else r.amount, r.failure_code)
            for r in voucher.redemptions
        ]
        assert attempts == model_attempts, (code, attempts, model_attempts)


EngineAgainstModel.TestCase.settings = settings(stateful_step_count=80)
TestEngineAgainstModel = EngineAgainstModel.TestCase
