"""BabaSSL NTLS server child that answers only after the client's close_notify (half-close interop).

    python -m tests.tlcp.babassl_reply_after_eof --suite ECC-SM2-SM4-GCM-SM3 --sign-cert ... --enc-key ...

It prints ``{"port": N}``, serves one connection: reads until the client's close_notify, then writes
everything it read back (BabaSSL, like OpenSSL, may write after receiving close_notify), sends its own
close_notify and prints one JSON report.  Runs in a child process for the reason given in
`tests.interop.babassl` (BabaSSL's libssl next to the system OpenSSL 3).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import socket
import struct
from collections.abc import Sequence
from pathlib import Path

from tests.interop.babassl import BabaSSL, BabaSSLError, NTLSCertFiles

_TIMEOUT_SECONDS = 30


def serve_one(suite: str, certs: NTLSCertFiles) -> dict[str, object]:
    lib = BabaSSL()
    ctx = lib.new_context(server=True)
    lib.set_cipher_list(ctx, suite)
    lib.use_certificates(ctx, certs)
    report: dict[str, object] = {"received": 0, "sent": 0, "close_notify_received": False, "error": None}
    with socket.create_server(("127.0.0.1", 0)) as listener:
        print(json.dumps({"port": listener.getsockname()[1]}), flush=True)
        conn, _ = listener.accept()
    conn.settimeout(None)  # libssl needs a blocking descriptor; the kernel timeouts bound a stuck peer
    timeval = struct.pack("ll", _TIMEOUT_SECONDS, 0)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
    ssl = lib.new_ssl(ctx, conn.fileno())
    buffer = ctypes.create_string_buffer(16 * 1024)
    try:
        lib.handshake(ssl, server=True)
        request = bytearray()
        while data := lib.read(ssl, buffer):
            request += data
        report["received"] = len(request)
        report["close_notify_received"] = data == b""
        lib.write_all(ssl, bytes(request))
        report["sent"] = len(request)
        report["shutdown"] = lib.shutdown(ssl)  # 1: the peer's close_notify had already arrived
    except BabaSSLError as exc:
        report["error"] = str(exc)
    finally:
        lib.free_ssl(ssl)
        conn.close()
        lib.free_context(ctx)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.tlcp.babassl_reply_after_eof")
    parser.add_argument("--suite", required=True)
    for name in ("--sign-cert", "--sign-key", "--enc-cert", "--enc-key"):
        parser.add_argument(name, type=Path, required=True)
    args = parser.parse_args(argv)
    certs = NTLSCertFiles(args.sign_cert, args.sign_key, args.enc_cert, args.enc_key)
    report = serve_one(args.suite, certs)
    print(json.dumps(report), flush=True)
    return 0 if report["error"] is None else 1


if __name__ == "__main__":
    raise SystemExit(main())
