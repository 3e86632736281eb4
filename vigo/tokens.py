"""Secrets that admit things: enrollment tokens for envoys, API tokens for admins.

Secrets are 256-bit random and stored only as SHA-256 hashes (a slow hash buys
nothing at that entropy). An enrollment token also carries what an envoy needs
to trust the server before it sends the secret: the server's id, envoy address
and key fingerprint.
"""

import base64
import binascii
import hashlib
import json
import os

import attr

ENROLLMENT_PREFIX = "vgoe_"
API_PREFIX = "vgot_"
MAX_TOKEN_LENGTH = 2048


class TokenError(ValueError):
    """A token that cannot be read; the message says why."""


def hash_secret(secret):
    """The stored form of a secret (bytes or text)."""
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    return hashlib.sha256(secret).digest()


def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text):
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.urlsafe_b64decode(padded.encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise TokenError("the token is not valid base64url") from None


def new_id():
    """A fresh random id (12 base64url characters) that does not start with
    ``-``: operators type ids on command lines, where ``-x...`` is an option."""
    while True:
        token_id = _b64url(os.urandom(9))
        if not token_id.startswith("-"):
            return token_id


@attr.s(frozen=True, slots=True)
class EnrollmentToken:
    """A one-time (or N-time) enrollment token as handed to an envoy."""

    token_id = attr.ib()
    secret = attr.ib(repr=False)
    server_id = attr.ib()
    address = attr.ib()
    fingerprint = attr.ib()

    @classmethod
    def mint(cls, server_id, address, fingerprint):
        return cls(new_id(), _b64url(os.urandom(32)), server_id, address, fingerprint)

    def encode(self):
        return encode_payload(ENROLLMENT_PREFIX, {
            "sid": self.server_id, "addr": self.address, "fp": self.fingerprint,
            "tid": self.token_id, "sec": self.secret})

    __str__ = encode

    @property
    def secret_hash(self):
        return hash_secret(self.secret)

    @classmethod
    def decode(cls, text):
        """Parse a token; ``TokenError`` says what is wrong with it."""
        fields = decode_payload(text, ENROLLMENT_PREFIX, "an enrollment token",
                                ("sid", "addr", "fp", "tid", "sec"))
        return cls(
            token_id=fields["tid"],
            secret=fields["sec"],
            server_id=fields["sid"],
            address=fields["addr"],
            fingerprint=fields["fp"],
        )


def encode_payload(prefix, payload):
    """``payload`` (a dict of short strings) as ``prefix`` + base64url JSON."""
    return prefix + _b64url(json.dumps(dict(payload, v=1), separators=(",", ":")).encode())


def decode_payload(text, prefix, what, keys, hint=""):
    """The ``keys`` of a token ``encode_payload`` made (each a non-empty string
    of at most 256 characters); ``TokenError`` names what is wrong, calling
    the token ``what`` ("an enrollment token"; ``hint`` follows the message
    for a text that is not one)."""
    if not isinstance(text, str):
        raise TokenError("the token must be a string")
    text = text.strip()
    if len(text) > MAX_TOKEN_LENGTH:
        raise TokenError("the token is too long")
    if not text.startswith(prefix):
        raise TokenError("not %s (they start with %r%s)" % (what, prefix, hint))
    try:
        payload = json.loads(_unb64url(text[len(prefix):]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise TokenError("the token is damaged (its payload is not JSON)") from None
    if not isinstance(payload, dict) or payload.get("v") != 1:
        raise TokenError("unsupported %s version" % (what.split(" ", 1)[1],))
    fields = {}
    for key in keys:
        value = payload.get(key)
        if not isinstance(value, str) or not value or len(value) > 256:
            raise TokenError("the token is damaged (field %r is missing)" % (key,))
        fields[key] = value
    return fields


def new_api_token():
    """A fresh admin API token: ``(token_id, text)``; store ``hash_secret(text)``."""
    return new_id(), API_PREFIX + _b64url(os.urandom(32))
