"""Peer action dropins: the built-in ones, and third-party ones on sys.path."""

import json
import os
import re
import subprocess
import sys
import textwrap

from twisted.internet import defer, reactor
from twisted.logger import Logger
from twisted.plugin import pluginPackagePaths
from twisted.trial import unittest
from zope.interface.verify import verifyObject

import vigo
import vigo.plugins
from tests.peerkit import PeerSet
from vigo.interfaces import IPeerAction
from vigo.interfaces.errors import BadArguments, PeerUnreachable, Refusal
from vigo.spanner.admin import BoltAdmin
from vigo.spanner.peer import actions as actions_module
from vigo.spanner.peer.actions import LIST_ACTIONS, load_actions, run_action
from vigo.spanner.peer.server import PeerPortal, listen_peers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(vigo.__file__)))

ECHO = '''
"""A third-party action, installed outside the vigo package."""
from twisted.plugin import IPlugin
from zope.interface import implementer

from vigo.interfaces import Integer, IPeerAction, Optional, String


@implementer(IPlugin, IPeerAction)
class Echo:
    name = "echo"
    description = "say it again"
    argument_schema = {"text": String(50), "times": Optional(Integer(1, 3))}

    def run(self, bolt, caller_id, args):
        return {"from": bolt.id, "to": caller_id, "echo": [args["text"]] * args.get("times", 1)}


echo = Echo()
'''

CLASHES = '''
from twisted.plugin import IPlugin
from zope.interface import implementer

from vigo.interfaces import IPeerAction


@implementer(IPlugin, IPeerAction)
class Action:
    description = "clashes"
    argument_schema = {}

    def __init__(self, name):
        self.name = name

    def run(self, bolt, caller_id, args):
        return None


another_ping = Action("ping")
badly_named = Action("Bad Name!")
'''


def forget_dropin_caches(testcase):
    """Remove, after the test, any ``dropin.cache`` that discovery writes into
    the source tree (the tree's own plugin directory)."""
    cache = os.path.join(os.path.dirname(os.path.abspath(vigo.plugins.__file__)), "dropin.cache")
    existed = os.path.exists(cache)
    testcase.addCleanup(lambda: existed or not os.path.exists(cache) or os.unlink(cache))


