"""A hybrid logical clock: timestamps that follow wall time yet never go backwards.

The overrides map is last-writer-wins, so the order of two writes must not
depend on which bolt's wall clock runs fast. A hybrid logical clock (Kulkarni
et al., 2014) keeps the wall-clock millisecond when it moves forward and counts
within a millisecond otherwise, and every timestamp a bolt observes from a peer
pushes its own clock past it: a write made after seeing another is ordered
after it, whatever the clocks say. Ties between bolts are broken by the
writer's bolt id, outside this module.
"""

from typing import NamedTuple

MAX_WALL_MS = 2**53 - 1  # JSON-safe integers only
MAX_COUNTER = 2**32 - 1
DEFAULT_MAX_DRIFT_MS = 60_000


class ClockDriftError(ValueError):
    """A remote timestamp is further ahead of our wall clock than we accept."""


class Timestamp(NamedTuple):
    """A hybrid timestamp; tuples order them: wall time, then the counter."""

    wall_ms: int
    counter: int

    def to_data(self):
        """The JSON form: ``[wall_ms, counter]``."""
        return [self.wall_ms, self.counter]

    @classmethod
    def from_data(cls, data):
        """A ``Timestamp`` from ``[wall_ms, counter]``; ``ValueError`` if it is not one."""
        if type(data) is not list or len(data) != 2:
            raise ValueError("a timestamp is a list [wall_ms, counter]")
        wall_ms, counter = data
        if type(wall_ms) is not int or not 0 <= wall_ms <= MAX_WALL_MS:
            raise ValueError("timestamp wall_ms must be an integer in 0..2**53-1")
        if type(counter) is not int or not 0 <= counter <= MAX_COUNTER:
            raise ValueError("timestamp counter must be an integer in 0..2**32-1")
        return cls(wall_ms, counter)


class HLC:
    """A hybrid logical clock over ``clock`` (anything with ``seconds()``,
    e.g. the reactor or ``twisted.internet.task.Clock``).

    ``max_drift_ms`` bounds how far ahead of our wall clock an observed
    timestamp may be: a peer with a wildly fast clock (or a forged timestamp)
    must not drag every later write of ours into the far future.
    """

    def __init__(self, clock, max_drift_ms=DEFAULT_MAX_DRIFT_MS):
        self._clock = clock
        self._max_drift_ms = max_drift_ms
        self._last = Timestamp(0, 0)

    def _wall(self):
        return int(self._clock.seconds() * 1000)

    @property
    def last(self):
        """The latest timestamp issued or observed."""
        return self._last

    def now(self):
        """A timestamp greater than every one issued or observed before."""
        wall = self._wall()
        last = self._last
        if wall > last.wall_ms:
            stamp = Timestamp(wall, 0)
        else:
            stamp = Timestamp(last.wall_ms, last.counter + 1)
        self._last = stamp
        return stamp

    def observe(self, remote):
        """Move past ``remote`` so our next ``now()`` orders after it.

        Raises ``ClockDriftError`` (and ignores it) when ``remote`` is more
        than ``max_drift_ms`` ahead of our wall clock.
        """
        wall = self._wall()
        if remote.wall_ms - wall > self._max_drift_ms:
            raise ClockDriftError(
                "a remote timestamp is %d ms ahead of this clock (at most %d accepted); "
                "check the clocks" % (remote.wall_ms - wall, self._max_drift_ms)
            )
        if remote > self._last:
            self._last = Timestamp(remote.wall_ms, remote.counter)
        return self._last
