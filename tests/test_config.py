"""Tests for vigo.config: server.yaml loading, validation and retired keys."""

import os
import re

import attr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from vigo.config import (
    MIGRATION_DOC,
    RETIRED_KEYS,
    Address,
    CheckinConfig,
    Config,
    ConfigError,
    DbusConfig,
    GossipConfig,
    LimitsConfig,
    PeersConfig,
    PortLimits,
    ServerConfig,
    SnapshotConfig,
    SpannerConfig,
    TLSFiles,
    config_from_mapping,
    find_config_file,
    load_config,
    parse_address,
    parse_duration,
    schema,
)

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "etc", "server.yaml")


def write(directory, name, text):
    """Write ``text`` to ``directory/name`` (making the directory) and return the path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


class FixedHostnameMixin:
    """Make the default hostname predictable (and valid, whatever this machine is called)."""

    def setUp(self):
        super().setUp()
        self.patch(schema.socket, "gethostname", lambda: "Bolt9.Example.COM")


class DurationTests(SynchronousTestCase):
    """parse_duration accepts the documented forms and refuses everything else."""

    GOOD = (
        ("500ms", 0.5),
        ("15s", 15.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1d", 86400.0),
        ("1.5s", 1.5),
        ("1m30s500ms", 90.5),
        (" 15s ", 15.0),
        ("0s", 0.0),
        ("15", 15.0),
        ("0.25", 0.25),
        (15, 15.0),
        (0, 0.0),
        (0.5, 0.5),
    )
    BAD = (
        "",
        "   ",
        "-5s",
        "15x",
        "s",
        "15 s",
        "1h-30m",
        "1.s",
        ".5s",
        "15S",
        "1e3s",
        "nan",
        "inf",
        "fifteen seconds",
        "１５s",  # full-width digits are not ASCII digits
        -1,
        -0.5,
        float("nan"),
        float("inf"),
        10**400,
        True,
        False,
        None,
        [15],
        {"s": 15},
        b"15s",
    )

    def test_good(self):
        for text, seconds in self.GOOD:
            self.assertEqual(parse_duration(text), seconds, text)
            self.assertIsInstance(parse_duration(text), float)

    def test_bad(self):
        for text in self.BAD:
            error = self.assertRaises(ValueError, parse_duration, text)
            self.assertIn(repr(text)[:20], str(error))

    def test_huge_string_is_refused(self):
        self.assertRaises(ValueError, parse_duration, "9" * 400 + "s")

    @given(st.one_of(st.text(max_size=12), st.from_regex(r"\A([0-9]{1,3}(ms|s|m|h|d)){1,3}\Z")))
    def test_text_gives_seconds_or_value_error(self, text):
        try:
            seconds = parse_duration(text)
        except ValueError:
            return
        self.assertIsInstance(seconds, float)
        self.assertGreaterEqual(seconds, 0)


class AddressTests(SynchronousTestCase):
    """parse_address and Address."""

    def test_good(self):
        for text, host, port in [
            ("127.0.0.1:1530", "127.0.0.1", 1530),
            ("0.0.0.0:0", "0.0.0.0", 0),
            ("bolt1.example.com:65535", "bolt1.example.com", 65535),
            ("localhost:8443", "localhost", 8443),
            ("[::1]:1533", "::1", 1533),
            ("[::]:1", "::", 1),
        ]:
            address = parse_address(text)
            self.assertEqual(address, Address(host, port))
            self.assertEqual(str(address), text)

    def test_bad(self):
        for text in [
            "",
            "127.0.0.1",
            ":1530",
            "127.0.0.1:",
            "127.0.0.1:65536",
            "127.0.0.1:-1",
            "127.0.0.1:port",
            "::1:1530",
            "[::1]",
            "[nonsense]:1530",
            "[]:1530",
            "host name:1530",
            "host/x:1530",
            "127.0.0.1:1530\n",
            "127.0.0.1:123456",
            1530,
            None,
            True,
        ]:
            self.assertRaises(ValueError, parse_address, text)

    @given(st.one_of(
        st.text(max_size=16),
        st.builds("{}:{}".format, st.from_regex(r"\A[a-z0-9.-]{1,12}\Z"), st.integers(0, 70000)),
    ))
    def test_text_gives_address_or_value_error(self, text):
        try:
            address = parse_address(text)
        except ValueError:
            return
        self.assertTrue(0 <= address.port <= 65535)
        self.assertEqual(parse_address(str(address)), address)

    def test_frozen(self):
        address = Address("127.0.0.1", 1)
        self.assertRaises(AttributeError, setattr, address, "port", 2)


class DefaultTests(FixedHostnameMixin, SynchronousTestCase):
    """A missing file, an empty mapping or an empty section give the defaults."""

    def expected(self, base_dir, source=None):
        return Config(
            server=ServerConfig(
                data_dir=os.path.abspath(os.path.join(base_dir, "var", "vigo")),
                hostname="bolt9.example.com",
                envoy_listen=Address("127.0.0.1", 1530),
                api_listen=Address("127.0.0.1", 8443),
                tls=None,
            ),
            checkin=CheckinConfig(interval=15.0, offline_after=3),
            hostcrates=None,
            spanner=SpannerConfig(
                mode="standalone",
                bolt_name="bolt9.example.com",
                patterns=(),
                peer_listen=Address("127.0.0.1", 1533),
                gossip=GossipConfig(
                    group="239.192.86.71",
                    port=1532,
                    interface="127.0.0.1",
                    interval=0.5,
                    multicast=True,
                    seeds=(),
                ),
                snapshot=SnapshotConfig(anti_entropy=30.0),
            ),
            dbus=DbusConfig(bus="none"),
            source=source,
            limits=LimitsConfig(
                envoy=PortLimits(handshake=10.0, first_request=30.0, idle=600.0,
                                 per_source=20_000, connections=50_000),
                api=PortLimits(handshake=10.0, first_request=10.0, idle=120.0,
                               per_source=128, connections=1024),
                peer=PortLimits(handshake=10.0, first_request=10.0, idle=900.0,
                                per_source=16, connections=1024),
                replication=PortLimits(handshake=10.0, first_request=10.0, idle=120.0,
                                       per_source=8, connections=64),
            ),
            peers=PeersConfig(listen=None, sync=0, sync_timeout=2.0, retain=100_000),
        )

    def test_empty_mapping(self):
        base = os.path.abspath(self.mktemp())
        self.assertEqual(config_from_mapping({}, base_dir=base), self.expected(base))

    def test_none(self):
        base = os.path.abspath(self.mktemp())
        self.assertEqual(config_from_mapping(None, base_dir=base), self.expected(base))

    def test_empty_and_null_sections(self):
        base = os.path.abspath(self.mktemp())
        data = {
            "server": None,
            "checkin": {},
            "hostcrates": None,
            "spanner": {"gossip": None, "snapshot": {}},
            "dbus": None,
        }
        self.assertEqual(config_from_mapping(data, base_dir=base), self.expected(base))

    def test_no_file(self):
        """With no file anywhere, the defaults are resolved against the working directory."""
        cwd = os.path.abspath(self.mktemp())
        os.makedirs(cwd)
        self.assertEqual(load_config(environ={}, cwd=cwd), self.expected(cwd))

    def test_empty_file(self):
        directory = os.path.abspath(self.mktemp())
        path = write(directory, "server.yaml", "# nothing but a comment\n")
        self.assertEqual(load_config(path, environ={}), self.expected(directory, path))

    def test_data_dir_is_absolute(self):
        self.assertTrue(os.path.isabs(config_from_mapping({}).server.data_dir))

    def test_bolt_name_follows_hostname(self):
        cfg = config_from_mapping({"server": {"hostname": "Other.Example.com."}})
        self.assertEqual(cfg.spanner.bolt_name, "other.example.com")

    def test_bad_machine_hostname(self):
        """A machine hostname that is not a valid hostname is reported as server.hostname."""
        self.patch(schema.socket, "gethostname", lambda: "my_host")
        error = self.assertRaises(ConfigError, config_from_mapping, {})
        self.assertIn("server.hostname: 'my_host'", str(error))
        cfg = config_from_mapping({"server": {"hostname": "ok.example.com"}})
        self.assertEqual(cfg.server.hostname, "ok.example.com")


FULL = {
    "server": {
        "data_dir": "/srv/vigo",
        "hostname": "Bolt1.Example.COM.",
        "envoy_listen": "0.0.0.0:11530",
        "api_listen": "[::1]:0",
        "tls": {"cert_file": "tls/api.crt", "key_file": "/etc/vigo/api.key"},
    },
    "checkin": {"interval": "1m", "offline_after": 5},
    "hostcrates": "crates/hostcrates.yaml",
    "spanner": {
        "mode": "spanner",
        "bolt_name": "dc1",
        "patterns": ["*.DC1.example.com", "db?.example.com."],
        "peer_listen": "10.0.0.1:1533",
        "gossip": {
            "group": "239.1.2.3",
            "port": 11532,
            "interface": "0.0.0.0",
            "interval": "250ms",
            "multicast": False,
            "seeds": ["bolt2.example.com:8443", "[fe80::1]:1532"],
        },
        "snapshot": {"anti_entropy": "1h30m"},
    },
    "dbus": {"bus": "unix:path=/run/vigo/bus"},
    "limits": {
        "envoy": {"handshake": "5s", "first_request": "20s", "idle": "1h",
                  "per_source": 500, "connections": 9000},
        "api": {"handshake": "2s", "first_request": "3s", "idle": "45s",
                "per_source": 8, "connections": 64},
        "peer": {"idle": "30m"},
        "replication": {"per_source": 2},
    },
    "peers": {"listen": "10.0.0.1:1534", "sync": 1, "sync_timeout": "500ms",
              "retain": 5000},
}


class EveryKeyTests(FixedHostnameMixin, SynchronousTestCase):
    """Every key is read, converted and normalised."""

    def test_every_key(self):
        base = os.path.abspath(self.mktemp())
        cfg = config_from_mapping(FULL, source="x.yaml", base_dir=base)
        self.assertEqual(
            cfg,
            Config(
                server=ServerConfig(
                    data_dir="/srv/vigo",
                    hostname="bolt1.example.com",
                    envoy_listen=Address("0.0.0.0", 11530),
                    api_listen=Address("::1", 0),
                    tls=TLSFiles(
                        cert_file=os.path.join(base, "tls", "api.crt"),
                        key_file="/etc/vigo/api.key",
                    ),
                ),
                checkin=CheckinConfig(interval=60.0, offline_after=5),
                hostcrates=os.path.join(base, "crates", "hostcrates.yaml"),
                spanner=SpannerConfig(
                    mode="spanner",
                    bolt_name="dc1",
                    patterns=("*.dc1.example.com", "db?.example.com"),
                    peer_listen=Address("10.0.0.1", 1533),
                    gossip=GossipConfig(
                        group="239.1.2.3",
                        port=11532,
                        interface="0.0.0.0",
                        interval=0.25,
                        multicast=False,
                        seeds=("bolt2.example.com:8443", "[fe80::1]:1532"),
                    ),
                    snapshot=SnapshotConfig(anti_entropy=5400.0),
                ),
                dbus=DbusConfig(bus="unix:path=/run/vigo/bus"),
                source="x.yaml",
                limits=LimitsConfig(
                    envoy=PortLimits(handshake=5.0, first_request=20.0, idle=3600.0,
                                     per_source=500, connections=9000),
                    api=PortLimits(handshake=2.0, first_request=3.0, idle=45.0,
                                   per_source=8, connections=64),
                    peer=PortLimits(handshake=10.0, first_request=10.0, idle=1800.0,
                                    per_source=16, connections=1024),
                    replication=PortLimits(handshake=10.0, first_request=10.0, idle=120.0,
                                           per_source=2, connections=64),
                ),
                peers=PeersConfig(listen=Address("10.0.0.1", 1534), sync=1, sync_timeout=0.5,
                                  retain=5000),
            ),
        )

    def test_the_envoy_idle_limit_follows_the_checkin_interval(self):
        self.assertEqual(config_from_mapping({"checkin": {"interval": "5m"}}).limits.envoy.idle,
                         1200.0)  # four intervals, once that is over ten minutes
        error = self.assertRaises(ConfigError, config_from_mapping,
                                  {"checkin": {"interval": "1m"},
                                   "limits": {"envoy": {"idle": "60s"}}})
        self.assertIn("limits.envoy.idle", str(error))
        self.assertIn("longer than checkin.interval", str(error))

    def test_frozen(self):
        cfg = config_from_mapping(FULL)
        self.assertRaises(AttributeError, setattr, cfg, "hostcrates", None)
        self.assertRaises(AttributeError, setattr, cfg.spanner.gossip, "port", 1)

    def test_numbers_as_durations(self):
        cfg = config_from_mapping(
            {"checkin": {"interval": 30}, "spanner": {"gossip": {"interval": 0.05}}}
        )
        self.assertEqual(cfg.checkin.interval, 30.0)
        self.assertEqual(cfg.spanner.gossip.interval, 0.05)

    def test_range_edges(self):
        cfg = config_from_mapping(
            {
                "checkin": {"interval": "1d", "offline_after": 100},
                "spanner": {
                    "gossip": {"interval": "60s", "port": 65535, "group": "224.0.0.0"},
                    "snapshot": {"anti_entropy": "1s"},
                },
            }
        )
        self.assertEqual(cfg.checkin.interval, 86400.0)
        self.assertEqual(cfg.spanner.gossip.interval, 60.0)
        self.assertEqual(cfg.spanner.snapshot.anti_entropy, 1.0)
        cfg = config_from_mapping(
            {
                "checkin": {"interval": "1ms", "offline_after": 1},
                "spanner": {
                    "gossip": {"port": 1, "group": "239.255.255.255"},
                    "snapshot": {"anti_entropy": "1d"},
                },
            }
        )
        self.assertEqual(cfg.checkin.interval, 0.001)

    def test_dbus_buses(self):
        for bus in ["none", "session", "system", "unix:path=/run/x", "tcp:host=h,port=1"]:
            self.assertEqual(config_from_mapping({"dbus": {"bus": bus}}).dbus.bus, bus)

    def test_ipv6_interface(self):
        cfg = config_from_mapping({"spanner": {"gossip": {"interface": "::1"}}})
        self.assertEqual(cfg.spanner.gossip.interface, "::1")

    def test_tls_null_means_none(self):
        self.assertIsNone(config_from_mapping({"server": {"tls": None}}).server.tls)


#: Every key name of server.yaml, at any depth.
KEY_NAMES = (
    {"server", "checkin", "hostcrates", "spanner", "dbus", "limits", "peers", "tls",
     "cert_file", "key_file", "offline_after", "snapshot", "anti_entropy", "bus"}
    | schema._SERVER_KEYS | schema._SPANNER_KEYS | schema._GOSSIP_KEYS | schema._PEERS_KEYS
    | set(schema.LIMIT_DEFAULTS) | schema._LIMIT_KEYS
)


def uncommented(text):
    """``text`` with its commented-out settings turned on: each ``# key: value``
    line whose key is a server.yaml key loses its ``# `` (so keeps its indent).
    A setting shown as ``key: null`` then ``# key: example`` takes the example."""
    def turn_on(match):
        return match.group(1) + match.group(2)

    names = "|".join(sorted(KEY_NAMES))
    return re.sub(r"(?m)^( *)# ( *(?:%s):.*)$" % (names,), turn_on, text)


