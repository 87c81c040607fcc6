"""Store under concurrent use: nothing is corrupted, nothing written is lost."""

from __future__ import annotations

import contextlib
import random
import sys
import threading
from collections.abc import Callable, Iterator

import pytest

from gostage.store import KeyNotFoundError, MergeStrategy, Metadata, Store


@pytest.fixture(autouse=True)
def frequent_thread_switches() -> Iterator[None]:
    """Switch threads far more often than the default 5 ms to provoke races."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


class TickingClock:
    """A thread-safe fake clock: every reading moves it forward a little (until frozen)."""

    def __init__(self) -> None:
        self._now = 0.0
        self._step = 0.001
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self._now += self._step
            return self._now

    def freeze(self) -> None:
        self._step = 0.0


def run_threads(count: int, target: Callable[[int], None]) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def wrapper(index: int) -> None:
        try:
            start.wait()
            target(index)
        except BaseException as exc:  # reported by the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=wrapper, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    assert not errors, errors


def check_consistent(store: Store) -> None:
    """Public and internal views of the store agree once no thread is using it."""
    keys = store.keys()
    assert len(keys) == len(set(keys)) == store.count() == len(store)
    snapshot = store.to_dict()
    assert list(snapshot) == keys
    for key in keys:
        assert store.has(key)
        store.get(key)
        store.get_metadata(key)
    data = store._data
    assert store._expiry.keys() <= data.keys()
    assert store._meta.keys() <= data.keys()
    assert not store._expired.keys() & data.keys()
    if store._plain:
        assert not (store._expiry or store._meta or store._expired)
    assert store._next_deadline <= min(store._expiry.values(), default=float("inf"))
    again = Store.import_state(store.export_state())
    assert again.keys() == [k for k in store if k in again]  # only TTL keys may lapse


SHARED = [f"shared-{i}" for i in range(16)]


def test_mixed_operations_on_overlapping_keys() -> None:
    clock = TickingClock()
    store = Store(clock=clock)
    ops_per_thread = 2000
    last_written: dict[int, dict[str, int]] = {}

    def worker(index: int) -> None:
        rng = random.Random(index)
        mine: dict[str, int] = {}
        for step in range(ops_per_thread):
            key = rng.choice(SHARED)
            op = rng.randrange(14)
            if op == 0:
                store.put(key, step)
            elif op == 1:
                store.put_with_ttl(key, step, rng.choice([0.002, 0.05, 100]))
            elif op == 2:
                store.put_with_metadata(key, step, Metadata(tags=[f"t{index}"]))
            elif op == 3:
                store.delete(key)
            elif op == 4:
                with contextlib.suppress(KeyNotFoundError):
                    store.add_tag(key, "x")
            elif op == 5:
                value = store.get_or_default(key, None)
                assert value is None or isinstance(value, int)
            elif op == 6:
                assert isinstance(store.has(key), bool)
            elif op == 7:
                keys = store.keys()
                assert len(keys) == len(set(keys))
            elif op == 8:
                assert all(isinstance(v, int) for v in store.to_dict().values())
            elif op == 9:
                store.find_keys_by_any_tag(["x", f"t{index}"])
            elif op == 10 and step % 50 == 0:
                store.export_state()
            elif op == 11 and step % 50 == 0:
                other = Store()
                other.put(key, -1)
                store.merge(other, MergeStrategy.SKIP)
            else:
                # This thread's own keys: nobody else touches them.
                own = f"own-{index}-{step % 25}"
                store.put(own, step)
                mine[own] = step
                assert store.get(own) == step
        last_written[index] = mine

    run_threads(8, worker)
    clock.freeze()  # so that no key expires between the checks' calls
    check_consistent(store)
    for mine in last_written.values():
        for key, value in mine.items():
            assert store.get(key) == value
    assert store.count() >= sum(len(m) for m in last_written.values())


def test_plain_put_racing_ttl_put_keeps_value_and_ttl_together() -> None:
    """Whichever put wins, the value and its TTL (or lack of one) belong together.

    Two spinning threads race one put each per round (plain put vs put_with_ttl on the same
    key); between rounds, while both wait, the main thread checks the state.
    """
    store = Store(clock=lambda: 0.0)
    store.put_with_ttl("other", 0, 10)  # TTLs elsewhere: the fast path must still be right
    rounds = 1500
    go = [0]
    done = [0, 0]
    stop = threading.Event()
    seen: set[tuple[str, bool]] = set()

    def worker(index: int) -> None:
        for r in range(1, rounds + 1):
            while go[0] < r:  # spin: both threads stay runnable, so their puts overlap
                if stop.is_set():
                    return
            if index == 0:
                store.put("k", "plain")
            else:
                store.put_with_ttl("k", "ttl", 10)
            done[index] = r

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(2)]
    for thread in threads:
        thread.start()
    try:
        for r in range(1, rounds + 1):
            go[0] = r
            while min(done) < r:
                dead = [i for i, t in enumerate(threads) if not t.is_alive() and done[i] < r]
                assert not dead, f"worker(s) {dead} died"
            state = (store.get("k"), store.get_ttl("k") is None)
            assert state in {("plain", True), ("ttl", False)}, (r, state)
            seen.add(state)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    check_consistent(store)
    assert len(seen) == 2  # both puts won some rounds: they really raced


def _race_puts_against_sweeps() -> None:
    clock_now = [0.0]
    store = Store(clock=lambda: clock_now[0])
    for i in range(50):
        store.put_with_ttl(f"k{i}", "old", 1)
    clock_now[0] = 5.0  # all 50 have expired; sweeping them races the puts below

    def worker(index: int) -> None:
        if index == 0:
            for i in range(50):
                store.put(f"k{i}", "new")
        else:
            store.count()
            store.keys()

    run_threads(2, worker)
    assert store.to_dict() == {f"k{i}": "new" for i in range(50)}
    check_consistent(store)


def test_plain_put_racing_expiry_never_loses_the_new_value() -> None:
    for _ in range(100):
        _race_puts_against_sweeps()


def test_concurrent_merges_do_not_deadlock() -> None:
    a, b = Store(), Store()
    for i in range(50):
        a.put(f"a{i}", [i])
        b.put(f"b{i}", [i])

    def worker(index: int) -> None:
        for _ in range(30):
            if index % 2:
                a.merge(b)
            else:
                b.merge(a)

    run_threads(4, worker)
    assert a.to_dict() == b.to_dict()
    assert len(a) == 100
    check_consistent(a)
    check_consistent(b)
