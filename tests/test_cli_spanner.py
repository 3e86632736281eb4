"""``vigocli spanner ...``: parsing, printers, and end to end over HTTPS against
``FakeSpanner``."""

import contextlib
import io
import json
import os

from twisted.internet import defer, endpoints, reactor
from twisted.trial import unittest
from twisted.web import resource

import vigo
from tests.spannerkit import GOOD_TOKEN, PEER_ID, SELF_ID, FakeSpanner, bolt_row
from tests.test_api import FacadeServer, new_clock
from tests.test_api_spanner import RealBolt
from tests.test_cli import TrackingSite, parse_failure, request_of
from vigo.cli import arguments as cli_arguments
from vigo.cli import commands as cli_commands
from vigo.cli import envoys as cli_envoys
from vigo.cli import main as cli
from vigo.cli import spanner as cli_spanner
from vigo.spanner.peer.actions import load_actions
from vigo.tls import api_server_options, ensure_api_certificate

SPANNER_COMMANDS = {"spanner status", "spanner init", "spanner bolt list", "spanner bolt show",
                    "spanner bolt invite", "spanner bolt join", "spanner bolt act",
                    "spanner bolt envoys", "spanner bolt push", "spanner bolt reassign",
                    "spanner bolt drain", "spanner bolt remove", "spanner owner",
                    "spanner bolt actions"}


