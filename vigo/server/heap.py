"""Keeping the cyclic garbage collector's pauses short.

A server holds tens of thousands of TLS connections (an envoy's is some twenty
objects the collector tracks), and under a flood it accepts and cuts hundreds
a second. CPython's collector scans its oldest generation in one pass, and that
generation fills with whatever lived a few seconds: a pass over 10 s of such
objects stalled the reactor for 130 ms, which is check-ins' p99.

So the server keeps the oldest generation small: every ``FREEZE_INTERVAL`` it
collects the young generations (what died young, cycles included, goes now)
and freezes the survivors (``gc.freeze``), which the automatic passes then
skip. Twisted breaks a connection's reference cycles when it closes, so a
frozen connection that closes is freed by reference counting all the same.
What is left, frozen cyclic garbage, is reclaimed by ``heap_sweep`` every
``HEAP_SWEEP_INTERVAL``, one full pause every ten minutes.
"""

import gc

FREEZE_INTERVAL = 1.0  # seconds between freezes of what survived the young passes
HEAP_SWEEP_INTERVAL = 600.0  # seconds between full sweeps of the frozen heap


def freeze_survivors():
    """Collect the young generations, then freeze whatever is still alive."""
    gc.collect(1)
    gc.freeze()


def heap_sweep():
    """Collect everything once, then freeze the survivors again."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
