"""A simulated slurmstepd: the unix-socket server of one step, as real clients see it.

One FakeStepd listens on `<spool>/<node>_<job>.<step>[.<het>]` (mode 0777, like slurmstepd) and speaks
the stepd protocol of `slurmproto.stepd` (native-endian C ints, no framing, several requests per
connection). Per connection, like `_handle_accept` in `src/slurmd/slurmstepd/req.c` of every release
22.05 to 26.05: read the client's int version (a blocking full read); below the release's
SLURM_MIN_PROTOCOL_VERSION, or if SO_PEERCRED fails, write int -1 and close; else write the release's
own version and serve requests until EOF or a handler error. Each request number is taken with one
read(2) of 4 bytes: a short read (half an int) closes the connection, as in the real one.

What each request does, per release (read from req.c at slurm-22-05-8-1, 23-02-8-1, 23-11-11-1,
24-05-8-1, 24-11-5-1, 24-11-6-1, 24-11-7-1, 25-05-0-1, 25-05-1-1, 25-05-8-1, 25-11-0-1, 25-11-7-1,
26-05-3-1; the per-release facts are the stepd part of each row of the release table,
`slurmproto.versions.StepdRules`, which this module reads):

* 22.05 to 25.05 dispatch with a `switch`: a number without a case (0 REQUEST_CONNECT, the DEFUNCT
  values 1, 2, 3, 6, 13, anything from 28 up except REQUEST_JOB_NOTIFY (4022) and, in 24.05-25.05,
  the stepmgr relays; negatives) is "Unrecognized request" and closes the connection without an
  answer. Handlers check authorisation themselves; ADD_EXTERN_PID answers -1 to a peer that is
  neither root nor SlurmUser (after reading the pid).
* 25.11 and 26.05 dispatch through the table `stepd_rpcs[]`: unknown numbers (0 included: it ends the
  table) close as before; a request whose `from_slurmd` (root or SlurmUser) or `from_job_owner` (the
  step's uid, root or SlurmUser) check fails closes the connection with no answer and nothing more read.
  Request 1 is REQUEST_SLUID; 28 GET_NS_FDS, 29 GET_BPF_TOKEN; 26.05 adds 30 and 31.
* REQUEST_GET_NS_FD (26) on 25.11+ writes one (fd, SCM_RIGHTS) pair per CLONE_NEWNS namespace and
  nothing at all when no namespace plugin is configured (`namespace_g_join_external` succeeds with an
  empty list), then goes on reading requests: a pre-25.11 client waits for an int that never comes.
  Before 25.11 it writes the stepd's fd number of the job container's (mount) namespace, then, if that
  is above 0, the fd itself as SCM_RIGHTS on a one-byte message; 0 is no container, -1 a failed open.
  REQUEST_GET_NS_FDS (25.11+) writes a count, then per namespace its int CLONE_NEW* type and the fd.
  A job's namespaces come from the scenario (`Job.namespaces`, files opened at each request, checked to
  be namespaces of the kind declared); on 25.11+ one that cannot be opened closes the connection (the
  handler's error). X11_DISPLAY writes the display (0: none), the xauthority's length with its NUL (0:
  none) and the path, in every release.
* ADD_EXTERN_PID on a step whose state is CANCELLED or later closes without reading the pid, from
  24.11.6, 25.05.1 and 25.11.0 (not in 24.11.0-24.11.5 nor 25.05.0). Simulated steps never end, so that
  branch is never taken here; see `_step_ending`.

Requests the real stepd serves but this fake does not emulate (signalling, attach, suspend/resume,
terminate, completion, stat, reconfigure, notify, getpw/getgr/gethost, BPF tokens, memory-limit
updates, job usage, and the 24.05-25.05 stepmgr relays) are logged as "unsupported" and close the
connection (after the 25.11+ authorisation check, which would close it too). Deliberate differences
from the real one, for robustness: every read has a timeout (a stalled client is dropped; slurmstepd
would block a thread forever), the listen backlog is larger than slurmstepd's 32, and running out of
descriptors pauses accepting for a moment instead of spinning. The peer's credentials are read before
the version check (slurmstepd reads them after it) only so that a refusal's log names the peer.

Log events, as `log(event, **fields)`: "listen", "closed" (path); "handshake" (verdict accepted or
refused, client_version, version, reason); "request" (request, number, verdict: answered, failed (an
answer of -1), refused (25.11+ authorisation), silent, unrecognized, unsupported; plus the call's
values); "disconnect" (reason, requests); "error" (an unexpected exception; the connection is closed);
"accept_error" (at most one a second). Connection events carry job_id, step, peer_uid, peer_pid and
the release the connection is served as.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from fake_slurmd.accept import accept_forever
from fake_slurmd.membership import adopted_on
from fake_slurmd.scenario import Job
from fake_slurmd.streams import finish
from slurmproto.constants import NO_VAL, SLURM_EXTERN_CONT, step_name
from slurmproto.constants import OtherStepRequest as OtherRequest
from slurmproto.stepd import (
    ADD_EXTERN_PID_REPLY,
    CLONE_NEWNS,
    DAEMON_PID_REPLY,
    INT,
    NS_FD_REPLY,
    NS_FDS_REPLY,
    PID_IN_CONTAINER_REPLY,
    SLUID_REPLY,
    STATE_REPLY,
    STEP_UID_REPLY,
    U64,
    UINT,
    X11_DISPLAY_REPLY,
    StepRequest,
)
from slurmproto.versions import Release, release_at_or_below

_logger = logging.getLogger(__name__)

INT_SIZE = INT.sizeof()

SLURMSTEPD_STEP_RUNNING = 2
"""slurmstepd_state_t: 0 not running, 1 starting, 2 running in every release (23.11 inserted CANCELLED
at 3, moving ENDING from 3 to 4)."""

DEFAULT_READ_TIMEOUT = 10.0
LISTEN_BACKLOG = 1024
"""slurmstepd listens with 32; more lets a burst of clients queue instead of failing with EAGAIN."""
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
NS_GET_NSTYPE = 0xB703
"""ioctl on a namespace fd: its CLONE_NEW* type (linux/nsfs.h)."""


def known_requests(release: Release) -> frozenset[int]:
    """The request numbers a stepd of `release` dispatches (its row); any other number closes the connection."""
    return release.stepd.requests


def request_name(number: int, release: Release) -> str:
    """Slurm's name for a request number that `release` dispatches, else "request N"."""
    if number in known_requests(release):
        for enum in (StepRequest, OtherRequest):
            with contextlib.suppress(ValueError):
                return enum(number).name
    return f"request {number}"


