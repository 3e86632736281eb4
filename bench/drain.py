"""Benchmark: drain a bolt holding 5,000 simulated envoys into another.

Two real ``twistd -n vigo --mode=spanner`` bolts on loopback; ``vigo-envoy
sim`` enrolls N envoys at bolt a and keeps them checking in; then bolt b is
asked to drain a into b. Measured: from the drain request until every envoy
is active at b, and afterwards every envoy owned by exactly one bolt (both
databases read) and none lost. Target (targets.md): 5,000 envoys in <= 30 s.

Usage: python bench/drain.py [--envoys N] [--no-write]
"""

import argparse
import datetime
import json
import os
import random
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
import report  # noqa: E402
from convergence import SpannerBolt, _gossip_port  # noqa: E402


def owners(bolts):
    """envoy id -> [bolt names holding it active], from each bolt's database."""
    held = {}
    for bolt in bolts:
        db = sqlite3.connect(os.path.join(bolt.data_dir, "vigo.sqlite3"))
        for (envoy_id,) in db.execute("SELECT id FROM envoys WHERE state = 'active'"):
            held.setdefault(envoy_id, []).append(bolt.name)
        db.close()
    return held


def run(count):
    group = "239.192.%d.%d" % (random.randrange(1, 255), random.randrange(1, 255))
    port = _gossip_port()
    a, b = SpannerBolt("a", group, port), SpannerBolt("b", group, port)
    with open(a.config) as f:
        config = json.load(f)
    config["spanner"]["patterns"] = ["*.bench.example.com"]  # the simulator's hostnames
    with open(a.config, "w") as f:
        json.dump(config, f)
    sims = []
    try:
        for bolt in (a, b):
            bolt.spawn()
        for bolt in (a, b):
            bolt.wait_ready()
        a.api("POST", "/api/v1/spanner/init", {})
        b.api("POST", "/api/v1/spanner/join",
              {"token": a.api("POST", "/api/v1/spanner/invite", {})["token"]})
        token = a.token_for(count)
        sims = harness.start_sims(a, token, [count], "15s", "600s", "d")
        if harness.wait_until(lambda: a.status()["envoys"]["connected"] >= count, 300, 0.5) is None:
            raise RuntimeError("the envoys did not all attach at bolt a")
        harness.wait_until(lambda: len(b.api("GET", "/api/v1/spanner/bolts")["bolts"]) == 2, 30)
        start = time.monotonic()
        b.api("POST", "/api/v1/spanner/bolts/%s/drain" % (a.name,), {"to": b.name})
        done = harness.wait_until(
            lambda: b.api("GET", "/api/v1/spanner/bolts/%s/drain" % (a.name,))
            .get("state") in ("done", "failed"), 600, 0.1)
        seconds = time.monotonic() - start
        status = b.api("GET", "/api/v1/spanner/bolts/%s/drain" % (a.name,))
        attached = harness.wait_until(
            lambda: b.status()["envoys"]["connected"] >= count, 120, 0.5)
        for sim in sims:
            sim.terminate()
        harness.sim_results(sims)
        sims = []
    finally:
        for sim in sims:
            sim.kill()
        for bolt in (a, b):
            bolt.stop()
    held = owners((a, b))
    twice = sum(1 for names in held.values() if len(names) > 1)
    return {"envoys": count, "drain_s": seconds if done is not None else None,
            "state": status.get("state"), "moved": status.get("moved"),
            "failed": status.get("failed"), "reattached_at_b_s": attached,
            "owned_once": sum(1 for names in held.values() if names == ["b"]),
            "owned_twice": twice, "lost": count - len(held)}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envoys", type=int, default=5000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    r = run(args.envoys)
    print("drain of %d envoys: %s s (%s; moved %s, failed %s); owned by exactly one bolt: %d, "
          "twice: %d, lost: %d" % (r["envoys"], "%.1f" % r["drain_s"] if r["drain_s"] else "-",
                                   r["state"], r["moved"], r["failed"], r["owned_once"],
                                   r["owned_twice"], r["lost"]))
    if not args.no_write:
        ok = r["drain_s"] is not None and r["drain_s"] <= 30 and not r["lost"] and not r["owned_twice"]
        report.replace_section(
            os.path.join(os.path.dirname(__file__), "..", "docs", "benchmarks.md"), "drain",
            "## Drain\n\n`python bench/drain.py`, %s, %s. Two real bolts on loopback; "
            "%d simulated envoys checking in at bolt a; bolt b asked to drain a into b.\n\n"
            "| figure | ours | target | |\n|---|---|---|---|\n"
            "| drain time, request to every envoy moved | **%s** (%s; moved %s, failed %s) | "
            "<= 30 s for 5,000 | %s |\n"
            "| after the drain: owned by exactly one bolt / twice / lost | %d / %d / %d | "
            "all / 0 / 0 | %s |\n" % (
                datetime.date.today().isoformat(), harness.machine(), r["envoys"],
                "%.1f s" % r["drain_s"] if r["drain_s"] else "not finished", r["state"],
                r["moved"], r["failed"], "met" if ok else "**missed**", r["owned_once"],
                r["owned_twice"], r["lost"],
                "met" if not r["lost"] and not r["owned_twice"] else "**missed**"))
        print("figures written to docs/benchmarks.md (section 'drain')")


if __name__ == "__main__":
    main()
