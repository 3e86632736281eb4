"""What server.yaml may hold: each section's keys, their defaults and converters.

:func:`config_from_mapping` is the whole schema: it walks the parsed YAML section
by section (``_server`` and ``_spanner`` for the larger ones) and builds the
classes of ``vigo.config.model``.  Each key is one ``get`` line naming its default
(``_MISSING`` if required) and its converter from ``vigo.config.checks``; each
section's allowed keys are listed next to it.  Retired hub-and-spoke keys
(``RETIRED_KEYS``) are refused wherever they appear, before anything else.
"""

import socket

from vigo.config import checks as check
from vigo.config.model import (
    LOG_LEVELS,
    CheckinConfig,
    Config,
    DbusConfig,
    GossipConfig,
    LimitsConfig,
    LogConfig,
    PeersConfig,
    PortLimits,
    ServerConfig,
    SnapshotConfig,
    SpannerConfig,
    TLSFiles,
)
from vigo.config.sections import _MISSING, _fail, _Section
from vigo.config.values import DAY

RETIRED_KEYS = frozenset({"role", "hub", "hub_addr", "spokes", "spoke_id"})
MIGRATION_DOC = "docs/migration/hub-spoke.md"

_RETIRED = (
    f"is a retired hub-and-spoke key; spanner federation replaced it, see {MIGRATION_DOC}"
)


def config_from_mapping(data, *, source=None, base_dir="."):
    """Validate parsed YAML ``data`` into a Config; raise ConfigError on any mistake.

    ``source`` names the file in messages (``"config"`` when None); relative paths
    are resolved against ``base_dir``.
    """
    where = "config" if source is None else source
    _refuse_retired_keys(where, data)
    top = _Section(where, "", data, {"server", "checkin", "hostcrates", "spanner", "dbus",
                                     "limits", "peers", "log"})
    server = _server(top.section("server", _SERVER_KEYS), base_dir)
    checkin = top.section("checkin", {"interval", "offline_after"})
    dbus = top.section("dbus", {"bus"})
    interval = checkin.get("interval", "15s",
                           check.duration(0, DAY, "more than 0s, at most 1d"))
    return Config(
        server=server,
        checkin=CheckinConfig(
            interval=interval,
            offline_after=checkin.get("offline_after", 3, check.integer(1, 100)),
        ),
        hostcrates=top.get("hostcrates", None, check.optional(check.path(base_dir))),
        spanner=_spanner(top.section("spanner", _SPANNER_KEYS), server.hostname),
        dbus=DbusConfig(bus=dbus.get("bus", "none", check.bus)),
        source=source,
        limits=_limits(top.section("limits", set(LIMIT_DEFAULTS)), interval),
        peers=_peers(top.section("peers", _PEERS_KEYS)),
        log=LogConfig(level=top.section("log", {"level"}).get(
            "level", "info", check.choice(*LOG_LEVELS))),
    )


_MODES = ("standalone", "spanner")
_SERVER_KEYS = {"data_dir", "hostname", "envoy_listen", "api_listen", "tls"}
_SPANNER_KEYS = {"mode", "bolt_name", "patterns", "peer_listen", "gossip", "snapshot"}
_GOSSIP_KEYS = {"group", "port", "interface", "interval", "multicast", "seeds"}
_PEERS_KEYS = {"listen", "sync", "sync_timeout", "retain"}


def _peers(peers):
    """``peers``: HA inside one partition; off unless ``listen`` is set."""
    return PeersConfig(
        listen=peers.get("listen", None, check.optional(check.address(0))),
        sync=peers.get("sync", 0, check.integer(0, 16)),
        sync_timeout=peers.get("sync_timeout", "2s",
                               check.duration(0.01, 3600, "10ms to 1h")),
        retain=peers.get("retain", 100_000, check.integer(1_000, 100_000_000)),
    )


def _server(server, base_dir):
    tls = None
    if server.data.get("tls") is not None:
        files = server.section("tls", {"cert_file", "key_file"})
        tls = TLSFiles(
            cert_file=files.get("cert_file", _MISSING, check.path(base_dir)),
            key_file=files.get("key_file", _MISSING, check.path(base_dir)),
        )
    return ServerConfig(
        data_dir=server.get("data_dir", "var/vigo", check.path(base_dir)),
        hostname=server.get("hostname", socket.gethostname().lower(), check.hostname),
        envoy_listen=server.get("envoy_listen", "127.0.0.1:1530", check.address(0)),
        api_listen=server.get("api_listen", "127.0.0.1:8443", check.address(0)),
        tls=tls,
    )