class ParseTests(unittest.SynchronousTestCase):
    """Every spanner command, its request, and argparse's exit 2."""

    def test_every_command_maps_to_its_request(self):
        cases = [
            (["spanner", "status"], ("GET", "/api/v1/spanner/status", None)),
            (["spanner", "init"], ("POST", "/api/v1/spanner/init", {})),
            (["spanner", "init", "--name", "dc1", "--patterns", "*.dc1.example.com, *.dc1.lan,"],
             ("POST", "/api/v1/spanner/init",
              {"name": "dc1", "patterns": ["*.dc1.example.com", "*.dc1.lan"]})),
            (["spanner", "owner", "Web1.B.example.com."],
             ("GET", "/api/v1/spanner/owner?hostname=Web1.B.example.com.", None)),
            (["spanner", "owner", "w&x", "--envoy", "e1"],
             ("GET", "/api/v1/spanner/owner?hostname=w%26x&envoy=e1", None)),
            (["spanner", "bolt", "list"], ("GET", "/api/v1/spanner/bolts", None)),
            (["spanner", "bolt", "show", "dc2"], ("GET", "/api/v1/spanner/bolts/dc2", None)),
            (["spanner", "bolt", "show", "a/b?c"],
             ("GET", "/api/v1/spanner/bolts/a%2Fb%3Fc", None)),
            (["spanner", "bolt", "envoys", "dc2"],
             ("GET", "/api/v1/spanner/bolts/dc2/envoys", None)),
            (["spanner", "bolt", "push", "dc 2"],
             ("POST", "/api/v1/spanner/bolts/dc%202/push", {})),
            (["spanner", "bolt", "invite"], ("POST", "/api/v1/spanner/invite", {})),
            (["spanner", "bolt", "invite", "--expires-in", "30m"],
             ("POST", "/api/v1/spanner/invite", {"expires_in": "30m"})),
            (["spanner", "bolt", "join", "vgoi_abc"],
             ("POST", "/api/v1/spanner/join", {"token": "vgoi_abc"})),
            (["spanner", "bolt", "reassign", "web1.dc1.example.com", "--to", "dc 2"],
             ("POST", "/api/v1/envoys/web1.dc1.example.com/reassign", {"to": "dc 2"})),
            (["spanner", "bolt", "act", "dc2", "ping"],
             ("POST", "/api/v1/spanner/bolts/dc2/actions/ping", {})),
            (["spanner", "bolt", "actions", "dc 2"],
             ("GET", "/api/v1/spanner/bolts/dc%202/actions", None)),
            (["spanner", "bolt", "act", "dc 2", "a/b", "--arg", "n=5", "--arg", "s=hello",
              "--arg", 'q="5"', "--arg", "l=[1, true, null]", "--arg", "e=", "--arg", "x=NaN",
              "--arg", "eq=a=b", "--arg", 'o={"k": 1}'],
             ("POST", "/api/v1/spanner/bolts/dc%202/actions/a%2Fb",
              {"n": 5, "s": "hello", "q": "5", "l": [1, True, None], "e": "", "x": "NaN",
               "eq": "a=b", "o": {"k": 1}})),
        ]
        for argv, expected in cases:
            self.assertEqual(request_of(argv), expected, argv)
        self.assertEqual({key for key in cli_commands.COMMANDS if key.startswith("spanner ")},
                         SPANNER_COMMANDS)

    def test_global_options_anywhere(self):
        for argv in (["--json", "--token", "t", "spanner", "bolt", "list"],
                     ["spanner", "bolt", "list", "--json", "--token", "t"]):
            options = cli_arguments.parse(argv)
            self.assertEqual((options.json, options.token, options.command),
                             (True, "t", "spanner bolt list"))
        options = cli_arguments.parse(["--token", "t", "spanner", "bolt", "join", "vgoi_x"])
        self.assertEqual((options.token, options.token_text), ("t", "vgoi_x"))

    def test_usage_errors_exit_2(self):
        for argv, says in (
            (["spanner"], "ACTION"),
            (["spanner", "bolt"], "ACTION"),
            (["spanner", "bolt", "show"], "BOLT"),
            (["spanner", "bolt", "join"], "TOKEN"),
            (["spanner", "bolt", "act", "dc2"], "ACTION"),
            (["spanner", "init", "--patterns", ", ,"], "hostname glob"),
            (["spanner", "init", "--name", " "], "cannot be empty"),
            (["spanner", "bolt", "invite", "--expires-in", "soon"], "duration"),
            (["spanner", "bolt", "invite", "--expires-in", "0s"], "duration"),
            (["spanner", "bolt", "act", "dc2", "x", "--arg", "novalue"], "KEY=VALUE"),
            (["spanner", "bolt", "act", "dc2", "x", "--arg", "=v"], "KEY=VALUE"),
            (["spanner", "bolt", "act", "dc2", "x", "--arg", "a=1", "--arg", "a=2"], "twice"),
            (["spanner", "bolt", "envoys"], "BOLT"),
            (["spanner", "bolt", "push"], "BOLT"),
            (["spanner", "bolt", "drain"], "BOLT"),
            (["spanner", "bolt", "remove"], "BOLT"),
            (["spanner", "bolt", "actions"], "BOLT"),
            (["spanner", "bolt", "actions", "dc2", "ping"], "unrecognized"),
            (["spanner", "fly"], "invalid choice"),
        ):
            code, err = parse_failure(argv)
            self.assertEqual(code, 2, argv)
            self.assertIn(says, err, argv)

    def test_argument_values(self):
        for text, value in (("5", 5), ("1.5", 1.5), ("true", True), ("null", None),
                            ("dc1", "dc1"), ('"007"', "007"), ("007", "007"), ("", ""),
                            ("Infinity", "Infinity"), ("[1", "[1")):
            self.assertEqual(cli_arguments.argument_value(text), value, text)

    def test_help_names_the_commands(self):
        parser = cli_arguments.build_parser()
        self.assertIn("spanner", parser.format_help())
        with contextlib.redirect_stdout(io.StringIO()) as out:
            self.assertRaises(SystemExit, cli_arguments.parse, ["spanner", "bolt", "--help"])
        for name in ("list", "show", "invite", "join", "act", "actions"):
            self.assertIn(name, out.getvalue())


