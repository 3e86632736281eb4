"""Metrics: names, types and docs; the histograms observed on the real paths;
and ``promtool check metrics`` on the ``/metrics`` of real servers.

The real servers are built in this process (``build_server``, loopback
ports) as a standalone server, two spanner bolts, and an HA primary with its
standby, and scraped over HTTPS as Prometheus would. ``promtool`` comes with
Debian's ``prometheus`` package (``.ci/run`` installs it); where it is not on
PATH, the tests that run it are skipped and say why.
"""

import argparse
import io
import os
import random
import re
import shutil
import subprocess
import time

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.events import rosters_of, until
from tests.fleetkit import EnvoyKey, FleetKit, RecordingConnection
from tests.serverkit import start_server
from tests.test_ha import ha_config
from tests.test_snapshot_pulls import (
    DEADLINE,
    FED,
    ME,
    PEER,
    Peer,
    PullTestCase,
    founded,
    more_rows,
    peer_row,
)
from tests.test_spanner_membership import spanner_config
from vigo import __version__
from vigo.cli.target import http_client, resolve_target
from vigo.config import config_from_mapping
from vigo.envoy import main as envoy_main
from vigo.envoy.state import EnvoyState
from vigo.fleet.enrollment import Enrollment
from vigo.fleet.ownership import Owner, Redirected
from vigo.identity import Identity
from vigo.interfaces.errors import PeerNoAnswer, PeerUnreachable, Refusal
from vigo.metrics import (
    CHECKIN_BUCKETS,
    ENROLLMENT_OUTCOMES,
    PULL_OUTCOMES,
    Durations,
    DurationsBy,
    FleetCollector,
    metrics_registry,
)
from vigo.spanner.peer.client import PeerClient
from vigo.spanner.roster.parts import RosterParts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "metrics.md")
PROMTOOL = shutil.which("promtool")
NO_PROMTOOL = ("promtool is not on PATH: it comes with Debian's prometheus package "
               "(apt-get install prometheus; .ci/run installs it when apt-get is there)")

# Every vigo_ family each kind of server exposes, with its type, as ``# TYPE`` says.
FLEET = {
    "vigo_build_info": "gauge",
    "vigo_envoys": "gauge",
    "vigo_envoys_online": "gauge",
    "vigo_envoys_attached": "gauge",
    "vigo_checkins_total": "counter",
    "vigo_checkin_duration_seconds": "histogram",
    "vigo_checkin_age_seconds": "histogram",
    "vigo_checkin_reservations_total": "counter",
    "vigo_envoy_state_transitions_total": "counter",
    "vigo_envoy_frames_refused_total": "counter",
    "vigo_enrollments_total": "counter",
    "vigo_enrollment_duration_seconds": "histogram",
    "vigo_force_pushes_total": "counter",
    "vigo_attaches_total": "counter",
    "vigo_connections": "gauge",
    "vigo_connections_refused_total": "counter",
}
SPANNER = dict(FLEET, **{
    "vigo_spanner_peers": "gauge",
    "vigo_spanner_roster_bolts": "gauge",
    "vigo_spanner_roster_rejections_total": "counter",
    "vigo_spanner_snapshot_pull_duration_seconds": "histogram",
    "vigo_spanner_peer_call_duration_seconds": "histogram",
    "vigo_spanner_peer_refusals_total": "counter",
    "vigo_spanner_gossip_datagrams_total": "counter",
    "vigo_spanner_gossip_sent_bytes_total": "counter",
    "vigo_spanner_gossip_dropped_total": "counter",
})
REPLICATION = {
    "vigo_replication_role": "gauge",
    "vigo_replication_epoch": "gauge",
    "vigo_replication_applied_lsn": "gauge",
    "vigo_replication_lag_seconds": "gauge",
}
PRIMARY = dict(FLEET, **REPLICATION)
STANDBY = dict(REPLICATION, **{name: FLEET[name] for name in (
    "vigo_build_info", "vigo_connections", "vigo_connections_refused_total")})
