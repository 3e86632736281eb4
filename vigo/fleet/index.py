"""The fleet index: every envoy this server owns, in memory.

Rebuilt from SQLite at start; the check-in hot path reads and updates only this.
Fields that change on every check-in (last seen, sequence, counters) are marked
dirty and written behind in batches; anything that must survive a crash
(enrollment, revocation, a pending force-push) is written before it is
acknowledged, by whoever changes it.
"""

from vigo.fleet.wire import checkin_signing_prefix

ACTIVE = "active"
REVOKED = "revoked"
MOVED = "moved"
ZERO_VERSION = b"\x00" * 32


class EnvoyRecord:
    """One envoy: who it is, what it should run, when it was last heard."""

    __slots__ = (
        "id",
        "hostname",
        "public_key",
        "signing_prefix",
        "state",
        "enrolled_at",
        "last_seen",
        "last_seq",
        "seq_reserved",
        "checkins",
        "applied_version",
        "pending_push",
        "redirect",
        "bundle",
        "connection",
        "online",
        "dirty",
    )

    def __init__(
        self,
        id,
        hostname,
        public_key,
        bundle,
        state=ACTIVE,
        enrolled_at=0.0,
        last_seen=None,
        last_seq=0,
        seq_reserved=0,
        checkins=0,
        applied_version=None,
        pending_push=False,
        redirect=None,
    ):
        self.id = id
        self.hostname = hostname
        self.public_key = public_key
        self.signing_prefix = checkin_signing_prefix(id)
        self.state = state
        self.enrolled_at = enrolled_at
        self.last_seen = last_seen
        self.last_seq = last_seq
        # Durable at or above every accepted sequence (vigo/fleet/replay.py).
        self.seq_reserved = seq_reserved
        self.checkins = checkins
        self.applied_version = applied_version or ZERO_VERSION
        self.pending_push = pending_push
        self.redirect = redirect
        self.bundle = bundle
        self.connection = None
        self.online = False
        self.dirty = False

    def describe(self, now):
        """A JSON-ready view for the admin API."""
        return {
            "id": self.id,
            "hostname": self.hostname,
            "state": self.state,
            "online": self.online,
            "connected": self.connection is not None,
            "enrolled_at": self.enrolled_at,
            "last_seen": self.last_seen,
            "last_seen_age": None if self.last_seen is None else max(0.0, now - self.last_seen),
            "checkins": self.checkins,
            "last_seq": self.last_seq,
            "bundle_version": self.bundle.version.hex(),
            "applied_version": self.applied_version.hex(),
            "up_to_date": self.applied_version == self.bundle.version,
            "hostcrate": self.bundle.document.get("hostcrate"),
            "pending_push": self.pending_push,
            "redirect": self.redirect,
        }


class FleetIndex:
    """Envoy records by id, with active ones also by hostname."""

    def __init__(self):
        self.by_id = {}
        self.by_hostname = {}

    def __len__(self):
        return len(self.by_id)

    def __iter__(self):
        return iter(self.by_id.values())

    def add(self, record):
        self.by_id[record.id] = record
        if record.state == ACTIVE:
            self.by_hostname[record.hostname] = record

    def get(self, envoy_id):
        return self.by_id.get(envoy_id)

    def by_name(self, hostname):
        return self.by_hostname.get(hostname)

    def set_state(self, record, state):
        if record.state == ACTIVE and self.by_hostname.get(record.hostname) is record:
            del self.by_hostname[record.hostname]
        record.state = state
        if state == ACTIVE:
            self.by_hostname[record.hostname] = record

    def lookup(self, key):
        """An envoy by id, else by its unique hostname (as an operator may
        write it: any case, a trailing dot); None if neither."""
        record = self.by_id.get(key) or self.by_hostname.get(key)
        if record is None and isinstance(key, str):
            name = key.strip().lower().rstrip(".")
            if name != key:
                record = self.by_hostname.get(name)
        return record
