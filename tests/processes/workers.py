"""Worker processes for the cross-process tests, importable so spawn and forkserver can run them.

Every worker opens its own :class:`~vouchercore.Engine` on the shared store (a SQLite file or a
PostgreSQL schema) and writes an *acknowledgement* line (JSON) to its own file right after each
engine call returns — what the caller was told. The tests compare these acknowledgements with
what the store holds.

Every call is tagged so the store's records can be traced back to the call that made them:
the tag ``"<incarnation>.<n>"`` (n counts the worker's calls) is the session key of a LOCK, the
``metadata["tag"]`` of a redemption (failed ones too), the ``reason`` of a rollback and the
``source_id`` of a balance update.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import random
import signal
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from vouchercore import Engine, NotFound, StorageError, VoucherError

HOT = "HOT"  # DISCOUNT_VOUCHER, AMOUNT 500, limited quantity
CARD = "CARD"  # GIFT_VOUCHER
OTHER = "OTHER"  # a second limited discount voucher (interleaving test)
ORDER_AMOUNT = 5_000
DISCOUNT = 500

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

StoreSpec = tuple[str, ...]  # ("sqlite", path[, synchronous]) or ("postgres", dsn, schema)


def to_us(instant: datetime) -> int:
    """An aware instant as integer microseconds since the epoch (exact)."""
    return (instant - _EPOCH) // timedelta(microseconds=1)


def now_us() -> int:
    """The wall clock in microseconds (the engines run on the system clock)."""
    return to_us(datetime.now(UTC))


def open_store(spec: StoreSpec) -> Any:
    """A store object for *spec*, owned by the caller (close it)."""
    if spec[0] == "sqlite":
        from vouchercore.stores.sqlite import SQLiteStore  # noqa: PLC0415

        return SQLiteStore(spec[1], synchronous=spec[2] if len(spec) > 2 else "FULL")
    if spec[0] == "postgres":
        from vouchercore.stores.postgres import PostgresStore  # noqa: PLC0415

        return PostgresStore(spec[1], schema=spec[2])
    raise ValueError(f"unknown store spec {spec!r}")


@contextlib.contextmanager
def open_engine(spec: StoreSpec, seed: int | None = None) -> Iterator[Engine]:
    """An engine on its own connection(s) to the shared store; closed on exit."""
    store = open_store(spec)
    try:
        yield Engine(store, seed=seed)
    finally:
        store.close()


# --- acknowledgements --------------------------------------------------------------------------


class AckFile:
    """One JSON line per acknowledged call; ``durable`` flushes and fsyncs every line."""

    def __init__(self, path: str, *, durable: bool) -> None:
        self._file: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115
        self._durable = durable

    def write(self, record: dict[str, Any]) -> None:
        """Append *record* as one line (one ``write`` call), then flush (+ fsync)."""
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        if self._durable:
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


def run_to_the_end(processes: Sequence[Any], seconds: float) -> None:
    """Start *processes* and wait for all of them, *seconds* in all; kill any still running
    then (its exit code then tells the test it did not finish)."""
    for process in processes:
        process.start()
    deadline = time.monotonic() + seconds
    for process in processes:
        process.join(timeout=max(1.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()


def read_acks(path: str) -> list[dict[str, Any]]:
    """The acknowledgements in *path*; a torn last line (the writer was killed) is not one."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as file:
        text = file.read()
    lines = text.split("\n")
    return [json.loads(line) for line in lines[:-1] if line]  # lines[-1]: "" or a torn line


# --- the terminal ------------------------------------------------------------------------------


