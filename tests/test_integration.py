"""The README walkthrough for real: ``twistd -n vigo`` children, ``vigocli`` and
``vigo-envoy`` runs of the installed console scripts, all on 127.0.0.1.

Every wait is for an event: a server's ready line, a process exit, a tool run
ending. Servers are started and stopped by ``tests.processes`` (by PID); each
test registers a cleanup that kills what it started and waits for the exit.
"""

import json
import os
import re
import signal
import socket
import stat

import attr
from twisted.internet import defer
from twisted.trial import unittest

from tests.processes import ServerProcess, free_ports, run_tool, write_config
from vigo.tokens import EnrollmentToken

WEB1 = "web1.dc1.example.com"
MIGRATION_DOC = "docs/migration/hub-spoke.md"
SECRET_FILES = ("identity.key", "admin-token", "api-key.pem")


def file_mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


class IntegrationTestCase(unittest.TestCase):
    """Helpers: start servers (killed at cleanup), run tools and check exits."""

    def directory(self):
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        return path

    def server(self, config, *args, env=None):
        """A ``ServerProcess`` on ``config``, not yet started; killed at cleanup."""
        process = ServerProcess(config, args, env)
        self.addCleanup(process.kill)  # a Deferred that fires at its exit
        return process

    def start(self, config, *args, env=None):
        """A Deferred of a ready server on ``config`` (``env``: more environment)."""
        return self.server(config, *args, env=env).start()

    @defer.inlineCallbacks
    def tool(self, name, *args, expect=0, **env):
        """Run a console script (``env``: more environment); ``(stdout, stderr)``
        as text, exit code checked."""
        out, err, code = yield run_tool(name, *args, **env)
        out, err = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        self.assertEqual(
            code, expect,
            f"{name} {' '.join(str(a) for a in args)}: exit {code}, expected {expect}\n"
            f"--- stdout:\n{out}--- stderr:\n{err}",
        )
        return out, err

    def vigocli(self, data_dir, *args, expect=0):
        return self.tool("vigocli", "--data-dir", data_dir, *args, expect=expect)

    @defer.inlineCallbacks
    def vigocli_json(self, data_dir, *args):
        out, _ = yield self.vigocli(data_dir, *args, "--json")
        return json.loads(out)

    def envoy(self, *args, expect=0, **env):
        return self.tool("vigo-envoy", *args, expect=expect, **env)

    @defer.inlineCallbacks
    def new_token(self, data_dir, uses):
        out, err = yield self.vigocli(data_dir, "token", "create", "--uses", uses)
        token = out.strip()
        self.assertEqual(out, token + "\n", "the token alone on stdout")
        self.assertTrue(token.startswith("vgoe_"), out)
        self.assertIn("shown once", err)
        return token

    @defer.inlineCallbacks
    def register(self, server, token, hostname, state_dir, expect=0, via="--token"):
        """``vigo-envoy register``, given the token ``via`` ``--token``,
        ``--token-file`` or ``$VIGO_ENROLL_TOKEN``."""
        env, given = {}, []
        if via == "--token":
            given = ["--token", token]
        elif via == "--token-file":
            path = os.path.join(self.directory(), "enroll-token")
            with open(path, "w") as f:
                f.write(token + "\n")
            given = ["--token-file", path]
        else:
            env = {"VIGO_ENROLL_TOKEN": token}
        out, err = yield self.envoy(
            "register", "--server", server.envoy_server, *given,
            "--hostname", hostname, "--state-dir", state_dir, expect=expect, **env,
        )
        if expect:
            return err
        match = re.fullmatch(
            r"registered (\S+) as envoy (\S+) with server (\S+) at (\S+)\n", out)
        self.assertIsNotNone(match, out)
        self.assertEqual(match.group(1), hostname)
        self.assertEqual(match.group(3), server.run["server_id"])
        self.assertEqual(match.group(4), server.envoy_server)
        return match.group(2)

    @defer.inlineCallbacks
    def run_once(self, state_dir, expect=0):
        out, err = yield self.envoy("run", "--state-dir", state_dir, "--once", expect=expect)
        return out if expect == 0 else err

    def assertBundle(self, out):
        match = re.fullmatch(r"bundle ([0-9a-f]{64}) applied \([0-9.]+ ms\)\n", out)
        self.assertIsNotNone(match, f"expected a bundle, got {out!r}")
        return match.group(1)

    def assertNoChange(self, out):
        self.assertRegex(out, r"\Ano_change \([0-9.]+ ms\)\n\Z")

    def by_hostname(self, listing):
        self.assertEqual(listing["count"], len(listing["envoys"]))
        return {envoy["hostname"]: envoy for envoy in listing["envoys"]}


