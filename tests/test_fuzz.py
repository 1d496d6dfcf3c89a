"""Fuzzing the public API: random sequences of Engine calls with random, often invalid,
arguments, on every store (memory, SQLite, and PostgreSQL when
``VOUCHERCORE_TEST_POSTGRES_DSN`` names a server).

Each example makes a fresh store holding a small voucher book, then makes up to
:data:`STEPS` calls. Arguments are drawn from valid values and from a pool of bad ones: wrong
types, ``None`` where a value is required, lone surrogates, NUL, overlong text, integers of
any size, non-finite floats, nested, shared or cyclic metadata, instants outside the years
1–9999 in UTC, naive datetimes, unknown enum strings, negative or huge pages.

The properties (README "Errors"):

* every exception a call raises is a :class:`~vouchercore.VoucherError`;
* a call that raises changes nothing (:func:`~vouchercore.testing.state_snapshot` before and
  after, FAILED redemptions included) — but for the one trace allowed: a redemption refused by
  a voucher rule (:class:`~vouchercore.VoucherRejected` from ``redeem_voucher``) records its
  FAILED attempt, so there only the state without FAILED redemptions is compared;
* the audit is clean at the end.

Lean for CI: :data:`EXAMPLES` examples per store, derandomized (the same examples every run).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vouchercore import Engine, FakeClock, VoucherError, VoucherRejected
from vouchercore.testing import state_snapshot
from vouchercore.testing.contract.test_bad_input import nested_metadata, shared_metadata
from vouchercore.testing.stores import BUILT_IN_STORES, store_factory, unavailable_reason

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
#: Examples per store, and calls per example.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "30"))
STEPS = 12
STORES = [
    pytest.param(
        name,
        marks=pytest.mark.skipif(
            unavailable_reason(name) is not None, reason=str(unavailable_reason(name))
        ),
    )
    for name in BUILT_IN_STORES
]

#: Thousands of digits, yet printable (Hypothesis prints what it draws; the bad-input table
#: of the contract suite tries integers too long to print).
HUGE = 10**4000
CODES = ("GIFT", "DISC", "LOYAL", "CARD", "OFF")
Call = tuple[str, tuple[Any, ...], dict[str, Any]]


def _cycle() -> dict[str, Any]:
    cyclic: dict[str, Any] = {"a": [1]}
    cyclic["a"].append(cyclic)
    return cyclic


# --- values ---------------------------------------------------------------------------------

BAD_TEXT = st.sampled_from(
    ["", " ", " X", "X ", "a\x00b", "\ud800", "x\udfffy", "x" * 4097, "é" * 5000, "a\nb", "\t"]
)
ZONES = st.builds(
    timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
)
INSTANTS = st.one_of(
    st.datetimes(
        min_value=datetime(2026, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
    ),
    st.datetimes(timezones=ZONES),  # any year 1–9999, any offset: some are out of range in UTC
    st.sampled_from(
        [
            datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-12))),
            datetime(1, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=12))),
            datetime.max.replace(tzinfo=UTC),
            datetime.min.replace(tzinfo=UTC),
            datetime(2026, 6, 1),  # naive
        ]
    ),
)
BIG_INTS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([HUGE, -HUGE, 2**63, -(2**63), 2**63 - 1, -(2**63) - 1, 2**62, 2**31]),
)
JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    BIG_INTS,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    BAD_TEXT,
)
#: Metadata, mostly bad (a pool of :data:`ANYTHING`).
BAD_METADATA = st.one_of(
    st.recursive(
        JSON_LEAVES,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.dictionaries(st.one_of(st.text(max_size=5), BAD_TEXT), inner, max_size=3),
        ),
        max_leaves=8,
    ),
    st.builds(_cycle),
    st.builds(nested_metadata, st.sampled_from([31, 32, 40, 3000])),
    st.builds(lambda n: {"s": shared_metadata(n)}, st.sampled_from([10, 30])),
    st.just({"big": "x" * 70_000}),
    st.just({1: "int key"}),
)
METADATA = st.one_of(
    st.none(),
    st.dictionaries(
        st.text(max_size=4),
        st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=4), st.booleans()),
        max_size=3,
    ),
)
#: Any value at all: the pool a bad argument is drawn from.
ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    BIG_INTS,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    BAD_TEXT,
    st.binary(max_size=3),
    INSTANTS,
    BAD_METADATA,
    st.sampled_from(["LOCK", "UNLOCK", "DAYS", "WEEKS", "AMOUNT", "BOGUS", "-id", "jsonl"]),
)


def maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A valid value (the bad ones are put in by :func:`_calls`, one or two per call, so that
    each refusal has one cause and the calls that pass get somewhere)."""
    return valid


