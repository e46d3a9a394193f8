"""``smgate demo``: a working gateway in one command (what ``make run`` starts).

Ensures the demo PKI (``certs.demo.ensure_demo_pki``), writes ``<state>/gateway.yaml`` from the
embedded template below the first time (or with ``--reset``), starts the built-in upstreams (HTTP
echo and TCP echo on loopback) and serves the file: one listener speaking TLCP, TLS 1.3 and TLS 1.2
on one port (client certificates optional, ``/mtls`` requires one), a TCP proxy listener, admin on
loopback, audit to ``<state>/audit``.

The file is the user's once written: later starts serve it as it is, and the built-in upstreams
listen where its ``echo`` and ``tcp_echo`` clusters point (fixed ports, chosen when the file was
written), so edits survive restarts. ``SIGHUP`` or ``POST /reload`` re-reads it while the demo runs.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from audit.keys import write_audit_key
from certs.demo import DemoPKI, ensure_demo_pki
from gateway.audit_setup import build_audit
from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.echo import EchoService, start_tcp_echo
from gateway.server import Gateway


def smgate_command() -> str:
    """How to run this very ``smgate`` from a shell: ``smgate`` only when that is what PATH finds
    (``make run`` starts ``.venv/bin/smgate``, which usually is not on PATH)."""
    argv0 = Path(sys.argv[0]).absolute()
    on_path = shutil.which("smgate")
    if argv0.name == "smgate" and argv0.is_file():
        return "smgate" if on_path and Path(on_path).absolute() == argv0 else shlex.quote(str(argv0))
    beside = Path(sys.executable).parent / "smgate"
    if beside.is_file():
        return shlex.quote(str(beside))
    return f"{shlex.quote(sys.executable)} -m gateway.cli"


def running_loop_name() -> str:
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"


DEMO_TEMPLATE = Template("""\
# smgate demo configuration, written once by `smgate demo`: your edits are kept across restarts
# (`smgate demo --reset` writes it afresh). Edit, then `kill -HUP` or POST /reload to apply live.
# The demo's built-in upstreams listen where the `echo` and `tcp_echo` clusters point.
listeners:
  - name: main
    address: 127.0.0.1
    port: $port
    handshake_timeout: 5
    tls:
      protocols: [tlcp, tls1.3, tls1.2]
      client_auth: optional
      trust_anchors: $std_bundle
      sm2_trust_anchors: $sm2_ca
      certificates:
        - name: default
          sign_cert: $sm2_sign_cert
          sign_key: $sm2_sign_key
          enc_cert: $sm2_enc_cert
          enc_key: $sm2_enc_key
          chain: $sm2_chain
          tls_certificates:
            - {cert_chain: $rsa_cert, private_key: $rsa_key}
            - {cert_chain: $ecdsa_cert, private_key: $ecdsa_key}
    filter_chains:
      - name: http
        filters:
          - name: http_connection_manager
            route_config: demo
            identity_headers: {enabled: true}
  - name: tcp
    address: 127.0.0.1
    port: $tcp_port
    tls:
      protocols: [tlcp, tls1.3, tls1.2, plain]
      certificates:
        - name: default
          sign_cert: $sm2_sign_cert
          sign_key: $sm2_sign_key
          enc_cert: $sm2_enc_cert
          enc_key: $sm2_enc_key
          chain: $sm2_chain
          tls_certificates:
            - {cert_chain: $rsa_cert, private_key: $rsa_key}
    filter_chains:
      - name: tcp
        filters:
          - {name: tcp_proxy, cluster: tcp_echo, idle_timeout: 60}
route_configs:
  - name: demo
    virtual_hosts:
      - name: demo
        domains: ["*"]
        routes:
          - name: gateway-health
            match: {path: /gateway/health}
            direct_response: {status: 200, body: "ok\\n"}
          - name: mtls-only
            match: {prefix: /mtls}
            access:
              allow: [{authenticated: true}]
            route: {cluster: echo, timeout: 10}
          - name: echo
            match: {prefix: /}
            route:
              cluster: echo
              timeout: 10
              retry_policy: {num_retries: 2, retry_on: [connect-failure, "502", "503"]}
