"""Local control over D-Bus (``vigo.dbus``).

The real-bus tests start a private bus each (``dbus-daemon --config-file``,
listening on a unix socket it names itself) and stop it by the PID it printed;
a real server (``build_server``, loopback ports) connects to it with
``dbus.bus`` set to that address, and a txdbus client (and ``gdbus``, where it
is installed) calls it there. The other tests need no bus: the property
sampler runs on a ``Clock``, values and errors are checked as txdbus
marshals them, and the config is checked with txdbus hidden from imports.
"""

import io
import os
import re
import shutil
import sys
import tempfile
import uuid
import xml.etree.ElementTree as ElementTree
from unittest import mock

from twisted.internet import defer, reactor, task
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from tests.events import first_call
from tests.fleetkit import EnvoyKey
from tests.processes import ToolProcess
from tests.serverkit import start_server
from vigo.config import ConfigError, config_from_mapping
from vigo.interfaces.errors import Refusal

try:
    from txdbus import client, marshal
    from txdbus.error import RemoteError
except ImportError:  # the dbus extra is not installed
    NO_TXDBUS = "txdbus is not installed (pip install 'vigosrv[dbus]')"
else:
    NO_TXDBUS = None
    from vigo.dbus import (
        BUS_NAME,
        INTERFACE,
        OBJECT_PATH,
        PROPERTIES_INTERFACE,
        REFUSAL_ERRORS,
        ServerObject,
        control,
        errors,
        server_properties,
    )
    from vigo.dbus.values import status_dict

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

