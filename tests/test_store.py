"""Behaviour of gostage.store.Store and Metadata (serialization and threads have own files)."""

from __future__ import annotations

import copy
import enum
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import gostage.store as store_module
from gostage._exceptions import GostageError
from gostage.store import (
    KeyExpiredError,
    KeyNotFoundError,
    MergeConflictError,
    MergeStrategy,
    Metadata,
    Store,
    StoreError,
    StoreSerializationError,
    TypeMismatchError,
    get,
)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> Store:
    return Store(clock=clock)


# --- the public surface -----------------------------------------------------------


def test_public_names() -> None:
    assert set(store_module.__all__) == {
        "Store",
        "Metadata",
        "MergeStrategy",
        "get",
        "KeyNotFoundError",
        "KeyExpiredError",
        "TypeMismatchError",
        "MergeConflictError",
        "StoreSerializationError",
        "StoreError",
    }
    for name in store_module.__all__:
        obj = getattr(store_module, name)
        assert obj.__doc__, name
    assert {m.name for m in MergeStrategy} == {"OVERWRITE", "SKIP", "ERROR"}


def test_public_methods_have_docstrings() -> None:
    for cls in (Store, Metadata):
        public = [name for name in vars(cls) if not name.startswith("_")]
        assert public
        for name in public:
            assert getattr(cls, name).__doc__, f"{cls.__name__}.{name}"


def test_error_hierarchy() -> None:
    assert issubclass(KeyExpiredError, KeyNotFoundError)
    assert issubclass(KeyNotFoundError, KeyError)
    assert issubclass(TypeMismatchError, TypeError)
    for err in (KeyNotFoundError, TypeMismatchError, MergeConflictError, StoreSerializationError):
        assert issubclass(err, StoreError)
    assert issubclass(StoreError, GostageError)


# --- put / get and the three read errors ------------------------------------------


def test_put_get_returns_the_stored_object(store: Store) -> None:
    value = {"a": [1, 2]}
    store.put("k", value)
    assert store.get("k") is value
    assert get(store, "k") is value
    assert get(store, "k", dict) is value


def test_missing_key_raises_key_not_found(store: Store) -> None:
    with pytest.raises(KeyNotFoundError) as info:
        store.get("nope")
    assert not isinstance(info.value, KeyExpiredError)
    assert isinstance(info.value, KeyError)
    assert "nope" in str(info.value)
    assert info.value.key == "nope"


def test_expired_key_raises_key_expired_and_is_dropped(store: Store, clock: FakeClock) -> None:
    store.put_with_ttl("k", 1, 10)
    clock.advance(10)
    with pytest.raises(KeyExpiredError) as info:
        store.get("k")
    assert isinstance(info.value, KeyNotFoundError)
    assert isinstance(info.value, KeyError)
    assert "'k'" in str(info.value) and "expired" in str(info.value)
    assert not store.has("k")
    assert store.keys() == []


def test_expired_error_survives_a_sweep(store: Store, clock: FakeClock) -> None:
    store.put_with_ttl("k", 1, 5)
    clock.advance(6)
    assert store.count() == 0  # sweeps "k" away
    with pytest.raises(KeyExpiredError):
        store.get("k")
    store.put("k", 2)  # a new value: no longer "expired"
    assert store.get("k") == 2
    assert store.delete("k")
    with pytest.raises(KeyNotFoundError) as info:
        store.get("k")
    assert not isinstance(info.value, KeyExpiredError)


def test_delete_forgets_that_a_key_expired(store: Store, clock: FakeClock) -> None:
    store.put_with_ttl("k", 1, 5)
    clock.advance(5)
    assert store.delete("k") is False  # expired keys are not "there"
    with pytest.raises(KeyNotFoundError) as info:
        store.get("k")
    assert not isinstance(info.value, KeyExpiredError)


def test_type_mismatch_names_key_wanted_and_actual(store: Store) -> None:
    store.put("count", "seven")
    with pytest.raises(TypeMismatchError) as info:
        store.get("count", int)
    err = info.value
    assert isinstance(err, TypeError)
    assert not isinstance(err, KeyError)
    message = str(err)
    assert "'count'" in message and "int" in message and "str" in message
    assert err.key == "count" and err.expected is int and err.actual is str


