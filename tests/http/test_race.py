"""Sixteen HTTP clients race on one limited discount voucher and one gift card, served by two
``vouchercore serve`` processes sharing one store (a SQLite file, or a PostgreSQL schema) —
issue 13: the server keeps the engine's guarantees across processes.

The clients are threads of the test, each with its own connection to one of the two servers
(eight a server) and to the other one (where it sends its retries). They work in three phases,
a barrier between each:

1. **One call each, all at once**, each client its own kind: a plain redemption of HOT or of
   the card, a LOCK then a redemption with its key, a LOCK then its release, a stacked
   redemption (HOT + the card; plain or with a LOCK), a redemption under an
   ``Idempotency-Key`` sent again to the other server (at once, or after the answer), a
   redemption rolled back (under a key, the rollback sent again to the other server). Their
   demand fits the supply, so every one of them must succeed.
2. **Twelve random calls each** of the same kinds (credits in uneven chunks), and rollbacks of
   their own redemptions: demand now exceeds supply.
3. **The drain**: every client redeems HOT until ``quantity_exceeded``, then the card until
   even 1 credit is refused.

Every answer is recorded (what the client was told). Asserted, set against the store at rest
(an engine opened on it once the servers stopped):

- HOT: the acknowledged live redemptions (plain, or children of stacks) are its
  ``redeemed_quantity``, exactly its quantity once drained, and no lock is left;
- the card: its balance is the opening minus the acknowledged live credits, exactly 0 once
  drained; its transaction log replays to it, never below 0;
- every acknowledged redemption (and stack) is stored exactly once, as told; a retry under a
  key answers with the same redemption, on either server; the store holds no success nobody
  was told of, and its failed attempts are the refusals the clients were told of;
- a held lock always redeems, a client's own redemption always rolls back;
- ``audit().ok``; both servers stop cleanly (exit 0, no traceback).

Nothing here depends on timing: the bounds are liveness bounds (a hang fails the test).
"""

from __future__ import annotations

import random
import re
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.http.conftest import AUTH
from tests.http.serve_processes import serving
from tests.liveness import LIVENESS
from vouchercore import Engine, RedemptionStatus
from vouchercore.testing import all_transactions

pytestmark = pytest.mark.processes

HOT = "RACE-HOT"  # a discount voucher, 500 off, limited quantity
CARD = "RACE-CARD"  # a gift card
QUANTITY = 25
OPENING = 10_000
DISCOUNT = 500
ORDER = {"amount": 5_000}
CLIENTS = 16
CALLS = 12  # random calls per client in phase 2 (retries and rollbacks come on top)
STUCK = 4 * LIVENESS  # clients still running then are stuck: the test fails

#: What a refused redemption or an invalid LOCK may be told: the race is lost, nothing else.
REFUSALS = {"quantity_exceeded", "gift_amount_exceeded"}
_FAILED_PARENT = re.compile(r"stacked redemption (r_\w+) failed")


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A SQLite file, or a fresh PostgreSQL schema (dropped afterwards; skipped without
    ``VOUCHERCORE_TEST_POSTGRES_DSN``)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'race.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


