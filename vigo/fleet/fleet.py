"""The fleet: attach, check-in, force-push and revoke, over the fleet index.

The check-in path is the one that matters for speed: it touches only memory,
one signature verify and a few integer updates, and answers with a ready-made
frame. Everything durable goes through the store before it is acknowledged;
last-seen and counters are written behind by ``flush``.
"""

import json
import weakref
from time import perf_counter

from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError
from nacl.exceptions import ValueError as NaclValueError
from twisted.logger import Logger

from vigo.fleet import replay, wire
from vigo.fleet.index import ACTIVE, MOVED, REVOKED, EnvoyRecord, FleetIndex
from vigo.fleet.ownership import Redirected
from vigo.fleet.stats import FleetStats
from vigo.interfaces.errors import Refusal
from vigo.metrics import CHECKIN_BUCKETS, Durations
from vigo.store import StoreClosed

MAX_CLOCK_SKEW = 300.0  # seconds an envoy's clock may be off
FLUSH_BATCH = 500  # rows an UPDATE batch writes behind


# -- store jobs -------------------------------------------------------------------


def load_envoys(cursor):
    replay.reserve_after_restart(cursor)
    return cursor.execute(
        "SELECT id, hostname, public_key, state, enrolled_at, last_seen, last_seq, "
        "seq_reserved, checkins, applied_version, pending_push, redirect FROM envoys"
    ).fetchall()


def write_behind(cursor, rows):
    for start in range(0, len(rows), FLUSH_BATCH):
        cursor.executemany(
            "UPDATE envoys SET last_seen = ?, last_seq = MAX(last_seq, ?), "
            "seq_reserved = MAX(seq_reserved, ?), "
            "checkins = ?, applied_version = ?, pending_push = ? WHERE id = ?",
            rows[start : start + FLUSH_BATCH],
        )


def set_pending_push(cursor, envoy_id, pending):
    cursor.execute(
        "UPDATE envoys SET pending_push = ? WHERE id = ?", (int(pending), envoy_id)
    )


def set_pending_pushes(cursor, envoy_ids):
    for start in range(0, len(envoy_ids), FLUSH_BATCH):
        cursor.executemany(
            "UPDATE envoys SET pending_push = 1 WHERE id = ?",
            [(envoy_id,) for envoy_id in envoy_ids[start : start + FLUSH_BATCH]],
        )


def set_state(cursor, envoy_id, state):
    cursor.execute("UPDATE envoys SET state = ? WHERE id = ?", (state, envoy_id))


