"""The envoy port's eager writes keep every byte, in order, over real sockets."""

import hashlib

from twisted.internet import defer, protocol, reactor
from twisted.trial import unittest

from vigo.fleet.port import EagerServer, listen_eager


class Sender(protocol.Protocol):
    """Writes its factory's chunks as soon as it is connected."""

    def connectionMade(self):
        self.factory.transports.append(self.transport)
        self.factory.no_delay.append(self.transport.getTcpNoDelay())
        for chunk in self.factory.chunks:
            self.transport.write(chunk)
        self.transport.loseConnection()


class Receiver(protocol.Protocol):
    def __init__(self):
        self.data = []
        self.done = defer.Deferred()

    def dataReceived(self, data):
        self.data.append(data)

    def connectionLost(self, reason):
        self.done.callback(b"".join(self.data))


class EagerPortTests(unittest.TestCase):
    @defer.inlineCallbacks
    def send(self, chunks):
        factory = protocol.Factory.forProtocol(Sender)
        factory.chunks = chunks
        factory.transports = []
        factory.no_delay = []
        port = listen_eager(reactor, 0, factory, 50, "127.0.0.1")
        self.addCleanup(port.stopListening)
        receiver = Receiver()
        yield protocol.ClientCreator(reactor, lambda: receiver).connectTCP(
            "127.0.0.1", port.getHost().port)
        received = yield receiver.done
        self.assertIsInstance(factory.transports[0], EagerServer)
        # An answer written after a commit must not wait for a delayed ACK.
        self.assertEqual(factory.no_delay, [True])
        return received

    @defer.inlineCallbacks
    def test_small_writes_arrive_in_order(self):
        chunks = [b"frame %d;" % i for i in range(1000)]
        self.assertEqual((yield self.send(chunks)), b"".join(chunks))

    @defer.inlineCallbacks
    def test_writes_larger_than_the_socket_buffer(self):
        # Far more than the kernel takes at once: the rest is buffered, and
        # later small writes must queue behind it, not jump ahead.
        big = bytes(range(256)) * 40000
        chunks = [b"head", big, b"tail", big[:1000]]
        received = yield self.send(chunks)
        self.assertEqual(hashlib.sha256(received).digest(),
                         hashlib.sha256(b"".join(chunks)).digest())


class AcceptBatchTests(unittest.TestCase):
    def test_at_most_max_accepts_a_turn(self):
        import socket

        from vigo.fleet.port import MAX_ACCEPTS

        accepted = []

        class Counted(protocol.Protocol):
            def connectionMade(self):
                accepted.append(self)

            def connectionLost(self, reason):
                pass

        port = listen_eager(reactor, 0, protocol.Factory.forProtocol(Counted), 128, "127.0.0.1")
        self.addCleanup(port.stopListening)
        clients = [socket.create_connection(("127.0.0.1", port.getHost().port))
                   for _ in range(3 * MAX_ACCEPTS)]  # queued in the kernel's backlog
        self.addCleanup(lambda: [c.close() for c in clients])
        self.addCleanup(lambda: [p.transport.abortConnection() for p in accepted])
        port.doRead()  # one reactor turn's worth
        self.assertEqual(len(accepted), MAX_ACCEPTS)
        port.doRead()
        self.assertEqual(len(accepted), 2 * MAX_ACCEPTS)
