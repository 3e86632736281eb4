"""The spanner routes of the admin API: ``/api/v1/spanner/...``.

They join ``AdminAPI.app`` when this module is imported (``vigo.api.app``
imports it at its end), so they share its JSON errors and its ``authorized``
check. Each one asks the server's ``spanner`` service; a standalone server has
none, and every route here then answers ``404 not_spanner``, except
``status``, which says the server is standalone. What the service refuses
(``SpannerRefusal``) is answered by ``AdminAPI`` with the refusal's status.

Every route needs the bearer token except the roster snapshot, which bolts and
tools fetch with ``If-None-Match`` to learn whether the roster changed.

A bolt's envoys and a push of all of them are asked of that bolt over peer
RPC (``vigo.spanner.reads``); an envoy is moved to another bolt with
``POST /api/v1/envoys/{id}/reassign`` (``vigo.plugins.vigo_reassign``). A
bolt is drained with ``POST .../bolts/{id}/drain`` (progress: ``GET``; it runs
at that bolt, ``vigo.plugins.vigo_drain``) and removed with ``DELETE
.../bolts/{id}`` (``vigo.spanner.bolt_ops``).
"""

import inspect
import json

from twisted.internet import defer

from vigo.api.app import (
    JSON_TYPE,
    AdminAPI,
    ApiError,
    authorized,
    query_flag,
    query_value,
    read_object,
)
from vigo.config import parse_duration

INIT_FIELDS = ("name", "patterns")
INVITE_FIELDS = ("expires_in",)
JOIN_FIELDS = ("token",)
REASSIGN_FIELDS = ("to",)
DRAIN_FIELDS = ("to",)
INVITE_DEFAULT = 3600.0
INVITE_MAX = 24 * 3600.0
NOT_SPANNER = "this server runs standalone; start it with --mode=spanner"

route = AdminAPI.app.route


def _spanner(api):
    """The server's spanner service; ``ApiError`` 404 on a standalone server."""
    spanner = getattr(api.server, "spanner", None)
    if spanner is None:
        raise ApiError(404, "not_spanner", NOT_SPANNER)
    return spanner


async def _settled(value):
    """``value``, waited for when it is a Deferred or a coroutine."""
    if isinstance(value, defer.Deferred) or inspect.isawaitable(value):
        value = await value
    return value


def _shown(value):
    return json.dumps(value)[:80]


def _bad(detail):
    return ApiError(400, "bad_request", detail)


def init_request(body):
    """``(name, patterns)`` from an init body; ``ApiError`` names the bad field."""
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise _bad(f"name must be a non-empty string, not {_shown(name)}")
    patterns = body.get("patterns")
    if patterns is not None:
        if not isinstance(patterns, list) or not all(
                isinstance(p, str) and p.strip() for p in patterns):
            raise _bad("patterns must be an array of non-empty strings (hostname globs), "
                       f"not {_shown(patterns)}")
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
                   f"seconds, not {_shown(expires_in)}") from None
    if not 0 < seconds <= INVITE_MAX:
        raise _bad(f"expires_in must be more than 0 and at most 24h, not {_shown(expires_in)}")
    return seconds


def join_request(body):
    """The invite token text of a join body."""
    token = body.get("token")
    if not isinstance(token, str) or not token.strip():
        raise _bad("token must be the invite token (a non-empty string) that "
                   f"'vigocli spanner bolt invite' printed, not {_shown(token)}")
    return token.strip()


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


def standalone_status(server):
    """``/api/v1/spanner/status`` of a server without a spanner service."""
    return {"mode": "standalone", "state": "standalone", "bolt_id": server.identity.id,
            "hint": NOT_SPANNER + " to found or join a federation"}


# -- the roster snapshot (no token) -----------------------------------------------


@route("/api/v1/spanner/roster", methods=["GET"])
async def spanner_roster(api, request):
    """The signed roster snapshot; ``ETag`` is the roster digest."""
    etag, body = await _settled(_spanner(api).snapshot())
    etag = etag.strip('"')
    request.setHeader(b"etag", b'"%s"' % etag.encode("ascii"))
    request.setHeader(b"cache-control", b"no-cache")
    if etag_matches(request.requestHeaders.getRawHeaders(b"if-none-match", []), etag):
        request.setResponseCode(304)
        return b""
    request.setHeader(b"content-type", JSON_TYPE)
    return body


# -- this bolt ------------------------------------------------------------------


@route("/api/v1/spanner/status", methods=["GET"])
@authorized
async def spanner_status(api, request):
    """This bolt and its federation at a glance (``mode: standalone`` without one)."""
    spanner = getattr(api.server, "spanner", None)
    if spanner is None:
        return api._json(request, standalone_status(api.server))
    return api._json(request, await _settled(spanner.status()))


@route("/api/v1/spanner/init", methods=["POST"])
@authorized
async def spanner_init(api, request):
    """Found a federation with this bolt as its first member."""
    spanner = _spanner(api)
    name, patterns = init_request(read_object(request, INIT_FIELDS))
    status = await _settled(spanner.init(name=name, patterns=patterns))
    return api._json(request, status, 201)


