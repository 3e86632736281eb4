"""A fake spanner service for the admin API and CLI tests.

``FakeSpanner`` has the interface the admin API's spanner routes use
(``vigo.api.spanner``): ``status``, ``init``, ``invite``, ``join``,
``snapshot``, ``bolts``, ``bolt``, ``resolve``, ``act`` and the envoy reads
and pushes at any bolt (``envoys``, ``envoy``, ``push_envoy``,
``bolt_envoys``, ``push_bolt``), with the same
sync/async split and the same ``SpannerRefusal`` codes and statuses. It keeps
its state in memory and records every call, so a test can see that a refused
request reached nothing.
"""

import hashlib
import json

from twisted.internet import defer

from vigo.spanner.errors import SpannerRefusal

SELF_ID = "b" * 20
PEER_ID = "c" * 20
GOOD_TOKEN = "vgoi_good"
UNREACHABLE_TOKEN = "vgoi_unreachable"
FEDERATION_ID = "f" * 20
MUTATORS = ("init", "invite", "join", "act", "push_envoy", "push_bolt", "drain", "remove_bolt")
DOWN_ID = "d" * 20


def envoy_row(envoy_id, hostname, online=True):
    """An envoy as the ``query`` action lists it."""
    return {"id": envoy_id, "hostname": hostname, "state": "active", "online": online,
            "connected": online, "last_seen_age": 2.0 if online else 900.0, "checkins": 5,
            "up_to_date": True, "pending_push": False}


def not_member():
    return SpannerRefusal("not_member", "this bolt is not in a federation yet: "
                          "'vigocli spanner init' founds one")


def bolt_row(bolt_id, name, *, me=False, status="active", patterns=(), liveness="alive",
             heard=None, counters=None):
    """A bolt as ``spanner.bolts()`` describes it."""
    return {
        "bolt_id": bolt_id, "name": name, "status": status, "patterns": list(patterns),
        "addresses": {"api": f"https://{name}.test:8443", "envoy": f"{name}.test:1530",
                      "peer": f"{name}.test:1533"},
        "seq": 1, "admitted_by": SELF_ID, "self": me,
        "liveness": {"state": "self" if me else liveness,
                     "last_heard_age": 0.0 if me else heard,
                     "evidence_age": 0.0 if me else heard},
        "counters": counters, "counters_age": None if counters is None else 1.5,
    }