class OutputTests(unittest.SynchronousTestCase):
    """What people see."""

    def show(self, printer, answer):
        out, err = io.StringIO(), io.StringIO()
        printer(answer, out, err)
        return out.getvalue(), err.getvalue()

    def test_envoy_reassigned(self):
        answer = {"envoy_id": "e1", "hostname": "web1.dc1.example.com", "from": "a1",
                  "from_name": "dc1", "to": "b2", "to_name": "dc2", "changed": True,
                  "delivered": "now"}
        out, err = self.show(cli_envoys.envoy_reassigned, answer)
        self.assertEqual((out.splitlines(), err), ([
            "envoy e1 (web1.dc1.example.com) moved from bolt a1 (dc1) to bolt b2 (dc2)",
            "it was connected and was sent to its new bolt now"], ""))
        out, _ = self.show(cli_envoys.envoy_reassigned, dict(answer, delivered="next_attach"))
        self.assertIn("when it next attaches", out)
        out, _ = self.show(cli_envoys.envoy_reassigned,
                           dict(answer, changed=False, **{"from": None}))
        self.assertEqual(out, "envoy e1 (web1.dc1.example.com) is already on bolt b2 (dc2): "
                              "nothing to do\n")

    def test_status_of_a_member(self):
        status = FakeSpanner().found().status()
        out, err = self.show(cli_spanner.spanner_status, status)
        self.assertEqual(err, "")
        self.assertEqual(out.splitlines(), [
            "state       member",
            f"bolt        {SELF_ID} (dc1)",
            f"federation  {status['federation_id']} (founded by this bolt)",
            f"digest      {status['digest'][:12]}",
            "bolts       3 total, 2 active, 1 draining, 0 removed",
            "peers       1 alive, 0 suspect, 1 down, 0 unknown",
        ])
        status["founder_id"] = PEER_ID
        out, _ = self.show(cli_spanner.spanner_status, status)
        self.assertIn(f"(founded by {PEER_ID})", out)
        status["moves_pending"] = {"count": 7, "as_of_age": 12.0, "moves": [
            {"envoy_id": "e%d" % n, "to": PEER_ID} for n in range(7)]}
        out, _ = self.show(cli_spanner.spanner_status, status)
        self.assertIn(f"moves       7 pending here (as of 12s ago): e0 to {PEER_ID}, ", out)
        self.assertIn(f"e4 to {PEER_ID}, ...\n", out)

    def test_owner_explained(self):
        answer = {"hostname": "db1.a.example.com", "bolt_id": "b2", "name": "b", "by": "pattern",
                  "pattern": "db*.a.example.com",
                  "candidates": [{"bolt_id": "b2", "name": "b", "pattern": "db*.a.example.com"},
                                 {"bolt_id": "a1", "name": "a", "pattern": "*.a.example.com"}]}
        out, _ = self.show(cli_spanner.owner_explained, answer)
        lines = out.splitlines()
        self.assertEqual(lines[0], "db1.a.example.com is owned by bolt b2 (b): the most "
                                   "specific matching pattern, db*.a.example.com")
        self.assertEqual(lines[1], "matching patterns of active bolts, most specific first:")
        self.assertEqual(lines[3].split(), ["b2", "b", "db*.a.example.com"])
        out, _ = self.show(cli_spanner.owner_explained, dict(
            answer, by="override", pattern=None, bolt_id="c3", name="c"))
        self.assertIn("owned by bolt c3 (c): its envoy's override", out)
        out, _ = self.show(cli_spanner.owner_explained, dict(answer, candidates=answer[
            "candidates"][:1]))
        self.assertEqual(len(out.splitlines()), 1)

    def test_status_of_an_unfederated_bolt_gives_the_hint(self):
        out, _ = self.show(cli_spanner.spanner_status, FakeSpanner(name=None).status())
        lines = out.splitlines()
        self.assertEqual(lines[:4], ["state       unfederated", f"bolt        {SELF_ID}",
                                     "federation  -", "digest      -"])
        self.assertTrue(lines[-1].startswith("hint        not in a federation yet"))

    def test_status_of_a_standalone_server(self):
        out, _ = self.show(cli_spanner.spanner_status, {
            "mode": "standalone", "state": "standalone", "bolt_id": "s1",
            "hint": "this server runs standalone; start it with --mode=spanner"})
        self.assertEqual(out.splitlines(), [
            "state  standalone", "bolt   s1",
            "hint   this server runs standalone; start it with --mode=spanner"])

    def test_init_and_join_say_what_happened(self):
        status = FakeSpanner().found().status()
        out, _ = self.show(cli_spanner.spanner_initialized, status)
        self.assertTrue(out.startswith(f"founded federation {status['federation_id']}; "))
        self.assertIn("state       member", out)
        out, _ = self.show(cli_spanner.spanner_joined, status)
        self.assertTrue(out.startswith(
            f"joined federation {status['federation_id']} as bolt {SELF_ID}\n"))

    def test_bolt_table(self):
        rows = FakeSpanner().found().rows
        rows[0]["envoys"] = {"owned": 12, "online": 10, "as_of": 0.0, "last_heard_age": 0.0,
                             "checkin_rate": 0.8}
        out, _ = self.show(cli_spanner.bolt_table, {"bolts": rows, "count": 3})
        self.assertEqual(out.splitlines(), [
            "BOLT                  NAME  STATUS    LIVENESS  HEARD  PATTERNS           ENVOYS"
            "  ONLINE",
            f"{SELF_ID}  dc1   active    self      0s     *.dc1.example.com  12      10",
            f"{PEER_ID}  dc2   active    alive     3s     *.dc2.example.com  7       -",
            f"{'d' * 20}  dc3   draining  down      -      -                  -       -",
        ])
        self.assertEqual(self.show(cli_spanner.bolt_table, {"bolts": [], "count": 0})[0],
                         "no bolts\n")

    def test_a_dead_bolts_figures_say_their_age(self):
        # dc3 was killed 28 s ago: its figures are the last it sent, and say so.
        rows = FakeSpanner().found().rows
        rows[2]["envoys"] = {"owned": 50, "online": 48, "as_of": 28.0, "last_heard_age": 28.0,
                             "stale": True}
        out, _ = self.show(cli_spanner.bolt_table, {"bolts": rows, "count": 3})
        self.assertIn("50 (28s ago)  48 (28s ago)", out.splitlines()[3])
        out, _ = self.show(cli_spanner.bolt_details, rows[2])
        self.assertIn("50 owned, 48 online (its last figures: it is not heard as alive)", out)
        self.assertIn("check-ins      -\n", out)

    def test_bolt_details(self):
        row = bolt_row(PEER_ID, "dc2", patterns=["*.a", "*.b"], heard=75,
                       counters={"envoys_owned": 7, "checkins": 3})
        out, _ = self.show(cli_spanner.bolt_details, row)
        for line in (f"bolt           {PEER_ID}", "name           dc2", "this bolt      no",
                     "patterns       *.a, *.b", "api            https://dc2.test:8443",
                     "peer address   dc2.test:1533", "liveness       alive",
                     "last heard     1m15s ago", "counters       checkins 3, envoys_owned 7",
                     "counters from  1s ago"):
            self.assertIn(line + "\n", out)
        row["envoys"] = {"owned": 7, "online": 5, "as_of": 1.5, "last_heard_age": 75,
                         "checkin_rate": 0.47}
        out, _ = self.show(cli_spanner.bolt_details, row)
        for line in ("envoys         7 owned, 5 online", "check-ins      0.47/s",
                     "envoys as of   1s ago"):
            self.assertIn(line + "\n", out)
        del row["envoys"]["checkin_rate"]
        out, _ = self.show(cli_spanner.bolt_details, row)
        self.assertIn("check-ins      -\n", out)
        out, _ = self.show(cli_spanner.bolt_details, bolt_row("d" * 20, "dc3", liveness="down"))
        self.assertIn("last heard     never\n", out)
        self.assertIn("counters       -\n", out)

    def test_invite_alone_on_stdout(self):
        out, err = self.show(cli_spanner.invite_created, {
            "token": "vgoi_abc", "token_id": "t", "expires_at": 3600.0, "minter_id": "m"})
        self.assertEqual(out, "vgoi_abc\n")
        self.assertIn("one-shot", err)
        self.assertIn("1970-01-01T01:00:00Z", err)
        self.assertIn("vigocli spanner bolt join TOKEN", err)

    def test_action_result_is_indented_json(self):
        out, _ = self.show(cli_spanner.action_result,
                           {"bolt_id": "b", "action": "x", "result": {"b": [1], "a": None}})
        self.assertEqual(out, '{\n  "a": null,\n  "b": [\n    1\n  ]\n}\n')
        out, _ = self.show(cli_spanner.action_result, {"result": "pong"})
        self.assertEqual(out, '"pong"\n')

    def test_actions_table_names_where_each_came_from(self):
        entry = {"module": "vigo.plugins.vigo_ping", "path": "/v/vigo/plugins/vigo_ping.py",
                 "distribution": "vigosrv", "version": "0.2.0", "builtin": True}
        out, err = self.show(cli_spanner.actions_table, {
            "bolt_id": PEER_ID, "name": "dc2", "vigosrv": "0.2.0", "count": 3, "actions": [
                dict(entry, name="ping", description="Who answers."),
                dict(entry, name="uptime", description="How long\n it has  run.",
                     module="vigo.plugins.vigo_uptime", distribution="vigo-uptime",
                     version="1.0", builtin=False),
                dict(entry, name="loose", description="", module="vigo.plugins.loose",
                     path="/opt/site/vigo/plugins/loose.py", distribution=None, version=None,
                     builtin=False)]})
        self.assertEqual(err, "")
        self.assertEqual(out.splitlines(), [
            f"bolt {PEER_ID} (dc2), vigosrv 0.2.0: 3 peer actions",
            "ACTION  FROM                                              MODULE"
            "                    DESCRIPTION",
            "ping    built in (vigosrv 0.2.0)                          vigo.plugins.vigo_ping"
            "    Who answers.",
            "uptime  vigo-uptime 1.0                                   vigo.plugins.vigo_uptime"
            "  How long it has run.",
            "loose   no distribution: /opt/site/vigo/plugins/loose.py  vigo.plugins.loose"
            "        -",
        ])
        out, _ = self.show(cli_spanner.actions_table, {"bolt_id": PEER_ID, "actions": []})
        self.assertEqual(out, f"bolt {PEER_ID}, vigosrv ?: 0 peer actions\n")


