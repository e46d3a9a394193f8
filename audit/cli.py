"""``smgate audit ...``: verify, export and keygen. ``register(subparsers)`` is wired in by gateway/cli.py.

``verify PATH...`` finds every chain under the paths (an instance directory holds one per worker,
``worker-<i>/``), verifies each and reports each and the total. It exits 0 only if every chain verifies
and every file found was verified or accounted for; 1 at a bad record (printed as
``file:line: seq N: reason``) or when files were left unverified (``INCOMPLETE``); 2 on usage errors
(no key or certificate, unreadable key).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from audit.export import (
    Selection,
    collect,
    collect_unverified,
    event_types,
    parse_time,
    render_csv,
    render_jsonl,
)
from audit.keys import AuditKeyError, load_audit_key, load_verification_key, write_audit_key
from audit.trail import TrailReport, verify_trail
from audit.verify import VerifyReport
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


def _chain_line(name: str, report: VerifyReport) -> str:
    status = "OK" if report.ok else "FAILED"
    instances = ",".join(report.instances) or "-"
    return (
        f"  {name}: {status}  instance {instances}  files {len(report.files)}  records {report.records}"
        f"  seq {report.first_seq}..{report.last_seq}  time {report.first_ts} .. {report.last_ts}"
        f"  macs verified {report.macs_verified}  checkpoints {report.checkpoints}"
        f"  signatures verified {report.signatures_verified}"
    )


def _print_summary(trail: TrailReport, stream: Any) -> None:
    totals = trail.totals()
    failed = [item for item in trail.chains if not item.report.ok]
    status = trail.status
    if trail.problem is not None:
        status += f": {trail.problem}"
    elif failed:
        status += f": {len(failed)} of {totals['chains']} chains"
    elif trail.unverified:
        status += f": {len(trail.unverified)} files found but not verified"
    print(f"audit verify: {status}", file=stream)
    for item in trail.chains:
        print(_chain_line(item.chain.name, item.report), file=stream)
        report = item.report
        if report.problem is not None:
            print(f"  first bad record: {report.problem}", file=stream)
        for gap in report.declared_gaps:
            print(f"  declared gap: {json.dumps(gap, sort_keys=True)}", file=stream)
        for note in report.notes:
            print(f"  note: {note}", file=stream)
    for stray in trail.unverified:
        print(f"not verified: {stray.path} ({stray.reason})", file=stream)
    for stray in trail.torn:
        print(f"torn-write evidence: {stray.path} (declared by {stray.reason})", file=stream)
    for pending in trail.pending_gaps:
        print(
            f"declared gap, pending: {pending['file']}: lost_count {pending['lost_count']}"
            f" (lost_at_least {pending['lost_at_least']}); written into the chain when that pipeline starts again",
            file=stream,
        )
    print(
        f"total: chains {totals['chains']}  files {totals['files']}  records {totals['records']}"
        f"  macs verified {totals['macs_verified']}  checkpoints {totals['checkpoints']}"
        f"  signatures verified {totals['signatures_verified']}  declared gaps {totals['declared_gaps']}",
        file=stream,
    )
    for warning in trail.warnings():
        print(f"warning: {warning}", file=stream)


def _cmd_verify(args: argparse.Namespace) -> int:
    try:
        key, public_key = _keys(args)
    except AuditKeyError as exc:
        print(f"smgate audit verify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    trail = verify_trail(args.paths, key=key, public_key=public_key, live=args.live, partial=args.partial)
    if args.json:
        print(json.dumps(trail.summary(), indent=2, sort_keys=True))
    else:
        _print_summary(trail, sys.stdout)
    return EXIT_OK if trail.ok else EXIT_BAD


def _cmd_export(args: argparse.Namespace) -> int:
    try:
        key, public_key = _keys(args)
        selection = Selection(
            since=parse_time(args.since) if args.since else None,
            until=parse_time(args.until) if args.until else None,
            events=args.event or (),
        )
    except (AuditKeyError, ValueError) as exc:
        print(f"smgate audit export: {exc}", file=sys.stderr)
        return EXIT_USAGE
    trail, records = collect(
        args.paths, key=key, public_key=public_key, selection=selection, live=args.live, partial=args.partial
    )
    _print_summary(trail, sys.stderr)
    if args.summary is not None:
        args.summary.write_text(
            json.dumps(trail.summary(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
    if not trail.ok and not args.unverified:
        print(
            "smgate audit export: verification failed; nothing exported (--unverified overrides)",
            file=sys.stderr,
        )
        return EXIT_BAD
    if not trail.ok:
        records = collect_unverified(args.paths, selection=selection)
    written = _write_export(args, records, selection)
    if written is None:
        return EXIT_USAGE
    print(f"exported {len(records)} records ({args.format}{written})", file=sys.stderr)
    return EXIT_OK if trail.ok else EXIT_BAD


def _write_export(
    args: argparse.Namespace, records: list[dict[str, Any]], selection: Selection
) -> str | None:
    """Write the export where ``args`` says; a note on where it went, or None on a usage error."""
    if args.format == "jsonl":
        _write_text(args.output, render_jsonl(records))
        return ""
    tables = event_types(records, selection)
    if len(tables) == 1 and (args.output is None or not args.output.is_dir()):
        _write_text(args.output, render_csv(tables[0], records))
        return f", one table: {tables[0]}"
    if args.output is None or (args.output.exists() and not args.output.is_dir()):
        print(
            f"smgate audit export: CSV has one table per event type and these records have {len(tables)}"
            f" ({', '.join(tables)}): give --event TYPE, or -o DIRECTORY for one <event>.csv per type",
            file=sys.stderr,
        )
        return None
    args.output.mkdir(parents=True, exist_ok=True)
    for event_type in tables:
        (args.output / f"{event_type}.csv").write_text(render_csv(event_type, records), encoding="utf-8")
    return f", {len(tables)} tables in {args.output}"


def _write_text(output: Path | None, text: str) -> None:
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


def _cmd_keygen(args: argparse.Namespace) -> int:
    try:
        write_audit_key(args.output)
    except (AuditKeyError, OSError) as exc:
        print(f"smgate audit keygen: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote a new 32-byte HMAC-SM3 audit key to {args.output} (mode 0600)")
    return EXIT_OK


def _add_key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="audit directories (an instance directory: every worker's chain under it) or segment files",
    )
    parser.add_argument("--key", type=Path, help="HMAC chain key file: verifies every record's MAC")
    parser.add_argument(
        "--cert", type=Path, help="audit signing certificate (or SPKI public key): verifies checkpoints"
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help="the trail is still being written: records after the last checkpoint await the next one",
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

    export = commands.add_parser(
        "export", help="export verified records of every worker, merged by time, as JSON lines or CSV"
    )
    _add_key_options(export)
    export.add_argument("--since", help="RFC 3339 start time (inclusive; UTC if no offset)")
    export.add_argument("--until", help="RFC 3339 end time (exclusive)")
    export.add_argument("--event", action="append", metavar="TYPE", help="only this event type (repeatable)")
    export.add_argument(
        "--format", choices=("jsonl", "csv"), default="jsonl", help="csv: one table per event type"
    )
    export.add_argument(
        "--output",
        "-o",
        type=Path,
        help="write here instead of stdout (csv with several event types: a directory, one <event>.csv each)",
    )
    export.add_argument("--summary", type=Path, help="also write the verification summary as JSON here")
    export.add_argument("--unverified", action="store_true", help="export even if verification fails")
    export.set_defaults(func=_cmd_export)

    keygen = commands.add_parser("keygen", help="create a new HMAC-SM3 audit chain key file")
    keygen.add_argument("output", type=Path)
    keygen.set_defaults(func=_cmd_keygen)
