"""The wiring of a standalone server: one server owns every envoy.

It builds the fleet half (``vigo.server.wiring``), an ownership that owns
every hostname, enrollment without a router, envoy operations answered from
its own fleet, and spanner routes that say it is standalone
(``StandaloneSpannerAPI`` over a ``NoFederation``). No federation code is
imported.
"""

from vigo.api.envoys import LocalEnvoys
from vigo.api.spanner import NoFederation, StandaloneSpannerAPI
from vigo.fleet.enrollment import Enrollment
from vigo.fleet.ownership import StandaloneOwnership
from vigo.metrics import FleetCollector, metrics_registry
from vigo.server.status import ServerStatus
from vigo.server.wiring import add_dbus, fleet_parts, serve


def build(config, reactor, exit_on_failure=False, host=None):
    """The ``VigoServer`` of a standalone server."""
    parts = fleet_parts(config, reactor)
    identity, fleet = parts.identity, parts.fleet
    ownership = StandaloneOwnership(identity, parts.advertised.envoy)
    enrollment = Enrollment(fleet, parts.store, identity, ownership, reactor,
                            parts.advertised.envoy, parts.enrollment_tokens)
    status = ServerStatus(identity, config, reactor, fleet, parts.advertised.envoy)
    federation = NoFederation(identity.id)
    server = serve(config, reactor, parts, enrollment, LocalEnvoys(fleet, reactor, identity.id),
                   federation, metrics_registry(FleetCollector(fleet, enrollment),
                                                mode=config.spanner.mode), status,
                   spanner_routes=StandaloneSpannerAPI(federation, parts.api_tokens),
                   exit_on_failure=exit_on_failure, host=host)
    return add_dbus(server, config, reactor, status, fleet, enrollment)
