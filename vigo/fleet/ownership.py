"""Who owns an envoy, and sending it there: ``Owner``, ``NoOwner``, ``Redirected``.

The fleet asks an ``IOwnership`` who owns a hostname. In standalone mode that is
``StandaloneOwnership``: this server owns every envoy. In spanner mode the
roster's routing decides (``vigo.spanner.routing.SpannerOwnership``), and an
envoy another server owns is told where to go (``Redirected``).
"""

import attr
from zope.interface import implementer

from vigo.interfaces.components import IOwnership


@attr.s(frozen=True, slots=True)
class Owner:
    """The server that owns an envoy, and how an envoy reaches it."""

    server_id = attr.ib()
    address = attr.ib()
    fingerprint = attr.ib()
    local = attr.ib()


class NoOwner(Exception):
    """No server's partition takes this hostname."""


class Redirected(Exception):
    """The envoy belongs to another server: go there (same id, same key)."""

    def __init__(self, address, server_id, fingerprint, reason):
        Exception.__init__(self, reason)
        self.address = address
        self.server_id = server_id
        self.fingerprint = fingerprint
        self.reason = reason

    def as_dict(self):
        return {
            "address": self.address,
            "server_id": self.server_id,
            "fingerprint": self.fingerprint,
            "reason": self.reason,
        }


@implementer(IOwnership)
class StandaloneOwnership:
    """Every hostname is ours; ``envoy_address()`` is where envoys reach us now."""

    def __init__(self, identity, envoy_address):
        self.local_id = identity.id
        self._identity = identity
        self._envoy_address = envoy_address

    def owner_of(self, hostname):
        return Owner(self.local_id, self._envoy_address(), self._identity.fingerprint, True)
