"""Federation scale, small: admissions and churn converge, every bolt routes alike.

The scenario of bench/scale.py (``vigo.testing.scale``) at 6 bolts x 200
envoys: real signed rosters, the real gossiper on the in-memory bus, real
signed snapshot pulls, one fake clock. Times are simulated seconds.
"""

import functools

from twisted.trial import unittest

from vigo.spanner.roster.rows import ACTIVE, DRAINING, REMOVED
from vigo.testing.scale import ScaleSimulation, envoy_id

BOLTS, ENVOYS = 6, 200


def churned(seed=0):
    """The whole scenario; returns the simulation and both convergence times."""
    sim = ScaleSimulation(BOLTS, ENVOYS, seed=seed)
    found = sim.found(limit=20.0)
    end = sim.churn(overrides=60, contested=8, handover=30, early=5, window=5.0)
    return sim, found, sim.settle(end, limit=30.0)


@functools.lru_cache(maxsize=None)
def scenario():
    """One run shared by the read-only tests (trial has no setUpClass)."""
    sim, found, churn = churned()
    return sim, found, churn, sim.check_routing()


class ScaleSimulationTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.sim, self.found, self.churn, self.check = scenario()

    def test_admissions_converge(self):
        sim = ScaleSimulation(BOLTS, ENVOYS, seed=3)
        self.assertIsNotNone(sim.found(limit=20.0))
        self.assertEqual(len(sim.bolts), BOLTS)
        roster = sim.bolts[-1].roster
        self.assertEqual(sorted(roster.bolt_ids()), sorted(b.id for b in sim.bolts))
        self.assertEqual({b.roster.digest() for b in sim.bolts}, {roster.digest()})
        self.assertEqual([r.status for r in roster.rows()], [ACTIVE] * BOLTS)

    def test_churn_converges(self):
        self.assertIsNotNone(self.found)
        self.assertIsNotNone(self.churn, "the bolts never agreed after the churn")
        self.assertLess(self.churn, 30.0)
        self.assertTrue(self.sim.agreed())
        self.assertEqual({b.roster.pending_count() for b in self.sim.bolts}, {0})

    def test_every_bolt_routes_identically_and_correctly(self):
        check = self.check
        self.assertEqual(check.bolts, BOLTS)
        self.assertEqual(check.routes, BOLTS * BOLTS * ENVOYS)
        self.assertEqual(check.digests, 1)
        self.assertEqual((check.wrong, check.no_owner), (0, 0))
        self.assertTrue(check.ok)

    def test_the_churn_happened(self):
        sim = self.sim
        roster = sim.bolts[0].roster
        self.assertEqual(roster.status_of(sim.bolts[-2].id), DRAINING)
        self.assertEqual(roster.status_of(sim.bolts[-1].id), REMOVED)
        signed = {row.bolt_id: row.status for row in roster.parts().rows}
        self.assertEqual(signed[sim.bolts[-1].id], ACTIVE)  # removed undrained (--force)
        self.assertEqual(len(roster.parts().overrides), len(sim.written))
        contested = [e for e, records in sim.written.items()
                     if len({r.writer for r in records}) > 1]
        self.assertTrue(contested)
        self.assertGreater(self.check.overridden, 60)
        self.assertGreater(self.check.ignored, 0)

    def test_overrides_win_last_writer_wins(self):
        sim = self.sim
        for bolt in sim.bolts:
            for envoy in sim.written:
                held = bolt.roster.override_of(sim.pairs[envoy][1])
                self.assertEqual(held, sim.winning_override(envoy))
        expected = sim.expected_owners()
        routed = sim.route(sim.bolts[2])
        for envoy in sim.written:
            bolt_id = sim.winning_override(envoy).bolt_id
            if bolt_id not in sim.draining | sim.removed:
                self.assertEqual(routed[envoy], bolt_id)
            else:
                self.assertNotEqual(routed[envoy], bolt_id)
        self.assertEqual(routed, expected)

    def test_draining_and_removed_bolts_take_nothing(self):
        sim = self.sim
        founder, drained, gone = sim.bolts[0], sim.bolts[-2], sim.bolts[-1]
        self.assertEqual((self.check.to_draining, self.check.to_removed), (0, 0))
        for bolt in sim.bolts:
            routed = sim.route(bolt)
            self.assertNotIn(drained.id, routed)
            self.assertNotIn(gone.id, routed)
            for owned in (drained, gone):
                first = owned.index * ENVOYS
                for envoy in range(first, first + ENVOYS):
                    record = sim.winning_override(envoy)
                    if record is None or record.bolt_id in (drained.id, gone.id):
                        # no usable override: the pattern owner, the founder's '*'
                        self.assertEqual(routed[envoy], founder.id)
        self.assertGreater(self.check.fallen_to_founder, ENVOYS)

    def test_a_bolt_that_missed_a_write_is_caught(self):
        sim, _, _ = churned(seed=1)
        self.assertTrue(sim.check_routing().ok)
        # one bolt takes an envoy and the clock does not run: nobody else knows
        envoy = 3 * ENVOYS + 7
        sim.accept(sim.bolts[1], envoy)
        self.assertFalse(sim.agreed())
        check = sim.check_routing()
        self.assertEqual(check.digests, 2)
        self.assertEqual(check.wrong, BOLTS - 1)
        self.assertFalse(check.ok)
        self.assertEqual(sim.route(sim.bolts[1])[envoy], sim.bolts[1].id)
        self.assertEqual(envoy_id(3, 7), sim.pairs[envoy][1])
        sim.run(10.0, until=sim.agreed)
        self.assertTrue(sim.check_routing().ok)

    def test_a_bolt_that_missed_a_drain_is_caught(self):
        sim = ScaleSimulation(4, 50, seed=2)
        self.assertIsNotNone(sim.found(limit=20.0))
        sim.set_draining(sim.bolts[2])
        check = sim.check_routing()
        self.assertEqual(check.digests, 2)
        self.assertEqual(check.to_draining, 3 * 50)  # the three bolts that have not heard
        self.assertFalse(check.ok)
        self.assertIsNotNone(sim.settle(sim.now, limit=10.0))
        self.assertTrue(sim.check_routing().ok)

    def test_deterministic(self):
        sim, found, churn = churned()
        self.assertEqual((found, churn), (self.found, self.churn))
        self.assertEqual(sim.bolts[0].roster.digest(), self.sim.bolts[0].roster.digest())
