"""The federation's routes of the admin API: ``/api/v1/spanner/...``.

``SpannerAPI`` is its own Klein app, mounted under ``/api/v1/spanner/`` by
``vigo.api.app.AdminAPI``; it shares the JSON errors and the bearer-token
check of ``vigo.api.responses``. Each route asks a bolt's
``IFederationAdmin`` (``vigo.spanner.admin.BoltAdmin``); a refusal from below
is answered with the status its code calls for. A standalone server is wired
with ``StandaloneSpannerAPI`` instead: ``status`` says it is standalone, every
other route answers ``404 not_spanner``; its ``IFederationAdmin`` (for the
page and that status) is ``NoFederation``.

Every route needs the bearer token except the roster snapshot, which bolts and
tools fetch with ``If-None-Match`` to learn whether the roster changed.
"""


from klein import Klein
from zope.interface import implementer

from vigo.api.responses import (
    JSON_TYPE,
    ApiError,
    authorized,
    json_errors,
    json_response,
    query_flag,
    query_value,
    read_object,
    settled,
    shown,
)
from vigo.config import parse_duration
from vigo.interfaces.components import IFederationAdmin
from vigo.interfaces.errors import Refusal

INIT_FIELDS = ("name", "patterns")
INVITE_FIELDS = ("expires_in",)
JOIN_FIELDS = ("token",)
DRAIN_FIELDS = ("to",)
INVITE_DEFAULT = 3600.0
INVITE_MAX = 24 * 3600.0
NOT_SPANNER = "this server runs standalone; start it with --mode=spanner"


class StandaloneSpannerAPI:
    """The ``/api/v1/spanner/`` routes of a standalone server: ``status`` says it
    is standalone; every other route answers ``404 not_spanner`` (after the
    token check, as the federation's routes do), whatever the request holds."""

    app = json_errors(Klein())

    def __init__(self, federation, tokens):
        self.federation = federation
        self.tokens = tokens

    def resource(self):
        return self.app.resource()

    @app.route("/status", methods=["GET"])
    @authorized
    def status(self, request):
        return json_response(request, self.federation.status())

    @app.route("/roster", methods=["GET"])
    def roster(self, request):
        raise Refusal("not_spanner", NOT_SPANNER)

    @app.route("/", branch=True, strict_slashes=False)
    @authorized
    def anything_else(self, request):
        raise Refusal("not_spanner", NOT_SPANNER)


@implementer(IFederationAdmin)
class NoFederation:
    """The ``IFederationAdmin`` of a standalone server: it has no federation."""

    def __init__(self, server_id):
        self.server_id = server_id

    def status(self):
        return {"mode": "standalone", "state": "standalone", "bolt_id": self.server_id,
                "hint": NOT_SPANNER + " to found or join a federation"}

    def _refuse(self, *args, **kwargs):
        raise Refusal("not_spanner", NOT_SPANNER)

    init = invite = join = snapshot = bolts = bolt = resolve = owner = act = actions = _refuse
    bolt_envoys = push_bolt = drain = drain_status = remove_bolt = _refuse


def _bad(detail):
    return ApiError(400, "bad_request", detail)


def init_request(body):
    """``(name, patterns)`` from an init body; ``ApiError`` names the bad field."""
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise _bad(f"name must be a non-empty string, not {shown(name)}")
    patterns = body.get("patterns")
    if patterns is not None:
        if not isinstance(patterns, list) or not all(
                isinstance(p, str) and p.strip() for p in patterns):
            raise _bad("patterns must be an array of non-empty strings (hostname globs), "
                       f"not {shown(patterns)}")
    return name, patterns


def invite_request(body):
    """The invite lifetime in seconds: ``expires_in``, default 1h, at most 24h."""
    expires_in = body.get("expires_in")
    if expires_in is None:
        return INVITE_DEFAULT
    try:
        seconds = parse_duration(expires_in)
    except ValueError:
        raise _bad("expires_in must be a duration like \"1h\" or \"90m\", or a number of "
                   f"seconds, not {shown(expires_in)}") from None
    if not 0 < seconds <= INVITE_MAX:
        raise _bad(f"expires_in must be more than 0 and at most 24h, not {shown(expires_in)}")
    return seconds


def join_request(body):
    """The invite token text of a join body."""
    token = body.get("token")
    if not isinstance(token, str) or not token.strip():
        raise _bad("token must be the invite token (a non-empty string) that "
                   f"'vigocli spanner bolt invite' printed, not {shown(token)}")
    return token.strip()


def drain_request(body):
    """The destination bolt (id or name) of a drain body, or None (each envoy's owner)."""
    to = body.get("to")
    if to is None:
        return None
    if not isinstance(to, str) or not to.strip():
        raise _bad(f"to must be the destination bolt's id or name, not {shown(to)}")
    return to.strip()


def etag_matches(values, etag):
    """Whether any ``If-None-Match`` header value names ``etag``.

    Each value may be a list; tags may be quoted or not, weak (``W/``) or
    ``*``.
    """
    for value in values:
        for tag in value.decode("latin-1").split(","):
            tag = tag.strip()
            if tag.startswith("W/"):
                tag = tag[2:]
            if tag == "*" or (tag and tag.strip('"') == etag):
                return True
    return False


