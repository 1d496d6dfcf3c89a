"""Worker processes of the crossing-transfers test, importable so ``spawn`` can run them.

Each worker opens its own engine on the shared store and makes *calls* keyed calls on the
loyalty cards A, B, C (system clock): transfers along every edge (A→B, B→A, B→C, C→B, C→A,
A→C, so transfers cross in both directions and around the ring), additions of points that
expire a fraction of a second later, and now and then an ``expire_points()`` sweep. Every
mutating call carries an idempotency key ``"<name>.<n>"``; a third of them are sent again at
once with the same key and request, and some are sent again later, after other calls. Every
few calls a worker also sends one of the *shared* keys ``"shared.<j>"`` with the request every
worker sends under that key, so four processes race on one key.

Every answer is acknowledged (one JSON line): ``{"op", "key", "ok", …}`` with the transaction
ids on success, the error key on a refusal. A retry whose answer differs from the first
successful answer under its key is acknowledged ``"op": "double"`` (the test fails on it).
"""

from __future__ import annotations

import faulthandler
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.processes.workers import AckFile, StoreSpec, _report_crash, open_engine
from vouchercore import Engine, StorageError, VoucherError

CARDS = ("A", "B", "C")
EDGES = (("A", "B"), ("B", "A"), ("B", "C"), ("C", "B"), ("C", "A"), ("A", "C"))
SHARED_EVERY = 10  # every tenth call of a worker is the next shared key


def shared_request(j: int) -> tuple[str, str, int]:
    """The transfer every worker asks for under ``shared.<j>``."""
    source, destination = EDGES[j % len(EDGES)]
    return source, destination, 5 + j % 7


class Caller:
    """Makes keyed calls and acknowledges each answer."""

    def __init__(self, engine: Engine, name: str, acks: AckFile) -> None:
        self.engine = engine
        self.name = name
        self.acks = acks
        self.first: dict[str, dict[str, Any]] = {}  # key → first successful answer

    def transfer(self, key: str, source: str, destination: str, points: int) -> None:
        ack: dict[str, Any] = {
            "op": "transfer",
            "key": key,
            "by": self.name,
            "source": source,
            "destination": destination,
            "points": points,
        }
        try:
            done = self.engine.transfer_points(
                source, destination, points, source_id=key, idempotency_key=key
            )
        except StorageError:
            raise
        except VoucherError as error:
            ack.update(ok=False, error=error.key)
        else:
            ack.update(ok=True, out=done.source.id, into=done.destination.id)
        self._acknowledge(ack)

    def add(self, key: str, code: str, points: int, expires_at: datetime) -> None:
        ack: dict[str, Any] = {"op": "add", "key": key, "by": self.name, "points": points}
        try:
            update = self.engine.update_voucher_balance(
                code, points, source_id=key, expires_at=expires_at, idempotency_key=key
            )
        except StorageError:
            raise
        except VoucherError as error:
            ack.update(ok=False, error=error.key)
        else:
            ack.update(ok=True, tx=update.transaction_id)
        self._acknowledge(ack)

    def _acknowledge(self, ack: dict[str, Any]) -> None:
        if ack["ok"]:
            answer = {k: v for k, v in ack.items() if k in ("out", "into", "tx")}
            first = self.first.setdefault(ack["key"], answer)
            if first != answer:
                ack = {**ack, "op": "double", "first": first}
        self.acks.write(ack)


def crossing_worker(
    spec: StoreSpec,
    name: str,
    seed: int | None,
    rng_seed: int,
    start: Any,
    ack_path: str,
    calls: int,
) -> None:
    """*calls* keyed calls (plus their retries) on the cards A, B, C; see the module text."""
    faulthandler.dump_traceback_later(150, exit=True)  # stuck (a deadlock): stacks, exit 1
    acks = None
    try:
        acks = AckFile(ack_path, durable=False)
        rng = random.Random(rng_seed)
        with open_engine(spec, seed) as engine:
            caller = Caller(engine, name, acks)
            sent: list[tuple[str, tuple[Any, ...]]] = []  # (kind, arguments) to send again
            start.wait(timeout=120)
            shared = 0
            for n in range(1, calls + 1):
                key = f"{name}.{n}"
                roll = rng.random()
                call: tuple[Any, ...]
                if n % SHARED_EVERY == 0:
                    call = ("transfer", f"shared.{shared}", *shared_request(shared))
                    shared += 1
                elif roll < 0.75:
                    source, destination = rng.choice(EDGES)
                    call = ("transfer", key, source, destination, rng.randint(1, 300))
                elif roll < 0.90:
                    expires = datetime.now(UTC) + timedelta(milliseconds=rng.randint(20, 400))
                    call = ("add", key, rng.choice(CARDS), rng.randint(10, 200), expires)
                else:
                    acks.write({"op": "sweep", "by": name, "expired": engine.expire_points()})
                    continue
                _send(caller, call)
                if rng.random() < 0.33:  # the answer was "lost": the very same call again
                    _send(caller, call)
                elif rng.random() < 0.2:
                    sent.append(call)
                if sent and rng.random() < 0.15:  # a late retry, after other calls
                    _send(caller, sent.pop(rng.randrange(len(sent))))
            for call in sent:
                _send(caller, call)
        acks.write({"op": "finished", "by": name})
        acks.close()
        faulthandler.cancel_dump_traceback_later()
    except BaseException:
        _report_crash(acks)
        raise


def _send(caller: Caller, call: tuple[Any, ...]) -> None:
    kind, *arguments = call
    if kind == "transfer":
        caller.transfer(*arguments)
    else:
        caller.add(*arguments)
