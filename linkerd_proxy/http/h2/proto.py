"""h2's connection state machine as the proxy's HTTP/2 drivers use it (pure, no I/O).

Sits under ``conn.py``: :class:`Proto` is h2's ``H2Connection`` with the few
changes the drivers need, and :func:`make_proto` configures it (settings, windows,
h2's own header validation off: ``headers.py`` does the checks that matter).
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h2.settings
from h2.errors import ErrorCodes
from h2.exceptions import StreamClosedError, StreamIDTooLowError
from hyperframe.frame import Frame, GoAwayFrame, RstStreamFrame

from linkerd_proxy.http.h2.hpack_fast import FastDecoder, FastEncoder, quiet_hpack_logging


class Proto(h2.connection.H2Connection):
    """h2's connection with the changes the proxy needs (pinned to h2 4.x).

    - Stream counts are O(1): the drivers count and limit streams themselves
      (h2 scans every stream on each new one, and treats excess inbound streams as
      a connection error instead of refusing the stream). Closed streams are still
      forgotten, amortised over new streams.
    - A received GOAWAY does not close the state machine or drop queued output, so
      streams below its last stream id can finish (RFC 9113 6.8).
    - :meth:`send_goaway` sends a GOAWAY without closing the state machine
      (graceful shutdown: open streams finish).
    - HPACK is ``hpack_fast``'s (no indexing on send, cached encodings), and a
      received frame is not ``repr``-ed for a trace log that is never written.
    """

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config)
        self._forget_at = 64
        self.encoder = FastEncoder()  # type: ignore[assignment]
        self.decoder = FastDecoder(self.DEFAULT_MAX_HEADER_LIST_SIZE)  # type: ignore[assignment]

    def _forget_closed(self) -> int:
        if len(self.streams) >= self._forget_at:
            self._open_streams(0)  # side effect: forgets closed streams of both kinds
            self._forget_at = max(64, 2 * len(self.streams))
        return 0

    @property
    def open_inbound_streams(self) -> int:
        return self._forget_closed()

    @property
    def open_outbound_streams(self) -> int:
        return self._forget_closed()

    def _receive_frame(self, frame: Frame) -> list[h2.events.Event]:
        # h2's own, minus the eager repr(frame) for its no-op trace logger.
        events: list[h2.events.Event]
        try:
            frames, events = self._frame_dispatch_table[frame.__class__](frame)
        except StreamClosedError as exc:
            # Closed by our RST_STREAM: a stream error (answer with RST_STREAM).
            if not self._stream_is_closed_by_reset(exc.stream_id):
                raise
            rst = RstStreamFrame(exc.stream_id)
            rst.error_code = exc.error_code
            self._prepare_for_sending([rst])
            return exc._events
        except StreamIDTooLowError as exc:
            # A forgotten stream: reset by us is a stream error; ended, a
            # connection error; implicitly closed, PROTOCOL_ERROR.
            if self._stream_is_closed_by_reset(exc.stream_id):
                rst = RstStreamFrame(exc.stream_id)
                rst.error_code = ErrorCodes.STREAM_CLOSED
                self._prepare_for_sending([rst])
                return []
            if self._stream_is_closed_by_end(exc.stream_id):
                raise StreamClosedError(exc.stream_id) from exc
            raise
        self._prepare_for_sending(frames)
        return events

    def _receive_goaway_frame(
        self, frame: GoAwayFrame
    ) -> tuple[list[Frame], list[h2.events.Event]]:
        event = h2.events.ConnectionTerminated()
        try:
            event.error_code = ErrorCodes(frame.error_code)
        except ValueError:
            event.error_code = frame.error_code
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]

    def send_goaway(self, error_code: int, last_stream_id: int) -> None:
        """Queue a GOAWAY frame, leaving open streams open."""
        frame = GoAwayFrame(0)
        frame.last_stream_id = last_stream_id
        frame.error_code = error_code
        self._prepare_for_sending([frame])

    @property
    def pending_out(self) -> int:
        """Bytes queued for the socket."""
        return len(self._data_to_send)


def make_proto(
    *,
    client: bool,
    stream_window: int,
    connection_window: int,
    decoder_limit: int,
    max_frame_size: int | None = None,
    max_concurrent_streams: int | None = None,
    max_header_list_size: int | None = None,
) -> Proto:
    """A :class:`Proto` with our settings, its preface already queued.

    h2's header validation and normalisation are off (``headers.py`` does the
    checks that matter in one pass; BENCH.md lesson 7).
    """
    config = h2.config.H2Configuration(
        client_side=client,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
        normalize_inbound_headers=False,
    )
    quiet_hpack_logging()
    proto = Proto(config)
    codes = h2.settings.SettingCodes
    values = {codes.INITIAL_WINDOW_SIZE: stream_window}
    if client:
        values[codes.ENABLE_PUSH] = 0
    if max_frame_size is not None:
        values[codes.MAX_FRAME_SIZE] = max_frame_size
    if max_concurrent_streams is not None:
        values[codes.MAX_CONCURRENT_STREAMS] = max_concurrent_streams
    if max_header_list_size is not None:
        values[codes.MAX_HEADER_LIST_SIZE] = max_header_list_size
    proto.local_settings = h2.settings.Settings(client=client, initial_values=values)
    proto.decoder.max_header_list_size = decoder_limit
    proto.initiate_connection()
    if connection_window > 65_535:
        proto.increment_flow_control_window(connection_window - 65_535)
    return proto