class Terminal:
    """A point of sale driving one engine; acknowledges every call it makes."""

    def __init__(self, engine: Engine, incarnation: str, rng: random.Random, acks: AckFile) -> None:
        self.engine = engine
        self.incarnation = incarnation
        self.rng = rng
        self.acks = acks
        self.calls = 0
        self.op = ""
        self.sessions: list[tuple[str, str, int]] = []  # held locks: (code, key, credits)
        self.redemptions: list[str] = []  # own SUCCEEDED redemptions not rolled back

    def _tag(self, op: str) -> tuple[str, int]:
        self.calls += 1
        self.op = op
        return f"{self.incarnation}.{self.calls}", self.calls

    @property
    def in_flight(self) -> dict[str, str]:
        """The call being made (or the last one made): its op and tag."""
        return {"call": self.op, "tag": f"{self.incarnation}.{self.calls}"}

    @staticmethod
    def _ask(code: str, credits: int) -> dict[str, int]:
        return {"credits": credits} if code == CARD else {"order_amount": ORDER_AMOUNT}

    def lock(self, code: str, credits: int, ttl_ms: int) -> bool:
        """validate(LOCK) with the tag as session key; True when the lock is held."""
        tag, n = self._tag("lock")
        result = self.engine.validate_voucher(
            code,
            session={"type": "LOCK", "key": tag, "ttl": ttl_ms, "ttl_unit": "MILLISECONDS"},
            **self._ask(code, credits),  # type: ignore[arg-type]
        )
        ack: dict[str, Any] = {"op": "lock", "tag": tag, "n": n, "code": code, "ok": result.valid}
        if result.valid:
            assert result.session is not None
            ack.update(
                key=result.session.key, credits=credits, expires_us=to_us(result.session.expires_at)
            )
            self.sessions.append((code, tag, credits))
        else:
            assert result.error is not None
            ack["error"] = result.error.key
        self.acks.write(ack)
        return result.valid

    def redeem(self, code: str, credits: int, session_key: str | None = None) -> bool:
        """redeem_voucher (with a held lock's key or none); True on success."""
        tag, n = self._tag("redeem")
        ack: dict[str, Any] = {"op": "redeem", "tag": tag, "n": n, "code": code, "key": session_key}
        try:
            redemption = self.engine.redeem_voucher(
                code,
                session_key=session_key,
                metadata={"tag": tag},
                **self._ask(code, credits),  # type: ignore[arg-type]
            )
        except StorageError:
            raise
        except VoucherError as error:
            ack.update(ok=False, error=error.key)
            self.acks.write(ack)
            return False
        ack.update(
            ok=True, id=redemption.id, amount=redemption.amount, tx=redemption.transaction_id
        )
        self.acks.write(ack)
        self.redemptions.append(redemption.id)
        return True

    def redeem_held(self) -> None:
        """Redeem with one of the held locks."""
        code, key, credits = self.sessions.pop(self.rng.randrange(len(self.sessions)))
        self.redeem(code, credits, key)

    def release(self) -> None:
        """Release one of the held locks."""
        code, key, _ = self.sessions.pop(self.rng.randrange(len(self.sessions)))
        tag, n = self._tag("release")
        ack: dict[str, Any] = {"op": "release", "tag": tag, "n": n, "code": code, "key": key}
        try:
            self.engine.release_validation_session(code, key)
        except NotFound as error:  # it expired meanwhile
            ack.update(ok=False, error=error.key)
        else:
            ack["ok"] = True
        self.acks.write(ack)

    def rollback(self) -> None:
        """Roll back one of this terminal's own redemptions."""
        redemption_id = self.redemptions.pop(self.rng.randrange(len(self.redemptions)))
        tag, n = self._tag("rollback")
        ack: dict[str, Any] = {"op": "rollback", "tag": tag, "n": n, "redemption": redemption_id}
        try:
            rollback = self.engine.rollback_redemption(redemption_id, reason=tag)
        except StorageError:
            raise
        except VoucherError as error:
            ack.update(ok=False, error=error.key)
        else:
            ack.update(ok=True, id=rollback.id, amount=rollback.amount, tx=rollback.transaction_id)
        self.acks.write(ack)

    def balance(self, amount: int) -> None:
        """update_voucher_balance on the gift card (+ adds, − removes)."""
        tag, n = self._tag("balance")
        ack: dict[str, Any] = {"op": "balance", "tag": tag, "n": n, "amount": amount}
        try:
            update = self.engine.update_voucher_balance(CARD, amount, source_id=tag, reason=tag)
        except StorageError:
            raise
        except VoucherError as error:
            ack.update(ok=False, error=error.key)
        else:
            ack.update(ok=True, tx=update.transaction_id, balance=update.balance)
        self.acks.write(ack)

    def credits(self) -> int:
        return self.rng.randint(100, 1_500)


