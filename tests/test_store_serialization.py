"""Store.export_state / Store.import_state: exact round trips, pickle policy, bad documents."""

from __future__ import annotations

import copy
import json
import math
import threading
import time
from collections import OrderedDict
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gostage.store import KeyExpiredError, Metadata, Store, StoreSerializationError


class FakeClock:
    def __init__(self, now: float = 50.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Point:
    """A picklable user class (module level, so pickle can find it)."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    __hash__ = None  # type: ignore[assignment]


def same(a: Any, b: Any) -> bool:
    """Exact equality: same types all the way down, NaN equals NaN, -0.0 is not 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def json_trip(doc: Any) -> Any:
    return json.loads(json.dumps(doc, allow_nan=False))


# --- hypothesis: JSON values round-trip exactly, with TTLs and metadata ---------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=25,
)
store_keys = st.text(min_size=1, max_size=8)
tags = st.lists(st.text(min_size=1, max_size=4), max_size=3)
metadata = st.none() | st.builds(
    Metadata,
    tags=tags,
    properties=st.dictionaries(st.text(min_size=1, max_size=4), json_values, max_size=3),
    description=st.text(max_size=10),
)
entries = st.dictionaries(
    store_keys,
    st.tuples(json_values, st.none() | st.floats(min_value=1, max_value=1e6), metadata),
    max_size=8,
)


def build(spec: dict[str, Any], clock: FakeClock) -> Store:
    store = Store(clock=clock)
    for key, (value, ttl, meta) in spec.items():
        if meta is not None:
            store.put_with_metadata(key, value, meta, ttl=ttl)
        elif ttl is not None:
            store.put_with_ttl(key, value, ttl)
        else:
            store.put(key, value)
    return store


def _without_deadlines(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for entry in doc["entries"].values():
        entry.pop("expires_at", None)
    return doc


def assert_same_store(a: Store, b: Store) -> None:
    assert a.keys() == b.keys()
    assert same(a.to_dict(), b.to_dict())
    # Same entries, with and without metadata (before get_metadata materialises any).
    assert _without_deadlines(a.export_state()) == _without_deadlines(b.export_state())
    for key in a:
        ta, tb = a.get_ttl(key), b.get_ttl(key)
        assert (ta is None) == (tb is None)
        if ta is not None and tb is not None:
            assert tb == pytest.approx(ta, abs=1.0)  # wall clock moved a little meanwhile
    entries = a.export_state()["entries"]
    for key in [k for k, entry in entries.items() if "metadata" in entry]:
        ma, mb = a.get_metadata(key), b.get_metadata(key)
        assert ma.tags == mb.tags
        assert same(ma.properties, mb.properties)
        assert ma.description == mb.description
        assert (ma.created_at, ma.updated_at) == (mb.created_at, mb.updated_at)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=entries, allow_pickle=st.booleans())
def test_json_values_round_trip_exactly(spec: dict[str, Any], allow_pickle: bool) -> None:
    clock = FakeClock()
    store = build(spec, clock)
    doc = store.export_state(allow_pickle=allow_pickle)
    # Plain JSON data never needs pickle or tags.
    for entry in doc["entries"].values():
        assert list(entry["value"]) == ["json"]
    assert json_trip(doc) == doc
    again = Store.import_state(json_trip(doc), allow_pickle=allow_pickle, clock=FakeClock(7.0))
    assert_same_store(store, again)
    # The document is independent of both stores.
    assert again.export_state()["entries"].keys() == doc["entries"].keys()


@settings(max_examples=50, deadline=None)
@given(value=json_values)
def test_document_shares_nothing_with_the_store(value: Any) -> None:
    store = Store()
    holder = {"v": value}
    store.put("k", holder)
    doc = store.export_state()
    assert doc["entries"]["k"]["value"]["json"] == holder
    doc["entries"]["k"]["value"]["json"]["v"] = "changed"
    assert store.get("k") is holder and holder["v"] is value
    again = Store.import_state(doc)
    doc["entries"]["k"]["value"]["json"]["v"] = "changed twice"
    assert again.get("k") == {"v": "changed"}


# --- values JSON cannot carry -----------------------------------------------------