# A few of the client library's default collectors' families.
DEFAULTS = {
    "process_cpu_seconds_total": "counter",
    "process_resident_memory_bytes": "gauge",
    "python_gc_collections_total": "counter",
    "python_info": "gauge",
}


def types(text):
    """``{family: type}`` from the ``# TYPE`` lines of an exposition."""
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))


def value(text, name, **labels):
    """The value of the sample ``name{labels}`` in ``text`` (None if absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def documented():
    with open(DOC, encoding="utf-8") as f:
        return f.read()


def promtool(text):
    """``promtool check metrics`` of ``text``: (exit code, what it said)."""
    done = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode("utf-8"),
                          capture_output=True, timeout=60)
    return done.returncode, (done.stdout + done.stderr).decode("utf-8", "replace")


@defer.inlineCallbacks
def scrape(data_dir):
    """``GET /metrics`` of the server with ``data_dir`` over its HTTPS API port, as
    ``vigocli --data-dir`` finds it; the text."""
    options = argparse.Namespace(data_dir=data_dir, api=None, token=None, ca_file=None)
    target = resolve_target(options, {})
    client, pool = http_client(reactor, target)
    try:
        response = yield client.get(target.url + "/metrics")
        body = yield response.content()
    finally:
        yield pool.closeCachedConnections()
    if response.code != 200:
        raise AssertionError("GET /metrics answered %d: %r" % (response.code, body[:200]))
    return body.decode("utf-8")


# -- the durations the hot paths keep ------------------------------------------------


class DurationsTests(unittest.TestCase):
    def test_buckets_are_upper_bounds_and_cumulative(self):
        durations = Durations((0.001, 0.01))
        for seconds in (0.0005, 0.001, 0.002, 0.01, 5.0):
            durations.observe(seconds)
        # Prometheus's le: a value on a bound counts in that bound's bucket.
        self.assertEqual(durations.cumulative(), [("0.001", 2), ("0.01", 4), ("+Inf", 5)])
        self.assertEqual(durations.count, 5)
        self.assertAlmostEqual(durations.sum, 5.0135)

    def test_known_values_exist_before_they_are_observed(self):
        by = DurationsBy((1.0,), ("ok", "failed"))
        self.assertEqual(by.counts(), {"ok": 0, "failed": 0})
        by.observe("ok", 0.5)
        by.observe("new", 2.0)
        self.assertEqual(by.counts(), {"ok": 1, "failed": 0, "new": 1})
        self.assertEqual(by["new"].cumulative(), [("1.0", 0), ("+Inf", 1)])

    def test_a_label_never_grows_without_bound(self):
        by = DurationsBy((1.0,), limit=3)
        for i in range(10):
            by.observe("action-%d" % (i,), 0.1)
        self.assertEqual(by.counts(), {"action-0": 1, "action-1": 1, "action-2": 1,
                                       "other": 7})

    def test_buckets_are_sorted_and_in_seconds(self):
        from vigo import metrics

        for name in ("CHECKIN_BUCKETS", "ENROLLMENT_BUCKETS", "PEER_CALL_BUCKETS",
                     "SNAPSHOT_PULL_BUCKETS"):
            bounds = getattr(metrics, name)
            self.assertEqual(list(bounds), sorted(set(bounds)), name)
            self.assertTrue(0 < bounds[0] < 0.001 and bounds[-1] <= 10.0, name)


# -- observed on the real paths, in process ------------------------------------------


class FleetDurationsTests(unittest.TestCase):
    def setUp(self):
        self.kit = FleetKit(self)

    @defer.inlineCallbacks
    def attached(self):
        key, record = yield defer.ensureDeferred(self.kit.enroll(EnvoyKey()))
        now_ms = self.kit.now_ms()
        self.kit.fleet.attach(RecordingConnection(), key.id, self.kit.identity.id, now_ms,
                              key.attach_signature(self.kit.identity.id, now_ms))
        return key, record

    @defer.inlineCallbacks
    def test_every_checkin_is_timed_when_its_answer_is_ready(self):
        fleet = self.kit.fleet
        key, record = yield self.attached()
        self.assertIsInstance(fleet.checkin(record, key.checkin_body(self.kit.now_ms())), bytes)
        self.assertEqual(fleet.checkin_durations.count, 1)
        # A refused one (the same sequence again) is timed too.
        fleet.checkin(record, key.checkin_body(self.kit.now_ms(), seq=key.seq))
        self.assertEqual(fleet.checkin_durations.count, 2)
        # The slow path: answered once a sequence reservation is durable, and
        # timed then, not before.
        answer = fleet.checkin(record, key.checkin_body(self.kit.now_ms(),
                                                        seq=record.seq_reserved + 1))
        self.assertNotIsInstance(answer, bytes)
        self.assertEqual(fleet.checkin_durations.count, 2)
        yield answer
        self.assertEqual(fleet.checkin_durations.count, 3)
        self.assertEqual(fleet.checkin_durations.count, sum(fleet.stats.checkins.values()))
        self.assertEqual(fleet.stats.checkins["replayed"], 1)
        self.assertGreater(fleet.checkin_durations.sum, 0.0)

    @defer.inlineCallbacks
    def test_the_histogram_is_exposed(self):
        key, record = yield self.attached()
        self.kit.fleet.checkin(record, key.checkin_body(self.kit.now_ms()))
        registry = metrics_registry(FleetCollector(self.kit.fleet, self.kit.enrollment),
                                    mode="standalone")
        text = generate(registry)
        self.assertEqual(value(text, "vigo_checkin_duration_seconds_count"), 1.0)
        self.assertEqual(value(text, "vigo_checkin_duration_seconds_bucket", le="+Inf"), 1.0)
        self.assertIsNotNone(value(text, "vigo_checkin_duration_seconds_bucket",
                                   le=repr(CHECKIN_BUCKETS[0])))
        self.assertEqual(value(text, "vigo_enrollment_duration_seconds_count",
                               outcome="enrolled"), 1.0)
        self.assertEqual(value(text, "vigo_envoys", state="active"), 1.0)
        self.assertEqual(value(text, "vigo_envoys_attached"), 1.0)
        self.assertEqual(value(text, "vigo_envoys_online"), 1.0)
        self.assertEqual(value(text, "vigo_build_info", version=__version__,
                               mode="standalone"), 1.0)


def generate(registry):
    from prometheus_client import generate_latest

    return generate_latest(registry).decode("utf-8")


class _Elsewhere:
    """An ownership that says another server owns every hostname."""

    def owner_of(self, hostname):
        return Owner("other", "127.0.0.1:1", "fp", False)


class _Broken:
    def owner_of(self, hostname):
        raise RuntimeError("a bug")


class EnrollmentDurationsTests(unittest.TestCase):
    def setUp(self):
        self.kit = FleetKit(self)

    def enrollment(self, ownership):
        kit = self.kit
        return Enrollment(kit.fleet, kit.store, kit.identity, ownership, kit.clock,
                          lambda: kit.address, kit.tokens)

    def counts(self, enrollment=None):
        counts = (enrollment or self.kit.enrollment).durations.counts()
        self.assertEqual(set(counts), set(ENROLLMENT_OUTCOMES))
        return {outcome: n for outcome, n in counts.items() if n}

    @defer.inlineCallbacks
    def test_each_register_is_timed_by_outcome(self):
        kit = self.kit
        yield defer.ensureDeferred(kit.enroll())
        self.assertEqual(self.counts(), {"enrolled": 1})
        # Refused at once (the signature), and refused by the store (the token).
        token = yield kit.tokens.create()
        fields = list(EnvoyKey().register_fields(token, kit.now_ms()))
        fields[4] = b"\x00" * 64
        self.assertRaises(Refusal, kit.enrollment.register, *fields)
        used_up = yield kit.tokens.create(uses=1)
        yield defer.ensureDeferred(kit.enroll(EnvoyKey("web2.dc1.example.com")))
        yield kit.enrollment.register(*EnvoyKey("web3.dc1.example.com").register_fields(
            used_up, kit.now_ms()))
        yield self.assertFailure(kit.enrollment.register(*EnvoyKey(
            "web4.dc1.example.com").register_fields(used_up, kit.now_ms())), Refusal)
        self.assertEqual(self.counts(), {"enrolled": 3, "refused": 2})

    @defer.inlineCallbacks
    def test_redirected_and_failed(self):
        token = yield self.kit.tokens.create()
        elsewhere = self.enrollment(_Elsewhere())
        self.assertRaises(Redirected, elsewhere.register,
                          *EnvoyKey().register_fields(token, self.kit.now_ms()))
        self.assertEqual(self.counts(elsewhere), {"redirected": 1})
        broken = self.enrollment(_Broken())
        self.assertRaises(RuntimeError, broken.register,
                          *EnvoyKey().register_fields(token, self.kit.now_ms()))
        self.assertEqual(self.counts(broken), {"failed": 1})


class _Perspective:
    """A logged-in peer's perspective whose answers the test gives."""

    def __init__(self):
        self.calls = []

    def callRemote(self, method, *args):
        d = defer.Deferred()
        self.calls.append((method, args, d))
        return d


class PeerCallDurationsTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.durations = DurationsBy((1.0,))
        self.client = PeerClient(self.clock, Identity.generate(), "127.0.0.1:1", "fp",
                                 bolt_id="b" * 20, durations=self.durations, timeout=5.0)

    def test_each_action_call_is_timed_by_action(self):
        perspective = self.client._perspective = _Perspective()
        answered = self.client.call("ping", {})
        perspective.calls[-1][2].callback({"ok": {"pong": True}})
        self.assertEqual(self.successResultOf(answered), {"pong": True})
        refused = self.client.call("drain-status", {})
        perspective.calls[-1][2].callback({"error": {"kind": "action", "code": "x",
                                                     "reason": "no", "retryable": False}})
        self.failureResultOf(refused)
        unanswered = self.client.call("ping", {})
        self.clock.advance(5.0)
        self.failureResultOf(unanswered, PeerNoAnswer)
        self.assertEqual(self.durations.counts(), {"ping": 2, "drain-status": 1})
        self.assertEqual(self.durations["ping"].cumulative()[-1], ("+Inf", 2))

    def test_a_call_never_sent_is_not_timed(self):
        self.failureResultOf(self.client.call("ping", {}), PeerUnreachable)  # not connected
        self.assertEqual(self.durations.counts(), {})


