"""Membership (``vigo.spanner.membership``) and invites (``vigo.spanner.invites``), as unit tests.

No servers, no sockets, no threads: every bolt is built from its real parts
(an ``ImmediateStore`` behind a ``GatedStore``, a ``LocalRoster``, a
``Membership``, ``Invites``) on one ``Clock``, and a join runs in-process: the
joiner's ``dial`` gives an ``InProcessClient`` that hands the token and the
signed row to the minter's real ``ApplicantPerspective.perspective_join``, so
the minter's real ``Membership.admit`` decides and answers a real signed
snapshot, which crosses back as JSON in an answer envelope the way
``PeerClient`` unwraps it. The client can also be told that the minter is
down, never completes the handshake, holds another key, never answers, or
admits and then loses its answer. A removal asks ``drain-status`` through
``DrainStatusPeers``, an ``IPeerCaller`` that answers, refuses, is
unreachable or never answers; two tests ask the real action instead, in a
``tests.test_reassign.UnitFederation``.

Every fake is checked against its interface (or, for the client, against
``PeerClient``), and so are the real parts.
"""

import collections
import inspect
import json

import attr
from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.test_reassign import UnitFederation
from vigo.identity import Identity
from vigo.interfaces import IPeerCaller
from vigo.interfaces.components import ILocalRoster, IStore
from vigo.interfaces.errors import (
    ActionError,
    JoinRefused,
    NotAMember,
    PeerNoAnswer,
    PeerUnreachable,
    Refusal,
    UnknownAction,
    from_wire,
    to_wire,
)
from vigo.spanner import membership as membership_module
from vigo.spanner.invites import MAX_LIFETIME, Invite, Invites, insert_invite
from vigo.spanner.membership import JOIN_TIMEOUT, Membership
from vigo.spanner.peer.asking import CALL_TIMEOUT
from vigo.spanner.peer.client import DEFAULT_TIMEOUT, PeerClient
from vigo.spanner.peer.pool import PeerClients
from vigo.spanner.peer.server import ApplicantPerspective, refuse_join
from vigo.spanner.roster.crdt import Roster, new_federation_id
from vigo.spanner.roster.local import LocalRoster
from vigo.spanner.roster.rows import AdmissionRow
from vigo.spanner.roster.snapshot import open_snapshot, sign_snapshot
from vigo.store import Store
from vigo.testing.store import ImmediateStore

#: When the tests' clock starts.
EPOCH = 1_700_000_000.0
#: The tables a bolt keeps its membership in.
MEMBERSHIP_TABLES = ("federation", "roster_rows", "roster_removals", "roster_consumed_tokens",
                     "roster_overrides", "spanner_invites")


# -- the fakes ---------------------------------------------------------------------------------


@implementer(IStore)
class GatedStore:
    """An ``IStore`` over an ``ImmediateStore``: jobs run at once, unless the
    gate is shut (``shut()``), when every job waits until ``open_gate()``, so
    a test sees what a component does (and has not done) before its write
    commits, and how many transactions a change takes."""

    def __init__(self, store):
        self.store = store
        self.waiting = None  # [(job, args, Deferred)] while shut

    def open(self):
        return self.store.open()

    def run(self, job, *args):
        if self.waiting is None:
            return self.store.run(job, *args)
        d = defer.Deferred()
        self.waiting.append((job, args, d))
        return d

    def close(self):
        return self.store.close()

    def shut(self):
        self.waiting = []

    def open_gate(self):
        waiting, self.waiting = self.waiting, None
        for job, args, d in waiting:
            self.store.run(job, *args).chainDeferred(d)

    @property
    def jobs(self):
        """Every job that ran (committed or rolled back), in order."""
        return self.store.jobs

    def query(self, sql, *params):
        return self.store.query(sql, *params)


@implementer(IPeerCaller)
class DrainStatusPeers:
    """The ``IPeerCaller`` of a bolt that asks others about their drain.

    ``answers[bolt_id]`` is what ``drain-status`` at that bolt answers: a dict
    (crossing as JSON), a ``PeerError`` to fail with, or ``SILENT`` (no answer
    ever: the asker's deadline decides). A bolt not listed is unreachable.
    """

    SILENT = object()

    def __init__(self):
        self.answers = {}
        self.calls = []  # (bolt_id, action_name, args)

    def call(self, bolt_id, action_name, args, timeout=None):
        self.calls.append((bolt_id, action_name, args))
        if action_name != "drain-status":
            return defer.fail(UnknownAction("bolt %s has no action %r" % (bolt_id, action_name)))
        answer = self.answers.get(bolt_id)
        if answer is None:
            return defer.fail(PeerUnreachable("bolt %s is not connected" % (bolt_id,)))
        if answer is self.SILENT:
            return defer.Deferred()
        if isinstance(answer, Exception):
            return defer.fail(answer)
        return defer.succeed(json.loads(json.dumps(answer)))


def drain_answer(bolt_id, state, remaining):
    """What a bolt's ``drain-status`` answers (``Drainer.status``)."""
    return {"state": state, "to": None, "total": remaining, "moved": 0, "failed": 0,
            "errors": [], "bolt_id": bolt_id, "status": "draining", "remaining": remaining}


def crossed(data):
    """``data`` as it comes out of the other end of a connection."""
    return json.loads(json.dumps(data))


class Network:
    """Where the bolts of one test listen (by peer address), and what is wrong
    with reaching them: ``down`` refuse connections; ``hanging`` never finish
    the handshake; ``silent`` never answer a join; ``mute`` admit the joiner
    but their answer is lost; ``gone`` hang up before the join is sent."""

    def __init__(self):
        self.clock = Clock()
        self.clock.advance(EPOCH)
        self.bolts = {}
        self.down, self.hanging, self.silent, self.mute, self.gone = (set() for _ in range(5))
        self.clients = []  # every client dialled, in order


