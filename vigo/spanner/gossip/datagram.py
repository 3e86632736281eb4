"""The tier-1 gossip datagram: a small, signed, fixed-layout binary record.

Why binary and fixed: every bolt receives every other bolt's datagram twice a
second, so decoding must be cheap and must reject junk *before* any crypto;
the layout is checked byte for byte and the whole datagram is capped at
``MAX_DATAGRAM`` (1,400 bytes: one Ethernet frame with room for tunnels).

Layout (big-endian)::

    u8   version (1)
    u8   F, then F bytes   federation id (printable ASCII, 1..64)
    u8   B, then B bytes   bolt id (printable ASCII, 1..64)
    u64  incarnation       boot epoch, ms: a restarted bolt starts a new one
    u64  seq               per incarnation, +1 a datagram
    32   roster digest
    u32  envoys owned      u32 envoys online
    u64  check-ins total   u64 enrollments   u64 pushes
    u16  load (permille)   u8 status (see STATUS_CODES)
    u8   K, then K x (8-byte peer tag, u16 age ms)
    64   Ed25519 signature over CONTEXT + every byte before it

The peer list is the failure detector's relay evidence: for up to K peers, how
long ago the sender last had evidence that the peer was alive (see
``detector``). Peers are named by an 8-byte tag of their id, not the id, so
~110 of them fit; receivers map tags back through the roster. The signature
covers a context string that is never sent, so a gossip signature can never be
mistaken for a signature of anything else the identity key signs.
"""

import functools
import hashlib
import struct
from typing import NamedTuple

import nacl.exceptions
from nacl.bindings import crypto_sign_open

VERSION = 1
MAX_DATAGRAM = 1400
DIGEST_SIZE = 32
SIGNATURE_SIZE = 64
TAG_SIZE = 8
MAX_ID = 64
AGE_MAX_MS = 0xFFFF
CONTEXT = b"vigo/spanner/gossip/v1\x00"

#: status byte <-> name; codes this version does not know decode as "unknown",
#: so a newer sender's status does not make its datagram unreadable.
STATUS_CODES = {"unknown": 0, "active": 1, "draining": 2, "joining": 3, "stopping": 4}
STATUS_NAMES = {code: name for name, code in STATUS_CODES.items()}

_U64 = struct.Struct(">QQ")
_COUNTERS = struct.Struct(">IIQQQHB")
_ENTRY = struct.Struct(">8sH")
_FIXED = 1 + 1 + 1 + _U64.size + DIGEST_SIZE + _COUNTERS.size + 1 + SIGNATURE_SIZE
MIN_DATAGRAM = _FIXED + 2  # both ids at least one byte
_LIMITS = (0xFFFFFFFF, 0xFFFFFFFF, 2**64 - 1, 2**64 - 1, 2**64 - 1, 0xFFFF)


class DatagramError(ValueError):
    """A datagram that cannot be read; ``reason`` is a short code for counting."""

    def __init__(self, reason, detail=""):
        super().__init__(reason if not detail else "%s: %s" % (reason, detail))
        self.reason = reason


class Counters(NamedTuple):
    """A bolt's self-reported figures, as carried in every datagram."""

    envoys_owned: int = 0
    envoys_online: int = 0
    checkins: int = 0
    enrollments: int = 0
    pushes: int = 0
    load_permille: int = 0
    status: str = "active"

    @classmethod
    def from_mapping(cls, values):
        """Counters from a dict (missing keys are 0 / "active"), clamped to the
        field widths: a counter that overflowed must not stop the gossip."""
        numbers = []
        for name, limit in zip(cls._fields[:-1], _LIMITS, strict=True):
            value = int(values.get(name, 0))
            numbers.append(min(max(value, 0), limit))
        status = values.get("status", "active")
        if status not in STATUS_CODES:
            status = "unknown"
        return cls(*numbers, status)


class Gossip(NamedTuple):
    """One decoded datagram. ``message`` is the signed part, as received."""

    federation_id: str
    bolt_id: str
    incarnation: int
    seq: int
    digest: bytes
    counters: Counters
    peers: tuple  # of (tag: bytes, age_ms: int)
    message: bytes
    signature: bytes


@functools.lru_cache(maxsize=4096)
def peer_tag(bolt_id):
    """The 8-byte tag that names ``bolt_id`` in peer lists."""
    return hashlib.sha256(b"vigo/spanner/gossip/tag\x00" + bolt_id.encode()).digest()[:TAG_SIZE]


