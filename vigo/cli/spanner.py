"""``vigocli spanner ...``: the spanner federation and its bolts.

``spanner status|init|owner`` and ``spanner bolt
list|show|envoys|push|invite|join|act|actions|reassign``: their requests and
how their answers are shown (the federation, its bolts, invites, peer actions
and where they came from, and hostname owners). ``spanner bolt envoys`` and ``reassign`` answer about envoys
and use the printers of ``vigo.cli.envoys``; ``spanner bolt drain`` and
``remove`` are in ``vigo.cli.drain``.
"""

import json
from urllib.parse import urlencode

from vigo.cli.command import Command, bolt_path, envoy_path, segment
from vigo.cli.envoys import envoy_reassigned, envoy_table
from vigo.cli.format import bolt_label, fields, format_age, format_time, table, yes_no

# -- the federation ----------------------------------------------------------------

DIGEST_SHOWN = 12  # hex digits of the roster digest people see


def _counts(counts, names):
    counts = counts or {}
    return ", ".join(f"{counts.get(name, 0)} {name}" for name in names)


def spanner_status(answer, out, err):
    """``vigocli spanner status``."""
    if answer.get("mode") == "standalone":
        fields([("state", "standalone"), ("bolt", answer.get("bolt_id")),
                ("hint", answer.get("hint"))], out)
        return
    name = answer.get("name")
    bolt = answer.get("bolt_id")
    federation = answer.get("federation_id") or "-"
    founder = answer.get("founder_id")
    if founder:
        federation += " (founded by this bolt)" if founder == bolt else f" (founded by {founder})"
    pairs = [
        ("state", answer.get("state")),
        ("bolt", f"{bolt} ({name})" if name else bolt),
        ("federation", federation),
        ("digest", (answer.get("digest") or "-")[:DIGEST_SHOWN]),
        ("bolts", _counts(answer.get("bolts"), ("total", "active", "draining", "removed"))),
        ("peers", _counts(answer.get("peers"), ("alive", "suspect", "down", "unknown"))),
    ]
    pending = answer.get("moves_pending") or {}
    if pending.get("count"):
        moves = pending.get("moves") or []
        pairs.append(("moves", "%d pending here (as of %s ago): %s" % (
            pending["count"], format_age(pending.get("as_of_age")),
            ", ".join("%s to %s" % (m["envoy_id"], m["to"]) for m in moves[:5])
            + (", ..." if pending["count"] > 5 else ""))))
    if answer.get("hint"):
        pairs.append(("hint", answer["hint"]))
    fields(pairs, out)


def _init_body(options):
    body = {}
    if options.name is not None:
        body["name"] = options.name
    if options.patterns is not None:
        body["patterns"] = options.patterns
    return body


def spanner_initialized(answer, out, err):
    """``vigocli spanner init``: the new federation, then the status."""
    print(f"founded federation {answer.get('federation_id')}; this server is its first "
          f"bolt, {answer.get('bolt_id')}", file=out)
    spanner_status(answer, out, err)


def _invite_body(options):
    return {} if options.expires_in is None else {"expires_in": options.expires_in}


def invite_created(answer, out, err):
    """``vigocli spanner bolt invite``: the token alone on ``out``, the note on ``err``."""
    print(answer["token"], file=out)
    print(f"This invite token is one-shot: it admits one bolt, once, and expires at "
          f"{format_time(answer.get('expires_at'))}. On the joining server run: "
          "vigocli spanner bolt join TOKEN", file=err)


def spanner_joined(answer, out, err):
    """``vigocli spanner bolt join``: the federation joined, then the status."""
    print(f"joined federation {answer.get('federation_id')} as bolt "
          f"{answer.get('bolt_id')}", file=out)
    spanner_status(answer, out, err)


def _owner_query(options):
    query = {"hostname": options.hostname}
    if options.envoy:
        query["envoy"] = options.envoy
    return "/api/v1/spanner/owner?" + urlencode(query)


def owner_explained(answer, out, err):
    """``vigocli spanner owner``: the owner of a hostname, and why."""
    if answer.get("by") == "override":
        why = "its envoy's override (a reassign or a drain gave it to this bolt)"
    else:
        why = "the most specific matching pattern, %s" % (answer.get("pattern"),)
    print("%s is owned by bolt %s (%s): %s" % (
        answer["hostname"], answer["bolt_id"], answer.get("name"), why), file=out)
    candidates = answer.get("candidates") or []
    if len(candidates) > 1 or answer.get("by") == "override":
        rows = [[c["bolt_id"], c.get("name") or "-", c["pattern"]] for c in candidates]
        if rows:
            print("matching patterns of active bolts, most specific first:", file=out)
            table(rows, ["BOLT", "NAME", "PATTERN"], out)


# -- its bolts ---------------------------------------------------------------------


def _envoys(bolt, field, counter):
    """One envoy figure of a bolt: its summary's ``field``, else its ``counter``;
    a figure a bolt not heard as alive last sent says how old it is."""
    summary = bolt.get("envoys") or {}
    value = summary.get(field)
    if value is None:
        value = (bolt.get("counters") or {}).get(counter)
    if value is None:
        return "-"
    if summary.get("stale"):
        return f"{value} ({format_age(summary.get('as_of'))} ago)"
    return str(value)


def _liveness(bolt):
    return (bolt.get("liveness") or {}).get("state") or "unknown"


