"""Mutual TLS with pinned Ed25519 keys: a bolt's peer port, a replica set's replication port.

The server asks every client for a certificate and accepts any self-signed
one: no CA is involved, and the TLS layer does not decide who a peer is. TLS
1.3 makes the client prove it holds the certificate's key (CertificateVerify),
so the key that ``peer_key`` reads off the connection is authenticated; the
cred checker then decides what that key may do by looking it up in the roster.

The client pins the server's key fingerprint inside the handshake (as envoys
do, ``vigo.tls.PinnedKeyClientCreator``) and presents its own identity
certificate, so nothing is written to a server that does not hold the pinned
key. Ed25519 certificates need TLS 1.3, which both ends require.
"""

import functools

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from OpenSSL import SSL, crypto

from vigo.tls import PinnedKeyClientCreator, identity_certificate, identity_server_options


class PeerKeyError(Exception):
    """The TLS peer of a connection has no Ed25519 identity key we can read."""


def _accept_any_certificate(connection, certificate, errno, depth, ok):
    # Self-signed is expected; who the key belongs to is the checker's call.
    return True


def peer_server_options(identity):
    """Server TLS options for the peer port: present ``identity``'s certificate
    and require one from the client (TLS 1.3 only)."""
    options = identity_server_options(identity)
    # CertificateOptions builds its context once and hands the same one to
    # every connection, so configuring it here configures the port.
    context = options.getContext()
    context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _accept_any_certificate)
    return options


@functools.lru_cache(maxsize=8)
def _identity_credentials(identity):
    """The pyOpenSSL certificate and key of an identity, minted once per process."""
    certificate = crypto.X509.from_cryptography(identity_certificate(identity))
    return certificate, crypto.PKey.from_cryptography_key(identity.private_key())


class PeerClientCreator(PinnedKeyClientCreator):
    """Client TLS to a peer port: pin the server's key, present our identity."""

    def __init__(self, identity, fingerprint):
        super().__init__(fingerprint)
        certificate, key = _identity_credentials(identity)
        self._context.use_certificate(certificate)
        self._context.use_privatekey(key)
        self._context.check_privatekey()


def peer_key(transport):
    """The raw 32-byte Ed25519 public key the TLS peer of ``transport`` proved it holds.

    Raises ``PeerKeyError`` when the transport is not TLS, the peer sent no
    certificate, or the certificate's key is not Ed25519.
    """
    get_certificate = getattr(transport, "getPeerCertificate", None)
    if get_certificate is None:
        raise PeerKeyError("the connection is not TLS, so the peer has no key")
    certificate = get_certificate()
    if certificate is None:
        raise PeerKeyError("the peer presented no TLS certificate")
    key = certificate.to_cryptography().public_key()
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise PeerKeyError(
            "the peer's certificate holds a %s key; bolts use Ed25519 identity keys"
            % (type(key).__name__,)
        )
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
