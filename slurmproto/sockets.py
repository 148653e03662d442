"""Which socket is a TCP connection, and which process holds it (slurmd's callerid lookups, made fast).

Slurm's slurmd answers the callerid RPC in two steps: `callerid_find_inode_by_conn` scans /proc/net/tcp
then tcp6 for the row with the connection's addresses and ports, and `find_pid_by_inode` scans every
/proc/*/fd for a link reading `socket:[INODE]`. Here the first step is the kernel's exact 4-tuple lookup
over NETLINK_SOCK_DIAG (one request, one answer, whatever the number of connections), with the /proc
tables as the fallback; the second step is `pids_holding` (one scan) or `InodeIndex` (a cache that one
scan fills for a whole storm of lookups).

Addresses are text: IPv4, IPv6 or IPv4-mapped IPv6 ("::ffff:10.1.2.3"). `local` and `remote` are seen
from the socket looked for: its own end and its peer. An IPv4 connection lives either in an AF_INET
socket or in a dual-stack AF_INET6 socket that shows it with v4-mapped addresses; both forms are tried,
the one the addresses are written in first.

The kernel ABI structs are packed with `struct`, not construct: this module is on a per-login fast path
(the PAM hook runs in a fresh interpreter), so it imports only socket, struct, os and what the
standard library already loaded (typing, for `TcpSocket`).
"""

from __future__ import annotations

import _thread
import errno
import os
import socket
import struct
from collections.abc import Callable, Iterable
from typing import NamedTuple

__all__ = [
    "TCP_ESTABLISHED",
    "TCP_LISTEN",
    "InodeIndex",
    "SockDiag",
    "TcpSocket",
    "find_tcp",
    "find_tcp_proc",
    "pids_holding",
    "socket_inodes",
]

TCP_ESTABLISHED = 1
TCP_TIME_WAIT = 6
TCP_LISTEN = 10

# linux/netlink.h, linux/sock_diag.h, linux/inet_diag.h
_NETLINK_SOCK_DIAG = 4
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_SOCK_DIAG_BY_FAMILY = 20
_INET_DIAG_NOCOOKIE = 0xFFFFFFFF
_ALL_STATES = 0xFFFFFFFF

# struct nlmsghdr {u32 len; u16 type; u16 flags; u32 seq; u32 pid} followed by struct inet_diag_req_v2
# {u8 family, protocol, ext, pad; u32 states; struct inet_diag_sockid id}, where inet_diag_sockid is
# {be16 sport, dport; be32 src[4], dst[4]; u32 if; u32 cookie[2]}. Native order ("="), no padding: the
# C layout has none. The be16 ports are passed through htons; the addresses are already network-order bytes.
_REQUEST = struct.Struct("=IHHII BBBBI HH16s16sIII")
# struct inet_diag_msg {u8 family, state, timer, retrans; struct inet_diag_sockid id;
#                       u32 expires, rqueue, wqueue, uid, inode}
_DIAG_MSG = struct.Struct("=BBBB HH16s16sIII IIIII")
_NLMSGHDR = struct.Struct("=IHHII")
_NLMSGERR = struct.Struct("=i")  # struct nlmsgerr starts with the negated errno

_AF_INET = int(socket.AF_INET)  # plain ints, as the kernel reports them (not the AddressFamily enum)
_AF_INET6 = int(socket.AF_INET6)
_V4MAPPED_PREFIX = bytes(10) + b"\xff\xff"
# How long to wait for the kernel's answer if it is not queued when send() returns (it always is: netlink
# requests to the kernel are handled synchronously inside sendmsg). Only a safety net against a hang.
_REPLY_TIMEOUT = 1.0


class TcpSocket(NamedTuple):
    """One TCP socket as the kernel reports it (inode 0 and uid 0 for TIME_WAIT and SYN_RECV entries)."""

    inode: int
    uid: int  # the socket's owner uid as the kernel reports it
    family: int  # socket.AF_INET or AF_INET6 (a dual-stack v6 socket carrying IPv4 shows as AF_INET6)
    state: int  # TCP state number (1 = ESTABLISHED, 6 = TIME_WAIT, 10 = LISTEN ...)


# One way to write the connection: (family, local address, local port, remote address, remote port),
# addresses as network-order bytes (4 for AF_INET, 16 for AF_INET6).
_Form = tuple[int, bytes, int, bytes, int]


def _pack_addr(text: str) -> bytes:
    from slurmproto.addresses import is_ip, pack

    if not is_ip(text):
        raise ValueError(f"not an IP address: {text!r}")
    return pack(text)[1]


