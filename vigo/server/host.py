"""The root service when high availability is on: this node, in whatever role it has.

``ServerHost`` holds what outlives a role (the node's key and
``replica.json``) and builds the server for the current role: a primary is
the usual server of its mode (``vigo.server.standalone`` or
``vigo.server.spanner``) with a ``PrimaryReplication`` wired in; a standby
is ``vigo.server.standby``'s. When the role changes it stops that tree and
builds the next one, in the same process:

* ``join``: a fresh primary redeems an invitation and becomes a standby;
* a base copy arrived: the standby is rebuilt, installing it first;
* ``promote``: a standby becomes the primary of the next epoch (written to
  ``replica.json`` before anything else, and raised in the database by the
  new primary's first entry), then tells the other members to follow it;
* fenced: a primary that learns of a higher epoch becomes a standby of the
  new primary.

``ReplicaSet`` is the ``IReplicaSet`` the API's ``/api/v1/server/`` routes
call, whichever tree is current.
"""

from twisted.application import service
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vigo.interfaces.components import IReplicaSet
from vigo.interfaces.errors import Refusal
from vigo.metrics import ReplicationCollector
from vigo.server.peer.base_copy import install_base_copy, pending_base_copy
from vigo.server.peer.channel import Role, dial
from vigo.server.peer.node import NodeState, node_identity
from vigo.server.peer.pairing import StandbyInvite
from vigo.server.peer.protocol import Join
from vigo.server.service import stop_reactor
from vigo.tokens import TokenError

_PENDING = object()