class Fleet:
    """Every envoy this server owns, and what they may do.

    ``clock`` is an ``IReactorTime`` (a ``Clock`` in tests); ``store`` an
    ``IStore``; ``hostcrates`` gives each envoy its bundle.
    """

    log = Logger()

    def __init__(self, store, identity, hostcrates, clock, interval, offline_after):
        self.store = store
        self.identity = identity
        self.hostcrates = hostcrates
        self.clock = clock
        self.interval = interval
        self.offline_after = offline_after
        self.index = FleetIndex()
        self.stats = FleetStats()
        # Each check-in's handling time (vigo_checkin_duration_seconds).
        self.checkin_durations = Durations(CHECKIN_BUCKETS)
        self._dirty = []
        # Connections attached while the interval was longer than it is now
        # (a reload shortened it) -> the interval they were told: they keep
        # it until they attach again, and the offline sweep allows for it.
        self._told_longer = weakref.WeakKeyDictionary()

    # -- start-up ------------------------------------------------------------

    def load(self):
        """Rebuild the index from the store; a Deferred."""
        return self.store.run(load_envoys).addCallback(self._loaded)

    def _loaded(self, rows):
        for (id, hostname, key, state, enrolled, seen, seq, reserved, checkins, applied,
             pending, redirect) in rows:
            self.index.add(
                EnvoyRecord(
                    id, hostname, key, self.hostcrates.bundle_for(hostname),
                    state=state, enrolled_at=enrolled, last_seen=seen,
                    last_seq=seq, seq_reserved=reserved, checkins=checkins, applied_version=applied,
                    pending_push=bool(pending),
                    redirect=json.loads(redirect) if redirect else None,
                )
            )
        return len(rows)

    def add(self, record):
        """Take a newly enrolled envoy (already durable) into the index."""
        record.bundle = self.hostcrates.bundle_for(record.hostname)
        self.index.add(record)
        self.stats.enrollments += 1

    # -- the envoy channel ----------------------------------------------------

    def attach(self, connection, envoy_id, server_id, timestamp_ms, signature):
        """Bind ``connection`` to an envoy; the record, or raise Refusal/Redirected."""
        record = self.index.get(envoy_id)
        if record is None:
            raise Refusal(
                "unknown_envoy",
                "this server has no envoy %s; enroll it with a token" % (envoy_id,),
            )
        if server_id != self.identity.id:
            raise Refusal(
                "wrong_server",
                "attach was signed for server %s, this is %s" % (server_id, self.identity.id),
            )
        self._check_fresh(timestamp_ms)
        message = wire.attach_message(envoy_id, server_id, timestamp_ms)
        if not self._verify(record, message, signature):
            self.stats.refusals["bad_signature"] += 1
            raise Refusal("bad_signature", "the attach signature does not verify")
        if record.state == REVOKED:
            raise Refusal("revoked", "envoy %s is revoked" % (envoy_id,))
        if record.state == MOVED and record.redirect:
            raise Redirected(reason="envoy %s moved" % (envoy_id,), **record.redirect)
        previous = record.connection
        record.connection = connection
        if previous is not None and previous is not connection:
            previous.drop(Refusal("replaced", "a newer connection of this envoy attached"))
        record.last_seen = self.clock.seconds()
        self._mark_dirty(record)
        self._mark_online(record)
        self.stats.attaches += 1
        return record

    def detach(self, record, connection):
        if record.connection is connection:
            record.connection = None
        if self._told_longer:
            self._told_longer.pop(connection, None)

    def checkin(self, record, body):
        """The frame answering one CheckIn body from ``record``'s connection;
        a Deferred of it when the answer waits for a sequence reservation to
        be durable (rarely: vigo/fleet/replay.py). The time it took, until
        the answer was ready, goes to ``checkin_durations``."""
        started = perf_counter()
        answer = self._checkin(record, body)
        if type(answer) is bytes:
            self.checkin_durations.observe(perf_counter() - started)
            return answer
        return answer.addBoth(self._answered, started)

    def _answered(self, answer, started):
        self.checkin_durations.observe(perf_counter() - started)
        return answer

    def _checkin(self, record, body):
        stats = self.stats
        try:
            seq, timestamp_ms, fingerprint, signature = wire.decode_checkin(body)
        except wire.WireError as e:
            stats.checkins["malformed"] += 1
            return refused(Refusal("malformed", str(e)), 0)
        now = self.clock.seconds()
        if abs(timestamp_ms / 1000.0 - now) > MAX_CLOCK_SKEW:
            stats.checkins["stale"] += 1
            return refused(Refusal("stale", "the check-in timestamp is off by more "
                                   "than %d s; fix the envoy's clock" % (MAX_CLOCK_SKEW,)), seq)
        if seq <= record.last_seq:
            stats.checkins["replayed"] += 1
            return refused(Refusal("replayed", "sequence %d is not above %d"
                                   % (seq, record.last_seq)), seq)
        try:
            crypto_sign_open(signature + record.signing_prefix + body[1:49], record.public_key)
        except (BadSignatureError, NaclValueError):
            stats.checkins["bad_signature"] += 1
            return refused(Refusal("bad_signature", "the check-in signature does not verify"), seq)
        if record.state != ACTIVE:
            stats.checkins["refused"] += 1
            return refused(Refusal(record.state, "envoy %s is %s" % (record.id, record.state)), seq)
        record.last_seq = seq
        previous = record.last_seen
        record.last_seen = now
        record.checkins += 1
        record.applied_version = fingerprint
        if not record.dirty:
            record.dirty = True
            self._dirty.append(record)
        if not record.online:
            self._mark_online(record)
        if previous is not None:
            stats.observe_age(now - previous)
        bundle = record.bundle
        if fingerprint == bundle.version and not record.pending_push:
            stats.checkins["no_change"] += 1
            answer = wire.no_change(seq)
        else:
            answer = self._bundle(record, seq, bundle)
        if seq > record.seq_reserved:
            return self._reserve(record, seq, answer)
        return answer

    def _bundle(self, record, seq, bundle):
        self.stats.checkins["bundle"] += 1
        record.pending_push = False
        return wire.frame(
            wire.encode_json(
                wire.BUNDLE,
                {
                    "seq": seq,
                    "version": wire.b64(bundle.version),
                    "document": bundle.document,
                    "signature": wire.b64(
                        self.identity.sign(
                            wire.bundle_message(record.id, seq, bundle.version, bundle.encoded)
                        )
                    ),
                },
            )
        )

    def _reserve(self, record, seq, answer):
        """``answer`` once a reservation above ``seq`` is durable (a Deferred):
        the slow path of replay protection (vigo/fleet/replay.py)."""
        self.stats.reservations += 1
        reserved = seq + replay.RESERVE

        def reserved_(_):
            record.seq_reserved = max(record.seq_reserved, reserved)
            return answer

        def failed(failure):
            if not failure.check(StoreClosed):  # stopping: expected, said below
                self.log.failure("could not reserve check-in sequences for envoy {envoy}",
                                 failure, envoy=record.id)
            return refused(Refusal("unavailable", "the server could not record this "
                                   "check-in; try again", retryable=True), seq)

        return self.store.run(replay.reserve, record.id, reserved).addCallbacks(
            reserved_, failed)

    def _verify(self, record, message, signature):
        try:
            crypto_sign_open(signature + message, record.public_key)
        except (BadSignatureError, NaclValueError, TypeError):
            return False
        return True

    def _check_fresh(self, timestamp_ms):
        # The decoders give 0 <= ts < 2**63; checked again here, so that no
        # caller's ts can overflow the division (ts=10**400: OverflowError).
        if (type(timestamp_ms) is not int or not 0 <= timestamp_ms < wire.MAX_INT
                or abs(timestamp_ms / 1000.0 - self.clock.seconds()) > MAX_CLOCK_SKEW):
            raise Refusal("stale", "the timestamp is off by more than %d s; "
                          "fix the envoy's clock" % (MAX_CLOCK_SKEW,))

    def _mark_online(self, record):
        if not record.online:
            record.online = True
            self.stats.transition("offline_to_online")

    def _mark_dirty(self, record):
        if not record.dirty:
            record.dirty = True
            self._dirty.append(record)

    # -- admin operations -----------------------------------------------------

    def find(self, key):
        """An envoy by id or hostname; Refusal ``not_found`` if none."""
        record = self.index.lookup(key)
        if record is None:
            raise Refusal("not_found", "no envoy %r on this server" % (key,))
        return record

    def force_push(self, key):
        """Make an envoy take its full bundle now, or at its next Attach.

        The pending push is durable before this answers; a Deferred of
        ``"now"`` (sent down the open connection) or ``"next_attach"``.
        """
        record = self.find(key)
        if record.state != ACTIVE:
            raise Refusal("not_active", "envoy %s is %s" % (record.id, record.state))
        record.pending_push = True

        def sent(_):
            self.stats.pushes += 1
            if record.connection is not None:
                record.connection.send(wire.frame(bytes((wire.FORCE_PUSH,))))
                return "now"
            return "next_attach"

        return self.store.run(set_pending_push, record.id, True).addCallback(sent)

    def force_push_all(self):
        """``force_push`` every active envoy, with one durable write.

        A Deferred of ``{"envoys", "now", "next_attach"}``: how many were
        marked, and how many of them were sent the push down an open
        connection or will get it at their next Attach.
        """
        records = [record for record in self.index if record.state == ACTIVE]
        for record in records:
            record.pending_push = True

        def sent(_):
            now = 0
            frame = wire.frame(bytes((wire.FORCE_PUSH,)))
            for record in records:
                if record.connection is not None:
                    record.connection.send(frame)
                    now += 1
            self.stats.pushes += len(records)
            return {"envoys": len(records), "now": now, "next_attach": len(records) - now}

        return self.store.run(set_pending_pushes, [r.id for r in records]).addCallback(sent)

    def revoke(self, key):
        """Revoke an envoy for good (durably), and hang up on it."""
        record = self.find(key)

        def revoked(_):
            self.index.set_state(record, REVOKED)
            if record.connection is not None:
                record.connection.drop(Refusal("revoked", "envoy %s is revoked" % (record.id,)))
                record.connection = None
            if record.online:
                record.online = False
                self.stats.transition("online_to_revoked")
            return record

        return self.store.run(set_state, record.id, REVOKED).addCallback(revoked)

    def hang_up_all(self):
        """Close every held envoy connection cleanly (the server is stopping)."""
        for record in self.index:
            if record.connection is not None:
                record.connection.hang_up()

    # -- reloading (SIGHUP: vigo.server.reload) -------------------------------------

    def set_hostcrates(self, hostcrates):
        """Give every envoy the bundle ``hostcrates`` names for it from now on;
        the number of active envoys whose bundle changed. Nothing is sent: an
        envoy whose bundle changed gets it at its next check-in, since the
        version it reports applied no longer matches."""
        self.hostcrates = hostcrates
        changed = 0
        for record in self.index:
            bundle = hostcrates.bundle_for(record.hostname)
            if bundle.version != record.bundle.version:
                changed += record.state == ACTIVE
            record.bundle = bundle
        return changed

    def set_cadence(self, interval, offline_after):
        """A new check-in ``interval`` (told to envoys as they attach or
        enroll) and ``offline_after``. An envoy attached now keeps the
        interval it was told until it attaches again: after a shorter one,
        the offline sweep still allows it the longer one."""
        if interval < self.interval:
            for record in self.index:
                connection = record.connection
                if connection is not None:
                    told = self._told_longer.get(connection, self.interval)
                    self._told_longer[connection] = max(told, self.interval)
        for connection, told in list(self._told_longer.items()):
            if told <= interval:
                del self._told_longer[connection]
        self.interval = interval
        self.offline_after = offline_after

    # -- background work -------------------------------------------------------

    def flush(self):
        """Write last-seen, sequence and counters of changed envoys, in batches."""
        if not self._dirty:
            return self.store.run(lambda cursor: 0)
        dirty, self._dirty = self._dirty, []
        rows, extended = [], []
        extension = replay.extension
        for record in dirty:
            record.dirty = False
            reserved = extension(record.last_seq, record.seq_reserved)
            if reserved != record.seq_reserved:
                extended.append((record, reserved))
            rows.append((record.last_seen, record.last_seq, reserved, record.checkins,
                         record.applied_version, int(record.pending_push), record.id))

        def written(_):
            # Durable now: sequences up to the new reservations may be used.
            for record, reserved in extended:
                if reserved > record.seq_reserved:
                    record.seq_reserved = reserved
            return len(rows)

        return self.store.run(write_behind, rows).addCallback(written)

    def sweep(self):
        """Mark envoys silent for ``offline_after`` intervals offline."""
        now = self.clock.seconds()
        deadline = now - self.offline_after * self.interval
        longer = self._told_longer
        went = 0
        for record in self.index:
            if record.online and (record.last_seen is None or record.last_seen < deadline):
                if longer and record.last_seen is not None and record.connection is not None:
                    told = longer.get(record.connection)
                    if told is not None and record.last_seen >= now - self.offline_after * told:
                        continue  # on the longer interval it was told when it attached
                record.online = False
                went += 1
        if went:
            self.stats.transition("online_to_offline", went)
        return went

    def counts(self):
        active = online = connected = 0
        for record in self.index:
            if record.state == ACTIVE:
                active += 1
                online += record.online
                connected += record.connection is not None
        return {"total": len(self.index), "active": active, "online": online,
                "connected": connected}


def refused(refusal, seq):
    fields = refusal.as_dict()
    fields["seq"] = seq
    return wire.frame(wire.encode_json(wire.REFUSED, fields))
