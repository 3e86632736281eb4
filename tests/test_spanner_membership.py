"""Founding, inviting and joining, between real in-process servers on loopback;
and a bolt's start-up order (its roster loaded before its envoy port listens)."""

import random
import socket
import sqlite3
from contextlib import closing

from prometheus_client import generate_latest
from twisted.internet import defer, reactor
from twisted.internet.error import ConnectionRefusedError
from twisted.trial import unittest

from tests.events import first_call, rosters_of, until
from tests.fleetkit import EnvoyConnections
from vigo.config import config_from_mapping
from vigo.envoy import main as envoy
from vigo.envoy.state import EnvoyState
from vigo.interfaces.errors import ActionError, Refusal
from vigo.server import build_server
from vigo.spanner.invites import Invite
from vigo.spanner.roster.store import load_roster


def spanner_config(directory, name, group, port, envoy_listen="127.0.0.1:0"):
    return config_from_mapping({
        "server": {"data_dir": directory, "hostname": "localhost",
                   "envoy_listen": envoy_listen, "api_listen": "127.0.0.1:0"},
        "spanner": {"mode": "spanner", "bolt_name": name, "patterns": ["*.%s.example.com" % name],
                    "peer_listen": "127.0.0.1:0",
                    "gossip": {"group": group, "port": port, "interface": "127.0.0.1"}},
    })


def query(server, sql, *params):
    """The rows of a read-only query of ``server``'s database, straight from the file."""
    with closing(sqlite3.connect(server.store.path)) as db:
        return db.execute(sql, params).fetchall()


@defer.inlineCallbacks
def federate(testcase, names=("a", "b", "c")):
    """Start bolts through ``testcase.bolt(name)``, found a federation at the
    first, join the others through it, and wait until every roster has them all."""
    bolts = []
    for name in names:
        bolts.append((yield testcase.bolt(name)))
    founder = bolts[0]
    yield founder.spanner.admin.init()
    for joiner in bolts[1:]:
        invite = yield founder.spanner.admin.invite(3600)
        yield joiner.spanner.admin.join(invite["token"])
    yield until(lambda: all(len(bolt.spanner.roster.bolt_ids()) == len(bolts)
                            for bolt in bolts),
                *rosters_of(*bolts), what="every roster holds all %d bolts" % (len(bolts),))
    return bolts