class PullDurationsTests(PullTestCase):
    @defer.inlineCallbacks
    def test_each_pull_is_timed_by_outcome(self):
        peer = Peer("snapshot")
        port = peer.listen(self)
        puller = self.bolt(port)
        served = founded()
        served.add_row(peer_row(port))
        rows, records = more_rows(3)
        served.merge(RosterParts(FED, ME.id, rows, overrides=records))
        peer.serve(served)
        yield puller.pull(PEER.id)
        yield puller.pull(PEER.id)
        self.assertEqual(puller.durations.counts(), dict(dict.fromkeys(PULL_OUTCOMES, 0),
                                                         ok=1, same=1))
        self.assertEqual(puller.durations.counts(), puller.pulls)

    @defer.inlineCallbacks
    def test_a_pull_that_timed_out_took_its_deadline(self):
        peer = Peer("silent")
        puller = self.bolt(peer.listen(self))
        yield puller.pull(PEER.id)
        self.assertEqual(puller.durations["timeout"].count, 1)
        self.assertGreaterEqual(puller.durations["timeout"].sum, DEADLINE * 0.99)


# -- real servers ---------------------------------------------------------------------


class RealServers:
    """Real servers in this process on loopback, with some traffic, scraped."""

    timeout = 60

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        self.group = "239.192.%d.%d" % (random.randrange(1, 255), random.randrange(1, 255))
        self.port = random.randrange(20000, 60000)

    @defer.inlineCallbacks
    def started(self, config):
        return (yield start_server(self, config))

    @defer.inlineCallbacks
    def standalone(self):
        """A standalone server that enrolled an envoy (over TLS, as ``vigo-envoy
        register`` does) which checked in once; its ``/metrics``."""
        data_dir = os.path.join(self.directory, "standalone")
        server = yield self.started(config_from_mapping({"server": {
            "data_dir": data_dir, "hostname": "localhost",
            "envoy_listen": "127.0.0.1:0", "api_listen": "127.0.0.1:0"}}))
        token = yield server.enrollment_tokens.create()
        state = EnvoyState.open(os.path.join(self.directory, "envoy"), create=True)
        protocol = yield envoy_main.register(reactor, state, "web1.dc1.example.com", token)
        yield protocol.close()
        said = yield envoy_main.EnvoyRunner(reactor, state, io.StringIO()).once()
        self.assertIn("applied", said)
        text = yield scrape(data_dir)
        return server, text

    @defer.inlineCallbacks
    def bolts(self):
        """Bolts a and b, federated; at a an enrollment routed to b, a peer
        action and a snapshot pull; their ``/metrics``."""
        a = yield self.started(spanner_config(os.path.join(self.directory, "a"), "a",
                                              self.group, self.port))
        b = yield self.started(spanner_config(os.path.join(self.directory, "b"), "b",
                                              self.group, self.port))
        yield a.spanner.admin.init()
        invite = yield a.spanner.admin.invite(3600)
        yield b.spanner.admin.join(invite["token"])
        yield until(lambda: all(len(bolt.spanner.roster.bolt_ids()) == 2 for bolt in (a, b)),
                    *rosters_of(a, b), what="both rosters hold both bolts")
        token = yield a.enrollment_tokens.create()
        registered = yield a.enrollment.register(*EnvoyKey("web1.b.example.com").register_fields(
            token, int(time.time() * 1000)))
        self.assertEqual(registered["server_id"], b.identity.id)
        yield a.spanner.bolt.call(b.identity.id, "ping", {})
        yield a.spanner.puller.pull(b.identity.id)
        text_a = yield scrape(os.path.join(self.directory, "a"))
        text_b = yield scrape(os.path.join(self.directory, "b"))
        return (a, text_a), (b, text_b)

    @defer.inlineCallbacks
    def replica_set(self):
        """An HA primary and its standby, an envoy enrolled at the primary;
        both ``/metrics``."""
        primary = yield self.started(ha_config(os.path.join(self.directory, "primary")))
        standby = yield self.started(ha_config(os.path.join(self.directory, "standby")))
        invite = yield primary.replicas.invite(3600)
        yield standby.replicas.join(invite["token"])
        yield standby.reached(primary.replication.head())
        token = yield primary.current.enrollment_tokens.create()
        yield primary.current.enrollment.register(*EnvoyKey().register_fields(
            token, int(time.time() * 1000)))
        yield standby.reached(primary.replication.head())
        text_primary = yield scrape(primary.data_dir)
        text_standby = yield scrape(standby.data_dir)
        return (primary, text_primary), (standby, text_standby)


