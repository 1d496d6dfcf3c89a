"""A seeded day of point-of-sale traffic: the job behind ``vouchercore simulate``.

Several terminals share one voucher book and one simulated clock. Each terminal draws its
traffic from its own seeded generator: validations that lock a voucher and then redeem with the
session key, carts abandoned with their lock still held (they expire), plain redemptions, manual
releases, rollbacks of earlier redemptions, gift-card top-ups and removals, and the occasional
disable/enable. Loyalty cards also earn points for orders (accruals, about half of them expiring
within the simulated day), some accruals are cancelled (by transaction or order id; some twice),
points move between cards (about a third of the transfers on one hot pair of cards, in both
directions, so terminals cross), and every terminal sweeps expired points
(``engine.expire_points()``) every :data:`SWEEP_EVERY` steps. Redemptions, balance updates,
accruals, cancellations and transfers carry idempotency keys, and a quarter of them are sent
twice. With one terminal (thread) the same seed gives the same report, call for call.

Stacked carts: a share of the carts (``stacked_share``, default :data:`STACKED_SHARE`; of the
validations that lock and of the plain redemptions) pay with a discount code plus a gift card
in ONE call instead of one voucher: ``validate_stacked_discounts`` with a LOCK session (the
cart is then redeemed with ``redeem_stacked_discounts`` and that session key, abandoned or
released like any cart), or ``redeem_stacked_discounts`` straight away. Each carries an order
(id and amount) and a customer; half ask the gift card for explicit credits, the rest let it
pay what the order still owes. Stacked redemptions carry idempotency keys and are retried as
the single ones are; some are later rolled back whole (``rollback_stacked_redemptions``). The
report counts the stacked redemptions that succeeded, failed and were rolled back. With a
share of 0 the traffic is exactly that of a run without stacks (no random draw is added).

Two ways to run the terminals:

* threads (the default): one :class:`~vouchercore.engine.Engine` on the store (in-memory by
  default, or a SQLite/PostgreSQL URL), a :class:`~vouchercore.clock.FakeClock`;
* processes (``processes=N``, SQL stores only): the parent creates the vouchers, then N OS
  processes (``spawn``) each open their own engine on the store URL and run one terminal; the
  parent collects their outcome counts, sweeps and audits. A terminal process exits when the
  parent dies, even by SIGKILL (:func:`_exit_with_parent`): none is left waiting for a go.

The clock across processes: a :class:`SharedClock`, the simulated instant kept in shared memory
(an 8-byte integer of microseconds behind a lock). Every process reads it once per operation
(as the engine reads any clock) and advances it after each step, so all terminals live in ONE
simulated time that only moves forward — exactly the semantics of the threaded run on one
``FakeClock``. Session expiry stays exact (a session is live while ``now < expires_at`` for
whoever reads it), the TTLs stay the realistic 30 s–15 min of simulated time instead of being
shortened to fit a wall-clock run, and the final sweep and the audit run in the parent at the
last simulated instant, after every terminal has stopped. (Not chosen: the system clock, which
would need TTLs of milliseconds and makes expiry depend on scheduling; one FakeClock per
process, whose instants would disagree between processes, so one process's expired lock would
be another's live one and time would run backwards on a voucher.) As with threads, an operation
that read the clock just before another terminal advanced it commits with the earlier instant.

Ids across processes: the parent's engine is seeded with ``seed`` (it only makes vouchers);
process *i* seeds its engine with ``seed + 1 + i`` and its traffic with ``seed * 1000 + i`` (as
thread *i* does), so no two engines draw the same id or session key stream. A run with processes
is not reproducible call for call (the interleaving is the operating system's); its audit must
still pass.
"""

from __future__ import annotations

import ctypes
import functools
import json
import multiprocessing
import os
import queue
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import attrs

from vouchercore.clock import Clock, FakeClock
from vouchercore.domain.instants import from_us, to_us
from vouchercore.domain.snapshots import (
    AuditReport,
    PointsCancellation,
    PointsTransfer,
    StackedRedemption,
    Transaction,
)
from vouchercore.engine import Engine
from vouchercore.errors import VoucherError

__all__ = ["SharedClock", "SimulationError", "SimulationReport", "simulate"]

SIMULATION_START = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)

#: How long the parent waits for a terminal process to open its engine (seconds).
PROCESS_START_TIMEOUT = 120.0

#: How often a terminal process checks that its parent is still alive (seconds).
PARENT_POLL_SECONDS = 0.5

#: The share of steps that are loyalty traffic (accruals, cancellations, transfers).
LOYALTY_SHARE = 0.12

#: Every terminal sweeps expired loyalty points (``engine.expire_points()``) every so many steps.
SWEEP_EVERY = 250

#: The points tallies of a report, in the order printed.
POINTS_TALLIES = ("accrued", "cancelled", "transferred", "expired", "swept")