class InProcessClient:
    """A fake ``PeerClient`` (unstarted until ``start()``) from bolt ``owner``
    to whatever listens at ``address`` in the ``network``.

    Connecting checks the listener's key against ``fingerprint`` (the TLS pin)
    and, like ``PeerClient.when_connected``, answers on the next turn of the
    owner's clock. ``join`` hands the token and row, as JSON, to the minter's
    real ``ApplicantPerspective`` (its argument checks and its handler, the
    minter's ``join_handler``: ``Membership.admit`` unless a test says
    otherwise) under the key the owner proves (``owner.tls_key``), and
    unwraps the answer envelope as ``PeerClient`` does, timing out on the
    owner's clock with ``PeerNoAnswer``.
    """

    def __init__(self, network, owner, address, fingerprint, bolt_id):
        self.network = network
        self.owner = owner
        self.address = address
        self.fingerprint = fingerprint
        self.bolt_id = bolt_id
        self.last_error = None
        self.started = self.stopped = False
        self.joins = []  # (token_text, row_data) sent
        self._peer = None

    def start(self):
        self.started = True

    def stop(self):
        self.stopped = True
        self._peer = None
        return defer.succeed(None)

    def when_connected(self, fail_after_failures=None):
        assert self.started, "when_connected before start"
        net, clock = self.network, self.owner.clock
        if self.address in net.hanging:
            return defer.Deferred()  # the caller's deadline cancels the wait
        peer = net.bolts.get(self.address)
        result = defer.Deferred()
        if peer is None or self.address in net.down:
            self.last_error = "Connection was refused by other side: 111: Connection refused."
        elif peer.identity.fingerprint != self.fingerprint:
            self.last_error = ("TLS handshake failed; does the peer hold the key with "
                               "fingerprint %s?" % (self.fingerprint,))
        else:
            self._peer = peer
            clock.callLater(0, result.callback, self)
            return result
        clock.callLater(0, result.errback, ConnectionRefusedError(self.last_error))
        return result

    def peer_key(self):
        return None if self._peer is None else self._peer.identity.public_key

    def join(self, token_text, row_data, timeout=None):
        peer, net = self._peer, self.network
        if peer is None:
            return defer.fail(PeerUnreachable("peer at %s is not connected" % (self.address,)))
        if self.address in net.gone:
            return defer.fail(PeerUnreachable("peer at %s hung up before join" % (self.address,)))
        self.joins.append((token_text, row_data))
        timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        if self.address in net.silent:
            answered = defer.Deferred()
        else:
            perspective = ApplicantPerspective(self.owner.tls_key, peer.join_handler,
                                               peer.refusals)
            answered = defer.maybeDeferred(perspective.perspective_join, *crossed(
                [token_text, row_data]))
            answered.addCallbacks(_ok, _refused)
            answered.addCallback(crossed)
            if self.address in net.mute:
                peer.lost_answers.append(answered)
                answered = defer.Deferred()
        answered.addTimeout(timeout, self.owner.clock)
        return answered.addCallbacks(self._unwrap, self._no_answer, errbackArgs=(timeout,))

    def _unwrap(self, envelope):
        if "ok" in envelope:
            return envelope["ok"]
        raise from_wire(envelope["error"], "peer at %s" % (self.address,))

    def _no_answer(self, failure, timeout):
        failure.trap(defer.TimeoutError)
        raise PeerNoAnswer("no answer to join from peer at %s within %g s"
                           % (self.address, timeout))


def _ok(result):
    return {"ok": result}


def _refused(failure):
    failure.trap(Refusal)
    return {"error": to_wire(failure.value)}


#: What a fake client offers, as ``PeerClient`` offers it.
CLIENT_METHODS = ("start", "when_connected", "join", "peer_key", "stop")


class Bolt:
    """One bolt's membership parts, wired as ``vigo.server.spanner`` wires them."""

    def __init__(self, network, number, identity=None, name=None, patterns=None, clock=None,
                 path=":memory:"):
        self.network = network
        self.identity = identity or Identity(bytes([number]) * 32)
        self.id = self.identity.id
        self.tls_key = self.identity.public_key  # the key its connections prove
        self.name = name or "bolt%d" % (number,)
        self.patterns = patterns or ["*.%s.example.com" % (self.name,)]
        self.addresses = {"envoy": "127.0.0.%d:1530" % (number,),
                          "api": "127.0.0.%d:8443" % (number,),
                          "peer": "127.0.0.%d:1533" % (number,)}
        self.clock = clock or network.clock
        self.store = GatedStore(ImmediateStore(path))
        self.roster = LocalRoster(self.store, self.identity, self.clock)
        self.peers = DrainStatusPeers()
        self.membership = Membership(self.identity, self.roster, self.clock,
                                     lambda: dict(self.addresses), self.name, self.patterns,
                                     self.peers, self.dial, self.store)
        self.invites = Invites(self.identity, self.roster, self.store, self.clock,
                               lambda: self.addresses["peer"])
        self.join_handler = self.membership.admit  # what its peer portal admits with
        self.refusals = collections.Counter()  # as PeerPortal.refusals
        self.lost_answers = []  # admissions whose answer a mute network lost
        network.bolts[self.addresses["peer"]] = self

    def dial(self, address, fingerprint, bolt_id):
        client = InProcessClient(self.network, self, address, fingerprint, bolt_id)
        self.network.clients.append(client)
        return client

    def state(self):
        """Everything this bolt knows about its membership: its roster's digest
        and the rows of its membership tables."""
        return (self.roster.digest(),
                {table: sorted(self.store.query("SELECT * FROM %s" % (table,)))
                 for table in MEMBERSHIP_TABLES})

    def invite_row(self, token_id):
        """``(consumed_by, consumed_at_ms)`` of an invite in this bolt's database."""
        rows = self.store.query(
            "SELECT consumed_by, consumed_at_ms FROM spanner_invites WHERE id = ?", token_id)
        return rows[0] if rows else None

    def saved_row(self, bolt_id):
        """``(seq, record)`` of a roster row in this bolt's database."""
        rows = self.store.query("SELECT seq, record FROM roster_rows WHERE bolt_id = ?", bolt_id)
        return rows[0] if rows else None

    def application(self, invite, **changes):
        """The signed row this bolt applies with for ``invite``, as data."""
        fields = dict(name=self.name, addresses=self.addresses, patterns=self.patterns,
                      federation_id=invite.federation_id, token_id=invite.token_id,
                      minter_id=invite.minter_id)
        fields.update(changes)
        return AdmissionRow.applicant(
            self.identity, fields["federation_id"], fields["name"],
            fields["addresses"], fields["patterns"], fields["token_id"],
            fields["minter_id"]).to_data()