def dotted_keys(data, prefix=""):
    """Every key of a nested mapping, dotted (``server.tls.cert_file``)."""
    keys = set()
    for key, value in data.items():
        keys.add(prefix + key)
        if isinstance(value, dict):
            keys |= dotted_keys(value, prefix + key + ".")
    return keys


class ExampleFileTests(FixedHostnameMixin, SynchronousTestCase):
    """etc/server.yaml, which is installed as /etc/vigo/server.yaml (etc/vigo.service),
    starts as shipped (tests/test_etc.py starts it) and names every key: set, or
    shown commented out where the default is none or this machine's name."""

    def read(self, text_filter=lambda text: text):
        import yaml

        with open(EXAMPLE, encoding="utf-8") as f:
            return yaml.safe_load(text_filter(f.read()))

    def test_example_loads(self):
        cfg = load_config(EXAMPLE, environ={})
        self.assertEqual(cfg.source, EXAMPLE)
        # Absolute: the unit's state directory, not a path under /etc/vigo.
        self.assertEqual(cfg.server.data_dir, "/var/lib/vigo")
        self.assertEqual(cfg.server.hostname, "bolt9.example.com")  # this machine's
        self.assertIsNone(cfg.server.tls)  # the server makes its own certificate
        self.assertEqual(cfg.hostcrates, "/etc/vigo/hostcrates.yaml")
        self.assertEqual(cfg.spanner.mode, "standalone")
        self.assertEqual(cfg.spanner.bolt_name, "bolt9.example.com")
        self.assertEqual(cfg.spanner.patterns, ("*.dc1.example.com",))
        self.assertEqual(cfg.spanner.gossip.interval, 0.5)
        self.assertEqual(cfg.dbus.bus, "none")
        self.assertIsNone(cfg.peers.listen)  # HA is opt-in (docs/ha.md)

    def test_paths_are_absolute(self):
        for data in (self.read(), self.read(uncommented)):
            paths = [data["server"]["data_dir"], data["hostcrates"]]
            if data["server"]["tls"] is not None:
                paths += data["server"]["tls"].values()
            for path in paths:
                self.assertTrue(os.path.isabs(path), path)

    def test_commented_settings(self):
        """The settings shown commented out are valid, and turn on what they say."""
        shipped = self.read()
        self.assertEqual(dotted_keys(self.read(uncommented)) - dotted_keys(shipped),
                         {"server.hostname", "server.tls.cert_file", "server.tls.key_file",
                          "spanner.bolt_name"})
        cfg = config_from_mapping(self.read(uncommented), base_dir="/etc/vigo")
        self.assertEqual(cfg.server.hostname, "bolt1.example.com")
        self.assertEqual(cfg.server.tls,
                         TLSFiles("/etc/vigo/tls/api.crt", "/etc/vigo/tls/api.key"))
        self.assertEqual(cfg.spanner.bolt_name, "dc1")
        self.assertEqual(cfg.peers.listen, Address("0.0.0.0", 1534))
        # Everything else is as shipped.
        as_shipped = config_from_mapping(shipped, base_dir="/etc/vigo")
        self.assertEqual(
            attr.evolve(cfg, server=attr.evolve(cfg.server, hostname=as_shipped.server.hostname,
                                                tls=None),
                        spanner=attr.evolve(cfg.spanner, bolt_name=as_shipped.spanner.bolt_name),
                        peers=attr.evolve(cfg.peers, listen=None)),
            as_shipped)

    def test_example_has_every_key(self):
        """The example names every key the loader knows (each section's allowed set),
        counting the commented-out ones."""
        data = self.read(uncommented)
        self.assertEqual(set(data), {"server", "checkin", "hostcrates", "spanner", "dbus",
                                     "limits", "peers", "log"})
        self.assertEqual(set(data["peers"]), schema._PEERS_KEYS)
        self.assertEqual(set(data["limits"]), set(schema.LIMIT_DEFAULTS))
        for port in schema.LIMIT_DEFAULTS:
            self.assertEqual(set(data["limits"][port]), schema._LIMIT_KEYS)
        self.assertEqual(set(data["server"]), schema._SERVER_KEYS)
        self.assertEqual(set(data["server"]["tls"]), {"cert_file", "key_file"})
        self.assertEqual(set(data["checkin"]), {"interval", "offline_after"})
        self.assertEqual(set(data["spanner"]), schema._SPANNER_KEYS)
        self.assertEqual(set(data["spanner"]["gossip"]), schema._GOSSIP_KEYS)
        self.assertEqual(set(data["spanner"]["snapshot"]), {"anti_entropy"})
        self.assertEqual(set(data["dbus"]), {"bus"})
        self.assertEqual(set(data["log"]), {"level"})


