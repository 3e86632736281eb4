"""Envoy reads and force-pushes at any bolt: a fan-out of peer actions.

Every bolt owns its own envoys, so ``envoys list`` asked at any bolt calls the
``query`` action on every bolt (itself in-process) in parallel, each bounded by
a timeout, and merges the answers. A bolt that did not answer is listed with
what went wrong, never silently left out. ``envoys show`` asks every bolt for
the envoy and takes the first that has it; ``envoys push`` finds the owner the
same way and calls its ``force-push``. Counts come from the observability
cache instead (``vigo.spanner.status``), with no peer call at all.
"""

from twisted.internet import defer
from twisted.logger import Logger

from vigo.fleet.index import MOVED
from vigo.interfaces.errors import PeerUnreachable, Refusal
from vigo.spanner.peer.asking import action_refusal

#: Seconds a bolt has to answer a fan-out (all the pages of a list).
FANOUT_TIMEOUT = 5.0
#: Envoys listed per bolt per request, at most; more are reported as truncated.
MAX_PER_BOLT = 5000
OK = "ok"
TIMEOUT = "timeout"


def answer_status(failure):
    """Why a bolt did not answer, in a word or a line: ``timeout``,
    ``unreachable: ...`` or ``failed: ...``."""
    if failure.check(defer.TimeoutError, defer.CancelledError):
        return TIMEOUT
    if failure.check(PeerUnreachable):
        return "unreachable: " + failure.getErrorMessage()
    return "failed: %s: %s" % (failure.type.__name__, failure.getErrorMessage())


class BadAnswer(Exception):
    """A bolt answered, but not with what the action promises."""


def _page(answer):
    if (not isinstance(answer, dict) or not isinstance(answer.get("envoys"), list)
            or not all(isinstance(row, dict) for row in answer["envoys"])):
        raise BadAnswer("query did not answer with a page of envoys")
    return answer


