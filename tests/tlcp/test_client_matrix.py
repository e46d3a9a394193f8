"""The client interop matrix: ``smgate client`` with zero dialect configuration (``--profile auto``, the
default) against BabaSSL 8.3.2 (live, through ctypes) and against the GmSSL-dialect and
Tongsuo-dialect servers emulated from the recordings (`dialect_servers`), each x 4 suites x client
auth; then the retry: servers whose flight misleads the recognition, what the cache saves, and the
failures that must not be retried.

GmSSL 3.x and Tongsuo 8.5 themselves run outside CI (by hand, see the report of issue 13).
"""

from __future__ import annotations

import asyncio
import socket
import sys

import pytest

from gateway.cli import build_parser
from gateway.client import ClientResult, run_client
from tests.conftest import REPO
from tests.interop.babassl import SUITE_NAMES, BabaSSLServer, ServerOptions
from tests.interop.identities import PKI, SUITE_AUTH_MATRIX, TONGSUO_PKI, client_configuration
from tests.ports import free_port
from tls.tlcp import CipherSuite, DialectCache, DialectSource, PeerProfile
from tls.tlcp.aio import TLCPHandshakeError, tlcp_connect

from .dialect_servers import (
    GMSSL_PKI,
    GMSSL_SERVER,
    STANDARD_BEHIND_GMSSL_REQUEST,
    TONGSUO_BEHIND_GMSSL_REQUEST,
    TONGSUO_SERVER,
    UNSATISFIABLE_SERVER,
    DialectServer,
    DialectTraits,
    listening_socket,
)

ECC_GCM, ECDHE_GCM = CipherSuite.ECC_SM4_GCM_SM3, CipherSuite.ECDHE_SM4_GCM_SM3


def client_args(pki: PKI, port: int, suite: CipherSuite, client_auth: bool, *extra: str) -> list[str]:
    args = ["client", "127.0.0.1", str(port), "--protocol", "tlcp", "--servername", "localhost"]
    args += ["--cafile", str(pki.ca_file), "--cipher", suite.name, "--timeout", "20", *extra]
    if client_auth:
        files = pki.client_files
        args += ["--cert", str(files.sign_cert), "--key", str(files.sign_key)]
        args += ["--enc-cert", str(files.enc_cert), "--enc-key", str(files.enc_key)]
    return args


async def smgate_client(args: list[str]) -> ClientResult:
    return await run_client(build_parser().parse_args(args))


def check_dialect_line(result: ClientResult, dialect: str, client_auth: bool) -> None:
    if client_auth:
        assert result.tlcp_details[0].startswith(f"dialect: {dialect} (recognised: CertificateRequest")
    else:
        assert result.tlcp_details[0].startswith("dialect: none needed")


# smgate client (auto) x BabaSSL server x 4 suites x client auth


@pytest.mark.parametrize(("suite", "client_auth"), SUITE_AUTH_MATRIX)
async def test_smgate_client_auto_to_babassl(suite: CipherSuite, client_auth: bool) -> None:
    options = ServerOptions(
        suite=SUITE_NAMES[suite],
        certs=TONGSUO_PKI.server_files,
        ca_file=TONGSUO_PKI.ca_file,
        verify_client=client_auth,
        require_client_cert=client_auth,
        connections=2,
        port=free_port(),
    )
    async with BabaSSLServer(options) as babassl:
        args = client_args(TONGSUO_PKI, babassl.port, suite, client_auth, "--send", "ping over TLCP")
        result = await smgate_client([*args, "--read-timeout", "0.5", "--resume", "1"])
        reports = await babassl.reports()

    assert (result.protocol, result.cipher_suite, result.body) == ("TLCPv1.1", suite.name, b"ping over TLCP")
    check_dialect_line(result, "tongsuo", client_auth)
    assert result.tlcp_details[1].startswith("session: new, id ")
    assert result.tlcp_details[2].startswith("resume 1/1: resumed session ")
    # the server reports connections as they end, which need not be the order they started
    assert sorted(((r.error, r.reused, r.received) for r in reports), key=lambda r: r[1]) == [
        (None, False, 14),
        (None, True, 0),
    ]
    assert all(r.verify_result == 0 for r in reports if client_auth)


# smgate client (auto) x the emulated GmSSL and Tongsuo servers x 4 suites x client auth


