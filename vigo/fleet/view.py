"""The fleet as peer actions see it: ``IBoltFleet`` over one server's ``Fleet``.

Peer actions (``query``, ``force-push``) get this through ``IBolt.fleet()``:
descriptions as JSON-able dicts and force-pushes, never the records or the
store, so the fleet's insides stay free to change.
"""

from twisted.internet import defer
from zope.interface import implementer

from vigo.fleet import wire
from vigo.fleet.fleet_jobs import begin_move, cancel_move, load_moves
from vigo.fleet.index import ACTIVE
from vigo.fleet.refusal import Refusal
from vigo.identity import key_id
from vigo.interfaces import IBoltFleet


@implementer(IBoltFleet)
class BoltFleet:
    """``fleet`` is the server's ``Fleet``; ``clock`` an ``IReactorTime``;
    ``envoy_address()`` where envoys reach this bolt now (for ``endpoint``)."""

    def __init__(self, fleet, clock, envoy_address=None):
        self._fleet = fleet
        self._clock = clock
        self._envoy_address = envoy_address

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

    # -- reassignment -------------------------------------------------------------

    def endpoint(self):
        identity = self._fleet.identity
        return {"address": str(self._envoy_address()), "server_id": identity.id,
                "fingerprint": identity.fingerprint}

    def export(self, key):
        record = self._fleet.index.lookup(key)
        if record is None:
            return defer.succeed(None)

        def described(fields):
            return dict(fields, public_key=wire.b64(fields["public_key"]),
                        applied_version=fields["applied_version"].hex())

        return self._fleet.export(record.id).addCallback(described)

    def accept(self, fields):
        def decoded():
            try:
                public_key = wire.unb64(fields["public_key"], "public_key", 32)
                applied = bytes.fromhex(fields["applied_version"])
            except (wire.WireError, ValueError) as e:
                raise Refusal("malformed", str(e)) from None
            if len(applied) != 32:
                raise Refusal("malformed", "applied_version must be 32 bytes (64 hex digits)")
            if key_id(public_key) != fields["id"]:
                raise Refusal("malformed", "envoy id %s is not the id of its public key"
                              % (fields["id"],))
            return self._fleet.accept(dict(fields, public_key=public_key,
                                           applied_version=applied))

        return defer.maybeDeferred(decoded).addCallback(lambda record: record.id)

    def move(self, envoy_id, redirect):
        return defer.maybeDeferred(self._fleet.move, envoy_id, redirect)

    def begin_move(self, envoy_id, to):
        at_ms = int(self._clock.seconds() * 1000)
        return self._fleet.store.run(begin_move, envoy_id, to, at_ms)

    def cancel_move(self, envoy_id):
        return self._fleet.store.run(cancel_move, envoy_id)

    def pending_moves(self, envoy_id=None):
        return self._fleet.store.run(load_moves, envoy_id)
