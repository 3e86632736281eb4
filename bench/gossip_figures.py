"""Tier-1 gossip figures, simulated in-process (bus + Clock, 500 ms interval).

Targets (../shared/design/targets.md, Federation):

* a killed bolt marked down by every other bolt: p50 <= 3 s, p99 <= 4.5 s,
  N = 3, 8, 32;
* false "down" verdicts: 0 in 60 s at 50 % datagram loss (N = 10), and 0 for a
  bolt frozen <= 2 s;
* tier-1 datagram size <= 1,400 bytes, always;
* gossip bytes sent per bolt <= 15 KB/s at N = 10, <= 50 KB/s at N = 40.

Times are simulated seconds (real signatures, a fake clock): they measure the
protocol, not this machine, so they are exact for a seed and do not drift.

Usage: python bench/gossip_figures.py [--quick]
"""

import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vigo.spanner.gossip.datagram import MAX_DATAGRAM  # noqa: E402
from vigo.testing.gossip import Simulation  # noqa: E402


def _percentile(values, q):
    """Nearest-rank percentile."""
    values = sorted(values)
    return values[max(0, math.ceil(q * len(values)) - 1)]


def _unicast(n, seed):
    return Simulation(n, seed=seed, multicast=False, peer_addresses=True,
                      seeds=lambda i: [] if i == 0 else [("10.0.0.0", 1532)])


def kill_latencies(n, seeds=range(20), warmup=2.0):
    """Per kill: the seconds each other bolt took to mark the killed one down."""
    kills = []
    for seed in seeds:
        sim = Simulation(n, seed=seed).start()
        sim.run(warmup + (seed * 0.618) % 1.0)  # kill at varied phases of the tick
        victim = seed % n
        killed_at = sim.now
        sim.kill(victim)
        sim.run(6.0)
        latencies = sim.down_latencies(victim, killed_at)
        kills.append([math.inf if x is None else x for x in latencies])
    return kills


def down_detection(n, seeds=range(20), every=False):
    """(p50, p99) seconds from a kill to a down verdict, over every observer of
    every kill; with ``every``, over the last observer of each kill."""
    return _summary(kill_latencies(n, seeds), every)


def _summary(kills, every=False):
    values = [max(k) for k in kills] if every else [x for k in kills for x in k]
    return _percentile(values, 0.50), _percentile(values, 0.99)


def false_downs(n=10, loss=0.5, seconds=60, seeds=range(3)):
    """Down verdicts on live bolts over ``seconds`` at ``loss``, summed over seeds."""
    total = 0
    for seed in seeds:
        sim = Simulation(n, seed=seed, loss=loss).start()
        sim.run(seconds)
        total += sim.false_downs()
    return total


def frozen_downs(n=10, freeze=2.0, rounds=30, seed=0):
    """Down verdicts when bolts are frozen (timers and sockets) for ``freeze`` s,
    one after another."""
    sim = Simulation(n, seed=seed).start()
    sim.run(2)
    for k in range(rounds):
        sim.freeze(k % n, freeze)
        sim.run(freeze + 1.5)
    return sim.false_downs()


def datagram_size(n, seconds=2.0):
    """The largest datagram any of ``n`` bolts sent (each lists every peer)."""
    sim = Simulation(n, seed=1).start()
    sim.run(seconds)
    return sim.bus.largest


def bytes_per_second(n, multicast=True, seconds=5.0):
    """The most bytes per second any bolt sent in steady state (multicast, or
    unicast to seeds and every known peer within the byte budget)."""
    sim = (Simulation(n, seed=2) if multicast else _unicast(n, 2)).start()
    sim.run(3)
    before = dict(sim.bus.sent_bytes)
    sim.run(seconds)
    return max((sim.bus.sent_bytes[b.id] - before.get(b.id, 0)) / seconds for b in sim.bolts)


def figures(quick=False):
    """Every tier-1 figure, as a dict (``bench/federation.py`` records them)."""
    seeds = range(5) if quick else range(25)
    out = {"kills": {}, "interval_s": 0.5}
    for n in (3, 8, 32):
        kills = kill_latencies(n, seeds)
        (p50, p99), (e50, e99) = _summary(kills), _summary(kills, every=True)
        out["kills"][n] = {"p50": p50, "p99": p99, "every_p50": e50, "every_p99": e99,
                           "kills": len(kills)}
    loss_seeds = 1 if quick else 3
    out["false_downs_loss"] = {"n": 10, "loss": 0.5, "seconds": 60, "seeds": loss_seeds,
                               "downs": false_downs(seeds=range(loss_seeds))}
    out["false_downs_frozen"] = {"n": 10, "freeze_s": 2.0, "freezes": 30,
                                 "downs": frozen_downs()}
    out["datagram_bytes"] = {n: datagram_size(n) for n in (10, 32, 64)}
    out["max_datagram"] = MAX_DATAGRAM
    out["bytes_per_s"] = {n: {"multicast": bytes_per_second(n),
                              "unicast": bytes_per_second(n, False)} for n in (10, 40)}
    return out


def main(argv=None):
    quick = "--quick" in (argv if argv is not None else sys.argv[1:])
    started = time.perf_counter()
    f = figures(quick)
    print("tier-1 gossip, 500 ms interval, simulated seconds")
    for n, k in f["kills"].items():
        print("  killed bolt down, N=%-2d  per observer p50 %.2f s  p99 %.2f s   "
              "last observer p50 %.2f s  p99 %.2f s   (%d kills; target p50 <= 3, p99 <= 4.5)"
              % (n, k["p50"], k["p99"], k["every_p50"], k["every_p99"], k["kills"]))
    loss, frozen = f["false_downs_loss"], f["false_downs_frozen"]
    print("  false downs, N=10, 50 %% loss, 60 s x %d seeds: %d  (target 0)"
          % (loss["seeds"], loss["downs"]))
    print("  false downs, N=10, bolts frozen 2 s x 30: %d  (target 0)" % frozen["downs"])
    for n, size in f["datagram_bytes"].items():
        print("  datagram size, N=%d: %d bytes  (target <= %d)" % (n, size, MAX_DATAGRAM))
    for n, limit in ((10, 15), (40, 50)):
        rate = f["bytes_per_s"][n]
        print("  bytes/s per bolt, N=%d: multicast %.1f KB/s, unicast %.1f KB/s  (target <= %d)"
              % (n, rate["multicast"] / 1000, rate["unicast"] / 1000, limit))
    print("  (%.1f s wall)" % (time.perf_counter() - started))


if __name__ == "__main__":
    main()
