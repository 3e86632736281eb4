"""Loading and validating server.yaml.

The file is found (``--config``, else ``$VIGO_CONFIG_FILE``, else ``./server.yaml``,
else built-in defaults), parsed with ``yaml.safe_load`` and checked key by key into
frozen attrs classes.  Any mistake is one :class:`ConfigError` line naming the file,
the dotted key, the offending value and what is allowed.  Retired hub-and-spoke keys
are refused wherever they appear, before anything else is looked at.

Where each thing is:

- ``model``: the validated config, one frozen attrs class per section (:class:`Config`,
  :class:`ServerConfig`, ...).
- ``schema``: each section's keys, defaults and converters (:func:`config_from_mapping`),
  and the retired keys (``RETIRED_KEYS``, ``MIGRATION_DOC``).  A new key goes here
  and in ``model``.
- ``checks``: the converters a key is checked with (``integer``, ``duration``, ...).
- ``values``: durations and addresses as operators type them (``parse_duration``,
  ``parse_address``, :class:`Address`), also used for command-line options.
- ``sections``: the walker over one mapping and :class:`ConfigError`.
- ``loading``: finding and reading the file (:func:`find_config_file`,
  :func:`load_config`) and the command-line overrides.

The public names below are importable from ``vigo.config`` itself.  Modules in
this package import each other, never this one.
"""

from vigo.config.loading import find_config_file, load_config
from vigo.config.model import (
    CheckinConfig,
    Config,
    DbusConfig,
    GossipConfig,
    LimitsConfig,
    PeersConfig,
    PortLimits,
    ServerConfig,
    SnapshotConfig,
    SpannerConfig,
    TLSFiles,
)
from vigo.config.schema import MIGRATION_DOC, RETIRED_KEYS, config_from_mapping
from vigo.config.sections import ConfigError
from vigo.config.values import DAY, Address, parse_address, parse_duration

__all__ = [
    "DAY", "MIGRATION_DOC", "RETIRED_KEYS", "Address", "CheckinConfig", "Config", "ConfigError",
    "DbusConfig", "GossipConfig", "LimitsConfig", "PeersConfig", "PortLimits", "ServerConfig",
    "SnapshotConfig", "SpannerConfig", "TLSFiles",
    "config_from_mapping", "find_config_file", "load_config", "parse_address", "parse_duration",
]
