"""In-memory benchmark of the sans-I/O TLCP core against the crypto-bound limit, measured in one run.

Usage: ``.venv/bin/python bench/tlcp_core.py [--handshakes 120] [--records 400] [--backend openssl]``
(a few seconds on an idle core).

No sockets and no event loop: a client and a server :class:`~tls.tlcp.TLCPConnection` hand each other
``data_to_send()`` in memory and only the server's work is timed, in CPU seconds of this thread
(building the server connection plus every ``receive_data`` call).

The machine is shared (its two CPUs may even be hyperthreads of one core), so a figure taken a few
seconds after another is not comparable to it.  Each comparison is therefore interleaved sample by
sample: one server handshake, then the crypto that handshake needs done on its own, then the next
handshake, and so on; one received record, then the same record decrypted by raw SM4.  Rates are the
medians of those samples and each ratio compares medians taken side by side.

Printed:

* the cost of each SM2 operation through the public ``tls.crypto`` API with the server's own keys;
* per suite, in-memory server full handshakes/s, the crypto-bound limit and their ratio.  The limit is
  the server's public-key work only, through the same calls and key objects the server uses: ECC, one
  SM2 signature (ServerKeyExchange) and one SM2 decryption (pre-master); with client authentication also
  one verify (CertificateVerify); ECDHE (always with client authentication): signature, ephemeral key,
  peer ephemeral point check, SM2 key exchange and the CertificateVerify verify.  Certificate chain
  signatures are not in the limit: ``certs`` keeps verified (certificate, issuer) outcomes, so a client
  chain's signatures are checked once, not per handshake (their uncached cost is printed);
* resumed handshakes/s (session-ID resumption: no public-key operation) and the speed-up over full;
* bulk MB/s of the server receiving (``receive_data``) and sending (``send_application_data`` +
  ``data_to_send``) 16 KiB application-data records, beside raw SM4 on the same 16 KiB straight from
  ``cryptography``: SM4-GCM; SM4-CBC alone; SM4-CBC plus HMAC-SM3 (the work a CBC record needs).

Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
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
from tls.crypto import SM2PrivateKey, SM2PublicKey, set_backend, sm2_key_exchange, sm3  # noqa: E402
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


def cpu(operation: Callable[[], object]) -> float:
    """CPU seconds of this thread spent in one call of ``operation``."""
    started = time.thread_time()
    operation()
    return time.thread_time() - started


# -- crypto-bound limit ------------------------------------------------------------------------------


class Crypto:
    """The server's public-key operations of one handshake, through the public tls.crypto API."""

    def __init__(self, material: Material) -> None:
        server, client = material.server, material.client
        randoms = secrets.token_bytes(32), secrets.token_bytes(32)
        self.server = server
        self.signed_params = ecc_signed_params(*randoms, server.enc_cert.der)
        self.ciphertext = server.enc_cert.sm2_public_key().encrypt(b"\x01\x01" + secrets.token_bytes(46))
        self.transcript_hash = sm3(secrets.token_bytes(3000))
        self.client_sign_public = client.sign_cert.sm2_public_key()
        self.certificate_verify = client.sign_key.sign(self.transcript_hash)
        self.client_enc_public = client.enc_cert.sm2_public_key()
        self.client_ephemeral_point = generate_ephemeral_key(secrets.token_bytes).public_key().to_bytes()
        self.ephemeral = generate_ephemeral_key(secrets.token_bytes)
        self.ephemeral.public_key()
        self.issuer = client.chain[0] if client.chain else material.trust.anchors[0]
        self.client_sign_cert = client.sign_cert
        verify_sm2_signature(client.sign_cert, self.issuer)  # the link measured below really verifies

    def sign(self) -> None:
        self.server.sign_key.sign(self.signed_params)

    def decrypt(self) -> None:
        self.server.enc_key.decrypt(self.ciphertext)

    def verify(self) -> None:
        self.client_sign_public.verify(self.certificate_verify, self.transcript_hash)

    def ephemeral_key(self) -> None:
        generate_ephemeral_key(secrets.token_bytes).public_key()

    def key_exchange(self, ephemeral: SM2PrivateKey | None = None) -> None:
        sm2_key_exchange(
            initiator=True,
            static_key=self.server.enc_key,
            ephemeral_key=ephemeral or self.ephemeral,
            peer_static=self.client_enc_public,
            peer_ephemeral=SM2PublicKey.from_bytes(self.client_ephemeral_point),
            key_length=48,
        )

    def chain_link_uncached(self) -> None:
        # a fresh public key value, so neither certs' outcome cache nor a cached EVP_PKEY helps
        public = SM2PublicKey.from_bytes(self.issuer.sm2_public_key().to_bytes())
        public.verify(self.client_sign_cert.signature, self.client_sign_cert.tbs_der)

    def full_handshake(self, cell: Cell) -> None:
        self.sign()
        if cell.ecdhe:
            ephemeral = generate_ephemeral_key(secrets.token_bytes)
            ephemeral.public_key()  # the point for ServerKeyExchange, kept by the key for the exchange
            self.key_exchange(ephemeral)
        else:
            self.decrypt()
        if cell.client_auth:
            self.verify()


