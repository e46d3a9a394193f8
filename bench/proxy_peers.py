"""The servers bench/proxy.py compares, each configured the way its users would run it for this job.

* the upstream: Debian nginx, one worker on the load core, answering every request with the same
  20-byte body (plain HTTP for the proxies; also TLS 1.3 for the "direct" TLS rows);
* nginx (one worker) and HAProxy (one thread) as reverse proxies on the proxy core, with upstream
  keep-alive, access logs off;
* ``smgate serve`` on the proxy core, driven only through its public surface: a YAML config that uses
  the keys README's Configuration section documents, checked with ``smgate config check`` first, the
  demo PKI from ``smgate pki demo`` and the audit chain key from ``smgate audit keygen``;
* the BabaSSL 8.3.2 TLCP server of tests/interop/babassl.py (tongsuopy wheel) as the TLCP peer.

The proxies listen on three ports at most: ``http`` (plain HTTP/1.1), ``tls`` (TLS 1.3 only) and
``tlcp``; every one forwards to the upstream's plain HTTP port.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bench.proxy_procs import Fleet, Server, StartError, free_port

REPO = Path(__file__).resolve().parents[1]
PROXY_CPU = 0
LOAD_CPU = 1
#: The upstream's response body: 20 bytes.
BODY = "0123456789abcdefghi\n"
#: BabaSSL's name and smgate's name of the TLCP suite the handshake rows use (ECC: no client auth).
TLCP_SUITE = ("ECC-SM2-SM4-GCM-SM3", "ECC_SM4_GCM_SM3")


def smgate_command(*args: str) -> list[str]:
    """``smgate ARGS`` as this checkout runs it (no need for the console script on PATH)."""
    return [sys.executable, "-m", "gateway.cli", *args]


def child_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    return env


@dataclass(frozen=True)
class Pki:
    """The files of ``smgate pki demo``: an RSA-2048 server certificate (nginx, HAProxy and smgate
    present the same one) and the SM2 sign/enc pair (smgate and BabaSSL present the same two)."""

    root: Path

    @classmethod
    def create(cls, state: Path) -> Pki:
        run_checked(smgate_command("pki", "demo", "--state", str(state)), "smgate pki demo")
        return cls(state / "pki")

    def tls_cert(self) -> Path:
        return self.root / "rsa" / "server.pem"

    def tls_key(self) -> Path:
        return self.root / "rsa" / "server.key"

    def sm2(self, name: str) -> Path:
        """``sign_cert``, ``sign_key``, ``enc_cert`` or ``enc_key`` of the server pair."""
        kind, part = name.split("_")
        return self.root / "sm2" / f"server_{kind}.{'pem' if part == 'cert' else 'key'}"

    def audit_signing(self) -> tuple[Path, Path]:
        return self.root / "audit" / "audit_sign.key", self.root / "audit" / "audit_sign.pem"


def run_checked(argv: list[str], what: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=child_env(), timeout=120)
    if result.returncode != 0:
        raise StartError(f"{what} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result.stdout


@dataclass
class Peer:
    """A server under test: its label in the table, its ports, and its process tree (None: direct)."""

    label: str
    ports: dict[str, int]
    server: Server | None = None
    notes: list[str] = field(default_factory=list)


# -- nginx --------------------------------------------------------------------------------------------

_NGINX_MAIN = """\
worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
{body}
}}
"""


def _nginx_tls(pki: Pki) -> str:
    return f"ssl_certificate {pki.tls_cert()}; ssl_certificate_key {pki.tls_key()}; ssl_protocols TLSv1.3;"


def nginx_upstream_conf(workdir: Path, pki: Pki, http: int, tls: int) -> str:
    location = f'location / {{ default_type text/plain; return 200 "{BODY.strip()}\\n"; }}'
    body = f"""\
    server {{ listen 127.0.0.1:{http} reuseport; {location} }}
    server {{ listen 127.0.0.1:{tls} ssl reuseport; {_nginx_tls(pki)} {location} }}"""
    return _NGINX_MAIN.format(workdir=workdir, body=body)


def nginx_proxy_conf(workdir: Path, pki: Pki, http: int, tls: int, upstream: int) -> str:
    location = (
        'location / { proxy_pass http://upstream; proxy_http_version 1.1; proxy_set_header Connection ""; }'
    )
    body = f"""\
    upstream upstream {{ server 127.0.0.1:{upstream}; keepalive 64; keepalive_requests 1000000; }}
    server {{ listen 127.0.0.1:{http}; {location} }}
    server {{ listen 127.0.0.1:{tls} ssl; {_nginx_tls(pki)} {location} }}"""
    return _NGINX_MAIN.format(workdir=workdir, body=body)


def start_nginx(fleet: Fleet, name: str, conf: str, *, cpu: int, ports: list[int]) -> Server:
    workdir = fleet.workdir / name
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "nginx.conf"
    path.write_text(conf)
    nginx = shutil.which("nginx")
    assert nginx is not None
    return fleet.start(name, [nginx, "-p", str(workdir), "-c", str(path)], cpu=cpu, ports=ports)


# -- HAProxy -------------------------------------------------------------------------------------------


def haproxy_conf(pki: Pki, bundle: Path, http: int, tls: int, upstream: int) -> str:
    return f"""\
