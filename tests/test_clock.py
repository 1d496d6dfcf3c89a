"""FakeClock and SystemClock (README "Time, ids and reproducible runs"; the engine's use of its
clock is in the contract suite:
``vouchercore/testing/contract/test_determinism_and_clock.py``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from vouchercore import FakeClock, SystemClock

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

# --- FakeClock ----------------------------------------------------------------------------


def test_fake_clock_starts_where_told() -> None:
    assert FakeClock(START).now() == START


def test_fake_clock_default_start_is_2026_01_01_utc() -> None:
    assert FakeClock().now() == datetime(2026, 1, 1, tzinfo=UTC)


def test_fake_clock_stands_still_until_moved() -> None:
    clock = FakeClock(START)
    assert clock.now() == clock.now() == START


def test_fake_clock_advances_by_units_and_deltas() -> None:
    clock = FakeClock(START)
    clock.advance(days=1, hours=2, minutes=3, seconds=4, milliseconds=5, microseconds=6)
    assert clock.now() == START + timedelta(
        days=1, hours=2, minutes=3, seconds=4, milliseconds=5, microseconds=6
    )
    clock.advance(timedelta(minutes=1))
    clock.advance_us(1)
    assert clock.now() == START + timedelta(
        days=1, hours=2, minutes=4, seconds=4, milliseconds=5, microseconds=7
    )


def test_fake_clock_advance_by_zero_is_allowed() -> None:
    clock = FakeClock(START)
    clock.advance()
    clock.advance_us(0)
    clock.set(START)
    assert clock.now() == START


def test_fake_clock_refuses_to_move_backwards() -> None:
    clock = FakeClock(START)
    with pytest.raises(ValueError, match="forward"):
        clock.advance(seconds=-1)
    with pytest.raises(ValueError, match="forward"):
        clock.advance(timedelta(microseconds=-1))
    with pytest.raises(ValueError, match="forward"):
        clock.advance_us(-1)
    with pytest.raises(ValueError, match="forward"):
        clock.set(START - timedelta(microseconds=1))
    assert clock.now() == START


def test_fake_clock_set_jumps_forward() -> None:
    clock = FakeClock(START)
    later = START + timedelta(days=400)
    clock.set(later)
    assert clock.now() == later


def test_fake_clock_rejects_naive_instants() -> None:
    with pytest.raises(ValueError):
        FakeClock(datetime(2026, 1, 1))  # naive on purpose
    clock = FakeClock(START)
    with pytest.raises(ValueError):
        clock.set(datetime(2027, 1, 1))  # naive on purpose
    assert clock.now() == START


def test_fake_clock_now_is_aware_utc() -> None:
    plus5 = timezone(timedelta(hours=5))
    clock = FakeClock(datetime(2026, 3, 1, 17, 0, tzinfo=plus5))
    assert clock.now() == START
    assert clock.now().utcoffset() == timedelta(0)


def test_system_clock_is_aware_utc() -> None:
    now = SystemClock().now()
    assert now.tzinfo is not None
    assert now.utcoffset() == timedelta(0)
