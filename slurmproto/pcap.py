"""Capture files to TCP byte streams, without I/O: pcap/pcapng records, link layers, IPv4/IPv6, TCP, and
reassembly of each connection's two directions.

`read_packets(data)` yields the packets of a classic pcap or a pcapng file held in memory; `parse_segment`
finds the TCP segment of one link-layer frame; `Reassembler` follows connections to a set of ports and
hands out, per direction, the bytes as they become contiguous (out-of-order and retransmitted segments
put in place, at most `max_buffered` bytes held per direction), with notes on what could not be followed.

Our own reader rather than dpkt (pure Python, in the package index): dpkt 1.9.8 is 75 modules (824 KiB)
and `import dpkt` takes 77-150 ms here (it imports every protocol it knows), against about 16 ms for this
module; the two formats need only a header and a record loop each, and owning that loop lets every bad
length become a specific InputError before anything is sliced, with no dependency to install.
"""

from __future__ import annotations

import heapq
import ipaddress
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from slurmproto.errors import InputError

MAX_PACKET = 262144
"""libpcap's largest snapshot length: a record claiming more is not a capture."""
MAX_BLOCK = MAX_PACKET + 4096
"""A pcapng packet block holds one packet and a few options."""
MAX_BUFFERED = 16 * 1024 * 1024
"""Bytes one direction of a connection may hold waiting (out of order, or an unfinished frame)."""
MAX_INTERFACES = 4096
"""Interface description blocks one capture may hold: a bound on the table, far above any real capture's."""

TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10
Endpoint = tuple[str, int]

# Link types (https://www.tcpdump.org/linktypes.html) with the offset of their network-layer packet.
LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LOOP = 0, 1, 101, 108
LINKTYPE_LINUX_SLL, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_LINUX_SLL2 = 113, 228, 229, 276
LINKTYPE_RAW_OPENBSD = 12
LINK_TYPES = {LINKTYPE_NULL: "BSD loopback", LINKTYPE_ETHERNET: "Ethernet", LINKTYPE_RAW: "raw IP",
              LINKTYPE_RAW_OPENBSD: "raw IP", LINKTYPE_LOOP: "OpenBSD loopback",
              LINKTYPE_LINUX_SLL: "Linux cooked (SLL)", LINKTYPE_IPV4: "raw IPv4", LINKTYPE_IPV6: "raw IPv6",
              LINKTYPE_LINUX_SLL2: "Linux cooked v2 (SLL2)"}
ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN, ETHERTYPE_QINQ = 0x0800, 0x86DD, 0x8100, 0x88A8


class PcapError(InputError):
    """The capture file cannot be read on from here (its packets before this point were read)."""


@dataclass(frozen=True)
class Packet:
    index: int
    """1-based, as Wireshark numbers packets."""
    time: float
    """Seconds since the epoch."""
    linktype: int
    data: bytes
    length: int
    """The packet's length on the wire (data may be shorter: the snapshot length cut it)."""


# --- capture files -----------------------------------------------------------------------------------

_PCAP_MAGIC = {b"\xa1\xb2\xc3\xd4": (">", 1e-6), b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
               b"\xa1\xb2\x3c\x4d": (">", 1e-9), b"\x4d\x3c\xb2\xa1": ("<", 1e-9)}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_PACKET_BLOCKS = (6, 3, 2)  # enhanced, simple, obsolete packet blocks


def read_packets(data: bytes) -> Iterator[Packet]:
    """The packets of a classic pcap or pcapng file, in file order; PcapError where the file stops
    making sense (after yielding every packet before that point)."""
    if len(data) < 4:
        raise PcapError(f"not a capture file: {len(data)} bytes")
    if data[:4] in _PCAP_MAGIC:
        yield from _pcap(memoryview(data))
    elif data[:4] == _PCAPNG_SHB:
        yield from _pcapng(memoryview(data))
    else:
        raise PcapError(f"not a pcap or pcapng file (starts with {bytes(data[:4]).hex()})")