def nest(key, value):
    """{"a": {"b": value}} for key "a.b"."""
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


# (dotted key, bad value, a fragment of what is allowed)
BAD_VALUES = [
    ("server.data_dir", "", "non-empty string"),
    ("server.data_dir", 5, "non-empty string"),
    ("server.data_dir", None, "non-empty string"),
    ("server.hostname", "", "non-empty string"),
    ("server.hostname", "bad_host.example.com", "letters, digits, '-' and '.'"),
    ("server.hostname", "-bad.example.com", "is not a hostname"),
    ("server.hostname", "a..b", "is not a hostname"),
    ("server.hostname", ".", "is not a hostname"),
    ("server.hostname", "a" * 64 + ".com", "is not a hostname"),
    ("server.hostname", "\u212a.example.com", "is not a hostname"),
    ("server.hostname", 42, "non-empty string"),
    ("server.envoy_listen", "127.0.0.1", "host:port"),
    ("server.envoy_listen", "127.0.0.1:70000", "host:port"),
    ("server.envoy_listen", 1530, "host:port"),
    ("server.api_listen", "::1:8443", "[::1]:1530"),
    ("server.tls", "cert.pem", "is not a mapping (keys: cert_file, key_file)"),
    ("server.tls.cert_file", 7, "non-empty string"),
    ("server.tls.key_file", "", "non-empty string"),
    ("checkin.interval", "15x", "is not a duration (use e.g. 500ms, 15s, 1h)"),
    ("checkin.interval", "0s", "out of range (allowed: more than 0s, at most 1d)"),
    ("checkin.interval", 0, "out of range"),
    ("checkin.interval", "25h", "out of range (allowed: more than 0s, at most 1d)"),
    ("checkin.interval", "-1s", "is not a duration"),
    ("checkin.interval", True, "is not a duration"),
    ("checkin.interval", None, "is not a duration"),
    ("checkin.offline_after", 0, "integer from 1 to 100"),
    ("checkin.offline_after", 101, "integer from 1 to 100"),
    ("checkin.offline_after", 3.0, "integer from 1 to 100"),
    ("checkin.offline_after", True, "integer from 1 to 100"),
    ("checkin.offline_after", "3", "integer from 1 to 100"),
    ("hostcrates", "", "non-empty string"),
    ("hostcrates", ["a.yaml"], "non-empty string"),
    ("spanner.mode", "hub", "allowed: spanner, standalone"),
    ("spanner.mode", "Spanner", "allowed: spanner, standalone"),
    ("spanner.mode", True, "allowed: spanner, standalone"),
    ("spanner.bolt_name", "", "is not a name"),
    ("spanner.bolt_name", "dc 1", "is not a name"),
    ("spanner.bolt_name", 1, "is not a name"),
    ("spanner.patterns", "*.example.com", "is not a list"),
    ("spanner.patterns[1]", "", "non-empty string"),
    ("spanner.patterns[1]", 5, "non-empty string"),
    ("spanner.patterns[1]", ".", "hostname glob"),
    ("spanner.peer_listen", "peer", "host:port"),
    ("spanner.gossip.group", "10.0.0.1", "IPv4 multicast address (allowed: 224.0.0.0/4)"),
    ("spanner.gossip.group", "ff02::1", "IPv4 multicast address"),
    ("spanner.gossip.group", "240.0.0.1", "IPv4 multicast address"),
    ("spanner.gossip.group", 239, "non-empty string"),
    ("spanner.gossip.port", 0, "integer from 1 to 65535"),
    ("spanner.gossip.port", 65536, "integer from 1 to 65535"),
    ("spanner.gossip.port", "1532", "integer from 1 to 65535"),
    ("spanner.gossip.interface", "eth0", "is not an IP address"),
    ("spanner.gossip.interface", "", "non-empty string"),
    ("spanner.gossip.interval", "10ms", "out of range (allowed: 50ms to 60s)"),
    ("spanner.gossip.interval", "61s", "out of range (allowed: 50ms to 60s)"),
    ("spanner.gossip.interval", "soon", "is not a duration"),
    ("spanner.gossip.multicast", "yes please", "boolean (use true or false)"),
    ("spanner.gossip.multicast", 1, "boolean"),
    ("spanner.gossip.multicast", None, "boolean"),
    ("spanner.gossip.seeds", "bolt2:1532", "is not a list"),
    ("spanner.gossip.seeds[1]", "bolt2", "host:port"),
    ("spanner.gossip.seeds[1]", "bolt2:0", "allowed: 1..65535"),
    ("spanner.gossip.seeds[1]", {"host": "x"}, "host:port"),
    ("spanner.snapshot.anti_entropy", "500ms", "out of range (allowed: 1s to 1d)"),
    ("spanner.snapshot.anti_entropy", "2d", "out of range (allowed: 1s to 1d)"),
    ("spanner.snapshot.anti_entropy", [], "is not a duration"),
    ("dbus.bus", "bus", "allowed: none, session, system or a D-Bus address"),
    ("dbus.bus", "", "allowed: none, session, system"),
    ("dbus.bus", None, "allowed: none, session, system"),
]


