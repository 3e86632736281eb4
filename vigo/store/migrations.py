"""The database's schema, as the migrations that build it.

Each migration takes the schema from version N-1 to N in one transaction, so a
crash leaves the old version or the new, never something between. Never edit a
shipped migration: add the next one. ``PRAGMA user_version`` holds the version.
"""


class NewerSchema(Exception):
    """The database was written by a newer server: its schema is past ours."""

# Each migration takes the schema from version N-1 to N; never edit a shipped one.
MIGRATIONS = (
    (
        1,
        (
            """CREATE TABLE envoys (
                id TEXT PRIMARY KEY,
                hostname TEXT NOT NULL,
                public_key BLOB NOT NULL,
                state TEXT NOT NULL DEFAULT 'active',
                enrolled_at REAL NOT NULL,
                token_id TEXT,
                last_seen REAL,
                last_seq INTEGER NOT NULL DEFAULT 0,
                checkins INTEGER NOT NULL DEFAULT 0,
                applied_version BLOB,
                pending_push INTEGER NOT NULL DEFAULT 0,
                redirect TEXT
            )""",
            "CREATE UNIQUE INDEX envoys_active_hostname ON envoys(hostname) "
            "WHERE state = 'active'",
            """CREATE TABLE enrollment_tokens (
                id TEXT PRIMARY KEY,
                secret_hash BLOB NOT NULL,
                uses INTEGER NOT NULL,
                used INTEGER NOT NULL DEFAULT 0,
                created_at REAL NOT NULL,
                expires_at REAL
            )""",
            """CREATE TABLE api_tokens (
                id TEXT PRIMARY KEY,
                secret_hash BLOB NOT NULL UNIQUE,
                name TEXT NOT NULL,
                created_at REAL NOT NULL
            )""",
        ),
    ),
    (
        # Spanner: this bolt's copy of the roster (vigo/spanner/roster/store.py).
        # Each record is kept as its canonical JSON and verified again on load.
        2,
        (
            """CREATE TABLE federation (
                singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
                id TEXT NOT NULL,
                founder_id TEXT NOT NULL
            )""",
            """CREATE TABLE roster_rows (
                bolt_id TEXT PRIMARY KEY,
                seq INTEGER NOT NULL,
                record TEXT NOT NULL
            )""",
            """CREATE TABLE roster_removals (
                bolt_id TEXT PRIMARY KEY,
                record TEXT NOT NULL
            )""",
            """CREATE TABLE roster_consumed_tokens (
                token_id TEXT PRIMARY KEY,
                record TEXT NOT NULL
            )""",
            """CREATE TABLE roster_overrides (
                envoy_id TEXT PRIMARY KEY,
                record TEXT NOT NULL
            )""",
        ),
    ),
    (
        # Spanner: join tokens this bolt minted (vigo/spanner/invites.py); a
        # redemption is serialised here, at the minter, before anything else.
        3,
        (
            """CREATE TABLE spanner_invites (
                id TEXT PRIMARY KEY,
                secret_hash BLOB NOT NULL,
                expires_at_ms INTEGER NOT NULL,
                created_at_ms INTEGER NOT NULL,
                consumed_by TEXT,
                consumed_at_ms INTEGER
            )""",
        ),
    ),
    (
        # Spanner: this bolt's drain in progress (vigo/spanner/drain.py), so a
        # restart resumes it with the same destination (``target``: None means
        # each envoy's pattern owner).
        4,
        (
            """CREATE TABLE spanner_drain (
                singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
                target TEXT,
                started_at_ms INTEGER NOT NULL
            )""",
        ),
    ),
    (
        # Spanner: envoys this bolt is handing to another (``target``), written
        # before the hand-over starts and deleted when the envoy is marked
        # moved, so a restart finishes a reassign a crash interrupted
        # (vigo/spanner/handover.py).
        5,
        (
            """CREATE TABLE envoy_moves (
                envoy_id TEXT PRIMARY KEY,
                target TEXT NOT NULL,
                started_at_ms INTEGER NOT NULL
            )""",
        ),
    ),
    (
        # Enrollment tokens an operator withdrew (``vigocli token withdraw``):
        # refused from then on, kept for the record.
        6,
        ("ALTER TABLE enrollment_tokens ADD COLUMN withdrawn_at REAL",),
    ),
    (
        # Each envoy's check-in sequence reservation: at or above every
        # sequence accepted from it, written before a sequence above it is
        # acknowledged, so replay protection survives a crash
        # (vigo/fleet/replay.py). Existing envoys get theirs at the next start.
        7,
        ("ALTER TABLE envoys ADD COLUMN seq_reserved INTEGER NOT NULL DEFAULT 0",),
    ),
    (
        # High availability (vigo/server/peer/, docs/ha.md): the change log a
        # standby replays (vigo/store/changelog.py), where it stands (the last
        # LSN written or applied, and the epoch: raised by each promotion), the
        # replica set's members and the standby invitations. All of it is
        # replicated, so every member knows every other.
        8,
        (
            """CREATE TABLE replication_log (
                lsn INTEGER PRIMARY KEY,
                entry BLOB NOT NULL
            )""",
            """CREATE TABLE replication_state (
                singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
                lsn INTEGER NOT NULL,
                epoch INTEGER NOT NULL
            )""",
            "INSERT INTO replication_state (singleton, lsn, epoch) VALUES (1, 0, 0)",
            """CREATE TABLE replication_epochs (
                epoch INTEGER PRIMARY KEY,
                start_lsn INTEGER NOT NULL,
                node_id TEXT NOT NULL,
                promoted_at REAL NOT NULL
            )""",
            """CREATE TABLE replica_members (
                node_id TEXT PRIMARY KEY,
                node_key BLOB NOT NULL,
                envoy_address TEXT NOT NULL,
                api_url TEXT NOT NULL,
                replication_address TEXT NOT NULL,
                added_at REAL NOT NULL,
                removed_at REAL
            )""",
            """CREATE TABLE replica_invites (
                id TEXT PRIMARY KEY,
                secret_hash BLOB NOT NULL,
                created_at REAL NOT NULL,
                expires_at REAL NOT NULL,
                used_by TEXT,
                used_at REAL
            )""",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


def migrate(connection):
    """Bring the schema up to ``SCHEMA_VERSION``; refuse a newer database."""
    (version,) = connection.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise NewerSchema(
            "database schema version %d is newer than this server's %d; "
            "upgrade vigosrv" % (version, SCHEMA_VERSION)
        )
    for target, statements in MIGRATIONS:
        if target <= version:
            continue
        # One transaction per migration (the connection runs in autocommit):
        # a crash leaves the schema at the old version or the new, never
        # between (SQLite rolls schema changes back with the transaction).
        connection.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements:
                connection.execute(statement)
            connection.execute("PRAGMA user_version = %d" % (target,))
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
    return SCHEMA_VERSION
