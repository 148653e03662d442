"""fake_slurmd.stepd: the simulated slurmstepd, driven by slurmproto's StepdClient and by raw bytes."""

from __future__ import annotations

import concurrent.futures
import json
import os
import resource
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import slurmproto
from fake_slurmd.controller import FakeStepds
from fake_slurmd.scenario import NAMESPACE_TYPES, X11, Job
from fake_slurmd.stepd import FakeStepd, known_requests
from slurmproto.constants import SLURM_BATCH_SCRIPT, SLURM_EXTERN_CONT
from slurmproto.constants import OtherStepRequest as OtherRequest
from slurmproto.stepd import CLONE_NEWNS, StepdClient, StepdError, StepdRefused, StepRequest, handshake
from slurmproto.versions import BY_NAME, NEWEST, OLDEST, RELEASES, STEPD_SLUID, Release, release_at_or_below
from tests.support.procs import need_programs, need_root
from tests.support.sessions import PAM_SLURM_ADOPT, mount_namespace

JOB_UID = 4242
NOBODY = 65534
R22, R24_11, R25_05, R25_11, R26 = (BY_NAME[n] for n in ("22.05", "24.11", "25.05", "25.11", "26.05"))
CODE_ROOT = str(Path(slurmproto.__file__).resolve().parents[1])


class Harness:
    """Starts FakeStepds (on a FakeStepds controller; the test thread plays the clients) in a short,
    world-searchable directory and records their log events."""

    def __init__(self, stepds: FakeStepds, directory: str) -> None:
        self.controller = stepds
        self.dir = directory
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.started = 0

    def log(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))

    def start(self, release: Release | None, *, step_id: int = SLURM_EXTERN_CONT, job: Job | None = None,
              contains: Callable[[int], bool] = lambda pid: False, **kwargs: Any) -> FakeStepd:
        job = job or Job(job_id=100 + self.started, uid=JOB_UID)
        path = os.path.join(self.dir, f"node1_{job.job_id}.{step_id}")
        kwargs.setdefault("slurm_uid", os.geteuid())  # not root: the test user stands in for SlurmUser
        stepd = FakeStepd(path, job, step_id, release=release, contains=contains, log=self.log, **kwargs)
        self.controller.add(stepd)
        self.started += 1
        return stepd

    def close(self, stepd: FakeStepd) -> None:
        self.controller.remove(stepd)

    def requests(self, verdict: str | None = None) -> list[dict[str, Any]]:
        return [f for e, f in self.events if e == "request" and verdict in (None, f["verdict"])]


@pytest.fixture
def harness() -> Iterator[Harness]:
    directory = tempfile.mkdtemp(prefix="fstepd.", dir="/tmp")
    os.chmod(directory, 0o755)  # other users reach the sockets, as in a spool dir
    try:
        with FakeStepds() as stepds:
            yield Harness(stepds, directory)
    finally:
        os.rmdir(directory)


def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def raw(path: str, version: int, timeout: float = 5.0) -> socket.socket:
    """A handshaken raw connection."""
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(timeout)
    sock.connect(path)
    handshake(sock, version)
    return sock


def ints(*values: int) -> bytes:
    return struct.pack(f"={len(values)}i", *values)


def recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"closed after {len(data)} of {size} bytes"
        data += chunk
    return data


