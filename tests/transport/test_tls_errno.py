"""TLS errors carry no errno for ``tcp_close_total{errno}`` (transport.duplex, tcp.metered)."""

from __future__ import annotations

import contextlib
import errno
import ssl

import trio

from linkerd_proxy.tcp.metered import MeteredStream
from linkerd_proxy.transport.duplex import error_errno


def _broken_by(cause: BaseException) -> trio.BrokenResourceError:
    try:
        raise trio.BrokenResourceError("broken") from cause
    except trio.BrokenResourceError as exc:
        return exc


def test_tls_eof_has_no_errno_but_os_errors_keep_theirs() -> None:
    eof = ssl.SSLEOFError(ssl.SSL_ERROR_EOF, "EOF occurred in violation of protocol")
    assert eof.errno == errno.ENOEXEC  # the trap: OpenSSL's code 8
    assert error_errno(_broken_by(eof)) is None
    reset = ConnectionResetError(errno.ECONNRESET, "reset")
    assert error_errno(_broken_by(reset)) == errno.ECONNRESET


class _Metrics:
    def __init__(self) -> None:
        self.closed: list[int | None] = []

    def add_read(self, n: int) -> None:
        pass

    def add_write(self, n: int) -> None:
        pass

    def close(self, errno: int | None = None, /) -> None:
        self.closed.append(errno)


class _Failing(trio.abc.Stream):
    def __init__(self, cause: BaseException) -> None:
        self.cause = cause

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        raise _broken_by(self.cause)

    async def wait_send_all_might_not_block(self) -> None:
        pass

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        raise _broken_by(self.cause)

    async def aclose(self) -> None:
        pass


async def test_metered_stream_reports_no_errno_for_a_tls_eof() -> None:
    for cause, expected in (
        (ssl.SSLEOFError(ssl.SSL_ERROR_EOF, "EOF"), None),
        (ConnectionResetError(errno.ECONNRESET, "reset"), errno.ECONNRESET),
    ):
        metrics = _Metrics()
        stream = MeteredStream(_Failing(cause), metrics)
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.receive_some(10)
        await stream.aclose()
        assert metrics.closed == [expected], cause
