"""``vigocli``: the admin command line, a thin client of the REST API.

Every command is one row of ``COMMANDS``: an HTTP method, a path built from
the parsed arguments, an optional JSON body, and a printer for people
(``--json`` prints the server's answer instead). A new group of commands is a
new subparser group plus new rows, as the spanner ones (with their nested
``bolt`` group) are; nothing else changes.

Where to talk to and with what credentials, first match wins:

* URL: ``--api``, else ``api_url`` in ``<data-dir>/run.json``, else
  ``$VIGO_API``, else ``https://127.0.0.1:8443``;
* token: ``--token``, else ``<data-dir>/admin-token``, else ``$VIGO_TOKEN``;
* trust: ``--ca-file``, else ``<data-dir>/api-cert.pem`` (exactly that
  certificate), else the platform's CAs.

Exit status: 0 done, 1 refused by the server or unreachable, 2 usage errors.
"""

import json
import os
import re
import signal
import sys
from urllib.parse import quote, urlencode, urlsplit

import attr
from OpenSSL import SSL
from treq.client import HTTPClient
from twisted.internet import defer, error, ssl, task
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    ResponseFailed,
    ResponseNeverReceived,
)

from vigo.api.auth import ADMIN_TOKEN_FILE
from vigo.cli import drain as cli_drain
from vigo.cli import output, spanner_output
from vigo.cli.arguments import DEFAULT_API, argument_value, build_parser, parse  # noqa: F401
from vigo.tls import API_CERT_FILE

RUN_FILE = "run.json"  # written by the server (vigo.server) when it is listening
TIMEOUT = 30.0  # seconds to wait for an answer
EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2
_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL
)


class UsageError(Exception):
    """The command cannot be sent as given (exit 2); the message says what to do."""


class Unreachable(Exception):
    """No answer from the API (exit 1); the message names the URL."""


@attr.s(frozen=True)
class Command:
    """One command: how to ask the server, and how to show its answer."""

    method = attr.ib()
    path = attr.ib()  # options -> "/api/v1/..." (query string included)
    printer = attr.ib()  # (answer, out, err) -> None
    body = attr.ib(default=None)  # options -> dict, or None for no body
    #: (reactor, ask, options, err) -> (status, answer): several requests in one
    #: command (``vigo.cli.drain``); ``ask(method, path, body)`` is one of them.
    flow = attr.ib(default=None)
    failed = attr.ib(default=None)  # answer -> True when a 2xx answer still exits 1


def _segment(value):
    return quote(value, safe="")


def _envoy(suffix=""):
    return lambda options: "/api/v1/envoys/" + _segment(options.envoy) + suffix


def _envoys_query(options):
    query = {}
    if options.bolt:
        query["bolt"] = options.bolt
    if options.offline:
        query["offline"] = "1"
    return "/api/v1/envoys" + ("?" + urlencode(query) if query else "")


def _token_body(options):
    body = {"uses": options.uses}
    if options.expires_in is not None:
        body["expires_in"] = options.expires_in
    return body


def _owner_query(options):
    query = {"hostname": options.hostname}
    if options.envoy:
        query["envoy"] = options.envoy
    return "/api/v1/spanner/owner?" + urlencode(query)


def _bolt(options):
    return "/api/v1/spanner/bolts/" + _segment(options.bolt)


def _bolt_action(options):
    return _bolt(options) + "/actions/" + _segment(options.action_name)


def _init_body(options):
    body = {}
    if options.name is not None:
        body["name"] = options.name
    if options.patterns is not None:
        body["patterns"] = options.patterns
    return body


def _invite_body(options):
    return {} if options.expires_in is None else {"expires_in": options.expires_in}


COMMANDS = {
    "status": Command("GET", lambda options: "/api/v1/status", output.status),
    "token create": Command("POST", lambda options: "/api/v1/tokens", output.token_created,
                            body=_token_body),
    "api-token create": Command("POST", lambda options: "/api/v1/api-tokens",
                                output.api_token_created, body=lambda o: {"name": o.name}),
    "api-token list": Command("GET", lambda options: "/api/v1/api-tokens",
                              output.api_token_table),
    "api-token withdraw": Command("DELETE",
                                 lambda o: "/api/v1/api-tokens/" + _segment(o.token_id),
                                 output.api_token_withdrawn),
    "token list": Command("GET", lambda options: "/api/v1/tokens", output.token_table),
    "token withdraw": Command("DELETE", lambda o: "/api/v1/tokens/" + _segment(o.token_id),
                              output.token_withdrawn),
    "envoys list": Command("GET", _envoys_query, output.envoy_table),
    "envoys show": Command("GET", _envoy(), output.envoy_details),
    "envoys push": Command("POST", _envoy("/push"), output.envoy_pushed, body=lambda o: {}),
    "envoys revoke": Command("DELETE", _envoy(), output.envoy_revoked),
    "spanner status": Command("GET", lambda options: "/api/v1/spanner/status",
                              spanner_output.spanner_status),
    "spanner init": Command("POST", lambda options: "/api/v1/spanner/init",
                            spanner_output.spanner_initialized, body=_init_body),
    "spanner owner": Command("GET", _owner_query, spanner_output.owner_explained),
    "spanner bolt list": Command("GET", lambda options: "/api/v1/spanner/bolts",
                                 spanner_output.bolt_table),
    "spanner bolt show": Command("GET", _bolt, spanner_output.bolt_details),
    "spanner bolt envoys": Command("GET", lambda options: _bolt(options) + "/envoys",
                                   output.envoy_table),
    "spanner bolt push": Command("POST", lambda options: _bolt(options) + "/push",
                                 spanner_output.bolt_pushed, body=lambda o: {}),
    "spanner bolt invite": Command("POST", lambda options: "/api/v1/spanner/invite",
                                   spanner_output.invite_created, body=_invite_body),
    "spanner bolt join": Command("POST", lambda options: "/api/v1/spanner/join",
                                 spanner_output.spanner_joined, body=lambda o: {"token": o.token_text}),
    "spanner bolt reassign": Command("POST", _envoy("/reassign"), output.envoy_reassigned,
                                     body=lambda o: {"to": o.to}),
    "spanner bolt drain": Command("POST", _bolt, spanner_output.bolt_drained, flow=cli_drain.drain,
                                  failed=cli_drain.drain_failed),
    "spanner bolt remove": Command("DELETE", _bolt, spanner_output.bolt_removed,
                                   flow=cli_drain.remove),
    "spanner bolt act": Command("POST", _bolt_action, spanner_output.action_result,
                                body=lambda o: dict(o.args or {})),
}


