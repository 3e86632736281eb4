"""The built-in fleet actions: ``query`` (read a bolt's envoys) and ``force-push``.

Any bolt answers an admin's ``envoys list``, ``envoys show`` or ``envoys
push`` by calling these on every bolt (itself included) and merging the
answers; see ``vigo.spanner.reads``. Each runs on the called bolt over
its ``IBolt.fleet()`` and reads or pushes only that bolt's own envoys.

Answers are bounded: a peer action's result is at most 256 KiB of JSON, so a
list page holds compact rows, stops at ``limit`` rows or about 192 KiB,
whichever comes first, and says ``truncated`` with the ``next`` cursor to
continue from.
"""

import json

from twisted.plugin import IPlugin
from zope.interface import implementer

from vigo.interfaces import ActionError, Boolean, Integer, IPeerAction, Optional, String

#: Rows in one ``query`` page, at most (and by default).
MAX_LIMIT = 5000
#: Encoded bytes of rows in one page: well under the 256 KiB result bound.
PAGE_BYTES = 192 * 1024
#: The fields of an envoy in a list row; ``show`` gives the whole description.
LIST_FIELDS = ("id", "hostname", "state", "online", "connected", "last_seen_age",
               "checkins", "up_to_date", "pending_push")
ENVOY_KEY = String(253, min_length=1)
#: ``hostname`` + one space + ``id`` of the last row of the previous page.
CURSOR = String(300, min_length=1)


def compact(description):
    """A list row: the few fields a table shows, from a full description."""
    row = {name: description.get(name) for name in LIST_FIELDS}
    if row["last_seen_age"] is not None:
        row["last_seen_age"] = round(row["last_seen_age"], 1)
    return row


def cursor_of(row):
    """The cursor after ``row``: its sort key, (hostname, id), as one string."""
    return "%s %s" % (row["hostname"], row["id"])


def _sort_key(cursor):
    hostname, _, envoy_id = cursor.partition(" ")
    return hostname, envoy_id


@implementer(IPlugin, IPeerAction)
class Query:
    """List this bolt's envoys (a page at a time), or show one of them."""

    name = "query"
    description = ("This bolt's envoys: kind=list (a page of compact rows; offline, "
                   "limit, after) or kind=show (one envoy by id or hostname).")
    argument_schema = {
        "kind": String(4, min_length=4, pattern="list|show"),
        "offline": Optional(Boolean()),
        "envoy": Optional(ENVOY_KEY),
        "limit": Optional(Integer(1, MAX_LIMIT)),
        "after": Optional(CURSOR),
    }

    def run(self, bolt, caller_id, args):
        fleet = bolt.fleet()
        if args["kind"] == "show":
            if not args.get("envoy"):
                raise ActionError("query kind=show needs envoy (an envoy id or hostname)")
            return {"bolt_id": bolt.id, "name": bolt.name, "envoy": fleet.describe(args["envoy"])}
        return self._page(bolt, fleet, args)

    def _page(self, bolt, fleet, args):
        limit = args.get("limit") or MAX_LIMIT
        after = args.get("after")
        after = None if after is None else _sort_key(after)
        rows, size, truncated = [], 0, False
        for description in fleet.envoys(offline=bool(args.get("offline"))):
            if after is not None and (description["hostname"], description["id"]) <= after:
                continue
            row = compact(description)
            row_size = len(json.dumps(row)) + 2
            if len(rows) >= limit or size + row_size > PAGE_BYTES:
                truncated = True
                break
            rows.append(row)
            size += row_size
        return {
            "bolt_id": bolt.id, "name": bolt.name, "envoys": rows, "count": len(rows),
            "truncated": truncated, "next": cursor_of(rows[-1]) if truncated and rows else None,
        }


@implementer(IPlugin, IPeerAction)
class ForcePush:
    """Force-push one envoy of this bolt, or every active one."""

    name = "force-push"
    description = ("Force-push one envoy of this bolt (envoy: id or hostname) or every "
                   "active one (all: true); says how many got it now or at next attach.")
    argument_schema = {
        "envoy": Optional(ENVOY_KEY),
        "all": Optional(Boolean()),
    }

    def run(self, bolt, caller_id, args):
        fleet = bolt.fleet()
        envoy, every = args.get("envoy"), bool(args.get("all"))
        if every == bool(envoy):
            raise ActionError("force-push needs either envoy (an envoy id or hostname) "
                              "or all: true, not %s" % ("both" if every else "neither",))
        if every:
            d = fleet.push_all()
        else:
            d = fleet.push(envoy)
        return d.addCallback(lambda answer: dict(answer, bolt_id=bolt.id, name=bolt.name))


query = Query()
force_push = ForcePush()
