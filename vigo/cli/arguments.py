"""``vigocli``'s command line: its options, subcommands and argument checks.

``build_parser`` knows every command ``vigo.cli.commands.COMMANDS`` can send; the
command key each leaf sets (``options.command``) is the row to use.
``vigo.cli.completion`` turns the same parser into shell completion scripts.

A usage error exits 2 with argparse's lines on stderr; with ``--json`` anywhere
on the command line, the error is also one JSON object on stdout, as every
other error of ``vigocli --json`` is (``vigo.cli.format.report_error``).
"""

import argparse
import contextvars
import json
import sys

from vigo import __version__
from vigo.cli.format import report_error
from vigo.config import parse_duration

DEFAULT_API = "https://127.0.0.1:8443"
VERSION = f"%(prog)s (vigosrv) {__version__}"
SHELLS = ("bash", "zsh")
JSON_HELP = ("print the server's JSON answer; an error is then one JSON object on stdout, "
             '{"error": CODE, "detail": TEXT}, besides the usual line on stderr')
EPILOG = ("Exit status: 0 done, 1 refused by the server or no answer, 2 a usage error. "
          "With --json, what a command prints on stdout is JSON, an error included: "
          '{"error": CODE, "detail": TEXT} (and "http_status" when the server refused); '
          "the human line stays on stderr. Shell completion: vigocli completion bash|zsh.")

COMPLETION_HELP = """\
Print a completion script for SHELL (bash or zsh) on stdout.

bash: for you, in ~/.bashrc:
  source <(vigocli completion bash)
or for everyone:
  vigocli completion bash > /usr/share/bash-completion/completions/vigocli

zsh: save it as _vigocli in a directory of $fpath, for you:
  mkdir -p ~/.zfunc && vigocli completion zsh > ~/.zfunc/_vigocli
with, in ~/.zshrc, before compinit:
  fpath=(~/.zfunc $fpath); autoload -Uz compinit && compinit
or for everyone:
  vigocli completion zsh > /usr/local/share/zsh/site-functions/_vigocli

Commands, options and choices complete, and paths where a file or directory
is asked for; bolt names, envoys and tokens do not (that would ask the server).
"""