class SpannerAPI:
    """The ``/api/v1/spanner/`` routes over ``federation`` (an
    ``IFederationAdmin``); ``tokens`` (``ApiTokens``) says who may call."""

    app = json_errors(Klein())

    def __init__(self, federation, tokens):
        self.federation = federation
        self.tokens = tokens

    def resource(self):
        return self.app.resource()

    # -- the roster snapshot (no token) -------------------------------------------

    @app.route("/roster", methods=["GET"])
    async def roster(self, request):
        """The signed roster snapshot; ``ETag`` is the roster digest."""
        etag, body = await settled(self.federation.snapshot())
        etag = etag.strip('"')
        request.setHeader(b"etag", b'"%s"' % etag.encode("ascii"))
        request.setHeader(b"cache-control", b"no-cache")
        if etag_matches(request.requestHeaders.getRawHeaders(b"if-none-match", []), etag):
            request.setResponseCode(304)
            return b""
        request.setHeader(b"content-type", JSON_TYPE)
        return body

    # -- this bolt --------------------------------------------------------------

    @app.route("/status", methods=["GET"])
    @authorized
    async def status(self, request):
        """This bolt and its federation at a glance (``mode: standalone`` without one)."""
        return json_response(request, await settled(self.federation.status()))

    @app.route("/init", methods=["POST"])
    @authorized
    async def init(self, request):
        """Found a federation with this bolt as its first member."""
        name, patterns = init_request(read_object(request, INIT_FIELDS))
        status = await settled(self.federation.init(name=name, patterns=patterns))
        return json_response(request, status, 201)

    @app.route("/invite", methods=["POST"])
    @authorized
    async def invite(self, request):
        """Mint a one-shot invite for another server to join with."""
        expires_in = invite_request(read_object(request, INVITE_FIELDS))
        return json_response(request, await settled(self.federation.invite(expires_in)), 201)

    @app.route("/join", methods=["POST"])
    @authorized
    async def join(self, request):
        """Join the federation an invite token names."""
        token = join_request(read_object(request, JOIN_FIELDS))
        return json_response(request, await settled(self.federation.join(token)))

    # -- the bolts ----------------------------------------------------------------

    @app.route("/bolts", methods=["GET"])
    @authorized
    async def bolts(self, request):
        """Every bolt in the roster."""
        bolts = list(await settled(self.federation.bolts()))
        return json_response(request, {"bolts": bolts, "count": len(bolts)})

    @app.route("/bolts/<bolt>", methods=["GET"])
    @authorized
    async def bolt(self, request, bolt):
        """One bolt, by id or unique name."""
        return json_response(request, await settled(self.federation.bolt(bolt)))

    @app.route("/owner", methods=["GET"])
    @authorized
    async def owner(self, request):
        """Which bolt owns a hostname (``hostname=``), and why; ``envoy=`` lets an
        envoy's override count."""
        hostname = query_value(request, "hostname")
        if not hostname:
            raise _bad("give the hostname to route: ?hostname=web1.example.com")
        try:
            owner = await settled(self.federation.owner(hostname, query_value(request, "envoy")))
        except Refusal as e:
            if e.code == "no_owner":  # no such owner, here: not a conflict
                raise ApiError(404, e.code, e.reason) from None
            raise
        return json_response(request, owner)

    @app.route("/bolts/<bolt>/actions/<action>", methods=["POST"])
    @authorized
    async def act(self, request, bolt, action):
        """Run a peer action on a bolt; the body is the action's arguments."""
        args = read_object(request, None)
        bolt_id = await settled(self.federation.resolve(bolt))
        result = await settled(self.federation.act(bolt_id, action, args))
        return json_response(request, {"bolt_id": bolt_id, "action": action, "result": result})

    @app.route("/bolts/<bolt>/actions", methods=["GET"])
    @authorized
    async def actions(self, request, bolt):
        """The peer actions loaded on a bolt, and where each came from."""
        return json_response(request, await settled(self.federation.actions(bolt)))

    @app.route("/bolts/<bolt>/envoys", methods=["GET"])
    @authorized
    async def bolt_envoys(self, request, bolt):
        """One bolt's envoys, asked of it live; ``offline=1`` as for ``/api/v1/envoys``."""
        offline = query_flag(request, "offline")
        return json_response(request, await settled(
            self.federation.bolt_envoys(bolt, offline=offline)))

    @app.route("/bolts/<bolt>/push", methods=["POST"])
    @authorized
    async def bolt_push(self, request, bolt):
        """Force-push every active envoy of one bolt."""
        read_object(request, ())
        return json_response(request, await settled(self.federation.push_bolt(bolt)), 202)

    # -- draining and removing bolts ---------------------------------------------

    @app.route("/bolts/<bolt>/drain", methods=["POST"])
    @authorized
    async def drain(self, request, bolt):
        """Start draining a bolt; it runs there, in the background. The progress."""
        to = drain_request(read_object(request, DRAIN_FIELDS))
        return json_response(request, await settled(self.federation.drain(bolt, to)), 202)

    @app.route("/bolts/<bolt>/drain", methods=["GET"])
    @authorized
    async def drain_status(self, request, bolt):
        """The progress of a bolt's drain, asked of it."""
        return json_response(request, await settled(self.federation.drain_status(bolt)))

    @app.route("/bolts/<bolt>", methods=["DELETE"])
    @authorized
    async def remove(self, request, bolt):
        """Remove a drained bolt for good (``force=1``: one that cannot be reached)."""
        force = query_flag(request, "force")
        return json_response(request, await settled(
            self.federation.remove_bolt(bolt, force=force)))
