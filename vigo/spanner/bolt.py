"""The local bolt as peer actions see it: the ``IBolt`` facade.

Actions get this object, not the server, so they depend on a few documented
methods and the server's insides stay free to change. Each method hands the
work to the one component that does it (the fleet view, enrollment, the
reassigner, the drainer, this bolt's own row); ``call`` reaches any bolt by
id: this one in-process, through the same checks as a peer's call, any other
through the ``PeerClients`` pool.
"""

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from vigo.interfaces.actions import IBolt
from vigo.interfaces.errors import ActionError
from vigo.spanner.peer.actions import run_action


@implementer(IBolt)
class Bolt:
    """The local bolt for peer actions.

    * ``identity``: this bolt's ``Identity`` (its ``id`` is the bolt id);
    * ``name()``: its name in the roster now;
    * ``clock``: ``IReactorTime`` whose ``seconds()`` is wall-clock time;
    * ``roster``: anything with ``digest()`` (its ``ILocalRoster``);
    * ``actions``: the loaded actions (name to ``IPeerAction``), for local calls;
    * ``peers``: an ``IPeerCaller`` reaching the other bolts (``PeerClients``);
    * ``peer_states()``: the liveness view (bolt id to alive/suspect/down).

    The parts actions use, each optional (an action that needs a missing one
    is refused, as in peer-RPC tests): ``fleet`` (``IBoltFleet``),
    ``enrollment`` (``IBoltEnrollment``), ``reassigner`` (``IReassigner``),
    ``drainer`` (``IDrainer``), ``rows`` (this bolt's ``OwnRow``).
    """

    def __init__(self, identity, name, clock, roster, actions, peers, peer_states=None,
                 fleet=None, enrollment=None, reassigner=None, drainer=None, rows=None,
                 log=None):
        self.id = identity.id
        self._name = name
        self._clock = clock
        self._roster = roster
        self._actions = actions
        self._peers = peers
        self._peer_states = peer_states or dict
        self._fleet = fleet
        self._enrollment = enrollment
        self._reassigner = reassigner
        self._drainer = drainer
        self._rows = rows
        self.log = log or Logger(namespace="vigo.plugins")

    @property
    def name(self):
        return self._name()

    def now(self):
        return self._clock.seconds()

    def roster_digest(self):
        return self._roster.digest()

    def peer_states(self):
        return self._peer_states()

    def call(self, bolt_id, action_name, args, timeout=None):
        if bolt_id == self.id:
            return run_action(self, self._actions, self.id, action_name, args)
        return self._peers.call(bolt_id, action_name, args, timeout)

    def _part(self, part, what):
        if part is None:
            raise ActionError("bolt %s %s" % (self.id, what))
        return part

    def fleet(self):
        return self._part(self._fleet, "has no fleet to read or push")

    def enrollment(self):
        return self._part(self._enrollment, "does not enroll envoys")

    def reassign(self, envoy, to):
        reassigner = self._part(self._reassigner, "does not hand envoys over")
        return defer.ensureDeferred(reassigner.reassign(envoy, to))

    def accept_envoy(self, caller_id, fields):
        reassigner = self._part(self._reassigner, "does not take envoys over")
        return defer.ensureDeferred(reassigner.accept(caller_id, fields))

    def drain(self, to):
        return self._part(self._drainer, "cannot drain").start(to)

    def drain_status(self):
        return self._part(self._drainer, "cannot drain").status()

    def take_row(self, bolt_id, data):
        rows = self._part(self._rows, "keeps no roster to merge a row into")
        return defer.ensureDeferred(rows.take(bolt_id, data))
