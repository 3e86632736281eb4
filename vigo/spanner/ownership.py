"""Ownership in spanner mode: the roster's routing decides who owns an envoy."""

from zope.interface import implementer

from vigo.fleet.ownership import Owner
from vigo.identity import key_fingerprint
from vigo.interfaces import IOwnership
from vigo.spanner.routing import owner_of


@implementer(IOwnership)
class SpannerOwnership:
    """Owner = the roster's routing answer (override, then most specific pattern).

    A bolt that has not founded or joined a federation yet owns every envoy,
    like a standalone server.
    """

    def __init__(self, spanner, local_owner):
        self.spanner = spanner
        self.local_id = spanner.identity.id
        self._local = local_owner

    def owner_of(self, hostname, envoy_id=None):
        roster = self.spanner.roster
        if roster is None:
            return self._local
        row = owner_of(roster, hostname, envoy_id)
        if row.bolt_id == self.local_id:
            return self._local
        return Owner(row.bolt_id, row.addresses.envoy, key_fingerprint(row.public_key), False)
