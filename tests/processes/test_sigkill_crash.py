"""Worker processes SIGKILLed at random moments leave every operation whole (a failed call
changes nothing: README "Concurrency and the audit").

Four processes run a redeem / rollback / balance / LOCK-session workload on one limited discount
voucher and one gift card. In rounds, one of them (chosen by a seeded ``random.Random``) is
SIGKILLed a random few tens of milliseconds into its work — inside an engine call, inside a
database transaction, between a commit and its acknowledgement, anywhere — and restarted, until
at least :data:`KILLS` kills (``VOUCHERCORE_PROCESSES_SEED`` picks another seed). Then the
survivors stop cleanly, the store is reopened and checked.

Each worker acknowledges every call right after it returns (one JSON line, flushed and fsynced)
and tags everything it writes (see ``workers.py``), so each record in the store can be traced to
the call that made it. The checks:

- ``audit().ok``: the log replays to every balance, counters match the redemption log, the
  session ledger balances;
- every acknowledged redemption (and failed attempt), rollback and balance change is in the store
  exactly once, as acknowledged; every acknowledged transaction is in the log exactly once;
- each operation is whole: a gift redemption has exactly its ``CREDITS_REDEMPTION``, a rolled
  back one exactly one ``CREDITS_REFUND``, a balance change exactly one transaction; no tag twice;
- no session is both redeemed (or acknowledged released) and live; every acknowledged lock that
  has not expired nor been resolved is still live, with the acknowledged expiry;
- what the store holds beyond the acknowledgements is at most ONE operation per killed worker
  (the call in flight when it died, numbered after its last acknowledged one), and nothing for a
  worker that stopped cleanly.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.processes.workers import (
    CARD,
    DISCOUNT,
    HOT,
    StoreSpec,
    crash_worker,
    now_us,
    open_engine,
    read_acks,
    to_us,
)
from vouchercore import RedemptionStatus, TransactionType
from vouchercore.testing import all_transactions

pytestmark = [pytest.mark.processes, pytest.mark.slow]

WORKERS = 4
KILLS = 40  # by the test; the workers' own kills at a commit come on top
HOT_QUANTITY = 40
CARD_OPENING = 50_000
SEED = int(os.environ.get("VOUCHERCORE_PROCESSES_SEED", "20260301"))  # kill timing, workloads
SELF_KILL_CHANCE = 1 / 40  # per commit: a worker SIGKILLs itself just before or after it
TIME_LIMIT = 90.0  # seconds for the kill rounds; a hang fails instead of blocking CI


@dataclass
class Incarnation:
    """One run of a worker slot, from start to exit or SIGKILL."""

    name: str
    path: str
    process: Any
    death: str | None = None  # "sigkill" (by the test), "before_commit", "after_commit"
    in_flight: dict[str, str] = field(default_factory=dict)  # a self-kill's call
    acks: list[dict[str, Any]] = field(default_factory=list)

    def bury(self) -> None:
        """Reap the SIGKILLed process and read how it died."""
        self.process.join(timeout=30)
        marker = (read_acks(self.path) or [{}])[-1]
        assert self.process.exitcode == -signal.SIGKILL, (
            f"{self.name} exited with {self.process.exitcode}: {marker.get('error', '')}"
        )
        if marker.get("op") == "self_kill":
            self.death = marker["point"]
            self.in_flight = {"call": marker["call"], "tag": marker["tag"]}
        else:
            self.death = "sigkill"


def run_kill_rounds(spec: StoreSpec, tmp_path: Path) -> list[Incarnation]:
    """Start four workers; kill one at a random moment and restart it, KILLS times (workers
    that kill themselves at a commit are restarted too)."""
    rng = random.Random(SEED)
    with open_engine(spec, seed=1) as engine:
        engine.create_voucher(
            HOT, discount={"type": "AMOUNT", "amount_off": DISCOUNT}, quantity=HOT_QUANTITY
        )
        engine.create_voucher(CARD, type="GIFT_VOUCHER", gift={"amount": CARD_OPENING})
    context = multiprocessing.get_context("forkserver")
    # restarts fork from a server that has imported everything (psycopg alone takes ~0.5 s);
    # one server serves the whole session, so it preloads for every store (missing: ignored)
    context.set_forkserver_preload(["tests.processes.workers", "vouchercore.stores.postgres"])
    progress = context.Array("q", WORKERS, lock=False)  # calls acknowledged, per slot
    # a lock-free flag: a worker SIGKILLed inside Event.is_set() would leave the Event's lock
    # held forever, and every other worker waiting on it
    stop = context.RawValue("b", 0)
    incarnations: list[Incarnation] = []

    def launch(slot: int) -> Incarnation:
        number = len(incarnations)
        name = f"w{slot}i{number}"
        path = str(tmp_path / f"{name}.jsonl")
        seed = 90_000 + number if slot % 2 else None  # a seed of its own, or none
        progress[slot] = 0
        process = context.Process(
            target=crash_worker,
            args=(spec, slot, name, seed, rng.randrange(2**32), progress, stop, path),
            kwargs={"self_kill_chance": SELF_KILL_CHANCE},
            daemon=True,
        )
        process.start()
        incarnation = Incarnation(name, path, process)
        incarnations.append(incarnation)
        return incarnation

    def restart_the_self_killed() -> None:
        for slot, incarnation in enumerate(running):
            if not incarnation.process.is_alive():
                incarnation.bury()
                assert incarnation.death != "sigkill", f"{incarnation.name} died on its own"
                running[slot] = launch(slot)

    running = [launch(slot) for slot in range(WORKERS)]
    deadline = time.monotonic() + TIME_LIMIT
    kills = 0
    try:
        while kills < KILLS:
            slot = rng.randrange(WORKERS)
            calls = rng.randint(1, 6)  # let it get going, then kill it tens of ms later
            while progress[slot] < calls:
                restart_the_self_killed()
                if time.monotonic() > deadline:
                    for incarnation in running:  # their stacks, on stderr (faulthandler)
                        incarnation.process.is_alive() and os.kill(
                            incarnation.process.pid, signal.SIGUSR1
                        )
                    time.sleep(1)
                    stalled = {
                        i.name: (i.process.is_alive(), read_acks(i.path)[-1:]) for i in running
                    }
                    pytest.fail(f"workers stopped making progress: {progress[:]} {stalled}")
                time.sleep(0.001)
            time.sleep(rng.uniform(0.0, 0.06))
            victim = running[slot]
            victim.process.kill()  # SIGKILL (nothing if it has just killed itself)
            victim.bury()
            kills += victim.death == "sigkill"
            running[slot] = launch(slot)
        time.sleep(0.2)  # let the last one work a little before the clean stop
        stop.value = 1
        for incarnation in running:
            incarnation.process.join(timeout=60)
            if incarnation.process.exitcode != 0:
                incarnation.bury()  # killed itself on its last commit
                assert incarnation.death != "sigkill", f"{incarnation.name} did not stop cleanly"
    finally:
        for incarnation in incarnations:
            if incarnation.process.is_alive():
                incarnation.process.kill()
                incarnation.process.join()
    for incarnation in incarnations:
        lines = read_acks(incarnation.path)
        crashes = [a["error"] for a in lines if a["op"] == "crash"]
        assert not crashes, f"{incarnation.name}: {crashes[0]}"
        incarnation.acks = [a for a in lines if a["op"] != "self_kill"]
    return incarnations


def owner(tag: str) -> tuple[str, int | None]:
    """The incarnation and call number a tag names (``"w0i3.17"``; ``"w0i3.?"``: unknown)."""
    name, _, n = tag.partition(".")
    return name, None if n == "?" else int(n)


def test_sigkilled_workers_leave_every_operation_whole(
    crash_store_spec: StoreSpec, tmp_path: Path
) -> None:
    store_spec = crash_store_spec
    started = time.monotonic()
    incarnations = run_kill_rounds(store_spec, tmp_path)
    killed = {i.name for i in incarnations if i.death is not None}
    deaths = Counter(i.death for i in incarnations if i.death is not None)
    assert deaths["sigkill"] >= 20
    assert deaths["before_commit"] + deaths["after_commit"] >= 2, deaths
    acks = [a for i in incarnations for a in i.acks]
    last_acked = {i.name: max((a["n"] for a in i.acks), default=0) for i in incarnations}

    with open_engine(store_spec) as engine:  # reopened after the crashes
        report = engine.audit()
        hot, card = engine.get_voucher(HOT), engine.get_voucher(CARD)
        log = [*engine.list_redemptions(HOT), *engine.list_redemptions(CARD)]
        transactions = all_transactions(engine, CARD)
        live = {(code, s.key): s for code in (HOT, CARD) for s in engine.list_sessions(code)}
        checked_at = now_us()  # after the read: a lock expiring later was live when read
    assert report.ok, str(report)

    # what the store holds that no acknowledgement explains, by incarnation: (call number, what)
    unexplained: dict[str, list[tuple[int | None, str]]] = defaultdict(list)

    def unacknowledged(tag: str, what: str) -> None:
        name, n = owner(tag)
        unexplained[name].append((n, what))

    # --- redemptions: each traced to its call, once; acknowledged ones exactly as told
    assert len({r.id for r in log}) == len(log), "a redemption id twice in the log"
    by_tag: dict[str, Any] = {}
    for redemption in log:
        tag = (redemption.metadata or {}).get("tag")
        assert tag is not None, redemption
        assert tag not in by_tag, f"call {tag} redeemed twice"
        by_tag[tag] = redemption
    by_id = {r.id: r for r in log}
    redeem_acks = {a["tag"]: a for a in acks if a["op"] == "redeem"}
    for tag, ack in redeem_acks.items():
        redemption = by_tag.get(tag)
        assert redemption is not None, f"acknowledged redemption call {tag} is not in the store"
        if ack["ok"]:
            assert redemption.id == ack["id"]
            assert redemption.amount == ack["amount"]
            assert redemption.transaction_id == ack["tx"]
            assert redemption.status is not RedemptionStatus.FAILED
        else:
            assert redemption.status is RedemptionStatus.FAILED
            assert redemption.failure_code == ack["error"]
    for tag, redemption in by_tag.items():
        if tag not in redeem_acks:
            unacknowledged(tag, f"redemption {redemption.id} ({redemption.status.value})")

    # --- rollbacks: only of a worker's own redemptions, so an unacknowledged one is its owner's
    rollback_acks = [a for a in acks if a["op"] == "rollback"]
    assert all(a["ok"] for a in rollback_acks), [a for a in rollback_acks if not a["ok"]][:3]
    rolled_back = {a["redemption"]: a for a in rollback_acks}
    assert len(rolled_back) == len(rollback_acks), "a redemption rolled back twice"
    for redemption_id, ack in rolled_back.items():
        assert by_id[redemption_id].status is RedemptionStatus.ROLLED_BACK
        assert by_id[redemption_id].rollback_id == ack["id"]
    unacknowledged_rollbacks = [
        r for r in log if r.status is RedemptionStatus.ROLLED_BACK and r.id not in rolled_back
    ]

    # --- counters: the voucher agrees with its log; never over the limit
    standing = Counter(r.voucher_code for r in log if r.status is RedemptionStatus.SUCCEEDED)
    assert hot.redeemed_quantity == standing[HOT] <= HOT_QUANTITY
    assert card.redeemed_quantity == standing[CARD]

    # --- transactions: each whole, once; acknowledged ones present; the log replays
    assert len({t.id for t in transactions}) == len(transactions), "a transaction id twice"
    acknowledged_tx = [a["tx"] for a in acks if a.get("ok") and a.get("tx") is not None]
    assert len(set(acknowledged_tx)) == len(acknowledged_tx)
    stored_tx = {t.id: t for t in transactions}
    missing = [tx for tx in acknowledged_tx if tx not in stored_tx]
    assert not missing, f"acknowledged transactions lost: {missing[:5]}"
    balance = CARD_OPENING
    for transaction in transactions:
        balance += transaction.amount
        assert transaction.balance == balance >= 0, transaction
    assert balance == card.gift.balance  # type: ignore[union-attr]

    by_type: dict[TransactionType, list[Any]] = defaultdict(list)
    for transaction in transactions:
        by_type[transaction.type].append(transaction)
    assert set(by_type) <= {
        TransactionType.CREDITS_REDEMPTION,
        TransactionType.CREDITS_REFUND,
        TransactionType.CREDITS_ADDITION,
        TransactionType.CREDITS_REMOVAL,
    }
    card_redemptions = [
        r for r in log if r.voucher_code == CARD and r.status is not RedemptionStatus.FAILED
    ]
    redemption_tx = {t.id: t for t in by_type[TransactionType.CREDITS_REDEMPTION]}
    assert sorted(redemption_tx) == sorted(r.transaction_id for r in card_redemptions)
    for redemption in card_redemptions:
        transaction = redemption_tx[redemption.transaction_id]
        assert transaction.amount == -redemption.amount
        assert transaction.details["redemption"]["id"] == redemption.id
    refunds = Counter(
        t.details["redemption"]["id"] for t in by_type[TransactionType.CREDITS_REFUND]
    )
    refunded = {r.id for r in card_redemptions if r.status is RedemptionStatus.ROLLED_BACK}
    assert set(refunds) == refunded and set(refunds.values()) <= {1}, "a refund lost or doubled"
    for transaction in by_type[TransactionType.CREDITS_REFUND]:
        assert transaction.amount == by_id[transaction.details["redemption"]["id"]].amount
    # a rollback is tagged by its reason, which its refund carries (a discount has no refund:
    # the rollback is its redemption's owner's, call number unknown)
    refund_reasons = {
        t.details["redemption"]["id"]: t.reason for t in by_type[TransactionType.CREDITS_REFUND]
    }
    for redemption in unacknowledged_rollbacks:
        reason = refund_reasons.get(redemption.id)
        if reason is not None:
            assert owner(reason)[0] == owner(redemption.metadata["tag"])[0]
        unacknowledged(
            reason or owner(redemption.metadata["tag"])[0] + ".?", f"rollback of {redemption.id}"
        )

    manual = [
        *by_type[TransactionType.CREDITS_ADDITION],
        *by_type[TransactionType.CREDITS_REMOVAL],
    ]
    manual_by_tag = Counter(t.source_id for t in manual)
    assert set(manual_by_tag.values()) <= {1}, "a balance change applied twice"
    balance_acks = {a["tag"]: a for a in acks if a["op"] == "balance"}
    for tag, ack in balance_acks.items():
        if ack["ok"]:
            assert stored_tx[ack["tx"]].source_id == tag
            assert stored_tx[ack["tx"]].amount == ack["amount"]
        else:
            assert tag not in manual_by_tag, f"refused balance change {tag} was applied"
    for transaction in manual:
        if transaction.source_id not in balance_acks:
            unacknowledged(transaction.source_id, f"balance change {transaction.id}")
    assert card.gift.balance == (  # type: ignore[union-attr]
        CARD_OPENING
        - sum(r.amount for r in card_redemptions if r.status is RedemptionStatus.SUCCEEDED)
        + sum(t.amount for t in manual)
    )

    # --- sessions: none both resolved and live; acknowledged live locks still there
    redeemed_with = {
        (r.voucher_code, r.session_key)
        for r in log
        if r.session_key is not None and r.status is not RedemptionStatus.FAILED
    }
    released = {(a["code"], a["key"]) for a in acks if a["op"] == "release" and a["ok"]}
    locks = {(a["code"], a["key"]): a for a in acks if a["op"] == "lock" and a["ok"]}
    for (code, key), session in live.items():
        assert (code, key) not in redeemed_with, f"session {key} on {code} redeemed and live"
        assert (code, key) not in released, f"session {key} on {code} released and live"
        if (code, key) in locks:
            assert to_us(session.expires_at) == locks[code, key]["expires_us"]
        else:
            unacknowledged(key, f"lock {key} on {code}")
    for (code, key), ack in locks.items():
        resolved = (code, key) in redeemed_with or (code, key) in released
        if not resolved and ack["expires_us"] > checked_at and (code, key) not in live:
            # only its owner releases it: the release in flight when the owner was killed
            unacknowledged(owner(key)[0] + ".?", f"lock {key} on {code} gone (a release?)")

    # --- at most the one call in flight per killed worker, nothing for a clean stop
    for name, found in unexplained.items():
        assert name in killed, f"{name} stopped cleanly, yet the store holds {found}"
        assert len(found) <= 1, f"{name} was killed once, yet the store holds {found}"
        n, what = found[0]
        assert n is None or n == last_acked[name] + 1, (
            f"{name}: {what} is call {n}, but its last acknowledged call was {last_acked[name]}"
        )

    # a worker killed inside its unit of work left nothing; one killed right after its commit
    # left exactly its call (when the call always leaves a trace)
    for incarnation in incarnations:
        found = unexplained.get(incarnation.name, [])
        if incarnation.death == "before_commit":
            assert not found, f"{incarnation.name} died before committing, yet {found}"
        elif incarnation.death == "after_commit" and incarnation.in_flight["call"] in (
            "redeem",
            "rollback",
            "balance",
        ):
            n = owner(incarnation.in_flight["tag"])[1]
            assert len(found) == 1, f"{incarnation.name}'s committed call is not in the store"
            assert found[0][0] in (n, None)

    in_flight_applied = sum(len(found) for found in unexplained.values())
    print(  # figures for the curious (-s)
        f"\n{store_spec}: kills {dict(deaths)}, {len(incarnations)} incarnations, "
        f"{len(acks)} acknowledged calls, {len(log)} redemptions, {len(transactions)} "
        f"transactions, {len(live)} live sessions, {in_flight_applied} killed calls applied "
        f"but unacknowledged, {time.monotonic() - started:.1f} s"
    )
