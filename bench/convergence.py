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
  ``SpannerService.replace_roster`` does). One pull per peer in flight, as in
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
import base64
import json
import math
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # this checkout's vigo, not an installed one

import harness  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402

from vigo.config import GossipConfig  # noqa: E402
from vigo.identity import Identity  # noqa: E402
from vigo.spanner.bus import FreezableClock, MulticastBus  # noqa: E402
from vigo.spanner.canonical import canonical  # noqa: E402
from vigo.spanner.gossip import Gossiper  # noqa: E402
from vigo.spanner.gossip_sim import MemoVerify  # noqa: E402
from vigo.spanner.records import ConsumedToken  # noqa: E402
from vigo.spanner.roster import Roster, RosterParts  # noqa: E402
from vigo.spanner.rows import AdmissionRow  # noqa: E402
from vigo.spanner.snapshot import open_snapshot, sign_snapshot  # noqa: E402

GROUP = "239.192.0.1"
PORT = 1532
RTT = 0.002


def percentile(values, q):
    """Nearest-rank percentile."""
    values = sorted(values)
    return values[max(0, math.ceil(q * len(values)) - 1)]


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
        founder.gossiper.send_now()  # replace_roster
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
            bolt.gossiper.send_now()  # replace_roster
            self._check(bolt)

    def _check(self, bolt):
        if (self.target is not None and bolt.converged_at is None
                and bolt.roster.digest() == self.target):
            bolt.converged_at = self.now

    def converged(self):
        return (self.joiner is not None
                and all(b.converged_at is not None for b in self.bolts))


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

    def __init__(self, name, group, gossip_port, workdir=None):
        harness.Server.__init__(self, workdir=workdir)
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

    def start(self):
        """Spawn the process (``wait_ready`` waits for it), so bolts start together."""
        self.log = open(os.path.join(self.workdir, "server.log"), "ab")
        self.process = subprocess.Popen(
            [os.path.join(harness.BIN, "twistd"), "-n", "--pidfile=", "vigo", "--mode=spanner",
             "--config", self.config],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=self.workdir,
            env={k: v for k, v in os.environ.items() if not k.startswith("VIGO_")})
        return self

    def wait_ready(self, timeout=120):
        """As ``harness.Server.start`` does after spawning: wait for run.json
        to name our process, then read the admin token."""
        deadline = time.monotonic() + timeout
        run = os.path.join(self.data_dir, "run.json")
        while True:
            if self.process.poll() is not None:
                raise RuntimeError("bolt %s exited; see %s" % (self.name, self.log.name))
            try:
                with open(run) as f:
                    if json.load(f)["pid"] == self.process.pid:
                        break
            except (OSError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("bolt %s not ready in %d s" % (self.name, timeout))
            time.sleep(0.05)
        with open(os.path.join(self.data_dir, "admin-token")) as f:
            self.token = f.read().strip()
        self._ssl = ssl.create_default_context(cafile=os.path.join(self.data_dir, "api-cert.pem"))
        return self

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
            bolt.start()
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
