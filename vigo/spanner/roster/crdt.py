"""The roster: who is in the federation, as a state-based CRDT.

Four parts, each with a join: admission rows (per bolt the greatest seq wins;
equal seqs with different content -- equivocation -- resolve to the greater
signature bytes), removals and consumed join tokens (grow-only sets) and
envoy overrides (last writer wins by hybrid clock, then writer id). Merging
is therefore commutative, associative and idempotent, and bolts that have
seen the same records hold byte-identical rosters with equal digests.

Nothing enters unverified. A row must carry the key its id derives from (the
pin), belong to this federation, be signed by its own bolt, and be
countersigned by a bolt already in the roster -- which was itself admitted
the same way, back to the founder, whose row admits itself. A removed
admitter's earlier admissions stay valid: validity never depends on the
order things arrived in, or the merge would not be a join. For the same
reason a record signed by a bolt not (yet) in the roster, or a row whose
admitter is not (yet) here, is neither accepted nor forgotten: it is held
back in a bounded pending pool, counted, and retried at every merge, so
deliveries in any order converge to the same roster.

A merge is written in steps (``merging``): run at once it is ``merge``; a
bolt runs a big one in slices on its reactor thread. Its signature checks can
be made beforehand, off that thread (``checks_for`` lists them and
``VerifiedParts`` carries their results: ``vigo.spanner.roster.verify``); the
merge then looks each one up where it would verify, so it decides exactly as
it would have, in the same order.
"""

import collections
import hashlib
import itertools

import attr

from vigo.spanner.canonical import canonical
from vigo.spanner.roster.parts import (
    RECORD_KINDS,
    MergeReport,
    RosterParts,
    VerifiedParts,
    new_federation_id,
    parts_digest,
    roster_digest,
)
from vigo.spanner.roster.records import (
    ConsumedToken,
    Override,
    RemovalRecord,
    RosterError,
    derive_id,
    record_digest_bytes,
    verify,
)
from vigo.spanner.roster.rows import ACTIVE, DRAINING, REMOVED, AdmissionRow
from vigo.spanner.roster.steps import run_steps, sorting

MAX_PENDING = 100_000  # per pool (rows, records); the oldest go first

__all__ = [
    "AdmissionRow", "ConsumedToken", "MergeReport", "Override", "RemovalRecord", "Roster",
    "RosterError", "RosterParts", "new_federation_id", "parts_digest",
]


def _checker(checks):
    """The signature check a merge makes: ``verify``, or first a lookup in
    ``checks`` (results made beforehand, by ``(key, message, signature)``)."""
    if checks is None:
        return verify
    check = verify

    def checked(public_key, message, signature):
        ok = checks.get((public_key, message, signature))
        return check(public_key, message, signature) if ok is None else ok

    return checked