class MembershipCase(unittest.SynchronousTestCase):
    """Bolts on one network and clock; helpers to found, invite and join."""

    def setUp(self):
        self.network = Network()
        self.clock = self.network.clock

    def bolt(self, number, **options):
        bolt = Bolt(self.network, number, **options)
        self.addCleanup(bolt.store.close)
        return bolt

    def founded(self, number=1, **options):
        bolt = self.bolt(number, **options)
        self.successResultOf(bolt.membership.init())
        return bolt

    def mint(self, minter, lifetime=3600):
        return self.successResultOf(minter.invites.mint(lifetime))

    def join(self, joiner, token):
        """``joiner``'s join with ``token``, once the connection turn has passed."""
        d = joiner.membership.join(str(token))
        joiner.clock.advance(0)
        return d

    def joined(self, joiner, minter):
        """``joiner`` joins through a new invite of ``minter``; the invite."""
        invite = self.mint(minter)
        self.successResultOf(self.join(joiner, invite))
        return invite

    def refused(self, d, code, *fragments):
        refusal = self.failureResultOf(d, Refusal).value
        self.assertEqual(refusal.code, code, refusal.reason)
        for fragment in fragments:
            self.assertIn(fragment, refusal.reason)
        return refusal

    def federation(self):
        """Bolts 1 (the founder), 2 and 3, the others admitted by the founder."""
        a = self.founded(1)
        b, c = self.bolt(2), self.bolt(3)
        self.joined(b, a)
        self.joined(c, a)
        return a, b, c


# -- the parts and the fakes against their interfaces ------------------------------------------


class InterfaceTests(MembershipCase):
    def test_real_parts_and_fakes_provide_their_interfaces(self):
        a = self.bolt(1)
        verifyObject(ILocalRoster, a.roster)
        verifyObject(IStore, ImmediateStore())
        verifyObject(IStore, Store(self.mktemp(), self.clock))  # the real one, never opened
        verifyObject(IStore, a.store)
        verifyObject(IPeerCaller, a.peers)
        verifyObject(IPeerCaller, PeerClients(self.clock, a.identity, a.roster.locate))

    def test_the_fake_client_offers_what_peer_client_offers(self):
        real = PeerClient(Clock(), Identity(b"\x09" * 32), "127.0.0.1:1533", "fingerprint")
        fake = InProcessClient(self.network, self.bolt(1), "127.0.0.1:1533", "fingerprint",
                               None)
        for name in CLIENT_METHODS:
            self.assertTrue(callable(getattr(PeerClient, name, None)), name)
            self.assertEqual(inspect.signature(getattr(fake, name)),
                             inspect.signature(getattr(real, name)), name)
        self.assertIsNone(real.last_error)
        self.assertIsNone(fake.last_error)


# -- init --------------------------------------------------------------------------------------


class InitTests(MembershipCase):
    def test_init_founds_a_federation_persisted_before_it_answers(self):
        a = self.bolt(1)
        heard = []
        a.roster.on_member(heard.append)
        a.store.shut()
        d = a.membership.init()
        self.assertNoResult(d)
        self.assertIsNone(a.roster.current)
        self.assertEqual(a.store.query("SELECT * FROM federation"), [])
        self.assertEqual(heard, [])
        a.store.open_gate()
        roster = self.successResultOf(d)
        self.assertIs(a.roster.current, roster)
        self.assertEqual(heard, [roster])
        self.assertEqual(roster.founder_id, a.id)
        self.assertEqual(list(roster.bolt_ids()), [a.id])
        self.assertEqual(a.store.query("SELECT id, founder_id FROM federation"),
                         [(roster.federation_id, a.id)])
        self.assertIsNotNone(a.saved_row(a.id))
        reloaded = LocalRoster(a.store, a.identity, self.clock)
        self.assertEqual(self.successResultOf(reloaded.load()).digest(), roster.digest())

    def test_the_founders_row_carries_its_name_patterns_and_addresses(self):
        a = self.bolt(1)
        roster = self.successResultOf(a.membership.init())
        row = roster.row(a.id)
        self.assertEqual((row.name, row.patterns), ("bolt1", ("*.bolt1.example.com",)))
        self.assertEqual(row.addresses.to_data(), a.addresses)
        self.assertEqual((row.public_key, row.admitted_by, row.token_id, row.seq),
                         (a.identity.public_key, a.id, None, 1))

    def test_a_given_name_and_patterns_win_over_the_configured_ones(self):
        a = self.bolt(1)
        roster = self.successResultOf(a.membership.init(
            "east", [" *.East.Example.com ", "db?.example.org"]))
        row = roster.row(a.id)
        self.assertEqual(row.name, "east")
        self.assertEqual(row.patterns, ("*.east.example.com", "db?.example.org"))

    def test_a_second_init_is_already_member(self):
        a = self.founded(1)
        before, jobs = a.state(), len(a.store.jobs)
        refusal = self.refused(a.membership.init(), "already_member",
                               a.roster.current.federation_id)
        self.assertFalse(refusal.retryable)
        self.assertEqual((a.state(), len(a.store.jobs)), (before, jobs))

    def test_bad_patterns_or_name_are_bad_request_and_change_nothing(self):
        a = self.bolt(1)
        for name, patterns in [(None, ["not a pattern"]), (None, ["a/b.example.com"]),
                               (None, ["  "]), (None, ["x" * 254]), ("n" * 65, None),
                               ("tab\tname", None)]:
            self.refused(a.membership.init(name, patterns), "bad_request")
        self.assertIsNone(a.roster.current)
        self.assertEqual(a.store.jobs, [])

    def test_each_init_founds_a_new_federation(self):
        a, b = self.founded(1), self.founded(2)
        self.assertNotEqual(a.roster.federation_id, b.roster.federation_id)


