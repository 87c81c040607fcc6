"""Number crunching for the batch example: a slow way and a fast way to count primes.

The children use trial division on purpose: it is pure Python and keeps a CPU core
busy, which is what the batch is meant to show. The parent checks their answers with
a sieve of Eratosthenes, a different algorithm that is far faster for a whole range.

This module is a plain sibling of ``main.py``, not an installed package, and needs no
installing: a spawned child gets the parent's ``sys.path`` and re-imports ``main.py``,
which imports this module as it does in the parent.
"""

from __future__ import annotations

from math import isqrt


def is_prime(n: int) -> bool:
    """Trial division by 2 and every odd number up to the square root."""
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    return all(n % d for d in range(3, isqrt(n) + 1, 2))


def count_primes(lo: int, hi: int) -> tuple[int, int | None]:
    """How many primes lie in ``[lo, hi)``, and the largest of them (``None`` if none)."""
    count, largest = 0, None
    for n in range(lo, hi):
        if is_prime(n):
            count += 1
            largest = n
    return count, largest


def sieve(limit: int) -> bytearray:
    """``flags[n] == 1`` exactly when ``n`` is a prime below ``limit``."""
    flags = bytearray([1]) * limit
    flags[: min(limit, 2)] = bytes(min(limit, 2))
    for p in range(2, isqrt(max(limit - 1, 0)) + 1):
        if flags[p]:
            flags[p * p :: p] = bytes(len(range(p * p, limit, p)))
    return flags
