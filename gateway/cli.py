"""The ``smgate`` command line: one entry point, subcommands registered by each package.

Gateway commands: ``serve`` (run from a YAML config; ``--workers N`` forks N processes sharing the
ports with SO_REUSEPORT), ``config check`` (validate, run :mod:`gateway.preflight`, list every
problem with its key path), ``config schema`` (the config's JSON Schema),
``demo`` (demo PKI + embedded config + built-in upstream) and ``client`` (a small TLCP/TLS client).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from audit.sinks.file import AuditDirectoryBusy
from gateway import __version__, preflight
from gateway.audit_setup import build_audit
from gateway.auditing import NullAudit
from gateway.cluster import ClusterManager
from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.logs.rate_limit import configure_peer_error_log
from gateway.logs.setup import LOG_FORMATS, LOG_LEVELS, announce, configure_logging, get_logger
from gateway.runtime import build_generation
from gateway.server import Gateway
from gateway.session_store import configure_session_store
from gateway.stats import GatewayStats
from gateway.supervisor import run_supervisor, serve_worker_control


def _cmd_version(args: argparse.Namespace) -> int:
    print(f"smgate {__version__}")
    from tls.crypto.cli import describe

    print(describe())
    return 0


def _print_lines(file: str, lines: Sequence[object]) -> None:
    for line in lines:
        print(f"{file}: {line}", file=sys.stderr)


def _cmd_config_check(args: argparse.Namespace) -> int:
    """Validate, run the pre-flight checks, then build (not start) a generation: certificates and keys
    loaded, routes and codecs compiled. Every problem is printed with the file and its key path."""
    try:
        config = load_config(Path(args.file))
    except ConfigError as exc:
        _print_lines(args.file, [*exc.errors, f"{len(exc.errors)} error(s)"])
        return 1
    findings = preflight.check_config(config)
    errors = [str(f) for f in preflight.errors(findings)]
    if not any(f.blocks_loading for f in findings):
        try:
            stats, audit = GatewayStats(), NullAudit()
            clusters, _ = ClusterManager(stats, audit).build(config.clusters)
            build_generation(0, config, clusters, stats, audit)
        except ConfigError as exc:
            errors += preflight.uncovered(exc.errors, findings)
    warnings = preflight.warnings(findings)
    _print_lines(args.file, warnings)
    noted = f", {len(warnings)} warning(s)" if warnings else ""
    if errors or (args.strict and warnings):
        _print_lines(args.file, [*errors, f"{len(errors)} error(s){noted}"])
        return 1
    print(f"{args.file}: ok ({len(config.listeners)} listener(s), {len(config.clusters)} cluster(s){noted})")
    return 0


def config_json_schema() -> dict[str, object]:
    """The JSON Schema (2020-12) of the config document, generated from :class:`GatewayConfig`."""
    schema: dict[str, object] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **GatewayConfig.model_json_schema(),
    }
    schema["title"] = f"smgate {__version__} gateway configuration"
    return schema


def _cmd_config_schema(args: argparse.Namespace) -> int:
    print(json.dumps(config_json_schema(), indent=2, sort_keys=True))
    return 0


def _refused_by_preflight(args: argparse.Namespace, config: GatewayConfig) -> bool:
    """``serve``'s pre-flight, once, in the process the user started (before any worker): the config's
    checks and the host's (ports, audit directory), printed with the file name; True: do not start."""
    findings = preflight.check_config(config) + preflight.check_host(config, workers=args.workers)
    _print_lines(args.config, preflight.warnings(findings))
    refusals = preflight.errors(findings)
    _print_lines(args.config, [*refusals, "not starting"] if refusals else [])
    return bool(refusals)


