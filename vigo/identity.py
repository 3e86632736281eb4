"""The server's Ed25519 identity: the key that names and speaks for it.

One key per server, kept in ``data_dir`` (mode 0600) and created on first
start. The server id is derived from the public key, so it can never drift from
the key; the fingerprint is what tokens embed and what envoys and peers pin.
"""

import base64
import hashlib
import os

import nacl.exceptions
import nacl.signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

KEY_FILE = "identity.key"


class IdentityError(Exception):
    """The identity key file is missing, unreadable or not an Ed25519 key."""


def key_fingerprint(public_key):
    """The pin of a raw 32-byte Ed25519 public key: base64url SHA-256, unpadded."""
    digest = hashlib.sha256(public_key).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def key_id(public_key):
    """A short, stable, lower-case base32 id derived from a public key."""
    digest = hashlib.sha256(public_key).digest()
    return base64.b32encode(digest).decode("ascii")[:20].lower()


def verify_signature(public_key, message, signature):
    """True when ``signature`` is ``public_key``'s Ed25519 signature of ``message``."""
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, TypeError):
        return False
    return True


class Identity:
    """An Ed25519 key pair with the id and fingerprint derived from it."""

    def __init__(self, seed):
        self._signing = nacl.signing.SigningKey(seed)
        self._seed = seed
        self.public_key = bytes(self._signing.verify_key)
        self.id = key_id(self.public_key)
        self.fingerprint = key_fingerprint(self.public_key)

    @classmethod
    def generate(cls):
        return cls(os.urandom(32))

    def sign(self, message):
        """The 64-byte detached signature of ``message``."""
        return self._signing.sign(message).signature

    def private_key(self):
        """The key as a ``cryptography`` object, for certificates."""
        return ed25519.Ed25519PrivateKey.from_private_bytes(self._seed)

    def to_pem(self):
        return self.private_key().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_pem(cls, data):
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as e:
            raise IdentityError("not a PEM private key: %s" % (e,)) from None
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise IdentityError("the identity key must be Ed25519")
        raw = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return cls(raw)


def write_private_file(path, data):
    """Write ``data`` to a new file readable by its owner only, atomically."""
    tmp = path + ".tmp"
    if os.path.exists(tmp):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_or_create_identity(data_dir, name=KEY_FILE):
    """The server's identity from ``data_dir``, created there on first start
    (``name``: another key file, such as a replica's own ``node.key``)."""
    path = os.path.join(data_dir, name)
    if not os.path.exists(path):
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        identity = Identity.generate()
        write_private_file(path, identity.to_pem())
        return identity
    mode = os.stat(path).st_mode & 0o777
    if mode & 0o077:
        raise IdentityError(
            "%s is readable by others (mode %o); run: chmod 600 %s" % (path, mode, path)
        )
    with open(path, "rb") as f:
        try:
            return Identity.from_pem(f.read())
        except IdentityError as e:
            raise IdentityError("%s: %s" % (path, e)) from None
