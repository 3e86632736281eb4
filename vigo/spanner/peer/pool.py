"""Calling other bolts by id: one long-lived ``PeerClient`` per bolt.

``PeerClients`` finds a bolt's peer address and key pin in the roster
(``locate``), keeps one client per bolt (a new one when the bolt's address or
key changes), and ``call`` runs an action there. A call to a bolt whose last
connection attempts failed fails at once rather than waiting out a reconnect
backoff; gossip hearing that bolt again (``redial``) dials it at once.
Stopping the service hangs up every client.
"""

from twisted.application import service
from twisted.internet import defer
from zope.interface import implementer

from vigo.config.values import parse_address
from vigo.interfaces.actions import IPeerCaller
from vigo.interfaces.errors import PeerUnreachable
from vigo.spanner.peer.client import FAIL_FAST_AFTER, PeerClient


@implementer(IPeerCaller)
class PeerClients(service.Service):
    """One ``PeerClient`` per bolt id, created and started on first use.

    ``locate(bolt_id)`` gives a bolt's ``(peer address, key fingerprint)``
    from the roster, or None for a bolt it does not hold.
    """

    def __init__(self, reactor, identity, locate, **client_options):
        self.reactor = reactor
        self.identity = identity
        self.client_options = client_options
        self._locate = locate
        self._clients = {}
        self._stopped = False

    def call(self, bolt_id, action_name, args, timeout=None):
        """Run ``action_name`` on bolt ``bolt_id`` (another bolt)."""
        if self._stopped:
            return defer.fail(PeerUnreachable(
                "this bolt is stopping: it calls no other bolt (%s) any more" % (bolt_id,)))
        where = self._locate(bolt_id)
        if where is None:
            return defer.fail(PeerUnreachable(
                "bolt %s is not in this bolt's roster, so it has no peer address" % (bolt_id,)))
        address, fingerprint = where
        client = self.client_for(bolt_id, address, fingerprint)
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
        connected.addTimeout(client.login_timeout, self.reactor)

        def unreachable(failure):
            raise PeerUnreachable("bolt %s at %s cannot be reached: %s"
                                  % (bolt_id, address, client.last_error
                                     or failure.getErrorMessage()))

        connected.addErrback(unreachable)
        return connected.addCallback(lambda c: c.call(action_name, args, timeout))

    def client_for(self, bolt_id, address, fingerprint):
        """The client for ``bolt_id``, replacing it if the bolt's address or key changed."""
        address = parse_address(address) if isinstance(address, str) else address
        client = self._clients.get(bolt_id)
        if client is not None:
            if (client.address, client.fingerprint) == (address, fingerprint):
                return client
            client.stop()
        client = PeerClient(self.reactor, self.identity, address, fingerprint, bolt_id=bolt_id,
                            **self.client_options)
        self._clients[bolt_id] = client
        client.start()
        return client

    def get(self, bolt_id):
        """The client for ``bolt_id`` if one exists, else None."""
        return self._clients.get(bolt_id)

    def redial(self, bolt_id):
        """``bolt_id`` is back (gossip heard it): if its client is waiting out
        a reconnect backoff (up to 30 s), start a new one that dials at once.
        A connected client, or one with fewer than ``FAIL_FAST_AFTER``
        failures (callers may be waiting for its next attempt), is left alone.
        A Deferred."""
        client = self._clients.get(bolt_id)
        if client is None or client.connected or client.failures < FAIL_FAST_AFTER:
            return defer.succeed(None)
        stopped = self.drop(bolt_id)
        self.client_for(bolt_id, client.address, client.fingerprint)
        return stopped

    def drop(self, bolt_id):
        """Hang up on ``bolt_id`` (removed from the roster); a Deferred."""
        client = self._clients.pop(bolt_id, None)
        return client.stop() if client is not None else defer.succeed(None)

    def stopService(self):
        super().stopService()
        self._stopped = True
        clients, self._clients = list(self._clients.values()), {}
        return defer.gatherResults([client.stop() for client in clients]).addCallback(lambda _: None)
