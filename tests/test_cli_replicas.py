"""``vigocli server ...`` (high availability): parsing, printers, end to end over
HTTPS against the admin API with a ``FakeReplicaSet`` and with HA off, and
through two real HA servers in this process."""

import io
import json
import os

from twisted.internet import defer, endpoints, reactor, task
from twisted.trial import unittest

from tests.serverkit import start_server
from tests.test_api import FacadeServer, new_clock
from tests.test_cli import TrackingSite, parse_failure, request_of
from tests.test_cli_spanner import Serving
from tests.test_ha import ha_config
from vigo.api.server import ServerAPI
from vigo.cli import arguments as cli_arguments
from vigo.cli import commands as cli_commands
from vigo.cli import main as cli
from vigo.cli import replicas as cli_replicas
from vigo.interfaces.errors import Refusal
from vigo.tls import api_server_options, ensure_api_certificate

SERVER_COMMANDS = {"server status", "server standby invite", "server standby join",
                   "server standby list", "server standby remove", "server promote"}

PRIMARY = "p" * 20
STANDBY = "s" * 20
OTHER = "o" * 20
TOKEN = "vgos_invitation"


def member(node_id, port):
    """A member's record, as ``Member.describe()`` gives it."""
    return {"node_id": node_id, "envoy_address": "10.0.0.%d:1530" % (port,),
            "api_url": "https://10.0.0.%d:8443" % (port,),
            "replication_address": "10.0.0.%d:1534" % (port,), "added_at": 1000.0}


def primary_status():
    """``ReplicaSet.status()`` at a primary with two standbys, one not connected."""
    return {"ha": True, "node_id": PRIMARY, "role": "primary", "epoch": 3, "sync": 1,
            "lsn": 1042, "confirmed": True, "primary": member(PRIMARY, 1), "standbys": [
                dict(member(STANDBY, 2), connected=True, lsn=1040, lag_seconds=0.125),
                dict(member(OTHER, 3), connected=False, lsn=None, lag_seconds=None)]}


def standby_status():
    """``ReplicaSet.status()`` at a standby of ``PRIMARY``."""
    return {"ha": True, "node_id": STANDBY, "role": "standby", "epoch": 3, "sync": 0,
            "lsn": 1040, "head": 1042, "lag_seconds": 0.5, "streaming": True,
            "needs_base_copy": False,
            "primary": dict(member(PRIMARY, 1), replication_address="10.0.0.1:1534"),
            "standbys": [member(OTHER, 3)]}


class ParseTests(unittest.SynchronousTestCase):
    """Every ``server`` command, its request, and argparse's exit 2."""

    def test_every_command_maps_to_its_request(self):
        cases = [
            (["server", "status"], ("GET", "/api/v1/server/status", None)),
            (["server", "standby", "invite"], ("POST", "/api/v1/server/standby/invite", {})),
            (["server", "standby", "invite", "--expires-in", "1h"],
             ("POST", "/api/v1/server/standby/invite", {"expires_in": "1h"})),
            (["server", "standby", "join", TOKEN],
             ("POST", "/api/v1/server/standby/join", {"token": TOKEN})),
            (["server", "standby", "list"], ("GET", "/api/v1/server/standby", None)),
            (["server", "standby", "remove", STANDBY],
             ("DELETE", "/api/v1/server/standby/" + STANDBY, None)),
            (["server", "standby", "remove", "a/b?c"],
             ("DELETE", "/api/v1/server/standby/a%2Fb%3Fc", None)),
            (["server", "promote"], ("POST", "/api/v1/server/promote", {})),
        ]
        for argv, expected in cases:
            self.assertEqual(request_of(argv), expected, argv)
        self.assertEqual({key for key in cli_commands.COMMANDS if key.startswith("server ")},
                         SERVER_COMMANDS)

    def test_global_options_anywhere(self):
        for argv in (["--json", "--token", "t", "server", "standby", "list"],
                     ["server", "standby", "list", "--json", "--token", "t"]):
            options = cli_arguments.parse(argv)
            self.assertEqual((options.json, options.token, options.command),
                             (True, "t", "server standby list"))
        options = cli_arguments.parse(["--token", "t", "server", "standby", "join", TOKEN])
        self.assertEqual((options.token, options.token_text), ("t", TOKEN))

    def test_usage_errors_exit_2(self):
        for argv, says in ((["server"], "ACTION"),
                           (["server", "standby"], "ACTION"),
                           (["server", "standby", "join"], "TOKEN"),
                           (["server", "standby", "remove"], "NODE"),
                           (["server", "standby", "invite", "--expires-in", "soon"], "duration"),
                           (["server", "standby", "invite", "--expires-in", "0s"], "duration"),
                           (["server", "promote", "now"], "unrecognized"),
                           (["server", "fly"], "invalid choice")):
            code, err = parse_failure(argv)
            self.assertEqual(code, 2, argv)
            self.assertIn(says, err, argv)