clusters:
  - name: echo
    lb_policy: round_robin
    endpoints: [{address: 127.0.0.1, port: $echo_port}]
    health_checks: {type: http, path: /healthz, interval: 5, timeout: 1}
  - name: tcp_echo
    endpoints: [{address: 127.0.0.1, port: $tcp_echo_port}]
admin:
  address: 127.0.0.1
  port: $admin_port
audit:
  key_file: $audit_key
  signing_key: $audit_sign_key
  signing_cert: $audit_sign_cert
  sinks:
    - {type: file, directory: $audit_dir}
  checkpoint: {every_records: 200, every_seconds: 10}
""")


def standard_bundle(pki: DemoPKI, state: Path) -> Path:
    """One PEM with the RSA and ECDSA demo CAs (client certificates of either kind verify)."""
    bundle = state / "standard_ca_bundle.pem"
    data = pki.rsa.ca.cert.read_bytes() + pki.ecdsa.ca.cert.read_bytes()
    if not bundle.exists() or bundle.read_bytes() != data:
        bundle.write_bytes(data)
    return bundle


def render_demo_config(
    pki: DemoPKI,
    state: Path,
    *,
    port: int,
    tcp_port: int,
    admin_port: int,
    echo_port: int,
    tcp_echo_port: int,
) -> str:
    audit_key = state / "audit" / "chain.key"
    audit_key.parent.mkdir(parents=True, exist_ok=True)
    if not audit_key.exists():
        write_audit_key(audit_key)
    return DEMO_TEMPLATE.substitute(
        port=port,
        tcp_port=tcp_port,
        admin_port=admin_port,
        echo_port=echo_port,
        tcp_echo_port=tcp_echo_port,
        std_bundle=standard_bundle(pki, state),
        sm2_ca=pki.sm2.ca_bundle,
        sm2_sign_cert=pki.sm2.server_sign.cert,
        sm2_sign_key=pki.sm2.server_sign.key,
        sm2_enc_cert=pki.sm2.server_enc.cert,
        sm2_enc_key=pki.sm2.server_enc.key,
        sm2_chain=pki.sm2.chain,
        rsa_cert=pki.rsa.server.cert,
        rsa_key=pki.rsa.server.key,
        ecdsa_cert=pki.ecdsa.server.cert,
        ecdsa_key=pki.ecdsa.server.key,
        audit_key=audit_key,
        audit_sign_key=pki.audit.key,
        audit_sign_cert=pki.audit.cert,
        audit_dir=state / "audit" / "log",
    )


def try_commands(pki: DemoPKI, state: Path, gateway: Gateway) -> str:
    port = gateway.listener_port("main")
    tcp_port = gateway.listener_port("tcp")
    admin = gateway.admin.port if gateway.admin else 0
    sm2 = pki.sm2
    exe = smgate_command()
    ca = state / "standard_ca_bundle.pem"

    def q(path: Path) -> str:
        return shlex.quote(str(path))

    return f"""
smgate demo is running on {running_loop_name()} (state in {state}); press Ctrl-C to stop.

TLS 1.3 / 1.2 with curl (RSA and ECDSA server certificates; the bundle holds both CAs):
  curl --cacert {q(ca)} https://localhost:{port}/hello
  curl --cacert {q(ca)} --tlsv1.2 --tls-max 1.2 https://localhost:{port}/hello
  curl --cacert {q(ca)} --cert {q(pki.rsa.client.cert)} --key {q(pki.rsa.client.key)} https://localhost:{port}/mtls

openssl s_client:
  openssl s_client -connect 127.0.0.1:{port} -servername localhost -CAfile {q(ca)} -tls1_3 -brief </dev/null

TLCP (GB/T 38636) with the smgate client, on the same port:
  {exe} client 127.0.0.1 {port} --protocol tlcp --servername localhost --cafile {q(sm2.ca_bundle)} --get /hello
  {exe} client 127.0.0.1 {port} --protocol tlcp --servername localhost --cafile {q(sm2.ca_bundle)} \\
      --cert {q(sm2.client_sign.cert)} --key {q(sm2.client_sign.key)} \\
      --enc-cert {q(sm2.client_enc.cert)} --enc-key {q(sm2.client_enc.key)} --chain {q(sm2.chain)} --get /mtls

