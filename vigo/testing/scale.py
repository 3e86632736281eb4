"""Federation scale in one process: many bolts, many envoys, one fake clock.

``ScaleSimulation`` grows a ``JoinSimulation`` (real signed ``Roster``s, the
real ``Gossiper`` on the in-memory bus, tier-2 pulls through the real
``sign_snapshot`` / ``open_snapshot`` / ``merge``) from its founder alone to
``bolts`` bolts, each admitted through the founder's ``admit()``. Bolt ``i``
serves ``*.b<i>.example.com`` (the founder, bolt 0, serves ``*``, so its
``b0`` envoys and anything no active bolt claims fall to it) and ``envoys``
envoys a bolt are named ``e<j>.b<i>.example.com`` (envoy id ``b<i>-e<j>``).

``churn()`` then changes the roster while gossip runs, the way the real code
does: overrides written by the bolt that accepts the envoy (``Roster.
write_override`` with the bolt's own ``HLC``, as ``LocalRoster.
write_override`` for ``accept-envoy``), some of them contested (two bolts
writing the same envoy at the same instant), one bolt turning ``draining``
(the next seq of its row, signed by itself, as ``OwnRow.publish``),
the founder taking over part of its envoys (as a drain does), and one more
bolt removed by another while its own row still says active (``Roster.
remove``, as ``Membership.remove`` with force for a bolt that cannot be reached).
``settle()`` runs the clock until every bolt's roster digest is the same.

``check_routing()`` then has every bolt route every envoy with the real
``owner_of`` against its own roster, and compares the answers across bolts
and with ``expected_owners()``: the design's rule applied to what the
scenario did (who was drained, removed, which override was written last),
computed without any roster. Used by tests/test_scale_sim.py and
bench/scale.py.
"""

import collections
import hashlib

import attr

from vigo.identity import Identity
from vigo.spanner import routing
from vigo.spanner.roster.hlc import HLC
from vigo.spanner.roster.rows import DRAINING
from vigo.spanner.routing import NoOwner, owner_of
from vigo.testing.join import RTT, JoinSimulation


def hostname(bolt, envoy):
    return "e%d.b%d.example.com" % (envoy, bolt)


def envoy_id(bolt, envoy):
    return "b%d-e%d" % (bolt, envoy)


@attr.s(frozen=True)
class RoutingCheck:
    """Every bolt's routing of every envoy, compared.

    ``digests``: distinct routing digests (1 when every bolt routes alike);
    ``wrong``: answers, summed over bolts, that differ from the expected owner;
    ``to_draining`` / ``to_removed``: answers naming such a bolt;
    ``overridden``: envoys whose winning override names an active bolt;
    ``ignored``: envoys whose winning override names a draining or removed bolt;
    ``fallen_to_founder``: envoys of draining or removed bolts the founder gets.
    """

    bolts = attr.ib()
    envoys = attr.ib()
    routes = attr.ib()
    digests = attr.ib()
    wrong = attr.ib()
    no_owner = attr.ib()
    to_draining = attr.ib()
    to_removed = attr.ib()
    overridden = attr.ib()
    ignored = attr.ib()
    fallen_to_founder = attr.ib()

    @property
    def identical(self):
        return self.digests == 1

    @property
    def ok(self):
        return (self.identical and not self.wrong and not self.no_owner
                and not self.to_draining and not self.to_removed)


