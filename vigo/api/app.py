"""The admin REST API: a Klein app composed of the server's parts.

``AdminAPI`` answers ``/healthz``, ``/metrics``, ``/api/v1/status``, the
token and API-token routes and the envoy routes itself, and is composed
with two other parts: the federation's routes, a Klein app of their own
mounted under ``/api/v1/spanner/`` (``vigo.api.spanner``), and the web
pages under ``/spanner`` (``vigo.api.page``; ``/`` redirects there). Each part
is built from what it uses, passed in by the wiring: the envoy routes call an
``IEnvoyOperations`` and the spanner routes an ``IFederationAdmin``, one object
per mode, so nothing here asks which mode the server runs in. Every answer is JSON, errors included
(``vigo.api.responses``). (One answer is Klein's own: a URL that is not UTF-8
gets a plain-text 400 before any route is matched.)
"""

import json

from klein import Klein
from prometheus_client import generate_latest

from vigo.api.page import FederationPage
from vigo.api.responses import (
    ApiError,
    authorized,
    json_errors,
    json_response,
    query_flag,
    query_value,
    read_object,
    shown,
)
from vigo.api.server import NoReplicaSet, ServerAPI
from vigo.api.spanner import SpannerAPI
from vigo.config import parse_duration

try:
    # What generate_latest writes; CONTENT_TYPE_LATEST names text format
    # 1.0.0 since prometheus_client 0.22.
    from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4 as METRICS_TYPE
except ImportError:  # pragma: no cover - older prometheus_client
    from prometheus_client import CONTENT_TYPE_LATEST as METRICS_TYPE

TOKEN_FIELDS = ("uses", "expires_in")
REASSIGN_FIELDS = ("to",)


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


def reassign_request(body):
    """The destination bolt (id or name) of a reassign body."""
    to = body.get("to")
    if not isinstance(to, str) or not to.strip():
        raise ApiError(400, "bad_request",
                       f"to must be the destination bolt's id or name, not {shown(to)}")
    return to.strip()


