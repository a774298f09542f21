"""Inbound TLS: peek the ClientHello, then terminate, pass through, or go plaintext.

SPEC.md section 4, inbound step 4: within the detect timeout, read enough of the
connection to parse a ClientHello (at most 8 KiB). An SNI equal to the local identity
means mTLS for this proxy: terminate it (TLS 1.3; a client certificate is requested
but not required) and learn the client's identity. Another SNI means TLS meant for
the application: pass it through as opaque bytes. No ClientHello means plaintext.

The handshake itself is bounded by the same timeout, so a client that stalls after
its ClientHello is closed in time (HARDENING item 21; the reference only times the
ClientHello).
"""

from __future__ import annotations

import enum
import ssl

import attrs
import trio

from linkerd_proxy.identity.store import peer_identity
from linkerd_proxy.tls.client_hello import (
    MAX_CLIENT_HELLO_LEN,
    ClientHello,
    NeedMore,
    parse_client_hello,
)
from linkerd_proxy.tls.stream import TlsStream
from linkerd_proxy.transport.prefixed import PrefixedStream


class TlsDetectTimeout(Exception):
    """No decision about TLS within the detect timeout."""


class Kind(enum.Enum):
    TERMINATE = "terminate"
    PASSTHROUGH = "passthrough"
    PLAINTEXT = "plaintext"


@attrs.frozen
class TlsDetected:
    """What the first bytes said.

    Attributes:
        kind: terminate, pass through, or plaintext.
        buffered: the bytes read (to be replayed to whoever reads next).
        hello: the ClientHello, when there was one.
    """

    kind: Kind
    buffered: bytes
    hello: ClientHello | None = None


async def detect_tls(
    stream: trio.abc.ReceiveStream,
    local_name: str,
    *,
    timeout: float,  # noqa: ASYNC109 (a budget from Config, raises our own error)
) -> TlsDetected:
    """Read until the bytes decide whether this is TLS for us.

    Raises:
        TlsDetectTimeout: nothing decided within ``timeout`` (counted as
            ``tls detection timeout``).
    """
    buf = b""
    with trio.move_on_after(timeout) as scope:
        while True:
            chunk = await stream.receive_some(MAX_CLIENT_HELLO_LEN)
            if not chunk:
                return TlsDetected(Kind.PLAINTEXT, buf)
            buf += chunk
            result = parse_client_hello(buf)
            if isinstance(result, NeedMore):
                continue
            if isinstance(result, ClientHello):
                kind = Kind.TERMINATE if result.sni == local_name else Kind.PASSTHROUGH
                return TlsDetected(kind, buf, result)
            return TlsDetected(Kind.PLAINTEXT, buf)
    assert scope.cancelled_caught
    if buf:
        # Bytes arrived but never made a decision; they are not a ClientHello
        # we can finish reading in time: treat as plaintext, as the reference does
        # for a partial read that is not TLS.
        if isinstance(parse_client_hello(buf), NeedMore):
            raise TlsDetectTimeout(f"incomplete ClientHello after {timeout:g}s")
        return TlsDetected(Kind.PLAINTEXT, buf)
    raise TlsDetectTimeout(f"no bytes within {timeout:g}s")


async def terminate(
    stream: trio.abc.Stream,
    buffered: bytes,
    context: ssl.SSLContext,
    *,
    timeout: float,  # noqa: ASYNC109 (bounded handshake, raises TooSlowError)
) -> tuple[TlsStream, str | None]:
    """Complete the server side of the handshake; return the stream and the client id.

    Raises:
        trio.TooSlowError: the handshake did not finish within ``timeout``.
        trio.BrokenResourceError: the handshake failed.
    """
    tls = TlsStream(PrefixedStream(stream, buffered), context, server_side=True)
    with trio.fail_after(timeout):
        await tls.do_handshake()
    return tls, peer_identity(tls)