#: Where ``parse`` wants a usage error as JSON (``--json`` was given), or None.
_json_errors = contextvars.ContextVar("vigocli_json_errors", default=None)


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` (usage and message on stderr, exit 2) whose
    usage errors are also JSON on stdout when ``parse`` saw ``--json``."""

    def error(self, message):
        out = _json_errors.get()
        if out is not None:
            report_error(out, None, True, "usage", message)
        super().error(message)


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _duration(text):
    try:
        seconds = parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration (use e.g. 30m, 1h, 7d)") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is a zero duration: give more than 0 s")
    return text


def _name(text):
    if not text.strip():
        raise argparse.ArgumentTypeError("a bolt name cannot be empty")
    return text


def _patterns(text):
    patterns = [p.strip() for p in text.split(",") if p.strip()]
    if not patterns:
        raise argparse.ArgumentTypeError(
            f"{text!r} holds no hostname glob (use e.g. '*.dc1.example.com,*.dc1.internal')")
    return patterns


def _not_a_constant(name):
    raise ValueError(name)


def argument_value(text):
    """An action argument's value: JSON when it parses as JSON, else the text."""
    try:
        return json.loads(text, parse_constant=_not_a_constant)
    except ValueError:
        return text


class KeyValues(argparse.Action):
    """``--arg KEY=VALUE``, repeatable, into one dict; a key only once."""

    def __call__(self, parser, namespace, values, option_string=None):
        key, equals, value = values.partition("=")
        if not equals or not key:
            raise argparse.ArgumentError(self, f"{values!r} is not KEY=VALUE")
        args = dict(getattr(namespace, self.dest, None) or {})
        if key in args:
            raise argparse.ArgumentError(self, f"{key!r} is given twice")
        args[key] = argument_value(value)
        setattr(namespace, self.dest, args)


def _global_options(parser, default):
    """The connection options, accepted before or after the command.

    Leaf parsers get them with ``SUPPRESS`` defaults so an option given
    before the command is not reset by the leaf.
    """
    parser.add_argument("--api", metavar="URL", default=default(None),
                        help=f"the server's API (default: $VIGO_API or {DEFAULT_API})")
    parser.add_argument("--token", default=default(None),
                        help="API token (default: $VIGO_TOKEN)")
    parser.add_argument("--data-dir", metavar="DIR", default=default(None),
                        help="on the server host: use the URL, admin token and "
                             "certificate the server keeps in DIR")
    parser.add_argument("--ca-file", metavar="PEM", default=default(None),
                        help="trust this certificate or CA bundle for HTTPS")
    parser.add_argument("--json", action="store_true", default=default(False), help=JSON_HELP)


def build_parser():
    """The ``vigocli`` argument parser."""
    common = Parser(add_help=False)
    _global_options(common, lambda value: argparse.SUPPRESS)
    parser = Parser(
        prog="vigocli", description="Administer a Vigo server through its REST API.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=VERSION,
                        help="print vigocli's version (that of vigosrv) and exit")
    _global_options(parser, lambda value: value)
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)

    def command(subparsers, name, key, help):
        leaf = subparsers.add_parser(name, help=help, description=help, parents=[common])
        leaf.set_defaults(command=key)
        return leaf

    command(groups, "status", "status", "the server at a glance")

    token = groups.add_parser("token", help="enrollment tokens").add_subparsers(
        dest="action", metavar="ACTION", required=True)
    create = command(token, "create", "token create", "mint an enrollment token (shown once)")
    create.add_argument("--uses", type=_positive_int, default=1,
                        help="envoys it may enroll (default 1)")
    create.add_argument("--expires-in", type=_duration, metavar="DURATION",
                        help="lifetime, e.g. 1h (default: never expires)")
    command(token, "list", "token list", "the enrollment tokens this server minted")
    withdraw = command(token, "withdraw", "token withdraw",
                       "withdraw an enrollment token: refused from now on")
    withdraw.add_argument("token_id", metavar="TOKEN_ID",
                          help="the token's id (from 'token list' or 'token create --json')")

    api_token = groups.add_parser("api-token", help="admin API tokens").add_subparsers(
        dest="action", metavar="ACTION", required=True)
    minted = command(api_token, "create", "api-token create",
                     "mint an admin API token for another operator or tool (shown once)")
    minted.add_argument("name", metavar="NAME", help="who or what it is for, e.g. ci")
    command(api_token, "list", "api-token list", "this server's admin API tokens")
    dropped = command(api_token, "withdraw", "api-token withdraw",
                      "withdraw an admin API token: refused from now on")
    dropped.add_argument("token_id", metavar="TOKEN_ID", help="the token's id ('api-token list')")

    envoys = groups.add_parser("envoys", help="enrolled envoys").add_subparsers(
        dest="action", metavar="ACTION", required=True)
    listing = command(envoys, "list", "envoys list", "list envoys by hostname")
    listing.add_argument("--bolt", metavar="ID", help="only envoys of this bolt")
    listing.add_argument("--offline", action="store_true",
                         help="only active envoys not heard from lately")
    listing.add_argument("--all", action="store_true",
                         help="also the copies bolts keep of envoys they handed on "
                              "(state moved); by default each envoy is listed once, where "
                              "it is now")
    for name, help in (("show", "one envoy in detail"),
                       ("push", "force-push one envoy's bundle"),
                       ("revoke", "revoke one envoy for good")):
        leaf = command(envoys, name, "envoys " + name, help)
        leaf.add_argument("envoy", metavar="ENVOY", help="an envoy id or its hostname")

    spanner = groups.add_parser("spanner", help="the spanner federation").add_subparsers(
        dest="action", metavar="ACTION", required=True)
    command(spanner, "status", "spanner status", "this bolt and its federation at a glance")
    init = command(spanner, "init", "spanner init",
                   "found a federation with this server as its first bolt")
    init.add_argument("--name", type=_name, help="this bolt's name (default: spanner.bolt_name)")
    init.add_argument("--patterns", type=_patterns, metavar="GLOB,...",
                      help="the hostnames this bolt owns (default: spanner.patterns)")
    owner = command(spanner, "owner", "spanner owner",
                    "which bolt owns a hostname, and why (this bolt's roster)")
    owner.add_argument("hostname", metavar="HOSTNAME", help="the hostname to route")
    owner.add_argument("--envoy", metavar="ID",
                       help="an envoy id, so that its override (from a reassign) counts")
    bolt = spanner.add_parser("bolt", help="the federation's bolts").add_subparsers(
        dest="bolt_action", metavar="ACTION", required=True)
    command(bolt, "list", "spanner bolt list", "every bolt in the roster")
    show = command(bolt, "show", "spanner bolt show", "one bolt in detail")
    show.add_argument("bolt", metavar="BOLT", help="a bolt id or its unique name")
    for name, help in (("envoys", "one bolt's envoys, asked of it live"),
                       ("actions", "the peer actions loaded on one bolt, and where each "
                                   "came from (its module and distribution)"),
                       ("push", "force-push every envoy of one bolt")):
        leaf = command(bolt, name, "spanner bolt " + name, help)
        leaf.add_argument("bolt", metavar="BOLT", help="a bolt id or its unique name")
    invite = command(bolt, "invite", "spanner bolt invite",
                     "mint a one-shot invite for another server to join with (shown once)")
    invite.add_argument("--expires-in", type=_duration, metavar="DURATION",
                        help="lifetime, e.g. 30m; at most 24h (default 1h)")
    join = command(bolt, "join", "spanner bolt join",
                   "join the federation of an invite (run on the joining server)")
    join.add_argument("token_text", metavar="TOKEN",
                      help="the invite 'vigocli spanner bolt invite' printed")
    reassign = command(bolt, "reassign", "spanner bolt reassign",
                       "move an envoy to another bolt (it keeps its id and key)")
    reassign.add_argument("envoy", metavar="ENVOY", help="an envoy id or its hostname")
    reassign.add_argument("--to", required=True, metavar="BOLT",
                          help="the destination bolt: an id or its unique name")
    drain = command(bolt, "drain", "spanner bolt drain",
                    "drain a bolt: it takes no new envoys and hands its envoys over")
    drain.add_argument("bolt", metavar="BOLT", help="a bolt id or its unique name")
    drain.add_argument("--to", metavar="BOLT",
                       help="the bolt to move every envoy to (default: each envoy's owner "
                            "by the patterns)")
    remove = command(bolt, "remove", "spanner bolt remove",
                     "drain a bolt, then remove it from the federation for good")
    remove.add_argument("bolt", metavar="BOLT", help="a bolt id or its unique name")
    remove.add_argument("--force", action="store_true",
                        help="remove it without draining when it cannot be reached")
    act = command(bolt, "act", "spanner bolt act", "run a peer action on a bolt")
    act.add_argument("bolt", metavar="BOLT", help="a bolt id or its unique name")
    act.add_argument("action_name", metavar="ACTION", help="the action's name")
    act.add_argument("--arg", dest="args", action=KeyValues, metavar="KEY=VALUE",
                     help="an argument (repeat for more); VALUE is JSON if it parses "
                          "as JSON, else text")

    server = groups.add_parser("server", help="this server's replica set (high availability)") \
        .add_subparsers(dest="action", metavar="ACTION", required=True)
    command(server, "status", "server status",
            "this node's role (primary, standby or fenced), epoch, primary and standbys")
    standby = server.add_parser("standby", help="the standbys of this replica set") \
        .add_subparsers(dest="standby_action", metavar="ACTION", required=True)
    paired = command(standby, "invite", "server standby invite",
                     "at the primary: mint a one-shot invitation for a fresh server to join "
                     "as a standby (shown once)")
    paired.add_argument("--expires-in", type=_duration, metavar="DURATION",
                        help="lifetime, e.g. 30m (default 1h)")
    joining = command(standby, "join", "server standby join",
                      "at a fresh server: become a standby of the invitation's primary")
    joining.add_argument("token_text", metavar="TOKEN",
                         help="the invitation 'vigocli server standby invite' printed")
    command(standby, "list", "server standby list", "the standbys and their lag")
    dropped_standby = command(standby, "remove", "server standby remove",
                              "at the primary: remove a standby from the replica set")
    dropped_standby.add_argument("node_id", metavar="NODE",
                                 help="the standby's node id ('server standby list')")
    command(server, "promote", "server promote",
            "at a standby: become the primary of the next epoch")

    backup = groups.add_parser("backup", help="back up or restore a server (on its host)") \
        .add_subparsers(dest="action", metavar="ACTION", required=True)
    made = command(backup, "create", "backup create",
                   "write a consistent backup of the server in --data-dir DIR to FILE, "
                   "while it runs")
    made.add_argument("file", metavar="FILE", help="the archive to write (mode 0600)")
    made.add_argument("--config", metavar="PATH",
                      help="the server's server.yaml (default: the one it runs with, "
                           "from DIR/run.json)")
    restored = command(backup, "restore", "backup restore",
                       "restore a backup into a new data directory (--data-dir DIR)")
    restored.add_argument("file", metavar="FILE", help="an archive from 'backup create'")

    completion = groups.add_parser(
        "completion", help="print a shell completion script (bash or zsh)",
        description=COMPLETION_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    completion.set_defaults(command="completion")
    completion.add_argument("shell", choices=SHELLS, metavar="SHELL",
                            help="bash or zsh")
    return parser


def wants_json(argv):
    """Whether ``--json`` is among the options of ``argv`` (before any ``--``)."""
    for word in argv:
        if word == "--":
            return False
        if word == "--json":
            return True
    return False


def parse(argv, out=None):
    """Parsed options. A usage error exits 2, after argparse's usage and message
    on stderr and, with ``--json``, ``{"error": "usage", "detail": ...}`` on
    ``out`` (stdout)."""
    wanted = _json_errors.set((sys.stdout if out is None else out) if wants_json(argv) else None)
    try:
        return build_parser().parse_args(argv)
    finally:
        _json_errors.reset(wanted)