hashables = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=4) | st.binary(max_size=4),
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=8,
)
special_values = st.recursive(
    json_scalars
    | st.binary(max_size=8)
    | st.sampled_from([math.inf, -math.inf, math.nan, -0.0, 2**5000, -(3**4000)]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.sets(hashables, max_size=3)
        | st.frozensets(hashables, max_size=3)
        | st.dictionaries(hashables, inner, max_size=3)
    ),
    max_leaves=15,
)


@settings(max_examples=150, deadline=None)
@given(value=special_values)
def test_builtin_non_json_values_round_trip_without_pickle(value: Any) -> None:
    store = Store()
    store.put("k", value)
    store.put_with_metadata("m", 1, Metadata(properties={"p": value}))
    doc = store.export_state(allow_pickle=False)
    assert "pickle" not in json.dumps(doc)
    assert json_trip(doc) == doc  # NaN and infinities are tagged strings, not floats
    again = Store.import_state(json_trip(doc), allow_pickle=False)
    assert same(again.get("k"), value)
    assert same(again.get_property("m", "p"), value)


@pytest.mark.parametrize(
    "value",
    [
        (1, "a", (2.5, None)),
        {1, 2, 3},
        frozenset({"a", (1, 2)}),
        b"\x00\xff bytes",
        float("nan"),
        float("inf"),
        float("-inf"),
        -0.0,
        2**10_000,
        {1: "int key", (1, 2): "tuple key", None: "none key"},
        {"list": [(1,), {2: 3}], "tuple": ()},
    ],
    ids=repr,
)
def test_specific_non_json_values(value: Any) -> None:
    store = Store()
    store.put("k", value)
    doc = json_trip(store.export_state(allow_pickle=False))
    assert same(Store.import_state(doc, allow_pickle=False).get("k"), value)


@pytest.mark.parametrize(
    "value",
    [
        Point(1, 2),
        [Point(3, 4), (5, 6)],
        OrderedDict(a=1),  # a dict subclass is not plain JSON
        Fraction(1, 3),
        complex(1, 2),
        bytearray(b"xy"),
        threading.Event,  # a class, pickled by reference
    ],
    ids=lambda v: type(v).__name__,
)
def test_other_picklable_values_use_the_pickle_fallback(value: Any) -> None:
    store = Store()
    store.put("k", value)
    doc = store.export_state()
    box = doc["entries"]["k"]["value"]
    assert list(box) == ["pickle"]
    assert json_trip(doc) == doc
    back = Store.import_state(json_trip(doc)).get("k")
    assert type(back) is type(value) and back == value
    with pytest.raises(StoreSerializationError, match=r"'k'.*allow_pickle=False"):
        store.export_state(allow_pickle=False)
    with pytest.raises(StoreSerializationError, match=r"'k'.*allow_pickle=False"):
        Store.import_state(doc, allow_pickle=False)


def test_cyclic_values_use_pickle() -> None:
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    store = Store()
    store.put("cycle", cyclic)
    doc = store.export_state()
    assert list(doc["entries"]["cycle"]["value"]) == ["pickle"]
    back = Store.import_state(doc).get("cycle")
    assert back[0] == 1 and back[1] is back
    with pytest.raises(StoreSerializationError, match="'cycle'"):
        store.export_state(allow_pickle=False)


@pytest.mark.parametrize(
    "value",
    [lambda: 1, threading.Lock(), [1, (lambda: 2)], (x for x in [1])],
    ids=["lambda", "lock", "nested-lambda", "generator"],
)
def test_unpicklable_values_raise_naming_the_key(value: Any) -> None:
    store = Store()
    store.put("fine", 1)
    store.put("bad-key", value)
    with pytest.raises(StoreSerializationError, match="'bad-key'") as info:
        store.export_state()
    assert "picklable" in str(info.value)
    with pytest.raises(StoreSerializationError, match="'bad-key'"):
        store.export_state(allow_pickle=False)


def test_unpicklable_property_raises_naming_key_and_property() -> None:
    store = Store()
    store.put("k", 1)
    store.set_property("k", "callback", lambda: None)
    with pytest.raises(StoreSerializationError, match="'k' property 'callback'"):
        store.export_state()


def test_allow_pickle_false_refuses_before_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store()
    store.put("a", 1)
    store.put("obj", Point(1, 1))
    doc = store.export_state()
    import pickle

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("unpickled despite allow_pickle=False")

    monkeypatch.setattr(pickle, "loads", explode)
    with pytest.raises(StoreSerializationError, match="'obj'"):
        Store.import_state(doc, allow_pickle=False)


