"""TLS over any trio stream, batched per transport read, with half-close.

Sits between the transport (``MeteredStream``, or ``PrefixedStream`` over one on
the inbound side, after the ClientHello was peeked) and whoever speaks through
mTLS: the HTTP drivers and the opaque copy in ``transport.duplex``.
``tls.client.connect_tls`` and ``tls.server.terminate`` create it.

Why not ``trio.SSLStream``: its ``receive_some`` returns one TLS record (at most
16 KiB) per call and takes a scheduler pass on every call that did no I/O, so a
64 KiB transport read costs four trips through the copy loop; and it cannot
half-close. Here one transport read yields every complete record in it, one
``send_all`` encrypts all of its data and writes the ciphertext at once, and
``send_eof`` sends close_notify while the other direction keeps flowing (TLS 1.3
allows it, as the reference does over rustls).

Semantics follow trio's streams: ``ClosedResourceError`` after ``aclose``,
``BrokenResourceError`` after any failure (a TLS error, the transport breaking,
a cancelled ``send_all`` or handshake, or the peer closing TCP without
close_notify), ``BusyResourceError`` for two concurrent sends or two concurrent
receives. One task may send while another receives. The handshake runs on the
first operation if ``do_handshake`` was not called.

Ciphertext leaves through one lock (:class:`trio.StrictFIFOLock`) taken by
``send_all``, ``send_eof`` and the receiving side, because reading can make
OpenSSL queue records of its own (a TLS 1.3 KeyUpdate reply); whoever holds the
lock drains the outgoing buffer until it is empty, so bytes leave in the order
OpenSSL produced them.
"""

from __future__ import annotations

import contextlib
import enum
import ssl
from typing import Literal, overload

import trio

#: ``receive_some`` returns at most this much when the caller sets no limit.
DEFAULT_RECEIVE_SIZE = 256 * 1024
#: Ciphertext read from the transport per call.
TRANSPORT_READ_SIZE = 64 * 1024
#: ``send_all`` encrypts and writes at most this much plaintext per transport call,
#: so that a huge write does not hold all of its ciphertext at once.
SEND_CHUNK = 256 * 1024
# The largest plaintext of one TLS record: each ``SSLObject.read`` returns at most
# one record, so asking for more only allocates more.
_RECORD = 16 * 1024


class _State(enum.Enum):
    OK = "ok"
    BROKEN = "broken"
    CLOSED = "closed"


