"""Tier-1 gossip in-process: liveness, failure detection, partitions, pulls,
unicast mode, datagram size and bandwidth, all on a Clock and the in-memory
bus; plus one exchange over real sockets on the loopback interface.

Targets (../shared/design/targets.md, Federation): a killed bolt marked down by
every other bolt p50 <= 3 s, p99 <= 4.5 s at 500 ms gossip for N = 3, 8, 32;
no false down in 60 s at 50 % loss (N = 10), none for a bolt frozen <= 2 s;
datagrams <= 1,400 bytes; <= 15 KB/s per bolt at N = 10, <= 50 KB/s at N = 40.
"""

import random
import socket
import statistics

from twisted.internet import defer, reactor
from twisted.internet.error import CannotListenError
from twisted.internet.task import Clock
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from vigo.config import GossipConfig
from vigo.identity import Identity
from vigo.interfaces.components import IRosterView
from vigo.spanner.gossip.datagram import MAX_DATAGRAM
from vigo.spanner.gossip.detector import FailureDetector, thresholds
from vigo.spanner.gossip.gossiper import Gossiper, listener_for
from vigo.testing.bus import MulticastBus
from vigo.testing.gossip import Simulation, StaticRoster


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class LivenessTests(unittest.TestCase):
    def test_static_roster_is_a_roster_view(self):
        verifyObject(IRosterView, StaticRoster("f", {}))

    def check_all_alive(self, n):
        sim = Simulation(n, seed=n).start()
        sim.run(2.5)
        self.assertEqual(sim.all_states(), {"alive"})
        states = sim.bolts[0].gossiper.peer_states()
        self.assertEqual(len(states), n - 1)
        peer = sim.bolts[1]
        info = states[peer.id]
        self.assertEqual(info["counters"]["envoys_owned"], 100 + peer.index)
        self.assertLess(info["counters_age"], 0.7)
        self.assertLess(info["last_heard"], 0.7)
        self.assertEqual(sim.false_downs(), 0)

    def test_all_alive_3(self):
        self.check_all_alive(3)

    def test_all_alive_32(self):
        self.check_all_alive(32)

    def kill_latencies(self, n, seeds):
        latencies = []
        for seed in seeds:
            sim = Simulation(n, seed=seed).start()
            sim.run(2 + random.Random(seed).random())
            victim = seed % n
            killed_at = sim.now
            sim.kill(victim)
            sim.run(4.6)
            observed = sim.down_latencies(victim, killed_at)
            self.assertNotIn(None, observed)
            self.assertEqual(sim.false_downs(dead=[victim]), 0)
            latencies += observed
        return latencies

    def check_kill(self, n, seeds):
        latencies = self.kill_latencies(n, seeds)
        self.assertLessEqual(statistics.median(latencies), 3.0)
        self.assertLessEqual(percentile(latencies, 0.99), 4.5)

    def test_killed_bolt_down_3(self):
        self.check_kill(3, range(12))

    def test_killed_bolt_down_8(self):
        self.check_kill(8, range(6))

    def test_killed_bolt_down_32(self):
        self.check_kill(32, range(2))

    def test_no_false_downs_at_half_loss(self):
        sim = Simulation(10, seed=5, loss=0.5).start()
        sim.run(60)
        self.assertEqual(sim.false_downs(), 0)
        self.assertGreater(sim.bus.lost, 1000)
        self.assertLessEqual(sim.all_states(), {"alive", "suspect"})

    def test_frozen_bolt_never_down(self):
        sim = Simulation(8, seed=7).start()
        sim.run(2)
        for round_ in range(8):
            sim.freeze(round_ % 8, 2.0)
            sim.run(2.0 + random.Random(round_).uniform(0.5, 2))
        self.assertEqual(sim.false_downs(), 0)
        sim.run(1)
        self.assertEqual(sim.all_states(), {"alive"})

    def test_partition_then_heal(self):
        sim = Simulation(32, seed=11).start()
        sim.run(2)
        left = [b.id for b in sim.bolts[:16]]
        sim.bus.partition(left, [b.id for b in sim.bolts[16:]])
        sim.run(3.6)
        states = sim.states(0)
        self.assertEqual({states[b] for b in left[1:]}, {"alive"})
        self.assertEqual({s for b, s in states.items() if b not in left}, {"down"})
        sim.bus.heal()
        sim.run(1.0)
        self.assertEqual(sim.all_states(), {"alive"})

    def test_restarted_bolt_is_alive_again(self):
        sim = Simulation(4, seed=3).start()
        sim.run(2)
        old = sim.bolts[2].gossiper
        old.stopService()
        sim.run(4)
        self.assertEqual(sim.states(0)[old.id], "down")
        new = Gossiper(old.clock, old.identity, old.roster, old.config, dict,
                       sim.bus.listener(old.id, sim.bolts[2].address),
                       rng=random.Random(9), incarnation=old.incarnation + 6000)
        new.startService()
        self.addCleanup(new.stopService)
        sim.bolts[2].gossiper = new
        sim.run(1)
        self.assertEqual(sim.all_states(), {"alive"})
        self.assertEqual(sim.bolts[0].gossiper.peer_states()[old.id]["incarnation"],
                         new.incarnation)

    def test_removed_bolt_is_forgotten(self):
        sim = Simulation(3, seed=2).start()
        sim.run(2)
        gone = sim.bolts[2].id
        roster = sim.bolts[0].roster
        roster.removed.add(gone)
        roster.set_digest(b"\x01" * 32)
        sim.run(1)
        self.assertNotIn(gone, sim.bolts[0].gossiper.peer_states())
        self.assertGreater(sim.bolts[0].gossiper.stats()["dropped"]["removed"], 0)


