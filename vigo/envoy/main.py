"""``vigo-envoy``'s commands: register this machine, run its envoy, simulate a fleet.

``main`` parses the command line (``vigo.envoy.arguments``, which documents it)
and runs one command: ``register`` enrolls with a token and saves the answer in
the state directory, ``run`` is ``EnvoyRunner`` (the envoy for real), ``sim`` is
the ``Simulator``. A failure becomes a message on stderr and an exit code.
"""

import json
import os
import random
import signal
import socket
import sys

from twisted.internet import defer, task
from zope.interface import implementer

from vigo.envoy.answers import Redirected, Refused
from vigo.envoy.arguments import TOKEN_ENVIRONMENT, build_parser
from vigo.envoy.cadence import jittered, next_seq, reconnect_delay
from vigo.envoy.dial import connect
from vigo.envoy.protocol import IEnvoyListener
from vigo.envoy.sim.figures import format_summary
from vigo.envoy.sim.simulator import Simulator
from vigo.envoy.state import EnvoyState, StateError
from vigo.tokens import MAX_TOKEN_LENGTH, EnrollmentToken, TokenError

MAX_HOPS = 5  # redirects followed in a row
REQUEST_TIMEOUT = 30.0


class Fatal(Exception):
    """Stop with this message and exit code (1 unless given)."""

    def __init__(self, message, code=1):
        Exception.__init__(self, message)
        self.code = code


# -- register -----------------------------------------------------------------


@defer.inlineCallbacks
def register(reactor, state, hostname, token, address=None, listener=None):
    """Enroll ``state``'s key with ``token`` (following redirects) and save the answer.

    Dials ``address`` (default: the token's) pinned to the token's fingerprint.
    A Deferred of the ``EnvoyClientProtocol`` to attach on, or None when the
    envoy must attach to another server (the one now saved in ``state``).
    """
    address = address or token.address
    fingerprint = token.fingerprint
    for _ in range(MAX_HOPS + 1):
        protocol = yield connect(reactor, address, fingerprint, listener)
        try:
            registered = yield protocol.register(
                hostname, state.public_key, str(token), token.token_id, state.sign
            ).addTimeout(REQUEST_TIMEOUT, reactor)
        except Redirected as r:
            address, fingerprint = r.address, r.fingerprint
            continue
        if registered.fingerprint != fingerprint:
            protocol.close()  # another server holds the envoy: attach there
            protocol, address = None, registered.address
        state.record_registration(hostname, registered, address)
        return protocol
    raise Fatal(f"more than {MAX_HOPS} redirects in a row; last to {address}")


@defer.inlineCallbacks
def attach(reactor, state, protocol=None, listener=None):
    """Attach to the server in ``state`` (following and saving redirects).

    A Deferred of ``(protocol, Attached)``.
    """
    for _ in range(MAX_HOPS + 1):
        if protocol is None:
            protocol = yield connect(reactor, state.server_address, state.server_fingerprint,
                                     listener)
        try:
            attached = yield protocol.attach(
                state.envoy_id, state.server_id, state.sign, state.server_key
            ).addTimeout(REQUEST_TIMEOUT, reactor)
        except Redirected as r:
            state.set_server(r.address, r.fingerprint, r.server_id)
            protocol = None
            continue
        except BaseException:
            protocol.close()
            raise
        state.learn_server_key(protocol.server_key)
        state.last_seq = max(state.last_seq, attached.last_seq)
        return protocol, attached
    raise Fatal(f"more than {MAX_HOPS} redirects in a row; last to {state.server_address}")


@defer.inlineCallbacks
def register_command(reactor, args, token, out):
    hostname = args.hostname or socket.getfqdn()
    if hostname.split(".")[0].lower() in ("localhost", "localhost6"):
        raise Fatal(f"this machine calls itself {hostname!r}, which names no machine in a "
                    "fleet; pass --hostname with its real name", code=2)
    state = EnvoyState.open(args.state_dir, create=True)
    if state.registered:
        raise Fatal(f"{args.state_dir} already holds envoy {state.envoy_id}; "
                    "use another --state-dir to enroll again")
    protocol = yield register(reactor, state, hostname, token, args.server)
    protocol, _ = yield attach(reactor, state, protocol)
    protocol.close()
    out.write(f"registered {hostname} as envoy {state.envoy_id} with server "
              f"{state.server_id} at {state.server_address}\n")


# -- run ------------------------------------------------------------------------


