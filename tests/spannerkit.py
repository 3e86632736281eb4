"""A fake bolt for the admin API and CLI tests: its federation and its envoys.

``FakeSpanner`` provides ``IFederationAdmin`` (what the spanner routes and the
page ask) and, through ``envoy_operations()``, a ``FakeEnvoys`` providing
``IEnvoyOperations`` (what the envoy routes ask), with the same sync/async
split and the same refusal codes as a real bolt's ``BoltAdmin`` and
``FederatedEnvoys`` (``vigo.spanner.admin``); ``verifyObject`` checks both.
It keeps its state in memory and records every call, so a test can see that
a refused request reached nothing.

The federation ``found()`` makes: this bolt (dc1, ``SELF_ID``), dc2
(``PEER_ID``, alive) and dc3 (``DOWN_ID``, draining, down: it never answers).
"""

import fnmatch
import hashlib
import json

from twisted.internet import defer
from zope.interface import implementer

from vigo.hostnames import HostnameError, normalise_hostname
from vigo.interfaces.components import IEnvoyOperations, IFederationAdmin
from vigo.interfaces.errors import Refusal
from vigo.spanner.routing import specificity

SELF_ID = "b" * 20
PEER_ID = "c" * 20
GOOD_TOKEN = "vgoi_good"
UNREACHABLE_TOKEN = "vgoi_unreachable"
FEDERATION_ID = "f" * 20
MUTATORS = ("init", "invite", "join", "act", "push_envoy", "push_bolt", "drain", "remove_bolt",
            "revoke", "reassign")
DOWN_ID = "d" * 20


def envoy_row(envoy_id, hostname, online=True):
    """An envoy as the ``query`` action lists it (``vigo_fleet.compact``)."""
    return {"id": envoy_id, "hostname": hostname, "state": "active", "online": online,
            "connected": online, "last_seen_age": 2.0 if online else 900.0, "checkins": 5,
            "up_to_date": True, "pending_push": False}


def described(row):
    """A listed envoy ``row`` as ``query kind=show`` describes it
    (``EnvoyRecord.describe``): the fields a list leaves out, added."""
    version = "ab" * 32
    return dict(row, enrolled_at=1_699_990_000.0,
                last_seen=1_700_000_000.0 - row["last_seen_age"], last_seq=row["checkins"],
                bundle_version=version, applied_version=version, hostcrate=None,
                redirect=None)


def not_member():
    return Refusal("not_member", "this bolt is not in a federation yet: "
                   "'vigocli spanner init' founds one")


def bolt_row(bolt_id, name, *, me=False, status="active", patterns=(), liveness="alive",
             heard=None, counters=None):
    """A bolt as ``BoltAdmin.bolts()`` describes it; ``envoys`` (the gossiped
    summary) is None, so its figures come from ``counters``."""
    return {
        "bolt_id": bolt_id, "name": name, "status": status, "patterns": list(patterns),
        "addresses": {"api": f"https://{name}.test:8443", "envoy": f"{name}.test:1530",
                      "peer": f"{name}.test:1533"},
        "seq": 1, "admitted_by": SELF_ID, "self": me,
        "liveness": {"state": "self" if me else liveness,
                     "last_heard_age": 0.0 if me else heard,
                     "evidence_age": 0.0 if me else heard},
        "counters": counters, "counters_age": None if counters is None else 1.5,
        "envoys": None,
    }


