"""FakeSlurmd's API and pytest plugin beyond tests/test_fake_slurmd.py: remove_job, step socket ctimes, the
fixture and its marker, every membership kind through the callerid RPC, nodes in network namespaces,
connect_from_job's source address and adopted()."""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import os
import secrets
import select
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Unpack

import pytest

from fake_slurmd.controller import FakeSlurmd
from fake_slurmd.plugin import FakeNodeFactory
from fake_slurmd.processes import stop_process
from fake_slurmd.scenario import Job, NodeSpec, Scenario
from slurmproto.client import CallerIdResult
from slurmproto.constants import SLURM_BATCH_SCRIPT, SLURM_EXTERN_CONT
from slurmproto.errors import Refused
from slurmproto.stepd import StepdClient, step_socket, stepd_available
from slurmproto.versions import BY_NAME, SLURM_24_11
from tests.support.callerid import CalleridOptions, ask_callerid
from tests.support.munged import Munged
from tests.support.procs import need_root

EXTERN, BATCH = SLURM_EXTERN_CONT, SLURM_BATCH_SCRIPT
FREEZER = "/sys/fs/cgroup/freezer"

# The marker's scenario must exist when the module is collected: a temp file, removed when pytest exits.
_fd, MARKER_SCENARIO = tempfile.mkstemp(prefix="sat-fake-slurmd-api-", suffix=".json")
with os.fdopen(_fd, "w") as _file:
    json.dump({"nodes": [{"name": "nodem", "port": 0}],
               "jobs": [{"job_id": 71, "user": "root", "start_time": 1000, "steps": ["extern", 0]}]}, _file)
atexit.register(lambda: Path(MARKER_SCENARIO).unlink(missing_ok=True))

# Connects to argv[1]:argv[2], prints its pid and its end of the connection, and holds the connection until
# its stdin closes. With argv[3] == "child", a forked child does all that while the parent waits for it.
_HOLD = """
import os, socket, sys
if sys.argv[3] == "child" and os.fork():
    os.wait()
    sys.exit(0)
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
print(os.getpid(), *s.getsockname()[:2], flush=True)
sys.stdin.read()
"""
# Listens on 127.0.0.1 (a free port, printed) and holds every connection until killed.
_LISTEN = """
import socket
s = socket.create_server(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
held = []
while True:
    held.append(s.accept()[0])
"""
# Asks the callerid RPC and prints "JOB NODE".
_ASK = ("import sys; from slurmproto.client import callerid; "
        "r = callerid(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), port=int(sys.argv[5]), "
        "munge_socket=sys.argv[6]); print(r.job_id, r.node_name)")

Starter = Callable[[list[str]], "subprocess.Popen[str]"]


@dataclass
class Held:
    """A process holding a TCP connection: `pid` is the holder's (the child, in "child" mode)."""

    proc: subprocess.Popen[str]
    pid: int
    local: tuple[str, int]
    remote: tuple[str, int]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SLURM_JOB_ID", "PYTHONPATH")}
    return {**env, **extra}