class RealServerMetricsTests(RealServers, unittest.TestCase):
    """What each server exposes: every family named, typed and documented, and
    the histograms fed by the real paths."""

    def assertFamilies(self, text, expected, mode):
        exposed = types(text)
        vigo = {name: kind for name, kind in exposed.items() if name.startswith("vigo_")}
        self.assertEqual(vigo, expected)
        for name, kind in DEFAULTS.items():
            self.assertEqual(exposed.get(name), kind, name)
        doc = documented()
        for name, kind in vigo.items():
            self.assertIn("`%s" % (name,), doc, "docs/metrics.md does not list " + name)
            self.assertEqual(kind == "counter", name.endswith("_total"), name)
            if kind == "histogram":
                self.assertTrue(name.endswith("_seconds"), name)
            self.assertNotIn("node", name.replace("_lsn", ""), name)
            self.assertRegex(text, r"(?m)^# HELP %s \S" % (name,))
        self.assertEqual(value(text, "vigo_build_info", version=__version__, mode=mode), 1.0)

    @defer.inlineCallbacks
    def test_standalone(self):
        server, text = yield self.standalone()
        self.assertFamilies(text, FLEET, "standalone")
        self.assertEqual(value(text, "vigo_envoys", state="active"), 1.0)
        self.assertEqual(value(text, "vigo_envoys", state="revoked"), 0.0)
        self.assertEqual(value(text, "vigo_envoys_online"), 1.0)
        self.assertEqual(value(text, "vigo_enrollment_duration_seconds_count",
                               outcome="enrolled"), 1.0)
        self.assertEqual(value(text, "vigo_checkin_duration_seconds_count"), 1.0)
        self.assertEqual(value(text, "vigo_checkins_total", status="bundle"), 1.0)

    @defer.inlineCallbacks
    def test_spanner_bolts(self):
        (a, text_a), (b, text_b) = yield self.bolts()
        for text in (text_a, text_b):
            self.assertFamilies(text, SPANNER, "spanner")
        self.assertEqual(value(text_a, "vigo_enrollment_duration_seconds_count",
                               outcome="routed"), 1.0)
        self.assertEqual(value(text_b, "vigo_enrollments_total"), 1.0)
        self.assertEqual(value(text_a, "vigo_spanner_peer_call_duration_seconds_count",
                               action="ping"), 1.0)
        self.assertEqual(value(text_a, "vigo_spanner_peer_call_duration_seconds_count",
                               action="route-enrollment"), 1.0)
        self.assertGreaterEqual(value(text_b, "vigo_spanner_peer_call_duration_seconds_count",
                                      action="redeem-token"), 1.0)
        pulls = sum(value(text_a, "vigo_spanner_snapshot_pull_duration_seconds_count",
                          outcome=outcome) for outcome in PULL_OUTCOMES)
        self.assertGreaterEqual(pulls, 1.0)
        self.assertEqual(value(text_a, "vigo_spanner_roster_bolts"), 2.0)

    @defer.inlineCallbacks
    def test_ha_primary_and_standby(self):
        (primary, text_primary), (standby, text_standby) = yield self.replica_set()
        self.assertFamilies(text_primary, PRIMARY, "standalone")
        self.assertFamilies(text_standby, STANDBY, "standalone")
        self.assertEqual(value(text_primary, "vigo_replication_role", role="primary"), 1.0)
        self.assertEqual(value(text_standby, "vigo_replication_role", role="standby"), 1.0)
        self.assertEqual(value(text_primary, "vigo_enrollment_duration_seconds_count",
                               outcome="enrolled"), 1.0)


