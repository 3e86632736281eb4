"""An in-process federation of gossipers on one ``MulticastBus`` and one Clock.

The harness behind tests/test_gossip.py and bench/gossip_figures.py: N real
``Gossiper`` objects with real identities and signatures, a static roster
each, and the bus in place of the network, so a minute of gossip at 50 % loss
runs in about a second and gives the same answer every time for a seed.
"""

import random

from twisted.internet.task import Clock
from zope.interface import implementer

from vigo.config import GossipConfig
from vigo.identity import Identity
from vigo.interfaces.components import IRosterView
from vigo.spanner.gossip import datagram
from vigo.spanner.gossip.detector import DOWN
from vigo.spanner.gossip.gossiper import Gossiper
from vigo.testing.bus import FreezableClock, MulticastBus

GROUP = "239.192.0.1"
PORT = 1532


@implementer(IRosterView)
class StaticRoster:
    """A fixed roster view: admitted keys, removals and a settable digest."""

    def __init__(self, federation_id, keys, removed=(), digest=bytes(32)):
        self.federation_id = federation_id
        self.keys = dict(keys)
        self.removed = set(removed)
        self._digest = digest

    def key_of(self, bolt_id):
        return self.keys.get(bolt_id)

    def is_removed(self, bolt_id):
        return bolt_id in self.removed

    def digest(self):
        return self._digest

    def bolt_ids(self):
        return list(self.keys)

    def set_digest(self, digest):
        self._digest = digest


class MemoVerify:
    """``datagram.verify`` that remembers its answers. On the bus every
    receiver of one multicast write gets the same bytes, so checking them once
    is enough for a simulation (keyed on key, signature and message, so a
    tampered copy is still checked for real)."""

    def __init__(self):
        self._memo = {}

    def __call__(self, gossip, key):
        memo_key = (key, gossip.signature, gossip.message)
        answer = self._memo.get(memo_key)
        if answer is None:
            if len(self._memo) > 20_000:
                self._memo.clear()
            answer = self._memo[memo_key] = datagram.verify(gossip, key)
        return answer


class SimBolt:
    """One simulated bolt: identity, roster, clock view, gossiper, event log."""

    def __init__(self, index, identity, roster, clock, address):
        self.index = index
        self.identity = identity
        self.id = identity.id
        self.roster = roster
        self.clock = clock
        self.address = address
        self.events = []  # (time, peer, old, new)
        self.pulls = []  # (time, peer)
        self.gossiper = None

    def counters(self):
        return {"envoys_owned": 100 + self.index, "envoys_online": 90, "checkins": 12345,
                "enrollments": 7, "pushes": 3, "load_permille": 250, "status": "active"}


class Simulation:
    """N bolts gossiping on a bus. ``run(seconds)`` advances the shared clock
    event by event, so every timer fires at its exact time."""

    def __init__(self, n, *, seed=0, loss=0.0, delay=0.001, jitter=0.0, interval=0.5,
                 multicast=True, seeds=None, memo_verify=True, federation_id="fed-sim",
                 peer_addresses=False, **gossiper_options):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.bus = MulticastBus(self.clock, loss=loss, delay=delay, jitter=jitter, seed=seed)
        rng = random.Random(seed)
        identities = [Identity(rng.randbytes(32)) for _ in range(n)]
        keys = {identity.id: identity.public_key for identity in identities}
        verify = MemoVerify() if memo_verify else datagram.verify
        self.bolts = []
        for index, identity in enumerate(identities):
            address = ("10.%d.%d.%d" % (index >> 16, (index >> 8) & 255, index & 255), PORT)
            bolt = SimBolt(index, identity, StaticRoster(federation_id, keys),
                           FreezableClock(self.clock), address)
            config = GossipConfig(
                group=GROUP, port=PORT, interface=address[0], interval=interval,
                multicast=multicast,
                seeds=tuple("%s:%d" % seed for seed in (seeds(index) if seeds else ())))
            bolt.gossiper = Gossiper(
                bolt.clock, identity, bolt.roster, config, bolt.counters,
                self.bus.listener(identity.id, address),
                on_state_change=self._recorder(bolt), on_digest_mismatch=self._puller(bolt),
                peer_addresses=self._addresses if peer_addresses else None,
                rng=random.Random(rng.random()), verify=verify, **gossiper_options)
            self.bolts.append(bolt)

    def _recorder(self, bolt):
        def record(peer, old, new):
            bolt.events.append((self.clock.seconds(), peer, old, new))
        return record

    def _puller(self, bolt):
        def pull(peer):
            bolt.pulls.append((self.clock.seconds(), peer))
        return pull

    def _addresses(self):
        return {bolt.id: bolt.address for bolt in self.bolts}

    @property
    def now(self):
        return self.clock.seconds()

    def start(self):
        for bolt in self.bolts:
            bolt.gossiper.startService()
        return self

    def run(self, seconds):
        clock = self.clock
        end = clock.seconds() + seconds
        clock.advance(0)
        calls = clock.calls
        while calls and calls[0].getTime() <= end:
            clock.advance(max(0.0, calls[0].getTime() - clock.seconds()))
        clock.advance(end - clock.seconds())

    def kill(self, index):
        """Stop a bolt dead: no more sends, its socket closed."""
        self.bolts[index].gossiper.stopService()

    def freeze(self, index, seconds):
        """Freeze a bolt's process: no timers, incoming datagrams held."""
        bolt = self.bolts[index]
        bolt.clock.freeze(seconds)
        self.bus.freeze(bolt.id, seconds)

    def states(self, index):
        return {peer: info["state"] for peer, info in
                self.bolts[index].gossiper.peer_states().items()}

    def all_states(self, skip=()):
        """Every (observer, peer) state among bolts not in ``skip``."""
        out = set()
        for bolt in self.bolts:
            if bolt.index not in skip:
                out.update(self.states(bolt.index).values())
        return out

    def down_latencies(self, victim, since):
        """Per observer: seconds from ``since`` to its first down verdict on
        ``victim`` (None when it never came)."""
        victim_id = self.bolts[victim].id
        latencies = []
        for bolt in self.bolts:
            if bolt.index == victim:
                continue
            times = [t for t, peer, _, new in bolt.events
                     if peer == victim_id and new == DOWN and t >= since]
            latencies.append(times[0] - since if times else None)
        return latencies

    def false_downs(self, dead=(), since=None):
        """How many down verdicts were given on bolts not in ``dead``."""
        dead_ids = {self.bolts[i].id for i in dead}
        return sum(1 for bolt in self.bolts for t, peer, _, new in bolt.events
                   if new == DOWN and peer not in dead_ids and (since is None or t >= since))