class ValidationTests(FixedHostnameMixin, SynchronousTestCase):
    """Each mistake is one ConfigError line: source, dotted key, value, what is allowed."""

    def assertRefused(self, data, key, value, allowed, source=None):
        error = self.assertRaises(ConfigError, config_from_mapping, data, source=source)
        message = str(error)
        self.assertNotIn("\n", message)
        prefix = f"{source or 'config'}: {key}: {value!r} "
        self.assertTrue(message.startswith(prefix), f"{message!r} does not start {prefix!r}")
        self.assertIn(allowed, message)
        return message

    def test_bad_values(self):
        for key, value, allowed in BAD_VALUES:
            if key.endswith("[1]"):
                # a list whose second item is bad
                data = nest(key[:-3], ["ok.example.com:1", value] if "seeds" in key else ["ok", value])
            elif key.startswith("server.tls."):
                data = {"server": {"tls": {"cert_file": "c.pem", "key_file": "k.pem"}}}
                data["server"]["tls"][key.rsplit(".", 1)[1]] = value
            else:
                data = nest(key, value)
            self.assertRefused(data, key, value, allowed)

    def test_source_is_named(self):
        self.assertRefused(
            {"checkin": {"interval": "15x"}}, "checkin.interval", "15x",
            "is not a duration (use e.g. 500ms, 15s, 1h)", source="server.yaml",
        )

    def test_top_level_not_a_mapping(self):
        for data in [[], ["server"], "server", 5, True]:
            self.assertRefused(data, "(top level)", data, "is not a mapping (keys: checkin, dbus")

    def test_section_not_a_mapping(self):
        for section in ["server", "checkin", "spanner", "dbus", "spanner.gossip", "spanner.snapshot"]:
            self.assertRefused(nest(section, ["x"]), section, ["x"], "is not a mapping (keys: ")

    def test_unknown_keys(self):
        for key, allowed in [
            ("servers", "allowed: checkin, dbus, hostcrates, limits, log, peers, server, "
                        "spanner"),
            ("server.port", "allowed: api_listen, data_dir, envoy_listen, hostname, tls"),
            ("server.tls.ca_file", "allowed: cert_file, key_file"),
            ("checkin.timeout", "allowed: interval, offline_after"),
            ("spanner.name", "allowed: bolt_name, gossip, mode, patterns, peer_listen, snapshot"),
            ("spanner.gossip.ttl", "allowed: group, interface, interval, multicast, port, seeds"),
            ("spanner.snapshot.every", "allowed: anti_entropy"),
            ("dbus.address", "allowed: bus"),
        ]:
            name = key.rsplit(".", 1)[-1]
            self.assertRefused(nest(key, 1), key, name, allowed)

    def test_non_string_unknown_key(self):
        self.assertRefused({"checkin": {5: 1}}, "checkin.5", 5, "allowed: interval")

    def test_tls_needs_both_files(self):
        for present, missing in [("cert_file", "key_file"), ("key_file", "cert_file")]:
            error = self.assertRaises(
                ConfigError, config_from_mapping, {"server": {"tls": {present: "x.pem"}}}
            )
            self.assertEqual(
                str(error), f"config: server.tls.{missing}: missing: server.tls needs {missing}"
            )

    def test_newlines_stay_escaped(self):
        message = self.assertRefused(
            {"spanner": {"mode": "a\nb"}}, "spanner.mode", "a\nb", "allowed"
        )
        self.assertIn("'a\\nb'", message)

    def test_long_values_are_shortened(self):
        error = self.assertRaises(ConfigError, config_from_mapping, {"dbus": {"bus": "x" * 10000}})
        self.assertLess(len(str(error)), 300)


