"""The ``IBolt`` facade: the local bolt as peer actions see it.

Actions get this object, not the server, so they depend on a few documented
methods and the server's insides stay free to change. Its ``call`` reaches any
bolt by id: this one in-process (through the same checks as a peer's call), any
other through the ``PeerClients`` pool.
"""

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from vigo.interfaces import IBolt
from vigo.interfaces.errors import ActionError, PeerUnreachable
from vigo.spanner.peer.actions import run_action
from vigo.spanner.peer.client import FAIL_FAST_AFTER


@implementer(IBolt)
class BoltFacade:
    """The local bolt for peer actions.

    * ``identity``: this bolt's ``Identity`` (its ``id`` is the bolt id);
    * ``name``: its name in the roster;
    * ``roster``: anything with ``digest()`` (the roster view);
    * ``actions``: the loaded actions (name to ``IPeerAction``), for local calls;
    * ``clients``: a ``PeerClients`` pool;
    * ``locate(bolt_id)``: ``(peer address, key fingerprint)`` of a bolt, or None;
    * ``peer_states()``: the liveness view (bolt id to alive/suspect/down);
    * ``clock``: ``IReactorTime`` whose ``seconds()`` is wall-clock time;
    * ``fleet``: this bolt's envoys as an ``IBoltFleet`` (None: a bolt without
      one, as in peer-RPC tests; the fleet actions then refuse).
    * ``enrollment``: this bolt's ``IBoltEnrollment`` (None: the enrollment
      actions refuse).
    * ``overrides``: ``write_override(envoy_id, bolt_id)`` of the roster's
      owner (the ``SpannerService``); None: ``accept-envoy`` refuses.
    * ``drainer``: this bolt's ``vigo.spanner.drain.Drainer`` (None: the drain
      actions refuse).
    * ``rows``: ``take_row(bolt_id, data)`` of the roster's owner (None:
      ``announce-row`` refuses).
    """

    def __init__(self, identity, name, roster, actions, clients, locate, clock,
                 peer_states=None, log=None, fleet=None, enrollment=None, overrides=None,
                 drainer=None, rows=None):
        self.id = identity.id
        self.name = name
        self.log = log or Logger(namespace="vigo.plugins")
        self._roster = roster
        self._actions = actions
        self._clients = clients
        self._locate = locate
        self._clock = clock
        self._peer_states = peer_states or dict
        self._fleet = fleet
        self._enrollment = enrollment
        self._overrides = overrides
        self._drainer = drainer
        self._rows = rows

    def now(self):
        return self._clock.seconds()

    def roster_digest(self):
        return self._roster.digest()

    def peer_states(self):
        return self._peer_states()

    def fleet(self):
        if self._fleet is None:
            raise ActionError("bolt %s has no fleet to read or push" % (self.id,))
        return self._fleet

    def enrollment(self):
        if self._enrollment is None:
            raise ActionError("bolt %s does not enroll envoys" % (self.id,))
        return self._enrollment

    def write_override(self, envoy_id, bolt_id):
        if self._overrides is None:
            raise ActionError("bolt %s keeps no roster to write an override in" % (self.id,))
        return self._overrides(envoy_id, bolt_id)

    def take_row(self, bolt_id, data):
        if self._rows is None:
            raise ActionError("bolt %s keeps no roster to merge a row into" % (self.id,))
        return self._rows(bolt_id, data)

    def drainer(self):
        if self._drainer is None:
            raise ActionError("bolt %s cannot drain" % (self.id,))
        return self._drainer

    def call(self, bolt_id, action_name, args, timeout=None):
        if bolt_id == self.id:
            return run_action(self, self._actions, self.id, action_name, args)
        where = self._locate(bolt_id)
        if where is None:
            return defer.fail(PeerUnreachable(
                "bolt %s is not in this bolt's roster, so it has no peer address" % (bolt_id,)))
        address, fingerprint = where
        client = self._clients.client_for(bolt_id, address, fingerprint)
        if client.connected:
            return client.call(action_name, args, timeout)
        if client.failures >= FAIL_FAST_AFTER:
            # Its last attempts failed and it waits out a backoff (up to 30 s;
            # gossip hearing the bolt again starts a new client at once):
            # answer now rather than when the caller has given up.
            return defer.fail(PeerUnreachable("bolt %s at %s cannot be reached: %s" % (
                bolt_id, address, client.last_error)))
        # A first call to this bolt (or one just after it went away): wait for
        # the connection a little, rather than failing a call that would succeed.
        connected = client.when_connected(fail_after_failures=3)
        connected.addTimeout(client.login_timeout, self._clock)

        def unreachable(failure):
            raise PeerUnreachable("bolt %s at %s cannot be reached: %s"
                                  % (bolt_id, address, client.last_error
                                     or failure.getErrorMessage()))

        connected.addErrback(unreachable)
        return connected.addCallback(lambda c: c.call(action_name, args, timeout))
