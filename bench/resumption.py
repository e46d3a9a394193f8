"""TLCP session resumption with ``smgate serve --workers 2``: per-process caches vs the shared store.

Usage: ``.venv/bin/python bench/resumption.py [--duration 8] [--threads 8] [--redis-port P]``

For each store (``none``: every worker has only its own cache, as before the shared store;
``host``: SQLite in the supervisor's runtime directory; ``redis`` when ``--redis-port`` names a
running redis-server) it starts a two-worker gateway with one TLCP listener (ECC_SM4_GCM_SM3, a
direct response) and drives it with the BabaSSL load generator (``tests.interop.babassl load
--resume``): ``--threads`` closed-loop connections, each re-offering the session of its first
handshake. SO_REUSEPORT sends each connection to either worker, so without a shared store about
half the offers land on a worker that does not know the session and cost a full handshake.

Printed per store: handshakes/s, how many of them resumed, resumed handshakes/s, and the workers'
CPU per handshake (from /proc). Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from certs.demo import ensure_demo_pki  # noqa: E402
from tests.ports import free_ports  # noqa: E402


def _config(demo, port: int, admin_port: int, store: dict | None) -> dict:
    return {
        "listeners": [
            {
                "name": "main",
                "port": port,
                "tls": {
                    "protocols": ["tlcp"],
                    "cipher_suites": {"tlcp": ["ECC_SM4_GCM_SM3"]},
                    "certificates": [
                        {
                            "sign_cert": str(demo.sm2.server_sign.cert),
                            "sign_key": str(demo.sm2.server_sign.key),
                            "enc_cert": str(demo.sm2.server_enc.cert),
                            "enc_key": str(demo.sm2.server_enc.key),
                            "chain": str(demo.sm2.chain),
                        }
                    ],
                },
                "filter_chains": [{"filters": [{"name": "http_connection_manager", "route_config": "r"}]}],
            }
        ],
        "route_configs": [
            {
                "name": "r",
                "virtual_hosts": [
                    {
                        "name": "v",
                        "routes": [{"name": "ok", "direct_response": {"status": 200, "body": "ok"}}],
                    }
                ],
            }
        ],
        "admin": {"port": admin_port},
        "logging": {"level": "warning", "format": "json"},
        "session_store": store,
    }


def _worker_pids(admin_port: int) -> list[int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/stats", timeout=10) as response:
        return [w["pid"] for w in json.loads(response.read())["workers"]]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(state: Path, store_name: str, store: dict | None, threads: int, duration: float) -> dict:
    demo = ensure_demo_pki(state)
    port, admin_port = free_ports(2)
    config = state / f"{store_name}.yaml"
    config.write_text(yaml.safe_dump(_config(demo, port, admin_port, store)))
    gateway = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", str(config), "--workers", "2"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert gateway.stdout is not None
        for line in gateway.stdout:
            if "smgate supervisor ready" in line:
                break
        pids = _worker_pids(admin_port)
        cpu_before = sum(_cpu_seconds(p) for p in pids)
        load = [sys.executable, "-m", "tests.interop.babassl", "load", "--port", str(port)]
        load += ["--suite", "ECC-SM2-SM4-GCM-SM3", "--threads", str(threads), "--duration", str(duration)]
        load.append("--resume")
        output = subprocess.run(load, capture_output=True, text=True, cwd=REPO, timeout=duration + 120)
        cpu = sum(_cpu_seconds(p) for p in pids) - cpu_before
        summary = json.loads(output.stdout.strip().splitlines()[-1])
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(60)
    handshakes, resumed, seconds = summary["handshakes"], summary["resumed"], summary["seconds"]
    return {
        "store": store_name,
        "handshakes_per_s": handshakes / seconds,
        "resumed_share": resumed / handshakes if handshakes else 0.0,
        "resumed_per_s": resumed / seconds,
        "worker_cpu_ms_per_handshake": 1000 * cpu / handshakes if handshakes else 0.0,
        "errors": summary["errors"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--redis-port", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        key = state / "session.key"
        key.write_text(secrets.token_hex(16))
        stores: list[tuple[str, dict | None]] = [("none", None), ("host", {"backend": "host"})]
        if args.redis_port:
            redis = {"port": args.redis_port}
            stores.append(("redis", {"backend": "redis", "key_file": str(key), "redis": redis}))
        print(
            f"2 workers, {args.threads} BabaSSL client threads re-offering their first session, {args.duration}s each"
        )
        print(
            f"{'store':6} {'handshakes/s':>13} {'resumed':>8} {'resumed/s':>10} {'worker CPU ms/hs':>17} errors"
        )
        for name, store in stores:
            row = measure(state, name, store, args.threads, args.duration)
            print(
                f"{row['store']:6} {row['handshakes_per_s']:13.1f} {row['resumed_share']:8.1%} "
                f"{row['resumed_per_s']:10.1f} {row['worker_cpu_ms_per_handshake']:17.2f} {row['errors']}",
                flush=True,
            )
            time.sleep(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