def _popen(**extra_env: str) -> Starter:
    """Starts a process that belongs to no job by itself (no registration, no SLURM_JOB_ID unless given)."""
    def start(argv: list[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/",
                                env=_env(**extra_env))
    return start


def _in_job(fake: FakeSlurmd, job_id: int) -> Starter:
    def start(argv: list[str]) -> subprocess.Popen[str]:
        return fake.spawn_in_job(job_id, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/",
                                 env=_env())
    return start


def _first_line(proc: subprocess.Popen[str], timeout: float = 10) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line:
        stop_process(proc, grace=5)
        raise AssertionError(f"process {proc.pid} printed nothing (exit status {proc.returncode})")
    return line.strip()


def _finish(proc: subprocess.Popen[str]) -> None:
    """Close the holder's stdin (it and its child exit), killing it if it lingers."""
    stdin = proc.stdin
    stop_process(proc, grace=5, ask=stdin.close if stdin is not None else None)


@contextlib.contextmanager
def _holding(start: Starter, address: tuple[str, int], *, child: bool = False,
             prefix: tuple[str, ...] = ()) -> Iterator[Held]:
    proc = start([*prefix, sys.executable, "-c", _HOLD, address[0], str(address[1]), "child" if child else "self"])
    try:
        pid, host, port = _first_line(proc).split()
        yield Held(proc, int(pid), (host, int(port)), (address[0], int(address[1])))
    finally:
        _finish(proc)


def _ask(fake: FakeSlurmd, munged: Munged, local: tuple[str, int], remote: tuple[str, int],
         **options: Unpack[CalleridOptions]) -> CallerIdResult:
    return ask_callerid(local, remote, port=fake.port, munge_socket=str(munged.socket), **options)


def _socket_names(fake: FakeSlurmd) -> list[str]:
    return sorted(p.name for p in Path(fake.spool_dir).iterdir())


@pytest.fixture(scope="module")
def listener() -> Iterator[socket.socket]:
    """The far end of the connections jobs open (never accepted: the kernel completes them)."""
    with socket.create_server(("127.0.0.1", 0), backlog=128) as server:
        yield server


def _address(server: socket.socket) -> tuple[str, int]:
    host, port = server.getsockname()[:2]
    return str(host), int(port)


# --- remove_job ------------------------------------------------------------------------------------------


def test_remove_job_then_add_it_again(fake_slurmd: FakeSlurmd, munged: Munged, listener: socket.socket) -> None:
    fake_slurmd.add_job({"job_id": 21, "user": "root"})
    fake_slurmd.add_job({"job_id": 22, "user": "root"})
    with pytest.raises(ValueError, match="job 21 exists"):
        fake_slurmd.add_job({"job_id": 21, "user": "root"})
    with fake_slurmd.connect_from_job(21, *_address(listener)) as conn:
        assert _ask(fake_slurmd, munged, conn.local, conn.remote).job_id == 21

        fake_slurmd.remove_job(21)
        assert 21 not in fake_slurmd.jobs
        assert _socket_names(fake_slurmd) == [f"node1_22.{BATCH}", f"node1_22.{EXTERN}"]
        assert [s.job_id for s in stepd_available(fake_slurmd.spool_dir, "node1")] == [22, 22]
        # The process and its connection live on, but no job holds it any more.
        assert conn.proc.poll() is None
        gone = _ask(fake_slurmd, munged, conn.local, conn.remote)
        assert (gone.job_id, gone.node_name) == (None, "node1")

        again = fake_slurmd.add_job({"job_id": 21, "user": "root", "pids": [conn.pid]})
        assert fake_slurmd.jobs[21] is again
        assert _socket_names(fake_slurmd) == [f"node1_21.{BATCH}", f"node1_21.{EXTERN}",
                                              f"node1_22.{BATCH}", f"node1_22.{EXTERN}"]
        with StepdClient(step_socket(fake_slurmd.spool_dir, "node1", 21, EXTERN)) as stepd:
            assert stepd.step_uid() == 0 and stepd.pid_in_container(conn.pid)
        assert _ask(fake_slurmd, munged, conn.local, conn.remote).job_id == 21


# --- step socket ctimes ------------------------------------------------------------------------------------

# Job ids in one order, start times in another: started 32, 33, 31.
STARTS = {31: 3000.0, 32: 1000.0, 33: 2000.0}


@pytest.mark.parametrize("how", ["scenario", "add_job"])
def test_extern_socket_ctimes_follow_start_times(how: str) -> None:
    jobs = {job_id: Job(job_id, 0, start_time=start) for job_id, start in STARTS.items()}
    scenario = Scenario([NodeSpec("node1", port=0)], jobs if how == "scenario" else {})
    with FakeSlurmd(scenario) as fake:  # no callerid request here: no munged needed
        if how == "add_job":
            for job in sorted(jobs.values(), key=lambda j: j.start_time):
                fake.add_job(job)
        stats = {job_id: os.stat(step_socket(fake.spool_dir, "node1", job_id, EXTERN)) for job_id in STARTS}
        listed = [s for s in stepd_available(fake.spool_dir, "node1") if s.step_id == EXTERN]
    ctimes = {job_id: st.st_ctime_ns for job_id, st in stats.items()}
    by_start = sorted(STARTS, key=STARTS.__getitem__)
    assert by_start == [32, 33, 31]
    # Strictly increasing: no two jobs share a ctime, so "newest" (26.05's sort) is the last started.
    assert [ctimes[j] for j in by_start] == sorted(set(ctimes.values()))
    assert sorted(s.job_id for s in listed) == [31, 32, 33]
    assert {s.job_id: s.ctime for s in listed} == {job_id: st.st_ctime for job_id, st in stats.items()}
    assert [s.job_id for s in sorted(listed, key=lambda s: s.ctime)] == by_start
    assert max(listed, key=lambda s: s.ctime).job_id == 31


# --- the pytest plugin -------------------------------------------------------------------------------------


def test_fixture_defaults(fake_slurmd: FakeSlurmd, munged: Munged, listener: socket.socket) -> None:
    """No marker: one node `node1` on 127.0.0.1 (a free port), no jobs, any release, the session's munged."""
    assert [(n.name, n.address, n.netns) for n in fake_slurmd.nodes] == [("node1", "127.0.0.1", None)]
    assert fake_slurmd.port not in (0, 6818)
    assert fake_slurmd.jobs == {} and fake_slurmd.release is None and _socket_names(fake_slurmd) == []
    assert fake_slurmd.munge_socket == str(munged.socket)  # tests/support/fixtures.py's override
    fake_slurmd.add_job({"job_id": 72, "user": "root"})
    with fake_slurmd.connect_from_job(72, *_address(listener)) as conn:
        answer = _ask(fake_slurmd, munged, conn.local, conn.remote, version=BY_NAME["26.05"].protocol_version)
    assert answer.job_id == 72 and answer.protocol_version == 0x2D00


def test_fake_node_factory(fake_node: FakeNodeFactory, munged: Munged, listener: socket.socket) -> None:
    """Nodes of their own, each with its jobs (Job or [[jobs]] dict) and release; stopped after the test."""
    one = fake_node([{"job_id": 3, "user": "root", "start_time": 1000}], release="24.11")
    two = fake_node([Job(4, 0)], client_timeout=2.0)
    assert one.release is BY_NAME["24.11"] and two.release is None and two.client_timeout == 2.0
    assert sorted(one.jobs) == [3] and one.jobs[3].start_time == 1000 and sorted(two.jobs) == [4]
    assert one.port != two.port and one.munge_socket == str(munged.socket)
    with one.connect_from_job(3, *_address(listener)) as conn:
        assert _ask(one, munged, conn.local, conn.remote).job_id == 3
    with pytest.raises(ValueError, match="job ids repeat"):
        fake_node([Job(5, 0), Job(5, 0)])


@pytest.mark.fake_slurmd(release="24.11", scenario=MARKER_SCENARIO)
def test_marker_release_and_scenario(fake_slurmd: FakeSlurmd, munged: Munged, listener: socket.socket) -> None:
    assert fake_slurmd.release is BY_NAME["24.11"]
    assert [n.name for n in fake_slurmd.nodes] == ["nodem"] and fake_slurmd.port != 0
    assert sorted(fake_slurmd.jobs) == [71] and fake_slurmd.jobs[71].start_time == 1000
    assert _socket_names(fake_slurmd) == ["nodem_71.0", f"nodem_71.{EXTERN}"]
    with fake_slurmd.connect_from_job(71, *_address(listener)) as conn:
        with pytest.raises(Refused) as refused:
            _ask(fake_slurmd, munged, conn.local, conn.remote, version=0x2D00)
        answer = _ask(fake_slurmd, munged, conn.local, conn.remote, version=SLURM_24_11)
    assert "closed the connection" in refused.value.attempts[0].outcome
    assert (answer.job_id, answer.node_name, answer.protocol_version) == (71, "nodem", SLURM_24_11)


# --- membership kinds --------------------------------------------------------------------------------------


def test_membership_kinds_through_the_rpc(fake_slurmd: FakeSlurmd, munged: Munged,
                                          listener: socket.socket) -> None:
    """Trees, environ, pids and spawn_in_job, side by side. Apart from spawn_in_job's, the connecting processes
    are started unregistered, so only the kind under test can make them members."""
    fake = fake_slurmd
    address = _address(listener)
    with contextlib.ExitStack() as stack:
        def hold(start: Starter, child: bool = False) -> Held:
            return stack.enter_context(_holding(start, address, child=child))

        tree = hold(_popen(), child=True)  # the child holds the connection
        assert tree.pid != tree.proc.pid
        fake.add_job({"job_id": 41, "user": "root", "trees": [tree.proc.pid]})

        fake.add_job({"job_id": 42, "user": "root", "environ": True})
        environ = hold(_popen(SLURM_JOB_ID="42"))
        foreign_environ = hold(_popen(SLURM_JOB_ID="4242"))  # a job id the fake does not have

        listed = hold(_popen())
        listed_parent = hold(_popen(), child=True)  # pids name processes, not their children
        fake.add_job({"job_id": 43, "user": "root", "pids": [listed.pid, listed_parent.proc.pid]})

        fake.add_job({"job_id": 44, "user": "root"})
        spawned = hold(_in_job(fake, 44))
        spawned_child = hold(_in_job(fake, 44), child=True)  # a job's process's children are the job's
        assert spawned.pid == spawned.proc.pid and spawned.pid in fake.jobs[44].pids

        stranger = hold(_popen())

        expected = {"trees": (tree, 41), "environ": (environ, 42), "other SLURM_JOB_ID": (foreign_environ, None),
                    "pids": (listed, 43), "child of listed pid": (listed_parent, None), "spawned": (spawned, 44),
                    "child of spawned": (spawned_child, 44), "no job": (stranger, None)}
        answers = {kind: _ask(fake, munged, held.local, held.remote).job_id for kind, (held, _) in expected.items()}
        assert answers == {kind: job_id for kind, (_, job_id) in expected.items()}


def _freezer_v1() -> str | None:
    """A skip reason unless cgroup v1's freezer hierarchy is mounted at /sys/fs/cgroup/freezer and writable."""
    reason = need_root(f"creating a cgroup under {FREEZER}")
    if reason:
        return reason
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            _dev, where, kind, options, *_ = line.split()
            if where == FREEZER and kind == "cgroup" and "freezer" in options.split(","):
                return None
    return f"needs cgroup v1's freezer hierarchy mounted at {FREEZER}"


@pytest.fixture
def freezer_cgroup() -> Iterator[Path]:
    """/sys/fs/cgroup/freezer/sat-test-<random>, removed afterwards (its processes moved back to the root)."""
    reason = _freezer_v1()
    if reason:
        pytest.skip(reason)
    path = Path(FREEZER, f"sat-test-{secrets.token_hex(4)}")
    path.mkdir()
    try:
        yield path
    finally:
        for _ in range(100):
            try:
                path.rmdir()
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise
                for pid in (path / "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError):  # it may have exited meanwhile
                        Path(FREEZER, "cgroup.procs").write_text(pid)
                time.sleep(0.02)
        assert not path.exists(), f"could not remove {path}"


def test_cgroup_membership_through_the_rpc(fake_slurmd: FakeSlurmd, munged: Munged, listener: socket.socket,
                                           freezer_cgroup: Path) -> None:
    fake_slurmd.add_job({"job_id": 45, "user": "root", "cgroups": [str(freezer_cgroup)]})
    with _holding(_popen(), _address(listener)) as inside, _holding(_popen(), _address(listener)) as outside:
        assert _ask(fake_slurmd, munged, inside.local, inside.remote).job_id is None  # not moved yet
        (freezer_cgroup / "cgroup.procs").write_text(str(inside.pid))
        assert f"{FREEZER.rsplit('/', 1)[1]}:/{freezer_cgroup.name}" in Path(f"/proc/{inside.pid}/cgroup").read_text()
        assert _ask(fake_slurmd, munged, inside.local, inside.remote).job_id == 45
        assert _ask(fake_slurmd, munged, outside.local, outside.remote).job_id is None
        Path(FREEZER, "cgroup.procs").write_text(str(inside.pid))  # moved out: no longer the job's
        assert _ask(fake_slurmd, munged, inside.local, inside.remote).job_id is None


# --- network namespaces ------------------------------------------------------------------------------------


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, cwd="/")


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace `sat-<random>` with lo up; deleted afterwards, even on failure."""
    reason = need_root("creating a network namespace")
    if reason:
        pytest.skip(reason)
    if not os.access("/usr/sbin/ip", os.X_OK) and not os.access("/sbin/ip", os.X_OK):
        pytest.skip("needs ip (apt-get install iproute2)")
    name = f"sat-{secrets.token_hex(4)}"
    added = _ip("netns", "add", name)
    if added.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {added.stderr.strip()}")
    try:
        up = _ip("-n", name, "link", "set", "lo", "up")
        assert up.returncode == 0, up.stderr
        yield name
    finally:
        deleted = _ip("netns", "del", name)
        assert deleted.returncode == 0, deleted.stderr


def test_node_in_a_network_namespace(netns: str, munged: Munged, listener: socket.socket) -> None:
    """A node served inside a namespace sees only that namespace's connections; a host node of the same fake
    (same port, host namespace) keeps working."""
    scenario = Scenario([NodeSpec("hostnode", port=0), NodeSpec("nsnode", port=0, netns=netns)],
                        {51: Job(51, 0, nodes=("nsnode",)), 52: Job(52, 0, nodes=("hostnode",))})
    in_ns = ("ip", "netns", "exec", netns)

    def ask_inside(local: tuple[str, int], remote: tuple[str, int], port: int) -> str:
        proc = subprocess.run([*in_ns, sys.executable, "-c", _ASK, local[0], str(local[1]), remote[0],
                               str(remote[1]), str(port), str(munged.socket)],
                              capture_output=True, text=True, timeout=30, cwd="/", env=_env())
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    with contextlib.ExitStack() as stack, FakeSlurmd(scenario, munge_socket=str(munged.socket)) as fake:
        assert fake.node("nsnode").port == fake.node("hostnode").port == fake.port
        server = subprocess.Popen([*in_ns, sys.executable, "-c", _LISTEN], stdout=subprocess.PIPE, text=True,
                                  cwd="/", env=_env())
        stack.callback(stop_process, server)
        server_port = int(_first_line(server))
        # `ip netns exec` execs the command: the pid spawn_in_job registered is the holder's own.
        held = stack.enter_context(_holding(_in_job(fake, 51), ("127.0.0.1", server_port), prefix=in_ns))
        assert held.pid == held.proc.pid

        assert ask_inside(held.local, held.remote, fake.port) == "51 nsnode"
        # The same 4-tuple asked in the host's namespace reaches the host node, which holds no such connection.
        from_host = _ask(fake, munged, held.local, held.remote)
        assert (from_host.job_id, from_host.node_name) == (None, "hostnode")

        with fake.connect_from_job(52, *_address(listener)) as host_conn:
            on_host = _ask(fake, munged, host_conn.local, host_conn.remote)
            assert (on_host.job_id, on_host.node_name) == (52, "hostnode")
            assert ask_inside(host_conn.local, host_conn.remote, fake.port) == "None nsnode"
    assert server.poll() is not None and held.proc.poll() is not None


# --- connect_from_job and adopted() ------------------------------------------------------------------------


def test_connect_from_job_source_and_adopted_copy(fake_slurmd: FakeSlurmd, munged: Munged) -> None:
    fake_slurmd.add_job({"job_id": 81, "user": "root", "steps": ["extern"]})
    with socket.create_server(("127.0.0.1", 0)) as server, \
            fake_slurmd.connect_from_job(81, *_address(server), source="127.0.0.2") as conn:
        accepted, peer = server.accept()
        accepted.close()
        assert conn.local[0] == "127.0.0.2" and conn.local == peer
        assert conn.remote == _address(server) and conn.job_id == 81 and conn.pid == conn.proc.pid

        assert fake_slurmd.adopted(81) == []
        with StepdClient(step_socket(fake_slurmd.spool_dir, "node1", 81, EXTERN)) as stepd:
            assert stepd.add_extern_pid(conn.pid) == 0
        copy = fake_slurmd.adopted(81)
        assert copy == [conn.pid] and copy is not fake_slurmd.jobs[81].adopted
        copy.append(1)
        copy.remove(conn.pid)
        assert fake_slurmd.adopted(81) == [conn.pid] == fake_slurmd.jobs[81].adopted
    assert conn.proc.poll() is not None  # closed with the context
