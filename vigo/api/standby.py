"""A standby's API: read-only, and every write refused naming the primary.

A standby holds a copy of its primary's database that changes under it as
entries arrive, so it answers from the database itself, never from a
snapshot taken at start: the envoy lists and shows, its status and the
replica set's (``/api/v1/server/``, where ``promote`` is). API tokens are
the primary's (replicated), read again when one is not known yet. Any other
route, and any write, is refused with 503 ``standby`` and the primary's API
URL, retryable there.
"""

import json
import time

from klein import Klein
from prometheus_client import generate_latest
from twisted.internet import defer

from vigo.api.auth import bearer_token
from vigo.api.responses import authorized, json_errors, json_response, query_flag
from vigo.api.server import ServerAPI
from vigo.fleet.index import ACTIVE, MOVED, EnvoyRecord
from vigo.interfaces.errors import Refusal
from vigo.tokens import hash_secret

TOKENS_RELOAD = 1.0


def read_envoys(cursor, bundle_for):
    """Store job: every envoy record in the database (``bundle_for(hostname)``
    its hostcrates bundle)."""
    rows = cursor.execute(
        "SELECT id, hostname, public_key, state, enrolled_at, last_seen, last_seq, "
        "seq_reserved, checkins, applied_version, pending_push, redirect FROM envoys").fetchall()
    return [EnvoyRecord(id, hostname, key, bundle_for(hostname), state=state, enrolled_at=enrolled,
                        last_seen=seen, last_seq=seq, seq_reserved=reserved, checkins=checkins,
                        applied_version=applied, pending_push=bool(pending),
                        redirect=json.loads(redirect) if redirect else None)
            for (id, hostname, key, state, enrolled, seen, seq, reserved, checkins, applied,
                 pending, redirect) in rows]


class StandbyTokens:
    """The API tokens in a standby's database, read again (at most once a
    second) when a token is not known."""

    def __init__(self, store, clock=time.monotonic):
        self.store = store
        self.clock = clock
        self._hashes = set()
        self._read_at = None

    def load(self):
        def read(cursor):
            return {bytes(row[0]) for row in cursor.execute("SELECT secret_hash FROM api_tokens")}

        def loaded(hashes):
            self._hashes = hashes
            self._read_at = self.clock()

        return self.store.run(read).addCallback(loaded)

    def check(self, authorization):
        token = bearer_token(authorization)
        if token is None:
            return False
        if hash_secret(token) in self._hashes:
            return True
        if self._read_at is None or self.clock() - self._read_at >= TOKENS_RELOAD:
            self.load()  # for the next request: this one is refused
        return False


class StandbyAPI:
    """A standby's API (see the module docstring)."""

    app = json_errors(Klein())

    def __init__(self, store, tokens, replicas, status, registry, clock, primary_api,
                 hostcrates):
        self.store = store
        self.hostcrates = hostcrates
        self.tokens = tokens
        self.status_of_server = status
        self.registry = registry
        self.clock = clock
        self.primary_api = primary_api
        self.server = ServerAPI(replicas, tokens)

    def resource(self):
        return self.app.resource()

    def _refusal(self):
        url = self.primary_api()
        return Refusal("standby", "this server is a standby: it answers reads only; send "
                       "writes to the primary%s" % (" at %s" % (url,) if url else ""),
                       retryable=True)

    @app.route("/api/v1/server/", branch=True, strict_slashes=False)
    def server_routes(self, request):
        return self.server.resource()

    @app.route("/healthz", methods=["GET"])
    def healthz(self, request):
        status = self.status_of_server()
        return json_response(request, {"ok": True, "server_id": status["server_id"],
                                       "role": "standby",
                                       "epoch": status["replica"]["epoch"]})

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request):
        request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
        return generate_latest(self.registry)

    @app.route("/api/v1/status", methods=["GET"])
    @authorized
    def status(self, request):
        return json_response(request, self.status_of_server())

    @app.route("/api/v1/envoys", methods=["GET"])
    @authorized
    async def list_envoys(self, request):
        records = await self.store.run(read_envoys, self.hostcrates.bundle_for)
        records.sort(key=lambda r: (r.hostname, r.id))
        now = self.clock.seconds()
        if not query_flag(request, "moved"):
            records = [r for r in records if r.state != MOVED]
        if query_flag(request, "offline"):
            records = [r for r in records if r.state == ACTIVE and not r.online]
        envoys = [record.describe(now) for record in records]
        return json_response(request, {"envoys": envoys, "count": len(envoys)})

    @app.route("/api/v1/envoys/<envoy>", methods=["GET"])
    @authorized
    async def show_envoy(self, request, envoy):
        records = await self.store.run(read_envoys, self.hostcrates.bundle_for)
        for record in records:
            if envoy in (record.id, record.hostname) and (
                    record.id == envoy or record.state == ACTIVE):
                return json_response(request, record.describe(self.clock.seconds()))
        raise Refusal("not_found", "no envoy %r" % (envoy,))

    @app.route("/", branch=True)
    def anything_else(self, request):
        return defer.fail(self._refusal())
