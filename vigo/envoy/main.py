"""``vigo-envoy``'s commands: register this machine, run its envoy, simulate a fleet.

``main`` parses the command line (``vigo.envoy.arguments``, which documents it)
and runs one command: ``register`` enrolls with a token and saves the answer in
the state directory, ``run`` is ``EnvoyRunner`` (the envoy for real), ``sim`` is
the ``Simulator`` (``vigo.envoy.sim.command``). A failure becomes a message on
stderr and an exit code. ``attach`` fails over inside the server's replica set
(``vigo.envoy.replicas``).
"""

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
from vigo.envoy.replicas import FailoverPass, ReplicasUnreachable
from vigo.envoy.sim.command import simulate
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
def attach(reactor, state, protocol=None, listener=None, say=None):
    """Attach to the server in ``state``, following (and saving) redirects and
    failing over inside its replica set.

    When the server's address cannot be reached (refused, timed out, a TLS
    failure, the connection lost before Attached), the other addresses in
    ``state.replicas`` are tried in turn with the same pin (``FailoverPass``);
    the one the envoy attaches at becomes its server address. ``say(line)``
    hears of each move. A Deferred of ``(protocol, Attached)``; it fails when
    no replica could be reached, once per pass.
    """
    say = say or _silent
    passing = FailoverPass(state.server_address, state.replicas)
    hops = 0
    while True:
        try:
            if protocol is None:
                protocol = yield connect(reactor, passing.address, state.server_fingerprint,
                                         listener)
            attached = yield protocol.attach(
                state.envoy_id, state.server_id, state.sign, state.server_key
            ).addTimeout(REQUEST_TIMEOUT, reactor)
            break
        except Redirected as r:
            protocol, hops = None, hops + 1
            same_set = (r.fingerprint, r.server_id) == (state.server_fingerprint, state.server_id)
            state.set_server(r.address, r.fingerprint, r.server_id)
            if hops > MAX_HOPS:
                raise Fatal(f"more than {MAX_HOPS} redirects in a row; "
                            f"last to {r.address}") from None
            if not same_set:  # another server's envoy now: its own replicas, once told
                passing = FailoverPass(r.address)
            elif passing.redirected(r.address) != r.address:
                say(f"{r.address} did not answer, and a standby redirects there; "
                    f"trying replica {passing.address}")
        except (Refused, Fatal, StateError, defer.CancelledError):  # answered, or not to go on
            _close(protocol)
            raise
        except Exception as e:  # noqa: BLE001 -- unreachable: the next replica, if any
            _close(protocol)
            protocol, failed = None, passing.address
            passing.failed(e)  # raises when the pass is over
            say(f"cannot reach {failed} ({e}); trying replica {passing.address}")
    if passing.address != state.server_address:
        say(f"attached at replica {passing.address}, now the server address "
            f"(was {state.server_address})")
    state.learn_server_key(protocol.server_key)
    state.record_attach(passing.address, attached.replicas)
    state.last_seq = max(state.last_seq, attached.last_seq)
    return protocol, attached


def _silent(line):
    pass


def _close(protocol):
    if protocol is not None:
        protocol.close()


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
    protocol, _ = yield attach(reactor, state, protocol, say=lambda line: out.write(line + "\n"))
    protocol.close()
    out.write(f"registered {hostname} as envoy {state.envoy_id} with server "
              f"{state.server_id} at {state.server_address}\n")


# -- run ------------------------------------------------------------------------


@implementer(IEnvoyListener)
class EnvoyRunner:
    """The envoy for real: attach, check in every interval (with jitter), apply
    bundles, follow ForcePush and Redirect, reconnect with backoff (failing over
    to the server's replicas, see ``attach``; a pass over all of them that fails
    is one failure). An ``IEnvoyListener`` of its own connection."""

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
        """Attach, check in once, hang up; a Deferred of what happened (one line).
        A move to another replica is written to ``out`` as it happens."""
        self.verbose = False
        self.protocol, _ = yield attach(self.reactor, self.state, listener=self,
                                        say=self._note)
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
                self.protocol, attached = yield attach(self.reactor, self.state, listener=self,
                                                       say=self._say)
            except Refused as e:
                if not e.retryable:
                    raise
                self._say(f"attach refused: {e.reason}")
            except Fatal:
                raise
            except ReplicasUnreachable as e:  # a whole pass over the replica set: one failure
                self._say(f"cannot attach: {e}")
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
        if self.verbose:
            self._note(line)

    def _note(self, line):
        """Say ``line`` even with ``--once`` (moving to another replica is news)."""
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


@defer.inlineCallbacks
def sim_command(reactor, args, token, out):
    summary = yield simulate(reactor, args, token, out)
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
