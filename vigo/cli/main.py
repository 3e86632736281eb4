"""``vigocli``: the admin command line, a thin client of the REST API.

This module runs one parsed command: it resolves the target
(``vigo.cli.target``), sends the command's request(s) (its row of
``vigo.cli.commands.COMMANDS``) and prints the answer, with the row's printer
or, with ``--json``, as the server's JSON.

Exit status: 0 done, 1 refused by the server or unreachable, 2 usage errors.
Every error is a ``vigocli: ...`` line on stderr; with ``--json`` it is also
one JSON object on stdout, ``{"error": CODE, "detail": TEXT}``: the server's
code and detail when it refused (with ``http_status``), ``usage`` for a usage
error (exit 2), ``api_unreachable`` when the API gave no answer (exit 1).
"""

import json
import os
import signal
import sys

from OpenSSL import SSL
from twisted.internet import defer, error, task
from twisted.web.client import ResponseFailed, ResponseNeverReceived

from vigo.cli.arguments import parse
from vigo.cli.commands import COMMANDS
from vigo.cli.format import report_error
from vigo.cli.target import UsageError, http_client, resolve_target

TIMEOUT = 30.0  # seconds to wait for an answer
EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2
UNREACHABLE = "api_unreachable"  # the --json error code of a request without an answer


class Unreachable(Exception):
    """No answer from the API (exit 1); the message names the URL."""


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
    if command.local is not None:
        return command.local(options, out, err)
    try:
        target = resolve_target(options, environ)
        client, pool = http_client(reactor, target)
    except UsageError as e:
        report_error(out, err, options.json, "usage", str(e), human=str(e))
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
        report_error(out, err, options.json, UNREACHABLE, str(e), human=str(e))
        return EXIT_REFUSED
    finally:
        await pool.closeCachedConnections()
    if status >= 400:
        if isinstance(answer, dict) and isinstance(answer.get("error"), str):
            report_error(out, err, options.json, answer["error"], answer.get("detail"),
                         extra=dict(answer, http_status=status))
        else:
            report_error(out, err, options.json, "http_error", answer,
                         human=f"HTTP {status}: {answer}", extra={"http_status": status})
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
