"""The spanner federation for real: ``twistd -n vigo --mode=spanner`` bolts on
loopback, federated and inspected with ``vigocli``, enrolled into with
``vigo-envoy``.

Every bolt listens on fixed free loopback ports (envoy, API, peer) so that a
restart keeps its addresses. The bolts of one test gossip on one multicast
group chosen at random in 239.192.0.0/16 and one free UDP port, pinned to
127.0.0.1 with TTL 1 (``spanner.gossip.interface``), so tests running side by
side do not hear each other.

Waits are for events (a ready line, a process exit, a tool run ending), except
where gossip time is what is under test: liveness and roster convergence have
no event an outsider can wait on, so ``until`` polls the REST API every 0.2 s
up to a deadline and fails saying what it last saw.
"""

import base64
import contextlib
import json
import os
import random
import re
import socket
import sqlite3
import time

from treq.client import HTTPClient
from twisted.internet import defer, reactor, task
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

from tests.processes import free_ports, write_config
from tests.test_integration import IntegrationTestCase
from vigo.cli.target import trust_root
from vigo.store import DB_FILE

POLL = 0.2  # seconds between two looks at a condition gossip brings about
CONVERGE = 15.0  # seconds for a roster change or a liveness change to spread
DOWN_WITHIN = 5.0  # a SIGKILLed bolt is down everywhere by then (3 s at 500 ms gossip)
JOIN_HINT = "spanner bolt join TOKEN"


def free_udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def gossip_group():
    """A multicast group in the organisation-local 239.192.0.0/16, at random."""
    return "239.192.%d.%d" % (random.randint(0, 255), random.randint(1, 254))


class Api:
    """The admin REST API of one running bolt, from this process (for polling).

    Trusts exactly the bolt's ``api-cert.pem`` and uses its admin token, as
    ``vigocli --data-dir`` does; connections are not kept, so a bolt's restart
    leaves nothing stale behind.
    """

    def __init__(self, process):
        data = process.data_dir
        self.url = process.run["api_url"]
        with open(os.path.join(data, "admin-token")) as f:
            self.token = f.read().strip()
        policy = BrowserLikePolicyForHTTPS(trustRoot=trust_root(os.path.join(data, "api-cert.pem")))
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = HTTPClient(Agent(reactor, contextFactory=policy, pool=pool))

    @defer.inlineCallbacks
    def request(self, method, path, body=None, token=True, headers=None):
        """``(status, response headers, body bytes)``."""
        sent = {b"accept": [b"application/json"]}
        if token:
            sent[b"authorization"] = [b"Bearer " + self.token.encode("ascii")]
        sent.update(headers or {})
        data = None
        if body is not None:
            sent[b"content-type"] = [b"application/json"]
            data = json.dumps(body).encode("utf-8")
        response = yield self.http.request(method, self.url + path, headers=sent, data=data,
                                           timeout=5)
        content = yield response.content()
        return response.code, response.headers, content

    @defer.inlineCallbacks
    def json(self, method, path, body=None, expect=200):
        code, _, content = yield self.request(method, path, body)
        if code != expect:
            raise AssertionError(f"{method} {self.url}{path}: HTTP {code}, expected {expect}: "
                                 f"{content[:500]!r}")
        return json.loads(content)

    def get(self, path):
        return self.json("GET", path)