global
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend plain
    bind 127.0.0.1:{http}
    default_backend upstream
frontend tls
    bind 127.0.0.1:{tls} ssl crt {bundle} ssl-min-ver TLSv1.3 alpn http/1.1
    default_backend upstream
backend upstream
    http-reuse always
    server upstream1 127.0.0.1:{upstream}
"""


def start_haproxy(fleet: Fleet, pki: Pki, http: int, tls: int, upstream: int) -> Server:
    workdir = fleet.workdir / "haproxy"
    workdir.mkdir(parents=True, exist_ok=True)
    bundle = workdir / "server.pem"  # HAProxy wants certificate and key in one file
    bundle.write_bytes(pki.tls_cert().read_bytes() + pki.tls_key().read_bytes())
    path = workdir / "haproxy.cfg"
    path.write_text(haproxy_conf(pki, bundle, http, tls, upstream))
    haproxy = shutil.which("haproxy")
    assert haproxy is not None
    return fleet.start("haproxy", [haproxy, "-db", "-f", str(path)], cpu=PROXY_CPU, ports=[http, tls])


# -- smgate --------------------------------------------------------------------------------------------


def _http_filter_chain() -> list[dict[str, object]]:
    return [{"filters": [{"name": "http_connection_manager", "route_config": "bench"}]}]


def smgate_config(pki: Pki, ports: dict[str, int], upstream: int, audit: Path | None) -> dict[str, object]:
    """The gateway's YAML: one listener per transport, all routing every request to the upstream.

    The TLCP certificate set has no ``chain``, so smgate sends the same two certificates BabaSSL does.
    """
    config: dict[str, object] = {
        "listeners": [
            {
                "name": "plain",
                "address": "127.0.0.1",
                "port": ports["http"],
                "tls": {"protocols": ["plain"]},
                "filter_chains": _http_filter_chain(),
            },
            {
                "name": "tls",
                "address": "127.0.0.1",
                "port": ports["tls"],
                "tls": {
                    "protocols": ["tls1.3"],
                    "certificates": [
                        {
                            "name": "default",
                            "tls_certificates": [
                                {"cert_chain": str(pki.tls_cert()), "private_key": str(pki.tls_key())}
                            ],
                        }
                    ],
                },
                "filter_chains": _http_filter_chain(),
            },
            {
                "name": "tlcp",
                "address": "127.0.0.1",
                "port": ports["tlcp"],
                "tls": {
                    "protocols": ["tlcp"],
                    "cipher_suites": {"tlcp": [TLCP_SUITE[1]]},
                    "certificates": [
                        {
                            "name": "default",
                            **{
                                key: str(pki.sm2(key))
                                for key in ("sign_cert", "sign_key", "enc_cert", "enc_key")
                            },
                        }
                    ],
                },
                "filter_chains": _http_filter_chain(),
            },
        ],
        "route_configs": [
            {
                "name": "bench",
                "virtual_hosts": [
                    {
                        "name": "all",
                        "domains": ["*"],
                        "routes": [
                            {"name": "all", "match": {"prefix": "/"}, "route": {"cluster": "upstream"}}
                        ],
                    }
                ],
            }
        ],
        "clusters": [{"name": "upstream", "endpoints": [{"address": "127.0.0.1", "port": upstream}]}],
        "admin": None,
        "drain_timeout": 5,
    }
    if audit is not None:
        signing_key, signing_cert = pki.audit_signing()
        config["audit"] = {
            "key_file": str(audit / "chain.key"),
            "signing_key": str(signing_key),
            "signing_cert": str(signing_cert),
            "sinks": [{"type": "file", "directory": str(audit / "log")}],
        }
    return config


@dataclass(frozen=True)
class SmgateVariant:
    """How one smgate instance runs: audit on (file sink, HMAC-SM3 chain, SM2-signed checkpoints) or
    off, and how many ``--workers``. ``key`` names its peer (and its work directory)."""

    key: str
    audit: bool = False
    workers: int = 1


def start_smgate(
    fleet: Fleet, pki: Pki, variant: SmgateVariant, ports: dict[str, int], upstream: int
) -> Server:
    name = variant.key
    workdir = fleet.workdir / name
    workdir.mkdir(parents=True, exist_ok=True)
    audit = None
    if variant.audit:
        audit = workdir / "audit"
        audit.mkdir(exist_ok=True)
        run_checked(smgate_command("audit", "keygen", str(audit / "chain.key")), "smgate audit keygen")
    path = workdir / "gateway.yaml"
    path.write_text(yaml.safe_dump(smgate_config(pki, ports, upstream, audit), sort_keys=False))
    run_checked(smgate_command("config", "check", str(path)), f"smgate config check {path}")
    argv = smgate_command("serve", str(path))
    if variant.workers > 1:
        argv += ["--workers", str(variant.workers)]

    def workers_up(server: Server) -> bool:
        # `--workers N`: the ports answer once one worker listens; wait for all N to say so.
        return server.log.read_text(errors="replace").count("serving") >= variant.workers

    return fleet.start(
        name,
        argv,
        cpu=PROXY_CPU,
        ports=list(ports.values()),
        cwd=REPO,
        env=child_env(),
        ready=workers_up if variant.workers > 1 else None,
    )


def verify_audit(server: Server, pki: Pki) -> dict[str, object]:
    """After smgate has stopped: ``smgate audit verify --json`` over its trail (chain and checkpoints)."""
    audit = server.log.parent / server.name / "audit"
    _, signing_cert = pki.audit_signing()
    argv = smgate_command("audit", "verify", "--json", "--key", str(audit / "chain.key"))
    argv += ["--cert", str(signing_cert), str(audit / "log")]
    result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=child_env(), timeout=600)
    try:
        summary: dict[str, object] = json.loads(result.stdout)
    except json.JSONDecodeError:
        summary = {"output": (result.stdout + result.stderr).strip()[-400:]}
    summary["exit_code"] = result.returncode
    return summary


# -- BabaSSL -------------------------------------------------------------------------------------------


def babassl_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tongsuopy") is not None


def start_babassl_server(fleet: Fleet, pki: Pki, port: int) -> Server:
    """BabaSSL 8.3.2's NTLS server (thread per connection, libssl called through ctypes)."""
    argv = [sys.executable, "-m", "tests.interop.babassl", "server", "--suite", TLCP_SUITE[0]]
    argv += ["--sign-cert", str(pki.sm2("sign_cert")), "--sign-key", str(pki.sm2("sign_key"))]
    argv += ["--enc-cert", str(pki.sm2("enc_cert")), "--enc-key", str(pki.sm2("enc_key"))]
    argv += ["--mode", "echo", "--quiet", "--port", str(port), "--cpu", str(PROXY_CPU)]
    return fleet.start("babassl", argv, cpu=PROXY_CPU, ports=[port], cwd=REPO, env=child_env())


def babassl_library(server: Server) -> str:
    """The library version the BabaSSL server reported when it started listening."""
    first = server.log.read_text(errors="replace").partition("\n")[0]
    try:
        return str(json.loads(first).get("library", "?"))
    except json.JSONDecodeError:
        return "?"


def allocate(taken: set[int], *names: str) -> dict[str, int]:
    return {name: free_port(taken) for name in names}
