"""The stacked-redemption race: its vouchers, its terminal, its workers and its check.

Shared by the process test (``tests/processes/test_stacked_race.py``: each worker an OS
process with its own engine on a SQLite file or a PostgreSQL schema, acknowledging to a file)
and the thread test (``tests/concurrency/test_stacked_threads.py``: threads on one engine,
acknowledging to a list). Importable, so ``spawn`` can run :func:`stack_worker`.

The vouchers: four limited discount vouchers A, B, C, D and two gift cards G, H with limited
balances. A worker redeems stacks of 2–3 of them (:data:`SHAPES`, each shuffled per call, so
A+B meets B+A and every stack crosses others in both orders): plain, under an idempotency key
(sent again at once or later), under a key every worker sends with one request (all racing on
one key), or through a stacked validation with a LOCK and a redemption with its session key
(a keyed one sent again once its locks are gone); it rolls back some of its own stacks (a
keyed rollback sent again, an unkeyed one sent twice) and tries to roll back a child alone
(refused). After every worker is done with that (a barrier), each one drains the vouchers one
at a time (stacks of one) until refused, so every discount voucher ends exactly full and
every card exactly empty.

Every call is acknowledged with one JSON-able dict (what the caller was told) and tagged
(``"<name>.<n>"``: the LOCK's session key and the ``metadata["tag"]`` of the stack);
:func:`check_stacks` sets the acknowledgements against what the store holds.
"""

from __future__ import annotations

import faulthandler
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from tests.processes.workers import AckFile, StoreSpec, _report_crash, open_engine
from vouchercore import Engine, RedemptionStatus, StorageError, VoucherError
from vouchercore.testing import all_transactions

#: the discount vouchers: their discount and their quantity
DISCOUNTS: dict[str, tuple[dict[str, Any], int]] = {
    "A": ({"type": "AMOUNT", "amount_off": 500}, 25),
    "B": ({"type": "AMOUNT", "amount_off": 300}, 20),
    "C": ({"type": "AMOUNT", "amount_off": 700}, 20),
    "D": ({"type": "PERCENT", "percent_off": 10}, 15),
}
#: the gift cards and their opening balances
GIFTS: dict[str, int] = {"G": 12_000, "H": 9_000}
CODES = (*DISCOUNTS, *GIFTS)
ORDER_AMOUNT = 10_000  # more than any stack takes off it: a card's credits are never capped
#: the stacks the workers redeem (each shuffled per call)
SHAPES: tuple[tuple[str, ...], ...] = (
    ("A", "B"),
    ("B", "A", "C"),
    ("C", "D", "A"),
    ("B", "D"),
    ("A", "G"),
    ("B", "C", "H"),
    ("G", "H"),
    ("D", "H", "G"),
    ("C", "G"),
)
#: why a stack may be refused in this race: a voucher is full, or a card is short
REFUSALS = frozenset({"quantity_exceeded", "gift_amount_exceeded"})
LOCK_TTL = {"ttl": 10, "ttl_unit": "MINUTES"}  # far longer than the race: a held lock holds
SHARED_EVERY = 8  # every eighth main-phase call of a worker is the next shared key

_FAILED_PARENT = re.compile(r"stacked redemption (r_\w+) failed")

Sink = Callable[[dict[str, Any]], None]


def create_vouchers(engine: Engine) -> None:
    """The race's vouchers, on a fresh store."""
    for code, (discount, quantity) in DISCOUNTS.items():
        engine.create_voucher(code, discount=discount, quantity=quantity)
    for code, amount in GIFTS.items():
        engine.create_voucher(code, type="GIFT_VOUCHER", gift={"amount": amount})


class Request:
    """One stacked request as sent (and sent again, unchanged, by a retry)."""

    def __init__(
        self, tag: str, stack: list[list[Any]], key: str | None, session: str | None
    ) -> None:
        self.tag = tag
        self.stack = stack  # [[code, credits or None], …] in request order
        self.key = key
        self.session = session

    @property
    def redeemables(self) -> list[dict[str, Any]]:
        """The request's redeemables, as the engine takes them."""
        return [
            {"object": "voucher", "id": code}
            if credits is None
            else {"object": "voucher", "id": code, "gift": {"credits": credits}}
            for code, credits in self.stack
        ]