class SpannerTestCase(IntegrationTestCase):
    """Bolts named a, b, c, d (each owning ``*.NAME.example.com``), one gossip
    group per test, and helpers to federate them and to wait for gossip."""

    def setUp(self):
        self.group, self.gossip_port = gossip_group(), free_udp_port()
        self.configs = {}
        self.bolts = {}  # name -> the running ServerProcess

    def configure(self, *names):
        """One config per bolt name, each on its own fixed free ports."""
        ports = iter(free_ports(3 * len(names)))
        for name in names:
            envoy, api, peer = next(ports), next(ports), next(ports)
            self.configs[name] = write_bolt_config(
                os.path.join(self.directory(), name), name,
                server={"envoy_listen": f"127.0.0.1:{envoy}", "api_listen": f"127.0.0.1:{api}"},
                peer_listen=f"127.0.0.1:{peer}", group=self.group, port=self.gossip_port)

    @defer.inlineCallbacks
    def start_bolts(self, *names, env=None):
        """Start (configuring first) the named bolts together; wait until all are
        ready. ``env``: {name: more environment for that bolt}."""
        self.configure(*[n for n in names if n not in self.configs])
        env = env or {}
        started = yield defer.gatherResults(
            [self.start(self.configs[n], "--mode=spanner", env=env.get(n)) for n in names],
            consumeErrors=True)
        for name, process in zip(names, started, strict=True):
            self.assertEqual(process.run["mode"], "spanner", process.output.decode())
            self.bolts[name] = process
        return started

    def api(self, name):
        return Api(self.bolts[name])

    def data(self, name):
        return self.bolts[name].data_dir

    def id_of(self, name):
        return self.bolts[name].run["server_id"]

    def cli(self, name, *args, expect=0):
        return self.vigocli(self.data(name), *args, expect=expect)

    def cli_json(self, name, *args):
        return self.vigocli_json(self.data(name), *args)

    @defer.inlineCallbacks
    def until(self, probe, what, timeout=CONVERGE):
        """Poll ``probe()`` (a Deferred of ``(done, observed)``) until done.

        Returns ``(observed, seconds waited)``; fails after ``timeout`` seconds
        with what was last observed.
        """
        started = time.monotonic()
        while True:
            done, observed = yield probe()
            waited = time.monotonic() - started
            if done:
                return observed, waited
            if waited > timeout:
                self.fail(f"{what}: not within {timeout:g} s; last seen:\n"
                          f"{json.dumps(observed, indent=2, sort_keys=True, default=str)}")
            yield task.deferLater(reactor, POLL, lambda: None)

    @defer.inlineCallbacks
    def views(self, names):
        """{name: (status, bolts)} as each named bolt's REST API has them now."""
        out = {}
        for name in names:
            api = self.api(name)
            status = yield api.get("/api/v1/spanner/status")
            bolts = yield api.get("/api/v1/spanner/bolts")
            out[name] = (status, bolts["bolts"])
        return out

    def converged(self, names):
        """Every named bolt a member, with one roster digest, listing exactly
        the named bolts, each seeing every other as alive."""
        expected = {self.id_of(n) for n in names}

        @defer.inlineCallbacks
        def probe():
            views = yield self.views(names)
            digests = {status["digest"] for status, _ in views.values()}
            done = len(digests) == 1 and None not in digests
            seen = {}
            for name, (status, bolts) in views.items():
                states = {b["bolt_id"]: b["liveness"]["state"] for b in bolts}
                seen[name] = {"state": status["state"], "digest": status["digest"],
                              "liveness": states}
                want = {bolt_id: "alive" for bolt_id in expected}
                want[self.id_of(name)] = "self"
                done = done and status["state"] == "member" and states == want
            return done, seen

        return self.until(probe, f"bolts {', '.join(names)} converged and alive")

    @defer.inlineCallbacks
    def federate(self, founder, *joiners):
        """Found a federation at ``founder`` and join the others through it, one
        invite each (REST); wait until all agree. The invite tokens used."""
        yield self.api(founder).json("POST", "/api/v1/spanner/init", {}, expect=201)
        tokens = []
        for name in joiners:
            invite = yield self.api(founder).json("POST", "/api/v1/spanner/invite", {},
                                                  expect=201)
            tokens.append(invite["token"])
            yield self.api(name).json("POST", "/api/v1/spanner/join", {"token": tokens[-1]})
        yield self.converged((founder,) + joiners)
        return tokens

    @defer.inlineCallbacks
    def liveness_of(self, name, observers):
        """{observer: the named bolt's liveness state} (REST ``bolts/NAME``)."""
        out = {}
        for observer in observers:
            shown = yield self.api(observer).get("/api/v1/spanner/bolts/" + name)
            out[observer] = shown["liveness"]["state"]
        return out

    @defer.inlineCallbacks
    def digests(self, names):
        out = {}
        for name in names:
            out[name] = (yield self.api(name).get("/api/v1/spanner/status"))["digest"]
        return out