def test_type_check_accepts_tuples_and_unions(store: Store) -> None:
    store.put("x", 1.5)
    assert store.get("x", (int, float)) == 1.5
    assert store.get("x", int | float) == 1.5
    with pytest.raises(TypeMismatchError) as info:
        store.get("x", int | str)
    assert "int | str" in str(info.value) and "float" in str(info.value)
    with pytest.raises(TypeMismatchError) as info:
        store.get("x", (int, (str, bytes)))
    assert "int | str | bytes" in str(info.value)


def test_type_check_is_isinstance(store: Store) -> None:
    store.put("flag", True)
    assert store.get("flag", int) is True  # bool is a subclass of int
    store.put("n", 1)
    with pytest.raises(TypeMismatchError):
        store.get("n", float)  # no numeric widening
    with pytest.raises(TypeMismatchError):
        store.get("n", bool)


def test_get_or_default(store: Store, clock: FakeClock) -> None:
    sentinel = object()
    assert store.get_or_default("missing", sentinel) is sentinel
    assert store.get_or_default("missing", 5, str) == 5  # the default is not type-checked
    store.put_with_ttl("short", "v", 1)
    assert store.get_or_default("short", sentinel) == "v"
    clock.advance(1)
    assert store.get_or_default("short", sentinel) is sentinel
    assert "short" not in store
    store.put("s", "text")
    assert store.get_or_default("s", 0, str) == "text"
    with pytest.raises(TypeMismatchError):
        store.get_or_default("s", 0, int)


@pytest.mark.parametrize("bad", ["", 0, None, b"k", ("a",)])
def test_bad_keys_are_refused(store: Store, bad: Any) -> None:
    expected = ValueError if bad == "" else TypeError
    with pytest.raises(expected):
        store.put(bad, 1)
    with pytest.raises(expected):
        store.put_with_ttl(bad, 1, 5)
    with pytest.raises(expected):
        store.put_with_metadata(bad, 1, Metadata())
    assert store.count() == 0


def test_str_subclass_keys_become_plain_str(store: Store) -> None:
    class Key(str, enum.Enum):
        USER = "user"

    store.put(Key.USER, 1)
    assert store.keys() == ["user"]
    assert type(store.keys()[0]) is str
    assert store.get("user") == 1
    assert store.get(Key.USER) == 1


def test_contains_has_delete_clear_count_len(store: Store) -> None:
    assert len(store) == 0 and store.count() == 0 and not store
    store.put("a", 1)
    store.put("b", None)  # None is a value like any other
    assert "a" in store and store.has("b")
    assert 1 not in store
    assert "c" not in store
    assert store.count() == 2 == len(store)
    assert store.delete("a") is True
    assert store.delete("a") is False
    assert store.keys() == ["b"]
    store.put("c", 3)
    seen = []
    for key in store:  # a snapshot: changing the store meanwhile is fine
        seen.append(key)
        store.delete(key)
    assert seen == ["b", "c"] and list(store) == []
    store.put("d", 4)
    store.clear()
    assert store.keys() == [] and len(store) == 0


def test_keys_are_in_insertion_order(store: Store) -> None:
    for key in ["z", "a", "m"]:
        store.put(key, key)
    store.put("a", "again")  # re-put keeps the place
    assert store.keys() == ["z", "a", "m"]
    store.delete("z")
    store.put("z", 1)  # deleted and put again: goes last
    assert store.keys() == ["a", "m", "z"]


def test_to_dict_is_a_deep_copy(store: Store) -> None:
    inner = [1, 2]
    store.put("k", {"list": inner})
    out = store.to_dict()
    assert out == {"k": {"list": [1, 2]}}
    out["k"]["list"].append(3)
    assert inner == [1, 2]


def test_uncopyable_value_raises_store_error_naming_key(store: Store) -> None:
    import threading

    store.put("fine", [1])
    store.put("lock", threading.Lock())
    with pytest.raises(StoreError, match="'lock'"):
        store.to_dict()
    with pytest.raises(StoreError, match="'lock'"):
        store.clone()
    target = Store()
    with pytest.raises(StoreError, match="'lock'"):
        target.merge(store)
    assert target.count() == 0


def test_repr_is_short_and_useful(store: Store) -> None:
    assert repr(store) == "<Store 0 keys: []>"
    store.put("a", "x" * 10_000)
    assert repr(store) == "<Store 1 key: ['a']>"
    for i in range(10):
        store.put(f"k{i}", i)
    text = repr(store)
    assert text.startswith("<Store 11 keys: ['a', 'k0'") and text.endswith(", ...]>")
    assert len(text) < 100
    assert "Metadata(tags=('t',)" in repr(Metadata(tags=["t"]))