class ScaleSimulation(JoinSimulation):
    """``bolts`` bolts (bolt 0 the founder) with ``envoys`` envoys each."""

    def __init__(self, bolts=64, envoys=5000, *, seed=0, rtt=RTT, loss=0.0, interval=0.5):
        if bolts < 4:
            raise ValueError("the scenario needs at least 4 bolts")
        JoinSimulation.__init__(self, 2, seed=seed, rtt=rtt, loss=loss, interval=interval)
        self.size = bolts
        self.envoys = envoys
        self.pairs = [(hostname(i, j), envoy_id(i, j))
                      for i in range(bolts) for j in range(envoys)]
        self.written = collections.defaultdict(list)  # envoy index -> [Override]
        self.draining, self.removed = set(), set()
        self._hlcs = {}
        self.changed_at = {}  # bolt id -> fake time its roster last changed
        self.admissions_done = None  # fake time of the last admission
        self.churn_done = None  # fake time of the last churn write

    # -- phase 1: found and admit ---------------------------------------

    def found(self, every=0.1, limit=60.0):
        """Start gossip, then the founder admits bolts 1 .. ``bolts - 1``, one
        every ``every`` s; run until every bolt holds the same roster. Returns
        the fake seconds from the last admission until then, or None."""
        if every <= self.rtt:
            raise ValueError("admit no faster than one join round trip")
        self.start()
        self.run(1.0)
        for index in range(1, self.size):
            if index > 1:  # JoinSimulation made the first joiner's identity
                self._joiner_identity = Identity(self.rng.randbytes(32))
            self.admit()
            self.admissions_done = self.changed_at[self.founder.id] = self.now
            self.run(every)
            assert len(self.bolts) == index + 1 and self.bolts[index].index == index
        return self.settle(self.admissions_done, limit)

    def agreed(self):
        """True when every bolt is admitted and all hold the same roster digest."""
        bolts = self.bolts
        if len(bolts) != self.size:
            return False
        digest = bolts[0].roster.digest()
        return all(bolt.roster.digest() == digest for bolt in bolts)

    def settle(self, since, limit=60.0):
        """Run until ``agreed()``: the fake seconds from ``since``, or None."""
        self.run(limit, until=self.agreed)
        return self.now - since if self.agreed() else None

    def each_since(self, since):
        """Per bolt, sorted: fake seconds from ``since`` until its roster last changed."""
        return sorted(max(0.0, self.changed_at.get(bolt.id, since) - since)
                      for bolt in self.bolts)

    def _joined(self, identity, body):
        JoinSimulation._joined(self, identity, body)
        self.changed_at[self.joiner.id] = self.now

    def _pulled(self, bolt, peer, body):
        before = bolt.roster.digest()
        JoinSimulation._pulled(self, bolt, peer, body)
        if bolt.roster.digest() != before:
            self.changed_at[bolt.id] = self.now

    def _wrote(self, bolt):
        self.changed_at[bolt.id] = self.now
        bolt.gossiper.send_now()

    # -- phase 2: churn while gossip runs ----------------------------------

    def _hlc(self, bolt):
        hlc = self._hlcs.get(bolt.id)
        if hlc is None:
            hlc = self._hlcs[bolt.id] = HLC(bolt.clock)
        return hlc

    def accept(self, bolt, envoy):
        """``bolt`` takes envoy number ``envoy`` and writes the override envoy
        -> itself, as ``LocalRoster.write_override``: nothing when its roster
        already says so; else signed at its HLC, merged, gossiped at once."""
        name = self.pairs[envoy][1]
        held = bolt.roster.override_of(name)
        if held is not None and held.bolt_id == bolt.id:
            return
        record = bolt.roster.write_override(bolt.identity, self._hlc(bolt), name, bolt.id)
        self.written[envoy].append(record)
        self._wrote(bolt)

    def set_draining(self, bolt):
        """The next seq of ``bolt``'s row, draining, signed by itself (``publish_status``)."""
        roster = bolt.roster
        roster.add_row(roster.row(bolt.id).successor(bolt.identity, status=DRAINING))
        self.draining.add(bolt.id)
        self._wrote(bolt)

    def remove(self, by, bolt):
        """``by`` records that ``bolt`` is removed (``Membership.remove``)."""
        by.roster.remove(by.identity, bolt.id, int(self.now * 1000))
        self.removed.add(bolt.id)
        self._wrote(by)

    def churn(self, overrides=1000, contested=50, handover=100, early=20, window=10.0):
        """Schedule the churn over the next ``window`` fake seconds, run it, and
        return the fake time of its last write.

        * ``overrides`` envoys, picked at random, each accepted by a random bolt;
        * ``contested`` envoys accepted by two bolts at the same instant;
        * ``early`` envoys accepted by each of the last two bolts before they
          stop taking envoys (their overrides must then be ignored);
        * at 20 % of the window bolt ``bolts - 2`` turns draining, and the
          founder (now its envoys' owner by pattern) takes ``handover`` of them;
        * from 30 % the founder takes ``handover`` envoys of bolt ``bolts - 1``,
          and at 60 % bolt 1 removes that bolt, undrained (``--force``).
        """
        rng, bolts = self.rng, self.bolts
        founder, drained, gone = bolts[0], bolts[-2], bolts[-1]
        movers = bolts[:-2]
        total = len(self.pairs)
        later = []

        def at(fraction, f, *args):
            later.append(window * fraction)
            self.clock.callLater(window * fraction, f, *args)

        for bolt in (drained, gone):
            for _ in range(early):
                at(rng.uniform(0, 0.15), self.accept, bolt, rng.randrange(total))
        at(0.2, self.set_draining, drained)
        for bolt, start in ((drained, 0.2), (gone, 0.3)):
            first = bolt.index * self.envoys
            for envoy in range(first, first + min(handover, self.envoys)):
                at(start + rng.uniform(0.01, 0.25), self.accept, founder, envoy)
        at(0.6, self.remove, bolts[1], gone)
        for _ in range(overrides):
            at(rng.random(), self.accept, rng.choice(movers), rng.randrange(total))
        for _ in range(contested):
            when, envoy = rng.random(), rng.randrange(total)
            for bolt in rng.sample(movers, 2):
                at(when, self.accept, bolt, envoy)
        start = self.now
        self.run(max(later))
        self.churn_done = start + max(later)
        return self.churn_done

    # -- routing -----------------------------------------------------------

    def _active(self, bolt_id):
        return bolt_id not in self.draining and bolt_id not in self.removed

    def winning_override(self, envoy):
        """The override last written for envoy number ``envoy`` by the LWW rule
        (greatest hybrid time, then writer id, then signature), or None."""
        records = self.written.get(envoy)
        if not records:
            return None
        return max(records, key=lambda r: (r.hlc, r.writer, r.signature))

    def expected_owners(self):
        """Every envoy's owner by the design's rule, worked out from what the
        scenario did, not from any roster: the winning override if its bolt is
        active, else bolt ``i`` for ``*.b<i>.example.com`` if active, else the
        founder (``*``)."""
        ids = [bolt.id for bolt in self.bolts]
        owners = []
        for i, bolt_id in enumerate(ids):
            owner = bolt_id if i and self._active(bolt_id) else ids[0]
            owners.extend([owner] * self.envoys)
        for envoy in self.written:
            record = self.winning_override(envoy)
            if record.bolt_id is not None and self._active(record.bolt_id):
                owners[envoy] = record.bolt_id
        return owners

    def route(self, bolt):
        """Bolt ``bolt``'s owner id for every envoy (None for ``NoOwner``),
        with the real ``owner_of`` on its own roster."""
        # Compiled tables are shared, per digest, by every roster in a process;
        # here each bolt stands for a process of its own, so it compiles its own.
        routing._tables.clear()
        roster = bolt.roster

        def owner(name, envoy):
            try:
                return owner_of(roster, name, envoy).bolt_id
            except NoOwner:
                return None

        return [owner(name, envoy) for name, envoy in self.pairs]

    def check_routing(self, bolts=None):
        """Route every envoy at each of ``bolts`` (default: all) and compare."""
        bolts = self.bolts if bolts is None else bolts
        expected = self.expected_owners()
        digests, wrong, counts = set(), 0, collections.Counter()
        for bolt in bolts:
            owners = self.route(bolt)
            digests.add(hashlib.sha256(
                "\n".join(o or "-" for o in owners).encode()).hexdigest())
            if owners != expected:
                wrong += sum(1 for a, b in zip(owners, expected, strict=True) if a != b)
            counts.update(owners)
        overridden = ignored = 0
        for envoy in self.written:
            record = self.winning_override(envoy)
            if record.bolt_id is not None:
                if self._active(record.bolt_id):
                    overridden += 1
                else:
                    ignored += 1
        founder = self.bolts[0].id
        fallen = sum(1 for bolt in self.bolts[1:] if not self._active(bolt.id)
                     for e in range(bolt.index * self.envoys, (bolt.index + 1) * self.envoys)
                     if expected[e] == founder)
        return RoutingCheck(
            bolts=len(bolts), envoys=len(self.pairs), routes=len(bolts) * len(self.pairs),
            digests=len(digests), wrong=wrong, no_owner=counts[None],
            to_draining=sum(counts[b] for b in self.draining - self.removed),
            to_removed=sum(counts[b] for b in self.removed),
            overridden=overridden, ignored=ignored, fallen_to_founder=fallen)
