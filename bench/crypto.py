"""Crypto-provider benchmark: SM2 ops/s per backend and SM4 bulk throughput.

Run: ``.venv/bin/python bench/crypto.py [--seconds S]``.  Prints one table of SM2 sign / verify /
encrypt / decrypt / key exchange (GB/T 32918.3, one side) / ECDH rates for every available backend with
the openssl/gmssl ratio, then SM4-GCM and SM4-CBC MB/s on 16 KiB records through the reusable
record-layer objects next to direct ``cryptography`` use (the "raw SM4" baseline).  Budget: ~1 s per
cell by default, well under a minute in total.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tls.crypto import (
    HMACSM3,
    SM4CBC,
    SM4GCM,
    SM2PrivateKey,
    available_backends,
    backend_name,
    get_backend,
    sm2_key_exchange,
    use_backend,
)

RECORD = 16 * 1024
MESSAGE = bytes(range(256)) * 2  # a TLCP ServerKeyExchange-sized signed blob
PRE_MASTER = bytes(48)


def rate(func: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``func``, measured for about ``seconds`` after one warm-up call."""
    func()
    calls, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(5):
            func()
        calls += 5
        now = time.perf_counter()
        if now >= deadline:
            return calls / (now - start)


def sm2_rates(name: str, seconds: float) -> dict[str, float]:
    backend = get_backend(name)
    key, peer = SM2PrivateKey.generate(), SM2PrivateKey.generate()
    public, peer_public = key.public_key(), peer.public_key()
    signature = backend.sign(key, MESSAGE)
    ciphertext = backend.encrypt(public, PRE_MASTER)
    peer_ephemeral = SM2PrivateKey.generate().public_key()

    def key_exchange() -> object:
        ephemeral = SM2PrivateKey.generate()
        return sm2_key_exchange(
            initiator=True,
            static_key=key,
            ephemeral_key=ephemeral,
            peer_static=peer_public,
            peer_ephemeral=peer_ephemeral,
            key_length=48,
        )

    with use_backend(name):
        return {
            "sign": rate(lambda: backend.sign(key, MESSAGE), seconds),
            "verify": rate(lambda: backend.verify(public, signature, MESSAGE), seconds),
            "encrypt": rate(lambda: backend.encrypt(public, PRE_MASTER), seconds),
            "decrypt": rate(lambda: backend.decrypt(key, ciphertext), seconds),
            "key exchange": rate(key_exchange, seconds),
            "ECDH": rate(lambda: key.exchange(peer_public), seconds),
        }


def sm4_rates(seconds: float) -> list[tuple[str, float]]:
    key, nonce, iv, aad = bytes(16), bytes(12), bytes(16), bytes(13)
    record = bytes(RECORD)
    gcm, cbc, mac = SM4GCM(key), SM4CBC(key), HMACSM3(bytes(32))
    algorithm = algorithms.SM4(key)

    def raw_gcm() -> bytes:
        enc = Cipher(algorithm, modes.GCM(nonce)).encryptor()
        enc.authenticate_additional_data(aad)
        return enc.update(record) + enc.finalize() + enc.tag

    def raw_cbc() -> bytes:
        enc = Cipher(algorithm, modes.CBC(iv)).encryptor()
        return enc.update(record) + enc.finalize()

    sealed = gcm.encrypt(nonce, record, aad)
    mb = RECORD / 1e6
    return [
        ("SM4-GCM encrypt (SM4GCM)", rate(lambda: gcm.encrypt(nonce, record, aad), seconds) * mb),
        ("SM4-GCM decrypt (SM4GCM)", rate(lambda: gcm.decrypt(nonce, sealed, aad), seconds) * mb),
        ("SM4-GCM raw cryptography", rate(raw_gcm, seconds) * mb),
        ("SM4-CBC encrypt (SM4CBC)", rate(lambda: cbc.encrypt(iv, record), seconds) * mb),
        ("SM4-CBC raw cryptography", rate(raw_cbc, seconds) * mb),
        ("HMAC-SM3 (HMACSM3.compute)", rate(lambda: mac.compute(aad, record), seconds) * mb),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.8, help="measurement time per cell")
    args = parser.parse_args()

    names = available_backends()
    print(f"active backend: {backend_name()}; available: {', '.join(names)}")
    for name in names:
        print(f"  {name}: {get_backend(name).describe()}")
    results = {name: sm2_rates(name, args.seconds) for name in names}

    columns = [*names, "openssl/gmssl"] if {"openssl", "gmssl"} <= set(names) else names
    print()
    print(f"{'SM2 operation (ops/s)':<28}" + "".join(f"{c:>15}" for c in columns))
    for op in results[names[0]]:
        row = f"{op:<28}" + "".join(f"{results[n][op]:>15.1f}" for n in names)
        if "openssl/gmssl" in columns:
            row += f"{results['openssl'][op] / results['gmssl'][op]:>14.1f}x"
        print(row)

    print()
    print(f"{'SM4 / HMAC, 16 KiB records':<28}{'MB/s':>15}")
    for label, mbps in sm4_rates(args.seconds):
        print(f"{label:<28}{mbps:>15.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