class PullTests(unittest.TestCase):
    def test_digest_mismatch_asks_for_pulls_rate_limited(self):
        sim = Simulation(5, seed=4).start()
        sim.run(2)
        changed = sim.bolts[0]
        changed.roster.set_digest(b"\x02" * 32)
        changed_at = sim.now
        sim.run(5)
        for bolt in sim.bolts[1:]:
            # each asks the changed bolt once, within a tick and a jitter
            self.assertEqual([peer for _, peer in bolt.pulls], [changed.id])
            self.assertLess(bolt.pulls[0][0] - changed_at, 0.6 + 0.25 + 0.01)
        # the changed bolt sees four others with one digest: asks each once at most,
        # never two requests closer than the spacing (half an interval)
        times = [t for t, _ in changed.pulls]
        self.assertEqual(len(set(p for _, p in changed.pulls)), len(changed.pulls))
        self.assertTrue(all(b - a >= 0.25 - 1e-9 for a, b in zip(times, times[1:], strict=False)))
        for bolt in sim.bolts[1:]:
            bolt.roster.set_digest(b"\x02" * 32)
        sim.run(1)  # a request may still act on a digest heard before the change
        before = sum(len(b.pulls) for b in sim.bolts)
        sim.run(20)
        self.assertEqual(sum(len(b.pulls) for b in sim.bolts), before)


class PullCostTests(unittest.TestCase):
    """A slow pull spaces out the next: pulls take about ``busy_share`` of the time."""

    def test_the_next_request_waits_ten_times_the_last_pull(self):
        import random as _random

        from twisted.internet.task import Clock

        from vigo.spanner.gossip.pulls import PullRequests

        clock, asked, pulls = Clock(), [], []

        def pull(bolt_id):
            asked.append(clock.seconds())
            d = defer.Deferred()
            pulls.append(d)
            return d

        requests = PullRequests(clock, _random.Random(1), pull,
                                lambda: {"peer%d" % len(asked): b"x"}, jitter=0.0,
                                spacing=0.25, repeat=10.0)
        requests.mismatch(clock.seconds())
        clock.advance(0)
        self.assertEqual(asked, [0.0])
        clock.advance(0.2)
        pulls[0].callback("a merge report")  # it took 0.2 s: the next waits 2 s
        self.assertAlmostEqual(requests.last_cost, 0.2)
        requests.mismatch(clock.seconds())
        clock.advance(1.79)
        self.assertEqual(len(asked), 1)
        clock.advance(0.02)
        self.assertEqual(len(asked), 2)
        pulls[1].callback("a merge report")  # instant: back to the spacing
        requests.mismatch(clock.seconds())
        clock.advance(0.25)
        self.assertEqual(len(asked), 3)
        clock.advance(10.0)
        pulls[2].callback(None)  # failed or timed out after 10 s: that says nothing
        self.assertEqual(requests.last_cost, 0.0)
        requests.mismatch(clock.seconds())
        clock.advance(0.25)
        self.assertEqual(len(asked), 4)


def unicast_sim(n, **options):
    return Simulation(n, multicast=False, seeds=lambda i: [] if i == 0 else [("10.0.0.0", 1532)],
                      **options)


