"""Ownership in standalone mode: this server owns every envoy."""

import attr
from zope.interface import implementer

from vigo.interfaces import IOwnership


@attr.s(frozen=True, slots=True)
class Owner:
    """The server that owns an envoy, and how an envoy reaches it."""

    server_id = attr.ib()
    address = attr.ib()
    fingerprint = attr.ib()
    local = attr.ib()


class NoOwner(Exception):
    """No server's partition takes this hostname."""


@implementer(IOwnership)
class StandaloneOwnership:
    """Every hostname is ours."""

    def __init__(self, identity, envoy_address):
        self.local_id = identity.id
        self._owner = Owner(identity.id, envoy_address, identity.fingerprint, True)

    def owner_of(self, hostname):
        return self._owner
