"""BabaSSL NTLS (TLCP) peer for interoperability tests and benchmarks, driven through ctypes.

The `tongsuopy` 1.0.1 wheel bundles BabaSSL 8.3.2 (OpenSSL 1.1.1h base) with its NTLS libssl linked
statically into ``tongsuopy/backends/_tongsuo.abi3.so``. Loading that library next to the system
OpenSSL 3 that Python's ``ssl`` and ``cryptography`` use invites symbol clashes, so the BabaSSL side
always runs in a child process::

    python -m tests.interop.babassl server --suite ECC-SM2-SM4-GCM-SM3 --connections 2 ...
    python -m tests.interop.babassl client --port 4433 --suite ECC-SM2-SM4-GCM-SM3 --resume ...
    python -m tests.interop.babassl load --port 4433 --suite ... --threads 8 --duration 5

Each child speaks JSON lines on stdout: the server first prints ``{"event": "listening", "port": N}``
and then one report per connection; the client prints one report per connection; ``load`` prints a
summary. The parent-side helpers (`BabaSSLServer`, `run_babassl_client`) spawn the children with
asyncio so a test's event loop keeps serving the smgate end meanwhile.

Payloads are deterministic (`payload_bytes`) so both ends can check every byte without shipping the
expected data across the process boundary.

``client --request TEXT`` sends TEXT after the payload (``\r\n`` escapes allowed, e.g. an HTTP/1.1
request with ``Connection: close``) and reports what the server answers until it closes (``response``).

``client --h2-get PATH`` makes one HTTP/2 request (the ``h2`` library, prior knowledge of h2 as ALPN
gives it) over the BabaSSL connection after the payload: ``GET PATH`` with ``:authority`` the server
name, and reports ``h2_status``, ``h2_body`` (the first 64 KiB, latin-1) and ``h2_stream_id``.

``--protocol tls13`` runs TLS 1.3 with the RFC 8998 suites instead of NTLS (``--suite TLS_SM4_GCM_SM3``
or ``TLS_SM4_CCM_SM3``, groups ``--groups`` (default ``SM2``), signature scheme sm2sig_sm3,
``SSL_CTX_enable_sm_tls13_strict``); the TLS 1.3 identity is the signing pair of the ``--sign-*``
files.  ``--keylog FILE`` (NSS key log lines) and ``--key-update`` (client: request a KeyUpdate
half-way through the payload) apply to TLS 1.3.

``--alpn h2,http/1.1`` works under both protocols: a client offers the names (``SSL_CTX_set_alpn_protos``),
a server selects with ``SSL_select_next_proto`` in its own order from an ``SSL_CTX_set_alpn_select_cb``
callback and refuses a client with nothing in common with no_application_protocol.  BabaSSL 8.3.2
carries the extension in the NTLS hellos as well (its ``tls_parse_ctos_alpn_ntls``/``tls_handle_alpn_ntls``);
each report's ``alpn`` is the protocol ``SSL_get0_alpn_selected`` returned.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import random
import socket
import statistics
import struct
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

#: The BabaSSL cipher names of the four GB/T 38636 suites, keyed by IANA-style code point.
SUITE_NAMES: dict[int, str] = {
    0xE013: "ECC-SM2-SM4-CBC-SM3",
    0xE053: "ECC-SM2-SM4-GCM-SM3",
    0xE011: "ECDHE-SM2-SM4-CBC-SM3",
    0xE051: "ECDHE-SM2-SM4-GCM-SM3",
}

#: BabaSSL's names of the RFC 8998 TLS 1.3 suites, keyed by code point.
TLS13_SUITE_NAMES: dict[int, str] = {0x00C6: "TLS_SM4_GCM_SM3", 0x00C7: "TLS_SM4_CCM_SM3"}

# OpenSSL 1.1.1 constants used below (ssl.h / x509_vfy.h).
_SSL_FILETYPE_PEM = 1
_SSL_VERIFY_PEER = 0x01
_SSL_VERIFY_FAIL_IF_NO_PEER_CERT = 0x02
_SSL_OP_NO_TICKET = 0x00004000
_SSL_CTRL_SET_TLSEXT_HOSTNAME = 55
_TLSEXT_NAMETYPE_HOST_NAME = 0
_SSL_ERROR_SSL = 1
_SSL_ERROR_SYSCALL = 5
_SSL_ERROR_ZERO_RETURN = 6
_SSL_CTRL_SET_GROUPS_LIST = 92
_SSL_CTRL_SET_SIGALGS_LIST = 98
_SSL_CTRL_SET_CLIENT_SIGALGS_LIST = 102
_SSL_CTRL_SET_MIN_PROTO_VERSION = 123
_SSL_CTRL_SET_MAX_PROTO_VERSION = 124
_TLS1_3_VERSION = 0x0304
_SSL_KEY_UPDATE_REQUESTED = 1
_SSL_TLSEXT_ERR_OK = 0
_SSL_TLSEXT_ERR_ALERT_FATAL = 2
_OPENSSL_NPN_NEGOTIATED = 1

_KEYLOG_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p)
_ALPN_SELECT_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.POINTER(ctypes.c_ubyte)),
    ctypes.POINTER(ctypes.c_ubyte),
    ctypes.POINTER(ctypes.c_ubyte),
    ctypes.c_uint,
    ctypes.c_void_p,
)

_IO_CHUNK = 16 * 1024
_IO_TIMEOUT = 30.0


class BabaSSLError(Exception):
    """A BabaSSL call failed; the message carries OpenSSL's error queue."""


