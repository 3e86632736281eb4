"""The admin web pages: ``GET /spanner`` and the views it links to.

Server-rendered HTML for a browser, with no script and no build step:

* ``/spanner``: a bolt's federation at a glance (``federation``), or a
  standalone server's at a glance;
* ``/spanner/bolts/{bolt}``: one bolt (``bolt``): its row, patterns, drain
  progress and its envoys, with search (``q``), ``offline=1`` and paging
  (``page``) as query arguments; on a standalone server, the server itself;
* ``/spanner/envoys/{envoy}``: one envoy (``envoy``), by id or hostname.

``FederationPage`` renders them over the server's ``IFederationAdmin`` and
``IEnvoyOperations`` (``NoFederation`` and ``LocalEnvoys`` on a standalone
server); ``vigo.api.app.AdminAPI`` routes them, and redirects ``/`` here.

Every page needs an API token like every admin route. A browser cannot send a
bearer token, so these pages also take HTTP Basic credentials whose password is
the token (any user name); without them they answer 401 with a Basic challenge,
and the browser asks. Rendered with ``twisted.web.template``, which escapes
every value (``layout``).
"""

from vigo.api.page.bolt import bolt_page
from vigo.api.page.envoy import envoy_page, missing_page
from vigo.api.page.federation import REFRESH, federation_page, server_page
from vigo.api.page.layout import HTML_TYPE, ROOT, render
from vigo.api.responses import query_flag, query_value, settled, status_of
from vigo.interfaces.errors import Refusal

__all__ = ["FederationPage", "HTML_TYPE", "REFRESH", "ROOT"]


def _text(request, code, text):
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    return text.encode("utf-8") + b"\n"


async def attempt(value):
    """``value`` settled, or the reason it was refused (text)."""
    try:
        return await settled(value)
    except Refusal as e:
        return e.reason


def _page_number(request):
    try:
        return int(query_value(request, "page") or 1)
    except ValueError:
        return 1


class FederationPage:
    """The pages over ``federation`` (an ``IFederationAdmin``) and ``envoys``
    (an ``IEnvoyOperations``); ``tokens`` (``ApiTokens``) says who may look."""

    def __init__(self, federation, tokens, envoys=None):
        self.federation = federation
        self.tokens = tokens
        self.envoys = envoys

    def _refused(self, request):
        if self.tokens.check_browser(request.getHeader(b"authorization")):
            return None
        request.setHeader(b"www-authenticate", b'Basic realm="vigo", charset="UTF-8"')
        return _text(request, 401, "this page needs an API token: give it as the password "
                     "(any user name), or as 'Authorization: Bearer <token>'; the local "
                     "admin token is in <data_dir>/admin-token")

    async def _html(self, request, layout, code=200):
        body = await render(layout)
        request.setResponseCode(code)
        request.setHeader(b"content-type", HTML_TYPE)
        request.setHeader(b"cache-control", b"no-store")
        return body

    async def render(self, request):
        """The front page: the federation (or the server) at a glance."""
        refused = self._refused(request)
        if refused is not None:
            return refused
        status = await settled(self.federation.status())
        if status["state"] == "standalone":
            if self.envoys is None:
                return _text(request, 404, "this server runs standalone: it has no "
                             "federation to show; start it with --mode=spanner")
            envoys = await settled(self.envoys.list())
            return await self._html(request, server_page(status, envoys))
        bolts = []
        if status["state"] != "unfederated":
            bolts = list(await settled(self.federation.bolts()))
        return await self._html(request, federation_page(status, bolts))

    async def render_bolt(self, request, key):
        """One bolt (by id or name) and its envoys; the server itself when standalone."""
        refused = self._refused(request)
        if refused is not None:
            return refused
        q = query_value(request, "q") or ""
        offline = query_flag(request, "offline")
        number = _page_number(request)
        status = await settled(self.federation.status())
        if status["state"] == "standalone":
            if key != status["bolt_id"] or self.envoys is None:
                return await self._html(request, missing_page(
                    status, "No bolt %s" % (key,), "this standalone server is %s; it has no "
                    "federation (start it with --mode=spanner)" % (status["bolt_id"],)), 404)
            envoys = await attempt(self.envoys.list(offline=offline))
            return await self._html(request, bolt_page(status, None, envoys, None, q, offline,
                                                       number))
        try:
            bolt = await settled(self.federation.bolt(key))
        except Refusal as e:
            return await self._html(request, missing_page(status, "No bolt %s" % (key,),
                                                          e.reason), status_of(e))
        bolt_id = bolt["bolt_id"]
        envoys = await attempt(self.federation.bolt_envoys(bolt_id, offline=offline))
        drain = None
        if bolt["status"] == "draining":
            drain = await attempt(self.federation.drain_status(bolt_id))
        return await self._html(request, bolt_page(status, bolt, envoys, drain, q, offline,
                                                   number))

    async def render_envoy(self, request, key):
        """One envoy, by id or hostname (asked of whichever bolt holds it)."""
        refused = self._refused(request)
        if refused is not None:
            return refused
        status = await settled(self.federation.status())
        try:
            if self.envoys is None:
                raise Refusal("not_found", "this server cannot show envoys here")
            envoy = await settled(self.envoys.show(key))
        except Refusal as e:
            return await self._html(request, missing_page(status, "No envoy %s" % (key,),
                                                          e.reason), status_of(e))
        return await self._html(request, envoy_page(status, envoy))
