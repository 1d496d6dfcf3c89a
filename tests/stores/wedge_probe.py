"""A second process for the no-wedge tests: reads one JSON request a line from stdin —
``{"url": STORE_URL, "codes": [CODE, …], "now": ISO_INSTANT}`` — opens the store (its clock
stopped at *now*, the test's clock: nothing expires meanwhile), reads each voucher through a unit
of work (``get_voucher`` locks it, as every call does) and answers one JSON line:
``{"ok": true, "balances": […]}`` or ``{"ok": false, "error": "…"}``.

Run as a script (it imports only vouchercore); the test waits for each answer with a bound and
kills the probe when none comes (a voucher left locked by the test process).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime

from vouchercore import Engine, FakeClock


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        try:
            clock = FakeClock(datetime.fromisoformat(request["now"]))
            with Engine(request["url"], clock=clock) as engine:
                balances = []
                for code in request["codes"]:
                    voucher = engine.get_voucher(code)
                    card = voucher.gift if voucher.gift is not None else voucher.loyalty_card
                    balances.append(None if card is None else card.balance)
            answer = {"ok": True, "balances": balances}
        except Exception as error:  # reported to the test, which fails with it
            answer = {"ok": False, "error": f"{type(error).__name__}: {error}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
