"""A standby follows its primary: ``Follower``.

The follower dials the primary it is pinned to (``replica.json``), says
``Hello`` with the epoch and LSN of its database, and then answers what the
primary sends: ``Entries`` are applied in order, each batch in one store
transaction that records the LSNs (``vigo.store.changelog.apply_entry``: a
repeat is a no-op, a gap is refused), and only then answered, so the answer
is an acknowledgement of durable entries; a base copy is received to
``data_dir/base-copy.tar.gz`` and installed by the next start of the
standby (``on_base_copy`` asks the host for it).

A lost primary is dialled again with backoff; after ``ASK_AFTER`` failures
in a row the follower asks every member it knows (``Who``) and follows the
one primary of the highest epoch, so the standbys of a dead primary find
the one an operator promoted even if they missed its ``Follow``.
"""

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from vigo.identity import key_id
from vigo.server.peer import members as records
from vigo.server.peer.base_copy import BaseCopyError, BaseCopyReceiver
from vigo.server.peer.channel import Dials, Role
from vigo.server.peer.protocol import Hello, NotMember, Refused, Who
from vigo.store.changelog import ChangeLogError, apply_entry

RETRY_MIN, RETRY_MAX = 0.5, 5.0
ASK_AFTER = 3
KEEPALIVE = 30.0


def apply_batch(cursor, batch, retain):
    """Store job: apply ``batch`` (``[(lsn, entry)]``) in order; the ``(lsn,
    epoch)`` now held."""
    for lsn, data in batch:
        apply_entry(cursor, lsn, data, retain)
    return records.replication_position(cursor)


