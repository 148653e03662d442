"""Asking a slurmd which job holds a TCP connection (slurm_network_callerid), with deadlines.

One TCP connection per attempt: connect (TCPTimeout), send the request, read one reply (MessageTimeout),
all within an overall deadline. Which version to send, and what a reply means (refusal, forgery,
answer), is decided by slurmproto.exchange.CalleridExchange; this module only drives sockets around it.
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from slurmproto.addresses import pack, unmapped, unpack
from slurmproto.codec import Decoder, Frame, FrameOptions
from slurmproto.constants import AF_INET, AF_INET6
from slurmproto.errors import ConnectError, HttpReply, PeerClosed, Timeout
from slurmproto.exchange import (
    REFUSED_BY_VERSION,
    TRUSTED_UIDS,
    Action,
    Attempt,
    CalleridExchange,
    CallerIdResult,
    Fail,
    Send,
)
from slurmproto.messages import NetworkCallerIdRequest
from slurmproto.settings import (
    DEFAULT_MESSAGE_TIMEOUT,
    DEFAULT_SLURMD_PORT,
    DEFAULT_TCP_TIMEOUT,
    NO_PAYLOAD_CHECKS,
    PayloadChecks,
)

if TYPE_CHECKING:
    from slurmproto.signers import Signer

__all__ = ["MAX_REPLY", "REFUSED_BY_VERSION", "TRUSTED_UIDS", "Attempt", "CallerIdResult", "Endpoint",
           "PayloadChecks", "callerid", "callerid_request"]

_T = TypeVar("_T")
MAX_REPLY = 64 * 1024
"""A callerid reply is about 250 bytes; refuse to buffer more than this from a peer."""


@dataclass(frozen=True)
class Endpoint:
    """An address as the callerid request carries it: IPv4-mapped IPv6 is IPv4."""

    af: int
    packed: bytes
    host: str

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        text = text.strip().strip("[]")
        written_af, written = pack(text)
        af, packed = unmapped(written_af, written)
        # Shown as written for IPv4; IPv6 (and mapped IPv4) in canonical form.
        return cls(af, packed, text if written_af == AF_INET else unpack(af, packed))


def callerid_request(src: Endpoint, port_src: int, dst: Endpoint, port_dst: int) -> NetworkCallerIdRequest:
    """The request for the connection src:port_src -> dst:port_dst, seen from dst (the sshd side)."""
    for port in (port_src, port_dst):
        if not 0 < port < 65536:
            raise ValueError(f"port {port} is not between 1 and 65535")
    if src.af != dst.af:
        raise ValueError(f"addresses of different families: {src.host} and {dst.host}")
    return NetworkCallerIdRequest(src.packed.ljust(16, b"\0"), dst.packed.ljust(16, b"\0"),
                                  port_src, port_dst, src.af)


class _Clock:
    def __init__(self, timeout: float) -> None:
        self.start = time.monotonic()
        self.deadline = self.start + timeout
        self.timeout = timeout

    def left(self, cap: float, what: str) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise Timeout(f"{what}: overall deadline of {self.timeout:g} s expired")
        return min(cap, remaining)


@dataclass
class _Call:
    """What every attempt of one callerid() call shares."""

    host: str
    port: int
    family: int
    connect_timeout: float
    message_timeout: float
    clock: _Clock
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"slurmd at {self.host}:{self.port}"

    def add(self, phase: str, since: float) -> float:
        now = time.monotonic()
        self.timings[phase] = self.timings.get(phase, 0.0) + now - since
        return now


def _connect(call: _Call) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if call.family == AF_INET6 else socket.AF_INET, socket.SOCK_STREAM)
    try:
        wait = call.clock.left(call.connect_timeout, f"connect to {call.where}")
        sock.settimeout(wait)
        sock.connect((call.host, call.port))
        return sock
    except BaseException as exc:
        sock.close()
        if isinstance(exc, TimeoutError):
            raise Timeout(f"connect to {call.where}: no answer within {wait:g} s") from None
        if isinstance(exc, OSError):
            raise ConnectError(f"connect to {call.where}: {exc.strerror or exc}") from None
        raise


def _exchange(frame: bytes, call: _Call) -> tuple[Frame, bytes]:
    """One connection: connect, send, read one reply frame."""
    t0 = time.monotonic()
    with _connect(call) as sock:
        t1 = call.add("connect", t0)
        try:
            sock.settimeout(call.clock.left(call.message_timeout, f"send to {call.where}"))
            sock.sendall(frame)
            t2 = call.add("send", t1)
            reply = _receive(sock, call, t1 + call.message_timeout)
            call.add("receive", t2)
            return reply
        except TimeoutError:
            raise Timeout(f"{call.where} did not answer in time") from None
        except ConnectionError as exc:
            raise PeerClosed(f"{call.where}: {exc.strerror or exc}") from None


def _receive(sock: socket.socket, call: _Call, receive_deadline: float) -> tuple[Frame, bytes]:
    """Read until one whole frame is in: at most about 2 x MAX_REPLY buffered, never past a deadline."""
    where = call.where
    decoder = Decoder(FrameOptions(max_length=MAX_REPLY))
    received = bytearray()
    while (reply := decoder.next_frame()) is None:
        wait = receive_deadline - time.monotonic()
        if wait <= 0:
            raise Timeout(f"{where} did not answer within MessageTimeout {call.message_timeout:g} s")
        allowed = call.clock.left(wait, f"answer from {where}")
        sock.settimeout(allowed)
        try:
            data = sock.recv(MAX_REPLY)
        except TimeoutError:
            if allowed < wait:
                raise Timeout(f"answer from {where}: overall deadline of {call.clock.timeout:g} s "
                              "expired") from None
            raise Timeout(f"{where} did not answer within MessageTimeout {call.message_timeout:g} s") from None
        if not data:
            if not received:
                raise PeerClosed(f"{where} closed the connection without answering")
            decoder.feed_eof()
        received += data
        decoder.feed(data)
    return reply, bytes(received)


def callerid(src: str, port_src: int, dst: str, port_dst: int, *, port: int = DEFAULT_SLURMD_PORT,
             version: int | None = None, start_version: int | None = None, munge_socket: str | None = None,
             munge_ttl: int | None = None, connect_timeout: float = DEFAULT_TCP_TIMEOUT,
             message_timeout: float = DEFAULT_MESSAGE_TIMEOUT, timeout: float | None = None,
             slurmd: str | None = None, trusted_uids: Collection[int] = TRUSTED_UIDS,
             checks: PayloadChecks = NO_PAYLOAD_CHECKS, signer: Signer | None = None) -> CallerIdResult:
    """Ask the slurmd on `src` which job holds the TCP connection src:port_src -> dst:port_dst.

    `slurmd` sends the request to another address of the source node (default: `src` itself), e.g. its
    IPv4 NodeAddr when the connection came over IPv6 and slurmd listens on IPv4 only.

    `version` pins the header version (one attempt). Otherwise versions are chosen automatically,
    starting from `start_version` (e.g. the local Slurm's) when given. `timeout` bounds the whole call,
    credentials included (default: connect_timeout + message_timeout). `signer` makes and checks the
    credentials (slurmproto.signers: auth/slurm, or a MUNGE context of the caller's); without one, a
    MUNGE context on `munge_socket` is opened for the call. A reply is believed only when its credential
    was minted by one of `trusted_uids` (root and SlurmdUser; default root only): anything else raises
    ForgedReply. `checks`: CommunicationParameters' payload options for the reply's credential. Raises a
    SlurmError subclass when no answer is had.
    """
    clock = _Clock(timeout if timeout is not None else connect_timeout + message_timeout)
    source, destination = Endpoint.parse(src), Endpoint.parse(dst)
    request = callerid_request(source, port_src, destination, port_dst)
    target = Endpoint.parse(slurmd) if slurmd else source
    owned = None
    if signer is None:
        from slurmproto.munge import MungeContext  # ctypes: only when a request is really sent

        signer = owned = MungeContext(munge_socket, ttl=munge_ttl)
    try:  # close() never waits: a munge call abandoned at the deadline closes the context when it returns
        call = _Call(target.host, port, target.af, connect_timeout, message_timeout, clock)
        exchange = CalleridExchange(
            request, sign=_timed(call, "sign", "signing the request", signer.encode),
            decode=_timed(call, "verify", "checking the reply's credential", signer.decode),
            slurmd=(call.host, call.port), version=version, start_version=start_version,
            trusted_uids=trusted_uids, checks=checks, plugin_id=signer.plugin_id)
        return _drive(exchange, call)
    finally:
        if owned is not None:
            owned.close()


def _drive(exchange: CalleridExchange, call: _Call) -> CallerIdResult:
    """Run the exchange over sockets: one connection per Send, until a result or an error."""
    action: Action = exchange.next_request()
    while isinstance(action, Send):
        try:
            reply, raw = _exchange(action.frame, call)
        except PeerClosed as exc:
            action = exchange.on_closed(exc)
        except HttpReply as exc:
            action = exchange.on_http(exc)
        else:
            action = exchange.on_reply(reply, raw)
    if isinstance(action, Fail):
        raise action.error
    action.timings = call.timings
    call.timings["total"] = time.monotonic() - call.clock.start
    return action


def _timed(call: _Call, phase: str, what: str, auth_call: Callable[..., _T]) -> Callable[[Any], _T]:
    """A signer's call bounded by what is left of the deadline (`what` names it), its time added to `phase`."""
    def timed(data: Any) -> _T:
        t0 = time.monotonic()
        try:
            return auth_call(data, timeout=call.clock.left(math.inf, what))
        finally:
            call.add(phase, t0)
    return timed