def closed_by_peer(sock: socket.socket) -> bool:
    """True when the stepd closed the connection (EOF or reset), False if data came instead."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


# --- the socket ----------------------------------------------------------------------------------


def test_socket_replaces_stale_file_is_0777_and_unlinked_on_close(harness: Harness) -> None:
    stale = os.path.join(harness.dir, "node1_100.4294967292")
    Path(stale).write_text("left over by a crash")
    stepd = harness.start(R22)
    st = os.stat(stepd.path)
    assert stepd.path == stale and stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o777
    with StepdClient(stepd.path, version=R22.protocol_version) as client:
        assert client.step_uid() == JOB_UID
    harness.close(stepd)
    assert not os.path.exists(stepd.path)
    assert stepd.connections == 0


def test_close_drops_open_connections(harness: Harness) -> None:
    stepd = harness.start(R26)
    sock = raw(stepd.path, R26.protocol_version)
    wait_until(lambda: stepd.connections == 1)
    harness.close(stepd)
    assert closed_by_peer(sock) and stepd.connections == 0
    sock.close()


# --- the adoption calls, per release ------------------------------------------------------------


@pytest.mark.parametrize("release", RELEASES, ids=lambda r: r.name)
def test_identity_calls_on_one_connection(harness: Harness, release: Release) -> None:
    stepd = harness.start(release, contains=lambda pid: pid == 777, sluid=0x1234_5678_9ABC)
    with StepdClient(stepd.path, version=release.protocol_version) as client:
        assert client.protocol_version == release.protocol_version
        assert client.step_uid() == JOB_UID
        assert client.daemon_pid() == os.getpid()
        assert client.state() == 2  # SLURMSTEPD_STEP_RUNNING in every release
        assert client.x11_display() == (0, None)
        assert client.namespace_fds() == []  # GET_NS_FD -> 0 before 25.11, GET_NS_FDS -> count 0 from 25.11
        assert client.pid_in_container(777) and not client.pid_in_container(778)
        if release.protocol_version >= STEPD_SLUID:
            assert client.sluid() == 0x1234_5678_9ABC
        else:
            with pytest.raises(StepdError, match=r"25\.11"):
                client.sluid()
        assert client.step_uid() == JOB_UID  # still the same connection
    names = [f["request"] for f in harness.requests("answered")]
    expected_ns = "REQUEST_GET_NS_FDS" if release.protocol_version >= STEPD_SLUID else "REQUEST_GET_NS_FD"
    assert expected_ns in names and names.count("REQUEST_STEP_UID") == 2


@pytest.mark.parametrize("release", [R22, R24_11, R25_05, R25_11, R26], ids=lambda r: r.name)
def test_add_extern_pid_as_root(harness: Harness, release: Release) -> None:
    stepd = harness.start(release)
    with StepdClient(stepd.path, version=release.protocol_version) as client:
        assert client.add_extern_pid(os.getpid()) == 0
        assert client.pid_in_container(os.getpid())  # adopted pids are in the extern step
    assert stepd.job.adopted == [os.getpid()]
    [event] = harness.requests()[:1]
    assert event["request"] == "REQUEST_ADD_EXTERN_PID" and event["peer_uid"] == os.geteuid() and event["rc"] == 0
    assert event["peer_pid"] == os.getpid()


@pytest.mark.parametrize("release", [R22, R25_11], ids=lambda r: r.name)
def test_add_extern_pid_to_another_step_fails(harness: Harness, release: Release) -> None:
    stepd = harness.start(release, step_id=SLURM_BATCH_SCRIPT)
    with StepdClient(stepd.path, version=release.protocol_version) as client:
        assert client.add_extern_pid(os.getpid()) == -1
        assert client.step_uid() == JOB_UID  # an answered failure keeps the connection
    assert stepd.job.adopted == []
    assert harness.requests("failed")[0]["reason"].startswith("not the extern step")


def test_add_extern_pid_writes_the_adopt_cgroup(harness: Harness, tmp_path: Path) -> None:
    procs = tmp_path / "cgroup.procs"
    procs.write_text("")
    stepd = harness.start(R22, job=Job(job_id=7, uid=JOB_UID, adopt_cgroup=str(tmp_path)))
    with StepdClient(stepd.path, version=R22.protocol_version) as client:
        assert client.add_extern_pid(os.getpid()) == 0
        assert client.add_extern_pid(os.getppid()) == 0
    assert procs.read_text() == f"{os.getpid()}\n{os.getppid()}\n"
    assert stepd.job.adopted == [os.getpid(), os.getppid()]


def test_add_extern_pid_fails_when_the_cgroup_write_fails(harness: Harness, tmp_path: Path) -> None:
    stepd = harness.start(R26, job=Job(job_id=8, uid=JOB_UID, adopt_cgroup=str(tmp_path / "gone")))
    with StepdClient(stepd.path, version=R26.protocol_version) as client:
        assert client.add_extern_pid(os.getpid()) == -1
    assert stepd.job.adopted == [] and not (tmp_path / "gone").exists()
    assert "cgroup.procs" in harness.requests("failed")[0]["reason"]


CLIENT = """
import json, sys
from slurmproto.stepd import StepdClient, StepdClosed
path, version, out = sys.argv[1], int(sys.argv[2]), {}
for op in sys.argv[3:]:
    try:
        with StepdClient(path, version=version, timeout=5) as c:
            out[op] = {"uid": c.step_uid, "add": lambda: c.add_extern_pid(1), "x11": c.x11_display,
                       "ns": c.namespace_fds}[op]()
    except StepdClosed:
        out[op] = "closed"
