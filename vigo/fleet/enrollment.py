"""Enrollment: minting tokens, and turning a token into an enrolled envoy.

A token is redeemed and the envoy stored in one transaction, so an envoy told
"registered" is on disk and the token's use is counted; a refusal changes
nothing.
"""

import hmac

from twisted.internet import defer

from vigo.fleet import wire
from vigo.fleet.index import ACTIVE, EnvoyRecord
from vigo.fleet.ownership import NoOwner
from vigo.fleet.refusal import Redirected, Refusal
from vigo.hostnames import HostnameError, normalise_hostname
from vigo.identity import key_id, verify_signature
from vigo.tokens import EnrollmentToken, TokenError

MAX_TOKEN_USES = 1_000_000
MAX_TOKEN_LIFETIME = 365 * 24 * 3600.0


def insert_token(cursor, token, uses, now, expires_at):
    cursor.execute(
        "INSERT INTO enrollment_tokens (id, secret_hash, uses, created_at, expires_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (token.token_id, token.secret_hash, uses, now, expires_at),
    )


def redeem_and_enroll(cursor, token_id, secret_hash, now, envoy_id, hostname, public_key):
    """Count one use of the token and store the envoy, or refuse and change nothing."""
    row = cursor.execute(
        "SELECT secret_hash, uses, used, expires_at FROM enrollment_tokens WHERE id = ?",
        (token_id,),
    ).fetchone()
    if row is None or not hmac.compare_digest(row[0], secret_hash):
        raise Refusal("bad_token", "this server did not mint that enrollment token")
    stored_hash, uses, used, expires_at = row
    if expires_at is not None and expires_at < now:
        raise Refusal("token_expired", "the enrollment token has expired; create a new one")
    if used >= uses:
        raise Refusal(
            "token_used", "the enrollment token was already used %d of %d times" % (used, uses)
        )
    existing = cursor.execute("SELECT state FROM envoys WHERE id = ?", (envoy_id,)).fetchone()
    if existing is not None:
        raise Refusal(
            existing[0] if existing[0] != ACTIVE else "already_enrolled",
            "envoy %s (this key) is %s; enroll with a new key"
            % (envoy_id, existing[0] if existing[0] != ACTIVE else "already enrolled"),
        )
    taken = cursor.execute(
        "SELECT id FROM envoys WHERE hostname = ? AND state = 'active'", (hostname,)
    ).fetchone()
    if taken is not None:
        raise Refusal(
            "hostname_taken",
            "%s is already enrolled as envoy %s; revoke it first "
            "(vigocli envoys revoke %s)" % (hostname, taken[0], taken[0]),
        )
    cursor.execute("UPDATE enrollment_tokens SET used = used + 1 WHERE id = ?", (token_id,))
    cursor.execute(
        "INSERT INTO envoys (id, hostname, public_key, state, enrolled_at, token_id, last_seen) "
        "VALUES (?, ?, ?, 'active', ?, ?, ?)",
        (envoy_id, hostname, public_key, now, token_id, now),
    )


class Enrollment:
    """Mints enrollment tokens and enrolls envoys that present them."""

    def __init__(self, fleet, store, identity, ownership, clock, envoy_address):
        self.fleet = fleet
        self.store = store
        self.identity = identity
        self.ownership = ownership
        self.clock = clock
        self.envoy_address = envoy_address

    def create_token(self, uses=1, expires_in=None):
        """A new token (a Deferred of ``EnrollmentToken``), durable when it fires."""
        if isinstance(uses, bool) or not isinstance(uses, int) or not 1 <= uses <= MAX_TOKEN_USES:
            raise ValueError("uses must be a whole number from 1 to %d" % (MAX_TOKEN_USES,))
        if expires_in is not None and not 0 < expires_in <= MAX_TOKEN_LIFETIME:
            raise ValueError("expires_in must be more than 0 and at most 365 days")
        now = self.clock.seconds()
        token = EnrollmentToken.mint(
            self.identity.id, str(self.envoy_address), self.identity.fingerprint
        )
        expires_at = None if expires_in is None else now + expires_in
        d = self.store.run(insert_token, token, uses, now, expires_at)
        return d.addCallback(lambda _: token)

    def register(self, hostname, public_key, token_text, timestamp_ms, signature):
        """Enroll an envoy; a Deferred of the Registered fields.

        Raises (or fails with) ``Refusal``, or ``Redirected`` when another
        server owns the hostname.
        """
        sent_hostname = hostname
        try:
            hostname = normalise_hostname(hostname)
            token = EnrollmentToken.decode(token_text)
        except (HostnameError, TokenError) as e:
            raise Refusal("bad_request", str(e)) from None
        if len(public_key) != 32:
            raise Refusal("bad_request", "the public key must be 32 bytes (Ed25519)")
        now = self.clock.seconds()
        if abs(timestamp_ms / 1000.0 - now) > 300:
            raise Refusal("stale", "the timestamp is off by more than 300 s; fix the clock")
        message = wire.register_message(sent_hostname, public_key, token.token_id, timestamp_ms)
        if not verify_signature(public_key, message, signature):
            raise Refusal("bad_signature", "the register signature does not verify")
        try:
            owner = self.ownership.owner_of(hostname)
        except NoOwner as e:
            raise Refusal("no_owner", str(e)) from None
        if not owner.local:
            raise Redirected(owner.address, owner.server_id, owner.fingerprint,
                             "%s belongs to server %s" % (hostname, owner.server_id))
        if token.server_id != self.identity.id:
            raise Refusal("foreign_token",
                          "the token was minted by server %s, but %s belongs to this server "
                          "(%s): enroll it with a token from this server"
                          % (token.server_id, hostname, self.identity.id))
        envoy_id = key_id(public_key)
        existing = self.fleet.index.get(envoy_id)
        if existing is not None and existing.state == ACTIVE and existing.hostname == hostname:
            return defer.succeed(self._registered(existing))

        def enrolled(_):
            record = EnvoyRecord(envoy_id, hostname, public_key, None,
                                 enrolled_at=now, last_seen=now)
            self.fleet.add(record)
            return self._registered(record)

        d = self.store.run(redeem_and_enroll, token.token_id, token.secret_hash, now,
                           envoy_id, hostname, public_key)
        return d.addCallback(enrolled)

    def _registered(self, record):
        return {
            "envoy_id": record.id,
            "hostname": record.hostname,
            "server_id": self.identity.id,
            "public_key": wire.b64(self.identity.public_key),
            "fingerprint": self.identity.fingerprint,
            "address": str(self.envoy_address),
            "interval": self.fleet.interval,
        }