TCP proxy to a TCP echo (plain, TLS or TLCP on port {tcp_port}):
  {exe} client 127.0.0.1 {tcp_port} --protocol plain --send 'hello over tcp'
  {exe} client 127.0.0.1 {tcp_port} --protocol tlcp --servername localhost --cafile {q(sm2.ca_bundle)} --send hi

Admin (loopback):
  curl http://127.0.0.1:{admin}/ready
  curl http://127.0.0.1:{admin}/metrics
  curl http://127.0.0.1:{admin}/certs
  curl -X POST http://127.0.0.1:{admin}/reload      # re-reads {state / "gateway.yaml"}

Audit trail:
  {exe} audit verify --live --key {q(state / "audit" / "chain.key")} --cert {q(pki.audit.cert)} {q(state / "audit" / "log")}
"""


#: Where the demo's built-in upstreams listen unless told otherwise (written into the config).
DEFAULT_ECHO_PORT = 8480
DEFAULT_TCP_ECHO_PORT = 8481


@dataclass(frozen=True)
class DemoPorts:
    """Ports for a config being written; 0 means any free port."""

    port: int = 8443
    tcp_port: int = 8444
    admin_port: int = 9901
    echo_port: int = DEFAULT_ECHO_PORT
    tcp_echo_port: int = DEFAULT_TCP_ECHO_PORT


class DemoError(Exception):
    """Why the demo cannot start (one line for the user)."""


def upstream_port(config: GatewayConfig, cluster_name: str) -> int | None:
    """The loopback port a cluster of the user's config sends to, if the demo should serve it."""
    cluster = next((c for c in config.clusters if c.name == cluster_name), None)
    if cluster is None or len(cluster.endpoints) != 1:
        return None
    endpoint = cluster.endpoints[0]
    return endpoint.port if endpoint.address in ("127.0.0.1", "localhost") else None


@dataclass
class Upstreams:
    """The demo's built-in HTTP echo and TCP echo (either may be absent from an edited config)."""

    echo: EchoService | None = None
    tcp_echo: asyncio.Server | None = None

    @classmethod
    async def start(cls, echo_port: int | None, tcp_echo_port: int | None, source: str) -> Upstreams:
        """Start the upstreams whose port is given (``source`` says where the ports came from)."""
        upstreams = cls()
        which, port = "HTTP echo", echo_port
        try:
            if echo_port is not None:
                upstreams.echo = await EchoService(name="demo-echo").start(port=echo_port)
            which, port = "TCP echo", tcp_echo_port
            if tcp_echo_port is not None:
                upstreams.tcp_echo = await start_tcp_echo(port=tcp_echo_port)
        except OSError as exc:
            await upstreams.close()
            raise DemoError(
                f"cannot start the {which} upstream on 127.0.0.1:{port} ({source}): {exc.strerror}"
            ) from None
        return upstreams

    @property
    def ports(self) -> tuple[int, int]:
        tcp = self.tcp_echo.sockets[0].getsockname()[1] if self.tcp_echo is not None else 0
        return (self.echo.port if self.echo is not None else 0), tcp

    async def close(self) -> None:
        if self.echo is not None:
            await self.echo.close()
        if self.tcp_echo is not None:
            self.tcp_echo.close()


async def prepare_config(
    pki: DemoPKI, state: Path, ports: DemoPorts, *, reset: bool
) -> tuple[GatewayConfig, Upstreams]:
    """Write the config if it is missing (or ``reset``), otherwise keep the user's; load it and start
    the upstreams it names."""
    config_path = state / "gateway.yaml"
    if reset or not config_path.exists():
        upstreams = await Upstreams.start(ports.echo_port, ports.tcp_echo_port, "--echo-port/--tcp-echo-port")
        echo_port, tcp_echo_port = upstreams.ports
        rendered = render_demo_config(
            pki,
            state,
            port=ports.port,
            tcp_port=ports.tcp_port,
            admin_port=ports.admin_port,
            echo_port=echo_port,
            tcp_echo_port=tcp_echo_port,
        )
        config_path.write_text(rendered)
        try:
            return load_config(config_path), upstreams
        except ConfigError:
            await upstreams.close()
            raise
    config = load_config(config_path)
    source = f"named in {config_path}"
    upstreams = await Upstreams.start(
        upstream_port(config, "echo"), upstream_port(config, "tcp_echo"), source
    )
    return config, upstreams