class Refused(Exception):
    """A refusal the race allows (:data:`REFUSALS`): its key, and the whole error object."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body["key"])
        self.key: str = body["key"]
        self.body = body


def _answer(response: httpx2.Response, expected: int = 200) -> Any:
    """The JSON of a successful answer; :class:`Refused` for a refusal the race allows; any
    other answer fails the client (a 5xx, a 409, a malformed request …)."""
    if response.status_code == expected:
        return None if expected == 204 else response.json()
    body = response.json() if response.headers.get("content-type") == "application/json" else {}
    if response.status_code == 400 and body.get("key") in REFUSALS:
        raise Refused(body)
    raise AssertionError(
        f"{response.request.method} {response.request.url.path}: "
        f"{response.status_code} {response.text[:500]}"
    )


class Client:
    """One client: a connection to its own server and one to the other, a seeded random
    stream, the answers it was told (:attr:`acks`) and its own live redemptions."""

    def __init__(self, number: int, urls: list[str]) -> None:
        self.name = f"c{number}"
        self.number = number
        self.rng = random.Random(13_000 + number)
        self.home = httpx2.Client(base_url=urls[number % 2], headers=AUTH, timeout=LIVENESS)
        self.away = httpx2.Client(base_url=urls[(number + 1) % 2], headers=AUTH, timeout=LIVENESS)
        self.beside = ThreadPoolExecutor(max_workers=1)  # a retry sent while the first runs
        self.acks: list[dict[str, Any]] = []
        self.own: list[tuple[str, str]] = []  # ("single" | "stack", id), live, not rolled back
        self.calls = 0

    def close(self) -> None:
        self.beside.shutdown(wait=False, cancel_futures=True)
        self.home.close()
        self.away.close()

    def tag(self) -> str:
        self.calls += 1
        return f"{self.name}.{self.calls}"

    def credits(self) -> int:
        return self.rng.randint(50, 600)  # uneven chunks: 10,000 is no multiple of them

    # --- the calls ---------------------------------------------------------------------------

    def _twice(
        self, send: Callable[[httpx2.Client], httpx2.Response], key: str | None, how: str
    ) -> list[httpx2.Response]:
        """*send* to the home server; with a key, again to the other server: at once (both in
        flight together) or once the first is answered."""
        if key is None:
            return [send(self.home)]
        if how == "together":
            other = self.beside.submit(send, self.away)
            first = send(self.home)
            return [first, other.result(timeout=LIVENESS)]
        return [send(self.home), send(self.away)]

    def redeem(
        self,
        code: str,
        credits: int | None = None,
        *,
        session: str | None = None,
        key: str | None = None,
        how: str = "after",
    ) -> bool:
        """``POST /v1/vouchers/{code}/redemption``; whether it succeeded (each answer
        recorded; with a key, the answers of both servers)."""
        tag = self.tag()
        body: dict[str, Any] = {"metadata": {"tag": tag}}
        if code == HOT:
            body["order"] = ORDER
        else:
            body["gift"] = {"credits": credits}
        if session is not None:
            body["session"] = {"key": session}
        headers = {} if key is None else {"Idempotency-Key": key}
        answers = self._twice(
            lambda client: client.post(
                f"/v1/vouchers/{code}/redemption", json=body, headers=headers
            ),
            key,
            how,
        )
        ok = False
        for response in answers:
            ack: dict[str, Any] = {"op": "redeem", "code": code, "tag": tag, "key": key}
            ack.update(session=session, how=how)
            try:
                made = _answer(response)
            except Refused as refused:
                ack.update(ok=False, error=refused.key)
            else:
                assert made["result"] == "SUCCESS" and made["status"] == "SUCCEEDED", made
                assert made["metadata"] == {"tag": tag}
                ack.update(ok=True, id=made["id"], amount=made["amount"])
                if ok is False:
                    self.own.append(("single", made["id"]))
                ok = True
            self.acks.append(ack)
        return ok

    def redeem_stack(
        self,
        credits: int,
        *,
        session: str | None = None,
        key: str | None = None,
        how: str = "after",
    ) -> bool:
        """``POST /v1/redemptions`` of HOT then the card; whether it succeeded."""
        tag = self.tag()
        body: dict[str, Any] = {
            "redeemables": [
                {"object": "voucher", "id": HOT},
                {"object": "voucher", "id": CARD, "gift": {"credits": credits}},
            ],
            "order": ORDER,
            "metadata": {"tag": tag},
        }
        if session is not None:
            body["session"] = {"key": session}
        headers = {} if key is None else {"Idempotency-Key": key}
        answers = self._twice(
            lambda client: client.post("/v1/redemptions", json=body, headers=headers), key, how
        )
        ok = False
        for response in answers:
            ack: dict[str, Any] = {"op": "stack", "tag": tag, "key": key, "session": session}
            ack.update(credits=credits, how=how)
            try:
                made = _answer(response)
            except Refused as refused:
                found = _FAILED_PARENT.search(refused.body.get("details") or "")
                ack.update(ok=False, error=refused.key, parent=found and found.group(1))
            else:
                parent = made["parent_redemption"]
                assert parent["status"] == "SUCCEEDED" and parent["metadata"] == {"tag": tag}
                children = made["redemptions"]
                assert [child["voucher"]["code"] for child in children] == [HOT, CARD]
                ack.update(
                    ok=True,
                    parent=parent["id"],
                    children=[child["id"] for child in children],
                    amounts=[child["amount"] for child in children],
                )
                if ok is False:
                    self.own.append(("stack", parent["id"]))
                ok = True
            self.acks.append(ack)
        return ok

    def lock(self, code: str | None, credits: int | None = None) -> str | None:
        """A validation with a LOCK (``code`` None: the stack of HOT and the card); its key
        when valid, else None (the refusal recorded)."""
        tag = self.tag()
        session = {"type": "LOCK", "key": tag, "ttl": 5, "ttl_unit": "MINUTES"}
        if code is None:
            body: dict[str, Any] = {
                "redeemables": [
                    {"object": "voucher", "id": HOT},
                    {"object": "voucher", "id": CARD, "gift": {"credits": credits}},
                ],
                "order": ORDER,
                "session": session,
            }
            found = _answer(self.home.post("/v1/validations", json=body))
            errors = [item["result"]["error"]["key"] for item in found["inapplicable_redeemables"]]
        else:
            body = {"session": session}
            if code == HOT:
                body["order"] = ORDER
            else:
                body["gift"] = {"credits": credits}
            found = _answer(self.home.post(f"/v1/vouchers/{code}/validate", json=body))
            errors = [] if found["valid"] else [found["error"]["key"]]
        ack: dict[str, Any] = {"op": "lock", "code": code, "tag": tag, "valid": found["valid"]}
        ack["errors"] = errors
        self.acks.append(ack)
        if not found["valid"]:
            assert errors and set(errors) <= REFUSALS, found
            return None
        assert found["session"]["key"] == tag, found
        return tag

    def release(self, code: str | None, key: str) -> None:
        """``DELETE /v1/vouchers/{code}/sessions/{key}`` (``code`` None: both vouchers of a
        stack's LOCK), on the other server."""
        for each in (HOT, CARD) if code is None else (code,):
            _answer(self.away.delete(f"/v1/vouchers/{each}/sessions/{key}"), 204)
            self.acks.append({"op": "release", "code": each, "key": key})

    def locked_then_redeemed(self, code: str | None) -> bool:
        """A LOCK, then a redemption with its key (a held lock must redeem)."""
        credits = self.credits()
        key = self.lock(code, credits)
        if key is None:
            return False
        done = (
            self.redeem_stack(credits, session=key)
            if code is None
            else self.redeem(code, credits, session=key)
        )
        assert done, f"{self.name}: a held lock {key} was refused"
        return True

    def locked_then_released(self, code: str | None) -> bool:
        """A LOCK, then its release."""
        key = self.lock(code, self.credits())
        if key is None:
            return False
        self.release(code, key)
        return True

    def keyed(self, code: str | None, how: str) -> bool:
        """A redemption (``code`` None: a stack) under an idempotency key, sent again to the
        other server."""
        key = f"idem-{self.name}.{self.calls + 1}"
        if code is None:
            return self.redeem_stack(self.credits(), key=key, how=how)
        return self.redeem(code, self.credits(), key=key, how=how)

    def roll_back(self, keyed: bool) -> bool:
        """Roll back one of its own live redemptions (a stack as a whole) — under a key, sent
        again to the other server; whether it had one to roll back."""
        if not self.own:
            return False
        kind, redemption_id = self.own.pop(self.rng.randrange(len(self.own)))
        tag = self.tag()
        key = f"undo-{tag}" if keyed else None
        headers = {} if key is None else {"Idempotency-Key": key}
        answers = self._twice(
            lambda client: client.post(
                f"/v1/redemptions/{redemption_id}/rollback",
                params={"reason": tag},
                headers=headers,
            ),
            key,
            "after",
        )
        for response in answers:
            done = _answer(response)
            assert done["redemption"] == redemption_id and done["reason"] == tag, done
            self.acks.append(
                {"op": "rollback", "kind": kind, "of": redemption_id, "id": done["id"], "key": key}
            )
        return True

    def first(self) -> bool:
        """Phase 1: the one call of this client's kind (by its number). Together they fit the
        supply whatever the order: 11 of them take (or lock) 1 of HOT's 25, 11 take (or lock)
        at most 600 credits of the card's 10,000 — so each must succeed."""
        credits = self.credits()
        kinds: list[Callable[[], bool]] = [
            lambda: self.redeem(HOT),
            lambda: self.redeem(CARD, credits),
            lambda: self.locked_then_redeemed(HOT),
            lambda: self.locked_then_redeemed(CARD),
            lambda: self.locked_then_released(HOT),
            lambda: self.locked_then_released(CARD),
            lambda: self.redeem_stack(credits),
            lambda: self.locked_then_redeemed(None),
            lambda: self.keyed(HOT, "together"),
            lambda: self.keyed(CARD, "after"),
            lambda: self.keyed(None, "together"),
            lambda: self.keyed(None, "after"),
            lambda: self.redeem(HOT) and self.roll_back(keyed=True),
            lambda: self.redeem_stack(credits) and self.roll_back(keyed=True),
            lambda: self.redeem(CARD, credits) and self.roll_back(keyed=False),
            lambda: self.locked_then_released(None),
        ]
        return kinds[self.number % len(kinds)]()

    def random_call(self) -> None:
        """Phase 2: one call of a kind drawn at random."""
        rng = self.rng
        choice = rng.randrange(11)
        code = rng.choice([HOT, CARD, None])
        if choice < 2:
            self.redeem(HOT)
        elif choice < 4:
            self.redeem(CARD, self.credits())
        elif choice < 6:
            self.locked_then_redeemed(code)
        elif choice < 7:
            self.locked_then_released(code)
        elif choice < 8:
            self.redeem_stack(self.credits())
        elif choice < 10:
            self.keyed(code, rng.choice(["together", "after"]))
        else:
            self.roll_back(keyed=rng.random() < 0.5)

    def drain(self) -> None:
        """Phase 3: HOT until refused, then the card until even 1 credit is refused."""
        while self.redeem(HOT):
            pass
        while self.redeem(CARD, self.rng.randint(1, 300)):
            pass
        while self.redeem(CARD, 1):
            pass


def _race(urls: list[str]) -> list[Client]:
    """The three phases, on client threads; the clients, with what they were told."""
    clients = [Client(number, urls) for number in range(CLIENTS)]
    barriers = [threading.Barrier(CLIENTS, timeout=STUCK) for _ in range(3)]
    failures: list[BaseException] = []
    firsts: list[tuple[str, bool]] = []

    def run(client: Client) -> None:
        try:
            barriers[0].wait()
            firsts.append((client.name, client.first()))
            barriers[1].wait()
            for _ in range(CALLS):
                client.random_call()
            barriers[2].wait()
            client.drain()
        except BaseException as error:
            failures.append(error)
            for barrier in barriers:  # the others fail at their barrier instead of waiting
                barrier.abort()

    threads = [
        threading.Thread(target=run, args=(client,), name=client.name, daemon=True)
        for client in clients
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(STUCK)
            if thread.is_alive():
                pytest.fail(f"client {thread.name} still running after {STUCK:g} s (a hang?)")
    finally:
        for client in clients:
            client.close()
    real = [f for f in failures if not isinstance(f, threading.BrokenBarrierError)]
    if real or failures:
        raise (real or failures)[0]
    assert sorted(firsts) == sorted((client.name, True) for client in clients), firsts
    return clients


def test_sixteen_clients_on_two_server_processes_never_over_redeem_or_overspend(
    store_url: str, tmp_path: Path
) -> None:
    with Engine(store_url, seed=1) as engine:
        engine.create_voucher(
            HOT, discount={"type": "AMOUNT", "amount_off": DISCOUNT}, quantity=QUANTITY
        )
        engine.create_voucher(CARD, type="GIFT_VOUCHER", gift={"amount": OPENING})
    with serving(store_url, 2, tmp_path / "jobs") as served:
        clients = _race(served.urls)
    tails = [log[-3000:] for log in served.logs]
    assert served.exit_codes == [0, 0], tails
    for log, tail in zip(served.logs, tails, strict=True):
        assert "Traceback" not in log and "ERROR" not in log, tail
        assert log.count('"POST /v1/') >= CLIENTS, tail  # both servers took their share
    acks = [ack for client in clients for ack in client.acks]
    with Engine(store_url) as engine:
        _check(engine, acks)


def _check(engine: Engine, acks: list[dict[str, Any]]) -> None:
    """What the clients were told, set against the store at rest."""
    # --- what the clients were told ---
    singles: dict[str, dict[str, Any]] = {}  # redemption id → its acknowledgement
    stacks: dict[str, dict[str, Any]] = {}  # parent id → its acknowledgement
    refused: Counter[tuple[str, str]] = Counter()  # (code, key) of refused plain redemptions
    failed_parents: dict[str, dict[str, Any]] = {}
    for a in acks:
        if a["op"] == "redeem" and a["ok"]:
            first = singles.setdefault(a["id"], a)
            if first is not a:  # told twice: only a retry under the same key
                assert a["key"] is not None and first["key"] == a["key"], (first, a)
                assert first["amount"] == a["amount"], (first, a)
        elif a["op"] == "redeem":
            assert a["session"] is None, a  # a held lock never refused
            refused[(a["code"], a["error"])] += 1
        elif a["op"] == "stack" and a["ok"]:
            first = stacks.setdefault(a["parent"], a)
            if first is not a:
                assert a["key"] is not None and first["key"] == a["key"], (first, a)
                assert (first["children"], first["amounts"]) == (a["children"], a["amounts"])
        elif a["op"] == "stack":
            assert a["session"] is None, a
            assert a["parent"] is not None and a["parent"] not in failed_parents, a
            failed_parents[a["parent"]] = a
    assert set(refused) <= {(HOT, "quantity_exceeded"), (CARD, "gift_amount_exceeded")}
    # a key applied once: every success under one key names one redemption, and a retry
    # sent after a success was answered with it (not run again, not refused)
    for told in (singles, stacks):
        keys = [a["key"] for a in told.values() if a["key"] is not None]
        assert len(keys) == len(set(keys)), "a key applied twice"
    answers: dict[str, list[dict[str, Any]]] = {}
    for a in acks:
        if a["op"] in ("redeem", "stack") and a["key"] is not None:
            answers.setdefault(a["key"], []).append(a)
    for key, pair in answers.items():
        assert len(pair) == 2, pair
        if pair[0]["how"] == "after" and pair[0]["ok"]:
            assert pair[1]["ok"], f"{key}: a retry after the success was refused: {pair}"

    rollbacks: dict[str, dict[str, Any]] = {}  # rolled-back redemption (or parent) → rollback
    for a in (a for a in acks if a["op"] == "rollback"):
        first = rollbacks.setdefault(a["of"], a)
        if first is not a:
            assert a["key"] is not None and first["key"] == a["key"], (first, a)
            assert first["id"] == a["id"], (first, a)  # the retry answered the same rollback
        assert a["of"] in (singles if a["kind"] == "single" else stacks), a

    # --- every acknowledged redemption stored once, as told; no other success ---
    log = [*engine.list_redemptions(HOT), *engine.list_redemptions(CARD)]
    ids = Counter(r.id for r in log)
    assert max(ids.values()) == 1, "a redemption listed twice"
    stored = {r.id: r for r in log if r.status is not RedemptionStatus.FAILED}
    children: dict[str, tuple[str, dict[str, Any]]] = {}  # child id → (parent id, its ack)
    for parent_id, a in stacks.items():
        for child_id in a["children"]:
            children[child_id] = (parent_id, a)
    assert set(stored) == set(singles) | set(children), (
        f"lost: {sorted(set(singles) | set(children) - set(stored))[:5]}, "
        f"nobody told of: {sorted(set(stored) - set(singles) - set(children))[:5]}"
    )
    live = Counter[str]()  # code → live redemptions
    credits = 0  # live credits taken from the card
    for rid, a in singles.items():
        redemption = stored[rid]
        assert (redemption.voucher_code, redemption.amount) == (a["code"], a["amount"])
        assert redemption.metadata == {"tag": a["tag"]} and redemption.parent_id is None
        rollback = rollbacks.get(rid)
        status = RedemptionStatus.SUCCEEDED if rollback is None else RedemptionStatus.ROLLED_BACK
        assert redemption.status is status, (redemption, a)
        assert redemption.rollback_id == (None if rollback is None else rollback["id"])
        if rollback is None:
            live[a["code"]] += 1
            credits += a["amount"] if a["code"] == CARD else 0
    for parent_id, a in stacks.items():
        parent = engine.get_parent_redemption(parent_id)
        rollback = rollbacks.get(parent_id)
        status = RedemptionStatus.SUCCEEDED if rollback is None else RedemptionStatus.ROLLED_BACK
        assert parent.status is status and parent.redemptions == tuple(a["children"]), parent
        assert parent.metadata == {"tag": a["tag"]} and parent.session_key == a["session"]
        assert parent.rollback_id == (None if rollback is None else rollback["id"])
        for code, child_id, amount in zip((HOT, CARD), a["children"], a["amounts"], strict=True):
            child = stored[child_id]
            assert (child.voucher_code, child.amount, child.parent_id) == (code, amount, parent_id)
            assert child.status is status, (child, parent)
            if rollback is None:
                live[code] += 1
                credits += amount if code == CARD else 0
    assert all(a["amounts"] == [DISCOUNT, a["credits"]] for a in stacks.values())
    assert all(a["amount"] == DISCOUNT for a in singles.values() if a["code"] == HOT)

    # failed attempts: the refusals the clients were told of, one for one
    failed = Counter(
        (r.voucher_code, r.failure_code) for r in log if r.status is RedemptionStatus.FAILED
    )
    assert failed == refused
    parents = {parent.id: parent for parent in engine.store.parent_redemptions()}
    assert set(parents) == set(stacks) | set(failed_parents), "a stack nobody was told of"
    for parent_id, a in failed_parents.items():
        parent = parents[parent_id]
        assert parent.status is RedemptionStatus.FAILED and parent.redemptions == (), parent
        assert parent.failure_code == a["error"] and parent.metadata == {"tag": a["tag"]}

    # --- HOT: exactly the quantity, never more; no lock left ---
    hot = engine.get_voucher(HOT)
    assert hot.redeemed_quantity == live[HOT] == QUANTITY, (hot.redeemed_quantity, live[HOT])
    assert hot.locked_quantity == 0
    assert refused[(HOT, "quantity_exceeded")] >= CLIENTS  # every drain ended on a refusal

    # --- the card: exact totals, never below 0, drained to exactly 0 ---
    card = engine.get_voucher(CARD)
    assert card.gift is not None
    assert card.gift.amount == OPENING
    assert card.gift.balance == OPENING - credits == 0, (card.gift.balance, OPENING - credits)
    assert refused[(CARD, "gift_amount_exceeded")] >= CLIENTS
    balance = OPENING
    transactions = all_transactions(engine, CARD)
    for transaction in transactions:
        balance += transaction.amount
        assert transaction.balance == balance >= 0, transaction
    assert balance == card.gift.balance
    card_rollbacks = sum(
        1 for of, a in rollbacks.items() if a["kind"] == "stack" or singles[of]["code"] == CARD
    )
    card_redemptions = sum(1 for a in singles.values() if a["code"] == CARD) + len(stacks)
    assert len(transactions) == card_redemptions + card_rollbacks

    report = engine.audit()
    assert report.ok, str(report)