class RetiredKeyTests(FixedHostnameMixin, SynchronousTestCase):
    """Hub-and-spoke keys are refused wherever they are, before anything else."""

    def assertRetired(self, data, key, name, source=None):
        error = self.assertRaises(ConfigError, config_from_mapping, data, source=source)
        self.assertEqual(
            str(error),
            f"{source or 'config'}: {key}: {name!r} is a retired hub-and-spoke key; "
            f"spanner federation replaced it, see {MIGRATION_DOC}",
        )

    def test_constants(self):
        self.assertEqual(RETIRED_KEYS, {"role", "hub", "hub_addr", "spokes", "spoke_id"})
        self.assertEqual(MIGRATION_DOC, "docs/migration/hub-spoke.md")
        self.assertTrue(
            os.path.isfile(os.path.join(os.path.dirname(__file__), "..", MIGRATION_DOC))
        )

    def test_top_level(self):
        for name in sorted(RETIRED_KEYS):
            self.assertRetired({name: "x"}, name, name)
            self.assertRetired({name: None}, name, name)

    def test_nested(self):
        for name in sorted(RETIRED_KEYS):
            self.assertRetired({"spanner": {name: "x"}}, f"spanner.{name}", name)
            self.assertRetired(
                {"spanner": {"gossip": {name: ["a:1"]}}}, f"spanner.gossip.{name}", name
            )

    def test_example_message(self):
        self.assertRetired({"spanner": {"hub": True}}, "spanner.hub", "hub", source="server.yaml")

    def test_inside_lists(self):
        self.assertRetired(
            {"spanner": {"gossip": {"seeds": [{"hub_addr": "a:1"}]}}},
            "spanner.gossip.seeds[0].hub_addr",
            "hub_addr",
        )

    def test_under_unknown_sections(self):
        self.assertRetired({"cluster": {"spokes": ["a", "b"]}}, "cluster.spokes", "spokes")
        self.assertRetired({"a": [{"b": {"spoke_id": 3}}]}, "a[0].b.spoke_id", "spoke_id")

    def test_checked_before_other_errors(self):
        """A retired key wins over unknown keys and bad values seen earlier."""
        data = {
            "unknown": 1,
            "checkin": {"interval": "bad"},
            "server": "not a mapping",
            "spanner": {"mode": "hub", "role": "hub"},
        }
        self.assertRetired(data, "spanner.role", "role")

    def test_first_in_document_order(self):
        self.assertRetired({"server": {"role": 1}, "spanner": {"hub": 1}}, "server.role", "role")

    def test_values_are_not_keys(self):
        """'hub' as a value is just a bad value, not a retired key."""
        error = self.assertRaises(ConfigError, config_from_mapping, {"spanner": {"mode": "hub"}})
        self.assertNotIn("retired", str(error))

    def test_from_file(self):
        directory = self.mktemp()
        path = write(directory, "server.yaml", "server:\n  hostname: a.example.com\nhub_addr: 10.0.0.1:1\n")
        error = self.assertRaises(ConfigError, load_config, path, environ={})
        self.assertIn(f"{path}: hub_addr: 'hub_addr' is a retired", str(error))
        self.assertIn(MIGRATION_DOC, str(error))

    def test_cyclic_yaml(self):
        """YAML aliases can make a cyclic structure; the scan still ends."""
        directory = self.mktemp()
        path = write(directory, "server.yaml", "extra: &a [1, *a]\n")
        error = self.assertRaises(ConfigError, load_config, path, environ={})
        self.assertIn("extra: ", str(error))
        path = write(directory, "server.yaml", "x: &a\n  y: *a\n  role: 1\n")
        error = self.assertRaises(ConfigError, load_config, path, environ={})
        self.assertIn(": x.role: 'role' is a retired", str(error))


