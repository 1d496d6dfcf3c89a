"""Ids and session keys.

:class:`IdGenerator` gives ``v_``/``r_``/``rr_`` ids and ``ssn_`` session keys of 32 base-62
characters. Session keys come from the operating system's CSPRNG (:func:`os.urandom`); ids,
which only need to be unique, from a fast PRNG seeded from it (and reseeded in a forked child, so
processes sharing one store never draw the same ids). With ``seed=`` everything comes from one
seeded PRNG, so a simulation with the same seed and the same calls gives the same ids — give
each process of a shared store its own seed.
"""

from __future__ import annotations

import os
import random
import string
import threading
import weakref
from typing import Final

__all__ = ["ALPHANUMERIC", "IdGenerator"]

ALPHANUMERIC: Final = string.digits + string.ascii_uppercase + string.ascii_lowercase

# Bytes 0..247 map evenly onto the 62 symbols (4 × 62 = 248); 248..255 are dropped, so every
# symbol is equally likely (no modulo bias).
_TABLE: Final = (ALPHANUMERIC * 4).encode() + b"\0" * 8
_REJECT: Final = bytes(range(248, 256))
_TOKEN_LENGTH: Final = 32


_POOL_SIZE: Final = 4096


class _SecurePool:
    """Bytes from :func:`os.urandom`, fetched 4 KiB at a time (one system call per ~100
    session keys). Thread-safe: each caller gets bytes nobody else got. Fork-safe: a child
    process throws the inherited pool away, so parent and child never hand out the same key.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = b""
        self._used = 0
        _POOLS.add(self)

    def take(self, size: int) -> bytes:
        with self._lock:
            if self._used + size > len(self._pool):
                self._pool = os.urandom(_POOL_SIZE)
                self._used = 0
            start = self._used
            self._used = start + size
            return self._pool[start : start + size]

    def forget(self) -> None:
        self._pool = b""
        self._used = 0
        self._lock = threading.Lock()


_POOLS: weakref.WeakSet[_SecurePool] = weakref.WeakSet()


#: unseeded generators: a forked child reseeds them, or parent and child (two POS processes on
#: one shared store) would draw the same redemption ids
_UNSEEDED: weakref.WeakSet[IdGenerator] = weakref.WeakSet()


def _forget_pools_after_fork() -> None:
    for pool in list(_POOLS):
        pool.forget()
    for generator in list(_UNSEEDED):
        generator._rng.seed(os.urandom(32))


os.register_at_fork(after_in_child=_forget_pools_after_fork)


class IdGenerator:
    """Makes ids and session keys. Thread-safe.

    Args:
        seed: ``None`` (default) for secure, unpredictable keys; an int for a reproducible
            sequence (simulations, tests) — then session keys are NOT secret.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seeded = seed is not None
        self._rng = random.Random(seed if seed is not None else os.urandom(32))
        self._secure = _SecurePool()
        if seed is None:
            _UNSEEDED.add(self)

    def token(self, *, secure: bool = False) -> str:
        """32 base-62 characters (about 190 random bits)."""
        draw = self._secure.take if secure and not self.seeded else self._rng.randbytes
        while True:
            kept = draw(40).translate(_TABLE, _REJECT)
            if len(kept) >= _TOKEN_LENGTH:
                return kept[:_TOKEN_LENGTH].decode()

    def voucher_id(self) -> str:
        """``v_`` + 32 alphanumerics."""
        return "v_" + self.token()

    def redemption_id(self) -> str:
        """``r_`` + 32 alphanumerics."""
        kept = self._rng.randbytes(40).translate(_TABLE, _REJECT)  # token(), inlined: hot path
        if len(kept) >= _TOKEN_LENGTH:
            return "r_" + kept[:_TOKEN_LENGTH].decode()
        return "r_" + self.token()

    def rollback_id(self) -> str:
        """``rr_`` + 32 alphanumerics."""
        return "rr_" + self.token()

    def session_key(self) -> str:
        """``ssn_`` + 32 alphanumerics from the OS CSPRNG (or the seeded PRNG)."""
        draw = self._rng.randbytes if self.seeded else self._secure.take
        kept = draw(40).translate(_TABLE, _REJECT)  # token(), inlined: hot path
        if len(kept) >= _TOKEN_LENGTH:
            return "ssn_" + kept[:_TOKEN_LENGTH].decode()
        return "ssn_" + self.token(secure=True)

    def random_bytes(self, n: int) -> bytes:
        """*n* random bytes for generated voucher codes: from the OS CSPRNG
        (:func:`os.urandom`, as :mod:`secrets` uses), or from the seeded PRNG when this
        generator has a seed (reproducible, not secret)."""
        return self._rng.randbytes(n) if self.seeded else os.urandom(n)

    def choice(self, population: str, k: int, *, secure: bool = True) -> str:
        """*k* symbols drawn uniformly from *population* (for generated voucher codes)."""
        if secure and not self.seeded:
            sysrand = random.SystemRandom()
            return "".join(sysrand.choices(population, k=k))
        return "".join(self._rng.choices(population, k=k))
