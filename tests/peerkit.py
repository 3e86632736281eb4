"""Fakes and wiring for peer RPC tests: a roster, test actions, bolts."""

import attr
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from vigo.identity import Identity
from vigo.interfaces import (
    ActionError,
    IBolt,
    Integer,
    IPeerAction,
    IPeerCaller,
    Optional,
    PeerUnreachable,
    Refusal,
    String,
)
from vigo.interfaces.components import IPeerRoster
from vigo.plugins.vigo_ping import ping
from vigo.spanner.bolt import Bolt
from vigo.spanner.peer.pool import PeerClients


@implementer(IBolt)
class StubBolt:
    """An ``IBolt`` that has nothing: every part refuses or is empty. Test
    fakes subclass it and give what their actions need (a fleet, calls to
    other bolts, ...), so a method added to ``IBolt`` is stubbed here once."""

    log = Logger()
    id = "b" * 20
    name = "dc1"

    def now(self):
        return 0.0

    def roster_digest(self):
        return b"\x00" * 32

    def peer_states(self):
        return {}

    def fleet(self):
        raise ActionError("no fleet in this test")

    def enrollment(self):
        raise ActionError("this fake bolt does not enroll envoys")

    def reassign(self, envoy, to):
        return defer.fail(ActionError("no hand-overs in this test"))

    def accept_envoy(self, caller_id, fields):
        return defer.fail(ActionError("no hand-overs in this test"))

    def drain(self, to):
        return defer.fail(ActionError("no drain here"))

    def drain_status(self):
        raise ActionError("no drain here")

    def take_row(self, bolt_id, data):
        return defer.fail(ActionError("no roster here"))

    def call(self, bolt_id, action_name, args):
        return defer.fail(PeerUnreachable("no peers in this test"))


@attr.s(auto_attribs=True)
class Row:
    """The three roster-row fields peer RPC reads."""
    bolt_id: str
    status: str
    name: str


@implementer(IPeerRoster)
class FakeRoster:
    """Rows by key, and a digest the test sets."""

    def __init__(self, digest=b"\x5a" * 32):
        self.rows = {}
        self.digest_value = digest

    def admit(self, identity, name, status="active"):
        self.rows[identity.public_key] = Row(identity.id, status, name)

    def set_status(self, identity, status):
        self.rows[identity.public_key].status = status

    def bolt_for_key(self, public_key):
        return self.rows.get(public_key)

    def digest(self):
        return self.digest_value


@implementer(IPlugin, IPeerAction)
class RecordAction:
    """Records its calls; answers its arguments back."""

    name = "record"
    description = "echo the arguments, remembering the call"
    argument_schema = {"text": String(100), "count": Optional(Integer(0, 5))}

    def __init__(self):
        self.calls = []

    def run(self, bolt, caller_id, args):
        self.calls.append((caller_id, args))
        return {"echo": args, "by": bolt.id}


@implementer(IPlugin, IPeerAction)
class ScriptedAction:
    """Does what the test tells it: return, raise, or hand back a Deferred."""

    description = "scripted"
    argument_schema = {}

    def __init__(self, name, behaviour):
        self.name = name
        self.behaviour = behaviour
        self.calls = 0

    def run(self, bolt, caller_id, args):
        self.calls += 1
        return self.behaviour()


def _raise(exception):
    def behaviour():
        raise exception
    return behaviour


def make_actions():
    """The actions every peer test bolt loads, by name."""
    actions = [
        ping,
        RecordAction(),
        ScriptedAction("broken", _raise(ValueError("the widget is missing"))),
        ScriptedAction("refuse", _raise(ActionError("no such envoy: web9"))),
        ScriptedAction("refuse-coded", _raise(Refusal("not_found", "no envoy web9 on this bolt",
                                                      retryable=True))),
        ScriptedAction("bad-result", lambda: {"set": {1, 2}}),
        ScriptedAction("huge-result", lambda: "x" * (300 * 1024)),
        ScriptedAction("later", lambda: defer.succeed(["done"])),
        ScriptedAction("never", defer.Deferred),
    ]
    return {action.name: action for action in actions}


class PeerSet:
    """Identities, one roster (every bolt holds the same copy) and a facade
    per bolt; sockets are the tests' business."""

    def __init__(self, names=("alpha", "beta"), clock=None):
        self.clock = clock or Clock()
        self.roster = FakeRoster()
        self.identities = {}
        for name in names:
            identity = Identity.generate()
            self.identities[name] = identity
            self.roster.admit(identity, name)
        self.addresses = {}

    def locate(self, bolt_id):
        for name, identity in self.identities.items():
            if identity.id == bolt_id and name in self.addresses:
                return self.addresses[name], identity.fingerprint
        return None

    def clients(self, name, reactor, **options):
        """A ``PeerClients`` pool for bolt ``name`` that finds the others here."""
        return PeerClients(reactor, self.identities[name], self.locate, **options)

    def facade(self, name, actions, clients=None, peer_states=None):
        """Bolt ``name``'s ``IBolt``; without ``clients``, no other bolt answers."""
        return Bolt(self.identities[name], lambda: name, self.clock, self.roster, actions,
                    clients or NoPeers(), peer_states=peer_states)


@implementer(IPeerCaller)
class NoPeers:
    """A pool that reaches no other bolt."""

    def call(self, bolt_id, action_name, args, timeout=None):
        return defer.fail(PeerUnreachable("no peers in this test"))