# -- invites -----------------------------------------------------------------------------------


class MintTests(MembershipCase):
    def test_an_invite_is_durable_before_it_is_shown(self):
        a = self.founded(1)
        release = a.store.store.hold(insert_invite)
        d = a.invites.mint(600)
        self.assertNoResult(d)
        self.assertEqual(a.store.query("SELECT * FROM spanner_invites"), [])
        release()
        invite = self.successResultOf(d)
        now_ms = int(EPOCH * 1000)
        self.assertEqual(
            a.store.query("SELECT id, expires_at_ms, created_at_ms, consumed_by, consumed_at_ms "
                          "FROM spanner_invites"),
            [(invite.token_id, now_ms + 600_000, now_ms, None, None)])
        (stored_hash,), = a.store.query("SELECT secret_hash FROM spanner_invites")
        self.assertTrue(invite.matches(stored_hash))
        self.assertNotIn(invite.secret.encode("ascii"), bytes(stored_hash))

    def test_an_invite_names_the_federation_minter_address_and_key(self):
        a = self.founded(1)
        invite = self.mint(a, 60)
        self.assertEqual((invite.federation_id, invite.minter_id, invite.address,
                          invite.fingerprint, invite.expires_at_ms),
                         (a.roster.federation_id, a.id, "127.0.0.1:1533", a.identity.fingerprint,
                          int(EPOCH * 1000) + 60_000))
        decoded = Invite.decode(invite.encode())
        self.assertEqual(decoded, invite)
        self.assertTrue(decoded.verify(a.identity.public_key))

    def test_each_invite_is_new(self):
        a = self.founded(1)
        first, second = self.mint(a), self.mint(a)
        self.assertNotEqual(first.token_id, second.token_id)
        self.assertNotEqual(first.secret, second.secret)
        self.assertEqual(len(a.store.query("SELECT id FROM spanner_invites")), 2)

    def test_not_member_before_the_bolt_is_in_a_federation(self):
        a = self.bolt(1)
        self.refused(a.invites.mint(), "not_member", "vigocli spanner init")
        self.assertEqual(a.store.jobs, [])

    def test_a_lifetime_over_24_hours_or_not_positive_is_bad_request(self):
        a = self.founded(1)
        before = a.state()
        for lifetime in (MAX_LIFETIME + 1, 0, -5):
            self.refused(a.invites.mint(lifetime), "bad_request", "24 h")
        self.assertEqual(a.state(), before)
        self.mint(a, MAX_LIFETIME)


# -- join and admit, end to end in-process -----------------------------------------------------


class JoinTests(MembershipCase):
    def test_invite_join_admit_end_to_end(self):
        a, b = self.founded(1), self.bolt(2)
        heard = []
        b.roster.on_member(heard.append)
        invite = self.mint(a)
        jobs = len(a.store.jobs)
        roster = self.successResultOf(self.join(b, invite))

        # The joiner holds both bolts, from the minter's signed snapshot.
        self.assertIs(b.roster.current, roster)
        self.assertEqual(heard, [roster])
        self.assertEqual(set(roster.bolt_ids()), {a.id, b.id})
        self.assertEqual(roster.federation_id, a.roster.federation_id)
        self.assertEqual(b.roster.digest(), a.roster.digest())
        row = roster.row(b.id)
        self.assertEqual((row.name, row.patterns, row.addresses.to_data()),
                         ("bolt2", ("*.bolt2.example.com",), b.addresses))
        self.assertEqual((row.public_key, row.admitted_by, row.token_id),
                         (b.identity.public_key, a.id, invite.token_id))
        self.assertEqual(b.saved_row(b.id), a.saved_row(b.id))
        reloaded = LocalRoster(b.store, b.identity, self.clock)
        self.assertEqual(self.successResultOf(reloaded.load()).digest(), roster.digest())

        # The minter: the token consumed, the row and the redemption in one transaction.
        self.assertTrue(a.roster.current.is_consumed(invite.token_id))
        self.assertEqual(a.roster.row(b.id), row)
        self.assertEqual(len(a.store.jobs), jobs + 1)
        self.assertEqual(a.invite_row(invite.token_id), (b.id, int(EPOCH * 1000)))
        self.assertIsNotNone(a.saved_row(b.id))
        self.assertEqual(
            a.store.query("SELECT token_id FROM roster_consumed_tokens"), [(invite.token_id,)])

        # The client was started, connected to the pinned key, and hung up.
        client, = self.network.clients
        self.assertEqual((client.address, client.fingerprint, client.bolt_id),
                         (invite.address, a.identity.fingerprint, a.id))
        self.assertTrue(client.started and client.stopped)
        self.assertEqual(len(client.joins), 1)

    def test_the_admission_is_one_transaction_and_answers_after_it(self):
        a, b = self.founded(1), self.bolt(2)
        invite = self.mint(a)
        before = a.state()
        a.store.shut()
        d = self.join(b, invite)
        self.assertNoResult(d)
        self.assertEqual(len(a.store.waiting), 1)  # redemption and row: one job
        self.assertEqual(a.state(), before)  # nothing taken in before it commits
        self.assertIsNone(b.roster.current)
        a.store.open_gate()
        self.successResultOf(d)
        self.assertEqual(a.invite_row(invite.token_id)[0], b.id)
        self.assertIsNotNone(a.saved_row(b.id))

    def test_a_failed_admission_write_redeems_nothing(self):
        a, b = self.founded(1), self.bolt(2)
        invite = self.mint(a)
        before = a.state()

        def broken_save(cursor, parts):
            raise RuntimeError("disk full")

        patched = self.patch(membership_module, "save_roster", broken_save)
        self.refused(self.join(b, invite), "join_refused", "disk full")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        # The redemption ran in the same transaction, and was rolled back with it.
        self.assertEqual(a.state(), before)
        self.assertEqual(a.invite_row(invite.token_id), (None, None))
        self.assertIsNone(b.roster.current)
        patched.restore()
        self.successResultOf(self.join(b, invite))  # the token still works
        self.assertEqual(a.invite_row(invite.token_id)[0], b.id)

    def test_any_member_mints_invites_and_the_joiner_gets_the_whole_roster(self):
        a, b = self.founded(1), self.bolt(2)
        self.joined(b, a)
        c = self.bolt(3)
        invite = self.joined(c, b)
        self.assertEqual(set(c.roster.bolt_ids()), {a.id, b.id, c.id})
        self.assertEqual(c.roster.row(c.id).admitted_by, b.id)
        self.assertEqual(c.roster.digest(), b.roster.digest())
        self.assertEqual(b.invite_row(invite.token_id)[0], c.id)
        self.assertEqual(a.store.query("SELECT * FROM spanner_invites WHERE id = ?",
                                       invite.token_id), [])
        self.assertNotIn(c.id, a.roster.bolt_ids())  # until gossip brings it
        self.successResultOf(a.roster.merge(b.roster.current.parts()))
        self.assertEqual(a.roster.digest(), c.roster.digest())

    def test_a_member_does_not_join_again(self):
        a, b = self.founded(1), self.bolt(2)
        self.joined(b, a)
        invite = self.mint(a)
        self.refused(self.join(b, invite), "already_member")
        self.refused(self.join(a, invite), "already_member")
        self.assertEqual(len(self.network.clients), 1)  # only the first join dialled
        self.assertEqual(a.invite_row(invite.token_id), (None, None))



