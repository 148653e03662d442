"""fake_slurmd against real clients: Slurm 22.05's scontrol, slurmproto's client for every release."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Unpack

import pytest

from fake_slurmd.controller import FakeSlurmd, JobConnection
from fake_slurmd.plugin import FakeNodeFactory
from fake_slurmd.scenario import Job, NodeSpec, Scenario
from slurmproto.client import CallerIdResult, callerid
from slurmproto.constants import NO_VAL, SLURM_BATCH_SCRIPT
from slurmproto.errors import Refused
from slurmproto.versions import RELEASES, SLURM_22_05, SLURM_25_11, SLURM_26_05, Release
from tests.support.callerid import CalleridOptions, ask_callerid
from tests.support.munged import Munged
from tests.support.procs import ensure_user, need_programs

INDETERMINATE = "remote job id indeterminate"


@pytest.fixture(scope="module")
def listener() -> Iterator[socket.socket]:
    """The far end of the connections jobs open (an sshd stand-in)."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as server:
        yield server


def _ask(fake: FakeSlurmd, conn: JobConnection, munged: Munged, **options: Unpack[CalleridOptions]) -> CallerIdResult:
    return ask_callerid(conn.local, conn.remote, port=fake.port, munge_socket=str(munged.socket), **options)


def test_fixture_and_job_connection(fake_slurmd: FakeSlurmd, listener: socket.socket, munged: Munged) -> None:
    alice = ensure_user("alice")
    fake_slurmd.add_job({"job_id": 7, "user": "alice"})
    with fake_slurmd.connect_from_job(7, *listener.getsockname(), user="alice") as conn:
        assert conn.remote == listener.getsockname()
        assert int(Path(f"/proc/{conn.pid}/status").read_text().split("Uid:")[1].split()[0]) == alice.pw_uid
        result = _ask(fake_slurmd, conn, munged)
    assert (result.job_id, result.node_name) == (7, "node1")
    assert sorted(p.name for p in Path(fake_slurmd.spool_dir).iterdir()) == ["node1_7.4294967291",
                                                                           "node1_7.4294967292"]


@pytest.mark.parametrize(("asker", "expected"), [(None, "1002 node1\n"), ("alice", "1002 node1\n"), ("bob", "")],
                         ids=["root", "the job's owner", "another user"])
