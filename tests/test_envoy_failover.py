"""Envoys failing over inside a replica set (architecture.md section 12, "Envoys").

The servers of a replica set share one identity key, and their Registered and
Attached answers name the set's envoy addresses, primary first. An envoy keeps
the list in its state directory and, when its server cannot be reached, tries
the others in order with the same pin; the simulator does the same.

Unit tests run on a ``Clock`` against ``FakeReplicaSet`` (in-memory servers
that share a key, each at its own address); one test goes through real
sockets on 127.0.0.1.
"""

import argparse
import io
import json
import os
import random
import socket

from twisted.internet import defer, reactor
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.events import until
from tests.fleetkit import EnvoyConnections, FleetKit
from tests.test_envoy import NOW, FakeServer, FakeToken, TestCase, json_frame, run_until
from vigo.config import Address, PortLimits
from vigo.envoy import main as envoy_main
from vigo.envoy.answers import Registered, decode_attached, decode_registered
from vigo.envoy.replicas import (
    MAX_REPLICAS,
    FailoverPass,
    ReplicasUnreachable,
    failover_order,
    replica_addresses,
)
from vigo.envoy.sim.simulator import Simulator
from vigo.envoy.state import STATE_FILE, EnvoyState
from vigo.fleet import wire
from vigo.fleet.channel import EnvoyChannelFactory
from vigo.identity import Identity, key_id, verify_signature
from vigo.server.ports import envoy_port

P, S1, S2 = "127.0.0.1:1530", "127.0.0.2:1530", "127.0.0.3:1530"
HOSTNAME = "web1.dc1.example.com"


class Replica(FakeServer):
    """One server of a ``FakeReplicaSet``: a ``FakeServer`` with the set's key and
    envoys whose Registered and Attached name the set's replicas. ``standby_of``
    (an address) makes it a standby that redirects every Attach there;
    ``on_attach`` "drop" hangs up on an Attach, "silent" never answers it."""

    def __init__(self, replica_set, address):
        FakeServer.__init__(self, replica_set.clock)
        self.set, self.address = replica_set, address
        self.identity, self.keys = replica_set.identity, replica_set.keys
        self.last_seq = replica_set.last_seq
        self.standby_of = self.on_attach = None

    def handle(self, transport, body):
        if body[0] == wire.ATTACH:
            self._attach(transport, body)
        elif body[0] == wire.REGISTER:
            self._register(transport, body)
        else:
            FakeServer.handle(self, transport, body)

    def _with_replicas(self, fields):
        if self.set.replicas is not None:
            fields["replicas"] = list(self.set.replicas)
        return fields

    def _attach(self, transport, body):
        if self.on_attach == "silent":
            return
        if self.on_attach == "drop":
            transport.loseConnection()
            return
        if self.standby_of is not None:
            transport.send(json_frame(wire.REDIRECT, {
                "address": self.standby_of, "server_id": self.identity.id,
                "fingerprint": self.identity.fingerprint, "reason": "a standby"}))
            return
        fields = wire.decode_json(body, {"envoy_id": str, "server_id": str, "ts": int,
                                         "signature": str})
        message = wire.attach_message(fields["envoy_id"], fields["server_id"], fields["ts"])
        assert verify_signature(self.keys[fields["envoy_id"]], message,
                                wire.unb64(fields["signature"], "s", 64))
        transport.envoy_id = fields["envoy_id"]
        transport.send(json_frame(wire.ATTACHED, self._with_replicas({
            "envoy_id": fields["envoy_id"], "interval": 15.0,
            "last_seq": self.last_seq.get(fields["envoy_id"], 0),
            "server_time": self.clock.seconds()})))

    def _register(self, transport, body):
        fields = wire.decode_json(body, {"hostname": str, "public_key": str, "token": str,
                                         "ts": int, "signature": str})
        public_key = wire.unb64(fields["public_key"], "public_key", 32)
        envoy_id = key_id(public_key)
        self.keys[envoy_id] = public_key
        transport.send(json_frame(wire.REGISTERED, self._with_replicas({
            "envoy_id": envoy_id, "server_id": self.identity.id,
            "public_key": wire.b64(self.identity.public_key),
            "fingerprint": self.identity.fingerprint, "address": self.address,
            "interval": 15.0})))


