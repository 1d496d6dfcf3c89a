"""The worker of the SIGKILL test of points transfers (importable, for forkserver).

A worker transfers points between the loyalty cards ``P0``..``P3`` and accrues points on them,
each call tagged ``"<incarnation>.<n>"`` (its ``source_id`` and its ``idempotency_key``). Before
a call it writes an *intent* line (fsynced), after it an acknowledgement. A worker that takes
over a killed one's slot first finishes the call its predecessor had in flight — the same
request under the same idempotency key — so every intent ends acknowledged, exactly once. Now
and then a worker kills itself right after a call returned and before acknowledging it: its
successor's retry must then be answered from the key, not applied again.
"""

from __future__ import annotations

import faulthandler
import os
import random
import signal
from typing import Any

from tests.processes.workers import AckFile, StoreSpec, open_engine, read_acks
from vouchercore import Engine, VoucherError

CARDS = ("P0", "P1", "P2", "P3")
OPENING = 10_000
#: per call: the worker SIGKILLs itself after the call returned, before acknowledging it
SELF_KILL_CHANCE = 1 / 25


def _perform(engine: Engine, intent: dict[str, Any]) -> dict[str, Any]:
    """Run the call an intent describes; its acknowledgement."""
    tag = intent["tag"]
    try:
        if intent["call"] == "transfer":
            result = engine.transfer_points(
                intent["source"],
                intent["destination"],
                intent["points"],
                source_id=tag,
                idempotency_key=tag,
            )
            return {
                "op": "transfer",
                "tag": tag,
                "ok": True,
                "out": result.source.id,
                "in": result.destination.id,
            }
        accrual = engine.accrue_points(
            intent["card"], intent["points"], order_id=tag, source_id=tag, idempotency_key=tag
        )
        return {"op": "accrue", "tag": tag, "ok": True, "tx": accrual.id}
    except VoucherError as error:
        return {"op": intent["call"], "tag": tag, "ok": False, "error": error.key}


def transfer_crash_worker(
    spec: StoreSpec,
    slot: int,
    name: str,
    previous: str | None,
    rng_seed: int,
    progress: Any,
    stop: Any,
    ack_path: str,
) -> None:
    """Finish the predecessor's call in flight (if any), then transfer and accrue until *stop*
    is set, or SIGKILL. ``progress[slot]`` counts acknowledged calls."""
    faulthandler.register(signal.SIGUSR1)
    acks = AckFile(ack_path, durable=True)
    rng = random.Random(rng_seed)
    with open_engine(spec) as engine:
        if previous is not None:
            lines = read_acks(previous)
            answered = {line["tag"] for line in lines if line["op"] != "intent"}
            for line in lines:
                if line["op"] == "intent" and line["tag"] not in answered:
                    acks.write(line)  # the intent is now this worker's to finish
                    acks.write(_perform(engine, line))
        calls = 0
        while not stop.value:
            calls += 1
            tag = f"{name}.{calls}"
            intent: dict[str, Any]
            if rng.random() < 0.15:
                intent = {
                    "call": "accrue",
                    "tag": tag,
                    "card": rng.choice(CARDS),
                    "points": rng.randint(1, 100),
                }
            else:
                source, destination = rng.sample(CARDS, 2)
                intent = {
                    "call": "transfer",
                    "tag": tag,
                    "source": source,
                    "destination": destination,
                    "points": rng.randint(1, 600),
                }
            acks.write({"op": "intent", **intent})
            answer = _perform(engine, intent)
            if rng.random() < SELF_KILL_CHANCE:  # done, but the caller never hears of it
                os.kill(os.getpid(), signal.SIGKILL)
            acks.write(answer)
            progress[slot] = calls
    acks.close()
