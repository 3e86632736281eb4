"""High availability with real processes: ``twistd -n vigo`` servers on loopback,
``vigocli`` for the operator's steps, envoys through the real envoy code.

The primary is killed with SIGKILL in the middle of an enrollment burst with
``peers.sync: 1``; the standby is promoted; every enrollment the primary
acknowledged, the token and the queued push are on the new primary, and
every acknowledged envoy attaches there (failing over by its replica list)
without enrolling again. The old primary, restarted, is fenced and follows.
A standby killed mid-stream resumes without a gap or a repeat.
"""

import os
import sqlite3

from twisted.internet import defer, reactor
from twisted.trial import unittest

from tests.processes import ServerProcess, free_ports, vigocli, write_config
from vigo.envoy.main import attach, register
from vigo.envoy.state import EnvoyState
from vigo.tokens import EnrollmentToken

BURST = 60
KILL_AFTER = 20


def node_config(directory, sync=0):
    envoy, api, replication = free_ports(3)
    return write_config(directory, server={"envoy_listen": "127.0.0.1:%d" % envoy,
                                           "api_listen": "127.0.0.1:%d" % api},
                        peers={"listen": "127.0.0.1:%d" % replication, "sync": sync,
                               "sync_timeout": "5s"})


def rows(data_dir, sql):
    connection = sqlite3.connect(os.path.join(data_dir, "vigo.sqlite3"))
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


class HAProcessTests(unittest.TestCase):

    timeout = 120

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())

    @defer.inlineCallbacks
    def server(self, name, config=None, sync=0):
        config = config or node_config(os.path.join(self.directory, name), sync)
        process = ServerProcess(config)
        self.addCleanup(lambda: process.kill() if process.exit_code is None else None)
        yield process.start()
        return process

    @defer.inlineCallbacks
    def cli(self, process, *args, expect=0):
        out, err, code = yield vigocli(process.data_dir, *args)
        self.assertEqual(code, expect, (args, out, err))
        return out.decode()

    @defer.inlineCallbacks
    def pair(self, sync):
        primary = yield self.server("primary", sync=sync)
        standby = yield self.server("standby", sync=sync)
        invite = (yield self.cli(primary, "server", "standby", "invite")).strip().splitlines()[-1]
        mark = len(primary.output)
        yield self.cli(standby, "server", "standby", "join", invite)
        # The standby takes its base copy, then streams.
        yield primary.wait_for(b"follows from LSN", after=mark)
        return primary, standby

    @defer.inlineCallbacks
    def test_kill_the_primary_mid_burst_promote_and_lose_nothing_acknowledged(self):
        primary, standby = yield self.pair(sync=1)
        token_text = (yield self.cli(primary, "token", "create", "--uses", str(BURST + 5)))
        token = EnrollmentToken.decode(token_text.strip().splitlines()[-1])

        # One envoy enrolled and pushed before the burst (an acknowledged push).
        pushed = yield self.enroll(token, "pushed.example.com")
        yield self.cli(primary, "envoys", "push", "pushed.example.com")

        acked = {}
        killed = defer.Deferred()

        def enrolled(state):
            acked[state.hostname] = state
            if len(acked) >= KILL_AFTER and not killed.called:
                killed.callback(None)

        burst = [self.enroll(token, "web%d.example.com" % n).addCallbacks(
            enrolled, lambda _: None) for n in range(BURST)]
        yield killed
        yield primary.kill()
        yield defer.DeferredList(burst)
        self.assertGreaterEqual(len(acked), KILL_AFTER)

        promoted = yield self.cli(standby, "server", "promote")
        self.assertIn("primary", promoted)
        held = {hostname for (hostname,) in rows(standby.data_dir, "SELECT hostname FROM envoys")}
        self.assertLessEqual(set(acked) | {"pushed.example.com"}, held)
        self.assertEqual(rows(standby.data_dir, "SELECT pending_push FROM envoys WHERE "
                                               "hostname = 'pushed.example.com'"), [(1,)])
        self.assertEqual(rows(standby.data_dir, "SELECT COUNT(*) FROM enrollment_tokens "
                                               "WHERE id = '%s'" % (token.token_id,)), [(1,)])

        # Every acknowledged envoy attaches at the new primary, as itself.
        new_address = standby.envoy_server
        for state in list(acked.values()) + [pushed]:
            envoy_id = state.envoy_id
            protocol, attached = yield attach(reactor, state)
            protocol.close()
            self.assertEqual(state.envoy_id, envoy_id)
            self.assertEqual(state.server_address, new_address)

        # The old primary, restarted, learns of epoch 1 and follows.
        restarted = ServerProcess(primary.config_path)
        self.addCleanup(lambda: restarted.kill() if restarted.exit_code is None else None)
        yield restarted.start()
        yield restarted.wait_for(b"vigo standby ")
        self.assertIn(b"fenced", restarted.output)
        status = yield self.cli(standby, "server", "status")
        self.assertIn("primary", status)

    @defer.inlineCallbacks
    def enroll(self, token, hostname):
        state = EnvoyState.open(os.path.join(self.directory, "envoys", hostname), create=True)
        protocol = yield register(reactor, state, hostname, token)
        if protocol is not None:
            protocol.close()
        return state

    @defer.inlineCallbacks
    def test_a_standby_killed_mid_stream_resumes_without_a_gap_or_a_repeat(self):
        primary, standby = yield self.pair(sync=0)
        token = EnrollmentToken.decode((yield self.cli(
            primary, "token", "create", "--uses", "40")).strip().splitlines()[-1])
        self.assertIn(b"follows from LSN", primary.output)
        # The standby is killed while entries stream to it: after the first few
        # enrollments of a burst are acknowledged, the rest still coming.
        done = []
        killed = defer.Deferred()

        def enrolled(state):
            done.append(state)
            if len(done) == 5:
                killed.callback(None)

        burst = [self.enroll(token, "a%d.example.com" % n).addCallback(enrolled)
                 for n in range(40)]
        yield killed
        yield standby.kill()
        yield defer.gatherResults(burst)
        mark = len(primary.output)
        again = ServerProcess(standby.config_path)
        self.addCleanup(lambda: again.kill() if again.exit_code is None else None)
        yield again.start()
        yield primary.wait_for(b"follows from LSN", after=mark)
        # Caught up: the primary's last entry is the standby's.
        yield self.caught_up(primary, again)
        lsns = [lsn for (lsn,) in rows(again.data_dir, "SELECT lsn FROM replication_log "
                                                      "ORDER BY lsn")]
        self.assertEqual(lsns, list(range(lsns[0], lsns[0] + len(lsns))))
        for table in ("envoys", "enrollment_tokens", "api_tokens", "replica_members"):
            sql = "SELECT * FROM %s ORDER BY 1" % (table,)
            self.assertEqual(rows(again.data_dir, sql), rows(primary.data_dir, sql), table)

    @defer.inlineCallbacks
    def caught_up(self, primary, standby):
        """Wait until the standby's LSN is the primary's (each check a vigocli run)."""
        for _ in range(200):
            head = rows(primary.data_dir, "SELECT lsn FROM replication_state")
            if rows(standby.data_dir, "SELECT lsn FROM replication_state") == head:
                return
            yield self.cli(standby, "server", "status")
        self.fail("the standby did not catch up")