class FakeReplicaSet:
    """Servers sharing one identity key and one set of envoys, at ``addresses``.

    ``connect`` (``vigo.envoy.dial.connect``'s shape, and the simulator's)
    reaches the server at the address dialled; ``dialled`` lists the addresses
    in order. ``replicas`` is what answers name (None: they name none).
    """

    def __init__(self, clock, addresses=(P, S1, S2)):
        self.clock = clock
        self.identity = Identity.generate()
        self.keys, self.last_seq = {}, {}
        self.dialled = []
        self.replicas = list(addresses)
        self.servers = {address: Replica(self, address) for address in addresses}

    def connect(self, address, fingerprint, listener=None, bind_address=None):
        self.dialled.append(address)
        assert fingerprint == self.identity.fingerprint, "every replica has the one pin"
        server = self.servers.get(address)
        if server is None:
            return defer.fail(ConnectionRefusedError(address))
        return server.connect(address, fingerprint, listener, bind_address)

    def __getitem__(self, address):
        return self.servers[address]

    def down(self, *addresses):
        for address in addresses:
            self.servers[address].restart()

    def attached(self):
        """``{address: envoys attached there}``, where any are."""
        counts = {address: len(server.attached()) for address, server in self.servers.items()}
        return {address: n for address, n in counts.items() if n}


def registered(replica_set, state, address=P, replicas=None):
    """Enroll ``state`` as if ``address`` of the set had answered Register."""
    envoy_id = key_id(state.public_key)
    replica_set.keys[envoy_id] = state.public_key
    identity = replica_set.identity
    state.record_registration(HOSTNAME, Registered(
        envoy_id, identity.id, identity.public_key, identity.fingerprint, address, 15.0,
        replicas), address)
    return state


# -- the replica list, and the order -------------------------------------------


class ReplicaAddressTests(unittest.SynchronousTestCase):
    def test_normalised_in_order_without_repeats(self):
        self.assertEqual(replica_addresses(["10.0.0.1:1530", "[::1]:1530", "10.0.0.1:1530"]),
                         ("10.0.0.1:1530", "[::1]:1530"))

    def test_entries_that_are_no_address_are_left_out(self):
        self.assertEqual(replica_addresses(["10.0.0.1:1530", "nope", "a b:1", "h:99999"]),
                         ("10.0.0.1:1530",))

    def test_what_is_no_list_of_strings_is_not_a_list(self):
        for value in (None, "10.0.0.1:1530", {"a": 1}, [1, 2], ["10.0.0.1:1530", None]):
            self.assertIsNone(replica_addresses(value), value)
        self.assertEqual(replica_addresses([]), ())

    def test_at_most_max_replicas(self):
        many = [f"10.0.0.{n}:1530" for n in range(1, MAX_REPLICAS + 5)]
        self.assertEqual(replica_addresses(many), tuple(many[:MAX_REPLICAS]))

    def test_equal_lists_share_one_tuple(self):
        self.assertIs(replica_addresses([P, S1]), replica_addresses([P, S1]))

    def test_answers_carry_them(self):
        identity = Identity.generate()
        attached = decode_attached(wire.encode_json(wire.ATTACHED, {
            "envoy_id": "e1", "interval": 15, "last_seq": 0, "replicas": [P, S1]}), "e1")
        self.assertEqual(attached.replicas, (P, S1))
        attached = decode_attached(wire.encode_json(wire.ATTACHED, {
            "envoy_id": "e1", "interval": 15, "last_seq": 0, "replicas": "bad"}), "e1")
        self.assertIsNone(attached.replicas)
        fields = {"envoy_id": "e1", "server_id": identity.id,
                  "public_key": wire.b64(identity.public_key),
                  "fingerprint": identity.fingerprint, "address": P, "interval": 15}
        self.assertIsNone(decode_registered(wire.encode_json(wire.REGISTERED, fields)).replicas)
        fields["replicas"] = [S1, P]
        self.assertEqual(decode_registered(wire.encode_json(wire.REGISTERED, fields)).replicas,
                         (S1, P))


