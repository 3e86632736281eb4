"""The replication port: any bytes from a member on a standby's connection.

Fed to a ``MemberProtocol`` answered by a standby's ``Follower`` (an
``ImmediateStore`` database; the caller's node key set, as TLS would), as its
primary would send them. Promises: nothing raises out of ``dataReceived``, no
traceback is logged, and the database holds no entry but well-formed next
ones (a box that applies one is followed by the same check).
"""

import sys

import harness

with harness.instrumented():
    from twisted.internet.error import ConnectionDone
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport
    from twisted.protocols import amp
    from twisted.python.failure import Failure

    from vigo.config import config_from_mapping
    from vigo.identity import Identity
    from vigo.server.peer import members as records
    from vigo.server.peer.channel import MemberProtocol
    from vigo.server.peer.node import NodeState
    from vigo.server.peer.protocol import pack_entries
    from vigo.server.peer.standby import Follower
    from vigo.store.changelog import encode_entry
    from vigo.testing.store import ImmediateStore

PRIMARY = Identity(b"\x01" * 32)
STANDBY = Identity(b"\x02" * 32)
clock = Clock()
store = ImmediateStore()
store.run(lambda cursor: records.add_member(
    cursor, PRIMARY.public_key, "127.0.0.1:1530", "https://127.0.0.1:8443", "127.0.0.1:1534",
    0.0))
node = NodeState()
node.follow(0, PRIMARY.id, "127.0.0.1:1534", PRIMARY.fingerprint)
follower = Follower(clock, store, node, STANDBY, "/nonexistent",
                    config_from_mapping({"peers": {"listen": "127.0.0.1:0"}}).peers,
                    lambda: {}, lambda node: None, lambda: None)
follower.load()
failures = harness.LoggedFailures()


def test_one_input(data):
    before = store.query("SELECT lsn FROM replication_state")[0][0]
    protocol = MemberProtocol(follower)
    protocol.node_key = PRIMARY.public_key
    protocol.makeConnection(StringTransport())
    follower.connection = protocol
    protocol.dataReceived(data)
    protocol.connectionLost(Failure(ConnectionDone()))
    failures.check()
    (lsn,) = store.query("SELECT lsn FROM replication_state")[0]
    entries = store.query("SELECT COUNT(*) FROM replication_log WHERE lsn > ?", before)[0][0]
    if lsn < before or entries != lsn - before:
        raise AssertionError("the log went from %d to %d with %d entries" % (before, lsn,
                                                                             entries))


def _box(command, **values):
    fields = {b"_command": command, b"_ask": b"1"}
    fields.update({k.encode(): v for k, v in values.items()})
    return amp.AmpBox(fields).serialize()


SEEDS = [
    _box(b"Who"),
    _box(b"Entries", epoch=b"0", head=b"1", entries=pack_entries(
        [(1, encode_entry([("INSERT INTO api_tokens (id, secret_hash, name, created_at) "
                            "VALUES (?, ?, ?, ?)", ["t", b"\x00" * 32, "n", 1.0], False)]))])),
    _box(b"CopyBegin", size=b"10", lsn=b"1", epoch=b"0"),
    _box(b"Follow", epoch=b"1", primary_id=b"x", address=b"127.0.0.1:1"),
]

if __name__ == "__main__":
    harness.run(test_one_input, SEEDS, max_len=65536)
    sys.exit(0)
