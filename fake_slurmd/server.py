"""The callerid responder: slurmd's REQUEST_NETWORK_CALLERID (and REQUEST_JOB_ID) handling, on asyncio.

Per connection, in slurmd's order: read one frame (bounded in size and time), check the header version,
unpack and verify the credential (auth/munge: with munged; auth/slurm: the token, with the node's keys;
a request of the other plugin is closed on, as a slurmd loads only its own AuthType), check the body
hash, unpack the body, answer, close. Each refusal is the emulated release's (behaviour.py). Blocking
work (munge calls, /proc and netlink lookups) runs in worker threads; a node inside a network namespace
gets a thread that lives there.
"""

from __future__ import annotations

import asyncio
import functools
import os
import resource
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from fake_slurmd.accept import accept_forever
from fake_slurmd.behaviour import Refusal, SlurmdRules, behaviour_of, release_for
from fake_slurmd.membership import candidate_pids, job_of, step_of
from fake_slurmd.network import enter_netns
from fake_slurmd.scenario import Job, NodeSpec
from fake_slurmd.streams import finish
from slurmproto.addresses import pack, unpack
from slurmproto.auth import check_payload, payload_hash
from slurmproto.codec import Decoder, FrameOptions, encode_frame, read_auth, read_body, read_header
from slurmproto.constants import AF_INET, AF_INET6, NO_VAL, SLURM_AUTH_NOBODY, AuthPlugin, HeaderFlags, MsgType
from slurmproto.errors import HashMismatch, InsaneMessageLength, ProtocolError, TokenError, UnknownAuthPlugin
from slurmproto.header import Header
from slurmproto.messages import (
    JobIdRequest,
    JobIdResponse,
    Message,
    NetworkCallerIdRequest,
    NetworkCallerIdResponse,
    ReturnCode,
    message_class,
)
from slurmproto.munge import MungeContext, MungeError
from slurmproto.primitives import SlurmAddr
from slurmproto.signers import KeySigner
from slurmproto.slurmauth import KeyRing, verify
from slurmproto.sockets import InodeIndex, find_tcp
from slurmproto.versions import Release

MAX_REQUEST = 256 * 1024
"""A callerid request is about 270 bytes (an auth/slurm one about 700); a larger length prefix is closed on.
slurmd's own cap is 1 GiB and it verifies a token of any length below it: this one leaves room for a
token over slurmauth.MAX_TOKEN, which the fake verifies as slurmd does."""
EINVAL = 22
ESLURM_INVALID_JOB_ID = 2017
ESLURM_PROTOCOL_INCOMPLETE_PACKET = 5003
SLURM_PROTOCOL_AUTHENTICATION_ERROR = 1007
HTTP_405 = (b"HTTP/1.1 405 NOT ALLOWED\r\nConnection: Close\r\nContent-Length: 38\r\n"
            b"Content-Type: text/plain\r\n\r\nRequested method not allowed by slurmd")

Log = Callable[..., None]


class Close(Exception):
    """Close the connection without answering."""


@dataclass
class Answer:
    data: bytes
    verdict: str


