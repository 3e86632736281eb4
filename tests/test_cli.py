"""vigocli: parsing, where it finds its target, output, and end to end over HTTPS."""

import contextlib
import io
import json
import os
import subprocess
import sys

from twisted.internet import defer, endpoints, reactor
from twisted.internet.protocol import Factory
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

import vigo
from tests.test_api import FacadeServer, new_clock
from twisted import copyright
from vigo import tap
from vigo.cli import arguments as cli_arguments
from vigo.cli import backup as cli_backup
from vigo.cli import commands as cli_commands
from vigo.cli import envoys as cli_envoys
from vigo.cli import format as cli_format
from vigo.cli import main as cli
from vigo.cli import server as cli_server
from vigo.cli import target as cli_target
from vigo.cli import tokens as cli_tokens
from vigo.envoy import arguments as envoy_arguments
from vigo.tls import API_CERT_FILE, api_server_options, ensure_api_certificate

TOKEN = "vgot_" + "T" * 43
REPO = os.path.dirname(os.path.dirname(os.path.abspath(vigo.__file__)))


def parse_failure(argv):
    """The exit code and stderr of an argv argparse refuses."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            cli_arguments.parse(argv)
        except SystemExit as e:
            return e.code, err.getvalue()
    raise AssertionError(f"{argv} parsed")


def request_of(argv):
    """``(method, path, body)`` the command in ``argv`` would send."""
    options = cli_arguments.parse(argv)
    command = cli_commands.COMMANDS[options.command]
    body = None if command.body is None else command.body(options)
    return command.method, command.path(options), body


class ParseTests(unittest.SynchronousTestCase):
    """Every command, its request, and argparse's exit 2."""

    def test_every_command_maps_to_its_request(self):
        cases = [
            (["status"], ("GET", "/api/v1/status", None)),
            (["token", "create"], ("POST", "/api/v1/tokens", {"uses": 1})),
            (["token", "create", "--uses", "3", "--expires-in", "1h"],
             ("POST", "/api/v1/tokens", {"uses": 3, "expires_in": "1h"})),
            (["token", "list"], ("GET", "/api/v1/tokens", None)),
            (["api-token", "create", "ci"], ("POST", "/api/v1/api-tokens", {"name": "ci"})),
            (["api-token", "list"], ("GET", "/api/v1/api-tokens", None)),
            (["api-token", "withdraw", "a b"], ("DELETE", "/api/v1/api-tokens/a%20b", None)),
            (["token", "withdraw", "t/1"], ("DELETE", "/api/v1/tokens/t%2F1", None)),
            (["envoys", "list"], ("GET", "/api/v1/envoys", None)),
            (["envoys", "list", "--bolt", "b1", "--offline"],
             ("GET", "/api/v1/envoys?bolt=b1&offline=1", None)),
            (["envoys", "list", "--all"], ("GET", "/api/v1/envoys?moved=1", None)),
            (["envoys", "show", "web1.example.com"],
             ("GET", "/api/v1/envoys/web1.example.com", None)),
            (["envoys", "push", "abc"], ("POST", "/api/v1/envoys/abc/push", {})),
            (["envoys", "revoke", "a/b?c"], ("DELETE", "/api/v1/envoys/a%2Fb%3Fc", None)),
        ]
        for argv, expected in cases:
            self.assertEqual(request_of(argv), expected, argv)
        # The spanner commands are covered in tests/test_cli_spanner.py, the
        # backup ones (local: no request) in tests/test_backup.py.
        self.assertEqual({key for key, command in cli_commands.COMMANDS.items()
                          if not key.startswith(("spanner ", "server ")) and command.local is None},
                         {"status", "token create", "token list", "token withdraw",
                          "api-token create", "api-token list", "api-token withdraw",
                          "envoys list", "envoys show", "envoys push", "envoys revoke"})

    def test_global_options_before_or_after_the_command(self):
        before = cli_arguments.parse(
            ["--json", "--api", "https://a:1", "--token", "t", "envoys", "list"])
        after = cli_arguments.parse(
            ["envoys", "list", "--json", "--api", "https://a:1", "--token", "t"])
        for options in (before, after):
            self.assertEqual((options.json, options.api, options.token),
                             (True, "https://a:1", "t"))
        plain = cli_arguments.parse(["status"])
        self.assertEqual((plain.json, plain.api, plain.token, plain.data_dir, plain.ca_file),
                         (False, None, None, None, None))
        mixed = cli_arguments.parse(["--api", "https://a:1", "status", "--data-dir", "/d"])
        self.assertEqual((mixed.api, mixed.data_dir), ("https://a:1", "/d"))

    def test_usage_errors_exit_2(self):
        for argv, says in (
            ([], "COMMAND"),
            (["token"], "ACTION"),
            (["envoys", "show"], "ENVOY"),
            (["fly"], "invalid choice"),
            (["token", "create", "--uses", "0"], "at least 1"),
            (["token", "create", "--uses", "x"], "at least 1"),
            (["token", "create", "--expires-in", "soon"], "duration"),
            (["token", "create", "--expires-in", "0s"], "duration"),
            (["status", "--bogus"], "unrecognized"),
        ):
            code, err = parse_failure(argv)
            self.assertEqual(code, 2, argv)
            self.assertIn(says, err, argv)

    def test_main_exits_2_on_usage_before_any_reactor(self):
        with contextlib.redirect_stderr(io.StringIO()):
            error = self.assertRaises(SystemExit, cli.main, ["envoys"])
        self.assertEqual(error.code, 2)

    def test_main_exits_with_the_status_of_run(self):
        def react(main):
            failure = self.failureResultOf(main(reactor), SystemExit)
            raise SystemExit(failure.value.code)

        self.patch(cli.task, "react", react)
        self.patch(os, "environ", {})
        with contextlib.redirect_stderr(io.StringIO()) as err:
            error = self.assertRaises(SystemExit, cli.main, ["status"])
        self.assertEqual(error.code, 2)
        self.assertIn("no API token", err.getvalue())

    def test_help_names_every_group(self):
        text = cli_arguments.build_parser().format_help()
        for name in ("status", "token", "envoys", "--data-dir", "--ca-file", "--json"):
            self.assertIn(name, text)