class MembershipTests(unittest.TestCase):
    def setUp(self):
        self.group = "239.192.%d.%d" % (random.randrange(1, 255), random.randrange(1, 255))
        self.port = random.randrange(20000, 60000)

    def build(self, name, directory=None, envoy_listen="127.0.0.1:0"):
        """A bolt built, not started (stopped at cleanup if it runs)."""
        directory = directory or self.mktemp()
        server = build_server(spanner_config(directory, name, self.group, self.port,
                                             envoy_listen), reactor)
        server.directory = directory
        self.addCleanup(lambda: server.stopService() if server.running else None)
        return server

    @defer.inlineCallbacks
    def bolt(self, name, directory=None):
        server = self.build(name, directory)
        server.startService()
        yield server.ready
        return server

    @defer.inlineCallbacks
    def test_init_invite_join_and_replay(self):
        a = yield self.bolt("a")
        b = yield self.bolt("b")
        c = yield self.bolt("c")
        self.assertEqual(a.spanner.admin.status()["state"], "unfederated")
        status = yield a.spanner.admin.init()
        self.assertEqual((status["state"], status["bolts"]["total"]), ("member", 1))
        invite = yield a.spanner.admin.invite(3600)
        self.assertEqual(Invite.decode(invite["token"]).minter_id, a.identity.id)
        joined = yield b.spanner.admin.join(invite["token"])
        self.assertEqual(joined["federation_id"], status["federation_id"])
        self.assertEqual(a.spanner.roster.digest(), b.spanner.roster.digest())
        self.assertEqual(sorted(a.spanner.roster.bolt_ids()),
                         sorted([a.identity.id, b.identity.id]))
        token_id = Invite.decode(invite["token"]).token_id
        self.assertTrue(a.spanner.roster.current.is_consumed(token_id))
        # The same invite again, from a third server: refused, nothing changes.
        digest = a.spanner.roster.digest()
        error = yield self.assertFailure(c.spanner.admin.join(invite["token"]), Refusal)
        self.assertEqual(error.code, "join_refused")
        self.assertIn("already", error.reason)
        self.assertIsNone(c.spanner.roster.current)
        self.assertEqual(a.spanner.roster.digest(), digest)
        metrics = generate_latest(a.registry)
        self.assertIn(b"vigo_spanner_roster_bolts 2.0", metrics)
        self.assertIn(b'vigo_spanner_gossip_datagrams_total{direction="sent"}', metrics)

    @defer.inlineCallbacks
    def test_roster_and_identity_survive_restart(self):
        a = yield self.bolt("a")
        b = yield self.bolt("b")
        yield a.spanner.admin.init()
        invite = yield a.spanner.admin.invite(3600)
        yield b.spanner.admin.join(invite["token"])
        row = b.spanner.roster.row(b.identity.id)
        yield b.stopService()
        again = yield self.bolt("b", directory=b.directory)
        self.assertEqual(again.identity.id, b.identity.id)
        self.assertEqual(again.spanner.admin.status()["state"], "member")
        # Its ports are ephemeral here, so it listens elsewhere now: its row says
        # so at the next seq (same ports: the same row, see the integration tests).
        now = again.spanner.roster.row(b.identity.id)
        self.assertEqual((now.seq, now.name, now.patterns), (row.seq + 1, row.name, row.patterns))
        self.assertNotEqual(now.addresses, row.addresses)
        self.assertEqual(now.addresses.to_data(), again.advertised.row())
        # a hears of it by gossip and a pull, or by the announce-row b sends.
        yield until(lambda: a.spanner.roster.row(b.identity.id).seq == now.seq,
                    *rosters_of(a), what="a holds b's new row")
        self.assertEqual(a.spanner.roster.row(b.identity.id).addresses, now.addresses)
        answer = yield a.spanner.bolt.call(b.identity.id, "ping", {})
        self.assertEqual(answer["bolt_id"], b.identity.id)
        # The consumed invite is remembered by the minter's roster too.
        self.assertTrue(a.spanner.roster.current.is_consumed(
            Invite.decode(invite["token"]).token_id))

    @defer.inlineCallbacks
    def test_announce_row_takes_only_the_callers_own_verified_row(self):
        a, b = yield federate(self, ("a", "b"))
        mine = b.spanner.roster.row(b.identity.id)
        newer = mine.successor(b.identity, addresses={"envoy": "127.0.0.1:1", "api":
                                                     "127.0.0.1:2", "peer": "127.0.0.1:3"})
        # b's own newer row, from b: merged, persisted.
        answer = yield b.spanner.bolt.call(a.identity.id, "announce-row",
                                           {"row": newer.to_data()})
        self.assertEqual(answer, {"seq": mine.seq + 1, "rejected": []})
        self.assertEqual(a.spanner.roster.row(b.identity.id).addresses.peer, "127.0.0.1:3")
        # a's row, from b: refused, whoever signed it.
        a_row = a.spanner.roster.row(a.identity.id).successor(a.identity, name="evil")
        error = yield self.assertFailure(b.spanner.bolt.call(
            a.identity.id, "announce-row", {"row": a_row.to_data()}), ActionError)
        self.assertEqual(error.code, "refused")
        self.assertIn("only its own row", error.reason)
        # Tampered (a field its signature covers): rejected by the merge.
        tampered = dict(newer.successor(b.identity).to_data(), name="renamed")
        answer = yield b.spanner.bolt.call(a.identity.id, "announce-row", {"row": tampered})
        self.assertEqual(answer["seq"], mine.seq + 1)
        self.assertIn("bad_signature", answer["rejected"])
        error = yield self.assertFailure(b.spanner.bolt.call(
            a.identity.id, "announce-row", {"row": {"bolt_id": b.identity.id}}), ActionError)
        self.assertEqual(error.code, "malformed")
        self.assertEqual(a.spanner.roster.row(a.identity.id).name, "a")

    @defer.inlineCallbacks
    def test_join_refusals(self):
        a = yield self.bolt("a")
        b = yield self.bolt("b")
        yield a.spanner.admin.init()
        error = yield self.assertFailure(b.spanner.admin.join("vgoj_nonsense"), Refusal)
        self.assertEqual(error.code, "bad_request")
        error = yield self.assertFailure(a.spanner.admin.init(), Refusal)
        self.assertEqual(error.code, "already_member")
        error = yield self.assertFailure(b.spanner.admin.invite(60), Refusal)
        self.assertEqual(error.code, "not_member")
        # An invite whose minter is gone: a clear, retryable refusal.
        invite = yield a.spanner.admin.invite(3600)
        yield a.stopService()
        error = yield self.assertFailure(b.spanner.admin.join(invite["token"]), Refusal)
        self.assertEqual(error.code, "unreachable")
        self.assertIsNone(b.spanner.roster.current)

    @defer.inlineCallbacks
    def test_no_envoy_is_answered_before_the_roster_is_loaded(self):
        """Start-up loads the roster before the envoy port listens: a bolt whose
        roster load is held takes no Register at all (so it cannot enroll, as
        its own, an envoy another bolt owns); once loaded, it routes."""
        a, b = yield federate(self, ("a", "b"))
        token = yield a.enrollment_tokens.create()  # durable: the restarted a redeems it
        yield a.stopService()
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        again = self.build("a", a.directory, envoy_listen="127.0.0.1:%d" % (port,))
        connections = EnvoyConnections()
        self.addCleanup(connections.close_all)  # before the servers stop
        enrolled = {"a": [], "b": []}
        again.enrollment.listeners.append(lambda *envoy: enrolled["a"].append(envoy))
        b.enrollment.listeners.append(lambda *envoy: enrolled["b"].append(envoy))

        # Hold the roster load of the restarted a: its store takes the job only
        # once the test lets it.
        asked, load_asked = first_call("the restarted a loads its roster")
        release = defer.Deferred()
        run = again.store.run

        def held_run(job, *args):
            if job is load_roster and not release.called:
                load_asked()
                return release.addCallback(lambda _: run(job, *args))
            return run(job, *args)

        again.store.run = held_run
        again.startService()
        yield asked
        self.assertFalse(again.ready.called)
        self.assertIsNone(again.spanner.roster.current)
        self.assertIsNone(again.advertised.ports["envoy"].port)

        def register():
            state = EnvoyState.open(self.mktemp(), create=True)
            d = envoy.register(reactor, state, "web1.b.example.com", token,
                               address="127.0.0.1:%d" % (port,), listener=connections)
            return d.addCallback(lambda protocol: (state, protocol))

        # Meanwhile a Register for b's hostname sent to a finds nothing listening.
        yield self.assertFailure(register(), ConnectionRefusedError)
        self.assertEqual(len(again.fleet.index), 0)
        self.assertEqual((self.count(again), self.count(b)), (0, 0))
        self.assertEqual(enrolled, {"a": [], "b": []})

        release.callback(None)
        yield again.ready
        self.assertEqual(again.advertised.bound("envoy"), port)
        self.assertEqual(sorted(again.spanner.roster.bolt_ids()),
                         sorted([a.identity.id, b.identity.id]))
        # a listens elsewhere now: b must know where to have a redeem the token.
        yield until(lambda: b.spanner.roster.row(a.identity.id).addresses.to_data()
                    == again.advertised.row(), *rosters_of(b),
                    what="b holds the restarted a's new addresses")

        # Now a routes it to b, the owner; a stores nothing, and counts the use.
        state, protocol = yield register()
        self.assertIsNone(protocol)  # told to attach at b
        self.assertEqual((state.server_id, state.server_fingerprint),
                         (b.identity.id, b.identity.fingerprint))
        self.assertIsNotNone(b.fleet.index.get(state.envoy_id))
        self.assertIsNone(again.fleet.index.get(state.envoy_id))
        self.assertEqual((self.count(again), self.count(b)), (0, 1))
        self.assertEqual(enrolled, {"a": [], "b": [(state.envoy_id, "web1.b.example.com")]})
        self.assertEqual(query(again, "SELECT used FROM enrollment_tokens WHERE id = ?",
                               token.token_id), [(1,)])

    def count(self, server):
        """The envoys in ``server``'s database."""
        return query(server, "SELECT COUNT(*) FROM envoys")[0][0]
