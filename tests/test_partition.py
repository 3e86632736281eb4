"""A network partition with real processes: three bolts, one cut away for 20 s.

Topology (every piece made by the test, named with a random suffix, removed
at cleanup even when the test fails; the root network namespace is not
touched, nothing is added to the host's interfaces)::

            namespace vigo-sw-X (the switch): bridge br0
            port-a              port-b              port-c
              |                   |                   |        veth pairs
            eth0                eth0                eth0
        10.251.0.1/24       10.251.0.2/24       10.251.0.3/24
        namespace vigo-a-X  namespace vigo-b-X  namespace vigo-c-X

    in each bolt's namespace: twistd (the bolt), vigo-envoy sim (its three
    envoys), and the vigocli runs that ask that bolt

Each ``eth0``/``port-*`` is a veth pair created inside the switch namespace
with its peer end moved straight into the bolt's namespace. The addresses
exist only inside those namespaces. Each bolt listens on its own address
(envoys 1530, API 8443, peer RPC 1533) and gossips by unicast (``multicast:
false``) on UDP 1532 to ``seeds``, the other two bolts' addresses. Every
process (``twistd``, ``vigo-envoy sim``, ``vigocli``) runs inside its bolt's
namespace under ``ip netns exec``, which execs it: the PIDs the test holds are
theirs, and only those are stopped.

The cut is ``port-c`` set down on the switch: c's ``eth0`` loses its carrier,
as with a pulled cable, but keeps its address, so c and its envoys still
reach c itself. Nothing else is done to the bolts.

What the test does, in order:

1. founds the federation at a, a invites b and c (``vigocli spanner init``,
   ``bolt invite``, ``bolt join``); waits until all agree on one digest and
   see each other alive;
2. starts one ``vigo-envoy sim`` per bolt (3 envoys each, ``sim{n}.NAME.
   example.com``, checking in every second) and waits until each bolt has its
   three checking in;
3. cuts c away, then, during the 20 s cut: waits until a and b see c down and
   c sees a and b down; writes an override on each side (below); checks that
   a and b agree on a new digest and c holds another one, that no bolt has
   removed or forgotten any other, and that envoys checked in on both sides
   all along (every held envoy connected and heard from within 3 s, and the
   check-in counters grew);
4. heals (``port-c`` up) at 20 s and waits until every bolt sees the other two
   alive and all three hold one roster digest (the time it took is logged:
   usually 1-4 s), with three active bolts and none removed;
5. checks that both overrides are in every bolt's roster (``vigocli spanner
   owner HOST --envoy ID`` answers "by override" with the right bolt at a, b
   and c), and that all nine envoys check in at the bolts that hold them.

The writes. An override (envoy -> bolt) is written only by the bolt that
takes an envoy, in the ``accept-envoy`` action, when the source of a hand-over
calls it. On the majority side that is an ordinary reassign: ``vigocli spanner
bolt reassign sim1.a.example.com --to b`` asked at a (it waits 5 s for c's
answer to "who holds it", then a hands the envoy to b, b writes the override
envoy -> b, and the envoy is redirected and checks in at b). On c's side c is
alone: no other bolt can reach c, so no hand-over to c can happen, and c
cannot hand anything to an unreachable bolt (the move would only be
pending). So c runs the same built-in action on itself, ``vigocli spanner bolt
act c accept-envoy`` with the durable fields of its own envoy
``sim1.c.example.com``: the envoy is already active at c with that key, so
the fleet part changes nothing, and c writes the override envoy -> c, signed
by c and stamped by c's hybrid clock: the same record a hand-over to c
writes. It pins that envoy to c whatever the patterns say (``spanner owner``
answered "by pattern" before, "by override" after). The envoy's public key,
which no API shows, is read from c's own database, as an operator at c could.

Each ``vigocli`` run is a real REST call to a bolt's API from inside its
namespace; convergence is polled every 0.5 s up to a deadline, and a failure
says what each bolt last saw. It takes about 35 s (50 s on a busy machine),
20 s of it the cut; the log (``test.log``) has when each step ended, and
each bolt's output is left in its directory as ``server.log``.

Skipped, saying why, when not root, when ``ip`` is missing, or when the
namespaces, veth pairs or bridge cannot be made.
"""

import base64
import contextlib
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import time

from twisted.internet import defer, reactor, task
from twisted.python import log
from twisted.trial import unittest

from tests.processes import ServerProcess, ToolProcess, run_tool, write_config
from vigo.store import DB_FILE

