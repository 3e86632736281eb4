"""The envoy's end of the envoy channel: one TLS connection to one server.

``EnvoyClientProtocol`` reads the length-prefixed frames of ``vigo.fleet.wire``
and runs a small explicit state machine: a connection registers and/or
attaches, then checks in, one request at a time. Requests are Deferreds;
what the server says unasked (ForcePush, Redirect, a refusal before it hangs
up) and the connection's life go to a listener (``IEnvoyListener``). The
answers themselves, and decoding them, are in ``vigo.envoy.answers``;
``vigo.envoy.dial`` opens the connections.

The simulator holds thousands of these, so a connection keeps little state
(``__slots__``, no per-connection buffer while frames arrive whole) and a
check-in costs one signature, one write and one Deferred.
"""

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.internet import defer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import Interface

from vigo.envoy.answers import (
    BundleRejected,
    EnvoyProtocolError,
    bundle_signed,
    decode_attached,
    decode_bundle,
    decode_redirect,
    decode_refusal,
    decode_registered,
)
from vigo.fleet import wire

NO_VERSION = bytes(32)  # the state fingerprint before the first bundle

# Connection states.
CONNECTING = "connecting"  # no transport yet
IDLE = "idle"  # connected; may register or attach
REGISTERING = "registering"
ATTACHING = "attaching"
READY = "ready"  # attached; may check in
CHECKING = "checking"  # one check-in in flight
CLOSED = "closed"

_NO_CHANGE = wire.NO_CHANGE
_LENGTH = wire.LENGTH
_MAX = wire.MAX_RESPONSE


class IEnvoyListener(Interface):
    """What an ``EnvoyClientProtocol`` tells its owner (the listener has all of these)."""

    def envoy_connected(protocol):
        """The connection is up (TLS may still be shaking hands)."""

    def envoy_disconnected(protocol, reason):
        """The connection is gone; ``reason`` is a Failure."""

    def envoy_force_push(protocol):
        """The server wants a check-in now (it will answer with the bundle)."""

    def envoy_redirected(protocol, redirect):
        """Unasked Redirect (a ``Redirected``); the connection is being closed."""

    def envoy_refused(protocol, refusal):
        """Unasked refusal (a ``Refused``), usually just before the server hangs up."""

    def envoy_bundle(protocol, bundle):
        """A verified ``Bundle`` to apply; called before the check-in Deferred fires."""