class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self):
        return True


class Serving(resource.Resource):
    """The API resource the site serves now (a test may swap it)."""

    isLeaf = True

    def __init__(self, target):
        resource.Resource.__init__(self)
        self.target = target

    def render(self, request):
        return self.target.render(request)


class EndToEndTests(unittest.TestCase):
    """``vigocli spanner ...`` against AdminAPI with a ``FakeSpanner``, over HTTPS."""

    @defer.inlineCallbacks
    def setUp(self):
        self.server = FacadeServer(self.mktemp(), new_clock())
        self.addCleanup(self.server.store.close)
        yield defer.ensureDeferred(self.server.start())
        self.spanner = FakeSpanner()
        self.data_dir = self.server.data_dir
        cert, key = ensure_api_certificate(self.data_dir, "vigo.test", "127.0.0.1")
        self.serving = Serving(self.server.admin_api(
            federation=self.spanner, envoys=self.spanner.envoy_operations()).resource())
        site = TrackingSite(self.serving)
        endpoint = endpoints.SSL4ServerEndpoint(reactor, 0, api_server_options(cert, key),
                                                interface="127.0.0.1")
        port = yield endpoint.listen(site)
        self.addCleanup(site.closed)
        self.addCleanup(port.stopListening)
        self.url = f"https://127.0.0.1:{port.getHost().port}"
        with open(os.path.join(self.data_dir, "run.json"), "w") as f:
            json.dump({"api_url": self.url, "server_id": self.server.identity.id}, f)

    @defer.inlineCallbacks
    def vigocli(self, *argv, err=None):
        """``(exit status, stdout, stderr)`` of one command on the server host;
        ``err``: the stream to use as stderr (then its text is not returned)."""
        out, given = io.StringIO(), err
        err = io.StringIO() if given is None else given
        options = cli_arguments.parse(["--data-dir", self.data_dir] + list(argv))
        status = yield defer.ensureDeferred(cli.run(reactor, options, out, err, {}))
        return status, out.getvalue(), None if given is not None else err.getvalue()

    @defer.inlineCallbacks
    def test_found_invite_list_show_act(self):
        status, out, err = yield self.vigocli("spanner", "status")
        self.assertEqual((status, err), (0, ""))
        self.assertIn("state       unfederated\n", out)
        self.assertIn("hint", out)
        status, out, err = yield self.vigocli("spanner", "init", "--name", "dc1",
                                              "--patterns", "*.dc1.example.com")
        self.assertEqual(status, 0, err)
        self.assertTrue(out.startswith("founded federation "))
        self.assertEqual(self.spanner.mutations(), [("init", "dc1", ["*.dc1.example.com"])])
        status, out, err = yield self.vigocli("spanner", "bolt", "invite", "--expires-in", "2h")
        self.assertEqual(status, 0, err)
        self.assertEqual(out, self.spanner.invites[0]["token"] + "\n")
        self.assertIn("one-shot", err)
        self.assertEqual(self.spanner.mutations()[-1], ("invite", 7200.0))
        status, out, _ = yield self.vigocli("spanner", "bolt", "list")
        self.assertEqual(status, 0)
        self.assertEqual(out.splitlines()[1].split()[:4], [SELF_ID, "dc1", "active", "self"])
        status, out, _ = yield self.vigocli("spanner", "bolt", "show", "dc1", "--json")
        self.assertEqual((status, json.loads(out)), (0, self.spanner.rows[0]))
        status, out, err = yield self.vigocli("spanner", "bolt", "act", "dc1", "echo",
                                              "--arg", "n=3", "--arg", "who=me")
        self.assertEqual(status, 0, err)
        self.assertEqual(json.loads(out), {"args": {"n": 3, "who": "me"}})
        status, out, _ = yield self.vigocli("spanner", "status", "--json")
        self.assertEqual(json.loads(out), self.spanner.status())

    @defer.inlineCallbacks
    def test_drain_and_remove(self):
        self.spanner.found()
        status, out, err = yield self.vigocli("spanner", "bolt", "drain", "dc2", "--to", "dc1")
        self.assertEqual(status, 0, err)
        self.assertIn("drained: 2 of 2 envoys moved", out)
        self.assertEqual(err, "")  # no progress bar: stderr is no terminal
        status, out, err = yield self.vigocli("spanner", "bolt", "drain", "dc2", "--json")
        self.assertEqual((status, json.loads(out)["state"]), (0, "done"), err)
        status, out, err = yield self.vigocli("spanner", "bolt", "remove", "dc2")
        self.assertEqual(status, 0, err)
        self.assertIn("removed from the federation", out)
        self.assertEqual(self.spanner.mutations(), [
            ("drain", "dc2", "dc1"), ("drain", "dc2", None), ("drain", "dc2", None),
            ("remove_bolt", "dc2", False)])
        # The bolt asked, by name or id, is refused before anything is drained.
        for me in ("dc1", SELF_ID):
            status, out, err = yield self.vigocli("spanner", "bolt", "remove", me)
            self.assertEqual((status, out), (1, ""))
            self.assertTrue(err.startswith("vigocli: self: "), err)
            self.assertIn("nothing was drained", err)
        self.assertEqual(len(self.spanner.mutations()), 4)

    @defer.inlineCallbacks
    def test_drain_progress_only_on_a_terminal(self):
        """The bar is drawn on a terminal; a pipe (or a file) gets no "\\r" frame."""
        self.spanner.found()
        terminal = Terminal()
        status, out, _ = yield self.vigocli("spanner", "bolt", "drain", "dc2", err=terminal)
        self.assertEqual(status, 0)
        self.assertIn("draining dc2", terminal.getvalue())
        self.assertIn("\r", terminal.getvalue())
        self.assertIn("2/2", terminal.getvalue())
        read_end, write_end = os.pipe()
        with os.fdopen(read_end, "rb") as reading, os.fdopen(write_end, "w") as pipe:
            status, out, _ = yield self.vigocli("spanner", "bolt", "drain", "dc2", err=pipe)
            pipe.close()
            piped = reading.read()
        self.assertEqual(status, 0)
        self.assertIn("drained: 2 of 2 envoys moved", out)
        self.assertEqual(piped, b"")

    @defer.inlineCallbacks
    def test_json_errors_on_stdout(self):
        status, out, err = yield self.vigocli("spanner", "bolt", "list", "--json")
        self.assertEqual(status, 1)
        answer = json.loads(out)
        self.assertEqual((answer["error"], answer["http_status"]), ("not_member", 409))
        self.assertTrue(err.startswith("vigocli: not_member: " + answer["detail"]), err)
        self.spanner.found()
        for argv, code, http in ((["spanner", "bolt", "act", "dc3", "echo"], "unreachable", 503),
                                 (["spanner", "bolt", "remove", "dc1"], "self", 409)):
            status, out, err = yield self.vigocli(*argv, "--json")
            self.assertEqual(status, 1, argv)
            answer = json.loads(out)
            self.assertEqual(set(answer), {"error", "detail", "http_status"}, argv)
            self.assertEqual((answer["error"], answer["http_status"]), (code, http), argv)
            self.assertEqual(err, f"vigocli: {code}: {answer['detail']}\n")

    @defer.inlineCallbacks
    def test_join(self):
        status, out, err = yield self.vigocli("spanner", "bolt", "join", GOOD_TOKEN)
        self.assertEqual(status, 0, err)
        self.assertTrue(out.startswith(f"joined federation {self.spanner.federation_id} "))
        status, out, err = yield self.vigocli("spanner", "bolt", "join", GOOD_TOKEN)
        self.assertEqual((status, out), (1, ""))
        self.assertTrue(err.startswith("vigocli: already_member: "), err)

    @defer.inlineCallbacks
    def test_refusals_exit_1_with_the_servers_reason(self):
        for argv, error in ((["spanner", "bolt", "list"], "not_member"),
                            (["spanner", "bolt", "invite"], "not_member"),
                            (["spanner", "bolt", "join", "vgoi_bad"], "join_refused")):
            status, out, err = yield self.vigocli(*argv)
            self.assertEqual((status, out), (1, ""), argv)
            self.assertTrue(err.startswith(f"vigocli: {error}: "), err)
        self.spanner.found()
        for argv, error in ((["spanner", "bolt", "show", "nosuch"], "not_found"),
                            (["spanner", "bolt", "act", "dc2", "nosuch"], "unknown_action"),
                            (["spanner", "bolt", "act", "dc3", "echo"], "unreachable"),
                            (["spanner", "init"], "already_member")):
            status, out, err = yield self.vigocli(*argv)
            self.assertEqual((status, out), (1, ""), argv)
            self.assertTrue(err.startswith(f"vigocli: {error}: "), err)

    @defer.inlineCallbacks
    def test_a_standalone_server(self):
        self.serving.target = self.server.api.resource()  # its own: standalone
        status, out, err = yield self.vigocli("spanner", "status")
        self.assertEqual((status, err), (0, ""))
        self.assertIn("state  standalone\n", out)
        self.assertIn("--mode=spanner", out)
        status, out, err = yield self.vigocli("spanner", "bolt", "list")
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(err, "vigocli: not_spanner: this server runs standalone; "
                              "start it with --mode=spanner\n")

    @defer.inlineCallbacks
    def test_no_token_exits_2(self):
        out, err = io.StringIO(), io.StringIO()
        options = cli_arguments.parse(["--api", self.url, "spanner", "status"])
        status = yield defer.ensureDeferred(cli.run(reactor, options, out, err, {}))
        self.assertEqual((status, out.getvalue()), (2, ""))
        self.assertIn("no API token", err.getvalue())
        self.assertEqual(self.spanner.calls, [])