OPERATIONS = (
    ("sign", "SM2 sign (ServerKeyExchange)"),
    ("decrypt", "SM2 decrypt (pre-master)"),
    ("verify", "SM2 verify (CertificateVerify)"),
    ("ephemeral_key", "ECDHE ephemeral key + point"),
    ("key_exchange", "SM2 key exchange + peer point check"),
    ("chain_link_uncached", "chain link verify, uncached"),
)


def measure_operations(crypto: Crypto, count: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name, _ in OPERATIONS}
    for _ in range(count):
        for name, _ in OPERATIONS:
            samples[name].append(cpu(getattr(crypto, name)))
    return samples


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


def measure_handshakes(
    material: Material, crypto: Crypto, cell: Cell, count: int
) -> tuple[list[float], list[float]]:
    """Interleaved samples: (server CPU per handshake, CPU of the same handshake's crypto alone)."""
    server_config = server_configuration(material, cell, SessionCache(max_size=4096))
    session: TLCPSession | None = None
    if cell.resumed:
        client, _, _ = handshake(server_config, client_configuration(material, cell, None))
        session = client.session
    handshake(server_config, client_configuration(material, cell, session))  # warm-up
    server_samples: list[float] = []
    crypto_samples: list[float] = []
    for _ in range(count):
        _, server, cost = handshake(server_config, client_configuration(material, cell, session))
        if server.handshake_event is None or server.handshake_event.session_resumed != cell.resumed:
            raise RuntimeError(f"{cell.label}: unexpected resumption state")
        server_samples.append(cost)
        if not cell.resumed:
            crypto_samples.append(cpu(lambda: crypto.full_handshake(cell)))
    return server_samples, crypto_samples


# -- bulk -------------------------------------------------------------------------------------------


@dataclass
class BulkSamples:
    """CPU seconds per 16 KiB record, interleaved sample by sample."""

    receive: list[float]
    raw_decrypt: list[float]
    send: list[float]
    raw_encrypt: list[float]
    #: CBC only: raw SM4-CBC plus HMAC-SM3 over the record
    raw_decrypt_mac: list[float]
    raw_encrypt_mac: list[float]


class RawSM4:
    """SM4 straight from ``cryptography`` on one 16 KiB record: a fresh context per record, as TLS does."""

    def __init__(self, gcm: bool) -> None:
        self.gcm = gcm
        self.key, self.mac_key = secrets.token_bytes(16), secrets.token_bytes(32)
        self.nonce, self.iv, self.aad = (
            secrets.token_bytes(12),
            secrets.token_bytes(16),
            secrets.token_bytes(13),
        )
        self.payload = secrets.token_bytes(RECORD)
        # CBC record body: plaintext || MAC || padding
        self.body = self.payload + secrets.token_bytes(32) + bytes([15]) * 16
        self.sealed, self.tag = self._gcm_seal()
        self.cbc_sealed = self.encrypt()

    def _gcm_seal(self) -> tuple[bytes, bytes]:
        encryptor = Cipher(algorithms.SM4(self.key), modes.GCM(self.nonce)).encryptor()
        encryptor.authenticate_additional_data(self.aad)
        sealed = encryptor.update(self.payload) + encryptor.finalize()
        return sealed, encryptor.tag

    def encrypt(self) -> bytes:
        if self.gcm:
            return self._gcm_seal()[0]
        encryptor = Cipher(algorithms.SM4(self.key), modes.CBC(self.iv)).encryptor()
        return encryptor.update(self.body) + encryptor.finalize()

    def decrypt(self) -> bytes:
        if self.gcm:
            decryptor = Cipher(algorithms.SM4(self.key), modes.GCM(self.nonce, self.tag)).decryptor()
            decryptor.authenticate_additional_data(self.aad)
            return decryptor.update(self.sealed) + decryptor.finalize()
        cbc = Cipher(algorithms.SM4(self.key), modes.CBC(self.iv)).decryptor()
        return cbc.update(self.cbc_sealed) + cbc.finalize()

    def mac(self, plaintext: bytes) -> bytes:
        mac = hmac.HMAC(self.mac_key, hashes.SM3())
        mac.update(self.aad)
        mac.update(plaintext[:RECORD])
        return mac.finalize()

    def decrypt_and_mac(self) -> bytes:
        return self.mac(self.decrypt())

    def mac_and_encrypt(self) -> bytes:
        self.mac(self.payload)
        return self.encrypt()