class VersionTests(unittest.SynchronousTestCase):
    """``--version`` of vigocli, vigo-envoy and ``twistd vigo``: vigosrv's version."""

    def printed(self, parse, argv):
        with contextlib.redirect_stdout(io.StringIO()) as out, \
                contextlib.redirect_stderr(io.StringIO()) as err:
            error = self.assertRaises(SystemExit, parse, argv)
        self.assertEqual((error.code or 0, err.getvalue()), (0, ""))
        return out.getvalue()

    def test_vigocli(self):
        for argv in (["--version"], ["--version", "status"], ["--json", "--version"]):
            self.assertEqual(self.printed(cli_arguments.parse, argv),
                             f"vigocli (vigosrv) {vigo.__version__}\n")
        self.assertIn("--version", cli_arguments.build_parser().format_help())

    def test_vigo_envoy(self):
        self.assertEqual(self.printed(envoy_arguments.build_parser().parse_args, ["--version"]),
                         f"vigo-envoy (vigosrv) {vigo.__version__}\n")

    def test_twistd_vigo_options(self):
        out = self.printed(tap.Options().parseOptions, ["--version"])
        self.assertEqual(out.splitlines(), [f"vigosrv (twistd vigo) {vigo.__version__}",
                                            f"Twisted version: {copyright.version}"])
        self.assertIn("vigosrv's version", tap.Options().__str__())

    def test_twistd_vigo_process(self):
        """What an operator types, with this tree's vigo first on the path."""
        env = dict(os.environ, PYTHONPATH=REPO)
        env.pop("VIGO_CONFIG_FILE", None)
        elsewhere = self.mktemp()  # no server.yaml there
        os.makedirs(elsewhere)
        run = subprocess.run([os.path.join(os.path.dirname(sys.executable), "twistd"), "vigo",
                              "--version"], cwd=elsewhere, env=env, capture_output=True,
                             text=True, timeout=60)
        self.assertEqual((run.returncode, run.stderr), (0, ""))
        self.assertEqual(run.stdout.splitlines()[0], f"vigosrv (twistd vigo) {vigo.__version__}")


