"""Schemas for what crosses the peer RPC wire, in the Foolscap manner.

PB will unserialize whatever basic types a peer sends; nothing stops a peer
from sending a 600 KiB string, a list nested a thousand deep, a float where an
int was meant, or a structure that refers to itself. So every ``perspective_*``
argument is checked against one of these schemas before anything else looks at
it, and every action result against ``check_json`` before it is sent.

A schema is a small immutable object; ``check(schema, value)`` returns None or
raises ``SchemaError(path, reason)`` naming where the value went wrong, e.g.
``args.hosts[3]: expected str, got int``. The module imports nothing heavy, so
plugin dropins can import it at module top.
"""

import json
import math
import re

__all__ = [
    "Boolean", "Bytes", "DictOf", "Float", "Integer", "Json", "ListOf", "Optional",
    "Record", "Schema", "SchemaError", "String", "check", "check_json",
]

#: How deep a value may nest. Deeper values are refused rather than recursed
#: into: it bounds the work and stops self-referencing structures.
MAX_DEPTH = 32


class SchemaError(ValueError):
    """A value did not match its schema. ``path`` says where, ``reason`` why."""

    def __init__(self, path, reason):
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self):
        return "%s: %s" % (self.path, self.reason) if self.path else self.reason


def _format_path(parts):
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += "[%s]" % (_short(part),)
        elif isinstance(part, _Key):
            text += "[%s]" % (_short(part.key),)
        elif text:
            text += "." + part
        else:
            text = part
    return text


class _Key:
    """A dict key in a path, printed as ``[key]`` (a record field prints as ``.name``)."""

    __slots__ = ("key",)

    def __init__(self, key):
        self.key = key


def _short(value):
    if isinstance(value, int) and value.bit_length() > _MAX_INT_BITS:
        # repr() refuses ints of more than 4,300 digits (ValueError).
        return "an int of %d bits" % (value.bit_length(),)
    if isinstance(value, str):
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_name(value):
    return type(value).__name__


def _fail(path, reason):
    raise SchemaError(_format_path(path), reason)


class Schema:
    """The base of every schema: ``validate(value, path)`` raises or returns."""

    optional = False

    def validate(self, value, path):  # pragma: no cover - every schema overrides it
        raise NotImplementedError

    def __repr__(self):
        fields = ", ".join("%s=%r" % item for item in vars(self).items())
        return "%s(%s)" % (type(self).__name__, fields)


