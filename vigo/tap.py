"""``twistd vigo``: options, and the service they make.

The config is loaded while options are parsed, so a bad config or a retired
option stops twistd with one line (naming the key, the value and what is
allowed) and a non-zero exit, before anything listens.
"""

import sys

from twisted.python import usage

from vigo import __version__
from vigo.config import MIGRATION_DOC, RETIRED_KEYS, ConfigError, load_config


def _retired(name):
    def refuse(self, value):
        raise usage.UsageError(
            "--%s is a retired hub-and-spoke option; spanner federation replaced it, "
            "see %s" % (name, MIGRATION_DOC)
        )

    refuse.__doc__ = "Retired (hub-and-spoke); see %s." % (MIGRATION_DOC,)
    return refuse


class Options(usage.Options):
    synopsis = "[--mode standalone|spanner] [--config PATH] [--data-dir DIR]"
    longdesc = (
        "Run vigosrv, the Vigo fleet server. Envoys enroll and check in over TLS on "
        "server.envoy_listen; admins use the HTTPS API on server.api_listen "
        "(vigocli). The config file is --config, else $VIGO_CONFIG_FILE, else "
        "./server.yaml, else built-in defaults; options override the file."
    )
    optParameters = [
        ["config", "c", None, "Path of server.yaml (default: $VIGO_CONFIG_FILE, then ./server.yaml)."],
        ["mode", "m", None, "standalone (one server owns every envoy) or spanner (a federation bolt); overrides spanner.mode."],
        ["data-dir", "d", None, "Directory for the identity key, SQLite database and local admin token; overrides server.data_dir."],
    ]

    config = None

    def opt_version(self):
        """Display vigosrv's version (and Twisted's) and exit."""
        from twisted import copyright

        print("vigosrv (twistd vigo) %s" % (__version__,))
        print("Twisted version: %s" % (copyright.version,))
        sys.exit(0)

    def postOptions(self):
        if self["mode"] is not None and self["mode"] not in ("standalone", "spanner"):
            raise usage.UsageError(
                "--mode: %r is not a mode (use standalone or spanner)" % (self["mode"],)
            )
        try:
            self.config = load_config(
                self["config"], mode=self["mode"], data_dir=self["data-dir"]
            )
        except ConfigError as e:
            # One line, not twistd's usage text: the config is wrong, not the
            # command line.
            sys.stderr.write("twistd vigo: %s\n" % (e,))
            raise SystemExit(1) from None


for _key in sorted(RETIRED_KEYS):
    setattr(Options, "opt_" + _key, _retired(_key.replace("_", "-")))


#: Seconds a thread holds the GIL before another that waits gets it (twistd vigo).
GIL_SWITCH_INTERVAL = 0.001


def makeService(options):
    """The server ``options.config`` describes, as a service for twistd."""
    from twisted.internet import reactor

    from vigo.fleet.hostcrates import HostcratesError
    from vigo.identity import IdentityError
    from vigo.private_files import PrivateFileError
    from vigo.server import build_server
    from vigo.tls import TLSFilesError

    # The reactor shares the GIL with the store's thread and the roster's
    # verifiers: let it back in within 1 ms of wanting it, not Python's 5 ms
    # (a big roster merge otherwise shows in check-ins' p99).
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    try:
        return build_server(options.config, reactor, exit_on_failure=True)
    except (HostcratesError, IdentityError, OSError, PrivateFileError, TLSFilesError) as e:
        sys.stderr.write("twistd vigo: cannot start: %s\n" % (e,))
        raise SystemExit(1) from None
