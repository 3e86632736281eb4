"""The gossip port: bound when the server starts, lent to the gossiper while
the bolt is a member.

Gossip runs only once a bolt founds or joins a federation, but its UDP port is
one the bolt will need, so it is bound with the server's other ports, before
anything is committed: a port that cannot be bound (two bolts on one host with
``multicast: false`` and the same ``gossip.port``) stops the server at start
with one line, instead of failing a join that was already committed.

Until the gossiper takes the port (``lend``, the ``listen`` a ``Gossiper`` is
built with), datagrams that arrive are dropped (and counted, ``dropped``); in
multicast mode the group is joined only then, so there are none.
"""

from twisted.internet.protocol import DatagramProtocol


class _Relay(DatagramProtocol):
    """What the bound socket delivers to: the borrowing protocol, if any."""

    def __init__(self):
        self.receiver = None
        self.dropped = 0

    def datagramReceived(self, data, addr):
        receiver = self.receiver
        if receiver is None:
            self.dropped += 1
            return
        receiver.datagramReceived(data, addr)


class _Loan:
    """The port as the borrower sees it: stopping it gives the port back."""

    def __init__(self, owner, protocol):
        self._owner = owner
        self._protocol = protocol

    def getHost(self):
        return self._owner.port.getHost()

    def stopListening(self):
        self._owner._give_back(self._protocol)


class GossipPort:
    """One UDP port for tier-1 gossip. ``listen(protocol)`` binds it (the
    ``listener_for`` of the gossip config) and returns the listening port."""

    def __init__(self, listen):
        self._listen = listen
        self._relay = _Relay()
        self.port = None

    @property
    def dropped(self):
        """Datagrams that arrived while no gossiper held the port."""
        return self._relay.dropped

    def bind(self):
        """Bind the port (the server's port service calls this at start);
        ``CannotListenError`` if it cannot be."""
        self.port = self._listen(self._relay)
        return self

    def stopListening(self):
        port, self.port = self.port, None
        self._relay.receiver = None
        return None if port is None else port.stopListening()

    def getHost(self):
        return self.port.getHost()

    def lend(self, protocol):
        """Give the bound port to ``protocol`` (a ``DatagramProtocol``; it is
        started on it) until the returned port's ``stopListening``."""
        if self.port is None:
            raise RuntimeError("the gossip port is not bound (the server has not started)")
        protocol.makeConnection(self.port)
        self._relay.receiver = protocol
        return _Loan(self, protocol)

    def _give_back(self, protocol):
        if self._relay.receiver is protocol:
            self._relay.receiver = None
        if protocol.transport is not None:
            protocol.doStop()
