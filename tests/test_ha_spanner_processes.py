"""An HA bolt in a three-bolt federation, failed over, with real processes.

Bolts a, b and c are ``twistd -n vigo --mode=spanner`` processes on loopback;
c has a standby, c2 (the same ``spanner:`` section, its own addresses), joined
with ``vigocli server standby invite``/``join``. ``vigo-envoy sim`` envoys of
c's partition check in at c; c is killed with SIGKILL and c2 promoted with
``vigocli server promote``: the simulated envoys re-attach at c2 (their replica
list) without enrolling again, a and b hold c's row with c2's addresses, and an
envoy of c's partition that registers at a is enrolled at c2.
"""

import contextlib
import os
import sqlite3

from twisted.internet import defer

from tests.processes import ToolProcess, free_ports, write_config
from tests.test_spanner_integration import SpannerTestCase
from vigo.store import DB_FILE

SIM_ENVOYS = 40


def stored(process):
    with contextlib.closing(sqlite3.connect(os.path.join(process.data_dir, DB_FILE))) as db:
        return db.execute("SELECT hostname FROM envoys WHERE state = 'active'").fetchall()


class SpannerFailoverTests(SpannerTestCase):

    timeout = 180

    def ha_config(self, directory, name):
        envoy, api, peer, replication = free_ports(4)
        return write_config(directory, server={"envoy_listen": f"127.0.0.1:{envoy}",
                                               "api_listen": f"127.0.0.1:{api}"},
                            spanner={"bolt_name": name, "patterns": [f"*.{name}.example.com"],
                                     "peer_listen": f"127.0.0.1:{peer}",
                                     "gossip": {"group": self.group, "port": self.gossip_port,
                                                "interface": "127.0.0.1", "multicast": True}},
                            peers={"listen": f"127.0.0.1:{replication}"})

    @defer.inlineCallbacks
    def connected(self, name, count):
        def probe():
            d = self.api(name).get("/api/v1/status")
            return d.addCallback(lambda s: (s["envoys"]["connected"] >= count, s["envoys"]))

        yield self.until(probe, f"{count} envoys connected at {name}", timeout=60)

    @defer.inlineCallbacks
    def test_an_ha_bolt_is_failed_over_and_the_others_route_to_it(self):
        base = self.directory()
        self.configs["c"] = self.ha_config(os.path.join(base, "c"), "c")
        yield self.start_bolts("a", "b", "c")
        yield self.federate("a", "b", "c")
        c2 = yield self.start(self.ha_config(os.path.join(base, "c2"), "c"), "--mode=spanner")
        self.bolts["c2"] = c2
        out, _ = yield self.cli("c", "server", "standby", "invite")
        mark = len(self.bolts["c"].output)
        yield self.vigocli(c2.data_dir, "server", "standby", "join", out.strip().splitlines()[-1])
        yield self.bolts["c"].wait_for(b"follows from LSN", after=mark)

        token = yield self.new_token(self.data("c"), SIM_ENVOYS)
        sim = ToolProcess("vigo-envoy", "sim", "--server", self.bolts["c"].envoy_server,
                          "--token", token, "--count", SIM_ENVOYS, "--interval", "2s",
                          "--duration", "120s", "--hostname-template", "web{n}.c.example.com")
        sim.start()
        self.addCleanup(sim.stop)
        yield self.connected("c", SIM_ENVOYS)
        enrolled = stored(self.bolts["c"])

        yield self.bolts["c"].kill()
        out, _ = yield self.vigocli(c2.data_dir, "server", "promote")
        self.assertIn("now the primary, at epoch 1", out)
        # The simulated envoys fail over to c2 as themselves: nobody enrolls again.
        yield self.connected("c2", SIM_ENVOYS)
        self.assertEqual(sorted(stored(c2)), sorted(enrolled))

        # a and b route c's partition to c2 (its row, republished and announced).
        def row_at(observer):
            d = self.api(observer).get("/api/v1/spanner/bolts/c")
            return d.addCallback(lambda row: (
                row["addresses"]["envoy"] == c2.envoy_server, row["addresses"]))

        for observer in ("a", "b"):
            yield self.until(lambda observer=observer: row_at(observer),
                             f"{observer} holds c's row with c2's addresses")
        at_a = yield self.new_token(self.data("a"), 1)
        out, _ = yield self.envoy("register", "--server", self.bolts["a"].envoy_server,
                                  "--token", at_a, "--hostname", "new1.c.example.com",
                                  "--state-dir", os.path.join(base, "new1"))
        self.assertIn(f"at {c2.envoy_server}", out)
        self.assertIn(("new1.c.example.com",), stored(c2))
