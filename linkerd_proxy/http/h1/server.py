"""The HTTP/1 server driver: serve one accepted connection with an HTTP service.

Where it sits: the inbound and outbound HTTP stacks call :func:`serve_h1` for a
connection that protocol detection found to be HTTP/1 (passing the bytes
detection already read as ``prefix``). It turns what the client sends into
:class:`~linkerd_proxy.http.model.Request` objects (through the sans-IO
:class:`~linkerd_proxy.http.h1.codec.H1ServerCodec`), calls the service, and writes
each :class:`~linkerd_proxy.http.model.Response` back. Request building, response
framing and upgrade handling live in ``server_request.py``/``server_response.py``.

Rules (see also the codec's strictness notes):

- One request at a time, in order, even when the client pipelines; the driver
  reads at most one ``read_size`` ahead of the request it serves.
- Request bodies stream into a :class:`~linkerd_proxy.http.body.PipeBody` with
  back-pressure (a slow service slows the client); ``Expect: 100-continue`` is
  answered with ``100 Continue`` when the service first reads the body (and the
  ``Expect`` header is forwarded, as hyper does; the client driver drops the
  upstream's own ``100``).
- Limits: an oversized head or too many header fields → 431, then close; a
  malformed request → 400, then close.
- A request that has started must deliver its whole head within
  ``header_read_timeout`` (HARDENING item 6; the reference has no such bound),
  else the connection closes. An idle keep-alive connection between requests is
  never cut for being idle (linkerd2#14131).
- If the client closes while the service has not yet answered, the service call
  is cancelled (hyper's default, no half-close); set ``half_close`` to keep going.
  The client is watched by one task per connection, and only for calls still
  running after ``eof_watch_delay``: a quick call costs no task switch for it
  (the HTTP hot path), a slow one notices the client leaving at once after that.
- Drain: once ``drain`` fires, an idle connection closes at once; a busy one
  finishes its response, marked ``connection: close``, then closes.
- The service raising instead of answering → 502, logged; the connection goes on
  if the request was read in full.
"""

from __future__ import annotations

import collections
import logging
import math

import attrs
import trio

from linkerd_proxy.app.shutdown import Shutdown
from linkerd_proxy.http.body import BodyAbandoned, BodyError, EmptyBody, PipeBody
from linkerd_proxy.http.h1 import codec as h1
from linkerd_proxy.http.h1.server_request import BadRequest, build_request, synthetic_head
from linkerd_proxy.http.h1.server_response import ResponseWriter
from linkerd_proxy.http.model import Request, Response, get_ext
from linkerd_proxy.http.upgrade import DownstreamUpgrade, Upgraded, UpstreamUpgrade, join_upgraded
from linkerd_proxy.stack.service import Service

log = logging.getLogger(__name__)

__all__ = ["H1ServerSettings", "serve_h1"]


@attrs.frozen
class H1ServerSettings:
    """Limits and timeouts of the HTTP/1 server driver (seconds and bytes).

    Attributes:
        header_read_timeout: from the first byte of a request until its head is
            complete; past it the connection closes. 10 s, the detect timeout.
        max_head_bytes: the largest request head (→ 431); hyper's ~408 KiB.
        max_headers: the most header fields in a head (→ 431); hyper's 100.
        read_size: the most bytes read at once (bounds read-ahead).
        body_buffer: request-body bytes held before the reader waits.
        half_close: keep serving a request after the client's EOF.
        close_linger: after the last response, how long to read and discard
            before closing, so that the client gets the response, not a reset.
        eof_watch_delay: how long a service call runs before the client
            connection is watched for EOF (to cancel the call when it left).
    """

    header_read_timeout: float = 10.0
    max_head_bytes: int = h1.DEFAULT_MAX_HEAD_BYTES
    max_headers: int = h1.DEFAULT_MAX_HEADERS
    read_size: int = 64 * 1024
    body_buffer: int = 64 * 1024
    half_close: bool = False
    close_linger: float = 1.0
    eof_watch_delay: float = 0.05


