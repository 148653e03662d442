"""The slurmstepd socket protocol: against the real 22.05 slurmstepd, and scripted newer releases."""

from __future__ import annotations

import os
import pwd
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from slurmproto.constants import NO_VAL, SLURM_BATCH_SCRIPT, SLURM_EXTERN_CONT
from slurmproto.stepd import (
    CLONE_NEWNS,
    StepdClient,
    StepdClosed,
    StepdError,
    StepdRefused,
    StepRequest,
    handshake,
    parse_step_name,
    step_socket,
    stepd_available,
)
from slurmproto.versions import SLURM_22_05, SLURM_24_11, SLURM_25_11, SLURM_26_05
from tests.support.slurm_cluster import ConnectedJob, SlurmCluster


def _listpids(cluster: SlurmCluster, job_id: int) -> dict[int, str]:
    """pid -> step ("batch", "extern", ...) from the real `scontrol listpids`."""
    out = cluster.run(["scontrol", "listpids", str(job_id)]).stdout.split("\n")[1:]
    return {int(line.split()[0]): line.split()[2] for line in out if line.strip()}


@pytest.fixture
def extern(slurm_cluster: SlurmCluster, connected_job: ConnectedJob) -> Iterator[StepdClient]:
    with StepdClient(str(slurm_cluster.extern_socket(connected_job.job_id))) as client:
        yield client


def test_real_stepd_identity(slurm_cluster: SlurmCluster, connected_job: ConnectedJob,
                             extern: StepdClient) -> None:
    assert extern.protocol_version == SLURM_22_05
    assert extern.step_uid() == pwd.getpwnam("alice").pw_uid
    daemon = extern.daemon_pid()
    assert Path(f"/proc/{daemon}/cmdline").read_bytes().startswith(b"slurmstepd")
    assert extern.x11_display() == (0, None)
    assert extern.namespace_fds() == []  # no job_container plugin
    assert extern.state() == 2  # SLURMSTEPD_STEP_RUNNING
    with pytest.raises(StepdError, match=r"25\.11"):
        extern.sluid()


def test_real_stepd_listing(slurm_cluster: SlurmCluster, connected_job: ConnectedJob) -> None:
    steps = stepd_available(str(slurm_cluster.spool_dir), slurm_cluster.node_name)
    mine = {s.step_id: s for s in steps if s.job_id == connected_job.job_id}
    assert set(mine) == {SLURM_EXTERN_CONT, SLURM_BATCH_SCRIPT}
    extern = mine[SLURM_EXTERN_CONT]
    assert extern.het_comp == NO_VAL and extern.path == str(slurm_cluster.extern_socket(connected_job.job_id))
    assert extern.ctime == pytest.approx(os.stat(extern.path).st_ctime)


def test_real_pid_in_container(slurm_cluster: SlurmCluster, connected_job: ConnectedJob) -> None:
    batch_pids = [p for p, step in _listpids(slurm_cluster, connected_job.job_id).items() if step == "batch"]
    path = step_socket(str(slurm_cluster.spool_dir), slurm_cluster.node_name, connected_job.job_id,
                       SLURM_BATCH_SCRIPT)
    with StepdClient(path) as batch:
        assert batch.pid_in_container(batch_pids[0])
        assert not batch.pid_in_container(os.getpid())
        batch.step_uid()  # one connection carries several requests


def test_real_add_extern_pid(slurm_cluster: SlurmCluster, connected_job: ConnectedJob,
                             extern: StepdClient) -> None:
    with subprocess.Popen(["sleep", "60"]) as sleeper:
        try:
            assert extern.add_extern_pid(sleeper.pid) == 0
            assert _listpids(slurm_cluster, connected_job.job_id).get(sleeper.pid) == "extern"
            assert extern.pid_in_container(sleeper.pid)
        finally:
            sleeper.kill()


def test_real_add_extern_pid_needs_root(slurm_cluster: SlurmCluster, connected_job: ConnectedJob) -> None:
    """22.05 answers -1 to an unprivileged peer (25.11+ closes without an answer)."""
    code = ("import sys; from slurmproto.stepd import StepdClient; "
            "print(StepdClient(sys.argv[1]).add_extern_pid(1))")
    proc = subprocess.run(["runuser", "-u", "bob", "--", sys.executable, "-c", code,
                           str(slurm_cluster.extern_socket(connected_job.job_id))],
                          capture_output=True, text=True, timeout=30, cwd="/")
    assert (proc.returncode, proc.stdout.strip()) == (0, "-1"), proc.stderr


def test_real_handshake_refuses_old_version(slurm_cluster: SlurmCluster, connected_job: ConnectedJob) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(slurm_cluster.extern_socket(connected_job.job_id)))
        with pytest.raises(StepdRefused):
            handshake(sock, 0x2300)


