"""Waiting with a bound: a test that would hang on a wedged voucher fails instead."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import pytest

#: How long a call that must not hang may take before the test fails (a liveness bound, far
#: above any healthy run; ``VOUCHERCORE_TEST_LIVENESS`` lowers it to show a wedge quickly).
LIVENESS = float(os.environ.get("VOUCHERCORE_TEST_LIVENESS", "30"))


def bounded(work: Callable[[], Any], what: str, seconds: float = LIVENESS) -> Any:
    """``work()`` in another thread, which must finish within *seconds* (else the test fails
    rather than hangs); its result, or its exception raised here."""
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, work()))
        except BaseException as error:  # handed to the test thread
            outcome.append((False, error))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"{what}: still waiting after {seconds:g} s (the voucher is wedged)")
    ok, value = outcome[0]
    if not ok:
        raise value
    return value
