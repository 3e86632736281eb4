"""Check-ins with their times: the ``vigo-envoy sim`` simulator, every answer recorded.

``vigo-envoy sim`` keeps latency histograms for a whole run; a benchmark that
compares windows of one run (quiet, then while the server does something)
needs each check-in's time. This runs the same ``Simulator`` and writes
``[[sent, seconds], ...]`` (wall-clock send time, latency) to ``--out`` when
it is stopped (SIGTERM or SIGINT), after printing ``ready`` once every envoy
is enrolled.

Usage: python bench/checkin_probe.py --server HOST:PORT --token T --count N
           --interval S --out FILE [--template T]
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # this checkout's vigo

from twisted.internet import defer, task  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--interval", type=float, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--template", default="probe-{n}.bench.example.com")
    args = parser.parse_args()

    from vigo.envoy.sim.simulator import Simulator

    @defer.inlineCallbacks
    def run(reactor):
        sim = Simulator(reactor, args.server, args.token, args.count, args.interval,
                        hostname_template=args.template, concurrency=100)
        samples = []
        count = sim._count_checkin

        def record(result):
            samples.append((round(reactor.seconds() - result[1], 6), round(result[1], 6)))
            count(result)

        sim._count_checkin = record
        stopped = defer.Deferred()

        def stop():
            with open(args.out, "w") as f:
                json.dump(samples, f)
            return sim.stop()

        reactor.addSystemEventTrigger("before", "shutdown", stop)
        yield sim.start()
        print("ready %d" % (sim.attached,), flush=True)
        yield stopped  # until SIGTERM / SIGINT

    task.react(run)


if __name__ == "__main__":
    main()
