"""Local control over D-Bus with a real ``dbus-daemon`` of the test's own.

Each test starts a private bus (``dbus-daemon --config-file``, listening on a
unix socket it names itself) and stops it by the PID it printed; a real
server (``build_server``, loopback ports) connects to it with ``dbus.bus`` set
to that address, and a txdbus client calls it there.
"""

import json
import os
import shutil
import tempfile
import uuid

from twisted.internet import defer, reactor
from twisted.trial import unittest
from txdbus import client
from txdbus.error import RemoteError

from tests.events import first_call
from tests.fleetkit import EnvoyKey
from tests.processes import ToolProcess
from vigo.config import config_from_mapping
from vigo.dbus_control import BUS_NAME, OBJECT_PATH

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:tmpdir=%s</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


class BusProcess(ToolProcess):
    """A private ``dbus-daemon --nofork``: ``address`` fires with the address it
    prints first; ``stop()`` ends it by its PID and waits for its exit."""

    stop_signal = "TERM"

    def __init__(self, config):
        ToolProcess.__init__(self, "dbus-daemon")
        self.argv = [shutil.which("dbus-daemon"), "--config-file=" + config, "--nofork",
                     "--print-address"]
        self.address = defer.Deferred()

    def outReceived(self, data):
        ToolProcess.outReceived(self, data)
        if not self.address.called and b"\n" in self.output:
            self.address.callback(self.output.split(b"\n")[0].decode("ascii"))

    def errReceived(self, data):
        pass  # its complaints end it, and processEnded says so

    def processEnded(self, reason):
        if not self.address.called:
            self.address.errback(RuntimeError("dbus-daemon ended: %s" % (self.output,)))
        ToolProcess.processEnded(self, reason)


def start_bus(testcase):
    """A private dbus-daemon, stopped at cleanup; a Deferred of its address.
    Its socket is one the daemon names in /tmp (a unix socket path must stay
    short; the test's own directory is too deep)."""
    directory = os.path.abspath(testcase.mktemp())
    os.makedirs(directory)
    config = os.path.join(directory, "bus.conf")
    with open(config, "w") as f:
        f.write(BUS_CONFIG % (tempfile.gettempdir(),))
    bus = BusProcess(config).start()
    testcase.addCleanup(bus.stop)
    return bus.address


class DbusControlTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        if shutil.which("dbus-daemon") is None:
            raise unittest.SkipTest("no dbus-daemon on this machine")
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.address = yield start_bus(self)

    @defer.inlineCallbacks
    def server(self, bus):
        from vigo.server import build_server

        config = config_from_mapping({"server": {
            "data_dir": os.path.join(self.directory, "data"), "hostname": "localhost",
            "envoy_listen": "127.0.0.1:0", "api_listen": "127.0.0.1:0"}, "dbus": {"bus": bus}})
        server = build_server(config, reactor)
        server.startService()
        self.addCleanup(lambda: server.stopService() if server.running else None)
        yield server.ready
        return server

    @defer.inlineCallbacks
    def test_status_force_push_and_the_enrolled_signal(self):
        server = yield self.server(self.address)
        self.assertTrue((yield server.dbus.started))
        self.assertIsNotNone(server.dbus.connection)
        bus = yield client.connect(reactor, self.address)
        self.addCleanup(bus.disconnect)
        remote = yield bus.getRemoteObject(BUS_NAME, OBJECT_PATH)

        status = json.loads((yield remote.callRemote("Status")))
        self.assertEqual(status["server_id"], server.identity.id)

        signals = []
        signalled, first_signal = first_call("the EnvoyEnrolled signal", deadline=10)
        yield remote.notifyOnSignal("EnvoyEnrolled",
                                    lambda *args: (signals.append(args), first_signal(*args)))
        key = EnvoyKey("web1.example.com")
        token = yield server.enrollment_tokens.create()
        registered = yield server.enrollment.register(
            *key.register_fields(token, int(server.reactor.seconds() * 1000)))
        self.assertEqual((yield signalled), (registered["envoy_id"], "web1.example.com"))

        delivered = yield remote.callRemote("ForcePush", "web1.example.com")
        self.assertEqual(delivered, "next_attach")
        self.assertTrue(server.fleet.index.get(registered["envoy_id"]).pending_push)
        error = yield self.assertFailure(remote.callRemote("ForcePush", "nosuch"), RemoteError)
        self.assertEqual(error.errName, "org.vigo.Server1.Refused")
        self.assertTrue(error.message.startswith("not_found: "), error.message)
        # Signalled once: a second signal would have come before these answers
        # (the bus keeps a connection's messages in order).
        self.assertEqual(signals, [(registered["envoy_id"], "web1.example.com")])

    @defer.inlineCallbacks
    def test_a_bus_that_cannot_be_reached_leaves_the_server_running(self):
        nowhere = os.path.join(tempfile.gettempdir(), "vigo-nobus-" + uuid.uuid4().hex[:8])
        server = yield self.server("unix:path=" + nowhere)
        self.assertFalse((yield server.dbus.started))
        self.assertIsNone(server.dbus.connection)
        self.assertEqual(server.status()["server_id"], server.identity.id)

    @defer.inlineCallbacks
    def test_a_bus_that_never_answers_does_not_hold_the_server_up(self):
        from twisted.internet.protocol import Factory, Protocol

        from vigo import dbus_control

        # Something listening that accepts and then says nothing, like a wedged bus.
        path = os.path.join(tempfile.gettempdir(), "vigo-mute-" + uuid.uuid4().hex[:8])
        port = reactor.listenUNIX(path, Factory.forProtocol(Protocol))
        self.addCleanup(port.stopListening)
        self.patch(dbus_control, "CONNECT_TIMEOUT", 0.2)
        server = yield self.server("unix:path=" + path)  # ready without the bus
        self.assertIsNone(server.dbus.connection)
        self.assertFalse((yield server.dbus.started))
