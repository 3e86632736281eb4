"""Reassign and drain under check-in load, with ``kill -9`` at every step.

Real ``twistd -n vigo --mode=spanner`` bolts on loopback and a real
``vigo-envoy sim`` checking in every second. A bolt started with
``VIGO_FAILPOINTS`` (``vigo.failpoints``) kills itself with SIGKILL at the
named step of a reassign or a drain; it is started again on the same data,
and the test waits until every bolt's database says each envoy is active at
exactly one bolt, the right one, and the envoys check in there. Nobody runs
``reassign`` again: the bolts finish the job themselves
(``vigo.spanner.handover``, ``vigo.spanner.drain``).
"""

import contextlib
import os
import signal
import sqlite3

from twisted.internet import defer

from tests.processes import ToolProcess
from tests.test_spanner_integration import SpannerTestCase
from vigo.store import DB_FILE

#: Seconds for the bolts to finish an interrupted move: the restarted bolt's
#: first repair round comes 5 s after start, then the envoy reattaches.
SETTLE = 40.0


class LoadMixin:
    """An envoy simulator, and what every bolt's own database says."""

    @defer.inlineCallbacks
    def simulate(self, at, count, template):
        """``count`` simulated envoys enrolled through bolt ``at`` (the owner
        of each hostname takes it), checking in every second until cleanup."""
        token = yield self.new_token(self.data(at), count)
        sim = ToolProcess("vigo-envoy", "sim", "--server", self.bolts[at].envoy_server,
                          "--token", token, "--count", count, "--interval", "1s",
                          "--duration", "600s", "--concurrency", "20",
                          "--hostname-template", template).start(self.directory())
        self.addCleanup(sim.stop)
        return sim

    def held(self, names):
        """{hostname: {bolt name: state}} from each named bolt's database."""
        out = {}
        for name in names:
            path = os.path.join(self.data(name), DB_FILE)
            with contextlib.closing(sqlite3.connect(path)) as db:
                for hostname, state in db.execute("SELECT hostname, state FROM envoys"):
                    out.setdefault(hostname, {})[name] = state
        return out

    def owners(self, names):
        """{hostname: [names of the bolts holding it active]}."""
        return {hostname: sorted(n for n, s in states.items() if s == "active")
                for hostname, states in self.held(names).items()}

    @defer.inlineCallbacks
    def checking_in(self, at, expected):
        """{bolt name: count} of envoys connected and heard from within 3 s,
        by the listing asked at bolt ``at`` (every bolt answers for its own)."""
        listing = yield self.api(at).get("/api/v1/envoys")
        counts = {}
        for envoy in listing["envoys"]:
            if envoy["state"] == "active" and envoy["connected"] and \
                    (envoy["last_seen_age"] or 99) < 3:
                counts[envoy.get("bolt_name")] = counts.get(envoy.get("bolt_name"), 0) + 1
        return counts == expected, counts

    @defer.inlineCallbacks
    def settled(self, names, expected, checking):
        """Wait until every envoy is active at exactly the bolt ``expected``
        names for its hostname (a function), and ``checking`` (bolt name to
        count) envoys check in at each."""

        def probe():
            owners = self.owners(names)
            wrong = {h: o for h, o in owners.items() if o != [expected(h)]}
            return defer.succeed((not wrong, wrong))

        yield self.until(probe, "every envoy active at exactly its bolt", timeout=SETTLE)
        yield self.until(lambda: self.checking_in(names[0], checking),
                         "the envoys check in at their bolts", timeout=SETTLE)

    @defer.inlineCallbacks
    def died(self, name):
        process = self.bolts[name]
        yield process.ended
        self.assertEqual(process.exit_signal, signal.SIGKILL,
                         "bolt %s did not die at its failpoint:\n%s"
                         % (name, process.output.decode()[-2000:]))