NET = "10.251.0"  # a private /24 that exists only inside the test's namespaces
HOSTS = {"a": 1, "b": 2, "c": 3}
ENVOY_PORT, API_PORT, PEER_PORT, GOSSIP_PORT = 1530, 8443, 1533, 1532
ENVOYS = 3  # simulated envoys per bolt
CUT = 20.0  # seconds c is cut away
POLL = 0.5  # seconds between two looks (each look runs vigocli in each namespace)
DOWN_WITHIN = 15.0  # a cut bolt is down everywhere within 3 s at 500 ms gossip; polls are slow
CONVERGE = 15.0  # seconds for digests and liveness to agree after a change
SETTLE = 30.0  # seconds for enrolled or moved envoys to check in
LAST_LOOK = 6.0  # the last look at the cut this many seconds before the heal
MOVED, PINNED = "sim1.a.example.com", "sim1.c.example.com"


def host(name):
    return f"{NET}.{HOSTS[name]}"


class Network:
    """The switch namespace, one namespace per bolt and their veth pairs,
    made with ``ip`` (``ip_path``); names end in a random suffix."""

    def __init__(self, ip_path, names):
        self.ip_path = ip_path
        suffix = secrets.token_hex(3)
        self.switch = f"vigo-sw-{suffix}"
        self.spaces = {name: f"vigo-{name}-{suffix}" for name in names}
        self.made = []  # namespaces made so far, to remove

    def ip(self, *args):
        """Run ``ip ARGS``; raise with its error output if it fails."""
        done = subprocess.run([self.ip_path, *args], capture_output=True, text=True,
                              timeout=30, check=False)
        if done.returncode != 0:
            raise OSError(f"ip {' '.join(args)}: exit {done.returncode}: "
                          f"{(done.stderr or done.stdout).strip()}")
        return done.stdout

    def add_namespace(self, namespace):
        self.ip("netns", "add", namespace)
        self.made.append(namespace)

    def build(self):
        """The switch (a bridge in its own namespace) and each bolt on a port."""
        sw = self.switch
        self.ip("-n", sw, "link", "set", "lo", "up")
        self.ip("-n", sw, "link", "add", "br0", "type", "bridge")
        self.ip("-n", sw, "link", "set", "br0", "up")
        for name, namespace in self.spaces.items():
            self.add_namespace(namespace)
            port = "port-" + name
            self.ip("-n", sw, "link", "add", port, "type", "veth",
                    "peer", "name", "eth0", "netns", namespace)
            self.ip("-n", sw, "link", "set", port, "master", "br0")
            self.ip("-n", sw, "link", "set", port, "up")
            self.ip("-n", namespace, "link", "set", "lo", "up")
            self.ip("-n", namespace, "addr", "add", host(name) + "/24", "dev", "eth0")
            self.ip("-n", namespace, "link", "set", "eth0", "up")

    def prefix(self, name):
        """The command that runs a program inside bolt ``name``'s namespace."""
        return [self.ip_path, "netns", "exec", self.spaces[name]]

    def cut(self, name):
        self.ip("-n", self.switch, "link", "set", "port-" + name, "down")

    def heal(self, name):
        self.ip("-n", self.switch, "link", "set", "port-" + name, "up")

    def remove(self):
        """Delete every namespace made (their veths and the bridge go with them)."""
        errors = []
        for namespace in reversed(self.made):
            try:
                self.ip("netns", "del", namespace)
            except (OSError, subprocess.SubprocessError) as e:
                errors.append(str(e))
        self.made = []
        if errors:
            raise OSError("could not remove every test namespace:\n" + "\n".join(errors))