#: The default share of the carts that pay with a discount code plus a gift card in one
#: stacked call (of the validations that lock and of the plain redemptions).
STACKED_SHARE = 0.1

#: The operations (report rows) that are stacked redemptions; each also has a `` retry`` row.
STACKED_REDEEMS = ("stacked redeem", "stacked redeem(session_key)")

#: The stacked-redemption tallies of a report, in the order printed.
STACKED_TALLIES = ("succeeded", "failed", "rolled back")


class SimulationError(RuntimeError):
    """A terminal process failed (its error is in the message); the run was stopped."""


def _check_stacked_share(value: object) -> float:
    """*value* as a share of stacked carts: a finite number from 0 to 1.

    Raises:
        ValueError: not a number (bools neither), not finite, or out of 0–1.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"the stacked share must be a number from 0 to 1, got {value!r}")
    share = float(value)
    if not 0.0 <= share <= 1.0:  # NaN fails both comparisons
        raise ValueError(f"the stacked share must be a number from 0 to 1, got {value!r}")
    return share


class SharedClock(Clock):
    """A simulated clock in shared memory: every process of a simulation reads and advances the
    same instant, which only moves forward.

    Made in the parent and handed to each process as an argument of
    :class:`multiprocessing.Process` (shared memory crosses ``spawn`` that way only).

    Args:
        start: the initial instant (aware).
        context: the multiprocessing context the processes will be started with.
    """

    def __init__(self, start: datetime, context: Any = None) -> None:
        ctx = context if context is not None else multiprocessing.get_context("spawn")
        self._us = ctx.Value("q", to_us(start, "start"))

    def now(self) -> datetime:
        return from_us(self.now_us())

    def now_us(self) -> int:
        value: int = self._us.value  # a synchronized Value: read under its lock
        return value

    def advance(self, *, microseconds: int = 0) -> None:
        """Move forward by *microseconds* (≥ 0), atomically for every process."""
        if microseconds < 0:
            raise ValueError("a SharedClock never moves backwards")
        with self._us.get_lock():
            self._us.value += microseconds


class _SimClock(Protocol):
    def advance(self, *, microseconds: int = 0) -> None: ...


@attrs.frozen(kw_only=True)
class SimulationReport:
    """What a simulation did (``outcomes``: (operation, outcome) → count) and the audit."""

    seed: int
    terminals: int
    vouchers: int
    operations: int
    outcomes: dict[tuple[str, str], int]
    sessions: dict[str, int]
    swept_sessions: int
    simulated_seconds: float
    elapsed_seconds: float
    audit: AuditReport
    store: str = ""  # the store's URL (password hidden); "" for the in-memory default
    processes: bool = False  # terminals ran as OS processes
    #: loyalty points: accrued, cancelled (taken back), transferred, expired (in all, on the
    #: cards at the end) and swept (of those, by ``expire_points()`` sweeps; the rest lazily)
    points: dict[str, int] = attrs.field(factory=dict)
    #: the share of the carts that paid with a discount code plus a gift card in one call
    stacked_share: float = 0.0

    @property
    def stacked(self) -> dict[str, int]:
        """Stacked redemption calls (:data:`STACKED_TALLIES`): those that succeeded (each
        recorded one SUCCEEDED parent), failed (each recorded one FAILED parent) and the
        stacked redemptions rolled back whole. A retry that replayed its first answer made
        no new call and is in neither."""
        tallies = dict.fromkeys(STACKED_TALLIES, 0)
        calls = {*STACKED_REDEEMS, *(f"{operation} retry" for operation in STACKED_REDEEMS)}
        for (operation, outcome), count in self.outcomes.items():
            if operation in calls and outcome not in ("replayed", _DOUBLE):
                tallies["succeeded" if outcome == "ok" else "failed"] += count
        tallies["rolled back"] = self.outcomes.get(("stacked rollback", "ok"), 0)
        return tallies

    @property
    def retries_double_applied(self) -> int:
        """Retried calls (same idempotency key and request) whose answer differed from the
        first call's — an effect applied twice. Always 0 unless something is broken."""
        return sum(n for (_, outcome), n in self.outcomes.items() if outcome == _DOUBLE)

    @property
    def ok(self) -> bool:
        """True when the audit found nothing wrong and every retry replayed its first answer."""
        return self.audit.ok and self.retries_double_applied == 0

    def lines(self) -> list[str]:
        """The report as text lines; timing lines are marked with ``[timing]``."""
        kind = "terminal process(es)" if self.processes else "terminal(s)"
        where = f" on {self.store}" if self.store else ""
        out = [
            f"vouchercore simulate: seed {self.seed}, {self.terminals} {kind}, "
            f"{self.vouchers} vouchers, {self.operations} operations{where}",
            f"simulated time: {self.simulated_seconds / 3600:.2f} h",
        ]
        width = max([22, *(len(operation) for operation, _ in self.outcomes)])
        out.append("")
        out.append(f"{'operation':<{width}} {'outcome':<30} {'count':>8}")
        for (operation, outcome), count in sorted(self.outcomes.items()):
            out.append(f"{operation:<{width}} {outcome:<30} {count:>8}")
        out.append("")
        out.append("sessions: " + ", ".join(f"{k} {v}" for k, v in sorted(self.sessions.items())))
        out.append(f"sessions purged by the final sweep: {self.swept_sessions}")
        if self.points:
            expired, swept = self.points.get("expired", 0), self.points.get("swept", 0)
            out.append(
                "loyalty points: "
                + ", ".join(f"{k} {self.points.get(k, 0)}" for k in POINTS_TALLIES[:3])
                + f", expired {expired} ({swept} by expire_points sweeps, "
                f"{expired - swept} lazily)"
            )
        if self.stacked_share:
            out.append(
                f"stacked redemptions (discount + gift card, {self.stacked_share * 100:g}% of "
                "carts): " + ", ".join(f"{v} {k}" for k, v in self.stacked.items())
            )
        out.append("")
        out.extend(str(self.audit).splitlines())
        if self.retries_double_applied:
            out.append(f"RETRIES APPLIED TWICE: {self.retries_double_applied}")
        rate = self.operations / self.elapsed_seconds if self.elapsed_seconds else 0.0
        out.append(f"[timing] {self.elapsed_seconds:.2f} s wall, {rate:,.0f} operations/s")
        return out