def peer_public_key(transport):
    """The raw Ed25519 key of a TLS peer's certificate, or None."""
    get = getattr(transport, "getPeerCertificate", None)
    certificate = get() if get is not None else None
    if certificate is None:
        return None
    key = certificate.to_cryptography().public_key()
    if not isinstance(key, ed25519.Ed25519PublicKey):
        return None
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class EnvoyClientProtocol(Protocol):
    """One envoy connection: register, attach, check in; one request at a time.

    ``clock`` is an ``IReactorTime`` (timestamps and latency); ``listener``
    gets the ``IEnvoyListener`` events. Misbehaving servers (bad or oversize
    frames) are hung up on; the pending request fails with the reason.
    """

    __slots__ = ("_buffer", "_clock", "_listener", "_prefix", "_sent_at", "_seq", "_sign",
                 "_waiting", "connected", "envoy_id", "factory", "server_key", "state",
                 "transport")

    def __init__(self, clock, listener=None):
        self.transport = None
        self.connected = 0
        self.factory = None
        self.state = CONNECTING
        self.envoy_id = None
        self.server_key = None
        self._clock = clock
        self._listener = listener
        self._buffer = None
        self._waiting = None
        self._seq = None
        self._sent_at = 0.0
        self._sign = None
        self._prefix = None

    @property
    def busy(self):
        """True while a request waits for its answer."""
        return self._waiting is not None

    @property
    def waiting_since(self):
        """When the request in flight was sent (clock seconds), or None."""
        return self._sent_at if self._waiting is not None else None

    # -- requests ---------------------------------------------------------------

    def register(self, hostname, public_key, token_text, token_id, sign):
        """Enroll with a token; a Deferred of ``Registered``.

        ``sign(message)`` returns the envoy key's 64-byte signature. Fails with
        ``Refused``, ``Redirected`` or ``EnvoyProtocolError``.
        """
        ts = self._now_ms()
        signature = sign(wire.register_message(hostname, public_key, token_id, ts))
        fields = {"hostname": hostname, "public_key": wire.b64(public_key), "token": token_text,
                  "ts": ts, "signature": wire.b64(signature)}
        return self._request(IDLE, REGISTERING, wire.encode_json(wire.REGISTER, fields))

    def attach(self, envoy_id, server_id, sign, server_key=None):
        """Bind this connection to the envoy; a Deferred of ``Attached``.

        ``server_key`` (raw, 32 bytes) verifies bundles; when None it is read
        from the TLS certificate, which the connection pinned. Fails with
        ``Refused``, ``Redirected`` or ``EnvoyProtocolError``.
        """
        if self.state is not IDLE:
            return defer.fail(EnvoyProtocolError(f"cannot send Attach while {self.state}"))
        self.envoy_id = envoy_id
        self._sign = sign
        self._prefix = wire.checkin_signing_prefix(envoy_id)
        if server_key is not None:
            self.server_key = server_key
        ts = self._now_ms()
        signature = sign(wire.attach_message(envoy_id, server_id, ts))
        fields = {"envoy_id": envoy_id, "server_id": server_id, "ts": ts,
                  "signature": wire.b64(signature)}
        return self._request(IDLE, ATTACHING, wire.encode_json(wire.ATTACH, fields))

    def checkin(self, seq, fingerprint=NO_VERSION):
        """Check in; a Deferred of ``("no_change" | "bundle", latency_seconds)``.

        ``fingerprint`` is the version of the bundle applied. A bundle goes to
        the listener's ``envoy_bundle`` before this fires. Fails with
        ``Refused``, ``Redirected``, ``BundleRejected`` or ``EnvoyProtocolError``.
        """
        if self.state is not READY:
            return defer.fail(EnvoyProtocolError(f"cannot check in while {self.state}"))
        self.state = CHECKING
        self._seq = seq
        d = self._waiting = defer.Deferred(self._cancel)
        self._sent_at = self._clock.seconds()
        ts = int(self._sent_at * 1000)
        self.transport.write(wire.encode_checkin(seq, ts, fingerprint, self._sign_checkin))
        return d

    def close(self):
        """Hang up politely (the pending request fails when the connection is gone)."""
        if self.transport is not None and self.state is not CLOSED:
            self.transport.loseConnection()

    def abort(self):
        """Hang up at once; the pending request fails with ``EnvoyProtocolError``."""
        self._fail(Failure(EnvoyProtocolError("the envoy gave up on this connection")))
        self._hang_up()

    def _sign_checkin(self, signed):
        return self._sign(self._prefix + signed)

    def _request(self, expected, state, body):
        if self.state is not expected:
            name = wire.NAMES[body[0]]
            return defer.fail(EnvoyProtocolError(f"cannot send {name} while {self.state}"))
        self.state = state
        d = self._waiting = defer.Deferred(self._cancel)
        self._sent_at = self._clock.seconds()
        self.transport.write(wire.frame(body))
        return d

    def _cancel(self, d):
        # A request given up on (a timeout): the connection is no longer in step.
        if self._waiting is d:
            self._waiting = None
        self._hang_up()

    def _now_ms(self):
        return int(self._clock.seconds() * 1000)

    # -- Protocol ---------------------------------------------------------------

    def connectionMade(self):
        self.state = IDLE
        if self._listener is not None:
            self._listener.envoy_connected(self)

    def connectionLost(self, reason=connectionDone):
        self.state = CLOSED
        self.connected = 0
        self._buffer = None
        self._fail(reason)
        if self._listener is not None:
            self._listener.envoy_disconnected(self, reason)

    def dataReceived(self, data):
        buffer = self._buffer
        if buffer is not None:
            buffer += data
            data = buffer
        size = len(data)
        offset = 0
        while size - offset >= 4:
            (length,) = _LENGTH.unpack_from(data, offset)
            if not 0 < length <= _MAX:
                self._protocol_error(f"frame length {length} is out of range")
                return
            end = offset + 4 + length
            if end > size:
                break
            body = data[offset + 4:end]
            offset = end
            if body[0] == _NO_CHANGE and self.state is CHECKING:
                self._no_change(body)
            else:
                self._frame(bytes(body))
            if self.state is CLOSED:
                return
        if offset == size:
            self._buffer = None
        elif buffer is None:
            self._buffer = bytearray(memoryview(data)[offset:])
        else:
            del buffer[:offset]
            self._buffer = buffer

    # -- answers ----------------------------------------------------------------

    def _no_change(self, body):
        try:
            seq = wire.decode_no_change(body)
        except wire.WireError as e:
            self._protocol_error(str(e))
            return
        if seq != self._seq:
            self._protocol_error(f"NoChange for seq {seq}, expected {self._seq}")
            return
        self._answer(READY, ("no_change", self._clock.seconds() - self._sent_at))

    def _frame(self, body):
        kind = body[0]
        try:
            if kind == wire.BUNDLE:
                self._bundle(body)
            elif kind == wire.FORCE_PUSH:
                if self._listener is not None:
                    self._listener.envoy_force_push(self)
            elif kind == wire.REDIRECT:
                self._redirect(body)
            elif kind == wire.REFUSED:
                self._refused(body)
            elif kind == wire.REGISTERED and self.state is REGISTERING:
                self._answer(IDLE, decode_registered(body))
            elif kind == wire.ATTACHED and self.state is ATTACHING:
                self._attached(body)
            else:
                name = wire.NAMES.get(kind, f"0x{kind:02x}")
                raise wire.WireError(f"unexpected {name} while {self.state}")
        except wire.WireError as e:
            self._protocol_error(str(e))

    def _attached(self, body):
        attached = decode_attached(body, self.envoy_id)
        if self.server_key is None:
            self.server_key = peer_public_key(self.transport)
        self._answer(READY, attached)

    def _bundle(self, body):
        bundle, signature = decode_bundle(body)
        seq = bundle.seq
        if self.state is not CHECKING or seq != self._seq:
            # Bundles are bound to the check-in they answer; anything else could be a replay.
            raise wire.WireError(f"Bundle for seq {seq} answers no check-in in flight")
        if not bundle_signed(bundle, signature, self.envoy_id, self.server_key):
            self._answer(READY, Failure(BundleRejected(
                f"the bundle for seq {seq} is not signed by the pinned server key")))
            return
        latency = self._clock.seconds() - self._sent_at
        if self._listener is not None:
            self._listener.envoy_bundle(self, bundle)
        self._answer(READY, ("bundle", latency))

    def _refused(self, body):
        refusal = decode_refusal(body)
        waiting = self._waiting is not None
        if waiting and self.state is CHECKING and refusal.seq not in (None, self._seq):
            waiting = False  # the answer to some earlier request
        if waiting:
            self._answer(IDLE if self.state in (REGISTERING, ATTACHING) else READY,
                         Failure(refusal))
        elif self._listener is not None:
            self._listener.envoy_refused(self, refusal)

    def _redirect(self, body):
        redirect = decode_redirect(body)
        # Whoever waits learns of it through its Deferred; otherwise the listener.
        if self._waiting is not None:
            self._answer(CLOSED, Failure(redirect))
        elif self._listener is not None:
            self._listener.envoy_redirected(self, redirect)
        self._hang_up()

    # -- plumbing ---------------------------------------------------------------

    def _answer(self, state, result):
        d, self._waiting = self._waiting, None
        if self.state is not CLOSED:
            self.state = state
        if isinstance(result, Failure):
            d.errback(result)
        elif d is not None:
            d.callback(result)

    def _fail(self, reason):
        d, self._waiting = self._waiting, None
        if d is not None:
            d.errback(reason)

    def _protocol_error(self, message):
        self._fail(Failure(EnvoyProtocolError(message)))
        self._hang_up()

    def _hang_up(self):
        self.state = CLOSED
        self._buffer = None
        if self.transport is not None:
            getattr(self.transport, "abortConnection", self.transport.loseConnection)()
