"""The gossip port is bound at start and lent to the gossiper while it runs.

Real UDP sockets on 127.0.0.1: what arrives before the gossiper takes the port
is dropped and counted; while it holds it, it hears everything; given back, the
port stays bound (no other process can take it) and drops again.
"""

import socket

from twisted.internet import defer, reactor
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.trial import unittest

from vigo.spanner.gossip.port import GossipPort


def loopback_listen(port=0):
    def listen(protocol):
        return reactor.listenUDP(port, protocol, interface="127.0.0.1")
    return listen


class Ear(DatagramProtocol):
    def __init__(self):
        self.heard = []
        self.started = self.stopped = 0
        self.waiting = None

    def startProtocol(self):
        self.started += 1

    def stopProtocol(self):
        self.stopped += 1

    def datagramReceived(self, data, addr):
        self.heard.append(data)
        if self.waiting is not None:
            waiting, self.waiting = self.waiting, None
            waiting.callback(data)

    def next(self):
        self.waiting = defer.Deferred()
        return self.waiting


class GossipPortTests(unittest.TestCase):
    def setUp(self):
        self.port = GossipPort(loopback_listen())
        self.port.bind()
        self.addCleanup(self.port.stopListening)
        self.address = ("127.0.0.1", self.port.getHost().port)
        self.sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(self.sender.close)

    def send(self, data):
        self.sender.sendto(data, self.address)

    def delivered(self, data):
        """Send ``data``; a Deferred that fires once the port has taken it in."""
        relay = self.port._relay
        taken = defer.Deferred()

        def watched(data, addr):
            type(relay).datagramReceived(relay, data, addr)
            del relay.datagramReceived
            taken.callback(None)

        relay.datagramReceived = watched
        self.send(data)
        return taken

    @defer.inlineCallbacks
    def test_lent_then_given_back(self):
        ear = Ear()
        yield self.delivered(b"before")  # no gossiper yet: dropped
        self.assertEqual(self.port.dropped, 1)
        loan = self.port.lend(ear)
        self.assertEqual((ear.started, ear.transport), (1, self.port.port))
        heard = ear.next()
        self.send(b"during")
        self.assertEqual((yield heard), b"during")
        self.assertEqual(self.port.dropped, 1)
        self.assertEqual(loan.getHost().port, self.address[1])

        loan.stopListening()
        self.assertEqual((ear.stopped, ear.transport), (1, None))
        self.assertIsNotNone(self.port.port, "still bound")
        # Another gossiper (a bolt that rejoined) may take it again.
        again = Ear()
        self.port.lend(again)
        heard = again.next()
        self.send(b"again")
        self.assertEqual((yield heard), b"again")
        self.assertEqual(ear.heard, [b"during"])

    def test_a_taken_port_fails_the_bind(self):
        clash = GossipPort(loopback_listen(self.address[1]))
        self.assertRaises(CannotListenError, clash.bind)

    def test_nothing_is_lent_before_the_bind(self):
        port = GossipPort(loopback_listen())
        self.assertRaises(RuntimeError, port.lend, Ear())