def _as_v4(addr: bytes) -> bytes | None:
    """The IPv4 address in `addr` (plain or v4-mapped), else None."""
    if len(addr) == 4:
        return addr
    return addr[12:] if addr[:12] == _V4MAPPED_PREFIX else None


def _check_port(port: int) -> int:
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"not a port: {port!r}")
    return port


def _forms(local: tuple[str, int], remote: tuple[str, int]) -> list[_Form]:
    """The ways the kernel may hold this connection, the most likely first. [] if none can exist."""
    lport, rport = _check_port(local[1]), _check_port(remote[1])
    laddr, raddr = _pack_addr(local[0]), _pack_addr(remote[0])
    l4, r4 = _as_v4(laddr), _as_v4(raddr)
    if l4 is None or r4 is None:
        if len(laddr) == 16 and len(raddr) == 16:
            return [(_AF_INET6, laddr, lport, raddr, rport)]
        return []  # an IPv4 end and a (non-mapped) IPv6 end: no TCP connection looks like that
    v4 = (_AF_INET, l4, lport, r4, rport)
    v6 = (_AF_INET6, _V4MAPPED_PREFIX + l4, lport, _V4MAPPED_PREFIX + r4, rport)
    return [v6, v4] if len(laddr) == len(raddr) == 16 else [v4, v6]


def _to_v6(addr: bytes) -> bytes:
    return addr if len(addr) == 16 else _V4MAPPED_PREFIX + addr


class SockDiag:
    """A NETLINK_SOCK_DIAG socket (created in the calling thread's network namespace).

    Not for sharing between threads at the same time: give each thread its own (as `find_tcp` does).
    """

    def __init__(self) -> None:
        family = getattr(socket, "AF_NETLINK", None)
        if family is None:
            raise OSError(errno.EAFNOSUPPORT, "no AF_NETLINK on this platform")
        self._sock = socket.socket(family, socket.SOCK_RAW, _NETLINK_SOCK_DIAG)
        self._seq = 0
        self._buf = bytearray(16384)  # an answer is one inet_diag_msg and a few attributes: a few hundred bytes
        try:
            self._probe()
        except BaseException:
            self._sock.close()
            raise

    def _probe(self) -> None:
        # A missing tcp_diag handler (module not loadable) answers an exact lookup with -ENOENT, the same
        # as "no such socket", so every lookup would quietly say None. A dump for no states costs the kernel
        # nothing and tells the two apart: NLMSG_DONE when TCP diag works, an error otherwise.
        self._send(_AF_INET, _NLM_F_REQUEST | _NLM_F_DUMP, 0, (_AF_INET, bytes(4), 0, bytes(4), 0))
        while True:
            for kind, payload in self._replies():
                if kind == _NLMSG_DONE:
                    return
                if kind == _NLMSG_ERROR:
                    err = -_NLMSGERR.unpack_from(payload)[0]
                    raise OSError(err, f"sock_diag TCP lookups unavailable: {os.strerror(err)}")

    def __enter__(self) -> SockDiag:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the netlink socket."""
        self._sock.close()

    def fileno(self) -> int:
        """The netlink socket's fd (-1 once closed)."""
        return self._sock.fileno()

    def find(self, local: tuple[str, int], remote: tuple[str, int]) -> TcpSocket | None:
        """The TCP socket whose own end is `local` and whose peer is `remote`, or None."""
        return self._find(_forms(local, remote))

    def _find(self, forms: list[_Form]) -> TcpSocket | None:
        for i, form in enumerate(forms):
            try:
                found = self._lookup(form)
            except OSError as exc:
                # The second form of an IPv4 connection is only a fallback: a kernel without IPv6 refuses it.
                if i and exc.errno in (errno.EINVAL, errno.EAFNOSUPPORT):
                    continue
                raise
            if found is not None:
                return found
        return None

    def _send(self, family: int, flags: int, states: int, form: _Form) -> None:
        _, laddr, lport, raddr, rport = form
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        request = _REQUEST.pack(
            _REQUEST.size, _SOCK_DIAG_BY_FAMILY, flags, self._seq, 0,
            family, socket.IPPROTO_TCP, 0, 0, states,
            socket.htons(lport), socket.htons(rport), laddr, raddr, 0, _INET_DIAG_NOCOOKIE, _INET_DIAG_NOCOOKIE,
        )  # fmt: skip
        self._sock.send(request)

    def _recv(self) -> int:
        try:
            return self._sock.recv_into(self._buf, 0, socket.MSG_DONTWAIT)
        except BlockingIOError:
            pass
        # Not reached in practice (the answer is queued before send() returns); never wait forever.
        self._sock.settimeout(_REPLY_TIMEOUT)
        try:
            return self._sock.recv_into(self._buf)
        finally:
            self._sock.settimeout(None)

    def _replies(self) -> list[tuple[int, memoryview]]:
        """The messages answering the last request, as (type, payload): at least one. Stale ones are skipped."""
        while True:
            size = self._recv()
            view = memoryview(self._buf)[:size]
            found: list[tuple[int, memoryview]] = []
            offset = 0
            while offset + _NLMSGHDR.size <= size:
                length, kind, _flags, seq, _pid = _NLMSGHDR.unpack_from(view, offset)
                if length < _NLMSGHDR.size or offset + length > size:
                    raise OSError(errno.EBADMSG, f"malformed netlink message (length {length})")
                if seq == self._seq:
                    found.append((kind, view[offset + _NLMSGHDR.size : offset + length]))
                offset += (length + 3) & ~3
            if found:
                return found

    def _lookup(self, form: _Form) -> TcpSocket | None:
        self._send(form[0], _NLM_F_REQUEST, _ALL_STATES, form)
        kind, payload = self._replies()[0]  # an exact lookup is answered by exactly one message
        if kind == _NLMSG_ERROR:
            err = -_NLMSGERR.unpack_from(payload)[0]
            if err in (0, errno.ENOENT):
                return None
            raise OSError(err, f"sock_diag lookup: {os.strerror(err)}")
        if kind != _SOCK_DIAG_BY_FAMILY or len(payload) < _DIAG_MSG.size:
            return None
        family, state, _timer, _retrans, sport, dport, src, dst, *_rest, uid, inode = _DIAG_MSG.unpack_from(payload)
        if family == _AF_INET:
            src, dst = src[:4], dst[:4]
        # The kernel's lookup falls back to listening sockets: with a peer that has no connection it answers
        # with the listener on the local address and port. Only an exact 4-tuple counts.
        _, laddr, lport, raddr, rport = form
        if (socket.ntohs(sport), socket.ntohs(dport)) != (lport, rport):
            return None
        if (_to_v6(src), _to_v6(dst)) != (_to_v6(laddr), _to_v6(raddr)):
            return None
        return TcpSocket(inode=inode, uid=uid, family=family, state=state)


