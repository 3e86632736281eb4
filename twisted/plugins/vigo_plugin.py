"""The twistd dropin: ``twistd vigo`` runs the Vigo server (vigosrv).

Nothing of vigo is imported until twistd asks for the options or the service:
every twistd run imports this file.
"""

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IServiceMaker, IPlugin)
class VigoServiceMaker:
    """``vigo.tap``'s options and server, run in a ``VigoProcess`` (SIGHUP
    reloads the config; a failed start exits non-zero, pidfile removed)."""

    tapname = "vigo"
    description = "vigosrv: the Vigo fleet server (standalone, or a spanner bolt)"

    @property
    def options(self):
        from vigo.tap import Options

        return Options

    def makeService(self, options):
        from twisted.internet import reactor

        from vigo.server.reload import config_loader
        from vigo.server.service import VigoProcess
        from vigo.tap import makeService

        server = makeService(options)
        load = config_loader(options.config, mode=options["mode"], data_dir=options["data-dir"])
        # twistd's own options hold the status pipe a daemon's parent waits on.
        return VigoProcess(server, reactor, load, twistd_options=getattr(options, "parent", None))


vigo = VigoServiceMaker()
