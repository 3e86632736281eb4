"""Plain values as D-Bus variants, typed on purpose rather than guessed.

txdbus guesses a variant's type from the Python value: an ``int`` is an
``INT32`` (too small for byte counts), a ``dict`` or ``list`` takes its types
from its first item (and an empty one fails). ``status_dict`` turns JSON-like
data (what ``GET /api/v1/status`` answers) into an ``a{sv}`` whose values are
``b``, ``x`` (64-bit integers), ``d``, ``s``, ``a{sv}`` (a nested object) and
``av`` (a list); a key whose value is null is left out, as D-Bus has no null.
``typed(sig, value)`` is a property's value as its declared type.
"""

from txdbus import marshal

_INT64 = (-(2 ** 63), 2 ** 63 - 1)


class Dict(dict):
    """A mapping that is marshalled as ``a{sv}``."""

    dbusSignature = "a{sv}"


class List(list):
    """A sequence that is marshalled as ``av``."""

    dbusSignature = "av"


def variant(value):
    """``value`` (JSON-like: None is not one) ready to be sent as a variant."""
    if isinstance(value, bool) or isinstance(value, float):
        return value
    if isinstance(value, int):
        return marshal.Int64(value) if _INT64[0] <= value <= _INT64[1] else float(value)
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return status_dict(value)
    if isinstance(value, (list, tuple)):
        return List(variant(item) for item in value if item is not None)
    raise TypeError("%r cannot be sent over D-Bus" % (value,))


def status_dict(mapping):
    """``mapping`` as an ``a{sv}`` (keys as strings, null values left out)."""
    return Dict((str(key), variant(value)) for key, value in mapping.items()
                if value is not None)


#: A property's D-Bus type: the class its value is sent as.
_TYPES = {"s": str, "b": bool, "u": marshal.UInt32, "t": marshal.UInt64,
          "x": marshal.Int64, "i": marshal.Int32, "d": float}


def typed(sig, value):
    """``value`` as the D-Bus type ``sig`` (a basic type)."""
    return _TYPES[sig](value)