def write_bolt_config(directory, name, server, peer_listen, group, port):
    """A loopback bolt config; the mode comes from ``--mode=spanner``."""
    return write_config(directory, server=server, spanner={
        "bolt_name": name,
        "patterns": [f"*.{name}.example.com"],
        "peer_listen": peer_listen,
        "gossip": {"group": group, "port": port, "interface": "127.0.0.1",
                   "multicast": True},
    })


def roster_rows(bolts):
    """The replicated part of ``bolt list --json`` (not liveness, counters, self)."""
    keys = ("bolt_id", "name", "status", "patterns", "addresses", "seq", "admitted_by")
    return sorted(json.dumps({k: b[k] for k in keys}, sort_keys=True) for b in bolts)


class FederationTests(SpannerTestCase):

    @defer.inlineCallbacks
    def test_found_invite_join_and_gossip(self):
        """init on A; B and C join with one invite each; all agree and are alive."""
        yield self.start_bolts("a", "b", "c")
        a_id, b_id, c_id = (self.id_of(n) for n in "abc")

        # A fresh bolt says it is in no federation, and how to change that.
        out, _ = yield self.cli("a", "spanner", "status")
        self.assertRegex(out, r"(?m)^state +unfederated$")
        self.assertRegex(out, rf"(?m)^bolt +{a_id} \(a\)$")
        self.assertRegex(out, r"(?m)^hint +.*'vigocli spanner init' founds one")
        self.assertIn(JOIN_HINT, out)
        _, err = yield self.cli("a", "spanner", "bolt", "list", expect=1)
        self.assertIn("not_member", err)
        self.assertIn("vigocli spanner init", err)

        out, _ = yield self.cli("a", "spanner", "init")
        first, _, rest = out.partition("\n")
        self.assertRegex(first, rf"^founded federation \S+; this server is its first bolt, "
                                rf"{a_id}$")
        federation = first.split()[2].rstrip(";")
        self.assertRegex(rest, r"(?m)^state +member$")
        self.assertRegex(rest, rf"(?m)^federation +{federation} \(founded by this bolt\)$")

        for name, bolt_id in (("b", b_id), ("c", c_id)):
            out, err = yield self.cli("a", "spanner", "bolt", "invite")
            token = out.strip()
            self.assertEqual(out, token + "\n", "the invite alone on stdout")
            self.assertTrue(token.startswith("vgoj_"), out)
            self.assertIn("one-shot", err)
            out, _ = yield self.cli(name, "spanner", "bolt", "join", token)
            self.assertIn(f"joined federation {federation} as bolt {bolt_id}\n", out)
            self.assertRegex(out, rf"(?m)^federation +{federation} \(founded by {a_id}\)$")

        # B learns of C from gossip (digest mismatch, then a snapshot pull);
        # liveness comes from gossip alone.
        _, waited = yield self.converged("abc")
        self.assertLess(waited, 10.0)

        listings, statuses = {}, {}
        for name in "abc":
            listings[name] = yield self.cli_json(name, "spanner", "bolt", "list")
            statuses[name] = yield self.cli_json(name, "spanner", "status")
        for name in "abc":
            bolts = listings[name]["bolts"]
            self.assertEqual(listings[name]["count"], 3)
            self.assertEqual({b["bolt_id"]: b["name"] for b in bolts},
                             {a_id: "a", b_id: "b", c_id: "c"})
            self.assertEqual({b["name"]: b["patterns"] for b in bolts},
                             {n: [f"*.{n}.example.com"] for n in "abc"})
            self.assertEqual(roster_rows(bolts), roster_rows(listings["a"]["bolts"]), name)
            self.assertEqual({b["name"]: b["liveness"]["state"] for b in bolts},
                             {n: "self" if n == name else "alive" for n in "abc"}, name)
            status = statuses[name]
            self.assertEqual((status["state"], status["federation_id"], status["founder_id"]),
                             ("member", federation, a_id))
            self.assertEqual(status["digest"], statuses["a"]["digest"], name)
            self.assertEqual(status["bolts"]["total"], 3)
            self.assertEqual(status["peers"], {"alive": 2, "suspect": 0, "down": 0,
                                               "unknown": 0})
        # The people's table says the same.
        out, _ = yield self.cli("b", "spanner", "bolt", "list")
        self.assertRegex(out, rf"(?m)^{c_id} +c +active +alive ")
        self.assertRegex(out, rf"(?m)^{b_id} +b +active +self ")
        out, _ = yield self.cli("c", "spanner", "bolt", "show", "a")
        self.assertRegex(out, rf"(?m)^bolt +{a_id}$")
        self.assertRegex(out, r"(?m)^liveness +alive$")
        self.assertRegex(out, r"(?m)^this bolt +no$")
        # And the web page, as a browser asks for it (the token as a Basic password).
        api = self.api("c")
        code, headers, _ = yield api.request("GET", "/spanner", token=False)
        self.assertEqual((code, headers.getRawHeaders(b"www-authenticate")),
                         (401, [b'Basic realm="vigo", charset="UTF-8"']))
        basic = base64.b64encode(b"admin:" + api.token.encode("ascii"))
        code, headers, body = yield api.request(
            "GET", "/spanner", token=False, headers={b"authorization": [b"Basic " + basic]})
        self.assertEqual(code, 200, body)
        html = body.decode("utf-8")
        self.assertIn("Vigo spanner: bolt c", html)
        for bolt_id in (a_id, b_id, c_id):
            self.assertIn(bolt_id, html)
        self.assertEqual(html.count('class="alive">alive<'), 2)


