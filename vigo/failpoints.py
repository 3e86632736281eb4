"""Crash points, for the tests that ``kill -9`` a server at one exact step.

A failpoint is a named step in a multi-step operation (a reassign, a drain)
where a real crash leaves the most to repair. A server started with
``VIGO_FAILPOINTS=name[,name@N...]`` in its environment kills itself with
SIGKILL, as ``kill -9`` would (nothing flushed, no shutdown), when it reaches
step ``name`` (the Nth time with ``@N``). Unset, which is always so outside the
tests, ``failpoint()`` is one set lookup. The same idea as etcd's gofail.

Steps: every step a hand-over saga reaches (``vigo.spanner.reassign``) is the
failpoint ``reassign.<step>`` at the source or ``accept.<step>`` at the
destination, and the drain (``vigo.spanner.drain``) has two. The crash tests use:

* ``reassign.journaled``: the source wrote its pending move, nothing else;
* ``accept.stored``: the destination stored the envoy, no override yet;
* ``accept.claimed``: the destination wrote the override, not yet answered;
* ``reassign.accepted``: the source heard the yes, not yet marked it moved;
* ``drain.draining``: the bolt published its row draining, moved none yet;
* ``drain.moved``: one envoy of a drain is moved (``drain.moved@50``: the 50th).
"""

import os
import signal

ENVIRONMENT = "VIGO_FAILPOINTS"


def parse(text):
    """``{name: hit}`` from ``name[@N],...`` (a hit of 1 without ``@N``)."""
    armed = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        name, at, count = item.partition("@")
        if not name or (at and not count.isdigit()) or count == "0":
            raise ValueError("%s: %r is not NAME or NAME@N (N >= 1)" % (ENVIRONMENT, item))
        armed[name] = int(count or 1)
    return armed


class Failpoints:
    """The armed steps of this process, and how often each was reached."""

    def __init__(self, armed, kill=None):
        self.armed = dict(armed)
        self.reached = {}
        self._kill = kill or (lambda: os.kill(os.getpid(), signal.SIGKILL))

    def __call__(self, name):
        if name not in self.armed:
            return
        self.reached[name] = self.reached.get(name, 0) + 1
        if self.reached[name] == self.armed[name]:
            self._kill()


#: This process's failpoints: ``failpoint("accept.stored")`` at each step.
failpoint = Failpoints(parse(os.environ.get(ENVIRONMENT)))
