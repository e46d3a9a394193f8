"""An audit verifier that is not smgate: it follows audit/FORMAT.md, slices the stored bytes with plain
Python and leaves every cryptographic step to a command-line tool (OpenSSL 3's ``openssl``, GmSSL's
``gmssl``). It imports nothing from smgate on purpose.

Tools are found on PATH (``SMGATE_TEST_OPENSSL`` / ``SMGATE_TEST_GMSSL`` name another binary, e.g. a
Tongsuo or GmSSL build made by hand); a test that needs one skips, saying why, when it is absent or
cannot do SM2/SM3.
"""

from __future__ import annotations

import base64
import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: ``,"mac":"`` + 64 hex digits + ``"}`` + LF: what follows the MAC input on every line (FORMAT.md 3)
MAC_TAIL = 75
SIGNATURE_MEMBER = b',"signature":"'
SM2_DEFAULT_ID = "1234567812345678"


def _run(command: list[str], data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(command, input=data, capture_output=True, timeout=60, check=False)


@dataclass(frozen=True)
class Tool:
    """One command-line crypto tool: HMAC-SM3, SM3 and SM2-SM3 signature verification."""

    kind: str  # "openssl" or "gmssl"
    path: str

    def hmac_sm3(self, key_hex: str, data: bytes) -> str:
        if self.kind == "openssl":
            done = _run([self.path, "mac", "-digest", "SM3", "-macopt", f"hexkey:{key_hex}", "HMAC"], data)
        else:
            done = _run([self.path, "sm3_hmac", "-key", key_hex], data)
        if done.returncode:
            raise RuntimeError(done.stderr.decode(errors="replace"))
        return done.stdout.decode().split()[-1].lower()

    def sm3(self, data: bytes) -> str:
        command = [self.path, "dgst", "-sm3", "-r"] if self.kind == "openssl" else [self.path, "sm3"]
        done = _run(command, data)
        if done.returncode:
            raise RuntimeError(done.stderr.decode(errors="replace"))
        return done.stdout.decode().split()[0].lower()

    def verify_sm2(self, certificate: Path, signature: bytes, signed: bytes, workdir: Path) -> bool:
        """Whether ``signature`` (DER) over ``signed`` verifies under the certificate's key, ID default."""
        (workdir / "signature.der").write_bytes(signature)
        (workdir / "signed.bin").write_bytes(signed)
        if self.kind == "openssl":
            public = workdir / "public.pem"
            public.write_bytes(_run([self.path, "x509", "-in", str(certificate), "-pubkey", "-noout"]).stdout)
            command = [
                self.path,
                "dgst",
                "-sm3",
                "-verify",
                str(public),
                "-sigopt",
                f"distid:{SM2_DEFAULT_ID}",
            ]
            command += ["-signature", str(workdir / "signature.der"), str(workdir / "signed.bin")]
        else:
            command = [self.path, "sm2verify", "-cert", str(certificate), "-id", SM2_DEFAULT_ID]
            command += ["-sig", str(workdir / "signature.der"), "-in", str(workdir / "signed.bin")]
        return _run(command).returncode == 0

    def spki_sm3(self, certificate: Path) -> str:
        """SM3 of the certificate's SubjectPublicKeyInfo (the checkpoints' ``signer``); openssl only."""
        public = _run([self.path, "x509", "-in", str(certificate), "-pubkey", "-noout"]).stdout
        der = _run([self.path, "pkey", "-pubin", "-outform", "DER"], public).stdout
        return self.sm3(der)


@functools.cache
def find_tool(kind: str) -> Tool | str:
    """The tool, or why there is none usable (the reason a test skips with)."""
    variable = f"SMGATE_TEST_{kind.upper()}"
    path = os.environ.get(variable) or shutil.which(kind)
    if path is None:
        return f"no `{kind}` on PATH (set {variable} to use another binary)"
    tool = Tool(kind, path)
    try:
        if tool.hmac_sm3("00" * 16, b"abc") == "" or tool.sm3(b"abc") != (
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        ):
            return f"`{path}` does not compute SM3"
    except (RuntimeError, OSError, IndexError) as exc:
        return f"`{path}` cannot do HMAC-SM3/SM3: {str(exc).strip()[:120]}"
    return tool


@dataclass(frozen=True)
class Line:
    """One stored line taken apart as FORMAT.md says: by position, no re-serialisation."""

    raw: bytes  # with its LF

    @property
    def mac_input(self) -> bytes:
        return self.raw[:-MAC_TAIL]

    @property
    def mac(self) -> str:
        return self.raw[-MAC_TAIL + len(b',"mac":"') : -3].decode()

    @property
    def signed_input(self) -> bytes:
        return self.raw[: self.raw.rindex(SIGNATURE_MEMBER)]

    @property
    def signature(self) -> bytes:
        start = self.raw.rindex(SIGNATURE_MEMBER) + len(SIGNATURE_MEMBER)
        return base64.b64decode(self.raw[start : self.raw.index(b'"', start)], validate=True)


def chain_files(directory: Path) -> list[Path]:
    """A chain's segment files in order: by the first sequence number in their names (FORMAT.md 2)."""
    return sorted(path for path in directory.glob("*-[0-9]*.jsonl") if path.name[-18:-6].isdigit())
