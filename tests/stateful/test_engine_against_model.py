"""The real :class:`Engine` driven in lockstep with a small reference model of the README's rules.

The model below is written from the README alone ("Validation": availability, the checks and
their order; "Redemption", "Rollback", "LOCK sessions", "Balance", "Lifecycle"): plain dataclasses,
dicts and ints, nothing imported from ``vouchercore.domain``. After every step the engine must
pass its own audit (I1–I4) and agree with the model on every observable value.

Where the README leaves a point open, the model decides as a Voucherify user would expect:

- a malformed request (credits on a non-gift voucher, points on a non-loyalty one, a gift card
  with neither credits nor order amount, a loyalty card without points) raises before the
  check table runs, even on a disabled or expired voucher; the key of "a loyalty card without
  points" may be ``invalid_payload`` or ``missing_amount``;
- PERCENT and FIXED discounts without an order amount price at 0; a discount voucher's
  ``redeemed_amount`` sums the discounts granted (and loses them on rollback);
- a LOCK on a gift card priced from the order amount holds the credits computed;
- a rollback exactly 3 calendar months after its redemption is still "within" the window;
  a FAILED or rolled-back redemption past the window may answer either error.

Loyalty points (README "Loyalty points", and the semantics written down in the issue's note) are
modelled just as independently: a card holds a list of expiring buckets ``(expires_at, points,
accrual id)``, soonest first, a pool of points that never expire, and the accruals without
expiry, oldest first; spending walks them in that order. Expiry walks the due buckets soonest
first, each as of its own instant t: the sessions stored then (not released nor redeemed,
expired or not) that are live at t keep what they hold, re-dated to the end of the latest of
them; the rest leaves the balance with one ``POINTS_EXPIRATION``. The model applies it to every
card whenever time moves (before dropping expired sessions) where the engine applies it lazily,
when a card is next touched: the same thing, as nothing changes a card between two touches. Open
points decided here: an expiry on a removal, on a gift card or not after now is
``invalid_payload`` (``not_found``/``invalid_voucher`` also accepted where the voucher is
missing or a discount); expiring plain points merge into the plain bucket just before them with
the same expiry, never into an accrual's. The machines compare every card's balance, total,
expired points, next expiry (date and points), its whole transaction log (type, amount, balance
after, created_at, and the related ids and details of accruals, cancellations, expirations and
transfers) and the error key of every failing call.

Stacks (``validate_stacked_discounts``, ``redeem_stacked_discounts``,
``rollback_stacked_redemptions``; the rules of issue 12) are restated the same way, on the
single-voucher model: discounts priced first, in request order, each on what is left of the
order; then gift cards, in request order, paying what is left (explicit credits capped at it,
else min(left, available)); loyalty cards spend their points and price nothing. Each
redeemable goes through the single check table against what is left at its turn: INAPPLICABLE
with its key, or SKIPPED (a gift card failing only for credits with nothing left to pay:
``no_effect``; an applicable one past the applicable limit, counted in pricing order), or
APPLICABLE; valid only if all are. A valid LOCK locks every voucher under one key; a redemption
applies every child as a single redemption (that key's locks counted as its own and released)
or records only a FAILED parent naming the first redeemable, in request order, that is not
applicable; a rollback reverses every child with its parent. The machine's engines run with
small limits (:data:`STACKING`) so that both are reached. Open points decided here: several
misfits in one redeemable may answer any of their keys; a redemption naming an unknown voucher
(or reusing an idempotency key for another request) and a misfit in another redeemable may
answer either; a child rolled back alone is ``invalid_redemption``, but once rolled back with
its parent (or past the window) ``already_rolled_back`` (``rollback_window_exceeded``) is
accepted too; a parent's id given to ``rollback_redemption`` (or a child's to
``rollback_stacked_redemptions``) is ``not_found``. Idempotency keys are modelled for the
stacked calls only: a success keeps its request and result for 7 days, a retry of the same
request replays it, another request is ``idempotency_key_reused``.

:class:`LoyaltyCardsAgainstModel` runs the same rules on loyalty cards only, so that most
steps add, accrue, lock, spend, transfer, cancel or expire points.
"""

from __future__ import annotations

import calendar
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
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
    initialize,
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
    """The session length a validation asks for (README "LOCK sessions"), in microseconds."""
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

    More than one key only where the README leaves the precedence of two errors open.
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


@dataclass
class ModelBucket:
    """Points of a loyalty card that expire at ``expires_at`` (``None``: never); ``accrual``
    is the id of the ``POINTS_ACCRUAL`` they came from (``None``: plain points)."""

    expires_at: int | None
    points: int
    accrual: str | None = None


@dataclass
class ModelAccrual:
    """A ``POINTS_ACCRUAL`` of a card: its points, its details and whether it was cancelled."""

    points: int
    details: dict[str, Any] | None
    cancelled: bool = False


#: a transaction as the model writes it: type, amount, balance after, created_at and, where the
#: model pins them down, ``(related_transaction_id, details)`` (``None``: not checked)
ModelTransaction = tuple[str, int, int, int, tuple[str | None, dict[str, Any] | None] | None]


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
    transactions: list[ModelTransaction] = field(default_factory=list)
    redemptions: list[ModelRedemption] = field(default_factory=list)
    id: str | None = None  # the engine's ``v_`` id, once created
    # loyalty points: balance = Σ expiring + pool + Σ lasting
    expiring: list[ModelBucket] = field(default_factory=list)  # soonest first, ties: oldest
    pool: int = 0  # points that never expire and belong to no accrual
    lasting: list[ModelBucket] = field(default_factory=list)  # accruals without expiry
    expired_points: int = 0
    accruals: dict[str, ModelAccrual] = field(default_factory=dict)  # oldest first


@dataclass(eq=False)
class ModelRedemption:
    """One entry of a voucher's redemption log."""

    voucher: ModelVoucher
    status: str
    amount: int
    date: int
    failure_code: str | None = None
    parent: str | None = None  # the id of its stacked redemption, if it is a child


@dataclass(frozen=True)
class Verdict:
    """What a validation (or the checks of a redemption) answers."""

    error: str | None
    amount: int = 0
    credits: int = 0
    points: int = 0


APPLICABLE, INAPPLICABLE, SKIPPED = "APPLICABLE", "INAPPLICABLE", "SKIPPED"
#: a stack prices its discount vouchers first, then its gift cards, then its loyalty cards
PRICING_ORDER = (DISCOUNT, GIFT, LOYALTY)
#: how long an idempotency key is kept (the engine's default retention)
KEY_RETENTION = 7 * DAY


@dataclass(frozen=True)
class StackEntry:
    """One redeemable of a stacked request: the voucher's code or id as given, and the
    ``gift.credits`` / ``reward.points`` it carries."""

    name: str
    credits: int | None = None
    points: int | None = None


@dataclass
class Priced:
    """What the model decides for one redeemable of a stack (``voucher`` None: not found)."""

    entry: StackEntry
    voucher: ModelVoucher | None
    status: str = INAPPLICABLE
    error: str | None = "not_found"
    amount: int = 0  # the discount, credits or points it uses, when APPLICABLE
    owed: int | None = None  # what was left of the order at its turn


@dataclass(eq=False)
class ModelParent:
    """The parent of a stacked redemption: SUCCEEDED with its children, FAILED (none), or
    ROLLED_BACK with all of them."""

    status: str
    amount: int
    date: int
    session_key: str | None
    children: list[tuple[str, ModelRedemption]] = field(default_factory=list)
    failure_code: str | None = None
    failed_redeemable: str | None = None
    rollback_id: str | None = None


