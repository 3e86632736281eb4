"""The envoy channel: the server's end of each envoy's held TLS connection.

Frames are read with a small length-prefix loop (see ``vigo.fleet.wire``).
A connection must Register or Attach first; once attached it is bound to its
envoy record, and each CheckIn is answered straight from the fleet index.
The server speaks first only to push: ForcePush, Redirect, or a refusal before
it hangs up.
"""

from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from vigo.fleet import wire
from vigo.fleet.ownership import Redirected
from vigo.interfaces.components import IEnvoyConnection
from vigo.interfaces.errors import Refusal

ATTACH_TIMEOUT = 60.0  # seconds a connection may stay unattached
_CHECKIN = wire.CHECKIN


@implementer(IEnvoyConnection)
class EnvoyChannelProtocol(Protocol):
    """One envoy connection."""

    log = Logger()

    def __init__(self, fleet, enrollment, clock):
        self.fleet = fleet
        self.enrollment = enrollment
        self.clock = clock
        self.record = None
        self._buffer = b""
        self._busy = False
        self._timeout = None

    # -- IEnvoyConnection ---------------------------------------------------------

    def send(self, data):
        self.transport.write(data)

    def drop(self, refusal):
        if isinstance(refusal, Redirected):
            self.transport.write(wire.frame(wire.encode_json(wire.REDIRECT, refusal.as_dict())))
        else:
            self.transport.write(wire.frame(wire.encode_json(wire.REFUSED, refusal.as_dict())))
        self.record = None
        self.transport.loseConnection()

    def hang_up(self):
        self.transport.loseConnection()

    # -- Protocol -------------------------------------------------------------------

    def connectionMade(self):
        self._timeout = self.clock.callLater(ATTACH_TIMEOUT, self._unattached)

    def connectionLost(self, reason):
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None
        if self.record is not None:
            self.fleet.detach(self.record, self)
            self.record = None

    def dataReceived(self, data):
        buffer = self._buffer + data if self._buffer else data
        offset = 0
        size = len(buffer)
        while size - offset >= 4:
            length = int.from_bytes(buffer[offset : offset + 4], "big")
            if not 0 < length <= wire.MAX_REQUEST:
                self._buffer = b""
                self.drop(Refusal("malformed", "frame length %d is out of range" % (length,)))
                return
            end = offset + 4 + length
            if end > size:
                break
            body = buffer[offset + 4 : end]
            offset = end
            record = self.record
            if body[0] == _CHECKIN and record is not None:
                self.transport.write(self.fleet.checkin(record, body))
            else:
                self._cold(body)
            if self.transport.disconnecting:
                self._buffer = b""
                return
        self._buffer = buffer[offset:]

    # -- the cold path --------------------------------------------------------------

    def _cold(self, body):
        kind = body[0]
        if self._busy:
            self.drop(Refusal("busy", "one request at a time: wait for the answer"))
            return
        try:
            if kind == wire.ATTACH:
                self._attach(body)
            elif kind == wire.REGISTER:
                self._register(body)
            elif kind == wire.CHECKIN:
                self.drop(Refusal("not_attached", "attach before checking in"))
            else:
                self.drop(Refusal("malformed", "unknown message type 0x%02x" % (kind,)))
        except wire.WireError as e:
            self.drop(Refusal("malformed", str(e)))
        except Refusal as refusal:
            self._refuse(refusal)
        except Redirected as redirect:
            self.drop(redirect)

    def _refuse(self, refusal):
        if refusal.code == "malformed":
            self.drop(refusal)
        else:
            self.send(wire.frame(wire.encode_json(wire.REFUSED, refusal.as_dict())))

    def _attach(self, body):
        fields = wire.decode_json(
            body, {"envoy_id": str, "server_id": str, "ts": int, "signature": str}
        )
        signature = wire.unb64(fields["signature"], "signature", 64)
        record = self.fleet.attach(
            self, fields["envoy_id"], fields["server_id"], fields["ts"], signature
        )
        self.record = record
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None
        self.send(
            wire.frame(
                wire.encode_json(
                    wire.ATTACHED,
                    {
                        "envoy_id": record.id,
                        "interval": self.fleet.interval,
                        "last_seq": record.last_seq,
                        "server_time": self.clock.seconds(),
                    },
                )
            )
        )
        if record.pending_push:
            self.send(wire.frame(bytes((wire.FORCE_PUSH,))))

    def _register(self, body):
        fields = wire.decode_json(
            body,
            {"hostname": str, "public_key": str, "token": str, "ts": int, "signature": str},
        )
        public_key = wire.unb64(fields["public_key"], "public_key", 32)
        signature = wire.unb64(fields["signature"], "signature", 64)
        self._busy = True
        d = defer.maybeDeferred(
            self.enrollment.register,
            fields["hostname"], public_key, fields["token"], fields["ts"], signature,
        )
        d.addBoth(self._registered)

    def _registered(self, result):
        self._busy = False
        if self.transport.disconnecting:
            return
        if isinstance(result, dict):
            self.send(wire.frame(wire.encode_json(wire.REGISTERED, result)))
        elif result.check(Refusal):
            self._refuse(result.value)
        elif result.check(Redirected):
            self.drop(result.value)
        else:
            self.log.failure("enrollment failed", result)
            self._refuse(Refusal("internal", "the server could not enroll; try again",
                                 retryable=True))

    def _unattached(self):
        self._timeout = None
        if self.record is None:
            self.drop(Refusal("timeout", "no Attach within %d s" % (ATTACH_TIMEOUT,)))


class EnvoyChannelFactory(Factory):
    """Builds an ``EnvoyChannelProtocol`` per accepted (TLS) connection."""

    def __init__(self, fleet, enrollment, clock):
        self.fleet = fleet
        self.enrollment = enrollment
        self.clock = clock

    def buildProtocol(self, addr):
        protocol = EnvoyChannelProtocol(self.fleet, self.enrollment, self.clock)
        protocol.factory = self
        return protocol