class BuiltinActionTests(unittest.TestCase):
    def setUp(self):
        forget_dropin_caches(self)

    def test_ping_is_discovered(self):
        actions = load_actions()
        self.assertIn("ping", actions)
        verifyObject(IPeerAction, actions["ping"])
        peers = PeerSet(("alpha",))
        peers.clock.advance(7)
        alpha = peers.facade("alpha", actions)
        answer = self.successResultOf(alpha.call(alpha.id, "ping", {}))
        self.assertEqual(answer, {"bolt_id": alpha.id, "name": "alpha",
                                  "digest": "5a" * 32, "time": 7.0})

    def test_ping_dropin_is_cheap_to_import(self):
        code = ("import sys, vigo.plugins.vigo_ping; "
                "print(sorted(m for m in ('twisted.spread.pb', 'OpenSSL', 'cryptography', "
                "'vigo.spanner.peer.server') if m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                             text=True, timeout=60, check=True).stdout
        self.assertEqual(out.strip(), "[]")


class DropinTree(unittest.TestCase):
    """A ``vigo/plugins/`` directory without ``__init__.py`` in a directory the
    test puts on sys.path (``on_sys_path``), holding the ``echo`` dropin."""

    def setUp(self):
        forget_dropin_caches(self)
        self.root = os.path.abspath(self.mktemp())
        self.plugins = os.path.join(self.root, "vigo", "plugins")
        os.makedirs(self.plugins)
        self.write("thirdparty_echo.py", ECHO)
        # The package's own dropins (ping and the built-in actions), before the
        # third-party tree is on the path.
        self.built_in = set(load_actions())

    def write(self, name, source):
        with open(os.path.join(self.plugins, name), "w") as f:
            f.write(textwrap.dedent(source))
        module = "vigo.plugins." + name[:-3]
        self.addCleanup(sys.modules.pop, module, None)

    def on_sys_path(self):
        """Put the tree on sys.path, and recompute the plugin package's path as
        its ``__init__`` does at import (here it was imported before)."""
        saved_path, saved_plugins = list(sys.path), list(vigo.plugins.__path__)
        sys.path.append(self.root)
        vigo.plugins.__path__.extend(p for p in pluginPackagePaths("vigo.plugins")
                                     if p not in vigo.plugins.__path__)

        def restore():
            sys.path[:] = saved_path
            vigo.plugins.__path__[:] = saved_plugins
        self.addCleanup(restore)


class ThirdPartyDropinTests(DropinTree):
    """A ``vigo/plugins/`` directory without ``__init__.py`` on another sys.path entry."""

    def test_echo_is_discovered_and_callable(self):
        self.on_sys_path()
        actions = load_actions()
        self.assertEqual(sorted(actions), sorted(self.built_in | {"echo"}))
        alpha = PeerSet(("alpha",)).facade("alpha", actions)
        answer = self.successResultOf(
            run_action(alpha, actions, "caller-id", "echo", {"text": "hi", "times": 2}))
        self.assertEqual(answer, {"from": alpha.id, "to": "caller-id", "echo": ["hi", "hi"]})
        self.failureResultOf(run_action(alpha, actions, "caller-id", "echo", {"text": "hi", "times": 4}),
                             BadArguments)

    def test_found_in_a_fresh_process(self):
        """What a deployment relies on: the dropin tree merely on PYTHONPATH."""
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, self.root]))
        code = "from vigo.spanner.peer.actions import load_actions; print(sorted(load_actions()))"
        out = subprocess.run([sys.executable, "-c", code], cwd=self.root, env=env,
                             capture_output=True, text=True, timeout=60, check=True).stdout
        self.assertEqual(out.strip(), str(sorted(self.built_in | {"echo"})))

    def test_duplicates_and_bad_names_are_refused_with_a_log(self):
        self.write("thirdparty_clashes.py", CLASHES)
        self.on_sys_path()
        events = []
        self.patch(actions_module, "log", Logger(observer=events.append))
        actions = load_actions()
        self.assertEqual(sorted(actions), sorted(self.built_in | {"echo"}))
        self.assertEqual(type(actions["ping"]).__module__, "vigo.plugins.vigo_ping")
        events = [event for event in events if "problem" in event]
        problems = sorted(event["problem"] for event in events)
        self.assertEqual(len(problems), 2)
        self.assertIn("action 'ping' is already provided by vigo.plugins.vigo_ping", problems[0])
        self.assertIn("does not match", problems[1])
        self.assertEqual({event["module"] for event in events}, {"vigo.plugins.thirdparty_clashes"})


# -- what was loaded, and from where ------------------------------------------------

LOOSE = ECHO.replace("class Echo", "class Loose").replace('"echo"', '"loose"').replace(
    "echo = Echo()", "loose = Loose()")

NAMED_ACTIONS = CLASHES.replace('another_ping = Action("ping")\nbadly_named = Action("Bad Name!")',
                                'takes_the_listing = Action("actions")')

DOC = os.path.join(REPO, "docs", "peer-actions.md")


def write_distribution(root, name, version, files):
    """The metadata pip leaves for an installed distribution (a dist-info
    directory with ``METADATA`` and a ``RECORD`` listing ``files``) in ``root``."""
    info = "%s-%s.dist-info" % (name.replace("-", "_"), version)
    os.makedirs(os.path.join(root, info))
    with open(os.path.join(root, info, "METADATA"), "w") as f:
        f.write("Metadata-Version: 2.1\nName: %s\nVersion: %s\n" % (name, version))
    with open(os.path.join(root, info, "RECORD"), "w") as f:
        for path in list(files) + [info + "/METADATA", info + "/RECORD"]:
            f.write(path + ",,\n")


