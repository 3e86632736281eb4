"""High availability through the real path: servers in this process, real
SQLite files, the replication port over mutual TLS on loopback.

A primary and a fresh server: the invitation is redeemed, the base copy
taken, the change log streamed; enrollments made at the primary are held by
the standby (with ``peers.sync: 1``, before they are acknowledged); the
standby refuses writes and redirects envoys; promotion raises the epoch and
fences the old primary, which rejoins as a standby.
"""

import argparse
import json
import os
import random
import sqlite3

import attr
from twisted.internet import defer, reactor
from twisted.trial import unittest

from tests.events import rosters_of, until
from tests.fleetkit import EnvoyKey
from tests.serverkit import start_server
from tests.test_spanner_membership import spanner_config
from vigo.cli.target import http_client, resolve_target
from vigo.config import config_from_mapping, parse_address
from vigo.envoy import main as envoy_main
from vigo.envoy.state import EnvoyState
from vigo.interfaces.errors import Refusal
from vigo.server.host import ServerHost
from vigo.server.peer.node import NodeState
from vigo.store import changelog


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
        host = yield start_server(self, ha_config(os.path.join(self.directory, name), **options))
        self.assertIsInstance(host, ServerHost)
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
        # The standby's commits are handed to its OS; the primary's are on disk.
        self.assertEqual(standby.current.store.synchronous, "NORMAL")
        self.assertEqual(primary.current.store.synchronous, "FULL")
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


    @defer.inlineCallbacks
    def test_the_other_standbys_follow_the_promoted_one(self):
        primary, first = yield self.pair()
        second = yield self.node("second")
        invite = yield primary.replicas.invite(3600)
        yield second.replicas.join(invite["token"])
        yield second.reached(primary.replication.head())
        yield self.enroll(primary, "web1.example.com")
        yield first.reached(primary.replication.head())
        yield second.reached(primary.replication.head())
        yield primary.stopService()  # the primary's machine dies
        yield second.replicas.promote()
        # The first standby joined before the second: it learns of it from its
        # database when told to follow it, and follows.
        yield first.reached(second.replication.head())
        self.assertEqual(first.node.primary_id, second.node_identity.id)
        self.assertEqual(first.node.epoch, 1)
        yield self.enroll(second, "web2.example.com")
        yield first.reached(second.replication.head())
        self.assertEqual(len(table(first.data_dir, "SELECT id FROM envoys")), 2)


class HAThroughTheAPITests(HATests):
    """The same servers, through their HTTPS APIs and envoy ports."""

    @defer.inlineCallbacks
    def api(self, host, method, path, body=None):
        options = argparse.Namespace(data_dir=host.data_dir, api=None, token=None, ca_file=None)
        target = resolve_target(options, {})
        client, pool = http_client(reactor, target)
        try:
            response = yield client.request(
                method, target.url + path, data=None if body is None else json.dumps(body).encode(),
                headers={b"authorization": [b"Bearer " + target.token.encode()],
                         b"content-type": [b"application/json"]})
            content = yield response.content()
        finally:
            yield pool.closeCachedConnections()
        try:
            content = json.loads(content)
        except ValueError:
            content = content.decode()
        return response.code, content

    @defer.inlineCallbacks
    def test_a_standby_reads_refuses_writes_and_redirects_envoys(self):
        primary, standby = yield self.pair()
        registered = yield self.enroll(primary, "web1.example.com")
        yield standby.reached(primary.replication.head())
        code, body = yield self.api(standby, "POST", "/api/v1/tokens", {})
        self.assertEqual(code, 503)
        self.assertEqual(body["error"], "standby")
        self.assertIn(primary.replication.addresses()["api"], body["detail"])
        code, body = yield self.api(standby, "GET", "/api/v1/envoys")
        self.assertEqual((code, [e["id"] for e in body["envoys"]]),
                         (200, [registered["envoy_id"]]))
        code, body = yield self.api(standby, "GET", "/healthz")
        self.assertEqual((code, body["role"]), (200, "standby"))
        code, metrics = yield self.api(standby, "GET", "/metrics")
        self.assertIn('vigo_replication_role{role="standby"} 1.0', metrics)
        code, body = yield self.api(standby, "GET", "/api/v1/server/status")
        self.assertEqual((body["role"], body["primary"]["node_id"]),
                         ("standby", primary.node_identity.id))
        code, body = yield self.api(primary, "GET", "/healthz")
        self.assertEqual((body["role"], body["epoch"]), ("primary", 0))
        code, metrics = yield self.api(primary, "GET", "/metrics")
        self.assertIn('vigo_replication_lag_seconds{node="%s"}' % (standby.node_identity.id,),
                      metrics)

        # An envoy that dials the standby is sent to the primary, and attaches there.
        state = EnvoyState.open(self.mktemp(), create=True)
        token = yield primary.current.enrollment_tokens.create()
        protocol = yield envoy_main.register(reactor, state, "web2.example.com", token)
        yield protocol.close()
        primary_address = str(primary.current.advertised.envoy())
        self.assertEqual(list(state.replicas),
                         [primary_address, str(standby.current.advertised.envoy())])
        state.set_server(str(standby.current.advertised.envoy()), state.server_fingerprint,
                         state.server_id)
        protocol, attached = yield envoy_main.attach(reactor, state)
        protocol.close()
        self.assertEqual(state.server_address, primary_address)

    @defer.inlineCallbacks
    def test_a_write_not_held_by_a_standby_in_time_is_refused(self):
        primary = yield self.node("primary", sync=1, sync_timeout="0.2s")
        code, body = yield self.api(primary, "POST", "/api/v1/tokens", {})
        self.assertEqual(code, 503)
        self.assertEqual(body["error"], "replication_timeout")
        code, _ = yield self.api(primary, "GET", "/api/v1/tokens")
        self.assertEqual(code, 200)
        # The replica set's own routes are answered at once.
        code, body = yield self.api(primary, "POST", "/api/v1/server/standby/invite",
                                    {"expires_in": "10m"})
        self.assertEqual(code, 201)
        self.assertTrue(body["token"].startswith("vgos_"))

    @defer.inlineCallbacks
    def test_a_standby_behind_the_retained_log_takes_a_new_base_copy(self):
        self.patch(changelog, "PRUNE_EVERY", 10)
        primary, standby = yield self.pair()
        primary.current.store.changelog.retain = 10
        self.assertEqual(primary.replication.copies_sent, 1)
        yield standby.stopService()
        for _ in range(30):
            yield primary.current.enrollment_tokens.create()
        again = yield self.node("standby")
        yield again.reached(primary.replication.head())
        self.assertEqual(primary.replication.copies_sent, 2)
        sql = "SELECT * FROM enrollment_tokens ORDER BY id"
        self.assertEqual(table(again.data_dir, sql), table(primary.data_dir, sql))


