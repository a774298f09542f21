"""Writing responses on an HTTP/1 server connection: framing and the body copy.

Where it sits: a helper of the HTTP/1 server driver (``server.py``); it owns the
write side of the client stream.

Framing, chosen from the response and the request:

- no body (and no framing header) for ``HEAD``, 1xx, 204, 304 and 2xx to
  ``CONNECT``; a ``Content-Length`` the service put in the headers is kept for
  ``HEAD`` and 304 (it describes the ``GET``) and dropped for 1xx/204;
- ``Content-Length`` when the body knows its length (0 for an empty body);
- chunked for HTTP/1.1 clients otherwise, with the trailers when the client sent
  ``TE: trailers`` (else the trailers are dropped);
- close-delimited for HTTP/1.0 clients otherwise (the connection ends with it),
  and for an HTTP/1.0 response of unknown length (an upstream's body ended by EOF),
  which then goes out as ``HTTP/1.0`` as the reference (hyper) sends it: EOF
  framing is kept end to end, also across a second proxy.

The head goes out with the first chunk of the body in one write when that chunk
is already there (BENCH.md lesson 4: no head-then-body pair of small writes).
"""

from __future__ import annotations

import logging

import trio

from linkerd_proxy.http.body import Body, BodyError, BytesBody
from linkerd_proxy.http.h1 import codec as h1
from linkerd_proxy.http.model import Headers, Response, get_ext

log = logging.getLogger(__name__)

__all__ = ["ResponseWriter"]


def _ready(body: Body) -> bool:
    # Whether the first chunk can be read without waiting (to batch it with the head).
    return body.buffered > 0 or isinstance(body, BytesBody)


def _reason(response: Response) -> bytes | None:
    reason = get_ext(response.extensions, h1.ReasonPhrase)
    return reason.value if reason is not None else None


class ResponseWriter:
    """Writes responses (and interim ``100 Continue``) to ``stream``, one at a time."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._lock = trio.Lock()
        self._head_sent = False

    @property
    def head_sent(self) -> bool:
        """Whether the current response's head has gone out."""
        return self._head_sent

    async def _send(self, data: bytes) -> None:
        # The lock only matters when ``100 Continue`` races the response; take
        # it without a scheduler pass when it is free (always, on the hot path).
        lock = self._lock
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            await self._stream.send_all(data)
        finally:
            lock.release()

    async def write_continue(self) -> None:
        """Send ``100 Continue``, unless the response has already begun."""
        if not self._head_sent:
            await self._send(b"HTTP/1.1 100 Continue\r\n\r\n")

    async def write_error(self, status: int, version: h1.HttpVersion) -> None:
        """An empty error response that closes the connection."""
        headers = [(b"content-length", b"0")]
        if version == "1.1":
            headers.append((b"connection", b"close"))
        await self._send(h1.serialize_response_head(status, headers, version))

    @staticmethod
    def is_upgrade_response(method: str, status: int) -> bool:
        return status == 101 or (method == "CONNECT" and 200 <= status < 300)

    async def write_upgrade_head(self, head: h1.RequestHead, response: Response) -> None:
        """The head of a ``101`` (with ``Connection: upgrade``) or a 2xx to
        ``CONNECT`` (without framing headers)."""
        drop = h1.HOP_BY_HOP_HEADERS | {b"content-length"}
        headers: Headers = [(k, v) for k, v in response.headers if k not in drop]
        if response.status == 101:
            headers.append((b"connection", b"upgrade"))
            headers.extend((b"upgrade", v) for v in h1.header_values(response.headers, b"upgrade"))
        self._head_sent = True
        reason = _reason(response)
        await self._send(h1.serialize_response_head(response.status, headers, "1.1", reason))
        await response.body.aclose()

    async def write_response(
        self, head: h1.RequestHead, response: Response, *, keep_alive: bool, trailers: bool
    ) -> bool:
        """Write ``response`` to the request ``head``.

        Returns:
            Whether the connection may carry another request afterwards.

        Raises:
            trio.BrokenResourceError, OSError: the client went away.
        """
        self._head_sent = False
        status = response.status
        body = response.body
        has_body = h1.response_has_body(head.method, status)
        tokens = h1.lower_connection_tokens(response.headers)
        drop = h1.HOP_BY_HOP_HEADERS | tokens if tokens else h1.HOP_BY_HOP_HEADERS
        headers: Headers = [(k, v) for k, v in response.headers if k not in drop]
        length: int | None = None
        chunked = False
        version = head.version
        if has_body:
            headers = [(k, v) for k, v in headers if k != b"content-length"]
            length = body.content_length
            if length is None and body.is_end_stream:
                length = 0
            if length is not None:
                headers.append((b"content-length", b"%d" % length))
            elif head.version == "1.1" and response.version != "HTTP/1.0":
                chunked = True
                headers.append((b"transfer-encoding", b"chunked"))
            else:
                keep_alive = False  # close-delimited
                version = "1.0"
        elif status < 200 or status == 204:
            headers = [(k, v) for k, v in headers if k != b"content-length"]
        if not keep_alive and head.version == "1.1":
            headers.append((b"connection", b"close"))
        elif keep_alive and head.version == "1.0":
            headers.append((b"connection", b"keep-alive"))
        try:
            data = h1.serialize_response_head(status, headers, version, _reason(response))
        except ValueError as exc:
            log.warning("h1 server: cannot write response: %s", exc)
            await body.aclose()
            await self.write_error(502, head.version)
            return False
        self._head_sent = True
        if not has_body:
            await body.aclose()
            await self._send(data)
            return keep_alive
        try:
            return await self._copy_body(data, body, length, chunked, trailers) and keep_alive
        finally:
            await body.aclose()

    async def _copy_body(
        self, pending: bytes, body: Body, length: int | None, chunked: bool, trailers: bool
    ) -> bool:
        sent = 0
        if length == 0:
            await self._send(pending)
            return True
        if not _ready(body):
            await self._send(pending)
            pending = b""
        while True:
            try:
                chunk = await body.read()
            except BodyError as exc:
                log.debug("h1 server: response body failed: %s", exc)
                if pending:
                    await self._send(pending)
                return False  # the client sees a truncated response
            if not chunk:
                break
            sent += len(chunk)
            if length is not None and sent > length:
                log.warning("h1 server: response body longer than its content-length")
                return False
            pending += h1.encode_chunk(chunk) if chunked else chunk
            await self._send(pending)
            pending = b""
        if chunked:
            pending += h1.encode_last_chunk((body.trailers or ()) if trailers else ())
        elif length is not None and sent != length:
            log.warning("h1 server: response body of %d bytes, content-length %d", sent, length)
            return False
        if pending:
            await self._send(pending)
        return length is not None or chunked