def shared_request(j: int) -> Request:
    """The stack every worker sends under the idempotency key ``"shared.<j>"``: four
    workers race on one key (the first success is kept; a FAILED attempt keeps nothing)."""
    stack = [
        [code, 300 + 10 * (j % 7) if code in GIFTS else None] for code in SHAPES[j % len(SHAPES)]
    ]
    return Request(f"shared.{j}", stack, f"shared.{j}", None)


class StackTerminal:
    """A till redeeming stacks on one engine; acknowledges every answer to *sink*."""

    def __init__(self, engine: Engine, name: str, rng: random.Random, sink: Sink) -> None:
        self.engine = engine
        self.name = name
        self.rng = rng
        self.sink = sink
        self.calls = 0
        self.own: list[tuple[str, tuple[str, ...]]] = []  # own live stacks: (parent, children)
        self.seen: set[str] = set()  # parents this terminal was told of (a replay is not new)
        self.first: dict[str, dict[str, Any]] = {}  # idempotency key → first successful answer

    def next_tag(self) -> str:
        """The tag of a new call."""
        self.calls += 1
        return f"{self.name}.{self.calls}"

    def request(self, shape: Sequence[str], *, keyed: bool, shuffle: bool) -> Request:
        """A new request for the vouchers of *shape* (shuffled), credits drawn for the cards."""
        codes = list(shape)
        if shuffle:
            self.rng.shuffle(codes)
        tag = self.next_tag()
        stack = [[code, self.rng.randint(200, 900) if code in GIFTS else None] for code in codes]
        return Request(tag, stack, f"idem.{tag}" if keyed else None, None)

    def redeem(self, request: Request) -> bool:
        """redeem_stacked_discounts; True when it succeeded."""
        ack: dict[str, Any] = {
            "op": "redeem",
            "by": self.name,
            "tag": request.tag,
            "key": request.key,
            "session": request.session,
            "stack": request.stack,
        }
        try:
            stacked = self.engine.redeem_stacked_discounts(
                request.redeemables,
                order_amount=ORDER_AMOUNT,
                session=None if request.session is None else {"key": request.session},
                metadata={"tag": request.tag},
                idempotency_key=request.key,
            )
        except StorageError:
            raise
        except VoucherError as error:
            found = _FAILED_PARENT.search(error.details or "")
            ack.update(ok=False, error=error.key, parent=found.group(1) if found else None)
            self.sink(ack)
            return False
        parent = stacked.parent_redemption
        children = tuple(child.id for child in stacked.redemptions)
        ack.update(
            ok=True,
            parent=parent.id,
            status=parent.status.value,
            amount=parent.amount,
            children=list(children),
            codes=[child.voucher_code for child in stacked.redemptions],
            amounts=[child.amount for child in stacked.redemptions],
        )
        self._acknowledge(ack, "parent", "children")
        if parent.id not in self.seen and not request.tag.startswith("shared."):
            self.seen.add(parent.id)
            self.own.append((parent.id, children))
        return True

    def lock_and_redeem(self, request: Request) -> None:
        """A stacked validation with a LOCK under the request's tag; when valid, the stack
        redeemed with that session key, which must succeed (its locks are its own)."""
        result = self.engine.validate_stacked_discounts(
            request.redeemables,
            order_amount=ORDER_AMOUNT,
            session={"type": "LOCK", "key": request.tag, **LOCK_TTL},
        )
        ack: dict[str, Any] = {"op": "lock", "by": self.name, "tag": request.tag}
        ack.update(valid=result.valid, key=result.session_key)
        ack["codes"] = sorted(code for code, _ in request.stack)
        ack["sessions"] = sorted({(s.key, s.voucher_code) for s in result.sessions})
        if not result.valid:
            assert result.error is not None
            ack["error"] = result.error.key
        self.sink(ack)
        if result.valid:
            request.session = request.tag
            if not self.redeem(request):
                self.sink({"op": "held_lock_refused", "by": self.name, "tag": request.tag})

    def rollback(self, parent: str, key: str | None, *, again: bool) -> None:
        """rollback_stacked_redemptions of one of this terminal's stacks."""
        ack: dict[str, Any] = {
            "op": "rollback",
            "by": self.name,
            "parent": parent,
            "key": key,
            "again": again,
        }
        try:
            done = self.engine.rollback_stacked_redemptions(
                parent, reason=f"{self.name} rollback", idempotency_key=key
            )
        except StorageError:
            raise
        except VoucherError as error:
            ack.update(ok=False, error=error.key)
            self.sink(ack)
            return
        ack.update(
            ok=True,
            id=done.parent_rollback.id,
            of=done.parent_rollback.redemption_id,
            rollbacks=[r.id for r in done.rollbacks],
            redemptions=[r.redemption_id for r in done.rollbacks],
        )
        self._acknowledge(ack, "id", "rollbacks")

    def roll_back_own(self) -> None:
        """Roll back one of this terminal's live stacks: keyed (and sometimes sent again with
        the key), or unkeyed (and sometimes sent again: refused, already rolled back)."""
        parent, _ = self.own.pop(self.rng.randrange(len(self.own)))
        key = f"idem.{self.next_tag()}" if self.rng.random() < 0.5 else None
        self.rollback(parent, key, again=False)
        if self.rng.random() < 0.4:
            self.rollback(parent, key, again=True)

    def roll_back_a_child(self) -> None:
        """Try to roll back one child of a live stack alone: always refused."""
        _, children = self.own[self.rng.randrange(len(self.own))]
        child = self.rng.choice(children)
        ack: dict[str, Any] = {"op": "child_rollback", "by": self.name, "redemption": child}
        try:
            self.engine.rollback_redemption(child)
        except StorageError:
            raise
        except VoucherError as error:
            ack.update(ok=False, error=error.key)
        else:
            ack["ok"] = True
        self.sink(ack)

    def _acknowledge(self, ack: dict[str, Any], *fields: str) -> None:
        """Acknowledge *ack*; a keyed answer that differs (in *fields*) from the first
        successful answer under its key is acknowledged as ``"op": "double"``."""
        key = ack["key"]
        if key is not None:
            answer = {f: ack[f] for f in fields}
            first = self.first.setdefault(key, answer)
            if first != answer:
                ack = {**ack, "op": "double", "first": first}
        self.sink(ack)


