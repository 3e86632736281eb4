"""The page's shared layout: one template (title, navigation, a body built
with ``tags``), the style sheet, and the small formatters every view uses.

Everything a view shows goes through ``twisted.web.template``, which escapes
text and attribute values, so no name, pattern or hostname can inject markup.
"""

import time
from urllib.parse import quote, urlencode

from twisted.web.template import Element, XMLString, flattenString, renderer, tags

HTML_TYPE = b"text/html; charset=utf-8"
ROOT = "/spanner"
DOT = " \N{MIDDLE DOT} "

TEMPLATE = XMLString("""\
<html xmlns:t="http://twistedmatrix.com/ns/twisted.web.template/0.1" lang="en">
<head>
<meta charset="utf-8" />
<meta name="viewport" content="width=device-width, initial-scale=1" />
<link rel="icon" href="data:," />
<t:transparent t:render="refresh" />
<title t:render="title" />
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
nav { margin-bottom: 0.5em; font-size: 0.95em; }
h1 { font-size: 1.5em; overflow-wrap: anywhere; }
h2 { font-size: 1.15em; margin-top: 1.5em; }
a { color: #0b5cad; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; }
th, td { text-align: left; padding: 0.3em 0.8em; border-bottom: 1px solid #ddd; }
th { background: #f4f4f4; }
td.num { text-align: right; white-space: nowrap; }
.alive, .self, .active, .online, .done { color: #176f2c; }
.suspect, .draining, .running, .offline { color: #9a6700; }
.down, .removed, .unknown, .revoked, .failed, .error { color: #b42318; }
td.stale { color: #8a8a8a; font-style: italic; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.2em 1em; }
dt { font-weight: 600; }
dd { margin: 0; overflow-wrap: anywhere; }
form { margin: 0.8em 0; }
progress { width: 16em; }
code { font-size: 0.95em; }
</style>
</head>
<body>
<nav t:render="nav" />
<h1 t:render="title" />
<t:transparent t:render="body" />
<p><small t:render="footer" /></p>
</body>
</html>
""")


class Layout(Element):
    """A whole page: ``title`` (text), ``crumbs`` (``(text, href)`` pairs
    before it), ``body`` (tags), ``footer`` (text), and ``refresh`` (seconds, or
    None for a page that does not reload itself)."""

    loader = TEMPLATE

    def __init__(self, title, body, crumbs=(), footer="", refresh=None):
        super().__init__()
        self._title = title
        self._body = body
        self._crumbs = crumbs
        self._footer = footer
        self._refresh = refresh

    @renderer
    def refresh(self, request, tag):
        if self._refresh is None:
            return ""
        return tags.meta(**{"http-equiv": "refresh", "content": str(self._refresh)})

    @renderer
    def title(self, request, tag):
        return tag(self._title)

    @renderer
    def nav(self, request, tag):
        parts = []
        for text, href in self._crumbs:
            parts += [tags.a(text, href=href), " \N{RIGHTWARDS ARROW} "]
        return tag(*parts) if parts else ""

    @renderer
    def body(self, request, tag):
        return self._body

    @renderer
    def footer(self, request, tag):
        return tag(self._footer)


def render(layout):
    """A Deferred of ``layout`` (a ``Layout``) as UTF-8 bytes."""
    return flattenString(None, layout).addCallback(lambda body: b"<!DOCTYPE html>\n" + body)


def bolt_href(bolt_id, **query):
    return "%s/bolts/%s%s" % (ROOT, quote(bolt_id, safe=""), _query(query))


def envoy_href(key):
    return "%s/envoys/%s" % (ROOT, quote(key, safe=""))


def _query(query):
    query = {k: v for k, v in query.items() if v not in (None, "", False)}
    return "?" + urlencode(query) if query else ""


def age(seconds):
    if seconds is None:
        return "-"
    return "%ds" % (seconds,) if seconds < 120 else "%dm" % (seconds // 60,) \
        if seconds < 7200 else "%dh" % (seconds // 3600,)


def when(timestamp):
    """A UNIX time as UTC text, or ``-``."""
    if timestamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def yes_no(value):
    if value is None:
        return "-"
    return "yes" if value else "no"


def table(head, rows):
    """A table (in a box that scrolls sideways on a narrow screen)."""
    return tags.div(tags.table(tags.tr(*[tags.th(h) for h in head]), *rows), class_="scroll")


def error_body(reason):
    return tags.p(reason, class_="error")