# --- TTL across export / import ---------------------------------------------------


def test_ttl_is_written_as_wall_clock_deadline() -> None:
    clock = FakeClock(100.0)
    store = Store(clock=clock)
    store.put_with_ttl("k", 1, 30)
    store.put("forever", 2)
    before = time.time()
    doc = store.export_state()
    after = time.time()
    assert before + 30 <= doc["entries"]["k"]["expires_at"] <= after + 30
    assert "expires_at" not in doc["entries"]["forever"]
    again = Store.import_state(doc, clock=FakeClock(9999.0))
    assert again.get_ttl("k") == pytest.approx(30, abs=1)
    assert again.get_ttl("forever") is None


def test_import_skips_keys_whose_deadline_passed() -> None:
    doc = Store().export_state()
    doc["entries"]["old"] = {"value": {"json": 1}, "expires_at": time.time() - 1}
    doc["entries"]["new"] = {"value": {"json": 2}, "expires_at": time.time() + 100}
    store = Store.import_state(doc)
    assert store.keys() == ["new"]
    with pytest.raises(KeyExpiredError):
        store.get("old")


def test_expired_keys_are_not_exported() -> None:
    clock = FakeClock()
    store = Store(clock=clock)
    store.put_with_ttl("k", 1, 5)
    clock.now += 5
    assert store.export_state()["entries"] == {}


# --- the document format ----------------------------------------------------------


def test_document_layout() -> None:
    store = Store()
    store.put_with_metadata("k", [1, "a"], Metadata(tags=["t"], properties={"p": (1,)}))
    doc = store.export_state()
    assert doc["format"] == "gostage.store" and doc["version"] == 1
    entry = doc["entries"]["k"]
    assert entry["value"] == {"json": [1, "a"]}
    assert entry["metadata"]["tags"] == ["t"]
    assert entry["metadata"]["properties"] == {"p": {"tagged": {"t": "tuple", "v": [1]}}}
    assert set(entry["metadata"]) == {
        "tags",
        "properties",
        "description",
        "created_at",
        "updated_at",
    }


def test_tag_shaped_user_dicts_stay_plain_data() -> None:
    """A user dict that looks like a tag is not mistaken for one, in either encoding."""
    lookalike = {"t": "tuple", "v": [1, 2]}
    store = Store()
    store.put("plain", lookalike)
    store.put("inside-tagged", (lookalike,))
    again = Store.import_state(json_trip(store.export_state(allow_pickle=False)))
    assert same(again.get("plain"), lookalike)
    assert same(again.get("inside-tagged"), (lookalike,))


def _valid_doc() -> dict[str, Any]:
    store = Store()
    store.put_with_metadata("k", {"a": 1}, Metadata(tags=["t"], properties={"p": 1}), ttl=100)
    store.put("s", {1, 2})
    return store.export_state()


def _mutate(path: list[Any], value: Any) -> Any:
    def apply(doc: dict[str, Any]) -> dict[str, Any]:
        target: Any = doc
        for part in path[:-1]:
            target = target[part]
        if value is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value
        return doc

    return apply


_DELETE = object()

