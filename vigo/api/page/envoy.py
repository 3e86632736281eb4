"""An envoy's view: everything ``IEnvoyOperations.show`` says of it (on a bolt,
asked of whichever bolt holds it), with a link to that bolt."""

from twisted.web.template import tags

from vigo.api.page.layout import ROOT, Layout, age, bolt_href, when, yes_no

# The fields shown first, in this order, with their labels; any other is shown after.
FIELDS = (
    ("hostname", "hostname"), ("id", "id"), ("state", "state"), ("online", "online"),
    ("connected", "connected"), ("last_seen", "last seen"), ("checkins", "check-ins"),
    ("last_seq", "last sequence"), ("enrolled_at", "enrolled"),
    ("up_to_date", "up to date"), ("pending_push", "push pending"),
    ("bundle_version", "bundle version"), ("applied_version", "applied version"),
    ("hostcrate", "hostcrate"), ("redirect", "moved to"),
)
TIMES = ("last_seen", "enrolled_at")
FLAGS = ("online", "connected", "up_to_date", "pending_push")
HIDDEN = ("bolt_id", "bolt_name", "last_seen_age")


def _value(field, envoy):
    value = envoy.get(field)
    if field in TIMES:
        text = when(value)
        if field == "last_seen" and envoy.get("last_seen_age") is not None:
            text += " (%s ago)" % (age(envoy["last_seen_age"]),)
        return text
    if field in FLAGS:
        return yes_no(value)
    if field == "state":
        return tags.span(str(value), class_=str(value))
    if value is None:
        return "-"
    if field in ("id", "bundle_version", "applied_version"):
        return tags.code(str(value))
    return str(value)


def envoy_page(status, envoy):
    """The view of ``envoy`` (a ``show`` answer); ``status``: this server's ``status()``."""
    standalone = status["state"] == "standalone"
    items = []
    if envoy.get("bolt_id"):
        items += [tags.dt("bolt"), tags.dd(tags.a(
            envoy.get("bolt_name") or envoy["bolt_id"], href=bolt_href(envoy["bolt_id"])))]
    known = [f for f, _ in FIELDS]
    for field, label in FIELDS + tuple((f, f.replace("_", " ")) for f in sorted(envoy)
                                       if f not in known and f not in HIDDEN):
        if field in envoy:
            items += [tags.dt(label), tags.dd(_value(field, envoy))]
    crumbs = [("server", ROOT)] if standalone else [("federation", ROOT)]
    holder = envoy.get("bolt_id") or (status["bolt_id"] if standalone else None)
    if holder:
        crumbs.append(("server" if standalone else
                       "bolt %s" % (envoy.get("bolt_name") or holder,), bolt_href(holder)))
    return Layout("Envoy %s" % (envoy.get("hostname") or envoy.get("id"),), [tags.dl(*items)],
                  crumbs=crumbs, footer="as 'vigocli envoys show' shows it")


def missing_page(status, what, reason):
    """A page saying why ``what`` cannot be shown."""
    crumbs = [("server" if status and status["state"] == "standalone" else "federation",
               ROOT)]
    return Layout(what, [tags.p(reason, class_="error")], crumbs=crumbs)
