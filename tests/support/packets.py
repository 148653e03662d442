"""What crosses `lo` (or another interface) of a network namespace to and from one TCP port, as whole Slurm
frames.

`PacketCapture` reads an AF_PACKET socket opened inside the namespace (tests/support/namespaces.py) in a
thread of its own, keeps the TCP segments of connections with `port` on one side, and reassembles each
connection into `Exchange`s: the bytes each side sent, split into frames by their u32 length prefix
(prefix included, as the golden vectors hold them). Loopback hands every packet to packet sockets twice
(outgoing and incoming); only the incoming copy is kept. `callerid_rpcs()`: the callerid RPCs among them.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from slurmproto.codec import decode_stream
from slurmproto.constants import NO_VAL, MsgType
from tests.support.namespaces import NetNs

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
ETH_HEADER = 14
TCP_FIN, TCP_SYN, TCP_RST = 0x01, 0x02, 0x04
Endpoint = tuple[str, int]


@dataclass(frozen=True)
class Segment:
    src: Endpoint
    dst: Endpoint
    seq: int
    flags: int
    payload: bytes


def parse_segment(packet: bytes) -> Segment | None:
    """The TCP segment of an Ethernet frame carrying IPv4 or IPv6 (None for anything else)."""
    if len(packet) < ETH_HEADER + 20:
        return None
    ethertype = int.from_bytes(packet[12:14], "big")
    ip = packet[ETH_HEADER:]
    if ethertype == 0x0800 and ip[9] == 6:
        header = (ip[0] & 0x0F) * 4
        total = int.from_bytes(ip[2:4], "big")
        src, dst = ipaddress.ip_address(ip[12:16]), ipaddress.ip_address(ip[16:20])
        tcp = ip[header:total]
    elif ethertype == 0x86DD and ip[6] == 6 and len(ip) >= 40:
        total = 40 + int.from_bytes(ip[4:6], "big")
        src, dst = ipaddress.ip_address(ip[8:24]), ipaddress.ip_address(ip[24:40])
        tcp = ip[40:total]
    else:
        return None
    if len(tcp) < 20:
        return None
    sport, dport, seq = struct.unpack("!HHI", tcp[:8])
    offset = (tcp[12] >> 4) * 4
    return Segment((str(src), sport), (str(dst), dport), seq, tcp[13], tcp[offset:])


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
class _Direction:
    isn: int | None = None
    chunks: dict[int, bytes] = field(default_factory=dict)
    fin: bool = False

    def add(self, seg: Segment) -> None:
        if seg.flags & TCP_SYN:
            self.isn = (seg.seq + 1) & 0xFFFFFFFF
        elif self.isn is None:
            self.isn = seg.seq  # the capture began after the handshake
        if seg.payload:
            self.chunks.setdefault((seg.seq - self.isn) & 0xFFFFFFFF, seg.payload)
        if seg.flags & TCP_FIN:
            self.fin = True

    def data(self) -> bytes:
        out = bytearray()
        for offset in sorted(self.chunks):
            chunk = self.chunks[offset]
            if offset + len(chunk) > len(out):  # retransmissions overlap what we have
                out += chunk[max(0, len(out) - offset):]
        return bytes(out)


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


@dataclass
class _Connection:
    client: Endpoint
    server: Endpoint
    began: float
    up: _Direction = field(default_factory=_Direction)
    down: _Direction = field(default_factory=_Direction)
    reset: bool = False

    def exchange(self) -> Exchange:
        return Exchange(self.client, self.server, self.up.data(), self.down.data(), self.up.fin, self.down.fin,
                        self.reset, self.began)


class PacketCapture:
    """`with PacketCapture(netns, 6818) as cap: ...; cap.exchanges()` (in the order the connections began).

    `interface`: another of the namespace's interfaces than lo (a veth), which shows each packet once."""

    def __init__(self, netns: NetNs, port: int, interface: str = "lo") -> None:
        self.netns = netns
        self.port = port
        self.interface = interface
        self._connections: dict[tuple[Endpoint, Endpoint], _Connection] = {}
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

    def _keep(self, packet: bytes) -> None:
        seg = parse_segment(packet)
        if seg is None or self.port not in (seg.src[1], seg.dst[1]):
            return
        upward = seg.dst[1] == self.port
        key = (seg.src, seg.dst) if upward else (seg.dst, seg.src)
        with self._lock:
            self._last_packet = time.monotonic()
            conn = self._connections.get(key)
            if conn is None:
                conn = self._connections[key] = _Connection(key[0], key[1], time.time())
            (conn.up if upward else conn.down).add(seg)
            conn.reset |= bool(seg.flags & TCP_RST)

    def settle(self, quiet: float = 0.5, timeout: float = 3.0) -> None:
        """Until the reader found the socket empty after this call began (everything sent before it is read)
        and every connection has ended, or nothing came for `quiet` seconds (one left open), or `timeout`."""
        began = time.monotonic()
        while time.monotonic() < began + timeout:
            with self._lock:
                ended = all(c.reset or (c.up.fin and c.down.fin) for c in self._connections.values())
                drained, silent = self._drained > began, time.monotonic() - self._last_packet
            if drained and (ended or silent > quiet):
                return
            time.sleep(0.01)

    def exchanges(self) -> list[Exchange]:
        with self._lock:
            found = [c.exchange() for c in self._connections.values()]
        return sorted(found, key=lambda e: e.began)

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