@implementer(IFederationAdmin)
class FakeSpanner:
    """An in-memory bolt: unfederated until ``init`` or ``join``."""

    def __init__(self, bolt_id=SELF_ID, name="dc1"):
        self.bolt_id = bolt_id
        self.name = name
        self.patterns = []
        self.federation_id = None
        self.founder_id = None
        self.rows = []
        self.overrides = {}  # envoy id -> bolt id
        self.invites = []
        self.calls = []
        self.envoy_rows = {
            SELF_ID: [envoy_row("e1" * 10, "web1.dc1.example.com")],
            PEER_ID: [envoy_row("e2" * 10, "web2.dc2.example.com", online=False)],
        }
        self.pushed = []
        self.peer_actions = {
            "echo": lambda args: {"args": args},
            "boom": None,  # an action that breaks
        }
        self._envoys = FakeEnvoys(self)

    # -- set-up for tests -----------------------------------------------------------

    def found(self, peers=True):
        """Make this bolt a member of a federation (with dc2 and dc3, by default)."""
        self.federation_id, self.founder_id = FEDERATION_ID, self.bolt_id
        self.rows = [bolt_row(self.bolt_id, self.name, me=True, patterns=self.patterns or
                              ["*.dc1.example.com"],
                              counters={"envoys_owned": 12, "checkins": 40})]
        if peers:
            self.rows.append(bolt_row(PEER_ID, "dc2", patterns=["*.dc2.example.com"],
                                      heard=3.2, counters={"envoys_owned": 7}))
            self.rows.append(bolt_row(DOWN_ID, "dc3", status="draining", liveness="down",
                                      heard=None))
        return self

    def envoy_operations(self):
        """The ``IEnvoyOperations`` of this bolt (one ``FakeEnvoys``, always the same)."""
        return self._envoys

    @property
    def member(self):
        return self.federation_id is not None

    def mutations(self):
        """The calls that could have changed something."""
        return [call for call in self.calls if call[0] in MUTATORS]

    def _require_member(self):
        if not self.member:
            raise not_member()

    def _row(self, bolt_id):
        return next((row for row in self.rows if row["bolt_id"] == bolt_id), None)

    # -- IFederationAdmin ---------------------------------------------------------------

    def status(self):
        self.calls.append(("status",))
        counts = {"total": len(self.rows), "active": 0, "draining": 0, "removed": 0}
        peers = {"alive": 0, "suspect": 0, "down": 0, "unknown": 0}
        for row in self.rows:
            counts[row["status"]] += 1
            if not row["self"]:
                peers[row["liveness"]["state"]] += 1
        status = {
            "mode": "spanner", "state": "member" if self.member else "unfederated",
            "bolt_id": self.bolt_id, "name": self.name,
            "federation_id": self.federation_id, "founder_id": self.founder_id,
            "digest": self.digest() if self.member else None,
            "bolts": counts, "peers": peers,
            "hint": None if self.member else "not in a federation yet: 'vigocli spanner "
                                             "init' founds one, 'vigocli spanner bolt join "
                                             "TOKEN' joins one",
        }
        if self.member:
            status["moves_pending"] = None  # no hand-over repair round yet
        return status

    def init(self, name=None, patterns=None):
        self.calls.append(("init", name, patterns))
        if self.member:
            return defer.fail(Refusal(
                "already_member", f"this bolt is already a member of {self.federation_id}"))
        if name is not None:
            self.name = name
        self.patterns = list(patterns or [])
        self.found(peers=False)
        return defer.succeed(self.status())

    def invite(self, expires_in):
        self.calls.append(("invite", expires_in))
        if not self.member:
            return defer.fail(not_member())
        token_id = f"inv{len(self.invites) + 1}"
        invite = {"token": f"vgoi_{token_id}_secret", "token_id": token_id,
                  "expires_at": 1_700_000_000.0 + expires_in, "minter_id": self.bolt_id}
        self.invites.append(invite)
        return defer.succeed(invite)

    def join(self, token_text):
        self.calls.append(("join", token_text))
        if self.member:
            return defer.fail(Refusal(
                "already_member", f"this bolt is already a member of {self.federation_id}"))
        if token_text == UNREACHABLE_TOKEN:
            return defer.fail(Refusal(
                "unreachable", "cannot reach the minter at dc1.test:1533", retryable=True))
        if token_text != GOOD_TOKEN:
            return defer.fail(Refusal("join_refused", "the minter refused: unknown invite"))
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
        if self._row(key) is not None:
            return key
        named = [row["bolt_id"] for row in self.rows if row["name"] == key]
        if len(named) == 1:
            return named[0]
        if named:
            raise Refusal("not_found", f"{len(named)} bolts are named {key!r}: use a bolt id")
        raise Refusal("not_found", f"no bolt {key!r} in the roster")

    def bolt(self, key):
        return dict(self._row(self.resolve(key)))

    def owner(self, hostname, envoy_id=None):
        """The routing rule over the fake's rows: an override, else the active
        bolt with the most specific matching pattern (``explain_owner``'s answer)."""
        self.calls.append(("owner", hostname, envoy_id))
        self._require_member()
        try:
            name = normalise_hostname(hostname)
        except HostnameError as e:
            raise Refusal("bad_request", str(e)) from None
        matches = []
        for row in self.rows:
            best = max((p for p in row["patterns"] if fnmatch.fnmatchcase(name, p)),
                       key=specificity, default=None)
            if row["status"] == "active" and best is not None:
                matches.append((-specificity(best), row["bolt_id"], best, row["name"]))
        matches.sort()
        override = self._row(self.overrides.get(envoy_id))
        if override is not None and override["status"] == "active":
            owner_id, owner_name, pattern = override["bolt_id"], override["name"], None
            by = "override"
        elif matches:
            _, owner_id, pattern, owner_name = matches[0]
            by = "pattern"
        else:
            raise Refusal("no_owner", f"no active bolt's patterns match {name!r}; a bolt "
                          "that joins with spanner.patterns covering it would own it")
        return {"hostname": name, "bolt_id": owner_id, "name": owner_name, "by": by,
                "pattern": pattern,
                "candidates": [{"bolt_id": b, "name": n, "pattern": p}
                               for _, b, p, n in matches]}

    def actions(self, key):
        self.calls.append(("actions", key))
        try:
            bolt_id = self.resolve(key)
        except Refusal:
            return defer.fail()
        names = sorted(self.peer_actions)
        return defer.succeed({"bolt_id": bolt_id, "actions": [
            {"name": name, "module": "vigo.plugins.test", "builtin": True} for name in names]})

    def act(self, bolt, action, args):
        self.calls.append(("act", bolt, action, args))
        try:
            bolt_id = self.resolve(bolt)
        except Refusal:
            return defer.fail()
        if not self._answers(bolt_id):
            return defer.fail(Refusal(
                "unreachable", f"bolt {bolt_id} did not answer in time", retryable=True))
        if action not in self.peer_actions:
            return defer.fail(Refusal(
                "unknown_action", f"bolt {bolt_id} has no action {action!r}"))
        if self.peer_actions[action] is None:
            return defer.fail(Refusal(
                "action_failed", f"action {action!r} failed on bolt {bolt_id}"))
        return defer.succeed(self.peer_actions[action](args))

    # -- the bolts that own envoys (dc3, which is down, never answers) -------------------

    def resolve_owner(self, key):
        """``resolve``, refusing a removed bolt; before this bolt is a member,
        only this bolt (``BoltAdmin.resolve_owner``)."""
        if not self.member and key in (self.bolt_id, self.name):
            return self.bolt_id
        bolt_id = self.resolve(key)
        if self._row(bolt_id)["status"] == "removed":
            raise Refusal("not_found", f"bolt {bolt_id} was removed from the federation; it "
                          "owns no envoys")
        return bolt_id

    def _asked(self):
        return [(row["bolt_id"], row["name"]) for row in self.rows
                if row["status"] != "removed"] or [(self.bolt_id, self.name)]

    def _answers(self, bolt_id):
        row = self._row(bolt_id)
        return row is None or row["liveness"]["state"] != "down"

    def _rows_of(self, bolt_id, name, offline=False):
        return [dict(e, bolt_id=bolt_id, bolt_name=name) for e in self.envoy_rows.get(bolt_id, [])
                if not offline or (e["state"] == "active" and not e["online"])]

    def _holders(self, key):
        """``(holders, silent)`` as ``FleetReads.holders``: every copy of envoy
        ``key`` on the bolts that answered, and the ids of those that did not."""
        holders, silent = [], []
        for bolt_id, name in self._asked():
            if not self._answers(bolt_id):
                silent.append(bolt_id)
                continue
            holders += [e for e in self._rows_of(bolt_id, name) if key in (e["id"],
                                                                         e["hostname"])]
        return holders, silent

    def _find(self, key):
        """The envoy's active copy, as ``FleetReads.find`` finds it."""
        holders, silent = self._holders(key)
        active = [e for e in holders if e["state"] == "active"]
        if active:
            return active[0]
        if holders and not silent:
            return min(holders, key=lambda e: e["bolt_id"])
        if silent:
            raise Refusal("unreachable", f"no {'active ' if holders else ''}envoy {key!r} on the "
                          "bolts that answered; it may be on one that did not: "
                          + "; ".join(f"{b} ({dict(self._asked())[b]}): timeout"
                                      for b in silent))
        raise Refusal("not_found", f"no envoy {key!r} on any of the {len(self._asked())} bolts")

    def bolt_envoys(self, key, offline=False):
        self.calls.append(("bolt_envoys", key, offline))
        bolt_id = self.resolve_owner(key)
        name = dict(self._asked())[bolt_id]
        if not self._answers(bolt_id):
            return defer.fail(Refusal(
                "unreachable", f"bolt {bolt_id} did not answer query in time", retryable=True))
        rows = self._rows_of(bolt_id, name, offline)
        return defer.succeed({"bolt_id": bolt_id, "name": name, "envoys": rows,
                              "count": len(rows), "truncated": False})

    def push_bolt(self, key):
        self.calls.append(("push_bolt", key))
        bolt_id = self.resolve_owner(key)
        if not self._answers(bolt_id):
            return defer.fail(Refusal(
                "unreachable", f"bolt {bolt_id} did not answer force-push in time",
                retryable=True))
        n = len(self.envoy_rows.get(bolt_id, []))
        self.pushed.append(bolt_id)
        return defer.succeed({"bolt_id": bolt_id, "name": dict(self._asked())[bolt_id],
                              "envoys": n, "now": n, "next_attach": 0})

    # -- draining and removing bolts ------------------------------------------------------

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


