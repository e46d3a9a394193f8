"""Pre-flight checks: what ``smgate serve`` would refuse, found before anything starts.

Validation (:mod:`gateway.config`) proves a document well-formed and its files present; these checks
look at what the files hold and at the host, each finding named by its key path:

- :func:`check_config` reads, never writes or binds: every private key loads (an encrypted one names
  the variable that should hold its password) and matches its certificate, the audit chain key and
  signing pair load and match, the audit directories can be written, the admin port is no listener's
  port, no two listeners overlap through a wildcard address, and (a warning) a TLCP listener offering
  ECDHE has ``sm2_trust_anchors`` for the CertificateRequest those suites make it send.
  ``config check`` and ``serve`` both run it, so a running gateway's own config still checks ok.
- :func:`check_host` is for ``serve`` alone: the ports are free right now and no other process holds
  the audit directory's writer lock (a second instance on the same host).

Callers prefix each finding with the config file's name.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from asn1crypto import keys as asn1_keys
from asn1crypto import pem
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from audit.config import AuditConfig, FileSinkConfig
from audit.keys import AuditKeyError, load_audit_key, load_signing_key, load_verification_key
from certs.certificate import Certificate, load_pem_certificates
from certs.errors import CertificateError
from certs.standard import load_private_key
from gateway.config import ECDHE_SUITES, GatewayConfig, Protocol
from tls.crypto import CryptoError, load_sm2_private_key


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    """One problem at one key path. ``blocks_loading``: building the generation must not be tried
    (Python's ssl would prompt on the terminal for the password of an encrypted TLS key)."""

    path: str
    message: str
    severity: Severity = Severity.ERROR
    blocks_loading: bool = False

    def __str__(self) -> str:
        label = "warning: " if self.severity is Severity.WARNING else ""
        return f"{label}{self.path}: {self.message}"


@dataclass(frozen=True)
class _KeyPair:
    """A certificate and its private key as one config section names them."""

    where: str
    cert_key: str
    key_key: str
    cert: Path
    key: Path
    #: The config key naming the password variable (``key_password_env``), None where there is none.
    password_key: str | None = None
    password_env: str | None = None


# -- check_config -------------------------------------------------------------------------------


def check_config(config: GatewayConfig) -> list[Finding]:
    """Everything :mod:`gateway.config` cannot see that would stop ``serve``; see the module docstring."""
    findings: list[Finding] = []
    for pair in _key_pairs(config):
        findings += _check_key_pair(pair)
    if config.audit is not None:
        findings += _check_audit(config.audit)
    findings += _check_admin_port(config)
    findings += _check_listener_overlaps(config)
    findings += _check_ecdhe_anchors(config)
    return findings


def errors(findings: Sequence[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity is Severity.ERROR]


def warnings(findings: Sequence[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity is Severity.WARNING]


def uncovered(load_errors: Sequence[str], findings: Sequence[Finding]) -> list[str]:
    """``load_errors`` (``path: message`` from building a generation) that no finding already explains
    more precisely at the same or a deeper key path."""
    paths = [f.path for f in findings]
    return [e for e in load_errors if not any(p.startswith(e.split(": ", 1)[0]) for p in paths)]


def _key_pairs(config: GatewayConfig) -> Iterator[_KeyPair]:
    for i, listener in enumerate(config.listeners):
        for j, cert_set in enumerate(listener.tls.certificates):
            where = f"listeners[{i}].tls.certificates[{j}]"
            for part in ("sign", "enc"):
                cert, key = getattr(cert_set, f"{part}_cert"), getattr(cert_set, f"{part}_key")
                if cert is not None and key is not None:
                    yield _KeyPair(
                        where,
                        f"{part}_cert",
                        f"{part}_key",
                        cert,
                        key,
                        "key_password_env",
                        cert_set.key_password_env,
                    )
            for k, tls_cert in enumerate(cert_set.tls_certificates):
                yield _KeyPair(
                    f"{where}.tls_certificates[{k}]",
                    "cert_chain",
                    "private_key",
                    tls_cert.cert_chain,
                    tls_cert.private_key,
                )
    for i, cluster in enumerate(config.clusters):
        transport = cluster.transport_socket
        where = f"clusters[{i}].transport_socket"
        for cert_key, key_key in (
            ("client_cert_chain", "client_private_key"),
            ("sign_cert", "sign_key"),
            ("enc_cert", "enc_key"),
        ):
            cert, key = getattr(transport, cert_key), getattr(transport, key_key)
            if cert is not None and key is not None:
                yield _KeyPair(where, cert_key, key_key, cert, key)


def _is_encrypted(data: bytes) -> bool:
    """PKCS#8 EncryptedPrivateKeyInfo (PEM or DER) or a legacy PEM with DEK-Info."""
    try:
        if pem.detect(data):
            return any(
                label == "ENCRYPTED PRIVATE KEY" or "DEK-Info" in headers
                for label, headers, _der in pem.unarmor(data, multiple=True)
            )
        info = asn1_keys.EncryptedPrivateKeyInfo.load(data, strict=True)
        return bool(info["encryption_algorithm"]["algorithm"].native)
    except (ValueError, TypeError, KeyError):
        return False


def _check_key_pair(pair: _KeyPair) -> list[Finding]:
    key_path = f"{pair.where}.{pair.key_key}"
    try:
        data = pair.key.read_bytes()
    except OSError as exc:
        return [Finding(key_path, f"cannot read {pair.key}: {exc.strerror}")]
    try:
        certificate = load_pem_certificates(pair.cert.read_bytes())[0]
    except (CertificateError, OSError) as exc:
        return [Finding(f"{pair.where}.{pair.cert_key}", f"not a certificate ({pair.cert}): {exc}")]
    password: bytes | None = None
    if _is_encrypted(data):
        if pair.password_key is None:
            return [
                Finding(
                    key_path,
                    f"{pair.key} is encrypted and smgate loads this key without a password: store it "
                    "unencrypted with file mode 0600 (openssl pkey -in KEY -out PLAIN_KEY)",
                    blocks_loading=not certificate.is_sm2,
                )
            ]
        if pair.password_env is None:
            return [
                Finding(
                    key_path,
                    f"{pair.key} is encrypted: name the environment variable holding its password in "
                    f"{pair.where}.{pair.password_key}",
                )
            ]
        value = os.environ.get(pair.password_env)
        if value is None:
            return [
                Finding(
                    f"{pair.where}.{pair.password_key}",
                    f"environment variable {pair.password_env} is not set "
                    f"(it holds the password of the encrypted {pair.key_key} {pair.key})",
                )
            ]
        password = value.encode()
    return _check_key_matches(pair, key_path, certificate, data, password)


def _check_key_matches(
    pair: _KeyPair, key_path: str, certificate: Certificate, data: bytes, password: bytes | None
) -> list[Finding]:
    try:
        if certificate.is_sm2:
            matches = load_sm2_private_key(data, password).public_key() == certificate.sm2_public_key()
        else:
            key = load_private_key(data, password)
            spki = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
            matches = spki == certificate.public_key_info_der
    except (CryptoError, CertificateError, ValueError, TypeError):
        if password is not None:
            return [
                Finding(key_path, f"{pair.key} does not decrypt with the password in ${pair.password_env}")
            ]
        kind = "an SM2" if certificate.is_sm2 else "an RSA or ECDSA"
        return [Finding(key_path, f"{pair.key} is not {kind} private key (its certificate is {kind} one)")]
    if not matches:
        return [
            Finding(
                key_path,
                f"{pair.key} does not match {pair.cert_key} {pair.cert} ({certificate.subject})",
            )
        ]
    return []


def _check_audit(audit: AuditConfig) -> list[Finding]:
    findings: list[Finding] = []
    try:
        load_audit_key(audit.key_file)
    except AuditKeyError as exc:
        findings.append(Finding("audit.key_file", str(exc)))
    findings += _check_audit_signing_pair(audit)
    for index, sink in enumerate(audit.sinks):
        if isinstance(sink, FileSinkConfig):
            problem = writable_directory_problem(sink.directory)
            if problem:
                findings.append(Finding(f"audit.sinks[{index}].directory", problem))
    if audit.state_dir is not None:
        problem = writable_directory_problem(audit.state_dir)
        if problem:
            findings.append(Finding("audit.state_dir", problem))
    return findings


def _check_audit_signing_pair(audit: AuditConfig) -> list[Finding]:
    if audit.signing_key is None:
        return []
    password = None
    if audit.signing_key_password_file is not None:
        try:
            password = audit.signing_key_password_file.read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            return [Finding("audit.signing_key_password_file", f"cannot read: {exc.strerror}")]
    try:
        key = load_signing_key(audit.signing_key, password)
    except AuditKeyError as exc:
        return [Finding("audit.signing_key", str(exc))]
    if audit.signing_cert is None:
        return []
    try:
        certified = load_verification_key(audit.signing_cert)
    except AuditKeyError as exc:
        return [Finding("audit.signing_cert", str(exc))]
    if certified != key.public_key():
        return [
            Finding(
                "audit.signing_cert",
                f"{audit.signing_cert} does not match audit.signing_key {audit.signing_key}",
            )
        ]
    return []


def writable_directory_problem(directory: Path) -> str | None:
    """Why files cannot be created in ``directory`` (made on start if missing), or None if they can.

    Tries a temporary file in the directory or its nearest existing ancestor: permissions alone miss
    read-only mounts and pseudo file systems, and say nothing to root.
    """
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{directory} cannot be created: {existing} is not a directory"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        where = directory if existing == directory else f"{directory} (in {existing})"
        return f"cannot create files in {where}: {exc.strerror}"
    return None


_WILDCARDS = {"0.0.0.0", "::", ""}


def _same_host(address: str) -> str:
    return "127.0.0.1" if address == "localhost" else address


def addresses_overlap(first: str, second: str) -> bool:
    """Whether binding both addresses on one port conflicts (Linux: ``::`` is dual-stack by default)."""
    first, second = _same_host(first), _same_host(second)
    if first == second or "::" in (first, second):
        return True
    if "0.0.0.0" in (first, second):
        return ":" not in first + second
    return False


def _check_admin_port(config: GatewayConfig) -> list[Finding]:
    admin = config.admin
    if admin is None or not admin.port:
        return []
    return [
        Finding(
            "admin.port",
            f"{admin.address}:{admin.port} is also the port of listeners[{i}] "
            f"({listener.name!r} on {listener.address}:{listener.port}); give the admin API its own port",
        )
        for i, listener in enumerate(config.listeners)
        if listener.port == admin.port and addresses_overlap(listener.address, admin.address)
    ]


def _check_listener_overlaps(config: GatewayConfig) -> list[Finding]:
    """Same port, different but overlapping addresses (identical ones are a validation error)."""
    findings = []
    listeners = config.listeners
    for j, later in enumerate(listeners):
        for i, earlier in enumerate(listeners[:j]):
            if (
                later.port
                and later.port == earlier.port
                and later.address != earlier.address
                and addresses_overlap(later.address, earlier.address)
            ):
                findings.append(
                    Finding(
                        f"listeners[{j}].address",
                        f"{later.address}:{later.port} ({later.name!r}) overlaps listeners[{i}] "
                        f"({earlier.name!r} on {earlier.address}:{earlier.port}); they cannot both bind",
                    )
                )
    return findings


def _check_ecdhe_anchors(config: GatewayConfig) -> list[Finding]:
    findings = []
    for i, listener in enumerate(config.listeners):
        tls = listener.tls
        if Protocol.TLCP not in tls.protocols or tls.sm2_trust_anchors is not None:
            continue
        ecdhe = [suite.name for suite in tls.cipher_suites.tlcp if suite in ECDHE_SUITES]
        if ecdhe:
            findings.append(
                Finding(
                    f"listeners[{i}].tls.sm2_trust_anchors",
                    f"{', '.join(ecdhe)} make the server request the client's SM2 certificates "
                    "(GB/T 38636-2020 6.4.5.3); without sm2_trust_anchors the request names no CA, so GmSSL "
                    "clients abort and presented certificates go unverified: set sm2_trust_anchors or offer "
                    "only ECC suites (cipher_suites.tlcp)",
                    Severity.WARNING,
                )
            )
    return findings


# -- check_host ---------------------------------------------------------------------------------


def check_host(config: GatewayConfig, *, workers: int = 1) -> list[Finding]:
    """What only the moment of starting can tell; ``serve`` runs it once, before any worker starts."""
    findings: list[Finding] = []
    if config.admin is not None and config.admin.port:
        problem = _bind_problem(config.admin.address, config.admin.port)
        if problem:
            findings.append(
                Finding(
                    "admin.port",
                    f"cannot listen on {config.admin.address}:{config.admin.port}: {problem} "
                    "(another smgate on this host? each instance needs its own admin.port)",
                )
            )
    for i, listener in enumerate(config.listeners):
        problem = _bind_problem(listener.address, listener.port) if listener.port else None
        if problem:
            findings.append(
                Finding(
                    f"listeners[{i}].port",
                    f"cannot listen on {listener.address}:{listener.port} ({listener.name!r}): {problem}",
                )
            )
    if config.audit is not None:
        findings += _check_audit_lock(config.audit, workers)
    return findings


def _bind_problem(address: str, port: int) -> str | None:
    """Why a listening socket cannot be bound now (same options as the gateway's), or None."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        probe = socket.create_server((address, port), family=family)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return "the address is already in use"
        return exc.strerror or str(exc)
    probe.close()
    return None


def _check_audit_lock(audit: AuditConfig, workers: int) -> list[Finding]:
    index, sink = next((i, s) for i, s in enumerate(audit.sinks) if isinstance(s, FileSinkConfig))
    # ``--workers N`` gives worker i the directory <directory>/worker-<i> (gateway.audit_setup).
    directories = (
        [sink.directory] if workers <= 1 else [sink.directory / f"worker-{i}" for i in range(workers)]
    )
    return [
        Finding(
            f"audit.sinks[{index}].directory",
            f"{directory} is being written by another process (a second smgate with this audit "
            "directory?); each gateway instance needs its own audit directory",
        )
        for directory in directories
        if audit_directory_busy(directory, sink.prefix)
    ]


def audit_directory_busy(directory: Path, prefix: str) -> bool:
    """Whether another process holds the file sink's writer lock (``.<prefix>.lock``, flock)."""
    try:
        descriptor = os.open(directory / f".{prefix}.lock", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False  # no lock file: nobody has written there yet
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(descriptor)  # closing releases a lock we took
    return False