print(json.dumps(out))
"""


def as_nobody(path: str, release: Release, *ops: str) -> dict[str, Any]:
    """Run StepdClient calls in a subprocess as nobody, one connection per call."""
    reason = need_root("running a client as nobody")
    if reason:
        pytest.skip(reason)
    proc = subprocess.run([sys.executable, "-c", CLIENT, path, str(release.protocol_version), *ops],
                          user=NOBODY, group=NOBODY, extra_groups=[], cwd="/", capture_output=True, text=True,
                          timeout=60, env={"PYTHONPATH": CODE_ROOT, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_unprivileged_peer_22_05_gets_minus_one(harness: Harness) -> None:
    stepd = harness.start(R22)
    result = as_nobody(stepd.path, R22, "add", "x11", "ns", "uid")
    assert result == {"add": -1, "x11": [0, None], "ns": [], "uid": JOB_UID}
    assert stepd.job.adopted == []
    [failed] = harness.requests("failed")
    assert failed["peer_uid"] == NOBODY and failed["pid"] == 1


@pytest.mark.parametrize("release", [R25_11, R26], ids=lambda r: r.name)
def test_unprivileged_peer_25_11_is_closed_on(harness: Harness, release: Release) -> None:
    stepd = harness.start(release)
    result = as_nobody(stepd.path, release, "add", "x11", "ns", "uid")
    # ADD_EXTERN_PID needs root/SlurmUser; X11 and namespaces the job's owner (nobody is not).
    assert result == {"add": "closed", "x11": "closed", "ns": "closed", "uid": JOB_UID}
    assert stepd.job.adopted == []
    assert {f["request"] for f in harness.requests("refused")} == {
        "REQUEST_ADD_EXTERN_PID", "REQUEST_X11_DISPLAY", "REQUEST_GET_NS_FDS"}


def test_owner_and_slurm_user_on_25_11(harness: Harness) -> None:
    owned = harness.start(R25_11, job=Job(job_id=9, uid=NOBODY))
    assert as_nobody(owned.path, R25_11, "add", "x11", "ns") == {"add": "closed", "x11": [0, None], "ns": []}
    slurm_user = harness.start(R25_11, job=Job(job_id=10, uid=JOB_UID), slurm_uid=NOBODY)
    assert as_nobody(slurm_user.path, R25_11, "add", "x11") == {"add": 0, "x11": [0, None]}
    assert slurm_user.job.adopted == [1]


# --- versions --------------------------------------------------------------------------------------


@pytest.mark.parametrize("release", RELEASES, ids=[r.name for r in RELEASES])
def test_any_release_answers_in_the_clients_version(harness: Harness, release: Release) -> None:
    stepd = harness.start(None)
    with StepdClient(stepd.path, version=release.protocol_version) as client:
        assert client.protocol_version == release.protocol_version
        assert client.step_uid() == JOB_UID


@pytest.mark.parametrize(("asked", "answered"), [
    (0x2400, 0x2600), (0x2500, 0x2600), (0x2650, 0x2600), (0x2B80, 0x2B00),
    (0x2E00, NEWEST.protocol_version), (0x7FFF_FFFF, NEWEST.protocol_version),
], ids=hex)
def test_any_release_answers_other_versions_in_the_nearest_below(harness: Harness, asked: int,
                                                                 answered: int) -> None:
    stepd = harness.start(None)
    with StepdClient(stepd.path, version=asked) as client:
        assert client.protocol_version == answered, hex(asked)


def test_any_release_refuses_below_the_oldest_and_follows_the_chosen_release(harness: Harness) -> None:
    stepd = harness.start(None, sluid=5)
    with pytest.raises(StepdRefused):
        StepdClient(stepd.path, version=OLDEST.min_version - 0x100)
    # Behaviour follows the chosen release: SLUID is a 25.11 request, DEFUNCT before.
    with raw(stepd.path, R26.protocol_version) as sock:
        sock.sendall(ints(StepRequest.REQUEST_SLUID))
        assert struct.unpack("=Q", recv_exact(sock, 8)) == (5,)
    with raw(stepd.path, R25_05.protocol_version) as sock:
        sock.sendall(ints(StepRequest.REQUEST_SLUID))
        assert closed_by_peer(sock)


def test_release_at_or_below() -> None:
    assert release_at_or_below(0x2300) is None
    assert release_at_or_below(-1) is None
    assert release_at_or_below(R24_11.protocol_version) is R24_11
    assert release_at_or_below(R24_11.protocol_version + 1) is R24_11


@pytest.mark.parametrize(("release", "client"), [(R22, 0x2300), (R25_11, 0x2600), (R26, 0x2900), (R26, -5)],
                         ids=["22.05<-0x2300", "25.11<-22.05", "26.05<-24.05", "26.05<-negative"])
def test_too_old_clients_are_refused(harness: Harness, release: Release, client: int) -> None:
    stepd = harness.start(release)
    with pytest.raises(StepdRefused):
        StepdClient(stepd.path, version=client)
    [fields] = [f for e, f in harness.events if e == "handshake"]
    assert fields["verdict"] == "refused" and fields["client_version"] == client and fields["peer_uid"] == os.geteuid()
    wait_until(lambda: stepd.connections == 0)


@pytest.mark.parametrize("release", [R22, R24_11, R26], ids=lambda r: r.name)
def test_fixed_release_answers_its_own_version_to_newer_clients(harness: Harness, release: Release) -> None:
    stepd = harness.start(release)
    with StepdClient(stepd.path, version=0x7000) as client:
        assert client.protocol_version == release.protocol_version


# --- the namespace calls ---------------------------------------------------------------------------


@pytest.mark.parametrize("release", [R25_11, R26], ids=lambda r: r.name)
def test_get_ns_fd_is_silent_from_25_11(harness: Harness, release: Release) -> None:
    """No namespace plugin: the 25.11+ GET_NS_FD writes nothing and waits for the next request."""
    stepd = harness.start(release)
    with StepdClient(stepd.path, version=release.protocol_version) as client:
        client.sock.sendall(ints(StepRequest.REQUEST_GET_NS_FD))
        client.sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            client.sock.recv(4)
        client.sock.settimeout(5)
        assert client.step_uid() == JOB_UID  # the connection is still served
    assert harness.requests("silent")[0]["request"] == "REQUEST_GET_NS_FD"


def test_get_ns_fd_before_25_11_answers_zero(harness: Harness) -> None:
    stepd = harness.start(R25_05)
    with raw(stepd.path, R25_05.protocol_version) as sock:
        sock.sendall(ints(StepRequest.REQUEST_GET_NS_FD, StepRequest.REQUEST_STEP_UID))
        assert struct.unpack("=iI", recv_exact(sock, 8)) == (0, JOB_UID)


@pytest.fixture(scope="module")
def mount_ns() -> Iterator[str]:
    reason = need_root("creating a mount namespace") or need_programs("unshare")
    if reason:
        pytest.skip(reason)
    with mount_namespace() as path:
        yield path


def same_namespace(fd: int, path: str) -> bool:
    return os.fstat(fd).st_ino == os.stat(path).st_ino


@pytest.mark.parametrize("release", RELEASES, ids=lambda r: r.name)
def test_x11_display_of_a_forwarding_job(harness: Harness, release: Release) -> None:
    job = Job(job_id=61, uid=JOB_UID, x11=X11(12, "/home/alice/.Xauthority-Ab12"))
    stepd = harness.start(release, job=job)
    with StepdClient(stepd.path, version=release.protocol_version) as client:
        assert client.x11_display() == (12, "/home/alice/.Xauthority-Ab12")
        assert client.step_uid() == JOB_UID  # nothing left over on the connection


def test_x11_display_bytes(harness: Harness) -> None:
    """int display, int length counting the NUL, the path with its NUL (_handle_x11_display)."""
    stepd = harness.start(R22, job=Job(job_id=62, uid=JOB_UID, x11=X11(10, "/x")))
    with raw(stepd.path, R22.protocol_version) as sock:
        sock.sendall(ints(StepRequest.REQUEST_X11_DISPLAY))
        assert recv_exact(sock, 11) == ints(10, 3) + b"/x\0"
    display_only = harness.start(R26, job=Job(job_id=63, uid=JOB_UID, x11=X11(10)))
    with raw(display_only.path, R26.protocol_version) as sock:
        sock.sendall(ints(StepRequest.REQUEST_X11_DISPLAY))
        assert recv_exact(sock, 8) == ints(10, 0)


@pytest.mark.parametrize("release", RELEASES, ids=lambda r: r.name)
def test_a_job_container_mount_namespace(harness: Harness, release: Release, mount_ns: str) -> None:
    """GET_NS_FD before 25.11, GET_NS_FDS from 25.11: the client receives the namespace itself."""
    stepd = harness.start(release, job=Job(job_id=64, uid=JOB_UID, namespaces=((CLONE_NEWNS, mount_ns),)))
    with StepdClient(stepd.path, version=release.protocol_version) as client:
        [(kind, fd)] = client.namespace_fds()
        try:
            assert kind == CLONE_NEWNS and same_namespace(fd, mount_ns)
        finally:
            os.close(fd)
        assert client.step_uid() == JOB_UID


@pytest.mark.parametrize("release", [R22, R25_11, R26], ids=lambda r: r.name)
def test_get_ns_fd_hands_out_the_mount_namespace(harness: Harness, release: Release, mount_ns: str) -> None:
    """The old call in every release: the stepd's fd number, then the fd (pam_slurm_adopt's setns input)."""
    stepd = harness.start(release, job=Job(job_id=65, uid=JOB_UID, namespaces=(
        (NAMESPACE_TYPES["net"], "/proc/self/ns/net"), (CLONE_NEWNS, mount_ns))))
    with raw(stepd.path, release.protocol_version) as sock:
        sock.sendall(ints(StepRequest.REQUEST_GET_NS_FD))
        assert struct.unpack("=i", recv_exact(sock, 4))[0] > 0
        data, fds, _flags, _addr = socket.recv_fds(sock, 1, 2)
        try:
            assert len(data) == 1 and len(fds) == 1 and same_namespace(fds[0], mount_ns)
        finally:
            for fd in fds:
                os.close(fd)
        sock.sendall(ints(StepRequest.REQUEST_STEP_UID))
        assert struct.unpack("=I", recv_exact(sock, 4)) == (JOB_UID,)


def test_get_ns_fds_sends_every_namespace_in_order(harness: Harness, mount_ns: str) -> None:
    net = NAMESPACE_TYPES["net"]
    stepd = harness.start(R26, job=Job(job_id=66, uid=JOB_UID,
                                       namespaces=((net, "/proc/self/ns/net"), (CLONE_NEWNS, mount_ns))))
    with StepdClient(stepd.path, version=R26.protocol_version) as client:
        got = client.namespace_fds()
    try:
        assert [k for k, _fd in got] == [net, CLONE_NEWNS]
        assert same_namespace(got[0][1], "/proc/self/ns/net") and same_namespace(got[1][1], mount_ns)
    finally:
        for _kind, fd in got:
            os.close(fd)


@pytest.mark.parametrize("path", ["/nonexistent/ns", "/etc/passwd", "/proc/self/ns/net", "fifo"],
                         ids=["missing", "not-a-namespace", "wrong-kind", "fifo"])
def test_a_namespace_that_cannot_be_opened(harness: Harness, path: str, tmp_path: Path) -> None:
    """Before 25.11 GET_NS_FD answers -1 (pam_slurm_adopt: "stepd_get_ns_fd failed"); from 25.11 the
    handler's error closes the connection. A FIFO does not block the stepd."""
    if path == "fifo":
        path = str(tmp_path / "fifo")
        os.mkfifo(path)
    job = Job(job_id=67, uid=JOB_UID, namespaces=((CLONE_NEWNS, path),))
    old = harness.start(R25_05, job=job)
    with raw(old.path, R25_05.protocol_version) as sock:
        sock.sendall(ints(StepRequest.REQUEST_GET_NS_FD, StepRequest.REQUEST_STEP_UID))
        assert struct.unpack("=iI", recv_exact(sock, 8)) == (-1, JOB_UID)
    new = harness.start(R26, job=Job(job_id=68, uid=JOB_UID, namespaces=((CLONE_NEWNS, path),)))
    with StepdClient(new.path, version=R26.protocol_version) as client, pytest.raises(StepdError):
        client.namespace_fds()
    assert [f["reason"].startswith(path) for f in harness.requests("failed")] == [True, True]


