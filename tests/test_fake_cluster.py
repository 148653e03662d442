"""fake_slurmd as a simulated cluster: nodes in network namespaces of their own (or on 127.0.0.N), jobs
spanning nodes, and a login from a job's process on node1 into node2 through a real sshd and the hook."""

from __future__ import annotations

import logging
import os
import pwd
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fake_slurmd.controller import FakeSlurmd
from fake_slurmd.network import namespaces_unavailable
from fake_slurmd.plugin import FakeClusterFactory, SshdFactory
from slurmproto.client import callerid
from slurmproto.constants import SLURM_EXTERN_CONT
from slurmproto.stepd import StepdClient, step_socket
from tests.support.munged import Munged
from tests.support.procs import ensure_user, installed_or_skip, need_root
from tests.support.sessions import NO_JOBS
from tests.support.sshd import Sshd

BOTH = ["node1", "node2"]
LOOPBACK_LINES = [["listening", "node1", "127.0.0.1"], ["listening", "node2", "127.0.0.2"]]


@pytest.fixture(params=["namespaces", "loopback"])
def network(request: pytest.FixtureRequest) -> str:
    if request.param == "namespaces":
        reason = namespaces_unavailable()
        if reason:
            pytest.skip(f"network namespaces: {reason}")
    return str(request.param)


def _listen(cluster: FakeSlurmd, node: str) -> socket.socket:
    """A listener on the node's address, inside its namespace."""
    return cluster.on_node(node, socket.create_server, (cluster.node(node).address, 0))


@pytest.fixture
def far_end(fake_cluster: FakeClusterFactory, network: str) -> Iterator[tuple[FakeSlurmd, socket.socket]]:
    """Job 7 of root on node1 and node2, job 8 on node2 only, and a listener on node2."""
    cluster = fake_cluster(BOTH, [{"job_id": 7, "user": "root"}, {"job_id": 8, "user": "root", "nodes": ["node2"]}],
                           network=network)
    with _listen(cluster, "node2") as listener:
        yield cluster, listener


def test_where_the_nodes_are(far_end: tuple[FakeSlurmd, socket.socket], network: str) -> None:
    cluster, _ = far_end
    assert cluster.network == network
    one, two = cluster.node("node1"), cluster.node("node2")
    assert one.port == two.port  # one SlurmdPort for the cluster
    if network == "namespaces":
        assert (one.address, two.address, one.port) == ("10.78.0.1", "10.78.0.2", 6818)
        assert (one.address6, two.address6) == ("fd78::1", "fd78::2")
        assert one.netns != two.netns and one.netns is not None and os.path.exists(one.netns)
    else:
        assert (one.address, two.address, one.netns, one.address6) == ("127.0.0.1", "127.0.0.2", None, None)
    names = sorted(p.name for p in Path(cluster.spool_dir).iterdir())
    assert names == ["node1_7.4294967291", "node1_7.4294967292", "node2_7.4294967291", "node2_7.4294967292",
                     "node2_8.4294967291", "node2_8.4294967292"]


def test_namespaces_are_removed_at_stop(fake_cluster: FakeClusterFactory) -> None:
    reason = namespaces_unavailable()
    if reason:
        pytest.skip(f"network namespaces: {reason}")
    cluster = fake_cluster(BOTH, network="namespaces")
    paths = [cluster.node(name).netns for name in BOTH]
    assert cluster.cluster_network is not None
    switch = f"/run/netns/{cluster.cluster_network.switch}"
    assert all(path and os.path.exists(path) for path in [*paths, switch])
    cluster.stop()
    assert not any(path and os.path.exists(path) for path in [*paths, switch])


def test_node1_answers_for_its_job_process(far_end: tuple[FakeSlurmd, socket.socket], munged: Munged) -> None:
    """node2 asks node1 (as the hook does) about a connection from job 7's process on node1."""
    cluster, listener = far_end
    with cluster.connect_from_job(7, *listener.getsockname()[:2], node="node1") as conn:
        assert conn.local[0] == cluster.node("node1").address
        asked = cluster.on_node("node2", callerid, *conn.local, *conn.remote, port=cluster.port,
                                munge_socket=str(munged.socket))
        assert (asked.job_id, asked.node_name) == (7, "node1")
        # node2 runs job 7 too, but the process is node1's: node2 holds no such connection of its job.
        wrong = cluster.on_node("node2", callerid, *conn.local, *conn.remote, port=cluster.port,
                                munge_socket=str(munged.socket), slurmd=cluster.node("node2").address)
        assert (wrong.job_id, wrong.node_name) == (None, "node2")