class JsonErrorTests(unittest.SynchronousTestCase):
    """With ``--json``, an error is a JSON object on stdout too; without, only a
    line on stderr."""

    def test_usage_errors(self):
        for argv, says in ((["status", "--bogus", "--json"], "unrecognized arguments: --bogus"),
                           (["--json", "spanner", "bolt", "show"],
                            "the following arguments are required: BOLT"),
                           (["--json", "completion", "fish"],
                            "argument SHELL: invalid choice: 'fish'")):
            out = io.StringIO()
            with contextlib.redirect_stderr(io.StringIO()) as err:
                error = self.assertRaises(SystemExit, cli_arguments.parse, argv, out)
            self.assertEqual(error.code, 2)
            answer = json.loads(out.getvalue())
            self.assertEqual(set(answer), {"error", "detail"})
            self.assertEqual(answer["error"], "usage")
            self.assertTrue(answer["detail"].startswith(says), answer)
            self.assertIn("error: " + answer["detail"] + "\n", err.getvalue())
            self.assertTrue(err.getvalue().startswith("usage: vigocli"), err.getvalue())
        with contextlib.redirect_stdout(io.StringIO()) as out, \
                contextlib.redirect_stderr(io.StringIO()):
            self.assertRaises(SystemExit, cli_arguments.parse, ["status", "--bogus"])
            self.assertRaises(SystemExit, cli_arguments.parse,
                              ["spanner", "bolt", "act", "b", "x", "--arg", "--", "--json"])
        self.assertEqual(out.getvalue(), "")

    def test_main_prints_usage_errors_as_json(self):
        with contextlib.redirect_stdout(io.StringIO()) as out, \
                contextlib.redirect_stderr(io.StringIO()):
            error = self.assertRaises(SystemExit, cli.main, ["envoys", "--json"])
        self.assertEqual(error.code, 2)
        self.assertEqual(json.loads(out.getvalue())["error"], "usage")

    def test_local_commands(self):
        out, err = io.StringIO(), io.StringIO()
        options = cli_arguments.parse(["backup", "create", "/nowhere.tar.gz", "--json"])
        self.assertEqual(cli_backup.create(options, out, err), 2)
        self.assertEqual(json.loads(out.getvalue()), {
            "error": "usage", "detail": "backup create needs --data-dir DIR, the server's "
                                        "data directory"})
        self.assertEqual(err.getvalue(), "vigocli: backup create needs --data-dir DIR, the "
                                         "server's data directory\n")
        out, err = io.StringIO(), io.StringIO()
        options = cli_arguments.parse(["backup", "restore", "/nowhere.tar.gz", "--json",
                                       "--data-dir", self.mktemp()])
        self.assertEqual(cli_backup.restore(options, out, err), 1)
        answer = json.loads(out.getvalue())
        self.assertEqual(answer["error"], "restore_failed")
        self.assertEqual(err.getvalue(), f"vigocli: {answer['detail']}\n")


