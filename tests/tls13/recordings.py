"""Access to the TLS 1.3 recordings made by `tests.tls13.record_babassl` (see its docstring).

A `Recording` gives both raw directions, the records of each and the NSS key log.  Nothing here uses
the engine's record layer or key schedule, so tests compare the engine against independent data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

DATA = Path(__file__).parent / "data"


@dataclass(frozen=True)
class Record:
    content_type: int
    fragment: bytes

    @property
    def header(self) -> bytes:
        return bytes((self.content_type, 3, 3)) + len(self.fragment).to_bytes(2, "big")


def parse_records(data: bytes) -> list[Record]:
    records = []
    offset = 0
    while offset < len(data):
        assert data[offset + 1] == 3
        length = int.from_bytes(data[offset + 3 : offset + 5], "big")
        records.append(Record(data[offset], data[offset + 5 : offset + 5 + length]))
        offset += 5 + length
    assert offset == len(data)
    return records


@dataclass
class Recording:
    path: Path

    def __repr__(self) -> str:
        return self.path.name

    @cached_property
    def meta(self) -> dict[str, object]:
        loaded: dict[str, object] = json.loads((self.path / "meta.json").read_text())
        return loaded

    @property
    def suite_name(self) -> str:
        return str(self.meta["suite"])

    @cached_property
    def client_to_server(self) -> bytes:
        return (self.path / "client_to_server.bin").read_bytes()

    @cached_property
    def server_to_client(self) -> bytes:
        return (self.path / "server_to_client.bin").read_bytes()

    @cached_property
    def client_records(self) -> list[Record]:
        return parse_records(self.client_to_server)

    @cached_property
    def server_records(self) -> list[Record]:
        return parse_records(self.server_to_client)

    @cached_property
    def key_log(self) -> dict[str, bytes]:
        """Label -> secret (one connection per recording)."""
        secrets: dict[str, bytes] = {}
        for line in (self.path / "keylog.txt").read_text().splitlines():
            label, _client_random, secret = line.split()
            secrets[label] = bytes.fromhex(secret)
        return secrets

    @cached_property
    def key_log_lines(self) -> set[str]:
        return set((self.path / "keylog.txt").read_text().splitlines())


def recordings(prefix: str) -> list[Recording]:
    return [Recording(path) for path in sorted(DATA.iterdir()) if path.name.startswith(prefix)]