@implementer(IEnvoyListener)
class EnvoyRunner:
    """The envoy for real: attach, check in every interval (with jitter), apply
    bundles, follow ForcePush and Redirect, reconnect with backoff. An
    ``IEnvoyListener`` of its own connection."""

    def __init__(self, reactor, state, out, random=random):
        self.reactor = reactor
        self.state = state
        self.out = out
        self.random = random
        self.protocol = None
        self.verbose = True
        self._wake = None
        self._force = self._moved = False

    @defer.inlineCallbacks
    def once(self):
        """Attach, check in once, hang up; a Deferred of what happened (one line)."""
        self.verbose = False
        self.protocol, _ = yield attach(self.reactor, self.state, listener=self)
        try:
            kind, latency = yield self._check_in()
        except Redirected as r:
            self._follow(r)
            return f"redirected to {r.address}: run again"
        finally:
            if self.protocol is not None:
                self.protocol.close()
        if kind == "bundle":
            return f"bundle {self.state.bundle_version.hex()} applied ({latency * 1000:.1f} ms)"
        return f"no_change ({latency * 1000:.1f} ms)"

    @defer.inlineCallbacks
    def run(self):
        """Check in forever; fails only on a refusal that retrying cannot fix."""
        attempt = 0
        while True:
            try:
                self.protocol, attached = yield attach(self.reactor, self.state, listener=self)
            except Refused as e:
                if not e.retryable:
                    raise
                self._say(f"attach refused: {e.reason}")
            except Fatal:
                raise
            except Exception as e:  # noqa: BLE001 -- any failure: back off and retry
                self._say(f"cannot attach to {self.state.server_address}: {e}")
            else:
                attempt = 0
                self._say(f"attached to server {self.state.server_id} at "
                          f"{self.state.server_address} (every {attached.interval:g} s)")
                yield self._check_in_loop(attached.interval)
                if self._moved:
                    self._moved = False
                    continue  # redirected: go there at once
            delay = reconnect_delay(attempt, self.random)
            attempt += 1
            self._say(f"reconnecting in {delay:.1f} s")
            yield self._sleep(delay)

    @defer.inlineCallbacks
    def _check_in_loop(self, interval):
        self._force = True  # the first check-in right after attaching
        while self.protocol is not None:
            if not self._force:
                yield self._sleep(jittered(interval, self.random))
                if self.protocol is None:
                    break
            self._force = False
            try:
                yield self._check_in()
            except Redirected as r:
                self._follow(r)
            except Refused as e:
                self._say(f"check-in refused: {e.reason} ({e.code})")
            except Exception as e:  # noqa: BLE001 -- the connection is gone or bad
                self._say(f"check-in failed: {e}")
                if self.protocol is not None:
                    self.protocol.abort()
                self.protocol = None

    def _check_in(self):
        seq = next_seq(self.state.last_seq, self.reactor.seconds())
        self.state.record_seq(seq)
        d = self.protocol.checkin(seq, self.state.bundle_version)
        return d.addTimeout(REQUEST_TIMEOUT, self.reactor)

    def _follow(self, redirect):
        self._say(f"redirected to {redirect.address} ({redirect.reason})")
        self.state.set_server(redirect.address, redirect.fingerprint, redirect.server_id)
        if self.protocol is not None:
            self.protocol.close()
        self.protocol = None
        self._moved = True
        self._wake_up()

    def _sleep(self, delay):
        d = self._wake = defer.Deferred()
        call = self.reactor.callLater(delay, self._wake_up)
        return d.addBoth(lambda _: call.cancel() if call.active() else None)

    def _wake_up(self):
        d, self._wake = self._wake, None
        if d is not None:
            d.callback(None)

    def _say(self, line):
        if not self.verbose:
            return
        self.out.write(line + "\n")
        self.out.flush()

    # IEnvoyListener
    def envoy_connected(self, protocol):
        pass

    def envoy_disconnected(self, protocol, reason):
        if protocol is self.protocol:
            self._say(f"disconnected: {reason.getErrorMessage()}")
            self.protocol = None
            self._wake_up()

    def envoy_force_push(self, protocol):
        self._force = True
        self._wake_up()

    def envoy_redirected(self, protocol, redirect):
        if protocol is self.protocol:
            self._follow(redirect)

    def envoy_refused(self, protocol, refusal):
        self._say(f"server refused: {refusal.reason} ({refusal.code})")

    def envoy_bundle(self, protocol, bundle):
        self.state.apply_bundle(bundle)
        self._say(f"applied bundle {bundle.version.hex()} (seq {bundle.seq})")