@route("/api/v1/spanner/invite", methods=["POST"])
@authorized
async def spanner_invite(api, request):
    """Mint a one-shot invite for another server to join with."""
    spanner = _spanner(api)
    expires_in = invite_request(read_object(request, INVITE_FIELDS))
    return api._json(request, await _settled(spanner.invite(expires_in)), 201)


@route("/api/v1/spanner/join", methods=["POST"])
@authorized
async def spanner_join(api, request):
    """Join the federation an invite token names."""
    spanner = _spanner(api)
    token = join_request(read_object(request, JOIN_FIELDS))
    return api._json(request, await _settled(spanner.join(token)))


# -- the bolts --------------------------------------------------------------------


@route("/api/v1/spanner/bolts", methods=["GET"])
@authorized
async def spanner_bolts(api, request):
    """Every bolt in the roster."""
    bolts = list(await _settled(_spanner(api).bolts()))
    return api._json(request, {"bolts": bolts, "count": len(bolts)})


@route("/api/v1/spanner/bolts/<bolt>", methods=["GET"])
@authorized
async def spanner_bolt(api, request, bolt):
    """One bolt, by id or unique name."""
    return api._json(request, await _settled(_spanner(api).bolt(bolt)))


@route("/api/v1/spanner/owner", methods=["GET"])
@authorized
async def spanner_owner(api, request):
    """Which bolt owns a hostname (``hostname=``), and why; ``envoy=`` lets an
    envoy's override count."""
    hostname = query_value(request, "hostname")
    if not hostname:
        raise _bad("give the hostname to route: ?hostname=web1.example.com")
    return api._json(request, await _settled(
        _spanner(api).owner(hostname, query_value(request, "envoy"))))


@route("/api/v1/spanner/bolts/<bolt>/actions/<action>", methods=["POST"])
@authorized
async def spanner_act(api, request, bolt, action):
    """Run a peer action on a bolt; the body is the action's arguments."""
    spanner = _spanner(api)
    args = read_object(request, None)
    bolt_id = await _settled(spanner.resolve(bolt))
    result = await _settled(spanner.act(bolt_id, action, args))
    return api._json(request, {"bolt_id": bolt_id, "action": action, "result": result})


@route("/api/v1/spanner/bolts/<bolt>/envoys", methods=["GET"])
@authorized
async def spanner_bolt_envoys(api, request, bolt):
    """One bolt's envoys, asked of it live; ``offline=1`` as for ``/api/v1/envoys``."""
    spanner = _spanner(api)
    offline = query_flag(request, "offline")
    return api._json(request, await _settled(spanner.bolt_envoys(bolt, offline=offline)))


@route("/api/v1/spanner/bolts/<bolt>/push", methods=["POST"])
@authorized
async def spanner_bolt_push(api, request, bolt):
    """Force-push every active envoy of one bolt."""
    spanner = _spanner(api)
    read_object(request, ())
    return api._json(request, await _settled(spanner.push_bolt(bolt)), 202)


# -- envoys across bolts ------------------------------------------------------------


def reassign_request(body):
    """The destination bolt (id or name) of a reassign body."""
    to = body.get("to")
    if not isinstance(to, str) or not to.strip():
        raise _bad(f"to must be the destination bolt's id or name, not {_shown(to)}")
    return to.strip()


@route("/api/v1/envoys/<envoy>/reassign", methods=["POST"])
@authorized
async def reassign_envoy(api, request, envoy):
    """Move an envoy (by id or hostname) to another bolt; it keeps its id and key."""
    spanner = _spanner(api)
    to = reassign_request(read_object(request, REASSIGN_FIELDS))
    return api._json(request, await _settled(spanner.reassign(envoy, to)))


# -- draining and removing bolts ---------------------------------------------------


def drain_request(body):
    """The destination bolt (id or name) of a drain body, or None (each envoy's owner)."""
    to = body.get("to")
    if to is None:
        return None
    if not isinstance(to, str) or not to.strip():
        raise _bad(f"to must be the destination bolt's id or name, not {_shown(to)}")
    return to.strip()


@route("/api/v1/spanner/bolts/<bolt>/drain", methods=["POST"])
@authorized
async def spanner_bolt_drain(api, request, bolt):
    """Start draining a bolt; it runs there, in the background. The progress."""
    spanner = _spanner(api)
    to = drain_request(read_object(request, DRAIN_FIELDS))
    return api._json(request, await _settled(spanner.drain(bolt, to)), 202)


@route("/api/v1/spanner/bolts/<bolt>/drain", methods=["GET"])
@authorized
async def spanner_bolt_drain_status(api, request, bolt):
    """The progress of a bolt's drain, asked of it."""
    return api._json(request, await _settled(_spanner(api).drain_status(bolt)))


@route("/api/v1/spanner/bolts/<bolt>", methods=["DELETE"])
@authorized
async def spanner_bolt_remove(api, request, bolt):
    """Remove a drained bolt for good (``force=1``: one that cannot be reached)."""
    spanner = _spanner(api)
    force = query_flag(request, "force")
    return api._json(request, await _settled(spanner.remove_bolt(bolt, force=force)))
