"""A federation of bolts in one process, for join-convergence tests and benchmarks.

``JoinSimulation`` runs N bolts on a fake clock: real ``Roster`` objects (every
row and record signed and verified on merge), the real ``Gossiper`` on the
in-memory multicast bus, and tier-2 pulls driven by each bolt's
``on_digest_mismatch`` callback through the real ``sign_snapshot`` /
``open_snapshot`` / ``merge``, with a simulated round trip. ``admit()`` makes
the founder admit one more bolt, as ``Membership.admit`` does; ``converged()``
says when every bolt holds the founder's roster. Used by
tests/test_join_convergence.py and bench/convergence.py.
"""

import base64
import random

from twisted.internet.task import Clock

from vigo.config import GossipConfig
from vigo.identity import Identity
from vigo.spanner.canonical import canonical
from vigo.spanner.gossip.gossiper import Gossiper
from vigo.spanner.roster.crdt import Roster, RosterParts
from vigo.spanner.roster.records import ConsumedToken
from vigo.spanner.roster.rows import AdmissionRow
from vigo.spanner.roster.snapshot import open_snapshot, sign_snapshot
from vigo.testing.bus import FreezableClock, MulticastBus
from vigo.testing.gossip import MemoVerify

GROUP = "239.192.0.1"
PORT = 1532
RTT = 0.002


def _addresses(index):
    host = "10.%d.%d.%d" % (index >> 16, (index >> 8) & 255, index & 255)
    return host, {"envoy": host + ":1530", "api": host + ":8443", "peer": host + ":1533"}


class _Bolt:
    def __init__(self, index, identity, roster, clock, host):
        self.index = index
        self.identity = identity
        self.id = identity.id
        self.roster = roster
        self.clock = clock
        self.address = (host, PORT)
        self.gossiper = None
        self.in_flight = set()
        self.converged_at = None
        self.pulls = 0