def _pcap(data: memoryview) -> Iterator[Packet]:
    order, unit = _PCAP_MAGIC[bytes(data[:4])]
    if len(data) < 24:
        raise PcapError(f"pcap file header truncated: {len(data)} of 24 bytes")
    linktype = struct.unpack_from(order + "I", data, 20)[0] & 0xFFFF  # the top bits are FCS flags
    at, index = 24, 0
    while at < len(data):
        index += 1
        if len(data) - at < 16:
            raise PcapError(f"packet {index}: record header truncated ({len(data) - at} of 16 bytes)")
        sec, frac, caplen, length = struct.unpack_from(order + "IIII", data, at)
        if caplen > MAX_PACKET:
            raise PcapError(f"packet {index}: captured length {caplen} exceeds {MAX_PACKET} bytes")
        if caplen > len(data) - at - 16:
            raise PcapError(f"packet {index}: truncated ({len(data) - at - 16} of {caplen} bytes)")
        yield Packet(index, sec + frac * unit, linktype, bytes(data[at + 16:at + 16 + caplen]), max(length, caplen))
        at += 16 + caplen


@dataclass
class _Interface:
    linktype: int
    unit: float = 1e-6


def _pcapng(data: memoryview) -> Iterator[Packet]:
    order = "<"
    interfaces: list[_Interface] = []
    at, index = 0, 0
    while at < len(data):
        if len(data) - at < 8:
            raise PcapError(f"pcapng block at byte {at} truncated ({len(data) - at} bytes)")
        if bytes(data[at:at + 4]) == _PCAPNG_SHB:  # a new section: its own byte order and interfaces
            if len(data) - at < 12:
                raise PcapError(f"pcapng section header at byte {at} truncated ({len(data) - at} bytes)")
            magic = bytes(data[at + 8:at + 12])
            if magic not in (b"\x1a\x2b\x3c\x4d", b"\x4d\x3c\x2b\x1a"):
                raise PcapError(f"pcapng section header at byte {at}: bad byte-order magic {magic.hex()}")
            order = ">" if magic == b"\x1a\x2b\x3c\x4d" else "<"
            interfaces = []
        kind, size = struct.unpack_from(order + "II", data, at)
        if size < 12 or size % 4 or (size > MAX_BLOCK and kind in _PACKET_BLOCKS):
            raise PcapError(f"pcapng block at byte {at}: bad length {size}")
        if size > len(data) - at:
            raise PcapError(f"pcapng block at byte {at} truncated ({len(data) - at} of {size} bytes)")
        body = data[at + 8:at + size - 4]
        at += size
        if kind == 1:  # interface description
            if len(body) < 8 or len(interfaces) >= MAX_INTERFACES:
                raise PcapError(f"pcapng interface block {len(interfaces)} is malformed")
            interfaces.append(_Interface(struct.unpack_from(order + "H", body, 0)[0],
                                         _ts_unit(body[8:], order)))
        elif kind in _PACKET_BLOCKS:
            index += 1
            yield _pcapng_packet(kind, body, order, interfaces, index)


def _ts_unit(options: memoryview, order: str) -> float:
    """The if_tsresol option (code 9) of an interface block, as seconds per tick (default microseconds)."""
    at = 0
    while len(options) - at >= 4:
        code, length = struct.unpack_from(order + "HH", options, at)
        if code == 0:
            break
        if code == 9 and length >= 1 and len(options) - at >= 5:
            value = options[at + 4]
            return 2.0 ** -(value & 0x7F) if value & 0x80 else 10.0 ** -min(value, 18)
        at += 4 + (length + 3) // 4 * 4
    return 1e-6


def _pcapng_packet(kind: int, body: memoryview, order: str, interfaces: list[_Interface], index: int) -> Packet:
    if kind == 3:  # simple packet block: interface 0, no time stamp
        if len(body) < 4 or not interfaces:
            raise PcapError(f"packet {index}: malformed simple packet block")
        length = struct.unpack_from(order + "I", body, 0)[0]
        caplen = min(length, len(body) - 4)
        return Packet(index, 0.0, interfaces[0].linktype, bytes(body[4:4 + caplen]), length)
    if len(body) < 20:
        raise PcapError(f"packet {index}: packet block of {len(body)} bytes")
    if kind == 6:
        iface, high, low, caplen, length = struct.unpack_from(order + "IIIII", body, 0)
    else:
        iface, _drops, high, low, caplen, length = struct.unpack_from(order + "HHIIII", body, 0)
    if iface >= len(interfaces):
        raise PcapError(f"packet {index}: interface {iface} was never described")
    if caplen > len(body) - 20:
        raise PcapError(f"packet {index}: captured length {caplen} is longer than its block")
    interface = interfaces[iface]
    return Packet(index, ((high << 32) | low) * interface.unit, interface.linktype,
                  bytes(body[20:20 + caplen]), max(length, caplen))


