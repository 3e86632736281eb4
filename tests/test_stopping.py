"""Asked while the server stops: "try again", never a traceback.

A job asked of a closed store (the server is stopping) fails with
``StoreClosed``. That is expected at shutdown, so each boundary answers with a
retryable refusal and logs nothing as a failure: a peer action becomes
``BoltStopping`` (which enrollment routing treats as an unreachable owner), the
admin API a 503 ``stopping``, a check-in a retryable ``unavailable``.
"""

import attr
from klein import Klein
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.trial import unittest

from tests.fleetkit import EnvoyKey, decode_frame
from tests.peerkit import StubBolt
from vigo.api.responses import json_errors
from vigo.fleet import wire
from vigo.fleet.fleet import Fleet
from vigo.fleet.hostcrates import Hostcrates
from vigo.fleet.index import EnvoyRecord
from vigo.identity import Identity
from vigo.interfaces.errors import BoltStopping, Refusal, from_wire, to_wire
from vigo.spanner.enrollment_routing import EnrollmentRouter
from vigo.spanner.peer.actions import run_checked_action
from vigo.store import StoreClosed
from vigo.testing.store import ImmediateStore


@attr.s
class StoppedAction:
    name = attr.ib(default="stopped")
    argument_schema = attr.ib(factory=dict)

    def run(self, bolt, caller_id, args):
        return defer.fail(StoreClosed("the store is closed (the server is stopping)"))


class PeerActionTests(unittest.SynchronousTestCase):
    def test_an_action_on_a_stopping_bolt_is_bolt_stopping(self):
        d = run_checked_action(StubBolt(), {"stopped": StoppedAction()}, "c" * 20, "stopped", {})
        error = self.failureResultOf(d, BoltStopping).value
        self.assertEqual((error.code, error.retryable), ("stopping", True))
        self.assertEqual(self.flushLoggedErrors(), [])
        again = from_wire(to_wire(error))
        self.assertEqual((type(again), again.code, again.retryable),
                         (BoltStopping, "stopping", True))

    def test_routing_to_a_stopping_owner_is_an_unreachable_owner(self):
        class Peers:
            def call(self, bolt_id, action, args):
                return defer.fail(BoltStopping("bolt b is stopping"))

        router = EnrollmentRouter(Peers(), lambda bolt_id: True)
        refusal = self.failureResultOf(router.route("b" * 20, {}), Refusal).value
        self.assertEqual((refusal.code, refusal.retryable), ("owner_unreachable", True))


class ApiTests(unittest.TestCase):
    def test_a_request_while_stopping_is_a_503(self):
        class Stopped:
            app = json_errors(Klein())

            @app.route("/x")
            def x(self, request):
                raise StoreClosed("the store is closed")

        stub = StubTreq(Stopped().app.resource())
        response = self.successResultOf(stub.get("http://vigo.test/x"))
        self.assertEqual(response.code, 503)
        body = self.successResultOf(response.json())
        self.assertEqual(body["error"], "stopping")
        self.assertEqual(self.flushLoggedErrors(), [])


class CheckinTests(unittest.SynchronousTestCase):
    def test_a_check_in_whose_reservation_meets_a_closed_store(self):
        store = ImmediateStore()
        run = store.run
        store.run = lambda job, *args: defer.fail(StoreClosed("closed")) if args else run(job)
        fleet = Fleet(store, Identity.generate(), Hostcrates(), _Clock(), 15.0, 3)
        key = EnvoyKey()
        record = EnvoyRecord(key.id, key.hostname, key.public_key,
                             fleet.hostcrates.bundle_for(key.hostname))
        fleet.index.add(record)
        answer = self.successResultOf(fleet.checkin(record, key.checkin_body(1_790_000_000_000,
                                                                             seq=5)))
        kind, fields = decode_frame(answer)
        self.assertEqual((kind, fields["code"], fields["retryable"]),
                         (wire.REFUSED, "unavailable", True))
        self.assertEqual(self.flushLoggedErrors(), [])


class _Clock:
    def seconds(self):
        return 1_790_000_000.0
