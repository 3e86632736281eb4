"""The drain actions: ``drain`` and ``drain-status``, run at the draining bolt.

``vigocli spanner bolt drain BOLT [--to BOLT]``, asked at any bolt, calls
``drain`` on BOLT: it publishes its own row as ``draining`` (persisted and
gossiped) and starts handing its active envoys over in the background, each
to ``to`` or to its owner by the roster, with the local ``reassign`` action;
it answers with the progress at once. ``drain-status`` answers the progress.
The drain itself is ``vigo.spanner.drain.Drainer``; see docs/spanner.md
("Draining and removing a bolt").

A refusal is an ``ActionError`` whose message keeps the refusal's code, as
for ``reassign``.
"""

from twisted.internet import defer
from twisted.plugin import IPlugin
from zope.interface import implementer

from vigo.interfaces import IPeerAction
from vigo.interfaces.schema import Optional, String


def _as_action_error(failure):
    from vigo.fleet.refusal import Refusal, refusal_text
    from vigo.interfaces.errors import ActionError
    from vigo.spanner.drain import DrainRefused

    if failure.check(DrainRefused):
        raise ActionError(refusal_text(Refusal(failure.value.code, failure.value.reason)))
    return failure


@implementer(IPlugin, IPeerAction)
class Drain:
    """Turn this bolt draining and hand all its envoys over, in the background."""

    name = "drain"
    description = ("Publish this bolt's row as draining, then move every active envoy to "
                   "bolt `to` (or to its owner by the roster); answers the progress at once.")
    argument_schema = {"to": Optional(String(128, min_length=1))}

    def run(self, bolt, caller_id, args):
        d = defer.maybeDeferred(lambda: defer.ensureDeferred(bolt.drainer().start(args.get("to"))))
        return d.addErrback(_as_action_error)


@implementer(IPlugin, IPeerAction)
class DrainStatus:
    """The progress of this bolt's drain."""

    name = "drain-status"
    description = ("The progress of this bolt's drain: state (idle, running, done, "
                   "failed), total, moved, failed, remaining active envoys, last errors.")
    argument_schema = {}

    def run(self, bolt, caller_id, args):
        return bolt.drainer().status()


drain = Drain()
drain_status = DrainStatus()
