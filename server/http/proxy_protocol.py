"""The PROXY protocol header (HAProxy's doc/proxy-protocol.txt, versions 1 and 2), sans-IO.

Feed the first bytes of a connection; get "need more", a parsed header with the
count of bytes it took (everything after it is untouched: HTTP or a TLS
ClientHello), or ProxyProtocolError with the reason. Strict as the spec asks of a
receiver: a v1 line of at most 107 bytes ended by CRLF with the exact field grammar
(canonical decimal, no leading zeroes, ports 0-65535, addresses of the named
family); a v2 signature, version 2, command LOCAL or PROXY, an assigned family and
transport, an address block the announced length holds, TLVs that fit it, and the
CRC32c TLV's checksum when one is sent (section 2.2.3).
Bytes that cannot begin a header are refused at once, not after a timeout.
"""

from __future__ import annotations

import re
import socket
import struct
from dataclasses import dataclass
from typing import Final

V2_SIGNATURE: Final = b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"
V1_PREFIX: Final = b"PROXY "
V1_MAX_LENGTH: Final = 107  # "PROXY UNKNOWN" + two IPv6 addresses + two ports + CRLF
V2_FIXED_LENGTH: Final = 16  # signature, version/command, family/transport, length
MODES: Final = ("v1", "v2", "auto")

# v2 families (high nibble of byte 14) -> address block size for a stream or datagram.
_FAMILY_SIZES: Final = {0x0: 0, 0x1: 12, 0x2: 36, 0x3: 216}
_FAMILY_NAMES: Final = {0x1: "TCP4", 0x2: "TCP6", 0x3: "UNIX"}
_COMMANDS: Final = {0x0: "LOCAL", 0x1: "PROXY"}
_STREAM: Final = 0x1
PP2_TYPE_CRC32C: Final = 0x03
_OCTET = rb"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rb"\.".join([_OCTET] * 4))
_IPV6_CHARS = re.compile(rb"[0-9A-Fa-f:.]{2,45}")
_PORT_RE = rb"0|[1-9][0-9]{0,4}"  # ASCII digits only, no sign, no leading zero
_PORT = re.compile(_PORT_RE)
_V1_TCP4 = re.compile(b"PROXY TCP4 (%s) (%s) (%s) (%s)\r\n" % (
    _IPV4.pattern, _IPV4.pattern, _PORT_RE, _PORT_RE))
_LENGTH = struct.Struct("!H")
_PORTS = struct.Struct("!HH")


class ProxyProtocolError(Exception):
    """The bytes are not a valid PROXY header: the connection must be dropped."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """One parsed header. `length` is how many bytes of the stream it took.

    command is "PROXY" or "LOCAL"; family "TCP4", "TCP6", "UNIX" or "UNKNOWN" (v1's
    UNKNOWN, v2's UNSPEC, and v2 datagram families, which a TCP receiver treats as
    UNSPEC per section 2.2). source and destination are (host, port) for TCP, (path,
    None) for UNIX, None when the real endpoints apply. tlvs: v2's (type, value) pairs.
    """

    version: int
    command: str
    family: str
    source: tuple[str, int | None] | None
    destination: tuple[str, int | None] | None
    length: int
    tlvs: tuple[tuple[int, bytes], ...] = ()

    @property
    def uses_real_endpoints(self) -> bool:
        """LOCAL (a health check of the proxy itself) or UNKNOWN: keep the socket's addresses."""
        return self.source is None


def _is_prefix(data: bytes | bytearray | memoryview, of: bytes) -> bool:
    n = min(len(data), len(of))
    return bytes(data[:n]) == of[:n]


def detect(data: bytes | bytearray, mode: str = "auto") -> int | None:
    """Which version the bytes begin (1 or 2), 0 if they cannot begin a header of
    `mode`, None if too few bytes arrived to say. Decides on the shortest prefix."""
    if data.startswith(V1_PREFIX):  # the usual cases first, without slicing
        return 1 if mode != "v2" else 0
    if data.startswith(V2_SIGNATURE):
        return 2 if mode != "v1" else 0
    v1 = mode != "v2" and _is_prefix(data, V1_PREFIX)
    v2 = mode != "v1" and _is_prefix(data, V2_SIGNATURE)
    if v1 and len(data) >= len(V1_PREFIX):
        return 1
    if v2 and len(data) >= len(V2_SIGNATURE):
        return 2
    if v1 or v2:
        return None
    return 0


