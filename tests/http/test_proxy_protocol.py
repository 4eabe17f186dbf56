"""The PROXY protocol parser on hand-made bytes: each case whole, one byte at a time and
with trailing data (which must come back untouched), plus a fuzz invariant."""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polycorn.server.http.proxy_protocol import (
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderReader,
    ProxyProtocolError,
    crc32c,
    detect,
    parse,
)

TRAILING = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"


def v2(command: int = 1, fam: int = 0x11, block: bytes = b"", length: int | None = None,
       version: int = 2) -> bytes:
    n = len(block) if length is None else length
    return V2_SIGNATURE + bytes([(version << 4) | command, fam]) + struct.pack("!H", n) + block


def v4_block(src="192.0.2.1", dst="198.51.100.2", sport=56324, dport=443) -> bytes:
    return (socket.inet_pton(socket.AF_INET, src) + socket.inet_pton(socket.AF_INET, dst)
            + struct.pack("!HH", sport, dport))


def v6_block(src="2001:db8::1", dst="2001:db8::2", sport=1, dport=65535) -> bytes:
    return (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
            + struct.pack("!HH", sport, dport))


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def feed_bytewise(data: bytes, mode: str = "auto") -> tuple[ProxyHeader, bytes]:
    reader = ProxyHeaderReader(mode)
    for i in range(len(data)):
        got = reader.feed(data[i:i + 1])
        if got is not None:
            header, rest = got
            return header, rest + data[i + 1:]
    raise AssertionError("header never completed")


VALID = {
    "v1 tcp4": (b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
                ("TCP4", ("192.168.0.1", 56324), ("192.168.0.11", 443), "PROXY", 1)),
    "v1 tcp4 extremes": (b"PROXY TCP4 255.255.255.255 0.0.0.0 65535 0\r\n",
                         ("TCP4", ("255.255.255.255", 65535), ("0.0.0.0", 0), "PROXY", 1)),
    "v1 tcp6": (b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n",
                ("TCP6", ("2001:db8::1", 1), ("::1", 2), "PROXY", 1)),
    "v1 tcp6 full and upper case": (
        b"PROXY TCP6 FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF ffff:ffff:ffff:ffff:ffff:ffff:"
        b"ffff:ffff 65535 65535\r\n",
        ("TCP6", ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
         ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535), "PROXY", 1)),
    "v1 tcp6 v4-mapped (haproxy mixing families)": (
        b"PROXY TCP6 ::ffff:192.0.2.1 ::1 5 6\r\n",
        ("TCP6", ("::ffff:192.0.2.1", 5), ("::1", 6), "PROXY", 1)),
    "v1 unknown short": (b"PROXY UNKNOWN\r\n", ("UNKNOWN", None, None, "PROXY", 1)),
    "v1 unknown with junk (ignored per spec)": (
        b"PROXY UNKNOWN ffff:f...f:ffff whatever 1 2\r\n", ("UNKNOWN", None, None, "PROXY", 1)),
    "v2 tcp4": (v2(block=v4_block()),
                ("TCP4", ("192.0.2.1", 56324), ("198.51.100.2", 443), "PROXY", 2)),
    "v2 tcp6": (v2(fam=0x21, block=v6_block()),
                ("TCP6", ("2001:db8::1", 1), ("2001:db8::2", 65535), "PROXY", 2)),
    "v2 unix": (v2(fam=0x31, block=b"/run/a.sock".ljust(108, b"\0") + b"/b".ljust(108, b"\0")),
                ("UNIX", ("/run/a.sock", None), ("/b", None), "PROXY", 2)),
    "v2 local (haproxy health check)": (v2(command=0, fam=0x00),
                                        ("UNKNOWN", None, None, "LOCAL", 2)),
    "v2 local with an address block (must be skipped)": (
        v2(command=0, fam=0x11, block=v4_block()), ("UNKNOWN", None, None, "LOCAL", 2)),
    "v2 unspec": (v2(fam=0x00, block=b"xyz"), ("UNKNOWN", None, None, "PROXY", 2)),
    "v2 udp4 on a stream: the UNSPEC fallback": (
        v2(fam=0x12, block=v4_block()), ("UNKNOWN", None, None, "PROXY", 2)),
    "v2 tcp4 with TLVs": (
        v2(block=v4_block() + tlv(0x01, b"h2") + tlv(0x04, b"") + tlv(0x20, b"\x01\0\0\0\0")
           + tlv(0xE0, b"x" * 300)),
        ("TCP4", ("192.0.2.1", 56324), ("198.51.100.2", 443), "PROXY", 2)),
}