class ResolveTests(unittest.SynchronousTestCase):
    """Where the CLI finds its URL, token and certificate."""

    def setUp(self):
        self.data_dir = self.mktemp()
        os.makedirs(self.data_dir)

    def write(self, name, text):
        with open(os.path.join(self.data_dir, name), "w") as f:
            f.write(text)

    def resolve(self, argv, environ=None):
        return cli_target.resolve_target(cli_arguments.parse(argv + ["status"]), environ or {})

    def test_defaults_and_environment(self):
        target = self.resolve([], {"VIGO_TOKEN": TOKEN})
        self.assertEqual((target.url, target.token, target.trust),
                         (cli_arguments.DEFAULT_API, TOKEN, None))
        target = self.resolve([], {"VIGO_TOKEN": TOKEN, "VIGO_API": "https://h:9/"})
        self.assertEqual(target.url, "https://h:9")
        target = self.resolve(["--api", "http://x:1", "--token", "t"],
                              {"VIGO_TOKEN": TOKEN, "VIGO_API": "https://h:9"})
        self.assertEqual((target.url, target.token), ("http://x:1", "t"))

    def test_no_token_says_how_to_give_one(self):
        error = self.assertRaises(cli_target.UsageError, self.resolve, [])
        for hint in ("--token", "$VIGO_TOKEN", "--data-dir"):
            self.assertIn(hint, str(error))

    def test_bad_url(self):
        for url in ("localhost:8443", "ftp://h", "https://"):
            error = self.assertRaises(cli_target.UsageError, self.resolve,
                                      ["--api", url, "--token", "t"])
            self.assertIn(repr(url), str(error))

    def test_data_dir_gives_url_token_and_certificate(self):
        self.write("run.json", json.dumps({"api_url": "https://127.0.0.1:1234", "pid": 1}))
        self.write("admin-token", TOKEN + "\n")
        self.write(API_CERT_FILE, "pem")
        target = self.resolve(["--data-dir", self.data_dir],
                              {"VIGO_API": "https://elsewhere:1", "VIGO_TOKEN": "env"})
        self.assertEqual((target.url, target.token, target.trust),
                         ("https://127.0.0.1:1234", TOKEN,
                          os.path.join(self.data_dir, API_CERT_FILE)))

    def test_explicit_options_beat_the_data_dir(self):
        self.write("run.json", json.dumps({"api_url": "https://127.0.0.1:1234"}))
        self.write("admin-token", TOKEN)
        self.write(API_CERT_FILE, "pem")
        target = self.resolve(["--data-dir", self.data_dir, "--api", "https://other:1",
                               "--token", "mine", "--ca-file", "/ca.pem"])
        self.assertEqual((target.url, target.token, target.trust),
                         ("https://other:1", "mine", "/ca.pem"))

    def test_data_dir_without_files_falls_back(self):
        target = self.resolve(["--data-dir", self.data_dir], {"VIGO_TOKEN": TOKEN})
        self.assertEqual((target.url, target.token, target.trust),
                         (cli_arguments.DEFAULT_API, TOKEN, None))
        self.assertRaises(cli_target.UsageError, self.resolve, ["--data-dir", self.data_dir])

    def test_broken_data_dir(self):
        error = self.assertRaises(cli_target.UsageError, self.resolve,
                                  ["--data-dir", self.data_dir + "-nope", "--token", "t"])
        self.assertIn("no such directory", str(error))
        self.write("run.json", "{not json")
        error = self.assertRaises(cli_target.UsageError, self.resolve,
                                  ["--data-dir", self.data_dir, "--token", "t"])
        self.assertIn("api_url", str(error))

    def test_unreadable_admin_token(self):
        if os.geteuid() == 0:
            raise unittest.SkipTest("root reads any file")
        self.write("admin-token", TOKEN)
        os.chmod(os.path.join(self.data_dir, "admin-token"), 0)
        error = self.assertRaises(cli_target.UsageError, self.resolve,
                                  ["--data-dir", self.data_dir])
        self.assertIn("server's user", str(error))

    def test_certificate_file_without_a_certificate(self):
        self.write("ca.pem", "nothing here")
        self.assertRaises(cli_target.UsageError, cli_target.trust_root,
                          os.path.join(self.data_dir, "ca.pem"))
        self.assertRaises(cli_target.UsageError, cli_target.trust_root,
                          os.path.join(self.data_dir, "no.pem"))


