"""``vigo-envoy sim``: run the ``Simulator`` from the command line and print its figures.

``simulate`` enrolls ``--count`` envoys with a progress bar on stderr, lets
them check in for ``--duration`` (or until Ctrl-C) and prints the summary, as
text or JSON, also when interrupted. ``vigo.envoy.main`` parses the command
line and decides the exit code.
"""

import json
import sys

from twisted.internet import defer, task

from vigo.envoy.sim.figures import format_summary
from vigo.envoy.sim.simulator import Simulator


def raise_file_limit(count):
    """Allow the process the open files ``count`` connections need, if it may."""
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
def simulate(reactor, args, token, out):
    """Run the simulation ``args`` describe with ``token``; a Deferred of its
    summary once printed to ``out``."""
    from tqdm import tqdm

    raise_file_limit(args.count)
    # disable=None: a bar only when stderr is a terminal, no "\r" frames in files or pipes.
    progress = tqdm(total=args.count, unit="envoy", desc="enrolling", file=sys.stderr,
                    disable=None)
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
    return report((yield sim.stop()))
