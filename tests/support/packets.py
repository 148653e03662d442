"""What crosses `lo` (or another interface) of a network namespace to and from one TCP port, as whole Slurm frames.

`PacketCapture` reads an AF_PACKET socket opened inside the namespace (tests/support/namespaces.py) in a
thread of its own, keeps the packets of TCP connections with `port` on one side (`packets`, for a pcap
file), and reassembles each connection (slurmproto.pcap.Reassembler) into `Exchange`s: the bytes each side
sent, split into frames by their u32 length prefix (prefix included, as the golden vectors hold them).
Loopback hands every packet to packet sockets twice (outgoing and incoming); only the incoming copy is kept.
`callerid_rpcs()`: the callerid RPCs among them.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from slurmproto.codec import decode_stream
from slurmproto.constants import NO_VAL, MsgType
from slurmproto.pcap import (
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    TCP_ACK,
    TCP_FIN,
    TCP_SYN,
    Endpoint,
    Packet,
    Reassembler,
    parse_segment,
    split_frames,
)
from tests.support.namespaces import NetNs

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
ARPHRD_LOOPBACK = 772
"""The hardware type a Linux cooked header gives `lo` (linux/if_arp.h)."""
NULL_AF = {4: 2, 6: 30}
"""A LINKTYPE_NULL header's address family, by IP version: AF_INET, and AF_INET6 as macOS numbers it."""


@dataclass
class Exchange:
    """One TCP connection to the port: what the client sent, what the server answered, how it ended."""

    client: Endpoint
    server: Endpoint
    sent: bytes
    received: bytes
    client_closed: bool
    server_closed: bool
    reset: bool
    began: float

    @property
    def requests(self) -> list[bytes]:
        return split_frames(self.sent)

    @property
    def replies(self) -> list[bytes]:
        return split_frames(self.received)


def msg_type(frame: bytes) -> int:
    """The header's msg_type of a frame given with its length prefix (every release puts it there)."""
    return int.from_bytes(frame[8:10], "big")


def header_version(frame: bytes) -> int:
    """The header's protocol version of a frame given with its length prefix."""
    return int.from_bytes(frame[4:6], "big")


# -- building packets and capture files (for the pcap tests) -------------------------------------------------


def tcp_packet(src: Endpoint, dst: Endpoint, seq: int, flags: int, payload: bytes = b"",
               linktype: int = LINKTYPE_ETHERNET, ack: int = 0) -> bytes:
    """A link-layer frame of `linktype` carrying one TCP segment over IPv4 or IPv6 (by the addresses)."""
    tcp = struct.pack("!HHIIBBHHH", src[1], dst[1], seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 65535, 0,
                      0) + payload
    a, b = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
    if a.version == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, a.packed, b.packed) + tcp
        ethertype = ETHERTYPE_IPV4
    else:
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, 64, a.packed, b.packed) + tcp
        ethertype = ETHERTYPE_IPV6
    if linktype == LINKTYPE_ETHERNET:
        return bytes(12) + ethertype.to_bytes(2, "big") + ip
    if linktype == LINKTYPE_LINUX_SLL:
        return struct.pack("!HHH8sH", 0, ARPHRD_LOOPBACK, 6, bytes(8), ethertype) + ip
    if linktype == LINKTYPE_LINUX_SLL2:
        return struct.pack("!HHIHBB8s", ethertype, 0, 1, ARPHRD_LOOPBACK, 0, 6, bytes(8)) + ip
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        return ip
    if linktype == LINKTYPE_NULL:
        return NULL_AF[a.version].to_bytes(4, "little") + ip
    raise ValueError(f"no builder for link type {linktype}")


def pcap_file(packets: Iterable[tuple[float, bytes]], linktype: int = LINKTYPE_ETHERNET, nanos: bool = False,
              big_endian: bool = False, snaplen: int = 262144) -> bytes:
    """A classic pcap file of (time, frame) pairs; frames longer than `snaplen` are cut as tcpdump -s does."""
    order = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for stamp, frame in packets:
        frac = round(stamp % 1 * (1e9 if nanos else 1e6))
        cut = frame[:snaplen]
        out.append(struct.pack(order + "IIII", int(stamp), frac, len(cut), len(frame)) + cut)
    return b"".join(out)


def pcapng_file(packets: Iterable[tuple[float, bytes]], linktype: int = LINKTYPE_ETHERNET,
                big_endian: bool = False, block_type: int = 6) -> bytes:
    """A pcapng file (one section, one interface with nanosecond stamps) of (time, frame) pairs, in
    enhanced (6), obsolete (2) or simple (3, no time stamps) packet blocks."""
    order = ">" if big_endian else "<"

    def block(kind: int, body: bytes) -> bytes:
        body += bytes(-len(body) % 4)
        return struct.pack(order + "II", kind, 12 + len(body)) + body + struct.pack(order + "I", 12 + len(body))

    tsresol = struct.pack(order + "HHB3x", 9, 1, 9) + struct.pack(order + "HH", 0, 0)
    out = [block(0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1)),
           block(1, struct.pack(order + "HHI", linktype, 0, 262144) + tsresol)]
    for stamp, frame in packets:
        ticks = round(stamp * 1e9)
        head = {6: struct.pack(order + "IIIII", 0, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame)),
                2: struct.pack(order + "HHIIII", 0, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame)),
                3: struct.pack(order + "I", len(frame))}[block_type]
        out.append(block(block_type, head + frame))
    return b"".join(out)