class ServerHost(service.MultiService):
    """See the module docstring."""

    log = Logger()

    def __init__(self, config, reactor, exit_on_failure=False):
        service.MultiService.__init__(self)
        self.config = config
        self.reactor = reactor
        self.exit_on_failure = exit_on_failure
        self.data_dir = config.server.data_dir
        self.node = NodeState.load(self.data_dir)
        self.node_identity = node_identity(self.data_dir)
        self.replicas = ReplicaSet(self)
        self.current = None
        self._rebuilding = None
        self._settled = _PENDING
        self._waiting = []
        self.lsn = 0
        self._reached = []

    # -- building -------------------------------------------------------------------

    @property
    def replication(self):
        """The current primary's ``PrimaryReplication`` (None on a standby)."""
        return getattr(self.current, "replication", None)

    @property
    def follower(self):
        return getattr(self.current, "follower", None)

    def addresses(self, advertised):
        """``addresses()`` of this node as members dial it, from its ``Advertised``."""
        def addresses():
            return {"envoy": str(advertised.envoy()),
                    "api": "https://%s" % (advertised.address("api"),),
                    "replication": str(advertised.address("replication"))}
        return addresses

    def build(self, exit_on_failure=False):
        if self.node.standby:
            from vigo.server.standby import build
            return build(self.config, self.reactor, self)
        if self.config.spanner.mode == "spanner":
            from vigo.server.spanner import build
        else:
            from vigo.server.standalone import build
        return build(self.config, self.reactor, exit_on_failure=exit_on_failure, host=self)

    def startService(self):
        service.MultiService.startService(self)
        self._begin(defer.ensureDeferred(self._start_tree(self.exit_on_failure)))

    def _begin(self, d):
        """Track the tree being started by ``d``: ``ready`` waits for it."""
        self._settled = _PENDING
        d.addBoth(self._settle)

    def _settle(self, result):
        self._settled = result
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)
        if isinstance(result, Failure) and self.running:
            self._failed(result)
        return None

    async def _start_tree(self, exit_on_failure=False):
        """Build and start the tree of the node's role (a standby installs the
        base copy it received first, with no store open)."""
        if self.node.standby and pending_base_copy(self.data_dir):
            lsn, epoch = await threads.deferToThreadPool(
                self.reactor, self.reactor.getThreadPool(), install_base_copy, self.data_dir)
            self.node.needs_base_copy = False
            self.save_node(self.node)
            self.log.info("installed the base copy: LSN {lsn}, epoch {epoch}", lsn=lsn,
                          epoch=epoch)
        server = self.build(exit_on_failure)
        self.current = server
        server.setServiceParent(self)
        await server.ready
        return server

    def _failed(self, reason):
        self.log.failure("this node's server failed to start", reason)
        if self.exit_on_failure:
            stop_reactor(self.reactor)  # the tree may have stopped it already

    @property
    def ready(self):
        """A Deferred that fires with the current tree once it is ready."""
        if self._settled is _PENDING:
            d = defer.Deferred()
            self._waiting.append(d)
            return d
        if isinstance(self._settled, Failure):
            return defer.fail(self._settled)
        return defer.succeed(self._settled)

    def rebuild(self, why, between=None):
        """Stop the current tree and build the one of the node's role; a
        Deferred that fires when it is ready. ``between()`` runs once the old
        tree is stopped (a promotion changes the role there: until then the
        standby goes on redirecting envoys to the primary it knows)."""
        if self._rebuilding is not None:
            return self._rebuilding
        self.log.info("rebuilding this node's server: {why}", why=why)

        async def swap():
            old, self.current = self.current, None
            if old is not None:
                await defer.maybeDeferred(old.disownServiceParent)
            if between is not None:
                between()
            return await self._start_tree()

        self._rebuilding = defer.ensureDeferred(swap())
        self._begin(self._rebuilding)
        ready = self.ready

        def done(result):
            self._rebuilding = None
            return result

        ready.addBoth(done)
        self._rebuilding = ready
        return ready

    def stopService(self):
        return service.MultiService.stopService(self)

    def reload(self, config):
        """SIGHUP: apply what ``config`` changes that can change live to the
        current tree; the trees built next are built from what was applied
        (``vigo.server.reload``). A Deferred of its ``Report``."""
        from vigo.server.reload import reload_host

        return defer.ensureDeferred(reload_host(self, config))

    def save_node(self, node):
        node.save(self.data_dir)

    def applied(self, lsn):
        """A standby of this node applied entries up to ``lsn``."""
        self.lsn = lsn
        waiting, self._reached = self._reached, []
        for target, d in waiting:
            if lsn >= target:
                d.callback(lsn)
            else:
                self._reached.append((target, d))

    def reached(self, lsn):
        """A Deferred that fires once this node, as a standby, holds ``lsn``."""
        if self.follower is not None and self.lsn >= lsn:
            return defer.succeed(self.lsn)
        d = defer.Deferred()
        self._reached.append((lsn, d))
        return d

    # -- role changes -----------------------------------------------------------------

    def base_copy_received(self):
        return self.rebuild("a base copy arrived")

    def fenced(self, epoch, primary_id, address, fingerprint):
        self.node.follow(epoch, primary_id, address, fingerprint)
        self.save_node(self.node)
        return self.rebuild("fenced by %s at epoch %d" % (primary_id or "a newer primary",
                                                           epoch))

    @defer.inlineCallbacks
    def promote(self):
        follower = self.follower
        if follower is None:
            raise Refusal("bad_request", "this node is the primary already (epoch %d)"
                          % (self.node.epoch,))
        if self.node.needs_base_copy:
            raise Refusal("bad_request", "this standby has no base copy yet: it holds nothing "
                          "to serve; promote another standby")
        epoch = max(self.node.epoch, follower.epoch) + 1
        lsn = follower.lsn

        def become_primary():
            self.node.promoted(epoch)
            self.save_node(self.node)  # durable before the primary says anything

        yield self.rebuild("promoted to epoch %d" % (epoch,), between=become_primary)
        replication = self.replication
        if replication is not None:
            replication.announce()
        return {"role": "primary", "epoch": epoch, "lsn": lsn, "node_id": self.node_identity.id}

    @defer.inlineCallbacks
    def join(self, token_text):
        try:
            invite = StandbyInvite.decode(token_text)
        except TokenError as e:
            raise Refusal("bad_request", str(e)) from None
        replication = self.replication
        if replication is None:
            raise Refusal("bad_request", "this node is a standby already (of %s)"
                          % (self.node.primary_id,))
        held = yield self.current.store.run(_holdings)
        if held:
            raise Refusal("bad_request", "this server holds %s: only a fresh server can join "
                          "as a standby (its database is replaced by the primary's)" % (held,))
        if len(replication.members) > 1:
            raise Refusal("bad_request", "this server is the primary of a replica set with "
                          "standbys; remove them first")
        addresses = replication.addresses()
        try:
            connection = yield dial(self.reactor, invite.address, invite.fingerprint,
                                    self.node_identity, Role())
        except Exception as e:
            raise Refusal("unreachable", "cannot reach the primary at %s: %s"
                          % (invite.address, e), retryable=True) from None
        try:
            answer = yield connection.callRemote(
                Join, invite_id=invite.invite_id, secret=invite.secret,
                envoy_address=addresses["envoy"], api_url=addresses["api"],
                replication_address=addresses["replication"])
        except Exception as e:
            raise Refusal("refused", "the primary refused: %s" % (
                getattr(e, "args", [e])[0],)) from None
        finally:
            connection.transport.loseConnection()
        self.node.follow(answer["epoch"], answer["node_id"], invite.address, invite.fingerprint,
                         needs_base_copy=True)
        self.save_node(self.node)
        self.reactor.callLater(0, self.rebuild, "joined %s's replica set" % (answer["node_id"],))
        return {"role": "standby", "primary": answer["node_id"], "epoch": answer["epoch"],
                "node_id": self.node_identity.id}

    # -- metrics ----------------------------------------------------------------------

    def collector(self):
        return ReplicationCollector(self)


