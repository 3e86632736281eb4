"""The server at a glance: ``GET /api/v1/status``, ``vigocli status``, D-Bus ``Status``."""

from vigo import __version__


class ServerStatus:
    """What a server says of itself.

    ``identity``, ``config`` and ``fleet`` are the server's; ``clock`` an
    ``IReactorTime``; ``envoy_address()`` where envoys reach it; ``federation()``
    its federation at a glance (a bolt's ``IFederationAdmin.status``), or None
    for a standalone server.
    """

    def __init__(self, identity, config, clock, fleet, envoy_address, federation=None):
        self._identity = identity
        self._config = config
        self._clock = clock
        self._fleet = fleet
        self._envoy_address = envoy_address
        self._federation = federation
        self.started_at = None

    def started(self):
        """The server started now (uptime counts from here)."""
        self.started_at = self._clock.seconds()

    def __call__(self):
        now = self._clock.seconds()
        return {
            "server_id": self._identity.id,
            "fingerprint": self._identity.fingerprint,
            "hostname": self._config.server.hostname,
            "mode": self._config.spanner.mode,
            "version": __version__,
            "uptime": 0.0 if self.started_at is None else now - self.started_at,
            "envoy_address": str(self._envoy_address()),
            "checkin_interval": self._fleet.interval,  # as reloaded (SIGHUP)
            "envoys": self._fleet.counts(),
            "checkins": dict(self._fleet.stats.checkins),
            "spanner": None if self._federation is None else self._federation(),
        }
