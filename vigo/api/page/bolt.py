"""A bolt's view: its row of the roster, its patterns and addresses, its drain
progress while it drains, and its envoys (asked of it live), with a search
(``q``: part of a hostname or id), an ``offline`` filter and pages of
``PAGE_SIZE``, all as query arguments of plain links and a plain GET form.

On a standalone server the one "bolt" is the server itself.
"""

from twisted.web.template import tags

from vigo.api.page.federation import figure
from vigo.api.page.layout import (
    DOT,
    ROOT,
    Layout,
    age,
    bolt_href,
    envoy_href,
    error_body,
    table,
    yes_no,
)

PAGE_SIZE = 50
REFRESH_DRAINING = 5  # seconds, while a drain runs


def matching(envoys, q):
    """The envoys whose hostname or id holds ``q`` (any case)."""
    q = (q or "").strip().lower()
    if not q:
        return list(envoys)
    return [e for e in envoys if q in e.get("hostname", "").lower()
            or q in e.get("id", "").lower()]


def page_of(envoys, number, size=PAGE_SIZE):
    """``(page number, pages, rows)``: page ``number`` (from 1, clamped)."""
    pages = max(1, -(-len(envoys) // size))
    number = min(max(1, number), pages)
    return number, pages, envoys[(number - 1) * size:number * size]


def _row_cells(bolt):
    liveness = bolt["liveness"]["state"]
    return tags.tr(
        tags.td(bolt["name"]), tags.td(bolt["status"], class_=bolt["status"]),
        tags.td(liveness, class_=liveness),
        tags.td(age(bolt["liveness"].get("last_heard_age")), class_="num"),
        figure(bolt, "owned", "envoys_owned"), figure(bolt, "online", "envoys_online"),
        figure(bolt, "checkin_rate"))


def _about(bolt):
    items = [tags.dt("bolt id"), tags.dd(tags.code(bolt["bolt_id"])),
             tags.dt("patterns"),
             tags.dd(*([tags.code(p), " "] for p in bolt["patterns"]) if bolt["patterns"]
                     else "none (owns only the envoys given to it)")]
    for name, address in sorted((bolt.get("addresses") or {}).items()):
        items += [tags.dt("%s address" % (name,)), tags.dd(tags.code(address))]
    return tags.dl(*items)


def _drain(drain):
    if isinstance(drain, str):
        return [tags.h2("Drain"), error_body("drain progress unknown: " + drain)]
    total, moved = drain.get("total") or 0, drain.get("moved") or 0
    parts = [tags.h2("Drain"), tags.p(
        "state ", tags.strong(drain.get("state", "-"), class_=drain.get("state", "")),
        DOT + "to %s" % (drain.get("to") or "each envoy's owner by the roster",),
        DOT + "%d of %d moved, %d failed, %d remaining" % (
            moved, total, drain.get("failed") or 0, drain.get("remaining") or 0)),
        tags.p(tags.progress(str(moved), value=str(moved), max=str(max(total, 1))))]
    if drain.get("errors"):
        parts.append(tags.ul(*[tags.li(str(e), class_="error") for e in drain["errors"]]))
    return parts


def _pager(bolt_id, q, offline, number, pages):
    links = []
    if number > 1:
        links += [tags.a("\N{LEFT-POINTING DOUBLE ANGLE QUOTATION MARK} previous",
                         href=bolt_href(bolt_id, q=q, offline=offline and "1",
                                        page=number - 1), rel="prev"), " "]
    links.append("page %d of %d" % (number, pages))
    if number < pages:
        links += [" ", tags.a("next \N{RIGHT-POINTING DOUBLE ANGLE QUOTATION MARK}",
                              href=bolt_href(bolt_id, q=q, offline=offline and "1",
                                             page=number + 1), rel="next")]
    return tags.p(*links, class_="pager")


def _envoys(bolt_id, answer, q, offline, number):
    parts = [tags.h2("Envoys"), tags.form(
        tags.label("Search ", tags.input(type="search", name="q", value=q or "",
                                         placeholder="hostname or id")),
        " ", tags.label(tags.input(type="checkbox", name="offline", value="1",
                                   **({"checked": "checked"} if offline else {})),
                        " offline only"),
        " ", tags.button("Find", type="submit"),
        method="get", action=bolt_href(bolt_id), role="search")]
    if isinstance(answer, str):
        return parts + [error_body("this bolt's envoys are unknown: " + answer)]
    found = matching(answer["envoys"], q)
    number, pages, rows = page_of(found, number)
    first = (number - 1) * PAGE_SIZE
    parts.append(tags.p("%d envoy%s%s%s" % (
        len(found), "" if len(found) == 1 else "s",
        " matching %r" % (q,) if q else "", " offline" if offline else "")
        + (", showing %d to %d" % (first + 1, first + len(rows)) if pages > 1 else "")
        + (" (the bolt listed only the first %d)" % (answer.get("count", 0),)
           if answer.get("truncated") else "")))
    if rows:
        parts.append(table(
            ("hostname", "id", "state", "online", "last seen", "check-ins", "up to date",
             "push pending"),
            [tags.tr(tags.td(tags.a(e["hostname"], href=envoy_href(e["id"]))),
                     tags.td(tags.code(e["id"])), tags.td(e["state"], class_=e["state"]),
                     tags.td(yes_no(e.get("online")),
                             class_="online" if e.get("online") else "offline"),
                     tags.td(age(e.get("last_seen_age")) + " ago"
                             if e.get("last_seen_age") is not None else "never", class_="num"),
                     tags.td(str(e.get("checkins", "-")), class_="num"),
                     tags.td(yes_no(e.get("up_to_date"))),
                     tags.td(yes_no(e.get("pending_push"))))
             for e in rows]))
    if pages > 1:
        parts.append(_pager(bolt_id, q, offline, number, pages))
    return parts


def bolt_page(status, bolt, envoys, drain=None, q="", offline=False, number=1):
    """The view of ``bolt`` (a row of ``bolts()``, or None on a standalone
    server); ``envoys``: the ``bolt_envoys`` (or ``list``) answer, or why there
    is none (text); ``drain``: the ``drain_status`` answer, text, or None when
    the bolt is not draining; ``status``: this server's ``status()``."""
    standalone = bolt is None
    bolt_id = status["bolt_id"] if standalone else bolt["bolt_id"]
    if standalone:
        title = "Vigo server: %s" % (bolt_id,)
        body = [tags.p("mode ", tags.strong("standalone", class_="active"),
                       DOT + "server id ", tags.code(bolt_id))]
        crumbs = [("server", ROOT)]
    else:
        title = "Bolt %s" % (bolt["name"],)
        body = [table(("name", "status", "liveness", "heard", "envoys", "online",
                       "check-ins/s"), [_row_cells(bolt)]), _about(bolt)]
        crumbs = [("federation", ROOT)]
    if drain is not None:
        body += _drain(drain)
    body += _envoys(bolt_id, envoys, q, offline, number)
    running = isinstance(drain, dict) and drain.get("state") == "running"
    return Layout(title, body, crumbs=crumbs,
                  footer="the envoys are asked of the bolt as the page loads; "
                         "a hostname opens the envoy's view",
                  refresh=REFRESH_DRAINING if running else None)