class FailoverOrderTests(unittest.SynchronousTestCase):
    def test_current_first_then_the_others_primary_first(self):
        self.assertEqual(failover_order(P, (P, S1, S2)), (P, S1, S2))
        self.assertEqual(failover_order(S1, (P, S1, S2)), (S1, P, S2))
        self.assertEqual(failover_order("elsewhere:1", (P, S1)), ("elsewhere:1", P, S1))
        self.assertEqual(failover_order(P, ()), (P,))

    def test_a_pass_tries_each_once_then_fails_naming_them(self):
        passing = FailoverPass(S1, (P, S1, S2))
        self.assertEqual(passing.address, S1)
        self.assertEqual(passing.failed(ConnectionRefusedError()), P)
        self.assertEqual(passing.failed(ConnectionRefusedError()), S2)
        error = self.assertRaises(ReplicasUnreachable, passing.failed, ConnectionRefusedError())
        self.assertEqual([address for address, _ in error.failures], [S1, P, S2])
        self.assertIn(f"{S2} (Connection was refused", str(error))

    def test_without_replicas_the_error_is_its_own(self):
        error = ConnectionRefusedError("no")
        self.assertIs(self.assertRaises(ConnectionRefusedError, FailoverPass(P).failed, error),
                      error)

    def test_a_standby_naming_a_replica_that_failed_is_passed_over(self):
        passing = FailoverPass(P, (P, S1, S2))
        passing.failed(ConnectionRefusedError())
        self.assertEqual(passing.redirected(P), S2)  # S1 is a standby; P failed
        self.assertRaises(ReplicasUnreachable, passing.redirected, P)

    def test_a_standby_naming_a_live_primary_sends_the_envoy_there(self):
        passing = FailoverPass(S1, (P, S1, S2))
        self.assertEqual(passing.redirected(P), P)
        self.assertEqual(passing.failed(ConnectionRefusedError()), S2)


# -- the state directory ------------------------------------------------------------


class StateTests(TestCase):
    def setUp(self):
        self.set = FakeReplicaSet(Clock())
        self.path = self.mktemp()

    def test_round_trip(self):
        registered(self.set, EnvoyState.open(self.path, create=True), replicas=(P, S1))
        again = EnvoyState.open(self.path)
        self.assertEqual((again.server_address, again.replicas), (P, (P, S1)))
        again.record_attach(S1, (S1, P, S2))
        again = EnvoyState.open(self.path)
        self.assertEqual((again.server_address, again.replicas), (S1, (S1, P, S2)))
        with open(os.path.join(self.path, STATE_FILE)) as f:
            self.assertEqual(json.load(f)["server"]["replicas"], [S1, P, S2])

    def test_a_state_file_from_before_replicas_loads(self):
        registered(self.set, EnvoyState.open(self.path, create=True))
        file = os.path.join(self.path, STATE_FILE)
        with open(file) as f:
            data = json.load(f)
        del data["server"]["replicas"]
        with open(file, "w") as f:
            json.dump(data, f)
        again = EnvoyState.open(self.path)
        self.assertTrue(again.registered)
        self.assertEqual(again.replicas, ())

    def test_an_answer_without_replicas_keeps_the_list(self):
        state = registered(self.set, EnvoyState.open(self.path, create=True), replicas=(P, S1))
        state.record_attach(P, None)
        self.assertEqual(EnvoyState.open(self.path).replicas, (P, S1))
        state.record_attach(P, ())
        self.assertEqual(EnvoyState.open(self.path).replicas, ())

    def test_a_redirect_keeps_the_list_of_its_set_only(self):
        state = registered(self.set, EnvoyState.open(self.path, create=True), replicas=(P, S1))
        identity = self.set.identity
        state.set_server(S1, identity.fingerprint, identity.id)
        self.assertEqual(EnvoyState.open(self.path).replicas, (P, S1))
        other = Identity.generate()
        state.set_server("10.9.9.9:1530", other.fingerprint, other.id)
        self.assertEqual(EnvoyState.open(self.path).replicas, ())


