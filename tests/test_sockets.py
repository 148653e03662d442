"""slurmproto.sockets against real loopback connections: sock_diag and /proc agree with os.fstat and /proc/*/fd."""

from __future__ import annotations

import os
import pwd
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from slurmproto import sockets
from slurmproto.sockets import (
    TCP_ESTABLISHED,
    TCP_LISTEN,
    InodeIndex,
    SockDiag,
    TcpSocket,
    find_tcp,
    find_tcp_proc,
    pids_holding,
    socket_inodes,
)
from tests.support.procs import need_root

Addr = tuple[str, int]
Finder = Callable[[Addr, Addr], TcpSocket | None]

# The child processes run the system interpreter (world-executable, unlike a venv under a private tree).
PYTHON = os.path.realpath(sys.executable)
HOLD = "import sys; sys.stdin.read()"  # keep the inherited fds until the test closes our end of stdin


def _netlink_or_skip() -> SockDiag:
    try:
        return SockDiag()
    except OSError as exc:
        pytest.skip(f"NETLINK_SOCK_DIAG unavailable here: {exc}")


def _ipv6_missing() -> str | None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        return f"no IPv6 loopback: {exc}"
    return None


def _ipv6_or_skip() -> None:
    reason = _ipv6_missing()
    if reason:
        pytest.skip(reason)


@pytest.fixture(params=["netlink", "proc", "find_tcp"])
def find(request: pytest.FixtureRequest) -> Iterator[Finder]:
    """Each way of looking a connection up; all must give the same answers."""
    if request.param == "proc":
        yield find_tcp_proc
    elif request.param == "find_tcp":
        yield find_tcp
    else:
        with _netlink_or_skip() as diag:
            yield diag.find