# --- TTL --------------------------------------------------------------------------


def test_ttl_expires_exactly_at_the_deadline(store: Store, clock: FakeClock) -> None:
    store.put_with_ttl("k", "v", 10)
    clock.advance(9.999)
    assert store.get("k") == "v"
    assert store.get_ttl("k") == pytest.approx(0.001)
    clock.advance(0.001)
    assert not store.has("k")


@pytest.mark.parametrize("ttl", [0, -1, -0.5, timedelta(0), timedelta(seconds=-3), float("inf")])
def test_non_positive_or_infinite_ttl_means_no_expiry(
    store: Store, clock: FakeClock, ttl: Any
) -> None:
    store.put_with_ttl("k", 1, ttl)
    clock.advance(1e9)
    assert store.get("k") == 1
    assert store.get_ttl("k") is None


def test_timedelta_ttl(store: Store, clock: FakeClock) -> None:
    store.put_with_ttl("k", 1, timedelta(minutes=2))
    clock.advance(119)
    assert store.has("k")
    clock.advance(1)
    assert not store.has("k")


@pytest.mark.parametrize(
    ("ttl", "error"),
    [("5", TypeError), (None, TypeError), (True, TypeError), (float("nan"), ValueError)],
)
def test_bad_ttl_is_refused(store: Store, ttl: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        store.put_with_ttl("k", 1, ttl)
    assert "k" not in store


def test_reput_resets_ttl(store: Store, clock: FakeClock) -> None:
    store.put_with_ttl("k", 1, 10)
    store.put("k", 2)  # plain put removes the expiry
    clock.advance(100)
    assert store.get("k") == 2
    assert store.get_ttl("k") is None
    store.put_with_ttl("k", 3, 10)
    clock.advance(8)
    store.put_with_ttl("k", 4, 10)  # a new TTL from now
    clock.advance(8)
    assert store.get("k") == 4
    clock.advance(2)
    assert "k" not in store
    store.put_with_ttl("m", 1, 10)
    store.put_with_metadata("m", 2, Metadata())  # also a put: no TTL any more
    clock.advance(100)
    assert store.get("m") == 2
    store.put_with_metadata("n", 1, Metadata(), ttl=5)
    clock.advance(5)
    assert "n" not in store


def test_expired_keys_are_invisible_everywhere(store: Store, clock: FakeClock) -> None:
    store.put_with_metadata("old", 1, Metadata(tags=["t"], properties={"p": 1}), ttl=5)
    store.put_with_metadata("new", 2, Metadata(tags=["t"], properties={"p": 1}))
    clock.advance(5)
    assert store.keys() == ["new"]
    assert store.count() == 1 == len(store)
    assert store.to_dict() == {"new": 2}
    assert store.find_keys_by_tag("t") == ["new"]
    assert store.find_keys_by_all_tags(["t"]) == ["new"]
    assert store.find_keys_by_any_tag(["t", "x"]) == ["new"]
    assert store.find_keys_by_property("p", 1) == ["new"]
    assert list(store.export_state()["entries"]) == ["new"]
    assert store.clone().keys() == ["new"]
    assert "old" not in repr(store)


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.get_metadata("k"),
        lambda s: s.add_tag("k", "t"),
        lambda s: s.remove_tag("k", "t"),
        lambda s: s.has_tag("k", "t"),
        lambda s: s.set_property("k", "p", 1),
        lambda s: s.get_property("k", "p"),
        lambda s: s.get_ttl("k"),
    ],
)
def test_per_key_metadata_calls_on_missing_and_expired_keys(
    store: Store, clock: FakeClock, call: Any
) -> None:
    with pytest.raises(KeyNotFoundError) as info:
        call(store)
    assert not isinstance(info.value, KeyExpiredError)
    store.put_with_ttl("k", 1, 1)
    clock.advance(1)
    with pytest.raises(KeyExpiredError):
        call(store)


def test_expired_metadata_does_not_come_back(store: Store, clock: FakeClock) -> None:
    store.put_with_ttl("k", 1, 1)
    store.add_tag("k", "old")
    clock.advance(2)
    store.put("k", 2)  # a fresh key: the expired entry's tags are gone
    assert store.get_metadata("k").tags == ()
    assert store.find_keys_by_tag("old") == []