class PromtoolTests(RealServers, unittest.TestCase):
    """``promtool check metrics`` passes on each server's ``/metrics``."""

    if PROMTOOL is None:
        skip = NO_PROMTOOL

    def assertPromtoolPasses(self, text, what):
        code, said = promtool(text)
        self.assertEqual((code, said), (0, ""), "promtool check metrics on %s" % (what,))

    def test_promtool_finds_what_it_should(self):
        # The check this suite relies on: a gauge named like a counter fails it.
        code, said = promtool("# HELP vigo_nodes_total x\n# TYPE vigo_nodes_total gauge\n"
                              "vigo_nodes_total 1\n")
        self.assertNotEqual(code, 0)
        self.assertIn('should not have "_total" suffix', said)

    @defer.inlineCallbacks
    def test_standalone(self):
        _, text = yield self.standalone()
        self.assertPromtoolPasses(text, "a standalone server")

    @defer.inlineCallbacks
    def test_spanner_bolts(self):
        (_, text_a), (_, text_b) = yield self.bolts()
        self.assertPromtoolPasses(text_a, "bolt a")
        self.assertPromtoolPasses(text_b, "bolt b")

    @defer.inlineCallbacks
    def test_ha_primary_and_standby(self):
        (_, text_primary), (_, text_standby) = yield self.replica_set()
        self.assertPromtoolPasses(text_primary, "an HA primary")
        self.assertPromtoolPasses(text_standby, "its standby")
