"""Admission rows: who a bolt is, where it listens, what it serves.

Only the bolt's own key signs its row. The bolt that admitted it countersigns
the part that never changes (federation, id, key, token, admitter), so a bolt
can publish a new seq of its row (new addresses, draining) without going back
to its admitter. A bolt's id is derived from its key: a row whose key does
not derive its id is refused, and that is the key pin.
"""

import re

import attr

from vigo.spanner.canonical import b64, canonical, unb64
from vigo.spanner.roster.records import (
    RosterError,
    check_bolt_id,
    check_federation_id,
    check_int,
    check_opaque_id,
    derive_id,
    exact_fields,
    framed,
    malformed,
    verify,
)

ROW_CONTEXT = b"vigo-roster-row-v1\x00"
ADMISSION_CONTEXT = b"vigo-roster-admission-v1\x00"

ACTIVE, DRAINING, REMOVED = "active", "draining", "removed"
STATUSES = (ACTIVE, DRAINING, REMOVED)
ADDRESS_KINDS = ("api", "envoy", "peer")
MAX_NAME = 64
MAX_PATTERNS = 64
MAX_SEQ = 2**53 - 1

_PATTERN = re.compile(r"[a-z0-9._*?\[\]!-]{1,253}\Z")
_ADDRESS = re.compile(r"(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9._-]{1,253}):([0-9]{1,5})\Z")
_ADDRESS_FIELDS = frozenset(ADDRESS_KINDS)
_BODY_FIELDS = ("federation_id", "bolt_id", "name", "public_key", "addresses", "patterns",
                "status", "seq", "admitted_by", "token_id")
_ROW_FIELDS = frozenset(
    ("federation_id", "bolt_id", "name", "public_key", "addresses", "patterns", "status",
     "seq", "admitted_by", "token_id", "signature", "admission")
)


def check_pattern(pattern):
    """A lower-case hostname glob (``*``, ``?``, ``[...]``), or ``RosterError``."""
    if type(pattern) is not str or not _PATTERN.match(pattern):
        raise malformed(
            "%r is not a hostname pattern (lower-case letters, digits, '.', '-', '_' "
            "and the glob characters * ? [ ] !, at most 253)" % (str(pattern)[:80],)
        )
    return pattern


@attr.s(frozen=True, slots=True)
class Addresses:
    """Where a bolt listens: ``envoy``, ``api`` and ``peer``, each ``host:port``."""

    envoy = attr.ib()
    api = attr.ib()
    peer = attr.ib()

    @classmethod
    def of(cls, value):
        """``value`` as ``Addresses``: already one, or a mapping of the three kinds."""
        if isinstance(value, cls):
            return cls.from_data(value.to_data())
        return cls.from_data(dict(value))

    def to_data(self):
        """The JSON-ready form."""
        return {"api": self.api, "envoy": self.envoy, "peer": self.peer}

    @classmethod
    def from_data(cls, data):
        """``Addresses`` from their JSON form, each checked to be ``host:port``."""
        exact_fields(data, _ADDRESS_FIELDS, "addresses")
        for kind in ADDRESS_KINDS:
            value = data[kind]
            match = _ADDRESS.match(value) if type(value) is str else None
            if match is None or not 1 <= int(match.group(1)) <= 65535:
                raise malformed("the %s address must be host:port, not %r" % (kind, str(value)[:80]))
        return cls(envoy=data["envoy"], api=data["api"], peer=data["peer"])


