"""The front page: the federation at a glance (a bolt's), or the server at a
glance (a standalone server's).

A bolt's is what ``vigocli spanner status`` and ``spanner bolt list`` show:
this bolt's state, the roster's digest and counts, and a row per bolt (linked
to its bolt view) with its status, liveness, when it was last heard, its
patterns and its envoy figures from gossip, greyed and aged when the bolt is
not heard as alive. Built from ``status()`` and ``bolts()`` only: it calls no
peer, so it answers when other bolts are down.
"""

from twisted.web.template import tags

from vigo.api.page.layout import DOT, Layout, age, bolt_href, table

REFRESH = 5  # seconds


def figure(bolt, field, counter=None):
    """One envoy figure of a bolt (its summary's ``field``, else its ``counter``)
    as a cell: greyed, with its age, when the bolt is not heard as alive."""
    summary = bolt.get("envoys") or {}
    value = summary.get(field)
    if value is None and counter is not None:
        value = (bolt.get("counters") or {}).get(counter)
    if value is None:
        return tags.td("-", class_="num")
    if summary.get("stale"):
        return tags.td("%s (%s ago)" % (value, age(summary.get("as_of"))), class_="num stale",
                       title="the last figure this bolt sent; it is not heard as alive")
    return tags.td(str(value), class_="num")


def _summary(status):
    counts = status.get("bolts") or {}
    peers = status.get("peers") or {}
    parts = [tags.span("state ", tags.strong(status["state"], class_=status["state"]))]
    if status.get("federation_id"):
        parts += [DOT + "federation ", tags.code(status["federation_id"]),
                  DOT + "digest ", tags.code((status.get("digest") or "")[:12])]
    parts.append(DOT + "bolts %d total, %d active, %d draining, %d removed"
                 % tuple(counts.get(k, 0) for k in ("total", "active", "draining", "removed")))
    parts.append(DOT + "peers %d alive, %d suspect, %d down, %d unknown"
                 % tuple(peers.get(k, 0) for k in ("alive", "suspect", "down", "unknown")))
    return tags.p(*parts)


def _bolt_rows(bolts):
    rows = []
    for bolt in bolts:
        liveness = bolt["liveness"]["state"]
        rows.append(tags.tr(
            tags.td(tags.a(tags.code(bolt["bolt_id"]), href=bolt_href(bolt["bolt_id"]))),
            tags.td(bolt["name"]),
            tags.td(bolt["status"], class_=bolt["status"]),
            tags.td(liveness, class_=liveness),
            tags.td(age(bolt["liveness"].get("last_heard_age")), class_="num"),
            tags.td(", ".join(bolt["patterns"])),
            figure(bolt, "owned", "envoys_owned"),
            figure(bolt, "online", "envoys_online"),
            figure(bolt, "checkin_rate")))
    return rows


def federation_page(status, bolts):
    """The page of a spanner bolt: ``status`` (``IFederationAdmin.status()``) and
    ``bolts`` (``bolts()``, empty before the bolt is a member)."""
    body = [_summary(status)]
    if status.get("hint"):
        body.append(tags.p(status["hint"]))
    if bolts:
        body.append(table(("bolt", "name", "status", "liveness", "heard", "patterns", "envoys",
                           "online", "check-ins/s"), _bolt_rows(bolts)))
    return Layout(
        "Vigo spanner: bolt %s" % (status.get("name") or status["bolt_id"],), body,
        footer="bolt %s; refreshes every %d s; the same figures as 'vigocli spanner bolt "
               "list' (envoy figures come from gossip); a bolt's id opens its view"
               % (status["bolt_id"], REFRESH),
        refresh=REFRESH)


def server_page(status, envoys):
    """The page of a standalone server: ``status`` (``NoFederation.status()``)
    and ``envoys`` (its ``IEnvoyOperations.list()`` answer)."""
    rows = envoys["envoys"]
    online = sum(1 for e in rows if e.get("online"))
    active = sum(1 for e in rows if e.get("state") == "active")
    server_id = status["bolt_id"]
    body = [
        tags.p(tags.span("mode ", tags.strong("standalone", class_="active")),
               DOT + "envoys %d total, %d active, %d online" % (len(rows), active, online)),
        table(("server", "envoys", "active", "online"), [tags.tr(
            tags.td(tags.a(tags.code(server_id), href=bolt_href(server_id))),
            tags.td(str(len(rows)), class_="num"), tags.td(str(active), class_="num"),
            tags.td(str(online), class_="num"))]),
        tags.p("This server runs standalone: it has no federation. ",
               tags.a("Its envoys", href=bolt_href(server_id)), " are one click away."),
    ]
    if status.get("hint"):
        body.append(tags.p(tags.small(status["hint"])))
    return Layout("Vigo server: %s" % (server_id,), body,
                  footer="server %s; refreshes every %d s" % (server_id, REFRESH),
                  refresh=REFRESH)
