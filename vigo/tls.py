"""TLS for the server's ports, bound to its identity and pinned by its clients.

* The envoy port (and later the peer port) presents a self-signed certificate
  of the server's Ed25519 identity key; clients pin the key's fingerprint, so no
  CA is involved and a certificate can be re-minted at every start.
* The API port presents a certificate browsers accept: the operator's
  (``server.tls``), else a self-signed ECDSA P-256 one kept in ``data_dir`` so
  ``vigocli --data-dir`` can trust exactly it.
"""

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer

from vigo.identity import key_fingerprint, write_private_file

API_CERT_FILE = "api-cert.pem"
API_KEY_FILE = "api-key.pem"
_TEN_YEARS = datetime.timedelta(days=3650)


def _self_signed(private_key, common_name, sans=(), algorithm=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _TEN_YEARS)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(private_key, algorithm)


def identity_certificate(identity):
    """A self-signed certificate of the identity key (Ed25519; TLS 1.3 only)."""
    return _self_signed(identity.private_key(), identity.id)


def _subject_alt_names(names):
    sans = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    return sans


def _dedupe(names):
    seen = []
    for name in names:
        if name and name not in seen:
            seen.append(name)
    return seen


def ensure_api_certificate(data_dir, hostname, listen_host):
    """The API certificate and key paths, minted into ``data_dir`` if missing.

    The certificate names ``localhost``, the loopback addresses, the advertised
    hostname and the listening address, so a browser or ``vigocli`` can check
    the name it dialled.
    """
    cert_path = os.path.join(data_dir, API_CERT_FILE)
    key_path = os.path.join(data_dir, API_KEY_FILE)
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    names = _dedupe(["localhost", "127.0.0.1", "::1", hostname, listen_host])
    names = [n for n in names if n not in ("0.0.0.0", "::")]
    cert = _self_signed(key, hostname, _subject_alt_names(names), hashes.SHA256())
    write_private_file(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    # The certificate is public (vigocli and browsers read it): 0644 whatever
    # the umask, and never writable by others.
    tmp = cert_path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.fchmod(fd, 0o644)
        os.write(fd, cert.public_bytes(serialization.Encoding.PEM))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, cert_path)
    return cert_path, key_path


class TLSFilesError(Exception):
    """A certificate or key file that cannot be used; the message names it."""


def api_server_options(cert_path, key_path):
    """Twisted TLS options for the HTTPS API from PEM files; ``TLSFilesError``
    (naming the file) for one that is not a PEM certificate or key."""
    with open(cert_path, "rb") as f:
        cert_pem = f.read()
    with open(key_path, "rb") as f:
        key_pem = f.read()
    try:
        certificate = crypto.load_certificate(crypto.FILETYPE_PEM, cert_pem)
    except crypto.Error as e:
        raise TLSFilesError("%s is not a PEM certificate (%s)" % (cert_path, e)) from None
    try:
        key = crypto.load_privatekey(crypto.FILETYPE_PEM, key_pem)
    except crypto.Error as e:
        raise TLSFilesError("%s is not a PEM private key (%s)" % (key_path, e)) from None
    return ssl.CertificateOptions(privateKey=key, certificate=certificate,
                                  raiseMinimumTo=ssl.TLSVersion.TLSv1_2)


def identity_server_options(identity):
    """Twisted TLS options for a port that presents the identity key (TLS 1.3)."""
    cert = identity_certificate(identity)
    options = ssl.CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(identity.private_key()),
        certificate=crypto.X509.from_cryptography(cert),
        raiseMinimumTo=ssl.TLSVersion.TLSv1_3,
    )
    return options


def certificate_key_fingerprint(certificate):
    """The fingerprint of an X.509 certificate's Ed25519 key, or None."""
    key = certificate.to_cryptography().public_key()
    if not isinstance(key, ed25519.Ed25519PublicKey):
        return None
    return key_fingerprint(
        key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


@implementer(IOpenSSLClientConnectionCreator)
class PinnedKeyClientCreator:
    """Client TLS that accepts exactly one Ed25519 server key, by fingerprint.

    The pin is checked inside the handshake, so nothing is written to a server
    that does not hold the key.
    """

    def __init__(self, fingerprint):
        self.fingerprint = fingerprint
        self._context = SSL.Context(SSL.TLS_METHOD)
        self._context.set_min_proto_version(SSL.TLS1_3_VERSION)
        self._context.set_mode(SSL.MODE_RELEASE_BUFFERS)
        self._context.set_options(SSL.OP_NO_TICKET)
        self._context.set_verify(SSL.VERIFY_PEER, self._verify)

    def _verify(self, connection, certificate, errno, depth, ok):
        if depth != 0:
            return True
        return certificate_key_fingerprint(certificate) == self.fingerprint

    def clientConnectionForTLS(self, tlsProtocol):
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        connection.set_connect_state()
        return connection

