"""Walking the parsed YAML one mapping at a time, and the one-line ConfigError.

A :class:`_Section` is one mapping of the config: it refuses keys it does not
allow, and ``get``/``get_list`` run a converter from ``vigo.config.checks`` on a
value, turning its :class:`~vigo.config.checks.Invalid` into a ConfigError naming
the file, the dotted key, the value and what is allowed.  ``_MISSING`` as a default
marks a key as required.
"""

import reprlib

from vigo.config import checks as check

_MISSING = object()
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80


class ConfigError(Exception):
    """A bad config: one line naming the key, the value and what is allowed."""


def _fail(where, key, value, problem):
    shown = "missing:" if value is _MISSING else _REPR.repr(value)
    if not str(key).isprintable():
        key = repr(key)  # a key with a newline must not break the one-line message
    raise ConfigError(f"{where}: {key}: {shown} {problem}")


class _Section:
    """One mapping of the config: its dotted key, its data, only allowed keys in it."""

    def __init__(self, where, key, data, allowed):
        self.where, self.key = where, key
        self.data = {} if data is None else data
        if not isinstance(self.data, dict):
            _fail(where, key or "(top level)", data,
                  f"is not a mapping (keys: {check.listing(allowed)})")
        for name in self.data:
            if name not in allowed:
                _fail(where, self._key(name), name,
                      f"is not a key here (allowed: {check.listing(allowed)})")

    def _key(self, name):
        return f"{self.key}.{name}" if self.key else str(name)

    def section(self, name, allowed):
        """The sub-mapping ``name``; missing or null means empty."""
        return _Section(self.where, self._key(name), self.data.get(name), allowed)

    def get(self, name, default, convert):
        """``convert`` the value of ``name`` (or ``default``); _MISSING means required."""
        value = self.data.get(name, default)
        if value is _MISSING:
            _fail(self.where, self._key(name), value, f"{self.key} needs {name}")
        return self.convert(self._key(name), value, convert)

    def get_list(self, name, convert):
        """``convert`` each item of the list ``name`` (default empty) into a tuple."""
        items = self.get(name, [], check.list_)
        key = self._key(name)
        return tuple(self.convert(f"{key}[{i}]", item, convert) for i, item in enumerate(items))

    def convert(self, key, value, convert):
        try:
            return convert(value)
        except check.Invalid as e:
            _fail(self.where, key, value, str(e))
