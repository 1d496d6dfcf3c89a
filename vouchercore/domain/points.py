"""Loyalty points that expire: buckets, the order points are spent in, and expiry.

A loyalty card's ``balance`` is made of:

* **expiring buckets** — points added or accrued with an ``expires_at``, soonest first;
* the **pool** — points that never expire (the card's opening points, additions and transfers
  without expiry, refunds): ``balance − Σ buckets``;
* **accrual buckets without expiry** — points an accrual brought, kept apart only so that
  cancelling the accrual knows what is left of it; oldest first.

Spending (a redemption, a removal, a transfer out, a cancellation) takes points in that order:
the soonest-expiring first, the pool next, accruals without expiry last.

**Expiry and live locks.** A bucket's points leave the balance at its ``expires_at`` — but
never the points that live LOCK sessions hold (Σ locked ≤ balance: audit invariant I2, README
"Concurrency and the audit"). When a bucket
expires while sessions hold more than the rest of the balance covers, only the part no lock
needs expires; the rest is re-dated to the end of the latest of those locks and expires then,
unless the lock's redemption spends it first. A lock therefore never loses its points, and
points outlive their date by at most the TTL of a lock that was set on them.

Expiry is evaluated as of each bucket's own instant, with the sessions that were live then
(every stored session was set before the card was last brought up to date), so a card read
late gives the balance it would have had if every expiry had run on time.

Nothing here talks to a store: :mod:`vouchercore.domain.operations` calls these on a record
inside a unit of work and writes the transactions.
"""

from __future__ import annotations

from collections.abc import Sequence

from vouchercore.domain.records import LoyaltyRecord, PointsBucket, SessionRecord

__all__ = [
    "Expired",
    "PointsExpiry",
    "accrual_points_left",
    "add_points",
    "expire_due",
    "next_expiration",
    "spend_points",
    "take_accrual",
]

#: ``(expires_at, points)`` taken from one place of a card (``None``: points without expiry).
Chunk = tuple[int | None, int]


class Expired:
    """Points of one bucket that expired: when, how many, and the accrual they came from."""

    __slots__ = ("accrual_id", "expires_at", "points")

    def __init__(self, expires_at: int, points: int, accrual_id: str | None) -> None:
        self.expires_at = expires_at
        self.points = points
        self.accrual_id = accrual_id

    def __repr__(self) -> str:
        return f"Expired({self.expires_at}, {self.points}, {self.accrual_id!r})"


class PointsExpiry:
    """Expiry applied to a card in place, and how to :meth:`undo` it when the operation that
    brought the card up to date then fails (a failed call changes nothing anyone can see)."""

    __slots__ = ("_balance", "_expired_points", "expired", "record")

    def __init__(self, record: LoyaltyRecord) -> None:
        self.record = record
        self._balance = record.balance
        self._expired_points = record.expired_points
        self.expired: list[Expired] = []

    def undo(self) -> None:
        """Put the points that expired back, each as a bucket due at its instant (ahead of the
        rest: every remaining bucket is due later), with the balance as it was.

        Not the buckets as they were: the failed operation still purges the sessions that
        have expired, and those may be the very locks that protected part of a bucket at its
        instant. What is put back is what the expiry decided with them — the points that
        went, due at their instants, and the protected parts re-dated — so that expiring it
        again, without those sessions, gives the same transactions.
        """
        record = self.record
        record.balance = self._balance
        record.expired_points = self._expired_points
        due = [PointsBucket(e.expires_at, e.points, e.accrual_id) for e in self.expired]
        record.buckets = due + (record.buckets or []) or None


def _insert(buckets: list[PointsBucket], bucket: PointsBucket) -> None:
    """Insert keeping the order: expiring by ``expires_at`` (after equal ones), then the
    accrual buckets without expiry in arrival order. Plain points with the same expiry as
    the bucket before them join it."""
    expires_at = bucket.expires_at
    if expires_at is None:
        buckets.append(bucket)
        return
    at = 0
    while at < len(buckets):
        other = buckets[at].expires_at
        if other is None or other > expires_at:
            break
        at += 1
    if at and bucket.accrual_id is None:
        before = buckets[at - 1]
        if before.expires_at == expires_at and before.accrual_id is None:
            before.points += bucket.points
            return
    buckets.insert(at, bucket)


