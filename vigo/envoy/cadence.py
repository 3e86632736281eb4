"""When an envoy acts: check-in sequence numbers, jittered intervals, reconnect backoff.

Shared by the real envoy (``vigo.envoy.main``) and the simulator
(``vigo.envoy.sim.simulator``); ``random`` is anything with ``random()`` and ``uniform()``.
"""


def next_seq(last_seq, now):
    """A check-in sequence above ``last_seq`` that also survives lost state.

    Microseconds since the epoch keep increasing across restarts even when the
    envoy forgot its last sequence; ``last_seq + 1`` covers a clock that went back.
    """
    return max(last_seq + 1, int(now * 1_000_000))


def jittered(interval, random, jitter=0.1):
    """``interval`` spread uniformly by +-``jitter`` (a fraction)."""
    return interval * (1.0 + jitter * (2.0 * random.random() - 1.0))


def reconnect_delay(attempt, random, base=0.5, cap=30.0):
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2**attempt))."""
    return random.uniform(0.0, min(cap, base * (2 ** min(attempt, 30))))