class OutputTests(unittest.SynchronousTestCase):
    """What people see."""

    def show(self, printer, answer):
        out, err = io.StringIO(), io.StringIO()
        printer(answer, out, err)
        return out.getvalue(), err.getvalue()

    def test_status_at_a_primary(self):
        out, err = self.show(cli_replicas.server_status, primary_status())
        self.assertEqual(err, "")
        self.assertEqual(out.splitlines(), [
            "role                   primary",
            f"node                   {PRIMARY}",
            "epoch                  3",
            "lsn                    1042",
            "confirmed              yes",
            "sync                   1 (a durable write waits for 1 standby(s) to hold it)",
            f"primary                {PRIMARY} (this node)",
            "primary api            https://10.0.0.1:8443",
            "primary envoy address  10.0.0.1:1530",
            "standbys:",
            "NODE                  CONNECTED  LSN   LAG    ENVOY-ADDRESS  API",
            f"{STANDBY}  yes        1040  0.12s  10.0.0.2:1530  https://10.0.0.2:8443",
            f"{OTHER}  no         -     -      10.0.0.3:1530  https://10.0.0.3:8443",
        ])

    def test_status_at_a_standby(self):
        out, err = self.show(cli_replicas.server_status, standby_status())
        self.assertEqual(err, "")
        self.assertEqual(out.splitlines(), [
            "role                   standby",
            f"node                   {STANDBY}",
            "epoch                  3",
            "lsn                    1040",
            "head                   1042",
            "lag                    0.50s",
            "streaming              yes",
            "needs base copy        no",
            "sync                   0 (writes are acknowledged without waiting for a standby)",
            f"primary                {PRIMARY}",
            "primary api            https://10.0.0.1:8443",
            "primary envoy address  10.0.0.1:1530",
            "standbys:",
            "NODE                  CONNECTED  LSN  LAG  ENVOY-ADDRESS  API",
            f"{OTHER}  -          -    -    10.0.0.3:1530  https://10.0.0.3:8443",
        ])

    def test_status_of_a_standby_waiting_for_its_base_copy(self):
        status = {"ha": True, "node_id": STANDBY, "role": "standby", "epoch": 0, "sync": 0,
                  "lsn": 0, "head": None, "lag_seconds": 75.0, "streaming": False,
                  "needs_base_copy": True,
                  "primary": {"node_id": PRIMARY, "replication_address": "10.0.0.1:1534"},
                  "standbys": []}
        out, _ = self.show(cli_replicas.server_status, status)
        for line in ("head                   -", "lag                    1m15s",
                     "streaming              no", "needs base copy        yes",
                     "primary api            -", "no standbys"):
            self.assertIn(line + "\n", out)

    def test_status_when_fenced_or_not_yet_confirmed(self):
        status = dict(primary_status(), role="fenced")
        out, _ = self.show(cli_replicas.server_status, status)
        self.assertTrue(out.startswith("role                   fenced\n"))
        self.assertIn("it acknowledges nothing and rejoins as a standby", out)
        out, _ = self.show(cli_replicas.server_status, dict(primary_status(), confirmed=False))
        self.assertIn("confirmed              not yet (", out)

    def test_status_with_standby_ack_times(self):
        status = dict(primary_status(), ack_seconds={"p50": 0.0012, "p99": 0.0203,
                                                     "samples": 812})
        out, _ = self.show(cli_replicas.server_status, status)
        self.assertIn("confirmed              yes\n"
                      "standby acks           p50 1.2 ms, p99 20.3 ms after the commit "
                      "(812 writes)\n", out)
        out, _ = self.show(cli_replicas.server_status, dict(status, ack_seconds=None))
        self.assertNotIn("standby acks", out)

    def test_status_with_ha_off(self):
        # NoReplicaSet.status(): a server without peers.listen.
        out, err = self.show(cli_replicas.server_status, {
            "ha": False, "role": "primary", "node_id": None, "server_id": "x1", "epoch": 0,
            "primary": None, "standbys": [], "sync": 0})
        self.assertEqual((out.splitlines(), err), ([
            "role    primary", "server  x1",
            "ha      high availability is off (peers.listen is not set)"], ""))

    def test_standby_list(self):
        out, _ = self.show(cli_replicas.standbys_listed,
                           {"standbys": primary_status()["standbys"]})
        lines = out.splitlines()
        self.assertEqual(lines[0].split(), ["NODE", "CONNECTED", "LSN", "LAG", "ENVOY-ADDRESS",
                                            "API"])
        self.assertEqual(lines[1].split(), [STANDBY, "yes", "1040", "0.12s", "10.0.0.2:1530",
                                            "https://10.0.0.2:8443"])
        self.assertEqual(self.show(cli_replicas.standbys_listed, {"standbys": []})[0],
                         "no standbys\n")

    def test_invite_alone_on_stdout(self):
        out, err = self.show(cli_replicas.invite_created, {
            "token": TOKEN, "invite_id": "i1", "expires_at": 3600.0, "primary": PRIMARY})
        self.assertEqual(out, TOKEN + "\n")
        self.assertIn("one-shot", err)
        self.assertIn(PRIMARY, err)
        self.assertIn("expires at 1970-01-01T01:00:00Z", err)
        self.assertIn("vigocli server standby join TOKEN", err)

    def test_join_remove_promote_say_what_happened(self):
        out, _ = self.show(cli_replicas.standby_joined, {
            "role": "standby", "primary": PRIMARY, "epoch": 3, "node_id": STANDBY})
        self.assertEqual(out, f"this server (node {STANDBY}) is now a standby of {PRIMARY}, "
                              "at epoch 3; it takes a base copy from its primary now "
                              "('vigocli server status' shows its progress)\n")
        out, _ = self.show(cli_replicas.standby_removed, {"node_id": OTHER, "removed": True})
        self.assertEqual(out, f"standby {OTHER} removed from the replica set: it may not "
                              "replicate from here on\n")
        out, _ = self.show(cli_replicas.promoted, {
            "role": "primary", "epoch": 4, "lsn": 1040, "node_id": STANDBY})
        self.assertEqual(out, f"this server (node {STANDBY}) is now the primary, at epoch 4 "
                              "(LSN 1040); the other members are told to follow it\n")