class SpannerHATests(unittest.TestCase):
    """An HA bolt in a three-bolt federation, failed over: the other bolts route
    its envoys to the promoted node, which serves as the same bolt."""

    timeout = 60

    def setUp(self):
        self.group = "239.192.%d.%d" % (random.randrange(1, 255), random.randrange(1, 255))
        self.port = random.randrange(20000, 60000)

    @defer.inlineCallbacks
    def bolt(self, name, peers=False):
        config = spanner_config(self.mktemp(), name, self.group, self.port)
        if peers:
            config = attr.evolve(config, peers=attr.evolve(
                config.peers, listen=parse_address("127.0.0.1:0")))
        return (yield start_server(self, config))

    @defer.inlineCallbacks
    def test_the_other_bolts_route_to_the_promoted_node(self):
        a = yield self.bolt("a")
        b = yield self.bolt("b")
        c_host = yield self.bolt("c", peers=True)
        c = c_host.current
        yield a.spanner.admin.init()
        for joiner in (b, c):
            invite = yield a.spanner.admin.invite(3600)
            yield joiner.spanner.admin.join(invite["token"])
        bolts = [a, b, c]
        yield until(lambda: all(len(s.spanner.roster.bolt_ids()) == 3 for s in bolts),
                    *rosters_of(*bolts), what="every roster holds all 3 bolts")

        standby = yield self.bolt("c", peers=True)
        invite = yield c_host.replicas.invite(3600)
        yield standby.replicas.join(invite["token"])
        yield standby.reached(c_host.replication.head())
        old_row = a.spanner.roster.row(c.identity.id)

        yield c_host.stopService()  # c's machine dies
        promoted = yield standby.replicas.promote()
        self.assertEqual(promoted["epoch"], 1)
        new_c = standby.current
        self.assertEqual(new_c.identity.id, c.identity.id)  # the same bolt
        new_row = new_c.spanner.roster.row(c.identity.id)
        self.assertGreater(new_row.seq, old_row.seq)
        self.assertEqual(new_row.addresses.to_data(), new_c.advertised.row())
        yield until(lambda: all(s.spanner.roster.row(c.identity.id).seq == new_row.seq
                                for s in (a, b)),
                    *rosters_of(a, b), what="a and b hold c's new row")

        # An envoy of c's partition registers at a: enrolled at the new c.
        token = yield a.enrollment_tokens.create(uses=1)
        state = EnvoyState.open(self.mktemp(), create=True)
        protocol = yield envoy_main.register(reactor, state, "web1.c.example.com", token,
                                             address=str(a.advertised.envoy()))
        self.assertIsNone(protocol)  # told to attach at c
        self.assertEqual(state.server_id, c.identity.id)
        self.assertEqual(state.server_address, str(new_c.advertised.envoy()))
        self.assertIsNotNone(new_c.fleet.index.get(state.envoy_id))
        answer = yield a.spanner.bolt.call(c.identity.id, "ping", {})
        self.assertEqual(answer["bolt_id"], c.identity.id)
