"""``vigocli server ...``: this server's replica set (high availability, docs/ha.md).

``server status``, ``server standby invite|join|list|remove`` and ``server
promote``: their requests to the ``/api/v1/server/`` routes
(``vigo.api.server``) and how their answers are shown. A server without
``peers.listen`` answers ``"ha": false`` to the status and refuses the rest
(``ha_off``).
"""

from vigo.cli.command import Command, segment
from vigo.cli.format import fields, format_age, format_time, table, yes_no

HA_OFF = "high availability is off (peers.listen is not set)"


def _value(value):
    return "-" if value is None else str(value)


def _lag(seconds):
    """A replication lag: to the hundredth of a second under a minute."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2f}s"
    return format_age(seconds)


def _milliseconds(seconds):
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def _sync(sync):
    if not sync:
        return "0 (writes are acknowledged without waiting for a standby)"
    return "%d (a durable write waits for %d standby(s) to hold it)" % (sync, sync)


def standby_table(standbys, out):
    """The standbys of a replica set, one row each (``-``: not known here)."""
    if not standbys:
        print("no standbys", file=out)
        return
    rows = [[s.get("node_id") or "-",
             "-" if s.get("connected") is None else yes_no(s["connected"]),
             _value(s.get("lsn")), _lag(s.get("lag_seconds")),
             s.get("envoy_address") or "-", s.get("api_url") or "-"]
            for s in standbys]
    table(rows, ["NODE", "CONNECTED", "LSN", "LAG", "ENVOY-ADDRESS", "API"], out)


def server_status(answer, out, err):
    """``vigocli server status``."""
    if not answer.get("ha", True):
        fields([("role", answer.get("role") or "primary"),
                ("server", answer.get("server_id") or "-"),
                ("ha", HA_OFF)], out)
        return
    role = answer.get("role")
    node_id = answer.get("node_id")
    primary = answer.get("primary") or {}
    pairs = [("role", role), ("node", node_id), ("epoch", _value(answer.get("epoch"))),
             ("lsn", _value(answer.get("lsn")))]
    if role == "standby":
        pairs += [("head", _value(answer.get("head"))),
                  ("lag", _lag(answer.get("lag_seconds"))),
                  ("streaming", "-" if answer.get("streaming") is None
                   else yes_no(answer["streaming"])),
                  ("needs base copy", "-" if answer.get("needs_base_copy") is None
                   else yes_no(answer["needs_base_copy"]))]
    elif "confirmed" in answer:
        pairs.append(("confirmed", "yes" if answer["confirmed"] else
                      "not yet (its replica set has not confirmed it is still the primary)"))
        acks = answer.get("ack_seconds")
        if acks:
            pairs.append(("standby acks", "p50 %s, p99 %s after the commit (%d writes)" % (
                _milliseconds(acks.get("p50")), _milliseconds(acks.get("p99")),
                acks.get("samples") or 0)))
    pairs.append(("sync", _sync(answer.get("sync"))))
    primary_id = primary.get("node_id")
    if primary_id and primary_id == node_id:
        primary_id += " (this node)"
    pairs += [("primary", primary_id or "-"),
              ("primary api", primary.get("api_url") or "-"),
              ("primary envoy address", primary.get("envoy_address") or "-")]
    fields(pairs, out)
    if role == "fenced":
        print("this node was the primary until a newer one took over: it acknowledges "
              "nothing and rejoins as a standby of the new primary", file=out)
    print("standbys:", file=out)
    standby_table(answer.get("standbys") or [], out)


def standbys_listed(answer, out, err):
    """``vigocli server standby list``."""
    standby_table(answer.get("standbys") or [], out)


def _invite_body(options):
    return {} if options.expires_in is None else {"expires_in": options.expires_in}


def invite_created(answer, out, err):
    """``vigocli server standby invite``: the token alone on ``out``, the note on ``err``."""
    print(answer["token"], file=out)
    print(f"This standby invitation is one-shot: it pairs one fresh server with this "
          f"primary ({answer.get('primary')}), once, and expires at "
          f"{format_time(answer.get('expires_at'))}. On the fresh server run: "
          "vigocli server standby join TOKEN", file=err)


def standby_joined(answer, out, err):
    """``vigocli server standby join``."""
    print(f"this server (node {answer.get('node_id')}) is now a standby of "
          f"{answer.get('primary')}, at epoch {answer.get('epoch')}; it takes a base copy "
          "from its primary now ('vigocli server status' shows its progress)", file=out)


def standby_removed(answer, out, err):
    """``vigocli server standby remove``."""
    print(f"standby {answer.get('node_id')} removed from the replica set: it may not "
          "replicate from here on", file=out)


def promoted(answer, out, err):
    """``vigocli server promote``."""
    print(f"this server (node {answer.get('node_id')}) is now the {answer.get('role')}, at "
          f"epoch {answer.get('epoch')} (LSN {answer.get('lsn')}); the other members are "
          "told to follow it", file=out)


COMMANDS = {
    "server status": Command("GET", lambda options: "/api/v1/server/status", server_status),
    "server standby invite": Command("POST", lambda options: "/api/v1/server/standby/invite",
                                     invite_created, body=_invite_body),
    "server standby join": Command("POST", lambda options: "/api/v1/server/standby/join",
                                   standby_joined, body=lambda o: {"token": o.token_text}),
    "server standby list": Command("GET", lambda options: "/api/v1/server/standby",
                                   standbys_listed),
    "server standby remove": Command("DELETE",
                                     lambda o: "/api/v1/server/standby/" + segment(o.node_id),
                                     standby_removed),
    "server promote": Command("POST", lambda options: "/api/v1/server/promote", promoted,
                              body=lambda o: {}),
}
