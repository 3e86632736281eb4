"""The replication channel's language: AMP commands over mutual TLS.

Every member of a replica set listens on ``peers.listen``; TLS pins both
ends by their node keys (``vigo.mutual_tls``), so the protocol never carries
a key or a signature. A standby dials its primary and says ``Hello``; the
primary answers with what it will do (stream the change log from the
standby's LSN, or send a base copy first) and then calls the standby on the
same connection: ``Entries`` (a batch of change-log entries, answered once
they are durable there: the answer is the acknowledgement), or
``CopyBegin``/``CopyChunk``/``CopyEnd`` (a base copy). ``Who`` asks any
member where it stands (to find the primary, or to learn of a higher
epoch); ``Follow`` is a promoted primary telling a member to follow it;
``Join`` redeems a standby invitation.

AMP caps each value at 64 KiB: ``Chunked`` spreads a larger one over keys
``name``, ``name.2``, ..., and ``ReplicationAMP`` caps a whole box
(``MAX_BOX``) so a peer cannot make us buffer without bound. A box that
breaks a command's types is answered with an AMP error, not applied.
"""

import struct

from twisted.internet import defer
from twisted.logger import Logger
from twisted.protocols import amp

#: The largest box (all its keys and values) a member accepts.
MAX_BOX = 8 * 1024 * 1024
_CHUNK = 0xFFFF
_ENTRY_HEAD = struct.Struct(">QI")


class ProtocolError(Exception):
    """A peer sent something the replication protocol does not allow."""


class Chunked(amp.Argument):
    """Bytes of any length up to ``MAX_BOX``, over as many AMP values as needed."""

    def fromBox(self, name, strings, objects, proto):
        parts = [strings.get(name, b"")]
        counter = 2
        while True:
            part = strings.get(b"%s.%d" % (name, counter))
            if part is None:
                break
            parts.append(part)
            counter += 1
        objects[str(name, "ascii")] = b"".join(parts)

    def toBox(self, name, strings, objects, proto):
        value = objects[str(name, "ascii")]
        strings[name] = value[:_CHUNK]
        counter = 2
        for start in range(_CHUNK, len(value), _CHUNK):
            strings[b"%s.%d" % (name, counter)] = value[start:start + _CHUNK]
            counter += 1


def pack_entries(entries):
    """``[(lsn, entry bytes)]`` as one value."""
    return b"".join(_ENTRY_HEAD.pack(lsn, len(data)) + data for lsn, data in entries)


def unpack_entries(value):
    """The ``[(lsn, entry bytes)]`` of ``pack_entries``; ``ProtocolError`` for
    anything that is not (in LSN order, one after another)."""
    out, offset, size = [], 0, len(value)
    while offset < size:
        if size - offset < _ENTRY_HEAD.size:
            raise ProtocolError("an entry's header is cut short")
        lsn, length = _ENTRY_HEAD.unpack_from(value, offset)
        offset += _ENTRY_HEAD.size
        if length > size - offset:
            raise ProtocolError("entry %d is cut short" % (lsn,))
        if out and lsn != out[-1][0] + 1:
            raise ProtocolError("entry %d does not follow %d" % (lsn, out[-1][0]))
        out.append((lsn, value[offset:offset + length]))
        offset += length
    return out


def _malformed(failure):
    # The command's own errors (declared, or turned into Refused by the
    # channel) are RemoteAmpErrors by now; anything else is a box whose
    # arguments did not parse.
    if failure.check(amp.RemoteAmpError):
        return failure
    raise amp.RemoteAmpError(b"MALFORMED", "the command's arguments do not parse: %s: %s"
                             % (failure.type.__name__, str(failure.value)[:200]))


class NotMember(Exception):
    """The caller's node key is not a member of this replica set."""


class Refused(Exception):
    """The member will not do this now; the message says why."""


_ERRORS = {NotMember: b"NOT_MEMBER", Refused: b"REFUSED"}


class Who(amp.Command):
    """Where the member stands."""

    arguments = []
    response = [(b"node_id", amp.Unicode()), (b"role", amp.Unicode()),
                (b"epoch", amp.Integer()), (b"lsn", amp.Integer()),
                (b"primary_id", amp.Unicode()), (b"primary_address", amp.Unicode())]
    errors = _ERRORS


class Join(amp.Command):
    """Redeem a standby invitation: the caller's node key becomes a member."""

    arguments = [(b"invite_id", amp.Unicode()), (b"secret", amp.Unicode()),
                 (b"envoy_address", amp.Unicode()), (b"api_url", amp.Unicode()),
                 (b"replication_address", amp.Unicode())]
    response = [(b"node_id", amp.Unicode()), (b"epoch", amp.Integer())]
    errors = _ERRORS


