"""The envoy port: TCP that writes at once when it can.

Twisted's TCP transport buffers every ``write`` and sends it on the next
reactor iteration: register for writability, wake up, ``send``, unregister.
For a request/response protocol whose answer is one small frame that is two
``epoll_ctl`` calls and a wake-up per check-in for nothing, about 15 % of the
check-in's CPU (see docs/benchmarks.md). ``EagerServer`` sends straight away
when nothing is queued ahead, and falls back to Twisted's buffering for
whatever the kernel does not take.
"""

from twisted.internet import tcp


class EagerServer(tcp.Server):
    """A server-side TCP connection that sends immediately when idle."""

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


class EagerPort(tcp.Port):
    """A listening TCP port whose connections are ``EagerServer``s."""

    transport = EagerServer


def listen_eager(reactor, port, factory, backlog, interface):
    """Listen like ``reactor.listenTCP``, with eager writes; the started port."""
    listening = EagerPort(port, factory, backlog, interface, reactor)
    listening.startListening()
    return listening