async def run_demo(
    state: Path, ports: DemoPorts, *, reset: bool = False, quiet: bool = False, ports_given: bool = False
) -> int:
    state = state.resolve()
    state.mkdir(parents=True, exist_ok=True)
    pki = await asyncio.to_thread(ensure_demo_pki, state)
    config_path = state / "gateway.yaml"
    if ports_given and config_path.exists() and not reset:
        print(
            f"smgate demo: keeping {config_path} and its ports (your edits); --reset writes it afresh",
            file=sys.stderr,
        )
    try:
        config, upstreams = await prepare_config(pki, state, ports, reset=reset)
    except ConfigError as exc:
        for error in exc.errors:
            print(f"smgate demo: {config_path}: {error}", file=sys.stderr)
        return 1
    except DemoError as exc:
        print(f"smgate demo: {exc}", file=sys.stderr)
        return 1
    try:
        gateway = Gateway(config, config_path=config_path, audit=build_audit(config))
        await gateway.start()
    except (ConfigError, OSError) as exc:
        print(f"smgate demo: cannot start: {exc}", file=sys.stderr)
        await upstreams.close()
        return 1
    gateway.install_signal_handlers()
    print(walkthrough(pki, state, gateway) if not quiet else ready_line(gateway), flush=True)
    await gateway.wait_stopped()
    await upstreams.close()
    return 0


def ready_line(gateway: Gateway) -> str:
    listeners = " ".join(f"{name}={listener.port}" for name, listener in gateway.listeners.items())
    admin = gateway.admin.port if gateway.admin else 0
    return f"smgate demo ready {listeners} admin={admin} loop={running_loop_name()}"


def walkthrough(pki: DemoPKI, state: Path, gateway: Gateway) -> str:
    """The try-it commands, or (for an edited config without the demo's listeners) the ready line."""
    if {"main", "tcp"} <= gateway.listeners.keys():
        return try_commands(pki, state, gateway)
    return ready_line(gateway) + f" (edited config {state / 'gateway.yaml'})"


def _cmd_demo(args: argparse.Namespace) -> int:
    from gateway.cli import install_event_loop_policy

    install_event_loop_policy(args.uvloop)
    given = {
        name: value
        for name, value in vars(args).items()
        if name in DemoPorts.__dataclass_fields__ and value is not None
    }
    return asyncio.run(
        run_demo(
            Path(args.state),
            DemoPorts(**given),
            reset=args.reset,
            quiet=args.quiet,
            ports_given=any(name not in ("echo_port", "tcp_echo_port") for name in given),
        )
    )


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="demo PKI + built-in upstream + gateway on an embedded config")
    p.add_argument("--state", default=".smgate", help="directory for the PKI, config and audit log")
    p.add_argument("--port", type=int, help="TLCP/TLS listener port (default 8443; 0: any free port)")
    p.add_argument("--tcp-port", type=int, help="TCP proxy listener port (default 8444; 0: any)")
    p.add_argument("--admin-port", type=int, help="admin port on 127.0.0.1 (default 9901; 0: any)")
    p.add_argument(
        "--echo-port",
        type=int,
        help=f"built-in HTTP echo upstream port (default {DEFAULT_ECHO_PORT}; 0: any)",
    )
    p.add_argument(
        "--tcp-echo-port",
        type=int,
        help=f"built-in TCP echo upstream port (default {DEFAULT_TCP_ECHO_PORT}; 0: any)",
    )
    p.add_argument(
        "--reset",
        action="store_true",
        help="write STATE/gateway.yaml afresh (otherwise an existing one is served as the user left it; "
        "the port options apply only when it is written)",
    )
    p.add_argument("--quiet", action="store_true", help="print one ready line instead of the walkthrough")
    from gateway.cli import add_loop_option

    add_loop_option(p)
    p.set_defaults(func=_cmd_demo)