class JoinSimulation:
    """``n - 1`` bolts (bolt 0 the founder) in one federation; ``admit()``
    brings in the n-th. ``rtt`` is the snapshot pull round trip (s)."""

    def __init__(self, n, *, seed=0, rtt=RTT, loss=0.0, interval=0.5):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.bus = MulticastBus(self.clock, loss=loss, seed=seed)
        self.rng = random.Random(seed)
        self.rtt = rtt
        self.interval = interval
        self.verify = MemoVerify()
        self.federation_id = base64.b32encode(self.rng.randbytes(10)).decode().lower()
        identities = [Identity(self.rng.randbytes(32)) for _ in range(n)]
        founder = identities[0]
        self._joiner_identity = identities[-1]
        host, addresses = _addresses(0)
        rows = [AdmissionRow.found(founder, self.federation_id, "bolt-0", addresses, ["*"])]
        records = []
        for i, identity in enumerate(identities[1:-1], 1):
            token = "t%d" % i
            row = AdmissionRow.applicant(identity, self.federation_id, "bolt-%d" % i,
                                         _addresses(i)[1], ["*.b%d.example.com" % i],
                                         token, founder.id)
            rows.append(row.countersign(founder))
            records.append(ConsumedToken.sign(founder, self.federation_id, token))
        roster = Roster(self.federation_id, founder.id)
        roster.merge(RosterParts(self.federation_id, founder.id, rows, (), records))
        assert roster.digest() is not None and len(roster.bolt_ids()) == n - 1
        self.bolts = [self._bolt(i, identity, roster.copy())
                      for i, identity in enumerate(identities[:-1])]
        self.founder = self.bolts[0]
        self.joiner = None
        self.admitted_at = None
        self.target = None

    def _bolt(self, index, identity, roster):
        host = _addresses(index)[0]
        bolt = _Bolt(index, identity, roster, FreezableClock(self.clock), host)
        config = GossipConfig(group=GROUP, port=PORT, interface=host, interval=self.interval,
                              multicast=True, seeds=())
        bolt.gossiper = Gossiper(
            bolt.clock, identity, roster, config, lambda: {"status": "active"},
            self.bus.listener(identity.id, bolt.address),
            on_digest_mismatch=lambda peer: self._pull(bolt, peer),
            rng=random.Random(self.rng.random()), verify=self.verify)
        return bolt

    # -- time -------------------------------------------------------------

    @property
    def now(self):
        return self.clock.seconds()

    def start(self):
        for bolt in self.bolts:
            bolt.gossiper.startService()
        return self

    def run(self, seconds, until=None):
        """Advance event by event for ``seconds``, or until ``until()`` holds."""
        clock = self.clock
        end = clock.seconds() + seconds
        clock.advance(0)
        calls = clock.calls
        while calls and calls[0].getTime() <= end:
            if until is not None and until():
                return
            clock.advance(max(0.0, calls[0].getTime() - clock.seconds()))
        if until is None or not until():
            clock.advance(end - clock.seconds())

    # -- the join -----------------------------------------------------------

    def admit(self):
        """The founder admits a new bolt, as ``Membership.admit`` does."""
        founder, identity = self.founder, self._joiner_identity
        index = len(self.bolts)
        token = "t%d" % index
        row = AdmissionRow.applicant(identity, self.federation_id, "bolt-%d" % index,
                                     _addresses(index)[1], ["*.b%d.example.com" % index],
                                     token, founder.id)
        founder.roster.add_row(row.countersign(founder.identity))
        founder.roster.consume(founder.identity, token)
        self.admitted_at = self.now
        self.target = founder.roster.digest()
        founder.converged_at = self.now
        body = canonical(sign_snapshot(founder.roster, founder.identity, self._ms()))
        founder.gossiper.send_now()  # as a LocalRoster change does
        self.clock.callLater(self.rtt / 2, self._joined, identity, body)

    def _joined(self, identity, body):
        """The joiner opens the minter's answer and starts as a member."""
        snapshot = open_snapshot(body, self.founder.identity.public_key, self.federation_id)
        roster = Roster(snapshot.parts.federation_id, snapshot.parts.founder_id)
        report = roster.merge(snapshot.parts)
        assert not report.rejected and roster.row(identity.id) is not None
        bolt = self._bolt(len(self.bolts), identity, roster)
        self.bolts.append(bolt)
        self.joiner = bolt
        self._check(bolt)
        bolt.gossiper.startService()

    def _ms(self):
        return int(self.now * 1000)

    def _pull(self, bolt, peer_id):
        """``on_digest_mismatch``: pull ``peer_id``'s snapshot, as ``SnapshotPuller.pull``."""
        if peer_id in bolt.in_flight:
            return
        peer = next((b for b in self.bolts if b.id == peer_id), None)
        if peer is None:
            return
        bolt.in_flight.add(peer_id)
        if not (self.bus.can_hear(bolt.id, peer.id) and self.bus.can_hear(peer.id, bolt.id)):
            # A partition cuts HTTP as well as gossip: the pull times out.
            self.clock.callLater(1.0, bolt.in_flight.discard, peer_id)
            return
        bolt.pulls += 1
        self.clock.callLater(self.rtt / 2, self._serve, bolt, peer)

    def _serve(self, bolt, peer):
        body = canonical(sign_snapshot(peer.roster, peer.identity, self._ms()))
        self.clock.callLater(self.rtt / 2, self._pulled, bolt, peer, body)

    def _pulled(self, bolt, peer, body):
        bolt.in_flight.discard(peer.id)
        roster = bolt.roster
        before = roster.digest()
        snapshot = open_snapshot(body, roster.key_of(peer.id), roster.federation_id)
        roster.merge(snapshot.parts)
        if roster.digest() != before:
            bolt.gossiper.send_now()  # as a LocalRoster change does
            self._check(bolt)

    def _check(self, bolt):
        if (self.target is not None and bolt.converged_at is None
                and bolt.roster.digest() == self.target):
            bolt.converged_at = self.now

    def converged(self):
        return (self.joiner is not None
                and all(b.converged_at is not None for b in self.bolts))
