"""The primary of a replica set: it admits standbys and streams them the change log.

``PrimaryReplication`` is the primary's ``Role`` on the replication port and
a service of its server's tree. It

* redeems standby invitations (``Join``) and admits members' ``Hello``: a
  member whose history matches is streamed the entries after its LSN
  (``vigo.server.peer.stream``), one that lacks entries no longer in the log,
  holds entries this primary lacks (an older epoch's, written after this
  epoch began) or asks for one, gets a base copy first;
* says when a write is durable enough to acknowledge (``synced``, its
  ``Acknowledgements``: ``vigo.server.peer.durability``);
* is fenced when it learns of a higher epoch (a member's ``Follow`` or
  ``Hello``, or its ``Prober``, ``vigo.server.peer.fencing``): from then on
  it acknowledges nothing and hands itself to ``on_fenced`` (the host
  rebuilds it as a standby of the new primary). Until the first probe round
  is over no write is acknowledged, so a deposed primary restarted after a
  promotion says yes to nothing.
"""

import os

import attr
from twisted.application import service
from twisted.internet import defer, threads
from twisted.logger import Logger

from vigo.backup import RESTORE_FLOOR
from vigo.identity import key_id
from vigo.interfaces.errors import Refusal
from vigo.server.peer import members as records
from vigo.server.peer.base_copy import make_base_copy
from vigo.server.peer.channel import Dials, Role
from vigo.server.peer.durability import Acknowledgements
from vigo.server.peer.fencing import Prober
from vigo.server.peer.pairing import StandbyInvite
from vigo.server.peer.protocol import (
    CopyBegin,
    CopyChunk,
    CopyEnd,
    Follow,
    NotMember,
    Refused,
)
from vigo.server.peer.stream import BATCH_BYTES, BATCH_ENTRIES, Ring, Stream
from vigo.store.changelog import oldest_lsn, read_entries
from vigo.store.database import shielded

COPY_CHUNK = 256 * 1024
COPY_WINDOW = 4


