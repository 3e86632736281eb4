"""The durations and addresses operators type, in server.yaml and on command lines.

``parse_duration`` reads ``"500ms"``, ``"15s"``, ``"1h30m"`` or a plain number of
seconds; ``parse_address`` reads ``"host:port"`` or ``"[::1]:port"`` into an
:class:`Address`.  Both raise ValueError with a message fit to show the operator.
"""

import ipaddress
import math
import re

import attr

DAY = 86400.0
DURATION_HINT = "(use e.g. 500ms, 15s, 1h)"
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY}
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_DURATION = re.compile(f"(?:{_PART.pattern})+")
_ADDRESS = re.compile(r"(?:\[(?P<v6>[^\]]*)\]|(?P<host>[^:\[\]]+)):(?P<port>[0-9]{1,5})")
_HOST_CHARS = re.compile(r"[A-Za-z0-9_.-]+")


def parse_duration(text):
    """Return the seconds in ``text``: ``"500ms"``, ``"15s"``, ``"1h30m"``, or a number.

    Units are ms, s, m, h and d.  Raises ValueError on negatives, empty strings,
    booleans, non-finite numbers and anything else that is not a duration.
    """
    spec = text.strip() if isinstance(text, str) else None
    if type(text) in (int, float):  # not bool: ``true`` is no duration
        try:
            seconds = float(text)
        except OverflowError:
            seconds = math.inf
    elif spec and _NUMBER.fullmatch(spec):
        seconds = float(spec)
    elif spec and _DURATION.fullmatch(spec):
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(spec))
    else:
        raise ValueError(f"{text!r} is not a duration {DURATION_HINT}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{text!r} is not a duration: it must be finite and not negative")
    return seconds


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Address:
    """A host and TCP/UDP port; ``str()`` gives ``host:port`` (IPv6 in brackets)."""
    host: str
    port: int

    def __str__(self):
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_address(text):
    """Parse ``"host:port"`` or ``"[::1]:port"`` (port 0..65535) into an Address.

    Raises ValueError when the text is not of that shape.
    """
    match = _ADDRESS.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not host:port (e.g. 127.0.0.1:1530 or [::1]:1530)")
    port = int(match["port"])
    if port > 65535:
        raise ValueError(f"{text!r} has port {port}; ports are 0..65535")
    if match["v6"] is not None:
        try:
            host = str(ipaddress.IPv6Address(match["v6"]))
        except ValueError:
            raise ValueError(f"{text!r}: {match['v6']!r} is not an IPv6 address") from None
    elif _HOST_CHARS.fullmatch(match["host"]):
        host = match["host"]
    else:
        raise ValueError(f"{text!r}: host may hold only letters, digits, '-', '_' and '.'")
    return Address(host, port)