class _Close(Exception):
    """End the connection (EOF, short read, timeout, or what the real one does after a handler error)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(eq=False)
class _Conn:
    """One accepted connection."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    sock: socket.socket
    uid: int = -1
    pid: int = 0
    release: Release | None = None
    requests: int = 0

    @property
    def rel(self) -> Release:
        assert self.release is not None  # set by the handshake before any request is read
        return self.release


Handler = Callable[["FakeStepd", _Conn], Awaitable[bool]]


class FakeStepd:
    """The slurmstepd of one step of a simulated job, listening on a unix socket."""

    def __init__(self, path: str, job: Job, step_id: int, *, release: Release | None, slurm_uid: int = 0,
                 contains: Callable[[int], bool], log: Callable[..., None] | None = None,
                 het_comp: int = NO_VAL, sluid: int = 0, read_timeout: float = DEFAULT_READ_TIMEOUT,
                 node_id: int = 0, node: str | None = None) -> None:
        """`release=None` answers every client as the release of its own version (release_at_or_below).

        `contains(pid)` says whether a pid belongs to the job; `log(event, **fields)` gets structured
        events; `read_timeout` bounds every read from a client; `node_id` is the node's index in the job,
        `node` its name (adoptions are then recorded as that node's too, in job.adopted_on).
        """
        self.path = path
        self.job = job
        self.step_id = step_id
        self.release = release
        self.slurm_uid = slurm_uid
        self.contains = contains
        self.het_comp = het_comp
        self.sluid = sluid
        self.read_timeout = read_timeout
        self.node_id = node_id
        self.node = node
        self.connections = 0
        """Connections currently open."""
        self._log = log
        self._listener: socket.socket | None = None
        self._acceptor: asyncio.Task[None] | None = None
        self._inode: tuple[int, int] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: dict[_Conn, asyncio.StreamWriter] = {}

    # --- life cycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on `path`: an existing file there is unlinked first; the socket is made mode 0777."""
        if len(os.fsencode(self.path)) > 107:  # sun_path holds 108 bytes with the NUL
            raise ValueError(f"unix socket path too long: {self.path}")
        if self._listener is not None:
            raise RuntimeError(f"{self.path}: already listening")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # slurmstepd removes a stale socket (or any file) left at its path
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            listener.bind(self.path)
            listener.listen(LISTEN_BACKLOG)
            listener.setblocking(False)
            os.chmod(self.path, 0o777)  # anyone may connect; requests are authorised by SO_PEERCRED
            st = os.stat(self.path)
        except BaseException:
            listener.close()
            raise
        self._listener, self._inode = listener, (st.st_dev, st.st_ino)
        self._acceptor = asyncio.get_running_loop().create_task(
            accept_forever(listener, lambda sock, _address: self._connection(sock), self._tasks,
                           lambda exc: self._emit("accept_error", path=self.path, error=str(exc)),
                           lambda exc: self._emit("error", job_id=self.job.job_id, error=repr(exc))))
        self._emit("listen", path=self.path, release=self.release.name if self.release else "any")

    async def close(self) -> None:
        """Stop listening, drop the open connections and unlink the socket (if it is still ours)."""
        acceptor, self._acceptor = self._acceptor, None
        if acceptor is not None:
            acceptor.cancel()
            await asyncio.gather(acceptor, return_exceptions=True)
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        for writer in list(self._writers.values()):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._inode is not None:
            try:
                st = os.stat(self.path)
                if (st.st_dev, st.st_ino) == self._inode and stat.S_ISSOCK(st.st_mode):
                    os.unlink(self.path)  # not a socket someone else has since created at this path
            except FileNotFoundError:
                pass
            self._inode = None
        if listener is not None:
            self._emit("closed", path=self.path)

    async def __aenter__(self) -> FakeStepd:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- connections ------------------------------------------------------------------------------

    async def _connection(self, sock: socket.socket) -> None:
        self.connections += 1
        conn: _Conn | None = None
        try:
            sock.setblocking(False)
            reader, writer = await asyncio.open_unix_connection(sock=sock)
            conn = _Conn(reader, writer, sock)
            self._writers[conn] = writer
            await self._serve(conn)
        except _Close as close:
            assert conn is not None
            self._emit("disconnect", **self._peer(conn), reason=close.reason, requests=conn.requests)
        except asyncio.CancelledError:
            if conn is not None:
                self._emit("disconnect", **self._peer(conn), reason="server closing", requests=conn.requests)
        except Exception as exc:  # never let a client take the server down
            fields = self._peer(conn) if conn is not None else {"job_id": self.job.job_id}
            self._emit("error", **fields, error=repr(exc), requests=conn.requests if conn else 0)
        finally:
            self.connections -= 1
            if conn is None:
                sock.close()
            else:
                del self._writers[conn]
                await finish(conn.writer, self.read_timeout)

    async def _serve(self, conn: _Conn) -> None:
        # Handshake: a full read of the version (safe_read), checked before the peer's credentials. The
        # credentials are fetched first here only so that a refusal's log names the peer.
        version = int(INT.parse(await self._read_exactly(conn, INT_SIZE, "handshake")))
        try:
            raw = conn.writer.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                                  _UCRED.size)
            conn.pid, conn.uid, _gid = _UCRED.unpack(raw)
            peercred_error = None
        except (OSError, AttributeError, struct.error) as exc:
            peercred_error = f"SO_PEERCRED failed: {exc}"
        release = self.release if self.release is not None else release_at_or_below(version)
        if release is None or not release.stepd_accepts(version):
            await self._refuse(conn, version, "protocol version too old")
        if peercred_error is not None:
            await self._refuse(conn, version, peercred_error)
        conn.release = release
        self._emit("handshake", **self._peer(conn), client_version=version, version=release.protocol_version,
                   verdict="accepted")
        await self._write(conn, INT.build(release.protocol_version))
        while await self._request(conn):
            pass
        raise _Close("handler closed the connection")

    async def _refuse(self, conn: _Conn, version: int, reason: str) -> NoReturn:
        """Answer -1 and close, as slurmstepd does for an old client or unreadable credentials."""
        self._emit("handshake", **self._peer(conn), client_version=version, verdict="refused", reason=reason)
        await self._write(conn, INT.build(-1))
        raise _Close(reason)

    async def _request(self, conn: _Conn) -> bool:
        """Serve one request; False closes the connection (the real one's non-zero handler return)."""
        # One read(2) of an int, not safe_read: EOF ends the loop normally, a short read is an error.
        try:
            data = await asyncio.wait_for(conn.reader.read(INT_SIZE), self.read_timeout)
        except TimeoutError:
            raise _Close("timed out waiting for a request") from None
        except OSError as exc:
            raise _Close(f"error reading a request: {exc}") from None
        if not data:
            raise _Close("EOF")
        if len(data) != INT_SIZE:
            raise _Close(f"short read of a request number ({len(data)} bytes)")
        number = int(INT.parse(data))
        conn.requests += 1
        release = conn.rel
        name = request_name(number, release)
        if number not in known_requests(release):
            self._emit("request", **self._peer(conn), request=name, number=number, verdict="unrecognized")
            return False
        if not self._allowed(release, number, conn.uid):
            # stepd_rpcs[] check (25.11+): the handler returns EPERM, the connection closes, nothing more is read.
            self._emit("request", **self._peer(conn), request=name, number=number, verdict="refused")
            return False
        handler = _HANDLERS.get(number)
        if handler is None:
            self._emit("request", **self._peer(conn), request=name, number=number, verdict="unsupported")
            return False
        return await handler(self, conn)

    def _authorized(self, uid: int) -> bool:
        """_slurm_authorized_user(): root or SlurmUser."""
        return uid in (0, self.slurm_uid)

    def _allowed(self, release: Release, number: int, uid: int) -> bool:
        """The release's dispatch-table check of the peer (its row's slurmd_only and owner_only)."""
        if number in release.stepd.slurmd_only:
            return self._authorized(uid)
        if number in release.stepd.owner_only:
            return uid == self.job.uid or self._authorized(uid)
        return True

    def _step_ending(self) -> bool:
        """Whether the step's state is CANCELLED or later: simulated steps never end."""
        return False

    # --- I/O --------------------------------------------------------------------------------------

    async def _read_exactly(self, conn: _Conn, size: int, what: str) -> bytes:
        try:
            return await asyncio.wait_for(conn.reader.readexactly(size), self.read_timeout)
        except TimeoutError:
            raise _Close(f"timed out reading {what}") from None
        except asyncio.IncompleteReadError as exc:
            raise _Close(f"EOF reading {what} ({len(exc.partial)} of {size} bytes)") from None
        except OSError as exc:
            raise _Close(f"error reading {what}: {exc}") from None

    async def _write(self, conn: _Conn, data: bytes) -> None:
        try:
            conn.writer.write(data)
            await asyncio.wait_for(conn.writer.drain(), self.read_timeout)
        except TimeoutError:
            raise _Close("timed out writing a reply") from None
        except OSError as exc:
            raise _Close(f"error writing a reply: {exc}") from None

    async def _send_fd(self, conn: _Conn, fd: int) -> None:
        """One byte carrying `fd` as SCM_RIGHTS (send_fd_over_pipe), after everything written before it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.read_timeout
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]).tobytes())]
        while True:
            if conn.writer.transport.get_write_buffer_size() == 0:  # the ints before it have left
                try:
                    conn.sock.sendmsg([b"\0"], rights)
                    return
                except BlockingIOError:
                    pass
                except OSError as exc:
                    raise _Close(f"error sending a file descriptor: {exc}") from None
            if loop.time() > deadline:
                raise _Close("timed out sending a file descriptor")
            await asyncio.sleep(0.005)

    def _open_namespaces(self, kinds: frozenset[int] | None = None) -> tuple[list[tuple[int, int]], str | None]:
        """The job's namespaces (those of `kinds`, default all) opened as (type, fd); on a failure none is
        left open and the reason is returned."""
        opened: list[tuple[int, int]] = []
        for kind, path in self.job.namespaces:
            if kinds is not None and kind not in kinds:
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO must not block
                try:
                    actual = fcntl.ioctl(fd, NS_GET_NSTYPE)
                except OSError:
                    actual = -1
                if actual != kind:
                    os.close(fd)
                    raise OSError(f"not a namespace of type 0x{kind:x}")
            except OSError as exc:
                for _kind, other in opened:
                    os.close(other)
                return [], f"{path}: {exc.strerror or exc}"
            opened.append((kind, fd))
        return opened, None

    async def _read_pid(self, conn: _Conn) -> int:
        return int(INT.parse(await self._read_exactly(conn, INT_SIZE, "a pid")))

    # --- logging ----------------------------------------------------------------------------------

    def _peer(self, conn: _Conn) -> dict[str, Any]:
        fields: dict[str, Any] = {"job_id": self.job.job_id, "step": step_name(self.step_id)}
        if conn.uid >= 0:
            fields.update(peer_uid=conn.uid, peer_pid=conn.pid)
        if conn.release is not None:
            fields["release"] = conn.release.name
        return fields

    def _emit(self, event: str, **fields: Any) -> None:
        try:
            if self._log is not None:
                self._log(event, **fields)
            else:
                _logger.debug("%s %s", event, fields)
        except Exception as exc:  # a broken log callback must not break the protocol (one line, no traceback)
            _logger.error("log callback failed for %s: %r", event, exc)

    def _answered(self, conn: _Conn, number: int, verdict: str = "answered", **fields: Any) -> None:
        """Log a request's outcome; handlers call it before replying, so the log leads the client."""
        self._emit("request", **self._peer(conn), request=request_name(number, conn.rel), number=int(number),
                   verdict=verdict, **fields)

    # --- handlers: True keeps the connection, False closes it -------------------------------------

    async def _h_step_uid(self, conn: _Conn) -> bool:
        self._answered(conn, StepRequest.REQUEST_STEP_UID, uid=self.job.uid)
        await self._write(conn, STEP_UID_REPLY.build(self.job.uid))
        return True

    async def _h_add_extern_pid(self, conn: _Conn) -> bool:
        number = StepRequest.REQUEST_ADD_EXTERN_PID
        # 24.11.6+, 25.05.1+, 25.11+: a step whose state is CANCELLED or later closes the connection
        # before reading the pid. Simulated steps never end, so this is only the branch point.
        if conn.rel.stepd.ending_step_closes and self._step_ending():
            self._answered(conn, number, verdict="step ending")
            return False
        pid = await self._read_pid(conn)
        if not self._authorized(conn.uid):
            # The handler checks the peer after reading the pid and answers -1 (22.05-25.05; from 25.11 the
            # dispatch table's slurmd_only check has closed on such a peer before).
            self._answered(conn, number, verdict="failed", pid=pid, rc=-1, reason="peer is not root or SlurmUser")
            await self._write(conn, ADD_EXTERN_PID_REPLY.build(-1))
            return True
        reason = self._adopt(pid)
        if reason is None:
            self._answered(conn, number, pid=pid, rc=0)
        else:
            self._answered(conn, number, verdict="failed", pid=pid, rc=-1, reason=reason)
        await self._write(conn, ADD_EXTERN_PID_REPLY.build(0 if reason is None else -1))
        return True

    def _adopt(self, pid: int) -> str | None:
        """_handle_add_extern_pid_internal: None on success, else why it failed."""
        if self.step_id != SLURM_EXTERN_CONT:
            return f"not the extern step ({step_name(self.step_id)})"
        if self.job.adopt_cgroup is not None:  # proctrack/cgroup's part comes first; its failure is -1
            procs = os.path.join(self.job.adopt_cgroup, "cgroup.procs")
            try:
                fd = os.open(procs, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)  # never creates the file
                try:
                    os.write(fd, f"{pid}\n".encode())
                finally:
                    os.close(fd)
            except OSError as exc:
                return f"cannot write {procs}: {exc.strerror or exc}"
        self.job.adopted.append(pid)
        if self.node is not None:
            self.job.adopted_on.setdefault(self.node, []).append(pid)
        return None

    async def _h_pid_in_container(self, conn: _Conn) -> bool:
        pid = await self._read_pid(conn)
        inside = (self.step_id == SLURM_EXTERN_CONT and pid in adopted_on(self.job, self.node)) \
            or bool(self.contains(pid))
        self._answered(conn, StepRequest.REQUEST_PID_IN_CONTAINER, pid=pid, contained=inside)
        await self._write(conn, PID_IN_CONTAINER_REPLY.build(inside))
        return True

    async def _h_x11_display(self, conn: _Conn) -> bool:
        # The display (0 = no X11 forwarding), then the xauthority's length counting its NUL (0: no path).
        x11 = self.job.x11
        display = x11.display if x11 is not None else 0
        path = (x11.xauthority.encode() + b"\0") if x11 is not None and x11.xauthority is not None else b""
        self._answered(conn, StepRequest.REQUEST_X11_DISPLAY, display=display,
                       xauthority=x11.xauthority if x11 is not None else None)
        await self._write(conn, X11_DISPLAY_REPLY.build({"display": display, "xauthority_len": len(path)}) + path)
        return True

    async def _h_get_ns_fd(self, conn: _Conn) -> bool:
        number = StepRequest.REQUEST_GET_NS_FD
        opened, failure = self._open_namespaces(frozenset({CLONE_NEWNS}))
        try:
            if not conn.rel.stepd.ns_fd_count_reply:
                # 25.11+: one (fd, SCM_RIGHTS) pair per mount namespace. With no namespace plugin that is
                # nothing at all, and the connection stays open for the next request.
                if failure is not None:
                    self._answered(conn, number, verdict="failed", reason=failure)
                    return False
                self._answered(conn, number, verdict="answered" if opened else "silent", namespaces=len(opened))
                for _kind, fd in opened:
                    await self._write(conn, NS_FD_REPLY.build(fd))
                    await self._send_fd(conn, fd)
                return True
            # 22.05-25.05: container_g_join_external() gives the one container's fd, 0 without one, or -1.
            fd = -1 if failure is not None else (opened[0][1] if opened else 0)
            self._answered(conn, number, verdict="failed" if fd < 0 else "answered", fd=fd,
                           **({"reason": failure} if failure else {}))
            await self._write(conn, NS_FD_REPLY.build(fd))
            if fd > 0:
                await self._send_fd(conn, fd)
            return True
        finally:
            for _kind, fd in opened:
                os.close(fd)

    async def _h_get_ns_fds(self, conn: _Conn) -> bool:
        number = StepRequest.REQUEST_GET_NS_FDS
        opened, failure = self._open_namespaces()
        try:
            if failure is not None:  # namespace_g_join_external failed: the handler's error closes
                self._answered(conn, number, verdict="failed", reason=failure)
                return False
            self._answered(conn, number, namespaces=len(opened))
            await self._write(conn, NS_FDS_REPLY.build(len(opened)))  # no namespace plugin: count 0
            for kind, fd in opened:
                await self._write(conn, INT.build(kind))
                await self._send_fd(conn, fd)
            return True
        finally:
            for _kind, fd in opened:
                os.close(fd)

    async def _h_daemon_pid(self, conn: _Conn) -> bool:
        self._answered(conn, StepRequest.REQUEST_DAEMON_PID, pid=os.getpid())
        await self._write(conn, DAEMON_PID_REPLY.build(os.getpid()))
        return True

    async def _h_sluid(self, conn: _Conn) -> bool:
        self._answered(conn, StepRequest.REQUEST_SLUID, sluid=self.sluid)
        await self._write(conn, SLUID_REPLY.build(self.sluid))
        return True

    async def _h_state(self, conn: _Conn) -> bool:
        self._answered(conn, StepRequest.REQUEST_STATE, state=SLURMSTEPD_STEP_RUNNING)
        await self._write(conn, STATE_REPLY.build(SLURMSTEPD_STEP_RUNNING))
        return True

    async def _h_mem_limits(self, conn: _Conn) -> bool:
        # u64 job_mem then u64 step_mem (MB, 0 = no limit); 26.05 sends job_mem only.
        count = conn.rel.stepd.mem_limits_values
        self._answered(conn, OtherRequest.REQUEST_STEP_MEM_LIMITS, limits=count)
        await self._write(conn, U64.build(0) * count)
        return True

    async def _h_nodeid(self, conn: _Conn) -> bool:
        self._answered(conn, OtherRequest.REQUEST_STEP_NODEID, node_id=self.node_id)
        await self._write(conn, UINT.build(self.node_id))
        return True

    async def _h_task_info(self, conn: _Conn) -> bool:
        self._answered(conn, OtherRequest.REQUEST_STEP_TASK_INFO, tasks=0)
        await self._write(conn, UINT.build(0))  # simulated steps run no tasks
        return True

    async def _h_list_pids(self, conn: _Conn) -> bool:
        # The container's processes: here the adopted ones still alive (extern step), as u32 count + u32s.
        pids = []
        if self.step_id == SLURM_EXTERN_CONT:
            pids = [p for p in dict.fromkeys(adopted_on(self.job, self.node)) if os.path.exists(f"/proc/{p}")]
        self._answered(conn, OtherRequest.REQUEST_STEP_LIST_PIDS, pids=pids)
        await self._write(conn, UINT.build(len(pids)) + b"".join(UINT.build(p) for p in pids))
        return True


