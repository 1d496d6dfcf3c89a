"""What users (and vouchercore's own tests) reuse to test code that embeds the engine.

* :class:`~vouchercore.clock.FakeClock` — a clock that moves only when told to;
* :func:`state_snapshot` — everything observable about an engine's voucher book, as plain
  data, to compare before and after a call (a failed call must change nothing: README
  "Concurrency and the audit");
* :func:`all_transactions` — a voucher's whole transaction log, oldest first.
"""

from __future__ import annotations

from typing import Any

from vouchercore.clock import FakeClock
from vouchercore.domain.snapshots import Transaction
from vouchercore.domain.values import RedemptionStatus
from vouchercore.engine import Engine

__all__ = ["FakeClock", "all_transactions", "state_snapshot"]


def all_transactions(engine: Engine, code: str) -> list[Transaction]:
    """The voucher's whole transaction log, oldest first, read page by page."""
    found: list[Transaction] = []
    after = None
    while True:
        page = engine.list_voucher_transactions(
            code, limit=100, order="id", starting_after_id=after
        )
        found.extend(page.data)
        if not page.has_more:
            return found
        after = page.more_starting_after


def state_snapshot(engine: Engine, *, include_failed: bool = False) -> dict[str, Any]:
    """Every live voucher with its live sessions, redemptions and transactions.

    FAILED redemptions are left out unless *include_failed* (a failed redemption attempt is the
    one trace a failed call may leave). Reading expires nothing observable: expired sessions
    never count, whether or not they have been purged.
    """
    out: dict[str, Any] = {}
    for code in sorted(engine.store.voucher_codes()):
        voucher = engine.get_voucher(code)
        redemptions = [
            r
            for r in engine.list_redemptions(code)
            if include_failed or r.status is not RedemptionStatus.FAILED
        ]
        transactions = all_transactions(engine, code)
        out[code] = {
            "voucher": voucher,
            "sessions": engine.list_sessions(code),
            "redemptions": redemptions,
            "transactions": transactions,
        }
    return out