ERROR = "org.vigo.Server.Error."
DBUS_ERROR = "org.freedesktop.DBus.Error."


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
    """A real server on a real bus."""

    timeout = 60
    skip = NO_TXDBUS

    @defer.inlineCallbacks
    def setUp(self):
        if shutil.which("dbus-daemon") is None:
            raise unittest.SkipTest("no dbus-daemon on this machine")
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.address = yield start_bus(self)

    @defer.inlineCallbacks
    def server(self, bus):
        config = config_from_mapping({"server": {
            "data_dir": os.path.join(self.directory, "data"), "hostname": "localhost",
            "envoy_listen": "127.0.0.1:0", "api_listen": "127.0.0.1:0"}, "dbus": {"bus": bus}})
        return (yield start_server(self, config))

    @defer.inlineCallbacks
    def connected(self):
        """A server on the bus, and its object as a txdbus client sees it."""
        server = yield self.server(self.address)
        self.assertTrue((yield server.dbus.started))
        bus = yield client.connect(reactor, self.address)
        self.addCleanup(bus.disconnect)
        remote = yield bus.getRemoteObject(BUS_NAME, OBJECT_PATH)
        return server, bus, remote

    @defer.inlineCallbacks
    def enroll(self, server, hostname):
        key = EnvoyKey(hostname)
        token = yield server.enrollment_tokens.create()
        registered = yield server.enrollment.register(
            *key.register_fields(token, int(server.reactor.seconds() * 1000)))
        return registered["envoy_id"]

    @defer.inlineCallbacks
    def test_status_force_push_and_the_enrolled_signal(self):
        server, _, remote = yield self.connected()
        self.assertIsNotNone(server.dbus.connection)

        status = yield remote.callRemote("Status")
        self.assertIsInstance(status, dict)
        self.assertEqual(status["server_id"], server.identity.id)
        self.assertEqual(status["mode"], "standalone")
        self.assertEqual(status["envoys"], {"total": 0, "active": 0, "online": 0,
                                            "connected": 0})
        self.assertIsInstance(status["uptime"], float)
        self.assertNotIn("spanner", status)  # null: left out

        signals = []
        signalled, first_signal = first_call("the EnvoyEnrolled signal", deadline=10)
        yield remote.notifyOnSignal("EnvoyEnrolled",
                                    lambda *args: (signals.append(args), first_signal(*args)))
        envoy_id = yield self.enroll(server, "web1.example.com")
        self.assertEqual((yield signalled), (envoy_id, "web1.example.com"))
        self.assertEqual((yield remote.callRemote("Status"))["envoys"]["total"], 1)

        delivered = yield remote.callRemote("ForcePush", "web1.example.com")
        self.assertEqual(delivered, "next_attach")
        self.assertTrue(server.fleet.index.get(envoy_id).pending_push)
        # Signalled once: a second signal would have come before these answers
        # (the bus keeps a connection's messages in order).
        self.assertEqual(signals, [(envoy_id, "web1.example.com")])

    @defer.inlineCallbacks
    def test_each_refusal_is_its_own_error(self):
        server, _, remote = yield self.connected()
        error = yield self.assertFailure(remote.callRemote("ForcePush", "nosuch"), RemoteError)
        self.assertEqual(error.errName, ERROR + "NotFound")
        reason = self.assertRaises(Refusal, server.fleet.find, "nosuch").reason
        self.assertEqual(error.message, reason)

        envoy_id = yield self.enroll(server, "web2.example.com")
        yield server.fleet.revoke(envoy_id)
        error = yield self.assertFailure(remote.callRemote("ForcePush", envoy_id), RemoteError)
        self.assertEqual(error.errName, ERROR + "NotActive")
        self.assertEqual(error.message, "envoy %s is revoked" % (envoy_id,))

    @defer.inlineCallbacks
    def test_the_introspection_names_every_argument(self):
        _, bus, _ = yield self.connected()
        xml = yield bus.callRemote(OBJECT_PATH, "Introspect", destination=BUS_NAME,
                                   interface="org.freedesktop.DBus.Introspectable")
        node = ElementTree.fromstring(xml[xml.index("<node"):])
        interfaces = {i.get("name"): i for i in node.findall("interface")}

        def members(name, kind):
            return {m.get("name"): [(a.get("direction"), a.get("type"), a.get("name"))
                                    for a in m.findall("arg")]
                    for m in interfaces[name].findall(kind)}

        self.assertEqual(members(INTERFACE, "method"), {
            "Status": [("out", "a{sv}", "status")],
            "ForcePush": [("in", "s", "envoy"), ("out", "s", "delivered")]})
        self.assertEqual(members(INTERFACE, "signal"), {
            "EnvoyEnrolled": [(None, "s", "envoy_id"), (None, "s", "hostname")]})
        properties = {p.get("name"): (p.get("type"), p.get("access"),
                                      p.find("annotation").get("value"))
                      for p in interfaces[INTERFACE].findall("property")}
        self.assertEqual(properties, {
            "ServerId": ("s", "read", "const"), "Mode": ("s", "read", "const"),
            "Role": ("s", "read", "true"), "Epoch": ("u", "read", "true"),
            "EnvoysTotal": ("u", "read", "true"), "EnvoysActive": ("u", "read", "true"),
            "EnvoysOnline": ("u", "read", "true"), "EnvoysConnected": ("u", "read", "true")})
        self.assertEqual(members(PROPERTIES_INTERFACE, "method")["Get"], [
            ("in", "s", "interface_name"), ("in", "s", "property_name"), ("out", "v", "value")])
        self.assertEqual(members(PROPERTIES_INTERFACE, "signal")["PropertiesChanged"], [
            (None, "s", "interface_name"), (None, "a{sv}", "changed_properties"),
            (None, "as", "invalidated_properties")])
        # One Properties interface, not txdbus's unnamed one besides.
        self.assertEqual(xml.count('<interface name="%s"' % (PROPERTIES_INTERFACE,)), 1)

        gdbus = shutil.which("gdbus")
        if gdbus is None:
            return  # the XML above is what gdbus would read
        out, err, code = yield getProcessOutputAndValue(gdbus, [
            "introspect", "--address", self.address, "--dest", BUS_NAME,
            "--object-path", OBJECT_PATH], env=os.environ)
        self.assertEqual(code, 0, err)
        out = out.decode("utf-8")
        self.assertIn("ForcePush(in  s envoy,\n", out)
        self.assertIn("out s delivered);", out)
        self.assertIn("Status(out a{sv} status);", out)
        self.assertIn("EnvoyEnrolled(s envoy_id,", out)
        self.assertIn("readonly u EnvoysOnline = 0;", out)
        self.assertIn("@org.freedesktop.DBus.Property.EmitsChangedSignal(\"const\")", out)

    @defer.inlineCallbacks
    def test_properties_and_properties_changed(self):
        self.patch(control, "PROPERTIES_INTERVAL", 0.05)
        server, _, remote = yield self.connected()
        every = yield remote.callRemote("GetAll", INTERFACE)
        self.assertEqual(every, {
            "ServerId": server.identity.id, "Mode": "standalone", "Role": "primary",
            "Epoch": 0, "EnvoysTotal": 0, "EnvoysActive": 0, "EnvoysOnline": 0,
            "EnvoysConnected": 0})
        self.assertEqual((yield remote.callRemote("Get", INTERFACE, "Role")), "primary")

        changes = []
        changed, first_change = first_call("PropertiesChanged", deadline=10)
        yield remote.notifyOnSignal(
            "PropertiesChanged", lambda *args: (changes.append(args), first_change(*args)),
            interface=PROPERTIES_INTERFACE)
        yield self.enroll(server, "web3.example.com")
        interface_name, values, invalidated = yield changed
        self.assertEqual((interface_name, invalidated), (INTERFACE, []))
        self.assertEqual(values, {"EnvoysTotal": 1, "EnvoysActive": 1})
        self.assertEqual((yield remote.callRemote("Get", INTERFACE, "EnvoysTotal")), 1)
        self.assertEqual(len(changes), 1)

        error = yield self.assertFailure(
            remote.callRemote("Set", INTERFACE, "Role", "standby"), RemoteError)
        self.assertEqual(error.errName, DBUS_ERROR + "PropertyReadOnly")
        error = yield self.assertFailure(
            remote.callRemote("Get", INTERFACE, "Nope"), RemoteError)
        self.assertEqual(error.errName, DBUS_ERROR + "UnknownProperty")
        error = yield self.assertFailure(
            remote.callRemote("GetAll", "org.example.Nope"), RemoteError)
        self.assertEqual(error.errName, DBUS_ERROR + "UnknownInterface")

    @defer.inlineCallbacks
    def test_a_bus_that_cannot_be_reached_leaves_the_server_running(self):
        nowhere = os.path.join(tempfile.gettempdir(), "vigo-nobus-" + uuid.uuid4().hex[:8])
        server = yield self.server("unix:path=" + nowhere)
        self.assertFalse((yield server.dbus.started))
        self.assertIsNone(server.dbus.connection)
        self.assertFalse(server.dbus.sampler._loop.running)
        self.assertEqual(server.status()["server_id"], server.identity.id)

    @defer.inlineCallbacks
    def test_a_bus_that_never_answers_does_not_hold_the_server_up(self):
        from twisted.internet.protocol import Factory, Protocol

        # Something listening that accepts and then says nothing, like a wedged bus.
        path = os.path.join(tempfile.gettempdir(), "vigo-mute-" + uuid.uuid4().hex[:8])
        port = reactor.listenUNIX(path, Factory.forProtocol(Protocol))
        self.addCleanup(port.stopListening)
        self.patch(control, "CONNECT_TIMEOUT", 0.2)
        server = yield self.server("unix:path=" + path)  # ready without the bus
        self.assertIsNone(server.dbus.connection)
        self.assertFalse((yield server.dbus.started))


