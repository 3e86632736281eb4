"""Enrollment: tokens are counted, expire, and a refusal stores nothing."""

import sqlite3

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.trial import unittest

from tests.fleetkit import EnvoyKey, FleetKit
from vigo.interfaces.errors import Refusal
from vigo.tokens import EnrollmentToken, TokenError


class EnrollmentTests(unittest.TestCase):
    def setUp(self):
        self.kit = FleetKit(self)

    def rows(self, sql):
        return sqlite3.connect(self.kit.store.path).execute(sql).fetchall()

    async def refused(self, code, key, token, ts=None, **change):
        fields = list(key.register_fields(token, ts or self.kit.now_ms()))
        for index, value in change.items():
            fields[int(index[1:])] = value
        try:
            await self.kit.enrollment.register(*fields)
        except Refusal as refusal:
            self.assertEqual(refusal.code, code, refusal.reason)
            return refusal
        self.fail("registration was not refused with %s" % (code,))

    @defer.inlineCallbacks
    def test_register_stores_envoy_and_counts_use(self):
        key = EnvoyKey()
        token = yield self.kit.tokens.create(uses=2)
        registered = yield self.kit.enrollment.register(*key.register_fields(token, self.kit.now_ms()))
        self.assertEqual(registered["envoy_id"], key.id)
        self.assertEqual(registered["fingerprint"], self.kit.identity.fingerprint)
        self.assertEqual(self.rows("SELECT used FROM enrollment_tokens"), [(1,)])
        self.assertEqual(self.rows("SELECT hostname FROM envoys"), [(key.hostname,)])

    @defer.inlineCallbacks
    def test_reregister_same_key_is_idempotent(self):
        key = EnvoyKey()
        token = yield self.kit.tokens.create(uses=1)
        first = yield self.kit.enrollment.register(*key.register_fields(token, self.kit.now_ms()))
        again = yield self.kit.enrollment.register(*key.register_fields(token, self.kit.now_ms()))
        self.assertEqual(first, again)
        self.assertEqual(self.rows("SELECT used FROM enrollment_tokens"), [(1,)])

    @defer.inlineCallbacks
    def test_one_time_token_used_once(self):
        token = yield self.kit.tokens.create()
        yield self.kit.enrollment.register(*EnvoyKey("a.example.com").register_fields(token, self.kit.now_ms()))
        yield defer.ensureDeferred(self.refused("token_used", EnvoyKey("b.example.com"), token))
        self.assertEqual(len(self.rows("SELECT id FROM envoys")), 1)

    @defer.inlineCallbacks
    def test_expired_token(self):
        token = yield self.kit.tokens.create(expires_in=60)
        self.kit.clock.advance(61)
        yield defer.ensureDeferred(self.refused("token_expired", EnvoyKey(), token))
        self.assertEqual(self.rows("SELECT used FROM enrollment_tokens"), [(0,)])

    @defer.inlineCallbacks
    def test_wrong_secret_and_unknown_token(self):
        token = yield self.kit.tokens.create()
        wrong = EnrollmentToken(token.token_id, "x" * 43, token.server_id, token.address, token.fingerprint)
        yield defer.ensureDeferred(self.refused("bad_token", EnvoyKey(), wrong))
        unknown = EnrollmentToken("nope", token.secret, token.server_id, token.address, token.fingerprint)
        yield defer.ensureDeferred(self.refused("bad_token", EnvoyKey(), unknown))
        self.assertEqual(self.rows("SELECT COUNT(*) FROM envoys"), [(0,)])

    @defer.inlineCallbacks
    def test_foreign_token(self):
        token = yield self.kit.tokens.create()
        foreign = EnrollmentToken(token.token_id, token.secret, "someoneelse", token.address, token.fingerprint)
        yield defer.ensureDeferred(self.refused("foreign_token", EnvoyKey(), foreign))

    @defer.inlineCallbacks
    def test_bad_signature_stale_and_bad_hostname(self):
        token = yield self.kit.tokens.create()
        key = EnvoyKey()
        yield defer.ensureDeferred(self.refused("bad_signature", key, token, f4=b"\x01" * 64))
        yield defer.ensureDeferred(self.refused("stale", key, token, ts=self.kit.now_ms() - 400_000))
        yield defer.ensureDeferred(self.refused("bad_request", key, token, f0="bad host!"))
        yield defer.ensureDeferred(self.refused("bad_request", key, token, f1=b"short"))
        yield defer.ensureDeferred(self.refused("bad_request", key, token, f2="vgoe_garbage"))
        self.assertEqual(self.rows("SELECT used FROM enrollment_tokens"), [(0,)])

    @defer.inlineCallbacks
    def test_hostname_taken_then_free_after_revoke(self):
        token = yield self.kit.tokens.create(uses=3)
        first = EnvoyKey("web1.dc1.example.com")
        yield self.kit.enrollment.register(*first.register_fields(token, self.kit.now_ms()))
        refusal = yield defer.ensureDeferred(self.refused("hostname_taken", EnvoyKey("WEB1.dc1.example.com."), token))
        self.assertIn("vigocli envoys revoke", refusal.reason)
        yield self.kit.fleet.revoke(first.id)
        yield defer.ensureDeferred(self.refused("revoked", first, token))
        yield self.kit.enrollment.register(*EnvoyKey("web1.dc1.example.com").register_fields(token, self.kit.now_ms()))
        self.assertEqual(self.rows("SELECT state, COUNT(*) FROM envoys GROUP BY state ORDER BY state"),
                         [("active", 1), ("revoked", 1)])

    @defer.inlineCallbacks
    def test_concurrent_redemptions_of_one_time_token(self):
        token = yield self.kit.tokens.create()
        results = yield defer.DeferredList(
            [defer.maybeDeferred(self.kit.enrollment.register,
                                 *EnvoyKey("h%d.example.com" % i).register_fields(token, self.kit.now_ms()))
             for i in range(10)], consumeErrors=True)
        self.assertEqual(sum(ok for ok, _ in results), 1)
        self.assertEqual(self.rows("SELECT used FROM enrollment_tokens"), [(1,)])

    def test_create_token_arguments_checked(self):
        for kwargs in [{"uses": 0}, {"uses": True}, {"uses": "3"}, {"expires_in": 0},
                       {"expires_in": 400 * 86400}]:
            self.assertRaises(ValueError, self.kit.tokens.create, **kwargs)


