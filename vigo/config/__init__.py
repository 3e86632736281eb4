"""Loading and validating server.yaml.

The file is found (``--config``, else ``$VIGO_CONFIG_FILE``, else ``./server.yaml``,
else built-in defaults), parsed with ``yaml.safe_load`` and checked key by key into
frozen attrs classes.  Any mistake is one :class:`ConfigError` line naming the file,
the dotted key, the offending value and what is allowed.  Retired hub-and-spoke keys
are refused wherever they appear, before anything else is looked at.

What each value may be is in ``vigo.config.checks``; durations and addresses are
read by ``vigo.config.values`` (``parse_duration``, ``parse_address`` and
``Address`` are importable from here too).
"""

import os
import reprlib
import socket

import attr
import yaml

from vigo.config import checks as check
from vigo.config.values import DAY, Address, parse_address, parse_duration

__all__ = [
    "DAY", "MIGRATION_DOC", "RETIRED_KEYS", "Address", "CheckinConfig", "Config", "ConfigError",
    "DbusConfig", "GossipConfig", "ServerConfig", "SnapshotConfig", "SpannerConfig", "TLSFiles",
    "config_from_mapping", "find_config_file", "load_config", "parse_address", "parse_duration",
]

RETIRED_KEYS = frozenset({"role", "hub", "hub_addr", "spokes", "spoke_id"})
MIGRATION_DOC = "docs/migration/hub-spoke.md"

_MISSING = object()
_RETIRED = (
    f"is a retired hub-and-spoke key; spanner federation replaced it, see {MIGRATION_DOC}"
)
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80


class ConfigError(Exception):
    """A bad config: one line naming the key, the value and what is allowed."""


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
class Config:
    """The whole validated server.yaml; ``source`` is the file loaded, or None."""
    server: ServerConfig
    checkin: CheckinConfig
    hostcrates: str | None
    spanner: SpannerConfig
    dbus: DbusConfig
    source: str | None


def find_config_file(explicit=None, environ=os.environ, cwd=None):
    """Return the config file to load, or None for built-in defaults.

    ``explicit`` (``--config``) wins, then ``$VIGO_CONFIG_FILE``; either must name an
    existing file.  Otherwise ``server.yaml`` in ``cwd`` is used if it exists.
    """
    def under_cwd(path):
        return path if cwd is None else os.path.join(cwd, path)

    env = environ.get("VIGO_CONFIG_FILE") or None  # set but empty counts as unset
    for option, path in (("--config", explicit), ("$VIGO_CONFIG_FILE", env)):
        if path is not None:
            if not os.path.isfile(under_cwd(path)):
                raise ConfigError(
                    f"{option}: {path!r} is not an existing file (name a config file)")
            return under_cwd(path)
    local = under_cwd("server.yaml")
    return local if os.path.isfile(local) else None


def load_config(path=None, *, mode=None, data_dir=None, environ=os.environ, cwd=None):
    """Find, read and validate the config; ``mode`` and ``data_dir`` override the file.

    A relative ``data_dir`` override is taken relative to ``cwd``, where it was typed.
    """
    cwd = os.getcwd() if cwd is None else cwd
    command_line = _Section("command line", "", {}, ())
    if mode is not None:
        mode = command_line.convert("--mode", mode, check.choice(*_MODES))
    if data_dir is not None:
        data_dir = command_line.convert("--data-dir", data_dir, check.path(cwd))
    source = find_config_file(path, environ, cwd)
    data = {} if source is None else _read_yaml(source)
    data = _override(data, "spanner", "mode", mode)
    data = _override(data, "server", "data_dir", data_dir)
    base_dir = cwd if source is None else os.path.dirname(os.path.abspath(source))
    return config_from_mapping(data, source=source, base_dir=base_dir)