@defer.inlineCallbacks
def run_command(reactor, args, out):
    state = EnvoyState.open(args.state_dir)
    if not state.registered:
        raise Fatal(f"{args.state_dir} holds no enrolled envoy; run vigo-envoy register first")
    runner = EnvoyRunner(reactor, state, out)
    if args.once:
        out.write((yield runner.once()) + "\n")
    else:
        yield runner.run()


# -- sim ------------------------------------------------------------------------


def _raise_file_limit(count):
    try:
        import resource
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < wanted:
            sys.stderr.write(f"vigo-envoy: only {new} open files allowed; "
                             f"{count} envoys need about {wanted}\n")


@defer.inlineCallbacks
def sim_command(reactor, args, token, out):
    from tqdm import tqdm

    _raise_file_limit(args.count)
    progress = tqdm(total=args.count, unit="envoy", desc="enrolling", file=sys.stderr)
    sim = Simulator(reactor, args.server, token, args.count, args.interval,
                    hostname_template=args.hostname_template, concurrency=args.concurrency,
                    source_addresses=args.source_addresses, progress=progress)
    reported = []

    def report(summary):
        if not reported:
            reported.append(summary)
            out.write(json.dumps(summary, indent=2) + "\n" if args.json
                      else format_summary(summary))
            out.flush()
        return summary

    def interrupted():  # Ctrl-C: still print what was measured
        if not reported:
            return sim.stop().addCallback(report)

    reactor.addSystemEventTrigger("before", "shutdown", interrupted)
    yield sim.start()
    if args.duration is None:
        yield defer.Deferred()  # until interrupted
    yield task.deferLater(reactor, args.duration, lambda: None)
    summary = report((yield sim.stop()))
    if summary["enrolled"] == 0 and args.count > 0:
        raise Fatal("no envoy enrolled")


# -- the command line -----------------------------------------------------------


def _token_text(parser, args, environ, stdin):
    """``(where it came from, text)`` of the enrollment token: ``--token``,
    ``--token-file`` or ``$VIGO_ENROLL_TOKEN``; a usage error if none."""
    if args.token is not None:
        return "--token", args.token
    if args.token_file is not None:
        try:
            if args.token_file == "-":
                text = stdin.read(MAX_TOKEN_LENGTH + 2)
            else:
                with open(args.token_file, encoding="utf-8") as f:
                    text = f.read(MAX_TOKEN_LENGTH + 2)
        except (OSError, UnicodeDecodeError) as e:
            parser.error(f"--token-file: cannot read {args.token_file}: {e}")
        return "--token-file", text.strip()
    text = environ.get(TOKEN_ENVIRONMENT, "").strip()
    if text:
        return "$" + TOKEN_ENVIRONMENT, text
    parser.error(f"the enrollment token: give --token-file FILE (or - for standard input), "
                 f"set ${TOKEN_ENVIRONMENT}, or give --token TOKEN")


def main(argv=None, out=None, environ=None, stdin=None):
    """The ``vigo-envoy`` console script (``environ`` and ``stdin``: the
    process's unless given)."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # piped into head: end quietly
    parser = build_parser()
    args = parser.parse_args(argv)
    out = out or sys.stdout
    token = None
    if args.command in ("register", "sim"):
        source, text = _token_text(parser, args, environ if environ is not None else os.environ,
                                   stdin or sys.stdin)
        try:
            token = EnrollmentToken.decode(text)
        except TokenError as e:
            parser.error(f"{source}: {e}")
    if args.command == "sim" and args.count < 0:
        parser.error("--count must not be negative")

    def command(reactor):
        if args.command == "register":
            d = register_command(reactor, args, token, out)
        elif args.command == "run":
            d = run_command(reactor, args, out)
        else:
            d = sim_command(reactor, args, token, out)
        return d.addErrback(_exit)

    task.react(command)


def _exit(failure):
    e = failure.value
    if isinstance(e, Refused):
        message, code = f"refused: {e.reason} ({e.code})", 1
    elif isinstance(e, (Fatal, StateError)):
        message, code = str(e), getattr(e, "code", 1)
    elif isinstance(e, SystemExit):
        return failure
    elif "certificate verify failed" in str(e):
        message, code = ("failed: the server does not hold the key this envoy pins (from its "
                         "token or state dir); check --server: an enrollment token pins the "
                         "server that minted it, so register at that server's envoy address "
                         "(it forwards the envoy to its owner), or the server's identity key "
                         "changed"), 1
    else:
        message, code = f"failed: {failure.getErrorMessage() or e.__class__.__name__}", 1
    sys.stderr.write(f"vigo-envoy: {message}\n")
    raise SystemExit(code)


if __name__ == "__main__":
    main()