class TokenCodecTests(unittest.SynchronousTestCase):
    def test_round_trip(self):
        token = EnrollmentToken.mint("sid", "127.0.0.1:1530", "fp")
        self.assertEqual(EnrollmentToken.decode(token.encode()), token)
        self.assertTrue(token.encode().startswith("vgoe_"))

    def test_bad_tokens(self):
        for text in ["", "vgot_abc", "vgoe_", "vgoe_!!!", "vgoe_e30", "x" * 5000, None, 7]:
            self.assertRaises(TokenError, EnrollmentToken.decode, text)

    @given(st.text(max_size=300))
    @settings(max_examples=200, deadline=None)
    def test_fuzz_decode_only_token_error(self, text):
        try:
            EnrollmentToken.decode("vgoe_" + text)
        except TokenError:
            pass


class TokenIdTests(unittest.SynchronousTestCase):
    def test_an_id_never_starts_with_a_dash(self):
        """Operators type ids on command lines (``vigocli token withdraw ID``),
        where ``-x...`` would be read as an option."""
        from vigo import tokens

        draws = iter([b"\xf8" * 9, b"\x00" * 9])  # the first encodes as "-..."
        self.patch(tokens.os, "urandom", lambda n: next(draws))
        self.assertEqual(tokens.new_id(), "AAAAAAAAAAAA")
