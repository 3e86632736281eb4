"""Invites: signed by their minter, decoded strictly, redeemed once."""

import attr
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor
from twisted.trial import unittest

from vigo.identity import Identity
from vigo.spanner.invites import Invite, InviteError, insert_invite, redeem_invite
from vigo.store import Store

MINTER = Identity.generate()
NOW_MS = 1_795_750_000_000


def mint(lifetime=3600):
    return Invite.mint(MINTER, "fed-1", "127.0.0.1:1533", NOW_MS, lifetime)


class InviteCodecTests(unittest.SynchronousTestCase):
    def test_round_trip_and_signature(self):
        invite = mint()
        decoded = Invite.decode(invite.encode())
        self.assertEqual(decoded, invite)
        self.assertTrue(decoded.verify(MINTER.public_key))
        self.assertFalse(decoded.verify(Identity.generate().public_key))
        self.assertTrue(invite.encode().startswith("vgoj_"))

    def test_tampered_fields_fail_the_signature(self):
        invite = mint()
        for change in ({"address": "10.0.0.1:1533"}, {"expires_at_ms": invite.expires_at_ms + 1},
                       {"federation_id": "fed-2"}, {"minter_id": Identity.generate().id}):
            forged = Invite.decode(attr.evolve(invite, **change).encode())
            self.assertFalse(forged.verify(MINTER.public_key), change)

    def test_lifetime_bounds(self):
        for lifetime in (0, -1, 24 * 3600 + 1):
            self.assertRaises(InviteError, mint, lifetime)
        self.assertTrue(mint(60).expired(NOW_MS + 60_000))
        self.assertFalse(mint(60).expired(NOW_MS + 59_999))

    def test_bad_invites(self):
        for text in ["", "vgoe_abc", "vgoj_", "vgoj_!!!", "vgoj_e30", "x" * 5000, None, 3]:
            self.assertRaises(InviteError, Invite.decode, text)

    @given(st.text(max_size=400))
    @settings(max_examples=300, deadline=None)
    def test_fuzz_decode_only_invite_error(self, text):
        try:
            Invite.decode("vgoj_" + text)
        except InviteError:
            pass

    @given(st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=255))
    @settings(max_examples=300, deadline=None)
    def test_fuzz_damaged_invite(self, position, value):
        text = bytearray(mint().encode().encode("ascii"))
        position = 5 + position % (len(text) - 5)
        text[position] = value
        try:
            decoded = Invite.decode(text.decode("latin-1"))
        except InviteError:
            return
        # Whatever still decodes is a well-typed invite; verifying it never raises.
        self.assertIsInstance(decoded.verify(MINTER.public_key), bool)


class RedeemTests(unittest.TestCase):
    def setUp(self):
        self.store = Store(self.mktemp(), reactor)
        self.store.open()
        self.addCleanup(self.store.close)

    @defer.inlineCallbacks
    def test_redeemed_once(self):
        invite = mint()
        yield self.store.run(insert_invite, invite, NOW_MS)
        yield self.store.run(redeem_invite, invite, "bolt-b", NOW_MS + 1)
        error = yield self.assertFailure(
            self.store.run(redeem_invite, invite, "bolt-c", NOW_MS + 2), InviteError)
        self.assertIn("already used (by bolt bolt-b)", str(error))

    @defer.inlineCallbacks
    def test_concurrent_redemptions_one_wins(self):
        invite = mint()
        yield self.store.run(insert_invite, invite, NOW_MS)
        results = yield defer.DeferredList(
            [self.store.run(redeem_invite, invite, "bolt-%d" % i, NOW_MS + 1) for i in range(8)],
            consumeErrors=True)
        self.assertEqual(sum(ok for ok, _ in results), 1)

    @defer.inlineCallbacks
    def test_expired_wrong_secret_unknown(self):
        invite = mint(60)
        yield self.store.run(insert_invite, invite, NOW_MS)
        error = yield self.assertFailure(
            self.store.run(redeem_invite, invite, "b", NOW_MS + 60_000), InviteError)
        self.assertIn("expired", str(error))
        wrong = attr.evolve(invite, secret="not-the-secret")
        error = yield self.assertFailure(
            self.store.run(redeem_invite, wrong, "b", NOW_MS), InviteError)
        self.assertIn("did not mint", str(error))
        error = yield self.assertFailure(
            self.store.run(redeem_invite, mint(), "b", NOW_MS), InviteError)
        self.assertIn("did not mint", str(error))
        rows = yield self.store.run(
            lambda c: c.execute("SELECT consumed_by FROM spanner_invites").fetchall())
        self.assertEqual(rows, [(None,)])
