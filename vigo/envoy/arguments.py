"""``vigo-envoy``: enroll this machine, run its envoy, or simulate a fleet.

    vigo-envoy register [--server HOST:PORT] TOKEN-SOURCE [--hostname H] --state-dir DIR
    vigo-envoy run --state-dir DIR [--once]
    vigo-envoy sim [--server HOST:PORT] TOKEN-SOURCE --count N --interval 15s
                   [--hostname-template 'web{n}.dc1.example.com'] [--duration 60s] [--json]
                   [--concurrency 200] [--source-addresses 4]

The enrollment token (TOKEN-SOURCE) is read from ``--token-file FILE`` (``-``:
standard input), else from ``$VIGO_ENROLL_TOKEN``, else given as ``--token
TOKEN``, which other users of the machine can see in ``ps``.
``--server`` is where to connect (default: the address in the token); the
server's key is always pinned to the fingerprint in the token. Exit codes:
0 done, 1 refused or failed (the server's reason is printed), 2 usage.

This module holds the argument parser; ``vigo.envoy.main`` runs the commands.
"""

import argparse

from vigo import __version__
from vigo.config.values import parse_address, parse_duration
from vigo.envoy.sim.simulator import DEFAULT_HOSTNAME_TEMPLATE


def _duration(text):
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive_duration(text):
    seconds = _duration(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than zero")
    return seconds


def _address(text):
    try:
        return str(parse_address(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _template(text):
    if "{n}" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} must contain {{n}} (the envoy's number)")
    return text


#: Where an enrollment token is read from when no option gives it.
TOKEN_ENVIRONMENT = "VIGO_ENROLL_TOKEN"


def _token_options(p, what):
    source = p.add_mutually_exclusive_group()
    source.add_argument("--token-file", metavar="FILE",
                        help=f"read {what} from FILE ('-': standard input)")
    source.add_argument("--token", help=f"{what} on the command line (shows in ps; "
                        f"prefer --token-file or ${TOKEN_ENVIRONMENT})")


def build_parser():
    """The ``vigo-envoy`` argument parser."""
    parser = argparse.ArgumentParser(prog="vigo-envoy", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s (vigosrv) {__version__}",
                        help="print vigo-envoy's version (that of vigosrv) and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = commands.add_parser("register", help="enroll this machine with a token")
    p.add_argument("--server", type=_address, metavar="HOST:PORT",
                   help="where to connect (default: the token's address)")
    _token_options(p, "the enrollment token (vgoe_...)")
    p.add_argument("--hostname", help="this envoy's hostname (default: the FQDN)")
    p.add_argument("--state-dir", required=True, metavar="DIR")
    p = commands.add_parser("run", help="check in forever (or --once)")
    p.add_argument("--state-dir", required=True, metavar="DIR")
    p.add_argument("--once", action="store_true", help="attach, check in once, exit")
    p = commands.add_parser("sim", help="simulate N envoys in this process")
    p.add_argument("--server", type=_address, metavar="HOST:PORT",
                   help="where to connect (default: the token's address)")
    _token_options(p, "an enrollment token with enough uses")
    p.add_argument("--count", type=int, required=True, metavar="N")
    p.add_argument("--interval", type=_positive_duration, default=15.0,
                   help="check-in interval (default 15s)")
    p.add_argument("--hostname-template", type=_template, default=DEFAULT_HOSTNAME_TEMPLATE)
    p.add_argument("--duration", type=_duration,
                   help="how long to check in after enrolling (default: until Ctrl-C)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--concurrency", type=int, default=200, help="enrollments at once")
    p.add_argument("--source-addresses", type=int, default=4,
                   help="spread loopback connections over 127.0.0.1..127.0.0.N")
    return parser