MALFORMED = {
    "not a dict": lambda doc: [doc],
    "none": lambda doc: None,
    "missing version": _mutate(["version"], _DELETE),
    "missing format": _mutate(["format"], _DELETE),
    "missing entries": _mutate(["entries"], _DELETE),
    "extra top field": _mutate(["extra"], 1),
    "wrong format": _mutate(["format"], "something.else"),
    "version 2": _mutate(["version"], 2),
    "version as str": _mutate(["version"], "1"),
    "version as bool": _mutate(["version"], True),
    "entries is a list": _mutate(["entries"], []),
    "empty key": _mutate(["entries", ""], {"value": {"json": 1}}),
    "entry not a dict": _mutate(["entries", "k"], 5),
    "entry without value": _mutate(["entries", "k", "value"], _DELETE),
    "entry extra field": _mutate(["entries", "k", "ttl"], 5),
    "value box with two fields": _mutate(["entries", "k", "value", "pickle"], "AA=="),
    "value box unknown kind": _mutate(["entries", "k", "value"], {"yaml": "a: 1"}),
    "value box not a dict": _mutate(["entries", "k", "value"], [1]),
    "json box with tuple": _mutate(["entries", "k", "value"], {"json": (1, 2)}),
    "json box with object": _mutate(["entries", "k", "value"], {"json": {"a": object()}}),
    "json box with int key": _mutate(["entries", "k", "value"], {"json": {1: 2}}),
    "expires_at str": _mutate(["entries", "k", "expires_at"], "soon"),
    "expires_at bool": _mutate(["entries", "k", "expires_at"], True),
    "expires_at nan": _mutate(["entries", "k", "expires_at"], float("nan")),
    "metadata not a dict": _mutate(["entries", "k", "metadata"], ["t"]),
    "metadata missing tags": _mutate(["entries", "k", "metadata", "tags"], _DELETE),
    "metadata extra field": _mutate(["entries", "k", "metadata", "color"], "red"),
    "tags not a list": _mutate(["entries", "k", "metadata", "tags"], "t"),
    "tag not a str": _mutate(["entries", "k", "metadata", "tags"], [1]),
    "empty tag": _mutate(["entries", "k", "metadata", "tags"], [""]),
    "properties not a dict": _mutate(["entries", "k", "metadata", "properties"], []),
    "property not boxed": _mutate(["entries", "k", "metadata", "properties", "p"], 1),
    "description not str": _mutate(["entries", "k", "metadata", "description"], None),
    "created_at str": _mutate(["entries", "k", "metadata", "created_at"], "today"),
    "unknown tag": _mutate(["entries", "s", "value"], {"tagged": {"t": "decimal", "v": "1"}}),
    "tag with extra field": _mutate(
        ["entries", "s", "value"], {"tagged": {"t": "tuple", "v": [], "x": 1}}
    ),
    "tuple payload not list": _mutate(
        ["entries", "s", "value"], {"tagged": {"t": "tuple", "v": 1}}
    ),
    "unhashable set item": _mutate(["entries", "s", "value"], {"tagged": {"t": "set", "v": [[1]]}}),
    "unhashable dict key": _mutate(
        ["entries", "s", "value"], {"tagged": {"t": "dict", "v": [[[1], 2]]}}
    ),
    "dict pair of three": _mutate(
        ["entries", "s", "value"], {"tagged": {"t": "dict", "v": [[1, 2, 3]]}}
    ),
    "bad float tag": _mutate(["entries", "s", "value"], {"tagged": {"t": "float", "v": "1.5"}}),
    "bad int tag": _mutate(["entries", "s", "value"], {"tagged": {"t": "int", "v": "xyz"}}),
    "bad bytes tag": _mutate(["entries", "s", "value"], {"tagged": {"t": "bytes", "v": "!!!"}}),
    "non-ascii bytes tag": _mutate(["entries", "s", "value"], {"tagged": {"t": "bytes", "v": "é"}}),
    "object in tagged": _mutate(["entries", "s", "value"], {"tagged": [object()]}),
    "pickle not str": _mutate(["entries", "s", "value"], {"pickle": 5}),
    "pickle bad base64": _mutate(["entries", "s", "value"], {"pickle": "@@@"}),
    "pickle garbage": _mutate(["entries", "s", "value"], {"pickle": "AAAA"}),
}


@pytest.mark.parametrize("breaker", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_documents_raise(breaker: Any) -> None:
    doc = breaker(copy.deepcopy(_valid_doc()))
    with pytest.raises(StoreSerializationError) as info:
        Store.import_state(doc)
    assert str(info.value)


def test_valid_doc_fixture_imports() -> None:
    """The documents above are malformed only because of their one change."""
    store = Store.import_state(copy.deepcopy(_valid_doc()))
    assert store.get("s") == {1, 2}
    assert store.get_metadata("k").tags == ("t",)


def test_version_error_message() -> None:
    doc = _valid_doc()
    doc["version"] = 99
    with pytest.raises(StoreSerializationError, match="version 99"):
        Store.import_state(doc)


def test_deeply_nested_value() -> None:
    deep: Any = 1
    for _ in range(50):
        deep = [deep, (deep,)] if isinstance(deep, int) else [deep]
    store = Store()
    store.put("deep", deep)
    doc = json_trip(store.export_state(allow_pickle=False))
    assert same(Store.import_state(doc).get("deep"), deep)