@pytest.mark.parametrize(("suite", "client_auth"), SUITE_AUTH_MATRIX)
@pytest.mark.parametrize(
    ("traits", "pki"), [(GMSSL_SERVER, GMSSL_PKI), (TONGSUO_SERVER, TONGSUO_PKI)], ids=["gmssl", "tongsuo"]
)
async def test_smgate_client_auto_to_emulated_servers(
    traits: DialectTraits, pki: PKI, suite: CipherSuite, client_auth: bool
) -> None:
    server = DialectServer(traits, pki, suites=(suite,), client_auth=client_auth)
    async with server.running():
        args = client_args(pki, server.port, suite, client_auth, "--send", "ping over TLCP")
        result = await smgate_client([*args, "--read-timeout", "0.5", "--resume", "1"])

    assert (result.protocol, result.cipher_suite, result.body) == ("TLCPv1.1", suite.name, b"ping over TLCP")
    check_dialect_line(result, traits.name, client_auth)
    if traits.session_ids:
        assert result.tlcp_details[2].startswith("resume 1/1: resumed session ")
    else:  # GmSSL 3.x issues no session ID
        assert result.tlcp_details[1].startswith("session: none (the server issued no session ID")
        assert result.tlcp_details[2].startswith("resume 1/1: full handshake (no session to offer)")
    assert [s.refusal for s in server.served] == [None, None]
    assert server.served[0].echoed == 14
    for served in server.served:
        assert served.handshake is not None
        signer = served.handshake.peer_sign_cert
        assert (signer.der if signer else None) == (pki.client_set.sign_cert.der if client_auth else None)


async def test_smgate_client_command_line_output() -> None:
    """The command as an operator runs it: the dialect and the resumption lines on stdout."""
    server = DialectServer(TONGSUO_SERVER, TONGSUO_PKI, suites=(ECDHE_GCM,), client_auth=True)
    async with server.running():
        args = client_args(TONGSUO_PKI, server.port, ECDHE_GCM, True, "--resume", "2")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.cli",
            *args,
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    lines = stdout.decode().splitlines()
    assert lines[:2] == ["protocol: TLCPv1.1", "cipher: ECDHE_SM4_GCM_SM3"]
    assert lines[3] == (
        "dialect: tongsuo (recognised: CertificateRequest lists rsa_sign beside ecdsa_sign, as Tongsuo/BabaSSL do)"
    )
    assert lines[4].startswith("session: new, id ")
    session_id = lines[4].removeprefix("session: new, id ")
    assert lines[5:] == [
        f"resume 1/2: resumed session {session_id}",
        f"resume 2/2: resumed session {session_id}",
    ]


async def test_fixed_profile_refused_with_the_message_in_tlcp_terms() -> None:
    """``--profile tongsuo`` against GmSSL's ECDHE: what was sent, in which dialect, what was refused."""
    server = DialectServer(GMSSL_SERVER, GMSSL_PKI, suites=(ECDHE_GCM,), client_auth=True)
    async with server.running():
        args = client_args(GMSSL_PKI, server.port, ECDHE_GCM, True, "--profile", "tongsuo")
        with pytest.raises(TLCPHandshakeError) as info:
            await smgate_client(args)
    assert str(info.value) == (
        "received fatal alert decode_error; the server answered with decode_error after our flight in "
        "dialect tongsuo (configured); it most likely refused the ClientKeyExchange (the encoding of the "
        "ECDHE parameters)"
    )
    assert len(server.served) == 1  # a fixed profile is never retried


# the retry: servers whose flight misleads the recognition


@pytest.mark.parametrize(
    ("traits", "suite", "refused", "found"),
    [
        (STANDARD_BEHIND_GMSSL_REQUEST, ECC_GCM, "handshake_failure", PeerProfile.STANDARD),
        (STANDARD_BEHIND_GMSSL_REQUEST, ECDHE_GCM, "decrypt_error", PeerProfile.STANDARD),
        (TONGSUO_BEHIND_GMSSL_REQUEST, ECDHE_GCM, "decode_error", PeerProfile.TONGSUO),
    ],
    ids=lambda value: getattr(value, "name", None) or str(value),
)
async def test_retry_once_then_remember(
    traits: DialectTraits, suite: CipherSuite, refused: str, found: PeerProfile
) -> None:
    pki = TONGSUO_PKI
    server = DialectServer(traits, pki, suites=(suite,), client_auth=True)
    cache = DialectCache()
    configuration = client_configuration(pki, suites=(suite,), client_cert=True, profile=PeerProfile.AUTO)
    async with server.running():
        first = await tlcp_connect("127.0.0.1", server.port, configuration, dialect_cache=cache)
        await first.aclose()
        assert [s.refusal is not None for s in server.served] == [True, False]
        assert first.dialect is not None
        assert (first.dialect.dialect, first.dialect.source) == (found, DialectSource.RETRIED)
        assert first.dialect.evidence == f"the server refused gmssl ({refused})"
        assert (cache.stats.retries, cache.stats.retries_succeeded) == (1, 1)

        later = await tlcp_connect("127.0.0.1", server.port, configuration, dialect_cache=cache)
        await later.aclose()
        assert len(server.served) == 3  # no extra handshake: the cache pinned what the retry found
        assert later.dialect is not None
        assert (later.dialect.dialect, later.dialect.source) == (found, DialectSource.REMEMBERED)
        assert cache.stats.handshakes == {(found.value, "retried"): 1, (found.value, "remembered"): 1}


