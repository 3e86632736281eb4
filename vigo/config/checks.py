"""What each server.yaml value may be: the converters ``vigo.config.schema`` checks keys with.

A converter takes a value as YAML parsed it and returns what the config keeps, or
raises :class:`Invalid` saying what is allowed instead; ``vigo.config.sections``
turns that into a ConfigError naming the file and the key.
"""

import importlib.util
import ipaddress
import os
import re

from vigo.config.values import DURATION_HINT, parse_address, parse_duration

_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,253}")


class Invalid(Exception):
    """A converter's complaint: what is allowed instead."""


def listing(names):
    """``names`` sorted and comma-separated, for messages."""
    return ", ".join(sorted(names))


def _check(ok, problem):
    """A converter that passes values for which ``ok(value)`` holds, else complains."""
    def convert(value):
        if not ok(value):
            raise Invalid(problem)
        return value
    return convert


def integer(low, high):
    problem = f"is not an integer from {low} to {high}"
    return _check(lambda v: type(v) is int and low <= v <= high, problem)


def choice(*allowed):
    problem = f"is not allowed (allowed: {listing(allowed)})"
    return _check(lambda v: isinstance(v, str) and v in allowed, problem)


string = _check(lambda v: isinstance(v, str) and v.strip() != "", "is not a non-empty string")
list_ = _check(lambda v: isinstance(v, list), "is not a list")
boolean = _check(lambda v: isinstance(v, bool), "is not a boolean (use true or false)")
name = _check(
    lambda v: isinstance(v, str) and _NAME.fullmatch(v) is not None,
    "is not a name (1 to 253 letters, digits, '-', '_' or '.')",
)
_bus = _check(
    lambda v: isinstance(v, str) and (v in ("none", "session", "system") or ":" in v),
    "is not a bus (allowed: none, session, system or a D-Bus address like unix:path=/x)",
)

#: What installs txdbus, which a bus needs (it is an optional dependency).
DBUS_EXTRA = "pip install 'vigosrv[dbus]'"


def txdbus_installed():
    """Whether txdbus can be imported: looked for, not imported (its client
    module imports the global reactor, which twistd has yet to choose)."""
    try:
        return importlib.util.find_spec("txdbus") is not None
    except (ImportError, ValueError):
        return False


def bus(value):
    """``dbus.bus``: a bus, which needs txdbus, or ``none``."""
    value = _bus(value)
    if value != "none" and not txdbus_installed():
        raise Invalid(f"needs txdbus, which is not installed: {DBUS_EXTRA} "
                      "(or set dbus.bus to none)")
    return value


def duration(low, high, allowed):
    """Seconds within ``low..high``; zero is never a valid period."""
    def duration(value):
        try:
            seconds = parse_duration(value)
        except ValueError:
            raise Invalid(f"is not a duration {DURATION_HINT}") from None
        if not low <= seconds <= high or seconds == 0:
            raise Invalid(f"is out of range (allowed: {allowed})")
        return seconds
    return duration


def optional(convert):
    return lambda value: None if value is None else convert(value)


def path(base_dir):
    return lambda value: os.path.abspath(os.path.join(base_dir, string(value)))


def address(min_port):
    def address(value):
        try:
            parsed = parse_address(value)
        except ValueError:
            raise Invalid("is not host:port (e.g. 127.0.0.1:1530 or [::1]:1530)") from None
        if parsed.port < min_port:
            raise Invalid(f"has port {parsed.port} (allowed: {min_port}..65535)")
        return parsed
    return address


def hostname(value):
    text = string(value).rstrip(".")
    if len(text) > 253 or not all(_LABEL.fullmatch(label) for label in text.split(".")):
        raise Invalid("is not a hostname (letters, digits, '-' and '.')")
    return text.lower()


def pattern(value):
    glob = string(value).strip().lower().rstrip(".")
    if not glob:
        raise Invalid("is not a hostname glob (e.g. *.dc1.example.com)")
    return glob


def ip(value):
    try:
        return str(ipaddress.ip_address(string(value)))
    except ValueError:
        raise Invalid("is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)") from None


def multicast_group(value):
    try:
        group = ipaddress.IPv4Address(string(value))
    except ValueError:
        group = None
    if group is None or not group.is_multicast:
        raise Invalid("is not an IPv4 multicast address (allowed: 224.0.0.0/4)")
    return str(group)