class FakeReplication:
    """What ``server_properties`` reads of a ``PrimaryReplication``."""

    def __init__(self, epoch, fenced=False):
        self.epoch, self.fenced = epoch, fenced


class PropertyTests(unittest.TestCase):
    """The properties, sampled on a Clock; no bus."""

    skip = NO_TXDBUS

    def setUp(self):
        self.counts = {"total": 2, "active": 2, "online": 1, "connected": 1}
        self.replication = None
        self.properties = server_properties("srv1", "spanner", lambda: dict(self.counts),
                                            lambda: self.replication)
        self.object = ServerObject(lambda: {}, lambda envoy: None, self.properties)
        self.signals = []
        self.object.emitSignal = lambda *args, **kwargs: self.signals.append((args, kwargs))

    def test_role_and_epoch(self):
        self.assertEqual(self.properties(), {
            "ServerId": "srv1", "Mode": "spanner", "Role": "primary", "Epoch": 0,
            "EnvoysTotal": 2, "EnvoysActive": 2, "EnvoysOnline": 1, "EnvoysConnected": 1})
        self.replication = FakeReplication(3)
        self.assertEqual((self.properties()["Role"], self.properties()["Epoch"]), ("primary", 3))
        self.replication = FakeReplication(3, fenced=True)
        self.assertEqual(self.properties()["Role"], "fenced")

    def test_only_what_changed_is_signalled_with_its_type(self):
        values = self.object.refresh()
        self.assertEqual(self.signals, [])  # nothing was told before: nothing changed
        self.assertEqual(marshal.sigFromPy(values["EnvoysOnline"]), "u")
        self.assertEqual(marshal.sigFromPy(values["Role"]), "s")
        self.object.refresh()
        self.assertEqual(self.signals, [])
        self.counts["online"] = 0
        self.replication = FakeReplication(4)
        self.object.refresh()
        [(args, kwargs)] = self.signals
        self.assertEqual(args, ("PropertiesChanged", INTERFACE,
                                {"EnvoysOnline": 0, "Epoch": 4}, []))
        self.assertEqual(kwargs, {"interface": PROPERTIES_INTERFACE})
        self.assertEqual({marshal.sigFromPy(v) for v in args[2].values()}, {"u"})

    def test_get_samples_first(self):
        self.object.refresh()
        self.counts["total"] = 3
        self.assertEqual(self.object._get(INTERFACE, "EnvoysTotal"), 3)
        self.assertEqual(len(self.signals), 1)  # told before it is answered
        self.assertEqual(self.object._get_all(INTERFACE)["EnvoysTotal"], 3)
        self.assertEqual(len(self.signals), 1)

    def test_sampled_every_interval_on_the_clock(self):
        clock = task.Clock()
        sampler = control.PropertySampler(clock, self.object, 2.0)
        sampler.start()
        self.assertIsNotNone(self.object.published)  # sampled at once
        self.counts["connected"] = 0
        clock.advance(1.9)
        self.assertEqual(self.signals, [])
        clock.advance(0.1)
        self.assertEqual([args[2] for args, _ in self.signals], [{"EnvoysConnected": 0}])
        sampler.stop()
        self.counts["connected"] = 2
        clock.advance(10)
        self.assertEqual(len(self.signals), 1)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_a_failed_sample_is_logged_and_the_next_one_runs(self):
        clock = task.Clock()
        sampler = control.PropertySampler(clock, self.object, 2.0)
        sampler.start()
        self.counts = None  # counts() fails
        clock.advance(2)
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)
        self.counts = {"total": 5, "active": 5, "online": 5, "connected": 5}
        clock.advance(2)
        self.assertEqual(self.signals[-1][0][2]["EnvoysTotal"], 5)
        sampler.stop()