class FakeReplicaSet:
    """An ``IReplicaSet`` that records its calls and answers as a primary
    (or, with ``role="standby"``, as a standby) of the shapes above."""

    def __init__(self, role="primary"):
        self.role = role
        self.calls = []

    def status(self):
        self.calls.append(("status",))
        return primary_status() if self.role == "primary" else standby_status()

    def standbys(self):
        self.calls.append(("standbys",))
        return {"standbys": self.status()["standbys"]}

    def _primary(self):
        if self.role != "primary":
            raise Refusal("standby", "this node is a standby: ask its primary (%s)"
                          % (PRIMARY,), retryable=True)

    def invite(self, expires_in):
        self.calls.append(("invite", expires_in))
        self._primary()
        return {"token": TOKEN, "invite_id": "i1", "expires_at": 1000.0 + expires_in,
                "primary": PRIMARY}

    def join(self, token):
        self.calls.append(("join", token))
        if token != TOKEN:
            raise Refusal("refused", "the primary refused: no such standby invitation at "
                          "this primary")
        self.role = "standby"
        return {"role": "standby", "primary": PRIMARY, "epoch": 3, "node_id": STANDBY}

    def remove(self, node_id):
        self.calls.append(("remove", node_id))
        self._primary()
        if node_id != OTHER:
            raise Refusal("not_found", "no standby %r in this replica set" % (node_id,))
        return {"node_id": node_id, "removed": True}

    def promote(self):
        self.calls.append(("promote",))
        if self.role == "primary":
            raise Refusal("bad_request", "this node is the primary already (epoch 3)")
        self.role = "primary"
        return {"role": "primary", "epoch": 4, "lsn": 1040, "node_id": STANDBY}