class AdminAPI:
    """The HTTPS admin API of one server.

    * ``tokens``: its ``ApiTokens`` (who may call), also minted and withdrawn here;
    * ``server_id``: its id; ``status()``: the server at a glance;
    * ``enrollment_tokens``: its ``EnrollmentTokens``;
    * ``envoys``: its ``IEnvoyOperations``; ``federation``: its ``IFederationAdmin``;
    * ``spanner``: the Klein app of its ``/api/v1/spanner/`` routes (default: the
      federation's ``SpannerAPI``; a standalone server's ``StandaloneSpannerAPI``);
    * ``registry``: the Prometheus registry ``/metrics`` serves;
    * ``clock``: an ``IReactorTime``;
    * ``replicas``: its ``IReplicaSet`` for the ``/api/v1/server/`` routes
      (default: ``NoReplicaSet``, HA off).
    """

    app = json_errors(Klein())

    def __init__(self, tokens, server_id, status, enrollment_tokens, envoys, federation,
                 registry, clock, spanner=None, replicas=None):
        self.tokens = tokens
        self.server_id = server_id
        self.status_of_server = status
        self.enrollment_tokens = enrollment_tokens
        self.envoys = envoys
        self.registry = registry
        self.clock = clock
        self.spanner = SpannerAPI(federation, tokens) if spanner is None else spanner
        self.page = FederationPage(federation, tokens, envoys)
        self.server = ServerAPI(NoReplicaSet(server_id) if replicas is None else replicas,
                                tokens)

    def resource(self):
        """The ``IResource`` to serve."""
        return self.app.resource()

    # -- mounted apps ------------------------------------------------------------

    @app.route("/api/v1/spanner/", branch=True, strict_slashes=False)
    def spanner_routes(self, request):
        """The federation's routes (``vigo.api.spanner``)."""
        return self.spanner.resource()

    @app.route("/api/v1/server/", branch=True, strict_slashes=False)
    def server_routes(self, request):
        """This server's replica set (``vigo.api.server``, docs/ha.md)."""
        return self.server.resource()

    # -- the web pages (vigo.api.page) -----------------------------------------------

    @app.route("/", methods=["GET"])
    def front(self, request):
        """The pages start at ``/spanner`` (no token needed to be sent there)."""
        request.redirect(b"/spanner")
        request.setHeader(b"cache-control", b"no-store")
        return b""

    @app.route("/spanner", methods=["GET"])
    def spanner_page(self, request):
        """The federation (or the standalone server) at a glance, for a browser."""
        return self.page.render(request)

    @app.route("/spanner/bolts/<bolt>", methods=["GET"])
    def bolt_page(self, request, bolt):
        """One bolt and its envoys (``q``, ``offline``, ``page``), for a browser."""
        return self.page.render_bolt(request, bolt)

    @app.route("/spanner/envoys/<envoy>", methods=["GET"])
    def envoy_page(self, request, envoy):
        """One envoy, for a browser."""
        return self.page.render_envoy(request, envoy)

    # -- unauthenticated -----------------------------------------------------

    @app.route("/healthz", methods=["GET"])
    def healthz(self, request):
        """Liveness, for load balancers (with HA: this node's role and epoch)."""
        answer = {"ok": True, "server_id": self.server_id}
        replica = self.server.replicas.status()
        if replica.get("ha"):
            answer.update(role=replica["role"], epoch=replica["epoch"])
        return json_response(request, answer)

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request):
        """Prometheus text exposition."""
        request.setHeader(b"content-type", METRICS_TYPE.encode("ascii"))
        return generate_latest(self.registry)

    # -- /api/v1 -------------------------------------------------------------

    @app.route("/api/v1/status", methods=["GET"])
    @authorized
    def status(self, request):
        """The server at a glance."""
        return json_response(request, self.status_of_server())

    @app.route("/api/v1/tokens", methods=["POST"])
    @authorized
    async def create_token(self, request):
        """Mint an enrollment token: ``{"uses": N, "expires_in": "1h"}``."""
        uses, expires_in = token_request(read_object(request, TOKEN_FIELDS))
        try:
            token = await self.enrollment_tokens.create(uses, expires_in)
        except ValueError as e:
            raise ApiError(400, "bad_request", str(e)) from None
        now = self.clock.seconds()
        return json_response(request, {
            "token": str(token),
            "token_id": token.token_id,
            "uses": uses,
            "expires_at": None if expires_in is None else now + expires_in,
        }, 201)

    @app.route("/api/v1/tokens", methods=["GET"])
    @authorized
    async def list_tokens(self, request):
        """The enrollment tokens this server minted (never their secrets)."""
        tokens = await self.enrollment_tokens.list()
        return json_response(request, {"tokens": tokens, "count": len(tokens)})

    @app.route("/api/v1/tokens/<token_id>", methods=["DELETE"])
    @authorized
    async def withdraw_token(self, request, token_id):
        """Withdraw an enrollment token: refused from now on."""
        return json_response(request, await self.enrollment_tokens.withdraw(token_id))

    @app.route("/api/v1/api-tokens", methods=["POST"])
    @authorized
    async def create_api_token(self, request):
        """Mint an admin API token for another operator or tool: ``{"name": ...}``."""
        body = read_object(request, ("name",))
        try:
            minted = await self.tokens.mint(body.get("name"))
        except ValueError as e:
            raise ApiError(400, "bad_request", str(e)) from None
        return json_response(request, minted, 201)

    @app.route("/api/v1/api-tokens", methods=["GET"])
    @authorized
    async def list_api_tokens(self, request):
        """The admin API tokens of this server (never their secrets)."""
        tokens = await self.tokens.tokens()
        return json_response(request, {"tokens": tokens, "count": len(tokens)})

    @app.route("/api/v1/api-tokens/<token_id>", methods=["DELETE"])
    @authorized
    async def withdraw_api_token(self, request, token_id):
        """Withdraw an admin API token: refused from now on."""
        return json_response(request, await self.tokens.withdraw(token_id))

    # -- envoys ----------------------------------------------------------------

    @app.route("/api/v1/envoys", methods=["GET"])
    @authorized
    async def list_envoys(self, request):
        """Every envoy once, by hostname, at the server that holds it; ``offline=1``
        keeps active ones not heard of late; ``bolt=ID`` only one bolt's (a bolt
        says which bolts did not answer); ``moved=1`` adds the copies a bolt
        keeps of the envoys it handed to another."""
        offline = query_flag(request, "offline")
        bolt = query_value(request, "bolt")
        moved = query_flag(request, "moved")
        return json_response(request, await self.envoys.list(bolt=bolt, offline=offline,
                                                             moved=moved))

    @app.route("/api/v1/envoys/<envoy>", methods=["GET"])
    @authorized
    async def show_envoy(self, request, envoy):
        """One envoy, by id or unique hostname (on whichever bolt has it)."""
        return json_response(request, await self.envoys.show(envoy))

    @app.route("/api/v1/envoys/<envoy>/push", methods=["POST"])
    @authorized
    async def push_envoy(self, request, envoy):
        """Force-push one envoy: now if connected, else at its next attach."""
        read_object(request, ())
        return json_response(request, await self.envoys.push(envoy), 202)

    @app.route("/api/v1/envoys/<envoy>", methods=["DELETE"])
    @authorized
    async def revoke_envoy(self, request, envoy):
        """Revoke one envoy for good."""
        return json_response(request, await self.envoys.revoke(envoy))

    @app.route("/api/v1/envoys/<envoy>/reassign", methods=["POST"])
    @authorized
    async def reassign_envoy(self, request, envoy):
        """Move an envoy (by id or hostname) to another bolt; it keeps its id and key."""
        to = reassign_request(read_object(request, REASSIGN_FIELDS))
        return json_response(request, await self.envoys.reassign(envoy, to))
