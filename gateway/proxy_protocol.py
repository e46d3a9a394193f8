"""PROXY protocol v1 and v2 (HAProxy's ``proxy-protocol.txt``): a sans-I/O parser and an encoder.

An L4 load balancer in front of a fleet of gateways opens its own TCP connection to us, so the socket's
peer address is the balancer's. With the PROXY protocol it sends, before anything else, one header
naming the real client: v1 is a text line (``PROXY TCP4 198.51.100.7 192.0.2.1 51234 443\\r\\n``,
at most 107 bytes), v2 a binary block (12-byte signature, version/command, family/transport, length,
addresses, then TLVs).

:func:`parse_header` takes the bytes received so far and returns a :class:`ProxyHeader` (with the
number of bytes it used) or :class:`NeedData` (how many bytes it needs at least); anything malformed
raises :class:`ProxyProtocolError` as soon as it can be seen, so a client that is not a load balancer
is refused on its first bytes. Every length is bounded: a v1 line by the spec's 107 bytes, a v2 block
by ``max_v2_length``. The caller owns the socket (see :mod:`gateway.proxy_protocol_io`) and must read
no byte past the header: what follows is the client's first TLS/TLCP record.

The CRC32C TLV (0x03) is carried, not verified: the header travels over the balancer's own TCP
connection, which ``trusted_sources`` restricts.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass
from enum import IntEnum

V1_PREFIX = b"PROXY "
V1_MAX_LENGTH = 107  # "PROXY UNKNOWN ffff:...:ffff ffff:...:ffff 65535 65535\r\n" (spec 2.1)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_HEADER_LENGTH = 16
#: Addresses plus TLVs a v2 header may carry by default (the spec allows 65535; we need far less).
DEFAULT_MAX_V2_LENGTH = 2048

_V1_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")
_V1_IPV4 = re.compile(rb"(?:0|[1-9][0-9]{0,2})(?:\.(?:0|[1-9][0-9]{0,2})){3}")
_V1_IPV6 = re.compile(rb"[0-9A-Fa-f:.]{2,45}")


class ProxyProtocolError(ValueError):
    """A header that is not a valid PROXY protocol header; the message says what is wrong."""


class Command(IntEnum):
    """v2 command (low nibble of byte 13). v1 has only PROXY (UNKNOWN is LOCAL-like)."""

    LOCAL = 0x0
    PROXY = 0x1


class Family(IntEnum):
    """v2 address family (high nibble of byte 14)."""

    UNSPEC = 0x0
    INET = 0x1
    INET6 = 0x2
    UNIX = 0x3


class Transport(IntEnum):
    """v2 transport protocol (low nibble of byte 14)."""

    UNSPEC = 0x0
    STREAM = 0x1
    DGRAM = 0x2


class TlvType(IntEnum):
    """v2 TLV types of section 2.2.x (others are carried by number)."""

    ALPN = 0x01
    AUTHORITY = 0x02
    CRC32C = 0x03
    NOOP = 0x04
    UNIQUE_ID = 0x05
    SSL = 0x20
    NETNS = 0x30


_V2_ADDRESS_LENGTH = {Family.INET: 12, Family.INET6: 36, Family.UNIX: 216}

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A parsed header. ``source``/``destination`` are ``None`` when the balancer gives no addresses
    (v1 ``UNKNOWN``, v2 ``LOCAL`` or family ``UNSPEC``/``UNIX``): the socket's own peer then stands."""

    version: int
    command: Command
    source: Address | None
    destination: Address | None
    length: int
    tlvs: tuple[tuple[int, bytes], ...] = ()

    def tlv(self, kind: int) -> bytes | None:
        return next((value for t, value in self.tlvs if t == kind), None)


@dataclass(frozen=True, slots=True)
class NeedData:
    """More bytes are needed; ``minimum`` is the total the parser needs at least before deciding."""

    minimum: int


def parse_header(
    data: bytes, *, versions: frozenset[int] = frozenset({1, 2}), max_v2_length: int = DEFAULT_MAX_V2_LENGTH
) -> ProxyHeader | NeedData:
    """Parse the header at the start of ``data`` (see the module docstring)."""
    if 2 in versions and data[: len(V2_SIGNATURE)] == V2_SIGNATURE[: len(data)]:
        return _parse_v2(data, max_v2_length) if data else NeedData(len(V2_SIGNATURE))
    if 1 in versions and data[: len(V1_PREFIX)] == V1_PREFIX[: len(data)]:
        return _parse_v1(data)
    wanted = " or ".join(f"v{v}" for v in sorted(versions))
    raise ProxyProtocolError(f"not a PROXY protocol {wanted} header (first bytes {data[:8]!r})")


# -- v1 ----------------------------------------------------------------------------------------------


def _parse_v1(data: bytes) -> ProxyHeader | NeedData:
    end = data.find(b"\r\n", 0, V1_MAX_LENGTH)
    if end < 0:
        if len(data) >= V1_MAX_LENGTH:
            raise ProxyProtocolError(f"v1 header longer than {V1_MAX_LENGTH} bytes without CRLF")
        if b"\n" in data or b"\r" in data[:-1]:
            raise ProxyProtocolError("v1 header has a bare CR or LF")
        return NeedData(len(data) + 1)
    line = data[len(V1_PREFIX) : end]
    fields = line.split(b" ")
    length = end + 2
    if fields[0] == b"UNKNOWN":
        return ProxyHeader(1, Command.LOCAL, None, None, length)
    if len(fields) != 5:
        raise ProxyProtocolError(f"v1 header needs 5 fields after PROXY, got {len(fields)}: {line[:64]!r}")
    proto, src, dst, sport, dport = fields
    if proto not in (b"TCP4", b"TCP6"):
        raise ProxyProtocolError(f"v1 protocol must be TCP4, TCP6 or UNKNOWN, got {proto[:16]!r}")
    version = 4 if proto == b"TCP4" else 6
    return ProxyHeader(
        1,
        Command.PROXY,
        (_v1_address(src, version, "source"), _v1_port(sport, "source")),
        (_v1_address(dst, version, "destination"), _v1_port(dport, "destination")),
        length,
    )