class PacketCapture:
    """`with PacketCapture(netns, 6818) as cap: ...; cap.exchanges()` (in the order the connections began).

    `interface`: another of the namespace's interfaces than lo (a veth), which shows each packet once."""

    def __init__(self, netns: NetNs, port: int, interface: str = "lo") -> None:
        self.netns = netns
        self.port = port
        self.interface = interface
        self._reassembler = Reassembler({port})
        self._streams: dict[tuple[int, bool], bytearray] = {}
        self.packets: list[tuple[float, bytes]] = []
        """Every packet of those connections, with its time: `pcap_file(cap.packets)` writes a capture."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._last_packet = 0.0
        self._drained = 0.0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        sock = self.netns.open_socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        sock.bind((self.interface, 0))
        self._sock = sock
        self._thread = threading.Thread(target=self._read, name=f"capture-{self.netns.name}", daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            ready, _, _ = select.select([self._sock], [], [], 0.01)
            if not ready:
                with self._lock:
                    self._drained = time.monotonic()
                continue
            packet, address = self._sock.recvfrom(65600)
            if address[2] != PACKET_OUTGOING or self.interface != "lo":
                self._keep(packet)

    def _keep(self, frame: bytes) -> None:
        seg = parse_segment(frame)
        if seg is None or self.port not in (seg.src[1], seg.dst[1]):
            return
        with self._lock:
            packet = Packet(len(self.packets) + 1, time.time(), LINKTYPE_ETHERNET, frame, len(frame))
            self.packets.append((packet.time, frame))
            self._last_packet = time.monotonic()
            piece = self._reassembler.add(seg, packet)
            if piece is not None:
                self._streams.setdefault((piece.connection.number, piece.upward), bytearray()).extend(piece.data)

    def settle(self, quiet: float = 0.5, timeout: float = 3.0) -> None:
        """Until the reader found the socket empty after this call began (everything sent before it is read)
        and every connection has ended, or nothing came for `quiet` seconds (one left open), or `timeout`."""
        began = time.monotonic()
        while time.monotonic() < began + timeout:
            with self._lock:
                ended = all(c.ended for c in self._reassembler.all_connections())
                drained, silent = self._drained > began, time.monotonic() - self._last_packet
            if drained and (ended or silent > quiet):
                return
            time.sleep(0.01)

    def exchanges(self) -> list[Exchange]:
        with self._lock:
            return [Exchange(c.client, c.server, bytes(self._streams.get((c.number, True), b"")),
                             bytes(self._streams.get((c.number, False), b"")), c.up.fin, c.down.fin, c.reset,
                             c.began) for c in self._reassembler.all_connections()]

    def stop(self) -> None:
        if self._thread is not None:
            self.settle()
            self._stop.set()
            self._thread.join(5)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def conversation(client: Endpoint, server: Endpoint, sent: bytes, received: bytes, *, start: float = 1.0,
                 mss: int = 1460, reorder: bool = False, retransmit: bool = False,
                 linktype: int = LINKTYPE_ETHERNET) -> list[tuple[float, bytes]]:
    """The packets of one TCP connection: handshake, `sent` then `received` in segments of `mss` bytes,
    FINs. `reorder` swaps each pair of data segments; `retransmit` sends every data segment twice."""
    c_isn, s_isn = 0xFFFFFF00, 1000  # the client's sequence numbers wrap around 2**32

    def segments(src: Endpoint, dst: Endpoint, isn: int, data: bytes, ack: int) -> list[bytes]:
        out = [tcp_packet(src, dst, isn + 1 + at, TCP_ACK, data[at:at + mss], linktype, ack)
               for at in range(0, len(data), mss)]
        if reorder:
            for i in range(0, len(out) - 1, 2):
                out[i], out[i + 1] = out[i + 1], out[i]
        return [p for p in out for _ in range(2 if retransmit else 1)]

    frames = [tcp_packet(client, server, c_isn, TCP_SYN, b"", linktype),
              tcp_packet(server, client, s_isn, TCP_SYN | TCP_ACK, b"", linktype, c_isn + 1),
              *segments(client, server, c_isn, sent, s_isn + 1),
              *segments(server, client, s_isn, received, c_isn + 1 + len(sent)),
              tcp_packet(server, client, s_isn + 1 + len(received), TCP_FIN | TCP_ACK, b"", linktype),
              tcp_packet(client, server, c_isn + 1 + len(sent), TCP_FIN | TCP_ACK, b"", linktype)]
    return [(start + i / 1000, frame) for i, frame in enumerate(frames)]


def callerid_rpcs(cap: PacketCapture) -> list[tuple[int, int | None]]:
    """Each callerid RPC captured: the request's header version and the job the reply names (None: none, or
    no reply)."""
    found = []
    for exchange in cap.exchanges():
        if exchange.requests and msg_type(exchange.requests[0]) == MsgType.REQUEST_NETWORK_CALLERID:
            replies = decode_stream(exchange.received)
            job = getattr(replies[0].message, "job_id", NO_VAL) if replies else NO_VAL
            found.append((header_version(exchange.requests[0]), None if job == NO_VAL else job))
    return found
