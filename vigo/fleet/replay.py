"""Replay protection that survives a crash: check-in sequence reservations.

A check-in is accepted only with a sequence number above the envoy's last
accepted one (``EnvoyRecord.last_seq``). That number changes on every check-in
and is written behind in batches, so after a crash the database's copy can be
behind what was accepted, and a check-in captured in between could be played
again. To close that window the store holds, for each envoy, a *reservation*
(``envoys.seq_reserved``): a sequence number at or above every sequence the
server has accepted from it. The invariant is

    every accepted seq <= the durable seq_reserved

and it is kept by three moves:

* a check-in above the in-memory reservation (``EnvoyRecord.seq_reserved``,
  never above the durable one) is answered only after a new reservation,
  ``seq + RESERVE``, is committed (the slow path: an envoy's first check-ins
  after enrollment at a skewed clock, or a jump in its clock);
* the write-behind flush extends the reservation of every envoy whose last
  sequence came within ``RESERVE / 2`` of it, in the UPDATE it writes anyway,
  and raises the in-memory reservation only after the commit;
* on start, before any port listens, each envoy's last sequence becomes its
  reservation (sequences up to it may have been accepted before a crash) and
  a new reservation is taken above it, in one statement.

Envoys' sequence numbers are microsecond timestamps (``max(last + 1, now_us)``,
vigo/envoy/cadence.py), so ``RESERVE`` is ten minutes of an envoy's clock: an
envoy's reservation is extended about every five minutes, within the flush,
and never on the check-in path. After a restart the server's last sequence for
an envoy is up to ``RESERVE`` ahead of the envoy's clock; the envoy learns it
from the Attach answer (``last_seq``) and counts up from there.
"""

#: How far above the last accepted sequence a reservation reaches (µs).
RESERVE = 600 * 1_000_000
#: A flush extends a reservation with less than this left above the last sequence.
EXTEND_BELOW = RESERVE // 2


def first_reservation(last_seq, now):
    """The reservation of an envoy new to this server at ``now`` (seconds),
    whose sequences so far reach ``last_seq``: room for its next sequences,
    which start at its clock's microseconds."""
    return max(last_seq, int(now * 1_000_000)) + RESERVE


def extension(last_seq, reserved):
    """The reservation a flush writes for an envoy: ``reserved`` unless
    ``last_seq`` came within ``EXTEND_BELOW`` of it."""
    if last_seq > reserved - EXTEND_BELOW:
        return last_seq + RESERVE
    return reserved


# -- store jobs -------------------------------------------------------------------


def reserve_after_restart(cursor):
    """Every envoy's last sequence becomes its reservation, and a new one is
    taken above it (SQLite evaluates both from the row's old values)."""
    cursor.execute(
        "UPDATE envoys SET last_seq = MAX(last_seq, seq_reserved), "
        "seq_reserved = MAX(last_seq, seq_reserved) + ?", (RESERVE,))


def reserve(cursor, envoy_id, reserved):
    cursor.execute("UPDATE envoys SET seq_reserved = MAX(seq_reserved, ?) WHERE id = ?",
                   (reserved, envoy_id))