def test_node1_answers_over_ipv6(fake_cluster: FakeClusterFactory, munged: Munged) -> None:
    reason = namespaces_unavailable()
    if reason:
        pytest.skip(f"network namespaces: {reason}")
    cluster = fake_cluster(BOTH, [{"job_id": 7, "user": "root"}], network="namespaces")
    one, two = cluster.node("node1"), cluster.node("node2")
    assert one.address6 is not None and two.address6 is not None
    with cluster.on_node("node2", socket.create_server, (two.address6, 0), family=socket.AF_INET6) as listener, \
            cluster.connect_from_job(7, two.address6, listener.getsockname()[1], node="node1",
                                     source=one.address6) as conn:
        assert conn.local[0] == one.address6
        asked = cluster.on_node("node2", callerid, *conn.local, *conn.remote, port=cluster.port,
                                munge_socket=str(munged.socket))
        assert (asked.job_id, asked.node_name) == (7, "node1")


def test_a_job_on_an_unknown_node_is_refused(fake_cluster: FakeClusterFactory) -> None:
    cluster = fake_cluster(BOTH, network="loopback")
    with pytest.raises(ValueError, match=r"^job 9: no node 'node3' \(nodes: node1, node2\)$"):
        cluster.add_job({"job_id": 9, "user": "root", "nodes": ["node1", "node3"]})
    assert 9 not in cluster.jobs
    with pytest.raises(ValueError, match=r"^job 9: no node 'node3'"):
        fake_cluster(BOTH, [{"job_id": 9, "user": "root", "nodes": ["node3"]}], network="loopback")


def test_a_job_process_only_where_the_job_runs(far_end: tuple[FakeSlurmd, socket.socket]) -> None:
    cluster, listener = far_end
    with pytest.raises(ValueError, match="job 8 does not run on node1"):
        cluster.connect_from_job(8, *listener.getsockname()[:2], node="node1")


def test_node2_stepd_of_the_job(far_end: tuple[FakeSlurmd, socket.socket]) -> None:
    """Each node has its own extern stepd for job 7; what node2's adopts is node2's, not node1's."""
    cluster, listener = far_end
    with cluster.connect_from_job(7, *listener.getsockname()[:2], node="node1") as conn:
        on_node1 = step_socket(cluster.spool_dir, "node1", 7, SLURM_EXTERN_CONT)
        on_node2 = step_socket(cluster.spool_dir, "node2", 7, SLURM_EXTERN_CONT)
        with StepdClient(on_node1) as one, StepdClient(on_node2) as two:
            assert one.step_uid() == two.step_uid() == 0
            assert one.pid_in_container(conn.pid) and not two.pid_in_container(conn.pid)
            assert two.add_extern_pid(os.getpid()) == 0
            assert two.pid_in_container(os.getpid()) and not one.pid_in_container(os.getpid())
        assert cluster.adopted(7, "node2") == [os.getpid()] == cluster.adopted(7)
        assert cluster.adopted(7, "node1") == [] == cluster.adopted(8)


# --- a login from node1 into node2 -----------------------------------------------------------------------


@pytest.fixture
def alice_cluster(fake_cluster: FakeClusterFactory, network: str) -> FakeSlurmd:
    """alice's job 70 on node1 and node2, her newer job 71 on node2 only, job 72 on node1 only."""
    ensure_user("alice")
    return fake_cluster(BOTH, [{"job_id": 70, "user": "alice", "start_time": 1000},
                               {"job_id": 71, "user": "alice", "start_time": 2000, "nodes": ["node2"]},
                               {"job_id": 72, "user": "alice", "start_time": 3000, "nodes": ["node1"]}],
                        network=network)


@pytest.fixture
def node2_sshd(alice_cluster: FakeSlurmd, sshd_factory: SshdFactory, shared_dir: Path, adopt_hook: str) -> Sshd:
    """A real sshd in node2's namespace, on node2's address, whose account stack runs the hook as node2."""
    conf = alice_cluster.slurm_conf(shared_dir / f"cluster-{alice_cluster.network}-{os.getpid()}.conf")
    node = alice_cluster.node("node2")
    line = (f"required pam_exec.so stdout quiet {adopt_hook} conf={conf} nodename=node2 service={{service}} "
            "log_level=debug")
    listen = [node.address, *([node.address6] if node.address6 else [])]
    return sshd_factory([line], users=["alice"], listen=listen, netns=node.netns)


