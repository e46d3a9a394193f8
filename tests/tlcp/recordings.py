"""Access to the shared TLCP recordings (GmSSL and Tongsuo) for the known-answer tests.

A `Recording` gives the raw record streams of both directions, the
handshake messages of the plaintext part, the logged secrets (GmSSL
`secrets.txt` or Tongsuo `keylog.txt`) and the certificate sets both ends
used.  Nothing here uses `tls.tlcp`, so the tests compare the engine against
independently parsed data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

from certs import Certificate, SM2CertificateSet, TrustStore, load_certificate_file, load_sm2_certificate_set
from tests.conftest import SHARED

GMSSL = SHARED / "tlcp" / "gmssl"
TONGSUO = SHARED / "tlcp" / "tongsuo"

#: Inside the validity of both certificate sets (from 2026-11-25 for ten/twenty years).
REPLAY_TIME = datetime(2027, 6, 1, tzinfo=UTC)

SUITE_CODES = {
    "ECC_SM4_CBC_SM3": 0xE013,
    "ECC_SM4_GCM_SM3": 0xE053,
    "ECDHE_SM4_CBC_SM3": 0xE011,
    "ECDHE_SM4_GCM_SM3": 0xE051,
    "ECC-SM2-SM4-CBC-SM3": 0xE013,
    "ECC-SM2-SM4-GCM-SM3": 0xE053,
    "ECDHE-SM2-SM4-CBC-SM3": 0xE011,
    "ECDHE-SM2-SM4-GCM-SM3": 0xE051,
}


@dataclass(frozen=True)
class Record:
    content_type: int
    fragment: bytes

    @property
    def wire(self) -> bytes:
        return bytes((self.content_type, 1, 1)) + len(self.fragment).to_bytes(2, "big") + self.fragment


def parse_records(data: bytes) -> list[Record]:
    records = []
    offset = 0
    while offset < len(data):
        assert data[offset + 1 : offset + 3] == b"\x01\x01"
        length = int.from_bytes(data[offset + 3 : offset + 5], "big")
        records.append(Record(data[offset], data[offset + 5 : offset + 5 + length]))
        offset += 5 + length
    return records


def handshake_messages(records: list[Record]) -> list[bytes]:
    """Plaintext handshake messages before the first ChangeCipherSpec."""
    stream = b""
    for record in records:
        if record.content_type == 20:
            break
        if record.content_type == 22:
            stream += record.fragment
    messages = []
    while stream:
        length = int.from_bytes(stream[1:4], "big")
        messages.append(stream[: 4 + length])
        stream = stream[4 + length :]
    return messages


@dataclass
class Recording:
    path: Path
    implementation: str  # "gmssl" or "tongsuo"
    name: str
    suite: int
    client_auth: bool
    secrets: dict[str, bytes] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"{self.implementation}/{self.name}"

    @property
    def ecdhe(self) -> bool:
        return self.suite in (0xE011, 0xE051)

    @property
    def gcm(self) -> bool:
        return self.suite in (0xE053, 0xE051)

    @cached_property
    def client_to_server(self) -> bytes:
        return (self.path / "client_to_server.bin").read_bytes()

    @cached_property
    def server_to_client(self) -> bytes:
        return (self.path / "server_to_client.bin").read_bytes()

    @cached_property
    def client_records(self) -> list[Record]:
        return parse_records(self.client_to_server)

    @cached_property
    def server_records(self) -> list[Record]:
        return parse_records(self.server_to_client)

    def client_message(self, message_type: int) -> bytes:
        return next(m for m in handshake_messages(self.client_records) if m[0] == message_type)

    def server_message(self, message_type: int) -> bytes:
        return next(m for m in handshake_messages(self.server_records) if m[0] == message_type)

    def has_client_message(self, message_type: int) -> bool:
        return any(m[0] == message_type for m in handshake_messages(self.client_records))

    @property
    def client_random(self) -> bytes:
        return self.client_message(1)[6:38]

    @property
    def server_random(self) -> bytes:
        return self.server_message(2)[6:38]

    @property
    def server_session_id(self) -> bytes:
        hello = self.server_message(2)
        return hello[39 : 39 + hello[38]]

    @property
    def master_secret(self) -> bytes:
        return self.secrets["master_secret"]

    @staticmethod
    def encrypted_records(records: list[Record]) -> list[Record]:
        index = next(i for i, r in enumerate(records) if r.content_type == 20)
        return records[index + 1 :]

    def explicit_ivs(self, records: list[Record]) -> list[bytes]:
        """CBC explicit IVs of the encrypted records, in order."""
        return [r.fragment[:16] for r in self.encrypted_records(records)]

    def nonce_start(self, records: list[Record]) -> bytes:
        """GCM explicit nonce of the first encrypted record (sequence 0)."""
        return self.encrypted_records(records)[0].fragment[:8]

    @cached_property
    def plaintext_client_to_server(self) -> bytes:
        if self.implementation == "gmssl":
            return (self.path / "plaintext_client_to_server.txt").read_bytes()
        return b"hello from tongsuo s_client\n"

    @cached_property
    def plaintext_server_to_client(self) -> bytes:
        if self.implementation == "gmssl":
            return (self.path / "plaintext_server_to_client.txt").read_bytes()
        return b"hello from tongsuo s_server\n"

    # certificates

    @cached_property
    def trust_store(self) -> TrustStore:
        return TrustStore.from_certificates([self.ca_cert])

    @cached_property
    def ca_cert(self) -> Certificate:
        if self.implementation == "gmssl":
            return load_certificate_file(GMSSL / "certs" / "root_ca_cert.pem")
        return load_certificate_file(TONGSUO / "certs" / "ca.crt")

    def _certificate_set(self, side: str, chain: list[Certificate]) -> SM2CertificateSet:
        if self.implementation == "gmssl":
            base = GMSSL / "certs"
            return load_sm2_certificate_set(
                base / f"{side}_sign_cert.pem",
                base / f"{side}_sign_key_plain.pem",
                base / f"{side}_enc_cert.pem",
                base / f"{side}_enc_key_plain.pem",
            )
        base = TONGSUO / "certs"
        certificate_set = load_sm2_certificate_set(
            base / f"{side}_sign.crt",
            base / f"{side}_sign.key",
            base / f"{side}_enc.crt",
            base / f"{side}_enc.key",
        )
        certificate_set.chain = chain
        return certificate_set

    @cached_property
    def server_certificate_set(self) -> SM2CertificateSet:
        # Tongsuo appends the CA when that side has a trust store loaded (client-auth runs)
        chain = [self.ca_cert] if self.implementation == "tongsuo" and self.client_auth else []
        return self._certificate_set("server", chain)

    @cached_property
    def client_certificate_set(self) -> SM2CertificateSet:
        chain = [self.ca_cert] if self.implementation == "tongsuo" else []
        return self._certificate_set("client", chain)


def _read_gmssl_secrets(path: Path) -> dict[str, bytes]:
    secrets = {}
    for line in (path / "secrets.txt").read_text().splitlines():
        key, _, value = line.partition(":")
        secrets[key.strip()] = bytes.fromhex(value.strip())
    return secrets


def _read_keylog(path: Path) -> dict[str, bytes]:
    for line in (path / "keylog.txt").read_text().splitlines():
        if line.startswith("CLIENT_RANDOM "):
            _, client_random, master = line.split()
            return {"client_random": bytes.fromhex(client_random), "master_secret": bytes.fromhex(master)}
    raise AssertionError("no CLIENT_RANDOM line")


def all_recordings() -> list[Recording]:
    recordings = []
    for folder in sorted(p for p in GMSSL.iterdir() if p.is_dir() and p.name.startswith("TLS_")):
        suite_name = folder.name.removeprefix("TLS_").split("-")[0]
        recordings.append(
            Recording(
                folder,
                "gmssl",
                folder.name,
                SUITE_CODES[suite_name],
                "clientauth" in folder.name,
                _read_gmssl_secrets(folder),
            )
        )
    for folder in sorted(p for p in TONGSUO.iterdir() if p.is_dir() and p.name != "certs"):
        suite_name = folder.name.removesuffix("-clientauth").removesuffix("-defaults")
        recordings.append(
            Recording(
                folder,
                "tongsuo",
                folder.name,
                SUITE_CODES[suite_name],
                "clientauth" in folder.name,
                _read_keylog(folder),
            )
        )
    return recordings