def _proc_hex(addr: bytes) -> str:
    # /proc/net/tcp{,6} print each 32-bit word of the address (network-order bytes) as the host-order
    # integer in %08X: 127.0.0.1 is 0100007F on little-endian hosts, 7F000001 on big-endian ones.
    return "".join(f"{word:08X}" for word in struct.unpack(f"={len(addr) // 4}I", addr))


def _scan_proc_table(path: str, form: _Form) -> TcpSocket | None:
    family, laddr, lport, raddr, rport = form
    want_local = f"{_proc_hex(laddr)}:{lport:04X}".encode()
    want_remote = f"{_proc_hex(raddr)}:{rport:04X}".encode()
    key = want_local + b" " + want_remote
    try:
        table = open(path, "rb", buffering=65536)  # noqa: SIM115 (closed below; open errors are expected)
    except OSError:
        return None  # no tcp6 when IPv6 is disabled; no /proc at all in some sandboxes
    with table:
        for line in table:  # line by line: the table may be huge, and the first match ends the scan
            if key not in line:  # cheap C-level filter before splitting
                continue
            # "sl local rem st tx:rx tr:when retrnsmt uid timeout inode ..."
            fields = line.split()
            if len(fields) < 10 or fields[1] != want_local or fields[2] != want_remote:
                continue
            try:
                state, uid, inode = int(fields[3], 16), int(fields[7]), int(fields[9])
            except ValueError:
                continue
            return TcpSocket(inode=inode, uid=uid, family=family, state=state)
    return None


def find_tcp_proc(
    local: tuple[str, int], remote: tuple[str, int], proc_net: str = "/proc/thread-self/net"
) -> TcpSocket | None:
    """Like `SockDiag.find`, from the text tables /proc/net/tcp and tcp6 (slurmd's way: a linear scan)."""
    return _find_proc(_forms(local, remote), proc_net)


def _find_proc(forms: list[_Form], proc_net: str) -> TcpSocket | None:
    for form in forms:
        found = _scan_proc_table(f"{proc_net}/{'tcp6' if form[0] == _AF_INET6 else 'tcp'}", form)
        if found is not None:
            return found
    return None


# One SockDiag per thread (netlink sockets answer in the netns they were created in, and a thread may
# setns); remembered with the pid that made it, so a forked child does not share its parent's socket.
_per_thread = _thread._local()


