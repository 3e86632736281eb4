"""``GET /spanner``: the federation at a glance, as one HTML page.

What ``vigocli spanner status`` and ``spanner bolt list`` show, for a browser:
this bolt's state, the roster's digest and counts, and a row per bolt with its
status, liveness, when it was last heard, its patterns and its envoy figures
from gossip. Built from ``federation_status`` and ``bolts()`` only, so it
answers when other bolts are down, and calls no peer. It refreshes itself every
``REFRESH`` seconds; there is no script.

``FederationPage`` renders it over the server's ``IFederationAdmin``;
``vigo.api.app.AdminAPI`` hands it ``GET /spanner``. A standalone server has
no federation to show and says so.

It needs an API token like every admin route. A browser cannot send a bearer
token, so this page also takes HTTP Basic credentials whose password is the
token (any user name); without them it answers 401 with a Basic challenge, and
the browser asks. Rendered with ``twisted.web.template``, which escapes every
value, so a bolt's name or pattern cannot inject markup.
"""

from twisted.web.template import Element, XMLString, flattenString, renderer, tags

from vigo.api.responses import settled

REFRESH = 5  # seconds
HTML_TYPE = b"text/html; charset=utf-8"

TEMPLATE = XMLString("""\
<html xmlns:t="http://twistedmatrix.com/ns/twisted.web.template/0.1" lang="en">
<head>
<meta charset="utf-8" />
<meta http-equiv="refresh" t:render="refresh" />
<title t:render="title" />
<style>
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; }
th, td { text-align: left; padding: 0.3em 0.8em; border-bottom: 1px solid #ddd; }
th { background: #f4f4f4; }
td.num { text-align: right; }
.alive, .self, .active { color: #176f2c; }
.suspect, .draining { color: #9a6700; }
.down, .removed, .unknown { color: #b42318; }
td.stale { color: #8a8a8a; font-style: italic; }
code { font-size: 0.95em; }
</style>
</head>
<body>
<h1 t:render="title" />
<p t:render="summary" />
<p t:render="hint" />
<table t:render="bolts" />
<p><small t:render="footer" /></p>
</body>
</html>
""")


def _age(seconds):
    if seconds is None:
        return "-"
    return "%ds" % (seconds,) if seconds < 120 else "%dm" % (seconds // 60,)


def _figure(bolt, field, counter=None):
    """One envoy figure of a bolt (its summary's ``field``, else its ``counter``)
    as a cell: greyed, with its age, when the bolt is not heard as alive."""
    summary = bolt.get("envoys") or {}
    value = summary.get(field)
    if value is None and counter is not None:
        value = (bolt.get("counters") or {}).get(counter)
    if value is None:
        return tags.td("-", class_="num")
    if summary.get("stale"):
        return tags.td("%s (%s ago)" % (value, _age(summary.get("as_of"))), class_="num stale",
                       title="the last figure this bolt sent; it is not heard as alive")
    return tags.td(str(value), class_="num")


class SpannerPage(Element):
    """The page for ``status`` (``federation_status``) and ``bolts`` (``bolts()``,
    empty before the bolt is a member)."""

    loader = TEMPLATE

    def __init__(self, status, bolts):
        super().__init__()
        self._status = status
        self._bolts = bolts

    @renderer
    def refresh(self, request, tag):
        return tag(content=str(REFRESH))

    @renderer
    def title(self, request, tag):
        return tag("Vigo spanner: bolt %s" % (self._status.get("name") or self._status["bolt_id"],))

    @renderer
    def summary(self, request, tag):
        s = self._status
        counts = s.get("bolts") or {}
        peers = s.get("peers") or {}
        parts = [tags.span("state ", tags.strong(s["state"], class_=s["state"]))]
        if s.get("federation_id"):
            parts += [" \N{MIDDLE DOT} federation ", tags.code(s["federation_id"]),
                      " \N{MIDDLE DOT} digest ", tags.code((s.get("digest") or "")[:12])]
        parts.append(" \N{MIDDLE DOT} bolts %d total, %d active, %d draining, %d removed"
                     % tuple(counts.get(k, 0) for k in ("total", "active", "draining",
                                                        "removed")))
        parts.append(" \N{MIDDLE DOT} peers %d alive, %d suspect, %d down, %d unknown"
                     % tuple(peers.get(k, 0) for k in ("alive", "suspect", "down", "unknown")))
        return tag(*parts)

    @renderer
    def hint(self, request, tag):
        return tag(self._status["hint"]) if self._status.get("hint") else ""

    @renderer
    def bolts(self, request, tag):
        if not self._bolts:
            return ""
        head = tags.tr(*[tags.th(h) for h in (
            "bolt", "name", "status", "liveness", "heard", "patterns", "envoys", "online",
            "check-ins/s")])
        rows = [head]
        for bolt in self._bolts:
            liveness = bolt["liveness"]["state"]
            rows.append(tags.tr(
                tags.td(tags.code(bolt["bolt_id"])), tags.td(bolt["name"]),
                tags.td(bolt["status"], class_=bolt["status"]),
                tags.td(liveness, class_=liveness),
                tags.td(_age(bolt["liveness"].get("last_heard_age")), class_="num"),
                tags.td(", ".join(bolt["patterns"])),
                _figure(bolt, "owned", "envoys_owned"),
                _figure(bolt, "online", "envoys_online"),
                _figure(bolt, "checkin_rate")))
        return tag(*rows)

    @renderer
    def footer(self, request, tag):
        return tag("bolt %s; refreshes every %d s; the same figures as 'vigocli spanner "
                   "bolt list' (envoy figures come from gossip)"
                   % (self._status["bolt_id"], REFRESH))


def render_page(status, bolts):
    """A Deferred of the page as UTF-8 bytes."""
    return flattenString(None, SpannerPage(status, bolts)).addCallback(
        lambda body: b"<!DOCTYPE html>\n" + body)


def _text(request, code, text):
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    return text.encode("utf-8") + b"\n"


class FederationPage:
    """``GET /spanner`` over ``federation`` (an ``IFederationAdmin``);
    ``tokens`` (``ApiTokens``) says who may look."""

    def __init__(self, federation, tokens):
        self.federation = federation
        self.tokens = tokens

    async def render(self, request):
        """The federation at a glance (HTML); a token as bearer or as Basic password."""
        if not self.tokens.check_browser(request.getHeader(b"authorization")):
            request.setHeader(b"www-authenticate", b'Basic realm="vigo", charset="UTF-8"')
            return _text(request, 401, "this page needs an API token: give it as the password "
                         "(any user name), or as 'Authorization: Bearer <token>'; the local "
                         "admin token is in <data_dir>/admin-token")
        status = await settled(self.federation.status())
        if status["state"] == "standalone":
            return _text(request, 404, "this server runs standalone: it has no federation to "
                         "show; start it with --mode=spanner")
        bolts = []
        if status["state"] != "unfederated":
            bolts = list(await settled(self.federation.bolts()))
        body = await render_page(status, bolts)
        request.setHeader(b"content-type", HTML_TYPE)
        request.setHeader(b"cache-control", b"no-store")
        return body
