"""Argument schemas: each kind, nesting, bounds, and fuzzed input."""

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from vigo.interfaces.schema import (
    MAX_DEPTH,
    Boolean,
    Bytes,
    DictOf,
    Float,
    Integer,
    Json,
    ListOf,
    Optional,
    Record,
    SchemaError,
    String,
    check,
    check_json,
)


class SchemaTests(unittest.TestCase):
    def refused(self, schema, value, path, reason_part):
        with self.assertRaises(SchemaError) as caught:
            check(schema, value)
        self.assertEqual(caught.exception.path, path)
        self.assertIn(reason_part, caught.exception.reason)
        return caught.exception

    def test_string(self):
        check(String(5), "hello")
        check(String(5), "")
        self.refused(String(5), "hello!", "args", "0 to 5 characters, got 6")
        self.refused(String(5), b"hello", "args", "expected str, got bytes")
        self.refused(String(5, min_length=1), "", "args", "1 to 5")

    def test_string_pattern_must_match_whole(self):
        name = String(64, pattern=r"[a-z0-9_-]+")
        check(name, "ping")
        error = self.refused(name, "ping!", "args", "does not match")
        self.assertIn("'ping!'", str(error))

    def test_bytes(self):
        check(Bytes(32, min_length=32), b"k" * 32)
        self.refused(Bytes(32, min_length=32), b"k" * 31, "args", "32 to 32 bytes, got 31")
        self.refused(Bytes(32), "k", "args", "expected bytes, got str")

    def test_integer_refuses_bools_and_floats(self):
        check(Integer(0, 10), 10)
        self.refused(Integer(0, 10), 11, "args", "in [0, 10], got 11")
        self.refused(Integer(0, 10), True, "args", "expected int, got bool")
        self.refused(Integer(0, 10), 1.0, "args", "expected int, got float")
        check(Integer(), 2**63 - 1)
        self.refused(Integer(), 2**63, "args", "expected an int in")

    def test_float(self):
        check(Float(0, 1), 0.5)
        check(Float(0, 1), 1)
        self.refused(Float(0, 1), math.nan, "args", "finite")
        self.refused(Float(0, 1), 2.5, "args", "in [0, 1]")
        self.refused(Float(), False, "args", "expected a number, got bool")

    def test_boolean(self):
        check(Boolean(), False)
        self.refused(Boolean(), 0, "args", "expected bool, got int")

    def test_list_of(self):
        schema = ListOf(Integer(0, 9), max_items=3)
        check(schema, [1, 2, 3])
        check(schema, (1, 2))
        self.refused(schema, [1, 2, 3, 4], "args", "at most 3 items, got 4")
        self.refused(schema, [1, "2"], "args[1]", "expected int, got str")
        self.refused(schema, {1: 2}, "args", "expected a list, got dict")

    def test_dict_of(self):
        schema = DictOf(String(10), Integer(0, 9), max_items=2)
        check(schema, {"a": 1, "b": 2})
        self.refused(schema, {"a": 1, "b": 2, "c": 3}, "args", "at most 2 entries")
        self.refused(schema, {"a": 10}, "args['a']", "in [0, 9]")
        self.refused(schema, {3: 1}, "args[3]", "expected str, got int")

    def test_optional(self):
        check(Optional(String(3)), None)
        check(Optional(String(3)), "abc")
        self.refused(Optional(String(3)), "abcd", "args", "0 to 3")

    def test_record_fields(self):
        schema = Record({"host": String(10), "limit": Optional(Integer(1, 5))})
        check(schema, {"host": "web1"})
        check(schema, {"host": "web1", "limit": None})
        self.refused(schema, {}, "args.host", "missing")
        self.refused(schema, {"host": "web1", "hots": 1}, "args['hots']",
                     "unexpected; expected only: host, limit")
        self.refused(schema, {"host": "web1", "limit": 9}, "args.limit", "in [1, 5]")

    def test_nested_path(self):
        schema = Record({"groups": ListOf(DictOf(String(8), ListOf(Integer(0, 1), 4), 4), 4)})
        check(schema, {"groups": [{"a": [0, 1]}, {}]})
        self.refused(schema, {"groups": [{}, {"b": [0, 2]}]}, "args.groups[1]['b'][1]", "in [0, 1]")

    def test_json(self):
        check(Json(100), {"a": [1, 2.5, None, True, "x"]})
        self.refused(Json(10), "x" * 20, "args", "larger than 10 bytes as JSON")
        self.refused(Json(100), {"a": {1, 2}}, "args['a']", "got set")
        self.refused(Json(100), {1: 2}, "args[1]", "expected a str key")
        self.refused(Json(100), [math.inf], "args[0]", "finite")
        self.refused(Json(100), b"raw", "args", "got bytes")

    def test_check_json_size_is_compact_utf8_json(self):
        self.assertEqual(check_json({"a": [1, "é"]}, 100), len('{"a":[1,"é"]}'.encode()))
        check_json("é" * 10, 22)
        with self.assertRaises(SchemaError) as caught:
            check_json("é" * 10, 21)
        self.assertEqual(str(caught.exception), "result: larger than 21 bytes as JSON")

    def test_huge_values_refused_without_encoding(self):
        with self.assertRaises(SchemaError):
            check_json(["x" * 1000] * 100000, 64 * 1024)
        with self.assertRaises(SchemaError) as caught:
            check_json(10 ** 5000, 10 ** 6)
        self.assertIn("at most 4000 digits", caught.exception.reason)

    def test_depth_and_cycles(self):
        deep = []
        for _ in range(MAX_DEPTH + 5):
            deep = [deep]
        with self.assertRaises(SchemaError) as caught:
            check_json(deep, 10 ** 6)
        self.assertIn("nested deeper than", caught.exception.reason)
        loop = {}
        loop["self"] = loop
        self.assertRaises(SchemaError, check_json, loop, 10 ** 6)
        nested = ListOf(ListOf(Integer(), 2), 2)
        for _ in range(MAX_DEPTH):
            nested = ListOf(nested, 2)
        cycle = []
        cycle.append(cycle)
        self.assertRaises(SchemaError, check, nested, cycle)

    def test_schema_definitions_are_checked(self):
        self.assertRaises(ValueError, String, -1)
        self.assertRaises(ValueError, Integer, 5, 1)
        self.assertRaises(ValueError, ListOf, int, 3)
        self.assertRaises(ValueError, Record, {"a": "not a schema"})