@implementer(IEnvoyOperations)
class FakeEnvoys:
    """The envoy routes at a ``FakeSpanner`` bolt, over its ``envoy_rows``, as
    ``vigo.spanner.admin.FederatedEnvoys`` answers them: reads and pushes at
    any bolt, a revoke of this bolt's own envoy, a reassign anywhere. Its calls
    are recorded in the spanner's ``calls``."""

    def __init__(self, spanner):
        self.spanner = spanner

    def list(self, bolt=None, offline=False, moved=False):
        spanner = self.spanner
        spanner.calls.append(("envoys", bolt, offline))
        only = None if bolt is None else spanner.resolve_owner(bolt)
        asked = [(b, n) for b, n in spanner._asked() if only is None or b == only]
        envoys, statuses = [], {}
        for bolt_id, name in asked:
            if spanner._answers(bolt_id):
                statuses[bolt_id] = "ok"
                envoys += spanner._rows_of(bolt_id, name, offline)
            else:
                statuses[bolt_id] = "timeout"
        envoys.sort(key=lambda e: (e["hostname"], e["id"]))
        return defer.succeed({"envoys": envoys, "count": len(envoys), "bolts": statuses,
                              "bolt_names": dict(asked), "truncated": []})

    def show(self, key):
        self.spanner.calls.append(("envoy", key))
        return defer.maybeDeferred(lambda: described(self.spanner._find(key)))

    def push(self, key):
        spanner = self.spanner
        spanner.calls.append(("push_envoy", key))
        try:
            envoy = spanner._find(key)
        except Refusal:
            return defer.fail()
        if envoy["state"] != "active":
            return defer.fail(Refusal("not_active", f"envoy {envoy['id']} is {envoy['state']} "
                                      f"(on bolt {envoy['bolt_id']})"))
        spanner.pushed.append(envoy["id"])
        return defer.succeed({"envoy_id": envoy["id"], "delivered": "now",
                              "bolt_id": envoy["bolt_id"], "bolt_name": envoy["bolt_name"]})

    def revoke(self, key):
        """Revoke an envoy of this bolt (``Fleet.revoke``): other bolts' are not found."""
        spanner = self.spanner
        spanner.calls.append(("revoke", key))
        rows = spanner.envoy_rows.get(spanner.bolt_id, [])
        found = [i for i, e in enumerate(rows) if e["id"] == key
                 or (e["hostname"] == key and e["state"] == "active")]
        if not found:
            return defer.fail(Refusal("not_found", f"no envoy {key!r} on this server"))
        envoy = rows[found[0]] = dict(rows[found[0]], state="revoked", online=False,
                                      connected=False)
        return defer.succeed({"envoy_id": envoy["id"], "state": "revoked"})

    def reassign(self, key, to):
        """Move envoy ``key`` to bolt ``to`` as ``reassign_anywhere`` does: the
        source keeps a moved copy, the destination holds it active."""
        spanner = self.spanner
        spanner.calls.append(("reassign", key, to))
        try:
            target = spanner.resolve(to)
            return defer.succeed(self._move(key, target))
        except Refusal:
            return defer.fail()

    def _move(self, key, target):
        spanner = self.spanner
        row = spanner._row(target)
        if row["status"] != "active":
            raise Refusal("bolt_not_active", f"bolt {target} ({row['name']}) is "
                          f"{row['status']}: only an active bolt takes envoys")
        names = dict(spanner._asked())
        holders, silent = spanner._holders(key)
        active = [e for e in holders if e["state"] == "active"]
        sources = [e for e in active if e["bolt_id"] != target]
        if len(sources) > 1:
            raise Refusal("conflict", f"envoy {key!r} is active on {len(sources)} bolts")
        if not sources:
            if active:
                return {"envoy_id": active[0]["id"], "hostname": active[0]["hostname"],
                        "from": None, "from_name": None, "to": target,
                        "to_name": names.get(target), "changed": False, "delivered": None}
            if silent:
                raise Refusal("unreachable", f"envoy {key!r} is active on none of the bolts "
                              f"that answered; it may be on one that did not: "
                              + "; ".join(f"{b} ({names[b]}): timeout" for b in silent))
            if holders:
                raise Refusal("not_active", f"envoy {key!r} is active on no bolt")
            raise Refusal("not_found", f"no envoy {key!r} on any of the {len(names)} bolts")
        envoy = sources[0]
        stored = {k: v for k, v in envoy.items() if k not in ("bolt_id", "bolt_name")}
        source_rows = spanner.envoy_rows[envoy["bolt_id"]]
        source_rows[source_rows.index(stored)] = dict(stored, state="moved", online=False,
                                                      connected=False)
        spanner.envoy_rows.setdefault(target, []).append(stored)
        return {"envoy_id": envoy["id"], "hostname": envoy["hostname"],
                "from": envoy["bolt_id"], "from_name": envoy["bolt_name"], "to": target,
                "to_name": names.get(target), "changed": True,
                "delivered": "now" if envoy["connected"] else "next_attach"}
