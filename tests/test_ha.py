"""High availability through the real path: servers in this process, real
SQLite files, the replication port over mutual TLS on loopback.

A primary and a fresh server: the invitation is redeemed, the base copy
taken, the change log streamed; enrollments made at the primary are held by
the standby (with ``peers.sync: 1``, before they are acknowledged); the
standby refuses writes and redirects envoys; promotion raises the epoch and
fences the old primary, which rejoins as a standby.
"""

import os
import sqlite3

from twisted.internet import defer, reactor
from twisted.trial import unittest

from tests.fleetkit import EnvoyKey
from vigo.config import config_from_mapping
from vigo.interfaces.errors import Refusal
from vigo.server import build_server
from vigo.server.host import ServerHost
from vigo.server.peer.node import NodeState


def ha_config(data_dir, sync=0, retain=100000, sync_timeout="2s"):
    return config_from_mapping({
        "server": {"data_dir": data_dir, "hostname": "localhost",
                   "envoy_listen": "127.0.0.1:0", "api_listen": "127.0.0.1:0"},
        "peers": {"listen": "127.0.0.1:0", "sync": sync, "sync_timeout": sync_timeout,
                  "retain": retain},
    })


def table(data_dir, sql):
    connection = sqlite3.connect(os.path.join(data_dir, "vigo.sqlite3"))
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


class HATests(unittest.TestCase):

    timeout = 20

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())

    @defer.inlineCallbacks
    def node(self, name, **options):
        host = build_server(ha_config(os.path.join(self.directory, name), **options), reactor)
        self.assertIsInstance(host, ServerHost)
        host.startService()
        self.addCleanup(lambda: host.stopService() if host.running else None)
        yield host.ready
        return host

    @defer.inlineCallbacks
    def pair(self, **options):
        primary = yield self.node("primary", **options)
        standby = yield self.node("standby", **options)
        invite = yield primary.replicas.invite(3600)
        joined = yield standby.replicas.join(invite["token"])
        self.assertEqual(joined["primary"], primary.node_identity.id)
        self.assertEqual(joined["role"], "standby")
        yield standby.reached(primary.replication.head())
        self.invite = invite["token"]
        return primary, standby

    @defer.inlineCallbacks
    def enroll(self, host, hostname):
        server = host.current
        token = yield server.enrollment_tokens.create()
        key = EnvoyKey(hostname)
        registered = yield server.enrollment.register(
            *key.register_fields(token, int(reactor.seconds() * 1000)))
        return registered

    @defer.inlineCallbacks
    def test_a_standby_holds_what_the_primary_acknowledged(self):
        primary, standby = yield self.pair(sync=1)
        self.assertEqual(standby.node.role, "standby")
        self.assertFalse(standby.node.needs_base_copy)
        # The base copy carried the identity: envoys keep their pin.
        self.assertEqual(standby.current.identity.id, primary.current.identity.id)
        registered = yield self.enroll(primary, "web1.example.com")
        # sync: 1, so the Registered answer waited for the standby to hold it.
        self.assertGreaterEqual(standby.lsn, primary.replication.head())
        rows = table(standby.data_dir, "SELECT id, hostname FROM envoys")
        self.assertEqual(rows, [(registered["envoy_id"], "web1.example.com")])
        status = primary.replicas.status()
        self.assertEqual(status["role"], "primary")
        [row] = status["standbys"]
        self.assertEqual(row["node_id"], standby.node_identity.id)
        self.assertTrue(row["connected"])
        self.assertEqual(row["lsn"], primary.replication.head())
        standby_status = standby.replicas.status()
        self.assertEqual(standby_status["role"], "standby")
        self.assertEqual(standby_status["primary"]["node_id"], primary.node_identity.id)

    @defer.inlineCallbacks
    def test_without_a_standby_a_sync_write_is_refused_as_retryable(self):
        primary = yield self.node("primary", sync=1, sync_timeout="0.2s")
        failure = yield self.assertFailure(self.enroll(primary, "web1.example.com"), Refusal)
        self.assertEqual(failure.code, "replication_timeout")
        self.assertTrue(failure.retryable)

    @defer.inlineCallbacks
    def test_a_server_holding_envoys_refuses_to_join(self):
        primary = yield self.node("primary")
        other = yield self.node("other")
        yield self.enroll(other, "web1.example.com")
        invite = yield primary.replicas.invite(3600)
        failure = yield self.assertFailure(other.replicas.join(invite["token"]), Refusal)
        self.assertIn("1 envoy(s)", failure.reason)
        self.assertEqual(other.node.role, "primary")

    @defer.inlineCallbacks
    def test_an_invitation_is_used_once(self):
        primary, standby = yield self.pair()
        third = yield self.node("third")
        again = yield self.assertFailure(third.replicas.join(self.invite), Refusal)
        self.assertEqual(again.code, "refused")
        self.assertIn("used already", again.reason)
        self.assertEqual(third.node.role, "primary")
        damaged = yield self.assertFailure(third.replicas.join(self.invite[:-3]), Refusal)
        self.assertIn("damaged", damaged.reason)

    @defer.inlineCallbacks
    def test_promotion_fences_the_old_primary_which_follows(self):
        primary, standby = yield self.pair()
        registered = yield self.enroll(primary, "web1.example.com")
        yield standby.reached(primary.replication.head())
        promoted = yield standby.replicas.promote()
        self.assertEqual(promoted["epoch"], 1)
        self.assertEqual(standby.node.role, "primary")
        self.assertEqual(NodeState.load(standby.data_dir).epoch, 1)
        # The new primary holds the envoy, and its epoch is in its database.
        self.assertIn(registered["envoy_id"], [r.id for r in standby.current.fleet.index])
        self.assertEqual(table(standby.data_dir, "SELECT epoch FROM replication_state"), [(1,)])
        # Its Follow reaches the old primary, which becomes its standby.
        yield primary.reached(standby.replication.head())
        self.assertEqual(primary.node.role, "standby")
        self.assertEqual(primary.node.primary_id, standby.node_identity.id)
        # ... and a write at the new primary reaches it.
        yield self.enroll(standby, "web2.example.com")
        yield primary.reached(standby.replication.head())
        self.assertEqual(sorted(r[0] for r in table(primary.data_dir,
                                                    "SELECT hostname FROM envoys")),
                         ["web1.example.com", "web2.example.com"])
