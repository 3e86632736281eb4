"""The admin REST API: a Klein app over one server's fleet.

The app sits on the class (Tahoe-LAFS style), so each ``AdminAPI`` instance
answers for its own server. Every answer is JSON, errors included:
``{"error": code, "detail": ...}`` with a 4xx/5xx status; unknown routes and
wrong methods too. Unexpected exceptions are logged and answered with a JSON
500, never a traceback. (One answer is Klein's own: a URL that is not UTF-8
gets a plain-text 400 before any route is matched.)
"""

import functools
import json

from klein import Klein
from prometheus_client import generate_latest
from twisted.logger import Logger
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from vigo.api.site import MAX_BODY
from vigo.config import parse_duration
from vigo.fleet.index import ACTIVE
from vigo.fleet.refusal import Refusal
from vigo.spanner.errors import SpannerRefusal

try:
    # What generate_latest writes; CONTENT_TYPE_LATEST names text format
    # 1.0.0 since prometheus_client 0.22.
    from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4 as METRICS_TYPE
except ImportError:  # pragma: no cover - older prometheus_client
    from prometheus_client import CONTENT_TYPE_LATEST as METRICS_TYPE

JSON_TYPE = b"application/json"
TOKEN_FIELDS = ("uses", "expires_in")
_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no", "")


class ApiError(Exception):
    """A request the API refuses: an HTTP ``status``, a stable ``error`` code
    and a ``detail`` for people."""

    def __init__(self, status, error, detail):
        Exception.__init__(self, detail)
        self.status = status
        self.error = error
        self.detail = detail


def authorized(handler):
    """Refuse the request with 401 unless it carries a valid bearer token."""

    @functools.wraps(handler)
    def check(self, request, *args, **kwargs):
        if not self.server.api_tokens.check(request.getHeader(b"authorization")):
            request.setHeader(b"www-authenticate", b'Bearer realm="vigo"')
            raise ApiError(
                401, "unauthorized",
                "send 'Authorization: Bearer <token>' with a valid API token "
                "(the local admin token is in <data_dir>/admin-token)",
            )
        return handler(self, request, *args, **kwargs)

    return check


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


def token_request(body):
    """``(uses, expires_in)`` from a token-create body; ``ApiError`` names the bad field."""
    uses = body.get("uses", 1)
    if isinstance(uses, bool) or not isinstance(uses, int) or uses < 1:
        raise ApiError(400, "bad_request",
                       f"uses must be a whole number of at least 1, not {json.dumps(uses)[:80]}")
    expires_in = body.get("expires_in")
    if expires_in is not None:
        try:
            expires_in = parse_duration(expires_in)
        except ValueError:
            raise ApiError(400, "bad_request",
                           "expires_in must be a duration like \"1h\" or \"90m\", or a number "
                           f"of seconds, not {json.dumps(expires_in)[:80]}") from None
    return uses, expires_in


