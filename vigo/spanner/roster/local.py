"""This bolt's copy of the roster, and the one way it changes.

``LocalRoster`` holds the ``Roster`` (None until the bolt founds or joins a
federation) and is the roster view the rest of the bolt reads: gossip
(``IRosterView``), the peer portal (``IPeerRoster``), routing, the admin
reads. Every change goes through it, and every change is persisted before it
is taken in: ``become`` (the first roster: founded or joined), ``commit`` (a
changed copy: an admission, a removal, this bolt's own new row), ``merge`` (a
pulled snapshot's parts) and ``write_override``. Listeners hear of each:
``on_member`` once the bolt holds a roster, ``on_change`` after every change
(gossip then sends at once, so the new digest spreads within a tick).
"""

import gc

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from vigo.identity import key_fingerprint
from vigo.interfaces.components import ILocalRoster
from vigo.interfaces.errors import Refusal
from vigo.spanner.roster.hlc import HLC
from vigo.spanner.roster.parts import RosterParts
from vigo.spanner.roster.steps import run_sliced, run_steps
from vigo.spanner.roster.store import load_roster, save_roster
from vigo.store import shielded

#: The digest of no roster at all (a bolt not in a federation yet).
NO_DIGEST = b"\x00" * 32
#: Merges of more rows and records than this run in slices (``merge``).
SLICED_MERGE = 256

NOT_MEMBER = ("this bolt is not in a federation yet: 'vigocli spanner init' founds one, "
              "'vigocli spanner bolt join TOKEN' joins one")
REMOVED_HINT = ("this bolt was removed from the federation: the other bolts refuse its "
                "gossip and peer calls, and its identity cannot join again; stop it")


