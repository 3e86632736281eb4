"""Small signed roster records, and what every roster record shares.

Removals, consumed join tokens and envoy overrides are small records signed
by the bolt that wrote them; admission rows (``rows.py``) are built from the
same pieces. Each signed body starts with its own context string, so a
signature of one kind can never be replayed as another, and includes the
federation id, so it cannot be replayed into another federation.

``from_data`` is the only way in from outside: it checks every type, length
and character before anything is built, and raises ``RosterError`` with a
reason. It does not check signatures; ``Roster.merge`` does.
"""

import hashlib
import re

import attr
import nacl.exceptions
from nacl.bindings import crypto_sign_open

from vigo.spanner.canonical import SpannerError, b64, canonical, unb64
from vigo.spanner.roster.hlc import Timestamp

REMOVAL_CONTEXT = b"vigo-roster-removal-v1\x00"
CONSUMED_CONTEXT = b"vigo-roster-consumed-v1\x00"
OVERRIDE_CONTEXT = b"vigo-roster-override-v1\x00"
MAX_AT_MS = 2**53 - 1

_BOLT_ID = re.compile(r"[a-z2-7]{20}\Z")
_OPAQUE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")  # token ids, envoy ids
_FEDERATION_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,63}\Z")


class RosterError(SpannerError):
    """A roster record (or a whole roster) that cannot be accepted; see ``reason``."""


_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"
_BASE32_PAIRS = [a + b for a in _BASE32 for b in _BASE32]  # 10 bits -> 2 characters


def derive_id(public_key):
    """The bolt id of a raw Ed25519 key; the same as ``vigo.identity.key_id``
    (the first 100 bits of its SHA-256 in lower-case base32), computed with a
    table: this runs once for every row a snapshot brings."""
    n = int.from_bytes(hashlib.sha256(public_key).digest()[:13], "big") >> 4
    p = _BASE32_PAIRS
    return (p[n >> 90] + p[(n >> 80) & 1023] + p[(n >> 70) & 1023] + p[(n >> 60) & 1023]
            + p[(n >> 50) & 1023] + p[(n >> 40) & 1023] + p[(n >> 30) & 1023]
            + p[(n >> 20) & 1023] + p[(n >> 10) & 1023] + p[n & 1023])


def verify(public_key, message, signature):
    """True when ``signature`` is ``public_key``'s Ed25519 signature of ``message``."""
    if len(signature) != 64 or len(public_key) != 32:
        return False
    try:
        crypto_sign_open(signature + message, public_key)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        return False
    return True


def malformed(message):
    """A ``RosterError`` for input of the wrong shape."""
    return RosterError("malformed", message)


def exact_fields(data, names, what):
    """``data`` if it is a dict with exactly the keys ``names``; ``RosterError`` if not."""
    if type(data) is not dict:
        raise malformed("%s must be an object" % (what,))
    if len(data) != len(names) or not names.issuperset(data):
        raise malformed("%s must have exactly the fields %s" % (what, ", ".join(sorted(names))))
    return data


def check_id(value, field, pattern=_BOLT_ID):
    """``value`` if it is a string matching ``pattern``; ``RosterError`` if not."""
    if type(value) is not str or not pattern.match(value):
        raise malformed("%s is not a valid id: %r" % (field, str(value)[:80]))
    return value


def check_bolt_id(value, field="bolt_id"):
    """``value`` if it looks like a bolt id (20 lower-case base32 characters)."""
    return check_id(value, field, _BOLT_ID)


def check_opaque_id(value, field):
    """``value`` if it is 1-64 characters of ``[A-Za-z0-9_-]`` (token and envoy ids)."""
    return check_id(value, field, _OPAQUE_ID)


def check_federation_id(value):
    """``value`` if it is a federation id (lower-case letters, digits, '-', <= 64)."""
    return check_id(value, "federation_id", _FEDERATION_ID)


def check_int(value, field, low, high):
    """``value`` if it is an int (not a bool) in ``low..high``."""
    if type(value) is not int or not low <= value <= high:
        raise malformed("%s must be an integer in %d..%d" % (field, low, high))
    return value


def framed(*parts):
    """Byte strings joined with length prefixes: one unambiguous encoding."""
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def _signature(data):
    return unb64(data["signature"], "signature", 64, error=RosterError)