class AdminAPI:
    """The HTTPS admin API of one server.

    ``server`` is the server facade: ``fleet``, ``enrollment``,
    ``api_tokens``, ``registry``, ``clock``, ``identity``, ``config`` and
    ``status()``; and ``spanner``, the spanner service (``None`` or absent on
    a standalone server), for the routes in ``vigo.api.spanner``.
    """

    app = Klein()
    log = Logger()

    def __init__(self, server):
        self.server = server

    def resource(self):
        """The ``IResource`` to serve."""
        return self.app.resource()

    # -- helpers -------------------------------------------------------------

    def _json(self, request, value, code=200):
        request.setResponseCode(code)
        request.setHeader(b"content-type", JSON_TYPE)
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(value).encode("utf-8") + b"\n"

    def _error(self, request, code, error, detail):
        return self._json(request, {"error": error, "detail": detail}, code)

    def _check_bolt(self, request):
        bolt = query_value(request, "bolt")
        if bolt is not None and bolt != self.server.identity.id:
            here = self.server.identity.id
            raise ApiError(404, "bolt_not_found",
                           f"no bolt {bolt!r}: this standalone server is {here}")

    # -- unauthenticated -----------------------------------------------------

    @app.route("/healthz", methods=["GET"])
    def healthz(self, request):
        """Liveness, for load balancers."""
        return self._json(request, {"ok": True, "server_id": self.server.identity.id})

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request):
        """Prometheus text exposition."""
        request.setHeader(b"content-type", METRICS_TYPE.encode("ascii"))
        return generate_latest(self.server.registry)

    # -- /api/v1 -------------------------------------------------------------

    @app.route("/api/v1/status", methods=["GET"])
    @authorized
    def status(self, request):
        """The server at a glance."""
        return self._json(request, self.server.status())

    @app.route("/api/v1/tokens", methods=["POST"])
    @authorized
    async def create_token(self, request):
        """Mint an enrollment token: ``{"uses": N, "expires_in": "1h"}``."""
        uses, expires_in = token_request(read_object(request, TOKEN_FIELDS))
        try:
            token = await self.server.enrollment.create_token(uses, expires_in)
        except ValueError as e:
            raise ApiError(400, "bad_request", str(e)) from None
        now = self.server.clock.seconds()
        return self._json(request, {
            "token": str(token),
            "token_id": token.token_id,
            "uses": uses,
            "expires_at": None if expires_in is None else now + expires_in,
        }, 201)

    @app.route("/api/v1/api-tokens", methods=["POST"])
    @authorized
    async def create_api_token(self, request):
        """Mint an admin API token for another operator or tool: ``{"name": ...}``."""
        body = read_object(request, ("name",))
        try:
            minted = await self.server.api_tokens.mint(body.get("name"))
        except ValueError as e:
            raise ApiError(400, "bad_request", str(e)) from None
        return self._json(request, minted, 201)

    @app.route("/api/v1/api-tokens", methods=["GET"])
    @authorized
    async def list_api_tokens(self, request):
        """The admin API tokens of this server (never their secrets)."""
        tokens = await self.server.api_tokens.tokens()
        return self._json(request, {"tokens": tokens, "count": len(tokens)})

    @app.route("/api/v1/api-tokens/<token_id>", methods=["DELETE"])
    @authorized
    async def withdraw_api_token(self, request, token_id):
        """Withdraw an admin API token: refused from now on."""
        return self._json(request, await self.server.api_tokens.withdraw(token_id))

    @app.route("/api/v1/tokens", methods=["GET"])
    @authorized
    async def list_tokens(self, request):
        """The enrollment tokens this server minted (never their secrets)."""
        tokens = await self.server.enrollment.tokens()
        return self._json(request, {"tokens": tokens, "count": len(tokens)})

    @app.route("/api/v1/tokens/<token_id>", methods=["DELETE"])
    @authorized
    async def withdraw_token(self, request, token_id):
        """Withdraw an enrollment token: refused from now on."""
        return self._json(request, await self.server.enrollment.withdraw_token(token_id))

    @app.route("/api/v1/envoys", methods=["GET"])
    @authorized
    async def list_envoys(self, request):
        """Every envoy, by hostname; ``offline=1`` keeps active ones not heard of late.

        A spanner bolt asks every bolt (or only ``bolt=ID``) and says which
        did not answer.
        """
        spanner = getattr(self.server, "spanner", None)
        offline = query_flag(request, "offline")
        if spanner is not None:
            bolt = query_value(request, "bolt")
            return self._json(request, await spanner.envoys(bolt=bolt, offline=offline))
        self._check_bolt(request)
        records = sorted(self.server.fleet.index, key=lambda r: (r.hostname, r.id))
        if offline:
            records = [r for r in records if r.state == ACTIVE and not r.online]
        now = self.server.clock.seconds()
        envoys = [record.describe(now) for record in records]
        return self._json(request, {"envoys": envoys, "count": len(envoys)})

    @app.route("/api/v1/envoys/<envoy>", methods=["GET"])
    @authorized
    async def show_envoy(self, request, envoy):
        """One envoy, by id or unique hostname (on whichever bolt has it)."""
        spanner = getattr(self.server, "spanner", None)
        if spanner is not None:
            return self._json(request, await spanner.envoy(envoy))
        record = self.server.fleet.find(envoy)
        return self._json(request, record.describe(self.server.clock.seconds()))

    @app.route("/api/v1/envoys/<envoy>/push", methods=["POST"])
    @authorized
    async def push_envoy(self, request, envoy):
        """Force-push one envoy: now if connected, else at its next attach."""
        read_object(request, ())
        spanner = getattr(self.server, "spanner", None)
        if spanner is not None:
            return self._json(request, await spanner.push_envoy(envoy), 202)
        record = self.server.fleet.find(envoy)
        delivered = await self.server.fleet.force_push(record.id)
        return self._json(request, {"envoy_id": record.id, "delivered": delivered}, 202)

    @app.route("/api/v1/envoys/<envoy>", methods=["DELETE"])
    @authorized
    async def revoke_envoy(self, request, envoy):
        """Revoke one envoy for good."""
        record = await self.server.fleet.revoke(envoy)
        return self._json(request, {"envoy_id": record.id, "state": record.state})

    # -- errors --------------------------------------------------------------

    @app.handle_errors(ApiError)
    def api_error(self, request, failure):
        """A refused request."""
        e = failure.value
        return self._error(request, e.status, e.error, e.detail)

    @app.handle_errors(Refusal)
    def refusal(self, request, failure):
        """The fleet said no: 404 when there is no such thing, else 409."""
        e = failure.value
        return self._error(request, 404 if e.code == "not_found" else 409, e.code, e.reason)

    @app.handle_errors(SpannerRefusal)
    def spanner_refusal(self, request, failure):
        """The spanner service said no: the refusal carries its own status."""
        e = failure.value
        return self._error(request, e.status, e.code, e.message)

    @app.handle_errors(NotFound)
    def not_found(self, request, failure):
        """No route."""
        path = request.path.decode("utf-8", "replace")
        return self._error(request, 404, "not_found", f"no such API route: {path}")

    @app.handle_errors(MethodNotAllowed)
    def method_not_allowed(self, request, failure):
        """A route that does not take this method."""
        allowed = sorted(failure.value.valid_methods or ())
        request.setHeader(b"allow", ", ".join(allowed).encode("ascii"))
        method = request.method.decode("ascii", "replace")
        return self._error(request, 405, "method_not_allowed",
                           f"{method} is not allowed here; use {' or '.join(allowed)}")

    @app.handle_errors(HTTPException)
    def http_error(self, request, failure):
        """Any other routing error werkzeug raises."""
        code = failure.value.code or 400
        return self._error(request, code, f"http_{code}", failure.value.description)

    @app.handle_errors
    def internal_error(self, request, failure):
        """A bug or a failed store: log it, answer JSON 500."""
        self.log.failure("admin API: {method} {path} failed", failure,
                         method=request.method.decode("ascii", "replace"),
                         path=request.path.decode("utf-8", "replace"))
        return self._error(request, 500, "internal_error",
                           "the server failed to answer this request; its log says why")


# The spanner routes (/api/v1/spanner/...) and the /spanner page join
# AdminAPI.app on import.
import vigo.api.page  # noqa: E402, F401
import vigo.api.spanner  # noqa: E402, F401