def listing_of(actions, bolt=None):
    """What the ``actions`` action answers, run as a peer's call would be."""
    bolt = bolt or PeerSet(("alpha",)).facade("alpha", actions)
    results = []
    run_action(bolt, actions, "c" * 20, LIST_ACTIONS, {}).addBoth(results.append)
    return results[0]


def by_name(listing):
    return {entry["name"]: entry for entry in listing["actions"]}


class LoadedActionsTests(DropinTree):
    """The built-in ``actions`` action and the start-up log: which actions were
    loaded, and where each came from."""

    def test_built_in_actions_and_their_origin(self):
        actions = load_actions()
        listing = listing_of(actions)
        self.assertEqual([entry["name"] for entry in listing["actions"]], sorted(actions))
        self.assertEqual((listing["count"], listing["name"], listing["vigosrv"]),
                         (len(actions), "alpha", vigo.__version__))
        for entry in listing["actions"]:
            self.assertEqual((entry["builtin"], entry["version"]), (True, vigo.__version__),
                             entry)
            self.assertEqual(entry["description"], actions[entry["name"]].description)
        entries = by_name(listing)
        self.assertEqual((entries["ping"]["module"], entries["ping"]["path"]),
                         ("vigo.plugins.vigo_ping", os.path.realpath(
                             os.path.join(REPO, "vigo", "plugins", "vigo_ping.py"))))
        self.assertEqual(entries[LIST_ACTIONS]["module"], "vigo.spanner.peer.actions")
        self.assertEqual(actions[LIST_ACTIONS].argument_schema, {})
        verifyObject(IPeerAction, actions[LIST_ACTIONS])

    def test_third_party_actions_name_their_distribution_or_file(self):
        self.write("thirdparty_loose.py", LOOSE)
        write_distribution(self.root, "acme-echo", "1.0", ["vigo/plugins/thirdparty_echo.py"])
        self.on_sys_path()
        events = []
        self.patch(actions_module, "log", Logger(observer=events.append))
        actions = load_actions()
        entries = by_name(listing_of(actions))
        self.assertEqual(set(entries), self.built_in | {"echo", "loose"})
        echo_file = os.path.realpath(os.path.join(self.plugins, "thirdparty_echo.py"))
        loose_file = os.path.realpath(os.path.join(self.plugins, "thirdparty_loose.py"))
        self.assertEqual(entries["echo"], {
            "name": "echo", "description": "say it again",
            "module": "vigo.plugins.thirdparty_echo", "path": echo_file,
            "distribution": "acme-echo", "version": "1.0", "builtin": False})
        self.assertEqual(entries["loose"], {
            "name": "loose", "description": "say it again",
            "module": "vigo.plugins.thirdparty_loose", "path": loose_file,
            "distribution": None, "version": None, "builtin": False})
        # The start-up log: one line naming every action and where it came from.
        [loaded] = [event for event in events if "summary" in event]
        summary = loaded["summary"]
        self.assertTrue(summary.startswith("%d built in (vigosrv %s, in %s): " % (
            len(self.built_in), vigo.__version__,
            os.path.realpath(os.path.join(REPO, "vigo", "plugins")))), summary)
        for name in self.built_in:
            self.assertIn(name, summary)
        self.assertIn("; echo from acme-echo 1.0 (vigo.plugins.thirdparty_echo)", summary)
        self.assertIn("; loose from vigo.plugins.thirdparty_loose, no distribution: "
                      + loose_file, summary)
        self.assertEqual(loaded["log_level"].name, "info")
        self.assertEqual(loaded["actions"], listing_of(actions)["actions"])

    def test_no_dropin_takes_the_listing_name(self):
        self.write("thirdparty_named.py", NAMED_ACTIONS)
        self.on_sys_path()
        events = []
        self.patch(actions_module, "log", Logger(observer=events.append))
        actions = load_actions()
        self.assertIs(type(actions[LIST_ACTIONS]), actions_module.LoadedActions)
        [problem] = [event["problem"] for event in events if "problem" in event]
        self.assertIn("action 'actions' is already provided by vigo.spanner.peer.actions",
                      problem)


