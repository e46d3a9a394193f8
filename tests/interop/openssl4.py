"""OpenSSL 4.x's own TLS 1.3 stack as an RFC 8998 peer, from the ``cryptography`` wheel.

The ``cryptography`` 50 wheels link OpenSSL 4.0 statically into their Rust extension, libssl
included, and expose it through the cffi binding pyOpenSSL uses
(``cryptography.hazmat.bindings.openssl.binding.Binding().lib``: ``SSL_CTX_new``,
``SSL_CTX_set_ciphersuites``, ``SSL_CTX_set1_curves_list``, ``SSL_CTX_set1_sigalgs_list``,
``SSL_set_fd``, ``SSL_do_handshake``, ``SSL_get1_session``...).  That libssl accepts
``TLS_SM4_GCM_SM3``/``TLS_SM4_CCM_SM3``, the group ``SM2`` (curveSM2) and the signature scheme
``sm2sig_sm3``, so it is an OpenSSL 4.x peer the tests can run without building anything.

It is the same library ``cryptography`` already is in this process, so it runs in-process (unlike
BabaSSL, see `tests.interop.babassl`): blocking sockets on a thread (`asyncio.to_thread`), cffi
releasing the GIL during each call so the smgate end keeps running on the event loop.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.bindings.openssl.binding import Binding

_binding = Binding()
lib: Any = _binding.lib
ffi: Any = _binding.ffi

TLS1_3_VERSION = 0x0304
_REQUEST = b"GET / HTTP/1.0\r\n\r\n"
_RESPONSE = b"HTTP/1.0 200 OK\r\nContent-Length: 8\r\n\r\nopenssl4"


class OpenSSLError(Exception):
    pass


def version() -> str:
    return str(ffi.string(lib.OpenSSL_version(0)).decode())


def _errors() -> str:
    reasons = []
    while code := lib.ERR_get_error():
        reason = lib.ERR_reason_error_string(code)
        reasons.append(ffi.string(reason).decode() if reason != ffi.NULL else hex(code))
    return "; ".join(reasons) or "no OpenSSL error queued"


def _blocking(sock: socket.socket, timeout: float) -> None:
    """Blocking for OpenSSL (a Python timeout would make the descriptor non-blocking), with kernel
    timeouts so a silent peer cannot hang the test."""
    sock.setblocking(True)
    interval = struct.pack("ll", int(timeout), int((timeout % 1) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, interval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, interval)


def _check(result: int, what: str) -> None:
    if result != 1:
        raise OpenSSLError(f"{what}: {_errors()}")


@dataclass(frozen=True)
class PeerFiles:
    """PEM files of one side: its SM2 signing certificate and key, and the CA that checks the other."""

    certificate: Path | None
    key: Path | None
    ca: Path


@dataclass
class Report:
    cipher: str
    resumed: bool
    peer_certificate: bool
    verify_result: int
    data: bytes


def _context(suite: str, files: PeerFiles, *, verify: bool) -> Any:
    ctx = ffi.gc(lib.SSL_CTX_new(lib.TLS_method()), lib.SSL_CTX_free)
    _check(lib.SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION), "min protocol TLS 1.3")
    _check(lib.SSL_CTX_set_ciphersuites(ctx, suite.encode()), f"ciphersuites {suite}")
    _check(lib.SSL_CTX_set1_curves_list(ctx, b"SM2"), "groups SM2")
    _check(lib.SSL_CTX_set1_sigalgs_list(ctx, b"sm2sig_sm3"), "sigalgs sm2sig_sm3")
    if files.certificate is not None and files.key is not None:
        _check(
            lib.SSL_CTX_use_certificate_file(ctx, str(files.certificate).encode(), lib.SSL_FILETYPE_PEM),
            "cert",
        )
        _check(lib.SSL_CTX_use_PrivateKey_file(ctx, str(files.key).encode(), lib.SSL_FILETYPE_PEM), "key")
    if verify:
        _check(lib.SSL_CTX_load_verify_locations(ctx, str(files.ca).encode(), ffi.NULL), "CA file")
        lib.SSL_CTX_set_verify(ctx, lib.SSL_VERIFY_PEER | lib.SSL_VERIFY_FAIL_IF_NO_PEER_CERT, ffi.NULL)
    return ctx


def _report(ssl: Any, data: bytes) -> Report:
    cipher = ffi.string(lib.SSL_CIPHER_get_name(lib.SSL_get_current_cipher(ssl))).decode()
    peer = lib.SSL_get_peer_certificate(ssl)
    if peer != ffi.NULL:
        lib.X509_free(peer)
    return Report(
        cipher,
        bool(lib.SSL_session_reused(ssl)),
        peer != ffi.NULL,
        int(lib.SSL_get_verify_result(ssl)),
        data,
    )


def _read_all(ssl: Any, limit: int = 1 << 16) -> bytes:
    buffer = ffi.new("char[]", 4096)
    data = b""
    while len(data) < limit:
        count = lib.SSL_read(ssl, buffer, 4096)
        if count <= 0:
            break
        data += ffi.buffer(buffer, count)[:]
    return data


class Client:
    """An OpenSSL 4 TLS 1.3-SM client that keeps its last session to offer on the next connection."""

    def __init__(self, suite: str, files: PeerFiles, server_name: str = "localhost") -> None:
        self.ctx = _context(suite, files, verify=True)
        self.server_name = server_name.encode()
        self.session: Any = None

    def get(self, port: int, timeout: float = 10.0) -> Report:
        """One connection: handshake (offering the last session), an HTTP/1.0 GET, the answer to EOF."""
        with socket.create_connection(("127.0.0.1", port)) as sock:
            _blocking(sock, timeout)
            ssl = ffi.gc(lib.SSL_new(self.ctx), lib.SSL_free)
            _check(lib.SSL_set_fd(ssl, sock.fileno()), "set_fd")
            lib.SSL_set_tlsext_host_name(ssl, self.server_name)
            if self.session is not None:
                _check(lib.SSL_set_session(ssl, self.session), "set_session")
            lib.SSL_set_connect_state(ssl)
            _check(lib.SSL_do_handshake(ssl), "client handshake")
            lib.SSL_write(ssl, _REQUEST, len(_REQUEST))
            data = _read_all(ssl)  # the NewSessionTicket arrives meanwhile
            report = _report(ssl, data)
            session = lib.SSL_get1_session(ssl)
            if session != ffi.NULL:
                self.session = ffi.gc(session, lib.SSL_SESSION_free)
            lib.SSL_shutdown(ssl)
        return report


def serve(
    listener: socket.socket, suite: str, files: PeerFiles, *, client_auth: bool, connections: int
) -> list[Report]:
    """Accept `connections` connections on one context (so its ticket key resumes the second), answer
    each request with a fixed HTTP response."""
    ctx = _context(suite, files, verify=client_auth)
    _check(lib.SSL_CTX_set_session_id_context(ctx, b"smgate-interop", 14), "session id context")
    listener.settimeout(10)  # a client that never comes fails the test instead of hanging it
    reports = []
    for _ in range(connections):
        sock, _ = listener.accept()
        with sock:
            _blocking(sock, 10)
            ssl = ffi.gc(lib.SSL_new(ctx), lib.SSL_free)
            _check(lib.SSL_set_fd(ssl, sock.fileno()), "set_fd")
            lib.SSL_set_accept_state(ssl)
            _check(lib.SSL_do_handshake(ssl), "server handshake")
            buffer = ffi.new("char[]", 4096)
            count = lib.SSL_read(ssl, buffer, 4096)
            request = ffi.buffer(buffer, count)[:] if count > 0 else b""
            lib.SSL_write(ssl, _RESPONSE, len(_RESPONSE))
            reports.append(_report(ssl, request))
            lib.SSL_shutdown(ssl)
    return reports
