"""Asking a slurmd which job holds a TCP connection (slurm_network_callerid), with deadlines.

One TCP connection per attempt: connect (TCPTimeout), send the request, read one reply (MessageTimeout),
all within an overall deadline. slurmd has no version negotiation: it closes the connection (up to
24.11, and 26.05 without its HTTP listener), answers RC 1007 in its own version (25.05, 25.11) or answers
HTTP 405 (25.11+) when it does not speak the request's header version. In `auto` mode the client starts
from the local Slurm's version and, on such a refusal, tries versions of other releases, two more at most.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

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
    HttpReply,
    PeerClosed,
    Refused,
    RemoteError,
    SlurmError,
    Timeout,
    UnexpectedMessage,
)
from slurmproto.messages import NetworkCallerIdRequest, NetworkCallerIdResponse, ReturnCode
from slurmproto.versions import SLURM_25_05, name_of, next_version

MAX_REPLY = 64 * 1024
"""A callerid reply is about 250 bytes; refuse to buffer more than this from a peer."""
MAX_ATTEMPTS = 3
REFUSED_BY_VERSION = 1007  # SLURM_PROTOCOL_AUTHENTICATION_ERROR, 25.05+ answer to an unknown version


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
        except OSError:
            pass
        try:
            packed = socket.inet_pton(socket.AF_INET6, text.split("%", 1)[0])
        except OSError:
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


def _exchange(frame: bytes, host: str, port: int, family: int, clock: _Clock, connect_timeout: float,
              message_timeout: float, timings: dict[str, float]) -> tuple[Frame, bytes]:
    """One connection: connect, send, read one reply frame."""
    where = f"slurmd at {host}:{port}"
    sock = socket.socket(socket.AF_INET6 if family == AF_INET6 else socket.AF_INET, socket.SOCK_STREAM)
    try:
        t0 = time.monotonic()
        sock.settimeout(clock.left(connect_timeout, f"connect to {where}"))
        try:
            sock.connect((host, port))
        except TimeoutError:
            raise Timeout(f"connect to {where}: no answer within {sock.gettimeout():g} s") from None
        except OSError as exc:
            raise ConnectError(f"connect to {where}: {exc.strerror or exc}") from None
        t1 = time.monotonic()
        timings["connect"] = timings.get("connect", 0.0) + t1 - t0
        receive_deadline = t1 + message_timeout
        try:
            sock.settimeout(clock.left(message_timeout, f"send to {where}"))
            sock.sendall(frame)
            t2 = time.monotonic()
            timings["send"] = timings.get("send", 0.0) + t2 - t1
            decoder = Decoder(FrameOptions(max_length=MAX_REPLY))
            received = bytearray()
            while (reply := decoder.next_frame()) is None:
                wait = receive_deadline - time.monotonic()
                if wait <= 0:
                    raise Timeout(f"{where} did not answer within MessageTimeout {message_timeout:g} s")
                allowed = clock.left(wait, f"answer from {where}")
                sock.settimeout(allowed)
                try:
                    data = sock.recv(MAX_REPLY)
                except TimeoutError:
                    if allowed < wait:
                        raise Timeout(f"answer from {where}: overall deadline of {clock.timeout:g} s "
                                      "expired") from None
                    raise Timeout(f"{where} did not answer within MessageTimeout {message_timeout:g} s") \
                        from None
                if not data:
                    if not received:
                        raise PeerClosed(f"{where} closed the connection without answering")
                    decoder.feed_eof()
                received += data
                decoder.feed(data)
            timings["receive"] = timings.get("receive", 0.0) + time.monotonic() - t2
            return reply, bytes(received)
        except TimeoutError:
            raise Timeout(f"{where} did not answer in time") from None
        except ConnectionError as exc:
            raise PeerClosed(f"{where}: {exc.strerror or exc}") from None
    finally:
        sock.close()


def callerid(src: str, port_src: int, dst: str, port_dst: int, *, port: int = DEFAULT_SLURMD_PORT,
             version: int | None = None, start_version: int | None = None, munge_socket: str | None = None,
             munge_ttl: int | None = None, connect_timeout: float = 2.0, message_timeout: float = 10.0,
             timeout: float | None = None, slurmd: str | None = None) -> CallerIdResult:
    """Ask the slurmd on `src` which job holds the TCP connection src:port_src -> dst:port_dst.

    `slurmd` sends the request to another address of the source node (default: `src` itself), e.g. its
    IPv4 NodeAddr when the connection came over IPv6 and slurmd listens on IPv4 only.

    `version` pins the header version (one attempt). Otherwise versions are chosen automatically,
    starting from `start_version` (e.g. the local Slurm's) when given. `timeout` bounds the whole call
    (default: connect_timeout + message_timeout). Raises a SlurmError subclass when no answer is had.
    """
    from slurmproto.munge import MungeContext  # ctypes: only when a request is really sent

    clock = _Clock(timeout if timeout is not None else connect_timeout + message_timeout)
    source, destination = Endpoint.parse(src), Endpoint.parse(dst)
    request = callerid_request(source, port_src, destination, port_dst)
    target = Endpoint.parse(slurmd) if slurmd else source
    timings: dict[str, float] = {}
    attempts: list[Attempt] = []
    rejected: list[int] = []
    http_seen = False
    peer_version: int | None = None
    last_error: SlurmError | None = None

    with MungeContext(munge_socket, ttl=munge_ttl) as munge:
        while len(attempts) < (1 if version is not None else MAX_ATTEMPTS):
            attempt_version = version if version is not None else next_version(
                rejected, start=start_version, http_seen=http_seen, peer_version=peer_version)
            if attempt_version is None:
                break
            started = time.monotonic()
            t0 = time.perf_counter()
            frame = sign_and_encode(request, attempt_version, munge.encode)  # a fresh credential each time
            timings["munge_encode"] = timings.get("munge_encode", 0.0) + time.perf_counter() - t0
            try:
                reply, raw = _exchange(frame, target.host, port, target.af, clock, connect_timeout,
                                       message_timeout, timings)
            except (PeerClosed, HttpReply) as exc:
                attempts.append(Attempt(attempt_version, str(exc), time.monotonic() - started))
                rejected.append(attempt_version)
                http_seen = http_seen or isinstance(exc, HttpReply)
                last_error = exc
                continue
            message = reply.message
            if isinstance(message, ReturnCode) and message.return_code == REFUSED_BY_VERSION \
                    and reply.version >= SLURM_25_05 and reply.version != attempt_version:
                attempts.append(Attempt(attempt_version, f"refused with RC 1007 by a slurmd speaking "
                                        f"{name_of(reply.version)}", time.monotonic() - started))
                rejected.append(attempt_version)
                peer_version = reply.version
                last_error = RemoteError(REFUSED_BY_VERSION, reply.version)
                continue
            attempts.append(Attempt(attempt_version, f"answered {MsgType(message.MSG_TYPE).name}",
                                    time.monotonic() - started))
            result = _result(reply, raw, munge, (target.host, port), timings)
            result.sent, result.attempts = frame, attempts
            timings["total"] = time.monotonic() - clock.start
            return result
    tried = ", ".join(f"{name_of(a.version)} (0x{a.version:04x})" for a in attempts)
    raise Refused(f"{last_error} (tried protocol versions {tried}; a slurmd also closes without "
                  f"answering when it rejects the credential)", list(attempts))


def _result(reply: Frame, raw: bytes, munge: object, slurmd: tuple[str, int],
            timings: dict[str, float]) -> CallerIdResult:
    message = reply.message
    if isinstance(message, ReturnCode):
        if message.return_code != 0:
            raise RemoteError(message.return_code, reply.version)
        # rc 0 without a job: Slurm's client reports success and leaves the job unset.
        return CallerIdResult(None, None, None, reply.version, slurmd, None, timings=timings, received=raw)
    if not isinstance(message, NetworkCallerIdResponse):
        raise UnexpectedMessage(f"slurmd answered {type(message).__name__} to a callerid request")
    t0 = time.perf_counter()
    if reply.auth is None or reply.auth.credential is None:
        raise AuthError("slurmd's callerid reply carries no credential")
    decoded = munge.decode(reply.auth.credential)  # type: ignore[attr-defined]
    check_payload(decoded.payload, reply.body, reply.header.msg_type)
    timings["verify"] = time.perf_counter() - t0
    job = message.job_id if message.job_id != NO_VAL else None
    return CallerIdResult(job, message.node_name, message.step_id, reply.version, slurmd, decoded.uid,
                          timings=timings, received=raw, reply=message)