def _v1_address(text: bytes, version: int, what: str) -> str:
    pattern = _V1_IPV4 if version == 4 else _V1_IPV6
    if not pattern.fullmatch(text):
        raise ProxyProtocolError(f"v1 {what} address is not an IPv{version} address: {text[:48]!r}")
    try:
        address = ipaddress.ip_address(text.decode("ascii"))
    except ValueError:
        raise ProxyProtocolError(f"v1 {what} address is not an IPv{version} address: {text!r}") from None
    if address.version != version:
        raise ProxyProtocolError(f"v1 {what} address is not an IPv{version} address: {text!r}")
    return str(address)


def _v1_port(text: bytes, what: str) -> int:
    if not _V1_PORT.fullmatch(text) or int(text) > 65535:
        raise ProxyProtocolError(f"v1 {what} port must be 0..65535 without leading zeros: {text[:8]!r}")
    return int(text)


# -- v2 ----------------------------------------------------------------------------------------------


def _parse_v2(data: bytes, max_length: int) -> ProxyHeader | NeedData:
    if len(data) < V2_HEADER_LENGTH:
        return NeedData(V2_HEADER_LENGTH)
    ver_cmd, fam_proto, length = struct.unpack_from("!BBH", data, len(V2_SIGNATURE))
    if ver_cmd >> 4 != 2:
        raise ProxyProtocolError(f"v2 version nibble must be 2, got {ver_cmd >> 4}")
    try:
        command = Command(ver_cmd & 0x0F)
        family = Family(fam_proto >> 4)
        Transport(fam_proto & 0x0F)
    except ValueError:
        raise ProxyProtocolError(
            f"v2 unknown command or family/transport 0x{ver_cmd:02x} 0x{fam_proto:02x}"
        ) from None
    if length > max_length:
        raise ProxyProtocolError(f"v2 header length {length} exceeds the limit of {max_length}")
    total = V2_HEADER_LENGTH + length
    if len(data) < total:
        return NeedData(total)
    body = data[V2_HEADER_LENGTH:total]
    address_length = _V2_ADDRESS_LENGTH.get(family, 0)
    if len(body) < address_length:
        raise ProxyProtocolError(
            f"v2 {family.name} needs {address_length} address bytes, header has {len(body)}"
        )
    source, destination = _v2_addresses(family, body[:address_length])
    tlvs = _v2_tlvs(body[address_length:])
    if command is Command.LOCAL:
        source = destination = None
    return ProxyHeader(2, command, source, destination, total, tlvs)


def _v2_addresses(family: Family, raw: bytes) -> tuple[Address | None, Address | None]:
    if family is Family.INET:
        src, dst, sport, dport = struct.unpack("!4s4sHH", raw)
    elif family is Family.INET6:
        src, dst, sport, dport = struct.unpack("!16s16sHH", raw)
    else:
        return None, None  # UNSPEC carries nothing; UNIX paths are not client addresses
    return (
        (str(ipaddress.ip_address(src)), sport),
        (str(ipaddress.ip_address(dst)), dport),
    )


def _v2_tlvs(raw: bytes) -> tuple[tuple[int, bytes], ...]:
    tlvs: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(raw):
        if len(raw) - offset < 3:
            raise ProxyProtocolError(f"v2 truncated TLV header at offset {offset}")
        kind, size = struct.unpack_from("!BH", raw, offset)
        offset += 3
        if size > len(raw) - offset:
            raise ProxyProtocolError(f"v2 TLV 0x{kind:02x} of {size} bytes overruns the header")
        tlvs.append((kind, raw[offset : offset + size]))
        offset += size
    return tuple(tlvs)


# -- encoder ---------------------------------------------------------------------------------------


def encode_v1(source: Address | None, destination: Address | None) -> bytes:
    """A v1 line; ``UNKNOWN`` when either address is missing or their families differ."""
    if source is None or destination is None:
        return b"PROXY UNKNOWN\r\n"
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    if src.version != dst.version:
        return b"PROXY UNKNOWN\r\n"
    proto = "TCP4" if src.version == 4 else "TCP6"
    return f"PROXY {proto} {src} {dst} {source[1]} {destination[1]}\r\n".encode("ascii")


def encode_v2(
    source: Address | None,
    destination: Address | None,
    tlvs: tuple[tuple[int, bytes], ...] = (),
) -> bytes:
    """A v2 block: PROXY over TCP with both addresses, or LOCAL/UNSPEC when they are missing."""
    body = b"".join(struct.pack("!BH", kind, len(value)) + value for kind, value in tlvs)
    command, family = Command.LOCAL, Family.UNSPEC
    if source is not None and destination is not None:
        src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
        if src.version == dst.version:
            command = Command.PROXY
            family = Family.INET if src.version == 4 else Family.INET6
            body = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1]) + body
    transport = Transport.STREAM if family is not Family.UNSPEC else Transport.UNSPEC
    return V2_SIGNATURE + struct.pack("!BBH", 0x20 | command, family << 4 | transport, len(body)) + body
