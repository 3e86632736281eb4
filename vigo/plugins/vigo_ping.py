"""The ``ping`` peer action: who answers, and which roster it holds.

This is the smallest complete peer action; copy it to write your own. A
dropin is a module in a ``vigo/plugins/`` directory (this package, or one with
no ``__init__.py`` on any ``sys.path`` entry) holding an object that provides
``IPlugin`` and ``IPeerAction``. Keep its imports light: every dropin is
imported whenever actions are discovered.

Before ``run`` is called, the peer server has checked that the caller is a
member and that the arguments match ``argument_schema`` exactly; after, that
the result is small JSON data. Call it from another bolt with
``bolt.call(bolt_id, "ping", {})``.
"""

from twisted.plugin import IPlugin
from zope.interface import implementer

from vigo.interfaces import IPeerAction


@implementer(IPlugin, IPeerAction)
class Ping:
    """Answer with this bolt's id, name, roster digest and clock."""

    name = "ping"
    description = "This bolt's id, name, roster digest (hex) and wall-clock time."
    # Argument name -> schema from vigo.interfaces.schema, e.g.
    # {"hostname": String(253), "limit": Optional(Integer(1, 1000))}. Ping takes none.
    argument_schema = {}

    def run(self, bolt, caller_id, args):
        # A plain value or a Deferred; raise vigo.interfaces.errors.ActionError
        # to refuse with a message the caller sees.
        return {
            "bolt_id": bolt.id,
            "name": bolt.name,
            "digest": bolt.roster_digest().hex(),
            "time": bolt.now(),
        }


ping = Ping()