# --- link layer, IP, TCP ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    src: Endpoint
    dst: Endpoint
    seq: int
    flags: int
    payload: bytes
    length: int = -1
    """The payload's length on the wire, when the capture holds only its first bytes (-1: all of it)."""

    @property
    def wire_length(self) -> int:
        return len(self.payload) if self.length < 0 else self.length


def network_layer(linktype: int, frame: bytes) -> tuple[int, bytes] | None:
    """(ethertype, network-layer bytes) of a link-layer frame; None for link types and protocols we skip."""
    if linktype == LINKTYPE_ETHERNET:
        at, kind = 14, int.from_bytes(frame[12:14], "big")
        while kind in (ETHERTYPE_VLAN, ETHERTYPE_QINQ) and len(frame) >= at + 4:
            kind, at = int.from_bytes(frame[at + 2:at + 4], "big"), at + 4
        return (kind, frame[at:]) if len(frame) >= at else None
    if linktype == LINKTYPE_LINUX_SLL:
        return (int.from_bytes(frame[14:16], "big"), frame[16:]) if len(frame) >= 16 else None
    if linktype == LINKTYPE_LINUX_SLL2:
        return (int.from_bytes(frame[0:2], "big"), frame[20:]) if len(frame) >= 20 else None
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if len(frame) < 4:
            return None
        family = frame[0] if linktype == LINKTYPE_NULL and frame[0] else frame[3]  # host order, or network
        return (ETHERTYPE_IPV4 if family == 2 else ETHERTYPE_IPV6, frame[4:])
    if linktype in (LINKTYPE_RAW, LINKTYPE_RAW_OPENBSD, LINKTYPE_IPV4, LINKTYPE_IPV6) and frame:
        return (ETHERTYPE_IPV4 if frame[0] >> 4 == 4 else ETHERTYPE_IPV6, frame)
    return None


_IPV6_SKIPPED = frozenset({0, 43, 60})  # hop-by-hop, routing, destination options


def parse_segment(packet: bytes, linktype: int = LINKTYPE_ETHERNET, wire_length: int = -1) -> Segment | None:
    """The TCP segment of a link-layer frame carrying IPv4 or IPv6; None for anything else (fragments
    included). With `wire_length` larger than the frame, the payload's true length comes from the IP
    header and the segment says how much of it the capture lacks."""
    found = network_layer(linktype, packet)
    if found is None:
        return None
    kind, ip = found
    if kind == ETHERTYPE_IPV4 and len(ip) >= 20 and ip[0] >> 4 == 4:
        header, total = (ip[0] & 0x0F) * 4, int.from_bytes(ip[2:4], "big")
        if ip[9] != 6 or header < 20 or total < header or int.from_bytes(ip[6:8], "big") & 0x3FFF:
            return None  # not TCP, malformed, or a fragment
        src, dst = str(ipaddress.IPv4Address(ip[12:16])), str(ipaddress.IPv4Address(ip[16:20]))
        start = header
    elif kind == ETHERTYPE_IPV6 and len(ip) >= 40 and ip[0] >> 4 == 6:
        total = 40 + int.from_bytes(ip[4:6], "big")
        src, dst = str(ipaddress.IPv6Address(ip[8:24])), str(ipaddress.IPv6Address(ip[24:40]))
        nxt, start = ip[6], 40
        while nxt in _IPV6_SKIPPED and len(ip) >= start + 8:
            nxt, start = ip[start], start + (ip[start + 1] + 1) * 8
        if nxt != 6:
            return None
    else:
        return None
    tcp = ip[start:total]
    if len(tcp) < 20 or (tcp[12] >> 4) * 4 < 20 or (tcp[12] >> 4) * 4 > len(tcp):
        return None
    sport, dport, seq = struct.unpack("!HHI", tcp[:8])
    offset = (tcp[12] >> 4) * 4
    payload = tcp[offset:]
    length = total - start - offset if wire_length > len(packet) or total > len(ip) else -1
    return Segment((src, sport), (dst, dport), seq, tcp[13], payload,
                   length if length != len(payload) else -1)