class WalkthroughTests(IntegrationTestCase):
    """Enroll, check in, inspect, force-push; then survive SIGTERM and SIGKILL."""

    @defer.inlineCallbacks
    def test_walkthrough_then_restarts(self):
        base = self.directory()
        envoy_port, api_port = free_ports(2)
        # Fixed ports: the envoy keeps the address it enrolled with, so a
        # restart must come back on the same one.
        config = write_config(base, server={
            "envoy_listen": f"127.0.0.1:{envoy_port}",
            "api_listen": f"127.0.0.1:{api_port}",
        })
        server = yield self.start(config)
        data = server.data_dir
        server_id = server.run["server_id"]
        self.assertEqual(server.run["envoy_port"], envoy_port)
        self.assertEqual(server.run["api_url"], f"https://127.0.0.1:{api_port}")

        # Every file in data_dir that holds a secret is the owner's alone.
        for name in SECRET_FILES:
            self.assertEqual(file_mode(os.path.join(data, name)), 0o600, name)

        # -- 1. the walkthrough -------------------------------------------
        out, _ = yield self.vigocli(data, "status")
        self.assertRegex(out, rf"(?m)^server +{server_id}$")
        self.assertRegex(out, r"(?m)^mode +standalone$")

        token = yield self.new_token(data, 3)
        state = os.path.join(base, "web1")
        envoy_id = yield self.register(server, token, WEB1, state)
        self.assertEqual(file_mode(os.path.join(state, "envoy.key")), 0o600)

        version = self.assertBundle((yield self.run_once(state)))
        self.assertNoChange((yield self.run_once(state)))

        listing = yield self.vigocli_json(data, "envoys", "list")
        self.assertEqual(listing["count"], 1)
        envoy = listing["envoys"][0]
        self.assertEqual((envoy["id"], envoy["hostname"], envoy["state"]),
                         (envoy_id, WEB1, "active"))
        self.assertEqual(envoy["checkins"], 2)
        self.assertEqual(envoy["applied_version"], version)
        self.assertTrue(envoy["up_to_date"])
        self.assertFalse(envoy["connected"])  # run --once hung up

        shown = yield self.vigocli_json(data, "envoys", "show", WEB1)
        self.assertEqual((shown["id"], shown["hostname"], shown["state"]),
                         (envoy_id, WEB1, "active"))
        self.assertEqual((shown["checkins"], shown["pending_push"]), (2, False))

        # Not connected: the push waits for the next attach, which then gets
        # the bundle although nothing changed.
        out, _ = yield self.vigocli(data, "envoys", "push", envoy_id)
        self.assertIn(f"force-push queued for envoy {envoy_id}", out)
        self.assertIn("not connected", out)
        self.assertEqual(self.assertBundle((yield self.run_once(state))), version)
        self.assertNoChange((yield self.run_once(state)))

        # -- 2a. SIGTERM and back: a pending push and the counters survive ----
        pushed = yield self.vigocli_json(data, "envoys", "push", WEB1)
        self.assertEqual(pushed, {"envoy_id": envoy_id, "delivered": "next_attach"})
        yield server.stop()
        # A clean stop; twistd then ends itself with the signal it got.
        self.assertIn(b"Server Shut Down.", server.output)
        self.assertEqual((server.exit_code, server.exit_signal), (None, signal.SIGTERM))

        server = yield self.start(config)
        self.assertEqual(server.run["server_id"], server_id)
        self.assertEqual(server.run["envoy_port"], envoy_port)
        shown = yield self.vigocli_json(data, "envoys", "show", envoy_id)
        self.assertEqual((shown["hostname"], shown["state"]), (WEB1, "active"))
        self.assertEqual(shown["checkins"], 4)  # written behind at shutdown
        self.assertTrue(shown["pending_push"])
        self.assertEqual(self.assertBundle((yield self.run_once(state))), version)

        # -- 2b. SIGKILL right after a token and an enrollment ----------------
        once = yield self.new_token(data, 1)
        spare = yield self.new_token(data, 1)
        k1 = os.path.join(base, "k1")
        k1_id = yield self.register(server, once, "k1.dc1.example.com", k1, via="--token-file")
        yield server.kill()
        self.assertEqual(server.exit_signal, signal.SIGKILL)

        server = yield self.start(config)
        self.assertEqual(server.run["server_id"], server_id)
        envoys = self.by_hostname((yield self.vigocli_json(data, "envoys", "list")))
        self.assertEqual(set(envoys), {WEB1, "k1.dc1.example.com"})
        self.assertEqual(envoys["k1.dc1.example.com"]["id"], k1_id)
        self.assertEqual(envoys["k1.dc1.example.com"]["state"], "active")
        # The token's one use was counted on disk before "registered".
        k2 = os.path.join(base, "k2")
        err = yield self.register(server, once, "k2.dc1.example.com", k2, expect=1)
        self.assertIn("already used 1 of 1 times", err)
        # The token minted just before the kill is there, unused: the retry enrolls.
        yield self.register(server, spare, "k2.dc1.example.com", k2, via="VIGO_ENROLL_TOKEN")
        self.assertBundle((yield self.run_once(k1)))
        # web1 still checks in. Whether it is pushed again is not pinned down:
        # clearing its pending push was written behind, and the kill came first.
        out = yield self.run_once(state)
        self.assertRegex(out, r"\A(bundle|no_change) ")


