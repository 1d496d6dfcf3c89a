"""vouchercore's storage contract suite: every behaviour test of the engine, on every store.

Each test takes the ``engine`` fixture (an :class:`~vouchercore.Engine` on a fresh, empty store,
a :class:`~vouchercore.FakeClock` at 2026-03-01T12:00:00Z and seeded ids) or ``make_engine``
(more engines, each on a fresh store of the same kind), and is run once per selected store.
How to select stores, including your own: :mod:`vouchercore.testing.plugin`.

Run it from vouchercore's checkout with ``python -m pytest``; against an installed vouchercore
with ``pytest --pyargs vouchercore.testing.contract`` (pytest is needed, not imported
otherwise).
"""
