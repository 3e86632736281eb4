"""The envoy routes' operations on a standalone server: its own fleet.

``LocalEnvoys`` is the ``IEnvoyOperations`` a standalone server is wired with:
lists, shows, force-pushes and revokes answered from the fleet index; there
is no other bolt to reassign an envoy to. A bolt is wired with
``vigo.spanner.admin.FederatedEnvoys`` instead, which asks every bolt.
"""

from twisted.internet import defer
from zope.interface import implementer

from vigo.api.spanner import NOT_SPANNER
from vigo.fleet.index import ACTIVE, MOVED
from vigo.interfaces.components import IEnvoyOperations
from vigo.interfaces.errors import Refusal


@implementer(IEnvoyOperations)
class LocalEnvoys:
    """The envoys of ``fleet`` (a ``Fleet``), read on ``clock``; ``server_id``
    is this server's id (the one bolt a ``bolt=`` filter may name)."""

    def __init__(self, fleet, clock, server_id):
        self._fleet = fleet
        self._clock = clock
        self._server_id = server_id

    def list(self, bolt=None, offline=False, moved=False):
        if bolt is not None and bolt != self._server_id:
            return defer.fail(Refusal("bolt_not_found", "no bolt %r: this standalone server "
                                      "is %s" % (bolt, self._server_id)))
        records = sorted(self._fleet.index, key=lambda r: (r.hostname, r.id))
        if not moved:
            records = [r for r in records if r.state != MOVED]
        if offline:
            records = [r for r in records if r.state == ACTIVE and not r.online]
        now = self._clock.seconds()
        envoys = [record.describe(now) for record in records]
        return defer.succeed({"envoys": envoys, "count": len(envoys)})

    def show(self, key):
        return defer.maybeDeferred(
            lambda: self._fleet.find(key).describe(self._clock.seconds()))

    def push(self, key):
        def push():
            record = self._fleet.find(key)
            d = self._fleet.force_push(record.id)
            return d.addCallback(lambda delivered: {"envoy_id": record.id,
                                                    "delivered": delivered})

        return defer.maybeDeferred(push)

    def revoke(self, key):
        d = defer.maybeDeferred(self._fleet.revoke, key)
        return d.addCallback(lambda record: {"envoy_id": record.id, "state": record.state})

    def reassign(self, key, to):
        return defer.fail(Refusal("not_spanner", NOT_SPANNER))
