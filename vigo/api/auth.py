"""Admin API tokens: who may use ``/api/v1``.

Tokens (``vgot_...``) are 256-bit random secrets stored only as SHA-256
hashes, in the ``api_tokens`` table and, for checking, in memory. On the
server host a local admin token lives in ``<data_dir>/admin-token`` (mode
0600) so ``vigocli --data-dir`` works with nothing to paste; its hash is on
disk before the file is written, so the file never names a token the server
would refuse.
"""

import base64
import binascii
import os

from twisted.internet import defer
from twisted.logger import Logger

from vigo.identity import write_private_file
from vigo.interfaces.errors import Refusal
from vigo.tokens import API_PREFIX, MAX_TOKEN_LENGTH, hash_secret, new_api_token

ADMIN_TOKEN_FILE = "admin-token"
LOCAL_ADMIN = "local-admin"
MAX_NAME_LENGTH = 100
_BEARER = b"bearer"


def load_hashes(cursor):
    return [row[0] for row in cursor.execute("SELECT secret_hash FROM api_tokens")]


def insert_api_token(cursor, token_id, secret_hash, name, now):
    cursor.execute(
        "INSERT INTO api_tokens (id, secret_hash, name, created_at) VALUES (?, ?, ?, ?)",
        (token_id, secret_hash, name, now),
    )


def list_api_tokens(cursor):
    return [{"token_id": token_id, "name": name, "created_at": created}
            for token_id, name, created in cursor.execute(
                "SELECT id, name, created_at FROM api_tokens ORDER BY created_at, id")]


def delete_api_token(cursor, token_id):
    """Forget an API token; its secret's hash. Refusal ``not_found``, or
    ``local_admin`` for the token the server keeps in its data directory."""
    row = cursor.execute("SELECT secret_hash, name FROM api_tokens WHERE id = ?",
                         (token_id,)).fetchone()
    if row is None:
        raise Refusal("not_found", "no API token %r on this server" % (token_id,))
    if row[1] == LOCAL_ADMIN:
        raise Refusal("local_admin", "the local admin token cannot be withdrawn: delete "
                      "<data_dir>/%s and restart the server to replace it" % (ADMIN_TOKEN_FILE,))
    cursor.execute("DELETE FROM api_tokens WHERE id = ?", (token_id,))
    return bytes(row[0])


def replace_local_admin(cursor, token_id, secret_hash, now):
    """Store a new local admin token, retiring the one whose file was lost."""
    cursor.execute("DELETE FROM api_tokens WHERE name = ?", (LOCAL_ADMIN,))
    insert_api_token(cursor, token_id, secret_hash, LOCAL_ADMIN, now)


def bearer_token(authorization):
    """The token of an ``Authorization: Bearer <token>`` header value, or None."""
    if isinstance(authorization, str):
        authorization = authorization.encode("utf-8", "replace")
    if not authorization or len(authorization) > MAX_TOKEN_LENGTH:
        return None
    scheme, _, token = authorization.strip().partition(b" ")
    token = token.strip()
    if scheme.lower() != _BEARER or not token:
        return None
    return token


def basic_password(authorization):
    """The password of an ``Authorization: Basic <base64 user:password>``
    header value (how a browser sends a token it asked for), or None."""
    if isinstance(authorization, str):
        authorization = authorization.encode("utf-8", "replace")
    if not authorization or len(authorization) > 2 * MAX_TOKEN_LENGTH:
        return None
    scheme, _, encoded = authorization.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    _, colon, password = decoded.partition(b":")
    password = password.strip()
    return password if colon and password else None


class ApiTokens:
    """The set of admin API tokens this server accepts.

    ``store`` is an ``IStore``; ``clock`` an ``IReactorTime`` (for
    ``created_at``).
    """

    log = Logger()

    def __init__(self, store, clock):
        self.store = store
        self.clock = clock
        self._hashes = set()

    def __len__(self):
        return len(self._hashes)

    @defer.inlineCallbacks
    def load(self, data_dir):
        """Load the stored hashes and make sure the local admin token exists.

        A Deferred that fires with the path of the admin token file.
        """
        hashes = yield self.store.run(load_hashes)
        self._hashes = set(hashes)
        path = os.path.join(data_dir, ADMIN_TOKEN_FILE)
        existing = _read_token(path)
        if existing is not None and hash_secret(existing) in self._hashes:
            return path
        token_id, text = new_api_token()
        secret_hash = hash_secret(text)
        yield self.store.run(replace_local_admin, token_id, secret_hash, self.clock.seconds())
        self._hashes = set((yield self.store.run(load_hashes)))
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        write_private_file(path, (text + "\n").encode("ascii"))
        self.log.info("wrote a new local admin API token to {path}", path=path)
        return path

    def check(self, authorization):
        """True when ``authorization`` (a header value, bytes or None) holds a
        token this server accepts."""
        return self._accepts(bearer_token(authorization))

    def check_browser(self, authorization):
        """As ``check``, or HTTP Basic credentials whose password is a token
        (the web page's way: a browser asks for it)."""
        return self.check(authorization) or self._accepts(basic_password(authorization))

    def _accepts(self, token):
        if token is None:
            return False
        # The hash of a 256-bit random secret gives a timing observer nothing
        # to walk towards, so a set lookup is as good as a constant-time scan.
        return hash_secret(token) in self._hashes

    def create(self, name):
        """Mint a token named ``name``; a Deferred of its text, durable when it fires."""
        return self.mint(name).addCallback(lambda minted: minted["token"])

    def mint(self, name):
        """Mint a token named ``name``; a Deferred of ``{"token", "token_id",
        "name", "created_at"}``, durable when it fires. ``ValueError`` for a bad name."""
        if not isinstance(name, str) or not 1 <= len(name.strip()) <= MAX_NAME_LENGTH \
                or not name.isprintable():
            raise ValueError(f"name must be 1 to {MAX_NAME_LENGTH} printable characters")
        if name.strip().lower() == LOCAL_ADMIN:
            raise ValueError(f"{LOCAL_ADMIN!r} is the server's own token's name: pick another")
        token_id, text = new_api_token()
        secret_hash = hash_secret(text)
        now = self.clock.seconds()

        def stored(_):
            self._hashes.add(secret_hash)
            return {"token": text, "token_id": token_id, "name": name.strip(), "created_at": now}

        d = self.store.run(insert_api_token, token_id, secret_hash, name.strip(), now)
        return d.addCallback(stored)

    def tokens(self):
        """A Deferred of every API token's id, name and creation time (never a secret)."""
        return self.store.run(list_api_tokens)

    def withdraw(self, token_id):
        """Refuse token ``token_id`` from now on (durably first); a Deferred of
        ``{"token_id", "withdrawn": True}``. Fails with ``Refusal``."""

        def forgotten(secret_hash):
            self._hashes.discard(secret_hash)
            return {"token_id": token_id, "withdrawn": True}

        return self.store.run(delete_api_token, token_id).addCallback(forgotten)


def _read_token(path):
    """The token text in ``path``, or None if it is missing or not a token."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TOKEN_LENGTH + 1)
    except FileNotFoundError:
        return None
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    if not text.startswith(API_PREFIX) or len(text) > MAX_TOKEN_LENGTH:
        return None
    return text