class UnicastTests(unittest.TestCase):
    def test_seeds_bootstrap_and_peers_are_learned(self):
        sim = unicast_sim(4, seed=8).start()
        sim.run(3)
        founder = sim.bolts[0].gossiper
        self.assertEqual(set(founder.cache.addresses()), {b.id for b in sim.bolts[1:]})
        self.assertEqual(sim.all_states(), {"alive"})

    def test_peer_addresses_give_a_full_mesh(self):
        sim = unicast_sim(10, seed=8, peer_addresses=True).start()
        sim.run(3)
        t = sim.now
        sim.kill(0)  # the only seed
        sim.run(4.6)
        self.assertNotIn(None, sim.down_latencies(0, t))
        self.assertEqual(sim.all_states(skip=[0]), {"alive", "down"})
        self.assertEqual(sim.false_downs(dead=[0]), 0)

    def test_isolated_bolt_keeps_retrying_seeds_and_peers(self):
        sim = unicast_sim(3, seed=8, peer_addresses=True).start()
        sim.run(3)
        sim.kill(0)
        sim.kill(2)
        sim.run(300)
        lonely = sim.bolts[1]
        sent = sim.bus.sent_to
        self.assertGreater(sent[(lonely.id, ("10.0.0.0", 1532))], 500)
        self.assertGreater(sent[(lonely.id, sim.bolts[2].address)], 0)
        states = lonely.gossiper.peer_states().values()
        self.assertEqual({info["state"] for info in states}, {"down"})


class BudgetTests(unittest.TestCase):
    def test_datagram_size_32_and_64(self):
        for n in (32, 64):
            sim = Simulation(n, seed=1).start()
            sim.run(1.5)
            self.assertLessEqual(sim.bus.largest, MAX_DATAGRAM)
            last = sim.bolts[0].gossiper
            self.assertEqual(len(last._peer_entries(sim.now)), n - 1)

    def rates(self, sim, seconds=2.0):
        sim.run(2)
        before = dict(sim.bus.sent_bytes)
        sim.run(seconds)
        return [(sim.bus.sent_bytes[b.id] - before[b.id]) / seconds for b in sim.bolts]

    def test_bytes_per_second(self):
        for n, limit in ((10, 15_000), (40, 50_000)):
            multicast = self.rates(Simulation(n, seed=2).start())
            unicast = self.rates(unicast_sim(n, seed=2, peer_addresses=True).start())
            self.assertLessEqual(max(multicast), limit)
            self.assertLessEqual(max(unicast), limit)


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RealSocketTests(unittest.TestCase):
    """Two gossipers on the real reactor and loopback, one datagram each way."""

    def pair(self, multicast):
        ids = [Identity(bytes([40 + i]) * 32) for i in range(2)]
        roster_keys = {i.id: i.public_key for i in ids}
        group = "239.192.%d.%d" % (random.randrange(1, 255), random.randrange(1, 255))
        ports = [free_udp_port()] * 2 if multicast else [free_udp_port(), free_udp_port()]
        heard = [defer.Deferred(), defer.Deferred()]
        gossipers = []
        for k, identity in enumerate(ids):
            other = ports[1 - k]
            config = GossipConfig(group=group, port=ports[k], interface="127.0.0.1",
                                  interval=0.05, multicast=multicast,
                                  seeds=() if multicast else ("127.0.0.1:%d" % other,))
            g = Gossiper(reactor, identity, StaticRoster("fed-real", roster_keys), config,
                         dict, listener_for(reactor, config), rng=random.Random(k))
            g.datagram_received = self.noting(g.datagram_received, g, heard[k])
            g.startService()
            self.addCleanup(g.stopService)
            gossipers.append(g)
        return gossipers, defer.gatherResults(heard)

    def noting(self, receive, gossiper, d):
        def datagram_received(data, address):
            receive(data, address)
            if gossiper.stats()["accepted"] and not d.called:
                d.callback(address)
        return datagram_received

    @defer.inlineCallbacks
    def test_multicast_on_loopback(self):
        try:
            gossipers, heard = self.pair(multicast=True)
        except (OSError, CannotListenError) as e:
            raise unittest.SkipTest("the kernel refuses multicast on lo: %s" % (e,)) from None
        timeout = reactor.callLater(3, heard.cancel)
        try:
            yield heard
        except defer.CancelledError:
            errors = [g.stats()["multicast_errors"] for g in gossipers]
            raise unittest.SkipTest(
                "no multicast delivery on lo (join errors: %s)" % errors) from None
        timeout.cancel()
        for g in gossipers:
            self.assertEqual(g.peer_states()[gossipers[1 - gossipers.index(g)].id]["state"],
                             "alive")
            self.assertEqual(g._protocol.transport.getTTL(), 1)

    @defer.inlineCallbacks
    def test_unicast_on_loopback(self):
        gossipers, heard = self.pair(multicast=False)
        timeout = reactor.callLater(3, heard.cancel)
        addresses = yield heard
        timeout.cancel()
        self.assertEqual([a[0] for a in addresses], ["127.0.0.1", "127.0.0.1"])
        self.assertEqual(sum(g.stats()["dropped"]["bad_signature"] for g in gossipers), 0)


