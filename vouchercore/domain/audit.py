"""The audit: replay a voucher's logs and check the invariants (README: "Concurrency and the
audit").

* I1 — ``redeemed_quantity + live sessions ≤ quantity``; no counter below 0; the redemption
  log replays to the counters.
* I2 — ``0 ≤ Σ live locked credits (points) ≤ balance``; balances never negative; the
  ledger's cached totals equal the sum over its sessions.
* I3 — balance = opening balance + Σ transaction amounts, and every transaction's ``balance``
  is the running balance after it; a loyalty card's ``expired_points`` is what its
  ``POINTS_EXPIRATION`` transactions took. (I2 also checks its points buckets: positive, in
  spending order, within the balance.)
* I4 — a session resolves at most once: none is live after a redemption with its key, none
  is counted once expired (:func:`audit_voucher`); and store-wide, every session opened was
  resolved at most once: ``opened − Σ resolved == stored`` (:func:`audit_session_ledger`,
  from the store's :class:`SessionCounts`).

  The key rule, and the wall clock: a redemption with key *k* ends the session of *k* (it
  leaves the voucher for good). A live session of *k* is double use only if a redemption
  with *k* came *after* it was opened — the redemption that should have ended it; a lock
  with *k* after the redemption is a new session. "After" is in the voucher's own time,
  which never goes back even when the wall clock steps back (NTP): the domain keeps a
  voucher's ``updated_at`` from moving backwards and dates a new session no earlier than it
  (``created_at = max(now, updated_at)``, :func:`~vouchercore.domain.operations.set_lock`), so
  every redemption made before a session opened is dated at or before its ``created_at``.
  With a clock that never steps back, both are plain "now".
* I5 — all or nothing: every stacked redemption's children succeeded together with their
  parent, or were rolled back together with it, and a FAILED parent has none
  (:func:`audit_stacks`).
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence

import attrs

from vouchercore.domain.records import LoyaltyRecord, TransactionRecord, VoucherRecord
from vouchercore.domain.snapshots import ParentRedemption, Redemption, Violation
from vouchercore.domain.values import RedemptionStatus, TransactionType, VoucherType

__all__ = [
    "TOTAL_RAISING",
    "SessionCounts",
    "audit_session_ledger",
    "audit_stacks",
    "audit_voucher",
]

#: Transaction types that raise a card's ``total`` (everything ever added) as well as its balance.
TOTAL_RAISING = frozenset(
    {
        TransactionType.CREDITS_ADDITION,
        TransactionType.POINTS_ADDITION,
        TransactionType.POINTS_ACCRUAL,
        TransactionType.POINTS_TRANSFER_IN,
    }
)


@attrs.frozen(kw_only=True)
class SessionCounts:
    """A store's session bookkeeping, read at one instant (for the I4 check): every session
    stored was opened once and resolved at most once, so ``opened − Σ resolved == stored``."""

    opened: int
    resolved: Mapping[str, int]  # by reason (a SessionEnd value)
    stored: int


def audit_session_ledger(counts: SessionCounts) -> list[Violation]:
    """I4 store-wide: the violation when the session ledger does not balance (else none)."""
    resolved = sum(counts.resolved.values())
    if counts.opened - resolved == counts.stored:
        return []
    message = (
        f"session ledger does not balance: {counts.opened} opened, {resolved} resolved, "
        f"{counts.stored} stored"
    )
    return [Violation(invariant="I4", voucher_id=None, code=None, message=message)]


def audit_voucher(
    record: VoucherRecord,
    now: int,
    transactions: Sequence[TransactionRecord],
    redemptions: Sequence[Redemption],
) -> list[Violation]:
    """Every invariant the voucher breaks at *now* (empty when it is sound)."""
    found: list[Violation] = []

    def fail(invariant: str, message: str) -> None:
        found.append(
            Violation(invariant=invariant, voucher_id=record.id, code=record.code, message=message)
        )

    stored = list(record.sessions or ())
    live = record.live_sessions(now)

    # I1: quantity, counters, redemption log
    if record.redeemed_quantity < 0 or record.redeemed_amount < 0:
        fail(
            "I1",
            f"negative counter: redeemed_quantity {record.redeemed_quantity}, "
            f"redeemed_amount {record.redeemed_amount}",
        )
    if record.quantity is not None and record.redeemed_quantity + len(live) > record.quantity:
        fail(
            "I1",
            f"over-redeemed: {record.redeemed_quantity} redeemed + {len(live)} locked "
            f"> quantity {record.quantity}",
        )
    info = record.info
    opening_quantity = info.opening_redeemed_quantity if info else 0
    opening_amount = info.opening_redeemed_amount if info else 0
    succeeded = [r for r in redemptions if r.status is RedemptionStatus.SUCCEEDED]
    if opening_quantity + len(succeeded) != record.redeemed_quantity:
        fail(
            "I1",
            f"redemption log has {len(succeeded)} standing redemptions (+{opening_quantity} "
            f"opening), counter says {record.redeemed_quantity}",
        )
    if opening_amount + sum(r.amount for r in succeeded) != record.redeemed_amount:
        fail(
            "I1",
            f"redemption log amounts sum to {sum(r.amount for r in succeeded)} (+{opening_amount} "
            f"opening), redeemed_amount is {record.redeemed_amount}",
        )

    # I2: locks within the balance, ledger totals consistent
    if record.balance < 0:
        fail("I2", f"negative balance {record.balance}")
    ledger = record.sessions
    if ledger is not None:
        if ledger.credits != sum(s.credits for s in stored) or ledger.points != sum(
            s.points for s in stored
        ):
            fail("I2", "session ledger totals differ from the sum of its sessions")
        if len(ledger.by_key) != len(stored):
            fail("I2", "session ledger size differs from its sessions")
    locked = sum(s.points if record.type is VoucherType.LOYALTY_CARD else s.credits for s in live)
    if any(s.credits < 0 or s.points < 0 for s in stored):
        fail("I2", "a session holds a negative amount")
    if record.type is not VoucherType.DISCOUNT_VOUCHER and locked > record.balance:
        fail("I2", f"live sessions hold {locked}, more than the balance {record.balance}")

    # I3: the log replays to the balance
    if record.type is VoucherType.DISCOUNT_VOUCHER:
        if transactions:
            fail("I3", f"a discount voucher has {len(transactions)} transactions")
    else:
        raised = sum(t.amount for t in transactions if t.type in TOTAL_RAISING)
        opening = record.total - raised - opening_amount
        running = opening
        previous_id = ""
        for tx in transactions:
            running += tx.amount
            if tx.balance != running:
                fail("I3", f"{tx.id} records balance {tx.balance}, replay gives {running}")
                break
            if tx.id <= previous_id:
                fail("I3", f"{tx.id} does not follow {previous_id}")
                break
            previous_id = tx.id
        if running != record.balance:
            fail("I3", f"log replays to {running}, balance is {record.balance}")
        if opening < 0:
            fail("I3", f"opening balance replays to {opening}")

    # I2/I3 for points: buckets within the balance, in spending order; expiries replay
    if isinstance(record, LoyaltyRecord):
        buckets = record.buckets or []
        if any(b.points <= 0 for b in buckets):
            fail("I2", "a points bucket holds no points")
        if sum(b.points for b in buckets) > record.balance:
            fail("I2", f"points buckets hold more than the balance {record.balance}")
        order = [(b.expires_at is None, b.expires_at or 0) for b in buckets]
        if order != sorted(order):
            fail("I2", "points buckets are out of spending order")
        expired = -sum(
            t.amount for t in transactions if t.type is TransactionType.POINTS_EXPIRATION
        )
        if expired != record.expired_points:
            fail(
                "I3",
                f"expirations in the log sum to {expired}, expired_points is "
                f"{record.expired_points}",
            )

    # I4: a session resolves once — a redemption with its key ended it, so no live session
    # may have been opened before a (not failed) redemption made with its key on this voucher.
    # Sessions are dated in the voucher's own time (never before its updated_at, which never
    # goes back): a lock with the key after the redemption is dated at or after it, whatever
    # the wall clock did (see the module docstring)
    redeemed_at: dict[str, int] = {}
    for r in redemptions:
        if r.session_key is not None and r.status is not RedemptionStatus.FAILED:
            redeemed_at[r.session_key] = max(redeemed_at.get(r.session_key, r.date_us), r.date_us)
    for session in live:
        last = redeemed_at.get(session.key)
        if last is not None and last > session.created_at:
            fail("I4", f"session {session.key!r} is live after a redemption with its key")

    # I4: nothing expired is still counted by the ledger
    next_expiry = ledger.next_expiry if ledger is not None else None
    if next_expiry is not None and any(s.expires_at < next_expiry for s in stored):
        fail("I4", "a session expires before the ledger's next expiry: it would be missed")
    return found


def audit_stacks(
    parents: Iterable[ParentRedemption],
    children: Mapping[str, dict[str, RedemptionStatus]],
    audited: Container[str],
) -> list[Violation]:
    """I5 for stacked redemptions: every parent's children succeeded, or were rolled back,
    together with it — and a FAILED parent has none.

    *children* maps each parent id to the status of every child found in the audited vouchers'
    logs (by child id); *audited* holds the ids of the vouchers whose logs were read (a child
    on a voucher deleted since is not looked for).
    """
    found: list[Violation] = []
    seen: set[str] = set()

    def fail(parent: ParentRedemption | None, parent_id: str, message: str) -> None:
        found.append(
            Violation(
                invariant="I5",
                voucher_id=None,
                code=None,
                message=f"stacked redemption {parent_id}: {message}",
            )
        )

    for parent in parents:
        seen.add(parent.id)
        logged = children.get(parent.id, {})
        if parent.status is RedemptionStatus.FAILED:
            if logged:
                fail(parent, parent.id, f"FAILED, yet {len(logged)} child redemptions exist")
            continue
        if len(parent.redemptions) != len(parent.voucher_ids) or not parent.redemptions:
            fail(parent, parent.id, "its children and their vouchers do not pair up")
            continue
        expected = parent.status
        for child_id, voucher_id in zip(parent.redemptions, parent.voucher_ids, strict=True):
            status = logged.get(child_id)
            if status is None:
                if voucher_id in audited:
                    fail(parent, parent.id, f"child {child_id} is missing from {voucher_id}")
            elif status is not expected:
                fail(parent, parent.id, f"{expected.value}, child {child_id} is {status.value}")
        strays = set(logged) - set(parent.redemptions)
        if strays:
            fail(parent, parent.id, f"children it does not list: {', '.join(sorted(strays))}")
    for parent_id in children.keys() - seen:
        fail(None, parent_id, "child redemptions name it, but no such parent is stored")
    return found