def library_path() -> Path:
    """Locate the BabaSSL shared object inside the installed tongsuopy wheel without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("tongsuopy")
    if spec is None or spec.submodule_search_locations is None:
        raise BabaSSLError("tongsuopy is not installed")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "backends" / "_tongsuo.abi3.so"
        if candidate.exists():
            return candidate
    raise BabaSSLError("tongsuopy wheel has no backends/_tongsuo.abi3.so")


_voidp = ctypes.c_void_p
_charp = ctypes.c_char_p
_int = ctypes.c_int
_long = ctypes.c_long
_ulong = ctypes.c_ulong


class BabaSSL:
    """Typed wrappers over the few libssl entry points the harness uses (one instance per process)."""

    def __init__(self, path: Path | None = None) -> None:
        self._lib = ctypes.CDLL(str(path or library_path()), mode=ctypes.RTLD_LOCAL)
        #: ctypes callbacks (and their data) handed to libssl, kept alive as long as the library
        self._callbacks: list[object] = []
        self._declare()
        self._lib.OPENSSL_init_ssl(0, None)

    def _declare(self) -> None:
        signatures: dict[str, tuple[Any, list[Any]]] = {
            "OPENSSL_init_ssl": (_int, [ctypes.c_uint64, _voidp]),
            "OpenSSL_version": (_charp, [_int]),
            "NTLS_client_method": (_voidp, []),
            "NTLS_server_method": (_voidp, []),
            "SSL_CTX_new": (_voidp, [_voidp]),
            "SSL_CTX_free": (None, [_voidp]),
            "SSL_CTX_enable_ntls": (None, [_voidp]),
            "SSL_CTX_set_options": (_ulong, [_voidp, _ulong]),
            "SSL_CTX_set_cipher_list": (_int, [_voidp, _charp]),
            "SSL_CTX_use_sign_certificate_file": (_int, [_voidp, _charp, _int]),
            "SSL_CTX_use_sign_PrivateKey_file": (_int, [_voidp, _charp, _int]),
            "SSL_CTX_use_enc_certificate_file": (_int, [_voidp, _charp, _int]),
            "SSL_CTX_use_enc_PrivateKey_file": (_int, [_voidp, _charp, _int]),
            "SSL_CTX_load_verify_locations": (_int, [_voidp, _charp, _charp]),
            "SSL_CTX_set_verify": (None, [_voidp, _int, _voidp]),
            "SSL_CTX_set_session_id_context": (_int, [_voidp, _charp, ctypes.c_uint]),
            "SSL_new": (_voidp, [_voidp]),
            "SSL_free": (None, [_voidp]),
            "SSL_set_fd": (_int, [_voidp, _int]),
            "SSL_ctrl": (_long, [_voidp, _int, _long, _voidp]),
            "SSL_connect": (_int, [_voidp]),
            "SSL_accept": (_int, [_voidp]),
            "SSL_read": (_int, [_voidp, _voidp, _int]),
            "SSL_write": (_int, [_voidp, _charp, _int]),
            "SSL_shutdown": (_int, [_voidp]),
            "SSL_get_error": (_int, [_voidp, _int]),
            "SSL_get1_session": (_voidp, [_voidp]),
            "SSL_set_session": (_int, [_voidp, _voidp]),
            "SSL_SESSION_free": (None, [_voidp]),
            "SSL_session_reused": (_int, [_voidp]),
            "SSL_get_current_cipher": (_voidp, [_voidp]),
            "SSL_CIPHER_get_name": (_charp, [_voidp]),
            "SSL_get_version": (_charp, [_voidp]),
            "SSL_get_verify_result": (_long, [_voidp]),
            "SSL_get_peer_certificate": (_voidp, [_voidp]),
            "X509_get_subject_name": (_voidp, [_voidp]),
            "X509_NAME_oneline": (_charp, [_voidp, _charp, _int]),
            "X509_free": (None, [_voidp]),
            "ERR_get_error": (_ulong, []),
            "ERR_error_string_n": (None, [_ulong, _charp, ctypes.c_size_t]),
            "ERR_clear_error": (None, []),
            "TLS_server_method": (_voidp, []),
            "TLS_client_method": (_voidp, []),
            "SSL_CTX_ctrl": (_long, [_voidp, _int, _long, _voidp]),
            "SSL_CTX_set_ciphersuites": (_int, [_voidp, _charp]),
            "SSL_CTX_enable_sm_tls13_strict": (None, [_voidp]),
            "SSL_CTX_use_certificate_chain_file": (_int, [_voidp, _charp]),
            "SSL_CTX_use_PrivateKey_file": (_int, [_voidp, _charp, _int]),
            "SSL_CTX_set_keylog_callback": (None, [_voidp, _KEYLOG_CALLBACK]),
            "SSL_CTX_set_alpn_protos": (_int, [_voidp, ctypes.c_char_p, ctypes.c_uint]),
            "SSL_CTX_set_alpn_select_cb": (None, [_voidp, _ALPN_SELECT_CALLBACK, _voidp]),
            "SSL_select_next_proto": (
                _int,
                [
                    ctypes.POINTER(ctypes.POINTER(ctypes.c_ubyte)),
                    ctypes.POINTER(ctypes.c_ubyte),
                    ctypes.c_char_p,
                    ctypes.c_uint,
                    ctypes.POINTER(ctypes.c_ubyte),
                    ctypes.c_uint,
                ],
            ),
            "SSL_get0_alpn_selected": (
                None,
                [_voidp, ctypes.POINTER(ctypes.POINTER(ctypes.c_ubyte)), ctypes.POINTER(ctypes.c_uint)],
            ),
            "SSL_key_update": (_int, [_voidp, _int]),
        }
        for name, (restype, argtypes) in signatures.items():
            function = getattr(self._lib, name)
            function.restype = restype
            function.argtypes = argtypes

    # -- errors -------------------------------------------------------------------------------------

    def error_queue(self) -> str:
        """Drain OpenSSL's thread-local error queue into one readable string."""
        messages: list[str] = []
        while code := int(self._lib.ERR_get_error()):
            buffer = ctypes.create_string_buffer(256)
            self._lib.ERR_error_string_n(code, buffer, len(buffer))
            messages.append(buffer.value.decode(errors="replace"))
        return "; ".join(messages) or "no OpenSSL error queued"

    def _check(self, result: int, what: str) -> None:
        if result != 1:
            raise BabaSSLError(f"{what} failed: {self.error_queue()}")

    def version(self) -> str:
        raw: bytes = self._lib.OpenSSL_version(0)
        return raw.decode()

    # -- contexts -----------------------------------------------------------------------------------

    def new_context(self, *, server: bool) -> int:
        method = self._lib.NTLS_server_method() if server else self._lib.NTLS_client_method()
        ctx = self._lib.SSL_CTX_new(method)
        if not ctx:
            raise BabaSSLError(f"SSL_CTX_new failed: {self.error_queue()}")
        self._lib.SSL_CTX_enable_ntls(ctx)
        return int(ctx)

    def free_context(self, ctx: int) -> None:
        self._lib.SSL_CTX_free(ctx)

    def set_options(self, ctx: int, options: int) -> None:
        self._lib.SSL_CTX_set_options(ctx, options)

    def set_cipher_list(self, ctx: int, ciphers: str) -> None:
        self._check(self._lib.SSL_CTX_set_cipher_list(ctx, ciphers.encode()), f"cipher list {ciphers}")

    def use_certificates(self, ctx: int, files: NTLSCertFiles) -> None:
        pem = _SSL_FILETYPE_PEM
        self._check(
            self._lib.SSL_CTX_use_sign_certificate_file(ctx, bytes(files.sign_cert), pem), "sign cert"
        )
        self._check(self._lib.SSL_CTX_use_sign_PrivateKey_file(ctx, bytes(files.sign_key), pem), "sign key")
        self._check(self._lib.SSL_CTX_use_enc_certificate_file(ctx, bytes(files.enc_cert), pem), "enc cert")
        self._check(self._lib.SSL_CTX_use_enc_PrivateKey_file(ctx, bytes(files.enc_key), pem), "enc key")

    def load_verify_locations(self, ctx: int, ca_file: Path) -> None:
        self._check(self._lib.SSL_CTX_load_verify_locations(ctx, bytes(ca_file), None), "CA file")

    def set_verify(self, ctx: int, mode: int) -> None:
        self._lib.SSL_CTX_set_verify(ctx, mode, None)

    def set_session_id_context(self, ctx: int, sid_ctx: bytes) -> None:
        self._check(self._lib.SSL_CTX_set_session_id_context(ctx, sid_ctx, len(sid_ctx)), "sid ctx")

    # -- connections --------------------------------------------------------------------------------

    def new_ssl(self, ctx: int, fd: int) -> int:
        ssl = self._lib.SSL_new(ctx)
        if not ssl:
            raise BabaSSLError(f"SSL_new failed: {self.error_queue()}")
        self._check(self._lib.SSL_set_fd(ssl, fd), "SSL_set_fd")
        return int(ssl)

    def free_ssl(self, ssl: int) -> None:
        self._lib.SSL_free(ssl)

    def set_host_name(self, ssl: int, name: str) -> None:
        raw = ctypes.c_char_p(name.encode())
        result = int(self._lib.SSL_ctrl(ssl, _SSL_CTRL_SET_TLSEXT_HOSTNAME, _TLSEXT_NAMETYPE_HOST_NAME, raw))
        self._check(result, "SNI")

    def handshake(self, ssl: int, *, server: bool) -> None:
        result = int(self._lib.SSL_accept(ssl) if server else self._lib.SSL_connect(ssl))
        if result != 1:
            code = int(self._lib.SSL_get_error(ssl, result))
            raise BabaSSLError(f"handshake failed (SSL_get_error {code}): {self.error_queue()}")

    def write_all(self, ssl: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            chunk = bytes(view[:_IO_CHUNK])
            written = int(self._lib.SSL_write(ssl, chunk, len(chunk)))
            if written <= 0:
                code = int(self._lib.SSL_get_error(ssl, written))
                raise BabaSSLError(f"SSL_write failed (SSL_get_error {code}): {self.error_queue()}")
            view = view[written:]

    def read(self, ssl: int, buffer: ctypes.Array[ctypes.c_char]) -> bytes | None:
        """Read one record's worth; ``b""`` on close_notify, ``None`` on EOF without close_notify."""
        count = int(self._lib.SSL_read(ssl, buffer, len(buffer)))
        if count > 0:
            return buffer.raw[:count]
        code = int(self._lib.SSL_get_error(ssl, count))
        if code == _SSL_ERROR_ZERO_RETURN:
            return b""
        if code == _SSL_ERROR_SYSCALL and not int(self._lib.ERR_get_error()):
            return None
        raise BabaSSLError(f"SSL_read failed (SSL_get_error {code}): {self.error_queue()}")

    def shutdown(self, ssl: int) -> int:
        """Send close_notify; 1 if the peer's close_notify had already arrived, 0 if not."""
        result = int(self._lib.SSL_shutdown(ssl))
        if result < 0:
            code = int(self._lib.SSL_get_error(ssl, result))
            raise BabaSSLError(f"SSL_shutdown failed (SSL_get_error {code}): {self.error_queue()}")
        return result

    def get1_session(self, ssl: int) -> int:
        return int(self._lib.SSL_get1_session(ssl) or 0)

    def set_session(self, ssl: int, session: int) -> None:
        self._check(self._lib.SSL_set_session(ssl, session), "SSL_set_session")

    def free_session(self, session: int) -> None:
        self._lib.SSL_SESSION_free(session)

    def session_reused(self, ssl: int) -> bool:
        return bool(self._lib.SSL_session_reused(ssl))

    def cipher_name(self, ssl: int) -> str:
        cipher = self._lib.SSL_get_current_cipher(ssl)
        if not cipher:
            return ""
        name: bytes = self._lib.SSL_CIPHER_get_name(cipher)
        return name.decode()

    def protocol_version(self, ssl: int) -> str:
        raw: bytes = self._lib.SSL_get_version(ssl)
        return raw.decode()

    def verify_result(self, ssl: int) -> int:
        return int(self._lib.SSL_get_verify_result(ssl))

    def peer_subject(self, ssl: int) -> str | None:
        cert = self._lib.SSL_get_peer_certificate(ssl)
        if not cert:
            return None
        try:
            buffer = ctypes.create_string_buffer(512)
            self._lib.X509_NAME_oneline(self._lib.X509_get_subject_name(cert), buffer, len(buffer))
            return buffer.value.decode(errors="replace")
        finally:
            self._lib.X509_free(cert)

    # -- TLS 1.3 (RFC 8998) --------------------------------------------------------------------------

    def new_tls13_context(self, *, server: bool) -> int:
        """A TLS-method context pinned to TLS 1.3 with the SM suites in Tongsuo's strict mode."""
        method = self._lib.TLS_server_method() if server else self._lib.TLS_client_method()
        ctx = self._lib.SSL_CTX_new(method)
        if not ctx:
            raise BabaSSLError(f"SSL_CTX_new failed: {self.error_queue()}")
        for control in (_SSL_CTRL_SET_MIN_PROTO_VERSION, _SSL_CTRL_SET_MAX_PROTO_VERSION):
            self._check(int(self._lib.SSL_CTX_ctrl(ctx, control, _TLS1_3_VERSION, None)), "TLS 1.3 only")
        self._lib.SSL_CTX_enable_sm_tls13_strict(ctx)
        return int(ctx)

    def set_ciphersuites(self, ctx: int, suites: str) -> None:
        self._check(self._lib.SSL_CTX_set_ciphersuites(ctx, suites.encode()), f"ciphersuites {suites}")

    def set_groups(self, ctx: int, groups: str) -> None:
        raw = ctypes.c_char_p(groups.encode())
        self._check(int(self._lib.SSL_CTX_ctrl(ctx, _SSL_CTRL_SET_GROUPS_LIST, 0, raw)), f"groups {groups}")

    def set_sigalgs(self, ctx: int, sigalgs: str) -> None:
        for control in (_SSL_CTRL_SET_SIGALGS_LIST, _SSL_CTRL_SET_CLIENT_SIGALGS_LIST):
            raw = ctypes.c_char_p(sigalgs.encode())
            self._check(int(self._lib.SSL_CTX_ctrl(ctx, control, 0, raw)), f"sigalgs {sigalgs}")

    def use_certificate(self, ctx: int, cert: Path, key: Path) -> None:
        self._check(self._lib.SSL_CTX_use_certificate_chain_file(ctx, bytes(cert)), "certificate")
        self._check(self._lib.SSL_CTX_use_PrivateKey_file(ctx, bytes(key), _SSL_FILETYPE_PEM), "private key")

    def set_keylog_file(self, ctx: int, path: Path) -> None:
        """Append NSS key log lines for every connection of ``ctx`` to ``path``."""
        lock = threading.Lock()

        def write_line(_ssl: int | None, line: bytes) -> None:
            with lock, path.open("ab") as keylog:
                keylog.write(line + b"\n")

        callback = _KEYLOG_CALLBACK(write_line)
        self._callbacks.append(callback)
        self._lib.SSL_CTX_set_keylog_callback(ctx, callback)

    def set_alpn(self, ctx: int, protocols: Sequence[str], *, server: bool) -> None:
        wire = b"".join(bytes((len(name),)) + name.encode() for name in protocols)
        if not server:
            if self._lib.SSL_CTX_set_alpn_protos(ctx, wire, len(wire)) != 0:
                raise BabaSSLError(f"ALPN protocols failed: {self.error_queue()}")
            return
        offered = ctypes.create_string_buffer(wire, len(wire))

        def select(
            _ssl: int | None, out: Any, outlen: Any, client: Any, client_len: int, _arg: int | None
        ) -> int:
            chosen = self._lib.SSL_select_next_proto(out, outlen, offered, len(wire), client, client_len)
            return _SSL_TLSEXT_ERR_OK if chosen == _OPENSSL_NPN_NEGOTIATED else _SSL_TLSEXT_ERR_ALERT_FATAL

        callback = _ALPN_SELECT_CALLBACK(select)
        self._callbacks.append((callback, offered))
        self._lib.SSL_CTX_set_alpn_select_cb(ctx, callback, None)

    def alpn_selected(self, ssl: int) -> str:
        data = ctypes.POINTER(ctypes.c_ubyte)()
        length = ctypes.c_uint(0)
        self._lib.SSL_get0_alpn_selected(ssl, ctypes.byref(data), ctypes.byref(length))
        return bytes(data[: length.value]).decode(errors="replace") if length.value else ""

    def key_update(self, ssl: int) -> None:
        """Send a KeyUpdate asking the peer to update too (sent with the next write)."""
        self._check(self._lib.SSL_key_update(ssl, _SSL_KEY_UPDATE_REQUESTED), "SSL_key_update")


# -- shared value types ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NTLSCertFiles:
    """The TLCP double certificate: a signing pair and an encryption pair, as PEM files."""

    sign_cert: Path
    sign_key: Path
    enc_cert: Path
    enc_key: Path

    @classmethod
    def from_directory(cls, directory: Path, role: str) -> NTLSCertFiles:
        """Tongsuo's naming (``server_sign.crt``/``server_sign.key``...) under ``directory``."""
        return cls(
            directory / f"{role}_sign.crt",
            directory / f"{role}_sign.key",
            directory / f"{role}_enc.crt",
            directory / f"{role}_enc.key",
        )

    def as_args(self) -> list[str]:
        return [
            "--sign-cert",
            str(self.sign_cert),
            "--sign-key",
            str(self.sign_key),
            "--enc-cert",
            str(self.enc_cert),
            "--enc-key",
            str(self.enc_key),
        ]


@dataclass
class ConnectionReport:
    """What one BabaSSL end observed on one connection."""

    ok: bool = False
    cipher: str = ""
    version: str = ""
    reused: bool = False
    sent: int = 0
    received: int = 0
    payload_ok: bool = False
    close_notify_received: bool = False
    peer_subject: str | None = None
    verify_result: int = -1
    error: str | None = None
    handshake_seconds: float = 0.0
    alpn: str = ""
    #: With ``--request``: the server's answer until it closed (first 64 KiB, latin-1).
    response: str = ""
    #: server: the connection's place in accept order (1, 2, ...); 0 in a client's report
    accepted: int = 0
    #: With ``--h2-get``: the HTTP/2 response's status, body (first 64 KiB, latin-1) and stream id.
    h2_status: int = 0
    h2_body: str = ""
    h2_stream_id: int = 0

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ConnectionReport:
        names = set(cls.__dataclass_fields__)
        return cls(**{key: value for key, value in raw.items() if key in names})


def payload_bytes(size: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random test payload (Mersenne Twister: fast, not for secrets)."""
    return random.Random(seed).randbytes(size)


# -- child-process roles ------------------------------------------------------------------------------


@dataclass
class ServerOptions:
    suite: str
    certs: NTLSCertFiles
    ca_file: Path | None = None
    verify_client: bool = False
    require_client_cert: bool = False
    tickets: bool = False
    mode: str = "echo"
    source_bytes: int = 0
    connections: int = 0
    port: int = 0
    host: str = "127.0.0.1"
    quiet: bool = False
    cpu: int | None = None
    protocol: str = "ntls"
    groups: str = "SM2"
    alpn: str = ""
    keylog: Path | None = None


@dataclass
class ClientOptions:
    port: int
    suite: str
    host: str = "127.0.0.1"
    certs: NTLSCertFiles | None = None
    ca_file: Path | None = None
    server_name: str | None = None
    payload_size: int = 0
    seed: int = 0
    echo: bool = True
    expect_bytes: int = 0
    resume: bool = False
    tickets: bool = False
    connections: int = 1
    protocol: str = "ntls"
    groups: str = "SM2"
    alpn: str = ""
    keylog: Path | None = None
    key_update: bool = False
    request: str = ""
    h2_get: str = ""


def _configure_tls13(
    lib: BabaSSL, ctx: int, suite: str, groups: str, alpn: str, keylog: Path | None, *, server: bool
) -> None:
    """TLS 1.3 with the SM suites: ciphersuite, groups, sm2sig_sm3, ALPN and key logging."""
    lib.set_ciphersuites(ctx, suite)
    lib.set_groups(ctx, groups)
    lib.set_sigalgs(ctx, "sm2sig_sm3")
    if alpn:
        lib.set_alpn(ctx, alpn.split(","), server=server)
    if keylog is not None:
        lib.set_keylog_file(ctx, keylog)


def _make_tls13_server_context(lib: BabaSSL, options: ServerOptions) -> int:
    ctx = lib.new_tls13_context(server=True)
    if not options.tickets:
        lib.set_options(ctx, _SSL_OP_NO_TICKET)
    _configure_tls13(lib, ctx, options.suite, options.groups, options.alpn, options.keylog, server=True)
    lib.use_certificate(ctx, options.certs.sign_cert, options.certs.sign_key)
    lib.set_session_id_context(ctx, b"smgate-interop")
    if options.ca_file is not None:
        lib.load_verify_locations(ctx, options.ca_file)
    if options.verify_client:
        mode = _SSL_VERIFY_PEER
        if options.require_client_cert:
            mode |= _SSL_VERIFY_FAIL_IF_NO_PEER_CERT
        lib.set_verify(ctx, mode)
    return ctx


def _make_tls13_client_context(lib: BabaSSL, options: ClientOptions) -> int:
    ctx = lib.new_tls13_context(server=False)
    _configure_tls13(lib, ctx, options.suite, options.groups, options.alpn, options.keylog, server=False)
    if options.certs is not None:
        lib.use_certificate(ctx, options.certs.sign_cert, options.certs.sign_key)
    if options.ca_file is not None:
        lib.load_verify_locations(ctx, options.ca_file)
        lib.set_verify(ctx, _SSL_VERIFY_PEER)
    return ctx


def _make_server_context(lib: BabaSSL, options: ServerOptions) -> int:
    ctx = lib.new_context(server=True)
    if not options.tickets:
        lib.set_options(ctx, _SSL_OP_NO_TICKET)
    lib.set_cipher_list(ctx, options.suite)
    if options.alpn:
        lib.set_alpn(ctx, options.alpn.split(","), server=True)
    lib.use_certificates(ctx, options.certs)
    lib.set_session_id_context(ctx, b"smgate-interop")
    if options.ca_file is not None:
        lib.load_verify_locations(ctx, options.ca_file)
    if options.verify_client:
        mode = _SSL_VERIFY_PEER
        if options.require_client_cert:
            mode |= _SSL_VERIFY_FAIL_IF_NO_PEER_CERT
        lib.set_verify(ctx, mode)
    return ctx


def _serve_connection(
    lib: BabaSSL, ctx: int, conn: socket.socket, options: ServerOptions
) -> ConnectionReport:
    report = ConnectionReport()
    ssl = lib.new_ssl(ctx, conn.fileno())
    buffer = ctypes.create_string_buffer(_IO_CHUNK)
    try:
        started = time.perf_counter()
        lib.handshake(ssl, server=True)
        report.handshake_seconds = time.perf_counter() - started
        report.cipher = lib.cipher_name(ssl)
        report.version = lib.protocol_version(ssl)
        report.reused = lib.session_reused(ssl)
        report.peer_subject = lib.peer_subject(ssl)
        report.verify_result = lib.verify_result(ssl)
        report.alpn = lib.alpn_selected(ssl)
        if options.mode == "source":
            lib.write_all(ssl, payload_bytes(options.source_bytes))
            report.sent = options.source_bytes
        while True:
            data = lib.read(ssl, buffer)
            if not data:
                report.close_notify_received = data == b""
                break
            report.received += len(data)
            if options.mode == "echo":
                lib.write_all(ssl, data)
                report.sent += len(data)
        lib.shutdown(ssl)
        report.ok = True
        report.payload_ok = True
    except BabaSSLError as exc:
        report.error = str(exc)
    finally:
        lib.free_ssl(ssl)
        conn.close()
    return report


def _make_blocking(sock: socket.socket) -> None:
    """libssl needs a blocking descriptor; Python's own timeouts would make it non-blocking.

    A kernel-level receive/send timeout still bounds a stuck peer: the call then fails with EAGAIN,
    which libssl reports as an error instead of hanging the test.
    """
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    timeval = struct.pack("ll", int(_IO_TIMEOUT), 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)


def _emit(record: dict[str, Any], lock: threading.Lock) -> None:
    with lock:
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()


def run_server(options: ServerOptions) -> int:
    """Accept loop: one thread per connection (ctypes drops the GIL inside libssl calls)."""
    if options.cpu is not None:
        os.sched_setaffinity(0, {options.cpu})
    lib = BabaSSL()
    ctx = (
        _make_tls13_server_context(lib, options)
        if options.protocol == "tls13"
        else _make_server_context(lib, options)
    )
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((options.host, options.port))
    listener.listen(512)
    lock = threading.Lock()
    _emit({"event": "listening", "port": listener.getsockname()[1], "library": lib.version()}, lock)
    threads: list[threading.Thread] = []

    def handle(conn: socket.socket, index: int) -> None:
        report = _serve_connection(lib, ctx, conn, options)
        report.accepted = index
        if not options.quiet or report.error:
            _emit({"event": "connection", **asdict(report)}, lock)

    accepted = 0
    try:
        while options.connections == 0 or accepted < options.connections:
            conn, _ = listener.accept()
            _make_blocking(conn)
            accepted += 1
            thread = threading.Thread(target=handle, args=(conn, accepted), daemon=True)
            thread.start()
            threads = [t for t in threads if t.is_alive()]
            threads.append(thread)
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()
        for thread in threads:
            thread.join()
        lib.free_context(ctx)
    return 0


def _make_client_context(lib: BabaSSL, options: ClientOptions) -> int:
    ctx = lib.new_context(server=False)
    if not options.tickets:
        lib.set_options(ctx, _SSL_OP_NO_TICKET)
    lib.set_cipher_list(ctx, options.suite)
    if options.alpn:
        lib.set_alpn(ctx, options.alpn.split(","), server=False)
    if options.certs is not None:
        lib.use_certificates(ctx, options.certs)
    if options.ca_file is not None:
        lib.load_verify_locations(ctx, options.ca_file)
        lib.set_verify(ctx, _SSL_VERIFY_PEER)
    return ctx


def _make_client_context_for(lib: BabaSSL, options: ClientOptions) -> int:
    if options.protocol == "tls13":
        return _make_tls13_client_context(lib, options)
    return _make_client_context(lib, options)


def _client_connection(
    lib: BabaSSL, ctx: int, options: ClientOptions, session: int, payload: bytes
) -> tuple[ConnectionReport, int]:
    """One client connection; returns the report and a new session reference (caller frees it)."""
    report = ConnectionReport()
    new_session = 0
    sock = socket.create_connection((options.host, options.port), timeout=_IO_TIMEOUT)
    _make_blocking(sock)
    ssl = lib.new_ssl(ctx, sock.fileno())
    buffer = ctypes.create_string_buffer(_IO_CHUNK)
    try:
        if options.server_name:
            lib.set_host_name(ssl, options.server_name)
        if session:
            lib.set_session(ssl, session)
        started = time.perf_counter()
        lib.handshake(ssl, server=False)
        report.handshake_seconds = time.perf_counter() - started
        report.cipher = lib.cipher_name(ssl)
        report.version = lib.protocol_version(ssl)
        report.reused = lib.session_reused(ssl)
        report.peer_subject = lib.peer_subject(ssl)
        report.verify_result = lib.verify_result(ssl)
        report.alpn = lib.alpn_selected(ssl)
        payload_ok = True
        for offset in range(0, len(payload), _IO_CHUNK):
            chunk = payload[offset : offset + _IO_CHUNK]
            if options.key_update and offset == len(payload) // 2 // _IO_CHUNK * _IO_CHUNK:
                lib.key_update(ssl)
            lib.write_all(ssl, chunk)
            report.sent += len(chunk)
            if options.echo:
                echoed = bytearray()
                while len(echoed) < len(chunk):
                    data = lib.read(ssl, buffer)
                    if not data:
                        raise BabaSSLError("peer closed before echoing the payload")
                    echoed += data
                report.received += len(echoed)
                payload_ok = payload_ok and echoed == chunk
        expected = payload_bytes(options.expect_bytes) if options.expect_bytes else b""
        if expected:
            incoming = bytearray()
            while len(incoming) < len(expected):
                data = lib.read(ssl, buffer)
                if not data:
                    break
                incoming += data
            report.received += len(incoming)
            payload_ok = payload_ok and incoming == expected
        if options.request:
            report.response = _exchange_request(lib, ssl, buffer, options.request.encode("latin-1"))
            report.received += len(report.response)
        if options.h2_get:
            _h2_get(lib, ssl, buffer, options.server_name or options.host, options.h2_get, report)
        report.payload_ok = payload_ok
        lib.shutdown(ssl)
        while True:
            data = lib.read(ssl, buffer)
            if not data:
                report.close_notify_received = data == b""
                break
            report.received += len(data)
            report.payload_ok = False
        new_session = lib.get1_session(ssl)
        report.ok = True
    except (BabaSSLError, OSError) as exc:
        report.error = f"{type(exc).__name__}: {exc}"
    finally:
        lib.free_ssl(ssl)
        sock.close()
    return report, new_session


def _exchange_request(lib: BabaSSL, ssl: int, buffer: ctypes.Array[ctypes.c_char], request: bytes) -> str:
    """Send ``request``, read the answer until the server closes; the first 64 KiB of it."""
    lib.write_all(ssl, request)
    answer = bytearray()
    while True:
        data = lib.read(ssl, buffer)
        if not data:
            break
        if len(answer) < 65536:
            answer += data[: 65536 - len(answer)]
    return answer.decode("latin-1")


def _h2_get(
    lib: BabaSSL,
    ssl: int,
    buffer: ctypes.Array[ctypes.c_char],
    authority: str,
    path: str,
    report: ConnectionReport,
) -> None:
    """One HTTP/2 GET on the connection (the ``h2`` library, imported here: only this role needs it)."""
    import h2.config
    import h2.connection
    import h2.events

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    stream_id = conn.get_next_available_stream_id()
    headers = [(":method", "GET"), (":scheme", "https"), (":authority", authority), (":path", path)]
    conn.send_headers(stream_id, headers, end_stream=True)
    lib.write_all(ssl, conn.data_to_send())
    body = bytearray()
    ended = False
    while not ended:
        data = lib.read(ssl, buffer)
        if not data:
            raise BabaSSLError("server closed before the HTTP/2 response ended")
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream_id:
                report.h2_status = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived) and event.stream_id == stream_id:
                body += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                ended = ended or event.stream_id == stream_id
        outgoing = conn.data_to_send()
        if outgoing:
            lib.write_all(ssl, outgoing)
    conn.close_connection()
    lib.write_all(ssl, conn.data_to_send())
    report.h2_body = body[:65536].decode("latin-1")
    report.h2_stream_id = stream_id


def run_client(options: ClientOptions) -> int:
    lib = BabaSSL()
    ctx = _make_client_context_for(lib, options)
    payload = payload_bytes(options.payload_size, options.seed)
    session = 0
    count = max(options.connections, 2 if options.resume else 1)
    failures = 0
    try:
        for _ in range(count):
            report, new_session = _client_connection(lib, ctx, options, session, payload)
            if new_session and options.resume:
                if session:
                    lib.free_session(session)
                session = new_session
            elif new_session:
                lib.free_session(new_session)
            failures += 0 if report.ok else 1
            print(json.dumps({"event": "connection", **asdict(report)}), flush=True)
    finally:
        if session:
            lib.free_session(session)
        lib.free_context(ctx)
    return 1 if failures else 0


@dataclass
class LoadSummary:
    handshakes: int = 0
    resumed: int = 0
    errors: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0
    first_error: str | None = None
    per_thread: list[int] = field(default_factory=list)
    #: Median and 99th percentile of the successful handshakes' durations (SSL_connect), milliseconds.
    handshake_p50_ms: float = 0.0
    handshake_p99_ms: float = 0.0


def run_load(options: ClientOptions, *, threads: int, duration: float, cpu: int | None) -> LoadSummary:
    """Closed-loop load: ``threads`` connections in flight, each reconnecting until ``duration`` ends."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    lib = BabaSSL()
    ctx = _make_client_context_for(lib, options)
    payload = payload_bytes(options.payload_size, options.seed)
    summary = LoadSummary(per_thread=[0] * threads)
    handshake_seconds: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + duration

    def worker(index: int) -> None:
        session = 0
        while time.perf_counter() < deadline:
            report, new_session = _client_connection(lib, ctx, options, session, payload)
            with lock:
                if report.ok:
                    summary.handshakes += 1
                    summary.resumed += int(report.reused)
                    summary.bytes_sent += report.sent
                    summary.per_thread[index] += 1
                    handshake_seconds.append(report.handshake_seconds)
                else:
                    summary.errors += 1
                    summary.first_error = summary.first_error or report.error
            if options.resume and not session:
                session = new_session
            elif new_session:
                lib.free_session(new_session)
        if session:
            lib.free_session(session)

    started = time.perf_counter()
    workers = [threading.Thread(target=worker, args=(index,)) for index in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    summary.seconds = time.perf_counter() - started
    if len(handshake_seconds) > 1:
        percentiles = statistics.quantiles(handshake_seconds, n=100)
        summary.handshake_p50_ms, summary.handshake_p99_ms = 1e3 * percentiles[49], 1e3 * percentiles[98]
    lib.free_context(ctx)
    return summary


# -- parent-side helpers --------------------------------------------------------------------------------


def _child_command(role: str, args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "tests.interop.babassl", role, *args]


def _child_env() -> dict[str, str]:
    from tests.conftest import REPO

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    return env


def server_args(options: ServerOptions) -> list[str]:
    args = ["--suite", options.suite, *options.certs.as_args(), "--mode", options.mode]
    args += ["--connections", str(options.connections), "--port", str(options.port)]
    if options.source_bytes:
        args += ["--source-bytes", str(options.source_bytes)]
    if options.ca_file is not None:
        args += ["--ca", str(options.ca_file)]
    if options.verify_client:
        args.append("--verify-client")
    if options.require_client_cert:
        args.append("--require-client-cert")
    if options.tickets:
        args.append("--tickets")
    if options.quiet:
        args.append("--quiet")
    if options.cpu is not None:
        args += ["--cpu", str(options.cpu)]
    args += _tls13_args(options.protocol, options.groups, options.alpn, options.keylog)
    return args


def _tls13_args(protocol: str, groups: str, alpn: str, keylog: Path | None) -> list[str]:
    args = ["--protocol", protocol, "--groups", groups]
    if alpn:
        args += ["--alpn", alpn]
    if keylog is not None:
        args += ["--keylog", str(keylog)]
    return args


def client_args(options: ClientOptions) -> list[str]:
    args = ["--port", str(options.port), "--host", options.host, "--suite", options.suite]
    args += ["--payload-size", str(options.payload_size), "--seed", str(options.seed)]
    args += ["--connections", str(options.connections)]
    if options.certs is not None:
        args += options.certs.as_args()
    if options.ca_file is not None:
        args += ["--ca", str(options.ca_file)]
    if options.server_name:
        args += ["--server-name", options.server_name]
    if not options.echo:
        args.append("--no-echo")
    if options.expect_bytes:
        args += ["--expect-bytes", str(options.expect_bytes)]
    if options.resume:
        args.append("--resume")
    if options.tickets:
        args.append("--tickets")
    if options.key_update:
        args.append("--key-update")
    if options.request:
        args += ["--request", options.request.encode("unicode_escape").decode("ascii")]
    if options.h2_get:
        args += ["--h2-get", options.h2_get]
    args += _tls13_args(options.protocol, options.groups, options.alpn, options.keylog)
    return args


def _parse_reports(output: bytes) -> list[ConnectionReport]:
    reports = []
    for line in output.decode().splitlines():
        record = json.loads(line)
        if record.get("event") == "connection":
            reports.append(ConnectionReport.from_json(record))
    return reports


async def run_babassl_client(options: ClientOptions, *, timeout: float = 60.0) -> list[ConnectionReport]:
    """Run a BabaSSL client child to completion; one report per connection it made."""
    process = await asyncio.create_subprocess_exec(
        *_child_command("client", client_args(options)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_child_env(),
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    reports = _parse_reports(stdout)
    if not reports:
        raise BabaSSLError(f"BabaSSL client produced no report: {stderr.decode(errors='replace')}")
    return reports


class BabaSSLServer:
    """A BabaSSL NTLS server child; ``async with`` starts it and learns its port.

    With ``connections=N`` it exits by itself after serving N connections and `reports()` returns them;
    leaving the block kills a server that is still running.
    """

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.port = 0
        self.library = ""
        self._process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> BabaSSLServer:
        self._process = await asyncio.create_subprocess_exec(
            *_child_command("server", server_args(self.options)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_child_env(),
        )
        assert self._process.stdout is not None
        line = await asyncio.wait_for(self._process.stdout.readline(), 30)
        if not line:
            stderr = b""
            if self._process.stderr is not None:
                stderr = await self._process.stderr.read()
            raise BabaSSLError(f"BabaSSL server failed to start: {stderr.decode(errors='replace')}")
        record = json.loads(line)
        self.port = int(record["port"])
        self.library = str(record["library"])
        return self

    async def reports(self, *, timeout: float = 60.0, accept_order: bool = False) -> list[ConnectionReport]:
        """Wait for the server to finish its connections and return their reports.

        Each connection's thread reports when it ends, so a short connection accepted second can
        report first; ``accept_order`` sorts them by `ConnectionReport.accepted` instead.
        """
        assert self._process is not None
        stdout, stderr = await asyncio.wait_for(self._process.communicate(), timeout)
        if self._process.returncode != 0:
            raise BabaSSLError(
                f"BabaSSL server exited {self._process.returncode}: {stderr.decode(errors='replace')}"
            )
        reports = _parse_reports(stdout)
        return sorted(reports, key=lambda report: report.accepted) if accept_order else reports

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            await self._process.wait()


# -- command line ----------------------------------------------------------------------------------------


def _add_cert_args(parser: argparse.ArgumentParser, *, required: bool) -> None:
    for name in ("--sign-cert", "--sign-key", "--enc-cert", "--enc-key"):
        parser.add_argument(name, type=Path, required=required)


def _cert_files(args: argparse.Namespace) -> NTLSCertFiles | None:
    parts = (args.sign_cert, args.sign_key, args.enc_cert, args.enc_key)
    if all(part is None for part in parts):
        return None
    if any(part is None for part in parts):
        raise SystemExit("give all four of --sign-cert --sign-key --enc-cert --enc-key")
    return NTLSCertFiles(*parts)


def _add_tls13_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", choices=("ntls", "tls13"), default="ntls")
    parser.add_argument("--groups", default="SM2", help="TLS 1.3 groups list (e.g. X25519:SM2)")
    parser.add_argument("--alpn", default="", help="comma-separated ALPN protocols (NTLS and TLS 1.3)")
    parser.add_argument("--keylog", type=Path, help="append NSS key log lines here (TLS 1.3)")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.interop.babassl", description=__doc__.splitlines()[0]
    )
    roles = parser.add_subparsers(dest="role", required=True)

    server = roles.add_parser("server", help="NTLS server: echo, sink or source application data")
    server.add_argument("--suite", required=True)
    _add_cert_args(server, required=True)
    server.add_argument("--ca", type=Path)
    server.add_argument("--verify-client", action="store_true")
    server.add_argument("--require-client-cert", action="store_true")
    server.add_argument("--tickets", action="store_true", help="allow session tickets (default: -no_ticket)")
    server.add_argument("--mode", choices=("echo", "sink", "source"), default="echo")
    server.add_argument("--source-bytes", type=int, default=0)
    server.add_argument("--connections", type=int, default=0, help="exit after this many (0: forever)")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=0)
    server.add_argument("--quiet", action="store_true", help="report failed connections only")
    server.add_argument("--cpu", type=int)
    _add_tls13_args(server)

    for role in ("client", "load"):
        client = roles.add_parser(role)
        client.add_argument("--host", default="127.0.0.1")
        client.add_argument("--port", type=int, required=True)
        client.add_argument("--suite", required=True)
        _add_cert_args(client, required=False)
        client.add_argument("--ca", type=Path)
        client.add_argument("--server-name")
        client.add_argument("--payload-size", type=int, default=0)
        client.add_argument("--seed", type=int, default=0)
        client.add_argument("--no-echo", action="store_true")
        client.add_argument("--expect-bytes", type=int, default=0)
        client.add_argument("--resume", action="store_true")
        client.add_argument("--tickets", action="store_true")
        client.add_argument("--connections", type=int, default=1)
        client.add_argument("--key-update", action="store_true")
        client.add_argument("--request", default="", help="send this after the payload (\\r\\n escapes)")
        client.add_argument("--h2-get", default="", help="then one HTTP/2 GET of this path (h2 library)")
        _add_tls13_args(client)
        if role == "load":
            client.add_argument("--threads", type=int, default=8)
            client.add_argument("--duration", type=float, default=5.0)
            client.add_argument("--cpu", type=int)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.role == "server":
        certs = _cert_files(args)
        assert certs is not None
        return run_server(
            ServerOptions(
                suite=args.suite,
                certs=certs,
                ca_file=args.ca,
                verify_client=args.verify_client,
                require_client_cert=args.require_client_cert,
                tickets=args.tickets,
                mode=args.mode,
                source_bytes=args.source_bytes,
                connections=args.connections,
                port=args.port,
                host=args.host,
                quiet=args.quiet,
                cpu=args.cpu,
                protocol=args.protocol,
                groups=args.groups,
                alpn=args.alpn,
                keylog=args.keylog,
            )
        )
    options = ClientOptions(
        port=args.port,
        suite=args.suite,
        host=args.host,
        certs=_cert_files(args),
        ca_file=args.ca,
        server_name=args.server_name,
        payload_size=args.payload_size,
        seed=args.seed,
        echo=not args.no_echo,
        expect_bytes=args.expect_bytes,
        resume=args.resume,
        tickets=args.tickets,
        connections=args.connections,
        protocol=args.protocol,
        groups=args.groups,
        alpn=args.alpn,
        keylog=args.keylog,
        key_update=args.key_update,
        request=args.request.encode("latin-1").decode("unicode_escape"),
        h2_get=args.h2_get,
    )
    if args.role == "client":
        return run_client(options)
    summary = run_load(options, threads=args.threads, duration=args.duration, cpu=args.cpu)
    print(json.dumps({"event": "load", **asdict(summary)}), flush=True)
    return 0 if summary.handshakes else 1


if __name__ == "__main__":
    sys.exit(main())