class FakeSpanner:
    """An in-memory spanner service: unfederated until ``init`` or ``join``."""

    def __init__(self, bolt_id=SELF_ID, name="dc1"):
        self.bolt_id = bolt_id
        self.name = name
        self.patterns = []
        self.federation_id = None
        self.founder_id = None
        self.rows = []
        self.invites = []
        self.calls = []
        self.envoy_rows = {
            SELF_ID: [envoy_row("e1" * 10, "web1.dc1.example.com")],
            PEER_ID: [envoy_row("e2" * 10, "web2.dc2.example.com", online=False)],
        }
        self.pushed = []
        self.actions = {
            "echo": lambda args: {"args": args},
            "boom": None,  # an action that breaks
        }

    # -- set-up for tests -----------------------------------------------------------

    def found(self, peers=True):
        """Make this bolt a member of a federation (with a peer, by default)."""
        self.federation_id, self.founder_id = FEDERATION_ID, self.bolt_id
        self.rows = [bolt_row(self.bolt_id, self.name, me=True, patterns=self.patterns or
                              ["*.dc1.example.com"],
                              counters={"envoys_owned": 12, "checkins": 40})]
        if peers:
            self.rows.append(bolt_row(PEER_ID, "dc2", patterns=["*.dc2.example.com"],
                                      heard=3.2, counters={"envoys_owned": 7}))
            self.rows.append(bolt_row("d" * 20, "dc3", status="draining", liveness="down",
                                      heard=None))
        return self

    @property
    def member(self):
        return self.federation_id is not None

    def mutations(self):
        """The calls that could have changed something."""
        return [call for call in self.calls if call[0] in MUTATORS]

    def _require_member(self):
        if not self.member:
            raise not_member()

    # -- the interface ------------------------------------------------------------------

    def status(self):
        self.calls.append(("status",))
        counts = {"total": len(self.rows), "active": 0, "draining": 0, "removed": 0}
        peers = {"alive": 0, "suspect": 0, "down": 0, "unknown": 0}
        for row in self.rows:
            counts[row["status"]] += 1
            if not row["self"]:
                peers[row["liveness"]["state"]] += 1
        return {
            "mode": "spanner", "state": "member" if self.member else "unfederated",
            "bolt_id": self.bolt_id, "name": self.name,
            "federation_id": self.federation_id, "founder_id": self.founder_id,
            "digest": self.digest() if self.member else None,
            "bolts": counts, "peers": peers,
            "hint": None if self.member else "not in a federation yet: 'vigocli spanner "
                                             "init' founds one, 'vigocli spanner bolt join "
                                             "TOKEN' joins one",
        }

    def init(self, name=None, patterns=None):
        self.calls.append(("init", name, patterns))
        if self.member:
            return defer.fail(SpannerRefusal(
                "already_member", f"this bolt is already a member of {self.federation_id}"))
        if name is not None:
            self.name = name
        self.patterns = list(patterns or [])
        self.found(peers=False)
        return defer.succeed(self.status())

    def invite(self, expires_in_seconds):
        self.calls.append(("invite", expires_in_seconds))
        if not self.member:
            return defer.fail(not_member())
        token_id = f"inv{len(self.invites) + 1}"
        invite = {"token": f"vgoi_{token_id}_secret", "token_id": token_id,
                  "expires_at": 1_700_000_000.0 + expires_in_seconds, "minter_id": self.bolt_id}
        self.invites.append(invite)
        return defer.succeed(invite)

    def join(self, token_text):
        self.calls.append(("join", token_text))
        if self.member:
            return defer.fail(SpannerRefusal(
                "already_member", f"this bolt is already a member of {self.federation_id}"))
        if token_text == UNREACHABLE_TOKEN:
            return defer.fail(SpannerRefusal(
                "unreachable", "cannot reach the minter at dc1.test:1533", 503))
        if token_text != GOOD_TOKEN:
            return defer.fail(SpannerRefusal("join_refused", "the minter refused: unknown invite"))
        self.found()
        return defer.succeed(self.status())

    def digest(self):
        return hashlib.sha256(self.snapshot_body()).hexdigest()

    def snapshot_body(self):
        return json.dumps({"federation_id": self.federation_id, "bolts": self.rows},
                          sort_keys=True).encode("utf-8")

    def snapshot(self):
        self.calls.append(("snapshot",))
        self._require_member()
        return self.digest(), self.snapshot_body()

    def bolts(self):
        self.calls.append(("bolts",))
        self._require_member()
        return [dict(row) for row in self.rows]

    def resolve(self, key):
        self.calls.append(("resolve", key))
        self._require_member()
        for row in self.rows:
            if row["bolt_id"] == key:
                return key
        named = [row["bolt_id"] for row in self.rows if row["name"] == key]
        if len(named) == 1:
            return named[0]
        raise SpannerRefusal("not_found", f"no bolt {key!r} in the roster", 404)

    def bolt(self, key):
        bolt_id = self.resolve(key)
        return dict(next(row for row in self.rows if row["bolt_id"] == bolt_id))

    def act(self, bolt_key, action, args):
        self.calls.append(("act", bolt_key, action, args))
        try:
            bolt_id = self.resolve(bolt_key)
        except SpannerRefusal as e:
            return defer.fail(e)
        row = next(row for row in self.rows if row["bolt_id"] == bolt_id)
        if row["liveness"]["state"] == "down":
            return defer.fail(SpannerRefusal(
                "unreachable", f"bolt {bolt_id} did not answer in time", 503))
        if action not in self.actions:
            return defer.fail(SpannerRefusal(
                "unknown_action", f"bolt {bolt_id} has no action {action!r}", 404))
        if self.actions[action] is None:
            return defer.fail(SpannerRefusal(
                "action_failed", f"action {action!r} failed on bolt {bolt_id}", 502))
        return defer.succeed(self.actions[action](args))

    # -- envoys at any bolt (dc3, which is down, never answers) ------------------------

    def _asked(self):
        return [(row["bolt_id"], row["name"]) for row in self.rows
                if row["status"] != "removed"] or [(self.bolt_id, self.name)]

    def _answers(self, bolt_id):
        row = next((row for row in self.rows if row["bolt_id"] == bolt_id), None)
        return row is None or row["liveness"]["state"] != "down"

    def _rows_of(self, bolt_id, name, offline):
        return [dict(e, bolt_id=bolt_id, bolt_name=name) for e in self.envoy_rows.get(bolt_id, [])
                if not offline or not e["online"]]

    def envoys(self, bolt=None, offline=False):
        self.calls.append(("envoys", bolt, offline))
        only = None if bolt is None else self.resolve(bolt)
        asked = [(b, n) for b, n in self._asked() if only is None or b == only]
        envoys, statuses = [], {}
        for bolt_id, name in asked:
            if self._answers(bolt_id):
                statuses[bolt_id] = "ok"
                envoys += self._rows_of(bolt_id, name, offline)
            else:
                statuses[bolt_id] = "timeout"
        envoys.sort(key=lambda e: (e["hostname"], e["id"]))
        return defer.succeed({"envoys": envoys, "count": len(envoys), "bolts": statuses,
                              "bolt_names": dict(asked), "truncated": []})

    def _find(self, key):
        silent = []
        for bolt_id, name in self._asked():
            if not self._answers(bolt_id):
                silent.append(bolt_id)
                continue
            for e in self._rows_of(bolt_id, name, False):
                if key in (e["id"], e["hostname"]):
                    return e
        if silent:
            raise SpannerRefusal("unreachable", f"no envoy {key!r} on the bolts that answered; "
                                 f"it may be on one that did not: {', '.join(silent)}", 503)
        raise SpannerRefusal("not_found", f"no envoy {key!r} on any bolt", 404)

    def envoy(self, key):
        self.calls.append(("envoy", key))
        try:
            return defer.succeed(self._find(key))
        except SpannerRefusal:
            return defer.fail()

    def push_envoy(self, key):
        self.calls.append(("push_envoy", key))
        try:
            envoy = self._find(key)
        except SpannerRefusal:
            return defer.fail()
        self.pushed.append(envoy["id"])
        return defer.succeed({"envoy_id": envoy["id"], "delivered": "now",
                              "bolt_id": envoy["bolt_id"], "bolt_name": envoy["bolt_name"]})

    def bolt_envoys(self, key, offline=False):
        self.calls.append(("bolt_envoys", key, offline))
        bolt_id = self.resolve(key)
        name = dict(self._asked())[bolt_id]
        if not self._answers(bolt_id):
            return defer.fail(SpannerRefusal(
                "unreachable", f"bolt {bolt_id} did not answer query in time", 503))
        rows = self._rows_of(bolt_id, name, offline)
        return defer.succeed({"bolt_id": bolt_id, "name": name, "envoys": rows,
                              "count": len(rows), "truncated": False})

    def push_bolt(self, key):
        self.calls.append(("push_bolt", key))
        bolt_id = self.resolve(key)
        if not self._answers(bolt_id):
            return defer.fail(SpannerRefusal(
                "unreachable", f"bolt {bolt_id} did not answer force-push in time", 503))
        n = len(self.envoy_rows.get(bolt_id, []))
        self.pushed.append(bolt_id)
        return defer.succeed({"bolt_id": bolt_id, "name": dict(self._asked())[bolt_id],
                              "envoys": n, "now": n, "next_attach": 0})


    def drain(self, key, to=None):
        self.calls.append(("drain", key, to))
        bolt_id = self.resolve(key)
        if to is not None:
            self.resolve(to)
        return defer.succeed({"bolt_id": bolt_id, "state": "running", "to": to, "total": 2,
                              "moved": 0, "failed": 0, "remaining": 2, "errors": []})

    def drain_status(self, key):
        self.calls.append(("drain_status", key))
        bolt_id = self.resolve(key)
        return defer.succeed({"bolt_id": bolt_id, "state": "done", "to": None, "total": 2,
                              "moved": 2, "failed": 0, "remaining": 0, "errors": []})

    def remove_bolt(self, key, force=False):
        self.calls.append(("remove_bolt", key, force))
        bolt_id = self.resolve(key)
        return defer.succeed({"bolt_id": bolt_id, "removed": True, "changed": True,
                              "forced": force})


#: What the admin API calls, for comparing the fake with the real service.
INTERFACE = ("status", "init", "invite", "join", "snapshot", "bolts", "bolt", "act", "resolve",
             "envoys", "envoy", "push_envoy", "bolt_envoys", "push_bolt", "drain", "drain_status",
             "remove_bolt")
