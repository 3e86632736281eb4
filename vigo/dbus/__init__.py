"""Local control over D-Bus (``dbus.bus``), with txdbus (``pip install 'vigosrv[dbus]'``).

A server started with ``dbus.bus`` set (``session``, ``system`` or a D-Bus
address) owns the bus name ``org.vigo.Server`` and exports one object,
``/org/vigo/Server``, with the interface ``org.vigo.Server1``:

* ``Status() -> a{sv} status``: what ``GET /api/v1/status`` answers, as a
  dictionary of variants (nested objects are ``a{sv}``, lists ``av``,
  integers ``x``; null values are left out);
* ``ForcePush(s envoy) -> s delivered``: force-push one envoy of this server
  (id or hostname): ``now`` or ``next_attach``;
* the signal ``EnvoyEnrolled(s envoy_id, s hostname)`` when an envoy enrolls here;
* the read-only properties ``ServerId``, ``Mode`` (constant), ``Role``
  (``primary``, or ``fenced``), ``Epoch``, ``EnvoysTotal``, ``EnvoysActive``,
  ``EnvoysOnline`` and ``EnvoysConnected``, through
  ``org.freedesktop.DBus.Properties``; they are sampled every
  ``vigo.dbus.control.PROPERTIES_INTERVAL`` seconds and ``PropertiesChanged`` carries those that
  changed.

Arguments are named in the introspection data. A refusal is the D-Bus error
of its code, ``org.vigo.Server.Error.NotFound`` for ``not_found`` and so on
(``vigo.dbus.errors``), with the refusal's reason as its message.

Who may call it is the bus's policy: ``etc/dbus-org.vigo.Server.conf`` for the
system bus lets root (and the ``vigo`` user, which owns the name) call it. The
connection is made at start-up; a bus that cannot be reached is logged and
the server runs on without it (D-Bus is optional, the admin API is not): the
server does not wait for the bus to become ready.

Where each thing is: ``spec`` (the interface, with argument names, and its
introspection XML), ``values`` (plain values as typed variants), ``errors``
(refusal codes as error names), ``control`` (the object, the property sampler,
the service).
"""

from vigo.dbus.control import (
    DbusControl,
    PropertySampler,
    ServerObject,
    server_properties,
)
from vigo.dbus.errors import ERROR_PREFIX, REFUSAL_ERRORS, DbusError, error_name
from vigo.dbus.spec import BUS_NAME, INTERFACE, OBJECT_PATH, PROPERTIES_INTERFACE

__all__ = [
    "BUS_NAME", "ERROR_PREFIX", "INTERFACE", "OBJECT_PATH", "PROPERTIES_INTERFACE",
    "REFUSAL_ERRORS", "DbusControl", "DbusError",
    "PropertySampler", "ServerObject", "error_name", "server_properties",
]