# --- scripted stepds of other releases -----------------------------------------------------------

Script = Callable[[socket.socket], None]


@pytest.fixture
def scripted(tmp_path: Path) -> Iterator[Callable[[int, Script], str]]:
    """A one-connection unix server answering the handshake with `version`, then running `script`."""
    threads = []

    def start(version: int, script: Script) -> str:
        path = str(tmp_path / f"node1_{len(threads)}.4294967292")
        server = socket.socket(socket.AF_UNIX)
        server.bind(path)
        server.listen(1)

        def run() -> None:
            conn, _ = server.accept()
            with conn, server:
                conn.recv(4)
                conn.sendall(struct.pack("=i", version))
                script(conn)
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
        return path

    yield start
    for thread in threads:
        thread.join(5)


def _expect(conn: socket.socket, request: StepRequest, reply: bytes) -> None:
    assert struct.unpack("=i", conn.recv(4))[0] == request
    conn.sendall(reply)


def test_namespace_fds_25_11(scripted: Callable[[int, Script], str]) -> None:
    def script(conn: socket.socket) -> None:
        _expect(conn, StepRequest.REQUEST_GET_NS_FDS, struct.pack("=ii", 1, CLONE_NEWNS))
        with open("/proc/self/ns/mnt") as ns:
            socket.send_fds(conn, [b"\0"], [ns.fileno()])

    with StepdClient(scripted(SLURM_25_11, script)) as client:
        [(kind, fd)] = client.namespace_fds()
    try:
        assert kind == CLONE_NEWNS and os.readlink(f"/proc/self/fd/{fd}").startswith("mnt:")
    finally:
        os.close(fd)


def test_namespace_fd_before_25_11(scripted: Callable[[int, Script], str]) -> None:
    def script(conn: socket.socket) -> None:
        assert struct.unpack("=i", conn.recv(4))[0] == StepRequest.REQUEST_GET_NS_FD
        with open("/proc/self/ns/mnt") as ns:
            conn.sendall(struct.pack("=i", ns.fileno()))
            socket.send_fds(conn, [b"\0"], [ns.fileno()])

    with StepdClient(scripted(SLURM_24_11, script)) as client:
        [(kind, fd)] = client.namespace_fds()
    os.close(fd)
    assert kind == CLONE_NEWNS


def test_x11_with_xauthority_and_sluid(scripted: Callable[[int, Script], str]) -> None:
    def script(conn: socket.socket) -> None:
        _expect(conn, StepRequest.REQUEST_X11_DISPLAY, struct.pack("=ii", 12, 11) + b"/tmp/xauth\0")
        _expect(conn, StepRequest.REQUEST_SLUID, struct.pack("=Q", 0xABCDEF))

    with StepdClient(scripted(SLURM_26_05, script)) as client:
        assert client.x11_display() == (12, "/tmp/xauth")
        assert client.sluid() == 0xABCDEF


def test_refused_call_closes_without_answer(scripted: Callable[[int, Script], str]) -> None:
    """25.11+ refuses ADD_EXTERN_PID from a non-root peer by closing without reading the pid."""
    def script(conn: socket.socket) -> None:
        conn.recv(4)

    with StepdClient(scripted(SLURM_26_05, script)) as client, pytest.raises(StepdClosed):
        client.add_extern_pid(1234)


def test_insane_lengths_are_refused(scripted: Callable[[int, Script], str]) -> None:
    def script(conn: socket.socket) -> None:
        _expect(conn, StepRequest.REQUEST_X11_DISPLAY, struct.pack("=ii", 1, 1 << 30))

    with StepdClient(scripted(SLURM_26_05, script)) as client, pytest.raises(StepdError, match="out of range"):
        client.x11_display()


def test_unreachable_socket(tmp_path: Path) -> None:
    with pytest.raises(StepdError, match="cannot connect"):
        StepdClient(str(tmp_path / "node1_1.4294967292"))


@pytest.mark.parametrize(("name", "expected"), [
    ("node1_12.4294967292", (12, SLURM_EXTERN_CONT, NO_VAL)),
    ("node1_12.0.3", (12, 0, 3)),
    ("node1_12", None),
    ("node10_12.0", None),
    ("node1_12.x", None),
    ("node1_12.0.1.2", None),
    ("node1_99999999999.0", None),
    ("node1_١٢.0", None),  # non-ASCII digits
])
def test_parse_step_name(name: str, expected: tuple[int, int, int] | None) -> None:
    assert parse_step_name(name, "node1") == expected


def test_listing_missing_dir(tmp_path: Path) -> None:
    assert stepd_available(str(tmp_path / "missing"), "node1") == []