CODE = maybe(st.sampled_from([*CODES, "NOPE"]))
AMOUNT = maybe(st.integers(min_value=1, max_value=500))
TEXT = maybe(st.one_of(st.none(), st.text(max_size=6)))
KEY = maybe(st.one_of(st.none(), st.sampled_from(["k1", "k2", "held"])))
WHEN = st.one_of(st.none(), INSTANTS.filter(lambda when: when.tzinfo is UTC and when.year > 2025))
DISCOUNT = maybe(
    st.sampled_from(
        [
            {"type": "AMOUNT", "amount_off": 100},
            {"type": "PERCENT", "percent_off": 12.5},
            {"type": "UNIT", "unit_off": 1, "unit_type": "sku"},
        ]
    )
)
SESSION = maybe(
    st.one_of(
        st.none(),
        st.just("LOCK"),
        st.fixed_dictionaries(
            {},
            optional={
                "key": KEY,
                "ttl": maybe(st.integers(min_value=1, max_value=100)),
                "ttl_unit": maybe(st.sampled_from(["DAYS", "MINUTES", "NANOSECONDS"])),
            },
        ),
    )
)


def _calls(
    redemptions: list[str],
) -> st.SearchStrategy[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    """One public call: its name, positional and keyword arguments."""

    def call(
        name: str,
        *args: st.SearchStrategy[Any],
        required: dict[str, st.SearchStrategy[Any]] | None = None,
        **kwargs: st.SearchStrategy[Any],
    ) -> st.SearchStrategy[Call]:
        @st.composite
        def drawn(draw: st.DrawFn) -> Call:
            positional = list(draw(st.tuples(*args)))
            named = draw(st.fixed_dictionaries(required or {}, optional=kwargs))
            slots = [*range(len(positional)), *(required or {}), *kwargs]
            for _ in range(draw(st.integers(0, 2)) if slots else 0):
                slot = draw(st.sampled_from(slots))
                if isinstance(slot, int):
                    positional[slot] = draw(ANYTHING)
                else:
                    named[slot] = draw(ANYTHING)
            return name, tuple(positional), named

        return drawn()

    redemption = maybe(st.sampled_from([*redemptions, "r_unknown"]))
    return st.one_of(
        *[
            call(
                "create_voucher",
                st.one_of(st.none(), st.sampled_from(["NEW", "NEW2", "GIFT"])),
                quantity=st.one_of(st.none(), st.integers(1, 5)),
                active=st.booleans(),
                start_date=WHEN,
                expiration_date=WHEN,
                category=TEXT,
                additional_info=TEXT,
                campaign_id=TEXT,
                metadata=METADATA,
                code_length=st.integers(1, 12),
                required={kind: value},
            )
            for kind, value in (
                ("gift", st.builds(lambda n: {"amount": n}, AMOUNT)),
                ("loyalty_card", st.builds(lambda n: {"points": n}, AMOUNT)),
                ("discount", DISCOUNT),
                ("type", st.sampled_from(["GIFT_VOUCHER", "LOYALTY_CARD"])),
            )
        ],
        call("get_voucher", CODE),
        call("enable_voucher", CODE),
        call("disable_voucher", CODE),
        call("delete_voucher", CODE, force=maybe(st.booleans())),
        call(
            "validate_voucher",
            CODE,
            order_amount=AMOUNT,
            credits=AMOUNT,
            points=AMOUNT,
            order_id=TEXT,
            session=SESSION,
            metadata=METADATA,
        ),
        call(
            "redeem_voucher",
            CODE,
            order_amount=AMOUNT,
            credits=AMOUNT,
            points=AMOUNT,
            order_id=TEXT,
            session_key=KEY,
            metadata=METADATA,
            idempotency_key=KEY,
        ),
        call("release_validation_session", CODE, KEY),
        call("list_sessions", CODE),
        call("list_redemptions", CODE),
        call("get_redemption", redemption),
        call("rollback_redemption", redemption, reason=TEXT, idempotency_key=KEY),
        call(
            "update_voucher_balance",
            CODE,
            maybe(st.integers(-300, 300)),
            source_id=TEXT,
            reason=TEXT,
            expires_at=WHEN,
            idempotency_key=KEY,
        ),
        call(
            "accrue_points",
            CODE,
            AMOUNT,
            order_id=TEXT,
            source_id=TEXT,
            expires_at=WHEN,
            reason=TEXT,
            idempotency_key=KEY,
        ),
        call(
            "cancel_points_accrual",
            CODE,
            transaction_id=maybe(st.none()),
            order_id=maybe(st.sampled_from(["o1", "o2"])),
            reason=TEXT,
            idempotency_key=KEY,
        ),
        call(
            "transfer_points",
            CODE,
            CODE,
            AMOUNT,
            reason=TEXT,
            source_id=TEXT,
            idempotency_key=KEY,
        ),
        call("expire_sessions", WHEN),
        call("expire_points", WHEN),
        call("expire_idempotency_keys", WHEN),
        call(
            "list_voucher_transactions",
            CODE,
            limit=maybe(st.integers(1, 100)),
            page=maybe(st.one_of(st.none(), st.integers(1, 3))),
            starting_after_id=maybe(st.none()),
            order=maybe(st.sampled_from(["-id", "id"])),
        ),
        call(
            "export_voucher_transactions",
            CODE,
            maybe(st.builds(io.StringIO)),
            fields=maybe(st.one_of(st.none(), st.just(["id", "amount"]))),
            order=maybe(st.sampled_from(["-created_at", "created_at"])),
            format=maybe(st.sampled_from(["csv", "jsonl"])),
        ),
        call(
            "import_vouchers_using_csv",
            maybe(
                st.builds(
                    lambda code, value: [
                        "Code,Voucher Type,Value\n",
                        f"{code},GIFT_VOUCHER,{value}\n",
                    ],
                    maybe(st.sampled_from(["I1", "I2", "GIFT"])),
                    maybe(st.integers(0, 100)),
                )
            ),
        ),
        call(
            "generate_vouchers",
            # small or refused: a valid huge count would run for hours
            st.one_of(
                st.integers(-2, 3),
                st.sampled_from([HUGE, -HUGE, 2**63, 1.5, "3", None, True]),
            ),
            gift=maybe(st.builds(lambda n: {"amount": n}, AMOUNT)),
            length=maybe(st.integers(6, 12)),
            prefix=maybe(st.sampled_from(["", "G-"])),
            metadata=METADATA,
            expiration_date=WHEN,
            keep_codes=maybe(st.integers(0, 5)),
        ),
        call("audit"),
    )


@contextlib.contextmanager
def _book(spec: str) -> Iterator[Engine]:
    """A fresh store of *spec* holding a small voucher book, on a fake clock."""
    with tempfile.TemporaryDirectory() as directory, store_factory(spec)(Path(directory)) as store:
        engine = Engine(store, clock=FakeClock(START), seed=7)
        engine.create_voucher("GIFT", gift={"amount": 1000}, quantity=20, metadata={"m": 1})
        engine.create_voucher("DISC", discount={"type": "AMOUNT", "amount_off": 100})
        engine.create_voucher("LOYAL", loyalty_card={"points": 500})
        engine.create_voucher("CARD", loyalty_card={"points": 50})
        engine.create_voucher("OFF", gift={"amount": 10}, active=False)
        engine.validate_voucher("GIFT", credits=10, session={"key": "held"})
        engine.accrue_points("LOYAL", 30, order_id="o1", expires_at=START + timedelta(days=1))
        yield engine


def _refused_redemption(name: str, error: VoucherError) -> bool:
    """A redemption a voucher rule refused: its FAILED attempt is recorded, by design."""
    return name == "redeem_voucher" and isinstance(error, VoucherRejected)


@pytest.mark.parametrize("spec", STORES)
def test_random_calls_raise_only_voucher_errors_and_refused_calls_change_nothing(
    spec: str,
) -> None:
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        with _book(spec) as engine:
            redemptions: list[str] = []
            for _ in range(data.draw(st.integers(1, STEPS), label="steps")):
                name, args, kwargs = data.draw(_calls(redemptions), label="call")
                method: Callable[..., Any] = getattr(engine, name)
                before = state_snapshot(engine, include_failed=True)
                try:
                    result = method(*args, **kwargs)
                except VoucherError as error:
                    failed_too = not _refused_redemption(name, error)
                    after = state_snapshot(engine, include_failed=failed_too)
                    if not failed_too:
                        before = {
                            code: {
                                **entry,
                                "redemptions": [
                                    r for r in entry["redemptions"] if r.status.value != "FAILED"
                                ],
                            }
                            for code, entry in before.items()
                        }
                    assert after == before, (name, args, kwargs, error)
                    continue
                redemption_id = getattr(result, "id", None)
                if isinstance(redemption_id, str) and redemption_id.startswith("r_"):
                    redemptions.append(redemption_id)
            assert engine.audit().ok

    run()
