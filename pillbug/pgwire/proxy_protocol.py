"""The PROXY protocol v2 header: parsed from the first bytes a balancer sends, and built for tests.

A TCP balancer (HAProxy with `send-proxy-v2`) connects to the node from its own address; before
the client's bytes it sends one binary header saying where the client really came from, so that
the allowlist (util/hba.py) and the session's client address are the client's, not the
balancer's. Layout (HAProxy's proxy-protocol.txt, section 2.2):

    12 bytes  signature \\r\\n\\r\\n\\0\\r\\nQUIT\\n
     1 byte   version (high nibble, 2) and command (low nibble: LOCAL 0, PROXY 1)
     1 byte   address family (high nibble: UNSPEC 0, INET 1, INET6 2, UNIX 3) and
              transport (low nibble: UNSPEC 0, STREAM 1, DGRAM 2)
     2 bytes  length of what follows, big-endian
     then     INET: source 4, destination 4, source port 2, destination port 2
              INET6: 16, 16, 2, 2; UNIX: 108, 108
     then     TLVs (type 1 byte, length 2 bytes, value) up to the length, which are skipped

This module does no I/O and knows nothing of connections or of who is trusted to send a header
(connection.py decides that): parse_header is fed the bytes received so far and answers "need
more" (None), the parsed header, or a PgError 08P01 for a malformed one. The header is bounded
(MAX_PAYLOAD), so a peer cannot make the node buffer more than a few kilobytes before it decides.
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from pillbug.util import errors

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
# What a connection's first byte is when a balancer speaks first: a PostgreSQL startup packet
# starts with the high byte of its length, 0 (it is at most MAX_STARTUP bytes long), so one byte
# tells the two apart and the node never waits for more bytes than a client sends (an SSLRequest
# is only 8).
FIRST_BYTES = frozenset((SIGNATURE[0], V1_PREFIX[0]))
FIXED_LENGTH = 16
MAX_PAYLOAD = 2048  # addresses and TLVs; HAProxy's largest (unique-id, SSL, authority) fit easily

LOCAL = 0x0
PROXY = 0x1
UNSPEC = 0x0
AF_INET = 0x1
AF_INET6 = 0x2
AF_UNIX = 0x3
STREAM = 0x1
DGRAM = 0x2

_FIXED = struct.Struct(">12sBBH")
_INET = struct.Struct(">4s4sHH")
_INET6 = struct.Struct(">16s16sHH")
_TLV_HEAD = struct.Struct(">BH")
_ADDRESS_LENGTH = {UNSPEC: 0, AF_INET: _INET.size, AF_INET6: _INET6.size, AF_UNIX: 216}

Endpoint = tuple[str, int]


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A complete header: `length` bytes of the stream are the header's; what follows is the
    client's. `source` is None when the connection's own endpoints stand (a LOCAL command, e.g. a
    balancer's health check, or an UNSPEC or UNIX family)."""

    length: int
    command: int
    source: Endpoint | None
    destination: Endpoint | None


def _malformed(what: str) -> errors.PgError:
    return errors.protocol_violation(f"malformed PROXY protocol header: {what}")


def parse_header(data: bytes | bytearray) -> ProxyHeader | None:
    """The PROXY v2 header at the start of data; None if data is a prefix of one (wait for more
    bytes); PgError 08P01 if it cannot be one."""
    if data[:len(V1_PREFIX)] == V1_PREFIX[:len(data)] and data:
        if len(data) < len(V1_PREFIX):
            return None
        raise errors.protocol_violation(
            "PROXY protocol version 1 (text) is not supported: the balancer must send version 2 "
            "(HAProxy: send-proxy-v2)")
    head = bytes(data[:len(SIGNATURE)])
    if head != SIGNATURE[:len(head)]:
        raise _malformed("bad signature")
    if len(data) < FIXED_LENGTH:
        return None
    _, version_command, family_transport, payload_length = _FIXED.unpack_from(data)
    version, command = version_command >> 4, version_command & 0xF
    family, transport = family_transport >> 4, family_transport & 0xF
    if version != 2:
        raise _malformed(f"version {version}, expected 2")
    if command not in (LOCAL, PROXY):
        raise _malformed(f"unknown command {command:#x}")
    if family not in _ADDRESS_LENGTH:
        raise _malformed(f"unknown address family {family:#x}")
    if transport not in (UNSPEC, STREAM, DGRAM):
        raise _malformed(f"unknown transport protocol {transport:#x}")
    if payload_length > MAX_PAYLOAD:
        raise _malformed(f"{payload_length} bytes of addresses and TLVs, more than the {MAX_PAYLOAD} allowed")
    total = FIXED_LENGTH + payload_length
    address_length = _ADDRESS_LENGTH[family]
    if command == PROXY and address_length > payload_length:
        raise _malformed(f"{payload_length} bytes are too few for the addresses of family {family:#x}")
    if len(data) < total:
        return None
    if command == LOCAL:
        # The balancer speaks for itself (a health check): the spec has the receiver ignore the
        # whole block, family included.
        return ProxyHeader(total, command, None, None)
    _check_tlvs(data, FIXED_LENGTH + address_length, total)
    if family in (UNSPEC, AF_UNIX):
        return ProxyHeader(total, command, None, None)  # no IP address to stand for the client's
    if transport != STREAM:
        raise _malformed("a PostgreSQL connection is a stream, but the header says "
                         + ("datagram" if transport == DGRAM else "unspecified transport"))
    layout, make = (_INET, ipaddress.IPv4Address) if family == AF_INET else (_INET6, ipaddress.IPv6Address)
    src, dst, src_port, dst_port = layout.unpack_from(data, FIXED_LENGTH)
    return ProxyHeader(total, command, (str(make(src)), src_port), (str(make(dst)), dst_port))


def _check_tlvs(data: bytes | bytearray, pos: int, end: int) -> None:
    """The TLVs are skipped, but they must tile the rest of the header exactly: a header whose
    length disagrees with its contents is not one to trust an address from."""
    while pos < end:
        if end - pos < _TLV_HEAD.size:
            raise _malformed(f"{end - pos} stray bytes after the TLVs")
        _, length = _TLV_HEAD.unpack_from(data, pos)
        pos += _TLV_HEAD.size + length
        if pos > end:
            raise _malformed("a TLV runs past the end of the header")


def encode_header(source: Endpoint | None, destination: Endpoint | None, *, command: int = PROXY,
                  tlvs: list[tuple[int, bytes]] | None = None) -> bytes:
    """A PROXY v2 header, as a balancer sends it: INET or INET6 after the addresses' version,
    UNSPEC when source is None (then destination must be None too)."""
    if source is None:
        assert destination is None
        family, addresses = UNSPEC, b""
    else:
        assert destination is not None
        src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
        assert src.version == dst.version, "source and destination of one family"
        family, layout = (AF_INET, _INET) if src.version == 4 else (AF_INET6, _INET6)
        addresses = layout.pack(src.packed, dst.packed, source[1], destination[1])
    payload = addresses + b"".join(_TLV_HEAD.pack(kind, len(value)) + value for kind, value in tlvs or ())
    transport = UNSPEC if family == UNSPEC else STREAM
    return _FIXED.pack(SIGNATURE, 0x20 | command, family << 4 | transport, len(payload)) + payload