class OutputTests(unittest.SynchronousTestCase):
    """What people see."""

    def show(self, printer, answer):
        out, err = io.StringIO(), io.StringIO()
        printer(answer, out, err)
        return out.getvalue(), err.getvalue()

    def test_format_age(self):
        for seconds, text in ((None, "-"), (0, "0s"), (59.9, "59s"), (60, "1m00s"),
                              (3599, "59m59s"), (3600, "1h00m"), (86399, "23h59m"),
                              (90000, "1d01h")):
            self.assertEqual(cli_format.format_age(seconds), text)
        self.assertEqual(cli_format.format_time(0), "1970-01-01T00:00:00Z")
        self.assertEqual(cli_format.format_time(None), "-")

    def test_envoy_table(self):
        out, _ = self.show(cli_envoys.envoy_table, {"count": 2, "envoys": [
            {"id": "aaaa", "hostname": "db1.example.com", "state": "active",
             "online": True, "last_seen_age": 5.2},
            {"id": "bbbbbbbb", "hostname": "w.example.com", "state": "revoked",
             "online": False, "last_seen_age": None},
        ]})
        self.assertEqual(out.splitlines(), [
            "ID        HOSTNAME         STATE    ONLINE  LAST-SEEN-AGO",
            "aaaa      db1.example.com  active   yes     5s",
            "bbbbbbbb  w.example.com    revoked  no      -",
        ])
        self.assertEqual(self.show(cli_envoys.envoy_table, {"envoys": [], "count": 0})[0],
                         "no envoys\n")

    def test_token_alone_on_stdout(self):
        out, err = self.show(cli_tokens.token_created, {
            "token": "vgoe_abc", "token_id": "t", "uses": 2, "expires_at": 3600.0})
        self.assertEqual(out, "vgoe_abc\n")
        self.assertIn("shown once", err)
        self.assertIn("2 envoys", err)
        self.assertIn("1970-01-01T01:00:00Z", err)

    def test_status_push_and_revoke(self):
        out, _ = self.show(cli_server.status, {
            "server_id": "s1", "hostname": "h", "mode": "standalone", "version": "0.1.0",
            "uptime": 3700.0, "envoy_address": "127.0.0.1:1530", "checkin_interval": 15.0,
            "envoys": {"total": 3, "active": 2, "online": 1, "connected": 1},
            "checkins": {"no_change": 7, "bundle": 1}})
        self.assertIn("server             s1\n", out)
        self.assertIn("uptime             1h01m\n", out)
        self.assertIn("3 total, 2 active, 1 online, 1 connected", out)
        self.assertIn("bundle 1, no_change 7", out)
        out, _ = self.show(cli_envoys.envoy_pushed, {"envoy_id": "e", "delivered": "now"})
        self.assertEqual(out, "force-push sent to envoy e\n")
        out, _ = self.show(cli_envoys.envoy_pushed, {"envoy_id": "e", "delivered": "next_attach"})
        self.assertIn("next attaches", out)
        out, _ = self.show(cli_envoys.envoy_revoked, {"envoy_id": "e", "state": "revoked"})
        self.assertEqual(out, "envoy e revoked\n")


class TrackingSite(Site):
    """A Site that can wait until every connection it accepted has closed."""

    def __init__(self, *args, **kwargs):
        Site.__init__(self, *args, **kwargs)
        self.open = []

    def buildProtocol(self, addr):
        protocol = Site.buildProtocol(self, addr)
        lost = defer.Deferred()
        self.open.append(lost)
        connection_lost = protocol.connectionLost

        def closed(reason):
            connection_lost(reason)
            lost.callback(None)

        protocol.connectionLost = closed
        return protocol

    def closed(self):
        return defer.gatherResults(self.open)


