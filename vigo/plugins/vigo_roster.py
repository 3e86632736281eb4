"""The ``announce-row`` peer action: a bolt gives another its own new row.

Rows normally spread by tier-2 pulls of signed snapshots. A bolt that starts
listening elsewhere (a port or an address changed in its config) republishes
its row with the new addresses, but the others would pull it from the old
address, which no longer answers. So that bolt calls ``announce-row`` at each
other bolt with its row (``vigo.spanner.own_row.OwnRow.republish_addresses``),
over its own connection to them. The callee merges it as any row: both of its
signatures are verified, and a bolt may announce only its own row.
"""

from twisted.plugin import IPlugin
from zope.interface import implementer

from vigo.interfaces import IPeerAction, Json


@implementer(IPlugin, IPeerAction)
class AnnounceRow:
    """Merge the caller's own admission row, verified; answer the seq now held."""

    name = "announce-row"
    description = ("Merge the calling bolt's own admission row (JSON form), verified like any "
                   "row; answers the seq of its row now held here.")
    argument_schema = {"row": Json(max_bytes=16 * 1024)}

    def run(self, bolt, caller_id, args):
        return bolt.take_row(caller_id, args["row"])


announce_row = AnnounceRow()
