"""SIGHUP: the config is read again and what can change live is applied.

In-process: the fleet's half (bundles recomputed, the interval told as envoys
attach, the offline sweep), a bolt's row (its name and patterns re-signed and
announced), the reload of one tree with a ``Clock`` or with real servers on
loopback (a standalone server, two bolts, an HA primary), the ``Reloader``'s
log lines and the ``VigoProcess`` around the server (the signal handler, the
status pipe of a daemonized twistd). End to end: a real ``twistd -n vigo``
sent SIGHUP by the PID this test started, still serving afterwards.
"""

import json
import os

import attr
from twisted.application import service
from twisted.internet import defer, reactor
from twisted.logger import Logger, LogPublisher
from twisted.trial import unittest

from tests.events import rosters_of, until
from tests.fleetkit import EnvoyKey, FleetKit, RecordingConnection, decode_frame
from tests.processes import write_config
from tests.serverkit import start_server
from tests.test_integration import IntegrationTestCase
from tests.test_reassign import UnitFederation, done
from tests.test_spanner_membership import federate
from vigo.config import ConfigError, config_from_mapping, load_config
from vigo.fleet import wire
from vigo.fleet.hostcrates import Hostcrates
from vigo.interfaces.errors import Refusal
from vigo.server.log_level import LEVEL, ProcessLogLevel
from vigo.server.reload import (
    Reloader,
    ReloadRefused,
    Report,
    config_loader,
    differing,
    row_keys_set,
)
from vigo.server.service import VigoProcess
from vigo.spanner.routing import owner_of

WEB1 = "web1.dc1.example.com"


def write_yaml(path, data):
    with open(path, "w") as f:
        json.dump(data, f)  # JSON is YAML
    return path


def server_yaml(directory, **sections):
    """A standalone server's config file on loopback (ephemeral ports)."""
    data = {"server": {"data_dir": os.path.join(directory, "data"), "hostname": "localhost",
                       "envoy_listen": "127.0.0.1:0", "api_listen": "127.0.0.1:0"}}
    data.update(sections)
    return write_yaml(os.path.join(directory, "server.yaml"), data)


def logged(events):
    """The text of each captured log event."""
    from twisted.logger import formatEvent

    return [formatEvent(event) for event in events]


# -- what a reload compares ------------------------------------------------------------