class Roster:
    """The replicated membership state of one federation, as seen by one bolt.

    Changes only through ``merge`` (or the helpers built on it). Reads are
    plain method calls on the reactor thread; hand ``parts()`` (immutable) to
    other threads.
    """

    def __init__(self, federation_id, founder_id):
        self.federation_id = federation_id
        self.founder_id = founder_id
        self._rows = {}
        self._records = {kind: {} for kind in RECORD_KINDS}
        self._record_bytes = {kind: {} for kind in RECORD_KINDS}
        self._pending_rows = {}  # locally verified rows waiting for their admitter
        self._pending_records = {}  # unverified records waiting for their signer
        self._section_hashes = {}
        self._digest = None
        self.rejections = collections.Counter()  # every rejection ever, by reason
        self.version = 0  # +1 at every merge (a change, or maybe one)

    @classmethod
    def found(cls, identity, federation_id, name, addresses, patterns):
        """A new federation's roster holding only ``identity``'s founder row."""
        roster = cls(federation_id, identity.id)
        roster.add_row(AdmissionRow.found(identity, federation_id, name, addresses, patterns))
        return roster

    def copy(self):
        """An independent roster with the same state and pending pool."""
        other = Roster(self.federation_id, self.founder_id)
        other._rows = dict(self._rows)
        other._records = {kind: dict(items) for kind, items in self._records.items()}
        other._record_bytes = {kind: dict(items) for kind, items in self._record_bytes.items()}
        other._pending_rows = dict(self._pending_rows)
        other._pending_records = dict(self._pending_records)
        other._section_hashes = dict(self._section_hashes)
        other._digest = self._digest
        return other

    # -- merging --------------------------------------------------------

    def merge(self, other):
        """Join ``other`` (a ``Roster`` or ``RosterParts``) into this roster.

        A ``Roster``'s state was verified on its way in and is taken as is;
        ``RosterParts`` are verified record by record (``VerifiedParts`` carry
        the results of those checks, made beforehand, off the reactor thread:
        see ``vigo.spanner.roster.verify``). Returns a ``MergeReport``.
        """
        return run_steps(self.merging(other))

    def merging(self, other):
        """``merge`` in steps: a generator that yields (None) between items and
        returns the ``MergeReport``, for a caller that runs a big merge in
        slices (``vigo.spanner.roster.steps.run_sliced``). Run to its end, it
        is ``merge``. Between steps the roster is half merged: slice only a
        private copy, and leave it alone until the merge ends."""
        self.version += 1
        report = MergeReport()
        if isinstance(other, Roster):
            trusted = other.parts()
            rows = list(other._pending_rows.values())
            records = list(other._pending_records)
            verified_rows = True
        else:
            trusted, rows, records, verified_rows = None, other.rows, other.records(), False
        check = _checker(other.checks if isinstance(other, VerifiedParts) else None)
        source = trusted if trusted is not None else other
        if (source.federation_id, source.founder_id) != (self.federation_id, self.founder_id):
            total = len(rows) + len(records) + (
                len(trusted.rows) + len(trusted.records()) if trusted is not None else 0)
            report.rejected["foreign"] += total
            self.rejections["foreign"] += total
            return report
        if trusted is not None:
            for row in trusted.rows:
                self._accept_row(row, report)
                yield
            for record in trusted.records():
                self._accept_record(record, report)
                yield
        waiting_rows = []
        for row in rows:
            waiting_rows.append(self._consider_row(row, report, verified_rows, check))
            yield
        yield from self._resolve_rows(report, check)
        waiting_records = []
        for record in records:
            waiting_records.append(self._consider_record(record, report))
            yield
        yield from self._resolve_records(report, check)
        for key in waiting_rows:
            if key is not None and key in self._pending_rows:
                report.rejected["no_chain"] += 1
                report.held_back += 1
        for record in waiting_records:
            if record is not None and record in self._pending_records:
                report.rejected["unknown_signer"] += 1
                report.held_back += 1
        self._trim_pending()
        self.rejections.update(report.rejected)
        return report

    def checks_for(self, parts):
        """The signature checks that merging the untrusted ``parts`` into this
        roster, as it is now, will make: a generator of ``(public key, message,
        signature)``, with a None between items that need none (a caller
        slices on those too).

        The same decisions as the merge, made ahead: rows and records already
        held (or beaten) need no check; a row's own signature needs its key;
        its admission needs its admitter's key, which the roster pins or a row
        in ``parts`` brings (the key pin makes it the only key of that id); a
        record needs its signer's key, found the same way. A check the merge
        then makes that is not among these (the roster changed meanwhile) is
        simply made then.
        """
        if (parts.federation_id, parts.founder_id) != (self.federation_id, self.founder_id):
            return
        rows = self._rows
        # bolt id -> key of the rows that may join the roster in this merge:
        # those held back already and those in ``parts``, each past the pin
        brought = {row.bolt_id: row.public_key for row in self._pending_rows.values()}
        admitted = []
        for row in parts.rows:
            if not self._to_check(row):
                yield None
                continue
            brought.setdefault(row.bolt_id, row.public_key)
            if (row.bolt_id, row.rank) in self._pending_rows:
                yield None  # its own signature was checked when it was held back
            else:
                yield (row.public_key, row.message(), row.signature)
            admitted.append(row)
        for row in itertools.chain(admitted, self._pending_rows.values()):
            admitter = row.admitted_by
            if (admitter == row.bolt_id) != (row.bolt_id == self.founder_id):
                key = None  # no chain: refused without a check
            elif admitter == row.bolt_id:
                key = row.public_key
            else:
                held = rows.get(admitter)
                key = held.public_key if held is not None else brought.get(admitter)
            yield None if key is None else (key, row.admission_message(), row.admission)
        for record in parts.records():
            held = self._records[record.KIND].get(record.key)
            if held is not None and (held == record or not record.wins_over(held)):
                yield None  # refused before any check
            else:
                yield self._record_check(record, brought)
        for record in self._pending_records:  # each is checked once its signer is here
            yield self._record_check(record, brought)

    def _to_check(self, row):
        """False when the merge refuses ``row`` before any check (as ``_consider_row``)."""
        held = self._rows.get(row.bolt_id)
        return not ((held is not None and (held == row or row.seq < held.seq))
                    or row.federation_id != self.federation_id
                    or derive_id(row.public_key) != row.bolt_id)

    def _record_check(self, record, brought):
        signer = self._rows.get(record.signer_id)
        key = signer.public_key if signer is not None else brought.get(record.signer_id)
        return None if key is None else (
            key, record.message(self.federation_id), record.signature)

    def held_back(self):
        """The pending pools as ``RosterParts``: rows waiting for their admitter,
        records for their signer (what a merge may take in besides its parts)."""
        kinds = {kind: [] for kind in RECORD_KINDS}
        for record in self._pending_records:
            kinds[record.KIND].append(record)
        return RosterParts(self.federation_id, self.founder_id, self._pending_rows.values(),
                           *[kinds[kind] for kind in RECORD_KINDS])

    def gained(self, base, *sources):
        """The rows and records of ``sources`` (``RosterParts``) that this
        roster holds and ``base`` (a ``Roster``) does not, the very objects, as
        ``RosterParts``. For a copy of ``base`` merged with ``parts``, given
        ``parts`` and what ``base.held_back()`` before, exactly what the merge
        took in. In steps (see ``merging``)."""
        rows, kinds = [], {kind: [] for kind in RECORD_KINDS}
        for source in sources:
            for row in source.rows:
                if self._rows.get(row.bolt_id) is row and base._rows.get(row.bolt_id) is not row:
                    rows.append(row)
                yield
            for record in source.records():
                held = self._records[record.KIND]
                if held.get(record.key) is record and (
                        base._records[record.KIND].get(record.key) is not record):
                    kinds[record.KIND].append(record)
                yield
        return RosterParts(self.federation_id, self.founder_id, rows,
                           *[kinds[kind] for kind in RECORD_KINDS])

    def adopt(self, other):
        """Take ``other``'s whole state (rows, records, pending pools): a merge
        of ``other`` when this roster's state is part of it -- ``other`` is a
        copy of this one, merged into since -- in constant time. ``other`` must
        not be used after."""
        self._rows, self._records = other._rows, other._records
        self._record_bytes = other._record_bytes
        self._pending_rows, self._pending_records = other._pending_rows, other._pending_records
        self._section_hashes, self._digest = other._section_hashes, other._digest
        self.version += 1

    def _reject(self, report, reason):
        report.rejected[reason] += 1
        return None

    def _consider_row(self, row, report, verified, check):
        """Local checks; a row that passes waits in the pending pool for its chain."""
        held = self._rows.get(row.bolt_id)
        if held is not None:
            if held == row:
                report.duplicates += 1
                return None
            if row.seq < held.seq:
                return self._reject(report, "stale")
        key = (row.bolt_id, row.rank)
        if key in self._pending_rows:
            report.duplicates += 1
            return key
        if row.federation_id != self.federation_id:
            return self._reject(report, "foreign")
        if derive_id(row.public_key) != row.bolt_id:
            return self._reject(report, "pin")
        if not verified and not check(row.public_key, row.message(), row.signature):
            return self._reject(report, "bad_signature")
        self_admitted = row.admitted_by == row.bolt_id
        if self_admitted != (row.bolt_id == self.founder_id):
            # Only the founder admits itself, and the founder admits only itself.
            return self._reject(report, "no_chain")
        self._pending_rows[key] = row
        return key

    def _resolve_rows(self, report, check):
        """Admit pending rows whose admitter is in the roster, transitively (steps)."""
        if not self._pending_rows:
            return
        waiting = collections.defaultdict(list)
        for key, row in list(self._pending_rows.items()):
            waiting[row.admitted_by].append(key)
            yield
        ready = collections.deque(
            admitter for admitter in waiting
            if admitter in self._rows or admitter == self.founder_id)
        while ready:
            admitter = ready.popleft()
            keys = waiting.pop(admitter, ())
            # The founder's own rows first: they make the founder an admitter
            # (otherwise in the order they came).
            keys = [k for k in keys if k[0] == admitter] + [k for k in keys if k[0] != admitter]
            for key in keys:
                yield
                row = self._pending_rows[key]
                if row.admitted_by == row.bolt_id:
                    admitter_key = row.public_key
                elif admitter in self._rows:
                    admitter_key = self._rows[admitter].public_key
                else:
                    continue  # the founder's row itself is not here yet
                del self._pending_rows[key]
                if not check(admitter_key, row.admission_message(), row.admission):
                    self._reject(report, "bad_admission")
                    continue
                new_bolt = row.bolt_id not in self._rows
                self._accept_row(row, report)
                if new_bolt and row.bolt_id in waiting:
                    ready.append(row.bolt_id)
        for key, row in list(self._pending_rows.items()):
            held = self._rows.get(row.bolt_id)
            if held is not None and row.rank <= held.rank:
                del self._pending_rows[key]  # it could never win now

    def _accept_row(self, row, report):
        held = self._rows.get(row.bolt_id)
        if held is not None:
            if held == row:
                report.duplicates += 1
                return
            if held.seq == row.seq:
                report.equivocations += 1
            if row.rank < held.rank:
                self._reject(report, "equivocation" if held.seq == row.seq else "stale")
                return
        self._rows[row.bolt_id] = row
        report.accepted["rows"] += 1
        self._section_hashes.pop("rows", None)
        self._digest = None

    def _consider_record(self, record, report):
        held = self._records[record.KIND].get(record.key)
        if held is not None:
            if held == record:
                report.duplicates += 1
                return None
            if not record.wins_over(held):
                return self._reject(report, "stale")
        if record in self._pending_records:
            report.duplicates += 1
        self._pending_records[record] = None
        return record

    def _resolve_records(self, report, check):
        for record in list(self._pending_records):
            signer = self._rows.get(record.signer_id)
            if signer is None:
                continue
            yield
            del self._pending_records[record]
            if check(signer.public_key, record.message(self.federation_id), record.signature):
                self._accept_record(record, report)
            else:
                self._reject(report, "bad_signature")

    def _accept_record(self, record, report):
        kind = record.KIND
        held = self._records[kind].get(record.key)
        if held is not None and not record.wins_over(held):
            if held == record:
                report.duplicates += 1
            else:
                self._reject(report, "stale")
            return
        self._records[kind][record.key] = record
        self._record_bytes[kind][record.key] = record_digest_bytes(record, self.federation_id)
        report.accepted[kind] += 1
        self._section_hashes.pop(kind, None)
        self._digest = None

    def _trim_pending(self):
        for pool in (self._pending_rows, self._pending_records):
            excess = len(pool) - MAX_PENDING
            if excess > 0:
                for key in list(pool)[:excess]:
                    del pool[key]

    # -- writing (sign, then merge like anything else) ------------------

    def add_row(self, row):
        """Merge one row (a founder's, a countersigned applicant's, a successor)."""
        return self.merge(RosterParts(self.federation_id, self.founder_id, rows=(row,)))

    def add_record(self, record):
        """Merge one ``RemovalRecord``, ``ConsumedToken`` or ``Override``."""
        parts = RosterParts(self.federation_id, self.founder_id,
                            **{record.KIND: (record,)})
        return self.merge(parts)

    def remove(self, identity, bolt_id, at_ms):
        """Record, signed by ``identity``, that ``bolt_id`` is removed for good."""
        return self.add_record(RemovalRecord.sign(identity, self.federation_id, bolt_id, at_ms))

    def consume(self, identity, token_id):
        """Record, signed by the minter ``identity``, that ``token_id`` is spent."""
        return self.add_record(ConsumedToken.sign(identity, self.federation_id, token_id))

    def new_override(self, identity, hlc, envoy_id, bolt_id):
        """An override, signed by ``identity``, giving ``envoy_id`` to ``bolt_id``
        (None clears it), ordered after the one it replaces (``hlc`` is this
        bolt's ``HLC``); not merged: merge it once it is persisted."""
        held = self._records[Override.KIND].get(envoy_id)
        if held is not None:
            hlc.observe(held.hlc)
        return Override.sign(identity, self.federation_id, envoy_id, bolt_id, hlc.now())

    def write_override(self, identity, hlc, envoy_id, bolt_id):
        """``new_override``, merged at once; the record."""
        record = self.new_override(identity, hlc, envoy_id, bolt_id)
        self.add_record(record)
        return record

    # -- reading ----------------------------------------------------------

    def row(self, bolt_id):
        """The bolt's current row (status ``removed`` if a removal is held), or None.

        A row read as removed because of a removal record is a view: its
        signature covers the status the bolt signed, not this one.
        """
        row = self._rows.get(bolt_id)
        if row is not None and row.status != REMOVED and bolt_id in self._records["removals"]:
            row = attr.evolve(row, status=REMOVED)
        return row

    def rows(self):
        """Every bolt's current row, by bolt id."""
        return [self.row(bolt_id) for bolt_id in sorted(self._rows)]

    def key_of(self, bolt_id):
        """The pinned public key (32 bytes) of a bolt in the roster, removed or not; or None."""
        row = self._rows.get(bolt_id)
        return None if row is None else row.public_key

    def bolt_for_key(self, public_key):
        """The row of the active or draining bolt holding ``public_key``, or None."""
        try:
            bolt_id = derive_id(bytes(public_key))
        except TypeError:
            return None
        row = self._rows.get(bolt_id)
        if (row is None or row.public_key != public_key or self.is_removed(bolt_id)
                or row.status not in (ACTIVE, DRAINING)):
            return None
        return row

    def is_removed(self, bolt_id):
        """True when the bolt is removed (a removal record, or its own row says so)."""
        if bolt_id in self._records["removals"]:
            return True
        row = self._rows.get(bolt_id)
        return row is not None and row.status == REMOVED

    def status_of(self, bolt_id):
        """``active``, ``draining`` or ``removed``; None for a bolt not in the roster."""
        row = self.row(bolt_id)
        return None if row is None else row.status

    def active_bolts(self):
        """Rows of the bolts that take new envoys (active, not removed), by bolt id."""
        return [row for bolt_id, row in sorted(self._rows.items())
                if row.status == ACTIVE and bolt_id not in self._records["removals"]]

    def bolt_ids(self):
        """Every bolt id in the roster (removed ones too), sorted."""
        return sorted(self._rows)

    def is_consumed(self, token_id):
        """True when join token ``token_id`` has been redeemed anywhere we heard of."""
        return token_id in self._records["consumed"]

    def override_of(self, envoy_id):
        """The winning ``Override`` for an envoy (its ``bolt_id`` may be None:
        cleared), or None when there never was one."""
        return self._records["overrides"].get(envoy_id)

    def overridden(self):
        """``(envoy_id, bolt_id)`` of every override that names a bolt."""
        return [(envoy_id, o.bolt_id) for envoy_id, o in self._records["overrides"].items()
                if o.bolt_id is not None]

    def removal_of(self, bolt_id):
        """The ``RemovalRecord`` held for a bolt, or None."""
        return self._records["removals"].get(bolt_id)

    def pending_count(self):
        """How many rows and records are held back, waiting for a chain or signer."""
        return len(self._pending_rows) + len(self._pending_records)

    def parts(self):
        """The state as immutable ``RosterParts`` (pending items excluded)."""
        return RosterParts(self.federation_id, self.founder_id, self._rows.values(),
                           *[self._records[kind].values() for kind in RECORD_KINDS])

    def digest(self):
        """SHA-256 over the canonical, sorted encoding of the whole state:
        every signed body and signature, part by part. Equal iff equal rosters."""
        if self._digest is None:
            run_steps(self.digesting())
        return self._digest

    def digesting(self):
        """``digest`` in steps (see ``merging``): hashes what changed since the
        last digest, item by item, and caches it; returns the digest."""
        version = self.version
        hashes = []
        for kind in ("rows",) + RECORD_KINDS:
            section = self._section_hashes.get(kind)
            if section is None:
                if kind == "rows":
                    items, digest_bytes = self._rows, AdmissionRow.digest_bytes
                else:
                    items, digest_bytes = self._record_bytes[kind], bytes
                h = hashlib.sha256()  # = section_hash() of the items in key order
                ordered = yield from sorting(items)
                for key in ordered:
                    h.update(digest_bytes(items[key]))
                    yield
                section = h.digest()
                if self.version != version:
                    return roster_digest(self.federation_id, self.founder_id, hashes)
                self._section_hashes[kind] = section
            hashes.append(section)
        self._digest = roster_digest(self.federation_id, self.founder_id, hashes)
        return self._digest

    def to_data(self):
        """The whole state, JSON-ready; ``Roster.from_data`` reads it back."""
        return self.parts().to_data()

    def encode(self):
        """``to_data()`` as canonical bytes."""
        return canonical(self.to_data())

    @classmethod
    def from_data(cls, data):
        """A roster from ``to_data()`` output, verified like any merge.

        A serialised roster is a state, so every record in it must verify:
        anything rejected or held back raises ``RosterError`` naming why.
        """
        parts = RosterParts.from_data(data)
        roster = cls(parts.federation_id, parts.founder_id)
        report = roster.merge(parts)
        if report.rejected:
            reason = sorted(report.rejected)[0]
            raise RosterError(reason, "the roster does not verify: %s" % (report,))
        return roster