# -- admission refusals, at the minter ---------------------------------------------------------


class AdmitRefusalTests(MembershipCase):
    """``Membership.admit`` called as the peer portal calls it; every refusal
    is a ``JoinRefused`` and leaves the minter's roster and database as they were."""

    def setUp(self):
        super().setUp()
        self.a, self.b, self.c = self.founded(1), self.bolt(2), self.bolt(3)
        self.invite = self.mint(self.a)

    def admit(self, token=None, row=None, peer_key=None, at=None):
        token = self.invite.encode() if token is None else token
        row = self.b.application(self.invite) if row is None else row
        return (at or self.a).membership.admit(peer_key or self.b.identity.public_key, token, row)

    def refused_unchanged(self, admit, *fragments, at=None):
        at = at or self.a
        before = at.state()
        refusal = self.failureResultOf(admit(), JoinRefused).value
        self.assertEqual(refusal.code, "join_refused")
        for fragment in fragments:
            self.assertIn(fragment, refusal.reason)
        self.assertEqual(at.state(), before)
        return refusal

    def test_a_good_application_is_answered_with_a_signed_snapshot(self):
        answer = self.successResultOf(self.admit())
        snapshot = open_snapshot(crossed(answer), self.a.identity.public_key,
                                 self.a.roster.federation_id)
        roster = Roster(snapshot.parts.federation_id, snapshot.parts.founder_id)
        roster.merge(snapshot.parts)
        self.assertEqual(roster.digest(), self.a.roster.digest())
        self.assertEqual(set(roster.bolt_ids()), {self.a.id, self.b.id})

    def test_a_replayed_invite(self):
        self.successResultOf(self.admit())
        self.refused_unchanged(
            lambda: self.admit(row=self.c.application(self.invite),
                               peer_key=self.c.identity.public_key), "already used")

    def test_an_invite_the_database_knows_as_used(self):
        # The roster has not heard of the redemption; the minter's database decides.
        self.a.store.store.connection.execute(
            "UPDATE spanner_invites SET consumed_by = 'someone', consumed_at_ms = 1")
        self.refused_unchanged(self.admit, "already used (by bolt someone)")

    def test_an_expired_invite(self):
        self.clock.advance(3600)  # now == expires_at
        self.refused_unchanged(self.admit, "expired")
        self.clock.advance(3600)
        self.refused_unchanged(self.admit, "expired")

    def test_an_invite_used_in_its_last_millisecond(self):
        self.clock.advance(3599.999)
        self.successResultOf(self.admit())

    def test_an_invite_for_another_federation(self):
        x = self.founded(5)
        other = self.mint(x)
        refusal = self.refused_unchanged(
            lambda: self.admit(other.encode(), self.b.application(other)), "is for federation")
        self.assertIn(x.roster.federation_id, refusal.reason)

    def test_an_invite_presented_to_a_bolt_that_did_not_mint_it(self):
        self.joined(self.c, self.a)
        self.refused_unchanged(lambda: self.admit(at=self.c), "only the minter", at=self.c)

    def test_an_invite_signed_by_the_minter_but_never_stored_by_it(self):
        stray = Invite.mint(self.a.identity, self.a.roster.federation_id,
                            self.a.addresses["peer"], int(self.clock.seconds() * 1000), 3600)
        self.refused_unchanged(lambda: self.admit(stray.encode(), self.b.application(stray)),
                               "did not mint")

    def test_an_invite_with_a_guessed_secret(self):
        # The signature does not cover the secret: only the minter's hash of it does.
        guessed = attr.evolve(self.invite, secret="guessed")
        self.assertTrue(guessed.verify(self.a.identity.public_key))
        self.refused_unchanged(lambda: self.admit(guessed.encode()), "did not mint")
        self.successResultOf(self.admit())  # the real token still works

    def test_a_row_not_signed_by_the_connecting_key(self):
        self.refused_unchanged(lambda: self.admit(peer_key=self.c.identity.public_key),
                               "not signed by the connecting bolt's key")
        forged = dict(self.b.application(self.invite), signature=self.c.application(
            self.invite)["signature"])
        self.refused_unchanged(lambda: self.admit(row=forged), "not signed by its bolt")

    def test_a_row_for_another_invite_or_minter(self):
        for changes in ({"token_id": "another-token"}, {"minter_id": self.c.id}):
            row = self.b.application(self.invite, **changes)
            self.refused_unchanged(lambda row=row: self.admit(row=row),
                                   "does not name this invite")

    def test_a_removed_bolt(self):
        self.joined(self.b, self.a)
        self.successResultOf(self.a.membership.remove(self.b.id, force=True))
        again = self.mint(self.a)
        self.refused_unchanged(lambda: self.admit(again.encode(), self.b.application(again)),
                               "was removed", "new identity")

    def test_an_already_member_bolt(self):
        self.joined(self.b, self.a)
        again = self.mint(self.a)
        self.refused_unchanged(lambda: self.admit(again.encode(), self.b.application(again)),
                               "already a member")
        self.assertEqual(self.a.invite_row(again.token_id), (None, None))

    def test_a_garbage_token_or_row(self):
        for token in ("vgoj_garbage", "not a token", "vgoj_", " " * 10, "vgoj_e30"):
            self.refused_unchanged(lambda token=token: self.admit(token))
        for row in ({}, {"name": "b"}, dict(self.b.application(self.invite), seq="1")):
            self.refused_unchanged(lambda row=row: self.admit(row=row))

    def test_a_bad_signature_on_the_invite(self):
        longer = attr.evolve(self.invite, expires_at_ms=self.invite.expires_at_ms + 86_400_000)
        self.refused_unchanged(lambda: self.admit(longer.encode()), "signature does not verify")
        by_other = attr.evolve(self.invite, signature=self.c.identity.sign(self.invite.message()))
        self.refused_unchanged(lambda: self.admit(by_other.encode()), "signature does not verify")

    def test_a_bolt_in_no_federation_admits_no_one(self):
        lost = self.bolt(6, identity=self.a.identity)  # the minter, without its database
        self.refused_unchanged(lambda: self.admit(at=lost), "not a member of any federation",
                               at=lost)