class FileTests(FixedHostnameMixin, SynchronousTestCase):
    """Finding, reading and resolving paths relative to the file."""

    def setUp(self):
        super().setUp()
        self.root = os.path.abspath(self.mktemp())
        self.cwd = os.path.join(self.root, "cwd")
        os.makedirs(self.cwd)

    def test_explicit_beats_environment_and_cwd(self):
        explicit = write(self.root, "explicit.yaml", "")
        env = write(self.root, "env.yaml", "")
        write(self.cwd, "server.yaml", "")
        found = find_config_file(explicit, {"VIGO_CONFIG_FILE": env}, self.cwd)
        self.assertEqual(found, explicit)

    def test_environment_beats_cwd(self):
        env = write(self.root, "env.yaml", "")
        write(self.cwd, "server.yaml", "")
        self.assertEqual(find_config_file(None, {"VIGO_CONFIG_FILE": env}, self.cwd), env)

    def test_cwd_server_yaml(self):
        local = write(self.cwd, "server.yaml", "")
        self.assertEqual(find_config_file(None, {}, self.cwd), local)
        self.assertEqual(find_config_file(None, {"VIGO_CONFIG_FILE": ""}, self.cwd), local)

    def test_nothing(self):
        self.assertIsNone(find_config_file(None, {}, self.cwd))

    def test_relative_explicit_is_under_cwd(self):
        write(self.cwd, "conf.yaml", "")
        self.assertEqual(
            find_config_file("conf.yaml", {}, self.cwd), os.path.join(self.cwd, "conf.yaml")
        )

    def test_explicit_missing(self):
        write(self.cwd, "server.yaml", "")
        missing = os.path.join(self.root, "nope.yaml")
        error = self.assertRaises(ConfigError, find_config_file, missing, {}, self.cwd)
        self.assertEqual(
            str(error), f"--config: {missing!r} is not an existing file (name a config file)"
        )
        self.assertRaises(ConfigError, load_config, missing, environ={}, cwd=self.cwd)

    def test_explicit_directory(self):
        self.assertRaises(ConfigError, find_config_file, self.root, {}, self.cwd)

    def test_environment_missing(self):
        write(self.cwd, "server.yaml", "")
        missing = os.path.join(self.root, "nope.yaml")
        error = self.assertRaises(
            ConfigError, find_config_file, None, {"VIGO_CONFIG_FILE": missing}, self.cwd
        )
        self.assertIn("$VIGO_CONFIG_FILE: ", str(error))
        self.assertIn(repr(missing), str(error))

    def test_load_uses_environment(self):
        env = write(self.root, "env.yaml", "spanner: {mode: spanner}\n")
        cfg = load_config(environ={"VIGO_CONFIG_FILE": env}, cwd=self.cwd)
        self.assertEqual((cfg.source, cfg.spanner.mode), (env, "spanner"))

    def test_load_uses_cwd_file(self):
        local = write(self.cwd, "server.yaml", "checkin: {interval: 1m}\n")
        cfg = load_config(environ={}, cwd=self.cwd)
        self.assertEqual((cfg.source, cfg.checkin.interval), (local, 60.0))

    def test_relative_paths_follow_the_file(self):
        conf_dir = os.path.join(self.root, "etc", "vigo")
        path = write(
            conf_dir,
            "server.yaml",
            "server:\n  data_dir: data\n  tls: {cert_file: c.pem, key_file: ../k.pem}\n"
            "hostcrates: crates.yaml\n",
        )
        write(conf_dir, "c.pem", "")  # the TLS files must exist (checked at load)
        write(os.path.join(self.root, "etc"), "k.pem", "")
        cfg = load_config(path, environ={}, cwd=self.cwd)
        self.assertEqual(cfg.server.data_dir, os.path.join(conf_dir, "data"))
        self.assertEqual(cfg.hostcrates, os.path.join(conf_dir, "crates.yaml"))
        self.assertEqual(
            cfg.server.tls,
            TLSFiles(os.path.join(conf_dir, "c.pem"), os.path.join(self.root, "etc", "k.pem")),
        )

    def test_relative_config_path_resolves_from_its_directory(self):
        write(os.path.join(self.cwd, "sub"), "server.yaml", "hostcrates: h.yaml\n")
        cfg = load_config(os.path.join("sub", "server.yaml"), environ={}, cwd=self.cwd)
        self.assertEqual(cfg.hostcrates, os.path.join(self.cwd, "sub", "h.yaml"))

    def test_absolute_paths_are_kept(self):
        path = write(self.root, "server.yaml", "server: {data_dir: /var/lib/vigo}\n")
        self.assertEqual(load_config(path, environ={}).server.data_dir, "/var/lib/vigo")

    def test_syntax_error_names_file_and_line(self):
        path = write(self.root, "server.yaml", "server:\n  hostname: a\n   bad: [\n")
        error = self.assertRaises(ConfigError, load_config, path, environ={})
        message = str(error)
        self.assertTrue(message.startswith(f"{path}: line 3"), message)
        self.assertIn("YAML syntax error", message)
        self.assertNotIn("\n", message)

    def test_unclosed_flow_sequence(self):
        path = write(self.root, "server.yaml", "spanner:\n  patterns: [a, b\n")
        error = self.assertRaises(ConfigError, load_config, path, environ={})
        self.assertIn(f"{path}: line ", str(error))
        self.assertNotIn("\n", str(error))

    def test_tab_indentation(self):
        path = write(self.root, "server.yaml", "server:\n\thostname: a\n")
        error = self.assertRaises(ConfigError, load_config, path, environ={})
        self.assertIn(f"{path}: line 2", str(error))

    def test_not_utf8(self):
        path = os.path.join(self.root, "server.yaml")
        with open(path, "wb") as f:
            f.write(b"server:\n  hostname: \xff\xfe\n")
        error = self.assertRaises(ConfigError, load_config, path, environ={})
        self.assertIn(path, str(error))

    def test_file_errors_name_the_file(self):
        path = write(self.root, "server.yaml", "checkin:\n  interval: 15x\n")
        error = self.assertRaises(ConfigError, load_config, path, environ={})
        self.assertEqual(
            str(error),
            f"{path}: checkin.interval: '15x' is not a duration (use e.g. 500ms, 15s, 1h)",
        )

    def test_yaml_booleans_and_strings(self):
        """Quoted 'true' is a string, so it is not a boolean."""
        path = write(self.root, "server.yaml", "spanner:\n  gossip:\n    multicast: 'true'\n")
        error = self.assertRaises(ConfigError, load_config, path, environ={})
        self.assertIn("spanner.gossip.multicast: 'true' is not a boolean", str(error))
        path = write(self.root, "server.yaml", "spanner:\n  gossip:\n    multicast: false\n")
        self.assertFalse(load_config(path, environ={}).spanner.gossip.multicast)


