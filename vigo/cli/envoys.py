"""``vigocli envoys list|show|push|revoke``: the enrolled envoys.

Its printers are reused by the spanner commands that answer about envoys:
``spanner bolt envoys`` (``envoy_table``, whose spanner answer names each
envoy's bolt and the bolts that did not answer) and ``spanner bolt reassign``
(``envoy_reassigned``).
"""

from urllib.parse import urlencode

from vigo.cli.command import Command, envoy_path
from vigo.cli.format import bolt_label, fields, format_age, format_time, table, yes_no


def _envoys_query(options):
    query = {}
    if options.bolt:
        query["bolt"] = options.bolt
    if options.offline:
        query["offline"] = "1"
    if options.all:
        query["moved"] = "1"
    return "/api/v1/envoys" + ("?" + urlencode(query) if query else "")


def envoy_table(answer, out, err):
    """``vigocli envoys list`` and ``spanner bolt envoys``.

    A spanner bolt's answer names each envoy's bolt (a BOLT column) and the
    bolts that did not answer, which are noted on ``err``.
    """
    envoys = answer.get("envoys", [])
    spanner = "bolts" in answer or any("bolt_id" in e for e in envoys)
    if not envoys:
        print("no envoys", file=out)
    else:
        rows = [[e["id"], e["hostname"], e["state"], yes_no(e["online"]),
                 format_age(e.get("last_seen_age"))] for e in envoys]
        headers = ["ID", "HOSTNAME", "STATE", "ONLINE", "LAST-SEEN-AGO"]
        if spanner:
            rows = [row + [e.get("bolt_name") or e.get("bolt_id") or "-"]
                    for row, e in zip(rows, envoys, strict=True)]
            headers.append("BOLT")
        table(rows, headers, out)
    _unanswered(answer, err)


def _unanswered(answer, err):
    """The footer of a fan-out: bolts that did not answer, or listed only in part."""
    names = answer.get("bolt_names")
    silent = {b: s for b, s in (answer.get("bolts") or {}).items() if s != "ok"}
    if silent:
        print(f"{len(silent)} bolt(s) did not answer; their envoys are not listed:", file=err)
        for bolt_id, why in sorted(silent.items()):
            print(f"  {bolt_label(bolt_id, names)}: {why}", file=err)
    truncated = answer.get("truncated")
    if truncated is True:
        truncated = [answer.get("bolt_id")]
    for bolt_id in truncated or ():
        print(f"bolt {bolt_label(bolt_id, names)} has more envoys than one answer lists; "
              "use --json or the API to see a bolt's count", file=err)


def envoy_details(answer, out, err):
    """``vigocli envoys show``."""
    redirect = answer.get("redirect")
    seen = answer.get("last_seen") is not None
    bolt_id = answer.get("bolt_id")
    bolt = [("bolt", bolt_label(bolt_id, {bolt_id: answer.get("bolt_name")}))] if bolt_id else []
    fields([
        ("id", answer["id"]),
        ("hostname", answer["hostname"]),
        ("state", answer["state"]),
        ("online", yes_no(answer.get("online"))),
        ("connected", yes_no(answer.get("connected"))),
        ("enrolled", format_time(answer.get("enrolled_at"))),
        ("last seen", f"{format_age(answer.get('last_seen_age'))} ago" if seen else "never"),
        ("check-ins", answer.get("checkins")),
        ("hostcrate", answer.get("hostcrate") or "-"),
        ("bundle", (answer.get("bundle_version") or "")[:16]),
        ("applied", (answer.get("applied_version") or "")[:16]),
        ("up to date", yes_no(answer.get("up_to_date"))),
        ("pending push", yes_no(answer.get("pending_push"))),
        ("redirect", "-" if not redirect else redirect.get("address", redirect)),
    ] + bolt, out)


def envoy_pushed(answer, out, err):
    """``vigocli envoys push``."""
    envoy = answer["envoy_id"]
    if answer.get("delivered") == "now":
        print(f"force-push sent to envoy {envoy}", file=out)
    else:
        print(f"force-push queued for envoy {envoy}: it is not connected, so it gets its "
              "bundle when it next attaches", file=out)


def envoy_revoked(answer, out, err):
    """``vigocli envoys revoke``."""
    print(f"envoy {answer['envoy_id']} {answer.get('state', 'revoked')}", file=out)


def envoy_reassigned(answer, out, err):
    """``vigocli spanner bolt reassign``."""
    envoy = answer.get("envoy_id")
    hostname = answer.get("hostname")
    label = f"{envoy} ({hostname})" if hostname else envoy
    to = bolt_label(answer.get("to"), {answer.get("to"): answer.get("to_name")})
    if not answer.get("changed"):
        print(f"envoy {label} is already on bolt {to}: nothing to do", file=out)
        return
    source = bolt_label(answer.get("from"), {answer.get("from"): answer.get("from_name")})
    print(f"envoy {label} moved from bolt {source} to bolt {to}", file=out)
    if answer.get("delivered") == "now":
        print("it was connected and was sent to its new bolt now", file=out)
    else:
        print("it is not connected: it is sent to its new bolt when it next attaches", file=out)


COMMANDS = {
    "envoys list": Command("GET", _envoys_query, envoy_table),
    "envoys show": Command("GET", envoy_path(), envoy_details),
    "envoys push": Command("POST", envoy_path("/push"), envoy_pushed, body=lambda o: {}),
    "envoys revoke": Command("DELETE", envoy_path(), envoy_revoked),
}