def _login_from(cluster: FakeSlurmd, sshd: Sshd, job_id: int, ipv6: bool = False) -> subprocess.CompletedProcess[str]:
    """alice runs ssh into node2 from a process of her job on node1 (from node1's address)."""
    one, two = cluster.node("node1"), cluster.node("node2")
    source, host = (one.address6, two.address6) if ipv6 else (one.address, two.address)
    assert source is not None and host is not None
    argv = sshd.ssh_argv("alice", "true", host=host, options=["-b", source])
    proc = cluster.spawn_in_job(job_id, argv, node="node1", user="alice", stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
                                env={"HOME": pwd.getpwnam("alice").pw_dir, "PATH": "/usr/bin:/bin"})
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def test_cross_node_login_is_adopted_into_its_job(alice_cluster: FakeSlurmd, node2_sshd: Sshd,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Two of alice's jobs run on node2: the hook asks node1's slurmd, whose answer (job 70) keeps it from
    taking the newest (71)."""
    _adopted_into_70(alice_cluster, node2_sshd, caplog, ipv6=False)


@pytest.mark.parametrize("network", ["namespaces"], indirect=True)
def test_cross_node_login_over_ipv6(alice_cluster: FakeSlurmd, node2_sshd: Sshd,
                                    caplog: pytest.LogCaptureFixture) -> None:
    """Nodes in namespaces have IPv6 addresses too (fd78::N): the hook asks node1's slurmd there."""
    _adopted_into_70(alice_cluster, node2_sshd, caplog, ipv6=True)


def _adopted_into_70(alice_cluster: FakeSlurmd, node2_sshd: Sshd, caplog: pytest.LogCaptureFixture,
                     ipv6: bool) -> None:
    caplog.set_level(logging.DEBUG, logger="fake_slurmd")
    login = _login_from(alice_cluster, node2_sshd, 70, ipv6)
    assert login.returncode == 0, (login.stderr, node2_sshd.log_text())
    assert len(alice_cluster.adopted(70, "node2")) == 1
    assert alice_cluster.adopted(70, "node1") == alice_cluster.adopted(71) == alice_cluster.adopted(72) == []
    answers = [r.fields for r in caplog.records if r.getMessage() == "callerid"]  # type: ignore[attr-defined]
    assert [(a["node"], a["verdict"]) for a in answers] == [("node1", "job 70")]
    one = alice_cluster.node("node1")
    assert answers[0]["connection"].startswith(f"{one.address6 if ipv6 else one.address}:")  # the login's


def test_job_on_node1_only_is_refused_on_node2(alice_cluster: FakeSlurmd, node2_sshd: Sshd) -> None:
    alice_cluster.remove_job(70)
    alice_cluster.remove_job(71)  # alice keeps job 72, on node1 only
    login = _login_from(alice_cluster, node2_sshd, 72)
    assert login.returncode == 255 and NO_JOBS in login.stderr, login.stderr
    assert alice_cluster.adopted(72) == []


# --- the command -----------------------------------------------------------------------------------------


def _serve_cluster(argv: list[str], where: Path, user: str | None = None) -> tuple[list[list[str]], str]:
    """Run `argv ... --scenario` (as `user`) with nodes node1 and node2: its two `listening` lines, its stderr."""
    scenario = where / f"cluster-{os.getpid()}.toml"
    scenario.write_text('[[nodes]]\nname = "node1"\n[[nodes]]\nname = "node2"\n')
    scenario.chmod(0o644)
    as_user = {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []} if user else {}
    proc = subprocess.Popen([*argv, "--scenario", str(scenario)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd="/", **as_user)  # type: ignore[call-overload]
    assert proc.stdout is not None
    try:
        lines = [proc.stdout.readline().split() for _ in BOTH]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return lines, err


def test_the_command_serves_a_cluster(tmp_path: Path, network: str) -> None:
    lines, err = _serve_cluster([installed_or_skip("fake-slurmd"), "--network", network], tmp_path)
    if network == "namespaces":
        assert lines == [["listening", "node1", "10.78.0.1", "6818"], ["listening", "node2", "10.78.0.2", "6818"]]
        assert "each node in a network namespace of its own" in err
    else:
        assert [line[:3] for line in lines] == LOOPBACK_LINES
        assert lines[0][3] == lines[1][3] != "6818"
        assert "on loopback (no network namespaces)" in err


def test_without_root_auto_is_loopback_and_says_so(shared_dir: Path) -> None:
    reason = need_root("running fake-slurmd as another user")
    if reason:
        pytest.skip(reason)
    script = installed_or_skip("fake-slurmd", for_other_users=True)
    lines, err = _serve_cluster([script, "--network", "auto"], shared_dir, user="nobody")
    assert [line[:3] for line in lines] == LOOPBACK_LINES
    assert "no network namespaces: not root" in err and "on loopback (no network namespaces)" in err
    insisting = subprocess.run([script, "--network", "namespaces"], capture_output=True, text=True, timeout=30,
                               cwd="/", user="nobody", group=pwd.getpwnam("nobody").pw_gid, extra_groups=[])
    assert (insisting.returncode, insisting.stdout) == (1, "")
    assert insisting.stderr == 'fake-slurmd: [Errno 1] network = "namespaces" needs network namespaces (not root)\n'
