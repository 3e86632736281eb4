"""Enrollment tokens: the ones this server mints, and counting their uses.

A token (``vigo.tokens.EnrollmentToken``) is shown once, when it is minted;
only the hash of its secret is kept, in the ``enrollment_tokens`` table, with
how many uses it allows and has had, its expiry and whether an operator
withdrew it. A use is counted in the same transaction as what it pays for
(``check_token`` inside ``vigo.fleet.enrollment``'s enrollment job), or on its
own for an enrollment another bolt does (``redeem``). Tokens are redeemed only
by the server that minted them.
"""

import hmac

from vigo.interfaces.errors import Refusal
from vigo.tokens import EnrollmentToken, TokenError

MAX_TOKEN_USES = 1_000_000
MAX_TOKEN_LIFETIME = 365 * 24 * 3600.0


def list_tokens(cursor, now):
    """Every enrollment token this server minted (never the secret), newest
    first, each ``usable``, ``used``, ``expired`` or ``withdrawn``."""
    tokens = []
    for token_id, uses, used, created, expires, withdrawn in cursor.execute(
            "SELECT id, uses, used, created_at, expires_at, withdrawn_at "
            "FROM enrollment_tokens ORDER BY created_at DESC, id"):
        state = ("withdrawn" if withdrawn is not None else
                 "expired" if expires is not None and expires < now else
                 "used" if used >= uses else "usable")
        tokens.append({"token_id": token_id, "state": state, "uses": uses, "used": used,
                       "created_at": created, "expires_at": expires,
                       "withdrawn_at": withdrawn})
    return tokens


def withdraw_token(cursor, token_id, now):
    """Refuse a token from now on; True if it was not withdrawn before.
    Refusal ``not_found`` for a token this server did not mint."""
    row = cursor.execute("SELECT withdrawn_at FROM enrollment_tokens WHERE id = ?",
                         (token_id,)).fetchone()
    if row is None:
        raise Refusal("not_found", "this server minted no enrollment token %r (tokens are "
                      "kept by the server that minted them)" % (token_id,))
    if row[0] is not None:
        return False
    cursor.execute("UPDATE enrollment_tokens SET withdrawn_at = ? WHERE id = ?",
                   (now, token_id))
    return True


def insert_token(cursor, token, uses, now, expires_at):
    cursor.execute(
        "INSERT INTO enrollment_tokens (id, secret_hash, uses, created_at, expires_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (token.token_id, token.secret_hash, uses, now, expires_at),
    )


def redeem_token(cursor, token_id, secret_hash, now):
    """Count one use of a token this server minted, or refuse and change nothing."""
    check_token(cursor, token_id, secret_hash, now)
    cursor.execute("UPDATE enrollment_tokens SET used = used + 1 WHERE id = ?", (token_id,))


def check_token(cursor, token_id, secret_hash, now):
    row = cursor.execute(
        "SELECT secret_hash, uses, used, expires_at, withdrawn_at FROM enrollment_tokens "
        "WHERE id = ?", (token_id,),
    ).fetchone()
    if row is None or not hmac.compare_digest(row[0], secret_hash):
        raise Refusal("bad_token", "this server did not mint that enrollment token")
    stored_hash, uses, used, expires_at, withdrawn_at = row
    if withdrawn_at is not None:
        raise Refusal("token_withdrawn", "the enrollment token was withdrawn; create a new one")
    if expires_at is not None and expires_at < now:
        raise Refusal("token_expired", "the enrollment token has expired; create a new one")
    if used >= uses:
        raise Refusal(
            "token_used", "the enrollment token was already used %d of %d times" % (used, uses)
        )




class EnrollmentTokens:
    """The enrollment tokens of one server: mint, list, withdraw, redeem.

    ``store`` is its ``IStore``, ``identity`` its ``Identity``, ``clock`` an
    ``IReactorTime``, ``envoy_address()`` where envoys reach it now (a token
    carries it, so a new envoy knows where to go).
    """

    def __init__(self, store, identity, clock, envoy_address):
        self._store = store
        self._identity = identity
        self._clock = clock
        self._envoy_address = envoy_address

    def create(self, uses=1, expires_in=None):
        """A new token (a Deferred of ``EnrollmentToken``), durable when it fires.
        ``ValueError`` for a bad ``uses`` or ``expires_in``."""
        if isinstance(uses, bool) or not isinstance(uses, int) or not 1 <= uses <= MAX_TOKEN_USES:
            raise ValueError("uses must be a whole number from 1 to %d" % (MAX_TOKEN_USES,))
        if expires_in is not None and not 0 < expires_in <= MAX_TOKEN_LIFETIME:
            raise ValueError("expires_in must be more than 0 and at most 365 days")
        now = self._clock.seconds()
        token = EnrollmentToken.mint(
            self._identity.id, str(self._envoy_address()), self._identity.fingerprint)
        expires_at = None if expires_in is None else now + expires_in
        d = self._store.run(insert_token, token, uses, now, expires_at)
        return d.addCallback(lambda _: token)

    def list(self):
        """A Deferred of every token this server minted (``list_tokens``)."""
        return self._store.run(list_tokens, self._clock.seconds())

    def withdraw(self, token_id):
        """Refuse token ``token_id`` from now on, durably; a Deferred of
        ``{"token_id", "withdrawn": True, "changed"}``. Fails with Refusal."""
        d = self._store.run(withdraw_token, token_id, self._clock.seconds())
        return d.addCallback(lambda changed: {"token_id": token_id, "withdrawn": True,
                                              "changed": changed})

    def redeem(self, token_text):
        """Count one use of a token this server minted (for an enrollment another
        bolt does); a Deferred that fails with ``Refusal`` when it cannot."""
        try:
            token = EnrollmentToken.decode(token_text)
        except TokenError as e:
            raise Refusal("bad_request", str(e)) from None
        if token.server_id != self._identity.id:
            raise Refusal("bad_token", "this server did not mint that enrollment token")
        return self._store.run(redeem_token, token.token_id, token.secret_hash,
                               self._clock.seconds())