class InviteRefusalTests(SpannerTestCase):

    @defer.inlineCallbacks
    def test_used_expired_and_garbage_invites_change_nothing(self):
        yield self.start_bolts("a", "b", "c", "d")
        invites = yield self.federate("a", "b", "c")
        before = yield self.digests("abc")

        # Used once already: the minter refuses it (one decider).
        _, err = yield self.cli("d", "spanner", "bolt", "join", invites[0], expect=1)
        self.assertIn("join_refused", err)
        self.assertIn("already used", err)
        # And to a member it is no invite at all.
        _, err = yield self.cli("c", "spanner", "bolt", "join", invites[0], expect=1)
        self.assertIn("already_member", err)

        # Expired: wait (on the clock, not a guess) until it is, then try it.
        expiring = yield self.cli_json("a", "spanner", "bolt", "invite", "--expires-in", "1s")
        remaining = expiring["expires_at"] - time.time()
        self.assertLessEqual(remaining, 1.0)
        yield task.deferLater(reactor, max(0.0, remaining) + 0.1, lambda: None)
        self.assertGreater(time.time(), expiring["expires_at"])
        _, err = yield self.cli("d", "spanner", "bolt", "join", expiring["token"], expect=1)
        self.assertIn("expired", err)

        # Garbage, and an invite damaged in transit.
        _, err = yield self.cli("d", "spanner", "bolt", "join", "garbage", expect=1)
        self.assertIn("bad_request: not a spanner invite (they start with 'vgoj_')", err)
        damaged = invites[1][:20] + "!!" + invites[1][22:]
        _, err = yield self.cli("d", "spanner", "bolt", "join", damaged, expect=1)
        self.assertIn("bad_request: the invite is damaged", err)
        _, err = yield self.tool("vigocli", "--data-dir", self.data("d"), "spanner", "bolt",
                                 "join", expect=2)
        self.assertIn("TOKEN", err)

        # Nothing changed anywhere: same digests, three bolts, D still outside.
        self.assertEqual((yield self.digests("abc")), before)
        listing = yield self.api("a").get("/api/v1/spanner/bolts")
        self.assertEqual({b["name"] for b in listing["bolts"]}, {"a", "b", "c"})
        status = yield self.cli_json("d", "spanner", "status")
        self.assertEqual(status["state"], "unfederated")

        # The refusals left D and A able to do it right: a fresh invite admits D.
        out, _ = yield self.cli("a", "spanner", "bolt", "invite")
        yield self.api("d").json("POST", "/api/v1/spanner/join", {"token": out.strip()})
        yield self.converged("abcd")


