"""The envoy channel's wire format: length-prefixed frames, one message each.

A frame is a 4-byte big-endian length and a body; the body's first byte names
the message. The hot path (CheckIn and its NoChange answer) is fixed-size
binary, decoded with one ``struct`` call; the rare messages (Register, Attach,
Bundle, Redirect, ...) carry a small JSON object. Why not AMP: see
docs/envoy-protocol.md (AMP's key/value boxes cost ~40-55 us a request here,
a third of the whole check-in budget).

Every decoder checks sizes, types and ranges and raises ``WireError`` with a
reason, and nothing else: it never returns a half-read message, and an integer
it returns is in ``[0, MAX_INT)``, so no arithmetic on it can overflow (a float
of ``ts / 1000``, a SQLite INTEGER column).
"""

import base64
import json
import math
import struct

# Envoy -> server
REGISTER = 0x01
ATTACH = 0x02
CHECKIN = 0x03
# Server -> envoy
REGISTERED = 0x81
ATTACHED = 0x82
NO_CHANGE = 0x83
BUNDLE = 0x84
FORCE_PUSH = 0x85
REDIRECT = 0x86
REFUSED = 0x8F

NAMES = {
    REGISTER: "Register",
    ATTACH: "Attach",
    CHECKIN: "CheckIn",
    REGISTERED: "Registered",
    ATTACHED: "Attached",
    NO_CHANGE: "NoChange",
    BUNDLE: "Bundle",
    FORCE_PUSH: "ForcePush",
    REDIRECT: "Redirect",
    REFUSED: "Refused",
}

MAX_REQUEST = 16 * 1024  # largest frame an envoy may send
MAX_RESPONSE = 4 * 1024 * 1024  # largest frame a server may send (bundles)
MAX_INT = 2**63  # every integer in a frame (ts, seq, ...) is in [0, MAX_INT)
# A CheckIn's seq is below MAX_SEQ: the fleet stores seq + a reservation
# (vigo/fleet/replay.py) in a SQLite INTEGER, so it leaves room above it.
# Sequences are microsecond timestamps: 2**62 us is 146,000 years.
MAX_SEQ = 2**62

# CheckIn: seq, timestamp (ms since the epoch), state fingerprint, signature.
CHECKIN_BODY = struct.Struct(">QQ32s64s")
CHECKIN_SIGNED_LENGTH = 8 + 8 + 32  # the part of the body the signature covers
CHECKIN_FRAME_LENGTH = 1 + CHECKIN_BODY.size
NO_CHANGE_BODY = struct.Struct(">BQ")
LENGTH = struct.Struct(">I")

CHECKIN_CONTEXT = b"vigo-checkin-v1\x00"
REGISTER_CONTEXT = b"vigo-register-v1\x00"
ATTACH_CONTEXT = b"vigo-attach-v1\x00"
BUNDLE_CONTEXT = b"vigo-bundle-v1\x00"


class WireError(Exception):
    """A frame that is not a well-formed message."""


def b64(data):
    return base64.b64encode(data).decode("ascii")


def unb64(text, field, length=None):
    if not isinstance(text, str):
        raise WireError("%s must be a base64 string" % (field,))
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise WireError("%s is not valid base64" % (field,)) from None
    if length is not None and len(data) != length:
        raise WireError("%s must be %d bytes, not %d" % (field, length, len(data)))
    return data


def frame(body):
    """``body`` with its length prefix."""
    return LENGTH.pack(len(body)) + body


def encode_json(kind, fields):
    return bytes((kind,)) + json.dumps(fields, separators=(",", ":")).encode("utf-8")