class CompareTests(unittest.TestCase):
    def test_the_keys_that_differ_are_named_as_in_the_file(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        old = load_config(server_yaml(directory))
        new = load_config(server_yaml(directory, checkin={"interval": "5s"},
                                      peers={"sync": 1},
                                      server={"data_dir": os.path.join(directory, "data"),
                                              "hostname": "localhost",
                                              "envoy_listen": "127.0.0.1:0",
                                              "api_listen": "127.0.0.1:9443"}))
        self.assertEqual(differing(old, new), ["checkin.interval", "peers.sync",
                                               "server.api_listen"])
        self.assertEqual(differing(old, old), [])

    def test_which_row_keys_the_file_sets(self):
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "server.yaml")
        for data, expected in [
            ({}, (False, False)),
            ({"spanner": {"mode": "spanner"}}, (False, False)),
            ({"spanner": {"bolt_name": "a"}}, (True, False)),
            ({"spanner": {"patterns": []}}, (False, False)),
            ({"spanner": {"bolt_name": "a", "patterns": ["*.a.test"]}}, (True, True)),
        ]:
            self.assertEqual(row_keys_set(write_yaml(path, data)), expected, data)
        self.assertEqual(row_keys_set(None), (False, False))

    def test_a_server_on_built_in_defaults_has_nothing_to_reload(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        config = load_config(None, data_dir=directory, cwd=directory, environ={})
        self.assertIsNone(config.source)
        error = self.assertRaises(ConfigError, config_loader(config))
        self.assertIn("nothing to reload", str(error))

    def test_the_loader_keeps_the_command_line_overrides(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = server_yaml(directory)
        config = load_config(path, mode="spanner", data_dir=os.path.join(directory, "d2"))
        again = config_loader(config, mode="spanner", data_dir=os.path.join(directory, "d2"))()
        self.assertEqual(differing(config, again), [])


# -- the fleet's half ---------------------------------------------------------------------


class FleetReloadTests(unittest.TestCase):
    def setUp(self):
        self.kit = FleetKit(self)
        self.fleet = self.kit.fleet

    async def attached(self, hostname=WEB1):
        key, record = await self.kit.enroll(EnvoyKey(hostname))
        connection = RecordingConnection()
        ts = self.kit.now_ms()
        self.fleet.attach(connection, key.id, self.kit.identity.id, ts,
                          key.attach_signature(self.kit.identity.id, ts))
        return key, record, connection

    def check_in(self, key, record, version=b"\x00" * 32):
        answer = self.fleet.checkin(record, key.checkin_body(self.kit.now_ms(), version))
        if isinstance(answer, defer.Deferred):
            answer = self.successResultOf(answer)
        return decode_frame(answer)

    @defer.inlineCallbacks
    def test_a_changed_bundle_is_given_at_the_next_check_in(self):
        key, record, _ = yield defer.ensureDeferred(self.attached())
        other, _, _ = yield defer.ensureDeferred(self.attached("db1.dc2.example.com"))
        kind, fields = self.check_in(key, record)
        version = wire.unb64(fields["version"], "version", 32)
        self.assertEqual(self.check_in(key, record, version)[0], wire.NO_CHANGE)
        changed = self.fleet.set_hostcrates(Hostcrates.from_data([
            {"match": "web*.dc1.example.com", "environment": "staging"}]))
        self.assertEqual(changed, 1)  # db1.dc2 had the default bundle, and keeps it
        kind, fields = self.check_in(key, record, version)
        self.assertEqual(kind, wire.BUNDLE)
        self.assertEqual(fields["document"]["environment"], "staging")
        new_version = wire.unb64(fields["version"], "version", 32)
        self.assertEqual(self.check_in(key, record, new_version)[0], wire.NO_CHANGE)
        # A new enrollment takes the new hostcrates too.
        _, later = yield self.kit.enroll(EnvoyKey("web9.dc1.example.com"))
        self.assertEqual(later.bundle.version, new_version)

    @defer.inlineCallbacks
    def test_a_shorter_interval_is_told_as_envoys_attach_and_the_sweep_allows_the_old(self):
        _, early, _ = yield defer.ensureDeferred(self.attached())
        self.fleet.set_cadence(5.0, 3)
        self.assertEqual(self.fleet.interval, 5.0)
        _, late, _ = yield defer.ensureDeferred(self.attached("web2.dc1.example.com"))
        self.kit.clock.advance(20)  # past 3 x 5 s, within 3 x 15 s
        self.assertEqual(self.fleet.sweep(), 1)
        self.assertEqual((early.online, late.online), (True, False))
        self.kit.clock.advance(30)  # past 3 x 15 s
        self.assertEqual(self.fleet.sweep(), 1)
        self.assertFalse(early.online)

    @defer.inlineCallbacks
    def test_an_envoy_that_attaches_again_is_on_the_new_interval(self):
        key, record, connection = yield defer.ensureDeferred(self.attached())
        self.fleet.set_cadence(5.0, 3)
        self.fleet.detach(record, connection)
        ts = self.kit.now_ms()
        self.fleet.attach(RecordingConnection(), key.id, self.kit.identity.id, ts,
                          key.attach_signature(self.kit.identity.id, ts))
        self.kit.clock.advance(20)
        self.assertEqual(self.fleet.sweep(), 1)

    @defer.inlineCallbacks
    def test_a_longer_interval_applies_to_every_envoy_at_once(self):
        _, record, _ = yield defer.ensureDeferred(self.attached())
        self.fleet.set_cadence(5.0, 3)
        self.fleet.set_cadence(60.0, 2)
        self.kit.clock.advance(100)
        self.assertEqual(self.fleet.sweep(), 0)
        self.kit.clock.advance(30)
        self.assertEqual(self.fleet.sweep(), 1)
        self.assertFalse(record.online)


# -- a bolt's row ------------------------------------------------------------------------


class RowChangeTests(unittest.TestCase):
    def setUp(self):
        self.fed = UnitFederation()

    def test_name_and_patterns_are_signed_and_announced(self):
        a = self.fed["a"]
        before = a.roster.row(a.id)
        row = done(a.own_row.change(name="a2", patterns=["*.a.example.com", "*.new.test"]))
        self.assertEqual((row.seq, row.name, row.patterns),
                         (before.seq + 1, "a2", ("*.a.example.com", "*.new.test")))
        # Announced: the others hold it without a pull.
        for other in ("b", "c"):
            self.assertEqual(self.fed[other].roster.row(a.id), row)
        self.assertEqual(sorted(call for call in a.peers.calls if call[1] == "announce-row"),
                         sorted([(self.fed["b"].id, "announce-row"),
                                 (self.fed["c"].id, "announce-row")]))
        # Routing follows: *.new.test is a's now, at every bolt.
        for other in ("a", "b", "c"):
            self.assertEqual(owner_of(self.fed[other].roster.current, "web1.new.test").bolt_id,
                             a.id)
        self.assertIsNone(done(a.own_row.change(name="a2", patterns=["*.new.test",
                                                                    "*.a.example.com"])))

    def test_only_what_differs_is_changed(self):
        a = self.fed["a"]
        self.assertEqual(a.own_row.changes_for(name="a", patterns=["*.A.example.com "]), {})
        self.assertEqual(a.own_row.changes_for(patterns=["*.x.test"]),
                         {"patterns": ("*.x.test",)})
        self.assertEqual(a.own_row.changes_for(name="z"), {"name": "z"})

    def test_a_name_another_bolt_has_is_refused(self):
        a = self.fed["a"]
        for name in ("b", self.fed["c"].id):
            error = self.assertRaises(Refusal, a.own_row.changes_for, name=name)
            self.assertIn("must name it alone", error.reason)
        self.assertEqual(a.roster.row(a.id).seq, 1)

    def test_a_pattern_the_roster_refuses_is_refused(self):
        error = self.assertRaises(Refusal, self.fed["a"].own_row.changes_for,
                                  patterns=["web/1.example.com"])
        self.assertIn("the roster refuses it", error.reason)

    def test_a_bolt_not_yet_a_member_has_no_row_to_change(self):
        from vigo.identity import Identity
        from vigo.spanner.own_row import OwnRow
        from vigo.spanner.roster.local import LocalRoster
        from vigo.testing.store import ImmediateStore

        identity = Identity.generate()
        own_row = OwnRow(identity, LocalRoster(ImmediateStore(), identity, self.fed.clock),
                         None, self.fed.clock, dict, "x", [])
        self.assertEqual(self.assertRaises(Refusal, own_row.changes_for, name="y").code,
                         "not_member")


# -- one tree, in this process ---------------------------------------------------------------


class StandaloneReloadTests(unittest.TestCase):
    """A real standalone server on loopback, reloaded with configs from files."""

    timeout = 30

    @defer.inlineCallbacks
    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.hostcrates = write_yaml(os.path.join(self.directory, "hostcrates.yaml"), [
            {"match": "web*.dc1.example.com", "environment": "prod"}])
        self.path = server_yaml(self.directory, hostcrates="hostcrates.yaml")
        self.server = yield start_server(self, load_config(self.path))
        token = yield self.server.enrollment_tokens.create()
        key = EnvoyKey(WEB1)
        yield self.server.enrollment.register(
            *key.register_fields(token, int(reactor.seconds() * 1000)))
        self.record = self.server.fleet.index.get(key.id)

    def rewrite(self, **sections):
        server_yaml(self.directory, hostcrates="hostcrates.yaml", **sections)
        return load_config(self.path)

    @defer.inlineCallbacks
    def test_hostcrates_and_interval_live_ports_need_a_restart(self):
        before = self.record.bundle
        write_yaml(self.hostcrates, [{"match": "web*.dc1.example.com",
                                      "environment": "staging"}])
        api = self.server.advertised.api_url()
        new = self.rewrite(checkin={"interval": "5s", "offline_after": 4},
                           server={"data_dir": os.path.join(self.directory, "data"),
                                   "hostname": "localhost", "envoy_listen": "127.0.0.1:0",
                                   "api_listen": "127.0.0.1:1"})
        report = yield self.server.reload(new)
        self.assertEqual(report.restart, ["server.api_listen"])
        self.assertEqual(report.failed, [])
        self.assertEqual(report.reloaded, [
            "hostcrates %s: 1 envoy(s) get a new bundle at their next check-in"
            % (self.hostcrates,),
            "checkin.interval 15s -> 5s (envoys are told as they attach)",
            "checkin.offline_after 3 -> 4"])
        self.assertNotEqual(self.record.bundle.version, before.version)
        self.assertEqual(self.record.bundle.document["environment"], "staging")
        self.assertEqual((self.server.fleet.interval, self.server.fleet.offline_after), (5.0, 4))
        self.assertEqual(self.server._sweeper.step, 5.0)
        self.assertTrue(self.server._sweeper.running)
        self.assertEqual(len([child for child in self.server
                              if getattr(child, "call", (None,))[0] == self.server.fleet.sweep]),
                         1)
        # The config in force: the new interval, the old API port (still listening).
        self.assertEqual(self.server.config.checkin.interval, 5.0)
        self.assertEqual(self.server.config.server.api_listen.port, 0)
        self.assertEqual(self.server.advertised.api_url(), api)
        # The same again: nothing to change.
        report = yield self.server.reload(new)
        self.assertEqual((report.reloaded, report.restart), ([], ["server.api_listen"]))

    @defer.inlineCallbacks
    def test_the_log_level_applies_at_once(self):
        self.addCleanup(LEVEL.set_level, LEVEL.level)
        report = yield self.server.reload(self.rewrite(log={"level": "debug"}))
        self.assertEqual((report.reloaded, report.restart), (["log.level info -> debug"], []))
        self.assertEqual(LEVEL.level, "debug")
        self.assertEqual(self.server.config.log.level, "debug")

    @defer.inlineCallbacks
    def test_a_bad_hostcrates_file_changes_nothing(self):
        with open(self.hostcrates, "w") as f:
            f.write("- match: 5\n")
        config, bundle = self.server.config, self.record.bundle
        error = yield self.assertFailure(
            self.server.reload(self.rewrite(checkin={"interval": "5s"})), ReloadRefused)
        self.assertIn("entry 1 needs 'match'", str(error))
        self.assertIs(self.server.config, config)
        self.assertIs(self.record.bundle, bundle)
        self.assertEqual(self.server.fleet.interval, 15.0)

    @defer.inlineCallbacks
    def test_an_interval_past_the_running_idle_deadline_needs_a_restart(self):
        report = yield self.server.reload(self.rewrite(checkin={"interval": "20m"}))
        self.assertEqual(report.restart, ["checkin.interval", "limits.envoy.idle"])
        self.assertEqual(report.reloaded, [])
        self.assertEqual(self.server.fleet.interval, 15.0)
        self.assertEqual(self.server.config.checkin.interval, 15.0)

    @defer.inlineCallbacks
    def test_a_standalone_server_has_no_row(self):
        report = yield self.server.reload(self.rewrite(spanner={"bolt_name": "x",
                                                                "patterns": ["*.x.test"]}))
        self.assertEqual((report.reloaded, report.restart, report.failed), ([], [], []))


class BoltReloadTests(unittest.TestCase):
    """Two real bolts on loopback: a's config renames it and gives it new
    patterns; SIGHUP's reload publishes its row, and b holds it."""

    timeout = 60

    def setUp(self):
        import random

        self.group = "239.192.%d.%d" % (random.randrange(1, 255), random.randrange(1, 255))
        self.port = random.randrange(20000, 60000)
        self.base = os.path.abspath(self.mktemp())

    def bolt_yaml(self, name, **spanner):
        directory = os.path.join(self.base, name)
        os.makedirs(directory, exist_ok=True)
        return server_yaml(directory, spanner=dict({
            "mode": "spanner", "peer_listen": "127.0.0.1:0",
            "gossip": {"group": self.group, "port": self.port, "interface": "127.0.0.1"}},
            **spanner))

    @defer.inlineCallbacks
    def bolt(self, name):
        return (yield start_server(self, load_config(self.bolt_yaml(
            name, bolt_name=name, patterns=["*.%s.example.com" % (name,)]))))

    @defer.inlineCallbacks
    def test_a_renamed_bolt_publishes_and_announces_its_row(self):
        # Not a member yet: founding takes the config it started with.
        lone = yield self.bolt("lone")
        report = yield lone.reload(load_config(self.bolt_yaml("lone", bolt_name="l2")))
        self.assertEqual(report.restart, ["spanner.bolt_name", "spanner.patterns"])
        a, b = yield federate(self, ("a", "b"))
        seq = a.spanner.roster.row(a.identity.id).seq
        new = load_config(self.bolt_yaml("a", bolt_name="a2",
                                         patterns=["*.a.example.com", "*.extra.example.com"]))
        report = yield a.reload(new)
        self.assertEqual(report.reloaded, [
            "its row: seq %d with name 'a2', patterns *.a.example.com, *.extra.example.com, "
            "signed and announced" % (seq + 1,)])
        self.assertEqual((report.restart, report.failed), ([], []))
        self.assertEqual(a.spanner.admin.resolve("a2"), a.identity.id)

        def b_holds_it():
            row = b.spanner.roster.row(a.identity.id)
            return row.seq == seq + 1 and row.name == "a2"

        yield until(b_holds_it, *rosters_of(b), what="b holds a's new row")
        owner = b.spanner.admin.owner("web1.extra.example.com")
        self.assertEqual((owner["bolt_id"], owner["name"]), (a.identity.id, "a2"))
        # A name b has is refused: nothing changes.
        error = yield self.assertFailure(
            a.reload(load_config(self.bolt_yaml("a", bolt_name="b"))), ReloadRefused)
        self.assertIn("must name it alone", str(error))
        self.assertEqual(a.spanner.roster.row(a.identity.id).seq, seq + 1)
        # A file without the keys leaves the row alone.
        report = yield a.reload(load_config(self.bolt_yaml("a")))
        self.assertEqual(report.reloaded, [])
        self.assertEqual(a.spanner.roster.row(a.identity.id).name, "a2")


class HAReloadTests(unittest.TestCase):
    """With HA on, the root (``ServerHost``) forwards a reload to its tree."""

    timeout = 30

    @defer.inlineCallbacks
    def test_the_current_tree_is_reloaded_and_the_next_is_built_from_it(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = server_yaml(directory, peers={"listen": "127.0.0.1:0"})
        host = yield start_server(self, load_config(path))
        report = yield host.reload(load_config(server_yaml(
            directory, peers={"listen": "127.0.0.1:0", "sync": 1},
            checkin={"interval": "7s"})))
        self.assertEqual(report.restart, ["peers.sync"])
        self.assertEqual(report.reloaded,
                         ["checkin.interval 15s -> 7s (envoys are told as they attach)"])
        self.assertEqual(host.current.fleet.interval, 7.0)
        self.assertEqual((host.config.checkin.interval, host.config.peers.sync), (7.0, 0))


# -- the Reloader and the process around the server --------------------------------------------


class FakeServer(service.Service):
    """A root service whose reload answers what the test says."""

    def __init__(self):
        self.ready = defer.Deferred()
        self.reloads = []
        self.answer = None
        self.config = config_from_mapping({"log": {"level": "warn"}})

    def reload(self, config):
        self.reloads.append(config)
        if isinstance(self.answer, Exception):
            return defer.fail(self.answer)
        return defer.succeed(self.answer or Report(config=config))


@attr.s
class FakeConfig:
    source = attr.ib(default="/etc/vigo/server.yaml")


class ReloaderTests(unittest.TestCase):
    def setUp(self):
        self.server = FakeServer()
        self.events = []
        self.loads = []
        self.reloader = Reloader(self.server, self.load)
        self.reloader.log = Logger(observer=self.events.append)
        self.problem = None

    def load(self):
        from vigo.config import ConfigError

        if self.problem:
            raise ConfigError(self.problem)
        self.loads.append(FakeConfig())
        return self.loads[-1]

    def test_one_line_says_what_was_reloaded_one_what_needs_a_restart(self):
        self.reloader.started()
        self.server.answer = Report(config=None, reloaded=["hostcrates x: 2 envoy(s) get a "
                                                           "new bundle at their next check-in"],
                                    restart=["peers.sync", "server.api_listen"])
        self.successResultOf(self.reloader.reload())
        self.assertEqual(logged(self.events), [
            "SIGHUP: reloaded /etc/vigo/server.yaml: hostcrates x: 2 envoy(s) get a new bundle "
            "at their next check-in",
            "SIGHUP: changed in /etc/vigo/server.yaml but not applied, needs a restart: "
            "peers.sync, server.api_listen"])

    def test_nothing_to_change(self):
        self.reloader.started()
        self.successResultOf(self.reloader.reload())
        self.assertEqual(logged(self.events),
                         ["SIGHUP: reloaded /etc/vigo/server.yaml: nothing to change"])

    def test_a_bad_config_is_one_line_and_changes_nothing(self):
        self.reloader.started()
        self.problem = "/etc/vigo/server.yaml: checkin.interval: '0s' must be more than 0s"
        self.assertIsNone(self.successResultOf(self.reloader.reload()))
        self.assertEqual(self.server.reloads, [])
        self.assertEqual(logged(self.events), [
            "SIGHUP: config not reloaded, nothing changed: /etc/vigo/server.yaml: "
            "checkin.interval: '0s' must be more than 0s"])

    def test_a_refusal_is_one_line(self):
        self.reloader.started()
        self.server.answer = ReloadRefused("hostcrates h.yaml: not valid YAML")
        self.assertIsNone(self.successResultOf(self.reloader.reload()))
        self.assertEqual(logged(self.events), [
            "SIGHUP: config not reloaded, nothing changed: hostcrates h.yaml: not valid YAML"])

    def test_a_reload_while_starting_runs_once_ready(self):
        self.successResultOf(self.reloader.reload())
        self.successResultOf(self.reloader.reload())
        self.assertEqual(self.server.reloads, [])
        self.reloader.started()
        self.assertEqual(len(self.server.reloads), 1)
        self.assertIn("SIGHUP: the server is starting", logged(self.events)[0])

    def test_what_could_not_be_applied_is_said(self):
        self.reloader.started()
        self.server.answer = Report(config=None, reloaded=["checkin.offline_after 3 -> 4"],
                                    failed=["spanner.bolt_name / spanner.patterns: closed"])
        self.successResultOf(self.reloader.reload())
        self.assertEqual(logged(self.events), [
            "SIGHUP: reloaded /etc/vigo/server.yaml: checkin.offline_after 3 -> 4; not "
            "applied: spanner.bolt_name / spanner.patterns: closed"])


class FakeSignals:
    SIGHUP = 1
    SIG_IGN = "ignored"

    def __init__(self):
        self.handlers = {1: "default"}

    def signal(self, signum, handler):
        previous, self.handlers[signum] = self.handlers[signum], handler
        return previous


class FakeReactor:
    def __init__(self):
        self.running = True
        self.stopped = 0
        self.from_thread = []

    def callFromThread(self, f, *args):
        self.from_thread.append((f, args))

    def stop(self):
        self.stopped += 1

    def callWhenRunning(self, f, *args):
        raise AssertionError("running already")


class VigoProcessTests(unittest.TestCase):
    def setUp(self):
        self.server = FakeServer()
        self.signals = FakeSignals()
        self.reactor = FakeReactor()
        self.exits = []
        read, self.pipe = os.pipe()
        self.reading = os.fdopen(read, "rb")
        self.addCleanup(self.reading.close)
        self.options = {"statusPipe": self.pipe, "nodaemon": False}
        self.publisher = LogPublisher()
        self.seen = []
        self.publisher.addObserver(self.seen.append)  # stands for twistd's observer
        self.log_level = ProcessLogLevel(self.publisher)
        self.process = VigoProcess(self.server, self.reactor, lambda: FakeConfig(),
                                   twistd_options=self.options, signals=self.signals,
                                   exit_status=self.exit_status, log_level=self.log_level)

    def exit_status(self, status, last=None):
        self.exits.append(status)
        self.last = last

    def test_log_level_filters_twistds_observers_from_the_start(self):
        # The config says warn: info lines no longer reach twistd's observer.
        self.process.startService()
        log = Logger(observer=self.publisher, namespace="vigo.test")
        log.info("routine")
        log.warn("worth a look")
        self.assertEqual([e["log_format"] for e in self.seen], ["worth a look"])
        self.assertEqual(self.log_level.level, "warn")
        # A reload moves the threshold (reload_tree calls set_level).
        self.log_level.set_level("debug")
        log.debug("detail")
        self.assertEqual(self.seen[-1]["log_format"], "detail")

    def test_sighup_reloads_on_the_reactor_thread(self):
        self.process.startService()
        handler = self.signals.handlers[FakeSignals.SIGHUP]
        handler(FakeSignals.SIGHUP, None)
        self.assertEqual(self.server.reloads, [])  # not in the signal handler
        [(f, args)] = self.reactor.from_thread
        self.server.ready.callback(self.server)
        f(*args)
        self.assertEqual(len(self.server.reloads), 1)
        self.successResultOf(defer.maybeDeferred(self.process.stopService))
        # Stopping, SIGHUP is ignored: its default would kill the process
        # before twistd removed its pidfile.
        self.assertEqual(self.signals.handlers[FakeSignals.SIGHUP], "ignored")
        handler(FakeSignals.SIGHUP, None)  # one already on its way
        self.assertEqual(len(self.reactor.from_thread), 1)

    def test_a_daemons_parent_hears_of_the_start_once_the_server_is_ready(self):
        self.process.startService()
        self.assertIsNone(self.options["statusPipe"])  # twistd says nothing itself
        self.server.ready.callback(self.server)
        self.assertEqual(self.reading.read(), b"0")
        self.assertEqual((self.exits, self.reactor.stopped), ([], 0))

    def test_a_failed_start_is_reported_and_exits_non_zero(self):
        from twisted.internet.error import CannotListenError

        self.process.startService()
        self.server.ready.errback(CannotListenError("127.0.0.1", 1530, "in use"))
        self.assertEqual((self.exits, self.reactor.stopped), ([1], 1))
        self.last()  # at exit, once twistd removed its pidfile: the parent hears of it
        self.assertEqual(self.reading.read(),
                         b"1 cannot start: Couldn't listen on 127.0.0.1:1530: in use.")

    def test_without_a_status_pipe(self):
        del self.options["statusPipe"]
        self.process.startService()
        self.server.ready.callback(self.server)
        os.close(self.pipe)
        self.assertEqual(self.reading.read(), b"")


# -- end to end: a real twistd, sent SIGHUP -------------------------------------------------------


class SighupProcessTests(IntegrationTestCase):
    """``twistd -n vigo`` with an envoy, sent SIGHUP by this test: the new
    hostcrates reach the envoy, the log says what was reloaded and what needs
    a restart, and the server goes on serving; a broken config changes nothing."""

    timeout = 120

    @defer.inlineCallbacks
    def test_sighup_reloads_and_the_server_goes_on(self):
        base = self.directory()
        hostcrates = write_yaml(os.path.join(base, "hostcrates.yaml"),
                                [{"match": "*.dc1.example.com", "environment": "prod"}])
        config = write_config(base, hostcrates=hostcrates)
        server = self.server(config)
        yield server.start()
        data_dir = server.data_dir
        token = yield self.new_token(data_dir, 2)
        state = os.path.join(base, "envoy")
        yield self.register(server, token, WEB1, state)
        first = self.assertBundle((yield self.run_once(state)))

        write_yaml(hostcrates, [{"match": "*.dc1.example.com", "environment": "staging"}])
        with open(config) as f:
            data = json.load(f)
        data["checkin"]["interval"] = "5s"
        data["server"]["api_listen"] = "127.0.0.1:1"
        write_yaml(config, data)
        mark = len(server.output)
        server.transport.signalProcess("HUP")
        yield server.wait_for(b"SIGHUP: reloaded", after=mark)
        yield server.wait_for(b"needs a restart", after=mark)
        log = server.output[mark:].decode()
        self.assertIn("SIGHUP: reloaded %s: hostcrates %s: 1 envoy(s) get a new bundle at "
                      "their next check-in; checkin.interval 15s -> 5s (envoys are told as "
                      "they attach)" % (config, hostcrates), log)
        self.assertIn("needs a restart: server.api_listen", log)
        self.assertIsNone(server.exit_code)
        # Still serving, on its old API port; the envoy gets the new bundle.
        second = self.assertBundle((yield self.run_once(state)))
        self.assertNotEqual(first, second)
        status = yield self.vigocli_json(data_dir, "status")
        self.assertEqual(status["server_id"], server.run["server_id"])
        # A newly enrolled envoy is told the new interval.
        other = os.path.join(base, "envoy2")
        yield self.register(server, token, "web2.dc1.example.com", other)
        with open(os.path.join(other, "envoy.json")) as f:
            self.assertEqual(json.load(f)["interval"], 5.0)

        # A config that does not parse: one line, nothing changes.
        with open(config, "a") as f:
            f.write("\n: [\n")
        mark = len(server.output)
        server.transport.signalProcess("HUP")
        yield server.wait_for(b"SIGHUP: config not reloaded, nothing changed: ", after=mark)
        self.assertIn("YAML syntax error", server.output[mark:].decode())
        self.assertNoChange((yield self.run_once(state)))
        self.assertIsNone(server.exit_code)
        # And it stops as it always did.
        code = yield server.stop()
        self.assertIn(code, (0, None))