class Hello(amp.Command):
    """A standby at ``epoch`` and ``lsn``, listening at these addresses, asks
    to follow; ``action`` is ``stream`` (entries from ``lsn`` on) or ``copy``
    (a base copy first)."""

    arguments = [(b"epoch", amp.Integer()), (b"lsn", amp.Integer()),
                 (b"base_copy", amp.Boolean()), (b"envoy_address", amp.Unicode()),
                 (b"api_url", amp.Unicode()), (b"replication_address", amp.Unicode())]
    response = [(b"node_id", amp.Unicode()), (b"epoch", amp.Integer()),
                (b"action", amp.Unicode())]
    errors = _ERRORS


class Entries(amp.Command):
    """Apply these entries (``pack_entries``; ``head`` is the primary's last
    LSN); the answer is the LSN now durable at the standby."""

    arguments = [(b"epoch", amp.Integer()), (b"head", amp.Integer()), (b"entries", Chunked())]
    response = [(b"lsn", amp.Integer())]
    errors = _ERRORS


class CopyBegin(amp.Command):
    """A base copy of ``size`` bytes follows, at ``lsn`` and ``epoch``."""

    arguments = [(b"size", amp.Integer()), (b"lsn", amp.Integer()), (b"epoch", amp.Integer())]
    response = []
    errors = _ERRORS


class CopyChunk(amp.Command):
    """The next bytes of the base copy (at most ``COPY_CHUNK``)."""

    arguments = [(b"data", Chunked())]
    response = []
    errors = _ERRORS


class CopyEnd(amp.Command):
    """The base copy is whole; ``sha256`` (hex) is its digest."""

    arguments = [(b"sha256", amp.Unicode())]
    response = []
    errors = _ERRORS


class Follow(amp.Command):
    """Follow the primary ``primary_id`` at ``address``, promoted to ``epoch``."""

    arguments = [(b"epoch", amp.Integer()), (b"primary_id", amp.Unicode()),
                 (b"address", amp.Unicode())]
    response = []
    errors = _ERRORS


class ReplicationAMP(amp.AMP):
    """AMP with a cap on a box's size (a peer that sends more than ``MAX_BOX``
    in one box is cut off), whose commands with arguments that do not parse
    are answered with a ``MALFORMED`` error rather than a logged traceback."""

    log = Logger()

    def unhandledError(self, failure):
        # A refused command nobody asked an answer of (no _ask): said in one
        # line; a bug is still logged with its traceback.
        if failure.check(amp.RemoteAmpError):
            self.log.warn("replication peer {peer}: a command without an answer tag was "
                          "refused: {why}", peer=self.transport.getPeer(),
                          why=failure.getErrorMessage())
            return None
        return super().unhandledError(failure)

    def locateResponder(self, name):
        responder = super().locateResponder(name)
        if responder is None:
            return None

        def checked(box):
            # Arguments are parsed before the responder runs, synchronously.
            return defer.maybeDeferred(responder, box).addErrback(_malformed)

        return checked

    _box_bytes = 0
    _cut = False

    def stringReceived(self, string):
        if self._cut:  # what is left of the read that passed the cap: dropped
            return
        return super().stringReceived(string)

    def proto_init(self, string):
        self._box_bytes = 0
        return super().proto_init(string)

    def proto_value(self, string):
        self._box_bytes += len(string) + len(self._currentKey)
        if self._box_bytes > MAX_BOX:
            self._cut = True
            self._currentBox = None
            self.transport.abortConnection()
            return "key"
        return super().proto_value(string)

    def ampBoxReceived(self, box):
        # A whole request for the port's idle and first-request deadlines
        # (vigo/server/limits.py; duck-typed, absent on a dialled connection).
        request_received = getattr(self.transport, "request_received", None)
        if request_received is not None:
            request_received()
        try:
            return super().ampBoxReceived(box)
        except Exception as e:  # noqa: BLE001 - raised here only by a box that is not AMP's
            # A box that is no command, answer or error, answers nothing asked
            # or names a command in bytes that are no name: the peer does not
            # speak this protocol (commands' own failures arrive in Deferreds,
            # see locateResponder); cut it off.
            self.log.warn("replication peer {peer} sent a box that is no command or answer "
                          "({what}); closing the connection", peer=self.transport.getPeer(),
                          what=type(e).__name__)
            self.transport.abortConnection()
            return None
