"""``smgate audit ...``: verify, export and keygen. ``register(subparsers)`` is wired in by gateway/cli.py.

``verify`` exits 0 if every given file verifies, 1 at the first bad record (printed as
``file:line: seq N: reason``), 2 on usage errors (no key or certificate, unreadable key).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from audit.export import collect, collect_unverified, parse_time, render
from audit.keys import AuditKeyError, load_audit_key, load_verification_key, write_audit_key
from audit.verify import VerifyReport, verify_logs
from tls.crypto import SM2PublicKey

EXIT_OK = 0
EXIT_BAD = 1
EXIT_USAGE = 2


def _keys(args: argparse.Namespace) -> tuple[bytes | None, SM2PublicKey | None]:
    if args.key is None and args.cert is None:
        raise AuditKeyError("give --key (HMAC chain key) and/or --cert (audit signing certificate)")
    key = load_audit_key(args.key) if args.key is not None else None
    public_key = load_verification_key(args.cert) if args.cert is not None else None
    return key, public_key


def _print_summary(report: VerifyReport, stream: Any) -> None:
    summary = report.summary()
    status = "OK" if report.ok else "FAILED"
    print(f"audit verify: {status}", file=stream)
    if report.problem is not None:
        print(f"first bad record: {report.problem}", file=stream)
    print(
        f"files: {len(summary['files'])}  records: {summary['records']}  seq: {summary['first_seq']}..{summary['last_seq']}"
        f"  time: {summary['first_ts']} .. {summary['last_ts']}",
        file=stream,
    )
    print(
        f"macs verified: {summary['macs_verified']}  checkpoints: {summary['checkpoints']}"
        f"  signatures verified: {summary['signatures_verified']}",
        file=stream,
    )
    for gap in summary["declared_gaps"]:
        print(f"declared gap: {json.dumps(gap, sort_keys=True)}", file=stream)
    for note in summary["notes"]:
        print(f"note: {note}", file=stream)


def _cmd_verify(args: argparse.Namespace) -> int:
    try:
        key, public_key = _keys(args)
    except AuditKeyError as exc:
        print(f"smgate audit verify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    report = verify_logs(args.paths, key=key, public_key=public_key, live=args.live, partial=args.partial)
    if args.json:
        print(json.dumps(report.summary(), indent=2, sort_keys=True))
    else:
        _print_summary(report, sys.stdout)
    return EXIT_OK if report.ok else EXIT_BAD


def _cmd_export(args: argparse.Namespace) -> int:
    try:
        key, public_key = _keys(args)
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
    except (AuditKeyError, ValueError) as exc:
        print(f"smgate audit export: {exc}", file=sys.stderr)
        return EXIT_USAGE
    report, records = collect(
        args.paths,
        key=key,
        public_key=public_key,
        since=since,
        until=until,
        live=args.live,
        partial=args.partial,
    )
    _print_summary(report, sys.stderr)
    if args.summary is not None:
        args.summary.write_text(
            json.dumps(report.summary(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
    if not report.ok and not args.unverified:
        print(
            "smgate audit export: verification failed; nothing exported (--unverified overrides)",
            file=sys.stderr,
        )
        return EXIT_BAD
    if not report.ok:
        records = collect_unverified(args.paths, since=since, until=until)
    text = render(records, args.format)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
    print(f"exported {len(records)} records ({args.format})", file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_BAD


def _cmd_keygen(args: argparse.Namespace) -> int:
    try:
        write_audit_key(args.output)
    except (AuditKeyError, OSError) as exc:
        print(f"smgate audit keygen: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote a new 32-byte HMAC-SM3 audit key to {args.output} (mode 0600)")
    return EXIT_OK


def _add_key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="audit files or directories")
    parser.add_argument("--key", type=Path, help="HMAC chain key file: verifies every record's MAC")
    parser.add_argument(
        "--cert", type=Path, help="audit signing certificate (or SPKI public key): verifies checkpoints"
    )
    parser.add_argument(
        "--live", action="store_true", help="the log is still being written: its end need not be sealed"
    )
    parser.add_argument(
        "--partial",
        action="store_true",
        help="the files are a subset (e.g. one rotated segment): may start after seq 1 and end open",
    )


def register(subparsers: Any) -> None:
    """Add ``audit verify|export|keygen`` to the ``smgate`` parser."""
    audit = subparsers.add_parser("audit", help="verify and export the tamper-evident audit log")
    commands = audit.add_subparsers(dest="audit_command", required=True)

    verify = commands.add_parser("verify", help="check sequence, chain MACs and signed checkpoints")
    _add_key_options(verify)
    verify.add_argument("--json", action="store_true", help="print the summary as JSON")
    verify.set_defaults(func=_cmd_verify)

    export = commands.add_parser("export", help="export verified records as JSON lines or CSV")
    _add_key_options(export)
    export.add_argument("--since", help="RFC 3339 start time (inclusive; UTC if no offset)")
    export.add_argument("--until", help="RFC 3339 end time (exclusive)")
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    export.add_argument("--output", "-o", type=Path, help="write here instead of stdout")
    export.add_argument("--summary", type=Path, help="also write the verification summary as JSON here")
    export.add_argument("--unverified", action="store_true", help="export even if verification fails")
    export.set_defaults(func=_cmd_export)

    keygen = commands.add_parser("keygen", help="create a new HMAC-SM3 audit chain key file")
    keygen.add_argument("output", type=Path)
    keygen.set_defaults(func=_cmd_keygen)