# -- where to, and with what ---------------------------------------------------


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


# -- calling ---------------------------------------------------------------------


def describe_failure(exc):
    """Words for why a request got no answer."""
    if isinstance(exc, (ResponseNeverReceived, ResponseFailed)):
        return "; ".join(describe_failure(reason.value) for reason in exc.reasons)
    if isinstance(exc, SSL.Error):
        parts = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
        details = ", ".join(part[-1] for part in parts if isinstance(part, tuple)) or str(exc)
        return f"TLS failed ({details})"
    if isinstance(exc, defer.CancelledError):
        return f"no answer within {TIMEOUT:g} s"
    text = str(exc) or type(exc).__name__
    if type(exc).__name__ == "VerificationError":
        text = (f"the certificate does not name the host in the URL ({text}); "
                "use a name or address the certificate lists")
    return text


async def call(reactor, client, target, method, path, body=None):
    """``(status, answer)`` of one request; ``Unreachable`` if there is none."""
    url = target.url + path
    headers = {b"authorization": [b"Bearer " + target.token.encode("utf-8")],
               b"accept": [b"application/json"]}
    data = None
    if body is not None:
        headers[b"content-type"] = [b"application/json"]
        data = json.dumps(body).encode("utf-8")
    try:
        response = await client.request(method, url, headers=headers, data=data,
                                        reactor=reactor, timeout=TIMEOUT)
        content = await response.content()
    except (error.ConnectError, error.DNSLookupError, error.TimeoutError, error.ConnectionLost,
            ResponseNeverReceived, ResponseFailed, defer.CancelledError, SSL.Error) as e:
        reason = describe_failure(e)
        if ("TLS" in reason or "certificate" in reason) and target.trust is None:
            reason += "; trust its certificate with --ca-file PEM, or --data-dir DIR on the host"
        raise Unreachable(f"cannot reach the API at {target.url}: {reason}") from None
    try:
        return response.code, json.loads(content)
    except ValueError:
        raise Unreachable(f"{url} answered HTTP {response.code} without JSON; "
                          "is it a vigo API?") from None


async def run(reactor, options, out=None, err=None, environ=None):
    """Carry out the parsed command; the exit status."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    environ = os.environ if environ is None else environ
    command = COMMANDS[options.command]
    try:
        target = resolve_target(options, environ)
        client, pool = http_client(reactor, target)
    except UsageError as e:
        print(f"vigocli: {e}", file=err)
        return EXIT_USAGE
    body = None if command.body is None else command.body(options)
    try:
        if command.flow is None:
            status, answer = await call(reactor, client, target, command.method,
                                        command.path(options), body)
        else:
            def ask(method, path, data):
                return call(reactor, client, target, method, path, data)

            status, answer = await command.flow(reactor, ask, options, err)
    except Unreachable as e:
        print(f"vigocli: {e}", file=err)
        return EXIT_REFUSED
    finally:
        await pool.closeCachedConnections()
    if status >= 400:
        if isinstance(answer, dict) and "error" in answer:
            print(f"vigocli: {answer['error']}: {answer.get('detail')}", file=err)
        else:
            print(f"vigocli: HTTP {status}: {answer}", file=err)
        return EXIT_REFUSED
    if options.json:
        print(json.dumps(answer, indent=2, sort_keys=True), file=out)
    else:
        command.printer(answer, out, err)
    if command.failed is not None and command.failed(answer):
        return EXIT_REFUSED
    return EXIT_OK


def main(argv=None):
    """The ``vigocli`` console script."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `vigocli ... | head` ends quietly
    options = parse(sys.argv[1:] if argv is None else argv)

    async def react_main(reactor):
        status = await run(reactor, options)
        if status:
            raise SystemExit(status)

    task.react(lambda reactor: defer.ensureDeferred(react_main(reactor)))