class PrimaryReplication(Role, service.Service):
    """See the module docstring. ``addresses()`` gives this node's
    ``{"envoy", "api", "replication"}`` as members dial them."""

    name = "primary"
    log = Logger()

    def __init__(self, reactor, store, node, node_identity, data_dir, peers, addresses,
                 hostcrates=None, on_fenced=None):
        self.reactor = reactor
        self.store = store
        self.node = node
        self.node_identity = node_identity
        self.node_id = node_identity.id
        self.data_dir = data_dir
        self.peers = peers
        self.addresses = addresses
        self.hostcrates = hostcrates
        self.on_fenced = on_fenced
        self.epoch = node.epoch
        self.members = {}
        self.streams = {}
        self.ring = Ring()
        self.fenced = False
        self._dial = Dials()
        self._epoch_starts = {}
        self.copies_sent = 0
        self.acks = Acknowledgements(reactor, peers, self.head,
                                     lambda: [s.acked for s in self.streams.values()])
        self.prober = Prober(reactor, node_identity, self, self._not_streaming,
                             lambda: self.epoch, self.fence, self._probed)

    # -- start ----------------------------------------------------------------------

    def load(self):
        """Store job (at start, before anything listens): raise the epoch if this
        node was just promoted; load the members."""
        return self.store.run(self._load, self.reactor.seconds()).addCallback(self._loaded)

    def _load(self, cursor, now):
        lsn, epoch = records.replication_position(cursor)
        if self.node.epoch > epoch:
            records.record_promotion(cursor, self.node.epoch, self.node_id, now)
            epoch = self.node.epoch
            # Sequence reservations stream behind: the newest may not have
            # reached this node. Move every floor past them, as a restore does
            # (the envoys learn theirs when they attach).
            floor = int(now * 1_000_000) + RESTORE_FLOOR
            cursor.execute("UPDATE envoys SET last_seq = MAX(last_seq, seq_reserved, ?), "
                           "seq_reserved = MAX(last_seq, seq_reserved, ?)", (floor, floor))
        return epoch, records.load_members(cursor), records.epoch_starts(cursor)

    def _loaded(self, loaded):
        self.epoch, self.members, self._epoch_starts = loaded
        self.store.on_entry = self.on_entry

    def publish_addresses(self):
        """Record this node as a member at the addresses it listens on (once
        its ports are bound: a configured port 0 is a real one now)."""
        address = self.addresses()

        def publish(cursor, now):
            own = records.load_members(cursor).get(self.node_id)
            if own is None:
                records.add_member(cursor, self.node_identity.public_key, address["envoy"],
                                   address["api"], address["replication"], now)
            elif (own.envoy_address, own.api_url, own.replication_address) != (
                    address["envoy"], address["api"], address["replication"]):
                records.update_addresses(cursor, self.node_id, address["envoy"],
                                         address["api"], address["replication"])
            return records.load_members(cursor)

        def published(members):
            self.members = members

        return self.store.run(publish, self.reactor.seconds()).addCallback(published)

    def startService(self):
        service.Service.startService(self)
        self.prober.start()

    def stopService(self):
        service.Service.stopService(self)
        self.prober.stop()
        self._dial.cancel_all()
        for stream in list(self.streams.values()):
            stream.stop()
        self.acks.fail_all(Refusal("stopping", "the server is stopping; try again",
                                   retryable=True))

    # -- the change log --------------------------------------------------------------

    def head(self):
        return self.store.lsn

    def on_entry(self, lsn, data):
        self.ring.add(lsn, data, self.reactor.seconds())
        for stream in list(self.streams.values()):
            stream.wake()

    def read(self, after):
        """A Deferred batch of the entries after ``after`` from the database."""
        return self.store.run(read_entries, after, BATCH_ENTRIES, BATCH_BYTES)

    def acked(self, stream):
        at = self.ring.committed_at(stream.acked)
        if at is not None:
            self.acks.sample(max(self.reactor.seconds() - at, 0.0))
        self.acks.release()

    def stream_failed(self, stream, reason):
        if self.streams.get(stream.node_id) is stream:
            del self.streams[stream.node_id]
        self.log.warn("replication to standby {node} stopped: {why}", node=stream.node_id,
                      why=reason.getErrorMessage() if hasattr(reason, "getErrorMessage")
                      else reason)
        transport = stream.connection.transport
        if transport is not None:
            transport.loseConnection()

    # -- durability ---------------------------------------------------------------------

    @property
    def confirmed(self):
        """The first probe round is over: writes may be acknowledged."""
        return self.acks.confirmed

    def synced(self):
        """A Deferred that fires when the writes committed so far may be
        acknowledged (``Acknowledgements.synced``)."""
        return self.acks.synced()

    def synced_lsn(self):
        return self.acks.synced_lsn()

    def ack_quantiles(self):
        return self.acks.quantiles()

    def _fenced_refusal(self):
        return Refusal("not_primary", "this server was the primary until epoch %d; it "
                       "acknowledges nothing now: use the primary" % (self.epoch,),
                       retryable=True)

    # -- fencing --------------------------------------------------------------------------

    def _not_streaming(self):
        return [m for m in self.members.values()
                if m.node_id != self.node_id and m.node_id not in self.streams]

    def probe(self):
        """Ask every member not streaming from us where it stands (``Prober``)."""
        if self.fenced:
            return None
        return self.prober.probe()

    def _probed(self, asked):
        if self.fenced or self.acks.confirmed:
            return
        self.log.info("primary at epoch {epoch}: {n} other member(s) asked, none newer",
                      epoch=self.epoch, n=asked)
        self.acks.confirm()

    def fence(self, epoch, primary_id, address):
        """A newer primary exists: acknowledge nothing from now on, and follow it."""
        if self.fenced:
            return
        self.fenced = True
        self.log.warn("fenced: {primary} is the primary at epoch {epoch} (this node was at "
                      "{ours}); acknowledging nothing, rejoining as its standby",
                      primary=primary_id, epoch=epoch, ours=self.epoch)
        self.acks.fence(self._fenced_refusal())
        for stream in list(self.streams.values()):
            stream.stop()
        member = self.members.get(primary_id)
        fingerprint = member.fingerprint if member is not None else ""
        if self.on_fenced is not None:
            self.reactor.callLater(0, self.on_fenced, epoch, primary_id, address, fingerprint)

    # -- Role ------------------------------------------------------------------------------

    def who(self, connection):
        self._member(connection)
        address = self.addresses()["replication"]
        return {"node_id": self.node_id, "role": "fenced" if self.fenced else "primary",
                "epoch": self.epoch, "lsn": self.head(), "primary_id": self.node_id,
                "primary_address": address}

    def _member(self, connection):
        node_id = key_id(connection.caller())
        member = self.members.get(node_id)
        if member is None or member.node_key != connection.node_key:
            raise NotMember("node %s is not a member of this replica set; join it with "
                            "vigocli server standby join" % (node_id,))
        return member

    @defer.inlineCallbacks
    def join(self, connection, invite_id, secret, envoy_address, api_url, replication_address):
        if self.fenced:
            raise Refused(self._fenced_refusal().reason)
        key = connection.caller()
        node_id = key_id(key)
        if node_id == self.node_id:
            raise Refused("a node cannot be its own standby")
        now = self.reactor.seconds()

        def admit(cursor):
            records.redeem_invite(cursor, invite_id, secret, node_id, now)
            return records.add_member(cursor, key, envoy_address, api_url,
                                      replication_address, now)

        try:
            member = yield shielded(self.store.run(admit))
        except records.InviteError as e:
            raise Refused(str(e)) from None
        self.members[node_id] = member
        # Not waited for peers.sync: the first standby could never hold it
        # in time, and its base copy carries it anyway.
        self.log.info("standby {node} joined (envoys: {envoy}, API: {api})", node=node_id,
                      envoy=envoy_address, api=api_url)
        return {"node_id": self.node_id, "epoch": self.epoch}

    @defer.inlineCallbacks
    def hello(self, connection, epoch, lsn, base_copy, addresses):
        member = self._member(connection)
        if (member.envoy_address, member.api_url, member.replication_address) != (
                addresses["envoy"], addresses["api"], addresses["replication"]):
            yield self._moved(member, addresses)
        if epoch > self.epoch:
            self.fence(epoch, "", "")
            raise Refused("this node is not the primary at epoch %d" % (epoch,))
        if self.fenced:
            raise Refused(self._fenced_refusal().reason)
        oldest = yield self.store.run(oldest_lsn)
        head = self.head()
        why = None
        if base_copy:
            why = "it asked for one"
        elif records.diverged(self._epoch_starts, epoch, lsn, self.epoch):
            why = "it holds entries of epoch %d this primary lacks" % (epoch,)
        elif lsn > head:
            why = "it is ahead of this primary (%d > %d)" % (lsn, head)
        elif lsn < head and (oldest is None or lsn + 1 < oldest):
            why = "it is behind the retained log (at %d, the log starts at %s)" % (lsn, oldest)
        old = self.streams.pop(member.node_id, None)
        if old is not None:
            old.stop()
        if why is not None:
            self.log.info("standby {node} takes a base copy: {why}", node=member.node_id,
                          why=why)
            self.reactor.callLater(0, self._send_base_copy, connection)
            return {"node_id": self.node_id, "epoch": self.epoch, "action": "copy"}
        stream = Stream(connection, member.node_id, lsn, self)
        self.streams[member.node_id] = stream
        self.log.info("standby {node} follows from LSN {lsn} (head {head})",
                      node=member.node_id, lsn=lsn, head=head)
        self.reactor.callLater(0, stream.wake)
        return {"node_id": self.node_id, "epoch": self.epoch, "action": "stream"}

    @defer.inlineCallbacks
    def _moved(self, member, addresses):
        """A member listens elsewhere now: record where (replicated to all)."""
        yield self.store.run(records.update_addresses, member.node_id, addresses["envoy"],
                             addresses["api"], addresses["replication"])
        self.members[member.node_id] = attr.evolve(
            member, envoy_address=addresses["envoy"], api_url=addresses["api"],
            replication_address=addresses["replication"])

    def follow(self, connection, epoch, primary_id, address):
        self._member(connection)
        if epoch <= self.epoch:
            raise Refused("this node is the primary at epoch %d, not older than %d"
                          % (self.epoch, epoch))
        self.fence(epoch, primary_id, address)
        return {}

    def lost(self, connection):
        node_id = connection.node_id
        stream = self.streams.get(node_id)
        if stream is not None and stream.connection is connection:
            stream.stop()
            del self.streams[node_id]

    @defer.inlineCallbacks
    def _send_base_copy(self, connection):
        scratch = self.data_dir
        try:
            path, size, digest, lsn, epoch = yield threads.deferToThreadPool(
                self.reactor, self.reactor.getThreadPool(), make_base_copy, self.data_dir,
                scratch, self.hostcrates)
        except Exception:
            self.log.failure("making a base copy failed")
            connection.transport.loseConnection()
            return
        try:
            yield connection.callRemote(CopyBegin, size=size, lsn=lsn, epoch=epoch)
            with open(path, "rb") as f:
                pending = []
                while True:
                    data = f.read(COPY_CHUNK)
                    if not data:
                        break
                    pending.append(connection.callRemote(CopyChunk, data=data))
                    if len(pending) >= COPY_WINDOW:
                        yield pending.pop(0)
                for d in pending:
                    yield d
            yield connection.callRemote(CopyEnd, sha256=digest)
            self.copies_sent += 1
            self.log.info("sent a base copy ({size} bytes, at LSN {lsn})", size=size, lsn=lsn)
        except Exception as e:
            self.log.warn("a base copy was not taken: {why}", why=e)
            if connection.transport is not None:
                connection.transport.loseConnection()
        finally:
            os.unlink(path)

    # -- operator's requests ---------------------------------------------------------------

    @defer.inlineCallbacks
    def invite(self, expires_in):
        """A new standby invitation, valid ``expires_in`` seconds."""
        if self.fenced:
            raise self._fenced_refusal()
        invite = StandbyInvite.mint(self.node_id, self.addresses()["replication"],
                                    self.node_identity.fingerprint)
        now = self.reactor.seconds()
        yield shielded(self.store.run(records.create_invite, invite.invite_id, invite.secret,
                                      now, now + expires_in))
        return {"token": invite.encode(), "invite_id": invite.invite_id,
                "expires_at": now + expires_in, "primary": self.node_id}

    @defer.inlineCallbacks
    def remove(self, node_id):
        """Remove member ``node_id``: it may not replicate from here on."""
        if node_id == self.node_id:
            raise Refusal("bad_request", "%s is this primary; promote a standby first, then "
                          "remove it there" % (node_id,))
        removed = yield shielded(self.store.run(records.remove_member, node_id,
                                                self.reactor.seconds()))
        if not removed:
            raise Refusal("not_found", "no standby %r in this replica set" % (node_id,))
        self.members.pop(node_id, None)
        stream = self.streams.pop(node_id, None)
        if stream is not None:
            stream.stop()
            stream.connection.transport.loseConnection()
        return {"node_id": node_id, "removed": True}

    # -- announcing a promotion ---------------------------------------------------------

    def announce(self):
        """Tell every other member to follow this primary (after a promotion)."""
        address = self.addresses()["replication"]
        calls = []
        for member in self.members.values():
            if member.node_id == self.node_id:
                continue

            @defer.inlineCallbacks
            def tell(member=member):
                connection = yield self._dial(self.reactor, member.replication_address,
                                              member.fingerprint, self.node_identity, self)
                try:
                    yield connection.callRemote(Follow, epoch=self.epoch,
                                                primary_id=self.node_id, address=address)
                finally:
                    connection.transport.loseConnection()

            calls.append(tell().addErrback(
                lambda f, member=member: self.log.warn(
                    "could not tell {node} to follow this primary: {why}; it will find it",
                    node=member.node_id, why=f.getErrorMessage())))
        return defer.DeferredList(calls)

    # -- status -------------------------------------------------------------------------------

    def envoy_addresses(self):
        """Where envoys reach the replica set: this primary first, then each
        standby (Registered and Attached carry it, vigo/envoy/replicas.py)."""
        own = self.addresses()["envoy"]
        return [own] + [m.envoy_address for m in self.members.values()
                        if m.node_id != self.node_id and m.envoy_address != own]

    def standbys(self):
        """Each other member: its record, whether it streams, its LSN and lag."""
        now = self.reactor.seconds()
        out = []
        for member in self.members.values():
            if member.node_id == self.node_id:
                continue
            stream = self.streams.get(member.node_id)
            row = member.describe()
            row.update({"connected": stream is not None,
                        "lsn": None if stream is None else stream.acked,
                        "lag_seconds": None if stream is None else round(stream.lag(now), 3)})
            out.append(row)
        return out
