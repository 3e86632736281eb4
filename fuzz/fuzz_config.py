"""server.yaml: any bytes an operator could save.

What PyYAML itself refuses is skipped (``load_config`` turns it into a
``ConfigError``); whatever it parses, ``config_from_mapping`` may only return
a ``Config`` or raise ``ConfigError``, with a one-line message.
"""

import sys

import harness

with harness.instrumented():
    from vigo.config import Config, ConfigError, config_from_mapping
    from vigo.config import schema as config_schema

import yaml  # noqa: E402

config_schema.socket.gethostname = lambda: "bolt9.example.com"


def test_one_input(data):
    try:
        parsed = yaml.safe_load(data)
    except (yaml.YAMLError, RecursionError, ValueError, UnicodeDecodeError):
        # Not a mapping to check (load_config turns these into a ConfigError:
        # KnownBugTests.test_load_config_yaml_value_errors).
        return
    try:
        config = config_from_mapping(parsed, source="fuzz.yaml", base_dir="/base")
    except ConfigError as e:
        if "\n" in str(e) or not str(e).startswith("fuzz.yaml"):
            raise AssertionError("a ConfigError must be one line naming the file: %r"
                                 % (e,)) from e
        return
    if not isinstance(config, Config):
        raise AssertionError("config_from_mapping returned %r" % (config,))


SEEDS = [
    b"server:\n  data_dir: /var/lib/vigo\n  hostname: vigo.example.com\n"
    b"  envoy_listen: 0.0.0.0:1530\ncheckin:\n  interval: 15s\n  offline_after: 3\n",
    b"spanner:\n  mode: spanner\n  bolt_name: dc1\n  patterns: ['*.dc1.example.com']\n"
    b"  peer_listen: 0.0.0.0:1533\n  gossip: {port: 1532, interval: 500ms, seeds: ['a:1']}\n"
    b"  snapshot: {anti_entropy: 30s}\n",
    b"dbus: {bus: system}\nhostcrates: hostcrates.yaml\n",
]

if __name__ == "__main__":
    harness.run(test_one_input, SEEDS)
    sys.exit(0)
