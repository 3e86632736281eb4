"""Waiting on what happens, not on the clock: Deferreds that fire on events.

``until(predicate, *rosters)`` fires once ``predicate()`` holds, checked now and
after every change of any of the given ``LocalRoster``s (a merge, a pull, an
override, a row): the way tests wait for gossip and snapshot pulls to bring
bolts together. A deadline (real seconds, as the bolts run on the real reactor)
turns a wait that never ends into a failure that says what was awaited.

Anything with ``on_change(listener)`` is a source ``until`` listens to:
``gossip_of(*servers)`` gives one per bolt that hears every gossip datagram
the bolt takes in (what the observability cache, its peers' counters and
liveness, changes on). ``first_call(what)`` is a listener and the Deferred
its first call fires, for callbacks a test hands out (an enrollment listener,
a D-Bus signal handler).
"""


from twisted.internet import defer, reactor

DEADLINE = 30.0


def _with_deadline(done, deadline, what, clock):
    """``done``, failed with an ``AssertionError`` naming ``what`` if it has not
    fired within ``deadline`` seconds of ``clock``."""

    def late():
        if not done.called:
            done.errback(AssertionError("not within %g s: %s" % (deadline, what)))

    timer = clock.callLater(deadline, late)
    done.addBoth(lambda result: (timer.active() and timer.cancel(), result)[1])
    return done


def until(predicate, *rosters, deadline=DEADLINE, what=None, clock=reactor):
    """A Deferred that fires (with None) once ``predicate()`` is true."""
    done = defer.Deferred()
    if predicate():
        done.callback(None)
        return done

    def check():
        if not done.called and predicate():
            done.callback(None)

    for roster in rosters:
        roster.on_change(check)
    return _with_deadline(done, deadline, what or getattr(predicate, "__doc__", None)
                          or "the awaited condition", clock)


def rosters_of(*servers):
    """The ``LocalRoster`` of each spanner server."""
    return [server.spanner.roster for server in servers]


def gossip_of(*servers):
    """The ``Gossiper`` of each spanner server: ``until`` re-checks after every
    datagram it accepts (its ``on_change``)."""
    return [server.spanner.gossiper for server in servers]


def first_call(what, deadline=DEADLINE, clock=reactor):
    """``(called, listener)``: ``called`` fires with the arguments of the first
    call of ``listener(*args)``, or fails naming ``what`` after ``deadline``."""
    called = defer.Deferred()

    def listener(*args):
        if not called.called:
            called.callback(args)

    return _with_deadline(called, deadline, what, clock), listener