# --- what else the real one does -------------------------------------------------------------------

GARBAGE = [0, 2, 3, 6, 13, 32, 999, -1, -22, 0x7FFF_FFFF, 22 + 0x10000]


@pytest.mark.parametrize("release", [R22, R24_11, R25_11, R26], ids=lambda r: r.name)
def test_unknown_requests_close_without_an_answer(harness: Harness, release: Release) -> None:
    stepd = harness.start(release)
    numbers = [*GARBAGE, *([1, 28, 29] if release.protocol_version < STEPD_SLUID else [])]
    for number in numbers:
        with raw(stepd.path, release.protocol_version) as sock:
            sock.sendall(ints(number, StepRequest.REQUEST_STEP_UID))
            assert closed_by_peer(sock), number
    assert [f["number"] for f in harness.requests("unrecognized")] == numbers
    with StepdClient(stepd.path, version=release.protocol_version) as client:
        assert client.step_uid() == JOB_UID  # and the server is fine


@pytest.mark.parametrize("release", [R22, R26], ids=lambda r: r.name)
def test_known_but_not_emulated_requests_close(harness: Harness, release: Release) -> None:
    stepd = harness.start(release)
    with raw(stepd.path, release.protocol_version) as sock:
        sock.sendall(ints(OtherRequest.REQUEST_STEP_TERMINATE))
        assert closed_by_peer(sock)
    assert harness.requests("unsupported")[0]["request"] == "REQUEST_STEP_TERMINATE"


