"""``smgate pki ...``: create CAs, issue TLCP and standard-TLS certificates, show and verify certificates.

Subcommands (``register`` adds them under a ``pki`` command):

- ``ca --type sm2|rsa|ecdsa``: self-signed root CA -> ``NAME.pem`` / ``NAME.key``
- ``intermediate``: intermediate CA signed by ``--ca-cert``/``--ca-key`` (same key family as the CA)
- ``issue-tlcp --role server|client``: SM2 signing + encryption pair -> ``NAME_sign.*``, ``NAME_enc.*``
- ``issue --type rsa|ecdsa --role server|client``: standard-TLS certificate from an RSA/ECDSA CA;
  ``issue --audit-signing``: SM2 signing certificate for the audit trail's checkpoints, from an SM2 CA
- ``csr --role server|client``: SM2 sign/enc keys and a PKCS#10 request for each (``NAME_sign.csr``,
  ``NAME_enc.csr``), for a CA outside smgate to issue the TLCP pair
- ``show FILE...``: human summary of every certificate in each file (a key or CSR file is named as such)
- ``verify``: validate a certificate chain at a given time (SM2 via certs.verify, others via OpenSSL)
- ``demo --state DIR``: the idempotent demo PKI (:func:`certs.demo.ensure_demo_pki`)

Private keys are written with mode 0600 (optionally encrypted with ``--key-password-file``);
existing files are only replaced with ``--force``; the files of one command are written all or none.
Exit codes: 0 success, 1 a certificate/key/file problem (message on stderr), 2 usage errors (argparse).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from asn1crypto import pem

from certs.certificate import Certificate, load_pem_certificates
from certs.demo import demo_certificates, ensure_demo_pki
from certs.errors import CertificateError
from certs.pki import (
    DEFAULT_CA_DAYS,
    DEFAULT_INTERMEDIATE_DAYS,
    DEFAULT_LEAF_DAYS,
    MAX_VALIDITY_DAYS,
    Issued,
    IssuedSM2,
    OutputFile,
    certificates_pem,
    create_sm2_intermediate_ca,
    create_sm2_root_ca,
    create_standard_ca,
    issue_sm2_signing_certificate,
    issue_standard_certificate,
    issue_tlcp_pair,
    issued_files,
    key_to_pem,
    load_issued,
    load_sm2_issuer,
    load_standard_issuer,
    request_tlcp_pair,
    write_file_set,
)
from certs.profile import Subject
from certs.standard import verify_standard_chain
from certs.summary import describe_certificate
from certs.trust import TrustStore
from certs.usage import Role
from certs.verify import verify_sm2_chain
from tls.crypto import CryptoError

Handler = Callable[[argparse.Namespace], int]

_ROLES = {
    "server-sign": Role.SERVER_SIGN,
    "server-enc": Role.SERVER_ENC,
    "client-sign": Role.CLIENT_SIGN,
    "client-enc": Role.CLIENT_ENC,
    "server": Role.SERVER_SIGN,
    "client": Role.CLIENT_SIGN,
}


class _Refused(Exception):
    """An output file exists and --force was not given."""


class _UsageError(Exception):
    """Options that do not go together (exit code 2, like argparse's own usage errors)."""


def _days(value: str) -> int:
    days = int(value)
    if not 1 <= days <= MAX_VALIDITY_DAYS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_VALIDITY_DAYS}")
    return days


