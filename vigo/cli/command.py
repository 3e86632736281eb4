"""One ``vigocli`` command, and the API paths several command groups share.

``Command`` is a row of the ``vigo.cli.commands.COMMANDS`` table: an HTTP
method, a path built from the parsed arguments, an optional JSON body, and a
printer for people. It lives here, apart from the table, so that the command
group modules (``vigo.cli.server``, ``tokens``, ``envoys``, ``spanner``,
``drain``) can build their rows without importing the table that imports them.
"""

from urllib.parse import quote

import attr


@attr.s(frozen=True)
class Command:
    """One command: how to ask the server, and how to show its answer."""

    method = attr.ib()
    path = attr.ib()  # options -> "/api/v1/..." (query string included)
    printer = attr.ib()  # (answer, out, err) -> None
    body = attr.ib(default=None)  # options -> dict, or None for no body
    #: (reactor, ask, options, err) -> (status, answer): several requests in one
    #: command (``vigo.cli.drain``); ``ask(method, path, body)`` is one of them.
    flow = attr.ib(default=None)
    failed = attr.ib(default=None)  # answer -> True when a 2xx answer still exits 1
    #: (options, out, err) -> exit status: a command that works on this host's
    #: files and asks no server (``vigo.cli.backup``); the rest is then unused.
    local = attr.ib(default=None)


def segment(value):
    """``value`` quoted as one path segment (a ``/`` in it is escaped too)."""
    return quote(value, safe="")


def envoy_path(suffix=""):
    """A path builder: the envoy the options name (``options.envoy``), then ``suffix``."""
    return lambda options: "/api/v1/envoys/" + segment(options.envoy) + suffix


def bolt_path(options):
    """The path of the bolt the options name (``options.bolt``)."""
    return "/api/v1/spanner/bolts/" + segment(options.bolt)