def test_known_requests_per_release() -> None:
    assert StepRequest.REQUEST_SLUID not in known_requests(R25_05)
    assert StepRequest.REQUEST_GET_NS_FDS in known_requests(R25_11)
    assert OtherRequest.REQUEST_JOB_STEP_CREATE in known_requests(R25_05)  # 24.05-25.05 stepmgr relays
    assert OtherRequest.REQUEST_JOB_STEP_CREATE not in known_requests(R22)
    assert OtherRequest.REQUEST_JOB_STEP_CREATE not in known_requests(R25_11)  # only on a stepmgr stepd
    assert OtherRequest.REQUEST_JOB_USAGE in known_requests(R26) - known_requests(R25_11)
    assert all(StepRequest.REQUEST_CONNECT not in known_requests(r) for r in RELEASES)


@pytest.mark.parametrize(("release", "mem_bytes"), [(R22, 16), (R25_11, 16), (R26, 8)], ids=["22.05", "25.11", "26.05"])
def test_listing_calls(harness: Harness, release: Release, mem_bytes: int) -> None:
    stepd = harness.start(release, node_id=3)
    with StepdClient(stepd.path, version=release.protocol_version) as client:
        assert client.add_extern_pid(os.getpid()) == 0
        client.sock.sendall(ints(OtherRequest.REQUEST_STEP_LIST_PIDS, OtherRequest.REQUEST_STEP_TASK_INFO,
                                 OtherRequest.REQUEST_STEP_NODEID, OtherRequest.REQUEST_STEP_MEM_LIMITS,
                                 StepRequest.REQUEST_STEP_UID))
        reply = recv_exact(client.sock, 8 + 4 + 4 + mem_bytes + 4)
    assert struct.unpack("=II", reply[:8]) == (1, os.getpid())  # scontrol listpids' view
    assert struct.unpack("=II", reply[8:16]) == (0, 3)  # no tasks; node index
    assert reply[16:16 + mem_bytes] == bytes(mem_bytes)  # no memory limits
    assert struct.unpack("=I", reply[-4:]) == (JOB_UID,)


