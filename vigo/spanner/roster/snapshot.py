"""Signed roster snapshots: what ``GET /api/v1/spanner/roster`` serves and pullers open.

The serving bolt signs the roster's digest (with its id, the time and the
federation and founder ids), and the puller checks that signature against
the key it has pinned for the bolt it asked -- never against a key the
snapshot brings along. Then the digest is recomputed from the contents, so
the signature covers every byte. That proves only who served it: each row
and record inside is still verified on its own by ``Roster.merge``, because a
member can be wrong (or lie) about others' rows.

The input is untrusted bytes from the network. Every size, type and count is
checked before any signature work, and anything wrong raises
``SnapshotError`` with a reason -- never another exception.

``opening_snapshot`` is the same work in steps, for a puller that opens a big
snapshot in slices on the reactor thread (``vigo.spanner.roster.steps``): the
JSON is decoded element by element, each row and record checked, the digest
hashed item by item.
"""

import codecs
import json
import re

import attr

from vigo.spanner.canonical import SpannerError, b64, canonical, unb64
from vigo.spanner.roster.parts import (
    MAX_CONSUMED,
    MAX_OVERRIDES,
    MAX_REMOVALS,
    MAX_ROWS,
    RosterParts,
    digesting_parts,
)
from vigo.spanner.roster.records import RosterError, check_bolt_id, derive_id, verify
from vigo.spanner.roster.steps import run_steps

SNAPSHOT_CONTEXT = b"vigo-roster-snapshot-v1\x00"
#: The largest snapshot a bolt reads (pullers stop reading past it). A
#: roster's bulk is its overrides, about 230 bytes each (one per envoy ever
#: handed over); rows are about 540 bytes, and joins stop near 350 bolts (the
#: join answer is at most 256 KiB). 64 MiB holds some 280,000 overrides: about
#: every envoy of the largest federation the design plans for (64 bolts x
#: 5,000 envoys) handed over once, while what a reader holds stays bounded.
MAX_SNAPSHOT_BYTES = 64 * 1024 * 1024
_FIELDS = frozenset(("roster", "digest", "bolt_id", "at_ms", "signature"))


class SnapshotError(SpannerError):
    """A snapshot that cannot be used; ``reason`` is ``malformed``, ``oversize``,
    ``wrong_bolt``, ``foreign``, ``bad_signature`` or ``digest``."""


@attr.s(frozen=True)
class Snapshot:
    """An opened snapshot: its parts (to ``Roster.merge``), who served it, when."""

    parts = attr.ib()
    digest = attr.ib()
    bolt_id = attr.ib()
    at_ms = attr.ib()


def _message(digest, bolt_id, at_ms, federation_id, founder_id):
    return SNAPSHOT_CONTEXT + canonical({
        "digest": b64(digest), "bolt_id": bolt_id, "at_ms": at_ms,
        "federation_id": federation_id, "founder_id": founder_id})


def sign_snapshot(roster, identity, now_ms):
    """The JSON-ready snapshot of ``roster``, signed by ``identity`` at ``now_ms``."""
    digest = roster.digest()
    message = _message(digest, identity.id, now_ms, roster.federation_id, roster.founder_id)
    return {
        "roster": roster.to_data(),
        "digest": b64(digest),
        "bolt_id": identity.id,
        "at_ms": now_ms,
        "signature": b64(identity.sign(message)),
    }


def encode_snapshot(snapshot):
    """A signed snapshot dict as the bytes to serve."""
    return canonical(snapshot)


def open_snapshot(data, expected_bolt_key, federation_id=None):
    """Check a snapshot served by the bolt whose pinned key is ``expected_bolt_key``.

    ``data`` is the decoded JSON object or the raw bytes/text. With
    ``federation_id``, a snapshot of another federation is refused up front.
    Returns a ``Snapshot``; merge its ``parts`` to verify and take the rows.
    """
    return run_steps(opening_snapshot(data, expected_bolt_key, federation_id))


def opening_snapshot(data, expected_bolt_key, federation_id=None):
    """``open_snapshot`` in steps: a generator that yields None between items
    and returns the ``Snapshot`` (or raises ``SnapshotError``)."""
    try:
        return (yield from _opening(data, expected_bolt_key, federation_id))
    except SnapshotError:
        raise
    except SpannerError as e:
        raise SnapshotError(e.reason, "the snapshot is not acceptable: %s" % (e,)) from None
    except RecursionError:
        raise SnapshotError("malformed", "the snapshot is nested too deeply") from None