class EnvoysAtAnyBoltCliTests(unittest.TestCase):
    """``envoys list/show/push`` and ``spanner bolt envoys/push`` against a spanner bolt."""

    vigocli = EndToEndTests.vigocli

    def setUp(self):
        d = EndToEndTests.setUp(self)
        return d.addCallback(lambda _: self.spanner.found())

    @defer.inlineCallbacks
    def test_list_has_a_bolt_column_and_names_silent_bolts_on_stderr(self):
        status, out, err = yield self.vigocli("envoys", "list")
        self.assertEqual(status, 0, err)
        lines = out.splitlines()
        self.assertEqual(lines[0].split(), ["ID", "HOSTNAME", "STATE", "ONLINE", "LAST-SEEN-AGO",
                                            "BOLT"])
        self.assertEqual(lines[1].split(), ["e1" * 10, "web1.dc1.example.com", "active", "yes",
                                            "2s", "dc1"])
        self.assertEqual(lines[2].split()[-1], "dc2")
        self.assertEqual(err, "1 bolt(s) did not answer; their envoys are not listed:\n"
                              f"  {'d' * 20} (dc3): timeout\n")

    @defer.inlineCallbacks
    def test_show_and_push(self):
        status, out, err = yield self.vigocli("envoys", "show", "web2.dc2.example.com")
        self.assertEqual(status, 0, err)
        self.assertIn(f"bolt          {PEER_ID} (dc2)\n", out)
        status, out, err = yield self.vigocli("envoys", "push", "web2.dc2.example.com")
        self.assertEqual((status, out), (0, f"force-push sent to envoy {'e2' * 10}\n"), err)
        status, out, err = yield self.vigocli("envoys", "show", "web9.dc1.example.com")
        self.assertEqual((status, out), (1, ""))
        self.assertTrue(err.startswith("vigocli: unreachable: "), err)

    @defer.inlineCallbacks
    def test_bolt_envoys_and_push(self):
        status, out, err = yield self.vigocli("spanner", "bolt", "envoys", "dc2")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out.splitlines()[1].split()[1], "web2.dc2.example.com")
        status, out, err = yield self.vigocli("spanner", "bolt", "push", "dc2")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out, f"force-push of bolt {PEER_ID} (dc2): 1 envoys, 1 sent now, "
                              "0 at their next attach\n")
        status, out, err = yield self.vigocli("spanner", "bolt", "push", "dc3")
        self.assertEqual((status, out), (1, ""))
        self.assertTrue(err.startswith("vigocli: unreachable: "), err)


