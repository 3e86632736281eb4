"""Federation scale: 64 bolts x 5,000 envoys converge and route identically.

Target (../shared/design/targets.md, Federation): simulated in process on a
fake clock (``vigo.testing.scale``): real signed rosters, the real
``Gossiper`` on the in-memory multicast bus (500 ms interval) and real signed
snapshot pulls (2 ms round trip) under the real ``PullRequests`` limits.

1. The founder admits the other 63 bolts, one every 0.1 s, through the same
   admit path as ``Membership.admit``, with gossip running; the clock runs until
   every bolt's roster digest is the same.
2. Churn, over 10 fake seconds with gossip running: 1,000 envoys accepted by
   random bolts and 50 contested (two bolts at the same instant), each an
   override signed by the accepting bolt at its hybrid clock; a bolt turns
   draining and the founder takes 100 of its envoys; the founder takes 100
   envoys of another, which bolt 1 then removes undrained (as ``bolt remove
   --force`` does). The clock runs until every digest is equal. Then, after
   5 quiet seconds, one more override, and after 5 more, ten written at the
   same instant at ten bolts: each time until every digest is equal.
3. Every bolt routes every one of the 320,000 envoys with the real
   ``owner_of`` on its own roster (and its own compiled routing table): the
   answers must be the same at every bolt and equal to the owner the design's
   rule gives from what the scenario did (winning override if its bolt is
   active, else the pattern owner; draining and removed bolts get nothing).

Convergence times are fake-clock seconds (exact for a seed); wall time and
peak memory (``ru_maxrss``) are this machine's. Exits 1 when the bolts do not
converge, disagree, or route anything wrongly.

Usage: python bench/scale.py [--bolts 64] [--envoys 5000] [--seed 0] [--no-write]
"""

import argparse
import datetime
import json
import os
import resource
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # this checkout's vigo, not an installed one

import harness  # noqa: E402
import report  # noqa: E402

from vigo.testing.scale import ScaleSimulation  # noqa: E402


