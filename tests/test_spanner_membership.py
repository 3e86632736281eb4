"""Founding, inviting and joining, between real in-process servers on loopback."""

import random

from prometheus_client import generate_latest
from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from vigo.config import config_from_mapping
from vigo.server import VigoServer
from vigo.spanner.errors import SpannerRefusal
from vigo.spanner.invites import Invite


def spanner_config(directory, name, group, port):
    return config_from_mapping({
        "server": {"data_dir": directory, "hostname": "localhost",
                   "envoy_listen": "127.0.0.1:0", "api_listen": "127.0.0.1:0"},
        "spanner": {"mode": "spanner", "bolt_name": name, "patterns": ["*.%s.example.com" % name],
                    "peer_listen": "127.0.0.1:0",
                    "gossip": {"group": group, "port": port, "interface": "127.0.0.1"}},
    })


@defer.inlineCallbacks
def federate(testcase, names=("a", "b", "c")):
    """Start bolts through ``testcase.bolt(name)``, found a federation at the
    first, join the others through it, and wait until every roster has them all."""
    bolts = []
    for name in names:
        bolts.append((yield testcase.bolt(name)))
    founder = bolts[0]
    yield founder.spanner.init()
    for joiner in bolts[1:]:
        invite = yield founder.spanner.invite(3600)
        yield joiner.spanner.join(invite["token"])
    for _ in range(300):
        if all(len(bolt.spanner.roster.bolt_ids()) == len(bolts) for bolt in bolts):
            return bolts
        yield task.deferLater(reactor, 0.1, lambda: None)
    testcase.fail("the rosters did not converge")