class PeerActionTests(SpannerTestCase):

    @defer.inlineCallbacks
    def test_act_ping_and_unknown_action(self):
        yield self.start_bolts("a", "b")
        yield self.federate("a", "b")
        digest = (yield self.api("a").get("/api/v1/spanner/status"))["digest"]

        out, _ = yield self.cli("a", "spanner", "bolt", "act", "b", "ping")
        result = json.loads(out)
        self.assertEqual((result["bolt_id"], result["name"], result["digest"]),
                         (self.id_of("b"), "b", digest))
        answer = yield self.cli_json("a", "spanner", "bolt", "act", self.id_of("b"), "ping")
        self.assertEqual((answer["bolt_id"], answer["action"]), (self.id_of("b"), "ping"))
        self.assertEqual(answer["result"]["bolt_id"], self.id_of("b"))
        # This bolt too, through the same rules.
        answer = yield self.cli_json("b", "spanner", "bolt", "act", "b", "ping")
        self.assertEqual(answer["result"]["bolt_id"], self.id_of("b"))

        _, err = yield self.cli("a", "spanner", "bolt", "act", "b", "nosuch", expect=1)
        self.assertIn(f"unknown_action: bolt {self.id_of('b')} has no action 'nosuch'; "
                      "it has: ", err)
        self.assertIn("ping", err)
        _, err = yield self.cli("a", "spanner", "bolt", "act", "zz", "ping", expect=1)
        self.assertIn("not_found: no bolt 'zz' in the roster", err)
        _, err = yield self.cli("a", "spanner", "bolt", "act", "b", "ping", "--arg", "x=1",
                                expect=1)
        self.assertIn("bad_request", err)


class CrashRestartTests(SpannerTestCase):

    @defer.inlineCallbacks
    def test_kill_9_down_then_back_with_identity_and_roster(self):
        yield self.start_bolts("a", "b", "c")
        yield self.federate("a", "b", "c")
        b_id = self.id_of("b")
        digest = (yield self.api("a").get("/api/v1/spanner/status"))["digest"]

        killed_at = time.monotonic()
        yield self.bolts["b"].kill()

        @defer.inlineCallbacks
        def b_down():
            seen = yield self.liveness_of("b", "ac")
            return set(seen.values()) == {"down"}, seen

        yield self.until(b_down, "A and C mark B down", timeout=DOWN_WITHIN)
        self.assertLess(time.monotonic() - killed_at, DOWN_WITHIN + 1)
        status = yield self.api("a").get("/api/v1/spanner/status")
        self.assertEqual(status["peers"]["down"], 1)
        self.assertEqual(status["digest"], digest, "a dead bolt stays in the roster")

        # Back on the same config and data dir: same identity, same roster.
        (b,) = yield self.start_bolts("b")
        self.assertEqual(b.run["server_id"], b_id)
        status = yield self.api("b").get("/api/v1/spanner/status")
        self.assertEqual((status["state"], status["digest"]), ("member", digest),
                         "B's roster came back from its own disk")

        @defer.inlineCallbacks
        def b_alive():
            seen = yield self.liveness_of("b", "ac")
            return set(seen.values()) == {"alive"}, seen

        yield self.until(b_alive, "A and C see B alive again")
        yield self.converged("abc")
        out, _ = yield self.cli("b", "spanner", "status")
        self.assertRegex(out, r"(?m)^state +member$")
        self.assertRegex(out, rf"(?m)^digest +{digest[:12]}$")
        self.assertRegex(out, r"(?m)^peers +2 alive, 0 suspect, 0 down, 0 unknown$")


