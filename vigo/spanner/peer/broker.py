"""The PB broker both ends of peer RPC use: one message is bounded in size.

Twisted's Banana caps each string and list it decodes (640 KiB), not what one
message adds up to, so a peer could make the other side buffer and build an
answer or a call of any size. Every peer call's arguments (64 KiB as JSON) and
result (256 KiB) are small, so a ``BoundedBroker`` drops the connection once
``MAX_MESSAGE_BYTES`` arrive without completing one PB message (the caller's
call fails with ``PeerUnreachable``, the callee's connection is gone). It also
tells the port's guard (vigo/server/limits.py) of each whole message, through
its transport's ``request_received`` where it has one.
"""

from twisted.logger import Logger
from twisted.spread import pb

#: Bytes one PB message may take on the wire (with Banana's and Jelly's
#: overhead on a 256 KiB result, and a join's answer).
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class BoundedBroker(pb.Broker):
    """A ``pb.Broker`` whose messages are at most ``max_message`` bytes."""

    log = Logger()
    max_message = MAX_MESSAGE_BYTES
    _pending = 0

    def dataReceived(self, data):
        self._pending += len(data)
        if self._pending > self.max_message:
            self.log.warn("peer RPC: a message of over {limit} bytes from {peer}; hanging up",
                          limit=self.max_message, peer=self.transport.getPeer())
            self.transport.abortConnection()
            return
        pb.Broker.dataReceived(self, data)

    def callExpressionReceived(self, obj):
        self._pending = 0
        notify = getattr(self.transport, "request_received", None)
        if notify is not None:
            notify()
        pb.Broker.callExpressionReceived(self, obj)