@attr.s(frozen=True, slots=True)
class RemovalRecord:
    """``removed_by`` says bolt ``bolt_id`` is removed, for good (a G-Set member).

    Per bolt the roster keeps one record, the least by (at_ms, removed_by,
    signature): any choice would do, it only has to be the same everywhere.
    """

    KIND = "removals"
    bolt_id = attr.ib()
    removed_by = attr.ib()
    at_ms = attr.ib()
    signature = attr.ib(default=b"", repr=False)

    @classmethod
    def sign(cls, identity, federation_id, bolt_id, at_ms):
        """A removal of ``bolt_id`` at ``at_ms`` (ms since the epoch), signed by ``identity``."""
        record = cls(check_bolt_id(bolt_id), identity.id, check_int(at_ms, "at_ms", 0, MAX_AT_MS))
        return attr.evolve(record, signature=identity.sign(record.message(federation_id)))

    key = property(lambda self: self.bolt_id)
    signer_id = property(lambda self: self.removed_by)

    def wins_over(self, other):
        """True when this record, not ``other`` (same key), is the one to keep."""
        return (self.at_ms, self.removed_by, self.signature) < (
            other.at_ms, other.removed_by, other.signature)

    def message(self, federation_id):
        """The bytes the signer signs."""
        return REMOVAL_CONTEXT + canonical({
            "federation_id": federation_id, "bolt_id": self.bolt_id,
            "removed_by": self.removed_by, "at_ms": self.at_ms})

    def to_data(self):
        """The JSON-ready form."""
        return {"bolt_id": self.bolt_id, "removed_by": self.removed_by, "at_ms": self.at_ms,
                "signature": b64(self.signature)}

    @classmethod
    def from_data(cls, data):
        """A record from its JSON form, every field checked (not the signature)."""
        exact_fields(data, frozenset(("bolt_id", "removed_by", "at_ms", "signature")), "a removal")
        return cls(check_bolt_id(data["bolt_id"]), check_bolt_id(data["removed_by"], "removed_by"),
                   check_int(data["at_ms"], "at_ms", 0, MAX_AT_MS), _signature(data))


@attr.s(frozen=True, slots=True)
class ConsumedToken:
    """Join token ``token_id`` was redeemed at its minter (a G-Set member).

    Per token id the roster keeps the least by (minter_id, signature).
    """

    KIND = "consumed"
    token_id = attr.ib()
    minter_id = attr.ib()
    signature = attr.ib(default=b"", repr=False)

    @classmethod
    def sign(cls, identity, federation_id, token_id):
        """The minter ``identity`` records that it redeemed ``token_id``."""
        record = cls(check_opaque_id(token_id, "token_id"), identity.id)
        return attr.evolve(record, signature=identity.sign(record.message(federation_id)))

    key = property(lambda self: self.token_id)
    signer_id = property(lambda self: self.minter_id)

    def wins_over(self, other):
        return (self.minter_id, self.signature) < (other.minter_id, other.signature)

    def message(self, federation_id):
        return CONSUMED_CONTEXT + canonical({
            "federation_id": federation_id, "token_id": self.token_id,
            "minter_id": self.minter_id})

    def to_data(self):
        return {"token_id": self.token_id, "minter_id": self.minter_id,
                "signature": b64(self.signature)}

    @classmethod
    def from_data(cls, data):
        exact_fields(data, frozenset(("token_id", "minter_id", "signature")), "a consumed token")
        return cls(check_opaque_id(data["token_id"], "token_id"),
                   check_bolt_id(data["minter_id"], "minter_id"), _signature(data))


@attr.s(frozen=True, slots=True)
class Override:
    """Envoy ``envoy_id`` belongs to ``bolt_id`` whatever the patterns say
    (``bolt_id`` None clears it), written by bolt ``writer`` at ``hlc``.

    Last writer wins per envoy: the greatest (hlc, writer, signature).
    """

    KIND = "overrides"
    envoy_id = attr.ib()
    bolt_id = attr.ib()
    hlc = attr.ib()
    writer = attr.ib()
    signature = attr.ib(default=b"", repr=False)

    @classmethod
    def sign(cls, identity, federation_id, envoy_id, bolt_id, hlc):
        """``identity`` gives ``envoy_id`` to ``bolt_id`` at hybrid time ``hlc``."""
        if bolt_id is not None:
            check_bolt_id(bolt_id)
        try:
            hlc = Timestamp.from_data(list(hlc))
        except (ValueError, TypeError) as e:
            raise malformed(str(e)) from None
        record = cls(check_opaque_id(envoy_id, "envoy_id"), bolt_id, hlc, identity.id)
        return attr.evolve(record, signature=identity.sign(record.message(federation_id)))

    key = property(lambda self: self.envoy_id)
    signer_id = property(lambda self: self.writer)

    def wins_over(self, other):
        return (self.hlc, self.writer, self.signature) > (other.hlc, other.writer, other.signature)

    def message(self, federation_id):
        return OVERRIDE_CONTEXT + canonical({
            "federation_id": federation_id, "envoy_id": self.envoy_id, "bolt_id": self.bolt_id,
            "hlc": self.hlc.to_data(), "writer": self.writer})

    def to_data(self):
        return {"envoy_id": self.envoy_id, "bolt_id": self.bolt_id, "hlc": self.hlc.to_data(),
                "writer": self.writer, "signature": b64(self.signature)}

    @classmethod
    def from_data(cls, data):
        exact_fields(data, frozenset(("envoy_id", "bolt_id", "hlc", "writer", "signature")),
                "an override")
        bolt_id = data["bolt_id"]
        if bolt_id is not None:
            check_bolt_id(bolt_id)
        try:
            hlc = Timestamp.from_data(data["hlc"])
        except ValueError as e:
            raise malformed(str(e)) from None
        return cls(check_opaque_id(data["envoy_id"], "envoy_id"), bolt_id, hlc,
                   check_bolt_id(data["writer"], "writer"), _signature(data))


RECORD_TYPES = (RemovalRecord, ConsumedToken, Override)  # each with the same methods


def record_digest_bytes(record, federation_id):
    """The framed bytes a record contributes to the roster digest."""
    return framed(record.message(federation_id), record.signature)
