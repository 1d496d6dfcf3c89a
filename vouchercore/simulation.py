"""A seeded day of point-of-sale traffic: the job behind ``vouchercore simulate``.

Several terminals (threads) share one engine and one simulated clock. Each terminal draws its
traffic from its own seeded generator: validations that lock a voucher and then redeem with the
session key, carts abandoned with their lock still held (they expire), plain redemptions, manual
releases, rollbacks of earlier redemptions, gift-card top-ups and removals, and the occasional
disable/enable. With one terminal the same seed gives the same report, call for call.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

import attrs

from vouchercore.clock import FakeClock
from vouchercore.domain.snapshots import AuditReport
from vouchercore.engine import Engine
from vouchercore.errors import VoucherError

__all__ = ["SimulationReport", "simulate"]

SIMULATION_START = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)


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

    @property
    def ok(self) -> bool:
        """True when the audit found nothing wrong."""
        return self.audit.ok

    def lines(self) -> list[str]:
        """The report as text lines; timing lines are marked with ``[timing]``."""
        out = [
            f"vouchercore simulate: seed {self.seed}, {self.terminals} terminal(s), "
            f"{self.vouchers} vouchers, {self.operations} operations",
            f"simulated time: {self.simulated_seconds / 3600:.2f} h",
            "",
            f"{'operation':<22} {'outcome':<30} {'count':>8}",
        ]
        for (operation, outcome), count in sorted(self.outcomes.items()):
            out.append(f"{operation:<22} {outcome:<30} {count:>8}")
        out.append("")
        out.append("sessions: " + ", ".join(f"{k} {v}" for k, v in sorted(self.sessions.items())))
        out.append(f"sessions purged by the final sweep: {self.swept_sessions}")
        out.append("")
        out.extend(str(self.audit).splitlines())
        rate = self.operations / self.elapsed_seconds if self.elapsed_seconds else 0.0
        out.append(f"[timing] {self.elapsed_seconds:.2f} s wall, {rate:,.0f} operations/s")
        return out


@attrs.frozen(kw_only=True)
class _Ask:
    credits: int | None = None
    points: int | None = None
    order_amount: int | None = None


class _Terminal:
    """One till: its own random stream, its open carts and its past redemptions."""

    def __init__(
        self,
        engine: Engine,
        clock: FakeClock,
        seed: int,
        codes: dict[str, str],
        max_step_us: int,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.rng = random.Random(seed)
        self.codes = codes  # code → type
        self.code_list = sorted(codes)
        self.cards = sorted(c for c, kind in codes.items() if kind != "DISCOUNT_VOUCHER")
        self.max_step_us = max_step_us
        self.disabled: list[str] = []
        self.carts: list[tuple[str, str, _Ask]] = []  # (code, session key, what was locked)
        self.redemptions: list[str] = []
        self.outcomes: Counter[tuple[str, str]] = Counter()

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

    def step(self) -> None:
        """One customer interaction, then the simulated clock moves on a random step."""
        rng, engine = self.rng, self.engine
        roll = rng.random()
        code = rng.choice(self.code_list)
        if roll < 0.30:
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
            code, key, ask = self.carts.pop(rng.randrange(len(self.carts)))
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
                self.redemptions.append(found.id)  # type: ignore[attr-defined]
        elif roll < 0.60 and self.carts:
            # the customer walks away: the lock stays until it expires
            self.carts.pop(rng.randrange(len(self.carts)))
            self.record("abandon cart", "ok")
        elif roll < 0.64 and self.carts:
            code, key, _ = self.carts.pop(rng.randrange(len(self.carts)))
            self.attempt("release session", lambda: engine.release_validation_session(code, key))
        elif roll < 0.80:
            ask = self._ask(code)
            found = self.attempt(
                "redeem",
                lambda: engine.redeem_voucher(
                    code, credits=ask.credits, points=ask.points, order_amount=ask.order_amount
                ),
            )
            if found is not None:
                self.redemptions.append(found.id)  # type: ignore[attr-defined]
        elif roll < 0.86:
            ask = self._ask(code)
            result = engine.validate_voucher(
                code, credits=ask.credits, points=ask.points, order_amount=ask.order_amount
            )
            self.record("validate", "ok" if result.valid else (result.error or _NO).key)
        elif roll < 0.91 and self.redemptions:
            redemption_id = self.redemptions.pop(rng.randrange(len(self.redemptions)))
            self.attempt(
                "rollback",
                lambda: engine.rollback_redemption(redemption_id, reason="customer return"),
            )
        elif roll < 0.97 and self.cards:
            code = rng.choice(self.cards)
            amount = rng.randrange(500, 10_000)
            if rng.random() < 0.3:
                amount = -amount // 4
            self.attempt(
                "top-up" if amount > 0 else "balance removal",
                lambda: engine.update_voucher_balance(code, amount, reason="simulation"),
            )
        elif roll < 0.975:
            if self.attempt("disable", lambda: engine.disable_voucher(code)) is not None:
                self.disabled.append(code)
        elif self.disabled:
            code = self.disabled.pop(rng.randrange(len(self.disabled)))
            self.attempt("enable", lambda: engine.enable_voucher(code))
        self.clock.advance(microseconds=rng.randrange(0, self.max_step_us))


_NO = VoucherError("no error")


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


def simulate(
    *,
    seed: int = 1,
    terminals: int = 4,
    vouchers: int = 200,
    operations: int = 20_000,
    progress: Callable[[int], None] | None = None,
) -> SimulationReport:
    """Run a simulated POS day on a fresh in-memory engine and audit it.

    Args:
        seed: seeds the engine's ids and every terminal's traffic.
        terminals: POS terminals, one thread each, racing on the same vouchers.
        vouchers: how many vouchers to create (mixed types).
        operations: customer interactions in total (split between terminals).
        progress: called with the number of operations done so far, now and then.
    """
    if terminals < 1 or vouchers < 1 or operations < 0:
        raise ValueError("terminals and vouchers must be ≥ 1, operations ≥ 0")
    clock = FakeClock(SIMULATION_START)
    engine = Engine(clock=clock, seed=seed)
    codes = _create_vouchers(engine, random.Random(seed), vouchers)
    # spread the traffic over about one simulated day, whatever the number of operations
    max_step_us = max(2, 2 * 86_400_000_000 // max(operations, 1))
    tills = [
        _Terminal(engine, clock, seed * 1_000 + i, codes, max_step_us) for i in range(terminals)
    ]
    shares = [operations // terminals + (i < operations % terminals) for i in range(terminals)]
    done = [0] * terminals
    barrier = threading.Barrier(terminals)

    def run(index: int) -> None:
        barrier.wait()
        till = tills[index]
        for n in range(shares[index]):
            till.step()
            done[index] = n + 1

    started = time.perf_counter()
    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(terminals)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        for thread in threads:
            thread.join(timeout=0.1)
        if progress is not None:
            progress(sum(done))
    elapsed = time.perf_counter() - started
    if progress is not None:
        progress(sum(done))

    swept = engine.expire_sessions()
    outcomes: Counter[tuple[str, str]] = Counter()
    for till in tills:
        outcomes.update(till.outcomes)
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
    )