class OverrideTests(FixedHostnameMixin, SynchronousTestCase):
    """--mode and --data-dir beat the file."""

    def setUp(self):
        super().setUp()
        self.root = os.path.abspath(self.mktemp())
        self.cwd = os.path.join(self.root, "cwd")
        os.makedirs(self.cwd)
        self.path = write(
            os.path.join(self.root, "etc"),
            "server.yaml",
            "server:\n  data_dir: from-file\nspanner:\n  mode: standalone\n  bolt_name: dc1\n",
        )

    def test_mode_beats_file(self):
        cfg = load_config(self.path, mode="spanner", environ={}, cwd=self.cwd)
        self.assertEqual(cfg.spanner.mode, "spanner")
        self.assertEqual(cfg.spanner.bolt_name, "dc1")

    def test_data_dir_beats_file_relative_to_cwd(self):
        cfg = load_config(self.path, data_dir="var/x", environ={}, cwd=self.cwd)
        self.assertEqual(cfg.server.data_dir, os.path.join(self.cwd, "var", "x"))
        cfg = load_config(self.path, data_dir="/abs/dir", environ={}, cwd=self.cwd)
        self.assertEqual(cfg.server.data_dir, "/abs/dir")

    def test_without_overrides_the_file_wins(self):
        cfg = load_config(self.path, environ={}, cwd=self.cwd)
        self.assertEqual(cfg.spanner.mode, "standalone")
        self.assertEqual(cfg.server.data_dir, os.path.join(self.root, "etc", "from-file"))

    def test_overrides_without_a_file(self):
        cfg = load_config(mode="spanner", data_dir="d", environ={}, cwd=self.cwd)
        self.assertIsNone(cfg.source)
        self.assertEqual(cfg.spanner.mode, "spanner")
        self.assertEqual(cfg.server.data_dir, os.path.join(self.cwd, "d"))

    def test_override_replaces_a_bad_file_value(self):
        path = write(self.root, "bad.yaml", "spanner:\n  mode: hubby\nserver: {data_dir: ''}\n")
        cfg = load_config(path, mode="standalone", data_dir="d", environ={}, cwd=self.cwd)
        self.assertEqual(cfg.spanner.mode, "standalone")

    def test_override_into_null_section(self):
        path = write(self.root, "null.yaml", "spanner:\nserver:\n")
        cfg = load_config(path, mode="spanner", environ={}, cwd=self.cwd)
        self.assertEqual(cfg.spanner.mode, "spanner")

    def test_override_into_empty_file(self):
        path = write(self.root, "empty.yaml", "")
        cfg = load_config(path, mode="spanner", data_dir="d", environ={}, cwd=self.cwd)
        self.assertEqual(cfg.spanner.mode, "spanner")
        self.assertEqual(cfg.server.data_dir, os.path.join(self.cwd, "d"))

    def test_override_does_not_hide_a_bad_shape(self):
        for text, key in [("- a\n", "(top level)"), ("spanner: [1]\n", "spanner")]:
            path = write(self.root, "shape.yaml", text)
            error = self.assertRaises(
                ConfigError, load_config, path, mode="spanner", environ={}, cwd=self.cwd
            )
            self.assertIn(f"{path}: {key}: ", str(error))

    def test_bad_mode_override(self):
        error = self.assertRaises(
            ConfigError, load_config, self.path, mode="hub", environ={}, cwd=self.cwd
        )
        self.assertEqual(
            str(error), "command line: --mode: 'hub' is not allowed (allowed: spanner, standalone)"
        )

    def test_bad_data_dir_override(self):
        error = self.assertRaises(
            ConfigError, load_config, self.path, data_dir="", environ={}, cwd=self.cwd
        )
        self.assertEqual(str(error), "command line: --data-dir: '' is not a non-empty string")

    def test_retired_key_still_refused_with_overrides(self):
        path = write(self.root, "old.yaml", "spanner:\n  role: hub\n")
        error = self.assertRaises(
            ConfigError, load_config, path, mode="spanner", environ={}, cwd=self.cwd
        )
        self.assertIn("spanner.role: 'role' is a retired", str(error))