def install_event_loop_policy(use_uvloop: bool) -> str:
    """Use uvloop when wanted (the default) and importable; returns the loop's name."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            return "asyncio"
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return "uvloop"
    return "asyncio"


def add_loop_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--uvloop",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run on uvloop when it is installed (the `fast` extra; default); --no-uvloop: stock asyncio",
    )


def _log_options(args: argparse.Namespace) -> list[str]:
    """The logging and loop options a supervisor passes on to its workers."""
    options = ["--uvloop" if args.uvloop else "--no-uvloop"]
    if args.log_level is not None:
        options += ["--log-level", args.log_level]
    if args.log_format is not None:
        options += ["--log-format", args.log_format]
    return options


def _configure_logs(args: argparse.Namespace, config: GatewayConfig, static: dict[str, object]) -> None:
    settings = config.logging
    configure_logging(args.log_level or settings.level, args.log_format or settings.format, static=static)
    configure_peer_error_log(get_logger("listener"), settings.peer_error_rate, settings.peer_error_burst)


def _read_key(fd: int | None) -> bytes | None:
    """The supervisor's per-run session key, read from the pipe it handed over (then closed)."""
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as pipe:
        return pipe.read(16)


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        config = load_config(Path(args.config))
    except ConfigError as exc:
        for error in exc.errors:
            print(f"{args.config}: {error}", file=sys.stderr)
        return 1
    if args.worker_index is None and _refused_by_preflight(args, config):
        return 1
    if args.workers > 1 and args.worker_index is None:
        _configure_logs(args, config, {"process": "supervisor"})
        return run_supervisor(Path(args.config), config, args.workers, _log_options(args))
    _configure_logs(args, config, {"worker": args.worker_index} if args.worker_index is not None else {})
    try:
        configure_session_store(
            config.session_store,
            _read_key(args.session_key_fd),
            Path(args.runtime_dir) if args.runtime_dir is not None else None,
        )
    except (OSError, ValueError) as exc:
        print(f"{args.config}: session_store: {exc}", file=sys.stderr)
        return 1
    loop_name = install_event_loop_policy(args.uvloop)
    try:
        audit = build_audit(config, args.worker_index if args.workers > 1 else None)
    except ConfigError as exc:
        for error in exc.errors:
            print(f"{args.config}: {error}", file=sys.stderr)
        return 1

    async def main() -> int:
        gateway = Gateway(
            config,
            config_path=Path(args.config),
            audit=audit,
            reuse_port=args.workers > 1,
            admin_enabled=args.worker_index is None,
        )
        try:
            await gateway.start()
        except (ConfigError, OSError, AuditDirectoryBusy) as exc:
            print(f"smgate: {args.config}: cannot start: {exc}", file=sys.stderr)
            return 1
        if args.runtime_dir is not None:
            gateway.admin = await serve_worker_control(
                gateway, Path(args.runtime_dir), args.worker_index or 0
            )
        gateway.install_signal_handlers()
        # What start-up built (modules, config, certificates, route tables) is never garbage: move it
        # out of the collector's reach, or every full collection re-traverses all of it (a pause of
        # ~100 ms, which h2/gRPC traffic triggered every few seconds: the p99 of requests in flight).
        gc.collect()
        gc.freeze()
        ports = ", ".join(f"{n}={x.port}" for n, x in gateway.listeners.items())
        admin = f" admin=127.0.0.1:{gateway.admin.port}" if gateway.admin and gateway.admin.port else ""
        announce(f"smgate serving pid={os.getpid()} loop={loop_name} listeners: {ports}{admin}")
        await gateway.wait_stopped()
        return 0

    return asyncio.run(main())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smgate", description=__doc__)
    parser.add_argument("--version", action="version", version=f"smgate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    version = sub.add_parser("version", help="print the version and crypto backend")
    version.set_defaults(func=_cmd_version)

    serve = sub.add_parser("serve", help="run the gateway from a YAML config")
    serve.add_argument("config")
    serve.add_argument("--workers", type=int, default=1, help="processes sharing the ports (SO_REUSEPORT)")
    serve.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    serve.add_argument("--runtime-dir", default=None, help=argparse.SUPPRESS)
    serve.add_argument("--session-key-fd", type=int, default=None, help=argparse.SUPPRESS)
    serve.add_argument("--log-level", choices=LOG_LEVELS, default=None, help="default: logging.level (info)")
    serve.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=None,
        help="console (for a terminal), json (one object per line), auto (default: console on a tty)",
    )
    add_loop_option(serve)
    serve.set_defaults(func=_cmd_serve)

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate a config file, listing every error with its path")
    check.add_argument("file")
    check.add_argument("--strict", action="store_true", help="fail on warnings too")
    check.set_defaults(func=_cmd_config_check)
    schema = config_sub.add_parser("schema", help="print the JSON Schema of the config file (for editors)")
    schema.set_defaults(func=_cmd_config_schema)

    from audit.cli import register as register_audit
    from certs.cli import register as register_certs
    from gateway.client import register as register_client
    from gateway.demo import register as register_demo
    from tls.crypto.cli import register as register_crypto

    register_client(sub)
    register_demo(sub)
    register_crypto(sub)
    register_certs(sub)
    register_audit(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