# --- reassembly ---------------------------------------------------------------------------------------


class StreamLimit(InputError):
    """A direction of a connection would hold more than its limit of bytes."""


@dataclass
class Direction:
    """One direction of a TCP connection: `add` segments in any order, get back the bytes that became
    contiguous. Retransmitted bytes count once (the first copy wins); bytes beyond a hole wait, at most
    `limit` of them, for the hole to fill."""

    limit: int = MAX_BUFFERED
    isn: int | None = None
    """The sequence number of the stream's first byte."""
    delivered: int = 0
    """How many bytes have been handed out."""
    waiting: dict[int, bytes] = field(default_factory=dict)
    _offsets: list[int] = field(default_factory=list)
    """The keys of `waiting` as a heap: the first chunk after the hole is at its top."""
    held: int = 0
    """Bytes in `waiting`: kept as a count, so that many small segments cost no more than a few large."""
    """Bytes beyond a hole, by stream offset."""
    fin: bool = False
    missing: int = 0
    """Bytes the capture lacks (segments cut by the snapshot length); they make holes."""
    end: int = 0
    """The stream offset after the furthest byte a segment (or a FIN) showed."""

    def add(self, seg: Segment) -> bytes:
        """The bytes this segment makes contiguous (b"" when none); StreamLimit when too many wait."""
        if seg.flags & TCP_SYN:
            self.isn = (seg.seq + 1) & 0xFFFFFFFF
        elif self.isn is None:
            self.isn = seg.seq  # the capture began after the handshake
        if seg.flags & TCP_FIN:
            self.fin = True
        offset = (seg.seq + (1 if seg.flags & TCP_SYN else 0) - self.isn) & 0xFFFFFFFF
        if offset >= 1 << 31:  # before the first byte we saw: a retransmission of older data
            return b""
        if seg.length >= 0:
            self.missing += seg.length - len(seg.payload)
        if seg.wire_length or seg.flags & TCP_FIN:  # not the ACKs after a FIN, one past the stream's end
            self.end = max(self.end, offset + seg.wire_length)
        payload = seg.payload
        if offset < self.delivered:  # a retransmission overlapping what went out already
            payload = payload[self.delivered - offset:]
            offset = self.delivered
        if not payload:
            return b""
        if offset > self.delivered:
            before = len(self.waiting.get(offset, b""))
            if len(payload) > before:
                if self.held + len(payload) - before > self.limit:
                    raise StreamLimit(f"more than {self.limit} bytes wait behind a hole at stream offset "
                                      f"{self.delivered}")
                if not before:
                    heapq.heappush(self._offsets, offset)
                self.waiting[offset] = payload
                self.held += len(payload) - before
            return b""
        out = bytearray(payload)
        self.delivered += len(payload)
        while self._offsets and self._offsets[0] <= self.delivered:
            first = heapq.heappop(self._offsets)
            chunk = self.waiting.pop(first)
            self.held -= len(chunk)
            out += chunk[self.delivered - first:]
            self.delivered = max(self.delivered, first + len(chunk))
        return bytes(out)

    def drop(self) -> None:
        """Let go of what waits (nothing more of the stream is followed)."""
        self.waiting.clear()
        self._offsets.clear()
        self.held = 0

    def hole(self) -> tuple[int, int] | None:
        """(stream offset, bytes) of the first hole: bytes wait beyond it, or later segments (a FIN
        included) showed the stream went on."""
        if self._offsets:
            return self.delivered, self._offsets[0] - self.delivered
        return (self.delivered, self.end - self.delivered) if self.end > self.delivered else None