json_ish = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
    | st.binary(max_size=10) | st.sampled_from([set(), frozenset({1}), object(), 1j]),
    lambda inner: st.lists(inner, max_size=5) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=5) | st.integers() | st.booleans(), inner, max_size=5),
    max_leaves=40,
)

SCHEMAS = [
    String(10), Bytes(10), Integer(-5, 5), Float(-1, 1), Boolean(), Json(64),
    ListOf(Optional(Integer()), 3), DictOf(String(5), Json(20), 3),
    Record({"a": String(4), "b": Optional(ListOf(Boolean(), 2))}),
]


class SchemaFuzzTests(unittest.TestCase):
    @settings(max_examples=300, deadline=None)
    @given(st.sampled_from(SCHEMAS), json_ish)
    def test_any_value_passes_or_is_refused(self, schema, value):
        try:
            check(schema, value)
        except SchemaError as e:
            self.assertTrue(str(e).startswith("args"))

    @settings(max_examples=300, deadline=None)
    @given(json_ish, st.integers(0, 200))
    def test_check_json_agrees_with_the_encoder(self, value, limit):
        try:
            size = check_json(value, limit)
        except SchemaError:
            return
        encoded = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        self.assertEqual(size, len(encoded.encode("utf-8")))
        self.assertLessEqual(size, limit)