class Follower(Role, service.Service):
    """A standby's replication (see the module docstring)."""

    name = "standby"
    log = Logger()

    def __init__(self, reactor, store, node, node_identity, data_dir, peers, addresses,
                 save_node, on_base_copy, on_applied=None):
        self.reactor = reactor
        self.store = store
        self.node = node
        self.node_identity = node_identity
        self.node_id = node_identity.id
        self.data_dir = data_dir
        self.peers = peers
        self.addresses = addresses
        self.save_node = save_node
        self.on_base_copy = on_base_copy
        self.on_applied = on_applied
        self.lsn = 0
        self.epoch = 0
        self.head = 0
        self.behind_since = None
        self.connection = None
        self.streaming = False
        self.members = {}
        self.applied_entries = 0
        self._failures = 0
        self._retry = None
        self._receiver = None
        self._keepalive = None
        self._dial = Dials()

    def load(self):
        """Store job at start: where the database stands, and the members."""
        def read(cursor):
            return records.replication_position(cursor), records.load_members(cursor)

        def loaded(result):
            (self.lsn, self.epoch), self.members = result
            self.head = self.lsn
            self._applied()

        return self.store.run(read).addCallback(loaded)

    # -- following -------------------------------------------------------------------------

    def startService(self):
        service.Service.startService(self)
        self._keepalive = task.LoopingCall(self._ping)
        self._keepalive.clock = self.reactor
        self._keepalive.start(KEEPALIVE, now=False)
        self._connect()

    def stopService(self):
        service.Service.stopService(self)
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self._keepalive is not None and self._keepalive.running:
            self._keepalive.stop()
        self._dial.cancel_all()
        if self._receiver is not None:
            self._receiver.abandon()
            self._receiver = None
        if self.connection is not None and self.connection.transport is not None:
            self.connection.transport.loseConnection()

    @defer.inlineCallbacks
    def _connect(self):
        self._retry = None
        if not self.running:
            return
        node = self.node
        try:
            connection = yield self._dial(self.reactor, node.primary_address,
                                          node.primary_fingerprint, self.node_identity, self)
        except Exception as e:
            self._failed("cannot reach the primary %s at %s: %s" % (
                node.primary_id, node.primary_address, e))
            return
        if not self.running:
            connection.transport.loseConnection()
            return
        self.connection = connection
        try:
            addresses = self.addresses()
            answer = yield connection.callRemote(
                Hello, epoch=self.epoch, lsn=self.lsn, base_copy=node.needs_base_copy,
                envoy_address=addresses["envoy"], api_url=addresses["api"],
                replication_address=addresses["replication"])
        except Exception as e:
            connection.transport.loseConnection()
            self._failed("the primary %s refused to be followed: %s" % (
                node.primary_id, getattr(e, "value", e)))
            return
        self._failures = 0
        self.streaming = answer["action"] == "stream"
        self.log.info("following {primary} (epoch {epoch}) from LSN {lsn}: {action}",
                      primary=answer["node_id"], epoch=answer["epoch"], lsn=self.lsn,
                      action=answer["action"])

    def _failed(self, why):
        self.streaming = False
        self._failures += 1
        if self._failures == 1 or self._failures % 10 == 0:
            self.log.warn("{why} (try {n}); trying again", why=why, n=self._failures)
        if self._failures >= ASK_AFTER and self._failures % ASK_AFTER == 0:
            self.find_primary()
        self._schedule()

    def _schedule(self):
        if not self.running or self._retry is not None:
            return
        delay = min(RETRY_MIN * 2 ** min(self._failures, 8), RETRY_MAX)
        self._retry = self.reactor.callLater(delay, self._connect)

    def lost(self, connection):
        if connection is not self.connection:
            return
        self.connection = None
        self.streaming = False
        if self._receiver is not None:
            self._receiver.abandon()
            self._receiver = None
        if self.running:
            self._failed("the connection to the primary %s was lost" % (self.node.primary_id,))

    def _ping(self):
        if self.connection is not None:
            self.connection.callRemote(Who).addErrback(lambda _: None)

    @defer.inlineCallbacks
    def find_primary(self):
        """Ask every member where it stands; follow a primary of a higher epoch."""
        try:
            yield self.refresh_members()
        except Exception:
            pass  # stopping: the members known will do
        best = None
        for member in list(self.members.values()):
            if member.node_id == self.node_id:
                continue
            try:
                connection = yield self._dial(self.reactor, member.replication_address,
                                              member.fingerprint, self.node_identity, self)
                try:
                    answer = yield connection.callRemote(Who)
                finally:
                    connection.transport.loseConnection()
            except Exception:
                continue
            if answer["role"] == "primary" and (best is None or answer["epoch"] > best[0]):
                best = (answer["epoch"], answer["node_id"], answer["primary_address"])
        if best is not None and best[0] > self.node.epoch:
            self._follow(*best)

    def _follow(self, epoch, primary_id, address):
        member = self.members.get(primary_id)
        if member is None:
            raise Refused("%s is not a member this standby knows; it cannot pin it" % (
                primary_id,))
        self.log.info("following the new primary {primary} at epoch {epoch}",
                      primary=primary_id, epoch=epoch)
        self.node.follow(epoch, primary_id, address, member.fingerprint)
        self.save_node(self.node)
        if self.connection is not None:
            self.connection.transport.loseConnection()
        else:
            self._failures = 0
            if self._retry is not None and self._retry.active():
                self._retry.cancel()
            self._retry = None
            self._connect()

    # -- Role ---------------------------------------------------------------------------------

    def refresh_members(self):
        """Read the members again from the database (they replicate to it)."""
        def read(cursor):
            return records.load_members(cursor)

        def loaded(members):
            self.members = members
            return members

        return self.store.run(read).addCallback(loaded)

    @defer.inlineCallbacks
    def _member(self, connection):
        """The member that called (the database read again for one not known yet)."""
        node_id = key_id(connection.caller())
        if node_id not in self.members:
            yield self.refresh_members()
        member = self.members.get(node_id)
        if member is None or member.node_key != connection.node_key:
            raise NotMember("this standby does not know node %s as a member of its replica "
                            "set" % (node_id,))
        return member

    @defer.inlineCallbacks
    def who(self, connection):
        if connection is not self.connection:
            yield self._member(connection)
        return {"node_id": self.node_id, "role": "standby", "epoch": self.node.epoch,
                "lsn": self.lsn, "primary_id": self.node.primary_id,
                "primary_address": self.node.primary_address}

    def hello(self, connection, **kwargs):
        raise Refused("this node is a standby; the primary is %s at %s" % (
            self.node.primary_id, self.node.primary_address))

    join = hello

    @defer.inlineCallbacks
    def follow(self, connection, epoch, primary_id, address):
        yield self._member(connection)
        if epoch <= self.node.epoch and primary_id == self.node.primary_id:
            return {}
        if epoch < self.node.epoch:
            raise Refused("this standby follows epoch %d, newer than %d" % (
                self.node.epoch, epoch))
        self._follow(epoch, primary_id, address)
        return {}

    def _from_primary(self, connection):
        if connection is not self.connection:
            raise Refused("this standby follows %s, not this connection" % (
                self.node.primary_id,))

    @defer.inlineCallbacks
    def entries(self, connection, epoch, head, entries):
        self._from_primary(connection)
        if epoch < self.node.epoch:
            raise Refused("entries of epoch %d; this standby is at epoch %d" % (
                epoch, self.node.epoch))
        self.head = max(self.head, head)
        try:
            self.lsn, self.epoch = yield self.store.run(apply_batch, entries, self.peers.retain)
        except ChangeLogError as e:
            self._diverged(str(e))
            raise Refused(str(e)) from None
        except Exception as e:
            self._diverged("applying entries failed: %s" % (e,))
            raise Refused("applying entries failed") from None
        self.applied_entries += len(entries)
        self._applied()
        now = self.reactor.seconds()
        if self.lsn >= self.head:
            self.behind_since = None
        elif self.behind_since is None:
            self.behind_since = now
        return {"lsn": self.lsn}

    def _applied(self):
        if self.on_applied is not None:
            self.on_applied(self.lsn)

    def _diverged(self, why):
        self.log.warn("this standby cannot apply the primary's entries ({why}); it takes a "
                      "new base copy", why=why)
        self.node.needs_base_copy = True
        self.save_node(self.node)

    def lag(self):
        """Seconds this standby has been behind its primary's last entry (0 when not)."""
        if self.behind_since is None:
            return 0.0
        return max(self.reactor.seconds() - self.behind_since, 0.0)

    def copy_begin(self, connection, size, lsn, epoch):
        self._from_primary(connection)
        if self._receiver is not None:
            self._receiver.abandon()
        try:
            self._receiver = BaseCopyReceiver(self.data_dir, size, lsn, epoch)
        except (BaseCopyError, OSError) as e:
            raise Refused(str(e)) from None
        self.log.info("receiving a base copy ({size} bytes, at LSN {lsn})", size=size, lsn=lsn)
        return {}

    def copy_chunk(self, connection, data):
        self._from_primary(connection)
        if self._receiver is None:
            raise Refused("no base copy was begun")
        try:
            self._receiver.chunk(data)
        except (BaseCopyError, OSError) as e:
            self._receiver = None
            raise Refused(str(e)) from None
        return {}

    def copy_end(self, connection, sha256):
        self._from_primary(connection)
        receiver, self._receiver = self._receiver, None
        if receiver is None:
            raise Refused("no base copy was begun")
        try:
            receiver.end(sha256)
        except (BaseCopyError, OSError) as e:
            raise Refused(str(e)) from None
        self.log.info("base copy received; installing it")
        self.reactor.callLater(0, self.on_base_copy)
        return {}
