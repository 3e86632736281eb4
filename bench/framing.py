"""Micro-benchmark: AMP versus the envoy channel's framing, in process.

Both sides are driven over ``StringTransport`` with the signature check and
the fleet lookup replaced by a constant answer, so what is left is what the
framing itself costs a check-in: decode the request, dispatch it, encode the
answer. (The measured AMP figure is the reason the channel is not AMP; see
docs/envoy-protocol.md.)
"""

import os
import sys
import time

from twisted.internet.testing import StringTransport
from twisted.protocols import amp

from vigo.fleet import wire
from vigo.fleet.channel import EnvoyChannelProtocol

N = 20000


class CheckIn(amp.Command):
    arguments = [
        (b"seq", amp.Integer()),
        (b"ts", amp.Integer()),
        (b"fingerprint", amp.String()),
        (b"signature", amp.String()),
    ]
    response = [(b"status", amp.String()), (b"seq", amp.Integer())]


class AmpServer(amp.AMP):
    @CheckIn.responder
    def checkin(self, seq, ts, fingerprint, signature):
        return {"status": b"no_change", "seq": seq}


def amp_us(n=N):
    server = AmpServer()
    transport = StringTransport()
    server.makeConnection(transport)
    requests = []
    for seq in range(1, n + 1):
        box = amp.AmpBox({b"_command": b"CheckIn", b"_ask": b"%d" % seq,
                          b"seq": b"%d" % seq, b"ts": b"1795750000000",
                          b"fingerprint": os.urandom(32), b"signature": os.urandom(64)})
        requests.append(box.serialize())
    start = time.perf_counter()
    for request in requests:
        server.dataReceived(request)
        transport.clear()
    return (time.perf_counter() - start) / n * 1e6


class ConstantFleet:
    """Answers every check-in with NoChange, as the real one does when nothing changed."""

    interval = 15.0

    def checkin(self, record, body):
        seq, _, _, _ = wire.decode_checkin(body)
        return wire.no_change(seq)


def channel_us(n=N):
    protocol = EnvoyChannelProtocol(ConstantFleet(), None, _NoClock())
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.record = object()
    frames = [wire.encode_checkin(seq, 1795750000000, os.urandom(32), lambda m: os.urandom(64))
              for seq in range(1, n + 1)]
    start = time.perf_counter()
    for data in frames:
        protocol.dataReceived(data)
        transport.clear()
    return (time.perf_counter() - start) / n * 1e6


class _NoClock:
    def callLater(self, *args, **kwargs):
        return _Cancelled()

    def seconds(self):
        return 0.0


class _Cancelled:
    def active(self):
        return False


def main():
    a, c = amp_us(), channel_us()
    print("framing per check-in: AMP %.1f us, length-prefixed binary %.1f us (AMP costs %.1f us more)"
          % (a, c, a - c))
    return {"amp_us": a, "channel_us": c}


if __name__ == "__main__":
    sys.exit(main() and 0)