async def serve_h1(
    stream: trio.abc.Stream,
    service: Service[Request, Response],
    *,
    settings: H1ServerSettings | None = None,
    drain: Shutdown | None = None,
    prefix: bytes = b"",
    extensions: dict[type, object] | None = None,
) -> None:
    """Serve HTTP/1 requests from ``stream`` until the connection ends.

    Takes ownership of ``stream`` and closes it (or hands it to an upgrade tunnel,
    which closes it).

    Args:
        stream: the client connection.
        service: answers each request.
        settings: limits and timeouts.
        drain: when it fires, stop after the in-flight request.
        prefix: bytes already read from ``stream`` (by protocol detection).
        extensions: copied into every request's extensions (client address, TLS).

    Cancellation: the connection is closed; in-flight service calls are cancelled.
    """
    conn = _Connection(stream, service, settings or H1ServerSettings(), drain, extensions or {})
    try:
        await conn.run(prefix)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        log.debug("h1 server: connection failed: %s", exc)
    finally:
        if not conn.upgraded:
            await trio.aclose_forcefully(stream)


class _ContinueBody(PipeBody):
    """A request body that tells the driver when the service starts reading it."""

    def __init__(self, *, content_length: int | None, limit: int) -> None:
        super().__init__(content_length=content_length, limit=limit)
        self.first_read = trio.Event()

    async def read(self) -> bytes:
        self.first_read.set()
        return await super().read()


