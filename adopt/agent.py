"""slurm-adopt-agent: the hook's account check in a long-lived root process, so that a login costs the
hook an interpreter start and one local round trip instead of importing the codec, MUNGE and the
slurm.conf parser every time.

    slurm-adopt-agent [--socket PATH] [--max-clients N] [--verbose]

systemd starts it on the first connection to slurm-adopt-agent.socket (packaging/systemd/) and hands it
the listening socket (LISTEN_FDS/LISTEN_PID, sd_listen_fds(3)); without one it listens on --socket itself
(default /run/slurm-adopt/agent.socket, mode 0600). Each request (adopt.wire) is decided as the hook
decides it, by adopt.hook.login_status(): the same gathering, decision and adoption (the pid the request
names, which must be the caller or the caller's parent). slurm.conf is parsed once and again only when
one of its files changes (inode, size, mtime, ctime).

It answers root only (SO_PEERCRED). Every failure here is the hook's cue to decide itself: a caller
that is not root, a malformed request, an internal error are all answered by closing the connection.
While --max-clients requests are being served, further callers wait in the socket's backlog for a free
slot; one that stops waiting (its share of the deadline spent) decides by itself, and the agent, finding
it gone, notes so and asks nothing for it. What it logs goes to stderr (the journal); the login's own log
lines go back to the hook, which logs them as it would have.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import socket
import stat
import struct
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from typing import Any

from adopt import wire
from adopt.gather import Gatherer
from adopt.hook import login_status
from adopt.options import LOG_LEVELS, parse_options
from adopt.wire import Reply, Request

SD_LISTEN_FDS_START = 3
MAX_CLIENTS = 16
READ_TIMEOUT = 1.0
"""A root caller that has not sent its whole request within this holds a slot no longer."""
MAX_LINE = 1000
MAX_CONFS = 8
CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid


def _stamp(path: str) -> tuple[int, ...] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


class ConfCache:
    """Parsed slurm.conf files by the path the options name (None: the usual places), kept while none of
    the files they were read from changes. A conf that fails to parse is not kept: the next login tries
    again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._confs: dict[str | None, tuple[tuple[object, ...], Any]] = {}

    @staticmethod
    def _state(path: str | None, conf: Any) -> tuple[object, ...]:
        from slurmproto.conf import find_conf

        return (str(find_conf(path, env={})), *(_stamp(source) for source in conf.sources))

    def load(self, path: str | None) -> Any:
        from slurmproto.conf import ConfError, load

        with self._lock:
            kept = self._confs.get(path)
        if kept is not None:
            try:
                if self._state(path, kept[1]) == kept[0]:
                    return kept[1]
            except ConfError:
                pass
        conf = load(path, env={})
        state = self._state(path, conf)
        with self._lock:
            if path not in self._confs and len(self._confs) >= MAX_CONFS:
                self._confs.pop(next(iter(self._confs)))
            self._confs[path] = (state, conf)
        return conf


def gatherer_class(confs: ConfCache) -> type[Gatherer]:
    """The hook's Gatherer, reading slurm.conf through `confs`."""

    class WarmGatherer(Gatherer):
        def read_conf(self, path: str | None) -> Any:
            return confs.load(path)

    return WarmGatherer


def parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read(4096).rpartition(b")")[2].split()
        return int(fields[1])
    except (OSError, ValueError, IndexError):
        return None


def gone(conn: socket.socket) -> bool:
    """Whether the caller has closed its end (it stopped waiting): its request is then no longer asked."""
    poller = select.poll()
    poller.register(conn, select.POLLHUP)
    return any(events & select.POLLHUP for _, events in poller.poll(0))


def answer(request: Request, gatherer: type[Gatherer]) -> Reply:
    """The hook's verdict for this request: exit status, message and the log lines its log_level keeps."""
    started = time.monotonic()
    opts, problems = parse_options(list(request.args))
    opts.deadline = request.budget_ms / 1000  # type: ignore[misc]  # the agent's share, for the RPC's budget
    lines: list[tuple[str, str]] = []

    def log(level: str, message: str) -> None:
        if LOG_LEVELS.index(level) <= opts.log_level and len(lines) < wire.MAX_LOG_LINES:
            lines.append((level, message[:MAX_LINE].replace("\0", "\\x00")))

    for problem in problems:
        log("error", problem)
    items = (("PAM_USER", request.user), ("PAM_SERVICE", request.service), ("SSH_CONNECTION", request.connection))
    env = {name: value for name, value in items if value is not None}
    status, message = login_status(opts, env, log, adopt_pid=request.pid, deadline=started + opts.deadline,
                                   gatherer=gatherer)
    return Reply(status, message, tuple(lines))


