"""Latency histograms for the simulator: fixed memory, exact counts, ~0.5 % percentiles."""

import math
from array import array


class LatencyHistogram:
    """Latencies in 1 %-wide log buckets from 1 us up: fixed memory, exact counts.

    Percentiles are good to about half a per cent, which is all a benchmark needs.
    """

    __slots__ = ("count", "counts", "max", "total")
    SCALE = 1.0 / math.log(1.01)
    BUCKETS = int(math.log(1e11) * SCALE) + 2  # up to ~28 hours

    def __init__(self):
        self.counts = array("Q", bytes(8 * self.BUCKETS))
        self.count = 0
        self.total = self.max = 0.0

    def record(self, seconds):
        """Count one latency (seconds)."""
        micros = seconds * 1e6
        index = int(math.log(micros) * self.SCALE) if micros > 1.0 else 0
        self.counts[min(index, self.BUCKETS - 1)] += 1
        self.count += 1
        self.total += seconds
        self.max = max(self.max, seconds)

    def percentile(self, p):
        """The ``p``-th percentile (0..100) in seconds, or None when empty."""
        if not self.count:
            return None
        rank, seen = max(1, math.ceil(p / 100.0 * self.count)), 0
        for index, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return min(math.exp((index + 0.5) / self.SCALE) / 1e6, self.max)
        return self.max

    def summary(self):
        """``{"count", "p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms"}`` (None when empty)."""
        figures = {"count": self.count}
        for name, seconds in (("p50", self.percentile(50)), ("p90", self.percentile(90)),
                              ("p99", self.percentile(99)),
                              ("max", self.max if self.count else None),
                              ("mean", self.total / self.count if self.count else None)):
            figures[name + "_ms"] = None if seconds is None else round(seconds * 1000.0, 3)
        return figures
