"""What every part of the admin API shares: JSON answers, errors, bodies, auth.

Every answer is JSON, errors included: ``{"error": code, "detail": ...}`` with
a 4xx/5xx status; unknown routes and wrong methods too. ``json_errors``
gives a Klein app those answers (each app the API is composed of has them).
A ``Refusal`` from below is answered with the HTTP status its code calls for
(``REFUSAL_STATUS``): this table is the one place where codes become
statuses. Unexpected exceptions are logged and answered with a JSON 500,
never a traceback.
"""

import functools
import inspect
import json

from twisted.internet import defer
from twisted.logger import Logger
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from vigo.api.site import MAX_BODY
from vigo.interfaces.errors import Refusal
from vigo.store import StoreClosed

JSON_TYPE = b"application/json"
_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no", "")

#: The HTTP status of a refusal, by its code; any other code is 409 Conflict.
REFUSAL_STATUS = {
    "bad_request": 400, "malformed": 400,
    "not_found": 404, "unknown_action": 404, "not_spanner": 404,
    "bolt_not_found": 404,
    "action_failed": 502, "bad_answer": 502,
    "unreachable": 503, "stopping": 503,
    # High availability (vigo/server/peer/): a write not held by peers.sync
    # standbys in time, or sent to a node that is not the primary.
    "replication_timeout": 503, "not_primary": 503, "standby": 503, "ha_off": 404,
}

log = Logger(namespace="vigo.api")


class ApiError(Exception):
    """A request the API refuses: an HTTP ``status``, a stable ``error`` code
    and a ``detail`` for people."""

    def __init__(self, status, error, detail):
        Exception.__init__(self, detail)
        self.status = status
        self.error = error
        self.detail = detail


async def settled(value):
    """``value``, waited for when it is a Deferred or a coroutine (the parts
    the API calls may answer at once or later)."""
    if isinstance(value, defer.Deferred) or inspect.isawaitable(value):
        value = await value
    return value


def status_of(refusal):
    """The HTTP status to answer a ``Refusal`` with."""
    return REFUSAL_STATUS.get(refusal.code, 409)


def json_response(request, value, code=200):
    """``value`` as the JSON body of an answer with status ``code``."""
    request.setResponseCode(code)
    request.setHeader(b"content-type", JSON_TYPE)
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(value).encode("utf-8") + b"\n"


def error_response(request, code, error, detail):
    return json_response(request, {"error": error, "detail": detail}, code)


def authorized(handler):
    """Refuse the request with 401 unless it carries a bearer token that the
    route's owner's ``tokens`` (``ApiTokens``) accepts."""

    @functools.wraps(handler)
    def check(self, request, *args, **kwargs):
        if not self.tokens.check(request.getHeader(b"authorization")):
            request.setHeader(b"www-authenticate", b'Bearer realm="vigo"')
            raise ApiError(
                401, "unauthorized",
                "send 'Authorization: Bearer <token>' with a valid API token "
                "(the local admin token is in <data_dir>/admin-token)",
            )
        return handler(self, request, *args, **kwargs)

    return check


def json_errors(app):
    """Answer every error of the Klein ``app`` with JSON (see the module)."""

    @app.handle_errors(ApiError)
    def api_error(instance, request, failure):
        """A refused request."""
        e = failure.value
        return error_response(request, e.status, e.error, e.detail)

    @app.handle_errors(Refusal)
    def refusal(instance, request, failure):
        """Something below said no: the status its code calls for."""
        e = failure.value
        return error_response(request, status_of(e), e.code, e.reason)

    @app.handle_errors(NotFound)
    def not_found(instance, request, failure):
        """No route."""
        path = request.path.decode("utf-8", "replace")
        return error_response(request, 404, "not_found", f"no such API route: {path}")

    @app.handle_errors(MethodNotAllowed)
    def method_not_allowed(instance, request, failure):
        """A route that does not take this method."""
        allowed = sorted(failure.value.valid_methods or ())
        request.setHeader(b"allow", ", ".join(allowed).encode("ascii"))
        method = request.method.decode("ascii", "replace")
        return error_response(request, 405, "method_not_allowed",
                              f"{method} is not allowed here; use {' or '.join(allowed)}")

    @app.handle_errors(HTTPException)
    def http_error(instance, request, failure):
        """Any other routing error werkzeug raises."""
        code = failure.value.code or 400
        return error_response(request, code, f"http_{code}", failure.value.description)

    @app.handle_errors(StoreClosed)
    def stopping(instance, request, failure):
        """Asked while the server stops: nothing was done (no traceback to log)."""
        return error_response(request, 503, "stopping",
                              "the server is stopping: nothing was done; try again")

    @app.handle_errors
    def internal_error(instance, request, failure):
        """A bug or a failed store: log it, answer JSON 500."""
        log.failure("admin API: {method} {path} failed", failure,
                    method=request.method.decode("ascii", "replace"),
                    path=request.path.decode("utf-8", "replace"))
        return error_response(request, 500, "internal_error",
                              "the server failed to answer this request; its log says why")

    return app


# -- reading requests --------------------------------------------------------------


def read_object(request, allowed):
    """The request body as a JSON object with only ``allowed`` keys (any keys
    when ``allowed`` is None); an empty body is ``{}``. Raises ``ApiError``
    (400 or 413)."""
    length = request.getHeader(b"content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY:
        raise ApiError(413, "body_too_large",
                       f"the body is {int(length)} bytes; at most {MAX_BODY} are allowed")
    data = request.content.read(MAX_BODY + 1) if request.content is not None else b""
    if len(data) > MAX_BODY:
        raise ApiError(413, "body_too_large", f"the body is over {MAX_BODY} bytes")
    if not data.strip():
        return {}
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ApiError(400, "bad_request", f"the body is not JSON ({e})") from None
    if not isinstance(value, dict):
        raise ApiError(400, "bad_request",
                       f"the body must be a JSON object, not {_json_type(value)}")
    unknown = [] if allowed is None else sorted(set(value) - set(allowed))
    if unknown:
        allowed = ", ".join(allowed) or "none"
        raise ApiError(400, "bad_request", f"unknown field {unknown[0]!r}; allowed: {allowed}")
    return value


def _no_constant(name):
    raise ValueError(f"{name} is not allowed")


def _json_type(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array"


def query_value(request, name):
    """The last ``name`` query argument as text, or None."""
    values = request.args.get(name.encode("ascii"))
    if not values:
        return None
    try:
        return values[-1].decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "bad_request", f"query argument {name!r} is not UTF-8") from None


def query_flag(request, name):
    """A yes/no query argument (``1``/``true``/``yes`` or ``0``/``false``/``no``)."""
    value = query_value(request, name)
    if value is None:
        return False
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ApiError(400, "bad_request", f"{name}={value!r}: use 1 or 0")


def shown(value):
    """A request value as JSON, cut short, for an error's detail."""
    return json.dumps(value)[:80]