class ReplayAfterKillTests(IntegrationTestCase):
    """Replay protection survives SIGKILL (vigo/fleet/replay.py)."""

    @defer.inlineCallbacks
    def test_a_sequence_used_before_sigkill_is_refused_after_it(self):
        from twisted.internet import reactor

        from vigo.envoy import main as envoy
        from vigo.envoy.answers import Refused
        from vigo.envoy.state import EnvoyState

        base = self.directory()
        envoy_port, api_port = free_ports(2)
        config = write_config(base, server={"envoy_listen": f"127.0.0.1:{envoy_port}",
                                            "api_listen": f"127.0.0.1:{api_port}"})
        server = yield self.start(config)
        token = yield self.new_token(server.data_dir, 1)
        state_dir = os.path.join(base, "web1")
        yield self.register(server, token, WEB1, state_dir)

        # Check in twice, then SIGKILL before the write-behind (every 10 s) runs.
        state = EnvoyState.open(state_dir)
        protocol, _ = yield envoy.attach(reactor, state)
        used = [state.last_seq + 1, state.last_seq + 2]
        for seq in used:
            answer, _ = yield protocol.checkin(seq, state.bundle_version)
            self.assertIn(answer, ("bundle", "no_change"))
        protocol.close()
        yield server.kill()
        self.assertEqual(server.exit_signal, signal.SIGKILL)

        server = yield self.start(config)
        protocol, attached = yield envoy.attach(reactor, state)
        self.addCleanup(protocol.close)
        self.assertGreater(attached.last_seq, used[-1])
        for seq in used:  # signed afresh even: the sequence alone is refused
            refused = yield self.assertFailure(protocol.checkin(seq, state.bundle_version),
                                               Refused)
            self.assertEqual(refused.code, "replayed")
            protocol.close()
            protocol, _ = yield envoy.attach(reactor, state)
        # The envoy goes on above the last sequence its Attach answer gave it.
        answer, _ = yield protocol.checkin(state.last_seq + 1, state.bundle_version)
        self.assertIn(answer, ("bundle", "no_change"))
        self.assertRegex((yield self.run_once(state_dir)), r"\A(bundle|no_change) ")