class BoltActionsCliTests(unittest.TestCase):
    """``vigocli spanner bolt actions`` against a real one-bolt ``BoltAdmin``
    (``tests.test_api_spanner.RealBolt``) over HTTPS: the loaded actions and
    where each came from, asked of the bolt through its ``actions`` action."""

    vigocli = EndToEndTests.vigocli

    @defer.inlineCallbacks
    def setUp(self):
        yield EndToEndTests.setUp(self)
        self.bolt = RealBolt(self.server)
        self.serving.target = self.server.admin_api(
            federation=self.bolt.admin, envoys=self.bolt.envoys).resource()

    @defer.inlineCallbacks
    def test_actions_of_a_bolt(self):
        status, out, err = yield self.vigocli("spanner", "bolt", "actions", "dc1")
        self.assertEqual(status, 1)
        self.assertTrue(err.startswith("vigocli: not_member: "), err)
        status, _, err = yield self.vigocli("spanner", "init")
        self.assertEqual(status, 0, err)
        me = self.server.identity.id
        loaded = sorted(load_actions())
        for key in ("dc1", me):
            status, out, err = yield self.vigocli("spanner", "bolt", "actions", key)
            self.assertEqual((status, err), (0, ""))
            lines = out.splitlines()
            self.assertEqual(lines[0], f"bolt {me} (dc1), vigosrv {vigo.__version__}: "
                                       f"{len(loaded)} peer actions")
            self.assertEqual(lines[1].split(), ["ACTION", "FROM", "MODULE", "DESCRIPTION"])
            self.assertEqual([line.split()[0] for line in lines[2:]], loaded)
            ping = next(line for line in lines if line.startswith("ping "))
            self.assertIn(f"built in (vigosrv {vigo.__version__})", ping)
            self.assertIn("vigo.plugins.vigo_ping", ping)
        status, out, err = yield self.vigocli("spanner", "bolt", "actions", "dc1", "--json")
        self.assertEqual((status, err), (0, ""))
        answer = json.loads(out)
        self.assertEqual((answer["bolt_id"], answer["name"], answer["count"]),
                         (me, "dc1", len(loaded)))
        self.assertEqual({entry["name"] for entry in answer["actions"]}, set(loaded))
        status, out, err = yield self.vigocli("spanner", "bolt", "actions", "dc9", "--json")
        self.assertEqual((status, json.loads(out)["error"]), (1, "not_found"))
        self.assertTrue(err.startswith("vigocli: not_found: "), err)
        status, out, err = yield self.vigocli("--token", "vgot_" + "x" * 43,
                                              "spanner", "bolt", "actions", "dc1")
        self.assertEqual((status, out), (1, ""))
        self.assertTrue(err.startswith("vigocli: unauthorized: "), err)

    @defer.inlineCallbacks
    def test_a_standalone_server_has_none(self):
        self.serving.target = self.server.api.resource()
        status, out, err = yield self.vigocli("spanner", "bolt", "actions", "dc1")
        self.assertEqual((status, out), (1, ""))
        self.assertTrue(err.startswith("vigocli: not_spanner: "), err)
