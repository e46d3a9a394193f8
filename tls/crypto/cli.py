"""Command-line hooks of the crypto provider: ``smgate selfcheck`` and the text ``smgate version`` prints.

``register(subparsers)`` adds ``selfcheck``; :func:`describe` returns the provider summary for
``smgate version``.  Wiring into gateway/cli.py belongs to the gateway package.
"""

from __future__ import annotations

import argparse
from typing import Any

from tls.crypto.backends import available_backends, backend_name, get_backend, unavailable_reasons
from tls.crypto.kat import run_selfcheck


def describe() -> str:
    """Active SM2 backend, libcrypto version and the available backends, one item per line."""
    lines = []
    try:
        lines.append(f"crypto backend: {backend_name()}")
    except Exception as exc:  # describe() must print even when no backend loads
        lines.append(f"crypto backend: none ({exc})")
    for name in available_backends():
        lines.append(f"  {name}: {get_backend(name).describe()}")
    for name, reason in unavailable_reasons().items():
        lines.append(f"  {name}: unavailable ({reason})")
    return "\n".join(lines)


def _cmd_selfcheck(args: argparse.Namespace) -> int:
    backends = available_backends()
    results = run_selfcheck(backends)
    width = max(len(r.name) for r in results)
    print(describe())
    print()
    print(f"{'backend':<8}  {'check':<{width}}  result")
    for r in results:
        status = "ok" if r.ok else f"FAIL {r.detail}"
        print(f"{r.backend:<8}  {r.name:<{width}}  {status}")
    ok = bool(backends) and all(r.ok for r in results)
    print()
    print(
        f"selfcheck {'passed' if ok else 'FAILED'} (active backend: {backend_name() if backends else 'none'})"
    )
    return 0 if ok else 1


def register(subparsers: Any) -> None:
    """Add ``selfcheck`` to the ``smgate`` subcommands."""
    parser = subparsers.add_parser("selfcheck", help="run crypto known-answer tests on every SM2 backend")
    parser.set_defaults(func=_cmd_selfcheck)