class BackupTests(IntegrationTestCase):
    """A backup taken while the server runs restores a server that serves its envoys."""

    @defer.inlineCallbacks
    def test_backup_while_running_then_restore_elsewhere(self):
        base = self.directory()
        envoy_port, api_port = free_ports(2)
        config = write_config(base, server={"envoy_listen": f"127.0.0.1:{envoy_port}",
                                            "api_listen": f"127.0.0.1:{api_port}"})
        server = yield self.start(config)
        server_id = server.run["server_id"]
        token = yield self.new_token(server.data_dir, 1)
        state = os.path.join(base, "web1")
        envoy_id = yield self.register(server, token, WEB1, state)
        self.assertBundle((yield self.run_once(state)))

        archive = os.path.join(base, "backup.tar.gz")
        out, _ = yield self.vigocli(server.data_dir, "backup", "create", archive)
        self.assertRegex(out, rf"(?m)^server +{server_id}$")
        self.assertEqual(file_mode(archive), 0o600)
        yield server.kill()  # the machine is lost

        restored_dir = os.path.join(base, "restored")
        out, _ = yield self.tool("vigocli", "backup", "restore", archive,
                                 "--data-dir", restored_dir)
        self.assertIn(f"start it with: twistd vigo --config {restored_dir}/server.yaml", out)
        restored = yield self.start(os.path.join(restored_dir, "server.yaml"))
        self.assertEqual(restored.run["server_id"], server_id)
        self.assertEqual(restored.run["envoy_port"], envoy_port)
        # The envoy attaches as before (same address, same pinned key) and checks in.
        self.assertRegex((yield self.run_once(state)), r"\A(bundle|no_change) ")
        shown = yield self.vigocli_json(restored_dir, "envoys", "show", WEB1)
        self.assertEqual((shown["id"], shown["state"]), (envoy_id, "active"))
        err = (yield self.tool("vigocli", "backup", "restore", archive, "--data-dir",
                               restored_dir, expect=1))[1]
        self.assertIn("is not empty", err)


