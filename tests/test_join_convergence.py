"""A join reaches every bolt: in-process federations on a fake clock.

Real rosters (every row verified on merge), the real gossiper on the in-memory
bus with loss and partitions, and real signed snapshot pulls
(``vigo.testing.join``). Times are simulated seconds.
"""

from twisted.trial import unittest

from vigo.testing.join import JoinSimulation


def joined(n, seed=0, loss=0.0):
    sim = JoinSimulation(n, seed=seed, loss=loss).start()
    sim.run(2.0)
    return sim


class JoinConvergenceTests(unittest.SynchronousTestCase):
    def assertConverges(self, sim, within):
        sim.admit()
        sim.run(within, until=sim.converged)
        self.assertTrue(sim.converged(), "not every bolt holds the founder's roster after "
                                         "%g s" % (within,))
        digests = {bolt.roster.digest() for bolt in sim.bolts}
        self.assertEqual(len(digests), 1)
        self.assertIsNotNone(sim.bolts[-1].roster.row(sim.joiner.id))

    def test_three_bolts(self):
        self.assertConverges(joined(3), within=1.5)

    def test_thirty_two_bolts_with_loss(self):
        self.assertConverges(joined(32, seed=1, loss=0.3), within=3.0)

    def test_partition_then_heal(self):
        sim = joined(8, seed=2)  # seven members; the eighth joins
        near_bolts, far_bolts = sim.bolts[:4], sim.bolts[4:]
        near = [bolt.id for bolt in near_bolts] + [sim._joiner_identity.id]
        sim.bus.partition(near, [bolt.id for bolt in far_bolts])
        sim.admit()
        sim.run(5.0)
        self.assertFalse(sim.converged())
        self.assertTrue(all(bolt.converged_at is not None for bolt in near_bolts))
        self.assertTrue(all(bolt.converged_at is None for bolt in far_bolts))
        sim.bus.heal()
        sim.run(10.0, until=sim.converged)
        self.assertTrue(sim.converged(), "the far side never caught up after the heal")