class CrashDuringReassignTests(LoadMixin, SpannerTestCase):
    """``kill -9`` of the source or the destination at each step of a reassign."""

    timeout = 120
    ENVOYS = 10

    @defer.inlineCallbacks
    def crash_at(self, step, victim):
        yield self.start_bolts("a", "b", env={victim: {"VIGO_FAILPOINTS": step}})
        yield self.federate("a", "b")
        yield self.simulate("a", self.ENVOYS, "sim{n}.a.example.com")
        yield self.settled("ab", lambda h: "a", {"a": self.ENVOYS})

        moving = "sim1.a.example.com"
        answer = self.api("a").request("POST", "/api/v1/envoys/%s/reassign" % (moving,),
                                       {"to": "b"})
        answer.addErrback(lambda failure: (None, None, failure.getErrorMessage()))
        yield self.died(victim)
        code, _, body = yield answer
        self.assertNotEqual(code, 200, "the reassign cannot have answered yes: %r" % (body,))

        yield self.start_bolts(victim)  # the same data, no failpoint
        yield self.settled("ab", lambda h: "b" if h == moving else "a",
                           {"a": self.ENVOYS - 1, "b": 1})
        held = self.held("ab")[moving]
        self.assertEqual(held, {"a": "moved", "b": "active"})
        # Nothing pending anywhere, and the roster says b.
        with contextlib.closing(sqlite3.connect(os.path.join(self.data("a"), DB_FILE))) as db:
            self.assertEqual(db.execute("SELECT COUNT(*) FROM envoy_moves").fetchone(), (0,))
        shown = yield self.api("b").get("/api/v1/envoys/" + moving)
        self.assertEqual((shown["bolt_name"], shown["state"]), ("b", "active"))

    def test_source_dies_after_noting_the_move(self):
        return self.crash_at("reassign.journaled", "a")

    def test_destination_dies_after_storing_the_envoy(self):
        return self.crash_at("accept.stored", "b")

    def test_destination_dies_after_claiming_it(self):
        return self.crash_at("accept.claimed", "b")

    def test_source_dies_before_marking_it_moved(self):
        return self.crash_at("reassign.accepted", "a")


class DrainUnderLoadTests(LoadMixin, SpannerTestCase):
    """Three bolts; envoys enrolled at the wrong bolt land on the right one;
    then a drain under check-in load, its bolt killed halfway."""

    timeout = 180
    ENVOYS = 30

    @defer.inlineCallbacks
    def test_drain_killed_halfway_resumes_and_loses_nothing(self):
        yield self.start_bolts("a", "b", "c", env={"c": {"VIGO_FAILPOINTS": "drain.moved@12"}})
        yield self.federate("a", "b", "c")
        # Enrolled through a, owned by c: every one lands on c, none on a.
        yield self.simulate("a", self.ENVOYS, "sim{n}.c.example.com")
        yield self.settled("abc", lambda h: "c", {"c": self.ENVOYS})
        self.assertEqual(set(self.held("ab")), set(), "stored only at the owner")

        # Asked at a: drain c into b. c dies after its 12th move.
        started = yield self.api("a").json("POST", "/api/v1/spanner/bolts/c/drain",
                                           {"to": "b"}, expect=202)
        self.assertEqual(started["status"], "draining")
        yield self.died("c")
        # At least 12 moved; moves under way then (16 at once) may have left an
        # envoy active at both; none is lost.
        owners = self.owners("abc")
        self.assertGreaterEqual(sum(1 for o in owners.values() if o == ["b"]), 12, owners)
        self.assertEqual((len(owners), [h for h, o in owners.items() if not o]),
                         (self.ENVOYS, []), owners)

        # Back: c resumes its drain by itself, and every envoy ends at b.
        yield self.start_bolts("c")
        yield self.settled("abc", lambda h: "b", {"b": self.ENVOYS})

        @defer.inlineCallbacks
        def drained():
            progress = yield self.api("a").get("/api/v1/spanner/bolts/c/drain")
            return (progress["state"], progress["remaining"]) == ("done", 0), progress

        yield self.until(drained, "c says its drain is done")
        held = self.held("abc")
        self.assertEqual({states["c"] for states in held.values()}, {"moved"})
        self.assertEqual(len(held), self.ENVOYS, "no envoy lost, none added")

        # Removed, asked at a: every bolt hears of it.
        yield self.api("a").json("DELETE", "/api/v1/spanner/bolts/c")

        @defer.inlineCallbacks
        def removed():
            seen = {}
            for name in "ab":
                seen[name] = (yield self.api(name).get("/api/v1/spanner/bolts/c"))["status"]
            return set(seen.values()) == {"removed"}, seen

        yield self.until(removed, "a and b hold c's removal")