def _positive(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError("%s must be an int >= 0, not %r" % (name, value))
    return value


class String(Schema):
    """A ``str`` of at most ``max_length`` characters, optionally matching a regex."""

    def __init__(self, max_length, min_length=0, pattern=None):
        self.max_length = _positive("max_length", max_length)
        self.min_length = _positive("min_length", min_length)
        self.pattern = pattern
        self._regex = re.compile(pattern) if pattern is not None else None

    def validate(self, value, path):
        if not isinstance(value, str):
            _fail(path, "expected str, got %s" % (_type_name(value),))
        if not self.min_length <= len(value) <= self.max_length:
            _fail(path, "expected %d to %d characters, got %d"
                  % (self.min_length, self.max_length, len(value)))
        if self._regex is not None and self._regex.fullmatch(value) is None:
            _fail(path, "%s does not match %s" % (_short(value), self.pattern))


class Bytes(Schema):
    """A ``bytes`` of at most ``max_length`` bytes."""

    def __init__(self, max_length, min_length=0):
        self.max_length = _positive("max_length", max_length)
        self.min_length = _positive("min_length", min_length)

    def validate(self, value, path):
        if not isinstance(value, bytes):
            _fail(path, "expected bytes, got %s" % (_type_name(value),))
        if not self.min_length <= len(value) <= self.max_length:
            _fail(path, "expected %d to %d bytes, got %d"
                  % (self.min_length, self.max_length, len(value)))


class Integer(Schema):
    """An ``int`` (not a bool, not a float) in ``[min, max]``; 64-bit signed by default."""

    def __init__(self, min=-(2**63), max=2**63 - 1):
        if min > max:
            raise ValueError("min %r is above max %r" % (min, max))
        self.min = min
        self.max = max

    def validate(self, value, path):
        if not isinstance(value, int) or isinstance(value, bool):
            _fail(path, "expected int, got %s" % (_type_name(value),))
        if not self.min <= value <= self.max:
            _fail(path, "expected an int in [%d, %d], got %s" % (self.min, self.max, _short(value)))


class Float(Schema):
    """A finite number (``float`` or ``int``, not a bool) in ``[min, max]``."""

    def __init__(self, min=-math.inf, max=math.inf):
        if min > max:
            raise ValueError("min %r is above max %r" % (min, max))
        self.min = min
        self.max = max

    def validate(self, value, path):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            _fail(path, "expected a number, got %s" % (_type_name(value),))
        if isinstance(value, float) and not math.isfinite(value):
            _fail(path, "expected a finite number, got %r" % (value,))
        if not self.min <= value <= self.max:
            _fail(path, "expected a number in [%s, %s], got %s" % (self.min, self.max, _short(value)))


class Boolean(Schema):
    """``True`` or ``False`` (not 0 or 1)."""

    def validate(self, value, path):
        if not isinstance(value, bool):
            _fail(path, "expected bool, got %s" % (_type_name(value),))


class ListOf(Schema):
    """A list (or tuple) of at most ``max_items`` items, each matching ``schema``."""

    def __init__(self, schema, max_items):
        self.schema = _schema("ListOf item", schema)
        self.max_items = _positive("max_items", max_items)

    def validate(self, value, path):
        if not isinstance(value, (list, tuple)):
            _fail(path, "expected a list, got %s" % (_type_name(value),))
        if len(value) > self.max_items:
            _fail(path, "expected at most %d items, got %d" % (self.max_items, len(value)))
        _deeper(path)
        for index, item in enumerate(value):
            self.schema.validate(item, path + (index,))


class DictOf(Schema):
    """A dict of at most ``max_items`` entries, keys and values each matching a schema."""

    def __init__(self, key_schema, value_schema, max_items):
        self.key_schema = _schema("DictOf key", key_schema)
        self.value_schema = _schema("DictOf value", value_schema)
        self.max_items = _positive("max_items", max_items)

    def validate(self, value, path):
        if not isinstance(value, dict):
            _fail(path, "expected a dict, got %s" % (_type_name(value),))
        if len(value) > self.max_items:
            _fail(path, "expected at most %d entries, got %d" % (self.max_items, len(value)))
        _deeper(path)
        for key, item in value.items():
            self.key_schema.validate(key, path + (_Key(key),))
            self.value_schema.validate(item, path + (_Key(key),))


class Optional(Schema):
    """``schema`` or None; as a ``Record`` field, it may also be left out."""

    optional = True

    def __init__(self, schema):
        self.schema = _schema("Optional", schema)

    def validate(self, value, path):
        if value is not None:
            self.schema.validate(value, path)


class Record(Schema):
    """A dict with exactly the named fields (``Optional`` ones may be absent).

    This is how an action's ``argument_schema`` is applied to its arguments: an
    unknown name is refused rather than ignored, so a caller's typo is an error.
    """

    def __init__(self, fields):
        self.fields = dict(fields)
        for name, schema in self.fields.items():
            if not isinstance(name, str):
                raise ValueError("Record field names must be str, not %r" % (name,))
            _schema("Record field %r" % (name,), schema)

    def validate(self, value, path):
        if not isinstance(value, dict):
            _fail(path, "expected a dict, got %s" % (_type_name(value),))
        for key in value:
            if key not in self.fields:
                _fail(path + (_Key(key),), "unexpected; expected only: %s"
                      % (", ".join(sorted(self.fields)) or "nothing",))
        _deeper(path)
        for name, schema in self.fields.items():
            if name in value:
                schema.validate(value[name], path + (name,))
            elif not schema.optional:
                _fail(path + (name,), "missing")


class Json(Schema):
    """Any JSON-able value whose compact JSON encoding is at most ``max_bytes``."""

    def __init__(self, max_bytes):
        self.max_bytes = _positive("max_bytes", max_bytes)

    def validate(self, value, path):
        _check_json_size(value, path, self.max_bytes)


def _schema(what, schema):
    if not isinstance(schema, Schema):
        raise ValueError("%s must be a schema, not %r" % (what, schema))
    return schema


def _deeper(path):
    if len(path) >= MAX_DEPTH:
        _fail(path, "nested deeper than %d levels" % (MAX_DEPTH,))


def check(schema, value, path="args"):
    """Raise ``SchemaError`` unless ``value`` matches ``schema``.

    ``path`` names the value in the error (``args`` by default).
    """
    schema.validate(value, (path,) if path else ())


def _json_size(value, path, budget, used, depth):
    """The compact-JSON size of ``value`` added to ``used``. It stops adding as
    soon as ``budget`` is passed, so an oversized value is never encoded whole;
    the caller refuses a size over budget."""
    if value is None or value is True:
        return used + 4
    if value is False:
        return used + 5
    if isinstance(value, int):
        if value.bit_length() > _MAX_INT_BITS:
            _fail(path, "expected an int of at most %d digits" % (_MAX_INT_DIGITS,))
        return used + len(str(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            _fail(path, "expected a finite number, got %r" % (value,))
        return used + len(repr(value))
    if isinstance(value, str):
        return used + _string_size(value, budget - used, path)
    if isinstance(value, (list, tuple, dict)) and depth >= MAX_DEPTH:
        _fail(path, "nested deeper than %d levels" % (MAX_DEPTH,))
    if isinstance(value, (list, tuple)):
        used += 2 + max(len(value) - 1, 0)
        for index, item in enumerate(value):
            if used > budget:
                break
            used = _json_size(item, path + (index,), budget, used, depth + 1)
        return used
    if isinstance(value, dict):
        used += 2 + max(len(value) - 1, 0)
        for key, item in value.items():
            if used > budget:
                break
            if not isinstance(key, str):
                _fail(path + (_Key(key),), "expected a str key, got %s" % (_type_name(key),))
            used += 1 + _string_size(key, budget - used, path + (_Key(key),))
            used = _json_size(item, path + (_Key(key),), budget, used, depth + 1)
        return used
    _fail(path, "expected JSON data (dict, list, str, int, float, bool, None), got %s"
          % (_type_name(value),))


# Python refuses to print ints of more than 4,300 digits; JSON data has no
# business holding one anyway.
_MAX_INT_DIGITS = 4000
_MAX_INT_BITS = int(_MAX_INT_DIGITS * math.log2(10))


def _check_json_size(value, path, max_bytes):
    size = _json_size(value, path, max_bytes, 0, 0)
    if size > max_bytes:
        _fail(path, "larger than %d bytes as JSON" % (max_bytes,))
    return size


def _string_size(text, budget, path):
    # Each character encodes to at least one byte: skip the encoding of a
    # string that cannot fit anyway.
    if len(text) > budget:
        return len(text)
    try:
        return len(json.dumps(text, ensure_ascii=False).encode("utf-8"))
    except UnicodeEncodeError:
        _fail(path, "expected text, got a string that is not valid Unicode (a lone surrogate)")


def check_json(value, max_bytes, path="result"):
    """Raise ``SchemaError`` unless ``value`` is JSON-able and its compact JSON
    encoding (UTF-8) is at most ``max_bytes``; return that size."""
    return _check_json_size(value, (path,) if path else (), max_bytes)
