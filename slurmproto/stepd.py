"""The slurmstepd unix-socket protocol: the calls used to find and adopt into a job's steps.

Each step has a socket `<SlurmdSpoolDir>/<NodeName>_<job>.<step>[.<het_comp>]`. The protocol has no
framing: raw native-endian C ints (little-endian on x86-64 and aarch64), one request after another on
one connection. The client announces a protocol version; the stepd accepts any value at or above its
SLURM_MIN_PROTOCOL_VERSION and answers with its own version (or -1 and a close).

Per release (the stepd part of its row in `versions`, which the client reads): request 1 is
REQUEST_SLUID and 28 REQUEST_GET_NS_FDS from 25.11 on (GET_NS_FD, 26, is what older clients use). From
25.11, refused calls (ADD_EXTERN_PID from a non-root peer; X11 and namespace calls from anyone but the
owner or root) close the connection with no answer, as does ADD_EXTERN_PID on an ending step from 24.11.6.
"""

from __future__ import annotations

import os
import socket
import struct
from types import SimpleNamespace
from typing import Any, NamedTuple

from slurmproto import versions
from slurmproto.constants import NO_VAL
from slurmproto.constants import StepRequest as StepRequest  # step_msg_t values, re-exported
from slurmproto.errors import SlurmError
from slurmproto.linuxns import CLONE_NEWNS as CLONE_NEWNS  # GET_NS_FD's one kind, re-exported
from slurmproto.versions import NEWEST, Release, nearest_release

# --- schemas ---------------------------------------------------------------------------------------
# Requests carry `req` and their arguments; replies are read with the sizes these give. These are fixed
# C structs in native byte order, so the stdlib's struct describes them (not construct: this module is
# on the per-login path of the PAM hook, where importing construct would cost ~25 ms for a few ints).


class Schema:
    """A native-endian C struct with construct's build/parse/sizeof: one value, or named fields."""

    def __init__(self, fmt: str, *names: str) -> None:
        self.struct = struct.Struct("=" + fmt)
        self.names = names

    def sizeof(self) -> int:
        return self.struct.size

    def build(self, value: Any) -> bytes:
        if len(self.names) > 1:
            return self.struct.pack(*(value[name] for name in self.names))
        return self.struct.pack(value[self.names[0]] if self.names else value)

    def parse(self, data: bytes) -> Any:
        values = self.struct.unpack(data)
        if len(self.names) > 1:
            return SimpleNamespace(**dict(zip(self.names, values, strict=True)))
        return values[0]


INT = Schema("i")
"""A C int (handshake versions, request numbers, pid_t, return codes)."""
UINT = Schema("I")
U64 = Schema("Q")
HANDSHAKE = INT
"""Client: its protocol version. Stepd: its own version, or -1 (then it closes)."""
REQUEST = Schema("i", "req")
"""A request without arguments: STATE, DAEMON_PID, STEP_UID, X11_DISPLAY, GET_NS_FD(S), SLUID."""
PID_REQUEST = Schema("ii", "req", "pid")
"""ADD_EXTERN_PID and PID_IN_CONTAINER."""
STEP_UID_REPLY = UINT  # uid_t
ADD_EXTERN_PID_REPLY = INT  # 0 success, -1 failure
PID_IN_CONTAINER_REPLY = Schema("?")  # bool, 1 byte
DAEMON_PID_REPLY = INT  # pid_t
STATE_REPLY = INT  # slurmstepd_state_t
SLUID_REPLY = U64  # sluid_t
X11_DISPLAY_REPLY = Schema("ii", "display", "xauthority_len")
"""Then xauthority_len bytes: the xauthority path with its NUL (0: none)."""
NS_FD_REPLY = INT
"""GET_NS_FD: fd > 0 is followed by one byte carrying the fd as SCM_RIGHTS; 0: no namespace."""
NS_FDS_REPLY = INT
"""GET_NS_FDS: a count, then per namespace an int CLONE_NEW* type and one SCM_RIGHTS byte."""

MAX_XAUTHORITY = 4096
MAX_NAMESPACES = 16


class StepdError(SlurmError):
    """A slurmstepd call failed."""


class StepdRefused(StepdError):
    """The stepd refused the handshake (answered -1)."""


class StepdClosed(StepdError):
    """The stepd closed the connection without answering (how 25.11+ refuses a call)."""