def _holdings(cursor):
    """What a server holds that joining as a standby would throw away ("" if nothing)."""
    envoys = cursor.execute("SELECT COUNT(*) FROM envoys").fetchone()[0]
    rows = cursor.execute("SELECT COUNT(*) FROM roster_rows").fetchone()[0]
    held = []
    if envoys:
        held.append("%d envoy(s)" % (envoys,))
    if rows:
        held.append("a spanner roster (%d bolt row(s))" % (rows,))
    return " and ".join(held)


@implementer(IReplicaSet)
class ReplicaSet:
    """The ``IReplicaSet`` of a ``ServerHost`` (see the module docstring)."""

    def __init__(self, host):
        self.host = host

    def status(self):
        host, node = self.host, self.host.node
        replication, follower = host.replication, host.follower
        out = {"ha": True, "node_id": host.node_identity.id, "role": node.role,
               "epoch": node.epoch, "sync": host.config.peers.sync}
        if replication is not None:
            me = replication.members.get(replication.node_id)
            out.update({"role": "fenced" if replication.fenced else "primary",
                        "epoch": replication.epoch, "lsn": replication.head(),
                        "confirmed": replication.confirmed,
                        "ack_seconds": replication.ack_quantiles(),
                        "primary": None if me is None else me.describe(),
                        "standbys": replication.standbys()})
        elif follower is not None:
            primary = follower.members.get(node.primary_id)
            out.update({"lsn": follower.lsn, "head": follower.head,
                        "lag_seconds": round(follower.lag(), 3),
                        "streaming": follower.streaming,
                        "needs_base_copy": node.needs_base_copy,
                        "primary": {"node_id": node.primary_id,
                                    "replication_address": node.primary_address,
                                    **({} if primary is None else primary.describe())},
                        "standbys": [m.describe() for m in follower.members.values()
                                     if m.node_id not in (node.primary_id, follower.node_id)]})
        return out

    def standbys(self):
        return {"standbys": self.status().get("standbys", [])}

    def _primary(self):
        replication = self.host.replication
        if replication is None:
            raise Refusal("standby", "this node is a standby: ask its primary (%s)"
                          % (self.host.node.primary_id,), retryable=True)
        return replication

    def invite(self, expires_in):
        return self._primary().invite(expires_in)

    def remove(self, node_id):
        return self._primary().remove(node_id)

    def join(self, token):
        return self.host.join(token)

    def promote(self):
        return self.host.promote()