@implementer(ILocalRoster)
class LocalRoster:
    """The roster of the bolt whose ``identity`` this is, kept in ``store``
    (an ``IStore``); ``clock`` (an ``IReactorTime``) drives its hybrid clock."""

    log = Logger()

    def __init__(self, store, identity, clock):
        self.current = None
        self.hlc = HLC(clock)
        self._clock = clock
        self._store = store
        self._identity = identity
        self._member_listeners = []
        self._change_listeners = []
        self._removed_said = False

    # -- listeners ----------------------------------------------------------------

    def on_member(self, listener):
        self._member_listeners.append(listener)
        if self.current is not None:
            listener(self.current)

    def on_change(self, listener):
        self._change_listeners.append(listener)

    def _changed(self):
        self._check_removed()
        for listener in list(self._change_listeners):
            try:
                listener()
            except Exception:
                self.log.failure("a roster change listener failed")

    def _check_removed(self):
        if not self._removed_said and self.current.is_removed(self._identity.id):
            self._removed_said = True
            self.log.warn("bolt {id}: {hint}", id=self._identity.id, hint=REMOVED_HINT)

    # -- changes --------------------------------------------------------------------

    @defer.inlineCallbacks
    def load(self):
        roster = yield self._store.run(load_roster)
        if roster is not None:
            self._take(roster)
        else:
            self.log.info("spanner bolt {id} is not in a federation yet: found one with "
                          "'vigocli spanner init' or join with 'vigocli spanner bolt join TOKEN'",
                          id=self._identity.id)
        return roster

    def become(self, roster):
        if self.current is not None:
            return defer.fail(Refusal(
                "already_member", "this bolt is already a member of federation %s"
                % (self.current.federation_id,)))
        parts = roster.parts()
        d = self._store.run(save_roster, parts)
        return shielded(d.addCallback(lambda _: self._take(roster) or roster))

    def _take(self, roster):
        self.current = roster
        self._check_removed()
        for listener in list(self._member_listeners):
            listener(roster)
        self._changed()

    def commit(self, candidate, job=None):
        """Persist ``candidate``, then merge it in.

        Merged, not swapped: two changes built on copies of the same roster
        (two admissions, a pull and an admission) both survive. Each was
        persisted by an upsert, so the database holds their union too. The
        merge follows the write even if the caller stops waiting (a timeout):
        memory never falls behind the database.
        """
        d = self._store.run(save_roster, candidate.parts()) if job is None else \
            self._store.run(job)

        def taken_in(_):
            self.current.merge(candidate)
            self._changed()
            return candidate

        return shielded(d.addCallback(taken_in))

    @defer.inlineCallbacks
    def merge(self, parts):
        """Merge ``parts`` into a copy, persist what it took in, take the copy in.

        A big merge (more than ``SLICED_MERGE`` rows and records) runs in
        slices on the reactor thread, so check-ins go on meanwhile; hand it
        ``VerifiedParts`` (``vigo.spanner.roster.verify``) and it verifies
        nothing itself. When the roster did not change meanwhile, taking the
        copy in is adopting its state (no second merge); otherwise it is
        merged in, as ``commit`` does. Cancelled while it merges, it drops
        the copy; once the copy is being written, it is taken in regardless.
        """
        roster = self.require_member()
        version = roster.version
        held_back = roster.held_back()
        candidate = roster.copy()
        if not isinstance(parts, RosterParts):  # a Roster: what it holds, as before
            report = candidate.merge(parts)
            taken = candidate.parts()
        elif len(parts.rows) + len(parts.records()) <= SLICED_MERGE:
            report = candidate.merge(parts)
            taken = run_steps(candidate.gained(roster, parts, held_back))
        else:
            # The parts, then the merged copy, are the roster from now on: keep
            # the collector's full passes off their tens of thousands of
            # objects, as the server does with what it loads
            # (vigo.server.service); one such pass, in whichever thread
            # allocates next, stalls the reactor for milliseconds.
            gc.freeze()
            report = yield run_sliced(self._clock, candidate.merging(parts))
            yield run_sliced(self._clock, candidate.digesting())
            taken = yield run_sliced(self._clock, candidate.gained(roster, parts, held_back))
            gc.freeze()
        if candidate.digest() != roster.digest():
            # What the merge took in: the rest is on disk already (every change
            # is), and saving a whole big roster for each pull that brings
            # one record is most of that pull's cost.
            d = self._store.run(save_roster, taken)

            def taken_in(_):
                if self.current is roster and roster.version == version:
                    roster.adopt(candidate)
                else:
                    self.current.merge(candidate)
                self._changed()

            yield shielded(d.addCallback(taken_in))
        return report

    def write_override(self, envoy_id, bolt_id):
        try:
            roster = self.require_member()
        except Refusal:
            return defer.fail()
        held = roster.override_of(envoy_id)
        if held is not None and held.bolt_id == bolt_id:
            return defer.succeed(held)
        record = roster.new_override(self._identity, self.hlc, envoy_id, bolt_id)
        # Persist just this record (a drain writes thousands: saving the whole
        # roster each time made a drain quadratic), then take it in.
        parts = RosterParts(roster.federation_id, roster.founder_id, overrides=(record,))

        def taken_in(_):
            self.current.add_record(record)
            self._changed()
            return record

        return shielded(self._store.run(save_roster, parts).addCallback(taken_in))

    def require_member(self):
        if self.current is None:
            raise Refusal("not_member", NOT_MEMBER)
        return self.current

    # -- reading (every call cheap: gossip asks on every datagram) -------------------

    @property
    def federation_id(self):
        return None if self.current is None else self.current.federation_id

    def key_of(self, bolt_id):
        return None if self.current is None else self.current.key_of(bolt_id)

    def is_removed(self, bolt_id):
        return self.current is not None and self.current.is_removed(bolt_id)

    def digest(self):
        return NO_DIGEST if self.current is None else self.current.digest()

    def bolt_ids(self):
        return () if self.current is None else self.current.bolt_ids()

    def bolt_for_key(self, public_key):
        return None if self.current is None else self.current.bolt_for_key(public_key)

    def row(self, bolt_id):
        return None if self.current is None else self.current.row(bolt_id)

    def status_of(self, bolt_id):
        return None if self.current is None else self.current.status_of(bolt_id)

    def locate(self, bolt_id):
        row = self.row(bolt_id)
        if row is None:
            return None
        return row.addresses.peer, key_fingerprint(row.public_key)