# --- real Slurm 22.05 clients --------------------------------------------------------------------

PAM_DRIVER = """
import ctypes, ctypes.util, sys
pam = ctypes.CDLL("libpam.so.0", mode=ctypes.RTLD_GLOBAL)  # the module resolves pam_syslog from it
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.calloc.restype = ctypes.c_void_p
CONV = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)
def conv(n, msgs, resp, data):
    resp[0] = libc.calloc(n, 16)
    return 0
class Conv(ctypes.Structure):
    _fields_ = [("conv", CONV), ("appdata", ctypes.c_void_p)]
c, h = Conv(CONV(conv), None), ctypes.c_void_p()
pam.pam_start_confdir.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(Conv), ctypes.c_char_p,
                                  ctypes.POINTER(ctypes.c_void_p)]
pam.pam_getenv.restype = ctypes.c_char_p
assert pam.pam_start_confdir(b"sshd", sys.argv[1].encode(), ctypes.byref(c), sys.argv[2].encode(), ctypes.byref(h)) == 0
rc = pam.pam_acct_mgmt(h, 0)
print(rc, (pam.pam_getenv(h, b"SLURM_JOB_ID") or b"-").decode())
"""


def real_slurm_conf(directory: Path, spool: str) -> dict[str, str]:
    """A slurm.conf naming this host node1 with the harness's spool dir; the environment using it."""
    host = socket.gethostname().split(".")[0]
    (directory / "slurm.conf").write_text(
        f"ClusterName=fake\nSlurmctldHost=localhost(127.0.0.1)\nSlurmdSpoolDir={spool}\n"
        f"NodeName=node1 NodeHostname={host} NodeAddr=127.0.0.1 CPUs=1\nPartitionName=p Nodes=node1\n")
    return dict(os.environ, SLURM_CONF=str(directory / "slurm.conf"))