class RefusalAndSimulatorTests(IntegrationTestCase):
    """What is refused, through the real path; and 50 simulated envoys meanwhile."""

    @defer.inlineCallbacks
    def test_refusals_while_the_simulator_runs(self):
        base = self.directory()
        server = yield self.start(write_config(base))
        data = server.data_dir
        before = (yield self.vigocli_json(data, "envoys", "list"))["count"]

        sim_token = yield self.new_token(data, 50)
        sim = run_tool(
            "vigo-envoy", "sim", "--server", server.envoy_server, "--token", sim_token,
            "--count", "50", "--interval", "1s", "--duration", "3s", "--json",
            "--hostname-template", "sim{n}.example.com",
        )

        # A token that is no token: a usage error, before any connection.
        err = yield self.register(server, "garbage", "g.example.com",
                                  os.path.join(base, "g"), expect=2)
        self.assertIn("--token: not an enrollment token", err)

        # A well-formed token this server never minted (wrong secret).
        once = yield self.new_token(data, 1)
        forged = attr.evolve(EnrollmentToken.decode(once), secret="x" * 43).encode()
        err = yield self.register(server, forged, "f.example.com",
                                  os.path.join(base, "f"), expect=1)
        self.assertIn("did not mint that enrollment token (bad_token)", err)

        # One use, then refused as used.
        r1 = os.path.join(base, "r1")
        r1_id = yield self.register(server, once, "r1.example.com", r1)
        err = yield self.register(server, once, "r2.example.com",
                                  os.path.join(base, "r2"), expect=1)
        self.assertIn("already used 1 of 1 times (token_used)", err)

        # Withdrawn: refused, though it has uses left.
        spare = yield self.new_token(data, 3)
        tokens = yield self.vigocli_json(data, "token", "list")
        spare_id = EnrollmentToken.decode(spare).token_id
        self.assertEqual({t["token_id"]: t["state"] for t in tokens["tokens"]}[spare_id],
                         "usable")
        out, _ = yield self.vigocli(data, "token", "withdraw", spare_id)
        self.assertEqual(out, f"enrollment token {spare_id} withdrawn\n")
        err = yield self.register(server, spare, "w.example.com",
                                  os.path.join(base, "w"), expect=1)
        self.assertIn("was withdrawn; create a new one (token_withdrawn)", err)

        # Revoked: the next attach is refused, saying so.
        out, _ = yield self.vigocli(data, "envoys", "revoke", r1_id)
        self.assertEqual(out, f"envoy {r1_id} revoked\n")
        err = yield self.run_once(r1, expect=1)
        self.assertIn("revoked", err)
        self.assertIn(r1_id, err)

        # The API without a token: a usage error with a hint; a wrong one: refused.
        api = ("--api", server.run["api_url"], "--ca-file", os.path.join(data, "api-cert.pem"))
        _, err = yield self.tool("vigocli", *api, "status", expect=2)
        self.assertIn("no API token", err)
        self.assertIn("--token", err)
        _, err = yield self.tool("vigocli", *api, "--token", "vgot_" + "x" * 43, "status",
                                 expect=1)
        self.assertIn("unauthorized", err)

        # -- the simulator ----------------------------------------------------
        out, err, code = yield sim
        self.assertEqual(code, 0, err.decode())
        summary = json.loads(out)
        self.assertEqual((summary["count"], summary["enrolled"], summary["enroll_failed"]),
                         (50, 50, 0), summary)
        self.assertGreater(summary["checkins"], 0, summary)
        self.assertEqual(summary["refusals"], {}, summary)
        self.assertEqual(summary["errors"], {}, summary)

        envoys = self.by_hostname((yield self.vigocli_json(data, "envoys", "list")))
        self.assertEqual(len(envoys), before + 50 + 1)  # the sim's and r1
        self.assertEqual({h for h in envoys if h.startswith("sim")},
                         {f"sim{n}.example.com" for n in range(1, 51)})
        self.assertEqual({envoys[f"sim{n}.example.com"]["state"] for n in range(1, 51)},
                         {"active"})
        self.assertEqual(envoys["r1.example.com"]["state"], "revoked")


class DaemonTests(IntegrationTestCase):
    """``twistd vigo``: its help, and configs it refuses before listening."""

    def bad_config(self, top=None, **sections):
        """A loopback config with ``sections`` merged in and ``top`` keys added."""
        path = write_config(self.directory(), **sections)
        if top:
            with open(path) as f:
                config = json.load(f)
            config.update(top)
            with open(path, "w") as f:
                json.dump(config, f)
        return path

    @defer.inlineCallbacks
    def refused(self, config, *args):
        """Start a server that must not come up; its exit code and output lines."""
        process = self.server(config, *args)
        yield self.assertFailure(process.start(), RuntimeError)
        yield process.ended
        with open(config) as f:
            data_dir = json.load(f)["server"]["data_dir"]
        self.assertFalse(os.path.exists(data_dir), "refused after touching data_dir")
        return process.exit_code, process.output.decode().strip().splitlines()

    def refusals(self):
        """The refused starts, run at once: {case: (exit code, lines)}."""
        cases = {
            "hub_addr": (self.bad_config(top={"hub_addr": "10.0.0.1:1530"}),),
            "nested": (self.bad_config(spanner={"role": "hub"}),),
            "interval": (self.bad_config(checkin={"interval": "fast"}),),
            "mode": (self.bad_config(), "--mode", "bogus"),
        }
        names = list(cases)
        d = defer.gatherResults([self.refused(*cases[n]) for n in names], consumeErrors=True)
        return d.addCallback(lambda results: dict(zip(names, results, strict=True)))

    @defer.inlineCallbacks
    def test_bad_configs_name_the_key(self):
        results = yield self.refusals()
        for case, (code, lines) in results.items():
            self.assertNotIn(code, (0, None), (case, lines))
        # The message is the last line whatever comes before it.
        _, lines = results["hub_addr"]
        self.assertIn("hub_addr", lines[-1])
        self.assertIn(MIGRATION_DOC, lines[-1])
        _, lines = results["nested"]
        self.assertIn("spanner.role", lines[-1])
        self.assertIn(MIGRATION_DOC, lines[-1])
        _, lines = results["interval"]
        self.assertIn("checkin.interval", lines[-1])
        self.assertIn("'fast'", lines[-1])
        self.assertIn("15s", lines[-1])  # what is allowed, by example
        _, lines = results["mode"]
        self.assertIn("'bogus'", lines[-1])
        self.assertIn("standalone", lines[-1])
        self.assertIn("spanner", lines[-1])

    @defer.inlineCallbacks
    def test_bad_config_is_one_line(self):
        """The contract: a bad config exits non-zero with *one line*."""
        results = yield self.refusals()
        for case in ("hub_addr", "nested", "interval"):
            _, lines = results[case]
            self.assertEqual(len(lines), 1, f"{case}: {len(lines)} lines:\n" + "\n".join(lines))

    @defer.inlineCallbacks
    def test_plugin_and_its_help(self):
        (listing, _), (help, _) = yield defer.gatherResults(
            [self.tool("twistd", "--help"), self.tool("twistd", "vigo", "--help")],
            consumeErrors=True,
        )
        self.assertRegex(listing, r"(?m)^ +vigo +vigosrv")
        for option in ("--config", "--mode", "--data-dir"):
            self.assertRegex(help, rf"(?m)^ +-\w, {option}=", option)
        self.assertIn("standalone", help)


