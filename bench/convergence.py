"""Roster convergence after a join: how long until every bolt holds, verified,
the roster the admitting bolt wrote.

Target (../shared/design/targets.md, Federation): a roster change visible and
verified on every bolt, p99 <= 1.5 s at N = 16, <= 2 s at N = 64.

Two measurements:

* ``in_process`` -- N bolts in one process on a fake clock: real ``Roster``
  objects (every row and record signed and verified on merge), the real
  ``Gossiper`` on the in-memory multicast bus (500 ms interval, real datagram
  signatures), and tier-2 pulls driven by each bolt's ``on_digest_mismatch``
  callback, so the real ``PullRequests`` rate limiting (jitter up to half an
  interval, one request per 2 intervals, never the same peer and digest twice
  within 20 intervals) decides who pulls from whom and when. A pull is the
  real exchange: the peer's roster is signed with ``sign_snapshot`` and
  encoded when the request reaches it (half an RTT after it was asked), and
  half an RTT later the puller runs ``open_snapshot`` against the key it pins
  for that peer and ``Roster.merge``; a changed roster is gossiped at once (as
  ``LocalRoster.commit`` does). One pull per peer in flight, as in
  ``SnapshotPuller``. The clock starts when the founder admits the joiner
  (countersigns its row and consumes its token, as ``Membership.admit``
  does; the joiner gets the signed snapshot half an RTT later and starts
  gossiping) and stops when every bolt's digest equals the founder's. Times
  are simulated seconds: CPU time spent verifying is not on the clock.
  Anti-entropy pulls (every 30 s) are left out: they only make it faster.

* ``processes`` -- three real ``twistd -n vigo --mode=spanner`` bolts on
  loopback (multicast gossip on a random 239.192.x.y group on 127.0.0.1,
  snapshot pulls over HTTPS): A founds, B joins, then C joins through an
  invite from A; the time from C's ``POST /api/v1/spanner/join`` until B's
  ``GET /api/v1/spanner/status`` digest equals A's, polled every 50 ms. Each
  repetition uses three fresh processes.

Usage: python bench/convergence.py [--quick] [--no-processes]
"""

import argparse
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # this checkout's vigo, not an installed one

import harness  # noqa: E402

from vigo.testing.join import RTT, JoinSimulation  # noqa: E402


def percentile(values, q):
    """Nearest-rank percentile."""
    values = sorted(values)
    return values[max(0, math.ceil(q * len(values)) - 1)]


def join_trial(n, seed, loss=0.0, rtt=RTT, warmup=2.0, limit=15.0):
    """One join into an ``n - 1``-bolt federation: {"last": s (every bolt, the
    joiner included), "each": [s per bolt that was a member before], "pulls": total pull requests}; inf where not converged."""
    sim = JoinSimulation(n, seed=seed, loss=loss, rtt=rtt).start()
    sim.run(warmup + (seed * 0.618) % 1.0)  # admit at varied phases of the tick
    sim.admit()
    sim.run(limit, until=sim.converged)
    each = [math.inf if b.converged_at is None else b.converged_at - sim.admitted_at
            for b in sim.bolts[1:]]  # the joiner included
    return {"last": max(each), "each": each[:-1], "pulls": sum(b.pulls for b in sim.bolts)}


def in_process(n, seeds=range(40), loss=0.0, rtt=RTT):
    """Convergence after a join, over ``seeds`` trials: a summary dict."""
    trials = [join_trial(n, seed, loss, rtt) for seed in seeds]
    last = [t["last"] for t in trials]
    each = [x for t in trials for x in t["each"]]
    return {"n": n, "trials": len(trials), "loss": loss, "rtt_ms": rtt * 1000,
            "p50": percentile(last, 0.50), "p99": percentile(last, 0.99), "max": max(last),
            "each_p50": percentile(each, 0.50), "each_p99": percentile(each, 0.99),
            "pulls_per_join": sum(t["pulls"] for t in trials) / len(trials)}


# -- real processes ------------------------------------------------------------