def bolt_table(answer, out, err):
    """``vigocli spanner bolt list``."""
    bolts = answer.get("bolts", [])
    if not bolts:
        print("no bolts", file=out)
        return
    rows = [[b["bolt_id"], b.get("name") or "-", b.get("status") or "-", _liveness(b),
             format_age((b.get("liveness") or {}).get("last_heard_age")),
             ",".join(b.get("patterns") or []) or "-", _envoys(b, "owned", "envoys_owned"),
             _envoys(b, "online", "envoys_online")] for b in bolts]
    table(rows, ["BOLT", "NAME", "STATUS", "LIVENESS", "HEARD", "PATTERNS", "ENVOYS", "ONLINE"],
          out)


def _ago(seconds):
    return "never" if seconds is None else f"{format_age(seconds)} ago"


def bolt_details(answer, out, err):
    """``vigocli spanner bolt show``."""
    addresses = answer.get("addresses") or {}
    liveness = answer.get("liveness") or {}
    counters = answer.get("counters")
    pairs = [
        ("bolt", answer["bolt_id"]),
        ("name", answer.get("name") or "-"),
        ("status", answer.get("status")),
        ("this bolt", yes_no(answer.get("self"))),
        ("patterns", ", ".join(answer.get("patterns") or []) or "-"),
        ("api", addresses.get("api") or "-"),
        ("envoy address", addresses.get("envoy") or "-"),
        ("peer address", addresses.get("peer") or "-"),
        ("seq", answer.get("seq")),
        ("admitted by", answer.get("admitted_by") or "-"),
        ("liveness", liveness.get("state") or "unknown"),
        ("last heard", _ago(liveness.get("last_heard_age"))),
        ("evidence", _ago(liveness.get("evidence_age"))),
    ]
    summary = answer.get("envoys")
    if summary:
        rate = summary.get("checkin_rate")
        figures = f"{summary.get('owned')} owned, {summary.get('online')} online"
        if summary.get("stale"):
            figures += " (its last figures: it is not heard as alive)"
        pairs.append(("envoys", figures))
        pairs.append(("check-ins", "-" if rate is None else f"{rate:g}/s"))
        pairs.append(("envoys as of", _ago(summary.get("as_of"))))
    if counters:
        pairs.append(("counters", ", ".join(f"{k} {v}" for k, v in sorted(counters.items()))))
        pairs.append(("counters from", _ago(answer.get("counters_age"))))
    else:
        pairs.append(("counters", "-"))
    fields(pairs, out)


def bolt_pushed(answer, out, err):
    """``vigocli spanner bolt push``."""
    bolt_id = answer.get("bolt_id")
    print(f"force-push of bolt {bolt_label(bolt_id, {bolt_id: answer.get('name')})}: "
          f"{answer.get('envoys', 0)} envoys, {answer.get('now', 0)} sent now, "
          f"{answer.get('next_attach', 0)} at their next attach", file=out)


def _bolt_action(options):
    return bolt_path(options) + "/actions/" + segment(options.action_name)


def action_result(answer, out, err):
    """``vigocli spanner bolt act``: the action's result as indented JSON."""
    print(json.dumps(answer.get("result"), indent=2, sort_keys=True), file=out)


def action_origin(entry):
    """Where one loaded peer action came from, in a few words."""
    if entry.get("builtin"):
        return f"built in (vigosrv {entry.get('version') or '?'})"
    if entry.get("distribution"):
        return f"{entry['distribution']} {entry.get('version') or ''}".rstrip()
    return f"no distribution: {entry.get('path') or '?'}"


def actions_table(answer, out, err):
    """``vigocli spanner bolt actions``: the peer actions loaded on a bolt."""
    actions = answer.get("actions") or []
    bolt_id = answer.get("bolt_id")
    print(f"bolt {bolt_label(bolt_id, {bolt_id: answer.get('name')})}, "
          f"vigosrv {answer.get('vigosrv') or '?'}: {len(actions)} peer actions", file=out)
    rows = [[a.get("name") or "-", action_origin(a), a.get("module") or "-",
             " ".join(str(a.get("description") or "-").split())] for a in actions]
    if rows:
        table(rows, ["ACTION", "FROM", "MODULE", "DESCRIPTION"], out)


COMMANDS = {
    "spanner status": Command("GET", lambda options: "/api/v1/spanner/status",
                              spanner_status),
    "spanner init": Command("POST", lambda options: "/api/v1/spanner/init",
                            spanner_initialized, body=_init_body),
    "spanner owner": Command("GET", _owner_query, owner_explained),
    "spanner bolt list": Command("GET", lambda options: "/api/v1/spanner/bolts", bolt_table),
    "spanner bolt show": Command("GET", bolt_path, bolt_details),
    "spanner bolt envoys": Command("GET", lambda options: bolt_path(options) + "/envoys",
                                   envoy_table),
    "spanner bolt push": Command("POST", lambda options: bolt_path(options) + "/push",
                                 bolt_pushed, body=lambda o: {}),
    "spanner bolt invite": Command("POST", lambda options: "/api/v1/spanner/invite",
                                   invite_created, body=_invite_body),
    "spanner bolt join": Command("POST", lambda options: "/api/v1/spanner/join",
                                 spanner_joined, body=lambda o: {"token": o.token_text}),
    "spanner bolt reassign": Command("POST", envoy_path("/reassign"), envoy_reassigned,
                                     body=lambda o: {"to": o.to}),
    "spanner bolt act": Command("POST", _bolt_action, action_result,
                                body=lambda o: dict(o.args or {})),
    "spanner bolt actions": Command("GET", lambda options: bolt_path(options) + "/actions",
                                    actions_table),
}
