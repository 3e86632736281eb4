"""Peer action dropins: the built-in ones, and third-party ones on sys.path."""

import os
import subprocess
import sys
import textwrap

from twisted.logger import Logger
from twisted.plugin import pluginPackagePaths
from twisted.trial import unittest
from zope.interface.verify import verifyObject

import vigo
import vigo.plugins
from tests.peerkit import PeerSet
from vigo.interfaces import IPeerAction
from vigo.interfaces.errors import BadArguments
from vigo.spanner.peer import actions as actions_module
from vigo.spanner.peer.actions import load_actions, run_action

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


class ThirdPartyDropinTests(unittest.TestCase):
    """A ``vigo/plugins/`` directory without ``__init__.py`` on another sys.path entry."""

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
        problems = sorted(event["problem"] for event in events)
        self.assertEqual(len(problems), 2)
        self.assertIn("action 'ping' is already provided by vigo.plugins.vigo_ping", problems[0])
        self.assertIn("does not match", problems[1])
        self.assertEqual({event["module"] for event in events}, {"vigo.plugins.thirdparty_clashes"})
