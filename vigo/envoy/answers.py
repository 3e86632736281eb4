"""What a server answers an envoy, as values and exceptions, and decoding it.

The ``decode_*`` functions read the body of one frame (``vigo.fleet.wire``) into
a value or an exception to raise, and raise ``wire.WireError`` on anything
malformed. Whether an answer is expected at all is the protocol's business
(``vigo.envoy.protocol``). The optional ``replicas`` of Registered and Attached
is read leniently (``vigo.envoy.replicas.replica_addresses``): one that is no
list of strings counts as not sent, entries that are not host:port are dropped.
"""

import json
import math
from collections import namedtuple

from vigo.envoy.replicas import replica_addresses
from vigo.fleet import wire
from vigo.identity import key_fingerprint, verify_signature

Registered = namedtuple(
    "Registered", "envoy_id server_id public_key fingerprint address interval replicas",
    defaults=(None,))
Registered.__doc__ = """The server's answer to Register (``public_key`` raw, ``interval``
seconds, ``replicas`` a tuple of "host:port" or None when not sent)."""
Attached = namedtuple("Attached", "envoy_id interval last_seq server_time replicas",
                      defaults=(None,))
Attached.__doc__ = """The server's answer to Attach (``server_time`` may be None;
``replicas`` as in ``Registered``)."""
Bundle = namedtuple("Bundle", "seq version document")
Bundle.__doc__ = "A verified bundle: the desired state (a dict) and its 32-byte version."


class Refused(Exception):
    """The server said no: a stable ``code``, a ``reason``, ``retryable``."""

    def __init__(self, code, reason, retryable=False, seq=None):
        Exception.__init__(self, f"{reason} ({code})")
        self.code = code
        self.reason = reason
        self.retryable = retryable
        self.seq = seq


class Redirected(Exception):
    """The envoy belongs to another server: go to ``address``, pin ``fingerprint``."""

    def __init__(self, address, server_id, fingerprint, reason=""):
        Exception.__init__(self, reason or f"redirected to {address}")
        self.address = address
        self.server_id = server_id
        self.fingerprint = fingerprint
        self.reason = reason


class EnvoyProtocolError(Exception):
    """The server sent something this envoy cannot accept, or a call came at the wrong time."""


class BundleRejected(EnvoyProtocolError):
    """A bundle whose signature does not verify against the pinned server key."""


def decode_registered(body):
    """A Registered frame as ``Registered``, its key checked against its fingerprint."""
    fields = wire.decode_json(body, {"envoy_id": str, "server_id": str, "public_key": str,
                                     "fingerprint": str, "address": str, "interval": (int, float)})
    public_key = wire.unb64(fields["public_key"], "public_key", 32)
    if key_fingerprint(public_key) != fields["fingerprint"]:
        raise wire.WireError("Registered public_key does not match its fingerprint")
    if fields["interval"] <= 0:
        raise wire.WireError("Registered interval must be positive")
    return Registered(fields["envoy_id"], fields["server_id"], public_key,
                      fields["fingerprint"], fields["address"], float(fields["interval"]),
                      replica_addresses(fields.get("replicas")))


def decode_attached(body, envoy_id):
    """An Attached frame as ``Attached``; it must name ``envoy_id``, the envoy attaching."""
    fields = wire.decode_json(body, {"envoy_id": str, "interval": (int, float),
                                     "last_seq": int})
    if fields["envoy_id"] != envoy_id:
        raise wire.WireError(f"Attached names envoy {fields['envoy_id']!r}, "
                             f"not {envoy_id!r}")
    if fields["interval"] <= 0:
        raise wire.WireError("Attached interval must be positive")
    return Attached(envoy_id, float(fields["interval"]), fields["last_seq"],
                    _seconds(fields.get("server_time")),
                    replica_addresses(fields.get("replicas")))


def _seconds(value):
    """An optional time in seconds as a finite float, or None (a server that
    sends none, or one that is not a plausible time: ``float(10**400)`` would
    raise)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, int) and not 0 <= value < wire.MAX_INT:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def decode_bundle(body):
    """A Bundle frame as ``(Bundle, signature)``; the signature is not checked yet."""
    fields = wire.decode_json(body, {"seq": int, "version": str, "document": dict,
                                     "signature": str})
    version = wire.unb64(fields["version"], "version", 32)
    signature = wire.unb64(fields["signature"], "signature", 64)
    return Bundle(fields["seq"], version, fields["document"]), signature


def canonical_document(document):
    """The bytes a bundle signature covers for ``document``."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8")


def bundle_signed(bundle, signature, envoy_id, server_key):
    """True when ``signature`` is ``server_key``'s (raw, or None) over ``bundle`` for the envoy."""
    document = canonical_document(bundle.document)
    message = wire.bundle_message(envoy_id, bundle.seq, bundle.version, document)
    return server_key is not None and verify_signature(server_key, message, signature)


def decode_refusal(body):
    """A Refused frame as ``Refused`` (``seq`` is None unless it names a check-in)."""
    fields = wire.decode_json(body, {"code": str, "reason": str})
    seq = fields.get("seq")
    return Refused(fields["code"], fields["reason"], fields.get("retryable") is True,
                   seq if isinstance(seq, int) else None)


def decode_redirect(body):
    """A Redirect frame as ``Redirected``."""
    fields = wire.decode_json(body, {"address": str, "server_id": str, "fingerprint": str})
    reason = fields.get("reason")
    return Redirected(fields["address"], fields["server_id"], fields["fingerprint"],
                      reason if isinstance(reason, str) else "")