# -- admission refusals, as the joiner hears them ----------------------------------------------


class JoinRefusedTests(MembershipCase):
    """Joins the minter refuses: the joiner gets ``join_refused`` and holds no
    roster; the minter changed nothing."""

    def setUp(self):
        super().setUp()
        self.a, self.b, self.c = self.founded(1), self.bolt(2), self.bolt(3)

    def join_refused(self, joiner, token, *fragments, dialled=True):
        before = self.a.state()
        clients = len(self.network.clients)
        refusal = self.refused(self.join(joiner, token), "join_refused", *fragments)
        self.assertFalse(refusal.retryable)
        self.assertEqual(self.a.state(), before)
        self.assertEqual(len(self.network.clients), clients + dialled)
        if dialled:
            self.assertTrue(self.network.clients[-1].stopped)
        return refusal

    def assert_not_member(self, joiner):
        self.assertIsNone(joiner.roster.current)
        self.assertEqual(joiner.store.query("SELECT * FROM federation"), [])
        self.assertEqual(joiner.store.query("SELECT * FROM roster_rows"), [])

    def test_a_replayed_invite(self):
        invite = self.joined(self.b, self.a)
        self.join_refused(self.c, invite, "the minter refused", "already used")
        self.assert_not_member(self.c)

    def test_an_expired_invite_is_refused_before_dialling(self):
        invite = self.mint(self.a, 60)
        self.clock.advance(60)
        self.join_refused(self.b, invite, "expired", dialled=False)
        self.assert_not_member(self.b)

    def test_an_invite_expired_by_the_minters_clock(self):
        lagging = Clock()
        lagging.advance(EPOCH)
        late = self.bolt(4, clock=lagging)
        invite = self.mint(self.a, 60)
        self.clock.advance(61)
        self.join_refused(late, invite, "the minter refused", "expired")
        self.assert_not_member(late)

    def test_an_invite_for_another_federation(self):
        forged = Invite.mint(self.a.identity, new_federation_id(), self.a.addresses["peer"],
                             int(self.clock.seconds() * 1000), 3600)
        self.join_refused(self.b, forged, "is for federation")
        self.assert_not_member(self.b)

    def test_an_invite_this_minter_never_stored(self):
        stray = Invite.mint(self.a.identity, self.a.roster.federation_id,
                            self.a.addresses["peer"], int(self.clock.seconds() * 1000), 3600)
        self.join_refused(self.b, stray, "did not mint")

    def test_a_connection_proving_another_key_than_the_row(self):
        self.b.tls_key = self.c.identity.public_key
        self.join_refused(self.b, self.mint(self.a), "not signed by the connecting bolt's key")
        self.assert_not_member(self.b)

    def test_a_removed_bolt_rejoining_with_its_old_identity(self):
        self.joined(self.b, self.a)
        self.successResultOf(self.a.membership.remove(self.b.id, force=True))
        reborn = self.bolt(4, identity=self.b.identity)  # a wiped database, the same key
        self.join_refused(reborn, self.mint(self.a), "was removed")
        self.assert_not_member(reborn)

    def test_a_member_that_lost_its_database(self):
        self.joined(self.b, self.a)
        wiped = self.bolt(4, identity=self.b.identity)
        self.join_refused(wiped, self.mint(self.a), "already a member")

    def test_a_bad_signature_on_the_invite(self):
        invite = self.mint(self.a)
        longer = attr.evolve(invite, expires_at_ms=invite.expires_at_ms + 86_400_000)
        self.join_refused(self.b, longer, "signature does not verify")
        self.successResultOf(self.join(self.b, invite))

    def test_a_minter_that_lost_its_database(self):
        invite = self.mint(self.a)
        self.bolt(1, identity=self.a.identity)  # listens where the minter did, with its key
        self.join_refused(self.b, invite, "not a member of any federation")

    def test_a_bolt_that_admits_no_one(self):
        self.a.join_handler = refuse_join
        self.join_refused(self.b, self.mint(self.a), "does not admit new bolts")

    def test_a_garbage_token_is_a_bad_request_and_dials_no_one(self):
        for token in ("garbage", "vgoj_garbage", "vgoj_e30", ""):
            self.refused(self.join(self.b, token), "bad_request")
        self.assertEqual(self.network.clients, [])
        self.assert_not_member(self.b)