class ValueTests(unittest.TestCase):
    """Status as an ``a{sv}``, checked as txdbus marshals it."""

    skip = NO_TXDBUS

    def roundtrip(self, value):
        chunks = marshal.marshal("a{sv}", [value])[1]
        return marshal.unmarshal("a{sv}", b"".join(chunks))[1][0]

    def test_status_is_a_dictionary_of_typed_variants(self):
        status = {
            "server_id": "abc", "uptime": 1.5, "checkin_interval": 15.0,
            "envoys": {"total": 0, "online": 0}, "checkins": {}, "bytes": 2 ** 40,
            "spanner": {"mode": "spanner", "hint": None, "bolts": {"total": 3},
                        "moves_pending": {"count": 1, "moves": [{"envoy_id": "e",
                                                                 "to": "b"}]},
                        "peers": [], "patterns": ["*.a", "*.b"], "up": True}}
        converted = status_dict(status)
        self.assertEqual(marshal.sigFromPy(converted["bytes"]), "x")
        self.assertEqual(marshal.sigFromPy(converted["envoys"]), "a{sv}")
        self.assertEqual(marshal.sigFromPy(converted["spanner"]["patterns"]), "av")
        expected = dict(status, spanner={k: v for k, v in status["spanner"].items()
                                         if v is not None})
        self.assertEqual(self.roundtrip(converted), expected)

    def test_what_does_not_fit(self):
        self.assertEqual(self.roundtrip(status_dict({"n": None, "big": 2 ** 70})),
                         {"big": float(2 ** 70)})
        self.assertRaises(TypeError, status_dict, {"x": object()})