@dataclass(frozen=True)
class Kept:
    """What an idempotency key holds: the request it was used for (a canonical string), the
    ids of the result returned (replayed as they were), and when it is forgotten."""

    request: str
    result: tuple[str, ...]
    expires_at: int


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
    """The README's rules restated with plain data: the engine's expected behaviour, step by
    step."""

    def __init__(self, now: int) -> None:
        self.now = now
        self.vouchers: dict[str, ModelVoucher] = {}  # live vouchers by code
        self.reserved: set[str] = set()  # codes of soft-deleted vouchers (§11)
        self.redemptions: dict[str, ModelRedemption] = {}  # by the engine's redemption id
        self.parents: dict[str, ModelParent] = {}  # stacked redemptions, by parent id
        self.kept_keys: dict[str, Kept] = {}  # idempotency keys of stacked calls

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
        return self.check(
            voucher, order_amount=order_amount, credits=credits, points=points, key=key
        )

    def check(
        self,
        voucher: ModelVoucher,
        *,
        order_amount: int | None,
        credits: int | None,
        points: int | None,
        key: str | None,
    ) -> Verdict:
        """§3 check table on a well-formed request for *voucher*, *key*'s own lock counted as
        available."""
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
        keys = self.rollback_keys(redemption.status, redemption.date)
        if redemption.parent is not None:  # a stack's child goes back only with its parent
            keys.add("invalid_redemption")
        if keys:
            raise Refusal(*keys)
        return redemption

    def rollback_keys(self, status: str, date: int) -> set[str]:
        """§5: why a redemption (or a stack's parent) in *status*, made at *date*, cannot be
        rolled back now (empty: it can). Where two apply, either may be answered."""
        keys = set()
        if status == FAILED:
            keys.add("invalid_redemption")
        elif status == ROLLED_BACK:
            keys.add("already_rolled_back")
        # "within 3 calendar months": at exactly three months it is still within.
        if self.now > add_calendar_months(date, ROLLBACK_WINDOW_MONTHS):
            keys.add("rollback_window_exceeded")
        return keys

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
            elif kind == "bucket_expiry":
                found += [b.expires_at for b in voucher.expiring if b.expires_at is not None]
        if kind == "rollback_deadline":
            found += [
                add_calendar_months(r.date, ROLLBACK_WINDOW_MONTHS)
                for r in self.redemptions.values()
                if r.status == SUCCEEDED and not r.voucher.deleted
            ]
        return sorted(set(found))

    # -- changing -----------------------------------------------------------------------------

    def move_to(self, instant: int) -> int:
        """Time moves only forward: every loyalty card's points due by *instant* expire (with
        the sessions stored until now, see :meth:`expire_due`), then expired sessions are gone
        for good (I4). How many points expired.

        The engine does this lazily, when a card is next touched; doing it here instead gives
        the same card: nothing changes a card between two touches, and a bucket's fate
        depends only on the card and its stored sessions, not on when it is looked at.
        """
        assert instant >= self.now
        self.now = instant
        expired = 0
        for voucher in self.vouchers.values():
            if voucher.kind == LOYALTY:
                expired += self.expire_due(voucher)
            voucher.sessions = self.live_sessions(voucher)
        return expired

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
            self.write(voucher, "CREDITS_REDEMPTION", -verdict.credits)
        elif voucher.kind == LOYALTY:
            self.spend(voucher, verdict.points)
            self.write(voucher, "POINTS_REDEMPTION", -verdict.points)
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
        if voucher.kind == GIFT:
            voucher.balance += redemption.amount
            self.write(voucher, "CREDITS_REFUND", redemption.amount)
        elif voucher.kind == LOYALTY:  # refunded points never expire
            self.place(voucher, redemption.amount, None)
            self.write(voucher, "POINTS_REFUND", redemption.amount)

    def release(self, code: str, key: str) -> None:
        """§6: release a live session; ``not_found`` if there is none with that key."""
        voucher = self.voucher(code)
        if key not in self.live_sessions(voucher):
            raise Refusal("not_found")
        del voucher.sessions[key]

    def update_balance(self, code: str, amount: int, expires_at: int | None = None) -> ModelVoucher:
        """§7: add or remove credits/points; never remove what live sessions hold. Loyalty
        points added with *expires_at* (after now) form a bucket; removals spend soonest-first.
        """
        if amount == 0:  # malformed: raised before anything is read
            raise Refusal("invalid_amount")
        voucher = self.vouchers.get(code)
        if expires_at is not None:  # an expiry on a removal, in the past, or off a loyalty card
            malformed = amount < 0 or expires_at <= self.now
            if voucher is None:
                raise Refusal("not_found", *(("invalid_payload",) if malformed else ()))
            if voucher.kind == DISCOUNT:
                raise Refusal("invalid_voucher", "invalid_payload")
            if malformed or voucher.kind == GIFT:
                raise Refusal("invalid_payload")
        voucher = self.voucher(code)
        if voucher.kind == DISCOUNT:
            raise Refusal("invalid_voucher")
        credits = voucher.kind == GIFT
        if amount > 0:
            voucher.total += amount
            if credits:
                voucher.balance += amount
            else:
                self.place(voucher, amount, expires_at)
            kind = "CREDITS_ADDITION" if credits else "POINTS_ADDITION"
        else:
            if -amount > self.available(voucher):
                raise Refusal("invalid_add_balance_params")
            if credits:
                voucher.balance += amount
            else:
                self.spend(voucher, -amount)
            kind = "CREDITS_REMOVAL" if credits else "POINTS_REMOVAL"
        self.write(voucher, kind, amount)
        return voucher

    # -- loyalty points (§8 and the points-semantics note) ---------------------------------------

    def write(
        self,
        voucher: ModelVoucher,
        kind: str,
        amount: int,
        links: tuple[str | None, dict[str, Any] | None] | None = None,
    ) -> None:
        """Append a transaction: the voucher's balance after it, created now."""
        voucher.transactions.append((kind, amount, voucher.balance, self.now, links))

    def held(self, voucher: ModelVoucher, at: int | None = None) -> int:
        """Credits (gift) or points held by sessions live at *at* (default: now)."""
        at = self.now if at is None else at
        live = [s for s in voucher.sessions.values() if s.expires_at > at]
        return sum(s.credits if voucher.kind == GIFT else s.points for s in live)

    def available(self, voucher: ModelVoucher) -> int:
        """The balance no live session holds (what a removal or a transfer may take)."""
        return voucher.balance - self.held(voucher)

    def place(
        self, voucher: ModelVoucher, points: int, expires_at: int | None, accrual: str | None = None
    ) -> None:
        """Put *points* on a loyalty card: an expiring bucket, or the pool (plain points
        without expiry), or a bucket of their own (an accrual without expiry)."""
        voucher.balance += points
        if expires_at is not None:
            self.insert(voucher, ModelBucket(expires_at, points, accrual))
        elif accrual is not None:
            voucher.lasting.append(ModelBucket(None, points, accrual))
        else:
            voucher.pool += points

    @staticmethod
    def insert(voucher: ModelVoucher, bucket: ModelBucket) -> None:
        """An expiring bucket goes after every bucket expiring at or before it; plain points
        right after plain points with the same expiry join them."""
        at = sum(1 for b in voucher.expiring if b.expires_at <= bucket.expires_at)
        before = voucher.expiring[at - 1] if at else None
        if (
            bucket.accrual is None
            and before is not None
            and before.accrual is None
            and before.expires_at == bucket.expires_at
        ):
            before.points += bucket.points
        else:
            voucher.expiring.insert(at, bucket)

    @staticmethod
    def spend(voucher: ModelVoucher, points: int) -> list[tuple[int | None, int]]:
        """Take *points*: soonest-expiring first, then the pool, then accruals without expiry
        (oldest first). The ``(expires_at, points)`` pieces taken, in that order."""
        taken: list[tuple[int | None, int]] = []
        left = points
        for bucket in voucher.expiring:
            part = min(bucket.points, left)
            if part:
                bucket.points -= part
                left -= part
                taken.append((bucket.expires_at, part))
        part = min(voucher.pool, left)
        if part:
            voucher.pool -= part
            left -= part
            taken.append((None, part))
        for bucket in voucher.lasting:
            part = min(bucket.points, left)
            if part:
                bucket.points -= part
                left -= part
                taken.append((None, part))
        assert left == 0, (voucher.code, points, left)
        voucher.expiring = [b for b in voucher.expiring if b.points]
        voucher.lasting = [b for b in voucher.lasting if b.points]
        voucher.balance -= points
        return taken

    def expire_due(self, voucher: ModelVoucher) -> int:
        """Expire the card's buckets due by now, soonest first, each as of its own instant t:
        what sessions stored and live at t hold stays (re-dated to the end of the latest of
        them), the rest leaves the balance with one ``POINTS_EXPIRATION``. Points expired."""
        expired = 0
        while voucher.expiring and voucher.expiring[0].expires_at <= self.now:
            bucket = voucher.expiring.pop(0)
            t = bucket.expires_at
            assert t is not None
            live = [s for s in voucher.sessions.values() if s.expires_at > t]
            gone = min(bucket.points, max(0, voucher.balance - sum(s.points for s in live)))
            if gone:
                voucher.balance -= gone
                voucher.expired_points += gone
                expired += gone
                details = None if bucket.accrual is None else {"accrual": {"id": bucket.accrual}}
                self.write(voucher, "POINTS_EXPIRATION", -gone, (None, details))
            if bucket.points > gone:
                later = max(s.expires_at for s in live)
                self.insert(voucher, ModelBucket(later, bucket.points - gone, bucket.accrual))
        return expired

    def loyalty_card(self, code: str) -> ModelVoucher:
        """The live loyalty card with this code: ``not_found`` or ``invalid_voucher``."""
        voucher = self.voucher(code)
        if voucher.kind != LOYALTY:
            raise Refusal("invalid_voucher")
        return voucher

    def accrue(
        self, code: str, points: int, expires_at: int | None, order_id: str | None, tx_id: str
    ) -> ModelVoucher:
        """A ``POINTS_ACCRUAL`` of *points* (call :meth:`accrual_refusal` first)."""
        voucher = self.vouchers[code]
        details = None if order_id is None else {"order": {"id": order_id}}
        voucher.total += points
        self.place(voucher, points, expires_at, tx_id)
        voucher.accruals[tx_id] = ModelAccrual(points, details)
        self.write(voucher, "POINTS_ACCRUAL", points, (None, details))
        return voucher

    def accrual_refusal(self, code: str, expires_at: int | None) -> None:
        """Raise what an accrual on *code* expiring at *expires_at* must raise, if anything."""
        past = expires_at is not None and expires_at <= self.now
        voucher = self.vouchers.get(code)
        if voucher is None or voucher.kind != LOYALTY:
            wrong = "not_found" if voucher is None else "invalid_voucher"
            raise Refusal(wrong, *(("invalid_payload",) if past else ()))
        if past:
            raise Refusal("invalid_payload")

    @staticmethod
    def accrual_left(voucher: ModelVoucher, accrual: str) -> int:
        """The points of *accrual* still on the card (not spent, expired or cancelled)."""
        return sum(b.points for b in (*voucher.expiring, *voucher.lasting) if b.accrual == accrual)

    def cancel(
        self, code: str, transaction_id: str | None, order_id: str | None
    ) -> tuple[int, int, list[tuple[str, int, int, str]]]:
        """Cancel the accrual *transaction_id*, or every accrual of *order_id* on the card,
        oldest first: each takes back what is left of it, never what live sessions hold; the
        rest of it becomes plain points. (accrued, cancelled, the transactions written)."""
        voucher = self.loyalty_card(code)
        if transaction_id is not None:
            matched = [transaction_id] if transaction_id in voucher.accruals else []
        else:
            wanted = {"order": {"id": order_id}}
            matched = [a for a, acc in voucher.accruals.items() if acc.details == wanted]
        if not matched:
            raise Refusal("not_found")
        todo = [a for a in matched if not voucher.accruals[a].cancelled]
        if not todo:
            raise Refusal("already_cancelled")
        held = self.held(voucher)
        accrued = cancelled = 0
        written: list[tuple[str, int, int, str]] = []
        for accrual_id in todo:
            accrual = voucher.accruals[accrual_id]
            take = min(self.accrual_left(voucher, accrual_id), max(0, voucher.balance - held))
            for bucket in (*voucher.expiring, *voucher.lasting):
                if bucket.accrual == accrual_id:
                    bucket.points -= take
                    bucket.accrual = None  # what is left is plain points now
                    if bucket.expires_at is None:
                        voucher.pool += bucket.points
                        bucket.points = 0
            voucher.expiring = [b for b in voucher.expiring if b.points]
            voucher.lasting = [b for b in voucher.lasting if b.points]
            voucher.balance -= take
            accrual.cancelled = True
            accrued += accrual.points
            cancelled += take
            self.write(voucher, "POINTS_CANCELLATION", -take, (accrual_id, accrual.details))
            written.append(("POINTS_CANCELLATION", -take, voucher.balance, accrual_id))
        return accrued, cancelled, written

    def transfer_refusal(self, source: str, destination: str, points: int) -> None:
        """Raise what a transfer of *points* from *source* to *destination* must raise."""
        if source == destination:
            raise Refusal("invalid_payload")
        keys = set()
        for code in (source, destination):
            voucher = self.vouchers.get(code)
            if voucher is None:
                keys.add("not_found")
            elif voucher.kind != LOYALTY:
                keys.add("invalid_voucher")
        if keys:
            raise Refusal(*keys)
        if points > self.available(self.vouchers[source]):
            raise Refusal("loyalty_card_points_exceeded")

    def transfer(self, source: str, destination: str, points: int, out_id: str, in_id: str) -> None:
        """Move *points* (call :meth:`transfer_refusal` first): each piece the source gives
        arrives with its expiry (none: the pool)."""
        giver, taker = self.vouchers[source], self.vouchers[destination]
        for expires_at, part in self.spend(giver, points):
            self.place(taker, part, expires_at)
        taker.total += points
        self.write(
            giver,
            "POINTS_TRANSFER_OUT",
            -points,
            (in_id, {"destination_voucher": {"id": taker.id}}),
        )
        self.write(
            taker, "POINTS_TRANSFER_IN", points, (out_id, {"source_voucher": {"id": giver.id}})
        )

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

    # -- stacks: several vouchers in one call, all or nothing -----------------------------------

    def find(self, name: str) -> ModelVoucher | None:
        """The live voucher a redeemable names by its code or by its id."""
        found = self.vouchers.get(name)
        if found is None:
            found = next((v for v in self.vouchers.values() if v.id == name), None)
        return found

    @staticmethod
    def misfit(voucher: ModelVoucher, entry: StackEntry, order_amount: int | None) -> set[str]:
        """Why *entry* does not fit *voucher* (empty: it fits): credits off a gift card,
        points off a loyalty card, a loyalty card without points, and no order amount where
        the pricing needs one (a priced discount, a gift card without credits). Where one
        redeemable has several, either key may be answered."""
        keys = set()
        if voucher.kind == GIFT:
            if entry.points is not None:
                keys.add("invalid_payload")
            if entry.credits is None and order_amount is None:
                keys.add("missing_amount")
        elif voucher.kind == LOYALTY:
            if entry.credits is not None:
                keys.add("invalid_payload")
            if entry.points is None:  # as for a single request, the key is not pinned down
                keys |= {"invalid_payload", "missing_amount"}
        else:
            if entry.credits is not None or entry.points is not None:
                keys.add("invalid_payload")
            if order_amount is None:  # AMOUNT, PERCENT, FIXED: each priced on the order
                keys.add("missing_amount")
        return keys

    def stack_misfit(self, entries: list[StackEntry], order_amount: int | None) -> set[str]:
        """The keys of the first redeemable, in request order, that names a voucher named
        before it (by code or id) or does not fit its voucher; empty if none. Unknown
        vouchers are passed over (a validation answers for them)."""
        seen: set[int] = set()
        for entry in entries:
            voucher = self.find(entry.name)
            if voucher is None:
                continue
            if id(voucher) in seen:
                return {"invalid_payload"}
            seen.add(id(voucher))
            keys = self.misfit(voucher, entry, order_amount)
            if keys:
                return keys
        return set()

    @staticmethod
    def stack_syntax(entries: list[StackEntry], limit: int) -> None:
        """Raise what a stack refuses before looking at any voucher: more redeemables than
        the limit, or one name given twice."""
        if len(entries) > limit:
            raise Refusal("redeemables_limit_exceeded")
        names = [e.name for e in entries]
        if len(set(names)) < len(names):
            raise Refusal("invalid_payload")

    def price(
        self, entries: list[StackEntry], order_amount: int | None, key: str | None, limit: int
    ) -> list[Priced]:
        """Decide every redeemable of a well-formed stack, in request order.

        Pricing order: discounts (in request order), each on what is left of the order; then
        gift cards (in request order) pay what is left, explicit credits capped at it; then
        loyalty cards (points, no pricing). Each is checked as a single request is; a gift
        card failing only for credits when nothing is left to pay is SKIPPED (no_effect); an
        applicable one past *limit* applicable ones, counted in pricing order, is SKIPPED.
        """
        priced = [Priced(entry, self.find(entry.name)) for entry in entries]
        found = [p for p in priced if p.voucher is not None]
        owed = order_amount
        applicable = 0
        for kind in PRICING_ORDER:
            for item in (p for p in found if p.voucher is not None and p.voucher.kind == kind):
                voucher = item.voucher
                assert voucher is not None
                credits = item.entry.credits
                if kind == GIFT and credits is not None and owed is not None:
                    credits = min(credits, owed)
                item.owed = owed
                verdict = self.check(
                    voucher, order_amount=owed, credits=credits, points=item.entry.points, key=key
                )
                if verdict.error is not None:
                    nothing_to_pay = kind == GIFT and owed == 0
                    if nothing_to_pay and verdict.error == "gift_amount_exceeded":
                        item.status, item.error = SKIPPED, "no_effect"
                    else:
                        item.status, item.error = INAPPLICABLE, verdict.error
                elif applicable == limit:
                    item.status, item.error = SKIPPED, "applicable_redeemables_limit_exceeded"
                else:
                    applicable += 1
                    item.status, item.error, item.amount = APPLICABLE, None, verdict.amount
                    if owed is not None and kind != LOYALTY:
                        owed -= verdict.amount
        return priced

    @staticmethod
    def priced_use(item: Priced) -> Verdict:
        """What an applicable redeemable uses, as a single request's verdict."""
        assert item.voucher is not None and item.status == APPLICABLE
        kind = item.voucher.kind
        return Verdict(
            None,
            amount=item.amount,
            credits=item.amount if kind == GIFT else 0,
            points=item.amount if kind == LOYALTY else 0,
        )

    def kept(self, key: str | None) -> Kept | None:
        """What a live idempotency key holds (a key is live while now < its expiry)."""
        held = None if key is None else self.kept_keys.get(key)
        return held if held is not None and self.now < held.expires_at else None

    def keep(self, key: str | None, request: str, result: tuple[str, ...]) -> None:
        """A successful keyed call keeps its request and result under the key."""
        if key is not None:
            self.kept_keys[key] = Kept(request, result, self.now + KEY_RETENTION)

    def redeem_stack(
        self,
        priced: list[Priced],
        key: str | None,
        parent_id: str,
        child_ids: list[str],
        amount: int,
    ) -> None:
        """All applicable: one child per voucher, each redeemed as a single redemption is
        (its lock under *key* released), under one SUCCEEDED parent."""
        parent = ModelParent(SUCCEEDED, amount, self.now, key)
        for item, child_id in zip(priced, child_ids, strict=True):
            assert item.voucher is not None
            self.redeem(item.voucher.code, self.priced_use(item), key, child_id)
            child = self.redemptions[child_id]
            child.parent = parent_id
            parent.children.append((child_id, child))
        self.parents[parent_id] = parent

    def fail_stack(self, priced: list[Priced], key: str | None, parent_id: str) -> str:
        """Not all applicable: only a FAILED parent, naming the first redeemable (request
        order) that is not applicable. Its error key."""
        first = next(p for p in priced if p.status != APPLICABLE)
        assert first.error is not None
        self.parents[parent_id] = ModelParent(
            FAILED, 0, self.now, key, failure_code=first.error, failed_redeemable=first.entry.name
        )
        return first.error

    def stack_rollback_refusal(self, parent_id: str) -> ModelParent:
        """Raise what rolling back the stack *parent_id* must raise before its idempotency key
        is looked at: unknown parent, a FAILED one, a voucher of the stack deleted."""
        parent = self.parents.get(parent_id)
        if parent is None:
            raise Refusal("not_found")
        if parent.status == FAILED:  # nothing was redeemed: nothing to open
            raise Refusal(*self.rollback_keys(FAILED, parent.date))
        if any(child.voucher.deleted for _, child in parent.children):
            raise Refusal("not_found")
        return parent

    def rollback_stack(self, parent: ModelParent, rollback_id: str) -> None:
        """Every child rolled back (refunds in the parent's order), then the parent."""
        for _, child in parent.children:
            self.rollback(child)
        parent.status = ROLLED_BACK
        parent.rollback_id = rollback_id


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
BOUNDARIES = (
    "session_expiry",
    "start_date",
    "expiration_date",
    "rollback_deadline",
    "bucket_expiry",
)
boundaries = st.sampled_from(BOUNDARIES)
#: how long points added or accrued with an expiry last (session TTLs are in the same range)
point_lifetimes = st.sampled_from(
    (1, 999, SECOND, MINUTE, 30 * MINUTE, HOUR, 3 * HOUR, DAY, 2 * DAY, 7 * DAY)
)
# (where, pick, nudge, lifetime): an expiry *lifetime* after now, or 1 µs before/on/after a
# stored session's or a bucket's expiry, or around now itself (not after now: refused)
expiries = st.tuples(
    st.sampled_from(("lifetime",) * 4 + ("session", "session", "bucket", "now")),
    st.integers(0, 7),
    st.sampled_from((-1, 0, 1)),
    point_lifetimes,
)
ORDERS = ("o-1", "o-2", "o-3")
#: how many points to ask for, given what is available
shares = st.sampled_from(("all", "all", "all+1", "half", "one"))


