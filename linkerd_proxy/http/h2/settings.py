"""HTTP/2 connection settings for the server driver and the client connection.

Sits beside the HTTP/2 drivers (``server.py``, ``client.py``): plain frozen values,
built by the app from ``Config.h2`` (``H2ServerConfig``/``H2ClientConfig``) with
:meth:`H2ServerSettings.build` / :meth:`H2ClientSettings.build`, which take plain
values so that this package never imports the configuration. ``None`` in
``build`` means "our default" (the reference's "the HTTP/2 library's default").

Defaults, and where we are stricter than linkerd2-proxy (HARDENING.md):

- ``max_concurrent_streams`` 100 (the reference advertises none; item 11);
- ``max_header_list_size`` 16 KiB advertised (as hyper); a header block up to 4x
  that is decoded and answered with 431 on its stream, a larger one is a
  connection error (the h2 crate's CONTINUATION-flood bound);
- client resets: more than ``max_client_resets`` streams reset by the client
  within ``reset_window`` seconds → GOAWAY ENHANCE_YOUR_CALM (rapid reset);
- more than ``max_local_resets`` streams we had to reset for malformed requests →
  GOAWAY ENHANCE_YOUR_CALM (the h2 crate's local-error bound, 1024);
- ``max_send_buffer`` 400 KiB of frames queued for the socket per connection (as
  hyper's send buffer); writers wait beyond it and the read loop stops reading.
"""

from __future__ import annotations

from typing import TypeVar

import attrs

T = TypeVar("T")

#: RFC 9113 defaults and limits.
DEFAULT_WINDOW = 65_535
DEFAULT_MAX_FRAME_SIZE = 16_384
MAX_WINDOW = 2**31 - 1


@attrs.frozen
class H2ServerSettings:
    """What an HTTP/2 server connection advertises and enforces.

    Attributes:
        initial_stream_window_size: SETTINGS_INITIAL_WINDOW_SIZE (per request body).
        initial_connection_window_size: the connection receive window.
        max_concurrent_streams: advertised; excess streams get REFUSED_STREAM.
        max_header_list_size: advertised; larger requests get 431 on the stream.
        max_frame_size: SETTINGS_MAX_FRAME_SIZE.
        keepalive_interval: seconds between PINGs, ``None``: no keep-alive PINGs.
        keepalive_timeout: seconds to wait for a PING's ACK before closing.
        max_send_buffer: bytes of frames queued for the socket before writers wait.
        max_client_resets: client-reset streams tolerated within ``reset_window``.
        reset_window: seconds over which client resets are counted.
        max_local_resets: streams reset for malformed requests before GOAWAY.
        close_timeout: seconds allowed to flush a final GOAWAY when closing.
    """

    initial_stream_window_size: int = DEFAULT_WINDOW
    initial_connection_window_size: int = 1_048_576
    max_concurrent_streams: int = 100
    max_header_list_size: int = 16 * 1024
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    keepalive_interval: float | None = None
    keepalive_timeout: float = 20.0
    max_send_buffer: int = 400 * 1024
    max_client_resets: int = 200
    reset_window: float = 1.0
    max_local_resets: int = 1024
    close_timeout: float = 5.0

    @classmethod
    def build(
        cls,
        *,
        initial_stream_window_size: int = DEFAULT_WINDOW,
        initial_connection_window_size: int = 1_048_576,
        max_concurrent_streams: int | None = None,
        max_header_list_size: int | None = None,
        max_frame_size: int | None = None,
        keepalive_interval: float | None = None,
        keepalive_timeout: float | None = None,
        max_send_buf_size: int | None = None,
        max_pending_accept_reset_streams: int | None = None,
    ) -> H2ServerSettings:
        """Settings from optional values (``None``: our default).

        ``max_pending_accept_reset_streams`` (the reference's knob) sets
        ``max_client_resets``.
        """
        base = cls()
        return cls(
            initial_stream_window_size=initial_stream_window_size,
            initial_connection_window_size=initial_connection_window_size,
            max_concurrent_streams=_or(max_concurrent_streams, base.max_concurrent_streams),
            max_header_list_size=_or(max_header_list_size, base.max_header_list_size),
            max_frame_size=_or(max_frame_size, base.max_frame_size),
            keepalive_interval=keepalive_interval,
            keepalive_timeout=_or(keepalive_timeout, base.keepalive_timeout),
            max_send_buffer=_or(max_send_buf_size, base.max_send_buffer),
            max_client_resets=_or(max_pending_accept_reset_streams, base.max_client_resets),
        )


@attrs.frozen
class H2ClientSettings:
    """What an HTTP/2 client connection advertises and enforces.

    Attributes:
        initial_stream_window_size: SETTINGS_INITIAL_WINDOW_SIZE (per response body).
        initial_connection_window_size: the connection receive window.
        max_header_list_size: the largest response header block decoded.
        keepalive_interval: seconds between PINGs, ``None``: no keep-alive PINGs.
        keepalive_timeout: seconds to wait for a PING's ACK before closing.
        max_send_buffer: bytes of frames queued for the socket before writers wait.
        initial_max_streams: streams opened before the server's SETTINGS arrive.
        close_timeout: seconds allowed to flush a final GOAWAY when closing.
    """

    initial_stream_window_size: int = DEFAULT_WINDOW
    initial_connection_window_size: int = 1_048_576
    max_header_list_size: int = 1024 * 1024
    keepalive_interval: float | None = None
    keepalive_timeout: float = 20.0
    max_send_buffer: int = 400 * 1024
    initial_max_streams: int = 100
    close_timeout: float = 5.0

    @classmethod
    def build(
        cls,
        *,
        initial_stream_window_size: int = DEFAULT_WINDOW,
        initial_connection_window_size: int = 1_048_576,
        keepalive_interval: float | None = None,
        keepalive_timeout: float | None = None,
        max_send_buf_size: int | None = None,
    ) -> H2ClientSettings:
        """Settings from optional values (``None``: our default)."""
        base = cls()
        return cls(
            initial_stream_window_size=initial_stream_window_size,
            initial_connection_window_size=initial_connection_window_size,
            keepalive_interval=keepalive_interval,
            keepalive_timeout=_or(keepalive_timeout, base.keepalive_timeout),
            max_send_buffer=_or(max_send_buf_size, base.max_send_buffer),
        )


def _or(value: T | None, default: T) -> T:
    return default if value is None else value