class EndToEndTests(unittest.TestCase):
    """``vigocli server ...`` against AdminAPI over HTTPS: with a
    ``FakeReplicaSet``, and as a server without HA has it."""

    @defer.inlineCallbacks
    def setUp(self):
        self.server = FacadeServer(self.mktemp(), new_clock())
        self.addCleanup(self.server.store.close)
        yield defer.ensureDeferred(self.server.start())
        self.replicas = FakeReplicaSet()
        self.data_dir = self.server.data_dir
        cert, key = ensure_api_certificate(self.data_dir, "vigo.test", "127.0.0.1")
        api = self.server.admin_api()
        api.server = ServerAPI(self.replicas, api.tokens)  # its /api/v1/server/ routes
        self.serving = Serving(api.resource())
        yield self.listen(cert, key)

    @defer.inlineCallbacks
    def listen(self, cert, key):
        site = TrackingSite(self.serving)
        endpoint = endpoints.SSL4ServerEndpoint(reactor, 0, api_server_options(cert, key),
                                                interface="127.0.0.1")
        port = yield endpoint.listen(site)
        self.addCleanup(site.closed)
        self.addCleanup(port.stopListening)
        url = f"https://127.0.0.1:{port.getHost().port}"
        with open(os.path.join(self.data_dir, "run.json"), "w") as f:
            json.dump({"api_url": url, "server_id": self.server.identity.id}, f)

    @defer.inlineCallbacks
    def vigocli(self, *argv):
        """``(exit status, stdout, stderr)`` of one command on the server host."""
        out, err = io.StringIO(), io.StringIO()
        options = cli_arguments.parse(["--data-dir", self.data_dir] + list(argv))
        status = yield defer.ensureDeferred(cli.run(reactor, options, out, err, {}))
        return status, out.getvalue(), err.getvalue()

    @defer.inlineCallbacks
    def test_status_and_list(self):
        status, out, err = yield self.vigocli("server", "status")
        self.assertEqual((status, err), (0, ""))
        self.assertTrue(out.startswith("role                   primary\n"))
        self.assertIn(f"{STANDBY}  yes        1040  0.12s", out)
        status, out, err = yield self.vigocli("server", "status", "--json")
        self.assertEqual((status, json.loads(out)), (0, primary_status()))
        status, out, err = yield self.vigocli("server", "standby", "list")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual([line.split()[0] for line in out.splitlines()], ["NODE", STANDBY, OTHER])
        status, out, err = yield self.vigocli("server", "standby", "list", "--json")
        self.assertEqual(json.loads(out), {"standbys": primary_status()["standbys"]})
        self.assertEqual(self.replicas.calls, [("status",)] * 2 + [("standbys",), ("status",)] * 2)

    @defer.inlineCallbacks
    def test_invite(self):
        status, out, err = yield self.vigocli("server", "standby", "invite", "--expires-in", "2h")
        self.assertEqual((status, out), (0, TOKEN + "\n"), err)
        self.assertIn("expires at 1970-01-01T02:16:40Z", err)
        self.assertIn("vigocli server standby join TOKEN", err)
        status, out, err = yield self.vigocli("server", "standby", "invite", "--json")
        self.assertEqual((status, json.loads(out)["expires_at"]), (0, 4600.0), err)
        self.assertEqual(self.replicas.calls, [("invite", 7200.0), ("invite", 3600.0)])

    @defer.inlineCallbacks
    def test_join_then_promote_then_remove(self):
        status, out, err = yield self.vigocli("server", "standby", "join", TOKEN)
        self.assertEqual(status, 0, err)
        self.assertTrue(out.startswith(f"this server (node {STANDBY}) is now a standby of "
                                       f"{PRIMARY}, at epoch 3; it takes a base copy"), out)
        status, out, err = yield self.vigocli("server", "status")
        self.assertIn("role                   standby\n", out)
        self.assertIn("needs base copy        no\n", out)
        status, out, err = yield self.vigocli("server", "promote")
        self.assertEqual((status, err), (0, ""))
        self.assertIn("is now the primary, at epoch 4", out)
        status, out, err = yield self.vigocli("server", "standby", "remove", OTHER, "--json")
        self.assertEqual((status, json.loads(out)), (0, {"node_id": OTHER, "removed": True}))
        status, out, err = yield self.vigocli("server", "standby", "remove", OTHER)
        self.assertEqual((status, out), (0, f"standby {OTHER} removed from the replica set: "
                                            "it may not replicate from here on\n"), err)
        self.assertEqual(self.replicas.calls, [("join", TOKEN), ("status",), ("promote",),
                                               ("remove", OTHER), ("remove", OTHER)])

    @defer.inlineCallbacks
    def test_refusals_exit_1_with_the_servers_reason(self):
        for argv, error in (
                (["server", "standby", "join", "vgos_other"], "refused"),
                (["server", "standby", "remove", "nosuch"], "not_found"),
                (["server", "promote"], "bad_request")):
            status, out, err = yield self.vigocli(*argv)
            self.assertEqual((status, out), (1, ""), argv)
            self.assertTrue(err.startswith(f"vigocli: {error}: "), err)
        self.replicas.role = "standby"
        status, out, err = yield self.vigocli("server", "standby", "invite", "--json")
        detail = f"this node is a standby: ask its primary ({PRIMARY})"
        self.assertEqual((status, json.loads(out)),
                         (1, {"error": "standby", "detail": detail, "http_status": 503}))
        self.assertEqual(err, f"vigocli: standby: {detail}\n")

    @defer.inlineCallbacks
    def test_a_server_without_ha(self):
        self.serving.target = self.server.api.resource()  # its own: NoReplicaSet
        status, out, err = yield self.vigocli("server", "status")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out.splitlines(), [
            "role    primary", f"server  {self.server.identity.id}",
            "ha      high availability is off (peers.listen is not set)"])
        status, out, err = yield self.vigocli("server", "status", "--json")
        self.assertFalse(json.loads(out)["ha"])
        status, out, err = yield self.vigocli("server", "standby", "list")
        self.assertEqual((status, out), (0, "no standbys\n"))
        for argv in (["server", "standby", "invite"], ["server", "standby", "join", TOKEN],
                     ["server", "standby", "remove", OTHER], ["server", "promote"]):
            status, out, err = yield self.vigocli(*argv)
            self.assertEqual((status, out), (1, ""), argv)
            self.assertTrue(err.startswith("vigocli: ha_off: high availability is off on this "
                                           "server: set peers.listen"), err)