# --- finding steps -------------------------------------------------------------------------------


class StepLoc(NamedTuple):
    """A step socket found in the spool dir."""

    path: str
    nodename: str
    job_id: int
    step_id: int
    het_comp: int = NO_VAL
    ctime: float = 0.0
    """The socket's st_ctime: when the step started (26.05 sorts "newest" by it)."""


def parse_step_name(name: str, nodename: str) -> tuple[int, int, int] | None:
    """(job, step, het_comp) from `<nodename>_<job>.<step>[.<het>]`, or None if it is not one."""
    prefix = nodename + "_"
    if not name.startswith(prefix):
        return None
    parts = name[len(prefix):].split(".")
    if len(parts) not in (2, 3) or not all(p.isdigit() and p.isascii() for p in parts):
        return None
    numbers = [int(p) for p in parts]
    if any(n > 0xFFFFFFFF for n in numbers):
        return None
    return numbers[0], numbers[1], numbers[2] if len(numbers) == 3 else NO_VAL


def stepd_available(spool_dir: str, nodename: str) -> list[StepLoc]:
    """Every step socket of `nodename` in the spool dir (an unreadable dir gives an empty list).

    Slurm pastes the node name into a regular expression unescaped; this matches it literally.
    """
    try:
        entries = list(os.scandir(spool_dir))
    except OSError:
        return []
    steps = []
    for entry in entries:
        ids = parse_step_name(entry.name, nodename)
        if ids is None:
            continue
        try:
            ctime = entry.stat(follow_symlinks=False).st_ctime
        except OSError:
            ctime = 0.0
        steps.append(StepLoc(entry.path, nodename, *ids, ctime=ctime))
    return steps


def step_socket(spool_dir: str, nodename: str, job_id: int, step_id: int, het_comp: int = NO_VAL) -> str:
    name = f"{nodename}_{job_id}.{step_id}" + (f".{het_comp}" if het_comp != NO_VAL else "")
    return os.path.join(spool_dir, name)


# --- the client ----------------------------------------------------------------------------------


def _recv_exact(sock: socket.socket, size: int, what: str) -> bytes:
    data = bytearray()
    while len(data) < size:
        try:
            chunk = sock.recv(size - len(data))
        except TimeoutError:
            raise StepdError(f"{what}: slurmstepd did not answer in time") from None
        except ConnectionResetError:  # closed with our request unread
            raise StepdClosed(f"{what}: slurmstepd closed the connection without answering") from None
        except OSError as exc:
            raise StepdError(f"{what}: {exc.strerror or exc}") from None
        if not chunk:
            raise StepdClosed(f"{what}: slurmstepd closed the connection without answering")
        data += chunk
    return bytes(data)


def _read(sock: socket.socket, schema: Schema, what: str) -> Any:
    return schema.parse(_recv_exact(sock, schema.sizeof(), what))


def _send(sock: socket.socket, data: bytes, what: str) -> None:
    try:
        sock.sendall(data)
    except OSError as exc:
        raise StepdClosed(f"{what}: cannot send to slurmstepd: {exc.strerror or exc}") from None


def handshake(sock: socket.socket, version: int = NEWEST.protocol_version) -> int:
    """Announce `version`; return the stepd's own protocol version."""
    _send(sock, HANDSHAKE.build(version), "handshake")
    answer = int(_read(sock, HANDSHAKE, "handshake"))
    if answer < 0:
        raise StepdRefused(f"slurmstepd refused protocol version 0x{version:04x} "
                           "(or could not read our credentials)")
    return answer


