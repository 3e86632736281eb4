"""Peer RPC arguments: any value PB could hand a perspective.

A value is built from the bytes as PB could deliver it: None, bools, ints up
to 2**448 (banana's 64-byte prefix), floats, text (strict UTF-8, so no lone
surrogates), bytes, lists, tuples, dicts with any keys, lists nested 2,000
deep and lists that contain themselves. Then ``check`` against every schema
kind and ``check_json`` may raise only ``SchemaError``, and ``run_action``
(the built-in actions, on a bolt that has nothing) may only fail its Deferred
with a ``PeerError``. (Lone surrogates and ints of over 4,300 digits, which
only a local caller could pass, are pinned in tests/test_fuzz.py
``KnownBugTests``.)
"""

import sys

import harness

with harness.instrumented():
    from vigo.interfaces.errors import PeerError
    from vigo.interfaces.schema import (
        Boolean,
        Bytes,
        DictOf,
        Float,
        Integer,
        Json,
        ListOf,
        Optional,
        Record,
        SchemaError,
        String,
        check,
        check_json,
    )
    from vigo.spanner.peer.actions import load_actions, run_action

import atheris  # noqa: E402
from twisted.internet import defer  # noqa: E402

from tests.peerkit import StubBolt  # noqa: E402

SCHEMAS = [
    String(16), String(64, min_length=1, pattern=r"[a-z0-9_-]{1,64}"), Bytes(8), Integer(),
    Integer(0, 10), Float(), Float(0, 1), Boolean(), ListOf(Integer(), 3),
    DictOf(String(8), Json(64), 4), Optional(String(4)), Json(256),
    Record({"name": String(8), "to": Optional(String(20)), "n": Optional(Integer(0, 2**63 - 1)),
            "args": Optional(Json(128))}),
]
ACTIONS = load_actions()
NAMES = sorted(ACTIONS)
BOLT = StubBolt()
failures = harness.LoggedFailures()


def value(fdp, depth=0):
    kind = fdp.ConsumeIntInRange(0, 11 if depth < 40 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 56))
    if kind == 3:
        return fdp.ConsumeFloat()
    if kind == 4:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40))
    if kind == 5:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 20))
    if kind == 6:
        return fdp.PickValueInList(NAMES + ["to", "envoy", "limit", "hostname", "ts"])
    if kind == 7:
        return [value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    if kind == 8:
        return tuple(value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3)))
    if kind == 9:
        items = {}
        for _ in range(fdp.ConsumeIntInRange(0, 4)):
            key = value(fdp, depth + 1)
            try:
                items[key] = value(fdp, depth + 1)
            except TypeError:  # an unhashable key: PB cannot send one either
                pass
        return items
    if kind == 10:
        outer = [value(fdp, depth + 1)]
        outer.append(outer)
        return outer
    inner = value(fdp, depth + 1)
    for _ in range(fdp.ConsumeIntInRange(0, 2000)):
        inner = [inner]
    return inner


def test_one_input(data):
    fdp = atheris.FuzzedDataProvider(data)
    schema = SCHEMAS[fdp.ConsumeIntInRange(0, len(SCHEMAS) - 1)]
    limit = fdp.ConsumeIntInRange(0, 512)
    name = value(fdp) if fdp.ConsumeBool() else fdp.PickValueInList(NAMES)
    subject = value(fdp)
    try:
        check(schema, subject)
    except SchemaError:
        pass
    try:
        check_json(subject, limit)
    except SchemaError:
        pass
    args = subject if not fdp.ConsumeBool() else {"to": subject, "envoy": subject}
    d = run_action(BOLT, ACTIONS, "c" * 20, name, args)
    if not d.called:
        d.cancel()
    result = []
    d.addBoth(result.append)
    if hasattr(result[0], "trap"):
        result[0].trap(PeerError, defer.CancelledError)
    failures.check()


if __name__ == "__main__":
    harness.run(test_one_input)
    sys.exit(0)
