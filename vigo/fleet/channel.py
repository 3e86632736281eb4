"""The envoy channel: the server's end of each envoy's held TLS connection.

Frames are read with a small length-prefix loop (see ``vigo.fleet.wire``).
A connection must Register or Attach first; once attached it is bound to its
envoy record, and each CheckIn is answered straight from the fleet index.
The server speaks first only to push: ForcePush, Redirect, or a refusal before
it hangs up.

In a replica set (a primary and its standbys, one identity key), the Attached
and Registered answers also carry ``replicas``: the set's envoy addresses,
primary first, so an envoy whose server dies can try the others (its pin holds
for all of them).

A frame the channel cannot take is answered with a Refused frame and counted
in ``FleetStats.frames_refused`` by reason (``oversize``, ``malformed``,
``unknown_type``, ``not_attached``, ``busy``); all but a CheckIn of the wrong
size from an attached envoy (answered by the fleet) also hang up. Nothing a
stranger sends raises out of ``dataReceived``.
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
HANG_UP_GRACE = 5.0  # seconds a hung-up envoy has to close its end before it is cut
_CHECKIN = wire.CHECKIN
_CHECKIN_LENGTH = wire.CHECKIN_FRAME_LENGTH


def _nothing():
    pass


@implementer(IEnvoyConnection)
class EnvoyChannelProtocol(Protocol):
    """One envoy connection."""

    log = Logger()

    def __init__(self, fleet, enrollment, clock, replicas=None):
        self.fleet = fleet
        self.enrollment = enrollment
        self.clock = clock
        self.replicas = replicas
        self.record = None
        self._buffer = b""
        self._busy = False
        self._timeout = None
        self._request_received = _nothing

    # -- IEnvoyConnection ---------------------------------------------------------

    def send(self, data):
        self.transport.write(data)

    def drop(self, refusal):
        if isinstance(refusal, Redirected):
            self.transport.write(wire.frame(wire.encode_json(wire.REDIRECT, refusal.as_dict())))
        else:
            self.transport.write(wire.frame(wire.encode_json(wire.REFUSED, refusal.as_dict())))
        self.record = None
        self.hang_up()

    def hang_up(self):
        """Close politely (TLS close_notify), and for good ``HANG_UP_GRACE``
        seconds later if the envoy has not closed its end by then."""
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self.transport.loseConnection()
        self._timeout = self.clock.callLater(HANG_UP_GRACE, self.transport.abortConnection)

    # -- Protocol -------------------------------------------------------------------

    def connectionMade(self):
        self._timeout = self.clock.callLater(ATTACH_TIMEOUT, self._unattached)
        # The port's guard counts whole frames, not bytes (vigo/server/limits.py).
        self._request_received = getattr(self.transport, "request_received", _nothing)

    def connectionLost(self, reason):
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None
        if self.record is not None:
            self.fleet.detach(self.record, self)
            self.record = None

    def dataReceived(self, data):
        if self.transport.disconnecting:
            return  # hung up: what a client sends now changes nothing
        buffer = self._buffer + data if self._buffer else data
        offset = 0
        size = len(buffer)
        while size - offset >= 4:
            length = int.from_bytes(buffer[offset : offset + 4], "big")
            if not 0 < length <= wire.MAX_REQUEST:
                self._buffer = b""
                self._refuse_frame("oversize" if length else "malformed",
                                   "frame length %d is out of range" % (length,))
                return
            end = offset + 4 + length
            if end > size:
                break
            body = buffer[offset + 4 : end]
            offset = end
            self._request_received()
            record = self.record
            if body[0] == _CHECKIN and record is not None:
                if length != _CHECKIN_LENGTH:  # the fleet answers it (malformed), and counts it
                    self.fleet.stats.frames_refused["malformed"] += 1
                answer = self.fleet.checkin(record, body)
                if type(answer) is bytes:
                    self.transport.write(answer)
                else:  # after a sequence reservation is durable (vigo/fleet/replay.py)
                    answer.addCallback(self.transport.write).addErrback(
                        lambda f: self.log.failure("answering a check-in failed", f))
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
            self._refuse_frame("busy", "one request at a time: wait for the answer", "busy")
            return
        try:
            if kind == wire.ATTACH:
                self._attach(body)
            elif kind == wire.REGISTER:
                self._register(body)
            elif kind == wire.CHECKIN:
                self._refuse_frame("not_attached", "attach before checking in", "not_attached")
            else:
                self._refuse_frame("unknown_type", "unknown message type 0x%02x" % (kind,))
        except wire.WireError as e:
            self._refuse_frame("malformed", str(e))
        except Refusal as refusal:
            self._refuse(refusal)
        except Redirected as redirect:
            self.drop(redirect)
        except Exception:
            # A bug, not the envoy's doing: logged, counted, answered, hung up.
            self.log.failure("the envoy channel failed on a {kind} frame",
                             kind=wire.NAMES.get(kind, "0x%02x" % (kind,)))
            self._refuse_frame("internal", "the server failed on this frame", "internal")

    def _refuse_frame(self, reason, message, code="malformed"):
        """Count a frame refused for ``reason``, answer Refused ``code`` and hang up."""
        self.fleet.stats.frames_refused[reason] += 1
        self.drop(Refusal(code, message))

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
        attached = {
            "envoy_id": record.id,
            "interval": self.fleet.interval,
            "last_seq": record.last_seq,
            "server_time": self.clock.seconds(),
        }
        if self.replicas is not None:
            attached["replicas"] = list(self.replicas())
        self.send(wire.frame(wire.encode_json(wire.ATTACHED, attached)))
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
            self.send(wire.frame(wire.encode_json(wire.REGISTERED, self._with_replicas(result))))
        elif result.check(Refusal):
            self._refuse(result.value)
        elif result.check(Redirected):
            self.drop(result.value)
        else:
            self.log.failure("enrollment failed", result)
            self._refuse(Refusal("internal", "the server could not enroll; try again",
                                 retryable=True))

    def _with_replicas(self, registered):
        """``registered`` with this replica set's addresses, when it names this
        server: an answer forwarded from the bolt that owns the envoy names that
        bolt, whose replicas this server does not know (nor does the envoy need
        them before it attaches there, and Attached carries them)."""
        if (self.replicas is None or "replicas" in registered
                or registered.get("server_id") != self.fleet.identity.id):
            return registered
        return dict(registered, replicas=list(self.replicas()))

    def _unattached(self):
        self._timeout = None
        if self.record is None:
            self.drop(Refusal("timeout", "no Attach within %d s" % (ATTACH_TIMEOUT,)))


class EnvoyChannelFactory(Factory):
    """Builds an ``EnvoyChannelProtocol`` per accepted (TLS) connection.

    ``replicas``, when given, is called (no arguments) for the replica set's
    envoy addresses, "host:port" strings with the primary first, each time an
    Attached or Registered answer is sent; None leaves the field out.
    """

    def __init__(self, fleet, enrollment, clock, replicas=None):
        self.fleet = fleet
        self.enrollment = enrollment
        self.clock = clock
        self.replicas = replicas

    def buildProtocol(self, addr):
        protocol = EnvoyChannelProtocol(self.fleet, self.enrollment, self.clock, self.replicas)
        protocol.factory = self
        return protocol