def share_of(available: int, share: str) -> int:
    """*share* of *available* points, at least 1."""
    wanted = {"all": available, "all+1": available + 1, "half": available // 2, "one": 1}
    return max(wanted[share], 1)


#: the stacking rules of the machine's engines: small, so that a stack of up to four vouchers
#: (and one more redeemable) reaches both limits
STACKING = {"redeemables_limit": 4, "applicable_redeemables_limit": 2}
STACK_KEYS = (*OWN_KEYS, "stack-key")
IDEMPOTENCY_KEYS = ("idem-1", "idem-2")  # shared by stacked redemptions and their rollbacks
# a stack of 1–4 (pick, amount, flavour, by_id): the voucher (picked among the live ones, each
# at most once; mostly among those active and within their dates), a share of what it has
# available or a number, sent as the voucher's own field ("given": credits of a gift card,
# points of a loyalty card, nothing for a discount), left out (a gift card then pays from the
# order; a loyalty card is malformed) or "misplaced" (the field its type refuses); named by its
# code or by its id
_stack_item = st.builds(
    lambda pick, amount, how: (pick, amount, *how),
    st.integers(0, 7),
    st.one_of(shares, shares, st.integers(1, 2_000)),
    # (flavour, by_id), drawn at once: stacks draw many items, and every draw costs
    st.sampled_from(
        (("given", False),) * 10
        + (("given", True),) * 2
        + (("omitted", False),) * 2
        + (("omitted", True), ("misplaced", False))
    ),
)
stack_items = st.sampled_from((1, 2, 2, 3, 3, 4)).flatmap(
    lambda size: st.lists(_stack_item, min_size=size, max_size=size)
)
# (what, where): one more redeemable, mostly none: a code no live voucher has, or one of the
# stack's vouchers again (by the same name, or by its other name: code for id, id for code)
stack_extras = st.tuples(
    st.sampled_from((None,) * 12 + ("unknown", "twice", "twice_by_id")), st.integers(0, 4)
)
# (order amount, form): ``order_amount=``, ``order={"amount": …}``, or a whole order with
# its id, source id and metadata, a customer and the call's metadata
stack_orders = st.tuples(
    sometimes_none(st.integers(1, 6_000), 6), st.sampled_from(("shorthand", "object", "full"))
)
idempotency_keys = st.sampled_from((None,) * 4 + IDEMPOTENCY_KEYS)
rollback_reasons = st.sampled_from((None, "returned"))
FAILED_PARENT = re.compile(r"stacked redemption (\S+) failed")


def outcome(call: Callable[[], Any]) -> tuple[Any, str | None]:
    """Run an engine call: (its result, None) or (None, the VoucherError key it raised)."""
    try:
        return call(), None
    except VoucherError as error:
        return None, error.key


# --- the machine -----------------------------------------------------------------------------


class EngineAgainstModel(RuleBasedStateMachine):
    """Drive an in-memory :class:`Engine` on a :class:`FakeClock` and :class:`Model` together.

    Every rule makes one engine call and asks the model what the README says it must do: the
    outcome (result values, or the error key raised) must match, then the model takes the
    same step. The invariant compares every observable value of every voucher and runs the
    engine's audit.
    """

    vouchers = Bundle("vouchers")  # codes
    accruals = Bundle("accruals")  # POINTS_ACCRUAL transaction ids
    session_keys = Bundle("session_keys")  # keys that established a session at some point
    stale_keys = Bundle("stale_keys")  # keys released by hand
    redemptions = Bundle("redemptions")  # redemption ids (SUCCEEDED and FAILED)
    parents = Bundle("parents")  # stacked redemptions' parent ids (SUCCEEDED and FAILED)

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(START)
        self.engine = Engine(clock=self.clock, seed=1234, **STACKING)
        self.model = Model(to_us(START))
        #: the last stack locked by a valid stacked validation: (entries, order, key)
        self.locked_stack: tuple[list[StackEntry], tuple[int | None, str], str] | None = None
        #: the last keyed stacked redemption: (entries, order, session key, idempotency key)
        self.keyed_stack: tuple[list[StackEntry], tuple[int | None, str], str | None, str] | None
        self.keyed_stack = None
        #: the last keyed stacked rollback: (parent id, reason, idempotency key)
        self.keyed_rollback: tuple[str, str | None, str] | None = None

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
        voucher.id = created.id
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
        voucher = ModelVoucher(
            code, kind, discount, total, total, quantity, start, end, active=active
        )
        if kind == LOYALTY:  # opening points never expire
            voucher.pool = total
        return voucher

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

    def _move_clock_to_act(self, instant: int) -> None:
        """Move the clock to act at once: no read brings a card with points due up to date
        first, so the action itself (or its failure) meets the due points."""
        self._move_clock_to(instant)

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

    @precondition(lambda self: len(self.model.vouchers) < len(CODES))
    @rule(
        target=vouchers,
        kinds=st.lists(st.sampled_from((DISCOUNT, GIFT, LOYALTY)), min_size=2, max_size=4),
        discount=discounts,
        amount=st.integers(1, 5_000),
        quantity=quantities,
    )
    def create_vouchers_to_stack(
        self, kinds: list[str], discount: dict[str, Any], amount: int, quantity: int | None
    ) -> Any:
        """Several vouchers at once, active and without dates (a loyalty card with a tenth of
        *amount* in points): stacks of more than one or two that may all apply."""
        free = [c for c in CODES if c not in self.model.vouchers and c not in self.model.reserved]
        created = []
        for kind, code in zip(kinds, free, strict=False):
            if kind == DISCOUNT:
                made = self.create_discount_voucher(code, discount, quantity, (None, None), True)
            elif kind == GIFT:
                made = self.create_gift_voucher(code, amount, quantity, (None, None), True)
            else:
                made = self.create_loyalty_card(code, amount // 10, quantity, (None, None), True)
            if isinstance(made, str):
                created.append(made)
        return multiple(*created)

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
        self._rollback(redemption_id)

    def _rollback(self, redemption_id: str) -> None:
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

    def _update_balance(self, code: str, amount: int, expires_at: int | None = None) -> None:
        update, error = outcome(
            lambda: self.engine.update_voucher_balance(
                code, amount, expires_at=None if expires_at is None else from_us(expires_at)
            )
        )
        try:
            voucher = self.model.update_balance(code, amount, expires_at)
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

    @rule(step=st.sampled_from((3 * HOUR, DAY, 8 * DAY)))
    def leap_clock(self, step: int) -> None:
        """A long jump: many buckets and sessions may end on the way, in any order."""
        self._move_clock_to(self.model.now + step)

    @precondition(
        lambda self: any(
            t + 1 >= self.model.now for kind in BOUNDARIES for t in self.model.instants(kind)
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
        self._move_clock_to_act(instant)
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

    # -- loyalty points: buckets, accrual, cancellation, transfers, expiry --------------------

    def _loyalty_cards(self) -> list[ModelVoucher]:
        return [v for v in self.model.vouchers.values() if v.kind == LOYALTY]

    def _expiry(self, where: str, pick: int, nudge: int, lifetime: int) -> int:
        """An ``expires_at`` for points (see :data:`expiries`)."""
        if where == "now":
            return self.model.now + nudge
        candidates: list[int] = []
        if where == "session":
            candidates = self.model.instants("session_expiry")
        elif where == "bucket":
            candidates = self.model.instants("bucket_expiry")
        if candidates:
            return candidates[pick % len(candidates)] + nudge
        return self.model.now + lifetime

    @rule(
        code=vouchers,
        points=st.integers(1, 400),
        expiry=expiries,
        sign=st.sampled_from((1,) * 7 + (-1,)),
    )
    def add_points_with_expiry(
        self, code: str, points: int, expiry: tuple[str, int, int, int], sign: int
    ) -> None:
        """A bucket (or, on a removal, on a gift card or not after now: ``invalid_payload``)."""
        self._update_balance(code, sign * points, self._expiry(*expiry))

    @rule(
        target=accruals,
        code=vouchers,
        points=st.integers(1, 400),
        order_id=st.sampled_from((None, *ORDERS)),
        expiry=st.none() | expiries,
    )
    def accrue_points(
        self,
        code: str,
        points: int,
        order_id: str | None,
        expiry: tuple[str, int, int, int] | None,
    ) -> Any:
        expires_at = None if expiry is None else self._expiry(*expiry)
        tx, error = outcome(
            lambda: self.engine.accrue_points(
                code,
                points,
                order_id=order_id,
                expires_at=None if expires_at is None else from_us(expires_at),
                reason="earned",
            )
        )
        try:
            self.model.accrual_refusal(code, expires_at)
        except Refusal as refusal:
            assert error in refusal.keys, (error, refusal.keys)
            return multiple()
        assert error is None, error
        voucher = self.model.accrue(code, points, expires_at, order_id, tx.id)
        got = (str(tx.type), tx.amount, tx.balance, tx.voucher_id)
        assert got == ("POINTS_ACCRUAL", points, voucher.balance, voucher.id), got
        return tx.id

    def _cancel(self, code: str, transaction_id: str | None, order_id: str | None) -> None:
        result, error = outcome(
            lambda: self.engine.cancel_points_accrual(
                code, transaction_id=transaction_id, order_id=order_id, reason="returned"
            )
        )
        try:
            if (transaction_id is None) == (order_id is None):
                raise Refusal("invalid_payload")
            accrued, cancelled, written = self.model.cancel(code, transaction_id, order_id)
        except Refusal as refusal:
            assert error in refusal.keys, (error, refusal.keys)
            return
        assert error is None, error
        got = (result.accrued, result.cancelled, result.not_cancelled)
        assert got == (accrued, cancelled, accrued - cancelled), (got, accrued, cancelled)
        got_written = [
            (str(t.type), t.amount, t.balance, t.related_transaction_id)
            for t in result.transactions
        ]
        assert got_written == written, (got_written, written)

    @rule(
        accrual=accruals | st.just("vtx_0"),
        own_card=st.sampled_from((True, True, True, False)),
        code=vouchers,
    )
    def cancel_accrual_by_transaction(self, accrual: str, own_card: bool, code: str) -> None:
        """Mostly on the card the accrual is on (maybe cancelled already); sometimes on another
        card, or an id that names no accrual (``not_found``)."""
        if own_card:
            owners = [v.code for v in self.model.vouchers.values() if accrual in v.accruals]
            code = owners[0] if owners else code
        self._cancel(code, accrual, None)

    @rule(
        code=vouchers,
        order_id=st.sampled_from((*ORDERS, "o-none")),
        malformed=st.sampled_from((None,) * 6 + ("both", "neither")),
    )
    def cancel_accrual_by_order(self, code: str, order_id: str, malformed: str | None) -> None:
        """Every accrual of the order on this card; both or neither id: ``invalid_payload``."""
        if malformed == "both":
            self._cancel(code, "vtx_0", order_id)
        elif malformed == "neither":
            self._cancel(code, None, None)
        else:
            self._cancel(code, None, order_id)

    def _transfer(self, source: str, destination: str, points: int) -> None:
        result, error = outcome(
            lambda: self.engine.transfer_points(source, destination, points, reason="gift")
        )
        try:
            self.model.transfer_refusal(source, destination, points)
        except Refusal as refusal:
            assert error in refusal.keys, (error, refusal.keys)
            return
        assert error is None, error
        sent, received = result.source, result.destination
        got = (result.points, str(sent.type), sent.amount, str(received.type), received.amount)
        assert got == (points, "POINTS_TRANSFER_OUT", -points, "POINTS_TRANSFER_IN", points)
        assert sent.related_transaction_id == received.id, result
        assert received.related_transaction_id == sent.id, result
        self.model.transfer(source, destination, points, sent.id, received.id)
        giver, taker = self.model.vouchers[source], self.model.vouchers[destination]
        assert (sent.voucher_id, received.voucher_id) == (giver.id, taker.id), result
        assert (sent.balance, received.balance) == (giver.balance, taker.balance), result

    @rule(
        source=vouchers,
        destination=vouchers | st.just("NOPE"),
        points=st.integers(1, 600),
    )
    def transfer_points(self, source: str, destination: str, points: int) -> None:
        """Any two codes: the same card, a gift or discount voucher, an unknown code, too
        many points."""
        self._transfer(source, destination, points)

    @precondition(lambda self: len(self._loyalty_cards()) >= 2)
    @rule(pick=st.integers(0, 11), share=shares)
    def transfer_available_points(self, pick: int, share: str) -> None:
        """All the source's available points, 1 more, half or one."""
        cards = self._loyalty_cards()
        pairs = [(a, b) for a in cards for b in cards if a is not b]
        source, destination = pairs[pick % len(pairs)]
        points = share_of(self.model.available(source), share)
        self._transfer(source.code, destination.code, points)

    @precondition(lambda self: bool(self._loyalty_cards()))
    @rule(target=redemptions, pick=st.integers(0, 7), share=shares, with_key=st.booleans())
    def redeem_points(self, pick: int, share: str, with_key: bool) -> Any:
        """Redeem (a share of) the points available, maybe with one of the card's locks."""
        cards = self._loyalty_cards()
        card = cards[pick % len(cards)]
        keys = sorted(self.model.live_sessions(card))
        key = keys[pick % len(keys)] if with_key and keys else None
        others = sum(s.points for k, s in self.model.live_sessions(card).items() if k != key)
        points = share_of(card.balance - others, share)
        return self._redeem(card.code, (None, points, False), key)

    @precondition(lambda self: bool(self._loyalty_cards()))
    @rule(
        target=session_keys,
        pick=st.integers(0, 7),
        share=shares,
        key=st.none() | st.sampled_from(OWN_KEYS),
        ttl=ttls,
    )
    def lock_points(
        self, pick: int, share: str, key: str | None, ttl: tuple[int, str] | None
    ) -> Any:
        """A LOCK on (a share of) the points available."""
        cards = self._loyalty_cards()
        card = cards[pick % len(cards)]
        others = sum(s.points for k, s in self.model.live_sessions(card).items() if k != key)
        points = share_of(card.balance - others, share)
        return self._validate_with_lock(card.code, (None, points, False), key, ttl)

    @precondition(lambda self: bool(self._loyalty_cards()))
    @rule(pick=st.integers(0, 7), share=shares)
    def remove_points(self, pick: int, share: str) -> None:
        """Remove (a share of) the points no lock holds: soonest-expiring first."""
        cards = self._loyalty_cards()
        card = cards[pick % len(cards)]
        self._update_balance(card.code, -share_of(self.model.available(card), share))

    @precondition(lambda self: bool(self._loyalty_cards()))
    @rule(
        pick=st.integers(0, 7),
        points=st.integers(1, 400),
        lifetime=point_lifetimes,
        share=shares,
        margin=st.sampled_from((-1, 0, 1, SECOND, HOUR)),
        offset=st.sampled_from((-1, 0, 1)),
    )
    def lock_outlives_a_bucket(
        self, pick: int, points: int, lifetime: int, share: str, margin: int, offset: int
    ) -> None:
        """On one card: add points expiring after *lifetime*, lock (a share of) what is
        available until *margin* µs after they expire, and land 1 µs before, on or after their
        expiry (the other steps may then spend, cancel, move, release or redeem)."""
        cards = self._loyalty_cards()
        card = cards[pick % len(cards)]
        expires_at = self.model.now + lifetime
        self._update_balance(card.code, points, expires_at)
        others = sum(s.points for s in self.model.live_sessions(card).values())
        wanted = share_of(card.balance - others, share)
        ttl_us = max(expires_at + margin - self.model.now, 1)
        self._validate_with_lock(card.code, (None, wanted, False), None, (ttl_us, "MICROSECONDS"))
        self._move_clock_to(expires_at + offset)

    @precondition(lambda self: bool(self.model.instants("bucket_expiry")))
    @rule(
        target=session_keys,
        pick=st.integers(0, 7),
        share=shares,
        margin=st.sampled_from((-1, 0, 1, SECOND, HOUR)),
        key=st.none() | st.sampled_from(OWN_KEYS),
    )
    def lock_points_past_a_bucket(self, pick: int, share: str, margin: int, key: str | None) -> Any:
        """A LOCK on (a share of) a card's available points that ends *margin* µs after one of
        its buckets expires (a TTL in MICROSECONDS): the lock may outlive the bucket."""
        buckets = sorted(
            (b.expires_at, v.code)
            for v in self._loyalty_cards()
            for b in v.expiring
            if b.expires_at is not None and b.expires_at + margin > self.model.now
        )
        if not buckets:
            return multiple()
        expires_at, code = buckets[pick % len(buckets)]
        card = self.model.vouchers[code]
        others = sum(s.points for k, s in self.model.live_sessions(card).items() if k != key)
        points = share_of(card.balance - others, share)
        ttl = (expires_at + margin - self.model.now, "MICROSECONDS")
        return self._validate_with_lock(code, (None, points, False), key, ttl)

    @precondition(lambda self: any(v.accruals for v in self._loyalty_cards()))
    @rule(pick=st.integers(0, 15), by_order=st.booleans())
    def cancel_an_accrual(self, pick: int, by_order: bool) -> None:
        """Cancel one of the cards' accruals (mostly one not cancelled yet), by its id or by
        its order."""
        accruals = [
            (accrual.cancelled, code, accrual_id, accrual.details)
            for code, card in sorted(self.model.vouchers.items())
            for accrual_id, accrual in card.accruals.items()
        ]
        fresh = [a for a in accruals if not a[0]]
        _, code, accrual_id, details = (fresh if fresh and pick % 4 else accruals)[
            pick % len(fresh if fresh and pick % 4 else accruals)
        ]
        if by_order and details is not None:
            self._cancel(code, None, details["order"]["id"])
        else:
            self._cancel(code, accrual_id, None)

    @rule(
        pick=st.integers(0, 7),
        offset=st.sampled_from((-1, 0, 1)),
        lag=st.sampled_from((None, None, 0, 1, SECOND)),
    )
    def sweep_expired_points(self, pick: int, offset: int, lag: int | None) -> None:
        """Land 1 µs before, on or after a bucket's expiry (or stay) and sweep at once, before
        any read: ``expire_points()`` as of the clock's now, or (*lag*) as of an instant that
        far before it. The points it expires are those due on every card by then."""
        targets = [
            t + offset for t in self.model.instants("bucket_expiry") if t + offset >= self.model.now
        ]
        at = targets[pick % len(targets)] if targets else self.model.now
        now = at if lag is None else at + lag
        self.clock.set(from_us(now))
        swept = self.engine.expire_points(None if lag is None else from_us(at))
        assert swept == self.model.move_to(at), swept
        self.model.move_to(now)  # the rest is expired by the next reads

    @rule(pick=st.integers(0, 7), offset=st.sampled_from((0, 1)))
    def sweep_expired_sessions(self, pick: int, offset: int) -> None:
        """Land on (or 1 µs after) a session's expiry and sweep expired sessions before any
        read: housekeeping changes nothing observable — above all not which points expire,
        which the sessions it purges may have protected at a bucket's instant."""
        targets = [
            t + offset
            for t in self.model.instants("session_expiry")
            if t + offset >= self.model.now
        ]
        if targets:
            self._move_clock_to(targets[pick % len(targets)])
        self.engine.expire_sessions()

    @precondition(lambda self: bool(self.model.instants("bucket_expiry")))
    @rule(
        target=redemptions,
        pick=st.integers(0, 7),
        offset=st.sampled_from((-1, 0, 1)),
        action=st.sampled_from(
            ("validate", "lock", "redeem", "remove", "transfer", "cancel", "accrue", "read")
        ),
        extra=st.sampled_from((0, 0, 1)),
    )
    def act_right_at_bucket_expiry(self, pick: int, offset: int, action: str, extra: int) -> Any:
        """Land 1 µs before, on or after a bucket's expiry and act at once on its card with
        all (or 1 more than) the points available: expiry must be exact on every path."""
        buckets = sorted(
            (t + offset, v.code)
            for v in self._loyalty_cards()
            for t in {b.expires_at for b in v.expiring if b.expires_at is not None}
            if t + offset >= self.model.now
        )
        if not buckets:
            return multiple()
        instant, code = buckets[pick % len(buckets)]
        self._move_clock_to_act(instant)
        card = self.model.vouchers[code]
        points = max(self.model.available(card) + extra, 1)
        request = (None, points, False)
        if action == "validate":
            self._validate(code, request, None)
        elif action == "lock":
            self._validate_with_lock(code, request, None, None)
        elif action == "redeem":
            return self._redeem(code, request, None)
        elif action == "remove":
            self._update_balance(code, -points)
        elif action == "transfer":
            others = [v.code for v in self._loyalty_cards() if v is not card] or ["NOPE"]
            self._transfer(code, others[pick % len(others)], points)
        elif action == "cancel":
            accruals = sorted(card.accruals)
            if accruals:
                self._cancel(code, accruals[pick % len(accruals)], None)
        elif action == "accrue":
            self.accrue_points(code, points, None, None)
        else:
            self._compare_voucher(code, card)
        return multiple()

    # -- stacks: validate, redeem and roll back several vouchers at once ----------------------

    def _stack(
        self, items: list[tuple[int, str | int, str, bool]], extra: tuple[str | None, int]
    ) -> list[StackEntry]:
        """The redeemables of a stack drawn as *items* and *extra* (see :data:`stack_items`)."""
        now = self.model.now
        pool = sorted(self.model.vouchers)
        usable = [
            code
            for code in pool
            if (v := self.model.vouchers[code]).active
            and (v.start is None or v.start <= now)
            and (v.end is None or now <= v.end)
        ]
        if usable and items[0][0] % 4:  # mostly vouchers that may apply
            pool = usable
        entries: list[StackEntry] = []
        for pick, amount, flavour, by_id in items:
            if not pool:
                break
            voucher = self.model.vouchers[pool.pop(pick % len(pool))]
            value = (
                share_of(self.model.available(voucher), amount)
                if isinstance(amount, str)
                else amount
            )
            own = {GIFT: "credits", LOYALTY: "points", DISCOUNT: None}[voucher.kind]
            refused = {GIFT: "points", LOYALTY: "credits", DISCOUNT: "credits"}[voucher.kind]
            target = {"given": own, "omitted": None, "misplaced": refused}[flavour]
            name = voucher.id if by_id and voucher.id is not None else voucher.code
            entries.append(
                StackEntry(
                    name,
                    credits=value if target == "credits" else None,
                    points=value if target == "points" else None,
                )
            )
        what, where = extra
        if what is None and entries:
            return entries
        if what in ("twice", "twice_by_id") and entries:
            twin = entries[where % len(entries)]
            voucher = self.model.find(twin.name)
            assert voucher is not None and voucher.id is not None
            other = voucher.code if twin.name == voucher.id else voucher.id
            name = twin.name if what == "twice" else other
            entries.insert(where % (len(entries) + 1), replace(twin, name=name))
        else:  # a code that names no live voucher: deleted, freed, or never created
            missing = [c for c in (*CODES, "NOPE") if c not in self.model.vouchers]
            entries.insert(where % (len(entries) + 1), StackEntry(missing[where % len(missing)]))
        return entries

    @staticmethod
    def _redeemable(entry: StackEntry) -> dict[str, Any]:
        redeemable: dict[str, Any] = {"object": "voucher", "id": entry.name}
        if entry.credits is not None:
            redeemable["gift"] = {"credits": entry.credits}
        if entry.points is not None:
            redeemable["reward"] = {"points": entry.points}
        return redeemable

    @staticmethod
    def _stack_kwargs(order: tuple[int | None, str]) -> dict[str, Any]:
        """The order (customer, metadata) arguments of a stacked call, in the drawn form."""
        amount, form = order
        if form == "shorthand":
            return {"order_amount": amount}
        if form == "object":
            return {"order": {"amount": amount}}
        return {
            "order": {"id": "o-1", "source_id": "src-1", "amount": amount, "metadata": {"lane": 3}},
            "customer": {"source_id": "cust-1", "metadata": {"tier": "gold"}},
            "metadata": {"till": 7},
        }

    @staticmethod
    def _order_of(kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """(id, source_id, amount, metadata) of the order a stacked call names."""
        order = kwargs.get("order") or {}
        amount = kwargs.get("order_amount", order.get("amount"))
        return order.get("id"), order.get("source_id"), amount, order.get("metadata")

    @staticmethod
    def _customer_of(kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """(id, source_id, metadata) of the customer a stacked call names."""
        customer = kwargs.get("customer") or {}
        return customer.get("id"), customer.get("source_id"), customer.get("metadata")

    def _canonical(
        self, operation: str, entries: list[StackEntry], kwargs: dict[str, Any], key: str | None
    ) -> str:
        """The request an idempotency key remembers: what it asks, however it is spelled."""
        redeemables = [[e.name, e.credits, e.points] for e in entries]
        request = [redeemables, self._order_of(kwargs), self._customer_of(kwargs), key]
        return json.dumps([operation, request, kwargs.get("metadata")], sort_keys=True)

    def _compare_priced(self, got: Any, priced: list[Priced]) -> None:
        """Each redeemable's result: status, error, use, what was left of the order."""
        observed, expected = [], []
        for result, item in zip(got, priced, strict=True):
            voucher, applies = item.voucher, item.status == APPLICABLE
            kind = None if voucher is None else voucher.kind
            observed.append(
                (
                    str(result.status),
                    result.id,
                    None if result.error is None else result.error.key,
                    None if result.type is None else str(result.type),
                    result.code,
                    result.voucher_id,
                    result.amount,
                    result.credits,
                    result.points,
                    result.discount_amount,
                    result.order_amount,
                    result.balance,
                )
            )
            expected.append(
                (
                    item.status,
                    item.entry.name,
                    item.error,
                    kind,
                    None if voucher is None else voucher.code,
                    None if voucher is None else voucher.id,
                    item.amount,
                    item.amount if applies and kind == GIFT else 0,
                    item.amount if applies and kind == LOYALTY else 0,
                    item.amount if applies and kind == DISCOUNT else 0,
                    item.owed,
                    None if voucher is None or kind == DISCOUNT else voucher.balance,
                )
            )
        assert observed == expected, (observed, expected)

    def _compare_summary(self, got: Any, priced: list[Priced], kwargs: dict[str, Any]) -> int:
        """The order as the stack priced it; what the stack takes off (discounts + credits)."""
        applied = [p for p in priced if p.status == APPLICABLE and p.voucher is not None]
        discounts = sum(p.amount for p in applied if p.voucher and p.voucher.kind == DISCOUNT)
        gifts = sum(p.amount for p in applied if p.voucher and p.voucher.kind == GIFT)
        order_id, source_id, amount, metadata = self._order_of(kwargs)
        observed = (
            got.id,
            got.source_id,
            got.amount,
            got.metadata,
            got.discount_amount,
            got.gift_amount,
            got.total_discount_amount,
            got.total_amount,
        )
        total = None if amount is None else amount - discounts - gifts
        expected = (
            order_id,
            source_id,
            amount,
            metadata,
            discounts,
            gifts,
            discounts + gifts,
            total,
        )
        assert observed == expected, (observed, expected)
        return discounts + gifts

    def _validate_stack(
        self,
        entries: list[StackEntry],
        order: tuple[int | None, str],
        session: dict[str, Any] | None,
    ) -> str | None:
        """A stacked validation on both; the key of the locks set, if any."""
        kwargs = self._stack_kwargs(order)
        order_amount = self._order_of(kwargs)[2]
        key = None if session is None else session.get("key")
        redeemables = [self._redeemable(e) for e in entries]
        result, error = outcome(
            lambda: self.engine.validate_stacked_discounts(redeemables, session=session, **kwargs)
        )
        try:
            self.model.stack_syntax(entries, STACKING["redeemables_limit"])
            misfits = self.model.stack_misfit(entries, order_amount)
            if misfits:
                raise Refusal(*misfits)
        except Refusal as refusal:
            assert error in refusal.keys, (error, refusal.keys)
            return None
        assert error is None, error
        limit = STACKING["applicable_redeemables_limit"]
        priced = self.model.price(entries, order_amount, key, limit)
        self._compare_priced(result.redeemables, priced)
        self._compare_summary(result.order, priced, kwargs)
        first = next((p.error for p in priced if p.status != APPLICABLE), None)
        assert result.valid == (first is None), (result.valid, first)
        assert (None if result.error is None else result.error.key) == first, result.error
        if first is not None or session is None:
            assert result.sessions == (), result.sessions
            return None
        ttl, unit = session.get("ttl", DEFAULT_TTL[0]), session.get("ttl_unit", DEFAULT_TTL[1])
        ttl_us = ttl_to_us(ttl, unit)
        got_key = result.session_key
        if key is None:
            assert GENERATED_KEY.fullmatch(got_key), got_key
        else:
            assert got_key == key, (got_key, key)
        uses = [self.model.priced_use(p) for p in priced]
        observed = [
            (
                s.key,
                s.voucher_code,
                s.credits,
                s.points,
                to_us(s.expires_at),
                s.ttl,
                str(s.ttl_unit),
            )
            for s in result.sessions
        ]
        expires_at = self.model.now + ttl_us
        expected = [
            (got_key, p.voucher.code, use.credits, use.points, expires_at, ttl, unit)
            for p, use in zip(priced, uses, strict=True)
            if p.voucher is not None
        ]
        assert observed == expected, (observed, expected)
        for p, use in zip(priced, uses, strict=True):
            assert p.voucher is not None
            self.model.lock(p.voucher.code, got_key, use, ttl_us)
        self.locked_stack = (entries, order, got_key)
        return str(got_key)

    def _redeem_stack(
        self,
        entries: list[StackEntry],
        order: tuple[int | None, str],
        key: str | None,
        idempotency_key: str | None,
        as_mapping: bool = False,
    ) -> Any:
        """A stacked redemption on both: the parent's id, SUCCEEDED or FAILED."""
        kwargs = self._stack_kwargs(order)
        order_amount = self._order_of(kwargs)[2]
        session = None if key is None else {"key": key} if as_mapping else key
        redeemables = [self._redeemable(e) for e in entries]
        raised: list[VoucherError] = []

        def call() -> Any:
            try:
                return self.engine.redeem_stacked_discounts(
                    redeemables, session=session, idempotency_key=idempotency_key, **kwargs
                )
            except VoucherError as error:
                raised.append(error)
                raise

        stacked, error = outcome(call)
        request = self._canonical("redeem", entries, kwargs, key)
        try:
            self.model.stack_syntax(entries, STACKING["redeemables_limit"])
            misfits = self.model.stack_misfit(entries, order_amount)
            # the vouchers are looked up first; which of two refusals wins is not pinned down
            if any(self.model.find(e.name) is None for e in entries):
                raise Refusal("not_found", *misfits)
            kept = self.model.kept(idempotency_key)
            if kept is not None and kept.request != request:
                raise Refusal("idempotency_key_reused", *misfits)
            if kept is None and misfits:
                raise Refusal(*misfits)
        except Refusal as refusal:
            assert error in refusal.keys, (error, refusal.keys)
            return multiple()
        if idempotency_key is not None:
            self.keyed_stack = (entries, order, key, idempotency_key)
        if kept is not None:  # a retry: the first call's result again, nothing changes
            assert error is None, error
            replayed = (stacked.parent_redemption.id, *(c.id for c in stacked.redemptions))
            assert replayed == kept.result, (replayed, kept.result)
            return multiple()
        limit = STACKING["applicable_redeemables_limit"]
        priced = self.model.price(entries, order_amount, key, limit)
        if all(p.status == APPLICABLE for p in priced):
            assert error is None, error
            amount = self._compare_summary(stacked.order, priced, kwargs)
            parent = stacked.parent_redemption
            children = stacked.redemptions
            observed = [
                (
                    c.voucher_code,
                    str(c.status),
                    c.amount,
                    c.parent_id,
                    c.session_key,
                    c.order_amount,
                    c.order_id,
                    c.customer_source_id,
                    c.metadata,
                )
                for c in children
            ]
            expected = [
                (
                    p.voucher.code if p.voucher else None,
                    SUCCEEDED,
                    p.amount,
                    parent.id,
                    key,
                    order_amount,
                    self._order_of(kwargs)[0],
                    self._customer_of(kwargs)[1],
                    kwargs.get("metadata"),
                )
                for p in priced
            ]
            assert observed == expected, (observed, expected)
            self._check_parent_request(parent, kwargs)
            assert to_us(parent.date) == self.model.now, parent.date
            self.model.redeem_stack(priced, key, parent.id, [c.id for c in children], amount)
            self.model.keep(idempotency_key, request, (parent.id, *(c.id for c in children)))
            return parent.id
        expected_error = next(p.error for p in priced if p.status != APPLICABLE)
        assert error == expected_error, (error, expected_error)
        found = FAILED_PARENT.search(raised[0].details or "")
        assert found is not None, raised[0].details
        parent_id = found.group(1)
        self._check_parent_request(self.engine.get_parent_redemption(parent_id), kwargs)
        self.model.fail_stack(priced, key, parent_id)
        return parent_id

    def _check_parent_request(self, parent: Any, kwargs: dict[str, Any]) -> None:
        """A parent keeps the order, customer and metadata of its call."""
        order = (
            None
            if parent.order is None
            else (
                parent.order.id,
                parent.order.source_id,
                parent.order.amount,
                parent.order.metadata,
            )
        )
        customer = (
            None
            if parent.customer is None
            else (parent.customer.id, parent.customer.source_id, parent.customer.metadata)
        )
        wanted_order, wanted_customer = self._order_of(kwargs), self._customer_of(kwargs)
        assert order == (None if wanted_order == (None,) * 4 else wanted_order), parent.order
        assert customer == (None if wanted_customer == (None,) * 3 else wanted_customer), parent
        assert parent.metadata == kwargs.get("metadata"), parent.metadata

    def _rollback_stack(
        self, parent_id: str, reason: str | None, idempotency_key: str | None
    ) -> None:
        rolled, error = outcome(
            lambda: self.engine.rollback_stacked_redemptions(
                parent_id, reason=reason, idempotency_key=idempotency_key
            )
        )
        request = json.dumps(["rollback", parent_id, reason])
        if idempotency_key is not None:
            self.keyed_rollback = (parent_id, reason, idempotency_key)
        try:
            parent = self.model.stack_rollback_refusal(parent_id)
            kept = self.model.kept(idempotency_key)
            if kept is not None and kept.request != request:
                raise Refusal("idempotency_key_reused")
            keys = self.model.rollback_keys(parent.status, parent.date)
            if kept is None and keys:
                raise Refusal(*keys)
        except Refusal as refusal:
            assert error in refusal.keys, (error, refusal.keys)
            return
        assert error is None, error
        ids = (rolled.parent_rollback.id, *(r.id for r in rolled.rollbacks))
        if kept is not None:  # a retry: this rollback again, not already_rolled_back
            assert ids == kept.result, (ids, kept.result)
            return
        head = rolled.parent_rollback
        observed = (head.redemption_id, head.amount, head.reason, to_us(head.date))
        assert observed == (parent_id, -parent.amount, reason, self.model.now), head
        observed_children = [(r.redemption_id, r.voucher_code, r.amount) for r in rolled.rollbacks]
        expected_children = [(i, c.voucher.code, -c.amount) for i, c in parent.children]
        assert observed_children == expected_children, (observed_children, expected_children)
        self.model.rollback_stack(parent, head.id)
        self.model.keep(idempotency_key, request, ids)

    @precondition(lambda self: bool(self.model.vouchers))
    @rule(
        target=session_keys,
        items=stack_items,
        extra=stack_extras,
        order=stack_orders,
        lock=st.none() | st.tuples(st.none() | st.sampled_from(STACK_KEYS) | session_keys, ttls),
    )
    def validate_stacked_discounts(
        self,
        items: list[tuple[int, str | int, str, bool]],
        extra: tuple[str | None, int],
        order: tuple[int | None, str],
        lock: tuple[str | None, tuple[int, str] | None] | None,
    ) -> Any:
        """Validate a stack, maybe with a LOCK: under a generated key, the caller's own or
        one the machine used before (its locks on the stack's vouchers count as its own and
        are replaced; on other vouchers they stay)."""
        session: dict[str, Any] | None = None
        if lock is not None:
            key, ttl = lock
            session = {"type": "LOCK"}
            if key is not None:
                session["key"] = key
            if ttl is not None:
                session["ttl"], session["ttl_unit"] = ttl
        set_key = self._validate_stack(self._stack(items, extra), order, session)
        return multiple() if set_key is None else set_key

    @precondition(lambda self: bool(self.model.vouchers))
    @rule(
        target=parents,
        items=stack_items,
        extra=stack_extras,
        order=stack_orders,
        key=st.none() | session_keys | stale_keys,
        as_mapping=st.booleans(),
        idempotency_key=idempotency_keys,
    )
    def redeem_stacked_discounts(
        self,
        items: list[tuple[int, str | int, str, bool]],
        extra: tuple[str | None, int],
        order: tuple[int | None, str],
        key: str | None,
        as_mapping: bool,
        idempotency_key: str | None,
    ) -> Any:
        """Redeem a stack with no session, or a key that may lock some of its vouchers (or
        others, or none any more)."""
        return self._redeem_stack(
            self._stack(items, extra), order, key, idempotency_key, as_mapping
        )

    @precondition(lambda self: bool(self.model.vouchers))
    @rule(
        target=parents,
        items=stack_items,
        order=stack_orders,
        key=st.none() | st.sampled_from(STACK_KEYS),
        ttl=ttls,
        step=st.sampled_from((0, 0, 1, SECOND, MINUTE)),
        as_mapping=st.booleans(),
        idempotency_key=idempotency_keys,
    )
    def lock_then_redeem_a_stack(
        self,
        items: list[tuple[int, str | int, str, bool]],
        order: tuple[int | None, str],
        key: str | None,
        ttl: tuple[int, str] | None,
        step: int,
        as_mapping: bool,
        idempotency_key: str | None,
    ) -> Any:
        """Lock a stack under one key, let *step* µs pass (the locks may end meanwhile) and
        redeem it with that key: each lock counts as its own, and every one is released."""
        session: dict[str, Any] = {"type": "LOCK"}
        if key is not None:
            session["key"] = key
        if ttl is not None:
            session["ttl"], session["ttl_unit"] = ttl
        entries = self._stack(items, (None, 0))
        locked = self._validate_stack(entries, order, session)
        if locked is None:
            return multiple()
        self._move_clock_to(self.model.now + step)
        return self._redeem_stack(entries, order, locked, idempotency_key, as_mapping)

    @precondition(lambda self: self.locked_stack is not None)
    @rule(
        target=parents,
        with_key=st.sampled_from((True, True, True, False)),
        idempotency_key=idempotency_keys,
    )
    def redeem_the_locked_stack(self, with_key: bool, idempotency_key: str | None) -> Any:
        """Redeem the stack the last valid stacked validation locked, with its key (each lock
        counts as its own, all released) or without (its locks then count against it)."""
        assert self.locked_stack is not None
        entries, order, key = self.locked_stack
        return self._redeem_stack(entries, order, key if with_key else None, idempotency_key)

    @precondition(lambda self: self.keyed_stack is not None)
    @rule(target=parents)
    def retry_the_keyed_stacked_redemption(self) -> Any:
        """The last keyed stacked redemption sent again: its first result while the key is
        kept (if it succeeded), anew otherwise."""
        assert self.keyed_stack is not None
        entries, order, key, idempotency_key = self.keyed_stack
        return self._redeem_stack(entries, order, key, idempotency_key)

    @precondition(lambda self: self.keyed_rollback is not None)
    @rule()
    def retry_the_keyed_stack_rollback(self) -> None:
        """The last keyed stacked rollback sent again: this rollback again while the key is
        kept (not ``already_rolled_back``)."""
        assert self.keyed_rollback is not None
        self._rollback_stack(*self.keyed_rollback)

    @rule(
        parent_id=parents,
        reason=rollback_reasons,
        idempotency_key=idempotency_keys,
    )
    def rollback_stacked_redemptions(
        self, parent_id: str, reason: str | None, idempotency_key: str | None
    ) -> None:
        """Roll back a stack: SUCCEEDED, FAILED or rolled back already (an id that names no
        parent: :meth:`rollback_a_stack_child`)."""
        self._rollback_stack(parent_id, reason, idempotency_key)

    @precondition(lambda self: any(p.children for p in self.model.parents.values()))
    @rule(
        pick=st.integers(0, 15),
        mix=st.sampled_from(("child alone",) * 3 + ("child as parent", "parent alone")),
    )
    def rollback_a_stack_child(self, pick: int, mix: str) -> None:
        """A child alone cannot be rolled back (``invalid_redemption``); a child is no parent
        and a parent no single redemption (``not_found``)."""
        children = [i for p in self.model.parents.values() for i, _ in p.children]
        child_id = children[pick % len(children)]
        if mix == "child alone":
            self._rollback(child_id)
            return
        if mix == "child as parent":
            _, error = outcome(lambda: self.engine.rollback_stacked_redemptions(child_id))
        else:
            parent_id = sorted(self.model.parents)[pick % len(self.model.parents)]
            _, error = outcome(lambda: self.engine.rollback_redemption(parent_id))
        assert error == "not_found", (mix, error)

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
        for parent_id, parent in self.model.parents.items():
            self._compare_parent(parent_id, parent)

    def _compare_parent(self, parent_id: str, parent: ModelParent) -> None:
        got = self.engine.get_parent_redemption(parent_id)
        observed = (
            str(got.status),
            got.amount,
            to_us(got.date),
            got.redemptions,
            got.voucher_ids,
            got.session_key,
            got.failure_code,
            got.failed_redeemable,
            got.rollback_id,
        )
        expected = (
            parent.status,
            parent.amount,
            parent.date,
            tuple(i for i, _ in parent.children),
            tuple(c.voucher.id for _, c in parent.children),
            parent.session_key,
            parent.failure_code,
            parent.failed_redeemable,
            parent.rollback_id,
        )
        assert observed == expected, (parent_id, observed, expected)

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
        if loyalty:
            self._compare_points(code, voucher, got)

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
        log = [(str(t.type), t.amount, t.balance, to_us(t.created_at)) for t in page.data]
        model_log = [entry[:4] for entry in voucher.transactions]
        assert log == model_log, (code, log, model_log)
        for tx, (*_, links) in zip(page.data, voucher.transactions, strict=True):
            if links is not None:
                got_links = (tx.related_transaction_id, tx.details)
                assert got_links == links, (code, tx, links)

        attempts = [
            (str(r.status), None if str(r.status) == FAILED else r.amount, r.failure_code)
            for r in self.engine.list_redemptions(code)
        ]
        model_attempts = [
            (r.status, None if r.status == FAILED else r.amount, r.failure_code)
            for r in voucher.redemptions
        ]
        assert attempts == model_attempts, (code, attempts, model_attempts)

    def _compare_points(self, code: str, voucher: ModelVoucher, got: Any) -> None:
        """Expired points and the next expiry; the model's buckets add up to its balance."""
        parts = [*voucher.expiring, *voucher.lasting]
        assert all(b.points > 0 for b in parts), parts
        assert voucher.pool >= 0
        assert voucher.balance == voucher.pool + sum(b.points for b in parts), voucher
        assert all(
            b.expires_at is not None and b.expires_at > self.model.now for b in voucher.expiring
        )
        soonest = min((b.expires_at for b in voucher.expiring), default=None)
        soonest_points = sum(b.points for b in voucher.expiring if b.expires_at == soonest)
        card = got.loyalty_card
        next_date = card.next_expiration_date
        observed = (
            card.expired_points,
            None if next_date is None else to_us(next_date),
            card.next_expiration_points,
        )
        expected = (voucher.expired_points, soonest, soonest_points if soonest else None)
        assert observed == expected, (code, observed, expected)


EngineAgainstModel.TestCase.settings = settings(stateful_step_count=80)
TestEngineAgainstModel = EngineAgainstModel.TestCase


class LoyaltyCardsAgainstModel(EngineAgainstModel):
    """The same machine and model, on loyalty cards only: two opened at the start (more may
    come), and none of the rules for other voucher types or for requests of random amounts,
    so that most steps add, accrue, lock, spend, move, cancel or expire points."""

    # not rules here: other voucher types, and validations/redemptions of random amounts
    create_discount_voucher = None
    create_gift_voucher = None
    create_vouchers_to_stack = None
    # stacks of cards: only redeemed (at once, or locked first) and rolled back
    validate_stacked_discounts = None
    redeem_the_locked_stack = None
    retry_the_keyed_stacked_redemption = None
    retry_the_keyed_stack_rollback = None
    rollback_a_stack_child = None
    validate_without_session = None
    validate_with_caller_key = None
    validate_with_generated_key = None
    redeem_without_key = None
    redeem_with_stale_key = None
    use_any_code = None
    force_delete_soft_deleted_code = None
    validate_again_with_same_key = None
    update_voucher_balance = None
    advance_clock = None

    @initialize(target=EngineAgainstModel.vouchers, points=st.integers(0, 500))
    def open_first_card(self, points: int) -> Any:
        return self.create_loyalty_card("C1", points, None, (None, None), True)

    @initialize(target=EngineAgainstModel.vouchers, points=st.integers(0, 500))
    def open_second_card(self, points: int) -> Any:
        return self.create_loyalty_card("C2", points, None, (None, None), True)


LoyaltyCardsAgainstModel.TestCase.settings = settings(stateful_step_count=80)
TestLoyaltyCardsAgainstModel = LoyaltyCardsAgainstModel.TestCase


def _points_left_after_a_late_read(
    *, sweep_sessions_first: bool = False, fail_first: bool = False
) -> tuple[Any, ...]:
    """A card with 100 points expiring in 1 h, locked 30 by a session of 2 h and 30 by one
    of 10 h; the card is next read 3 h later — right after a session sweep, or a call on it
    that fails, or neither."""
    clock = FakeClock(START)
    engine = Engine(clock=clock, seed=1234)
    engine.create_voucher("L", loyalty_card={"points": 0})
    engine.update_voucher_balance("L", 100, expires_at=START + timedelta(hours=1))
    for key, hours in (("short", 2), ("long", 10)):
        lock = {"type": "LOCK", "key": key, "ttl": hours, "ttl_unit": "HOURS"}
        assert engine.validate_voucher("L", points=30, session=lock).valid
    clock.advance(hours=3)
    if sweep_sessions_first:
        assert engine.expire_sessions() == 1  # the 2 h lock, ended an hour ago
    if fail_first:
        _, error = outcome(lambda: engine.update_voucher_balance("L", -1_000))
        assert error == "invalid_add_balance_params"
    card = engine.get_voucher("L").loyalty_card
    log = engine.list_voucher_transactions("L", limit=100, order="id").data
    return card.balance, card.expired_points, [(str(t.type), t.amount) for t in log]


def test_a_late_read_expires_points_as_of_their_own_instant() -> None:
    """At 1 h both locks were live (60 held): 40 expire then, 60 stay until the 10 h lock
    ends — also when the card is read only at 3 h, after the 2 h lock ended."""
    assert _points_left_after_a_late_read(sweep_sessions_first=False) == (
        60,
        40,
        [("POINTS_ADDITION", 100), ("POINTS_EXPIRATION", -40)],
    )


def test_a_session_sweep_does_not_change_which_points_expire() -> None:
    """Housekeeping must not change history: the same card, read at the same instant, with
    or without ``expire_sessions()`` run before."""
    assert _points_left_after_a_late_read(
        sweep_sessions_first=True
    ) == _points_left_after_a_late_read(sweep_sessions_first=False)


def test_a_failed_call_does_not_change_which_points_expire() -> None:
    """A failed call changes nothing: the card read after it is the card read without it."""
    assert _points_left_after_a_late_read(fail_first=True) == _points_left_after_a_late_read()