@pytest.mark.parametrize("name", VALID)
@pytest.mark.parametrize("after", [b"", TRAILING, CLIENT_HELLO])
def test_valid_header_whole_bytewise_and_rest_untouched(name: str, after: bytes) -> None:
    wire, (family, src, dst, command, version) = VALID[name]
    header = parse(wire + after)
    assert header is not None
    assert (header.family, header.source, header.destination, header.command,
            header.version) == (family, src, dst, command, version)
    assert header.length == len(wire)
    assert header.uses_real_endpoints is (src is None)
    whole = ProxyHeaderReader().feed(wire + after)
    assert whole == (header, after)
    assert feed_bytewise(wire + after) == (header, after)


def with_crc(extra: bytes = b"", wrong: bool = False) -> bytes:
    """A v2 TCP4 header with a PP2_TYPE_CRC32C TLV, checksummed as section 2.2.3 says."""
    zeroed = v2(block=v4_block() + extra + tlv(0x03, b"\0\0\0\0"))
    value = crc32c(zeroed) ^ (1 if wrong else 0)
    return zeroed[:-4] + struct.pack("!I", value)


def test_crc32c_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # RFC 3720 / the standard CRC-32C check


def test_a_correct_crc32c_is_accepted() -> None:
    wire = with_crc(tlv(0x05, b"id"))
    header = parse(wire + TRAILING)
    assert header is not None and header.length == len(wire)
    assert header.source == ("192.0.2.1", 56324)


@pytest.mark.parametrize("wire", [
    with_crc(wrong=True),
    with_crc(tlv(0x05, b"id"), wrong=True),
    v2(block=v4_block() + tlv(0x03, b"\0\0\0")),
], ids=["wrong", "wrong after another TLV", "three bytes"])
def test_a_bad_crc32c_is_refused(wire: bytes) -> None:
    with pytest.raises(ProxyProtocolError, match="CRC32C"):
        parse(wire)


def test_tlvs_are_returned_in_order() -> None:
    header = parse(v2(block=v4_block() + tlv(0x05, b"id-1") + tlv(0x02, b"example.com")))
    assert header is not None and header.tlvs == ((0x05, b"id-1"), (0x02, b"example.com"))


INVALID = {
    "plain http": b"GET / HTTP/1.1\r\n\r\n",
    "tls client hello": CLIENT_HELLO,
    "lower case proxy": b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    "v1 LF only": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
    "v1 CR only then data": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rGET",
    "v1 too long": b"PROXY UNKNOWN " + b"a" * 100 + b"\r\n",
    "v1 no CRLF in 107 bytes": b"PROXY TCP6 " + b"f" * 120,
    "v1 double space": b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    "v1 trailing space": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
    "v1 five fields": b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
    "v1 unknown protocol": b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
    "v1 empty protocol": b"PROXY \r\n",
    "v1 tcp4 with v6 address": b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
    "v1 tcp6 with v4 address": b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
    "v1 leading zero octet": b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
    "v1 octet over 255": b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
    "v1 three octets": b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
    "v1 v6 scope id": b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
    "v1 v6 two double colons": b"PROXY TCP6 1::2::3 ::1 1 2\r\n",
    "v1 port over 65535": b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
    "v1 port leading zero": b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n",
    "v1 port signed": b"PROXY TCP4 1.2.3.4 5.6.7.8 +80 2\r\n",
    "v1 port negative": b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
    "v1 port not ascii digits": "PROXY TCP4 1.2.3.4 5.6.7.8 ١ 2\r\n".encode(),
    "v1 port empty": b"PROXY TCP4 1.2.3.4 5.6.7.8  2\r\n",
    "v1 tab separator": b"PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n",
    "v1 nul in address": b"PROXY TCP4 1.2.3.4\x00 5.6.7.8 1 2\r\n",
    "v2 version 1": v2(version=1, block=v4_block()),
    "v2 version 3": v2(version=3, block=v4_block()),
    "v2 command 2": v2(command=2, block=v4_block()),
    "v2 command 15": v2(command=15, block=v4_block()),
    "v2 family 4": v2(fam=0x41, block=v4_block()),
    "v2 transport 3": v2(fam=0x13, block=v4_block()),
    "v2 tcp4 block short": v2(block=v4_block()[:11]),
    "v2 tcp6 block short": v2(fam=0x21, block=v6_block()[:35]),
    "v2 unix block short": v2(fam=0x31, block=b"\0" * 215),
    "v2 TLV header truncated": v2(block=v4_block() + b"\x01\x00"),
    "v2 TLV overruns": v2(block=v4_block() + b"\x01\x00\x05abc"),
    "v2 signature damaged": V2_SIGNATURE[:11] + b"\x0b\x21\x11\x00\x0c" + v4_block(),
}


