"""The BabaSSL harness against itself: proves the peer works before it judges smgate."""

from __future__ import annotations

import pytest

from tests.conftest import SHARED
from tests.interop.babassl import (
    SUITE_NAMES,
    BabaSSLServer,
    ClientOptions,
    NTLSCertFiles,
    ServerOptions,
    payload_bytes,
    run_babassl_client,
)

CERTS = SHARED / "tlcp" / "tongsuo" / "certs"
CA = CERTS / "ca.crt"
SERVER = NTLSCertFiles.from_directory(CERTS, "server")
CLIENT = NTLSCertFiles.from_directory(CERTS, "client")

# ECDHE needs the client's encryption key for the SM2 key exchange, so it always runs with client auth.
MATRIX = [
    (suite, client_auth)
    for suite in SUITE_NAMES.values()
    for client_auth in (False, True)
    if client_auth or suite.startswith("ECC-")
]


@pytest.mark.parametrize(("suite", "client_auth"), MATRIX)
async def test_babassl_client_to_babassl_server(suite: str, client_auth: bool) -> None:
    server = ServerOptions(suite=suite, certs=SERVER, ca_file=CA, verify_client=client_auth, connections=2)
    async with BabaSSLServer(server) as running:
        client = ClientOptions(
            port=running.port,
            suite=suite,
            certs=CLIENT if client_auth else None,
            ca_file=CA,
            server_name="localhost",
            payload_size=40_000,
            resume=True,
        )
        client_reports = await run_babassl_client(client)
        server_reports = await running.reports()

    assert running.library.startswith("OpenSSL 1.1.1")
    assert [report.reused for report in client_reports] == [False, True]
    assert [report.reused for report in server_reports] == [False, True]
    for report in client_reports:
        assert report.error is None
        assert (report.cipher, report.version) == (suite, "NTLSv1.1")
        assert report.payload_ok and report.sent == report.received == 40_000
        assert report.close_notify_received
        assert report.verify_result == 0
        assert report.peer_subject is not None and "OU=server sign" in report.peer_subject
    for report in server_reports:
        assert report.error is None
        assert report.received == report.sent == 40_000
        assert report.close_notify_received
        if client_auth:
            assert report.peer_subject is not None and "OU=client sign" in report.peer_subject
        else:
            assert report.peer_subject is None


async def test_babassl_source_mode_delivers_the_deterministic_payload() -> None:
    suite = SUITE_NAMES[0xE053]
    server = ServerOptions(suite=suite, certs=SERVER, mode="source", source_bytes=70_000, connections=1)
    async with BabaSSLServer(server) as running:
        client = ClientOptions(port=running.port, suite=suite, ca_file=CA, expect_bytes=70_000)
        (report,) = await run_babassl_client(client)
        (served,) = await running.reports()
    assert report.error is None and report.payload_ok and report.received == 70_000
    assert served.sent == 70_000 and served.close_notify_received


def test_payload_bytes_is_deterministic_and_seeded() -> None:
    assert payload_bytes(100) == payload_bytes(100)
    assert payload_bytes(100, seed=1) != payload_bytes(100)
    assert payload_bytes(33)[:32] == payload_bytes(32)