class _Lookups:
    """Threads living in one network namespace (for its kernel lookups), and its inode cache."""

    def __init__(self, netns: str | None, workers: int) -> None:
        self.netns = netns
        self.index = InodeIndex()
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix=f"lookup-{netns or 'host'}",
                                           initializer=(lambda: enter_netns(netns)) if netns else None)

    def listen(self, address: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(4096)
        sock.setblocking(False)
        return sock


class CalleridServer:
    """Answers the callerid RPC for simulated nodes; one instance serves any number of nodes."""

    def __init__(self, jobs: Mapping[int, Job], *, release: Release | None = None, munge_socket: str | None = None,
                 slurm_uid: int = 0, client_timeout: float = 10.0, max_connections: int = 20000,
                 workers: int = 8, log: Log | None = None, keys: KeyRing | None = None,
                 cluster: str | None = None, hash_blocks: frozenset[str] = frozenset()) -> None:
        self.jobs = jobs
        self.hash_blocks = hash_blocks
        self.keys = keys
        """auth/slurm's keys (None: auth/munge, with munged)."""
        self.cluster = cluster
        self.release = release
        self.munge_socket = munge_socket
        self.slurm_uid = slurm_uid
        self.client_timeout = client_timeout
        # Refuse before the process runs out of descriptors (each connection holds one).
        self.max_connections = min(max_connections, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 256)
        self.workers = workers
        self.log: Log = log or (lambda *a, **k: None)
        self.connections = 0
        self.requests = 0
        self._listeners: list[socket.socket] = []
        self._acceptors: list[asyncio.Task[None]] = []
        self._lookups: dict[str | None, _Lookups] = {}
        self._munge_local = threading.local()
        self._tasks: set[asyncio.Task[None]] = set()

    # --- lifecycle ---------------------------------------------------------------------------------

    def _lookups_for(self, netns: str | None) -> _Lookups:
        if netns not in self._lookups:
            self._lookups[netns] = _Lookups(netns, self.workers)
        return self._lookups[netns]

    async def serve(self, node: NodeSpec) -> int:
        """Listen for `node` (at its address, and its address6 if any); returns the port (useful when the
        scenario said 0)."""
        lookups = self._lookups_for(node.netns)
        loop = asyncio.get_running_loop()
        port = node.port
        for address in (node.address, node.address6):
            if address is None:
                continue
            sock = await loop.run_in_executor(lookups.executor, lookups.listen, address, port)
            port = int(sock.getsockname()[1])
            bound = replace(node, port=port)
            self._listeners.append(sock)
            self._acceptors.append(loop.create_task(accept_forever(
                sock, functools.partial(self._accept, node=bound), self._tasks,
                lambda exc: self.log("accept_error", level="warning", node=node.name, error=str(exc)),
                lambda exc: self.log("error", level="error", node=node.name, reason=repr(exc)))))
            self.log("listen", node=node.name, address=address, port=port, netns=node.netns)
        return port

    async def close(self) -> None:
        for acceptor in self._acceptors:
            acceptor.cancel()
        for sock in self._listeners:
            sock.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._acceptors, *self._tasks, return_exceptions=True)
        self._acceptors.clear()
        self._listeners.clear()
        for lookups in self._lookups.values():
            lookups.executor.shutdown(wait=False, cancel_futures=True)

    # --- one connection ------------------------------------------------------------------------------

    async def _accept(self, sock: socket.socket, address: Any, node: NodeSpec) -> None:
        # accept()'s address, not getpeername(): a client that reset at once has no peer name any more.
        peer: tuple[Any, ...] = address if isinstance(address, tuple) and len(address) >= 2 else ("?", 0)
        where = f"{peer[0]}:{peer[1]}"
        self.connections += 1
        started = time.monotonic()
        writer: asyncio.StreamWriter | None = None
        try:
            if self.connections > self.max_connections:
                self.log("refused", level="warning", node=node.name, peer=where,
                         reason=f"more than {self.max_connections} connections")
                return
            reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_REQUEST)
            answer = await self._serve_one(reader, node, peer)
            if answer.data:
                writer.write(answer.data)
                await asyncio.wait_for(writer.drain(), self.client_timeout)
            self.log("request", node=node.name, peer=where, verdict=answer.verdict,
                     ms=round((time.monotonic() - started) * 1000, 3))
        except Close as why:
            self.log("closed", node=node.name, peer=where, reason=str(why),
                     ms=round((time.monotonic() - started) * 1000, 3))
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError) as exc:
            self.log("dropped", node=node.name, peer=where, reason=type(exc).__name__)
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # never let one client take the server down
            self.log("error", level="error", node=node.name, peer=where, reason=repr(exc))
        finally:
            self.connections -= 1
            if writer is not None:
                await finish(writer, self.client_timeout)
            else:
                sock.close()

    async def _read_frame(self, reader: asyncio.StreamReader) -> bytes:
        decoder = Decoder(FrameOptions(max_length=MAX_REQUEST))
        deadline = time.monotonic() + self.client_timeout
        while True:
            try:
                data = decoder.next_payload()
            except InsaneMessageLength as exc:
                raise Close(str(exc)) from None
            except ProtocolError as exc:
                raise Close(str(exc)) from None
            if data is not None:
                return data
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Close(f"no whole request within {self.client_timeout:g} s")
            try:
                chunk = await asyncio.wait_for(reader.read(65536), remaining)
            except TimeoutError:
                raise Close(f"no whole request within {self.client_timeout:g} s") from None
            if not chunk:
                decoder.feed_eof()
                if not decoder.pending:
                    raise Close("client closed before sending a request")
            decoder.feed(chunk)

    async def _serve_one(self, reader: asyncio.StreamReader, node: NodeSpec, peer: tuple[Any, ...]) -> Answer:
        data = await self._read_frame(reader)
        self.requests += 1
        loop = asyncio.get_running_loop()
        version = int.from_bytes(data[:2], "big") if len(data) >= 2 else 0
        release = self.release or release_for(version)
        if release is None:
            raise Close(f"protocol version 0x{version:04x} not supported")
        rules = behaviour_of(release)
        options = FrameOptions(max_length=MAX_REQUEST, nul_check=rules.nul_check,
                               exact_body_length=rules.exact_body_length)
        # 1. the header and its version
        try:
            header, offset = read_header(data, options)
        except ProtocolError as exc:
            raise Close(f"header: {exc}") from None
        if not release.accepts(header.version):
            return await self._refuse(release, rules.bad_version, f"protocol version 0x{header.version:04x}", peer)
        # 2. the credential
        if not header.has_auth and rules.refuses_no_auth_cred:
            return await self._refuse(release, rules.bad_cred_verify, "message without a credential", peer)
        try:
            auth, offset = read_auth(data, offset, header, options)
        except (UnknownAuthPlugin, ProtocolError) as exc:
            return await self._refuse(release, rules.bad_cred_unpack, f"credential: {exc}", peer)
        plugin = AuthPlugin.AUTH_MUNGE if self.keys is None else AuthPlugin.AUTH_SLURM
        if auth is not None and auth.plugin_id != plugin:
            raise Close(f"credential of plugin {auth.plugin_id}, not {plugin.plugin_name}")
        if auth is None or auth.credential is None:
            return await self._refuse(release, rules.bad_cred_unpack, f"no {plugin.plugin_name} credential", peer)
        try:
            decoded = await loop.run_in_executor(self._lookups_for(None).executor, self._decode, auth.credential,
                                                 release)
        except (MungeError, TokenError) as exc:
            return await self._refuse(release, rules.bad_cred_verify, f"{plugin.plugin_name}: {exc}", peer)
        if rules.rejects_nobody and SLURM_AUTH_NOBODY in (decoded.uid, decoded.gid):
            return await self._refuse(release, rules.bad_cred_verify, "credential of uid/gid 99", peer)
        uid = decoded.uid
        # 3. the body: its length, its hash, its fields
        try:
            body = read_body(data, offset, header, options)
            check_payload(decoded.payload, body, header.msg_type, block_null="block_null_hash" in self.hash_blocks,
                          block_zero="block_zero_hash" in self.hash_blocks)
            message = message_class(header.msg_type).decode(body, header.version, nul_check=rules.nul_check)
        except (HashMismatch, ProtocolError) as exc:
            reply = await self._rc(rules, header, ESLURM_PROTOCOL_INCOMPLETE_PACKET, uid, peer)
            return Answer(reply, f"rc 5003 from uid {uid}: {exc}")
        # 4. the answer
        if isinstance(message, NetworkCallerIdRequest):
            return await self._callerid(rules, header, message, uid, node)
        if isinstance(message, JobIdRequest):
            return await self._job_id(rules, header, message, uid, node, peer)
        return Answer(await self._rc(rules, header, EINVAL, uid, peer), f"rc 22: {MsgType(header.msg_type).name}")

    async def _refuse(self, release: Release, how: Refusal, why: str, peer: tuple[Any, ...]) -> Answer:
        rules = behaviour_of(release)
        if how is Refusal.CLOSE:
            await asyncio.sleep(rules.refusal_delay)
            raise Close(why)
        if how is Refusal.HTTP_405:
            return Answer(HTTP_405, f"http 405: {why}")
        own = release.protocol_version  # replies sent before the request's version is known
        frame = encode_frame(ReturnCode(SLURM_PROTOCOL_AUTHENTICATION_ERROR), own, flags=rules.bad_auth_flags,
                             orig_addr=_addr(peer))
        return Answer(frame, f"rc 1007: {why}")

    async def _rc(self, rules: SlurmdRules, request: Header, rc: int, uid: int, peer: tuple[Any, ...]) -> bytes:
        """RESPONSE_SLURM_RC in the request's version, carrying the asker's address like slurmd's."""
        message = ReturnCode(rc)
        if not rules.rc_with_credential:
            flags = (request.flags | HeaderFlags.SLURM_NO_AUTH_CRED) & ~HeaderFlags.SLURMDBD_CONNECTION
            return encode_frame(message, request.version, flags=flags, orig_addr=_addr(peer))
        # 22.05 signs it for the asker, or for anyone when the asker is root or SlurmUser.
        r_uid = 0xFFFFFFFF if uid in (0, self.slurm_uid) else uid
        return await self._signed(message, request.version, r_uid, request.flags, _addr(peer))

    async def _signed(self, message: Message, version: int, r_uid: int, flags: int = 0,
                      orig_addr: SlurmAddr | None = None) -> bytes:
        body = message.encode(version)
        credential = await asyncio.get_running_loop().run_in_executor(
            self._lookups_for(None).executor, self._encode, payload_hash(body, message.MSG_TYPE), r_uid, version)
        plugin = AuthPlugin.AUTH_MUNGE if self.keys is None else AuthPlugin.AUTH_SLURM
        return encode_frame(message, version, credential=credential, body=body, flags=flags, orig_addr=orig_addr,
                            plugin_id=plugin)

    async def _callerid(self, rules: SlurmdRules, header: Header, request: NetworkCallerIdRequest, uid: int,
                        node: NodeSpec) -> Answer:
        lookups = self._lookups_for(node.netns)
        found = await asyncio.get_running_loop().run_in_executor(lookups.executor, self._find_job, lookups,
                                                                 node, request)
        job, step, why = found
        tuple_text = _tuple_text(request)
        if request.af not in (AF_INET, AF_INET6):
            self.log("unknown address family", level="warning", node=node.name, uid=uid, af=request.af,
                     connection=tuple_text, lookup="as IPv4, then as IPv6, like slurmd")
        if job is not None and uid not in (0, self.slurm_uid) and uid != job.uid:
            self.log("security violation", level="error",
                     message=f"Security violation, REQUEST_NETWORK_CALLERID from uid={uid}")
            why = f"job {job.job_id} is not uid {uid}'s"
            job = None
        if job is None:
            reply = NetworkCallerIdResponse(NO_VAL, 0, node.name, 0, NO_VAL, NO_VAL)
        else:
            reply = NetworkCallerIdResponse(job.job_id, 0, node.name, 0,
                                            step if rules.callerid_step else NO_VAL, NO_VAL)
        data = await self._signed(reply, header.version, uid)
        verdict = f"job {job.job_id}" if job is not None else f"NO_VAL ({why})"
        self.log("callerid", level="debug", node=node.name, uid=uid, connection=tuple_text, verdict=verdict)
        return Answer(data, f"callerid {tuple_text} for uid {uid}: {verdict}")

    async def _job_id(self, rules: SlurmdRules, header: Header, request: JobIdRequest, uid: int, node: NodeSpec,
                      peer: tuple[Any, ...]) -> Answer:
        job = job_of(self.jobs, node.name, request.job_pid)
        if job is None:
            return Answer(await self._rc(rules, header, ESLURM_INVALID_JOB_ID, uid, peer),
                          f"job id of pid {request.job_pid}: none")
        step = step_of(job, request.job_pid) if rules.callerid_step else NO_VAL
        reply = JobIdResponse(job.job_id, 0, 0, step, NO_VAL)
        return Answer(await self._signed(reply, header.version, uid), f"job id of pid {request.job_pid}: {job.job_id}")

    # --- blocking work (worker threads) ----------------------------------------------------------------

    def _munge(self) -> MungeContext:
        context = getattr(self._munge_local, "context", None)
        if context is None:
            context = self._munge_local.context = MungeContext(self.munge_socket)
        return context

    def _decode(self, credential: str, release: Release) -> Any:
        if self.keys is not None:
            # A slurmd verifies as itself: a token restricted to another uid is refused.
            return verify(credential, self.keys, verifier_uid=os.getuid(), absent=release.auth_slurm.absent_ids,
                          max_length=MAX_REQUEST)
        return self._munge().decode(credential)

    def _encode(self, payload: bytes, r_uid: int, version: int) -> str:
        if self.keys is not None:
            release = self.release or release_for(version)
            ver = release.protocol_version if release is not None else version
            return KeySigner(self.keys, ver, cluster=self.cluster, r_uid=r_uid).encode(payload)
        with MungeContext(self.munge_socket, uid_restriction=r_uid) as context:
            return context.encode(payload).decode("ascii")

    def _find_job(self, lookups: _Lookups, node: NodeSpec,
                  request: NetworkCallerIdRequest) -> tuple[Job | None, int, str]:
        """The job (and step) holding the connection, seen from this node: its local end is the request's
        source, its peer the request's destination."""
        found = None
        for family in _families(request.af):
            local = (unpack(family, request.ip_src), request.port_src)
            remote = (unpack(family, request.ip_dst), request.port_dst)
            try:
                found = find_tcp(local, remote)  # on a thread inside the node's network namespace
            except (OSError, ValueError) as exc:
                return None, NO_VAL, f"lookup failed: {exc}"
            if found is not None:
                break
        if found is None:
            return None, NO_VAL, "no such connection"
        pid = lookups.index.lookup(found.inode, lambda: candidate_pids(self.jobs, node.name, found.uid))
        if pid is None:
            return None, NO_VAL, f"socket {found.inode} is held by no job's process"
        job = job_of(self.jobs, node.name, pid)
        if job is None:
            return None, NO_VAL, f"pid {pid} is in no job"
        return job, step_of(job, pid), f"pid {pid}"