def _report_crash(acks: AckFile | None) -> None:
    if acks is not None:
        acks.write({"op": "crash", "error": traceback.format_exc()})
    traceback.print_exc()
    sys.stderr.flush()


# --- deliverable 6: the race -------------------------------------------------------------------


def race_worker(
    spec: StoreSpec,
    incarnation: str,
    seed: int | None,
    rng_seed: int,
    start: Any,
    drain: Any,
    ack_path: str,
    calls: int,
) -> None:
    """Main phase: *calls* mixed calls on HOT and CARD; then, after every worker finished it,
    the drain phase: redeem HOT until ``quantity_exceeded`` and CARD until even 1 credit is
    refused. Locks are long (10 min): a redemption with a held lock must succeed."""
    acks = None
    try:
        acks = AckFile(ack_path, durable=False)
        with open_engine(spec, seed) as engine:
            terminal = Terminal(engine, incarnation, random.Random(rng_seed), acks)
            rng = terminal.rng
            start.wait(timeout=120)
            while terminal.calls < calls or terminal.sessions:  # no lock left held
                roll = rng.random()
                if terminal.sessions:  # a held lock is always resolved next
                    if rng.random() < 0.15:
                        terminal.release()
                    else:
                        code, key, credits = terminal.sessions.pop()
                        if not terminal.redeem(code, credits, key):
                            acks.write({"op": "held_lock_refused", "key": key})
                elif roll < 0.25:
                    terminal.lock(HOT, 0, 600_000)
                elif roll < 0.45:
                    terminal.redeem(HOT, 0)
                elif roll < 0.60:
                    terminal.lock(CARD, terminal.credits(), 600_000)
                elif roll < 0.72:
                    terminal.redeem(CARD, terminal.credits())
                elif roll < 0.86:
                    if terminal.redemptions:
                        terminal.rollback()
                    else:
                        terminal.redeem(HOT, 0)
                elif roll < 0.93:
                    terminal.balance(rng.randint(500, 3_000))
                else:
                    terminal.balance(-rng.randint(100, 2_000))
            drain.wait(timeout=120)
            while terminal.redeem(HOT, 0):
                pass
            while terminal.redeem(CARD, rng.randint(1, 300)):
                pass
            while terminal.redeem(CARD, 1):
                pass
        acks.close()
    except BaseException:
        _report_crash(acks)
        raise


# --- deliverable 7: crashes --------------------------------------------------------------------


class SelfKillingStore:
    """A store that, with probability *chance* per commit, SIGKILLs its own process just
    before the commit (unit open: locks held, nothing written) or just after it (committed,
    not yet returned: the caller never hears of it). It first writes a ``self_kill`` line
    naming the point and the call in flight to the acknowledgement file (which is not an
    acknowledgement)."""

    def __init__(self, inner: Any, rng: random.Random, chance: float, acks: AckFile) -> None:
        self._inner = inner
        self._rng = rng
        self._chance = chance
        self._acks = acks
        self.terminal: Terminal | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _die(self, point: str) -> None:
        assert self.terminal is not None
        self._acks.write({"op": "self_kill", "point": point, **self.terminal.in_flight})
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)  # never reached

    def commit(self, unit: Any) -> None:
        roll = self._rng.random()
        if roll < self._chance / 2:
            self._die("before_commit")
        self._inner.commit(unit)
        if roll > 1 - self._chance / 2:
            self._die("after_commit")