_HANDLERS: dict[int, Handler] = {
    StepRequest.REQUEST_STEP_UID: FakeStepd._h_step_uid,
    StepRequest.REQUEST_ADD_EXTERN_PID: FakeStepd._h_add_extern_pid,
    StepRequest.REQUEST_PID_IN_CONTAINER: FakeStepd._h_pid_in_container,
    StepRequest.REQUEST_X11_DISPLAY: FakeStepd._h_x11_display,
    StepRequest.REQUEST_GET_NS_FD: FakeStepd._h_get_ns_fd,
    StepRequest.REQUEST_GET_NS_FDS: FakeStepd._h_get_ns_fds,
    StepRequest.REQUEST_DAEMON_PID: FakeStepd._h_daemon_pid,
    StepRequest.REQUEST_SLUID: FakeStepd._h_sluid,
    StepRequest.REQUEST_STATE: FakeStepd._h_state,
    OtherRequest.REQUEST_STEP_MEM_LIMITS: FakeStepd._h_mem_limits,
    OtherRequest.REQUEST_STEP_NODEID: FakeStepd._h_nodeid,
    OtherRequest.REQUEST_STEP_TASK_INFO: FakeStepd._h_task_info,
    OtherRequest.REQUEST_STEP_LIST_PIDS: FakeStepd._h_list_pids,
}
"""Emulated requests (dispatched only when the connection's release knows the number)."""