def _opening(data, expected_bolt_key, federation_id):
    if isinstance(data, (bytes, bytearray, str)):
        if len(data) > MAX_SNAPSHOT_BYTES:
            raise SnapshotError("oversize", "the snapshot is over %d bytes" % (MAX_SNAPSHOT_BYTES,))
        try:
            data = yield from _decoding_json(data)
        except (ValueError, UnicodeDecodeError):
            raise SnapshotError("malformed", "the snapshot is not JSON") from None
    if type(data) is not dict or data.keys() != _FIELDS:
        raise SnapshotError("malformed", "a snapshot is an object with exactly the fields "
                            + ", ".join(sorted(_FIELDS)))
    if type(expected_bolt_key) is not bytes or len(expected_bolt_key) != 32:
        raise SnapshotError("wrong_bolt", "the pinned key must be 32 bytes")
    bolt_id = check_bolt_id(data["bolt_id"])
    if derive_id(expected_bolt_key) != bolt_id:
        raise SnapshotError("wrong_bolt", "the snapshot is from bolt %s, not the bolt asked (%s)"
                            % (bolt_id, derive_id(expected_bolt_key)))
    at_ms = data["at_ms"]
    if type(at_ms) is not int or not 0 <= at_ms < 2**53:
        raise SnapshotError("malformed", "at_ms must be a non-negative integer")
    digest = unb64(data["digest"], "digest", 32)
    signature = unb64(data["signature"], "signature", 64)
    roster = data["roster"]
    if federation_id is not None and type(roster) is dict and (
            roster.get("federation_id") != federation_id):
        raise SnapshotError("foreign", "the snapshot is of federation %r, not %s"
                            % (str(roster.get("federation_id"))[:64], federation_id))
    try:
        parts = yield from RosterParts.decoding(roster)
    except RosterError as e:
        raise SnapshotError(e.reason, "the snapshot's roster is malformed: %s" % (e,)) from None
    message = _message(digest, bolt_id, at_ms, parts.federation_id, parts.founder_id)
    if not verify(expected_bolt_key, message, signature):
        raise SnapshotError("bad_signature", "the snapshot is not signed by bolt %s" % (bolt_id,))
    if (yield from digesting_parts(parts)) != digest:
        raise SnapshotError("digest", "the snapshot's contents do not match its signed digest")
    return Snapshot(parts, digest, bolt_id, at_ms)


# -- JSON, decoded in steps -------------------------------------------------------

_DECODER = json.JSONDecoder()
_SPACE = " \t\n\r"  # JSON's whitespace (as the json module's decoder has it)
_SPACES = re.compile(r"[ \t\n\r]{0,65536}")  # at most this much a step
_STEPPED_DEPTH = 3  # objects and arrays this shallow are walked, one step per element
#: A walked array longer than this is refused at once: no roster list may be.
_MAX_ELEMENTS = max(MAX_ROWS, MAX_REMOVALS, MAX_CONSUMED, MAX_OVERRIDES)


def _decoding_json(data):
    """``json.loads(data)`` in steps: the snapshot, its roster and the roster's
    lists are walked here, and every element (a row, a record: small) is
    decoded by the standard decoder, one step each, so no single step takes
    long. The same values and the same errors (``ValueError``) as ``json.loads``."""
    if isinstance(data, (bytes, bytearray)):
        data = yield from _decoding_text(data)
    if data.startswith("\ufeff"):
        raise ValueError("Unexpected UTF-8 BOM")
    value, end = yield from _decoding_value(data, (yield from _skipping(data, 0)), 0)
    if (yield from _skipping(data, end)) != len(data):
        raise ValueError("Extra data")
    return value


def _decoding_text(data):
    """Steps: ``data`` (bytes) as text, as ``json.loads`` reads bytes, a MiB a step."""
    decoder = codecs.getincrementaldecoder(json.detect_encoding(data))("surrogatepass")
    pieces = []
    with memoryview(data) as view:
        for start in range(0, len(data), 1 << 20):
            pieces.append(decoder.decode(view[start:start + (1 << 20)]))
            yield
    pieces.append(decoder.decode(b"", final=True))
    return "".join(pieces)


def _skipping(text, index):
    """Steps: the index past the whitespace at ``index``."""
    if text[index:index + 1] not in _SPACE:  # (or the end: "" is in any string)
        return index
    while True:
        end = _SPACES.match(text, index).end()
        if end - index < 65536:
            return end
        index = end
        yield


def _decoding_value(text, index, depth):
    opening = text[index:index + 1]
    if depth >= _STEPPED_DEPTH or opening not in ("{", "["):
        value, end = _DECODER.raw_decode(text, index)
        yield
        return value, end
    closing = "}" if opening == "{" else "]"
    container = {} if opening == "{" else []
    index = yield from _skipping(text, index + 1)
    if text[index:index + 1] == closing:
        return container, index + 1
    while True:
        if opening == "{":
            if text[index:index + 1] != '"':
                raise ValueError("Expecting property name enclosed in double quotes")
            name, index = _DECODER.raw_decode(text, index)
            index = yield from _skipping(text, index)
            if text[index:index + 1] != ":":
                raise ValueError("Expecting ':' delimiter")
            index = yield from _skipping(text, index + 1)
            container[name], index = yield from _decoding_value(text, index, depth + 1)
        else:
            if len(container) >= _MAX_ELEMENTS:
                raise ValueError("an array of more than %d elements" % (_MAX_ELEMENTS,))
            value, index = yield from _decoding_value(text, index, depth + 1)
            container.append(value)
        index = yield from _skipping(text, index)
        delimiter = text[index:index + 1]
        if delimiter == closing:
            return container, index + 1
        if delimiter != ",":
            raise ValueError("Expecting ',' delimiter")
        index = yield from _skipping(text, index + 1)