class ClockTests(unittest.TestCase):
    def test_sends_are_jittered_on_the_injected_clock(self):
        clock = Clock()
        bus = MulticastBus(clock)
        me = Identity(b"\x01" * 32)
        config = GossipConfig(group="239.192.0.2", port=1, interface="10.0.0.1", interval=0.5,
                              multicast=True, seeds=())
        g = Gossiper(clock, me, StaticRoster("f", {me.id: me.public_key}), config, dict,
                     bus.listener(me.id, ("10.0.0.1", 1)), rng=random.Random(3))
        g.startService()
        times = []
        for _ in range(400):
            clock.advance(0.01)
            if g.seq > len(times):
                times.append(clock.seconds())
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        self.assertTrue(all(0.39 <= gap <= 0.61 for gap in gaps))
        self.assertGreater(max(gaps) - min(gaps), 0.1)
        g.stopService()
        self.assertEqual(clock.getDelayedCalls(), [])


class DetectorTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.changes = []
        suspect, down = thresholds(0.5)
        self.assertEqual((suspect, down), (1.5, 3.0))
        self.detector = FailureDetector(self.clock, suspect, down,
                                        lambda *change: self.changes.append(change))

    def test_unknown_goes_down_when_never_heard(self):
        self.detector.track("x")
        self.clock.advance(2.9)
        self.assertEqual(self.detector.state("x"), "unknown")
        self.clock.advance(0.1)
        self.assertEqual(self.changes, [("x", "unknown", "down")])

    def test_track_many_is_track_of_each(self):
        self.detector.heard("x", self.clock.seconds())
        self.clock.advance(1.0)
        self.detector.track_many(["x", "y", "z"])
        self.detector.track_many([])
        self.assertEqual(set(self.detector), {"x", "y", "z"})
        self.clock.advance(3.0)  # y and z never heard: down 3 s after they were tracked
        self.assertEqual(sorted(self.changes), [("x", "alive", "down"),
                                                ("x", "unknown", "alive"),
                                                ("y", "unknown", "down"),
                                                ("z", "unknown", "down")])

    def test_relayed_evidence_keeps_a_silent_peer_alive(self):
        self.detector.heard("x", self.clock.seconds())
        for _ in range(20):
            self.clock.advance(0.5)
            self.detector.relayed("x", self.clock.seconds() - 0.4, self.clock.seconds())
        self.assertEqual(self.detector.state("x"), "alive")
        self.clock.advance(1.6)
        self.assertEqual(self.detector.state("x"), "suspect")
        self.clock.advance(1.5)
        self.assertEqual(self.detector.state("x"), "down")
        verdict = self.clock.seconds()
        # news older than the verdict cannot revive it; news after it does
        self.detector.relayed("x", verdict - 0.01, verdict)
        self.assertEqual(self.detector.state("x"), "down")
        self.clock.advance(0.2)
        self.detector.relayed("x", verdict + 0.1, self.clock.seconds())
        self.assertEqual(self.detector.state("x"), "alive")
        self.assertEqual([new for _, _, new in self.changes],
                         ["alive", "suspect", "down", "alive"])

    def test_bad_thresholds(self):
        self.assertRaises(ValueError, thresholds, 0.5, suspect_after=3, down_after=2)


class CountersTests(unittest.TestCase):
    def test_failing_counters_send_the_last_good_ones(self):
        sim = Simulation(2, seed=1).start()
        sim.run(1)
        sender = sim.bolts[1].gossiper
        sender._counters_fn = lambda: 1 / 0
        sim.run(1)
        self.flushLoggedErrors(ZeroDivisionError)
        info = sim.bolts[0].gossiper.peer_states()[sender.id]
        self.assertEqual(info["counters"]["envoys_owned"], 101)
        self.assertEqual(info["seq"], sender.seq)
