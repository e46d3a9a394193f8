"""``h2``'s connection without the frame log line it formats on every received frame.

``h2.connection.H2Connection._receive_frame`` (h2 4.1 to 4.4) starts with
``self.config.logger.trace("Received frame: %s", repr(frame))``: the ``repr`` is built whether or not
anything logs it, and for a gRPC call (eight frames in, most of them WINDOW_UPDATEs and small
HEADERS) it costs about a twentieth of the gateway's CPU. The gateway never sets an ``h2`` logger, so
:class:`UnloggedH2Connection` dispatches each frame exactly as ``h2`` does, without that line.
"""

from __future__ import annotations

import h2.connection
import h2.events
from h2.errors import ErrorCodes
from h2.exceptions import StreamClosedError, StreamIDTooLowError
from hyperframe.frame import Frame, RstStreamFrame


class UnloggedH2Connection(h2.connection.H2Connection):
    def _receive_frame(self, frame: Frame) -> list[h2.events.Event]:
        """``h2``'s own frame dispatch and stream-error handling, minus the trace line."""
        events: list[h2.events.Event]
        try:
            frames, events = self._frame_dispatch_table[frame.__class__](frame)
        except StreamClosedError as e:
            # Closed by RST_STREAM: answer RST_STREAM; otherwise a connection error.
            if self._stream_is_closed_by_reset(e.stream_id):
                reset = RstStreamFrame(e.stream_id)
                reset.error_code = e.error_code
                self._prepare_for_sending([reset])
                events = e._events
            else:
                raise
        except StreamIDTooLowError as e:
            # A stream already cleaned up: a stream error after RST_STREAM, a connection error after
            # END_STREAM (STREAM_CLOSED) or an implicit close (PROTOCOL_ERROR).
            if self._stream_is_closed_by_reset(e.stream_id):
                reset = RstStreamFrame(e.stream_id)
                reset.error_code = ErrorCodes.STREAM_CLOSED
                self._prepare_for_sending([reset])
                events = []
            elif self._stream_is_closed_by_end(e.stream_id):
                raise StreamClosedError(e.stream_id) from e
            else:
                raise
        else:
            self._prepare_for_sending(frames)
        return events