def add_points(
    record: LoyaltyRecord, points: int, expires_at: int | None, accrual_id: str | None = None
) -> None:
    """Add *points* to the balance: into a bucket when they expire or come from an accrual,
    else into the pool. (The caller raises ``total`` where the points are new.)"""
    record.balance += points
    if expires_at is None and accrual_id is None:
        return
    buckets = record.buckets
    if buckets is None:
        buckets = record.buckets = []
    _insert(buckets, PointsBucket(expires_at, points, accrual_id))


def spend_points(record: LoyaltyRecord, points: int) -> list[Chunk]:
    """Take *points* from the balance (the caller has checked they are there): soonest-expiring
    first, then the pool, then accruals without expiry. Returns what was taken, in order, as
    ``(expires_at, points)`` (``None``: points without expiry)."""
    buckets = record.buckets
    record.balance -= points
    if not buckets:
        return [(None, points)]
    pool = record.balance + points - sum(b.points for b in buckets)
    taken: list[Chunk] = []
    left = points
    for bucket in buckets:  # the expiring ones
        if not left or bucket.expires_at is None:
            break
        take = min(bucket.points, left)
        bucket.points -= take
        left -= take
        taken.append((bucket.expires_at, take))
    if left:
        take = min(pool, left)
        left -= take
        if take:
            taken.append((None, take))
    for bucket in buckets:  # accruals without expiry, oldest first
        if not left:
            break
        if bucket.expires_at is None and bucket.points:
            take = min(bucket.points, left)
            bucket.points -= take
            left -= take
            taken.append((None, take))
    assert left == 0, "spent more points than the balance holds"
    record.buckets = [b for b in buckets if b.points] or None
    return taken


def expire_due(
    record: LoyaltyRecord, now: int, sessions: Sequence[SessionRecord]
) -> PointsExpiry | None:
    """Expire, in place, every bucket due at *now* (``expires_at <= now``), each as of its own
    instant, given the card's stored *sessions* (before expired ones are purged). None when
    nothing was due; else what expired, and how to undo it.

    Points live sessions held at a bucket's instant are never expired then: that part is
    re-dated to the end of the latest of those sessions (see the module docstring).
    """
    buckets = record.buckets
    if not buckets:
        return None
    first = buckets[0].expires_at
    if first is None or first > now:
        return None
    expiry = PointsExpiry(record)
    while buckets and (due := buckets[0].expires_at) is not None and due <= now:
        bucket = buckets.pop(0)
        live = [s for s in sessions if s.live_at(due)]
        held = sum(s.points for s in live)
        gone = min(bucket.points, max(0, record.balance - held))
        kept = bucket.points - gone
        if gone:
            record.balance -= gone
            record.expired_points += gone
            expiry.expired.append(Expired(due, gone, bucket.accrual_id))
        if kept:  # held by live locks (so `live` is not empty): re-dated to their end
            _insert(buckets, PointsBucket(max(s.expires_at for s in live), kept, bucket.accrual_id))
    record.buckets = buckets or None
    return expiry


def next_expiration(record: LoyaltyRecord) -> tuple[int, int] | None:
    """``(expires_at, points)`` of the soonest points to expire (all buckets of that instant),
    or None."""
    buckets = record.buckets
    if not buckets or buckets[0].expires_at is None:
        return None
    first = buckets[0].expires_at
    return first, sum(b.points for b in buckets if b.expires_at == first)


def accrual_points_left(record: LoyaltyRecord, accrual_id: str) -> int:
    """How many points of the accrual *accrual_id* are still on the card (not spent, not
    expired)."""
    return sum(b.points for b in record.buckets or () if b.accrual_id == accrual_id)


def take_accrual(record: LoyaltyRecord, accrual_id: str, points: int) -> None:
    """Take *points* (at most what is left of it) back from the accrual's buckets, soonest
    first, and close the accrual: what is left of it becomes plain points (expiring ones keep
    their date, the others join the pool)."""
    record.balance -= points
    left = points
    kept: list[PointsBucket] = []
    for bucket in record.buckets or ():
        if bucket.accrual_id != accrual_id:
            kept.append(bucket)
            continue
        take = min(bucket.points, left)
        left -= take
        rest = bucket.points - take
        if rest and bucket.expires_at is not None:
            _insert(kept, PointsBucket(bucket.expires_at, rest))
    assert left == 0, "took more points than the accrual has left"
    record.buckets = kept or None