class SnapshotCheckTests(MembershipCase):
    """The joiner takes only a snapshot its minter signed that admits it."""

    def setUp(self):
        super().setUp()
        self.a, self.b = self.founded(1), self.bolt(2)
        self.invite = self.mint(self.a)

    def answered(self, answer, *fragments):
        self.a.join_handler = lambda peer_key, token_text, row_data: answer
        self.refused(self.join(self.b, self.invite), "join_refused", *fragments)
        self.assertIsNone(self.b.roster.current)
        self.assertEqual(self.b.store.jobs, [])

    def test_an_answer_that_is_no_snapshot(self):
        self.answered({"roster": "yes"}, "snapshot is unusable")

    def test_a_snapshot_signed_by_another_bolt(self):
        self.answered(sign_snapshot(self.a.roster.current, self.b.identity, 1), "unusable")

    def test_a_snapshot_of_another_federation(self):
        x = self.founded(3)
        self.answered(sign_snapshot(x.roster.current, self.a.identity, 1), "unusable")

    def test_a_snapshot_that_does_not_admit_the_joiner(self):
        self.answered(sign_snapshot(self.a.roster.current, self.a.identity, 1),
                      "does not admit this bolt")

    def test_a_snapshot_admitting_another_bolt_with_this_invite(self):
        roster = self.a.roster.current.copy()
        impostor = Identity(b"\x07" * 32)
        roster.add_row(AdmissionRow.applicant(
            impostor, roster.federation_id, "bolt2", self.b.addresses, self.b.patterns,
            self.invite.token_id, self.a.id).countersign(self.a.identity))
        self.answered(sign_snapshot(roster, self.a.identity, 1), "does not admit this bolt")


# -- joins that cannot reach the minter --------------------------------------------------------


class JoinUnreachableTests(MembershipCase):
    def setUp(self):
        super().setUp()
        self.a, self.b = self.founded(1), self.bolt(2)
        self.invite = self.mint(self.a)
        self.peer = self.a.addresses["peer"]

    def unreachable(self, d, *fragments):
        refusal = self.refused(d, "unreachable", self.a.id, *fragments)
        self.assertTrue(refusal.retryable)
        self.assertIsNone(self.b.roster.current)
        self.assertEqual(self.b.store.jobs, [])
        self.assertTrue(self.network.clients[-1].stopped)
        return refusal

    def test_a_minter_that_is_down(self):
        self.network.down.add(self.peer)
        before = self.a.state()
        self.unreachable(self.join(self.b, self.invite), self.peer, "Connection refused",
                         "try again")
        self.assertEqual(self.a.state(), before)
        self.network.down.discard(self.peer)
        self.successResultOf(self.join(self.b, self.invite))  # nothing was spent

    def test_a_minter_that_never_completes_the_handshake(self):
        self.network.hanging.add(self.peer)
        d = self.join(self.b, self.invite)
        self.clock.advance(JOIN_TIMEOUT - 0.01)
        self.assertNoResult(d)
        self.clock.advance(0.01)
        self.unreachable(d, "cannot reach the minter")

    def test_another_key_at_the_minters_address(self):
        impostor = self.bolt(1, identity=Identity(b"\x08" * 32))
        self.successResultOf(impostor.membership.init())
        before = impostor.state()
        self.unreachable(self.join(self.b, self.invite), "fingerprint")
        self.assertEqual(impostor.state(), before)
        self.assertEqual(self.network.clients[-1].joins, [])

    def test_a_minter_that_never_answers(self):
        self.network.silent.add(self.peer)
        before = self.a.state()
        d = self.join(self.b, self.invite)
        self.clock.advance(JOIN_TIMEOUT - 0.01)
        self.assertNoResult(d)
        self.clock.advance(0.01)
        self.unreachable(d, "did not answer within 15 s")
        self.assertEqual(self.a.state(), before)

    def test_a_minter_that_hangs_up_before_the_join(self):
        self.network.gone.add(self.peer)
        self.unreachable(self.join(self.b, self.invite), "went away")

    def test_an_answer_lost_after_the_minter_admitted(self):
        self.network.mute.add(self.peer)
        d = self.join(self.b, self.invite)
        self.assertNoResult(d)
        self.clock.advance(JOIN_TIMEOUT)
        self.unreachable(d, "did not answer")
        # The minter did admit it: the join's outcome is unknown to the joiner.
        self.assertEqual(len(self.a.lost_answers), 1)
        self.assertIn(self.b.id, self.a.roster.bolt_ids())
        self.assertEqual(self.a.invite_row(self.invite.token_id)[0], self.b.id)

    def test_a_retry_after_a_lost_answer_joins(self):
        self.network.mute.add(self.peer)
        d = self.join(self.b, self.invite)
        self.clock.advance(JOIN_TIMEOUT)
        self.assertTrue(self.failureResultOf(d, Refusal).value.retryable)
        self.network.mute.clear()
        roster = self.successResultOf(self.join(self.b, self.invite))
        self.assertEqual(roster.digest(), self.a.roster.digest())


# -- remove ------------------------------------------------------------------------------------