def make_network(names):
    """A built ``Network``, or the reason there can be none here (a string)."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add); run as root, as CI does"
    ip_path = shutil.which("ip") or next(
        (p for p in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip") if os.access(p, os.X_OK)), None)
    if ip_path is None:
        return "the ip command (iproute2) is not installed"
    network = Network(ip_path, names)
    try:
        network.add_namespace(network.switch)
    except (OSError, subprocess.SubprocessError) as e:
        return f"cannot make a network namespace here: {e}"
    try:
        network.build()
    except (OSError, subprocess.SubprocessError) as e:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            network.remove()
        return f"cannot make the test's veth pairs and bridge here: {e}"
    return network


def bolt_config(directory, name):
    others = [f"{host(n)}:{GOSSIP_PORT}" for n in HOSTS if n != name]
    return write_config(
        directory,
        server={"envoy_listen": f"{host(name)}:{ENVOY_PORT}",
                "api_listen": f"{host(name)}:{API_PORT}"},
        spanner={"mode": "spanner", "bolt_name": name,
                 "patterns": [f"*.{name}.example.com"],
                 "peer_listen": f"{host(name)}:{PEER_PORT}",
                 "gossip": {"port": GOSSIP_PORT, "interface": host(name), "interval": "500ms",
                            "multicast": False, "seeds": others}})


def gather(deferreds):
    """A Deferred of every result, or of the first failure itself."""
    d = defer.gatherResults(deferreds, consumeErrors=True)
    return d.addErrback(lambda failure: failure.value.subFailure)


def sleep(seconds):
    return task.deferLater(reactor, max(0.0, seconds), lambda: None)


class PartitionTests(unittest.TestCase):

    timeout = 240

    def setUp(self):
        network = make_network(HOSTS)
        if isinstance(network, str):
            raise unittest.SkipTest(network)
        self.network = network
        self.addCleanup(network.remove)  # registered first: runs after every process stopped
        log.msg("partition test: namespaces " + " ".join([network.switch,
                                                          *network.spaces.values()]))
        self.bolts = {}  # name -> ServerProcess
        self.ids = {}  # name -> bolt id

    def mark(self, what):
        """Log when a step ended (seconds since the test started)."""
        log.msg(f"partition test: {what} at {time.monotonic() - self.started:.1f} s")

    # -- processes, each in its bolt's namespace ------------------------------------

    def start_bolt(self, name):
        directory = os.path.abspath(self.mktemp())
        process = ServerProcess(bolt_config(directory, name), ["--mode=spanner"],
                                prefix=self.network.prefix(name))
        self.addCleanup(self.keep_log, process, os.path.join(directory, "server.log"))
        self.addCleanup(process.kill)  # by its PID; a Deferred of its exit
        self.bolts[name] = process
        return process.start()

    @staticmethod
    def keep_log(process, path):
        """What a stopped bolt printed, left in the test's directory to read."""
        with open(path, "wb") as f:
            f.write(process.output)

    @defer.inlineCallbacks
    def cli(self, name, *args, expect=0):
        """``vigocli --data-dir`` of bolt ``name``, run in its namespace."""
        out, err, code = yield run_tool("vigocli", "--data-dir", self.bolts[name].data_dir,
                                        *args, prefix=self.network.prefix(name))
        out, err = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        if code != expect:
            self.fail(f"vigocli {' '.join(map(str, args))} at bolt {name}: exit {code}, "
                      f"expected {expect}\n--- stdout:\n{out}--- stderr:\n{err}")
        return out

    @defer.inlineCallbacks
    def cli_json(self, name, *args):
        return json.loads((yield self.cli(name, *args, "--json")))

    def each(self, names, call):
        """``{name: result}`` of ``call(name)`` for every name, run side by side."""
        names = list(names)
        d = gather([call(n) for n in names])
        return d.addCallback(lambda results: dict(zip(names, results, strict=True)))

    def simulate(self, name, token):
        sim = ToolProcess("vigo-envoy", "sim", "--server", f"{host(name)}:{ENVOY_PORT}",
                          "--token", token, "--count", ENVOYS, "--interval", "1s",
                          "--duration", "600s", "--concurrency", ENVOYS,
                          "--hostname-template", "sim{n}.%s.example.com" % (name,),
                          prefix=self.network.prefix(name))
        sim.start()
        self.addCleanup(sim.stop)  # SIGKILL by its PID
        return sim

    # -- what the bolts say -----------------------------------------------------------

    @defer.inlineCallbacks
    def until(self, probe, what, timeout):
        """Poll ``probe()`` (a Deferred of ``(done, observed)``) every ``POLL`` s;
        ``(observed, seconds waited)``, or fail after ``timeout`` s showing what
        was last observed."""
        started = time.monotonic()
        while True:
            done, observed = yield probe()
            waited = time.monotonic() - started
            if done:
                return observed, waited
            if waited > timeout:
                self.fail(f"{what}: not within {timeout:g} s; last seen:\n"
                          f"{json.dumps(observed, indent=2, sort_keys=True, default=str)}")
            yield sleep(POLL)

    @defer.inlineCallbacks
    def view(self, name):
        """What bolt ``name`` says of the federation: its state and digest, and
        every bolt it lists with its roster status and liveness (by name)."""
        status, listing = yield gather([self.cli_json(name, "spanner", "status"),
                                        self.cli_json(name, "spanner", "bolt", "list")])
        return {"state": status["state"], "digest": status["digest"],
                "removed": status["bolts"]["removed"],
                "bolts": {b["name"]: {"status": b["status"], "liveness": b["liveness"]["state"]}
                          for b in listing["bolts"]}}

    def views(self, names="abc"):
        return self.each(names, self.view)

    @staticmethod
    def sees(view, expected):
        """Does ``view`` list exactly the bolts of ``expected`` ({name: liveness}),
        all active, with those liveness states?"""
        return {n: (b["status"], b["liveness"]) for n, b in view["bolts"].items()} == \
            {n: ("active", state) for n, state in expected.items()}

    def all_alive(self, names="abc"):
        @defer.inlineCallbacks
        def probe():
            seen = yield self.views(names)
            digests = {v["digest"] for v in seen.values()}
            done = len(digests) == 1 and None not in digests and all(
                v["state"] == "member" and v["removed"] == 0 and self.sees(
                    v, {n: "self" if n == me else "alive" for n in names})
                for me, v in seen.items())
            return done, seen
        return probe

    @defer.inlineCallbacks
    def envoys_at(self, name):
        """{hostname: row} of the envoys bolt ``name`` holds, asked of it alone."""
        answer = yield self.cli_json(name, "spanner", "bolt", "envoys", name)
        return {row["hostname"]: row for row in answer["envoys"]}

    @staticmethod
    def checking_in(rows):
        """The hostnames of ``rows`` active, connected and heard from within 3 s."""
        return sorted(h for h, r in rows.items() if r["state"] == "active" and r["connected"]
                      and r["last_seen_age"] is not None and r["last_seen_age"] < 3)

    def all_checking_in(self, expected):
        """A probe: every bolt holds exactly ``expected`` ({name: hostnames})
        active, and every one of them checks in."""
        @defer.inlineCallbacks
        def probe():
            held = yield self.each(expected, self.envoys_at)
            seen = {n: {"checking_in": self.checking_in(rows),
                        "active": sorted(h for h, r in rows.items() if r["state"] == "active")}
                    for n, rows in held.items()}
            done = all(s["checking_in"] == s["active"] == sorted(expected[n])
                       for n, s in seen.items())
            return done, seen
        return probe

    def owner(self, name, hostname, envoy_id):
        return self.cli_json(name, "spanner", "owner", hostname, "--envoy", envoy_id)

    @defer.inlineCallbacks
    def exported(self, name, envoy_id):
        """The ``accept-envoy`` fields of bolt ``name``'s envoy ``envoy_id``: as
        its ``query`` action shows it, and its public key (which no API shows)
        from that bolt's database."""
        answer = yield self.cli_json(name, "spanner", "bolt", "act", name, "query",
                                     "--arg", "kind=show", "--arg", "envoy=" + envoy_id)
        envoy = answer["result"]["envoy"]
        with contextlib.closing(sqlite3.connect(
                os.path.join(self.bolts[name].data_dir, DB_FILE))) as db:
            (public_key,) = db.execute("SELECT public_key FROM envoys WHERE id = ?",
                                       (envoy_id,)).fetchone()
        return {"id": envoy["id"], "hostname": envoy["hostname"],
                "public_key": base64.b64encode(bytes(public_key)).decode("ascii"),
                "enrolled_at": envoy["enrolled_at"], "last_seq": envoy["last_seq"],
                "applied_version": envoy["applied_version"], "token_id": None}

    # -- the test -----------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_one_bolt_cut_away_for_20s_then_healed(self):
        self.started = time.monotonic()
        yield self.each("abc", self.start_bolt)
        self.ids = {n: p.run["server_id"] for n, p in self.bolts.items()}
        self.mark("bolts ready")

        # 1. Found at a; a invites b and c.
        yield self.cli("a", "spanner", "init")
        for name in "bc":
            token = (yield self.cli("a", "spanner", "bolt", "invite")).strip()
            yield self.cli(name, "spanner", "bolt", "join", token)
        (before, _) = yield self.until(self.all_alive(), "a, b and c federated and alive",
                                       CONVERGE)
        digest = before["a"]["digest"]
        self.mark("federated")

        # 2. Envoys: three per bolt, enrolled at it, checking in every second.
        tokens = yield self.each("abc", lambda n: self.cli(n, "token", "create", "--uses",
                                                           ENVOYS))
        for name in "abc":
            self.simulate(name, tokens[name].strip())
        names = {n: [f"sim{i}.{n}.example.com" for i in range(1, ENVOYS + 1)] for n in "abc"}
        yield self.until(self.all_checking_in(names), "every bolt's envoys check in", SETTLE)
        held = yield self.each("abc", self.envoys_at)
        moved_id, pinned = held["a"][MOVED]["id"], held["c"][PINNED]
        shown = yield self.owner("c", PINNED, pinned["id"])
        self.assertEqual((shown["name"], shown["by"]), ("c", "pattern"), shown)
        checkins = {n: sum(r["checkins"] for r in rows.values()) for n, rows in held.items()}
        self.mark("envoys checking in")

        # 3. The cut.
        self.network.cut("c")
        cut_at = time.monotonic()
        self.mark("c cut away")

        @defer.inlineCallbacks
        def split():
            seen = yield self.views()
            done = (self.sees(seen["a"], {"a": "self", "b": "alive", "c": "down"})
                    and self.sees(seen["b"], {"a": "alive", "b": "self", "c": "down"})
                    and self.sees(seen["c"], {"a": "down", "b": "down", "c": "self"}))
            return done, seen

        _, waited = yield self.until(split, "a and b see c down, c sees a and b down",
                                     DOWN_WITHIN)
        self.mark(f"the sides see each other down ({waited:.1f} s after the cut)")

        # An override on each side (see the module's docstring).
        fields = yield self.exported("c", pinned["id"])
        act = ["spanner", "bolt", "act", "c", "accept-envoy"]
        for key, value in fields.items():
            act += ["--arg", f"{key}={json.dumps(value)}"]
        reassigned, accepted = yield gather([
            self.cli_json("a", "spanner", "bolt", "reassign", MOVED, "--to", "b"),
            self.cli_json("c", *act)])
        self.assertEqual((reassigned["to"], reassigned["changed"]), (self.ids["b"], True),
                         reassigned)
        self.assertEqual((accepted["bolt_id"], accepted["result"]["envoy_id"]),
                         (self.ids["c"], pinned["id"]), accepted)
        self.mark("an override written on each side")

        @defer.inlineCallbacks
        def diverged():
            seen = yield self.views()
            d = {n: v["digest"] for n, v in seen.items()}
            done = d["a"] == d["b"] and len({digest, d["a"], d["c"]}) == 3
            return done, seen

        seen, _ = yield self.until(diverged, "a and b share a new digest, c holds another",
                                   CUT)
        for name, view in seen.items():
            self.assertEqual((view["state"], view["removed"], sorted(view["bolts"])),
                             ("member", 0, ["a", "b", "c"]),
                             f"bolt {name} during the cut: {view}")
        # Envoys checked in on both sides through the cut: c's at c, a's at a
        # (the moved one at b, redirected there), b's at b.
        during = dict(names, a=names["a"][1:], b=names["b"] + [MOVED])
        yield self.until(self.all_checking_in(during), "the envoys check in during the cut",
                         max(5.0, CUT - LAST_LOOK - (time.monotonic() - cut_at)))
        # The last look, a few seconds before the heal (on a slow machine the
        # steps above may take longer: the cut then lasts until the last look).
        yield sleep(CUT - LAST_LOOK - (time.monotonic() - cut_at))
        held = yield self.each("abc", self.envoys_at)
        grew = {n: sum(r["checkins"] for r in rows.values()) - checkins[n]
                for n, rows in held.items()}
        self.assertTrue(all(g >= CUT for g in grew.values()),
                        f"check-ins during the cut, by bolt: {grew}")
        last = yield self.views()
        self.assertTrue(self.sees(last["a"], {"a": "self", "b": "alive", "c": "down"}) and
                        self.sees(last["b"], {"a": "alive", "b": "self", "c": "down"}) and
                        self.sees(last["c"], {"a": "down", "b": "down", "c": "self"}),
                        f"still cut, at the end of the cut: {last}")

        # 4. The heal.
        yield sleep(CUT - (time.monotonic() - cut_at))
        self.network.heal("c")
        self.mark(f"healed after {time.monotonic() - cut_at:.1f} s")
        after, waited = yield self.until(self.all_alive(), "after the heal: one digest, "
                                         "every bolt alive, none removed", CONVERGE)
        self.mark(f"converged {waited:.1f} s after the heal")
        self.assertNotIn(after["a"]["digest"], {digest, seen["a"]["digest"],
                                                 seen["c"]["digest"]})

        # 5. Both writes are in every bolt's roster; every envoy checks in.
        owners = yield self.each("abc", lambda n: gather([
            self.owner(n, MOVED, moved_id), self.owner(n, PINNED, pinned["id"])]))
        for name, (moved, pin) in owners.items():
            self.assertEqual((moved["bolt_id"], moved["by"], pin["bolt_id"], pin["by"]),
                             (self.ids["b"], "override", self.ids["c"], "override"),
                             f"the overrides as bolt {name} has them: {moved} {pin}")
        yield self.until(self.all_checking_in(during), "every envoy checks in after the heal",
                         SETTLE)
        self.mark("done")
