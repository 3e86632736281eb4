"""A roster's contents as plain data, the digest that names them, and merge reports.

``RosterParts`` is what crosses a boundary: decoded from JSON (a snapshot, the
store) but not yet verified, or taken from a roster to be written out. The
digest is defined here, over the parts, so a puller can check that a
snapshot's contents are exactly what its server signed before it merges
anything, and so a roster computes the same digest from its own state.
"""

import base64
import collections
import hashlib
import os

import attr

from vigo.spanner.canonical import canonical
from vigo.spanner.roster.records import (
    ConsumedToken,
    Override,
    RemovalRecord,
    RosterError,
    check_bolt_id,
    check_federation_id,
    record_digest_bytes,
)
from vigo.spanner.roster.rows import AdmissionRow
from vigo.spanner.roster.steps import run_steps, sorting

FORMAT_VERSION = 1
MAX_ROWS = 100_000
MAX_REMOVALS = 100_000
MAX_CONSUMED = 1_000_000
MAX_OVERRIDES = 1_000_000

RECORD_KINDS = (RemovalRecord.KIND, ConsumedToken.KIND, Override.KIND)
_RECORD_CLASSES = {cls.KIND: cls for cls in (RemovalRecord, ConsumedToken, Override)}
_LIMITS = {"rows": MAX_ROWS, "removals": MAX_REMOVALS, "consumed": MAX_CONSUMED,
           "overrides": MAX_OVERRIDES}


def new_federation_id():
    """A fresh random federation id (16 lower-case base32 characters)."""
    return base64.b32encode(os.urandom(10)).decode("ascii").lower()


@attr.s(frozen=True)
class RosterParts:
    """A roster's contents as plain records: decoded, but not yet verified.

    ``Roster.merge`` takes these (from ``from_data``, a snapshot, the store)
    and verifies every record; ``Roster.parts()`` gives them for persistence.
    """

    federation_id = attr.ib()
    founder_id = attr.ib()
    rows = attr.ib(default=(), converter=tuple)
    removals = attr.ib(default=(), converter=tuple)
    consumed = attr.ib(default=(), converter=tuple)
    overrides = attr.ib(default=(), converter=tuple)

    def records(self):
        """Every non-row record, removals first."""
        return self.removals + self.consumed + self.overrides

    def to_data(self):
        """The JSON-ready form, each part sorted by its key."""
        data = {"version": FORMAT_VERSION, "federation_id": self.federation_id,
                "founder_id": self.founder_id}
        data["rows"] = [r.to_data() for r in sorted(self.rows, key=lambda r: (r.bolt_id, r.rank))]
        for kind in RECORD_KINDS:
            items = sorted(getattr(self, kind), key=_record_order)
            data[kind] = [record.to_data() for record in items]
        return data

    @classmethod
    def from_data(cls, data):
        """Parts from their JSON form; every type, size and count is checked
        (``RosterError`` with reason ``malformed`` if any is wrong)."""
        return run_steps(cls.decoding(data))

    @classmethod
    def decoding(cls, data):
        """``from_data`` in steps: a generator that yields None between items
        and returns the parts (see ``vigo.spanner.roster.steps``)."""
        names = frozenset(("version", "federation_id", "founder_id", "rows") + RECORD_KINDS)
        if type(data) is not dict or data.keys() != names:
            raise RosterError("malformed", "a roster must be an object with exactly the fields "
                              + ", ".join(sorted(names)))
        if data["version"] != FORMAT_VERSION or type(data["version"]) is not int:
            raise RosterError("malformed", "unknown roster format version %r"
                              % (str(data["version"])[:20],))
        lists = {}
        for name, limit in _LIMITS.items():
            items = data[name]
            if type(items) is not list or len(items) > limit:
                raise RosterError("malformed", "%s must be a list of at most %d" % (name, limit))
            lists[name] = items
        federation_id = check_federation_id(data["federation_id"])
        founder_id = check_bolt_id(data["founder_id"], "founder_id")
        decoded = {}
        for name, decode in (("rows", AdmissionRow.from_data),) + tuple(
                (kind, _RECORD_CLASSES[kind].from_data) for kind in RECORD_KINDS):
            items = decoded[name] = []
            for item in lists[name]:
                items.append(decode(item))
                yield
        return cls(federation_id, founder_id, decoded["rows"],
                   *[decoded[kind] for kind in RECORD_KINDS])


@attr.s(frozen=True)
class VerifiedParts(RosterParts):
    """``RosterParts`` with the results of the signature checks merging them
    needs, made beforehand (off the reactor thread: ``vigo.spanner.roster.verify``).

    ``checks`` maps ``(public key, message, signature)`` to whether it
    verified. ``Roster.merge`` looks a check up there before it would verify,
    and verifies only what it does not find, so the merge is the same as of
    the bare parts.
    """

    checks = attr.ib(factory=dict, eq=False, repr=False)

    @classmethod
    def of(cls, parts, checks):
        """``parts`` (``RosterParts``) with ``checks``."""
        return cls(parts.federation_id, parts.founder_id, parts.rows, parts.removals,
                   parts.consumed, parts.overrides, checks=checks)


def _record_order(record):
    return (record.key, record.signer_id, record.signature)


def parts_digest(parts):
    """The digest a roster holding exactly ``parts`` has (see ``Roster.digest``)."""
    return run_steps(digesting_parts(parts))


def digesting_parts(parts):
    """``parts_digest`` in steps (see ``vigo.spanner.roster.steps``)."""
    hashes = []
    ordered = yield from sorting(parts.rows, key=lambda r: (r.bolt_id, r.rank))
    h = hashlib.sha256()  # = section_hash() of the items in order
    for row in ordered:
        h.update(row.digest_bytes())
        yield
    hashes.append(h.digest())
    for kind in RECORD_KINDS:
        ordered = yield from sorting(getattr(parts, kind), key=_record_order)
        h = hashlib.sha256()
        for record in ordered:
            h.update(record_digest_bytes(record, parts.federation_id))
            yield
        hashes.append(h.digest())
    return roster_digest(parts.federation_id, parts.founder_id, hashes)


def section_hash(items):
    """The hash of one part: its items' digest bytes, in key order."""
    return hashlib.sha256(b"".join(items)).digest()


def roster_digest(federation_id, founder_id, section_hashes):
    """The digest of a roster from the hashes of its four parts."""
    h = hashlib.sha256(b"vigo-roster-digest-v1\x00")
    h.update(canonical({"version": FORMAT_VERSION, "federation_id": federation_id,
                        "founder_id": founder_id}))
    for section in section_hashes:
        h.update(section)
    return h.digest()


@attr.s(slots=True)
class MergeReport:
    """What one merge did: counts of accepted records by part, rejected ones
    by reason (``foreign``, ``pin``, ``bad_signature``, ``bad_admission``,
    ``no_chain``, ``unknown_signer``, ``stale``, ``equivocation``), and how many
    of the rejected were held back to be retried (no chain or unknown signer yet)."""

    accepted = attr.ib(factory=collections.Counter)
    rejected = attr.ib(factory=collections.Counter)
    held_back = attr.ib(default=0)
    duplicates = attr.ib(default=0)
    equivocations = attr.ib(default=0)

    @property
    def changed(self):
        """True when the roster (so its digest) changed."""
        return sum(self.accepted.values()) > 0

    def __str__(self):
        def show(counter):
            return ", ".join("%s %d" % item for item in sorted(counter.items())) or "none"

        return "accepted: %s; rejected: %s; held back %d; duplicates %d; equivocations %d" % (
            show(self.accepted), show(self.rejected), self.held_back, self.duplicates,
            self.equivocations)