def split_frames(stream: bytes) -> list[bytes]:
    """Length-prefixed frames of a byte stream, prefix included; a partial last frame is left out."""
    frames, at = [], 0
    while len(stream) - at >= 4:
        end = at + 4 + int.from_bytes(stream[at:at + 4], "big")
        if end > len(stream):
            break
        frames.append(stream[at:end])
        at = end
    return frames


@dataclass
class Connection:
    """A TCP connection seen in a capture: its two directions as they arrived so far."""

    number: int
    """1-based, in the order the connections were first seen."""
    client: Endpoint
    server: Endpoint
    began: float
    up: Direction
    """client -> server"""
    down: Direction
    reset: bool = False
    failed: bool = False
    """A limit was hit: nothing more of it is followed."""

    @property
    def ended(self) -> bool:
        return self.reset or (self.up.fin and self.down.fin)


@dataclass(frozen=True)
class Data:
    """Bytes of one direction that became contiguous with `packet`."""

    connection: Connection
    upward: bool
    """client -> server."""
    data: bytes
    packet: Packet | None


class Reassembler:
    """Follows the TCP connections with one end on `ports`; `add` returns the bytes each packet makes
    contiguous, `notes` says what could not be followed. No I/O: packets in, bytes out."""

    def __init__(self, ports: set[int] | frozenset[int], limit: int = MAX_BUFFERED) -> None:
        self.ports = frozenset(ports)
        self.limit = limit
        self.connections: dict[tuple[Endpoint, Endpoint], Connection] = {}
        self.finished: list[Connection] = []
        self.notes: list[tuple[Connection | None, str]] = []
        self.count = 0

    def add_packet(self, packet: Packet) -> Data | None:
        seg = parse_segment(packet.data, packet.linktype, packet.length)
        return None if seg is None else self.add(seg, packet)

    def add(self, seg: Segment, packet: Packet | None = None) -> Data | None:
        if not ({seg.src[1], seg.dst[1]} & self.ports):
            return None
        upward = seg.dst[1] in self.ports if seg.flags & (TCP_SYN | TCP_ACK) != TCP_SYN else True
        key = (seg.src, seg.dst) if upward else (seg.dst, seg.src)
        conn = self.connections.get(key)
        if conn is None:  # maybe a reply seen first, the sides guessed the other way round
            conn = self.connections.get((key[1], key[0]))
            if conn is not None:
                upward, key = not upward, (key[1], key[0])
        if conn is not None and seg.flags & (TCP_SYN | TCP_ACK) == TCP_SYN and upward and conn.ended:
            self.finished.append(self.connections.pop(key))  # the 4-tuple reused by a new connection
            conn = None
        if conn is None:
            self.count += 1
            conn = self.connections[key] = Connection(self.count, key[0], key[1], packet.time if packet else 0.0,
                                                      Direction(self.limit), Direction(self.limit))
        conn.reset |= bool(seg.flags & TCP_RST)
        if conn.failed:
            return None
        try:
            data = (conn.up if upward else conn.down).add(seg)
        except StreamLimit as exc:
            conn.failed = True
            conn.up.drop()
            conn.down.drop()
            self.notes.append((conn, f"{'client' if upward else 'server'} side: {exc}; not followed further"))
            return None
        return Data(conn, upward, data, packet) if data else None

    def all_connections(self) -> list[Connection]:
        return sorted([*self.finished, *self.connections.values()], key=lambda c: c.number)

    def finish(self) -> list[tuple[Connection | None, str]]:
        """Notes on every connection left with holes or bytes the capture lacks, after the rest."""
        notes = list(self.notes)
        for conn in self.all_connections():
            for side, direction in (("client", conn.up), ("server", conn.down)):
                hole = direction.hole()
                if hole is not None and not conn.failed:
                    notes.append((conn, f"{side} side: {hole[1]} bytes missing at stream offset {hole[0]} "
                                        f"(not captured); {direction.held} bytes after them not decoded"))
                elif direction.missing:
                    notes.append((conn, f"{side} side: the capture lacks {direction.missing} bytes "
                                        "(packets cut by the snapshot length)"))
        return notes
