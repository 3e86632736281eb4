"""The shape of a validated server.yaml: one frozen attrs class per section.

These hold values already checked and converted by ``vigo.config.schema``; nothing
here validates anything.  Adding a key means adding its field to its section's class
here and its default and converter in the schema.
"""

import attr

from vigo.config.values import Address


@attr.s(frozen=True, auto_attribs=True)
class TLSFiles:
    """Operator-supplied certificate and key (PEM paths) for the API port."""
    cert_file: str
    key_file: str


@attr.s(frozen=True, auto_attribs=True)
class ServerConfig:
    """The ``server`` section: storage, advertised name, listeners, API TLS."""
    data_dir: str
    hostname: str
    envoy_listen: Address
    api_listen: Address
    tls: TLSFiles | None


@attr.s(frozen=True, auto_attribs=True)
class CheckinConfig:
    """The ``checkin`` section: envoy cadence (seconds) and offline threshold."""
    interval: float
    offline_after: int


@attr.s(frozen=True, auto_attribs=True)
class GossipConfig:
    """The ``spanner.gossip`` section: tier-1 counter gossip."""
    group: str
    port: int
    interface: str
    interval: float
    multicast: bool
    seeds: tuple[str, ...]


@attr.s(frozen=True, auto_attribs=True)
class SnapshotConfig:
    """The ``spanner.snapshot`` section: tier-2 roster pull period (seconds)."""
    anti_entropy: float


@attr.s(frozen=True, auto_attribs=True)
class SpannerConfig:
    """The ``spanner`` section: mode, this bolt's name and partition, peer ports."""
    mode: str
    bolt_name: str
    patterns: tuple[str, ...]
    peer_listen: Address
    gossip: GossipConfig
    snapshot: SnapshotConfig


@attr.s(frozen=True, auto_attribs=True)
class DbusConfig:
    """The ``dbus`` section: which bus, if any, to offer local control on."""
    bus: str


@attr.s(frozen=True, auto_attribs=True)
class PortLimits:
    """One port's ``limits`` section: deadlines (seconds) and connection caps."""
    handshake: float
    first_request: float
    idle: float
    per_source: int
    connections: int


@attr.s(frozen=True, auto_attribs=True)
class LimitsConfig:
    """The ``limits`` section: the limits of each listening port."""
    envoy: PortLimits
    api: PortLimits
    peer: PortLimits
    replication: PortLimits


@attr.s(frozen=True, auto_attribs=True)
class PeersConfig:
    """``peers``: high availability inside one partition (a replica set).
    ``listen`` is None when HA is off."""
    listen: Address | None
    sync: int
    sync_timeout: float
    retain: int


@attr.s(frozen=True, auto_attribs=True)
class LogConfig:
    """The ``log`` section: the least severe level the server logs."""
    level: str = "info"


LOG_LEVELS = ("debug", "info", "warn", "error", "critical")


@attr.s(frozen=True, auto_attribs=True)
class Config:
    """The whole validated server.yaml; ``source`` is the file loaded, or None."""
    server: ServerConfig
    checkin: CheckinConfig
    hostcrates: str | None
    spanner: SpannerConfig
    dbus: DbusConfig
    source: str | None
    limits: LimitsConfig
    peers: PeersConfig
    log: LogConfig = LogConfig()