PACKAGE_INIT = """
from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))
"""


class InstalledBesideTheBuiltInsTests(unittest.TestCase):
    """A distribution's dropin installed into the same ``.../plugins/`` directory
    as the built-in ones (``pip install`` into vigosrv's own environment puts it
    there) is not built in: it cannot take a built-in action's name, though its
    module name sorts first. Shown with a package of the test's own, laid out as
    an installed vigosrv is: a package and its dist-info."""

    def setUp(self):
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.root, "fakevigo", "plugins"))
        for path, source in (("fakevigo/__init__.py", ""),
                             ("fakevigo/plugins/__init__.py", PACKAGE_INIT),
                             ("fakevigo/plugins/core_ping.py", CLASHES),
                             ("fakevigo/plugins/aaa_ping.py", CLASHES),
                             ("fakevigo/plugins/zzz_echo.py", ECHO)):
            with open(os.path.join(self.root, path), "w") as f:
                f.write(textwrap.dedent(source))
        write_distribution(self.root, "fakevigo-core", "2.0", [
            "fakevigo/__init__.py", "fakevigo/plugins/__init__.py",
            "fakevigo/plugins/core_ping.py"])
        write_distribution(self.root, "acme-actions", "1.1", [
            "fakevigo/plugins/aaa_ping.py", "fakevigo/plugins/zzz_echo.py"])
        saved = list(sys.path)
        sys.path.insert(0, self.root)

        def restore():
            sys.path[:] = saved
            for name in [m for m in sys.modules if m.split(".")[0] == "fakevigo"]:
                del sys.modules[name]
        self.addCleanup(restore)

    def test_the_packages_own_distribution_is_built_in(self):
        import fakevigo.plugins
        events = []
        self.patch(actions_module, "log", Logger(observer=events.append))
        actions = load_actions(fakevigo.plugins)
        self.assertEqual(type(actions["ping"]).__module__, "fakevigo.plugins.core_ping")
        entries = by_name(listing_of(actions))
        self.assertEqual({name: (e["builtin"], e["distribution"], e["version"])
                          for name, e in entries.items()},
                         {"ping": (True, "fakevigo-core", "2.0"),
                          "echo": (False, "acme-actions", "1.1"),
                          LIST_ACTIONS: (True, entries[LIST_ACTIONS]["distribution"],
                                         entries[LIST_ACTIONS]["version"])})
        problems = [(event["module"], event["problem"].split(";")[0])
                    for event in events if "problem" in event]
        self.assertIn(("fakevigo.plugins.aaa_ping",
                       "action 'ping' is already provided by fakevigo.plugins.core_ping"),
                      problems)


