"""Syslog sink: RFC 5424 messages over UDP (RFC 5426, asyncio-dgram), TCP (RFC 6587 octet counting)
or TLS (RFC 5425).

Each message is ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD-ID seq=".." id=".."] MSG`` with
the audit event type as MSGID and the stored JSON line (``prev``/``mac`` included) as MSG, so a SIEM
can both index the record and re-verify it. On TCP a record counts as acknowledged once the kernel
reports the peer ACKed its bytes (``SIOCOUTQ``); on TLS once every byte written was ACKed; on UDP once
sent. Reconnecting resumes at the first unacknowledged record minus ``replay_overlap``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import ssl
import struct
import termios
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncio_dgram

from audit.config import SyslogSinkConfig
from audit.sinks.follower import FollowerSink, SinkRecord

#: RFC 5424 severities by event type; anything else is informational (6).
SEVERITY = {
    "handshake.fail": 4,
    "upstream.fail": 4,
    "cert.expiring": 4,
    "cert.expired": 3,
    "config.reload": 5,
    "admin.action": 5,
    "audit.gap": 1,
}
INFO = 6


def format_rfc5424(record: SinkRecord, *, facility: int, hostname: str, app_name: str, sd_id: str) -> bytes:
    """One RFC 5424 message (no framing)."""
    priority = facility * 8 + SEVERITY.get(record.event, INFO)
    msgid = record.event if record.event.isascii() and 0 < len(record.event) <= 32 else "-"
    procid = str(record.pid) if record.pid > 0 else "-"
    header = f'<{priority}>1 {record.ts} {hostname} {app_name} {procid} {msgid} [{sd_id} seq="{record.seq}"] '
    return header.encode("ascii") + record.line


def octet_frame(message: bytes) -> bytes:
    """RFC 6587 section 3.4.1 / RFC 5425 section 4.3: ``MSG-LEN SP SYSLOG-MSG``."""
    return str(len(message)).encode("ascii") + b" " + message


def parse_octet_frames(buffer: bytearray) -> list[bytes]:
    """Remove and return every complete octet-counted frame at the start of ``buffer`` (receivers, tests)."""
    frames: list[bytes] = []
    while True:
        space = buffer.find(b" ", 0, 12)
        if space <= 0:
            if len(buffer) >= 12:
                raise ValueError("malformed octet-counted frame")
            return frames
        length = int(buffer[:space])
        if len(buffer) < space + 1 + length:
            return frames
        frames.append(bytes(buffer[space + 1 : space + 1 + length]))
        del buffer[: space + 1 + length]


def _unacked_bytes(sock: Any) -> int:
    """Bytes in the kernel send queue not yet ACKed by the peer (Linux ``SIOCOUTQ``)."""
    result = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
    value: int = struct.unpack("i", result)[0]
    return value


class SyslogSink(FollowerSink):
    kind = "syslog"

    def __init__(
        self,
        config: SyslogSinkConfig,
        *,
        cursor_dir: Path,
        segments: Callable[[], list[tuple[int, Path]]],
    ) -> None:
        super().__init__(
            name=config.sink_name,
            queue_size=config.queue_size,
            cursor_dir=cursor_dir,
            segments=segments,
            reconnect_initial=config.reconnect_initial,
            reconnect_max=config.reconnect_max,
            replay_overlap=config.replay_overlap if config.transport != "udp" else 0,
        )
        self.kind = f"syslog-{config.transport}"
        self.config = config
        self._hostname = config.hostname or (socket.gethostname() or "-")[:255]
        self._datagram: Any = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._sock: Any = None
        self._bytes_written = 0
        #: (cumulative bytes after this record, seq) for records written but not yet acknowledged
        self._inflight: deque[tuple[int, int]] = deque()
        self._ssl_context: ssl.SSLContext | None = (
            self._make_ssl_context() if config.transport == "tls" else None
        )

    def _make_ssl_context(self) -> ssl.SSLContext:
        settings = self.config.tls
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if settings is not None:
            if settings.ca_file is not None:
                context.load_verify_locations(cafile=str(settings.ca_file))
            if settings.cert_file is not None and settings.key_file is not None:
                context.load_cert_chain(str(settings.cert_file), str(settings.key_file))
            if not settings.verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        return context

    def message(self, record: SinkRecord) -> bytes:
        return format_rfc5424(
            record,
            facility=self.config.facility,
            hostname=self._hostname,
            app_name=self.config.app_name,
            sd_id=self.config.sd_id,
        )

    async def _connect(self) -> None:
        config = self.config
        if config.transport == "udp":
            self._datagram = await asyncio_dgram.connect((config.host, config.port))
            return
        server_hostname = None
        if self._ssl_context is not None:
            server_hostname = (config.tls.server_name if config.tls else None) or config.host
        reader, writer = await asyncio.open_connection(
            config.host, config.port, ssl=self._ssl_context, server_hostname=server_hostname
        )
        self._writer = writer
        self._sock = writer.get_extra_info("socket")
        self._bytes_written = 0
        self._inflight.clear()
        self._reader_task = asyncio.create_task(self._watch_peer(reader))

    async def _watch_peer(self, reader: asyncio.StreamReader) -> None:
        """Syslog peers never send; EOF or an error here means the connection is gone."""
        with contextlib.suppress(Exception):
            while await reader.read(4096):
                pass
        self.connected = False  # the send loop reconnects and resumes after the last acknowledged record
        if self._writer is not None:
            self._writer.close()

    async def _send(self, records: list[SinkRecord]) -> None:
        if self.config.transport == "udp":
            for record in records:
                message = self.message(record)
                if len(message) > self.config.max_datagram:
                    # Cutting a JSON line would make it unparseable; the file sink keeps the record.
                    self.errors += 1
                    self.last_error = f"record {record.seq} exceeds max_datagram; not sent over UDP"
                    continue
                await self._datagram.send(message)
            return
        writer = self._writer
        if writer is None or writer.is_closing():
            raise ConnectionResetError("syslog connection closed")
        chunks = []
        for record in records:
            frame = octet_frame(self.message(record))
            chunks.append(frame)
            self._bytes_written += len(frame)
            self._inflight.append((self._bytes_written, record.seq))
        writer.write(b"".join(chunks))
        await writer.drain()
        if writer.is_closing():
            raise ConnectionResetError("syslog connection closed")

    async def _update_acks(self) -> None:
        if self.config.transport == "udp":
            await super()._update_acks()
            return
        writer, sock = self._writer, self._sock
        if writer is None or sock is None or not self._inflight:
            return
        try:
            unacked = _unacked_bytes(sock)
        except OSError:
            return
        buffered = writer.transport.get_write_buffer_size()
        if self._ssl_context is not None:
            # TLS adds framing, so only "everything written is acknowledged" maps back to records; the
            # TLS transport's size does not include the TCP transport below it, so ask that one too.
            inner = getattr(getattr(writer.transport, "_ssl_protocol", None), "_transport", None)
            if inner is None:
                return  # cannot prove delivery: records stay unacknowledged and are re-sent on reconnect
            buffered += inner.get_write_buffer_size()
            acked_bytes = self._bytes_written if unacked == 0 and buffered == 0 else 0
        else:
            acked_bytes = self._bytes_written - buffered - unacked
        while self._inflight and self._inflight[0][0] <= acked_bytes:
            self.acked_seq = max(self.acked_seq, self._inflight.popleft()[1])

    async def _close(self) -> None:
        if self._datagram is not None:
            self._datagram.close()
            self._datagram = None
        if self._reader_task is not None:
            self._reader_task.cancel()
            self._reader_task = None
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), timeout=1.0)
        self._sock = None
        self._inflight.clear()