@attr.s(frozen=True, slots=True)
class AdmissionRow:
    """One bolt's membership row. See the module docstring for who signs what."""

    federation_id = attr.ib()
    bolt_id = attr.ib()
    name = attr.ib()
    public_key = attr.ib(repr=False)
    addresses = attr.ib()
    patterns = attr.ib()
    status = attr.ib()
    seq = attr.ib()
    admitted_by = attr.ib()
    token_id = attr.ib()
    signature = attr.ib(default=b"", repr=False)
    admission = attr.ib(default=b"", repr=False)
    _message = attr.ib(default=None, init=False, eq=False, repr=False, hash=False)

    @classmethod
    def found(cls, identity, federation_id, name, addresses, patterns):
        """The founder's row: seq 1, admitted by itself, no token."""
        row = cls._signed(identity, federation_id, name, addresses, patterns, 1, identity.id, None)
        return row.countersign(identity)

    @classmethod
    def applicant(cls, identity, federation_id, name, addresses, patterns, token_id, minter_id):
        """A joining bolt's row, signed by it, to be countersigned by ``minter_id``."""
        check_opaque_id(token_id, "token_id")
        check_bolt_id(minter_id, "minter_id")
        return cls._signed(identity, federation_id, name, addresses, patterns, 1, minter_id,
                           token_id)

    @classmethod
    def _signed(cls, identity, federation_id, name, addresses, patterns, seq, admitted_by,
                token_id, status=ACTIVE, admission=b""):
        if isinstance(patterns, str):
            raise TypeError("patterns is a list of globs, not one string: %r" % (patterns,))
        unsigned = cls(
            federation_id=federation_id, bolt_id=identity.id, name=name,
            public_key=identity.public_key, addresses=Addresses.of(addresses),
            patterns=tuple(sorted(set(patterns))), status=status, seq=seq,
            admitted_by=admitted_by, token_id=token_id,
        )
        data = unsigned.to_data()
        data["signature"] = b64(identity.sign(unsigned.message()))
        data["admission"] = b64(admission)
        return cls.from_data(data)  # every field checked on the way out too

    def countersign(self, minter):
        """This row with ``minter``'s admission signature (``minter`` is an Identity)."""
        if minter.id != self.admitted_by:
            raise RosterError("no_chain", "row %s names %s as its admitter, not %s"
                              % (self.bolt_id, self.admitted_by, minter.id))
        if derive_id(self.public_key) != self.bolt_id:
            raise RosterError("pin", "row %s does not carry the key of that id" % (self.bolt_id,))
        if not verify(self.public_key, self.message(), self.signature):
            raise RosterError("bad_signature", "row %s is not signed by its bolt" % (self.bolt_id,))
        return attr.evolve(self, admission=minter.sign(self.admission_message()))

    def successor(self, identity, **changes):
        """The next seq of this row, re-signed by the bolt; ``changes`` may set
        ``name``, ``addresses``, ``patterns`` or ``status``. The admission carries over."""
        if identity.id != self.bolt_id:
            raise RosterError("bad_signature", "only bolt %s signs its own row" % (self.bolt_id,))
        unknown = set(changes) - {"name", "addresses", "patterns", "status"}
        if unknown:
            raise TypeError("a successor row cannot change %s" % (", ".join(sorted(unknown)),))
        if self.status == REMOVED:
            raise RosterError("removed", "bolt %s is removed; removal is final" % (self.bolt_id,))
        return self._signed(
            identity, self.federation_id, changes.get("name", self.name),
            changes.get("addresses", self.addresses), changes.get("patterns", self.patterns),
            self.seq + 1, self.admitted_by, self.token_id,
            status=changes.get("status", self.status), admission=self.admission,
        )

    def body(self):
        """Every field the bolt's own signature covers, JSON-ready."""
        return {
            "federation_id": self.federation_id, "bolt_id": self.bolt_id, "name": self.name,
            "public_key": b64(self.public_key), "addresses": self.addresses.to_data(),
            "patterns": list(self.patterns), "status": self.status, "seq": self.seq,
            "admitted_by": self.admitted_by, "token_id": self.token_id,
        }

    def message(self):
        """The bytes the bolt signs (computed once per row)."""
        if self._message is None:
            object.__setattr__(self, "_message", ROW_CONTEXT + canonical(self.body()))
        return self._message

    def admission_message(self):
        """The bytes the admitter signs: the parts of the row that never change.

        The same bytes as ``canonical()`` of those fields, written out by hand
        (it runs once per row of every snapshot): every value here is an id,
        base64 or null, none of which JSON escapes.
        """
        token = b"null" if self.token_id is None else b'"%s"' % (self.token_id.encode(),)
        return ADMISSION_CONTEXT + (
            b'{"admitted_by":"%s","bolt_id":"%s","federation_id":"%s","public_key":"%s",'
            b'"token_id":%s}' % (self.admitted_by.encode(), self.bolt_id.encode(),
                                 self.federation_id.encode(), b64(self.public_key).encode(),
                                 token))

    @property
    def rank(self):
        """Per bolt, the greatest rank wins: seq, then (equivocation) signature bytes."""
        return (self.seq, self.signature, self.admission)

    def digest_bytes(self):
        """The framed bytes this row contributes to the roster digest."""
        return framed(self.message(), self.signature, self.admission)

    def to_data(self):
        """The JSON-ready form: the body plus both signatures in base64."""
        data = self.body()
        data["signature"] = b64(self.signature)
        data["admission"] = b64(self.admission)
        return data

    @classmethod
    def from_data(cls, data):
        """A row from its JSON form, every field checked (signatures are not)."""
        exact_fields(data, _ROW_FIELDS, "an admission row")
        name = data["name"]
        if type(name) is not str or not 1 <= len(name) <= MAX_NAME or not name.isprintable():
            raise malformed("a bolt name is 1 to %d printable characters" % (MAX_NAME,))
        patterns = data["patterns"]
        if type(patterns) is not list or len(patterns) > MAX_PATTERNS:
            raise malformed("patterns must be a list of at most %d globs" % (MAX_PATTERNS,))
        for pattern in patterns:
            check_pattern(pattern)
        status = data["status"]
        if type(status) is not str or status not in STATUSES:
            raise malformed("status must be one of %s" % (", ".join(STATUSES),))
        token_id = data["token_id"]
        if token_id is not None:
            check_opaque_id(token_id, "token_id")
        admission = data["admission"]
        row = cls(
            federation_id=check_federation_id(data["federation_id"]),
            bolt_id=check_bolt_id(data["bolt_id"]),
            name=name,
            public_key=unb64(data["public_key"], "public_key", 32, error=RosterError),
            addresses=Addresses.from_data(data["addresses"]),
            patterns=tuple(patterns),
            status=status,
            seq=check_int(data["seq"], "seq", 1, MAX_SEQ),
            admitted_by=check_bolt_id(data["admitted_by"], "admitted_by"),
            token_id=token_id,
            signature=unb64(data["signature"], "signature", 64, error=RosterError),
            admission=b"" if admission == "" else unb64(admission, "admission", 64, error=RosterError),
        )
        # Every value is checked and already in its canonical JSON form, so
        # the signed body can be encoded straight from the input.
        object.__setattr__(row, "_message", ROW_CONTEXT + canonical(
            {field: data[field] for field in _BODY_FIELDS}))
        return row