def median(values):
    return values[len(values) // 2]


def run(bolts, envoys, seed, overrides, contested):
    start = time.perf_counter()
    sim = ScaleSimulation(bolts, envoys, seed=seed)
    found = sim.found(limit=120.0)
    found_each = sim.each_since(sim.admissions_done)
    end = sim.churn(overrides=overrides, contested=contested, handover=min(100, envoys))
    churn = sim.settle(end, limit=120.0)
    churn_each = sim.each_since(end)
    # After a quiet spell: one more override, then ten at once at ten bolts.
    sim.run(5.0)
    since = sim.now
    sim.accept(sim.bolts[1], 0)
    one = sim.settle(since, limit=60.0)
    sim.run(5.0)
    since = sim.now
    for k, bolt in enumerate(sim.bolts[1:-2][:10]):
        sim.accept(bolt, k + 1)
    ten = sim.settle(since, limit=60.0)
    sim_wall = time.perf_counter() - start
    start = time.perf_counter()
    check = sim.check_routing()
    return {
        "bolts": bolts, "envoys_per_bolt": envoys, "envoys": len(sim.pairs), "seed": seed,
        "found_s": found, "found_p50_s": median(found_each), "found_max_s": found_each[-1],
        "churn_s": churn, "churn_p50_s": median(churn_each), "one_s": one, "ten_s": ten,
        "override_writes": sum(len(v) for v in sim.written.values()),
        "overridden_envoys": len(sim.written),
        "fake_s": sim.now - 1_700_000_000,
        "pulls": sum(b.pulls for b in sim.bolts),
        "overrides_held": len(sim.bolts[0].roster.parts().overrides),
        "routes": check.routes, "routing_digests": check.digests, "wrong": check.wrong,
        "no_owner": check.no_owner, "to_draining": check.to_draining,
        "to_removed": check.to_removed, "overridden": check.overridden,
        "ignored": check.ignored, "fallen_to_founder": check.fallen_to_founder,
        "ok": check.ok and None not in (found, churn, one, ten),
        "sim_wall_s": sim_wall, "routing_wall_s": time.perf_counter() - start,
        "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


SLOW = """
Changes written at several bolts at once spread as a pull epidemic: a bolt
whose digest differs from a peer's pulls a merged roster from one random live
peer that differs (`PullRequests`: at most every half interval, and no sooner
than ten times as long as its last pull took), so they need about log2 N rounds
of pulls. Under sustained churn the last bolts converge a few rounds after the
last write.
"""


def seconds(value):
    return "not converged" if value is None else "%.2f s" % value


def within(value, bound):
    return "met" if value is not None and value <= bound else "**missed**"


def section(r):
    verdict = "met" if r["ok"] else "**missed**"
    return """## Federation scale

`python bench/scale.py`, %(date)s, %(machine)s. %(bolts)d bolts x
%(per)s envoys (%(envoys)s) in one process on a fake clock
(`vigo/testing/scale.py`): real signed rosters, the real `Gossiper` on the
in-memory multicast bus (500 ms interval), real signed snapshot pulls (2 ms
round trip). The founder admits the other bolts one every 0.1 s; then, over 10
fake seconds with gossip running, %(writes)s overrides are written
(%(overridden)s envoys), each signed by the bolt that accepts the envoy, 50
envoys contested by two bolts at the same instant; one bolt turns draining and
hands 100 envoys to the founder; another hands 100 over and is removed
undrained (`--force`). Last, every bolt routes every envoy with the real
`owner_of` on its own roster and its own compiled table (the full set at every
bolt, no sampling), checked against the owner the design's rule gives from what
the scenario did. Convergence times are fake-clock seconds; wall time and
memory are this machine's.

| figure | ours | target | |
|---|---|---|---|
| admissions: every bolt's digest equal, after the last of %(admitted)d admissions | **%(found)s** (per bolt p50 %(found_p50).2f s) | converge | %(found_ok)s |
| churn: every bolt's digest equal, after the last write | **%(churn)s** (per bolt p50 %(churn_p50).2f s; %(pulls)s snapshot pulls in all, %(fake).0f fake s) | converge | %(churn_ok)s |
| after 5 quiet s: one more override / 10 at the same instant at 10 bolts, every digest equal | **%(one)s** / **%(ten)s** | p99 <= 2 s at N = 64 (one roster change) | %(one_ok)s / %(ten_ok)s |
| routing: `owner_of` answers, every bolt x every envoy | %(routes)s: **%(digests)d distinct** routing digest(s), %(wrong)d wrong, %(no_owner)d without owner | identical at every bolt | %(verdict)s |
| overrides: envoys routed to their override's bolt / overrides to a draining or removed bolt ignored | %(overridden_ok)s / %(ignored)s | -- | -- |
| routed to the draining / removed bolt | %(to_draining)d / %(to_removed)d (of their %(theirs)s envoys, %(fallen)s now go to the founder, by its `*` or a hand-over; the rest to their overrides' bolts) | 0 / 0 | %(verdict)s |
| wall time: simulation / routing | %(sim_wall).0f s / %(routing_wall).0f s (one core) | -- | -- |
| peak resident memory (`ru_maxrss`) | %(rss).0f MiB | -- | -- |
%(slow)s""" % {
        "date": datetime.date.today().isoformat(), "machine": harness.machine(),
        "bolts": r["bolts"], "per": "{:,}".format(r["envoys_per_bolt"]),
        "envoys": "{:,}".format(r["envoys"]), "writes": "{:,}".format(r["override_writes"]),
        "overridden": "{:,}".format(r["overridden_envoys"]), "admitted": r["bolts"] - 1,
        "found": seconds(r["found_s"]), "found_p50": r["found_p50_s"],
        "found_ok": "met" if r["found_s"] is not None else "**missed**",
        "churn": seconds(r["churn_s"]), "churn_p50": r["churn_p50_s"],
        "churn_ok": "met" if r["churn_s"] is not None else "**missed**",
        "pulls": "{:,}".format(r["pulls"]), "fake": r["fake_s"],
        "routes": "{:,}".format(r["routes"]), "digests": r["routing_digests"],
        "wrong": r["wrong"], "no_owner": r["no_owner"], "verdict": verdict,
        "overridden_ok": "{:,}".format(r["overridden"]), "ignored": r["ignored"],
        "to_draining": r["to_draining"], "to_removed": r["to_removed"],
        "fallen": "{:,}".format(r["fallen_to_founder"]),
        "theirs": "{:,}".format(2 * r["envoys_per_bolt"]),
        "sim_wall": r["sim_wall_s"], "routing_wall": r["routing_wall_s"], "rss": r["maxrss_mib"],
        "one": seconds(r["one_s"]), "ten": seconds(r["ten_s"]),
        "one_ok": within(r["one_s"], 2.0), "ten_ok": within(r["ten_s"], 2.0),
        "slow": SLOW if (r["ten_s"] or 99) > 2 or (r["churn_s"] or 99) > 2 else "",
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bolts", type=int, default=64)
    parser.add_argument("--envoys", type=int, default=5000)
    parser.add_argument("--overrides", type=int, default=1000)
    parser.add_argument("--contested", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    r = run(args.bolts, args.envoys, args.seed, args.overrides, args.contested)
    print("federation scale, %d bolts x %d envoys: admissions converged %s after the last "
          "(per bolt p50 %.2f s); churn converged %s after the last write (p50 %.2f s; "
          "%d override writes, %d pulls); then one override %s, ten at once at ten bolts %s"
          % (r["bolts"], r["envoys_per_bolt"], seconds(r["found_s"]), r["found_p50_s"],
             seconds(r["churn_s"]), r["churn_p50_s"], r["override_writes"], r["pulls"],
             seconds(r["one_s"]), seconds(r["ten_s"])))
    print("routing: %d owner_of answers, %d distinct routing digest(s), %d wrong, %d without "
          "owner, %d to the draining bolt, %d to the removed bolt: %s"
          % (r["routes"], r["routing_digests"], r["wrong"], r["no_owner"], r["to_draining"],
             r["to_removed"], "IDENTICAL and correct" if r["ok"] else "FAILED"))
    print("wall %.1f s (simulation %.1f s, routing %.1f s); peak memory %.0f MiB"
          % (r["sim_wall_s"] + r["routing_wall_s"], r["sim_wall_s"], r["routing_wall_s"],
             r["maxrss_mib"]))
    print(json.dumps(r, sort_keys=True))
    if not args.no_write:
        report.replace_section(os.path.join(HERE, "..", "docs", "benchmarks.md"), "scale",
                               section(r))
        print("figures written to docs/benchmarks.md (section 'scale')")
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