@pytest.mark.parametrize(("release", "adopted"), [(None, True), (BY_NAME["23.11"], True), (R24_11, False)],
                         ids=["any", "23.11", "24.11"])
def test_real_pam_slurm_adopt(harness: Harness, tmp_path: Path, release: Release | None, adopted: bool) -> None:
    """Debian's 22.05 module adopts into a stepd that accepts 0x2600 clients (24.11 no longer does)."""
    missing = (None if os.path.exists(PAM_SLURM_ADOPT)
               else f"needs {PAM_SLURM_ADOPT} (apt-get install libpam-slurm-adopt)")
    reason = need_root("pam_slurm_adopt's adoption") or missing
    if reason:
        pytest.skip(reason)
    stepd = harness.start(release, job=Job(job_id=4321, uid=NOBODY))
    harness.start(release, job=stepd.job, step_id=SLURM_BATCH_SCRIPT)
    (tmp_path / "pam.d").mkdir()
    (tmp_path / "pam.d" / "sshd").write_text(f"account required {PAM_SLURM_ADOPT}\n")
    proc = subprocess.run([sys.executable, "-c", PAM_DRIVER, "nobody", str(tmp_path / "pam.d")],
                          env=real_slurm_conf(tmp_path, harness.dir), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rc, job_env = proc.stdout.split()
    if adopted:  # PAM_SUCCESS, SLURM_JOB_ID set, the PAM process in the extern step
        assert (rc, job_env) == ("0", "4321") and len(stepd.job.adopted) == 1
        assert [f["request"] for f in harness.requests()] == [
            "REQUEST_STEP_UID", "REQUEST_ADD_EXTERN_PID", "REQUEST_X11_DISPLAY", "REQUEST_GET_NS_FD"]
    else:  # refused handshake: no usable job, action_no_jobs=deny
        assert (rc, job_env) == ("6", "-") and stepd.job.adopted == []


def test_real_scontrol_listpids(harness: Harness, tmp_path: Path) -> None:
    reason = need_programs("scontrol")
    if reason:
        pytest.skip(reason)
    stepd = harness.start(None, job=Job(job_id=4322, uid=NOBODY))
    harness.start(None, job=stepd.job, step_id=SLURM_BATCH_SCRIPT)
    stepd.job.adopted.append(os.getpid())
    proc = subprocess.run(["scontrol", "listpids", "4322", "node1"], env=real_slurm_conf(tmp_path, harness.dir),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()[1:]]
    assert rows == [[str(os.getpid()), "4322", "extern", "-", "-"]]


# --- robustness ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sent", [b"", b"\x00\x26", "handshake"], ids=["nothing", "half-version", "idle"])
def test_stalled_clients_are_dropped(harness: Harness, sent: bytes | str) -> None:
    stepd = harness.start(R22, read_timeout=0.3)
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(5)
    sock.connect(stepd.path)
    if isinstance(sent, bytes):
        sock.sendall(sent)
    else:
        handshake(sock, R22.protocol_version)
    wait_until(lambda: stepd.connections == 1)
    started = time.monotonic()
    assert closed_by_peer(sock)
    assert 0.1 < time.monotonic() - started < 3
    wait_until(lambda: stepd.connections == 0)
    assert any(e == "disconnect" and "timed out" in f["reason"] for e, f in harness.events)
    sock.close()


def test_half_a_request_number_closes_at_once(harness: Harness) -> None:
    """The request number is one read(2): a short read is an error (the handshake is a full read)."""
    stepd = harness.start(R22, read_timeout=30)
    with raw(stepd.path, R22.protocol_version) as sock:
        sock.sendall(b"\x14\x00")
        started = time.monotonic()
        assert closed_by_peer(sock)
        assert time.monotonic() - started < 5
    wait_until(lambda: any(e == "disconnect" and "short read" in f["reason"] for e, f in harness.events))


def test_eof_mid_pid_and_a_broken_log_callback(harness: Harness) -> None:
    def broken(event: str, **fields: Any) -> None:
        raise RuntimeError("log sink down")

    stepd = harness.start(R22)
    stepd._log = broken
    with raw(stepd.path, R22.protocol_version) as sock:
        sock.sendall(ints(StepRequest.REQUEST_ADD_EXTERN_PID) + b"\x01")
        sock.shutdown(socket.SHUT_WR)
        assert closed_by_peer(sock)
    with StepdClient(stepd.path, version=R22.protocol_version) as client:
        assert client.step_uid() == JOB_UID
    wait_until(lambda: stepd.connections == 0)
    assert stepd.job.adopted == []


def test_a_failing_contains_closes_only_that_connection(harness: Harness) -> None:
    def contains(pid: int) -> bool:
        raise RuntimeError("no /proc today")

    stepd = harness.start(R22, step_id=SLURM_BATCH_SCRIPT, contains=contains)
    with raw(stepd.path, R22.protocol_version) as sock:
        sock.sendall(ints(StepRequest.REQUEST_PID_IN_CONTAINER, 1))
        assert closed_by_peer(sock)
    with StepdClient(stepd.path, version=R22.protocol_version) as client:
        assert client.step_uid() == JOB_UID
    wait_until(lambda: any(e == "error" and "no /proc today" in f["error"] for e, f in harness.events))


def test_restart_after_close(harness: Harness) -> None:
    stepd = harness.start(R26)
    harness.close(stepd)
    harness.controller.add(stepd)
    with StepdClient(stepd.path, version=R26.protocol_version) as client:
        assert client.daemon_pid() == os.getpid()


FLOOD = """
import resource, socket, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
socks = [socket.socket(socket.AF_UNIX) for _ in range(300)]
for s in socks:
    s.setblocking(False)
    try:
        s.connect(sys.argv[1])
    except BlockingIOError:
        pass
time.sleep(1.5)
"""
FD_STARVED = """
import asyncio, resource, sys
from fake_slurmd.scenario import NAMESPACE_TYPES, X11, Job
from fake_slurmd.stepd import FakeStepd
from slurmproto.stepd import StepdClient
path, flood, events = sys.argv[1], sys.argv[2], []
async def main():
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    stepd = FakeStepd(path, Job(job_id=1, uid=5), 0xFFFFFFFC, release=None, contains=lambda p: False,
                      log=lambda e, **f: events.append(e), read_timeout=0.3)
    await stepd.start()
    await (await asyncio.create_subprocess_exec(sys.executable, "-c", flood, path)).wait()
    await asyncio.sleep(0.5)
    uid = await asyncio.to_thread(lambda: StepdClient(path).step_uid())
    await stepd.close()
    print(uid, events.count("accept_error"), events.count("disconnect"))
asyncio.run(main())
"""


def test_running_out_of_descriptors_is_survived(tmp_path: Path) -> None:
    """A flood beyond the fd limit: accepting pauses (one event a second at most), then service resumes."""
    proc = subprocess.run([sys.executable, "-c", FD_STARVED, str(tmp_path / "node1_1.4294967292"), FLOOD],
                          env=dict(os.environ, PYTHONPATH=CODE_ROOT), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    uid, accept_errors, disconnects = map(int, proc.stdout.split())
    assert uid == 5 and 1 <= accept_errors <= 5 and disconnects > 50


def test_a_thousand_concurrent_connections(harness: Harness) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:  # 1,000 client sockets and 1,000 server ends live in this process
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 2200:
        pytest.skip("needs 2,200 file descriptors")
    stepd = harness.start(R26)
    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        clients = list(pool.map(lambda _: StepdClient(stepd.path, version=R26.protocol_version, timeout=30),
                                range(1000)))
        try:
            wait_until(lambda: stepd.connections == 1000)
            assert list(pool.map(lambda c: c.step_uid(), clients)) == [JOB_UID] * 1000
            assert stepd.connections == 1000
        finally:
            for client in clients:
                client.close()
    wait_until(lambda: stepd.connections == 0, timeout=30)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
