"""A packet capture for system tests: every frame on one interface, to a file.

Part of the public test harness (:mod:`linkerd_proxy.testing`), standing in for
``tcpdump -w`` so that the tests need no extra tool. Run inside a pod namespace as
``python -m linkerd_proxy.testing.capture --iface IF --out FILE`` (root: it opens
an ``AF_PACKET`` socket). It prints ``{"capturing": IF}`` once the socket is bound,
then appends each frame (both directions) to FILE as a 4-byte big-endian length and
the frame's bytes, until SIGTERM or SIGINT, or ``--duration`` seconds. A test then
searches the file, e.g. for an application payload that must never travel in
plaintext (:func:`read_frames`).
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import struct
import sys
import time
from collections.abc import Sequence

ETH_P_ALL = 0x0003


def read_frames(path: str) -> list[bytes]:
    """The frames a capture wrote to ``path``, in order."""
    with open(path, "rb") as f:
        data = f.read()
    frames = []
    pos = 0
    while pos + 4 <= len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        frames.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return frames


def main(argv: Sequence[str] | None = None) -> int:
    """Capture until signalled or ``--duration`` elapses; exit 0."""
    p = argparse.ArgumentParser(prog="python -m linkerd_proxy.testing.capture")
    p.add_argument("--iface", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--duration", type=float, default=120.0)
    args = p.parse_args(argv)
    stop = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((args.iface, 0))
    sock.settimeout(0.1)
    deadline = time.monotonic() + args.duration
    print(json.dumps({"capturing": args.iface}), flush=True)
    with open(args.out, "wb") as out:
        while not stop and time.monotonic() < deadline:
            try:
                frame = sock.recv(65536)
            except TimeoutError:
                continue
            except InterruptedError:
                continue
            out.write(struct.pack(">I", len(frame)) + frame)
            out.flush()
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
