"""Read a connection's first bytes and detect its protocol, within a timeout.

The trio side of :mod:`linkerd_proxy.http.detect`: it sits in the connection
stacks between TLS (or the accepted plaintext socket) and the choice of HTTP/1,
HTTP/2 or opaque forwarding. The bytes it read are returned so the next stage
can replay them (they are not lost).

Unlike the reference, which decides on one read, this keeps reading while the
answer is :attr:`~linkerd_proxy.http.detect.Detected.NEED_MORE`, up to
``capacity`` bytes and within ``timeout`` overall, so a request line split across
segments is still detected. Each read asks for at most what is left of the
capacity, so nothing beyond it is ever buffered.
"""

from __future__ import annotations

import math

import attrs
import trio

from ..http.detect import Detected, detect

__all__ = ["DEFAULT_CAPACITY", "DetectOutcome", "detect_protocol", "detect_protocol_outcome"]

#: The most the reference reads for HTTP detection.
DEFAULT_CAPACITY = 1024


@attrs.frozen
class DetectOutcome:
    """What detection found, and how it ended.

    Attributes:
      detected: ``H2``, ``HTTP1`` or ``NOT_HTTP`` (never ``NEED_MORE``).
      buffered: every byte read; replay it to the next stage.
      timed_out: the timeout expired before a decision (the bytes read so far,
        if any, were then judged as final).
      eof: the peer closed its side before a decision.
    """

    detected: Detected
    buffered: bytes
    timed_out: bool = False
    eof: bool = False


async def detect_protocol_outcome(
    stream: trio.abc.ReceiveStream,
    *,
    timeout: float,  # noqa: ASYNC109 (a budget for several reads, from Config)
    capacity: int = DEFAULT_CAPACITY,
) -> DetectOutcome:
    """Like :func:`detect_protocol`, but says whether it timed out or hit EOF.

    The inbound stack needs the difference: a detect timeout may mean "HTTP/1"
    when the port's policy hints so, and timeouts are counted apart.
    """
    if capacity <= 0:
        raise ValueError("capacity must be positive")
    buf = bytearray()
    timed_out = eof = False
    deadline = trio.current_time() + timeout if math.isfinite(timeout) else math.inf
    with trio.move_on_at(deadline) as scope:
        while len(buf) < capacity:
            chunk = await stream.receive_some(capacity - len(buf))
            if not chunk:
                eof = True
                break
            buf += chunk
            found = detect(bytes(buf))
            if found is not Detected.NEED_MORE:
                return DetectOutcome(found, bytes(buf))
    if scope.cancelled_caught:
        timed_out = True
    data = bytes(buf)
    if not data:
        return DetectOutcome(Detected.NOT_HTTP, data, timed_out, eof)
    return DetectOutcome(detect(data, final=True), data, timed_out, eof)


async def detect_protocol(
    stream: trio.abc.ReceiveStream,
    *,
    timeout: float,  # noqa: ASYNC109 (a budget for several reads, from Config)
    capacity: int = DEFAULT_CAPACITY,
) -> tuple[Detected, bytes]:
    """Read from ``stream`` until its protocol is known, and return what was read.

    Reads until :func:`~linkerd_proxy.http.detect.detect` decides, at most
    ``capacity`` bytes, within ``timeout`` seconds in all. When no more bytes
    will come (timeout, end of stream, capacity reached) the bytes read so far
    are judged with the reference's single-read rule: a valid, unfinished HTTP/1
    request line of at least 14 bytes is HTTP/1; anything else is not HTTP.

    Args:
      stream: the connection (plaintext or after TLS termination).
      timeout: the detect timeout in seconds (``*_DETECT_TIMEOUT``); ``inf`` for none.
      capacity: the most bytes to read (1 KiB, as the reference).

    Returns:
      ``(detected, buffered)``: never ``NEED_MORE``. On a timeout with nothing
      read, or an end of stream before any byte, ``(NOT_HTTP, b"")``.

    Raises:
      trio.BrokenResourceError: the connection failed while reading.
      trio.ClosedResourceError: ``stream`` was closed.

    Cancellation: safe; bytes read before cancellation are lost with the call,
    so cancel only when the connection is being dropped.
    """
    outcome = await detect_protocol_outcome(stream, timeout=timeout, capacity=capacity)
    return outcome.detected, outcome.buffered