def config_from_mapping(data, *, source=None, base_dir="."):
    """Validate parsed YAML ``data`` into a Config; raise ConfigError on any mistake.

    ``source`` names the file in messages (``"config"`` when None); relative paths
    are resolved against ``base_dir``.
    """
    where = "config" if source is None else source
    _refuse_retired_keys(where, data)
    top = _Section(where, "", data, {"server", "checkin", "hostcrates", "spanner", "dbus"})
    server = _server(top.section("server", _SERVER_KEYS), base_dir)
    checkin = top.section("checkin", {"interval", "offline_after"})
    dbus = top.section("dbus", {"bus"})
    return Config(
        server=server,
        checkin=CheckinConfig(
            interval=checkin.get(
                "interval", "15s", check.duration(0, DAY, "more than 0s, at most 1d")),
            offline_after=checkin.get("offline_after", 3, check.integer(1, 100)),
        ),
        hostcrates=top.get("hostcrates", None, check.optional(check.path(base_dir))),
        spanner=_spanner(top.section("spanner", _SPANNER_KEYS), server.hostname),
        dbus=DbusConfig(bus=dbus.get("bus", "none", check.bus)),
        source=source,
    )


_MODES = ("standalone", "spanner")
_SERVER_KEYS = {"data_dir", "hostname", "envoy_listen", "api_listen", "tls"}
_SPANNER_KEYS = {"mode", "bolt_name", "patterns", "peer_listen", "gossip", "snapshot"}
_GOSSIP_KEYS = {"group", "port", "interface", "interval", "multicast", "seeds"}


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


def _override(data, section, key, value):
    """Return ``data`` with ``section.key`` set to an already-validated ``value``."""
    data = {} if data is None else data  # an empty file
    inner = data.get(section) if isinstance(data, dict) else None
    if value is None or not isinstance(data, dict) or not isinstance(inner, (dict, type(None))):
        return data  # nothing to override, or a shape config_from_mapping will refuse
    return {**data, section: {**(inner or {}), key: value}}


def _read_yaml(path):
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the config file: {e}") from None
    except RecursionError:
        raise ConfigError(f"{path}: the YAML is nested too deeply to read") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join((getattr(e, "problem", None) or str(e)).split())
        raise ConfigError(f"{path}: {at}YAML syntax error: {problem}") from None


def _fail(where, key, value, problem):
    shown = "missing:" if value is _MISSING else _REPR.repr(value)
    if not str(key).isprintable():
        key = repr(key)  # a key with a newline must not break the one-line message
    raise ConfigError(f"{where}: {key}: {shown} {problem}")


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


class _Section:
    """One mapping of the config: its dotted key, its data, only allowed keys in it."""

    def __init__(self, where, key, data, allowed):
        self.where, self.key = where, key
        self.data = {} if data is None else data
        if not isinstance(self.data, dict):
            _fail(where, key or "(top level)", data,
                  f"is not a mapping (keys: {check.listing(allowed)})")
        for name in self.data:
            if name not in allowed:
                _fail(where, self._key(name), name,
                      f"is not a key here (allowed: {check.listing(allowed)})")

    def _key(self, name):
        return f"{self.key}.{name}" if self.key else str(name)

    def section(self, name, allowed):
        """The sub-mapping ``name``; missing or null means empty."""
        return _Section(self.where, self._key(name), self.data.get(name), allowed)

    def get(self, name, default, convert):
        """``convert`` the value of ``name`` (or ``default``); _MISSING means required."""
        value = self.data.get(name, default)
        if value is _MISSING:
            _fail(self.where, self._key(name), value, f"{self.key} needs {name}")
        return self.convert(self._key(name), value, convert)

    def get_list(self, name, convert):
        """``convert`` each item of the list ``name`` (default empty) into a tuple."""
        items = self.get(name, [], check.list_)
        key = self._key(name)
        return tuple(self.convert(f"{key}[{i}]", item, convert) for i, item in enumerate(items))

    def convert(self, key, value, convert):
        try:
            return convert(value)
        except check.Invalid as e:
            _fail(self.where, key, value, str(e))