def read_request(conn: socket.socket) -> bytes | None:
    """The caller's request, up to its end of file within READ_TIMEOUT in all; None if it is larger than
    wire.MAX_REQUEST (a slow caller raises TimeoutError)."""
    end = time.monotonic() + READ_TIMEOUT
    chunks: list[bytes] = []
    size = 0
    while True:
        conn.settimeout(max(0.001, end - time.monotonic()))
        chunk = conn.recv(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > wire.MAX_REQUEST:
            return None
        chunks.append(chunk)


class Agent:
    def __init__(self, listener: socket.socket, max_clients: int = MAX_CLIENTS, verbose: bool = False) -> None:
        self.listener = listener
        self.verbose = verbose
        self.slots = threading.BoundedSemaphore(max_clients)
        self.gatherer = gatherer_class(ConfCache())

    def serve_forever(self) -> None:
        while True:
            # All slots busy: the next callers wait in the backlog, each no longer than its share of its
            # deadline. Turning them away would cost each a whole decision of its own, and a storm of
            # those would outlast their deadlines.
            self.slots.acquire()
            try:
                conn, _ = self.listener.accept()
            except OSError as exc:  # out of file descriptors, say: callers fall back meanwhile
                self.slots.release()
                _note(f"accept: {exc}")
                time.sleep(0.1)
                continue
            try:
                threading.Thread(target=self.serve, args=(conn,), daemon=True).start()
            except BaseException:
                conn.close()
                self.slots.release()
                raise

    def serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(READ_TIMEOUT)
            pid, uid, _gid = CREDENTIALS.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                                CREDENTIALS.size))
            if uid != 0:
                _note(f"refused a caller of uid {uid} (pid {pid}): root only")
                return
            data = read_request(conn)
            if data is None:
                _note(f"pid {pid}: request larger than {wire.MAX_REQUEST} bytes")
                return
            request = wire.decode_request(data)
            if gone(conn):
                _note(f"pid {pid} gave up waiting for its turn: it decides by itself")
                return
            if request.pid not in (pid, parent_of(pid)):
                _note(f"pid {pid} asked to adopt pid {request.pid}, neither itself nor its parent")
                return
            if self.verbose:
                _note(f"pid {pid}: request for {request.user!r}, adopting pid {request.pid}")
            began = time.monotonic()
            reply = answer(request, self.gatherer)
            conn.settimeout(max(0.05, request.budget_ms / 1000))
            conn.sendall(wire.encode_reply(reply))
            if self.verbose:
                _note(f"pid {pid}: answered exit status {reply.status} in {(time.monotonic() - began) * 1000:.1f} ms")
        except (OSError, wire.WireError) as exc:
            _note(f"request not answered: {exc}")
        except Exception:  # the hook decides by itself; the journal gets the details
            _note("internal error, request not answered: " + traceback.format_exc().replace("\n", " | "))
        finally:
            conn.close()
            self.slots.release()


def _note(message: str) -> None:
    with contextlib.suppress(OSError):
        os.write(2, f"slurm-adopt-agent: {message}\n".encode("utf-8", "backslashreplace"))


def inherited_listener(env: Mapping[str, str] = os.environ) -> socket.socket | None:
    """The listening socket systemd passed (sd_listen_fds: LISTEN_PID is us, LISTEN_FDS is 1), or None if
    there is none. Anything but one listening UNIX stream socket is an error."""
    if env.get("LISTEN_PID") != str(os.getpid()):
        return None
    if env.get("LISTEN_FDS") != "1":
        raise SystemExit(f"slurm-adopt-agent: LISTEN_FDS={env.get('LISTEN_FDS')!r}: expected exactly one socket")
    wrong = SystemExit(f"slurm-adopt-agent: fd {SD_LISTEN_FDS_START} is not a listening UNIX stream socket")
    try:
        if not stat.S_ISSOCK(os.fstat(SD_LISTEN_FDS_START).st_mode):
            raise wrong
        sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    except OSError as exc:
        raise SystemExit(f"slurm-adopt-agent: fd {SD_LISTEN_FDS_START}: {exc}") from None
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM \
            or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        raise wrong
    os.set_inheritable(SD_LISTEN_FDS_START, False)
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    return sock


def bound_listener(path: str) -> socket.socket:
    """A socket listening at `path`, mode 0600, in a directory made 0700 if missing; a stale socket there
    is replaced, anything else is an error."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    umask = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(umask)
    sock.listen(128)
    return sock


def warm() -> None:
    """Import and load now what a login would otherwise wait for: the codec (compiling its schemas), the
    RPC client, MUNGE's library, the slurm.conf parser."""
    import slurmproto.client
    import slurmproto.conf
    import slurmproto.settings
    import slurmproto.sockets  # noqa: F401
    from slurmproto.messages import NetworkCallerIdRequest, NetworkCallerIdResponse
    from slurmproto.munge import MungeError, _load
    from slurmproto.versions import SLURM_22_05

    NetworkCallerIdRequest(bytes(16), bytes(16), 1, 1, 2).encode(SLURM_22_05)
    NetworkCallerIdResponse.schema(True).parse(NetworkCallerIdResponse(1, 0, "n").encode(SLURM_22_05),
                                               version=SLURM_22_05, nul_check=True)
    try:
        _load()
    except MungeError as exc:
        _note(f"{exc} (auth/munge logins will fail over to action_generic_failure)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="slurm-adopt-agent", description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", default=wire.DEFAULT_SOCKET,
                        help="where to listen when systemd passes no socket (default %(default)s)")
    parser.add_argument("--max-clients", type=int, default=MAX_CLIENTS,
                        help="requests served at once; more callers wait for a free one (default %(default)s)")
    parser.add_argument("--verbose", action="store_true", help="note every request and answer on stderr")
    args = parser.parse_args(argv)
    if args.max_clients < 1:
        parser.error("--max-clients must be at least 1")
    if os.geteuid() != 0:
        parser.error("must run as root: it adopts processes into jobs and answers root only")
    listener = inherited_listener() or bound_listener(args.socket)
    warm()
    _note(f"ready (pid {os.getpid()})")
    try:
        Agent(listener, args.max_clients, args.verbose).serve_forever()
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