def test_unexpired_ttl_store_still_reads_fast_path_keys(store: Store, clock: FakeClock) -> None:
    store.put_with_ttl("ttl", 1, 100)
    store.put("plain", 2)
    clock.advance(50)
    assert store.get("plain") == 2 and store.get("ttl") == 1
    assert store.get_or_default("ttl", None) == 1
    assert store.count() == 2


# --- metadata ---------------------------------------------------------------------


def test_metadata_object(monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = iter(range(100, 200))
    monkeypatch.setattr("gostage.store._metadata.time.time", lambda: float(next(ticks)))
    meta = Metadata(tags=["a", "b", "a"], properties={"x": 1}, description="d")
    assert list(meta.tags) == ["a", "b"]
    assert meta.created_at == meta.updated_at == 100.0
    meta.add_tag("c")
    meta.add_tag("a")
    assert meta.tags == ("a", "b", "c")
    assert meta.has_tag("c") and not meta.has_tag("z")
    assert meta.remove_tag("b") is True and meta.remove_tag("b") is False
    meta.set_property("y", [1])
    assert meta.get_property("y") == [1]
    assert meta.get_property("nope") is None and meta.get_property("nope", 3) == 3
    props = meta.properties
    props["z"] = 1
    assert "z" not in meta.properties
    assert meta.remove_property("y") is True and meta.remove_property("y") is False
    meta.description = "new"
    assert meta.description == "new"
    assert meta.created_at == 100.0 and meta.updated_at > 100.0
    with pytest.raises(TypeError):
        hash(meta)


def test_metadata_validation() -> None:
    with pytest.raises(TypeError):
        Metadata(tags="abc")
    with pytest.raises(ValueError):
        Metadata(tags=[""])
    with pytest.raises(TypeError):
        Metadata(tags=[1])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        Metadata(properties={1: "x"})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        Metadata(description=None)  # type: ignore[arg-type]
    meta = Metadata()
    with pytest.raises(ValueError):
        meta.set_property("", 1)
    with pytest.raises(TypeError):
        meta.description = 5  # type: ignore[assignment]


def test_metadata_equality_and_copy() -> None:
    a = Metadata(tags=["x", "y"], properties={"p": [1]}, description="d")
    b = Metadata(tags=["y", "x"], properties={"p": [1]}, description="d")
    assert a == b
    assert a != Metadata(tags=["x"], properties={"p": [1]}, description="d")
    assert a != "not metadata"
    c = a.copy()
    assert c == a and c.created_at == a.created_at
    c.get_property("p").append(2)
    assert a.get_property("p") == [1]
    assert copy.deepcopy(a) == a and copy.copy(a) == a


def test_store_metadata_per_key(store: Store) -> None:
    store.put("k", 1)
    assert not store.has_tag("k", "t")
    assert store.remove_tag("k", "t") is False
    assert store.get_property("k", "p", "dflt") == "dflt"
    store.add_tag("k", "t")
    store.set_property("k", "p", {"v": 1})
    assert store.has_tag("k", "t")
    assert store.get_property("k", "p") == {"v": 1}
    meta = store.get_metadata("k")
    assert meta.tags == ("t",) and meta.properties == {"p": {"v": 1}}
    meta.add_tag("only-in-copy")
    meta.get_property("p")["v"] = 2
    assert not store.has_tag("k", "only-in-copy")
    assert store.get_property("k", "p") == {"v": 1}
    assert store.remove_tag("k", "t") is True
    assert not store.has_tag("k", "t")
    with pytest.raises(ValueError):
        store.add_tag("k", "")
    with pytest.raises(TypeError):
        store.set_property("k", 3, 1)  # type: ignore[arg-type]


def test_metadata_kept_on_plain_reput_and_replaced_when_given(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks = iter(range(1, 1000))
    monkeypatch.setattr("gostage.store._store.time.time", lambda: float(next(ticks)))
    given_meta = Metadata(tags=["a"], properties={"p": 1}, description="first")
    store.put_with_metadata("k", 1, given_meta)
    first = store.get_metadata("k")
    given_meta.add_tag("later")  # the store holds a copy
    store.put("k", 2)
    kept = store.get_metadata("k")
    assert kept.tags == ("a",) and kept.description == "first"
    assert kept.created_at == first.created_at
    assert kept.updated_at > first.updated_at
    store.put_with_ttl("k", 3, 100)
    assert store.get_metadata("k").tags == ("a",)
    store.put_with_metadata("k", 4, Metadata(tags=["b"]))
    replaced = store.get_metadata("k")
    assert replaced.tags == ("b",) and replaced.properties == {} and replaced.description == ""
    assert replaced.created_at == first.created_at  # still the same key
    assert replaced.updated_at > kept.updated_at
    with pytest.raises(TypeError):
        store.put_with_metadata("k", 5, {"tags": []})  # type: ignore[arg-type]


def test_get_metadata_materialises_stable_timestamps(store: Store) -> None:
    store.put("k", 1)
    first = store.get_metadata("k")
    assert first.tags == () and first.properties == {} and first.description == ""
    assert store.get_metadata("k").created_at == first.created_at


def test_finders(store: Store) -> None:
    store.put_with_metadata("c", 1, Metadata(tags=["x", "y"], properties={"owner": "ann"}))
    store.put_with_metadata("a", 2, Metadata(tags=["x"], properties={"owner": "bob", "n": 1}))
    store.put_with_metadata("b", 3, Metadata(tags=["y"], properties={"n": True}))
    store.put("plain", 4)
    assert store.find_keys_by_tag("x") == ["a", "c"]
    assert store.find_keys_by_tag("nope") == []
    assert store.find_keys_by_all_tags(["x", "y"]) == ["c"]
    assert store.find_keys_by_all_tags({"y"}) == ["b", "c"]
    assert store.find_keys_by_all_tags([]) == ["a", "b", "c", "plain"]
    assert store.find_keys_by_any_tag(["x", "y"]) == ["a", "b", "c"]
    assert store.find_keys_by_any_tag(iter(["y"])) == ["b", "c"]
    assert store.find_keys_by_any_tag([]) == []
    assert store.find_keys_by_property("owner", "ann") == ["c"]
    assert store.find_keys_by_property("n", 1) == ["a", "b"]  # == comparison: True == 1
    assert store.find_keys_by_property("missing", None) == []
    with pytest.raises(TypeError):
        store.find_keys_by_all_tags("xy")
    with pytest.raises(TypeError):
        store.find_keys_by_any_tag("xy")


# --- merge / copy_from / clone ----------------------------------------------------


def _pair(clock: FakeClock) -> tuple[Store, Store]:
    ours = Store(clock=clock)
    ours.put_with_metadata("both", "ours", Metadata(tags=["ours"]))
    ours.put("only-ours", 1)
    theirs = Store(clock=clock)
    theirs.put_with_metadata("both", "theirs", Metadata(tags=["theirs"]), ttl=50)
    theirs.put_with_metadata("only-theirs", [1, {"deep": [2]}], Metadata(properties={"p": [1]}))
    return ours, theirs


def test_merge_overwrite(clock: FakeClock) -> None:
    ours, theirs = _pair(clock)
    ours.merge(theirs)  # OVERWRITE is the default
    assert ours.to_dict() == {
        "both": "theirs",
        "only-ours": 1,
        "only-theirs": [1, {"deep": [2]}],
    }
    assert ours.get_metadata("both").tags == ("theirs",)
    assert ours.get_ttl("both") == pytest.approx(50)
    assert ours.get_metadata("only-theirs").properties == {"p": [1]}
    clock.advance(50)
    assert ours.keys() == ["only-ours", "only-theirs"]


def test_merge_skip_keeps_ours(clock: FakeClock) -> None:
    ours, theirs = _pair(clock)
    ours.merge(theirs, MergeStrategy.SKIP)
    assert ours.get("both") == "ours"
    assert ours.get_metadata("both").tags == ("ours",)
    assert ours.get_ttl("both") is None
    assert ours.get("only-theirs") == [1, {"deep": [2]}]


def test_merge_error_raises_and_changes_nothing(clock: FakeClock) -> None:
    ours, theirs = _pair(clock)
    theirs.put("only-ours", 2)
    before = ours.export_state()
    with pytest.raises(MergeConflictError) as info:
        ours.merge(theirs, MergeStrategy.ERROR)
    assert info.value.keys == ["both", "only-ours"]
    assert "'both'" in str(info.value) and "'only-ours'" in str(info.value)
    assert isinstance(info.value, StoreError)
    assert ours.export_state() == before
    theirs.delete("both")
    theirs.delete("only-ours")
    ours.merge(theirs, MergeStrategy.ERROR)  # no conflict left: merges
    assert ours.get("only-theirs") == [1, {"deep": [2]}]


def test_merge_expired_keys_do_not_conflict_or_travel(clock: FakeClock) -> None:
    ours = Store(clock=clock)
    ours.put_with_ttl("k", "ours", 1)
    theirs = Store(clock=clock)
    theirs.put("k", "theirs")
    theirs.put_with_ttl("gone", 1, 1)
    clock.advance(1)
    ours.merge(theirs, MergeStrategy.ERROR)
    assert ours.to_dict() == {"k": "theirs"}


def test_merge_converts_ttl_between_clocks() -> None:
    mine, other = FakeClock(10.0), FakeClock(5000.0)
    ours = Store(clock=mine)
    theirs = Store(clock=other)
    theirs.put_with_ttl("k", 1, 30)
    other.advance(10)
    ours.merge(theirs)
    assert ours.get_ttl("k") == pytest.approx(20)


def test_merge_argument_checks(store: Store) -> None:
    with pytest.raises(TypeError):
        store.merge({"a": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.merge(Store(), "skip")  # type: ignore[arg-type]


def test_merge_with_itself(store: Store) -> None:
    store.put("a", [1])
    store.merge(store)
    assert store.to_dict() == {"a": [1]}
    store.merge(store, MergeStrategy.SKIP)
    with pytest.raises(MergeConflictError):
        store.merge(store, MergeStrategy.ERROR)


def test_copy_from(clock: FakeClock) -> None:
    ours, theirs = _pair(clock)
    ours.copy_from(theirs)
    assert ours.get("both") == "ours"
    assert ours.get("only-theirs") == [1, {"deep": [2]}]
    ours, theirs = _pair(clock)
    ours.copy_from(theirs, overwrite=True)
    assert ours.get("both") == "theirs"
    assert ours.get_metadata("both").tags == ("theirs",)


def test_clone(store: Store, clock: FakeClock) -> None:
    store.put_with_metadata("m", {"x": [1]}, Metadata(tags=["t"], properties={"p": [1]}), ttl=10)
    store.put("plain", 1)
    twin = store.clone()
    assert twin.to_dict() == store.to_dict()
    assert twin.keys() == store.keys()
    assert twin.get_metadata("m") == store.get_metadata("m")
    assert twin.get_ttl("m") == store.get_ttl("m") == 10
    clock.advance(10)  # same clock: expires in both
    assert "m" not in twin and "m" not in store
    assert copy.copy(store).to_dict() == store.to_dict()
    assert copy.deepcopy(store).to_dict() == store.to_dict()


def _assert_isolated(a: Store, b: Store) -> None:
    """Mutating values and metadata in one store never shows in the other."""
    a.get("nested")["list"].append("from-a")
    a.set_property("nested", "p", "from-a")
    a.add_tag("nested", "from-a")
    assert b.get("nested") == {"list": [1, [2]]}
    assert b.get_property("nested", "p") == {"deep": [1]}
    assert not b.has_tag("nested", "from-a")
    b.get("nested")["list"][1].append("from-b")
    b.get_property("nested", "p")["deep"].append("from-b")
    assert a.get("nested") == {"list": [1, [2], "from-a"]}
    assert a.get_property("nested", "p") == "from-a"


def _source() -> Store:
    src = Store()
    src.put_with_metadata(
        "nested", {"list": [1, [2]]}, Metadata(tags=["t"], properties={"p": {"deep": [1]}})
    )
    return src


@pytest.mark.parametrize(
    "make_copy",
    [
        pytest.param(lambda src: src.clone(), id="clone"),
        pytest.param(lambda src: _merged(src, MergeStrategy.OVERWRITE), id="merge"),
        pytest.param(lambda src: _copied(src), id="copy_from"),
        pytest.param(lambda src: Store.import_state(src.export_state()), id="export-import"),
    ],
)
def test_copies_are_isolated_both_ways(make_copy: Any) -> None:
    src = _source()
    _assert_isolated(src, make_copy(src))
    src = _source()
    _assert_isolated(make_copy(src), src)


def _merged(src: Store, strategy: MergeStrategy) -> Store:
    dst = Store()
    dst.merge(src, strategy)
    return dst


def _copied(src: Store) -> Store:
    dst = Store()
    dst.copy_from(src)
    return dst


def test_copy_keeps_aliasing_between_values(store: Store) -> None:
    shared = [1]
    store.put("a", shared)
    store.put("b", shared)
    twin = store.clone()
    twin.get("a").append(2)
    assert twin.get("b") == [1, 2]
    assert shared == [1]


# --- model-based testing against a dict --------------------------------------------

KEYS = st.sampled_from(["a", "b", "c", "d", "e"])
VALUES = st.one_of(
    st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=3)
)


class StoreMachine(RuleBasedStateMachine):
    """Store (with TTLs on a fake clock) against a dict of (value, deadline) pairs."""

    @initialize()
    def setup(self) -> None:
        self.clock = FakeClock()
        self.store = Store(clock=self.clock)
        self.model: dict[str, tuple[Any, float | None]] = {}

    def _live(self) -> dict[str, Any]:
        now = self.clock.now
        self.model = {k: (v, d) for k, (v, d) in self.model.items() if d is None or now < d}
        return {k: v for k, (v, _) in self.model.items()}

    @rule(key=KEYS, value=VALUES)
    def put(self, key: str, value: Any) -> None:
        self.store.put(key, value)
        self._live()
        self.model[key] = (value, None)

    @rule(key=KEYS, value=VALUES, ttl=st.integers(min_value=-1, max_value=5))
    def put_with_ttl(self, key: str, value: Any, ttl: int) -> None:
        self.store.put_with_ttl(key, value, ttl)
        self._live()
        self.model[key] = (value, None if ttl <= 0 else self.clock.now + ttl)

    @rule(key=KEYS, tag=st.sampled_from(["x", "y"]))
    def tag(self, key: str, tag: str) -> None:
        if key in self._live():
            self.store.add_tag(key, tag)
        else:
            with pytest.raises(KeyNotFoundError):
                self.store.add_tag(key, tag)

    @rule(seconds=st.integers(min_value=0, max_value=3))
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        live = self._live()
        if key in live:
            assert self.store.get(key) == live[key]
        else:
            with pytest.raises(KeyNotFoundError):
                self.store.get(key)

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        live = self._live()
        assert self.store.delete(key) is (key in live)
        self.model.pop(key, None)

    @precondition(lambda self: len(self.model) > 3)
    @rule()
    def clear(self) -> None:
        self.store.clear()
        self.model.clear()

    @invariant()
    def agrees(self) -> None:
        live = self._live()
        assert self.store.to_dict() == live
        assert self.store.keys() == list(live)  # same insertion order as the dict
        assert self.store.count() == len(live) == len(self.store)
        for key in ["a", "b", "c", "d", "e"]:
            assert self.store.has(key) is (key in live)
            assert (key in self.store) is (key in live)


TestStoreMachine = StoreMachine.TestCase
TestStoreMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


@given(st.lists(st.tuples(KEYS, VALUES), max_size=20))
def test_keys_order_matches_dict(ops: list[tuple[str, Any]]) -> None:
    s, d = Store(), {}
    for key, value in ops:
        s.put(key, value)
        d[key] = value
    assert s.keys() == list(d)
    assert s.to_dict() == d


# --- the private write observer (used by the spawn child) ---------------------------


def test_write_observer(store: Store, clock: FakeClock) -> None:
    events: list[tuple[str, Any, bool]] = []
    store.put("before", 0)  # not reported: no observer yet
    store._set_observer(lambda key, value, deleted: events.append((key, value, deleted)))
    store.put("a", 1)
    store.put("a", 2)
    store.put_with_ttl("t", 3, 1)
    store.put_with_metadata("m", 4, Metadata(tags=["x"]))
    store.add_tag("a", "x")  # metadata changes are not reported
    assert store.delete("a") is True
    assert store.delete("a") is False  # nothing removed: not reported
    other = Store()
    other.put("o", 5)
    store.merge(other)
    clock.advance(1)  # "t" expires: not reported
    store.clear()
    assert events == [
        ("a", 1, False),
        ("a", 2, False),
        ("t", 3, False),
        ("m", 4, False),
        ("a", None, True),
        ("o", 5, False),
        ("before", None, True),
        ("m", None, True),
        ("o", None, True),
    ]
    store._set_observer(None)
    store.put("quiet", 1)
    assert events[-1] == ("o", None, True)
    assert store._plain  # no observer, no TTL, no metadata: the fast path is back
