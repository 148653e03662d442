"""Asking a slurmd which job holds a TCP connection (slurm_network_callerid), with deadlines.

One TCP connection per attempt: connect (TCPTimeout), send the request, read one reply (MessageTimeout),
all within an overall deadline. slurmd has no version negotiation: it closes the connection (up to
24.11, and 26.05 without its HTTP listener), answers RC 1007 in its own version (25.05, 25.11) or answers
HTTP 405 (25.11+) when it does not speak the request's header version. In `auto` mode the client starts
from the local Slurm's version and, on such a refusal, tries versions of other releases, two more at most.
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from slurmproto.auth import check_payload
from slurmproto.codec import Decoder, Frame, FrameOptions, sign_and_encode
from slurmproto.constants import (
    AF_INET,
    AF_INET6,
    DEFAULT_SLURMD_PORT,
    NO_VAL,
    MsgType,
)
from slurmproto.errors import (
    AuthError,
    ConnectError,
    ForgedReply,
    HttpReply,
    PeerClosed,
    Refused,
    RemoteError,
    SlurmError,
    Timeout,
    UnexpectedMessage,
)
from slurmproto.messages import NetworkCallerIdRequest, NetworkCallerIdResponse, ReturnCode
from slurmproto.versions import max_attempts, name_of, next_version, refusal_names_version

if TYPE_CHECKING:
    from slurmproto.conf import SlurmConf
    from slurmproto.munge import MungeContext

MAX_REPLY = 64 * 1024
"""A callerid reply is about 250 bytes; refuse to buffer more than this from a peer."""
REFUSED_BY_VERSION = 1007  # SLURM_PROTOCOL_AUTHENTICATION_ERROR, 25.05+ answer to an unknown version
TRUSTED_UIDS = frozenset({0})
"""Whose credentials a reply may carry by default: root (SlurmdUser's default)."""


@dataclass(frozen=True)
class Endpoint:
    """An address as the callerid request carries it: IPv4-mapped IPv6 is IPv4."""

    af: int
    packed: bytes
    host: str

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        text = text.strip().strip("[]")
        try:
            return cls(AF_INET, socket.inet_pton(socket.AF_INET, text), text)
        except (OSError, ValueError):  # ValueError: a NUL, or a character that is not UTF-8
            pass
        try:
            packed = socket.inet_pton(socket.AF_INET6, text.split("%", 1)[0])
        except (OSError, ValueError):
            raise ValueError(f"{text!r} is not an IPv4 or IPv6 address") from None
        if packed[:12] == b"\0" * 10 + b"\xff\xff":
            ipv4 = packed[12:]
            return cls(AF_INET, ipv4, socket.inet_ntop(socket.AF_INET, ipv4))
        return cls(AF_INET6, packed, socket.inet_ntop(socket.AF_INET6, packed))


def callerid_request(src: Endpoint, port_src: int, dst: Endpoint, port_dst: int) -> NetworkCallerIdRequest:
    """The request for the connection src:port_src -> dst:port_dst, seen from dst (the sshd side)."""
    for port in (port_src, port_dst):
        if not 0 < port < 65536:
            raise ValueError(f"port {port} is not between 1 and 65535")
    if src.af != dst.af:
        raise ValueError(f"addresses of different families: {src.host} and {dst.host}")
    return NetworkCallerIdRequest(src.packed.ljust(16, b"\0"), dst.packed.ljust(16, b"\0"),
                                  port_src, port_dst, src.af)


@dataclass
class Attempt:
    """One connection to the slurmd, in one protocol version."""

    version: int
    outcome: str
    seconds: float


@dataclass
class CallerIdResult:
    job_id: int | None
    """None: slurmd did not name a job (unknown connection, or not the asker's job)."""
    node_name: str | None
    step_id: int | None
    """The step holding the process, when the reply carries one (25.11+ layout; 25.11 sends NO_VAL)."""
    protocol_version: int
    slurmd: tuple[str, int]
    signer_uid: int | None = None
    """Who signed the reply's credential (slurmd's uid), when it had one."""
    attempts: list[Attempt] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds spent per phase: munge_encode, connect, send, receive, verify, total."""
    sent: bytes = b""
    received: bytes = b""
    reply: NetworkCallerIdResponse | None = None

    @property
    def found(self) -> bool:
        return self.job_id is not None


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
    trusted: frozenset[int]
    munge: MungeContext
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
             munge_ttl: int | None = None, connect_timeout: float = 2.0, message_timeout: float = 10.0,
             timeout: float | None = None, slurmd: str | None = None,
             trusted_uids: Collection[int] = TRUSTED_UIDS) -> CallerIdResult:
    """Ask the slurmd on `src` which job holds the TCP connection src:port_src -> dst:port_dst.

    `slurmd` sends the request to another address of the source node (default: `src` itself), e.g. its
    IPv4 NodeAddr when the connection came over IPv6 and slurmd listens on IPv4 only.

    `version` pins the header version (one attempt). Otherwise versions are chosen automatically,
    starting from `start_version` (e.g. the local Slurm's) when given. `timeout` bounds the whole call,
    munged included (default: connect_timeout + message_timeout). A reply is believed only when its
    credential was minted by one of `trusted_uids` (root and SlurmdUser; default root only): anything
    else raises ForgedReply. Raises a SlurmError subclass when no answer is had.
    """
    from slurmproto.munge import MungeContext  # ctypes: only when a request is really sent

    clock = _Clock(timeout if timeout is not None else connect_timeout + message_timeout)
    source, destination = Endpoint.parse(src), Endpoint.parse(dst)
    request = callerid_request(source, port_src, destination, port_dst)
    target = Endpoint.parse(slurmd) if slurmd else source
    munge = MungeContext(munge_socket, ttl=munge_ttl)
    try:  # close() never waits: a munge call abandoned at the deadline closes the context when it returns
        call = _Call(target.host, port, target.af, connect_timeout, message_timeout, frozenset(trusted_uids),
                     munge, clock)
        return _Fallback(version, start_version).run(request, call)
    finally:
        munge.close()


class _Fallback:
    """The attempts of one call: which version to try next, and why the earlier ones were refused."""

    def __init__(self, version: int | None, start_version: int | None) -> None:
        self.version, self.start = version, start_version
        self.attempts: list[Attempt] = []
        self.rejected: list[int] = []
        self.http_seen = False
        self.peer_version: int | None = None
        self.last_error: SlurmError | None = None

    def next(self) -> int | None:
        if len(self.attempts) >= (1 if self.version is not None else max_attempts()):
            return None
        if self.version is not None:
            return self.version
        return next_version(self.rejected, start=self.start, http_seen=self.http_seen,
                            peer_version=self.peer_version)

    def refused(self, version: int, outcome: str, started: float, error: SlurmError) -> None:
        self.attempts.append(Attempt(version, outcome, time.monotonic() - started))
        self.rejected.append(version)
        self.http_seen = self.http_seen or isinstance(error, HttpReply)
        self.last_error = error

    def run(self, request: NetworkCallerIdRequest, call: _Call) -> CallerIdResult:
        while (attempt_version := self.next()) is not None:
            started = time.monotonic()
            frame = _sign(request, attempt_version, call)  # a fresh credential each time
            try:
                reply, raw = _exchange(frame, call)
            except (PeerClosed, HttpReply) as exc:
                self.refused(attempt_version, str(exc), started, exc)
                continue
            message = reply.message
            if not isinstance(message, ReturnCode | NetworkCallerIdResponse):  # refused whoever signed it
                raise UnexpectedMessage(f"slurmd answered {type(message).__name__} to a callerid request")
            signer = _verify(reply, call)
            if isinstance(message, ReturnCode) and message.return_code == REFUSED_BY_VERSION \
                    and refusal_names_version(reply.version) and reply.version != attempt_version:
                self.refused(attempt_version, f"refused with RC 1007 by a slurmd speaking "
                             f"{name_of(reply.version)}", started, RemoteError(REFUSED_BY_VERSION, reply.version))
                self.peer_version = reply.version
                continue
            self.attempts.append(Attempt(attempt_version, f"answered {MsgType(message.MSG_TYPE).name}",
                                         time.monotonic() - started))
            result = _result(reply, raw, signer, (call.host, call.port), call.timings)
            result.sent, result.attempts = frame, self.attempts
            call.timings["total"] = time.monotonic() - call.clock.start
            return result
        tried = ", ".join(f"{name_of(a.version)} (0x{a.version:04x})" for a in self.attempts)
        raise Refused(f"{self.last_error} (tried protocol versions {tried}; a slurmd also closes without "
                      f"answering when it rejects the credential)", list(self.attempts))


def _sign(request: NetworkCallerIdRequest, version: int, call: _Call) -> bytes:
    t0 = time.monotonic()

    def sign(payload: bytes) -> bytes:
        return call.munge.encode(payload, timeout=call.clock.left(math.inf, "munge_encode"))

    frame = sign_and_encode(request, version, sign)
    call.add("munge_encode", t0)
    return frame


def _verify(reply: Frame, call: _Call) -> int | None:
    """The uid that signed the reply, once munged, the signer and the body hash all agree; None if unsigned.

    Slurm's own client (slurm_network_callerid) believes any valid credential, whoever minted it; we
    accept only root and SlurmdUser, or any local user listening on the slurmd port (or answering in
    its place) could name the job. An unsigned reply (23.02+ RC replies carry no credential) is only
    ever taken as a failure or as "indeterminate", never as a job: what a peer could say by closing.
    """
    if reply.auth is None or reply.auth.credential is None:
        if isinstance(reply.message, NetworkCallerIdResponse):
            raise AuthError("slurmd's callerid reply carries no credential")
        return None
    t0 = time.monotonic()
    decoded = call.munge.decode(reply.auth.credential, timeout=call.clock.left(math.inf, "munge_decode"))
    if decoded.uid not in call.trusted:
        raise ForgedReply(decoded.uid, call.trusted, f"{call.host}:{call.port}")
    check_payload(decoded.payload, reply.body, reply.header.msg_type)
    call.add("verify", t0)
    return decoded.uid


def _result(reply: Frame, raw: bytes, signer: int | None, slurmd: tuple[str, int],
            timings: dict[str, float]) -> CallerIdResult:
    message = reply.message
    if isinstance(message, ReturnCode):
        if message.return_code != 0:
            raise RemoteError(message.return_code, reply.version)
        # rc 0 without a job: Slurm's client reports success and leaves the job unset.
        return CallerIdResult(None, None, None, reply.version, slurmd, signer, timings=timings, received=raw)
    if not isinstance(message, NetworkCallerIdResponse):  # already refused by _Fallback.run
        raise UnexpectedMessage(f"slurmd answered {type(message).__name__} to a callerid request")
    job = message.job_id if message.job_id != NO_VAL else None
    return CallerIdResult(job, message.node_name, message.step_id, reply.version, slurmd, signer,
                          timings=timings, received=raw, reply=message)


def trusted_uids(conf: SlurmConf | None, deadline: float) -> frozenset[int]:
    """Whose credentials a reply may carry: root and SlurmdUser (looked up within the deadline; root
    without asking NSS)."""
    if conf is None or conf.slurmd_user == "root":
        return TRUSTED_UIDS
    from slurmproto.deadline import call_within
    from slurmproto.errors import LocalTimeout

    left = deadline - time.monotonic()
    uid: int = call_within(left, lambda: LocalTimeout(
        f"looking up SlurmdUser {conf.slurmd_user!r}: the user database did not answer within "
        f"{max(left, 0):.3g} s"), conf.slurmd_uid)
    return frozenset({0, uid})