class ErrorTests(unittest.TestCase):
    """Refusal codes as D-Bus error names."""

    skip = NO_TXDBUS

    def test_one_valid_name_per_code(self):
        names = list(REFUSAL_ERRORS.values())
        self.assertEqual(len(set(names)), len(names))
        for name in names:
            marshal.validateErrorName(errors.ERROR_PREFIX + name)
        e = errors.refused(Refusal("not_found", "no envoy 'x' on this server"))
        self.assertEqual((e.dbusErrorName, str(e)),
                         ("org.vigo.Server.Error.NotFound", "no envoy 'x' on this server"))
        e = errors.refused(Refusal("brand_new", "why"))
        self.assertEqual((e.dbusErrorName, str(e)), ("org.vigo.Server.Error.Refused",
                                                     "brand_new: why"))

    def test_every_code_the_server_refuses_with_is_named(self):
        """Codes written out in vigo/ (``Refusal("code"``, ``code="code"``,
        ``"code": "code"``, ``_refused("code"``) and in the envoy protocol's
        table: a new code needs its line in ``vigo.dbus.errors.REFUSAL_ERRORS``."""
        import vigo

        root = os.path.dirname(vigo.__file__)
        found = set()
        patterns = [re.compile(p) for p in (
            r'Refusal\(\s*"([a-z_]+)"', r'_refused\(\s*"([a-z_]+)"', r'\bcode\s*=\s*"([a-z_]+)"',
            r'"code":\s*"([a-z_]+)"')]
        for directory, _, files in os.walk(root):
            for name in files:
                if name.endswith(".py") and not directory.startswith(
                        os.path.join(root, "testing")):
                    with open(os.path.join(directory, name), encoding="utf-8") as f:
                        text = f.read()
                    for pattern in patterns:
                        found.update(pattern.findall(text))
        protocol = os.path.join(os.path.dirname(root), "docs", "envoy-protocol.md")
        if os.path.exists(protocol):
            with open(protocol, encoding="utf-8") as f:
                table = f.read().split("### Refusal codes", 1)[-1].split("\n## ", 1)[0]
            for line in table.splitlines():
                if line.startswith("| `"):
                    found.update(re.findall(r"`([a-z_]+)`", line.split("|")[1]))
        self.assertIn("not_found", found)
        self.assertEqual(sorted(found - set(REFUSAL_ERRORS)), [])


class MissingTxdbusTests(unittest.TestCase):
    """``dbus.bus`` set without txdbus: refused at config validation, in one line."""

    def hide_txdbus(self):
        hidden = mock.patch.dict(sys.modules, {"txdbus": None})
        hidden.start()
        self.addCleanup(hidden.stop)

    def test_refused_by_the_config(self):
        self.hide_txdbus()
        error = self.assertRaises(ConfigError, config_from_mapping, {"dbus": {"bus": "session"}})
        self.assertEqual(str(error), "config: dbus.bus: 'session' needs txdbus, which is not "
                                     "installed: pip install 'vigosrv[dbus]' (or set "
                                     "dbus.bus to none)")
        self.assertEqual(config_from_mapping({"dbus": {"bus": "none"}}).dbus.bus, "none")
        self.assertEqual(config_from_mapping({}).dbus.bus, "none")

    def test_twistd_vigo_says_so_in_one_line(self):
        from vigo.tap import Options

        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("dbus:\n  bus: system\n")
        self.hide_txdbus()
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        exit = self.assertRaises(SystemExit, Options().parseOptions, ["--config", path])
        self.assertEqual(exit.code, 1)
        self.assertEqual(stderr.getvalue(),
                         "twistd vigo: %s: dbus.bus: 'system' needs txdbus, which is not "
                         "installed: pip install 'vigosrv[dbus]' (or set dbus.bus to "
                         "none)\n" % (path,))