def _spanner(spanner, hostname):
    gossip = spanner.section("gossip", _GOSSIP_KEYS)
    snapshot = spanner.section("snapshot", {"anti_entropy"})
    return SpannerConfig(
        mode=spanner.get("mode", "standalone", check.choice(*_MODES)),
        bolt_name=spanner.get("bolt_name", hostname, check.name),
        patterns=spanner.get_list("patterns", check.pattern),
        peer_listen=spanner.get("peer_listen", "127.0.0.1:1533", check.address(0)),
        gossip=GossipConfig(
            group=gossip.get("group", "239.192.86.71", check.multicast_group),
            port=gossip.get("port", 1532, check.integer(1, 65535)),
            interface=gossip.get("interface", "127.0.0.1", check.ip),
            interval=gossip.get("interval", 0.5, check.duration(0.05, 60, "50ms to 60s")),
            multicast=gossip.get("multicast", True, check.boolean),
            seeds=tuple(str(seed) for seed in gossip.get_list("seeds", check.address(1))),
        ),
        snapshot=SnapshotConfig(
            anti_entropy=snapshot.get("anti_entropy", "30s", check.duration(1, DAY, "1s to 1d")),
        ),
    )


#: Each port's limits unless ``limits.<port>`` says otherwise (``idle: None``: see
#: ``_limits``). Connections past a cap are refused as they are accepted; past
#: a deadline, aborted.
LIMIT_DEFAULTS = {
    "envoy": {"handshake": 10.0, "first_request": 30.0, "idle": None,
              "per_source": 20_000, "connections": 50_000},
    "api": {"handshake": 10.0, "first_request": 10.0, "idle": 120.0,
            "per_source": 128, "connections": 1024},
    "peer": {"handshake": 10.0, "first_request": 10.0, "idle": 900.0,
             "per_source": 16, "connections": 1024},
    "replication": {"handshake": 10.0, "first_request": 10.0, "idle": 120.0,
                    "per_source": 8, "connections": 64},
}
_LIMIT_KEYS = {"handshake", "first_request", "idle", "per_source", "connections"}


def _limits(limits, interval):
    """Each port's ``PortLimits``. The envoy port's ``idle`` defaults to four
    check-in intervals (at least 10 minutes), and must be longer than one:
    envoys are silent between check-ins."""
    ports = {}
    for port, defaults in LIMIT_DEFAULTS.items():
        section = limits.section(port, _LIMIT_KEYS)
        idle = defaults["idle"] if defaults["idle"] is not None else max(600.0, 4 * interval)
        ports[port] = PortLimits(
            handshake=section.get("handshake", defaults["handshake"],
                                  check.duration(0.01, 3600, "10ms to 1h")),
            first_request=section.get("first_request", defaults["first_request"],
                                      check.duration(0.01, 3600, "10ms to 1h")),
            idle=section.get("idle", idle, check.duration(0.1, 7 * DAY, "100ms to 7d")),
            per_source=section.get("per_source", defaults["per_source"],
                                   check.integer(1, 1_000_000)),
            connections=section.get("connections", defaults["connections"],
                                    check.integer(1, 1_000_000)),
        )
    if ports["envoy"].idle <= interval:
        _fail(limits.where, "limits.envoy.idle", ports["envoy"].idle,
              f"must be longer than checkin.interval ({interval:g} s): envoys are silent "
              "between check-ins")
    return LimitsConfig(**ports)


def _refuse_retired_keys(where, data):
    """Refuse retired keys anywhere (shallowest first), before anything else.

    Walks with an explicit stack and visits each container once: YAML aliases can
    share nodes or even make the tree cyclic.
    """
    stack, seen = [("", data)], set()
    while stack:
        key, value = stack.pop()
        if not isinstance(value, (dict, list)) or id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, list):
            children = [(f"{key}[{i}]", item) for i, item in enumerate(value)]
        else:
            children = [(f"{key}.{name}" if key else str(name), v) for name, v in value.items()]
            for (path, _), name in zip(children, value, strict=True):
                if isinstance(name, str) and name in RETIRED_KEYS:
                    _fail(where, path, name, _RETIRED)
        stack.extend(reversed(children))
