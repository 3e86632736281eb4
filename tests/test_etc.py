"""etc/ is a working deployment, as shipped (issue 11, item 6).

* ``etc/server.yaml`` starts a real ``twistd -n vigo`` once only what a test
  cannot use is rewritten, each by one named line: the data directory and the
  hostcrates path (``/var/lib/vigo``, ``/etc/vigo``: into a temporary
  directory, with the shipped ``etc/hostcrates.yaml``) and the two listen
  addresses (loopback ephemeral ports). Everything else is the shipped text.
* ``etc/vigo.service`` rates "OK" or better in ``systemd-analyze security``
  and passes ``systemd-analyze verify`` (skipped where systemd-analyze is missing).
  ``etc/vigo.sysusers`` makes the user it runs as.
* ``etc/dbus-org.vigo.Server.conf`` lets the unit's user own the server's bus
  name (and a dbus-daemon reads it).
* ``make install`` builds the plugin caches, so a server in a read-only venv
  never tries to write them.
* A ``server.tls`` file that does not exist should be refused by the config
  check, before anything is written.
"""

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree

import attr
from twisted.internet import defer
from twisted.trial import unittest

from tests.processes import ServerProcess, ToolProcess, run_tool
from vigo.config import ConfigError, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ETC = os.path.join(ROOT, "etc")
SERVER_YAML = os.path.join(ETC, "server.yaml")
HOSTCRATES = os.path.join(ETC, "hostcrates.yaml")
UNIT = os.path.join(ETC, "vigo.service")
DBUS_POLICY = os.path.join(ETC, "dbus-org.vigo.Server.conf")
SYSUSERS = os.path.join(ETC, "vigo.sysusers")
WEB1 = "web1.dc1.example.com"


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def rewrite(text, replacements):
    """``text`` with each ``(old line, new line)`` replaced; each old line must
    be in it exactly once, so a change to the shipped file fails here, loudly."""
    for old, new in replacements:
        count = text.count(old + "\n")
        if count != 1:
            raise AssertionError(f"etc/server.yaml has {count} lines {old!r}; expected 1")
        text = text.replace(old + "\n", new + "\n")
    return text