class RosterSnapshotTests(SpannerTestCase):

    @defer.inlineCallbacks
    def test_roster_without_token_and_if_none_match(self):
        yield self.start_bolts("a")
        api = self.api("a")
        # Not a member yet: no snapshot to give, and it says why.
        code, _, body = yield api.request("GET", "/api/v1/spanner/roster", token=False)
        self.assertEqual(code, 409, body)
        self.assertEqual(json.loads(body)["error"], "not_member")

        yield api.json("POST", "/api/v1/spanner/init", {}, expect=201)
        digest = (yield api.get("/api/v1/spanner/status"))["digest"]

        code, headers, body = yield api.request("GET", "/api/v1/spanner/roster", token=False)
        self.assertEqual(code, 200, body)
        [etag] = headers.getRawHeaders(b"etag")
        self.assertEqual(etag, b'"%s"' % digest.encode("ascii"))
        self.assertTrue(body, "a snapshot body")

        code, headers, body = yield api.request(
            "GET", "/api/v1/spanner/roster", token=False, headers={b"if-none-match": [etag]})
        self.assertEqual((code, body), (304, b""))
        self.assertEqual(headers.getRawHeaders(b"etag"), [etag])

        code, _, _ = yield api.request(
            "GET", "/api/v1/spanner/roster", token=False,
            headers={b"if-none-match": [b'"' + b"0" * 64 + b'"']})
        self.assertEqual(code, 200)

        # Every other /api/v1 route wants the token.
        code, _, body = yield api.request("GET", "/api/v1/spanner/status", token=False)
        self.assertEqual(code, 401, body)


class EnrollmentRoutingTests(SpannerTestCase):

    @defer.inlineCallbacks
    def test_envoy_enrolls_where_its_hostname_belongs(self):
        yield self.start_bolts("a", "b")
        yield self.federate("a", "b")
        a, b = self.bolts["a"], self.bolts["b"]
        base = self.directory()
        token = yield self.new_token(a.data_dir, 3)

        # A owns *.a.example.com: it enrolls there.
        envoy_id = yield self.register(a, token, "web1.a.example.com",
                                       os.path.join(base, "a1"))
        listing = yield self.vigocli_json(a.data_dir, "envoys", "list")
        self.assertEqual([(e["id"], e["hostname"]) for e in listing["envoys"]],
                         [(envoy_id, "web1.a.example.com")])

        # B owns *.b.example.com: A forwards the Register to B, which has A
        # redeem the token and enrolls the envoy; the envoy goes on to B.
        out, _ = yield self.envoy(
            "register", "--server", a.envoy_server, "--token", token,
            "--hostname", "web1.b.example.com", "--state-dir", os.path.join(base, "b1"))
        match = re.fullmatch(
            r"registered web1\.b\.example\.com as envoy (\S+) with server (\S+) at (\S+)\n",
            out)
        self.assertIsNotNone(match, out)
        self.assertEqual((match.group(2), match.group(3)), (b.run["server_id"], b.envoy_server))
        # Stored at B only (each bolt's own database; listings may span bolts).
        def stored(process):
            path = os.path.join(process.data_dir, DB_FILE)
            with contextlib.closing(sqlite3.connect(path)) as db:
                return db.execute("SELECT id, hostname FROM envoys").fetchall()
        self.assertEqual(stored(b), [(match.group(1), "web1.b.example.com")])
        self.assertEqual(stored(a), [(envoy_id, "web1.a.example.com")])
        # Who owns what, asked at a, by the same rule.
        out, _ = yield self.cli("a", "spanner", "owner", "WEB7.b.example.com")
        self.assertEqual(out, f"web7.b.example.com is owned by bolt {b.run['server_id']} (b): "
                              "the most specific matching pattern, *.b.example.com\n")
        _, err = yield self.cli("a", "spanner", "owner", "web1.z.example.org", expect=1)
        self.assertIn("no_owner", err)
        _, err = yield self.cli("a", "spanner", "owner", "bad host", expect=1)
        self.assertIn("bad_request", err)
        # Owned by nobody: refused, naming the hostname.
        err = yield self.register(a, token, "web1.z.example.org",
                                  os.path.join(base, "z1"), expect=1)
        self.assertIn("no_owner", err)
        self.assertIn("web1.z.example.org", err)

        self.assertEqual(stored(a), [(envoy_id, "web1.a.example.com")])
        for process in (a, b):
            listing = yield self.vigocli_json(process.data_dir, "envoys", "list")
            self.assertNotIn("web1.z.example.org", {e["hostname"] for e in listing["envoys"]})

        # A's new envoy reaches B by gossip, in A's counters.
        @defer.inlineCallbacks
        def counted():
            shown = yield self.api("b").get("/api/v1/spanner/bolts/a")
            counters = shown["counters"] or {}
            return counters.get("envoys_owned") == 1, shown

        yield self.until(counted, "B sees A's envoy count in gossip")