class EndToEndTests(unittest.TestCase):
    """The CLI's async core against AdminAPI on a real HTTPS port."""

    @defer.inlineCallbacks
    def setUp(self):
        self.server = FacadeServer(self.mktemp(), new_clock())
        self.addCleanup(self.server.store.close)
        yield defer.ensureDeferred(self.server.start())
        self.data_dir = self.server.data_dir
        cert, key = ensure_api_certificate(self.data_dir, "vigo.test", "127.0.0.1")
        self.url = yield self.listen(self.server.api.resource(),
                                     api_server_options(cert, key))
        with open(os.path.join(self.data_dir, "run.json"), "w") as f:
            json.dump({"api_url": self.url, "server_id": self.server.identity.id}, f)

    @defer.inlineCallbacks
    def listen(self, resource, tls=None):
        site = TrackingSite(resource)
        site.displayTracebacks = False
        if tls is None:
            endpoint = endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        else:
            endpoint = endpoints.SSL4ServerEndpoint(reactor, 0, tls, interface="127.0.0.1")
        port = yield endpoint.listen(site)
        self.addCleanup(site.closed)
        self.addCleanup(port.stopListening)
        scheme = "http" if tls is None else "https"
        return f"{scheme}://127.0.0.1:{port.getHost().port}"

    @defer.inlineCallbacks
    def vigocli(self, *argv, environ=None):
        """``(exit status, stdout, stderr)`` of one command."""
        out, err = io.StringIO(), io.StringIO()
        status = yield defer.ensureDeferred(
            cli.run(reactor, cli_arguments.parse(list(argv)), out, err, environ or {}))
        return status, out.getvalue(), err.getvalue()

    def local(self, *argv):
        return self.vigocli("--data-dir", self.data_dir, *argv)

    @defer.inlineCallbacks
    def test_status_with_data_dir(self):
        status, out, err = yield self.local("status")
        self.assertEqual((status, err), (0, ""))
        self.assertIn(self.server.identity.id, out)
        status, out, err = yield self.local("status", "--json")
        self.assertEqual(status, 0)
        self.assertEqual(json.loads(out)["server_id"], self.server.identity.id)

    @defer.inlineCallbacks
    def test_token_create(self):
        status, out, err = yield self.local("token", "create", "--uses", "2",
                                            "--expires-in", "1h")
        self.assertEqual(status, 0, err)
        self.assertTrue(out.startswith("vgoe_"))
        self.assertEqual(len(out.splitlines()), 1)
        self.assertIn("shown once", err)
        rows = yield self.server.store.run(
            lambda c: c.execute("SELECT uses, expires_at FROM enrollment_tokens").fetchall())
        self.assertEqual(rows, [(2, self.server.clock.seconds() + 3600)])

    @defer.inlineCallbacks
    def test_api_tokens(self):
        status, token, err = yield self.local("api-token", "create", "ci")
        self.assertEqual(status, 0, err)
        self.assertTrue(token.startswith("vgot_"))
        self.assertEqual(len(token.splitlines()), 1)
        self.assertIn("shown once", err)
        status, out, _ = yield self.local("api-token", "list")
        lines = out.splitlines()
        self.assertEqual(lines[0].split(), ["TOKEN", "NAME", "CREATED"])
        ci = next(line.split()[0] for line in lines[1:] if line.split()[1] == "ci")
        self.assertIn("'vigocli api-token withdraw %s'" % (ci,), err)
        status, out, _ = yield self.local("api-token", "withdraw", ci)
        self.assertEqual((status, out), (0, "API token %s withdrawn\n" % (ci,)))
        status, _, err = yield self.local("api-token", "withdraw", ci)
        self.assertEqual(status, 1)
        self.assertIn("not_found", err)

    @defer.inlineCallbacks
    def test_token_list_and_withdraw(self):
        status, out, _ = yield self.local("token", "list")
        self.assertEqual((status, out), (0, "no enrollment tokens\n"))
        status, token, _ = yield self.local("token", "create", "--uses", "2")
        status, out, _ = yield self.local("token", "list", "--json")
        [listed] = json.loads(out)["tokens"]
        self.assertNotIn(token.strip(), out)
        status, out, _ = yield self.local("token", "withdraw", listed["token_id"])
        self.assertEqual((status, out), (0, "enrollment token %s withdrawn\n"
                                            % (listed["token_id"],)))
        status, out, _ = yield self.local("token", "withdraw", listed["token_id"])
        self.assertIn("(it already was)", out)
        status, out, _ = yield self.local("token", "list")
        lines = out.splitlines()
        self.assertEqual(lines[0].split(), ["TOKEN", "STATE", "USED", "CREATED", "EXPIRES"])
        self.assertEqual(lines[1].split()[:3], [listed["token_id"], "withdrawn", "0/2"])
        self.assertEqual(lines[1].split()[-1], "never")
        status, _, err = yield self.local("token", "withdraw", "nosuch")
        self.assertEqual(status, 1)
        self.assertIn("not_found", err)

    @defer.inlineCallbacks
    def test_envoys(self):
        web = yield defer.ensureDeferred(self.server.enroll("web1.example.com"))
        yield defer.ensureDeferred(self.server.enroll("db1.example.com"))
        status, out, _ = yield self.local("envoys", "list")
        self.assertEqual(status, 0)
        lines = out.splitlines()
        self.assertEqual(lines[0].split(), ["ID", "HOSTNAME", "STATE", "ONLINE", "LAST-SEEN-AGO"])
        self.assertEqual([line.split()[1] for line in lines[1:]],
                         ["db1.example.com", "web1.example.com"])
        status, out, _ = yield self.local("envoys", "list", "--offline", "--json")
        self.assertEqual(json.loads(out)["count"], 2)
        status, out, _ = yield self.local("envoys", "show", "web1.example.com")
        self.assertEqual(status, 0)
        self.assertIn(web, out)
        status, out, _ = yield self.local("envoys", "push", "web1.example.com")
        self.assertEqual(status, 0)
        self.assertIn("queued for envoy " + web, out)
        status, out, _ = yield self.local("envoys", "revoke", web)
        self.assertEqual((status, out), (0, f"envoy {web} revoked\n"))
        status, out, err = yield self.local("envoys", "push", web)
        self.assertEqual((status, out), (1, ""))
        self.assertTrue(err.startswith("vigocli: not_active: "), err)

    @defer.inlineCallbacks
    def test_refusals_exit_1_with_the_servers_reason(self):
        status, out, err = yield self.local("envoys", "show", "nosuch.example.com")
        self.assertEqual((status, out), (1, ""))
        self.assertTrue(err.startswith("vigocli: not_found: "), err)
        status, _, err = yield self.local("envoys", "list", "--bolt", "other")
        self.assertEqual(status, 1)
        self.assertIn("bolt_not_found", err)
        status, _, err = yield self.local("--token", TOKEN, "status")
        self.assertEqual(status, 1)
        self.assertTrue(err.startswith("vigocli: unauthorized: "), err)

    @defer.inlineCallbacks
    def test_explicit_api_token_and_ca_file(self):
        status, out, err = yield self.vigocli(
            "--api", self.url, "--token", self.server.admin_token(),
            "--ca-file", os.path.join(self.data_dir, API_CERT_FILE), "status")
        self.assertEqual(status, 0, err)
        self.assertIn(self.server.identity.id, out)
        status, _, err = yield self.vigocli(
            "status", environ={"VIGO_API": self.url, "VIGO_TOKEN": self.server.admin_token()})
        self.assertEqual(status, 1)
        self.assertIn("cannot reach the API at " + self.url, err)
        self.assertIn("--ca-file", err)

    @defer.inlineCallbacks
    def test_no_token_exits_2(self):
        status, out, err = yield self.vigocli("--api", self.url, "status")
        self.assertEqual((status, out), (2, ""))
        self.assertIn("--data-dir", err)

    @defer.inlineCallbacks
    def test_connection_refused_names_the_url(self):
        port = yield endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory())
        url = f"https://127.0.0.1:{port.getHost().port}"
        yield port.stopListening()
        status, out, err = yield self.vigocli("--api", url, "--token", TOKEN, "status")
        self.assertEqual((status, out), (1, ""))
        self.assertIn("cannot reach the API at " + url, err)

    @defer.inlineCallbacks
    def test_json_errors_on_stdout(self):
        """Each kind of error, with ``--json``: one JSON object on stdout, the
        same exit status and line on stderr as without."""
        status, out, err = yield self.local("envoys", "show", "nosuch.example.com", "--json")
        answer = json.loads(out)
        self.assertEqual((status, answer["error"], answer["http_status"]), (1, "not_found", 404))
        self.assertEqual(set(answer), {"error", "detail", "http_status"})
        self.assertEqual(err, f"vigocli: not_found: {answer['detail']}\n")
        status, out, err = yield self.local("--token", TOKEN, "status", "--json")
        self.assertEqual((status, json.loads(out)["error"]), (1, "unauthorized"))
        status, out, err = yield self.vigocli("--json", "--api", self.url, "status")
        self.assertEqual(status, 2)
        self.assertEqual(json.loads(out), {"error": "usage", "detail": err[len("vigocli: "):-1]})
        self.assertIn("no API token", err)
        port = yield endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory())
        url = f"https://127.0.0.1:{port.getHost().port}"
        yield port.stopListening()
        status, out, err = yield self.vigocli("--api", url, "--token", TOKEN, "status", "--json")
        self.assertEqual(status, 1)
        self.assertEqual(json.loads(out), {"error": "api_unreachable",
                                           "detail": err[len("vigocli: "):-1]})
        self.assertIn("cannot reach the API at " + url, err)
        # Without --json, stdout stays empty.
        status, out, err = yield self.local("envoys", "show", "nosuch.example.com")
        self.assertEqual((status, out), (1, ""))

    @defer.inlineCallbacks
    def test_an_answer_that_is_not_json(self):
        root = Resource()
        api = root.putChild(b"api", Resource()) or root.children[b"api"]
        api.putChild(b"v1", Resource())
        api.children[b"v1"].putChild(b"status", Data(b"<html>hello</html>", "text/html"))
        url = yield self.listen(root)
        status, _, err = yield self.vigocli("--api", url, "--token", TOKEN, "status")
        self.assertEqual(status, 1)
        self.assertIn("without JSON", err)
        status, out, err = yield self.vigocli("--api", url, "--token", TOKEN, "status", "--json")
        self.assertEqual((status, json.loads(out)["error"]), (1, "api_unreachable"))