def measure_bulk(material: Material, suite: CipherSuite, count: int) -> BulkSamples:
    ecdhe = suite in (ECDHE_GCM, ECDHE_CBC)
    cell = Cell(suite, ecdhe)
    client, server, _ = handshake(
        server_configuration(material, cell, SessionCache()), client_configuration(material, cell, None)
    )
    raw = RawSM4(gcm=suite in (ECC_GCM, ECDHE_GCM))
    samples = BulkSamples([], [], [], [], [], [])
    for _ in range(count + 1):
        client.send_application_data(raw.payload)
        wire = client.data_to_send()
        received = 0

        def receive(wire: bytes = wire) -> None:
            nonlocal received
            for event in server.receive_data(wire):
                received += len(getattr(event, "data", b""))

        def send() -> None:
            server.send_application_data(raw.payload)
            server.data_to_send()

        samples.receive.append(cpu(receive))
        samples.raw_decrypt.append(cpu(raw.decrypt))
        samples.send.append(cpu(send))
        samples.raw_encrypt.append(cpu(raw.encrypt))
        if not raw.gcm:
            samples.raw_decrypt_mac.append(cpu(raw.decrypt_and_mac))
            samples.raw_encrypt_mac.append(cpu(raw.mac_and_encrypt))
        if received != RECORD:
            raise RuntimeError(f"bulk receive delivered {received} bytes")
    for series in vars(samples).values():
        del series[:1]  # warm-up
    return samples


# -- report -----------------------------------------------------------------------------------------


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def load_material(state_dir: Path) -> Material:
    demo = ensure_demo_pki(state_dir)
    return Material(demo.server_certificate_set(), demo.client_certificate_set(), demo.sm2_trust_store())


def report_crypto(samples: dict[str, list[float]]) -> None:
    print("crypto, per call (public tls.crypto API, the server's own keys)")
    for name, label in OPERATIONS:
        cost = median(samples[name])
        print(f"  {label:36} {cost * 1e3:7.3f} ms {1 / cost:8.0f} ops/s")


def report_handshakes(results: dict[Cell, tuple[list[float], list[float]]]) -> None:
    print(f"\n{'server handshakes':36} {'CPU/hs':>9} {'hs/s':>8} {'limit/s':>8} {'ratio':>6}")
    full: dict[tuple[CipherSuite, bool], float] = {}
    for cell, (server, crypto) in results.items():
        cost = median(server)
        if cell.resumed:
            speedup = full[(cell.suite, cell.client_auth)] / cost
            print(f"  {cell.label:34} {cost * 1e3:6.3f} ms {1 / cost:8.0f} {'-':>8} {speedup:5.1f}x full")
            continue
        full[(cell.suite, cell.client_auth)] = cost
        limit = median(crypto)
        print(f"  {cell.label:34} {cost * 1e3:6.3f} ms {1 / cost:8.0f} {1 / limit:8.0f} {limit / cost:6.2f}")


def report_bulk(results: dict[CipherSuite, BulkSamples]) -> None:
    print(f"\n{'bulk, 16 KiB records':36} {'MB/s':>9} {'raw MB/s':>9} {'cost/raw':>9}")

    def row(label: str, cost: list[float], raw: list[float]) -> None:
        tlcp, base = median(cost), median(raw)
        print(f"  {label:34} {RECORD / tlcp / MB:9.1f} {RECORD / base / MB:9.1f} {tlcp / base:8.2f}x")

    for samples in results.values():
        if samples.raw_decrypt_mac:
            row("SM4-CBC+HMAC-SM3 receive", samples.receive, samples.raw_decrypt)
            row("  vs raw SM4-CBC + HMAC-SM3", samples.receive, samples.raw_decrypt_mac)
            row("SM4-CBC+HMAC-SM3 send", samples.send, samples.raw_encrypt)
            row("  vs raw HMAC-SM3 + SM4-CBC", samples.send, samples.raw_encrypt_mac)
        else:
            row("SM4-GCM receive", samples.receive, samples.raw_decrypt)
            row("SM4-GCM send", samples.send, samples.raw_encrypt)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handshakes", type=int, default=120, help="handshakes per cell")
    parser.add_argument("--records", type=int, default=400, help="16 KiB records per bulk suite")
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
    crypto = Crypto(material)

    operations = measure_operations(crypto, max(args.handshakes // 2, 10))
    handshakes = {
        cell: measure_handshakes(material, crypto, cell, args.handshakes * (2 if cell.resumed else 1))
        for cell in CELLS
    }
    bulk = {suite: measure_bulk(material, suite, args.records) for suite in (ECC_GCM, ECC_CBC)}

    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"smgate TLCP core in memory, one thread, backend {args.backend}, {started}")
    print("medians of interleaved samples, CPU time of this thread\n")
    report_crypto(operations)
    report_handshakes(handshakes)
    report_bulk(bulk)
    print(
        "\nratio = crypto-bound limit / server rate (1.0: the server does nothing but its public-key"
        " operations); raw = SM4 from cryptography on the same record"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
