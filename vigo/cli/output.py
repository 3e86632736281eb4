"""How ``vigocli`` shows the server's answers to people.

Each printer takes the server's JSON answer and the output streams. What a
script should capture goes to ``out``; notes for the person at the terminal
go to ``err``. ``--json`` bypasses all of this.
"""

import datetime


def format_age(seconds):
    """A short age: ``42s``, ``3m05s``, ``2h01m``, ``4d03h``; ``-`` for never."""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def format_time(timestamp):
    """A UTC ISO 8601 time to the second; ``-`` for None."""
    if timestamp is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def yes_no(value):
    """``yes`` or ``no``."""
    return "yes" if value else "no"


def table(rows, headers, out):
    """Print ``rows`` (lists of text) under ``headers`` in left-aligned columns."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    for row in [headers] + rows:
        line = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        print(line.rstrip(), file=out)


def fields(pairs, out):
    """Print ``(label, value)`` pairs as aligned ``label  value`` lines."""
    width = max(len(label) for label, _ in pairs)
    for label, value in pairs:
        print(f"{label.ljust(width)}  {value}", file=out)


def status(answer, out, err):
    """``vigocli status``."""
    envoys = answer.get("envoys", {})
    total, active, online, connected = (
        envoys.get(k, 0) for k in ("total", "active", "online", "connected"))
    checkins = ", ".join(f"{k} {v}" for k, v in sorted(answer.get("checkins", {}).items()))
    fields([
        ("server", answer.get("server_id")),
        ("hostname", answer.get("hostname")),
        ("mode", answer.get("mode")),
        ("version", answer.get("version")),
        ("uptime", format_age(answer.get("uptime"))),
        ("envoy address", answer.get("envoy_address")),
        ("check-in interval", format_age(answer.get("checkin_interval"))),
        ("envoys", f"{total} total, {active} active, {online} online, {connected} connected"),
        ("check-ins", checkins or "none yet"),
    ], out)


def token_created(answer, out, err):
    """``vigocli token create``: the token alone on ``out``, the note on ``err``."""
    print(answer["token"], file=out)
    uses = answer.get("uses", 1)
    expires = answer.get("expires_at")
    envoys = "1 envoy" if uses == 1 else f"{uses} envoys"
    lifetime = "never expires" if expires is None else f"expires at {format_time(expires)}"
    print(f"This enrollment token is shown once: keep it now. It enrolls {envoys} and "
          f"{lifetime}.", file=err)


def api_token_created(answer, out, err):
    """``vigocli api-token create``: the token alone on ``out``, the note on ``err``."""
    print(answer["token"], file=out)
    print("This API token (%s, id %s) is shown once: keep it now. Use it with --token or "
          "$VIGO_TOKEN; 'vigocli api-token withdraw %s' withdraws it."
          % (answer["name"], answer["token_id"], answer["token_id"]), file=err)


def api_token_table(answer, out, err):
    """``vigocli api-token list``."""
    rows = [[t["token_id"], t["name"], format_time(t["created_at"])]
            for t in answer.get("tokens", [])]
    table(rows, ["TOKEN", "NAME", "CREATED"], out)


def api_token_withdrawn(answer, out, err):
    """``vigocli api-token withdraw``."""
    print("API token %s withdrawn" % (answer["token_id"],), file=out)


def token_table(answer, out, err):
    """``vigocli token list``."""
    tokens = answer.get("tokens", [])
    if not tokens:
        print("no enrollment tokens", file=out)
        return
    rows = [[t["token_id"], t["state"], "%d/%d" % (t["used"], t["uses"]),
             format_time(t["created_at"]),
             "never" if t["expires_at"] is None else format_time(t["expires_at"])]
            for t in tokens]
    table(rows, ["TOKEN", "STATE", "USED", "CREATED", "EXPIRES"], out)


def token_withdrawn(answer, out, err):
    """``vigocli token withdraw``."""
    print("enrollment token %s withdrawn%s" % (
        answer["token_id"], "" if answer.get("changed") else " (it already was)"), file=out)


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


def bolt_label(bolt_id, names):
    name = (names or {}).get(bolt_id)
    return f"{bolt_id} ({name})" if name else bolt_id


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


def envoy_revoked(answer, out, err):
    """``vigocli envoys revoke``."""
    print(f"envoy {answer['envoy_id']} {answer.get('state', 'revoked')}", file=out)


# -- spanner ---------------------------------------------------------------------