# -- the envoy ---------------------------------------------------------------------


class EnvoyFailoverTests(TestCase):
    """``attach``, ``register`` and ``EnvoyRunner`` against a ``FakeReplicaSet``."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(NOW)
        self.set = FakeReplicaSet(self.clock)
        self.patch(envoy_main, "connect",
                   lambda reactor, address, fingerprint, listener=None:
                   self.set.connect(address, fingerprint, listener))
        self.path = self.mktemp()
        self.said = []

    def state(self, address=P, replicas=(P, S1, S2)):
        return registered(self.set, EnvoyState.open(self.path, create=True), address, replicas)

    def attach(self, state, advance=1.0):
        d = envoy_main.attach(self.clock, state, say=self.said.append)
        run_until(self.clock, self.clock.seconds() + advance)
        return d

    def test_the_next_replica_in_order_attaches_and_is_saved(self):
        self.set.down(P, S1)
        protocol, attached = self.successResultOf(self.attach(self.state()))
        self.assertEqual(self.set.dialled, [P, S1, S2])
        self.assertEqual(self.set.attached(), {S2: 1})
        again = EnvoyState.open(self.path)
        self.assertEqual((again.server_address, again.replicas), (S2, (P, S1, S2)))
        self.assertTrue(self.said[0].startswith(f"cannot reach {P} ("), self.said)
        self.assertEqual(self.said[-1], f"attached at replica {S2}, now the server address "
                                        f"(was {P})")
        protocol.close()

    def test_the_primary_comes_first_after_the_one_that_failed(self):
        self.set.down(S1)
        self.successResultOf(self.attach(self.state(address=S1)))
        self.assertEqual(self.set.dialled, [S1, P])
        self.assertEqual(EnvoyState.open(self.path).server_address, P)

    def test_attached_replaces_the_list(self):
        self.set.replicas = [S1, P]
        self.successResultOf(self.attach(self.state()))
        self.assertEqual(EnvoyState.open(self.path).replicas, (S1, P))
        self.set.replicas = None  # an older server: the list is kept
        self.successResultOf(self.attach(EnvoyState.open(self.path)))
        self.assertEqual(EnvoyState.open(self.path).replicas, (S1, P))

    def test_a_connection_lost_before_attached_fails_over(self):
        self.set[P].on_attach = "drop"
        self.successResultOf(self.attach(self.state()))
        self.assertEqual(self.set.dialled, [P, S1])
        self.assertIn("Connection was closed cleanly", self.said[0])

    def test_a_server_that_never_answers_fails_over_after_the_timeout(self):
        self.set[P].on_attach = "silent"
        d = self.attach(self.state())
        self.assertNoResult(d)
        run_until(self.clock, self.clock.seconds() + envoy_main.REQUEST_TIMEOUT)
        self.successResultOf(d)
        self.assertEqual(self.set.attached(), {S1: 1})

    def test_every_replica_down_fails_once_naming_each(self):
        self.set.down(P, S1, S2)
        failure = self.failureResultOf(self.attach(self.state()), ReplicasUnreachable)
        self.assertEqual([a for a, _ in failure.value.failures], [P, S1, S2])
        self.assertEqual(self.set.dialled, [P, S1, S2])
        self.assertEqual(EnvoyState.open(self.path).server_address, P)

    def test_a_standby_of_a_dead_primary_ends_the_pass(self):
        self.set.down(P)
        self.set[S1].standby_of = P
        self.set[S2].standby_of = P
        failure = self.failureResultOf(self.attach(self.state()), ReplicasUnreachable)
        self.assertEqual(self.set.dialled, [P, S1, S2])  # no round trips to P
        self.assertIn("a standby, it redirects to", str(failure.value))

    def test_a_standby_sends_the_envoy_to_its_live_primary(self):
        self.set[S1].standby_of = P
        self.successResultOf(self.attach(self.state(address=S1)))
        self.assertEqual(self.set.dialled, [S1, P])
        self.assertEqual(EnvoyState.open(self.path).server_address, P)

    def test_without_replicas_the_server_is_retried_alone(self):
        self.set.down(P)
        self.failureResultOf(self.attach(self.state(replicas=None)), ConnectionRefusedError)
        self.assertEqual(self.set.dialled, [P])

    def test_register_fails_over_after_registered(self):
        self.set[P].on_attach = "drop"  # it enrolls, then goes away
        state = EnvoyState.open(self.path, create=True)
        d = envoy_main.register(self.clock, state, HOSTNAME, FakeToken(self.set[P], P))
        run_until(self.clock, self.clock.seconds() + 1)
        protocol = self.successResultOf(d)
        self.assertEqual(EnvoyState.open(self.path).replicas, (P, S1, S2))  # from Registered
        d = envoy_main.attach(self.clock, state, protocol, say=self.said.append)
        run_until(self.clock, self.clock.seconds() + 1)
        self.successResultOf(d)[0].close()
        self.assertEqual(self.set.dialled, [P, S1])
        self.assertEqual(EnvoyState.open(self.path).server_address, S1)

    def test_run_once_fails_over(self):
        self.state()
        self.set.down(P)
        out = io.StringIO()
        args = argparse.Namespace(state_dir=self.path, once=True)
        d = envoy_main.run_command(self.clock, args, out)
        run_until(self.clock, self.clock.seconds() + 1)
        self.successResultOf(d)
        lines = out.getvalue().splitlines()
        self.assertTrue(lines[0].startswith(f"cannot reach {P} ("), lines)
        self.assertEqual(lines[1], f"attached at replica {S1}, now the server address (was {P})")
        self.assertTrue(lines[2].startswith(f"bundle {self.set[S1].version.hex()} applied"))
        self.assertEqual(len(self.set[S1].checkins), 1)
        self.assertEqual(EnvoyState.open(self.path).server_address, S1)

    def test_run_once_tries_each_replica_once_before_failing(self):
        self.state()
        self.set.down(P, S1, S2)
        runner = envoy_main.EnvoyRunner(self.clock, EnvoyState.open(self.path), io.StringIO())
        d = runner.once()
        run_until(self.clock, self.clock.seconds() + 1)
        self.failureResultOf(d, ReplicasUnreachable)
        self.assertEqual(self.set.dialled, [P, S1, S2])

    def test_run_fails_over_when_the_primary_dies_and_a_standby_is_promoted(self):
        attempts = []
        self.patch(envoy_main, "reconnect_delay",
                   lambda attempt, random: attempts.append(attempt) or 1.0)
        self.set = FakeReplicaSet(self.clock, (P, S1))
        self.set[S1].standby_of = P
        out = io.StringIO()
        runner = envoy_main.EnvoyRunner(self.clock, self.state(replicas=(P, S1)), out,
                                        random.Random(3))
        runner.run()
        run_until(self.clock, self.clock.seconds() + 1)
        self.assertEqual(self.set.attached(), {P: 1})
        self.set.down(P)  # the primary dies
        run_until(self.clock, self.clock.seconds() + 2.5)
        # Two passes, each P (refused) then S1 (a standby naming P): two failures.
        self.assertEqual(self.set.dialled[1:], [P, S1, P, S1])
        self.assertEqual(attempts, [0, 1, 2])
        self.set[S1].standby_of = None  # the operator promotes S1
        self.set.replicas = [S1, P]
        run_until(self.clock, self.clock.seconds() + 1)
        self.assertEqual(self.set.attached(), {S1: 1})
        self.assertEqual(len(self.set[S1].checkins), 1)
        again = EnvoyState.open(self.path)
        self.assertEqual((again.server_address, again.replicas), (S1, (S1, P)))
        self.assertIn(f"attached at replica {S1}, now the server address", out.getvalue())
        self.assertIn("cannot attach: no replica answered:", out.getvalue())
        runner.protocol.close()
        self.set.down(P, S1)
        run_until(self.clock, self.clock.seconds() + 1)


# -- the simulator ---------------------------------------------------------------


class SimulatorFailoverTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(NOW)
        self.set = FakeReplicaSet(self.clock, (P, S1))

    def enrolled(self, count):
        sim = Simulator(self.clock, None, FakeToken(self.set[P], P), count, 15.0,
                        connect=self.set.connect, random=random.Random(7))
        d = sim.start()
        run_until(self.clock, self.clock.seconds() + 1)
        self.successResultOf(d)
        self.assertEqual(self.set.attached(), {P: count})
        return sim

    def test_envoys_share_one_replica_list(self):
        sim = self.enrolled(20)
        sets = {id(envoy.target.replicas) for envoy in sim.envoys}
        self.assertEqual(len(sets), 1)
        replicas = sim.envoys[0].target.replicas
        self.assertEqual(replicas.addresses, (P, S1))
        self.assertEqual([target.address for target in replicas.targets], [P, S1])

    def test_a_dead_primary_fails_over_to_the_promoted_standby(self):
        sim = self.enrolled(20)
        self.set.down(P)
        run_until(self.clock, self.clock.seconds() + 2)
        self.assertEqual(self.set.attached(), {S1: 20})  # each at once after its backoff
        self.assertEqual((sim.attached, sim.failovers, sim.reconnects), (20, 20, 20))
        [storm] = sim.summary()["reconnect_storms"]
        self.assertEqual(storm["envoys"], 20)
        self.assertLess(storm["seconds"], 0.6)  # one backoff of attempt 0, no more

    def test_with_every_replica_down_each_pass_ends_in_a_backoff(self):
        self.set = FakeReplicaSet(self.clock, (P, S1, S2))
        sim = self.enrolled(10)
        dialled = len(self.set.dialled)
        self.set.down(P, S1, S2)
        run_until(self.clock, self.clock.seconds() + 60)
        self.assertEqual((sim.attached, sim.reconnecting), (0, 10))
        # Passes of three dials each, backing off up to 10 s between them.
        passes = (len(self.set.dialled) - dialled) / 3
        self.assertGreaterEqual(passes, 10 * 6)
        self.assertLessEqual(passes, 10 * 16)
        self.assertEqual(sim.failovers, 2 * passes)

    def test_standbys_of_a_dead_primary_until_one_is_promoted(self):
        sim = self.enrolled(20)
        self.set[S1].standby_of = P
        self.set.down(P)
        run_until(self.clock, self.clock.seconds() + 30)
        self.assertEqual((sim.attached, sim.reconnecting), (0, 20))
        summary = sim.summary()
        self.assertGreater(summary["errors"]["standby_redirect"], 20)
        self.assertGreater(summary["errors"]["connection_refused"], 20)
        self.set[S1].standby_of = None  # promoted
        self.set.replicas = [S1, P]
        promoted = self.clock.seconds()
        run_until(self.clock, promoted + 15)
        self.assertEqual(self.set.attached(), {S1: 20})
        [storm] = sim.summary()["reconnect_storms"]
        self.assertEqual(storm["envoys"], 20)
        # Promoted 30 s in: an envoy asleep then waits out at most one backoff (its
        # cap, max_backoff, is 10 s), then P refuses and S1 attaches it at once.
        self.assertLess(storm["seconds"], 30 + 10 + 0.1)
        self.assertEqual(sim.envoys[0].target.replicas.addresses, (S1, P))
        checkins = len(self.set[S1].checkins)
        run_until(self.clock, self.clock.seconds() + 15)
        self.assertGreaterEqual(len(self.set[S1].checkins) - checkins, 18)


# -- through real sockets ------------------------------------------------------


class WatchedChannels(EnvoyChannelFactory):
    """The real channel factory, counting its open connections for ``until``."""

    def __init__(self, *args, **kwargs):
        EnvoyChannelFactory.__init__(self, *args, **kwargs)
        self.open = 0
        self._listeners = []

    def on_change(self, listener):
        self._listeners.append(listener)

    def buildProtocol(self, addr):
        protocol = EnvoyChannelFactory.buildProtocol(self, addr)
        lost = protocol.connectionLost
        self.open += 1

        def connectionLost(reason):
            lost(reason)
            self.open -= 1
            for listener in list(self._listeners):
                listener()

        protocol.connectionLost = connectionLost
        return protocol


class Runner(envoy_main.EnvoyRunner):
    """An ``EnvoyRunner`` whose ``gone`` fires once its connection has closed."""

    def __init__(self, *args):
        envoy_main.EnvoyRunner.__init__(self, *args)
        self.gone = defer.Deferred()

    def envoy_disconnected(self, protocol, reason):
        envoy_main.EnvoyRunner.envoy_disconnected(self, protocol, reason)
        if not self.gone.called:
            self.gone.callback(None)


class RealSocketTests(unittest.TestCase):
    """A real envoy port on 127.0.0.1 whose answers name two replicas: a closed
    port first, then itself."""

    timeout = 30

    def setUp(self):
        self.kit = FleetKit(self)
        closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        self.addCleanup(closed.close)
        self.closed = "127.0.0.1:%d" % (closed.getsockname()[1],)
        self.channels = WatchedChannels(self.kit.fleet, self.kit.enrollment, reactor,
                                        replicas=lambda: [self.closed, self.real])
        limits = PortLimits(handshake=5.0, first_request=5.0, idle=60.0, per_source=50,
                            connections=60)
        self.port = envoy_port(reactor, Address("127.0.0.1", 0), self.kit.identity,
                               self.channels, limits)
        self.port.startService()
        self.addCleanup(self.port.stopService)
        self.real = "127.0.0.1:%d" % (self.port.bound(),)

    def all_closed(self):
        """A Deferred that fires once the server has seen every connection go."""
        return until(lambda: self.channels.open == 0, self.channels, deadline=10,
                     what="the server to see every envoy connection close")

    @defer.inlineCallbacks
    def test_the_envoy_fails_over_to_the_live_replica_and_saves_it(self):
        path = self.mktemp()
        state = EnvoyState.open(path, create=True)
        token = yield self.kit.tokens.create()
        connections = EnvoyConnections()
        protocol = yield envoy_main.register(reactor, state, HOSTNAME, token, self.real,
                                             listener=connections)
        protocol, attached = yield envoy_main.attach(reactor, state, protocol)
        self.assertEqual(attached.replicas, (self.closed, self.real))
        closed = connections.open[protocol]
        protocol.close()
        yield closed
        yield self.all_closed()
        self.assertEqual(EnvoyState.open(path).replicas, (self.closed, self.real))
        # The envoy's server was the replica at the closed port (the set's primary, now gone).
        state.record_attach(self.closed, None)

        out = io.StringIO()
        runner = Runner(reactor, EnvoyState.open(path), out)
        result = yield runner.once()
        yield runner.gone
        yield self.all_closed()
        self.assertTrue(result.startswith("bundle "), result)
        self.assertIn(f"cannot reach {self.closed} (", out.getvalue())
        self.assertIn(f"attached at replica {self.real}, now the server address "
                      f"(was {self.closed})", out.getvalue())
        again = EnvoyState.open(path)
        self.assertEqual((again.server_address, again.replicas),
                         (self.real, (self.closed, self.real)))
        self.assertEqual(self.kit.fleet.index.get(again.envoy_id).last_seq, again.last_seq)
