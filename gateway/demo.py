"""``smgate demo``: a working gateway in one command (what ``make run`` starts).

Ensures the demo PKI (``certs.demo.ensure_demo_pki``), starts the built-in upstreams (HTTP echo and
TCP echo on loopback), writes ``<state>/gateway.yaml`` from the embedded template below and serves
it: one listener speaking TLCP, TLS 1.3 and TLS 1.2 on one port (client certificates optional,
``/mtls`` requires one), a TCP proxy listener, admin on loopback, audit to ``<state>/audit``.
``SIGHUP`` or ``POST /reload`` re-reads the written file, so it can be edited while the demo runs.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import shutil
import sys
from pathlib import Path
from string import Template
from typing import Any

from audit.keys import write_audit_key
from certs.demo import DemoPKI, ensure_demo_pki
from gateway.audit_setup import build_audit
from gateway.config import ConfigError, load_config
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
# smgate demo configuration (written by `smgate demo`; edit and `kill -HUP` or POST /reload)
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


async def run_demo(state: Path, *, port: int, tcp_port: int, admin_port: int, quiet: bool = False) -> int:
    state = state.resolve()
    state.mkdir(parents=True, exist_ok=True)
    pki = await asyncio.to_thread(ensure_demo_pki, state)
    echo = await EchoService(name="demo-echo").start()
    tcp_echo = await start_tcp_echo()
    config_path = state / "gateway.yaml"
    config_path.write_text(
        render_demo_config(
            pki,
            state,
            port=port,
            tcp_port=tcp_port,
            admin_port=admin_port,
            echo_port=echo.port,
            tcp_echo_port=tcp_echo.sockets[0].getsockname()[1],
        )
    )
    try:
        config = load_config(config_path)
        gateway = Gateway(config, config_path=config_path, audit=build_audit(config))
        await gateway.start()
    except (ConfigError, OSError) as exc:
        print(f"smgate demo: cannot start: {exc}", file=sys.stderr)
        await echo.close()
        tcp_echo.close()
        return 1
    gateway.install_signal_handlers()
    print(
        try_commands(pki, state, gateway)
        if not quiet
        else f"smgate demo ready main={gateway.listener_port('main')} tcp={gateway.listener_port('tcp')} "
        f"admin={gateway.admin.port if gateway.admin else 0} loop={running_loop_name()}",
        flush=True,
    )
    await gateway.wait_stopped()
    await echo.close()
    tcp_echo.close()
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from gateway.cli import install_event_loop_policy

    install_event_loop_policy(args.uvloop)
    return asyncio.run(
        run_demo(
            Path(args.state),
            port=args.port,
            tcp_port=args.tcp_port,
            admin_port=args.admin_port,
            quiet=args.quiet,
        )
    )


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="demo PKI + built-in upstream + gateway on an embedded config")
    p.add_argument("--state", default=".smgate", help="directory for the PKI, config and audit log")
    p.add_argument("--port", type=int, default=8443, help="TLCP/TLS listener port (0: any free port)")
    p.add_argument("--tcp-port", type=int, default=8444, help="TCP proxy listener port (0: any)")
    p.add_argument("--admin-port", type=int, default=9901, help="admin port on 127.0.0.1 (0: any)")
    p.add_argument("--quiet", action="store_true", help="print one ready line instead of the walkthrough")
    from gateway.cli import add_loop_option

    add_loop_option(p)
    p.set_defaults(func=_cmd_demo)