class MembershipTests(unittest.TestCase):
    def setUp(self):
        self.group = "239.192.%d.%d" % (random.randrange(1, 255), random.randrange(1, 255))
        self.port = random.randrange(20000, 60000)

    @defer.inlineCallbacks
    def bolt(self, name, directory=None):
        directory = directory or self.mktemp()
        server = VigoServer(spanner_config(directory, name, self.group, self.port), reactor)
        server.directory = directory
        server.startService()
        self.addCleanup(lambda: server.stopService() if server.running else None)
        yield server.ready
        return server

    @defer.inlineCallbacks
    def test_init_invite_join_and_replay(self):
        a = yield self.bolt("a")
        b = yield self.bolt("b")
        c = yield self.bolt("c")
        self.assertEqual(a.spanner.status()["state"], "unfederated")
        status = yield a.spanner.init()
        self.assertEqual((status["state"], status["bolts"]["total"]), ("member", 1))
        invite = yield a.spanner.invite(3600)
        self.assertEqual(Invite.decode(invite["token"]).minter_id, a.identity.id)
        joined = yield b.spanner.join(invite["token"])
        self.assertEqual(joined["federation_id"], status["federation_id"])
        self.assertEqual(a.spanner.roster.digest(), b.spanner.roster.digest())
        self.assertEqual(sorted(a.spanner.roster.bolt_ids()),
                         sorted([a.identity.id, b.identity.id]))
        self.assertTrue(a.spanner.roster.is_consumed(Invite.decode(invite["token"]).token_id))
        # The same invite again, from a third server: refused, nothing changes.
        digest = a.spanner.roster.digest()
        error = yield self.assertFailure(c.spanner.join(invite["token"]), SpannerRefusal)
        self.assertEqual(error.code, "join_refused")
        self.assertIn("already", error.message)
        self.assertIsNone(c.spanner.roster)
        self.assertEqual(a.spanner.roster.digest(), digest)
        metrics = generate_latest(a.registry)
        self.assertIn(b"vigo_spanner_roster_bolts 2.0", metrics)
        self.assertIn(b'vigo_spanner_gossip_datagrams_total{direction="sent"}', metrics)

    @defer.inlineCallbacks
    def test_roster_and_identity_survive_restart(self):
        a = yield self.bolt("a")
        b = yield self.bolt("b")
        yield a.spanner.init()
        invite = yield a.spanner.invite(3600)
        yield b.spanner.join(invite["token"])
        row = b.spanner.roster.row(b.identity.id)
        yield b.stopService()
        again = yield self.bolt("b", directory=b.directory)
        self.assertEqual(again.identity.id, b.identity.id)
        self.assertEqual(again.spanner.status()["state"], "member")
        # Its ports are ephemeral here, so it listens elsewhere now: its row says
        # so at the next seq (same ports: the same row, see the integration tests).
        now = again.spanner.roster.row(b.identity.id)
        self.assertEqual((now.seq, now.name, now.patterns), (row.seq + 1, row.name, row.patterns))
        self.assertNotEqual(now.addresses, row.addresses)
        self.assertEqual(now.addresses.to_data(), again.spanner.addresses())
        yield task.deferLater(reactor, 0, lambda: None)
        for _ in range(100):  # a hears of it by gossip and a pull
            if a.spanner.roster.row(b.identity.id).seq == now.seq:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(a.spanner.roster.row(b.identity.id).addresses, now.addresses)
        answer = yield a.spanner.facade.call(b.identity.id, "ping", {})
        self.assertEqual(answer["bolt_id"], b.identity.id)
        # The consumed invite is remembered by the minter's roster too.
        self.assertTrue(a.spanner.roster.is_consumed(Invite.decode(invite["token"]).token_id))

    @defer.inlineCallbacks
    def test_announce_row_takes_only_the_callers_own_verified_row(self):
        from vigo.interfaces.errors import ActionError

        a, b = yield federate(self, ("a", "b"))
        mine = b.spanner.roster.row(b.identity.id)
        newer = mine.successor(b.identity, addresses={"envoy": "127.0.0.1:1", "api":
                                                     "127.0.0.1:2", "peer": "127.0.0.1:3"})
        # b's own newer row, from b: merged, persisted.
        answer = yield b.spanner.facade.call(a.identity.id, "announce-row",
                                             {"row": newer.to_data()})
        self.assertEqual(answer, {"seq": mine.seq + 1, "rejected": []})
        self.assertEqual(a.spanner.roster.row(b.identity.id).addresses.peer, "127.0.0.1:3")
        # a's row, from b: refused, whoever signed it.
        a_row = a.spanner.roster.row(a.identity.id).successor(a.identity, name="evil")
        error = yield self.assertFailure(b.spanner.facade.call(
            a.identity.id, "announce-row", {"row": a_row.to_data()}), ActionError)
        self.assertIn("only its own row", str(error))
        # Tampered (a field its signature covers): rejected by the merge.
        tampered = dict(newer.successor(b.identity).to_data(), name="renamed")
        answer = yield b.spanner.facade.call(a.identity.id, "announce-row", {"row": tampered})
        self.assertEqual(answer["seq"], mine.seq + 1)
        self.assertIn("bad_signature", answer["rejected"])
        error = yield self.assertFailure(b.spanner.facade.call(
            a.identity.id, "announce-row", {"row": {"bolt_id": b.identity.id}}), ActionError)
        self.assertIn("malformed", str(error))
        self.assertEqual(a.spanner.roster.row(a.identity.id).name, "a")

    @defer.inlineCallbacks
    def test_join_refusals(self):
        a = yield self.bolt("a")
        b = yield self.bolt("b")
        yield a.spanner.init()
        error = yield self.assertFailure(b.spanner.join("vgoj_nonsense"), SpannerRefusal)
        self.assertEqual(error.code, "bad_request")
        error = yield self.assertFailure(a.spanner.init(), SpannerRefusal)
        self.assertEqual(error.code, "already_member")
        error = yield self.assertFailure(b.spanner.invite(60), SpannerRefusal)
        self.assertEqual(error.code, "not_member")
        # An invite whose minter is gone: a clear, retryable refusal.
        invite = yield a.spanner.invite(3600)
        yield a.stopService()
        error = yield self.assertFailure(b.spanner.join(invite["token"]), SpannerRefusal)
        self.assertEqual(error.code, "unreachable")
        self.assertIsNone(b.spanner.roster)