def _families(af: int) -> tuple[int, ...]:
    """Which address families to look the connection up as. slurmd ignores the request's af: it scans
    /proc/net/tcp comparing 4 address bytes, then /proc/net/tcp6 comparing 16 (callerid.c, every release
    22.05-26.05). For AF_INET and AF_INET6 the other table cannot hold the connection the addresses name,
    so one lookup finds what both would; any other af is looked up both ways, in slurmd's order."""
    return (af,) if af in (AF_INET, AF_INET6) else (AF_INET, AF_INET6)


def _tuple_text(request: NetworkCallerIdRequest) -> str:
    """The request's connection for the log: addresses as text, or as hex under an unknown af."""
    if request.af in (AF_INET, AF_INET6):
        src, dst = unpack(request.af, request.ip_src), unpack(request.af, request.ip_dst)
    else:
        src, dst = f"af{request.af}:{request.ip_src.hex()}", f"af{request.af}:{request.ip_dst.hex()}"
    return f"{src}:{request.port_src} -> {dst}:{request.port_dst}"


def _addr(peer: tuple[Any, ...]) -> SlurmAddr:
    try:
        return SlurmAddr(*pack(str(peer[0])), int(peer[1]))
    except ValueError:  # no address known for this peer: orig_addr says so (family 0), as an unset one does
        return SlurmAddr()