def decode_json(body, required):
    """The JSON object of a frame body, with ``required`` fields type-checked.

    ``required`` maps a field name to its Python type (or a tuple of types). A
    required integer must be in ``[0, MAX_INT)`` and a required float finite.
    Anything else than a JSON object of those raises ``WireError``: bad UTF-8,
    ``NaN``/``Infinity``, an integer of more digits than Python reads, JSON
    nested deeper than the parser recurses.
    """
    name = NAMES.get(body[0], "frame") if body else "frame"
    try:
        fields = json.loads(body[1:].decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise WireError("%s body is not a JSON object" % (name,)) from None
    if not isinstance(fields, dict):
        raise WireError("%s body is not a JSON object" % (name,))
    for field, kind in required.items():
        value = fields.get(field)
        if not isinstance(value, kind) or isinstance(value, bool) and bool not in _types(kind):
            raise WireError("%s needs %r of type %s" % (name, field, _type_name(kind)))
        if isinstance(value, bool):
            continue
        if isinstance(value, int) and not 0 <= value < MAX_INT:
            raise WireError("%s %r is out of range (0 to 2**63 - 1)" % (name, field))
        if isinstance(value, float) and not math.isfinite(value):
            raise WireError("%s %r must be a finite number" % (name, field))
    return fields


def _no_constant(constant):
    raise ValueError("%s is not JSON" % (constant,))


def _types(kind):
    return kind if isinstance(kind, tuple) else (kind,)


def _type_name(kind):
    return "/".join(t.__name__ for t in _types(kind))


# -- the hot path ------------------------------------------------------------


def encode_checkin(seq, timestamp_ms, fingerprint, sign):
    """A CheckIn frame; ``sign(message)`` signs with the envoy's key.

    ``sign`` gets the envoy-bound prefix added by ``checkin_message``'s caller:
    use ``checkin_signing_prefix(envoy_id)`` + the first 48 body bytes.
    """
    signed = struct.pack(">QQ32s", seq, timestamp_ms, fingerprint)
    return frame(bytes((CHECKIN,)) + signed + sign(signed))


def checkin_signing_prefix(envoy_id):
    """What every check-in signature of this envoy starts with."""
    return CHECKIN_CONTEXT + envoy_id.encode("ascii") + b"\x00"


def decode_checkin(body):
    """(seq, timestamp_ms, fingerprint, signature) of a CheckIn body.

    ``seq`` and ``timestamp_ms`` are u64 on the wire, but ``seq`` is below
    ``MAX_SEQ`` and ``timestamp_ms`` below ``MAX_INT`` here: the envoy index's
    SQLite INTEGER columns hold no more.
    """
    if len(body) != CHECKIN_FRAME_LENGTH:
        raise WireError(
            "CheckIn must be %d bytes, not %d" % (CHECKIN_FRAME_LENGTH, len(body))
        )
    decoded = CHECKIN_BODY.unpack_from(body, 1)
    if decoded[0] >= MAX_SEQ or decoded[1] >= MAX_INT:
        raise WireError("CheckIn seq must be below 2**62 and ts below 2**63")
    return decoded


def no_change(seq):
    return LENGTH.pack(NO_CHANGE_BODY.size) + NO_CHANGE_BODY.pack(NO_CHANGE, seq)


def decode_no_change(body):
    if len(body) != NO_CHANGE_BODY.size:
        raise WireError("NoChange must be %d bytes" % (NO_CHANGE_BODY.size,))
    return NO_CHANGE_BODY.unpack(body)[1]


# -- signed cold-path messages ----------------------------------------------


def register_message(hostname, public_key, token_id, timestamp_ms):
    """The bytes an envoy signs to register: proof it holds the key."""
    return b"%s%s\x00%s\x00%s\x00%d" % (
        REGISTER_CONTEXT,
        hostname.encode("utf-8"),
        public_key,
        token_id.encode("utf-8"),
        timestamp_ms,
    )


def attach_message(envoy_id, server_id, timestamp_ms):
    """The bytes an envoy signs to attach to one server at one moment."""
    return b"%s%s\x00%s\x00%d" % (
        ATTACH_CONTEXT,
        envoy_id.encode("ascii"),
        server_id.encode("ascii"),
        timestamp_ms,
    )


def bundle_message(envoy_id, seq, version, document_bytes):
    """The bytes the server signs when it sends a bundle."""
    return b"%s%s\x00%d\x00%s\x00%s" % (
        BUNDLE_CONTEXT,
        envoy_id.encode("ascii"),
        seq,
        version,
        document_bytes,
    )
