"""Hostnames as the fleet sees them: lower-cased, no trailing dot, checked."""

import re

_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")


class HostnameError(ValueError):
    """Not a usable hostname; the message names it."""


def normalise_hostname(hostname):
    """``hostname`` lower-cased without a trailing dot; ``HostnameError`` if bad."""
    if not isinstance(hostname, str):
        raise HostnameError("the hostname must be a string, not %r" % (hostname,))
    name = hostname.strip().lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > 253:
        raise HostnameError("%r is not a hostname (1 to 253 characters)" % (hostname,))
    for label in name.split("."):
        if _LABEL.fullmatch(label) is None:
            raise HostnameError(
                "%r is not a hostname (labels are letters, digits and '-', "
                "1 to 63 characters)" % (hostname,)
            )
    return name