def _thread_diag() -> SockDiag | None:
    cached: tuple[int, SockDiag | None] | None = getattr(_per_thread, "diag", None)
    pid = os.getpid()
    if cached is not None and cached[0] == pid:
        return cached[1]
    if cached is not None and cached[1] is not None:
        cached[1].close()  # the child's copy of the parent's socket; the parent keeps its own
    try:
        diag: SockDiag | None = SockDiag()
    except OSError:
        diag = None  # no sock_diag here (not Linux, seccomp, no tcp_diag): /proc from now on in this thread
    _per_thread.diag = (pid, diag)
    return diag


def find_tcp(local: tuple[str, int], remote: tuple[str, int]) -> TcpSocket | None:
    """The TCP socket `local` <-> `remote` (seen from that socket): sock_diag, else the /proc tables."""
    forms = _forms(local, remote)  # bad addresses raise ValueError here, whichever way is used
    if not forms:
        return None
    diag = _thread_diag()
    if diag is not None:
        try:
            return diag._find(forms)
        except OSError:
            diag.close()
            _per_thread.diag = None  # try a fresh socket next time
    return _find_proc(forms, "/proc/thread-self/net")


def _fd_dir(pid: int) -> int | None:
    # Reading the links relative to an open /proc/<pid>/fd saves the kernel a path walk per fd.
    try:
        return os.open(f"/proc/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None


def socket_inodes(pid: int) -> dict[int, int]:
    """Socket inode -> fd number for the fds of process `pid`; {} if unreadable or gone."""
    dir_fd = _fd_dir(pid)
    if dir_fd is None:
        return {}
    found: dict[int, int] = {}
    try:
        for name in os.listdir(dir_fd):
            try:
                link = os.readlink(name, dir_fd=dir_fd)
            except OSError:
                continue  # closed meanwhile
            if link.startswith("socket:["):
                found[int(link[8:-1])] = int(name)
    except OSError:
        return {}  # gone meanwhile
    finally:
        os.close(dir_fd)
    return found


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _holds(pid: int, target: str) -> bool:
    dir_fd = _fd_dir(pid)
    if dir_fd is None:
        return False
    try:
        for name in os.listdir(dir_fd):
            try:
                if os.readlink(name, dir_fd=dir_fd) == target:
                    return True
            except OSError:
                continue
    except OSError:
        return False
    finally:
        os.close(dir_fd)
    return False


def pids_holding(inode: int, pids: Iterable[int] | None = None, uid: int | None = None) -> list[int]:
    """Processes with an fd on socket:[inode], in /proc readdir order (slurmd takes the first).

    `pids` limits the scan (in its order); `uid` skips processes whose /proc/<pid> is not owned by that uid
    (the process's euid; root for non-dumpable processes). Processes that vanish meanwhile are skipped.
    """
    target = f"socket:[{inode}]"
    found: list[int] = []
    for pid in _all_pids() if pids is None else pids:
        if uid is not None:
            try:
                if os.stat(f"/proc/{pid}").st_uid != uid:
                    continue
            except OSError:
                continue
        if _holds(pid, target):
            found.append(pid)
    return found


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


class InodeIndex:
    """inode -> (pid, fd), filled by scanning processes, each hit re-verified with one readlink.

    Safe to share between threads (a miss in two threads at once may scan twice).
    """

    def __init__(self, max_entries: int = 1_000_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries}")
        self.max_entries = max_entries
        self._where: dict[int, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self._where)

    def lookup(self, inode: int, candidates: Callable[[], Iterable[int]]) -> int | None:
        """The pid holding socket:[inode]: from the cache when its fd still shows it, else by a scan.

        `candidates` is called only on a miss; every socket inode the scan sees is recorded (the first
        holder in candidate order wins), so one scan answers a later storm of lookups.
        """
        where = self._where
        hit = where.get(inode)
        if hit is not None:
            pid, fd = hit
            # Inode numbers are unique among live sockets: if the link still shows it, that process holds
            # it now, even if the pid was reused meanwhile.
            if _readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                return pid
            where.pop(inode, None)
        seen: dict[int, tuple[int, int]] = {}
        answer: int | None = None
        limit = self.max_entries
        for pid in candidates():
            for ino, fd in socket_inodes(pid).items():
                if ino == inode and answer is None:
                    answer = pid
                if len(seen) < limit and ino not in seen:
                    seen[ino] = (pid, fd)
        if len(where) + len(seen) <= limit:
            where.update(seen)  # fresher locations replace older ones
        else:
            self._where = seen  # over the bound: keep this scan, drop the older (unverified) entries
        return answer
