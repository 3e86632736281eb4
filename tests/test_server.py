"""The server's service tree: load first, then listen; stop whatever happens."""

import io
import os
import sys

from twisted.application import service
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from vigo.config import Address, config_from_mapping
from vigo.fleet.fleet import Fleet
from vigo.fleet.hostcrates import Hostcrates
from vigo.identity import Identity
from vigo.server import service as service_module
from vigo.server.ports import Advertised, PortService
from vigo.server.service import RUN_FILE, VigoServer
from vigo.server.status import ServerStatus
from vigo.spanner.member import MemberServices
from vigo.store import StoreError
from vigo.testing.store import ImmediateStore


class FakePort:
    def __init__(self, number):
        self.number = number
        self.listening = True

    def getHost(self):
        return Address("127.0.0.1", self.number)

    def stopListening(self):
        self.listening = False


class Recorded(service.Service):
    """A child that says when it started and stopped (and may fail to stop)."""

    def __init__(self, events, name, fail_stop=False):
        self.setName(name)
        self.events = events
        self.fail_stop = fail_stop

    def startService(self):
        service.Service.startService(self)
        self.events.append("start " + self.name)

    def stopService(self):
        service.Service.stopService(self)
        self.events.append("stop " + self.name)
        if self.fail_stop:
            raise RuntimeError("it broke while stopping")


class ClosingStore(ImmediateStore):
    closed = False

    def close(self):
        self.closed = True
        return super().close()


class ServerTreeTests(unittest.TestCase):
    def setUp(self):
        data_dir = self.mktemp()
        os.makedirs(data_dir)
        self.config = config_from_mapping({"server": {"data_dir": data_dir,
                                                      "hostname": "vigo.test"}})
        self.reactor = MemoryReactorClock()
        self.clock = Clock()
        self.identity = Identity.generate()
        self.store = ClosingStore()
        self.fleet = Fleet(self.store, self.identity, Hostcrates(), self.clock, 15.0, 3)
        self.events = []
        self.loading = defer.Deferred()

        def load():
            self.events.append("loading")
            return self.loading

        advertised = Advertised("vigo.test", {"envoy": Address("127.0.0.1", 0),
                                              "api": Address("127.0.0.1", 0),
                                              "peer": Address("127.0.0.1", 0)})
        self.server = VigoServer(self.reactor, self.config, self.identity, self.store,
                                 self.fleet, advertised,
                                 ServerStatus(self.identity, self.config, self.clock, self.fleet,
                                              advertised.envoy),
                                 loaders=[load])
        for name, number in (("envoy", 41530), ("api", 48443)):
            self.server.add_port(PortService(name, self.listen(name, number)))

    def listen(self, name, number):
        def listen():
            self.events.append("listen " + name)
            return FakePort(number)
        return listen

    def test_nothing_listens_before_the_loaders_are_done(self):
        self.server.startService()
        self.assertEqual(self.events, ["loading"])
        self.assertNoResult(self.server.ready)
        self.loading.callback(None)
        self.successResultOf(self.server.ready)
        self.assertEqual(self.events, ["loading", "listen envoy", "listen api"])
        self.assertEqual(self.server.advertised.envoy(), Address("127.0.0.1", 41530))
        self.assertTrue(os.path.exists(os.path.join(self.config.server.data_dir, RUN_FILE)))

    def test_a_stop_while_loading_listens_on_nothing(self):
        self.server.startService()
        stopped = self.server.stopService()
        self.loading.callback(None)
        self.successResultOf(stopped)
        self.assertEqual(self.events, ["loading"])
        self.assertTrue(self.store.closed)

    def test_a_child_that_fails_to_stop_does_not_stop_the_shutdown(self):
        Recorded(self.events, "broken", fail_stop=True).setServiceParent(self.server)
        Recorded(self.events, "last").setServiceParent(self.server)
        self.server.startService()
        self.loading.callback(None)
        self.successResultOf(self.server.ready)
        del self.events[:]
        self.successResultOf(self.server.stopService())
        self.assertEqual(self.events, ["stop last", "stop broken"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)  # logged
        self.assertTrue(self.store.closed, "the store is closed all the same")
        self.assertFalse(os.path.exists(os.path.join(self.config.server.data_dir, RUN_FILE)))
        for name in ("envoy", "api"):
            self.assertIsNone(self.server.advertised.ports[name].port)


    def test_the_offline_sweep_runs_on_a_new_interval(self):
        swept = []
        self.fleet.sweep = lambda: swept.append(self.reactor.seconds())
        self.server.startService()
        self.loading.callback(None)
        self.successResultOf(self.server.ready)
        old = self.server._sweeper
        self.server.set_sweep_interval(5.0)
        self.assertFalse(old.running)
        self.assertTrue(self.server._sweeper.running)
        self.reactor.advance(5)
        self.reactor.advance(5)
        self.assertEqual(swept, [0, 5, 10])
        self.successResultOf(self.server.stopService())
        self.assertFalse(self.server._sweeper.running)

    def test_a_failed_start_under_twistd_exits_1_after_twistds_clean_up(self):
        def cannot_open():
            raise StoreError("cannot open vigo.sqlite3: unable to open database file")

        statuses, stderr = [], io.StringIO()
        self.patch(service_module, "exit_status_at_exit", statuses.append)
        self.patch(sys, "__stderr__", stderr)
        self.store.open = cannot_open
        self.server.exit_on_failure = True
        self.server.startService()  # before the reactor runs, as twistd does
        self.assertFalse(self.server.listening)
        self.assertEqual(statuses, [1])
        self.assertEqual(stderr.getvalue(), "twistd vigo: cannot start: cannot open "
                         "vigo.sqlite3: unable to open database file\n")
        # No os._exit behind twistd's back: it stops the reactor once it runs.
        self.assertEqual(self.reactor.triggers, {})
        self.assertFalse(self.reactor.hasStopped)
        self.reactor.run()
        self.assertTrue(self.reactor.hasStopped)


class FakeRoster:
    def __init__(self, current=None):
        self.current = current
        self.listeners = []

    def on_member(self, listener):
        self.listeners.append(listener)
        if self.current is not None:
            listener(self.current)


class MemberServicesTests(unittest.SynchronousTestCase):
    def test_children_start_once_the_bolt_is_a_member(self):
        events, roster = [], FakeRoster()
        member = MemberServices(roster)
        Recorded(events, "gossip").setServiceParent(member)
        member.startService()
        self.assertEqual(events, [])
        roster.current = object()
        for listener in roster.listeners:
            listener(roster.current)
        self.assertEqual(events, ["start gossip"])
        self.successResultOf(member.stopService())
        self.assertEqual(events, ["start gossip", "stop gossip"])

    def test_a_failed_restart_duty_fails_the_start(self):
        def republish():
            raise RuntimeError("cannot publish")

        member = MemberServices(FakeRoster(current=object()), restarted=[republish])
        member.startService()
        self.failureResultOf(member.restarted, RuntimeError)
