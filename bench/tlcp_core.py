"""In-memory benchmark of the sans-I/O TLCP core against the crypto-bound limit, measured in one run.

Usage: ``.venv/bin/python bench/tlcp_core.py [--rounds 3] [--handshakes 40] [--backend openssl]``
(about half a minute).

No sockets and no event loop: a client and a server :class:`~tls.tlcp.TLCPConnection` hand each other
``data_to_send()`` in memory and only the server's work is timed, in CPU seconds of this thread
(building the server connection plus every ``receive_data`` call), so other load on a shared machine
inflates the figures less than wall time would.  Each figure is the best of ``--rounds`` rounds, and the
rounds interleave the crypto, handshake and bulk measurements so that all of them see the same machine.

Printed, in one table:

* the crypto-bound limit: what the server's public-key operations alone allow per CPU second, through the
  same ``tls.crypto`` calls and key objects the server uses.  ECC full handshake: one SM2 signature
  (ServerKeyExchange) and one SM2 decryption (pre-master); with client authentication add one verify
  (CertificateVerify); ECDHE (always with client authentication): signature, ephemeral key, SM2 key
  exchange and the CertificateVerify verify.  Certificate chain signatures are not counted: ``certs``
  keeps verified (certificate, issuer) outcomes, so a client chain costs its signature checks once;
  their uncached cost is printed for reference;
* in-memory server full handshakes/s per suite, and the ratio to the limit;
* resumed handshakes/s (session-ID resumption: no public-key operation) and their speed-up over full;
* bulk MB/s of the server receiving (``receive_data``) and sending (``send_application_data`` +
  ``data_to_send``) 16 KiB application-data records, beside raw SM4 on the same records straight from
  ``cryptography``: SM4-GCM, SM4-CBC alone, and SM4-CBC plus HMAC-SM3 (the work a CBC record needs).

Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cryptography.hazmat.primitives import hashes, hmac  # noqa: E402
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: E402

from certs import SM2CertificateSet, TrustStore  # noqa: E402
from certs.demo import ensure_demo_pki  # noqa: E402
from certs.verify import verify_sm2_signature  # noqa: E402
from tls.crypto import SM2PublicKey, set_backend, sm2_key_exchange, sm3  # noqa: E402
from tls.tlcp import (  # noqa: E402
    CipherSuite,
    ClientAuth,
    SessionCache,
    TLCPConfiguration,
    TLCPConnection,
    TLCPSession,
)
from tls.tlcp.handshake import generate_ephemeral_key  # noqa: E402
from tls.tlcp.messages import ecc_signed_params  # noqa: E402

RECORD = 16 * 1024
BULK_RECORDS = 256
READ_SIZE = 64 * 1024
MB = 1_000_000
ECC_GCM, ECC_CBC = CipherSuite.ECC_SM4_GCM_SM3, CipherSuite.ECC_SM4_CBC_SM3
ECDHE_GCM, ECDHE_CBC = CipherSuite.ECDHE_SM4_GCM_SM3, CipherSuite.ECDHE_SM4_CBC_SM3


@dataclass(frozen=True)
class Material:
    server: SM2CertificateSet
    client: SM2CertificateSet
    trust: TrustStore


@dataclass(frozen=True)
class Cell:
    """One handshake measurement: suite, client authentication, resumption."""

    suite: CipherSuite
    client_auth: bool
    resumed: bool = False

    @property
    def label(self) -> str:
        kind = "resumed" if self.resumed else "full"
        auth = "+auth" if self.client_auth else ""
        return f"{self.suite.name}{auth} {kind}"

    @property
    def ecdhe(self) -> bool:
        return self.suite in (ECDHE_GCM, ECDHE_CBC)


CELLS = (
    Cell(ECC_GCM, False),
    Cell(ECC_CBC, False),
    Cell(ECC_GCM, True),
    Cell(ECDHE_GCM, True),
    Cell(ECDHE_CBC, True),
    Cell(ECC_GCM, False, resumed=True),
    Cell(ECDHE_GCM, True, resumed=True),
)


def cpu_cost(operation: Callable[[], object], count: int) -> float:
    """CPU seconds of this thread per call of ``operation`` over ``count`` calls (after one warm-up)."""
    operation()
    started = time.thread_time()
    for _ in range(count):
        operation()
    return (time.thread_time() - started) / count


# -- crypto-bound limit ------------------------------------------------------------------------------


@dataclass
class CryptoCosts:
    sign: float
    decrypt: float
    verify: float
    ephemeral_key: float
    key_exchange: float
    chain_link_uncached: float

    def full_handshake(self, cell: Cell) -> float:
        if cell.ecdhe:
            return self.sign + self.ephemeral_key + self.key_exchange + self.verify
        return self.sign + self.decrypt + (self.verify if cell.client_auth else 0.0)


def measure_crypto(material: Material, count: int) -> CryptoCosts:
    server, client = material.server, material.client
    randoms = secrets.token_bytes(32), secrets.token_bytes(32)
    signed_params = ecc_signed_params(*randoms, server.enc_cert.der)
    ciphertext = server.enc_cert.sm2_public_key().encrypt(b"\x01\x01" + secrets.token_bytes(46))
    transcript_hash = sm3(secrets.token_bytes(3000))
    client_sign_public = client.sign_cert.sm2_public_key()
    certificate_verify = client.sign_key.sign(transcript_hash)
    client_enc_public = client.enc_cert.sm2_public_key()
    client_ephemeral = generate_ephemeral_key(secrets.token_bytes).public_key()
    ephemeral = generate_ephemeral_key(secrets.token_bytes)
    issuer = client.chain[0] if client.chain else material.trust.anchors[0]

    def key_exchange() -> object:
        return sm2_key_exchange(
            initiator=True,
            static_key=server.enc_key,
            ephemeral_key=ephemeral,
            peer_static=client_enc_public,
            peer_ephemeral=SM2PublicKey.from_bytes(client_ephemeral.to_bytes()),
            key_length=48,
        )

    def chain_link() -> None:
        # a fresh public key value, so neither certs' outcome cache nor a cached EVP_PKEY helps
        public = SM2PublicKey.from_bytes(issuer.sm2_public_key().to_bytes())
        public.verify(client.sign_cert.signature, client.sign_cert.tbs_der)

    verify_sm2_signature(client.sign_cert, issuer)  # the link really verifies
    return CryptoCosts(
        sign=cpu_cost(lambda: server.sign_key.sign(signed_params), count),
        decrypt=cpu_cost(lambda: server.enc_key.decrypt(ciphertext), count),
        verify=cpu_cost(lambda: client_sign_public.verify(certificate_verify, transcript_hash), count),
        ephemeral_key=cpu_cost(lambda: generate_ephemeral_key(secrets.token_bytes).public_key(), count),
        key_exchange=cpu_cost(key_exchange, count),
        chain_link_uncached=cpu_cost(chain_link, count),
    )


# -- in-memory handshakes ----------------------------------------------------------------------------


def server_configuration(material: Material, cell: Cell, cache: SessionCache) -> TLCPConfiguration:
    return TLCPConfiguration(
        is_client=False,
        cipher_suites=(cell.suite,),
        certificate_set=material.server,
        client_auth=ClientAuth.REQUIRED if cell.client_auth else ClientAuth.NONE,
        trust_store=material.trust,
        session_cache=cache,
    )


def client_configuration(material: Material, cell: Cell, session: TLCPSession | None) -> TLCPConfiguration:
    return TLCPConfiguration(
        is_client=True,
        cipher_suites=(cell.suite,),
        certificate_set=material.client if cell.client_auth else None,
        trust_store=material.trust,
        server_name="localhost",
        session=session,
    )


def handshake(
    server_config: TLCPConfiguration, client_config: TLCPConfiguration
) -> tuple[TLCPConnection, TLCPConnection, float]:
    """One in-memory handshake; returns (client, server, server CPU seconds)."""
    client = TLCPConnection(client_config)
    client.start_handshake()
    started = time.thread_time()
    server = TLCPConnection(server_config)
    server_cpu = time.thread_time() - started
    while True:
        to_server = client.data_to_send()
        if to_server:
            started = time.thread_time()
            server.receive_data(to_server)
            server_cpu += time.thread_time() - started
        to_client = server.data_to_send()
        if not to_server and not to_client:
            break
        if to_client:
            client.receive_data(to_client)
    if not (client.handshake_complete and server.handshake_complete):
        raise RuntimeError(f"handshake did not complete: {client!r} {server!r}")
    return client, server, server_cpu


def measure_handshake(material: Material, cell: Cell, count: int) -> float:
    """Server CPU seconds per handshake of ``cell``."""
    server_config = server_configuration(material, cell, SessionCache(max_size=4096))
    session: TLCPSession | None = None
    if cell.resumed:
        client, _, _ = handshake(server_config, client_configuration(material, cell, None))
        session = client.session
    total = 0.0
    for _ in range(count + 1):
        client, server, cpu = handshake(server_config, client_configuration(material, cell, session))
        if server.handshake_event is None or server.handshake_event.session_resumed != cell.resumed:
            raise RuntimeError(f"{cell.label}: unexpected resumption state")
        total += cpu
    return total / (count + 1)


# -- bulk -------------------------------------------------------------------------------------------


@dataclass
class BulkCosts:
    """CPU seconds per 16 KiB record."""

    receive: float
    send: float
    raw: float
    raw_with_mac: float | None


def connected_pair(material: Material, suite: CipherSuite) -> tuple[TLCPConnection, TLCPConnection]:
    cell = Cell(suite, suite in (ECDHE_GCM, ECDHE_CBC))
    client, server, _ = handshake(
        server_configuration(material, cell, SessionCache()), client_configuration(material, cell, None)
    )
    return client, server


def measure_bulk(material: Material, suite: CipherSuite) -> BulkCosts:
    client, server = connected_pair(material, suite)
    payload = secrets.token_bytes(RECORD)
    for _ in range(BULK_RECORDS):
        client.send_application_data(payload)
    wire = client.data_to_send()
    chunks = [wire[offset : offset + READ_SIZE] for offset in range(0, len(wire), READ_SIZE)]
    started = time.thread_time()
    received = 0
    for chunk in chunks:
        for event in server.receive_data(chunk):
            received += len(getattr(event, "data", b""))
    receive = (time.thread_time() - started) / BULK_RECORDS
    if received != RECORD * BULK_RECORDS:
        raise RuntimeError(f"bulk receive lost data: {received}")

    def send() -> None:
        server.send_application_data(payload)
        server.data_to_send()

    send_cost = cpu_cost(send, BULK_RECORDS)
    key, nonce, aad = secrets.token_bytes(16), secrets.token_bytes(12), secrets.token_bytes(13)
    if suite in (ECC_GCM, ECDHE_GCM):
        encryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce)).encryptor()
        encryptor.authenticate_additional_data(aad)
        sealed = encryptor.update(payload) + encryptor.finalize()
        tag = encryptor.tag

        def gcm_open() -> bytes:
            decryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce, tag)).decryptor()
            decryptor.authenticate_additional_data(aad)
            return decryptor.update(sealed) + decryptor.finalize()

        return BulkCosts(receive, send_cost, cpu_cost(gcm_open, BULK_RECORDS), None)
    iv, mac_key = secrets.token_bytes(16), secrets.token_bytes(32)
    body = payload + secrets.token_bytes(32) + bytes([15]) * 16  # plaintext || MAC || padding

    def cbc_decrypt() -> bytes:
        decryptor = Cipher(algorithms.SM4(key), modes.CBC(iv)).decryptor()
        return decryptor.update(body) + decryptor.finalize()

    def cbc_decrypt_and_mac() -> bytes:
        plaintext = cbc_decrypt()
        mac = hmac.HMAC(mac_key, hashes.SM3())
        mac.update(aad)
        mac.update(plaintext[:RECORD])
        return mac.finalize()

    return BulkCosts(
        receive, send_cost, cpu_cost(cbc_decrypt, BULK_RECORDS), cpu_cost(cbc_decrypt_and_mac, BULK_RECORDS)
    )


# -- report -----------------------------------------------------------------------------------------


def best(values: list[float]) -> float:
    return min(values)


def load_material(state_dir: Path) -> Material:
    demo = ensure_demo_pki(state_dir)
    return Material(demo.server_certificate_set(), demo.client_certificate_set(), demo.sm2_trust_store())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; best of them is shown")
    parser.add_argument("--handshakes", type=int, default=40, help="handshakes per cell and round")
    parser.add_argument("--crypto-ops", type=int, default=60, help="calls per crypto cost and round")
    parser.add_argument("--backend", default="openssl", help="tls.crypto backend (openssl or gmssl)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "smgate-bench-tlcp-core",
        help="where the demo PKI is issued (reused while valid)",
    )
    args = parser.parse_args()
    set_backend(args.backend)
    material = load_material(args.state_dir)

    crypto_runs: list[CryptoCosts] = []
    handshake_runs: dict[Cell, list[float]] = {cell: [] for cell in CELLS}
    bulk_suites = (ECC_GCM, ECC_CBC)
    bulk_runs: dict[CipherSuite, list[BulkCosts]] = {suite: [] for suite in bulk_suites}
    for _ in range(args.rounds):
        crypto_runs.append(measure_crypto(material, args.crypto_ops))
        for cell in CELLS:
            count = args.handshakes * (4 if cell.resumed else 1)
            handshake_runs[cell].append(measure_handshake(material, cell, count))
        for suite in bulk_suites:
            bulk_runs[suite].append(measure_bulk(material, suite))

    crypto = CryptoCosts(
        *(best([getattr(run, name) for run in crypto_runs]) for name in CryptoCosts.__dataclass_fields__)
    )
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"smgate TLCP core, in memory, one thread, backend {args.backend}, {started}")
    print(f"best of {args.rounds} rounds; CPU time of this thread\n")
    print("crypto (per call, public tls.crypto API, the server's own keys)")
    for name, label in (
        ("sign", "SM2 sign (ServerKeyExchange)"),
        ("decrypt", "SM2 decrypt (pre-master)"),
        ("verify", "SM2 verify (CertificateVerify)"),
        ("ephemeral_key", "ECDHE ephemeral key"),
        ("key_exchange", "SM2 key exchange (GB/T 32918.3)"),
        ("chain_link_uncached", "chain link verify, uncached"),
    ):
        cost = getattr(crypto, name)
        print(f"  {label:34} {cost * 1e3:7.3f} ms  {1 / cost:8.0f} ops/s")

    print(f"\n{'handshake (server side)':34} {'CPU/hs':>9} {'hs/s':>8} {'limit/s':>8} {'ratio':>6}")
    full: dict[tuple[CipherSuite, bool], float] = {}
    for cell in CELLS:
        cost = best(handshake_runs[cell])
        if cell.resumed:
            speedup = full[(cell.suite, cell.client_auth)] / cost
            print(f"  {cell.label:32} {cost * 1e3:6.3f} ms {1 / cost:8.0f} {'-':>8} {speedup:5.1f}x full")
            continue
        full[(cell.suite, cell.client_auth)] = cost
        limit = crypto.full_handshake(cell)
        print(f"  {cell.label:32} {cost * 1e3:6.3f} ms {1 / cost:8.0f} {1 / limit:8.0f} {limit / cost:6.2f}")

    print(f"\n{'bulk, 16 KiB records':34} {'MB/s':>8} {'raw MB/s':>9} {'cost/raw':>14}")
    for suite in bulk_suites:
        runs = bulk_runs[suite]
        receive, send = best([r.receive for r in runs]), best([r.send for r in runs])
        raw = best([r.raw for r in runs])
        name = "SM4-GCM" if suite is ECC_GCM else "SM4-CBC+HMAC-SM3"
        for direction, cost in (("receive", receive), ("send", send)):
            print(
                f"  {name + ' ' + direction:32} {RECORD / cost / MB:8.1f} {RECORD / raw / MB:9.1f} {cost / raw:13.2f}x"
            )
        with_mac = [r.raw_with_mac for r in runs if r.raw_with_mac is not None]
        if with_mac:
            raw_mac = best(with_mac)
            print(
                f"  {'  vs raw SM4-CBC + HMAC-SM3':32} {RECORD / receive / MB:8.1f} {RECORD / raw_mac / MB:9.1f}"
                f" {receive / raw_mac:13.2f}x"
            )
    print(
        "\nratio = limit cost / server cost (1.0 = only the public-key operations);"
        " raw = SM4 straight from cryptography on the same record"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