def _ino(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def _ends(sock: socket.socket) -> tuple[Addr, Addr]:
    """(own end, peer) of a connected socket, as (host, port)."""
    local, remote = sock.getsockname(), sock.getpeername()
    return (local[0], local[1]), (remote[0], remote[1])


def _reserved_port(stack: ExitStack, host: str = "127.0.0.1") -> int:
    """A port bound (not listening) for the test's duration: no connection can use it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = stack.enter_context(socket.socket(family))
    sock.bind((host, 0))
    port: int = sock.getsockname()[1]
    return port


@contextmanager
def _listener(host: str = "127.0.0.1", dual_stack: bool = False) -> Iterator[socket.socket]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        if dual_stack:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, 0))
        sock.listen(4096)
        yield sock


@contextmanager
def _connection(listener: socket.socket, host: str) -> Iterator[tuple[socket.socket, socket.socket]]:
    """(client, accepted server end) of a new connection from `host` to the listener's port."""
    with socket.create_connection((host, listener.getsockname()[1])) as client:
        server, _ = listener.accept()
        with server:
            yield client, server


@contextmanager
def _holder(fds: tuple[int, ...] = (), user: str | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A child process holding `fds` (inherited) until the block ends."""
    child = subprocess.Popen([PYTHON, "-I", "-c", HOLD], stdin=subprocess.PIPE, pass_fds=fds, user=user,
                             cwd="/", env={})
    try:
        yield child
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


# --- finding the socket of a connection --------------------------------------------------------------------------


def test_ipv4_found_from_both_ends(find: Finder) -> None:
    with _listener() as listener, _connection(listener, "127.0.0.1") as (client, server):
        for sock in (client, server):
            local, remote = _ends(sock)
            assert find(local, remote) == TcpSocket(_ino(sock), os.geteuid(), socket.AF_INET, TCP_ESTABLISHED)
            # The same connection asked in its v4-mapped spelling is the same AF_INET socket.
            mapped = find(("::ffff:" + local[0], local[1]), ("::ffff:" + remote[0], remote[1]))
            assert mapped is not None and mapped.inode == _ino(sock) and mapped.family == socket.AF_INET


def test_ipv6_loopback(find: Finder) -> None:
    _ipv6_or_skip()
    with _listener("::1") as listener, _connection(listener, "::1") as (client, server):
        for sock in (client, server):
            local, remote = _ends(sock)
            assert find(local, remote) == TcpSocket(_ino(sock), os.geteuid(), socket.AF_INET6, TCP_ESTABLISHED)
        # The long spelling of ::1 is the same address.
        local, remote = _ends(server)
        long_form = "0:0:0:0:0:0:0:1"
        found = find((long_form, local[1]), (long_form, remote[1]))
        assert found is not None and found.inode == _ino(server)


def test_dual_stack_listener_with_ipv4_client(find: Finder) -> None:
    _ipv6_or_skip()
    with _listener("::", dual_stack=True) as listener, _connection(listener, "127.0.0.1") as (client, server):
        assert server.family == socket.AF_INET6 and server.getsockname()[0] == "::ffff:127.0.0.1"
        (_, sport), (_, cport) = _ends(server)
        expected = TcpSocket(_ino(server), os.geteuid(), socket.AF_INET6, TCP_ESTABLISHED)
        for local_host, remote_host in [("127.0.0.1", "127.0.0.1"), ("::ffff:127.0.0.1", "::ffff:127.0.0.1"),
                                        ("127.0.0.1", "::ffff:127.0.0.1"), ("::ffff:127.0.0.1", "127.0.0.1")]:
            assert find((local_host, sport), (remote_host, cport)) == expected, (local_host, remote_host)
        # The client's end is an ordinary AF_INET socket, whichever way it is spelt.
        client_sock = TcpSocket(_ino(client), os.geteuid(), socket.AF_INET, TCP_ESTABLISHED)
        assert find(("127.0.0.1", cport), ("127.0.0.1", sport)) == client_sock
        assert find(("::ffff:127.0.0.1", cport), ("::ffff:127.0.0.1", sport)) == client_sock


def test_not_found(find: Finder) -> None:
    with ExitStack() as stack:
        port = _reserved_port(stack)
        other = _reserved_port(stack)
        assert find(("127.0.0.1", port), ("127.0.0.1", other)) is None
        assert find(("::ffff:127.0.0.1", port), ("::ffff:127.0.0.1", other)) is None
        # An IPv4 end and a real IPv6 end: no TCP connection has that shape.
        assert find(("127.0.0.1", port), ("::1", other)) is None
    _ipv6_or_skip()
    with ExitStack() as stack:
        assert find(("::1", _reserved_port(stack, "::1")), ("::1", _reserved_port(stack, "::1"))) is None


def test_connection_reversed_or_closed(find: Finder) -> None:
    with _listener() as listener:
        with _connection(listener, "127.0.0.1") as (client, server):
            local, remote = _ends(client)
            assert find(local, remote) is not None
            # Seen from the wrong end, the tuple names the server's socket, not the client's.
            found = find(remote, local)
            assert found is not None and found.inode == _ino(server)
            client_inode = _ino(client)
        # Closed on both sides: nothing, or the kernel's TIME_WAIT leftover that no process holds.
        gone = find(local, remote)
        assert gone is None or (gone.inode == 0 and gone.inode != client_inode and gone.state != TCP_ESTABLISHED)


def test_listener_not_matched_by_wrong_peer(find: Finder) -> None:
    with ExitStack() as stack:
        listener = stack.enter_context(_listener())
        _client, server = stack.enter_context(_connection(listener, "127.0.0.1"))
        local, remote = _ends(server)
        unused = _reserved_port(stack)
        # The kernel's exact lookup falls back to the listener on (local address, port); that must not count.
        assert find(local, ("127.0.0.1", unused)) is None
        assert find(local, ("127.0.0.2", remote[1])) is None  # right port, wrong peer address
        assert find(("127.0.0.2", local[1]), remote) is None  # wrong local address
        # The listener itself is found only by its own tuple: peer 0.0.0.0:0.
        assert find(local, ("0.0.0.0", 0)) == TcpSocket(_ino(listener), os.geteuid(), socket.AF_INET, TCP_LISTEN)


def test_dual_stack_listener_not_matched_by_wrong_peer(find: Finder) -> None:
    _ipv6_or_skip()
    with ExitStack() as stack:
        listener = stack.enter_context(_listener("::", dual_stack=True))
        port = listener.getsockname()[1]
        unused = _reserved_port(stack)
        assert find(("127.0.0.1", port), ("127.0.0.1", unused)) is None
        assert find(("::1", port), ("::1", unused)) is None
        found = find(("::", port), ("::", 0))
        assert found is not None and found.inode == _ino(listener) and found.state == TCP_LISTEN


def test_connection_of_another_user(find: Finder) -> None:
    reason = need_root("running a child as user nobody")
    if reason:
        pytest.skip(reason)
    nobody = pwd.getpwnam("nobody").pw_uid
    with _listener() as listener:
        port = listener.getsockname()[1]
        code = (f"import socket, sys; s = socket.create_connection(('127.0.0.1', {port}));"
                " print(s.getsockname()[1], flush=True); sys.stdin.read()")
        child = subprocess.Popen([PYTHON, "-I", "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 user="nobody", cwd="/", env={})
        assert child.stdin is not None and child.stdout is not None
        try:
            child_port = int(child.stdout.readline())
            server, _ = listener.accept()
            with server:
                theirs = find(("127.0.0.1", child_port), ("127.0.0.1", port))
                assert theirs is not None and theirs.uid == nobody and theirs.state == TCP_ESTABLISHED
                assert theirs.inode in socket_inodes(child.pid)
                assert pids_holding(theirs.inode) == [child.pid]
                ours = find(("127.0.0.1", port), ("127.0.0.1", child_port))
                assert ours == TcpSocket(_ino(server), 0, socket.AF_INET, TCP_ESTABLISHED)
        finally:
            child.stdin.close()
            child.wait(10)


def test_backends_agree() -> None:
    """sock_diag and /proc give the same answer for every tuple, hits and misses alike."""
    with ExitStack() as stack, _netlink_or_skip() as diag:
        listener4 = stack.enter_context(_listener())
        pairs = [stack.enter_context(_connection(listener4, "127.0.0.1")) for _ in range(5)]
        if not _ipv6_missing():
            listener6 = stack.enter_context(_listener("::", dual_stack=True))
            pairs += [stack.enter_context(_connection(listener6, host)) for host in ("127.0.0.1", "::1")]
        unused = _reserved_port(stack)
        queries: list[tuple[Addr, Addr, int | None]] = []  # (local, remote, the inode expected or None)
        for pair in pairs:
            for sock, peer in (pair, pair[::-1]):
                local, remote = _ends(sock)
                queries += [(local, remote, _ino(sock)), (remote, local, _ino(peer)),
                            (local, (remote[0], unused), None)]
                if local[0] == "127.0.0.1":
                    queries.append((("::ffff:" + local[0], local[1]), ("::ffff:" + remote[0], remote[1]), _ino(sock)))
        for local, remote, inode in queries:
            by_netlink = diag.find(local, remote)
            assert by_netlink == find_tcp_proc(local, remote), (local, remote)
            assert (by_netlink and by_netlink.inode) == inode, (local, remote)


def test_bad_addresses_raise() -> None:
    with _netlink_or_skip() as diag:
        for finder in (diag.find, find_tcp_proc, find_tcp):
            with pytest.raises(ValueError, match="not an IP address"):
                finder(("localhost", 1), ("127.0.0.1", 2))
            with pytest.raises(ValueError, match="not a port"):
                finder(("127.0.0.1", 70000), ("127.0.0.1", 2))


def test_sockdiag_context_manager_closes() -> None:
    with _netlink_or_skip() as diag:
        assert diag.fileno() >= 0
    assert diag.fileno() == -1


def test_find_tcp_in_threads_and_forked_child() -> None:
    """The cached per-thread netlink socket is right in another thread and in a child forked after use."""
    with _listener() as listener, _connection(listener, "127.0.0.1") as (_client, server):
        local, remote = _ends(server)
        found = find_tcp(local, remote)
        assert found is not None and found.inode == _ino(server)
        results: list[TcpSocket | None] = []
        thread = threading.Thread(target=lambda: results.extend(find_tcp(local, remote) for _ in range(3)))
        thread.start()
        thread.join()
        assert results == [found] * 3
        pid = os.fork()
        if pid == 0:  # the child: its own socket, the right answer, and the parent's socket left alone
            ok = all(find_tcp(local, remote) == found for _ in range(3))
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert find_tcp(local, remote) == found


def test_find_tcp_falls_back_to_proc() -> None:
    """A thread where sock_diag could not be opened (remembered as None) answers from /proc, the same."""
    with _listener() as listener, _connection(listener, "127.0.0.1") as (client, server):
        local, remote = _ends(server)
        results: list[TcpSocket | None] = []

        def without_netlink() -> None:
            sockets._per_thread.diag = (os.getpid(), None)  # this thread's state only
            results.extend([find_tcp(local, remote), find_tcp(remote, local), find_tcp(local, ("127.0.0.1", 1))])

        thread = threading.Thread(target=without_netlink)
        thread.start()
        thread.join()
        assert results == [TcpSocket(_ino(server), os.geteuid(), socket.AF_INET, TCP_ESTABLISHED),
                           TcpSocket(_ino(client), os.geteuid(), socket.AF_INET, TCP_ESTABLISHED), None]


def test_import_is_cheap() -> None:
    root = str(Path(__file__).resolve().parent.parent)
    code = (f"import sys; sys.path.insert(0, {root!r}); import slurmproto.sockets; "
            "print(' '.join(m for m in ('construct', 'psutil', 'ipaddress', 'dataclasses') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []


# --- the /proc tables, as text ------------------------------------------------------------------------------------

LITTLE = sys.byteorder == "little"
# /proc/net/tcp{,6} print each 32-bit address word as the host-order integer: written out here per byte order.
HEX_10_1_2_3 = "0302010A" if LITTLE else "0A010203"
HEX_10_9_8_7 = "0708090A" if LITTLE else "0A090807"
HEX_2001_DB8__1 = "B80D0120000000000000000001000000" if LITTLE else "20010DB8000000000000000000000001"
HEX_2001_DB8__2 = "B80D0120000000000000000002000000" if LITTLE else "20010DB8000000000000000000000002"
HEX_MAPPED_10_1_2_3 = "0000000000000000FFFF00000302010A" if LITTLE else "00000000000000000000FFFF0A010203"
HEX_MAPPED_10_9_8_7 = "0000000000000000FFFF00000708090A" if LITTLE else "00000000000000000000FFFF0A090807"
HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"


def _row(sl: int, local: str, remote: str, state: int, uid: int, inode: int | str) -> str:
    return (f"{sl:4d}: {local} {remote} {state:02X} 00000000:00000000 00:00000000 00000000 {uid:5d}        0 "
            f"{inode} 1 0000000000000000 20 4 30 10 -1\n")


def test_proc_table_byte_order_and_garbage(tmp_path: Path) -> None:
    key_local, key_remote = f"{HEX_10_1_2_3}:1F90", f"{HEX_10_9_8_7}:D431"
    (tmp_path / "tcp").write_text(
        HEADER
        + "garbage\n\n"
        + f"   1: {key_local}\n"  # truncated
        + _row(2, key_local, key_remote, 1, 1000, "notanumber")  # the right tuple, unreadable fields
        + _row(3, f"{HEX_10_9_8_7}:D431", f"{HEX_10_1_2_3}:1F90", 1, 1001, 111)  # the other end
        + _row(4, key_local, f"{HEX_10_9_8_7}:D432", 1, 1002, 222)  # another peer port
        + _row(5, key_local, key_remote, 1, 1000, 4242)
        + _row(6, key_local, key_remote, 1, 1000, 9999)  # a later duplicate: the first match wins
    )
    (tmp_path / "tcp6").write_text(
        HEADER
        + _row(0, f"{HEX_2001_DB8__1}:0016", f"{HEX_2001_DB8__2}:C000", 1, 0, 600)
        + _row(1, f"{HEX_MAPPED_10_1_2_3}:0050", f"{HEX_MAPPED_10_9_8_7}:D431", 1, 33, 700)
    )
    proc = str(tmp_path)
    assert find_tcp_proc(("10.1.2.3", 8080), ("10.9.8.7", 54321), proc) == TcpSocket(4242, 1000, socket.AF_INET, 1)
    assert find_tcp_proc(("10.9.8.7", 54321), ("10.1.2.3", 8080), proc) == TcpSocket(111, 1001, socket.AF_INET, 1)
    assert find_tcp_proc(("2001:db8::1", 22), ("2001:db8::2", 49152), proc) == TcpSocket(600, 0, socket.AF_INET6, 1)
    # An IPv4 connection held by a dual-stack socket: found in tcp6, whichever way it is spelt.
    mapped = TcpSocket(700, 33, socket.AF_INET6, 1)
    assert find_tcp_proc(("10.1.2.3", 80), ("10.9.8.7", 54321), proc) == mapped
    assert find_tcp_proc(("::ffff:10.1.2.3", 80), ("::ffff:10.9.8.7", 54321), proc) == mapped
    assert find_tcp_proc(("10.1.2.3", 80), ("10.9.8.7", 54322), proc) is None
    (tmp_path / "tcp").write_bytes(b"\xff\xfe\x00 binary junk\n" * 3)
    assert find_tcp_proc(("10.1.2.3", 8080), ("10.9.8.7", 54321), proc) is None


def test_proc_table_without_tcp6(tmp_path: Path) -> None:
    (tmp_path / "tcp").write_text(HEADER + _row(0, f"{HEX_10_1_2_3}:1F90", f"{HEX_10_9_8_7}:D431", 1, 5, 77))
    proc = str(tmp_path)
    assert find_tcp_proc(("2001:db8::1", 22), ("2001:db8::2", 49152), proc) is None
    assert find_tcp_proc(("::ffff:10.1.2.3", 8080), ("::ffff:10.9.8.7", 54321), proc) == TcpSocket(
        77, 5, socket.AF_INET, 1)
    assert find_tcp_proc(("10.1.2.3", 8080), ("10.9.8.7", 1), proc) is None
    assert find_tcp_proc(("10.1.2.3", 8080), ("10.9.8.7", 1), str(tmp_path / "absent")) is None


def test_proc_table_huge(tmp_path: Path) -> None:
    filler = _row(0, f"{HEX_10_9_8_7}:0001", f"{HEX_10_1_2_3}:0002", 1, 0, 1)
    with (tmp_path / "tcp").open("w") as table:
        table.write(HEADER)
        table.writelines(filler for _ in range(100_000))
        table.write(_row(1, f"{HEX_10_1_2_3}:1F90", f"{HEX_10_9_8_7}:D431", 1, 0, 31337))
    found = find_tcp_proc(("10.1.2.3", 8080), ("10.9.8.7", 54321), str(tmp_path))
    assert found is not None and found.inode == 31337


def test_proc_table_scan_stops_at_first_match(tmp_path: Path) -> None:
    """Read from a pipe whose writer stays open: only a scan that stops at the match can return."""
    os.mkfifo(tmp_path / "tcp")
    done = threading.Event()
    writer_gave_up: list[bool] = []

    def write() -> None:
        with (tmp_path / "tcp").open("w") as pipe:
            pipe.write(HEADER + _row(0, f"{HEX_10_1_2_3}:1F90", f"{HEX_10_9_8_7}:D431", 1, 0, 5150))
            pipe.flush()
            writer_gave_up.append(not done.wait(30))

    thread = threading.Thread(target=write)
    thread.start()
    try:
        found = find_tcp_proc(("10.1.2.3", 8080), ("10.9.8.7", 54321), str(tmp_path))
    finally:
        done.set()
        thread.join()
    assert found is not None and found.inode == 5150
    assert writer_gave_up == [False]


# --- which process holds a socket ---------------------------------------------------------------------------------


def test_socket_inodes() -> None:
    with socket.socket() as sock:
        inodes = socket_inodes(os.getpid())
        assert inodes[_ino(sock)] == sock.fileno()
        assert all(os.readlink(f"/proc/self/fd/{fd}") == f"socket:[{ino}]" for ino, fd in inodes.items())
        inode = _ino(sock)
    assert inode not in socket_inodes(os.getpid())
    assert socket_inodes(_dead_pid()) == {}


def test_pids_holding_self_and_child() -> None:
    with socket.socket() as sock, _holder((sock.fileno(),)) as child:
        inode = _ino(sock)
        found = pids_holding(inode)
        assert set(found) == {os.getpid(), child.pid}
        order = [int(name) for name in os.listdir("/proc") if name.isdigit()]
        assert found == sorted(found, key=order.index)  # /proc readdir order, as slurmd sees it
        assert pids_holding(inode, pids=[child.pid]) == [child.pid]
        assert pids_holding(inode, pids=[child.pid, os.getpid()]) == [child.pid, os.getpid()]
        assert pids_holding(inode, pids=[_dead_pid(), os.getpid()]) == [os.getpid()]  # the vanished one skipped
        assert pids_holding(inode, pids=[]) == []
        assert pids_holding(inode, uid=os.stat("/proc/self").st_uid) == found
    assert pids_holding(inode) == []


def test_pids_holding_by_uid() -> None:
    reason = need_root("running a child as user nobody")
    if reason:
        pytest.skip(reason)
    nobody = pwd.getpwnam("nobody").pw_uid
    with socket.socket() as sock, _holder((sock.fileno(),), user="nobody") as child:
        inode = _ino(sock)
        assert os.stat(f"/proc/{child.pid}").st_uid == nobody
        assert pids_holding(inode, uid=nobody) == [child.pid]
        assert pids_holding(inode, uid=0) == [os.getpid()]
        assert pids_holding(inode, pids=[os.getpid()], uid=nobody) == []


# --- InodeIndex ---------------------------------------------------------------------------------------------------


def _socketpairs(stack: ExitStack, count: int) -> list[tuple[socket.socket, socket.socket]]:
    pairs = [socket.socketpair() for _ in range(count)]
    for a, b in pairs:
        stack.enter_context(a)
        stack.enter_context(b)
    return pairs


class Candidates:
    """A candidates callable that counts the scans it starts."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.scans = 0

    def __call__(self) -> list[int]:
        self.scans += 1
        return self.pids


def test_inode_index_one_scan_answers_a_storm() -> None:
    with ExitStack() as stack:
        pairs = _socketpairs(stack, 50)
        candidates = Candidates([os.getpid()])
        index = InodeIndex()
        for a, b in pairs:
            assert index.lookup(_ino(a), candidates) == os.getpid()
            assert index.lookup(_ino(b), candidates) == os.getpid()
        assert candidates.scans == 1
        assert len(index) >= 100


def test_inode_index_first_candidate_wins_and_misses_rescan() -> None:
    with socket.socket() as sock, _holder((sock.fileno(),)) as child:
        assert InodeIndex().lookup(_ino(sock), Candidates([child.pid, os.getpid()])) == child.pid
        assert InodeIndex().lookup(_ino(sock), Candidates([os.getpid(), child.pid])) == os.getpid()
        index = InodeIndex()
        candidates = Candidates([child.pid])
        assert index.lookup(_ino(sock), candidates) == child.pid
        with socket.socket() as elsewhere:
            assert index.lookup(_ino(elsewhere), candidates) is None  # not held by a candidate
            assert index.lookup(_ino(elsewhere), candidates) is None
        assert candidates.scans == 3  # an unknown inode costs a scan each time


def test_inode_index_stale_entry_is_rescanned() -> None:
    candidates = Candidates([os.getpid()])
    index = InodeIndex()
    sock, keep = socket.socketpair()
    with keep:
        closed_inode = _ino(sock)
        assert index.lookup(closed_inode, candidates) == os.getpid()
        sock.close()
        with socket.socket():  # likely takes the freed fd number: the cached fd now shows another socket
            assert index.lookup(closed_inode, candidates) is None
        assert candidates.scans == 2
        # A socket moved to another fd: the cached fd is stale, one rescan finds the new one.
        inode = _ino(keep)
        assert index.lookup(inode, candidates) == os.getpid()
        moved = os.dup(keep.fileno())
        try:
            keep.close()
            scans = candidates.scans
            assert index.lookup(inode, candidates) == os.getpid()
            assert candidates.scans == scans + 1
            assert index.lookup(inode, candidates) == os.getpid()
            assert candidates.scans == scans + 1  # cached again, at the new fd
        finally:
            os.close(moved)


def test_inode_index_bounded() -> None:
    with pytest.raises(ValueError):
        InodeIndex(max_entries=0)
    with ExitStack() as stack:
        pairs = _socketpairs(stack, 20)
        index = InodeIndex(max_entries=5)
        candidates = Candidates([os.getpid()])
        for a, _ in pairs:
            assert index.lookup(_ino(a), candidates) == os.getpid()
            assert len(index) <= 5
        assert 1 < candidates.scans <= 20  # what did not fit is found again by scanning


# --- scale ----------------------------------------------------------------------------------------------------------

MANY = 2000


@pytest.fixture(scope="module")
def many_connections() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    """MANY loopback connections (2 x MANY sockets), the file limit raised for them if need be."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * MANY + 256
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {needed} (raise it, e.g. with ulimit -n, as root)")
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    try:
        with ExitStack() as stack:
            listener = stack.enter_context(_listener())
            yield [stack.enter_context(_connection(listener, "127.0.0.1")) for _ in range(MANY)]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _per_call(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def test_lookup_among_many_connections(many_connections: list[tuple[socket.socket, socket.socket]],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The right socket among 2 x MANY; times are measured and printed, not asserted."""
    with _netlink_or_skip() as diag:
        samples = [many_connections[i] for i in (0, MANY // 3, MANY // 2, MANY - 1)]
        for client, server in samples:
            for sock in (client, server):
                assert diag.find(*_ends(sock)) == TcpSocket(_ino(sock), os.geteuid(), socket.AF_INET, TCP_ESTABLISHED)
        local, remote = _ends(samples[-1][1])
        assert find_tcp_proc(local, remote) == diag.find(local, remote)
        netlink = _per_call(lambda: diag.find(local, remote), 500)
        proc = _per_call(lambda: find_tcp_proc(local, remote), 5)
        miss = (local, ("127.0.0.1", 1))
        netlink_miss = _per_call(lambda: diag.find(*miss), 500)
        proc_miss = _per_call(lambda: find_tcp_proc(*miss), 3)
    inodes = [_ino(server) for _, server in many_connections]
    index, candidates = InodeIndex(), Candidates([os.getpid()])
    start = time.perf_counter()
    assert all(index.lookup(inode, candidates) == os.getpid() for inode in inodes)
    storm = time.perf_counter() - start
    assert candidates.scans == 1
    with capsys.disabled():
        print(f"\n[{2 * MANY} sockets] hit: netlink {netlink * 1e6:.1f} us, /proc {proc * 1e3:.2f} ms; "
              f"miss: netlink {netlink_miss * 1e6:.1f} us, /proc {proc_miss * 1e3:.2f} ms; "
              f"InodeIndex: {MANY} lookups with one scan {storm * 1e3:.1f} ms")