class StepdClient:
    """One connection to a slurmstepd: `with StepdClient(path) as stepd: stepd.step_uid()`."""

    def __init__(self, path: str, *, timeout: float = 2.0, version: int = NEWEST.protocol_version) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
            self.protocol_version = handshake(self.sock, version)
        except OSError as exc:
            self.sock.close()
            raise StepdError(f"cannot connect to slurmstepd at {path}: {exc.strerror or exc}") from None
        except StepdError:
            self.sock.close()
            raise
        self.release: Release = nearest_release(self.protocol_version)
        """The release table's row for the version the stepd announced: which requests it has."""

    def _call(self, request: bytes, reply: Schema, what: str) -> Any:
        _send(self.sock, request, what)
        return _read(self.sock, reply, what)

    def step_uid(self) -> int:
        """The uid the step runs as. Anyone may ask."""
        return int(self._call(REQUEST.build({"req": StepRequest.REQUEST_STEP_UID}),
                              STEP_UID_REPLY, "REQUEST_STEP_UID"))

    def add_extern_pid(self, pid: int) -> int:
        """Put `pid` into the step (extern steps only; the peer must be root or SlurmUser). 0 = success."""
        request = PID_REQUEST.build({"req": StepRequest.REQUEST_ADD_EXTERN_PID, "pid": pid})
        return int(self._call(request, ADD_EXTERN_PID_REPLY, "REQUEST_ADD_EXTERN_PID"))

    def pid_in_container(self, pid: int) -> bool:
        request = PID_REQUEST.build({"req": StepRequest.REQUEST_PID_IN_CONTAINER, "pid": pid})
        return bool(self._call(request, PID_IN_CONTAINER_REPLY, "REQUEST_PID_IN_CONTAINER"))

    def daemon_pid(self) -> int:
        """The slurmstepd's own pid."""
        return int(self._call(REQUEST.build({"req": StepRequest.REQUEST_DAEMON_PID}),
                              DAEMON_PID_REPLY, "REQUEST_DAEMON_PID"))

    def state(self) -> int:
        return int(self._call(REQUEST.build({"req": StepRequest.REQUEST_STATE}),
                              STATE_REPLY, "REQUEST_STATE"))

    def sluid(self) -> int:
        """The step's sluid (25.11+)."""
        if StepRequest.REQUEST_SLUID not in self.release.stepd.requests:
            having = ", ".join(r.name for r in versions.RELEASES if StepRequest.REQUEST_SLUID in r.stepd.requests)
            raise StepdError(f"REQUEST_SLUID needs slurmstepd {having} (this one speaks "
                             f"0x{self.protocol_version:04x}, taken as {self.release.name})")
        return int(self._call(REQUEST.build({"req": StepRequest.REQUEST_SLUID}),
                              SLUID_REPLY, "REQUEST_SLUID"))

    def x11_display(self) -> tuple[int, str | None]:
        """(display number, xauthority path); display 0 means no X11 forwarding."""
        what = "REQUEST_X11_DISPLAY"
        reply = self._call(REQUEST.build({"req": StepRequest.REQUEST_X11_DISPLAY}), X11_DISPLAY_REPLY, what)
        length = reply.xauthority_len
        if not 0 <= length <= MAX_XAUTHORITY:
            raise StepdError(f"{what}: xauthority length {length} out of range")
        xauthority = None
        if length:
            xauthority = _recv_exact(self.sock, length, what).rstrip(b"\0").decode(errors="replace")
        return reply.display, xauthority

    def namespace_fds(self) -> list[tuple[int, int]]:
        """The job container's namespaces as (CLONE_NEW* type, fd); the caller closes the fds.

        25.11+ stepds answer GET_NS_FDS; older ones GET_NS_FD (one mount namespace, or none).
        """
        if StepRequest.REQUEST_GET_NS_FDS in self.release.stepd.requests:
            what = "REQUEST_GET_NS_FDS"
            count = int(self._call(REQUEST.build({"req": StepRequest.REQUEST_GET_NS_FDS}),
                                   NS_FDS_REPLY, what))
            if not 0 <= count <= MAX_NAMESPACES:
                raise StepdError(f"{what}: namespace count {count} out of range")
            result = []
            for _ in range(count):
                kind = int(_read(self.sock, INT, what))
                result.append((kind, self._recv_fd(what)))
            return result
        what = "REQUEST_GET_NS_FD"
        fd = int(self._call(REQUEST.build({"req": StepRequest.REQUEST_GET_NS_FD}), NS_FD_REPLY, what))
        if fd < 0:
            raise StepdError(f"{what}: slurmstepd could not get the namespace")
        return [(CLONE_NEWNS, self._recv_fd(what))] if fd > 0 else []

    def _recv_fd(self, what: str) -> int:
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.sock, 1, 1)
        except OSError as exc:
            raise StepdError(f"{what}: {exc.strerror or exc}") from None
        if not data:
            raise StepdClosed(f"{what}: slurmstepd closed the connection without sending the fd")
        if not fds:
            raise StepdError(f"{what}: slurmstepd sent no file descriptor")
        for extra in fds[1:]:
            os.close(extra)
        return fds[0]

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> StepdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