class FleetReads:
    """Fan-out reads and pushes over ``bolt`` (an ``IBolt``; its ``call``).

    ``bolts()`` gives the ``(bolt_id, name)`` of every bolt to ask: the
    roster's members that are not removed (draining ones still own envoys).
    ``clock`` is the ``IReactorTime`` the timeouts run on.
    """

    log = Logger()

    def __init__(self, bolt, clock, bolts, timeout=FANOUT_TIMEOUT, max_per_bolt=MAX_PER_BOLT):
        self.bolt = bolt
        self.clock = clock
        self.bolts = bolts
        self.timeout = timeout
        self.max_per_bolt = max_per_bolt

    def _bounded(self, d):
        return d.addTimeout(self.timeout, self.clock)

    # -- one bolt -------------------------------------------------------------------

    def list_one(self, bolt_id, offline=False):
        """A Deferred of ``(rows, truncated)``: every page of one bolt's envoys, up
        to ``max_per_bolt``, all within the timeout."""

        async def pages():
            rows, after = [], None
            while True:
                args = {"kind": "list", "offline": bool(offline),
                        "limit": self.max_per_bolt - len(rows)}
                if after is not None:
                    args["after"] = after
                page = _page(await self.bolt.call(bolt_id, "query", args))
                rows.extend(page["envoys"])
                if not page.get("truncated"):
                    return rows, False
                after = page.get("next")
                if len(rows) >= self.max_per_bolt or not isinstance(after, str):
                    return rows, True

        return self._bounded(defer.ensureDeferred(pages()))

    def bolt_envoys(self, bolt_id, name, offline=False):
        """One bolt's envoys; a refusal (503 and so on) when it does not answer."""
        d = self.list_one(bolt_id, offline)

        def listed(result):
            rows, truncated = result
            for row in rows:
                row["bolt_id"], row["bolt_name"] = bolt_id, name
            return {"bolt_id": bolt_id, "name": name, "envoys": rows, "count": len(rows),
                    "truncated": truncated}

        return d.addCallbacks(listed, action_refusal, errbackArgs=(bolt_id, "query"))

    def push_bolt(self, bolt_id):
        """Force-push every active envoy of one bolt."""
        d = self._bounded(self.bolt.call(bolt_id, "force-push", {"all": True}))
        return d.addErrback(action_refusal, bolt_id, "force-push")

    # -- every bolt -----------------------------------------------------------------

    def list_all(self, offline=False, only=None, moved=False):
        """Every bolt's envoys, merged by hostname; ``only`` asks just that bolt id.
        An envoy handed to another bolt is listed once, where it is now: the
        copy its old bolt keeps (state ``moved``) only with ``moved``.

        A Deferred of ``{"envoys", "count", "bolts": {id: "ok" | "timeout" |
        "unreachable: ..." | "failed: ..."}, "bolt_names": {id: name},
        "truncated": [ids]}``; never fails because a bolt did not answer.
        """
        asked = [(b, n) for b, n in self.bolts() if only is None or b == only]
        names = dict(asked)
        statuses, truncated, envoys = {}, [], []

        def answered(result, bolt_id):
            rows, cut = result
            if not moved:
                rows = [row for row in rows if row.get("state") != MOVED]
            for row in rows:
                row["bolt_id"], row["bolt_name"] = bolt_id, names[bolt_id]
            envoys.extend(rows)
            statuses[bolt_id] = OK
            if cut:
                truncated.append(bolt_id)

        def failed(failure, bolt_id):
            statuses[bolt_id] = answer_status(failure)
            self.log.info("envoys list: bolt {bolt} did not answer: {why}",
                          bolt=bolt_id, why=statuses[bolt_id])

        calls = []
        for bolt_id, _ in asked:
            d = self.list_one(bolt_id, offline)
            d.addCallbacks(answered, failed, callbackArgs=(bolt_id,), errbackArgs=(bolt_id,))
            calls.append(d)

        def merged(_):
            envoys.sort(key=lambda row: (str(row.get("hostname")), str(row.get("id"))))
            return {"envoys": envoys, "count": len(envoys), "bolts": statuses,
                    "bolt_names": names, "truncated": sorted(truncated)}

        return defer.gatherResults(calls).addCallback(merged)

    def find(self, key):
        """The bolt that holds envoy ``key`` active (the first to say so), else,
        once every bolt answered, one that holds it in another state (moved,
        revoked): a Deferred of ``(bolt_id, name, description)``. Refused
        ``not_found`` (404) when every bolt answered without it, ``unreachable``
        (503, naming them) when some did not answer."""
        asked = list(self.bolts())
        found = defer.Deferred()
        statuses, others = {}, []

        def answered(answer, bolt_id, name):
            statuses[bolt_id] = OK
            envoy = answer.get("envoy") if isinstance(answer, dict) else None
            if isinstance(envoy, dict) and not found.called:
                if envoy.get("state") == "active":
                    found.callback((bolt_id, name, envoy))
                else:  # the copy a bolt keeps after a move, say: the owner may answer yet
                    others.append((bolt_id, name, envoy))

        def failed(failure, bolt_id):
            statuses[bolt_id] = answer_status(failure)

        def everyone_answered(_):
            if found.called:
                return
            silent = sorted(b for b, status in statuses.items() if status != OK)
            if others and not silent:  # the active holder may be one that did not answer
                found.callback(min(others, key=lambda where: where[0]))
                return
            if not silent:
                found.errback(Refusal(
                    "not_found", "no envoy %r on any of the %d bolts" % (key, len(asked))))
                return
            names = dict(asked)
            found.errback(Refusal(
                "unreachable", "no %senvoy %r on the bolts that answered; it may be on "
                "one that did not: %s" % ("active " if others else "", key, "; ".join(
                    "%s (%s): %s" % (b, names[b], statuses[b]) for b in silent))))

        calls = []
        for bolt_id, name in asked:
            d = self._bounded(self.bolt.call(bolt_id, "query", {"kind": "show", "envoy": key}))
            d.addCallbacks(answered, failed, callbackArgs=(bolt_id, name), errbackArgs=(bolt_id,))
            calls.append(d)
        defer.gatherResults(calls).addCallback(everyone_answered)
        return found

    def holders(self, key):
        """Every bolt that has envoy ``key`` (in any state): a Deferred of
        ``(holders, silent)``, ``holders`` a list of ``(bolt_id, name,
        description)`` and ``silent`` the bolts that did not answer, as
        ``"id (name): why"`` lines. Reassignment needs them all: after a move
        the source keeps the envoy, marked moved."""
        asked = list(self.bolts())
        found, statuses = [], {}

        def answered(answer, bolt_id, name):
            statuses[bolt_id] = OK
            envoy = answer.get("envoy") if isinstance(answer, dict) else None
            if isinstance(envoy, dict):
                found.append((bolt_id, name, envoy))

        def failed(failure, bolt_id):
            statuses[bolt_id] = answer_status(failure)

        def everyone_answered(_):
            names = dict(asked)
            silent = ["%s (%s): %s" % (b, names[b], statuses[b])
                      for b in sorted(statuses) if statuses[b] != OK]
            return sorted(found), silent

        calls = []
        for bolt_id, name in asked:
            d = self._bounded(self.bolt.call(bolt_id, "query", {"kind": "show", "envoy": key}))
            d.addCallbacks(answered, failed, callbackArgs=(bolt_id, name), errbackArgs=(bolt_id,))
            calls.append(d)
        return defer.gatherResults(calls).addCallback(everyone_answered)

    def show(self, key):
        """One envoy, wherever it is: its description with ``bolt_id`` and ``bolt_name``."""

        def shown(where):
            bolt_id, name, envoy = where
            return dict(envoy, bolt_id=bolt_id, bolt_name=name)

        return self.find(key).addCallback(shown)

    def push(self, key):
        """Force-push one envoy, wherever it is: found as ``show`` finds it, then
        pushed by its owner. Refused ``not_found`` (404) or ``not_active`` (409)."""

        def pushing(where):
            bolt_id, name, envoy = where
            d = self._bounded(self.bolt.call(bolt_id, "force-push", {"envoy": envoy["id"]}))
            d.addErrback(action_refusal, bolt_id, "force-push")
            return d.addCallback(pushed, bolt_id, name, envoy)

        def pushed(answer, bolt_id, name, envoy):
            refused = answer.get("refused")
            if refused is not None:
                raise Refusal(refused, "%s (on bolt %s)" % (answer.get("detail"), bolt_id))
            return {"envoy_id": envoy["id"], "delivered": answer.get("delivered"),
                    "bolt_id": bolt_id, "bolt_name": name}

        return self.find(key).addCallback(pushing)