def parse(data: bytes | bytearray, mode: str = "auto") -> ProxyHeader | None:
    """The header at the start of data, or None when more bytes are needed.

    Raises ProxyProtocolError as soon as the bytes cannot be a valid header.
    None also promises that every byte seen so far belongs to the header, so a
    reader may consume them all without reading past it.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    version = detect(data, mode)
    if version == 0:
        expected = {"v1": "a PROXY v1 line", "v2": "a PROXY v2 signature"}.get(
            mode, "a PROXY v1 line or v2 signature")
        raise ProxyProtocolError(f"connection does not start with {expected}: "
                                 f"{bytes(data[:16])!r}")
    if version is None:
        return None
    if version == 1:
        return _parse_v1(data)
    return _parse_v2(data)


# -- version 1 -----------------------------------------------------------------------------

def _parse_v1(data: bytes | bytearray) -> ProxyHeader | None:
    fast = _V1_TCP4.match(data)
    if fast is not None:  # the usual line in one regex; anything else takes the long way
        src, dst, sport, dport = fast.groups()
        if int(sport) <= 65535 and int(dport) <= 65535:
            return ProxyHeader(1, "PROXY", "TCP4", (src.decode(), int(sport)),
                               (dst.decode(), int(dport)), fast.end())
    window = bytes(data[:V1_MAX_LENGTH])
    end = window.find(b"\r\n")
    if end < 0:
        # The spec forbids a lone CR or LF as the end of the line: refuse it at once.
        lone = window.find(b"\n")
        cr = window.find(b"\r")
        if lone >= 0 or (0 <= cr < len(window) - 1):
            raise ProxyProtocolError("v1 line ends without CRLF")
        if len(window) >= V1_MAX_LENGTH:
            raise ProxyProtocolError(f"v1 line longer than {V1_MAX_LENGTH} bytes")
        return None
    line = window[:end]
    length = end + 2
    if b"\r" in line or b"\n" in line:
        raise ProxyProtocolError("v1 line ends without CRLF")
    fields = line.split(b" ")
    proto = fields[1] if len(fields) > 1 else b""
    if proto == b"UNKNOWN":
        # "the receiver must ignore anything presented before the CRLF is found"
        return ProxyHeader(1, "PROXY", "UNKNOWN", None, None, length)
    if proto not in (b"TCP4", b"TCP6"):
        raise ProxyProtocolError(f"v1 protocol {proto[:16]!r} is not TCP4, TCP6 or UNKNOWN")
    if len(fields) != 6:
        raise ProxyProtocolError(f"v1 line has {len(fields)} fields, not 6")
    family = proto.decode("ascii")
    src = _v1_address(fields[2], family)
    dst = _v1_address(fields[3], family)
    sport, dport = _v1_port(fields[4]), _v1_port(fields[5])
    return ProxyHeader(1, "PROXY", family, (src, sport), (dst, dport), length)


def _v1_address(field: bytes, family: str) -> str:
    if family == "TCP4":
        # Exactly four decimals 0-255 without leading zeroes (the spec's "octal confusion").
        if _IPV4.fullmatch(field) is None:
            raise ProxyProtocolError(f"v1 TCP4 address {field[:40]!r} is not valid")
        return field.decode("ascii")
    # Hex groups and colons (a dotted IPv4 tail, as HAProxy writes a v4-mapped address);
    # no scope id. inet_pton checks the rest; inet_ntop gives the one canonical spelling.
    try:
        if _IPV6_CHARS.fullmatch(field) is None:
            raise ValueError
        return socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6,
                                                                  field.decode("ascii")))
    except (ValueError, OSError):
        raise ProxyProtocolError(f"v1 TCP6 address {field[:40]!r} is not valid") from None


def _v1_port(field: bytes) -> int:
    if _PORT.fullmatch(field) is None:
        raise ProxyProtocolError(f"v1 port {field[:8]!r} is not a decimal in 0-65535")
    port = int(field)
    if port > 65535:
        raise ProxyProtocolError(f"v1 port {port} is out of range")
    return port


# -- version 2 -----------------------------------------------------------------------------

def _parse_v2(data: bytes | bytearray) -> ProxyHeader | None:
    if len(data) < V2_FIXED_LENGTH:
        if len(data) > 12:
            _v2_check_fixed(data)  # refuse a bad version or command without waiting
        return None
    command, family_byte, transport = _v2_check_fixed(data)
    (block,) = _LENGTH.unpack_from(data, 14)
    length = V2_FIXED_LENGTH + block
    if len(data) < length:
        return None
    payload = bytes(data[V2_FIXED_LENGTH:length])
    if command == "LOCAL":
        # Section 2.2: the receiver uses the real endpoints and skips the whole block.
        return ProxyHeader(2, "LOCAL", "UNKNOWN", None, None, length)
    need = _FAMILY_SIZES[family_byte]
    if len(payload) < need:
        raise ProxyProtocolError(f"v2 address block of {len(payload)} bytes is shorter "
                                 f"than family {family_byte:#x} needs ({need})")
    tlvs = _v2_tlvs(payload[need:]) if need else ()
    if tlvs and any(kind == PP2_TYPE_CRC32C for kind, _ in tlvs):
        _check_crc32c(bytes(data[:length]), V2_FIXED_LENGTH + need)
    if family_byte == 0x0 or transport != _STREAM:
        # UNSPEC, or a datagram family on a stream: the spec's fallback is UNSPEC.
        return ProxyHeader(2, "PROXY", "UNKNOWN", None, None, length, tlvs)
    name = _FAMILY_NAMES[family_byte]
    src, dst = _v2_addresses(payload, family_byte)
    return ProxyHeader(2, "PROXY", name, src, dst, length, tlvs)


def _v2_check_fixed(data: bytes | bytearray) -> tuple[str, int, int]:
    ver_cmd = data[12]
    if ver_cmd >> 4 != 2:
        raise ProxyProtocolError(f"v2 version {ver_cmd >> 4} is not 2")
    command = _COMMANDS.get(ver_cmd & 0xF)
    if command is None:
        raise ProxyProtocolError(f"v2 command {ver_cmd & 0xF} is not LOCAL or PROXY")
    if len(data) < 14:
        return command, 0, 0
    fam = data[13]
    family_byte, transport = fam >> 4, fam & 0xF
    if family_byte not in _FAMILY_SIZES or transport > 2:
        raise ProxyProtocolError(f"v2 family/transport byte {fam:#04x} is not assigned")
    return command, family_byte, transport


def _v2_addresses(payload: bytes, family_byte: int
                  ) -> tuple[tuple[str, int | None], tuple[str, int | None]]:
    if family_byte == 0x1:
        sport, dport = _PORTS.unpack_from(payload, 8)
        return ((socket.inet_ntop(socket.AF_INET, payload[0:4]), sport),
                (socket.inet_ntop(socket.AF_INET, payload[4:8]), dport))
    if family_byte == 0x2:
        sport, dport = _PORTS.unpack_from(payload, 32)
        return ((socket.inet_ntop(socket.AF_INET6, payload[0:16]), sport),
                (socket.inet_ntop(socket.AF_INET6, payload[16:32]), dport))
    # AF_UNIX: two 108-byte sun_path fields, NUL-padded.
    return (_unix_path(payload[0:108]), None), (_unix_path(payload[108:216]), None)


def _unix_path(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _v2_tlvs(rest: bytes) -> tuple[tuple[int, bytes], ...]:
    """The TLVs after the address block; each must fit in what the length announced."""
    tlvs = []
    offset = 0
    while offset < len(rest):
        if len(rest) - offset < 3:
            raise ProxyProtocolError(f"v2 TLV header truncated at offset {offset}")
        kind = rest[offset]
        (size,) = _LENGTH.unpack_from(rest, offset + 1)
        start = offset + 3
        if start + size > len(rest):
            raise ProxyProtocolError(f"v2 TLV {kind:#04x} of {size} bytes overruns the header")
        tlvs.append((kind, rest[start:start + size]))
        offset = start + size
    return tuple(tlvs)


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # Castagnoli, reflected
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE: Final = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC32c (RFC 4960 appendix B), as section 2.2.3 asks for the PP2_TYPE_CRC32C TLV."""
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _check_crc32c(header: bytes, tlv_start: int) -> None:
    """Section 2.2.3: a receiver that supports the checksum MUST verify it, computed over
    the whole header with the checksum field zeroed; a mismatch makes the header invalid."""
    offset = tlv_start
    while offset < len(header):
        kind = header[offset]
        (size,) = _LENGTH.unpack_from(header, offset + 1)
        if kind == PP2_TYPE_CRC32C:
            if size != 4:
                raise ProxyProtocolError(f"v2 CRC32C TLV of {size} bytes, not 4")
            value = offset + 3
            (sent,) = struct.unpack_from("!I", header, value)
            zeroed = header[:value] + b"\0\0\0\0" + header[value + 4:]
            if crc32c(zeroed) != sent:
                raise ProxyProtocolError("v2 CRC32C checksum does not match the header")
            return
        offset += 3 + size


class ProxyHeaderReader:
    """Incremental: feed() bytes as they come; header and the bytes after it once complete.

    Holds at most one header's bytes (v1: 107; v2: 16 + 65535).
    """

    __slots__ = ("mode", "_buffer")

    def __init__(self, mode: str = "auto") -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.mode = mode
        self._buffer = bytearray()

    @property
    def buffered(self) -> bytes:
        return bytes(self._buffer)

    def feed(self, data: bytes) -> tuple[ProxyHeader, bytes] | None:
        """None: need more. Otherwise (header, rest): rest is everything after the header,
        untouched. Raises ProxyProtocolError."""
        self._buffer += data
        header = parse(self._buffer, self.mode)
        if header is None:
            return None
        rest = bytes(self._buffer[header.length:])
        self._buffer.clear()
        return header, rest