def play(
    terminal: StackTerminal,
    calls: int,
    shapes: Sequence[Sequence[str]],
    *,
    shuffle: bool,
    shared: bool,
    drain: Any,
) -> None:
    """The main phase (*calls* stacked calls on *shapes*; with *shared*, every
    ``SHARED_EVERY``-th one a :func:`shared_request` instead), then, after *drain* (a
    barrier every worker reaches), the drain: each voucher redeemed alone until refused. A
    terminal rolls back only the stacks it made (not a shared key's, which another may have
    made)."""
    rng = terminal.rng
    later: list[Request] = []  # keyed requests to send again after other calls
    for n in range(1, calls + 1):
        roll = rng.random()
        shape = rng.choice(shapes)
        if shared and n % SHARED_EVERY == 0:
            terminal.redeem(shared_request(n // SHARED_EVERY))
        elif roll < 0.35:
            terminal.redeem(terminal.request(shape, keyed=False, shuffle=shuffle))
        elif roll < 0.55:
            request = terminal.request(shape, keyed=True, shuffle=shuffle)
            terminal.redeem(request)
            if rng.random() < 0.33:  # the answer was "lost": the very same call again
                terminal.redeem(request)
            elif rng.random() < 0.3:
                later.append(request)
        elif roll < 0.75:
            request = terminal.request(shape, keyed=rng.random() < 0.3, shuffle=shuffle)
            terminal.lock_and_redeem(request)
            if request.key is not None and request.session is not None and rng.random() < 0.5:
                terminal.redeem(request)  # its session is gone: the key answers as before
        elif roll < 0.92 and terminal.own:
            terminal.roll_back_own()
        elif terminal.own:
            terminal.roll_back_a_child()
        else:
            terminal.redeem(terminal.request(shape, keyed=False, shuffle=shuffle))
        if later and rng.random() < 0.15:  # a late retry
            terminal.redeem(later.pop(rng.randrange(len(later))))
    for request in later:
        terminal.redeem(request)
    drain.wait(timeout=120)
    for code in DISCOUNTS:
        while terminal.redeem(Request(terminal.next_tag(), [[code, None]], None, None)):
            pass
    for code in GIFTS:
        while terminal.redeem(
            Request(terminal.next_tag(), [[code, rng.randint(1, 300)]], None, None)
        ):
            pass
        while terminal.redeem(Request(terminal.next_tag(), [[code, 1]], None, None)):
            pass
    terminal.sink({"op": "finished", "by": terminal.name})


def stack_worker(
    spec: StoreSpec,
    name: str,
    seed: int | None,
    rng_seed: int,
    start: Any,
    drain: Any,
    ack_path: str,
    calls: int,
    stuck_after: float,
) -> None:
    """One process of the race: its own engine on the shared store, acknowledging to
    *ack_path*. Still running after *stuck_after* seconds (a deadlock): it dumps its stacks
    and exits 1."""
    faulthandler.dump_traceback_later(stuck_after, exit=True)
    acks = None
    try:
        acks = AckFile(ack_path, durable=False)
        with open_engine(spec, seed) as engine:
            terminal = StackTerminal(engine, name, random.Random(rng_seed), acks.write)
            start.wait(timeout=120)
            play(terminal, calls, SHAPES, shuffle=True, shared=True, drain=drain)
        acks.close()
        faulthandler.cancel_dump_traceback_later()
    except BaseException:
        drain.abort()  # the others stop waiting for this one
        _report_crash(acks)
        raise


# --- the check ---------------------------------------------------------------------------------


def check_stacks(engine: Engine, acks: Sequence[dict[str, Any]], workers: int) -> Counter[str]:
    """Set what the workers were told against the store at rest (every worker finished):

    - every acknowledged stack is stored once, as told: a SUCCEEDED one (or ROLLED_BACK, iff
      an acknowledged rollback names it) with exactly its children, each in the same status,
      on the vouchers asked for, in request order; a FAILED one with no child, naming a
      voucher of the stack; a keyed retry answers with the same parent; no stored parent
      nobody was told of;
    - no voucher's log holds a redemption outside the acknowledged stacks;
    - no over-redemption: each voucher's SUCCEEDED children are its ``redeemed_quantity``,
      which the acknowledged live stacks account for, and the drain filled exactly up to the
      quantity; no card below 0, each card's balance what the acknowledged stacks left (0);
    - no lock left (every held lock was redeemed), and ``audit().ok``.

    Returns counts of what the workload did (for its own sanity checks).
    """
    ops = Counter(a["op"] for a in acks)
    bad = [a for a in acks if a["op"] in ("crash", "double", "held_lock_refused")]
    assert not bad, bad[:3]
    assert ops["finished"] == workers, ops

    redeems = [a for a in acks if a["op"] == "redeem"]
    refused = Counter(a["error"] for a in redeems if not a["ok"])
    assert set(refused) <= REFUSALS, refused
    locks = [a for a in acks if a["op"] == "lock"]
    assert {a["error"] for a in locks if not a["valid"]} <= REFUSALS
    for a in locks:  # a valid LOCK: one session per voucher, all under the one key asked for
        expected = [[a["tag"], code] for code in a["codes"]] if a["valid"] else []
        assert [list(s) for s in a["sessions"]] == expected, a
        assert a["key"] == (a["tag"] if a["valid"] else None), a
    children_alone = [a for a in acks if a["op"] == "child_rollback"]
    assert all(not a["ok"] and a["error"] == "invalid_redemption" for a in children_alone)

    # what the workers were told: parents that succeeded, that failed, that were rolled back
    succeeded: dict[str, dict[str, Any]] = {}
    failed: dict[str, dict[str, Any]] = {}
    keyed: dict[str, str] = {}  # idempotency key → the one parent it succeeded with
    for a in redeems:
        if a["ok"]:
            if a["key"] is not None:
                assert keyed.setdefault(a["key"], a["parent"]) == a["parent"], (
                    f"key {a['key']} applied twice: {keyed[a['key']]} and {a['parent']}"
                )
            first = succeeded.setdefault(a["parent"], a)
            if first is not a:  # only a keyed retry may answer with a parent told before
                assert a["key"] is not None and a["key"] == first["key"], (first, a)
                assert a["children"] == first["children"], (first, a)
        else:
            assert a["parent"] is not None, a  # details name the FAILED parent
            assert a["parent"] not in failed and a["parent"] not in succeeded, a
            failed[a["parent"]] = a
    rolled_back: dict[str, dict[str, Any]] = {}
    for a in acks:
        if a["op"] != "rollback":
            continue
        if a["again"] and a["key"] is None:
            assert (a["ok"], a.get("error")) == (False, "already_rolled_back"), a
            continue
        assert a["ok"] and a["of"] == a["parent"], a  # a live stack of its own: rolled back
        first = rolled_back.setdefault(a["parent"], a)
        assert (first["id"], first["rollbacks"]) == (a["id"], a["rollbacks"]), (first, a)
    assert set(rolled_back) <= set(succeeded), "a rollback of a stack nobody was told of"

    # every acknowledged parent, stored as told; and no other
    stored = [parent.id for parent in engine.store.parent_redemptions()]
    assert len(stored) == len(set(stored)), "a parent listed twice"
    told = set(succeeded) | set(failed)
    assert set(stored) == told, (
        f"stored parents nobody was told of: {sorted(set(stored) - told)[:3]}; "
        f"told of but not stored: {sorted(told - set(stored))[:3]}"
    )
    live: Counter[str] = Counter()  # code → live children (SUCCEEDED)
    credits_used: Counter[str] = Counter()  # card → credits its live children took
    children_of: dict[str, set[str]] = {code: set() for code in CODES}
    for parent_id, a in succeeded.items():
        parent = engine.get_parent_redemption(parent_id)
        codes = [code for code, _ in a["stack"]]
        rollback = rolled_back.get(parent_id)
        status = RedemptionStatus.SUCCEEDED if rollback is None else RedemptionStatus.ROLLED_BACK
        assert parent.status is status, (parent, a)
        assert parent.redemptions == tuple(a["children"]), (parent, a)
        assert len(parent.voucher_ids) == len(codes) == len(a["children"])
        assert parent.metadata == {"tag": a["tag"]}
        assert parent.session_key == a["session"]
        assert parent.amount == sum(a["amounts"]) == a["amount"]
        assert parent.rollback_id == (None if rollback is None else rollback["id"])
        for i, child_id in enumerate(a["children"]):
            child = engine.get_redemption(child_id)
            assert child.parent_id == parent_id, (child, parent)
            assert child.status is status, (child, parent)
            assert (child.voucher_code, child.voucher_id) == (codes[i], parent.voucher_ids[i])
            assert child.amount == a["amounts"][i]
            if a["stack"][i][1] is not None:  # a card's explicit credits, never capped here
                assert child.amount == a["stack"][i][1]
            if rollback is not None:
                assert rollback["redemptions"][i] == child_id
                assert child.rollback_id == rollback["rollbacks"][i]
            else:
                live[codes[i]] += 1
                if codes[i] in GIFTS:
                    credits_used[codes[i]] += child.amount
            children_of[codes[i]].add(child_id)
    for parent_id, a in failed.items():
        parent = engine.get_parent_redemption(parent_id)
        assert parent.status is RedemptionStatus.FAILED, (parent, a)
        assert parent.redemptions == () and parent.voucher_ids == (), parent
        assert parent.failure_code == a["error"], (parent, a)
        assert parent.failed_redeemable in [code for code, _ in a["stack"]], (parent, a)
        assert parent.metadata == {"tag": a["tag"]}

    # each voucher: its log is the acknowledged children; never over-redeemed; cards ≥ 0
    for code in CODES:
        voucher = engine.get_voucher(code)
        log = engine.list_redemptions(code)
        assert {r.id for r in log} == children_of[code], f"{code}: a child nobody was told of"
        assert len(log) == len(children_of[code])
        succeeded_here = sum(1 for r in log if r.status is RedemptionStatus.SUCCEEDED)
        assert succeeded_here == voucher.redeemed_quantity == live[code], (
            code,
            succeeded_here,
            voucher.redeemed_quantity,
            live[code],
        )
        assert voucher.locked_quantity == 0, f"{code}: a lock left behind"
        if code in DISCOUNTS:
            quantity = DISCOUNTS[code][1]
            assert voucher.quantity == quantity
            assert voucher.redeemed_quantity <= quantity, f"{code}: over-redeemed"
            assert voucher.redeemed_quantity == quantity, f"{code}: the drain did not fill it"
        else:
            assert voucher.gift is not None
            assert voucher.gift.balance == GIFTS[code] - credits_used[code] == 0, (
                code,
                voucher.gift.balance,
                credits_used[code],
            )
            assert all(tx.balance >= 0 for tx in all_transactions(engine, code))

    report = engine.audit()
    assert report.ok, str(report)
    assert report.sessions == 0
    return Counter(
        succeeded=len(succeeded),
        failed=len(failed),
        rolled_back=len(rolled_back),
        stacked=sum(1 for a in succeeded.values() if len(a["stack"]) > 1),
        locked=sum(1 for a in locks if a["valid"]),
        keyed_retries=sum(1 for a in redeems if a["ok"] and a["key"] is not None)
        - sum(1 for a in succeeded.values() if a["key"] is not None),
        shared=sum(1 for key in keyed if key.startswith("shared.")),
    )