class RealReplicaSetTests(unittest.TestCase):
    """The commands through two real HA servers in this process (as
    tests/test_ha.py runs them), each asked with ``--data-dir``."""

    timeout = 30

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())

    @defer.inlineCallbacks
    def node(self, name):
        return (yield start_server(self, ha_config(os.path.join(self.directory, name))))

    @defer.inlineCallbacks
    def vigocli(self, host, *argv):
        out, err = io.StringIO(), io.StringIO()
        options = cli_arguments.parse(["--data-dir", host.data_dir] + list(argv))
        status = yield defer.ensureDeferred(cli.run(reactor, options, out, err, {}))
        return status, out.getvalue(), err.getvalue()

    @defer.inlineCallbacks
    def test_invite_join_status_promote(self):
        primary = yield self.node("primary")
        fresh = yield self.node("fresh")
        p_id, s_id = primary.node_identity.id, fresh.node_identity.id
        status, out, err = yield self.vigocli(primary, "server", "status")
        self.assertEqual((status, err), (0, ""))
        self.assertIn(f"primary                {p_id} (this node)\n", out)
        self.assertTrue(out.endswith("standbys:\nno standbys\n"), out)
        status, token, err = yield self.vigocli(primary, "server", "standby", "invite",
                                                "--expires-in", "10m")
        self.assertEqual(status, 0, err)
        self.assertTrue(token.startswith("vgos_"), token)
        status, out, err = yield self.vigocli(fresh, "server", "standby", "join", token.strip())
        self.assertEqual(status, 0, err)
        self.assertTrue(out.startswith(f"this server (node {s_id}) is now a standby of {p_id}, "
                                       "at epoch 0; it takes a base copy"), out)
        while s_id not in primary.replication.streams:  # its base copy taken, it streams
            yield task.deferLater(reactor, 0.05, lambda: None)
        yield fresh.reached(primary.replication.head())
        status, out, err = yield self.vigocli(primary, "server", "standby", "list")
        self.assertEqual(status, 0, err)
        row = out.splitlines()[1].split()
        self.assertEqual(row[:3], [s_id, "yes", str(primary.replication.head())], out)
        status, out, err = yield self.vigocli(fresh, "server", "status")
        self.assertEqual(status, 0, err)
        for line in ("role                   standby", f"node                   {s_id}",
                     "streaming              yes", "needs base copy        no",
                     f"primary                {p_id}"):
            self.assertIn(line + "\n", out)
        status, out, err = yield self.vigocli(fresh, "server", "standby", "invite")
        self.assertEqual((status, out), (1, ""))
        self.assertTrue(err.startswith("vigocli: standby: this node is a standby"), err)
        status, out, err = yield self.vigocli(fresh, "server", "promote")
        self.assertEqual(status, 0, err)
        self.assertTrue(out.startswith(f"this server (node {s_id}) is now the primary, at "
                                       "epoch 1"), out)
        yield primary.reached(fresh.replication.head())  # fenced, it follows the new primary
        status, out, err = yield self.vigocli(fresh, "server", "standby", "remove", p_id)
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out, f"standby {p_id} removed from the replica set: it may not "
                              "replicate from here on\n")