class _Connection:
    def __init__(
        self,
        stream: trio.abc.Stream,
        service: Service[Request, Response],
        settings: H1ServerSettings,
        drain: Shutdown | None,
        extensions: dict[type, object],
    ) -> None:
        self.stream = stream
        self.service = service
        self.settings = settings
        self.drain = drain
        self.extensions = extensions
        self.codec = h1.H1ServerCodec(
            max_head_bytes=settings.max_head_bytes, max_headers=settings.max_headers
        )
        self.events: collections.deque[h1.Event] = collections.deque()
        self.writer = ResponseWriter(stream)
        self.upgraded = False
        self.peer_eof = False
        self.request_error: int | None = None
        # Both ways of ending the connection early (drain while idle, the
        # client leaving during a call) cancel the connection's nursery: no
        # cancel scope per read or per call on the hot path.
        self._idle_wait = False
        self._nursery: trio.Nursery | None = None
        # The client watch (see _watch_client): a counter of watched calls,
        # whether one is running, the watcher's parking lot, and its read.
        self._call_seq = 0
        self._watching = False
        self._watcher: trio.lowlevel.ParkingLot | None = None
        self._watcher_parked = False
        self._watch_read: tuple[trio.CancelScope, trio.Event] | None = None

    @property
    def draining(self) -> bool:
        return self.drain is not None and self.drain.is_triggered

    async def run(self, prefix: bytes) -> None:
        if prefix:
            self.events.extend(self.codec.feed(prefix))
        graceful = False
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.drain is not None:
                nursery.start_soon(self._watch_drain, self.drain)
            try:
                graceful = await self._serve_all(nursery)
            finally:
                nursery.cancel_scope.cancel()
        if graceful and not self.upgraded:
            await self._linger()

    async def _watch_drain(self, drain: Shutdown) -> None:
        await drain.wait()
        if self._idle_wait and self._nursery is not None:
            self._nursery.cancel_scope.cancel()  # idle: close now

    async def _serve_all(self, nursery: trio.Nursery) -> bool:
        """Serve requests in order; True when the connection should be closed
        gracefully (after a complete response)."""
        while True:
            event = await self._next_head()
            if event is None:
                return False
            if isinstance(event, h1.ProtocolError):
                log.debug("h1 server: bad request: %s", event.reason)
                await self.writer.write_error(event.status, "1.1")
                return True
            if not isinstance(event, h1.RequestHead):
                return False  # unreachable: the codec starts every request with a head
            if not await self._serve_one(event, nursery):
                return not self.upgraded and not self.peer_eof

    async def _receive(self) -> bytes:
        try:
            return bytes(await self.stream.receive_some(self.settings.read_size))
        except (trio.BrokenResourceError, OSError) as exc:
            log.debug("h1 server: read failed: %s", exc)
            return b""

    async def _read_more(self, deadline: float) -> bool:
        """Feed one read to the codec; False if the deadline passed (or drain
        interrupted an idle wait)."""
        idle = self.codec.idle and not self.events
        if idle and self.draining:
            return False
        if deadline == math.inf:
            self._idle_wait = idle
            try:
                data = await self._receive()
            finally:
                self._idle_wait = False
        else:
            with trio.move_on_at(deadline) as scope:
                data = await self._receive()
            if scope.cancelled_caught:
                return False
        if not data:
            self.peer_eof = True
        self.events.extend(self.codec.feed(data) if data else self.codec.feed_eof())
        return True

    async def _next_head(self) -> h1.Event | None:
        deadline = math.inf
        while not self.events:
            if self.codec.closed:
                return None
            if not self.codec.idle and deadline == math.inf:
                deadline = trio.current_time() + self.settings.header_read_timeout
            if not await self._read_more(deadline):
                if not self.codec.idle:
                    log.debug("h1 server: request head not read in time; closing")
                return None
        return self.events.popleft()

    async def _serve_one(self, head: h1.RequestHead, nursery: trio.Nursery) -> bool:
        """Serve one request; True if the connection can take another."""
        try:
            request, declined = build_request(head, self.extensions)
        except BadRequest as exc:
            log.debug("h1 server: %s", exc)
            self._drop_request_events()
            await self.writer.write_error(400, head.version)
            return False
        if declined:
            self._decline_upgrade(head)
        accepts_trailers = b"trailers" in _te_tokens(head)
        body_done = trio.Event()
        body: PipeBody | None = None
        if DownstreamUpgrade in request.extensions or not _has_body(head):
            self._take_end_of_message()
            body_done.set()
        else:
            body = self._new_body(head)
            request.body = body
            nursery.start_soon(self._feed_body, body, body_done, h1.expects_continue(head))
        response = await self._call(request, body_done)
        if self.request_error is not None:
            # The body turned out malformed before the response began.
            await response.body.aclose()
            await self.writer.write_error(self.request_error, head.version)
            return False
        upgrade = get_ext(request.extensions, DownstreamUpgrade)
        if upgrade is not None:
            if self.writer.is_upgrade_response(request.method, response.status):
                return await self._upgrade(head, response)
            self.events.extend(self.codec.resume_http(keep_alive=head.keep_alive))
        keep_alive = head.keep_alive and not self.draining
        keep_alive = await self.writer.write_response(
            head, response, keep_alive=keep_alive, trailers=accepts_trailers
        )
        if body is not None and not body_done.is_set():
            await body.aclose()  # the service did not read it all: do not resync
            keep_alive = False
        return keep_alive and not self.draining and not self.peer_eof

    async def _call(self, request: Request, body_done: trio.Event) -> Response:
        """Call the service (the client leaving cancels the connection's nursery)."""
        watched = body_done.is_set() and not self.settings.half_close
        if watched:
            self._arm_watch()
        try:
            return await self.service(request)
        except Exception:
            if self.request_error is None:
                log.exception("h1 server: service failed: %s %s", request.method, request.path)
            return Response(502, [], EmptyBody())
        finally:
            if watched:
                await self._disarm_watch()

    def _arm_watch(self) -> None:
        self._call_seq += 1
        self._watching = True
        if self._watcher is None:
            assert self._nursery is not None
            self._watcher = trio.lowlevel.ParkingLot()
            self._nursery.start_soon(self._watch_client, self._watcher)
        elif self._watcher_parked:
            self._watcher_parked = False
            self._watcher.unpark_all()

    async def _disarm_watch(self) -> None:
        self._watching = False
        read = self._watch_read
        if read is not None:
            # The watcher is reading: stop it, and let it leave the stream
            # before this task reads from it again.
            scope, left = read
            scope.cancel()
            with trio.CancelScope(shield=True):
                await left.wait()

    async def _watch_client(self, lot: trio.lowlevel.ParkingLot) -> None:
        # One task per connection. A watched call still running after
        # ``eof_watch_delay`` gets a read on the client: EOF cancels the call;
        # bytes (a pipelined request) go to the codec and the watch stops.
        delay = self.settings.eof_watch_delay
        while True:
            if not self._watching:
                self._watcher_parked = True
                await lot.park()
                continue
            seq = self._call_seq
            await trio.sleep(delay)
            if not self._watching or self._call_seq != seq:
                continue  # that call ended in time
            if self.events or not self.codec.idle or self.codec.closed:
                self._watcher_parked = True  # nothing to learn: wait for the next call
                await lot.park()
                continue
            left = trio.Event()
            with trio.CancelScope() as read_scope:
                self._watch_read = (read_scope, left)
                try:
                    data = await self._receive()
                finally:
                    self._watch_read = None
                    left.set()
            if read_scope.cancelled_caught:
                continue
            if data:
                self.events.extend(self.codec.feed(data))
            else:
                self.peer_eof = True
                if self._watching and self._call_seq == seq and self._nursery is not None:
                    self._nursery.cancel_scope.cancel()  # the call is abandoned
            if self._call_seq == seq:
                self._watcher_parked = True
                await lot.park()

    def _new_body(self, head: h1.RequestHead) -> PipeBody:
        lengths = head.values(b"content-length")
        chunked = bool(head.values(b"transfer-encoding"))
        length = int(lengths[0]) if lengths and not chunked else None
        if h1.expects_continue(head):
            return _ContinueBody(content_length=length, limit=self.settings.body_buffer)
        return PipeBody(content_length=length, limit=self.settings.body_buffer)

    async def _feed_body(self, body: PipeBody, done: trio.Event, expect: bool) -> None:
        try:
            if expect and isinstance(body, _ContinueBody) and not self.events:
                await body.first_read.wait()
                await self.writer.write_continue()
            while True:
                if not self.events:
                    if not await self._read_more(math.inf):
                        return
                    continue
                event = self.events.popleft()
                if isinstance(event, h1.Body):
                    await body.send(event.data)
                elif isinstance(event, h1.EndOfMessage):
                    body.finish(event.trailers or None)
                    done.set()
                    return
                else:
                    reason = event.reason if isinstance(event, h1.ProtocolError) else "?"
                    if isinstance(event, h1.ProtocolError) and not self.writer.head_sent:
                        self.request_error = event.status
                    body.fail(BodyError(f"request body failed: {reason}"))
                    return
        except BodyAbandoned:
            return
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            body.fail(BodyError(f"request body failed: {exc}"))

    def _take_end_of_message(self) -> None:
        if self.events and isinstance(self.events[0], h1.EndOfMessage):
            self.events.popleft()

    def _drop_request_events(self) -> None:
        self.events.clear()

    def _decline_upgrade(self, head: h1.RequestHead) -> None:
        """Go on as plain HTTP/1 after an upgrade request that is not performed."""
        if not head.upgrade:
            return
        self._take_end_of_message()
        if not _has_body(head):
            self.events.extend(self.codec.resume_http(keep_alive=head.keep_alive))
            return
        # llhttp skipped the body of what it took for an upgrade: parse it again
        # behind a head with the same framing and no upgrade.
        trailing = self.codec.trailing_data
        self.codec = h1.H1ServerCodec(
            max_head_bytes=self.settings.max_head_bytes, max_headers=self.settings.max_headers
        )
        events = self.codec.feed(synthetic_head(head) + trailing)
        if events and isinstance(events[0], h1.RequestHead):
            events.pop(0)
        self.events.extend(events)

    async def _upgrade(self, head: h1.RequestHead, response: Response) -> bool:
        upstream = get_ext(response.extensions, UpstreamUpgrade)
        if upstream is None:
            log.warning("h1 server: upgrade response without an upstream connection")
            await self.writer.write_error(502, head.version)
            return False
        await self.writer.write_upgrade_head(head, response)
        downstream = Upgraded(self.stream, self.codec.trailing_data)
        self.upgraded = True
        up = await upstream.wait()
        result = await join_upgraded(downstream, up)
        if result.error is not None:
            log.debug("h1 server: upgraded connection ended with %s", result.error)
        return False

    async def _linger(self) -> None:
        # Half-close and read what the client still sends for a moment, so that
        # closing with unread data does not reset the response away.
        with trio.move_on_after(self.settings.close_linger):
            try:
                if isinstance(self.stream, trio.abc.HalfCloseableStream):
                    await self.stream.send_eof()
                for _ in range(16):
                    if self.peer_eof or not await self.stream.receive_some(64 * 1024):
                        break
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass


def _has_body(head: h1.RequestHead) -> bool:
    if head.values(b"transfer-encoding"):
        return True
    return any(v.strip() not in (b"0", b"") for v in head.values(b"content-length"))


def _te_tokens(head: h1.RequestHead) -> set[bytes]:
    return {t.strip().lower() for v in head.values(b"te") for t in v.split(b",") if t.strip()}