class StartFailureTests(IntegrationTestCase):
    """A server that cannot start says why in one line and exits non-zero."""

    @defer.inlineCallbacks
    def failed_start(self, config):
        process = self.server(config)
        yield self.assertFailure(process.start(), RuntimeError)
        yield process.ended
        self.assertNotIn(process.exit_code, (0, None), process.output.decode())
        return [line for line in process.output.decode().splitlines()
                if line.startswith("twistd vigo: cannot start")]

    @defer.inlineCallbacks
    def test_port_in_use(self):
        from twisted.internet import protocol, reactor

        taken = reactor.listenTCP(0, protocol.Factory(), interface="127.0.0.1")
        self.addCleanup(taken.stopListening)
        config = write_config(self.directory(), server={
            "envoy_listen": "127.0.0.1:%d" % (taken.getHost().port,)})
        [line] = yield self.failed_start(config)
        self.assertIn("Address already in use", line)

    @defer.inlineCallbacks
    def test_a_secret_file_open_to_others(self):
        config = write_config(self.directory())
        server = yield self.start(config)
        yield server.stop()
        token = os.path.join(server.data_dir, "admin-token")
        os.chmod(token, 0o644)
        [line] = yield self.failed_start(config)
        self.assertEqual(line, "twistd vigo: cannot start: %s (the local admin API token) is "
                         "open to others (mode 644); run: chmod 600 %s" % (token, token))
        os.chmod(token, 0o600)
        os.chmod(server.data_dir, 0o755)
        [line] = yield self.failed_start(config)
        self.assertIn("the data directory %s is open to others (mode 755); run: chmod 700"
                      % (server.data_dir,), line)

    @defer.inlineCallbacks
    def test_a_gossip_port_in_use_stops_a_bolt_before_it_joins(self):
        # Two bolts on one host in unicast mode with one gossip.port: the second
        # must not start (before, it started, and a join failed once committed).
        taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        config = write_config(self.directory(), spanner={
            "mode": "spanner", "peer_listen": "127.0.0.1:0",
            "gossip": {"multicast": False, "interface": "127.0.0.1", "port": port}})
        [line] = yield self.failed_start(config)
        self.assertIn("Couldn't listen on 127.0.0.1:%d" % (port,), line)

    @defer.inlineCallbacks
    def test_bad_hostcrates(self):
        directory = self.directory()
        with open(os.path.join(directory, "hostcrates.yaml"), "w") as f:
            f.write("- match: 5\n")
        config = write_config(directory, hostcrates="hostcrates.yaml")
        [line] = yield self.failed_start(config)
        self.assertIn("entry 1 needs 'match'", line)