class ListedAcrossBoltsTests(unittest.TestCase):
    """``BoltAdmin.actions``: this bolt's list in-process, another bolt's over
    peer RPC (mutual TLS on loopback), a bolt that does not answer refused."""

    def setUp(self):
        forget_dropin_caches(self)
        self.peers = PeerSet(("alpha", "beta"), clock=reactor)
        self.actions = load_actions()
        alpha = self.peers.facade("alpha", self.actions)
        self.alpha_id = alpha.id
        d = listen_peers(reactor, self.peers.identities["alpha"], "127.0.0.1:0",
                         PeerPortal(self.peers.roster, alpha, self.actions))

        def listening(port):
            self.addCleanup(port.stopListening)
            self.peers.addresses["alpha"] = "127.0.0.1:%d" % (port.getHost().port,)
            clients = self.peers.clients("beta", reactor, retry_policy=lambda n: 0.01)
            self.addCleanup(clients.stopService)
            self.beta = self.peers.facade("beta", self.actions, clients)

        return d.addCallback(listening)

    def admin(self, bolt, resolve):
        admin = BoltAdmin(None, None, None, None, None, None, bolt, reactor)
        admin.resolve = resolve
        return admin

    @defer.inlineCallbacks
    def test_this_bolt_and_another(self):
        names = {"alpha": self.alpha_id, "beta": self.beta.id}
        admin = self.admin(self.beta, lambda key: names.get(key, key))
        here = yield admin.actions("beta")
        self.assertEqual((here["bolt_id"], here["name"]), (self.beta.id, "beta"))
        there = yield admin.actions("alpha")
        self.assertEqual((there["bolt_id"], there["name"]), (self.alpha_id, "alpha"))
        self.assertEqual([e["name"] for e in there["actions"]], sorted(self.actions))
        self.assertEqual(there["actions"], here["actions"])

    @defer.inlineCallbacks
    def test_refusals(self):
        def resolve(key):
            raise Refusal("not_found", "no bolt %r in the roster" % (key,))

        error = yield self.assertFailure(self.admin(self.beta, resolve).actions("dc9"), Refusal)
        self.assertEqual(error.code, "not_found")
        lonely = self.peers.facade("beta", self.actions)  # it reaches no other bolt
        error = yield self.assertFailure(
            self.admin(lonely, lambda key: self.alpha_id).actions("alpha"), Refusal)
        self.assertEqual(error.code, "unreachable")
        self.assertNotIsInstance(error, PeerUnreachable)


class ShippedAsAPipPackageTests(unittest.TestCase):
    """The plugin guide's "ship an action as a pip package", as it says: its
    ``pyproject.toml`` and its ``uptime`` dropin, built and installed by pip
    (offline, into a directory of the test's), are found in a fresh process, and
    the ``actions`` listing names the distribution."""

    def blocks(self, language):
        with open(DOC) as f:
            return re.findall(r"```%s\n(.*?)```" % (language,), f.read(), re.DOTALL)

    def test_the_guides_package(self):
        [pyproject] = self.blocks("toml")
        uptime = self.blocks("python")[0]
        self.assertIn('name = "uptime"', uptime)
        source = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(source, "vigo", "plugins"))
        with open(os.path.join(source, "pyproject.toml"), "w") as f:
            f.write(pyproject)
        with open(os.path.join(source, "vigo", "plugins", "vigo_uptime.py"), "w") as f:
            f.write(uptime)
        target = os.path.abspath(self.mktemp())
        pip = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
             "--no-build-isolation", "--disable-pip-version-check", "--target", target,
             source], capture_output=True, text=True, timeout=300)
        if pip.returncode != 0 and "No module named 'setuptools'" in pip.stderr:
            raise unittest.SkipTest("setuptools is not installed: pip cannot build offline")
        self.assertEqual(pip.returncode, 0, pip.stderr)
        self.assertFalse(os.path.exists(os.path.join(target, "vigo", "__init__.py")))
        self.assertFalse(os.path.exists(os.path.join(target, "vigo", "plugins", "__init__.py")))
        code = ("import json; from tests.test_plugins import listing_of, by_name; "
                "from vigo.spanner.peer.actions import load_actions; "
                "print(json.dumps(by_name(listing_of(load_actions()))['uptime']))")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, target]))
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=60, check=True).stdout
        entry = json.loads(out)
        self.assertEqual((entry["distribution"], entry["version"], entry["builtin"],
                          entry["module"]),
                         ("vigo-uptime", "1.0", False, "vigo.plugins.vigo_uptime"))
        self.assertEqual(entry["path"], os.path.realpath(
            os.path.join(target, "vigo", "plugins", "vigo_uptime.py")))
