"""Where ``vigocli`` talks to, and with what credentials.

First match wins:

* URL: ``--api``, else ``api_url`` in ``<data-dir>/run.json``, else
  ``$VIGO_API``, else ``https://127.0.0.1:8443``;
* token: ``--token``, else ``<data-dir>/admin-token``, else ``$VIGO_TOKEN``;
* trust: ``--ca-file``, else ``<data-dir>/api-cert.pem`` (exactly that
  certificate), else the platform's CAs.

What cannot be resolved is a ``UsageError`` (exit 2).
"""

import json
import os
import re
from urllib.parse import urlsplit

import attr
from OpenSSL import SSL
from treq.client import HTTPClient
from twisted.internet import ssl
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

from vigo.api.auth import ADMIN_TOKEN_FILE
from vigo.cli.arguments import DEFAULT_API
from vigo.tls import API_CERT_FILE

RUN_FILE = "run.json"  # written by the server (vigo.server) when it is listening
_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL
)


class UsageError(Exception):
    """The command cannot be sent as given (exit 2); the message says what to do."""


@attr.s(frozen=True)
class Target:
    """The API to call: base URL, bearer token and the certificate file to trust."""

    url = attr.ib()
    token = attr.ib(repr=False)
    trust = attr.ib(default=None)


def _read(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise UsageError(f"cannot read the {what} {path}: {e.strerror}; "
                         "run as the server's user or give the value yourself") from None


def _run_file_url(data_dir):
    path = os.path.join(data_dir, RUN_FILE)
    run = _read(path, "run file")
    if run is None:
        return None
    try:
        url = json.loads(run)["api_url"]
    except (ValueError, KeyError, TypeError):
        url = None
    if not isinstance(url, str):
        raise UsageError(f"{path} has no api_url; is {data_dir} a vigo data directory?")
    return url


def resolve_target(options, environ):
    """The ``Target`` for ``options``; ``UsageError`` when something is missing."""
    data_dir = options.data_dir
    if data_dir is not None and not os.path.isdir(data_dir):
        raise UsageError(f"--data-dir {data_dir}: no such directory")
    url = options.api
    if url is None and data_dir is not None:
        url = _run_file_url(data_dir)
    url = url or environ.get("VIGO_API") or DEFAULT_API
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{url!r} is not an API URL; use e.g. --api https://HOST:8443")
    url = url.rstrip("/")
    token = options.token
    if token is None and data_dir is not None:
        stored = _read(os.path.join(data_dir, ADMIN_TOKEN_FILE), "admin token")
        token = stored.decode("ascii", "replace").strip() if stored else None
    token = token or environ.get("VIGO_TOKEN")
    if not token:
        raise UsageError("no API token: pass --token TOKEN, set $VIGO_TOKEN, or on the "
                         "server host pass --data-dir DIR (the server writes "
                         f"DIR/{ADMIN_TOKEN_FILE})")
    trust = options.ca_file
    if trust is None and data_dir is not None:
        pinned = os.path.join(data_dir, API_CERT_FILE)
        trust = pinned if os.path.exists(pinned) else None
    return Target(url, token, trust)


def trust_root(path):
    """The certificates in the PEM file ``path``, as a trust root."""
    data = _read(path, "certificate file")
    if data is None:
        raise UsageError(f"no certificate file {path}")
    blocks = _PEM_CERTIFICATE.findall(data)
    if not blocks:
        raise UsageError(f"{path} holds no PEM certificate")
    try:
        return ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(b) for b in blocks])
    except SSL.Error as e:
        raise UsageError(f"{path}: not a certificate: {e}") from None


def http_client(reactor, target):
    """A treq client for ``target`` and its connection pool (close it when done)."""
    pool = HTTPConnectionPool(reactor)
    if target.trust is not None:
        policy = BrowserLikePolicyForHTTPS(trustRoot=trust_root(target.trust))
        agent = Agent(reactor, contextFactory=policy, pool=pool)
    else:
        agent = Agent(reactor, pool=pool)
    return HTTPClient(agent), pool