def _timestamp(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _password(path: str | None) -> bytes | None:
    """The first line of a password file (never a command-line argument: those show up in ps)."""
    if path is None:
        return None
    lines = Path(path).read_bytes().splitlines()
    if not lines or not lines[0]:
        raise ValueError(f"password file {path!r} is empty")
    return lines[0]


def _subject(args: argparse.Namespace) -> Subject:
    return Subject(args.cn, args.org, args.ou, args.country)


def _check_outputs(args: argparse.Namespace, paths: list[Path]) -> None:
    existing = [str(path) for path in paths if path.exists()]
    if existing and not args.force:
        raise _Refused(f"refusing to overwrite {', '.join(existing)} (use --force)")


def _issued_outputs(args: argparse.Namespace, issued: Issued, name: str) -> list[OutputFile]:
    out_dir = Path(args.out_dir)
    return issued_files(
        issued, out_dir / f"{name}.pem", out_dir / f"{name}.key", _password(args.key_password_file)
    )


def _chain_outputs(args: argparse.Namespace, issuer: Issued, name: str) -> list[OutputFile]:
    """NAME_chain.pem (the issuer unless it is a root, then --ca-chain's intermediates), if non-empty."""
    chain = [] if issuer.certificate.is_self_issued else [issuer.certificate]
    if args.ca_chain:
        for certificate in _read_certificates(args.ca_chain):
            if certificate not in chain and not certificate.is_self_issued:
                chain.append(certificate)
    if not chain:
        return []
    return [OutputFile(Path(args.out_dir) / f"{name}_chain.pem", certificates_pem(chain))]


def _write(files: list[OutputFile]) -> int:
    """Write the command's files all or none, then list them."""
    write_file_set(files)
    for item in files:
        print(f"wrote {item.path}")
    return 0


def _cmd_ca(args: argparse.Namespace) -> int:
    out_dir = Path(args.out_dir)
    _check_outputs(args, [out_dir / f"{args.name}.pem", out_dir / f"{args.name}.key"])
    issued: Issued
    if args.type == "sm2":
        issued = create_sm2_root_ca(_subject(args), days=args.days, path_len=args.path_len)
    else:
        issued = create_standard_ca(args.type, _subject(args), days=args.days, path_len=args.path_len)
    return _write(_issued_outputs(args, issued, args.name))


def _cmd_intermediate(args: argparse.Namespace) -> int:
    out_dir = Path(args.out_dir)
    _check_outputs(args, [out_dir / f"{args.name}.pem", out_dir / f"{args.name}.key"])
    issuer = load_issued(args.ca_cert, args.ca_key, _password(args.ca_key_password_file))
    issued: Issued
    if isinstance(issuer, IssuedSM2):
        issued = create_sm2_intermediate_ca(_subject(args), issuer, days=args.days, path_len=args.path_len)
    else:
        key_type = "rsa" if issuer.certificate.key_type.startswith("RSA") else "ecdsa"
        issued = create_standard_ca(
            key_type, _subject(args), issuer=issuer, days=args.days, path_len=args.path_len
        )
    return _write(_issued_outputs(args, issued, args.name))


def _cmd_issue_tlcp(args: argparse.Namespace) -> int:
    name = args.name or args.role
    out_dir = Path(args.out_dir)
    outputs = [out_dir / f"{name}_{part}.{suffix}" for part in ("sign", "enc") for suffix in ("pem", "key")]
    _check_outputs(args, [*outputs, out_dir / f"{name}_chain.pem"])
    issuer = load_sm2_issuer(args.ca_cert, args.ca_key, _password(args.ca_key_password_file))
    pair = issue_tlcp_pair(
        _subject(args), issuer, role=args.role, dns=tuple(args.dns), ips=tuple(args.ip), days=args.days
    )
    files = _issued_outputs(args, pair.sign, f"{name}_sign") + _issued_outputs(args, pair.enc, f"{name}_enc")
    return _write(files + _chain_outputs(args, issuer, name))


def _cmd_issue(args: argparse.Namespace) -> int:
    if args.audit_signing:
        return _issue_audit_signing(args)
    if args.type is None or args.role is None:
        raise _UsageError("issue needs --type and --role (or --audit-signing)")
    name = args.name or f"{args.type}_{args.role}"
    out_dir = Path(args.out_dir)
    _check_outputs(args, [out_dir / f"{name}.pem", out_dir / f"{name}.key", out_dir / f"{name}_chain.pem"])
    issuer = load_standard_issuer(args.ca_cert, args.ca_key, _password(args.ca_key_password_file))
    issued = issue_standard_certificate(
        args.type,
        _subject(args),
        issuer,
        role=args.role,
        dns=tuple(args.dns),
        ips=tuple(args.ip),
        days=args.days,
    )
    return _write(_issued_outputs(args, issued, name) + _chain_outputs(args, issuer, name))


def _issue_audit_signing(args: argparse.Namespace) -> int:
    """An SM2 certificate for the audit trail's signed checkpoints (``audit.signing_cert``)."""
    if args.type is not None or args.role is not None or args.dns or args.ip:
        raise _UsageError(
            "--audit-signing issues an SM2 signing certificate: drop --type, --role, --dns, --ip"
        )
    name = args.name or "audit_signing"
    out_dir = Path(args.out_dir)
    _check_outputs(args, [out_dir / f"{name}.pem", out_dir / f"{name}.key", out_dir / f"{name}_chain.pem"])
    issuer = load_sm2_issuer(args.ca_cert, args.ca_key, _password(args.ca_key_password_file))
    issued = issue_sm2_signing_certificate(_subject(args), issuer, days=args.days)
    return _write(_issued_outputs(args, issued, name) + _chain_outputs(args, issuer, name))


def _cmd_csr(args: argparse.Namespace) -> int:
    """Keys and PKCS#10 requests for a TLCP pair, for a CA outside smgate to issue."""
    name = args.name or args.role
    out_dir = Path(args.out_dir)
    password = _password(args.key_password_file)
    _check_outputs(
        args, [out_dir / f"{name}_{part}.{suffix}" for part in ("sign", "enc") for suffix in ("csr", "key")]
    )
    pair = request_tlcp_pair(_subject(args), role=args.role, dns=tuple(args.dns), ips=tuple(args.ip))
    files: list[OutputFile] = []
    for part, request in (("sign", pair.sign), ("enc", pair.enc)):
        files.append(
            OutputFile(out_dir / f"{name}_{part}.key", key_to_pem(request.key, password), secret=True)
        )
        files.append(OutputFile(out_dir / f"{name}_{part}.csr", request.request_pem()))
    return _write(files)


def _not_a_certificate(file_name: str, data: bytes, problem: Exception) -> str:
    """Why ``pki show``/``verify`` cannot read ``file_name``, naming what it holds instead."""
    labels = [label for label, _headers, _der in pem.unarmor(data, multiple=True)] if pem.detect(data) else []
    if any(label.endswith("PRIVATE KEY") for label in labels):
        return (
            f"{file_name}: holds a private key, not a certificate "
            "(pki show reads certificates; the key's certificate is the .pem issued with it)"
        )
    if "CERTIFICATE REQUEST" in labels:
        return f"{file_name}: holds a certificate request (CSR), not a certificate; a CA issues one from it"
    return f"{file_name}: not a certificate: {problem}"


def _read_certificates(file_name: str) -> list[Certificate]:
    data = Path(file_name).read_bytes()
    try:
        return load_pem_certificates(data)
    except CertificateError as exc:
        raise CertificateError(_not_a_certificate(file_name, data, exc)) from None


def _cmd_show(args: argparse.Namespace) -> int:
    now = args.at or datetime.now(UTC)
    blocks = []
    for file_name in args.files:
        certificates = _read_certificates(file_name)
        for index, certificate in enumerate(certificates, start=1):
            header = f"{file_name}" + (f" [{index}/{len(certificates)}]" if len(certificates) > 1 else "")
            blocks.append(f"{header}\n{describe_certificate(certificate, now)}")
    print("\n\n".join(blocks))
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    now = args.at or datetime.now(UTC)
    certificates = _read_certificates(args.file)
    leaf, intermediates = certificates[0], certificates[1:]
    if args.untrusted:
        intermediates += load_pem_certificates(Path(args.untrusted).read_bytes())
    trust = TrustStore.from_pem_file(args.ca_file)
    if leaf.is_sm2:
        path = verify_sm2_chain(
            leaf, intermediates, trust, role=_ROLES[args.role], now=now, hostname=args.hostname
        )
    else:
        path = verify_standard_chain(
            leaf, intermediates, trust, now=now, server=args.role.startswith("server"), hostname=args.hostname
        )
    print(f"{args.file}: OK")
    for depth, certificate in enumerate(path):
        print(f"  {depth}: {certificate.subject}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    demo = ensure_demo_pki(Path(args.state))
    print(f"demo PKI in {demo.directory}")
    for label, certificate in demo_certificates(demo):
        print(f"  {label:<22} {certificate.key_type:<11} {certificate.subject}")
    return 0


def _guarded(handler: Handler) -> Handler:
    """Turn expected failures into a one-line message and exit code 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except _UsageError as exc:
            print(f"smgate pki: error: {exc}", file=sys.stderr)
            return 2
        except (CertificateError, CryptoError, ValueError, OSError, _Refused) as exc:
            print(f"smgate pki: error: {exc}", file=sys.stderr)
            return 1

    return run


def _add_subject_options(parser: argparse.ArgumentParser, *, default_cn: str | None = None) -> None:
    parser.add_argument("--cn", required=default_cn is None, default=default_cn, help="subject common name")
    parser.add_argument("--org", help="subject organization (O)")
    parser.add_argument("--ou", help="subject organizational unit (OU)")
    parser.add_argument("--country", help="subject country (C), two letters")


def _add_output_options(parser: argparse.ArgumentParser, default_name: str | None) -> None:
    parser.add_argument("--out-dir", default=".", help="directory for the PEM files (default: current)")
    parser.add_argument("--name", default=default_name, help="file name stem")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    parser.add_argument(
        "--key-password-file",
        help="encrypt new private keys (PKCS#8) with the first line of this file; SM2 keys use "
        "PBKDF2-HMAC-SM3 + SM4-CBC as GmSSL does, RSA/ECDSA keys OpenSSL's best available scheme",
    )


def _add_issuer_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ca-cert", required=True, help="issuing CA certificate (PEM)")
    parser.add_argument("--ca-key", required=True, help="issuing CA private key (PEM)")
    parser.add_argument("--ca-key-password-file", help="file whose first line decrypts --ca-key")
    parser.add_argument("--ca-chain", help="PEM with the CA's own intermediates, copied into NAME_chain.pem")


def _add_san_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dns",
        action="append",
        default=[],
        help="subjectAltName DNS name (repeatable, order kept; GmSSL 3.x clients match only the first one,"
        " exactly, without wildcards)",
    )
    parser.add_argument(
        "--ip",
        action="append",
        default=[],
        help="subjectAltName IP address (repeatable; GmSSL 3.x clients never match IP addresses)",
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``pki`` and its subcommands to the ``smgate`` parser."""
    pki = subparsers.add_parser(
        "pki", help="create CAs and certificates (SM2/TLCP, RSA, ECDSA), show, verify"
    )
    commands = pki.add_subparsers(dest="pki_command", required=True)

    ca = commands.add_parser("ca", help="create a self-signed root CA")
    ca.add_argument("--type", choices=("sm2", "rsa", "ecdsa"), default="sm2", help="key family (default sm2)")
    _add_subject_options(ca)
    ca.add_argument(
        "--days", type=_days, default=DEFAULT_CA_DAYS, help=f"validity (default {DEFAULT_CA_DAYS})"
    )
    ca.add_argument("--path-len", type=int, default=None, help="basicConstraints pathLenConstraint")
    _add_output_options(ca, "root")
    ca.set_defaults(func=_guarded(_cmd_ca))

    intermediate = commands.add_parser("intermediate", help="create an intermediate CA signed by a CA")
    _add_issuer_options(intermediate)
    _add_subject_options(intermediate)
    intermediate.add_argument(
        "--days",
        type=_days,
        default=DEFAULT_INTERMEDIATE_DAYS,
        help=f"validity (default {DEFAULT_INTERMEDIATE_DAYS})",
    )
    intermediate.add_argument("--path-len", type=int, default=0, help="pathLenConstraint (default 0)")
    _add_output_options(intermediate, "intermediate")
    intermediate.set_defaults(func=_guarded(_cmd_intermediate))

    tlcp = commands.add_parser("issue-tlcp", help="issue a TLCP signing + encryption certificate pair (SM2)")
    tlcp.add_argument("--role", choices=("server", "client"), required=True)
    _add_issuer_options(tlcp)
    _add_subject_options(tlcp)
    _add_san_options(tlcp)
    tlcp.add_argument(
        "--days", type=_days, default=DEFAULT_LEAF_DAYS, help=f"validity (default {DEFAULT_LEAF_DAYS})"
    )
    _add_output_options(tlcp, None)
    tlcp.set_defaults(func=_guarded(_cmd_issue_tlcp))

    issue = commands.add_parser(
        "issue", help="issue an RSA-2048 or ECDSA P-256 TLS certificate, or an SM2 audit signing certificate"
    )
    issue.add_argument(
        "--type", choices=("rsa", "ecdsa"), help="key family (required unless --audit-signing)"
    )
    issue.add_argument("--role", choices=("server", "client"), help="required unless --audit-signing")
    issue.add_argument(
        "--audit-signing",
        action="store_true",
        help="an SM2 certificate for the audit trail's signed checkpoints (digitalSignature+nonRepudiation,"
        " no TLS purpose) from an SM2 CA -> NAME.pem/NAME.key for audit.signing_cert/signing_key",
    )
    _add_issuer_options(issue)
    _add_subject_options(issue)
    _add_san_options(issue)
    issue.add_argument(
        "--days", type=_days, default=DEFAULT_LEAF_DAYS, help=f"validity (default {DEFAULT_LEAF_DAYS})"
    )
    _add_output_options(issue, None)
    issue.set_defaults(func=_guarded(_cmd_issue))

    csr = commands.add_parser(
        "csr",
        help="make SM2 sign/enc keys and a PKCS#10 request for each (a TLCP pair for an outside CA to issue)",
    )
    csr.add_argument("--role", choices=("server", "client"), required=True)
    _add_subject_options(csr)
    _add_san_options(csr)
    _add_output_options(csr, None)
    csr.set_defaults(func=_guarded(_cmd_csr))

    show = commands.add_parser("show", help="print a summary of each certificate in the files")
    show.add_argument("files", nargs="+", metavar="FILE")
    show.add_argument("--at", type=_timestamp, help="ISO time for the validity status (default: now)")
    show.set_defaults(func=_guarded(_cmd_show))

    verify = commands.add_parser("verify", help="validate a certificate chain against a CA bundle")
    verify.add_argument("file", metavar="FILE", help="leaf certificate, optionally followed by intermediates")
    verify.add_argument("--ca-file", required=True, help="trust anchors (PEM bundle)")
    verify.add_argument("--untrusted", help="PEM with more intermediate certificates")
    verify.add_argument(
        "--role",
        choices=sorted(_ROLES),
        default="server-sign",
        help="leaf role; server/client mean the signing role for SM2 (default server-sign)",
    )
    verify.add_argument("--hostname", help="expected DNS name or IP address")
    verify.add_argument("--at", type=_timestamp, help="ISO verification time (default: now)")
    verify.set_defaults(func=_guarded(_cmd_verify))

    demo = commands.add_parser("demo", help="create (or keep) the demo PKI used by `make run`")
    demo.add_argument("--state", required=True, help="state directory; files go to STATE/pki")
    demo.set_defaults(func=_guarded(_cmd_demo))