@attrs.frozen(kw_only=True)
class _Ask:
    credits: int | None = None
    points: int | None = None
    order_amount: int | None = None


@attrs.frozen(kw_only=True)
class _Stack:
    """A cart paid with a discount code plus a gift card in one stacked call."""

    discount: str
    gift: str
    credits: int | None  # asked of the gift card; None: it pays what the order still owes
    order_id: str
    order_amount: int
    customer: str  # the customer's source id

    @property
    def codes(self) -> tuple[str, str]:
        return self.discount, self.gift

    def redeemables(self) -> list[dict[str, Any]]:
        gift: dict[str, Any] = {"object": "voucher", "id": self.gift}
        if self.credits is not None:
            gift["gift"] = {"credits": self.credits}
        return [{"object": "voucher", "id": self.discount}, gift]

    def order(self) -> dict[str, Any]:
        return {"id": self.order_id, "amount": self.order_amount}

    def customer_object(self) -> dict[str, Any]:
        return {"source_id": self.customer}


class _Terminal:
    """One till: its own random stream, its open carts and its past redemptions."""

    def __init__(
        self,
        engine: Engine,
        clock: _SimClock,
        seed: int,
        codes: dict[str, str],
        max_step_us: int,
        stacked_share: float = STACKED_SHARE,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.rng = random.Random(seed)
        self.seed = seed
        self.codes = codes  # code → type
        self.code_list = sorted(codes)
        self.cards = sorted(c for c, kind in codes.items() if kind != "DISCOUNT_VOUCHER")
        self.loyalty = sorted(c for c, kind in codes.items() if kind == "LOYALTY_CARD")
        self.hot_pair = tuple(self.loyalty[:2])  # every terminal's crossing transfers
        self.discounts = sorted(c for c, kind in codes.items() if kind == "DISCOUNT_VOUCHER")
        self.gifts = sorted(c for c, kind in codes.items() if kind == "GIFT_VOUCHER")
        # no stack (and no random draw for one) without a discount and a gift card to stack
        self.stacked_share = stacked_share if self.discounts and self.gifts else 0.0
        self.max_step_us = max_step_us
        self.disabled: list[str] = []
        # (code, session key, what was locked): one voucher, or a stack under one key
        self.carts: list[tuple[str, str, _Ask | _Stack]] = []
        self.redemptions: list[tuple[str, bool]] = []  # (redemption id, a stacked parent)
        self.accruals: list[tuple[str, str, str | None]] = []  # (code, transaction id, order)
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.points: Counter[str] = Counter()  # loyalty points tallies (POINTS_TALLIES)
        self.keys = 0  # idempotency keys this till has used
        self.steps = 0
        self.orders = 0
        self.stacks = 0  # stacked carts this till has made (their order ids)

    def once(self, operation: str, call: Callable[[str | None], object]) -> object | None:
        """Make *call* with a fresh idempotency key; a quarter of the time the answer is "lost"
        and the till sends the very same call again: it must get the same answer back (an
        equal result, or the same error key), never a second effect."""
        self.keys += 1
        key = f"{self.seed}-{self.keys}"
        first = self.attempt(operation, lambda: call(key))
        if self.rng.random() < 0.25:
            try:
                again: object = call(key)
            except VoucherError as error:
                again = error.key
            if first is None:
                # the first call failed and kept nothing: the retry runs anew (may succeed)
                self.record(f"{operation} retry", "ok" if not isinstance(again, str) else again)
                return None if isinstance(again, str) else again
            self.record(f"{operation} retry", "replayed" if again == first else _DOUBLE)
        return first

    def record(self, operation: str, outcome: str) -> None:
        self.outcomes[operation, outcome] += 1

    def attempt(self, operation: str, call: Callable[[], object]) -> object | None:
        try:
            result = call()
        except VoucherError as error:
            self.record(operation, error.key)
            return None
        self.record(operation, "ok")
        return result

    def _ask(self, code: str) -> _Ask:
        """What a customer asks of a voucher: credits, points, or an order to discount."""
        kind = self.codes[code]
        order = self.rng.randrange(500, 20_000)
        if kind == "GIFT_VOUCHER":
            return _Ask(credits=self.rng.randrange(100, 5_000))
        if kind == "LOYALTY_CARD":
            return _Ask(points=self.rng.randrange(10, 400))
        return _Ask(order_amount=order)

    def _stacked(self) -> bool:
        """Does this cart pay with a stack? Draws nothing when the share is 0."""
        return bool(self.stacked_share) and self.rng.random() < self.stacked_share

    def _stack(self) -> _Stack:
        """A discount code plus a gift card for one order; half the time the card is asked
        for explicit credits, else it pays what the discount leaves."""
        rng = self.rng
        self.stacks += 1
        return _Stack(
            discount=rng.choice(self.discounts),
            gift=rng.choice(self.gifts),
            credits=rng.randrange(100, 5_000) if rng.random() < 0.5 else None,
            order_id=f"cart-{self.seed}-{self.stacks}",
            order_amount=rng.randrange(500, 20_000),
            customer=f"customer-{rng.randrange(100)}",
        )

    def _redeem_stack(self, stack: _Stack, session_key: str | None) -> None:
        """Redeem *stack* in one call (with the LOCK of its validation, if any), keyed and
        retried as the single redemptions are."""
        engine = self.engine
        found = self.once(
            "stacked redeem" if session_key is None else "stacked redeem(session_key)",
            lambda key: engine.redeem_stacked_discounts(
                stack.redeemables(),
                order=stack.order(),
                customer=stack.customer_object(),
                session=session_key,
                idempotency_key=key,
            ),
        )
        if isinstance(found, StackedRedemption):
            self.redemptions.append((found.parent_redemption.id, True))

    def step(self) -> None:
        """One customer interaction (every :data:`SWEEP_EVERY` steps, a sweep of expired
        points instead), then the simulated clock moves on a random step."""
        rng, engine = self.rng, self.engine
        self.steps += 1
        roll = rng.random()
        code = rng.choice(self.code_list)
        loyalty = bool(self.loyalty) and roll >= 1 - LOYALTY_SHARE
        if self.loyalty:
            roll /= 1 - LOYALTY_SHARE  # the rest of the traffic keeps its proportions
        if self.steps % SWEEP_EVERY == 0:
            swept = engine.expire_points()
            self.record("expire_points sweep", "expired points" if swept else "nothing due")
            self.points["swept"] += swept
        elif loyalty:
            self._loyalty()
        elif roll < 0.30 and self._stacked():
            stack = self._stack()
            ttl = rng.choice((30, 120, 600, 900))
            checked = engine.validate_stacked_discounts(
                stack.redeemables(),
                order=stack.order(),
                customer=stack.customer_object(),
                session={"type": "LOCK", "ttl": ttl, "ttl_unit": "SECONDS"},
            )
            if checked.valid and checked.session_key is not None:
                self.record("stacked validate+lock", "ok")
                self.carts.append((stack.discount, checked.session_key, stack))
            else:
                self.record("stacked validate+lock", (checked.error or _NO).key)
        elif roll < 0.30:
            ask = self._ask(code)
            ttl = rng.choice((30, 120, 600, 900))
            result = engine.validate_voucher(
                code,
                credits=ask.credits,
                points=ask.points,
                order_amount=ask.order_amount,
                session={"type": "LOCK", "ttl": ttl, "ttl_unit": "SECONDS"},
            )
            if result.valid and result.session is not None:
                self.record("validate+lock", "ok")
                self.carts.append((code, result.session.key, ask))
            else:
                self.record("validate+lock", result.error.key if result.error else "invalid")
        elif roll < 0.52 and self.carts:
            code, key, cart = self.carts.pop(rng.randrange(len(self.carts)))
            if isinstance(cart, _Stack):
                self._redeem_stack(cart, key)
            else:
                self._redeem_cart(code, key, cart)
        elif roll < 0.60 and self.carts:
            # the customer walks away: the lock stays until it expires
            self.carts.pop(rng.randrange(len(self.carts)))
            self.record("abandon cart", "ok")
        elif roll < 0.64 and self.carts:
            code, key, cart = self.carts.pop(rng.randrange(len(self.carts)))
            if isinstance(cart, _Stack):  # its lock is one session per voucher, one key
                for each in cart.codes:
                    release = functools.partial(engine.release_validation_session, each, key)
                    self.attempt("stacked release session", release)
            else:
                self.attempt(
                    "release session", lambda: engine.release_validation_session(code, key)
                )
        elif roll < 0.80 and self._stacked():
            self._redeem_stack(self._stack(), None)
        elif roll < 0.80:
            ask = self._ask(code)
            found = self.once(
                "redeem",
                lambda key: engine.redeem_voucher(
                    code,
                    credits=ask.credits,
                    points=ask.points,
                    order_amount=ask.order_amount,
                    idempotency_key=key,
                ),
            )
            if found is not None:
                self.redemptions.append((found.id, False))  # type: ignore[attr-defined]
        elif roll < 0.86:
            ask = self._ask(code)
            result = engine.validate_voucher(
                code, credits=ask.credits, points=ask.points, order_amount=ask.order_amount
            )
            self.record("validate", "ok" if result.valid else (result.error or _NO).key)
        elif roll < 0.91 and self.redemptions:
            redemption_id, stacked = self.redemptions.pop(rng.randrange(len(self.redemptions)))
            if stacked:  # the whole stack comes back: a child cannot be rolled back alone
                self.attempt(
                    "stacked rollback",
                    lambda: engine.rollback_stacked_redemptions(
                        redemption_id, reason="customer return"
                    ),
                )
            else:
                self.attempt(
                    "rollback",
                    lambda: engine.rollback_redemption(redemption_id, reason="customer return"),
                )
        elif roll < 0.97 and self.cards:
            code = rng.choice(self.cards)
            amount = rng.randrange(500, 10_000)
            if rng.random() < 0.3:
                amount = -amount // 4
            self.once(
                "top-up" if amount > 0 else "balance removal",
                lambda key: engine.update_voucher_balance(
                    code, amount, reason="simulation", idempotency_key=key
                ),
            )
        elif roll < 0.975:
            if self.attempt("disable", lambda: engine.disable_voucher(code)) is not None:
                self.disabled.append(code)
        elif self.disabled:
            code = self.disabled.pop(rng.randrange(len(self.disabled)))
            self.attempt("enable", lambda: engine.enable_voucher(code))
        self.clock.advance(microseconds=rng.randrange(0, self.max_step_us))

    def _redeem_cart(self, code: str, key: str, ask: _Ask) -> None:
        """Redeem a one-voucher cart with the session key its validation locked it under."""
        engine = self.engine
        found = self.attempt(
            "redeem(session_key)",
            lambda: engine.redeem_voucher(
                code,
                credits=ask.credits,
                points=ask.points,
                order_amount=ask.order_amount,
                session_key=key,
            ),
        )
        if found is not None:
            self.redemptions.append((found.id, False))  # type: ignore[attr-defined]

    def _loyalty(self) -> None:
        """A loyalty card earns points for an order, an accrual is cancelled, or points move
        between two cards (a third of the time on the hot pair, either way: transfers cross)."""
        rng, engine = self.rng, self.engine
        roll = rng.random()
        if roll < 0.15 and self.accruals:
            index = rng.randrange(len(self.accruals))
            # most are forgotten once cancelled; the rest may be cancelled again later
            code, transaction_id, order_id = (
                self.accruals[index] if rng.random() < 0.2 else self.accruals.pop(index)
            )
            by_order = order_id is not None and rng.random() < 0.5
            cancelled = self.once(
                "accrual cancellation",
                lambda key: engine.cancel_points_accrual(
                    code,
                    transaction_id=None if by_order else transaction_id,
                    order_id=order_id if by_order else None,
                    reason="order returned",
                    idempotency_key=key,
                ),
            )
            if isinstance(cancelled, PointsCancellation):
                self.points["cancelled"] += cancelled.cancelled
        elif roll < 0.55 or len(self.loyalty) < 2:
            code = rng.choice(self.loyalty)
            points = rng.randrange(10, 500)
            self.orders += 1
            order_id = f"order-{self.seed}-{self.orders}" if rng.random() < 0.6 else None
            expires_at = None
            if rng.random() < 0.5:  # expires within the simulated day (a day is ~operations
                # steps of max_step_us / 2): from a few steps to 12 h ahead
                ahead = 5 * self.max_step_us + rng.randrange(0, 12 * 3_600_000_000)
                expires_at = engine.clock.now() + timedelta(microseconds=ahead)
            accrued = self.once(
                "accrual" if expires_at is None else "accrual (expiring)",
                lambda key: engine.accrue_points(
                    code,
                    points,
                    order_id=order_id,
                    expires_at=expires_at,
                    reason="purchase",
                    idempotency_key=key,
                ),
            )
            if isinstance(accrued, Transaction):
                self.accruals.append((code, accrued.id, order_id))
                self.points["accrued"] += points
        else:
            hot = rng.random() < 0.35
            if hot:
                source, destination = self.hot_pair
                if rng.random() < 0.5:
                    source, destination = destination, source
            else:
                source, destination = rng.sample(self.loyalty, 2)
            points = rng.randrange(10, 600)
            moved = self.once(
                "points transfer (hot pair)" if hot else "points transfer",
                lambda key: engine.transfer_points(
                    source, destination, points, reason="gift to a friend", idempotency_key=key
                ),
            )
            if isinstance(moved, PointsTransfer):
                self.points["transferred"] += moved.points


_NO = VoucherError("no error")
_DOUBLE = "DOUBLE-APPLIED"  # a retry whose answer differed from the first call's


def _create_vouchers(engine: Engine, rng: random.Random, count: int) -> dict[str, str]:
    codes: dict[str, str] = {}
    for i in range(count):
        kind = rng.choice(("DISCOUNT_VOUCHER", "DISCOUNT_VOUCHER", "GIFT_VOUCHER", "LOYALTY_CARD"))
        code = f"SIM-{i:05d}"
        if kind == "GIFT_VOUCHER":
            engine.create_voucher(
                code,
                type=kind,
                gift={"amount": rng.randrange(5_000, 50_000)},
                quantity=rng.choice((None, None, 20)),
            )
        elif kind == "LOYALTY_CARD":
            engine.create_voucher(code, type=kind, loyalty_card={"points": rng.randrange(0, 3_000)})
        else:
            discount = rng.choice(
                (
                    {"type": "AMOUNT", "amount_off": rng.randrange(100, 2_000)},
                    {"type": "PERCENT", "percent_off": rng.choice((5, 10, 12.5, 25))},
                    {"type": "FIXED", "fixed_amount": rng.randrange(1_000, 5_000)},
                )
            )
            engine.create_voucher(
                code,
                type=kind,
                discount=discount,
                quantity=rng.choice((None, 5, 20, 100)),
            )
        codes[code] = kind
    return codes


def _public_url(url: str) -> str:
    """*url* without its password (for the report)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def simulate(
    *,
    seed: int = 1,
    terminals: int = 4,
    vouchers: int = 200,
    operations: int = 20_000,
    store: str = "memory://",
    processes: bool = False,
    progress: Callable[[int], None] | None = None,
    stacked_share: float = STACKED_SHARE,
) -> SimulationReport:
    """Run a simulated POS day on a fresh voucher book and audit it.

    Args:
        seed: seeds the engines' ids and every terminal's traffic.
        terminals: POS terminals racing on the same vouchers (threads, or processes).
        vouchers: how many vouchers to create (mixed types).
        operations: customer interactions in total (split between terminals).
        store: the store URL: ``memory://`` (default), ``sqlite:///path.db`` or
            ``postgresql://…``. The store must hold no voucher yet.
        processes: run each terminal in its own OS process with its own engine on *store*
            (a SQL store; see the module docstring for the clock they share).
        progress: called with the number of operations done so far, now and then.
        stacked_share: the share (0–1) of the carts that pay with a discount code plus a gift
            card in one stacked call (see the module docstring); 0 for none.

    Raises:
        ValueError: bad counts, a stacked share out of 0–1, ``processes`` on the in-memory
            store, or a store that holds vouchers already (also
            :class:`~vouchercore.errors.InvalidArgument` for a bad URL).
        StorageError: the store cannot be opened or fails.
        SimulationError: a terminal process failed.
    """
    if terminals < 1 or vouchers < 1 or operations < 0:
        raise ValueError("terminals and vouchers must be ≥ 1, operations ≥ 0")
    stacked_share = _check_stacked_share(stacked_share)
    in_memory = store.split("://", 1)[0].lower() == "memory"
    if processes and in_memory:
        raise ValueError(
            "terminal processes need a shared store: give a sqlite:/// or postgresql:// URL"
        )
    context = multiprocessing.get_context("spawn")
    clock: FakeClock | SharedClock = (
        SharedClock(SIMULATION_START, context) if processes else FakeClock(SIMULATION_START)
    )
    engine = Engine(store, clock=clock, seed=seed)
    try:
        if not in_memory and next(iter(engine.store.voucher_codes()), None) is not None:
            raise ValueError(
                f"the store {_public_url(store)} holds vouchers already: simulate needs an "
                "empty one (a new file or schema)"
            )
        codes = _create_vouchers(engine, random.Random(seed), vouchers)
        # spread the traffic over about one simulated day, whatever the number of operations
        max_step_us = max(2, 2 * 86_400_000_000 // max(operations, 1))
        shares = [operations // terminals + (i < operations % terminals) for i in range(terminals)]
        started = time.perf_counter()
        if isinstance(clock, SharedClock):
            outcomes, points, started = _run_processes(
                context, store, clock, seed, codes, max_step_us, shares, progress, stacked_share
            )
        else:
            outcomes, points = _run_threads(
                engine, clock, seed, codes, max_step_us, shares, progress, stacked_share
            )
        elapsed = time.perf_counter() - started

        swept = engine.expire_sessions()
        points["swept"] += engine.expire_points()
        points["expired"] = 0
        for code, kind in codes.items():
            if kind == "LOYALTY_CARD":
                card = engine.get_voucher(code).loyalty_card
                points["expired"] += 0 if card is None else card.expired_points
        counts = engine.store.session_counts()
        sessions = {"opened": counts.opened, **counts.resolved}
        return SimulationReport(
            seed=seed,
            terminals=terminals,
            vouchers=vouchers,
            operations=operations,
            outcomes=dict(outcomes),
            sessions=sessions,
            swept_sessions=swept,
            simulated_seconds=(clock.now() - SIMULATION_START).total_seconds(),
            elapsed_seconds=elapsed,
            audit=engine.audit(),
            store="" if in_memory else _public_url(store),
            processes=processes,
            points={name: points[name] for name in POINTS_TALLIES},
            stacked_share=stacked_share,
        )
    finally:
        engine.close()


def _run_threads(
    engine: Engine,
    clock: FakeClock,
    seed: int,
    codes: dict[str, str],
    max_step_us: int,
    shares: Sequence[int],
    progress: Callable[[int], None] | None,
    stacked_share: float,
) -> tuple[Counter[tuple[str, str]], Counter[str]]:
    """One thread per terminal on one engine; their outcome counts and points tallies."""
    terminals = len(shares)
    tills = [
        _Terminal(engine, clock, seed * 1_000 + i, codes, max_step_us, stacked_share)
        for i in range(terminals)
    ]
    done = [0] * terminals
    barrier = threading.Barrier(terminals)

    def run(index: int) -> None:
        barrier.wait()
        till = tills[index]
        for n in range(shares[index]):
            till.step()
            done[index] = n + 1

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(terminals)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        for thread in threads:
            thread.join(timeout=0.1)
        if progress is not None:
            progress(sum(done))
    if progress is not None:
        progress(sum(done))
    outcomes: Counter[tuple[str, str]] = Counter()
    points: Counter[str] = Counter()
    for till in tills:
        outcomes.update(till.outcomes)
        points.update(till.points)
    return outcomes, points


def _run_processes(
    context: Any,
    store: str,
    clock: SharedClock,
    seed: int,
    codes: dict[str, str],
    max_step_us: int,
    shares: Sequence[int],
    progress: Callable[[int], None] | None,
    stacked_share: float,
) -> tuple[Counter[tuple[str, str]], Counter[str], float]:
    """One process per terminal, each with its own engine on *store*; their outcome counts,
    points tallies and the instant (``perf_counter``) they were all ready and told to go."""
    terminals = len(shares)
    done = context.Array("q", terminals, lock=False)  # each slot written by one process only
    go = context.Event()
    messages = context.Queue()
    workers = [
        context.Process(
            target=_terminal_process,
            args=(
                os.getpid(),
                i,
                store,
                clock,
                seed,
                codes,
                max_step_us,
                shares[i],
                done,
                go,
                messages,
                stacked_share,
            ),
            name=f"vouchercore-terminal-{i}",
            daemon=True,
        )
        for i in range(terminals)
    ]
    for worker in workers:
        worker.start()
    outcomes: Counter[tuple[str, str]] = Counter()
    points: Counter[str] = Counter()
    try:
        ready = 0
        deadline = time.monotonic() + PROCESS_START_TIMEOUT
        while ready < terminals:
            message = _next_message(messages, workers, deadline)
            _raise_if_failed(message)
            ready += 1
        _pause_before_go(workers)
        started = time.perf_counter()
        go.set()
        finished = 0
        while finished < terminals:
            message = _next_message(messages, workers, None, lambda: _report(progress, done))
            _raise_if_failed(message)
            counts, tallies = message[2]
            outcomes.update({(op, outcome): n for op, outcome, n in counts})
            points.update(dict(tallies))
            finished += 1
        for worker in workers:
            worker.join()
        _report(progress, done)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
                worker.join()
    return outcomes, points, started


# A test hook, not a feature: when the environment variable names a file, the parent writes its
# own pid and its terminal processes' pids there (JSON, atomically) once every terminal is ready,
# then sleeps instead of telling them to go, so a test can SIGKILL the parent at exactly that
# point (tests/processes/test_simulate_orphans.py).
_PAUSE_BEFORE_GO = "VOUCHERCORE_SIMULATE_PAUSE_BEFORE_GO"


def _pause_before_go(workers: Sequence[Any]) -> None:
    path = os.environ.get(_PAUSE_BEFORE_GO)
    if not path:
        return
    pids = {"parent": os.getpid(), "workers": [worker.pid for worker in workers]}
    with open(f"{path}.tmp", "w", encoding="utf-8") as file:
        json.dump(pids, file)
    os.replace(f"{path}.tmp", path)
    time.sleep(3_600)  # until the test kills this process


def _report(progress: Callable[[int], None] | None, done: Sequence[int]) -> None:
    if progress is not None:
        progress(sum(done))


def _next_message(
    messages: Any,
    workers: Sequence[Any],
    deadline: float | None,
    tick: Callable[[], None] | None = None,
) -> tuple[str, int, Any]:
    """The next message of a terminal process; raises if one died without a word or the
    deadline passed."""
    while True:
        try:
            message: tuple[str, int, Any] = messages.get(timeout=0.1)
        except queue.Empty:
            pass
        else:
            return message
        if tick is not None:
            tick()
        for i, worker in enumerate(workers):
            if worker.exitcode not in (None, 0):
                raise SimulationError(f"terminal process {i} died (exit code {worker.exitcode})")
        if deadline is not None and time.monotonic() > deadline:
            raise SimulationError("terminal processes did not start in time")


def _raise_if_failed(message: tuple[str, int, Any]) -> None:
    kind, index, detail = message
    if kind == "failed":
        raise SimulationError(f"terminal process {index} failed: {detail}")


def _terminal_process(
    parent_pid: int,
    index: int,
    store: str,
    clock: SharedClock,
    seed: int,
    codes: dict[str, str],
    max_step_us: int,
    share: int,
    done: Any,
    go: Any,
    messages: Any,
    stacked_share: float,
) -> None:
    """The body of terminal process *index*: open an engine, say ready, wait for the go, run
    *share* steps, send the outcome counts (or the error) back. It exits as soon as its parent
    (*parent_pid*) dies (:func:`_exit_with_parent`)."""
    _exit_with_parent(parent_pid)
    try:
        with Engine(store, clock=clock, seed=seed + 1 + index) as engine:
            till = _Terminal(engine, clock, seed * 1_000 + index, codes, max_step_us, stacked_share)
            messages.put(("ready", index, None))
            while not go.wait(PARENT_POLL_SECONDS):
                _exit_if_orphaned(parent_pid)
            for n in range(share):
                till.step()
                if not n & 15:
                    done[index] = n + 1
            done[index] = share
        counts = [(op, outcome, n) for (op, outcome), n in till.outcomes.items()]
        messages.put(("done", index, (counts, sorted(till.points.items()))))
    except BaseException as error:  # reported to the parent, which stops the run
        messages.put(("failed", index, f"{type(error).__name__}: {error}"))


#: The exit status of a terminal process that found its parent gone (nobody reads it).
_ORPHANED_EXIT = 3

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _exit_with_parent(parent_pid: int) -> None:
    """Make this process exit when its parent (*parent_pid*) dies, however it dies (SIGKILL
    included): nothing would ever tell it to go or stop, and it would hold the resource tracker
    open with it.

    On Linux the kernel sends SIGKILL at the parent's death (``PR_SET_PDEATHSIG``; strictly, at
    the death of the parent's thread that started this process — :func:`simulate` starts and
    waits for its terminals in one call, so that thread outlives them). The parent may have died
    before that was set, so it is checked once after. Everywhere, a daemon watchdog thread
    checks every :data:`PARENT_POLL_SECONDS` and ends the process with ``os._exit``, and the
    waits of :func:`_terminal_process` are bounded and check too.
    """
    if sys.platform.startswith("linux"):
        _set_parent_death_signal()
    _exit_if_orphaned(parent_pid)
    threading.Thread(
        target=_watch_parent, args=(parent_pid,), name="vouchercore-parent-watchdog", daemon=True
    ).start()


def _set_parent_death_signal() -> bool:
    """``prctl(PR_SET_PDEATHSIG, SIGKILL)`` through libc; False if it could not be set."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # no libc symbols to load: the watchdog still works
        return False
    status = prctl(
        ctypes.c_int(_PR_SET_PDEATHSIG),
        ctypes.c_ulong(signal.SIGKILL),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
    )
    return int(status) == 0


def _orphaned(parent_pid: int) -> bool:
    """True once the parent is gone: this process was handed to another parent (POSIX), or
    the parent's sentinel that multiprocessing keeps for a child says so (every platform)."""
    if os.getppid() != parent_pid:
        return True
    parent = multiprocessing.parent_process()
    return parent is not None and not parent.is_alive()


def _exit_if_orphaned(parent_pid: int) -> None:
    if _orphaned(parent_pid):
        os._exit(_ORPHANED_EXIT)


def _watch_parent(parent_pid: int) -> None:
    """The watchdog thread: end the whole process once the parent is gone."""
    while True:
        time.sleep(PARENT_POLL_SECONDS)
        _exit_if_orphaned(parent_pid)
