"""Counters of the fleet's work, kept as plain integers on the hot path.

``vigo.metrics`` turns them into Prometheus families at scrape time, so a
check-in pays for an integer increment, not a labelled metric's lock.
"""

import bisect
import collections

AGE_BUCKETS = (1.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class FleetStats:
    """Check-ins by status, state transitions, and a check-in age histogram.

    ``frames_refused`` counts the envoy frames the channel refused, by reason
    (``oversize``, ``malformed``, ``unknown_type``, ``not_attached``, ``busy``,
    ``internal``); see ``vigo.fleet.channel``.
    """

    def __init__(self):
        self.checkins = collections.Counter()
        self.refusals = collections.Counter()
        self.frames_refused = collections.Counter()
        self.transitions = collections.Counter()
        self.enrollments = 0
        self.attaches = 0
        self.pushes = 0
        # Check-ins answered only after a sequence reservation was written
        # (vigo/fleet/replay.py): rare; many mean envoys' clocks jump.
        self.reservations = 0
        self.age_counts = [0] * (len(AGE_BUCKETS) + 1)
        self.age_sum = 0.0

    def observe_age(self, age):
        self.age_counts[bisect.bisect_left(AGE_BUCKETS, age)] += 1
        self.age_sum += age

    def transition(self, name, n=1):
        self.transitions[name] += n

    def age_histogram(self):
        """Cumulative ``[(upper_bound, count), ...]`` ending with +Inf."""
        buckets = []
        total = 0
        for bound, count in zip(AGE_BUCKETS + (float("inf"),), self.age_counts, strict=True):
            total += count
            buckets.append((bound, total))
        return buckets
