"""The voucher rules: pure, no I/O, no clock reads, no threads, no driver imports.

* :mod:`~vouchercore.domain.values` — enums and argument checks
* :mod:`~vouchercore.domain.instants` — integer-microsecond instants
* :mod:`~vouchercore.domain.records` — the mutable voucher and session ledger state; when a
  session is live, why one ends, which vouchers an operation finds
* :mod:`~vouchercore.domain.rows` — values kept as flat rows, read by field name; the one codec
  of stored transactions
* :mod:`~vouchercore.domain.rules` — availability, the check table, pricing, the rollback
  window (its docstring says where every other rule lives)
* :mod:`~vouchercore.domain.points` — loyalty points: expiring buckets, spending, expiry
* :mod:`~vouchercore.domain.operations` — validate, lock, redeem, roll back, balance, lifecycle
* :mod:`~vouchercore.domain.snapshots` — the frozen objects callers get
* :mod:`~vouchercore.domain.idempotency` — idempotent retries: keys, and the one codec of the
  results kept under them
* :mod:`~vouchercore.domain.audit` — invariants I1–I4, and the store-wide session ledger
"""