def crash_worker(
    spec: StoreSpec,
    slot: int,
    incarnation: str,
    seed: int | None,
    rng_seed: int,
    progress: Any,
    stop: Any,
    ack_path: str,
    self_kill_chance: float = 0.0,
) -> None:
    """Mixed redeem/rollback/balance/session calls until *stop* (a shared lock-free flag)
    is set, or SIGKILL.
    ``progress[slot]`` counts this incarnation's acknowledged calls. Locks last 50 ms to
    30 s and some are abandoned, so sessions expire while others work. With
    *self_kill_chance*, a commit may SIGKILL its own process (:class:`SelfKillingStore`)."""
    faulthandler.register(signal.SIGUSR1)  # the test asks for stacks when progress stalls
    acks = None
    try:
        acks = AckFile(ack_path, durable=True)
        rng = random.Random(rng_seed)
        store = open_store(spec)
        killing = SelfKillingStore(store, random.Random(rng.random()), self_kill_chance, acks)
        try:
            engine = Engine(killing, seed=seed)
            terminal = Terminal(engine, incarnation, rng, acks)
            killing.terminal = terminal
            rng = terminal.rng
            while not stop.value:
                roll = rng.random()
                if terminal.sessions and roll < 0.30:
                    if rng.random() < 0.2:
                        terminal.release()
                    elif rng.random() < 0.1:
                        terminal.sessions.pop()  # an abandoned cart: the lock just expires
                    else:
                        terminal.redeem_held()
                elif roll < 0.45:
                    code = rng.choice((HOT, CARD))
                    terminal.lock(code, terminal.credits(), rng.choice((50, 300, 3_000, 30_000)))
                elif roll < 0.60:
                    terminal.redeem(rng.choice((HOT, CARD)), terminal.credits())
                elif roll < 0.80 and terminal.redemptions:
                    terminal.rollback()
                elif roll < 0.90:
                    terminal.balance(rng.randint(500, 3_000))
                else:
                    terminal.balance(-rng.randint(100, 2_000))
                progress[slot] = terminal.calls
        finally:
            store.close()
        acks.close()
    except BaseException:
        _report_crash(acks)
        raise


# --- the deterministic interleaving ------------------------------------------------------------


class PausingStore:
    """A store whose ``commit`` stops (holding the unit open: the voucher's lock) until
    *resume* is set; it sets *paused* when it stops."""

    def __init__(self, inner: Any, paused: Any, resume: Any) -> None:
        self._inner = inner
        self._paused = paused
        self._resume = resume

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def commit(self, unit: Any) -> None:
        self._paused.set()
        if not self._resume.wait(timeout=60):
            raise TimeoutError("never resumed")
        self._inner.commit(unit)


def _write_result(path: str, result: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as file:
        json.dump(result, file)


def paused_redeemer(spec: StoreSpec, code: str, paused: Any, resume: Any, result_path: str) -> None:
    """Redeem *code*, stopping just before the commit until *resume* is set."""
    store = open_store(spec)
    try:
        engine = Engine(PausingStore(store, paused, resume))
        try:
            redemption = engine.redeem_voucher(code, order_amount=ORDER_AMOUNT)
            result = {"ok": True, "id": redemption.id, "done": time.monotonic()}
        except VoucherError as error:
            result = {"ok": False, "error": error.key, "done": time.monotonic()}
        _write_result(result_path, result)
    finally:
        store.close()


def redeemer(spec: StoreSpec, code: str, ready: Any, go: Any, done: Any, result_path: str) -> None:
    """Open an engine, set *ready*, wait for *go*, then redeem *code* once; *done* is set
    right after the call returns (the result, with monotonic start/end, goes to
    *result_path*)."""
    with open_engine(spec) as engine:
        ready.set()
        if not go.wait(timeout=60):
            raise TimeoutError("never told to go")
        started = time.monotonic()
        result: dict[str, Any]
        try:
            redemption = engine.redeem_voucher(code, order_amount=ORDER_AMOUNT)
            result = {"ok": True, "id": redemption.id}
        except VoucherError as error:
            result = {"ok": False, "error": error.key}
        result.update(started=started, done=time.monotonic())
        _write_result(result_path, result)
        done.set()
