"""The ``/api/v1/server/`` routes: this server's replica set (docs/ha.md).

``ServerAPI`` is a Klein app of its own, mounted by the admin API (and by a
standby's read-only API) and built from an ``IReplicaSet``: the host's
``ReplicaSet`` when ``peers.listen`` is set, else ``NoReplicaSet``, which
says HA is off.
"""

from klein import Klein
from twisted.internet import defer
from zope.interface import implementer

from vigo.api.responses import ApiError, authorized, json_errors, json_response, read_object
from vigo.config import parse_duration
from vigo.interfaces.components import IReplicaSet
from vigo.interfaces.errors import Refusal

DEFAULT_INVITE_EXPIRY = 3600.0
HA_OFF = ("high availability is off on this server: set peers.listen in server.yaml "
          "(docs/ha.md)")


def invite_request(body):
    expires_in = body.get("expires_in", DEFAULT_INVITE_EXPIRY)
    try:
        expires_in = parse_duration(expires_in)
    except ValueError:
        raise ApiError(400, "bad_request", "expires_in must be a duration like \"1h\", not "
                       "%.80r" % (expires_in,)) from None
    if expires_in <= 0:
        raise ApiError(400, "bad_request", "expires_in must be positive")
    return expires_in


def join_request(body):
    token = body.get("token")
    if not isinstance(token, str) or not token.strip():
        raise ApiError(400, "bad_request", "token must be a standby invitation (vgos_...)")
    return token.strip()


class ServerAPI:
    """The routes (see the module docstring); ``tokens`` decides who may call."""

    app = json_errors(Klein())

    def __init__(self, replicas, tokens):
        self.replicas = replicas
        self.tokens = tokens

    def resource(self):
        return self.app.resource()

    @app.route("/status", methods=["GET"])
    @authorized
    async def status(self, request):
        return json_response(request, await defer.maybeDeferred(self.replicas.status))

    @app.route("/standby", methods=["GET"])
    @authorized
    async def standbys(self, request):
        return json_response(request, await defer.maybeDeferred(self.replicas.standbys))

    @app.route("/standby/invite", methods=["POST"])
    @authorized
    async def invite(self, request):
        expires_in = invite_request(read_object(request, ("expires_in",)))
        answer = await defer.maybeDeferred(self.replicas.invite, expires_in)
        return json_response(request, answer, 201)

    @app.route("/standby/join", methods=["POST"])
    @authorized
    async def join(self, request):
        token = join_request(read_object(request, ("token",)))
        return json_response(request, await defer.maybeDeferred(self.replicas.join, token))

    @app.route("/standby/<node_id>", methods=["DELETE"])
    @authorized
    async def remove(self, request, node_id):
        return json_response(request, await defer.maybeDeferred(self.replicas.remove, node_id))

    @app.route("/promote", methods=["POST"])
    @authorized
    async def promote(self, request):
        read_object(request, ())
        return json_response(request, await defer.maybeDeferred(self.replicas.promote))


@implementer(IReplicaSet)
class NoReplicaSet:
    """A server without HA: a primary of a set of one, that says so."""

    def __init__(self, server_id):
        self.server_id = server_id

    def status(self):
        return {"ha": False, "role": "primary", "node_id": None, "server_id": self.server_id,
                "epoch": 0, "primary": None, "standbys": [], "sync": 0}

    def standbys(self):
        return {"standbys": []}

    def _off(self, *args):
        raise Refusal("ha_off", HA_OFF)

    invite = join = remove = _off

    def promote(self):
        self._off()