# Hypothesis: arbitrary YAML-ish data never escapes as anything but ConfigError.

_KNOWN_KEYS = sorted(
    {"server", "checkin", "hostcrates", "spanner", "dbus", "tls", "cert_file", "key_file",
     "interval", "offline_after", "anti_entropy", "bus"}
    | schema._SERVER_KEYS | schema._SPANNER_KEYS | schema._GOSSIP_KEYS | RETIRED_KEYS
)
_PLAUSIBLE = [
    "", " ", ".", "none", "session", "system", "unix:path=/x", "standalone", "spanner",
    "15s", "500ms", "0s", "1h30m", "-1s", "25h", "127.0.0.1:1530", "[::1]:0", "::1",
    "a:0", "239.192.86.71", "10.0.0.1", "224.0.0.0", "*.example.com", "bolt1.example.com",
    "Bolt1.Example.COM.", "a..b", "var/vigo", "/abs", "\x00", "\u212a",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(_PLAUSIBLE)
    | st.binary(max_size=4)
    | st.dates()
)
keys = st.sampled_from(_KNOWN_KEYS) | st.text(max_size=6) | st.integers() | st.none() | st.booleans()
yamlish = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)


def section(names, values):
    return st.dictionaries(st.sampled_from(sorted(names)), values, max_size=len(names))


# Shaped like a real config, so that the deeper checks are reached too.
shaped = st.fixed_dictionaries(
    {},
    optional={
        "server": section(schema._SERVER_KEYS, scalars | section({"cert_file", "key_file"}, scalars)),
        "checkin": section({"interval", "offline_after"}, scalars),
        "hostcrates": scalars,
        "spanner": section(
            schema._SPANNER_KEYS,
            scalars
            | st.lists(scalars, max_size=3)
            | section(schema._GOSSIP_KEYS, scalars | st.lists(scalars, max_size=3))
            | section({"anti_entropy"}, scalars),
        ),
        "dbus": section({"bus"}, scalars),
    },
)


class PropertyTests(FixedHostnameMixin, SynchronousTestCase):
    """config_from_mapping returns a Config or raises ConfigError, nothing else."""

    def check(self, data):
        try:
            result = config_from_mapping(data, source="fuzz.yaml", base_dir="/base")
        except ConfigError as e:
            self.assertNotIn("\n", str(e))
            self.assertTrue(str(e).startswith("fuzz.yaml: "), str(e))
        else:
            self.assertIsInstance(result, Config)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(yamlish)
    def test_arbitrary_data(self, data):
        self.check(data)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(shaped)
    def test_config_shaped_data(self, data):
        self.check(data)


class UnprintableKeyTests(SynchronousTestCase):
    """Found by Hypothesis: a key with a newline once broke the one-line error."""

    def test_newline_in_key_stays_on_one_line(self):
        for data in ({"\n": 1}, {"server": {"a\nb": 1}}):
            error = self.assertRaises(ConfigError, config_from_mapping, data, source="f.yaml")
            self.assertNotIn("\n", str(error))