class SpannerBolt(harness.Server):
    """A ``twistd -n vigo --mode=spanner`` process on fixed free loopback ports."""

    args = ("--mode=spanner",)

    def __init__(self, name, group, gossip_port, workdir=None):
        harness.Server.__init__(
            self, workdir=workdir,
            env={k: v for k, v in os.environ.items() if not k.startswith("VIGO_")})
        self.name = name
        self.peer_port = harness.free_port()
        with open(self.config) as f:
            config = json.load(f)
        config["spanner"] = {
            "bolt_name": name, "patterns": ["*.%s.example.com" % name],
            "peer_listen": "127.0.0.1:%d" % self.peer_port,
            "gossip": {"group": group, "port": gossip_port, "interface": "127.0.0.1",
                       "interval": "500ms", "multicast": True},
        }
        with open(self.config, "w") as f:
            json.dump(config, f)

    def digest(self):
        return self.api("GET", "/api/v1/spanner/status")["digest"]

    def stop(self, sig=signal.SIGTERM):
        """Stop by our PID; SIGKILL if it lingers."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.log is not None:
            self.log.close()


def _gossip_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_join(poll=0.05, limit=30.0):
    """One repetition with three fresh bolts: {"join": s (C's join call),
    "converged": s from the join call until B's digest equals A's}."""
    group = "239.192.%d.%d" % (random.randrange(256), random.randrange(1, 255))
    port = _gossip_port()
    workdir = tempfile.mkdtemp(prefix="vigo-bench-fed-")
    bolts = []
    for name in ("a", "b", "c"):
        os.makedirs(os.path.join(workdir, name))
        bolts.append(SpannerBolt(name, group, port, os.path.join(workdir, name)))
    a, b, c = bolts
    try:
        for bolt in bolts:
            bolt.spawn()
        for bolt in bolts:
            bolt.wait_ready()
        a.api("POST", "/api/v1/spanner/init", {})
        invite = a.api("POST", "/api/v1/spanner/invite", {})["token"]
        b.api("POST", "/api/v1/spanner/join", {"token": invite})
        invite = a.api("POST", "/api/v1/spanner/invite", {})["token"]
        # settle: A and B agree and gossip has been heard both ways
        before = a.digest()
        if harness.wait_until(lambda: b.digest() == before, 10, poll) is None:
            raise RuntimeError("B never took A's roster after joining")
        time.sleep(1.5)
        start = time.monotonic()
        c.api("POST", "/api/v1/spanner/join", {"token": invite})
        joined = time.monotonic() - start
        converged = None
        while time.monotonic() - start < limit:
            ours = a.digest()
            if ours != before and b.digest() == ours:
                converged = time.monotonic() - start
                break
            time.sleep(poll)
        result = {"join": joined, "converged": converged,
                  "c_agrees": c.digest() == a.digest()}
    finally:
        for bolt in bolts:
            bolt.stop()
    shutil.rmtree(workdir, ignore_errors=True)  # kept, with the logs, when a run fails
    return result


def processes(repeat=5):
    """``repeat`` joins, each with three fresh bolts; a summary dict. A run the
    harness could not complete (a bolt that would not start, an API error) is
    counted in ``errors`` and left out of the percentiles."""
    runs, errors = [], []
    for _ in range(repeat):
        try:
            runs.append(process_join())
        except Exception as e:  # report it, carry on with the next run
            print("  real-process join failed: %s" % (e,), file=sys.stderr)
            errors.append(str(e))
    if not runs:
        raise RuntimeError("no real-process join completed: %s" % (errors[-1],))
    done = [r["converged"] if r["converged"] is not None else math.inf for r in runs]
    return {"n": 3, "runs": runs, "repeat": len(runs), "errors": len(errors),
            "p50": percentile(done, 0.50), "p99": percentile(done, 0.99),
            "join_p50": percentile([r["join"] for r in runs], 0.50)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-processes", action="store_true")
    args = parser.parse_args()
    seeds = range(10) if args.quick else range(40)
    for n in (3, 16, 64):
        t = time.perf_counter()
        f = in_process(n, seeds if n < 64 else range(len(seeds) // 2))
        print("in process, N=%d: every bolt verified in p50 %.3f s, p99 %.3f s (max %.3f s, "
              "%d joins); per bolt p50 %.3f s p99 %.3f s; %.1f pulls a join  (%.1f s wall)"
              % (n, f["p50"], f["p99"], f["max"], f["trials"], f["each_p50"], f["each_p99"],
                 f["pulls_per_join"], time.perf_counter() - t))
    if not args.no_processes:
        t = time.perf_counter()
        f = processes(2 if args.quick else 5)
        print("processes, N=3: B verified p50 %.3f s, p99 %.3f s after the join call "
              "(join call p50 %.3f s; %d runs)  (%.1f s wall)"
              % (f["p50"], f["p99"], f["join_p50"], f["repeat"], time.perf_counter() - t))
        print(json.dumps(f["runs"]))


if __name__ == "__main__":
    main()
