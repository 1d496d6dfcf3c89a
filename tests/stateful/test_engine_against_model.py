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

:class:`LoyaltyCardsAgainstModel` runs the same rules on loyalty cards only, so that most
steps add, accrue, lock, spend, transfer, cancel or expire points.
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
    """The README's rules restated with plain data: the engine's expected behaviour, step by
    step."""

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