def shipped_config(directory, extra=()):
    """etc/server.yaml in ``directory``, rewritten only where a test must (see the
    module docstring), and etc/hostcrates.yaml beside it; its path."""
    data_dir = os.path.join(directory, "data")
    hostcrates = os.path.join(directory, "hostcrates.yaml")
    shutil.copyfile(HOSTCRATES, hostcrates)
    text = rewrite(read(SERVER_YAML), [
        ("  data_dir: /var/lib/vigo", f"  data_dir: {data_dir}"),
        ("hostcrates: /etc/vigo/hostcrates.yaml", f"hostcrates: {hostcrates}"),
        ('  envoy_listen: "127.0.0.1:1530"', '  envoy_listen: "127.0.0.1:0"'),
        ('  api_listen: "127.0.0.1:8443"', '  api_listen: "127.0.0.1:0"'),
        *extra,
    ])
    path = os.path.join(directory, "server.yaml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


class ShippedServerYamlTests(unittest.TestCase):
    """etc/server.yaml and etc/hostcrates.yaml run a server as shipped."""

    def directory(self):
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        return path

    @defer.inlineCallbacks
    def tool(self, name, *args):
        out, err, code = yield run_tool(name, *args)
        out, err = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        self.assertEqual(code, 0, f"{name} {' '.join(args)}: exit {code}\n{out}{err}")
        return out

    def test_only_paths_and_ports_are_rewritten(self):
        """The test's config is the shipped one but for the four rewritten keys."""
        directory = self.directory()
        shipped = load_config(SERVER_YAML, environ={})
        tested = load_config(shipped_config(directory), environ={})
        self.assertEqual(shipped.server.data_dir, "/var/lib/vigo")
        self.assertEqual(shipped.hostcrates, "/etc/vigo/hostcrates.yaml")
        server = attr.evolve(
            tested.server, data_dir=shipped.server.data_dir,
            envoy_listen=shipped.server.envoy_listen, api_listen=shipped.server.api_listen)
        self.assertEqual(
            attr.evolve(tested, server=server, hostcrates=shipped.hostcrates,
                        source=shipped.source),
            shipped)

    @defer.inlineCallbacks
    def test_starts_as_shipped(self):
        """A real server on the shipped files: ready, vigocli works, an envoy
        enrolls and gets its bundle from the shipped hostcrates."""
        directory = self.directory()
        server = ServerProcess(shipped_config(directory))
        self.addCleanup(server.kill)
        yield server.start()
        data_dir = os.path.join(directory, "data")
        self.assertEqual(server.data_dir, data_dir)
        # No traceback, no plugin-cache complaint: a clean start.
        self.assertNotIn(b"Traceback", server.output)
        self.assertNotIn(b"Unable to write to plugin cache", server.output)

        status = yield self.tool("vigocli", "--data-dir", data_dir, "status")
        self.assertRegex(status, r"(?m)^mode +standalone$")
        self.assertRegex(status, r"(?m)^server +%s$" % (server.run["server_id"],))

        token = (yield self.tool("vigocli", "--data-dir", data_dir, "token", "create")).strip()
        state = os.path.join(directory, "web1")
        yield self.tool("vigo-envoy", "register", "--token", token, "--hostname", WEB1,
                        "--state-dir", state)
        out = yield self.tool("vigo-envoy", "run", "--state-dir", state, "--once")
        self.assertRegex(out, r"\Abundle [0-9a-f]{64} applied")
        with open(os.path.join(state, "bundle.json"), encoding="utf-8") as f:
            bundle = json.load(f)["document"]
        # The first entry of etc/hostcrates.yaml.
        self.assertEqual(bundle["hostcrate"], "web*.dc1.example.com", bundle)
        self.assertEqual(bundle["roles"], ["web", "tls-terminator"], bundle)

        yield server.stop()
        self.assertNotIn(b"Traceback", server.output)


class FailEarlyTests(unittest.SynchronousTestCase):
    """A TLS file that does not exist is refused when the config is checked,
    before the server writes anything (its identity key, its admin token)."""

    def test_missing_tls_files_are_refused_by_the_config_check(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        cert, key = (os.path.join(directory, "tls", name) for name in ("api.crt", "api.key"))
        # The shipped commented example, turned on.
        path = shipped_config(directory, extra=[
            ("  tls: null", "  tls:"),
            ("  #   cert_file: /etc/vigo/tls/api.crt", f"    cert_file: {cert}"),
            ("  #   key_file: /etc/vigo/tls/api.key", f"    key_file: {key}"),
        ])
        error = self.assertRaises(ConfigError, load_config, path, environ={})
        self.assertIn("server.tls.cert_file", str(error))
        self.assertIn(cert, str(error))
        self.assertFalse(os.path.exists(os.path.join(directory, "data")))



def systemd_analyze(*args):
    """``systemd-analyze ARGS`` (a CompletedProcess), or SkipTest where it is missing."""
    program = shutil.which("systemd-analyze")
    if program is None:
        raise unittest.SkipTest("systemd-analyze is not installed (Debian: systemd)")
    return subprocess.run([program, *args], capture_output=True, text=True, timeout=120)


def unit_setting(name):
    """The value of ``name=`` in etc/vigo.service (the one line that sets it)."""
    [value] = re.findall(r"(?m)^%s=(.*)$" % (re.escape(name),), read(UNIT))
    return value


class SystemdUnitTests(unittest.SynchronousTestCase):
    """etc/vigo.service: hardened, and a unit systemd accepts."""

    #: systemd's exposure levels, worst first; "OK" or better is below 5.0.
    GOOD_ENOUGH = ("OK", "SAFE", "PERFECT")

    def test_security_exposure_is_ok(self):
        result = systemd_analyze("security", "--offline=yes", "--no-pager", UNIT)
        if "--offline" in result.stderr and "unrecognized" in result.stderr:
            raise unittest.SkipTest("this systemd-analyze has no --offline (systemd < 250)")
        found = re.search(r"Overall exposure level for vigo\.service: ([0-9.]+) (\w+)",
                          result.stdout)
        self.assertIsNotNone(found, result.stdout + result.stderr)
        exposure, level = float(found.group(1)), found.group(2)
        self.assertIn(level, self.GOOD_ENOUGH, result.stdout)
        self.assertLess(exposure, 5.0, result.stdout)

    def test_verify(self):
        """``systemd-analyze verify`` has nothing to say about the unit. Only its
        executable is rewritten, to this venv's twistd: /opt/vigo is not here."""
        twistd = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "twistd")
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        text = read(UNIT)
        self.assertEqual(text.count("/opt/vigo/bin/twistd "), 1)
        with open(os.path.join(directory, "vigo.service"), "w", encoding="utf-8") as f:
            f.write(text.replace("/opt/vigo/bin/twistd ", twistd + " "))
        result = systemd_analyze("verify", "--man=no", os.path.join(directory, "vigo.service"))
        self.assertEqual((result.returncode, result.stdout + result.stderr), (0, ""))

    def test_runs_the_shipped_config(self):
        exec_start = re.search(r"(?m)^ExecStart=(.*)$", read(UNIT)).group(1).split()
        self.assertEqual(exec_start, ["/opt/vigo/bin/twistd", "--nodaemon", "--pidfile=",
                                      "vigo", "--config", "/etc/vigo/server.yaml"])
        # Its data directory is the unit's state directory.
        self.assertEqual(load_config(SERVER_YAML, environ={}).server.data_dir,
                         "/var/lib/" + unit_setting("StateDirectory"))

    def test_sysusers_makes_the_unit_user(self):
        """etc/vigo.sysusers makes the unit's user and group, at home in its data
        directory (run in an empty root: nothing on this machine changes)."""
        self.assertEqual(unit_setting("User"), unit_setting("Group"))
        program = shutil.which("systemd-sysusers")
        if program is None:
            raise unittest.SkipTest("systemd-sysusers is not installed (Debian: systemd)")
        root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(root, "etc"))
        result = subprocess.run([program, "--root=" + root, SYSUSERS],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        [user] = read(os.path.join(root, "etc", "passwd")).splitlines()
        name, _, uid, gid, _, home, shell = user.split(":")
        self.assertEqual((name, home, shell), (unit_setting("User"), "/var/lib/vigo",
                                               "/usr/sbin/nologin"))
        self.assertLess(int(uid), 1000)  # a system user
        [group] = read(os.path.join(root, "etc", "group")).splitlines()
        self.assertEqual(group.split(":")[:3], [unit_setting("Group"), "x", gid])


def bus_name():
    """The bus name the server owns, or SkipTest without txdbus (the dbus extra)."""
    problems = []
    for module in ("vigo.dbus", "vigo.dbus_control"):  # the package, or its old name
        try:
            return importlib.import_module(module).BUS_NAME
        except ImportError as e:
            problems.append(f"{module}: {e}")
    raise unittest.SkipTest("; ".join(problems))


class DbusPolicyTests(unittest.TestCase):
    """etc/dbus-org.vigo.Server.conf: the unit's user owns the server's bus name."""

    def policies(self):
        return ElementTree.parse(DBUS_POLICY).getroot().findall("policy")

    def test_the_unit_user_owns_the_bus_name(self):
        BUS_NAME = bus_name()
        owners = [p.get("user") for p in self.policies()
                  if any(a.get("own") == BUS_NAME for a in p.findall("allow"))]
        self.assertEqual(owners, [unit_setting("User")])
        destinations = {a.get("send_destination") for p in self.policies()
                        for rule in ("allow", "deny") for a in p.findall(rule)}
        self.assertEqual(destinations - {None}, {BUS_NAME})
        [default] = [p for p in self.policies() if p.get("context") == "default"]
        self.assertEqual([a.attrib for a in default.findall("deny")],
                         [{"send_destination": BUS_NAME}])
        self.assertEqual(default.findall("allow"), [])

    @defer.inlineCallbacks
    def test_dbus_daemon_reads_it(self):
        """A dbus-daemon whose config includes the policy starts (a policy it
        cannot parse stops it)."""
        program = shutil.which("dbus-daemon")
        if program is None:
            raise unittest.SkipTest("dbus-daemon is not installed (Debian: dbus)")
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        config = os.path.join(directory, "bus.conf")
        with open(config, "w", encoding="utf-8") as f:
            f.write(
                '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"'
                ' "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">\n'
                # The socket in /tmp: the test's directory is too deep for a unix socket.
                f"<busconfig><type>session</type><listen>unix:tmpdir={tempfile.gettempdir()}"
                "</listen>"
                f"<include>{DBUS_POLICY}</include></busconfig>\n")
        bus = BusProcess(program, config)
        bus.start()
        self.addCleanup(bus.stop)
        address = yield bus.address
        self.assertTrue(address.startswith("unix:"), address)


class BusProcess(ToolProcess):
    """``dbus-daemon --nofork``: ``address`` fires with the first line it prints,
    or fails if it exits first; ``stop()`` ends it by its PID."""

    stop_signal = "TERM"

    def __init__(self, program, config):
        ToolProcess.__init__(self, "dbus-daemon")
        self.argv = [program, "--config-file=" + config, "--nofork", "--print-address"]
        self.address = defer.Deferred()
        self.errors = b""

    def outReceived(self, data):
        ToolProcess.outReceived(self, data)
        if not self.address.called and b"\n" in self.output:
            self.address.callback(self.output.split(b"\n")[0].decode("ascii"))

    def errReceived(self, data):
        self.errors += data

    def processEnded(self, reason):
        if not self.address.called:
            self.address.errback(RuntimeError(
                "dbus-daemon exited: " + self.errors.decode("utf-8", "replace")))
        ToolProcess.processEnded(self, reason)


class PluginCacheTests(unittest.TestCase):
    """``make install`` builds the Twisted plugin caches of the installed
    packages: a server in a read-only venv (etc/vigo.service) never writes them."""

    SCRIPT = """
import json
from twisted.python import filepath
from twisted.plugin import IPlugin, getPlugins
import twisted.plugins, vigo, vigo.plugins
writes = []
def read_only(self, content, ext=b".new"):
    writes.append(self.path)
    raise PermissionError(13, "Read-only file system")
filepath.FilePath.setContent = read_only
twisted_plugins = list(getPlugins(IPlugin))
vigo_plugins = list(getPlugins(IPlugin, vigo.plugins))
print(json.dumps({"writes": writes, "vigo": vigo.__file__,
                  "counts": [len(twisted_plugins), len(vigo_plugins)]}))
"""

    @defer.inlineCallbacks
    def test_the_installed_caches_are_fresh(self):
        # -I: the installed packages, not this checkout's (as the unit runs them).
        out, err, code = yield run_tool("python", "-I", "-c", self.SCRIPT)
        self.assertEqual(code, 0, err.decode("utf-8", "replace"))
        found = json.loads(out)
        self.assertFalse(found["vigo"].startswith(os.path.join(ROOT, "vigo")), found)
        self.assertEqual(found["writes"], [], "stale plugin caches: run `make install`")
        self.assertGreater(found["counts"][0], 0)
        self.assertGreater(found["counts"][1], 0)