def max_peers(federation_id, bolt_id):
    """How many peer entries fit in one datagram for these ids (at most 255)."""
    room = MAX_DATAGRAM - _FIXED - len(federation_id.encode()) - len(bolt_id.encode())
    return max(0, min(255, room // _ENTRY.size))


def _check_id(value, what):
    raw = value.encode("ascii") if isinstance(value, str) else b""
    if not 1 <= len(raw) <= MAX_ID or not _printable(raw):
        raise ValueError("%s must be 1..%d printable ASCII characters" % (what, MAX_ID))
    return raw


def _printable(raw):
    return all(0x21 <= b <= 0x7E for b in raw)


def encode(identity, federation_id, incarnation, seq, digest, counters, peers=()):
    """The signed datagram of ``identity`` (which has ``.id`` and ``.sign``).

    ``counters`` is a ``Counters`` or a mapping; ``peers`` an iterable of
    (tag, age_ms) with ages clamped to ``AGE_MAX_MS``. Raises ValueError on
    bad fields or when the result would exceed ``MAX_DATAGRAM``: callers size
    the peer list with ``max_peers``.
    """
    federation = _check_id(federation_id, "federation id")
    bolt = _check_id(identity.id, "bolt id")
    if len(digest) != DIGEST_SIZE:
        raise ValueError("digest must be %d bytes" % DIGEST_SIZE)
    if not (0 <= incarnation < 2**64 and 0 <= seq < 2**64):
        raise ValueError("incarnation and seq must fit in 64 bits")
    if not isinstance(counters, Counters):
        counters = Counters.from_mapping(counters)
    peers = list(peers)
    if len(peers) > 255:
        raise ValueError("at most 255 peer entries")
    parts = [
        bytes((VERSION, len(federation))), federation, bytes((len(bolt),)), bolt,
        _U64.pack(incarnation, seq), bytes(digest),
        _COUNTERS.pack(*counters[:-1], STATUS_CODES.get(counters.status, 0)),
        bytes((len(peers),)),
    ]
    for tag, age_ms in peers:
        parts.append(_ENTRY.pack(tag, min(max(int(age_ms), 0), AGE_MAX_MS)))
    message = b"".join(parts)
    data = message + identity.sign(CONTEXT + message)
    if len(data) > MAX_DATAGRAM:
        raise ValueError("datagram of %d bytes exceeds %d" % (len(data), MAX_DATAGRAM))
    return data


def decode(data):
    """The ``Gossip`` in ``data``, or DatagramError(reason) with reason one of
    oversize, malformed, version. No crypto here: see ``verify``."""
    if not isinstance(data, bytes):
        raise DatagramError("malformed", "not bytes")
    size = len(data)
    if size > MAX_DATAGRAM:
        raise DatagramError("oversize", "%d bytes" % size)
    if size < MIN_DATAGRAM:
        raise DatagramError("malformed", "short")
    if data[0] != VERSION:
        raise DatagramError("version", str(data[0]))
    flen = data[1]
    fend = 2 + flen
    blen = data[fend] if fend < size else 0
    bend = fend + 1 + blen
    if not (1 <= flen <= MAX_ID and 1 <= blen <= MAX_ID):
        raise DatagramError("malformed", "id length")
    fixed_end = bend + _U64.size + DIGEST_SIZE + _COUNTERS.size + 1
    if fixed_end + SIGNATURE_SIZE > size:
        raise DatagramError("malformed", "short")
    count = data[fixed_end - 1]
    body_end = fixed_end + count * _ENTRY.size
    if body_end + SIGNATURE_SIZE != size:
        raise DatagramError("malformed", "length")
    federation, bolt = data[2:fend], data[fend + 1:bend]
    if not (_printable(federation) and _printable(bolt)):
        raise DatagramError("malformed", "id bytes")
    incarnation, seq = _U64.unpack_from(data, bend)
    at = bend + _U64.size
    digest = data[at:at + DIGEST_SIZE]
    *numbers, status = _COUNTERS.unpack_from(data, at + DIGEST_SIZE)
    counters = Counters(*numbers, STATUS_NAMES.get(status, "unknown"))
    peers = tuple(_ENTRY.iter_unpack(data[fixed_end:body_end])) if count else ()
    return Gossip(
        federation.decode("ascii"), bolt.decode("ascii"), incarnation, seq, digest,
        counters, peers, data[:body_end], data[body_end:],
    )


def verify(gossip, public_key):
    """True when ``gossip`` carries a valid signature by ``public_key``."""
    try:
        crypto_sign_open(gossip.signature + CONTEXT + gossip.message, public_key)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        return False
    return True