def test_real_scontrol_callerid(fake_slurmd: FakeSlurmd, listener: socket.socket, shared_dir: Path,
                                asker: str | None, expected: str) -> None:
    """Debian's Slurm 22.05 scontrol cannot tell the fake from a slurmd."""
    reason = need_programs("scontrol", "runuser")
    if reason:
        pytest.skip(reason)
    for user in ("alice", "bob"):
        ensure_user(user)
    conf = fake_slurmd.slurm_conf(shared_dir / "scontrol-slurm.conf")
    fake_slurmd.add_job({"job_id": 1001, "user": "alice"})
    fake_slurmd.add_job({"job_id": 1002, "user": "alice"})
    with fake_slurmd.connect_from_job(1002, *listener.getsockname(), user="alice") as conn:
        argv = ["scontrol", "callerid", conn.local[0], str(conn.local[1]), conn.remote[0], str(conn.remote[1])]
        if asker:
            argv = ["runuser", "-u", asker, "--", *argv]
        proc = subprocess.run(argv, env={"SLURM_CONF": str(conf), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                              capture_output=True, text=True, timeout=30, cwd="/")
    assert proc.stdout == expected, proc.stderr
    assert (proc.returncode == 0) == bool(expected)
    if not expected:
        assert INDETERMINATE in proc.stderr


@pytest.mark.parametrize("release", RELEASES, ids=[r.name for r in RELEASES])
def test_client_against_every_release(release: Release, munged: Munged, listener: socket.socket,
                                      fake_node: FakeNodeFactory) -> None:
    fake = fake_node([Job(5, 0)], release=release.name)
    with fake.connect_from_job(5, *listener.getsockname()) as conn:
        # Starting from 22.05 (the local Slurm): the client must find a version this release speaks.
        result = _ask(fake, conn, munged, start_version=SLURM_22_05)
        pinned = _ask(fake, conn, munged, version=release.protocol_version)
    assert result.job_id == pinned.job_id == 5
    assert release.accepts(result.protocol_version) and len(result.attempts) <= 3
    expected_step = {SLURM_25_11: NO_VAL, SLURM_26_05: SLURM_BATCH_SCRIPT}.get(release.protocol_version)
    assert pinned.step_id == expected_step


@pytest.mark.parametrize(("release", "version", "outcome"), [
    ("22.05", 0x2700, "closed the connection"),
    ("24.11", 0x2600, "closed the connection"),
    ("25.05", 0x2600, "RC 1007"),
    ("25.11", 0x2600, "HTTP/1.1 405"),
    ("26.05", 0x2900, "HTTP/1.1 405"),
])
def test_refusals_per_release(release: str, version: int, outcome: str, munged: Munged,
                              listener: socket.socket, fake_node: FakeNodeFactory) -> None:
    fake = fake_node([Job(5, 0)], release=release)
    with fake.connect_from_job(5, *listener.getsockname()) as conn, pytest.raises(Refused) as info:
        _ask(fake, conn, munged, version=version)
    assert outcome in info.value.attempts[0].outcome


def test_owner_and_other_users(fake_slurmd: FakeSlurmd, listener: socket.socket, munged: Munged,
                               caplog: pytest.LogCaptureFixture) -> None:
    """Root and the owner learn the job; anyone else gets NO_VAL and a security-violation log line."""
    fake_slurmd.add_job({"job_id": 9, "user": "nobody"})
    with fake_slurmd.connect_from_job(9, *listener.getsockname(), user="nobody") as conn:
        code = ("import sys; from slurmproto.client import callerid; "
                "r = callerid(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), port=int(sys.argv[5]), "
                "munge_socket=sys.argv[6]); print(r.job_id)")
        args = [*map(str, (*conn.local, *conn.remote, fake_slurmd.port)), str(munged.socket)]
        results = {}
        for user in ("nobody", "alice"):
            ensure_user(user)
            proc = subprocess.run(["runuser", "-u", user, "--", _python(), "-c", code, *args],
                                  capture_output=True, text=True, timeout=30, cwd="/")
            results[user] = proc.stdout.strip() or proc.stderr
    assert results == {"nobody": "9", "alice": "None"}
    assert any("Security violation, REQUEST_NETWORK_CALLERID from uid=" in str(getattr(r, "fields", ""))
               for r in caplog.records)


def _python() -> str:
    import sys

    return sys.executable


def test_unknown_connection(fake_slurmd: FakeSlurmd, munged: Munged) -> None:
    result = callerid("127.0.0.1", 1, "127.0.0.1", 2, port=fake_slurmd.port, munge_socket=str(munged.socket))
    assert result.job_id is None


def test_several_nodes_one_process(munged: Munged, listener: socket.socket) -> None:
    nodes = [NodeSpec("node2", "127.0.0.2", 0), NodeSpec("node3", "127.0.0.3", 0)]
    scenario = Scenario(nodes, {11: Job(11, 0, nodes=("node2",)), 12: Job(12, 0, nodes=("node3",))})
    with FakeSlurmd(scenario, munge_socket=str(munged.socket)) as fake:
        assert fake.node("node2").port == fake.node("node3").port  # one SlurmdPort, as real clients expect
        with fake.connect_from_job(11, *listener.getsockname(), source="127.0.0.2") as one, \
                fake.connect_from_job(12, *listener.getsockname(), source="127.0.0.3") as two:
            # The asker reaches each node at the address the connection came from.
            for conn, node, job in ((one, "node2", 11), (two, "node3", 12)):
                assert conn.local[0] == fake.node(node).address
                result = _ask(fake, conn, munged)
                assert (result.job_id, result.node_name) == (job, node)
            # Asking the wrong node about a connection: it holds no such socket.
            wrong = callerid("127.0.0.3", one.local[1], one.remote[0], one.remote[1], port=fake.port,
                             munge_socket=str(munged.socket))
            assert wrong.job_id is None
        names = sorted(p.name for p in Path(fake.spool_dir).iterdir())
    assert names == ["node2_11.4294967291", "node2_11.4294967292", "node3_12.4294967291", "node3_12.4294967292"]
