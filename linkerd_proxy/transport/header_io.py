"""Read the transport header from a stream (the trio side of ``transport.header``)."""

from __future__ import annotations

import trio

from linkerd_proxy.errors import TransportHeaderError
from linkerd_proxy.transport.header import (
    MAX_HEADER_LEN,
    Decoded,
    NeedMore,
    TransportHeader,
    decode_header,
)


async def read_transport_header(
    stream: trio.abc.ReceiveStream,
    *,
    timeout: float,  # noqa: ASYNC109 (the detect timeout; raises TooSlowError)
) -> tuple[TransportHeader, bytes]:
    """Read a transport header; return it and the application bytes read after it.

    Raises:
        TransportHeaderError: no header, a malformed one, or the stream ended.
        trio.TooSlowError: not complete within ``timeout``.
    """
    buf = b""
    with trio.fail_after(timeout):
        while True:
            result = decode_header(buf)
            if isinstance(result, Decoded):
                return result.header, buf[result.consumed :]
            if not isinstance(result, NeedMore):
                raise TransportHeaderError("the connection does not start with a transport header")
            chunk = await stream.receive_some(min(65536, max(1, result.total - len(buf))))
            if not chunk:
                raise TransportHeaderError("the connection ended inside the transport header")
            buf += chunk
            if len(buf) > MAX_HEADER_LEN + 64:
                raise TransportHeaderError("transport header too large")