async def test_retry_without_a_cache_retries_every_time() -> None:
    server = DialectServer(STANDARD_BEHIND_GMSSL_REQUEST, TONGSUO_PKI, suites=(ECC_GCM,), client_auth=True)
    configuration = client_configuration(
        TONGSUO_PKI, suites=(ECC_GCM,), client_cert=True, profile=PeerProfile.AUTO
    )
    async with server.running():
        for _ in range(2):
            stream = await tlcp_connect("127.0.0.1", server.port, configuration)
            await stream.aclose()
    assert [s.refusal is not None for s in server.served] == [True, False, True, False]


async def test_both_dialects_refused() -> None:
    server = DialectServer(UNSATISFIABLE_SERVER, TONGSUO_PKI, suites=(ECC_GCM,), client_auth=True)
    cache = DialectCache()
    configuration = client_configuration(
        TONGSUO_PKI, suites=(ECC_GCM,), client_cert=True, profile=PeerProfile.AUTO
    )
    async with server.running():
        with pytest.raises(TLCPHandshakeError) as info:
            await tlcp_connect("127.0.0.1", server.port, configuration, dialect_cache=cache)
    error = info.value
    assert [choice.dialect for choice in error.dialects_tried] == [PeerProfile.GMSSL, PeerProfile.STANDARD]
    assert str(error).startswith("TLCP handshake refused in both dialects tried: gmssl: received fatal alert")
    assert "it most likely refused the CertificateVerify" in str(error)
    assert "then standard: received fatal alert bad_certificate" in str(error)
    assert "it most likely refused the Certificate (which certificates a client sends)" in str(error)
    assert len(server.served) == 2 and len(cache) == 0
    assert (cache.stats.retries, cache.stats.retries_succeeded) == (1, 0)


async def test_refusals_that_no_dialect_explains_are_not_retried() -> None:
    """Our own verdict on the server, or a refusal before our flight, costs no second connection."""
    server = DialectServer(GMSSL_SERVER, GMSSL_PKI, suites=(ECC_GCM,), client_auth=True)
    untrusting = client_configuration(
        TONGSUO_PKI, suites=(ECC_GCM,), client_cert=True, profile=PeerProfile.AUTO
    )
    no_common_suite = client_configuration(
        GMSSL_PKI, suites=(CipherSuite.ECC_SM4_CBC_SM3,), client_cert=True, profile=PeerProfile.AUTO
    )
    async with server.running():
        with pytest.raises(TLCPHandshakeError, match="sent fatal alert unknown_ca") as info:
            await tlcp_connect("127.0.0.1", server.port, untrusting, dialect_cache=DialectCache())
        assert info.value.dialects_tried == () and len(server.served) == 1
        with pytest.raises(TLCPHandshakeError, match=r"received fatal alert handshake_failure$"):
            await tlcp_connect("127.0.0.1", server.port, no_common_suite, dialect_cache=DialectCache())
        assert len(server.served) == 2


async def test_no_retry_on_a_given_socket() -> None:
    """A connected socket passed in cannot be reopened: recognition only."""
    server = DialectServer(STANDARD_BEHIND_GMSSL_REQUEST, TONGSUO_PKI, suites=(ECC_GCM,), client_auth=True)
    configuration = client_configuration(
        TONGSUO_PKI, suites=(ECC_GCM,), client_cert=True, profile=PeerProfile.AUTO
    )
    async with server.running():
        sock = await asyncio.to_thread(socket.create_connection, ("127.0.0.1", server.port))
        with pytest.raises(TLCPHandshakeError, match="after our flight in dialect gmssl"):
            await tlcp_connect("127.0.0.1", server.port, configuration, sock=sock)
        sock.close()
    assert len(server.served) == 1


def test_listening_socket_is_below_the_ephemeral_range() -> None:
    sock = listening_socket()
    try:
        assert 20000 <= sock.getsockname()[1] <= 32000
    finally:
        sock.close()
