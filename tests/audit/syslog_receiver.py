"""A minimal RFC 5425-framed syslog TCP receiver, run as a separate process by the sink tests.

``python -m tests.audit.syslog_receiver PORT OUTFILE``: accepts connections on 127.0.0.1:PORT, writes
every received message as one line to OUTFILE (appending, flushed per read) and prints ``ready``.
Its receive buffer is kept small so a SIGKILL loses little unread data, as a busy SIEM would.
"""

from __future__ import annotations

import selectors
import socket
import sys

from audit.sinks.syslog import parse_octet_frames


def main() -> None:
    port, out_path = int(sys.argv[1]), sys.argv[2]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    listener.bind(("127.0.0.1", port))
    listener.listen()
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    buffers: dict[socket.socket, bytearray] = {}
    print("ready", flush=True)
    with open(out_path, "ab", buffering=0) as out:
        while True:
            for key, _ in selector.select():
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is listener:
                    conn, _addr = listener.accept()
                    selector.register(conn, selectors.EVENT_READ)
                    buffers[conn] = bytearray()
                    continue
                data = sock.recv(65536)
                if not data:
                    selector.unregister(sock)
                    sock.close()
                    del buffers[sock]
                    continue
                buffer = buffers[sock]
                buffer.extend(data)
                frames = parse_octet_frames(buffer)
                if frames:
                    out.write(b"".join(frame + b"\n" for frame in frames))


if __name__ == "__main__":
    main()
