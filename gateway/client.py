"""``smgate client``: a small TLCP/TLS/TLS 1.3-SM/plain client, like ``openssl s_client`` plus an HTTP GET.

``--protocol tls13-sm`` speaks TLS 1.3 with the RFC 8998 suites on the project's engine (the name
Tongsuo's ``s_client -enable_sm_tls13_strict`` mode goes by in this CLI; OpenSSL 3.0 cannot do it).

Prints the negotiated protocol, cipher suite and server certificate, then (with ``--get PATH``) the HTTP
response, or (with ``--send TEXT``) whatever the server answers to the raw bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl
import sys
from dataclasses import dataclass, replace
from typing import Any

import h11

from certs import TrustStore, load_sm2_certificate_set
from gateway.identity import peer_certificate_from_der
from gateway.stream import AsyncioByteStream, ByteStream, close_stream
from gateway.transports.tlcp import suite_name
from tls.tlcp import (
    DEFAULT_CIPHER_SUITES,
    CipherSuite,
    DialectCache,
    PeerProfile,
    TLCPConfiguration,
    TLCPSession,
)
from tls.tlcp.aio import TLCPStream, tlcp_connect
from tls.tls13 import CipherSuite as Tls13CipherSuite
from tls.tls13 import SM2Credential, TLS13Configuration, TLS13Session
from tls.tls13.aio import TLS13Stream, tls13_connect


@dataclass
class ClientResult:
    protocol: str
    cipher_suite: str
    server_subject: str | None
    status: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    #: TLCP: how the first handshake went (dialect, session); TLS 1.3-SM: group, signature, resumption;
    #: then one line per ``--resume`` connection
    tlcp_details: tuple[str, ...] = ()


async def connect_tls(args: argparse.Namespace) -> tuple[ByteStream, str, str, str | None]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if args.cafile:
        ctx.load_verify_locations(cafile=args.cafile)
    if args.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if args.tls_version == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif args.tls_version == "1.3":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if args.cert:
        ctx.load_cert_chain(args.cert, args.key)
    ctx.set_alpn_protocols(["http/1.1"])
    reader, writer = await asyncio.open_connection(
        args.host, args.port, ssl=ctx, server_hostname=args.servername or args.host
    )
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True)
    subject = peer_certificate_from_der(der).subject if der else None
    return AsyncioByteStream(reader, writer), ssl_object.version(), ssl_object.cipher()[0], subject


def tlcp_configuration(args: argparse.Namespace) -> TLCPConfiguration:
    pair = None
    if args.cert:
        if not (args.key and args.enc_cert and args.enc_key):
            raise ValueError("a TLCP client pair needs --cert, --key, --enc-cert and --enc-key")
        pair = load_sm2_certificate_set(args.cert, args.key, args.enc_cert, args.enc_key, chain=args.chain)
    trust = TrustStore.from_pem_file(args.cafile) if args.cafile else None
    return TLCPConfiguration(
        is_client=True,
        cipher_suites=(CipherSuite[args.cipher],) if args.cipher else DEFAULT_CIPHER_SUITES,
        certificate_set=pair,
        trust_store=trust,
        verify_peer=not args.insecure,
        server_name=args.servername or args.host,
        profile=PeerProfile(args.profile),
    )


@dataclass
class TlcpClient:
    """The TLCP side of ``smgate client``: one configuration and dialect cache for every connection."""

    configuration: TLCPConfiguration
    timeout: float
    dialects: DialectCache

    async def connect(self, host: str, port: int, session: TLCPSession | None = None) -> TLCPStream:
        configuration = replace(self.configuration, session=session)
        return await tlcp_connect(
            host, port, configuration, handshake_timeout=self.timeout, dialect_cache=self.dialects
        )


def describe_dialect(stream: TLCPStream) -> str:
    if stream.dialect is None:
        return "dialect: none needed (no client certificate or ECDHE exchange in this handshake)"
    return f"dialect: {stream.dialect}"


def describe_session(stream: TLCPStream) -> str:
    session_id = stream.handshake.session_id
    if not session_id:
        return "session: none (the server issued no session ID, so it cannot resume)"
    state = "resumed" if stream.handshake.session_resumed else "new"
    return f"session: {state}, id {session_id.hex()}"


async def resume_sessions(client: TlcpClient, args: argparse.Namespace, first: TLCPStream) -> list[str]:
    """``--resume N``: N more connections, each offering the last session; one line per connection."""
    lines: list[str] = []
    session = first.session
    for index in range(1, args.resume + 1):
        stream = await client.connect(args.host, args.port, session)
        try:
            if stream.handshake.session_resumed:
                outcome = f"resumed session {stream.handshake.session_id.hex()}"
            elif session is None:
                outcome = f"full handshake (no session to offer), {describe_dialect(stream)}"
            else:
                outcome = f"full handshake (the server did not resume), {describe_dialect(stream)}"
            lines.append(f"resume {index}/{args.resume}: {outcome}")
            session = stream.session or session
        finally:
            await close_stream(stream)
    return lines


async def connect_tlcp(args: argparse.Namespace) -> tuple[TlcpClient, TLCPStream, str, str, str | None]:
    client = TlcpClient(tlcp_configuration(args), args.timeout, DialectCache())
    stream = await client.connect(args.host, args.port)
    hs = stream.handshake
    subject = hs.peer_sign_cert.subject if hs.peer_sign_cert is not None else None
    return client, stream, "TLCPv1.1", suite_name(hs.cipher_suite), subject


def tls13_sm_configuration(args: argparse.Namespace) -> TLS13Configuration:
    credential = None
    if args.cert:
        if not args.key:
            raise ValueError("a TLS 1.3-SM client certificate needs --cert and --key")
        credential = SM2Credential.load(args.cert, args.key, args.chain)
    trust = TrustStore.from_pem_file(args.cafile) if args.cafile else None
    suites = (Tls13CipherSuite[args.tls13_cipher],) if args.tls13_cipher else tuple(Tls13CipherSuite)
    return TLS13Configuration(
        is_client=True,
        cipher_suites=suites,
        credential=credential,
        trust_store=trust,
        verify_peer=not args.insecure,
        server_name=args.servername or args.host,
        alpn_protocols=("http/1.1",),
        accept_certificate_request_in_psk=args.accept_certificate_request_in_psk,
    )


async def connect_tls13_sm(
    args: argparse.Namespace, session: TLS13Session | None = None
) -> tuple[TLS13Stream, str, str, str | None]:
    configuration = replace(tls13_sm_configuration(args), session=session)
    stream = await tls13_connect(args.host, args.port, configuration, handshake_timeout=args.timeout)
    hs = stream.handshake
    subject = hs.peer_certificate.subject if hs.peer_certificate is not None else None
    return stream, "TLSv1.3", hs.cipher_suite.name, subject


def describe_tls13_sm(stream: TLS13Stream) -> str:
    hs = stream.handshake
    state = "resumed" if hs.session_resumed else "full handshake"
    scheme = hs.signature_scheme.name if hs.signature_scheme is not None else "-"
    return f"group: {hs.group.name}, signature: {scheme}, {state}"


async def resume_tls13_sm(args: argparse.Namespace, session: TLS13Session | None) -> list[str]:
    """``--resume N`` for TLS 1.3-SM: N more connections, each offering the newest session ticket."""
    lines: list[str] = []
    for index in range(1, args.resume + 1):
        stream, *_ = await connect_tls13_sm(args, session)
        try:
            if stream.handshake.session_resumed:
                outcome = "resumed (session ticket)"
            elif session is None:
                outcome = "full handshake (the server sent no session ticket)"
            else:
                outcome = "full handshake (the server did not resume)"
            lines.append(f"resume {index}/{args.resume}: {outcome}")
            session = await stream.wait_for_session(1.0) or session
        finally:
            await close_stream(stream)
    return lines


async def connect_plain(args: argparse.Namespace) -> tuple[ByteStream, str, str, str | None]:
    reader, writer = await asyncio.open_connection(args.host, args.port)
    return AsyncioByteStream(reader, writer), "plain", "-", None


async def http_get(
    stream: ByteStream, host: str, path: str, headers: list[tuple[str, str]]
) -> tuple[int, tuple[tuple[str, str], ...], bytes]:
    conn = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="GET", target=path, headers=[("host", host), ("user-agent", "smgate-client"), *headers]
    )
    stream.write((conn.send(request) or b"") + (conn.send(h11.EndOfMessage()) or b""))
    await stream.drain()
    status = 0
    response_headers: tuple[tuple[str, str], ...] = ()
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.read(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
            response_headers = tuple((k.decode(), v.decode("latin-1")) for k, v in event.headers.raw_items())
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return status, response_headers, bytes(body)


async def run_client(args: argparse.Namespace) -> ClientResult:
    if args.protocol != "tlcp" and args.profile != PeerProfile.AUTO.value:
        raise ValueError("--profile is for --protocol tlcp")
    if args.protocol not in ("tlcp", "tls13-sm") and args.resume:
        raise ValueError("--resume is for --protocol tlcp and tls13-sm")
    if args.protocol != "tls13-sm" and args.accept_certificate_request_in_psk:
        raise ValueError("--accept-certificate-request-in-psk is for --protocol tls13-sm")
    stream: ByteStream
    tlcp: tuple[TlcpClient, TLCPStream] | None = None
    sm: TLS13Stream | None = None
    if args.protocol == "tlcp":
        client, tlcp_stream, version, cipher, subject = await connect_tlcp(args)
        stream, tlcp = tlcp_stream, (client, tlcp_stream)
    elif args.protocol == "tls13-sm":
        sm, version, cipher, subject = await connect_tls13_sm(args)
        stream = sm
    elif args.protocol == "plain":
        stream, version, cipher, subject = await connect_plain(args)
    else:
        stream, version, cipher, subject = await connect_tls(args)
    result = ClientResult(version, cipher, subject)
    if tlcp is not None:
        result.tlcp_details = (describe_dialect(tlcp[1]), describe_session(tlcp[1]))
    if sm is not None:
        result.tlcp_details = (describe_tls13_sm(sm),)
    session: TLS13Session | None = None
    try:
        if args.get is not None:
            extra = [tuple(h.split(":", 1)) for h in args.header]
            headers = [(k.strip(), v.strip()) for k, v in extra]
            result.status, result.headers, result.body = await http_get(
                stream, args.servername or args.host, args.get, headers
            )
        elif args.send is not None:
            stream.write(args.send.encode())
            await stream.drain()
            if args.protocol == "plain":
                stream.write_eof()  # TCP half-close; TLS/TLCP close_notify would end both directions
            chunks = []
            with contextlib.suppress(TimeoutError):
                while True:
                    async with asyncio.timeout(args.read_timeout):
                        data = await stream.read(65536)
                    if not data:
                        break
                    chunks.append(data)
            result.body = b"".join(chunks)
        if sm is not None and args.resume:
            session = await sm.wait_for_session(1.0)  # tickets follow the handshake
    finally:
        await close_stream(stream)
    if tlcp is not None and args.resume:
        result.tlcp_details += tuple(await resume_sessions(tlcp[0], args, tlcp[1]))
    if sm is not None and args.resume:
        result.tlcp_details += tuple(await resume_tls13_sm(args, session))
    return result


def _cmd_client(args: argparse.Namespace) -> int:
    try:
        result = asyncio.run(asyncio.wait_for(run_client(args), args.timeout))
    except (OSError, ssl.SSLError, TimeoutError, h11.ProtocolError) as exc:
        print(f"smgate client: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # TLCP alerts and certificate errors from the engine
        print(f"smgate client: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"protocol: {result.protocol}")
    print(f"cipher: {result.cipher_suite}")
    if result.server_subject:
        print(f"server: {result.server_subject}")
    for line in result.tlcp_details:
        print(line)
    if result.status is not None:
        print(f"status: {result.status}")
        for k, v in result.headers:
            print(f"{k}: {v}")
        print()
    if result.body:
        text = result.body.decode("utf-8", "replace")
        # On a terminal, end the line so the prompt does not run into an answer without a newline.
        sys.stdout.write(text + "\n" if sys.stdout.isatty() and not text.endswith("\n") else text)
        sys.stdout.flush()
    return 0 if result.status is None or result.status < 500 else 2


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("client", help="connect with TLCP/TLS/plain, show the session, GET a path")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--protocol", choices=["tlcp", "tls", "tls13-sm", "plain"], default="tls")
    p.add_argument("--tls-version", choices=["1.2", "1.3", "any"], default="any")
    p.add_argument("--servername", help="SNI and Host header (default: host)")
    p.add_argument("--cafile", help="trust anchors (PEM): RSA/ECDSA for tls, SM2 for tlcp and tls13-sm")
    p.add_argument("--insecure", action="store_true", help="do not verify the server")
    p.add_argument("--cert", help="client certificate chain (tls) or SM2 sign certificate (tlcp, tls13-sm)")
    p.add_argument("--key", help="client private key (tls) or SM2 sign key (tlcp, tls13-sm)")
    p.add_argument("--enc-cert", help="tlcp: client encryption certificate")
    p.add_argument("--enc-key", help="tlcp: client encryption key")
    p.add_argument("--chain", help="tlcp, tls13-sm: intermediate certificates to send with the client cert")
    p.add_argument("--cipher", choices=[s.name for s in CipherSuite], help="tlcp: offer only this suite")
    p.add_argument(
        "--tls13-cipher", choices=[s.name for s in Tls13CipherSuite], help="tls13-sm: offer only this suite"
    )
    p.add_argument(
        "--accept-certificate-request-in-psk",
        action="store_true",
        help="tls13-sm: answer a CertificateRequest in a resumed handshake (forbidden by RFC 8446 4.3.2; "
        "GmSSL 3.3 servers asking for client certificates send one) instead of refusing it",
    )
    p.add_argument(
        "--profile",
        choices=[profile.value for profile in PeerProfile],
        default=PeerProfile.AUTO.value,
        help="tlcp: the server's dialect; auto (default) recognises it from the server's flight and "
        "retries once with another dialect if the server refuses ours",
    )
    p.add_argument(
        "--resume",
        type=int,
        default=0,
        metavar="N",
        help="tlcp, tls13-sm: then N more connections offering the session, reporting which resumed",
    )
    p.add_argument("--get", metavar="PATH", help="send an HTTP/1.1 GET for PATH and print the response")
    p.add_argument("--header", "-H", action="append", default=[], help="extra request header 'Name: value'")
    p.add_argument("--send", metavar="TEXT", help="send raw bytes, half-close, print the answer")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument(
        "--read-timeout", type=float, default=2.0, help="--send: stop reading after this much silence"
    )
    p.set_defaults(func=_cmd_client)