class TlsStream(trio.abc.HalfCloseableStream):
    """A TLS connection over ``transport``, driven through memory BIOs.

    Args:
        transport: the ciphertext stream; owned from now on (closed by
            :meth:`aclose`).
        context: the TLS context (the identity store's client or server context).
        server_side: whether this end is the server.
        server_hostname: the SNI to send (client side).

    Attributes:
        transport_stream: the stream underneath, as ``trio.SSLStream`` names it.
    """

    def __init__(
        self,
        transport: trio.abc.Stream,
        context: ssl.SSLContext,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
    ) -> None:
        self.transport_stream = transport
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
        )
        self._state = _State.OK
        self._handshake_done = False
        self._handshake_lock = trio.Lock()
        self._send_lock = trio.StrictFIFOLock()
        self._sending = False
        self._receiving = False
        self._eof_sent = False
        self._eof_received = False
        # Plaintext taken out of OpenSSL before close_notify (see send_eof),
        # served first by receive_some.
        self._plain = b""
        # An error met after some plaintext was already decrypted: that data is
        # returned first, the error on the next call.
        self._deferred: BaseException | None = None

    # -- introspection, delegated to the SSLObject ----------------------------

    def selected_alpn_protocol(self) -> str | None:
        """The ALPN protocol the handshake settled on, if any."""
        return self._ssl.selected_alpn_protocol()

    @overload
    def getpeercert(self, binary_form: Literal[False] = ...) -> ssl._PeerCertRetDictType | None: ...

    @overload
    def getpeercert(self, binary_form: Literal[True]) -> bytes | None: ...

    def getpeercert(self, binary_form: bool = False) -> ssl._PeerCertRetType:
        """The peer's leaf certificate (DER with ``binary_form=True``)."""
        return self._ssl.getpeercert(binary_form)

    def version(self) -> str | None:
        """The negotiated protocol version (``"TLSv1.3"``)."""
        return self._ssl.version()

    def cipher(self) -> tuple[str, str, int] | None:
        """The negotiated cipher: name, protocol, secret bits."""
        return self._ssl.cipher()

    # -- state -----------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._state is _State.CLOSED:
            raise trio.ClosedResourceError("this TLS stream is closed")
        if self._state is _State.BROKEN:
            if self._deferred is not None:
                exc, self._deferred = self._deferred, None
                raise exc
            raise trio.BrokenResourceError("this TLS stream is broken")

    def _broken(self, exc: ssl.SSLError) -> trio.BrokenResourceError:
        self._state = _State.BROKEN
        err = trio.BrokenResourceError(f"TLS error: {exc}")
        err.__cause__ = exc
        return err

    async def _flush(self) -> None:
        """Write out everything OpenSSL has queued, holding the send lock.

        Cancellation:
            Leaves the stream broken if ciphertext may have been cut short.
        """
        lock = self._send_lock
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            await self._flush_locked()
        finally:
            lock.release()

    async def _flush_locked(self) -> None:
        outgoing = self._outgoing
        try:
            while outgoing.pending:
                await self.transport_stream.send_all(outgoing.read())
        except BaseException:
            if self._state is _State.OK:
                self._state = _State.BROKEN
            raise

    def _try_flush_nowait(self) -> bool:
        """Whether the caller may flush now: the lock is free (it is then held).

        When another task holds the lock it is inside ``_flush_locked``, which
        drains the buffer until it is empty, so the bytes go out anyway.
        """
        try:
            self._send_lock.acquire_nowait()
        except trio.WouldBlock:
            return False
        return True

    # -- handshake -------------------------------------------------------------

    async def do_handshake(self) -> None:
        """Run the TLS handshake, if it has not run yet (idempotent).

        Bound it with the caller's ``trio.fail_after``.

        Raises:
            trio.BrokenResourceError: the handshake failed (``ssl.SSLError`` as
                the ``__cause__``), or the transport broke.
            trio.ClosedResourceError: the stream was closed.

        Cancellation:
            A handshake cut short leaves the stream broken.
        """
        self._check_usable()
        if self._handshake_done:
            await trio.lowlevel.checkpoint()
            return
        async with self._handshake_lock:
            self._check_usable()
            if not self._handshake_done:
                await self._handshake()

    async def _handshake(self) -> None:
        try:
            while True:
                try:
                    self._ssl.do_handshake()
                    done = True
                except ssl.SSLWantReadError:
                    done = False
                except ssl.SSLError as exc:
                    err = self._broken(exc)
                    # Let the peer read our alert instead of a bare EOF.
                    await self._send_alert()
                    raise err from exc
                if self._outgoing.pending:
                    await self._flush()
                if done:
                    self._handshake_done = True
                    return
                data = await self.transport_stream.receive_some(TRANSPORT_READ_SIZE)
                if data:
                    self._incoming.write(data)
                else:
                    self._incoming.write_eof()
        except BaseException:
            if self._state is _State.OK:
                self._state = _State.BROKEN
            raise

    async def _send_alert(self) -> None:
        if not self._outgoing.pending or not self._try_flush_nowait():
            return
        try:
            await self.transport_stream.send_all(self._outgoing.read())
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            self._send_lock.release()

    async def _ensure_handshake(self) -> None:
        if not self._handshake_done:
            await self.do_handshake()

    # -- receiving -------------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Return the plaintext of every complete record available, up to ``max_bytes``.

        Reads the transport at most once per call, and only when OpenSSL holds
        no complete record.

        Returns:
            At least one byte, or ``b""`` once the peer sent close_notify.

        Raises:
            trio.BrokenResourceError: TLS error, transport failure, or the peer
                closed TCP without close_notify (truncation).
            trio.ClosedResourceError: the stream was closed.
            trio.BusyResourceError: another task is receiving.
        """
        self._check_usable()
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this TLS stream")
        self._receiving = True
        try:
            await self._ensure_handshake()
            await trio.lowlevel.checkpoint_if_cancelled()
            size = DEFAULT_RECEIVE_SIZE if max_bytes is None else max_bytes
            if size < 1:
                raise ValueError("max_bytes must be >= 1")
            if self._plain:
                data, self._plain = self._plain[:size], self._plain[size:]
                return data
            while True:
                data = self._decrypt(size)
                if self._outgoing.pending and self._try_flush_nowait():
                    try:
                        await self._flush_locked()
                    finally:
                        self._send_lock.release()
                if data or self._eof_received:
                    return data
                try:
                    ciphertext = await self.transport_stream.receive_some(TRANSPORT_READ_SIZE)
                except trio.BrokenResourceError:
                    # Not on Cancelled: an interrupted read lost nothing.
                    if self._state is _State.OK:
                        self._state = _State.BROKEN
                    raise
                self._check_usable()
                if ciphertext:
                    self._incoming.write(ciphertext)
                else:
                    self._incoming.write_eof()
        finally:
            self._receiving = False

    def _decrypt(self, size: int) -> bytes:
        """Take up to ``size`` bytes of plaintext out of OpenSSL without I/O.

        Returns ``b""`` when nothing is complete yet or at close_notify (then
        ``_eof_received`` is set).
        """
        if self._eof_received:
            return b""
        chunks: list[bytes] = []
        got = 0
        read = self._ssl.read
        try:
            while got < size:
                chunk = read(min(size - got, _RECORD))
                if not chunk:
                    self._eof_received = True
                    break
                chunks.append(chunk)
                got += len(chunk)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            # Raised instead of b"" once close_notify went both ways.
            self._eof_received = True
        except ssl.SSLError as exc:
            err = self._broken(exc)
            if not chunks:
                raise err from exc
            self._deferred = err
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)

    # -- sending ---------------------------------------------------------------

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt ``data`` and write the ciphertext in one transport call
        (one per :data:`SEND_CHUNK` of plaintext).

        Raises:
            trio.BrokenResourceError: TLS error or transport failure.
            trio.ClosedResourceError: the stream was closed, or ``send_eof`` was
                called.
            trio.BusyResourceError: another task is sending.

        Cancellation:
            Leaves the stream broken (some ciphertext may have gone out), as
            trio's streams do.
        """
        self._check_usable()
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this TLS stream")
        self._sending = True
        try:
            await self._ensure_handshake()
            if self._eof_sent:
                raise trio.ClosedResourceError("send_eof was called on this TLS stream")
            if not data:
                await trio.lowlevel.checkpoint()
                return
            await trio.lowlevel.checkpoint_if_cancelled()
            view = memoryview(data)
            try:
                for start in range(0, len(view), SEND_CHUNK):
                    self._encrypt(view[start : start + SEND_CHUNK])
                    await self._flush()
            except BaseException:
                # Even a cancelled wait for the lock leaves ciphertext queued
                # that the lock's holder will send: the stream is inconsistent.
                if self._state is _State.OK:
                    self._state = _State.BROKEN
                raise
        finally:
            self._sending = False

    def _encrypt(self, plaintext: memoryview) -> None:
        try:
            written = self._ssl.write(plaintext)
            # A memory BIO never refuses bytes, so this is one call in practice.
            while written < len(plaintext):
                written += self._ssl.write(plaintext[written:])
        except ssl.SSLError as exc:
            raise self._broken(exc) from exc

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the transport might accept more data."""
        self._check_usable()
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this TLS stream")
        self._sending = True
        try:
            await self.transport_stream.wait_send_all_might_not_block()
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        """Send close_notify: the peer reads EOF; receiving keeps working.

        Idempotent. After it, ``send_all`` raises ``ClosedResourceError``.

        Raises:
            trio.BrokenResourceError: TLS error or transport failure.
            trio.ClosedResourceError: the stream was closed.
            trio.BusyResourceError: another task is sending.
        """
        self._check_usable()
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this TLS stream")
        self._sending = True
        try:
            await self._ensure_handshake()
            if self._eof_sent:
                await trio.lowlevel.checkpoint()
                return
            # CPython's unwrap calls SSL_shutdown twice; the second call reads
            # and fails fatally on application data still inside OpenSSL. Take
            # that plaintext out first; receive_some serves it before reading on.
            self._plain += self._decrypt(1 << 62)
            try:
                self._ssl.unwrap()
            except ssl.SSLWantReadError:
                pass  # the peer's close_notify has not come yet: expected
            except ssl.SSLError as exc:
                raise self._broken(exc) from exc
            self._eof_sent = True
            await self._flush()
        finally:
            self._sending = False

    # -- closing ---------------------------------------------------------------

    async def aclose(self) -> None:
        """Send close_notify if it can go at once (not waiting for the peer's),
        then close the transport.

        Cancellation:
            The transport is closed regardless (forcefully).
        """
        if self._state is _State.CLOSED:
            await trio.lowlevel.checkpoint()
            return
        graceful = self._state is _State.OK and self._handshake_done and not self._eof_sent
        self._state = _State.CLOSED
        try:
            if graceful and self._try_flush_nowait():
                try:
                    # Want-read (expected) or unread data: close anyway.
                    with contextlib.suppress(ssl.SSLError):
                        self._ssl.unwrap()
                    await self._flush_locked()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
                finally:
                    self._send_lock.release()
        except BaseException:
            await trio.aclose_forcefully(self.transport_stream)
            raise
        await self.transport_stream.aclose()
