"""Join tokens ("invites"): one-shot, signed by the bolt that mints them.

An invite carries everything a joining server needs to reach and trust its
minter before it says anything: the federation id, the minter's id, peer
address and key fingerprint, the expiry, and the minter's signature over all
of that. The secret travels only inside the token and is kept by the minter
as a SHA-256 hash; only the minter can redeem it (one decider), and once
redeemed its id joins the roster's ``consumed_tokens`` G-Set, so every bolt
refuses a replay.

``Invites`` mints them at a bolt; ``vigo.spanner.membership`` redeems them.
"""

import base64
import binascii
import hmac
import json
import os

import attr
from twisted.internet import defer

from vigo.identity import verify_signature
from vigo.interfaces.errors import Refusal
from vigo.spanner.canonical import SpannerError, b64, canonical, unb64
from vigo.tokens import hash_secret

PREFIX = "vgoj_"
CONTEXT = b"vigo-spanner-invite-v1\x00"
MAX_TOKEN_LENGTH = 4096
DEFAULT_LIFETIME = 3600.0
MAX_LIFETIME = 24 * 3600.0


class InviteError(SpannerError):
    """An invite that cannot be used; the message says why."""

    def __init__(self, message, reason="invite"):
        SpannerError.__init__(self, reason, message)


def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@attr.s(frozen=True, slots=True)
class Invite:
    """A join token as handed to the operator of the joining server."""

    federation_id = attr.ib()
    token_id = attr.ib()
    secret = attr.ib(repr=False)
    minter_id = attr.ib()
    address = attr.ib()  # the minter's peer address, "host:port"
    fingerprint = attr.ib()  # of the minter's identity key
    expires_at_ms = attr.ib()
    signature = attr.ib(default=b"", repr=False)

    @classmethod
    def mint(cls, identity, federation_id, address, now_ms, lifetime):
        """A new invite signed by ``identity``, valid for ``lifetime`` seconds."""
        if not 0 < lifetime <= MAX_LIFETIME:
            raise InviteError("an invite lives more than 0 s and at most 24 h")
        invite = cls(federation_id, _b64url(os.urandom(12)), _b64url(os.urandom(32)),
                     identity.id, str(address), identity.fingerprint,
                     int(now_ms + lifetime * 1000))
        return attr.evolve(invite, signature=identity.sign(invite.message()))

    def message(self):
        return CONTEXT + canonical({
            "federation_id": self.federation_id, "token_id": self.token_id,
            "minter_id": self.minter_id, "address": self.address,
            "fingerprint": self.fingerprint, "expires_at_ms": self.expires_at_ms})

    @property
    def secret_hash(self):
        return hash_secret(self.secret)

    def matches(self, stored_hash):
        return hmac.compare_digest(self.secret_hash, stored_hash)

    def encode(self):
        return PREFIX + _b64url(canonical({
            "v": 1, "fid": self.federation_id, "tid": self.token_id, "sec": self.secret,
            "mid": self.minter_id, "addr": self.address, "fp": self.fingerprint,
            "exp": self.expires_at_ms, "sig": b64(self.signature)}))

    __str__ = encode

    @classmethod
    def decode(cls, text):
        """Parse an invite; ``InviteError`` says what is wrong. The signature is
        checked separately (``verify``), once the minter's key is known."""
        if not isinstance(text, str):
            raise InviteError("the invite must be a string")
        text = text.strip()
        if len(text) > MAX_TOKEN_LENGTH:
            raise InviteError("the invite is too long")
        if not text.startswith(PREFIX):
            raise InviteError("not a spanner invite (they start with %r)" % (PREFIX,))
        body = text[len(PREFIX):]
        try:
            data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
            raise InviteError("the invite is damaged (not base64url JSON)") from None
        if not isinstance(data, dict) or data.get("v") != 1:
            raise InviteError("unsupported invite version")
        fields = {}
        for key in ("fid", "tid", "sec", "mid", "addr", "fp"):
            value = data.get(key)
            if not isinstance(value, str) or not value or len(value) > 256:
                raise InviteError("the invite is damaged (field %r)" % (key,))
            fields[key] = value
        expires = data.get("exp")
        if isinstance(expires, bool) or not isinstance(expires, int) or expires < 0:
            raise InviteError("the invite is damaged (field 'exp')")
        try:
            signature = unb64(data.get("sig"), "sig", 64)
        except SpannerError:
            raise InviteError("the invite is damaged (field 'sig')") from None
        return cls(fields["fid"], fields["tid"], fields["sec"], fields["mid"], fields["addr"],
                   fields["fp"], expires, signature)

    def verify(self, public_key):
        """True when the minter holding ``public_key`` signed this invite."""
        return verify_signature(public_key, self.message(), self.signature)

    def expired(self, now_ms):
        return now_ms >= self.expires_at_ms


# -- the minter's own record of what it minted (serialised in its database) ----


def insert_invite(cursor, invite, now_ms):
    cursor.execute(
        "INSERT INTO spanner_invites (id, secret_hash, expires_at_ms, created_at_ms) "
        "VALUES (?, ?, ?, ?)",
        (invite.token_id, invite.secret_hash, invite.expires_at_ms, now_ms))


def redeem_invite(cursor, invite, bolt_id, now_ms):
    """Mark the invite used by ``bolt_id``, or raise InviteError and change nothing."""
    row = cursor.execute(
        "SELECT secret_hash, expires_at_ms, consumed_by FROM spanner_invites WHERE id = ?",
        (invite.token_id,)).fetchone()
    if row is None or not invite.matches(row[0]):
        raise InviteError("this bolt did not mint that invite")
    if row[2] is not None:
        raise InviteError("the invite was already used (by bolt %s)" % (row[2],))
    if now_ms >= row[1]:
        raise InviteError("the invite has expired; mint a new one with "
                          "'vigocli spanner bolt invite'")
    cursor.execute(
        "UPDATE spanner_invites SET consumed_by = ?, consumed_at_ms = ? WHERE id = ?",
        (bolt_id, now_ms, invite.token_id))


def redeemed_by(cursor, invite):
    """The bolt that redeemed ``invite`` (its secret checked), or None."""
    row = cursor.execute("SELECT secret_hash, consumed_by FROM spanner_invites WHERE id = ?",
                         (invite.token_id,)).fetchone()
    return row[1] if row is not None and invite.matches(row[0]) else None


class Invites:
    """Minting invites at one bolt: ``identity`` signs them, ``roster`` (its
    ``ILocalRoster``) names the federation, ``store`` (an ``IStore``) keeps
    them, ``clock`` dates them, ``peer_address()`` is where joiners reach it."""

    def __init__(self, identity, roster, store, clock, peer_address):
        self._identity = identity
        self._roster = roster
        self._store = store
        self._clock = clock
        self._peer_address = peer_address

    @defer.inlineCallbacks
    def mint(self, lifetime=DEFAULT_LIFETIME):
        """A one-shot invite, durable before it is shown: a Deferred of the
        ``Invite``. Refuses (``not_member``, ``bad_request``)."""
        roster = self._roster.require_member()
        now_ms = int(self._clock.seconds() * 1000)
        try:
            invite = Invite.mint(self._identity, roster.federation_id, self._peer_address(),
                                 now_ms, lifetime)
        except InviteError as e:
            raise Refusal("bad_request", str(e)) from None
        yield self._store.run(insert_invite, invite, now_ms)
        return invite
