"""The envoy port: TCP that writes at once when it can.

Twisted's TCP transport buffers every ``write`` and sends it on the next
reactor iteration: register for writability, wake up, ``send``, unregister.
For a request/response protocol whose answer is one small frame that is two
``epoll_ctl`` calls and a wake-up per check-in for nothing, about 15 % of the
check-in's CPU (see docs/benchmarks.md). ``EagerServer`` sends straight away
when nothing is queued ahead, and falls back to Twisted's buffering for
whatever the kernel does not take.

Each connection also has ``TCP_NODELAY``: an answer written a while after its
request (a Registered, once the enrollment is committed) would otherwise wait
behind Nagle's algorithm for the envoy's delayed ACK of the segment before
it (TLS session tickets): 40 ms for every enrollment, measured.

``EagerPort`` also accepts at most ``MAX_ACCEPTS`` connections per reactor
turn (Twisted grows its batch without bound while the backlog stays full): a
flood of connections, or a reconnect storm, then waits its turn between
check-ins instead of stalling them for a batch of hundreds of accepts.
"""

from twisted.internet import tcp


class EagerServer(tcp.Server):
    """A server-side TCP connection that sends immediately when idle, without
    Nagle's delay."""

    def __init__(self, *args, **kwargs):
        tcp.Server.__init__(self, *args, **kwargs)
        self.setTcpNoDelay(True)

    def write(self, data):
        if (
            self.connected
            and not self._writeDisconnected
            and not self.dataBuffer
            and not self._tempDataBuffer
            and self.producer is None
            and data
        ):
            sent = self.writeSomeData(data)
            if sent == len(data):
                return
            if isinstance(sent, int):
                data = data[sent:]
            # An error (an exception instance) is left for doWrite to report
            # through the normal connection-lost path.
        tcp.Server.write(self, data)


#: Connections accepted per reactor turn, at most (some 40 us each).
MAX_ACCEPTS = 16


class EagerPort(tcp.Port):
    """A listening TCP port whose connections are ``EagerServer``s, accepted
    at most ``MAX_ACCEPTS`` a turn."""

    transport = EagerServer

    def doRead(self):
        # Twisted sets the batch to 100 when it listens, and grows it by 20
        # each turn that took a whole batch.
        self.numberAccepts = min(self.numberAccepts, MAX_ACCEPTS)
        return tcp.Port.doRead(self)


def listen_eager(reactor, port, factory, backlog, interface):
    """Listen like ``reactor.listenTCP``, with eager writes; the started port."""
    listening = EagerPort(port, factory, backlog, interface, reactor)
    listening.startListening()
    return listening