@pytest.mark.parametrize("name", INVALID)
def test_invalid_header_is_refused_whole_and_bytewise(name: str) -> None:
    wire = INVALID[name]
    with pytest.raises(ProxyProtocolError):
        parse(wire + TRAILING)
    reader = ProxyHeaderReader()
    with pytest.raises(ProxyProtocolError):
        for i in range(len(wire + TRAILING)):
            reader.feed((wire + TRAILING)[i:i + 1])


@pytest.mark.parametrize("wire", [
    b"GET / HTTP/1.1\r\n", b"\x16\x03\x01", b"POST", b"PROXX", b"\r\n\r\n\x01", b"X"])
def test_bytes_that_cannot_begin_a_header_fail_on_the_first_wrong_byte(wire: bytes) -> None:
    # No waiting for 16 bytes or a timeout: "no header" is known at the first mismatch.
    for n in range(1, len(wire) + 1):
        prefix = wire[:n]
        if detect(prefix) is None:
            assert parse(prefix) is None
        else:
            with pytest.raises(ProxyProtocolError):
                parse(prefix)
            return
    raise AssertionError(f"{wire!r} was never refused")


def test_v2_bad_version_is_refused_before_the_length_arrives() -> None:
    with pytest.raises(ProxyProtocolError):
        parse(V2_SIGNATURE + b"\x31")


@pytest.mark.parametrize("mode, wire", [
    ("v1", v2(block=v4_block())),
    ("v2", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
])
def test_a_mode_accepts_only_its_version(mode: str, wire: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse(wire, mode)
    assert parse(wire, "auto") is not None


def test_truncated_headers_need_more_and_never_complete() -> None:
    for wire, _ in VALID.values():
        for n in range(len(wire)):
            assert parse(wire[:n]) is None, (wire, n)


def test_the_largest_v2_header_is_read_whole() -> None:
    block = v4_block() + tlv(0xE1, b"z" * (65535 - 12 - 3))
    wire = v2(block=block)
    assert len(wire) == 16 + 65535
    header = parse(wire + TRAILING)
    assert header is not None and header.length == len(wire)
    assert header.tlvs[0][0] == 0xE1


def test_unknown_mode_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        parse(b"PROXY ", "v3")
    with pytest.raises(ValueError):
        ProxyHeaderReader("on")


FRAGMENTS = [b"PROXY ", b"TCP4 ", b"TCP6 ", b"UNKNOWN", b"1.2.3.4 ", b"::1 ", b"80 ", b"65536",
             b"\r\n", b"\r", b"\n", b" ", b"0", V2_SIGNATURE, b"\x21", b"\x20", b"\x11",
             b"\x00\x0c", b"\x00\x24", b"\xff\xff", b"\x00", b"\x01\x00\x02ab"]
fuzz_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(FRAGMENTS), max_size=30).map(b"".join),
    st.binary(max_size=60).map(lambda b: V2_SIGNATURE + b),
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=fuzz_bytes, mode=st.sampled_from(["v1", "v2", "auto"]), cut=st.integers(0, 400))
def test_fuzz_parses_needs_more_or_refuses_and_never_reads_past_the_header(
        data: bytes, mode: str, cut: int) -> None:
    """Invariant: parse() returns a header, None or raises ProxyProtocolError, nothing else;
    a header's length lies within the bytes given, and the same bytes fed in two pieces
    give the same answer with everything after the header returned untouched."""
    try:
        header = parse(data, mode)
    except ProxyProtocolError:
        header = "error"
    if isinstance(header, ProxyHeader):
        assert 0 < header.length <= len(data)
        assert parse(data[:header.length], mode) == header  # the header needs nothing after it
    reader = ProxyHeaderReader(mode)
    try:
        got = reader.feed(data[:cut])
        if got is None:
            got = reader.feed(data[cut:])
    except ProxyProtocolError:
        got = "error"
    if header == "error":
        assert got == "error"
    elif header is None:
        assert got is None
    else:
        assert got == (header, data[header.length:])
