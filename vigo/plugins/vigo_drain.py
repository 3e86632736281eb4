"""The drain actions: ``drain`` and ``drain-status``, run at the draining bolt.

``vigocli spanner bolt drain BOLT [--to BOLT]``, asked at any bolt, calls
``drain`` on BOLT: it publishes its own row as ``draining`` (persisted and
gossiped) and starts handing its active envoys over in the background, each
to ``to`` or to its owner by the roster; it answers with the progress at once.
``drain-status`` answers the progress. The drain itself is
``vigo.spanner.drain``; these actions only check their arguments and ask the
bolt (``IBolt.drain``, ``IBolt.drain_status``). A refusal reaches the caller
with its code (``bolt_not_active``, ``no_owner``, ...). See docs/spanner.md
("Draining and removing a bolt").
"""

from twisted.plugin import IPlugin
from zope.interface import implementer

from vigo.interfaces import IPeerAction, Optional, String


@implementer(IPlugin, IPeerAction)
class Drain:
    """Turn this bolt draining and hand all its envoys over, in the background."""

    name = "drain"
    description = ("Publish this bolt's row as draining, then move every active envoy to "
                   "bolt `to` (or to its owner by the roster); answers the progress at once.")
    argument_schema = {"to": Optional(String(128, min_length=1))}

    def run(self, bolt, caller_id, args):
        return bolt.drain(args.get("to"))


@implementer(IPlugin, IPeerAction)
class DrainStatus:
    """The progress of this bolt's drain."""

    name = "drain-status"
    description = ("The progress of this bolt's drain: state (idle, running, done, "
                   "failed), total, moved, failed, remaining active envoys, last errors.")
    argument_schema = {}

    def run(self, bolt, caller_id, args):
        return bolt.drain_status()


drain = Drain()
drain_status = DrainStatus()