class RemoveTests(MembershipCase):
    def setUp(self):
        super().setUp()
        self.a, self.b, self.c = self.federation()

    def remove(self, bolt_id, force=False):
        return self.a.membership.remove(bolt_id, force)

    def refused_unchanged(self, bolt_id, code, *fragments, force=False):
        before = self.a.state()
        refusal = self.refused(self.remove(bolt_id, force), code, *fragments)
        self.assertEqual(self.a.state(), before)
        self.assertFalse(self.a.roster.is_removed(bolt_id))
        return refusal

    def assert_removed(self, bolt_id):
        self.assertTrue(self.a.roster.is_removed(bolt_id))
        self.assertEqual(self.a.roster.status_of(bolt_id), "removed")
        record = self.a.roster.current.removal_of(bolt_id)
        self.assertEqual((record.bolt_id, record.removed_by, record.at_ms),
                         (bolt_id, self.a.id, int(self.clock.seconds() * 1000)))
        self.assertEqual(len(self.a.store.query(
            "SELECT record FROM roster_removals WHERE bolt_id = ?", bolt_id)), 1)

    def test_a_bolt_does_not_remove_itself(self):
        self.refused_unchanged(self.a.id, "self", "ask another bolt")
        self.refused_unchanged(self.a.id, "self", force=True)
        self.assertEqual(self.a.peers.calls, [])

    def test_a_bolt_that_is_not_drained(self):
        for state, remaining in (("running", 3), ("done", 1), ("idle", 0), ("failed", 0)):
            self.a.peers.answers[self.b.id] = drain_answer(self.b.id, state, remaining)
            refusal = self.refused_unchanged(self.b.id, "not_drained", "drain %s" % (state,),
                                             "%d active envoys" % (remaining,),
                                             "vigocli spanner bolt drain bolt2")
            self.refused_unchanged(self.b.id, "not_drained", force=True)
        self.assertIn("bolt2", refusal.reason)
        self.assertEqual(self.a.peers.calls[-1], (self.b.id, "drain-status", {}))

    def test_an_unreachable_bolt_needs_force(self):
        refusal = self.refused_unchanged(self.b.id, "unreachable", "--force",
                                         "envoys it holds stay unreached")
        self.assertIn(self.b.id, refusal.reason)

    def test_force_removes_an_unreachable_bolt(self):
        changes = []
        self.a.roster.on_change(lambda: changes.append(self.a.roster.digest()))
        answer = self.successResultOf(self.remove(self.b.id, force=True))
        self.assertEqual(answer, {"bolt_id": self.b.id, "name": "bolt2", "removed": True,
                                  "changed": True, "forced": True})
        self.assert_removed(self.b.id)
        self.assertEqual(changes, [self.a.roster.digest()])

    def test_a_bolt_that_never_answers(self):
        self.a.peers.answers[self.b.id] = DrainStatusPeers.SILENT
        d = self.remove(self.b.id)
        self.assertNoResult(d)
        self.clock.advance(CALL_TIMEOUT)
        self.refused(d, "unreachable", "did not answer", "--force")
        d = self.remove(self.b.id, force=True)
        self.clock.advance(CALL_TIMEOUT)
        self.assertTrue(self.successResultOf(d)["forced"])
        self.assert_removed(self.b.id)

    def test_force_does_not_override_other_refusals(self):
        for error, code in ((NotAMember("bolt %s is not a member here" % (self.a.id,)),
                             "action_failed"),
                            (ActionError("bolt is stopping", code="stopping"), "stopping")):
            self.a.peers.answers[self.b.id] = error
            refusal = self.refused_unchanged(self.b.id, code, force=True)
            self.assertNotIn("--force", refusal.reason)

    def test_a_drained_bolt_is_removed(self):
        self.a.peers.answers[self.b.id] = drain_answer(self.b.id, "done", 0)
        answer = self.successResultOf(self.remove(self.b.id))
        self.assertEqual(answer, {"bolt_id": self.b.id, "name": "bolt2", "removed": True,
                                  "changed": True, "forced": False})
        self.assert_removed(self.b.id)
        self.assertFalse(self.a.roster.is_removed(self.c.id))
        # Gossip spreads it: another bolt merging the roster holds the removal too.
        self.successResultOf(self.c.roster.merge(self.a.roster.current.parts()))
        self.assertTrue(self.c.roster.is_removed(self.b.id))

    def test_removing_twice_changes_nothing(self):
        self.a.peers.answers[self.b.id] = drain_answer(self.b.id, "done", 0)
        self.successResultOf(self.remove(self.b.id))
        before, calls = self.a.state(), list(self.a.peers.calls)
        jobs = len(self.a.store.jobs)
        for force in (False, True):
            answer = self.successResultOf(self.remove(self.b.id, force))
            self.assertEqual(answer, {"bolt_id": self.b.id, "name": "bolt2", "removed": True,
                                      "changed": False})
        self.assertEqual((self.a.state(), self.a.peers.calls, len(self.a.store.jobs)),
                         (before, calls, jobs))

    def test_not_member_before_the_bolt_is_in_a_federation(self):
        self.refused(self.bolt(4).membership.remove(self.b.id), "not_member")

    def test_an_unknown_bolt_is_refused(self):
        self.refused(self.remove("aaaaaaaaaaaaaaaaaaaa", force=True), "not_found")


class RemovePersistedTests(MembershipCase):
    def test_the_removal_is_on_disk_when_remove_answers(self):
        path = self.mktemp()
        a = self.founded(1, path=path)
        b = self.bolt(2)
        self.joined(b, a)
        a.store.shut()
        d = a.membership.remove(b.id, force=True)
        self.assertNoResult(d)
        self.assertFalse(a.roster.is_removed(b.id))
        a.store.open_gate()
        self.successResultOf(d)
        other = ImmediateStore(path)  # another connection to the same file
        self.addCleanup(other.close)
        reloaded = self.successResultOf(LocalRoster(other, a.identity, self.clock).load())
        self.assertTrue(reloaded.is_removed(b.id))
        self.assertEqual(reloaded.digest(), a.roster.digest())


class RemoveWithRealDrainStatusTests(unittest.SynchronousTestCase):
    """``remove`` asking the real ``drain-status`` action, run in-process at the
    bolt by ``tests.test_reassign``'s ``InProcessPeers``."""

    def setUp(self):
        self.fed = UnitFederation(("a", "b", "c"))
        a = self.fed["a"]
        self.membership = Membership(
            a.identity, a.roster, self.fed.clock, lambda: a.addresses, "a", a.patterns,
            a.peers, lambda address, fingerprint, bolt_id: self.fail("remove dials no one"),
            a.store)

    def test_only_a_drained_bolt_is_removed(self):
        c = self.fed["c"]
        self.fed.enroll("c", "web1.c.example.com")
        refusal = self.failureResultOf(self.membership.remove(c.id), Refusal).value
        self.assertEqual(refusal.code, "not_drained")
        self.assertIn("1 active envoys", refusal.reason)
        self.successResultOf(c.drainer.start(self.fed["b"].id))
        self.successResultOf(c.drainer.finished())
        answer = self.successResultOf(self.membership.remove(c.id))
        self.assertEqual((answer["changed"], answer["forced"]), (True, False))
        self.assertTrue(self.fed["a"].roster.is_removed(c.id))

    def test_a_bolt_that_is_down_is_removed_only_with_force(self):
        b = self.fed["b"]
        self.fed.down.add("b")
        refusal = self.failureResultOf(self.membership.remove(b.id), Refusal).value
        self.assertEqual(refusal.code, "unreachable")
        self.assertTrue(self.successResultOf(self.membership.remove(b.id, force=True))["forced"])
