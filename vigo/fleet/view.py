"""The fleet as peer actions see it: ``IBoltFleet`` over one server's ``Fleet``.

Peer actions (``query``, ``force-push``) get this through ``IBolt.fleet()``:
descriptions as JSON-able dicts and force-pushes, never the records or the
store, so the fleet's insides stay free to change.
"""

from twisted.internet import defer
from zope.interface import implementer

from vigo.fleet.index import ACTIVE
from vigo.interfaces.actions import IBoltFleet
from vigo.interfaces.errors import Refusal


@implementer(IBoltFleet)
class BoltFleet:
    """``fleet`` is the server's ``Fleet``; ``clock`` an ``IReactorTime``;
    ``endpoint()`` where envoys reach this bolt now (``EnvoyMoves.endpoint``)."""

    def __init__(self, fleet, clock, endpoint):
        self._fleet = fleet
        self._clock = clock
        self._endpoint = endpoint

    def describe(self, key):
        record = self._fleet.index.lookup(key)
        return None if record is None else record.describe(self._clock.seconds())

    def envoys(self, offline=False):
        records = sorted(self._fleet.index, key=lambda r: (r.hostname, r.id))
        now = self._clock.seconds()
        for record in records:
            if offline and (record.state != ACTIVE or record.online):
                continue
            yield record.describe(now)

    def counts(self):
        return self._fleet.counts()

    def push(self, key):
        record = self._fleet.index.lookup(key)
        envoy_id = None if record is None else record.id
        try:
            d = self._fleet.force_push(key)
        except Refusal as e:
            return defer.succeed({"envoy_id": envoy_id, "refused": e.code, "detail": e.reason})
        return d.addCallback(lambda delivered: {"envoy_id": envoy_id, "delivered": delivered})

    def push_all(self):
        return self._fleet.force_push_all()

    def endpoint(self):
        return self._endpoint()
