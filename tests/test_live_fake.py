"""fake_slurmd asked by Debian's real Slurm 24.11 and 26.05 (tests/support/chroot_cluster.py), in both auth
modes: the release's own `scontrol callerid`, run in the chroot, gets from the fake what it gets from the
real slurmd.

The fake runs in this process with the cluster's munged or slurm.key and listens inside the cluster's
network namespace. scontrol finds it through a copy of the cluster's slurm.conf beside the original (so
auth/slurm's slurm.key is the same file) whose SlurmdPort is the fake's; the real slurmd keeps 6818.

The release's real pam_slurm_adopt (the chroot's sshd) adopts a login into the fake's simulated stepd in a
cluster of its own whose real slurmd is stopped: the fake takes its port and SlurmdSpoolDir.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pwd
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fake_slurmd.controller import FakeSlurmd, JobConnection
from fake_slurmd.network import nsenter_argv
from fake_slurmd.scenario import Job
from slurmproto.conf import parse_file
from slurmproto.messages import NetworkCallerIdResponse
from tests.support.chroot_cluster import CONF, ChrootCluster, HeldConnection, missing_reason
from tests.support.chroot_files import NODE, SLURMD_PORT, SPOOL, ids_of
from tests.support.fixtures import LIVE_COMBOS
from tests.support.linked_node import Asked, ask_scontrol, fake_for
from tests.support.procs import installed_or_skip
from tests.support.sessions import shell_line

OWNER, OTHER = "alice", "bob"
JOBS = (900001, 900002)
"""The fake's jobs: far above the ids the real controller hands out, so no answer can be the real one's."""
INDETERMINATE = "remote job id indeterminate"


@dataclasses.dataclass
class FakeNode:
    fake: FakeSlurmd
    conf: str
    """The slurm.conf (as the chroot sees it) that sends scontrol to the fake."""
    held: dict[int, JobConnection]
    """Per job: a process of it holding a connection in the namespace."""


@contextlib.contextmanager
def conf_for(cluster: ChrootCluster, port: int, name: str) -> Iterator[str]:
    """A copy of the cluster's slurm.conf beside it whose SlurmdPort is `port`, as the chroot sees it."""
    inside = f"{CONF.rpartition('/')[0]}/{name}.conf"
    text = re.sub(r"(?m)^SlurmdPort=\d+$", f"SlurmdPort={port}", cluster.conf.read_text())
    assert f"SlurmdPort={port}\n" in text
    cluster.host_path(inside).write_text(text)
    try:
        yield inside
    finally:
        cluster.host_path(inside).unlink()


@pytest.fixture(scope="module")
def node(cluster: ChrootCluster) -> Iterator[FakeNode]:
    uid = ids_of(cluster.root, OWNER)[0]
    jobs = {job_id: Job(job_id, uid) for job_id in JOBS}
    with contextlib.ExitStack() as stack, fake_for(cluster, jobs) as fake:
        listener = stack.enter_context(contextlib.closing(cluster.ns.open_socket()))
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        held = {job_id: stack.enter_context(fake.connect_from_job(job_id, *listener.getsockname(), user=OWNER,
                                                                  netns=str(cluster.ns.path)))
                for job_id in JOBS}
        yield FakeNode(fake, stack.enter_context(conf_for(cluster, fake.port, "fake-slurmd")), held)


def scontrol_callerid(cluster: ChrootCluster, local: tuple[str, int], remote: tuple[str, int], user: str,
                      via: FakeNode | tuple[str, int] | None = None) -> Asked:
    """The chroot's `scontrol callerid` about local -> remote (local: the job's end), asking the fake
    (`via`: its FakeNode, or slurm.conf and port) or the real slurmd."""
    conf, port = (via.conf, via.fake.port) if isinstance(via, FakeNode) else via or (CONF, SLURMD_PORT)
    return ask_scontrol(cluster, local, remote, user, cluster.capture(port), conf)


@pytest.mark.parametrize("user", ["root", "slurm", OWNER], ids=["root", "SlurmUser", "owner"])
def test_scontrol_gets_the_fake_job_of_the_connection(cluster: ChrootCluster, node: FakeNode, held: HeldConnection,
                                                      user: str) -> None:
    """Each of the owner's two fake jobs holds a connection: the fake names the one holding it, in a reply
    like the real slurmd's about its own job's connection (but for the job id)."""
    assert node.fake.server is not None
    [(version, flags, real)] = scontrol_callerid(cluster, held.client, held.server, user).replies
    assert isinstance(real, NetworkCallerIdResponse) and real.job_id == held.job_id
    for job_id, conn in node.held.items():
        asked = node.fake.server.requests
        answer = scontrol_callerid(cluster, conn.local, conn.remote, user, node)
        assert (answer.code, answer.out) == (0, f"{job_id} {NODE}\n"), (answer, cluster.log_tails())
        assert answer.replies == [(version, flags, dataclasses.replace(real, job_id=job_id))]
        assert node.fake.server.requests == asked + 1


def _same_answers(ours: Asked, theirs: Asked) -> None:
    """The same output and the same replies, and no job named."""
    assert ours == theirs, (ours, theirs)
    assert len(ours.replies) == 1
    assert (ours.code, ours.out) == (1, "") and INDETERMINATE in ours.err


@pytest.mark.parametrize("user", ["root", OWNER])
def test_unknown_connection_like_the_real_slurmd(cluster: ChrootCluster, node: FakeNode, held: HeldConnection,
                                                 user: str) -> None:
    """A tuple no socket has (port 1), asked of the fake and of the real slurmd: the same answer."""
    conn = node.held[JOBS[0]]
    ours = scontrol_callerid(cluster, (conn.local[0], 1), conn.remote, user, node)
    theirs = scontrol_callerid(cluster, (held.client[0], 1), held.server, user)
    _same_answers(ours, theirs)


@pytest.mark.parametrize("user", ["root", OWNER])
def test_connection_of_no_job_like_the_real_slurmd(cluster: ChrootCluster, node: FakeNode,
                                                   held: HeldConnection, user: str) -> None:
    """Each daemon asked about the other's job connection: a process there holds it, but it is in none of
    the daemon's jobs."""
    conn = node.held[JOBS[0]]
    ours = scontrol_callerid(cluster, held.client, held.server, user, node)
    theirs = scontrol_callerid(cluster, conn.local, conn.remote, user)
    _same_answers(ours, theirs)


def test_fake_slurmd_command_in_the_namespace(cluster: ChrootCluster, node: FakeNode, tmp_path: Path) -> None:
    """The `fake-slurmd` command, started by nsenter in the namespace with the cluster's munged or
    `--auth slurm --key` and `--cluster`, its jobs' pids from a scenario file, answers scontrol too."""
    script = installed_or_skip("fake-slurmd")
    scenario = tmp_path / "node.toml"
    uid = ids_of(cluster.root, OWNER)[0]
    scenario.write_text("".join(f"[[jobs]]\njob_id = {job_id}\nuser = {uid}\npids = [{conn.pid}]\n"
                                for job_id, conn in node.held.items()))
    auth = (["--munge-socket", str(cluster.munge_socket)] if cluster.auth == "munge"
            else ["--auth", "slurm", "--key", str(cluster.key_path)])
    argv = nsenter_argv([script, "--scenario", str(scenario), "--release", cluster.release, "--listen",
                         f"{NODE}=127.0.0.1:0", "--cluster", str(parse_file(cluster.conf, env={}).cluster_name),
                         *auth], net=cluster.ns.path)
    with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        try:
            line = proc.stdout.readline()  # "" if it exits
            assert line.startswith(f"listening {NODE} 127.0.0.1 "), proc.stderr.read() if proc.poll() else line
            port = int(line.split()[3])
            with conf_for(cluster, port, "fake-slurmd-command") as conf:
                for job_id, conn in node.held.items():
                    answer = scontrol_callerid(cluster, conn.local, conn.remote, OWNER, (conf, port))
                    assert (answer.code, answer.out) == (0, f"{job_id} {NODE}\n"), answer
        finally:
            proc.terminate()
        assert proc.wait(30) == 0, proc.stderr.read()


def test_other_user_like_the_real_slurmd(cluster: ChrootCluster, node: FakeNode, held: HeldConnection) -> None:
    """Someone else asking about the owner's job connection is not told."""
    conn = node.held[JOBS[0]]
    ours = scontrol_callerid(cluster, conn.local, conn.remote, OTHER, node)
    theirs = scontrol_callerid(cluster, held.client, held.server, OTHER)
    _same_answers(ours, theirs)



# -- the real pam_slurm_adopt adopting into the fake node's stepd ---------------------------------------------


@pytest.fixture(scope="module", params=LIVE_COMBOS, ids=[f"{r}-auth-{a}" for r, a in LIVE_COMBOS])
def stand_in(request: pytest.FixtureRequest) -> Iterator[tuple[ChrootCluster, FakeSlurmd]]:
    """A cluster of its own whose real slurmd is stopped and replaced by the fake: on SlurmdPort inside the
    namespace, its stepd sockets in the chroot's SlurmdSpoolDir named for node1 (the UTS host name), two
    jobs of the owner's (the first older)."""
    release, auth = request.param
    reason = missing_reason(release)
    if reason:
        pytest.skip(reason)
    uid = pwd.getpwnam(OWNER).pw_uid  # the chroot's accounts have the host's ids
    now = time.time()
    jobs = {job_id: Job(job_id, uid, start_time=now - 100 + i) for i, job_id in enumerate(JOBS)}
    with ChrootCluster(release, auth) as cluster:
        cluster.stop_slurmd()
        with fake_for(cluster, jobs, port=SLURMD_PORT, spool_dir=str(cluster.host_path(SPOOL))) as fake:
            yield cluster, fake


def _ancestors(pid: int) -> list[int]:
    """pid's parent, grandparent, ... (host pids: the clusters have no pid namespace)."""
    found = []
    while pid > 1:
        status = Path(f"/proc/{pid}/status").read_text()
        pid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
        found.append(pid)
    return found


@pytest.mark.parametrize("source_job", [*JOBS, None], ids=["older", "newer", "no-job"])
def test_pam_slurm_adopt_adopts_into_the_fake_stepd(stand_in: tuple[ChrootCluster, FakeSlurmd],
                                                    source_job: int | None) -> None:
    """alice has two jobs on the fake node and runs ssh from a process of one: the real pam_slurm_adopt asks
    the fake (callerid RPC to the connection's source, 127.0.0.1:SlurmdPort) which job it is and sends
    ADD_EXTERN_PID with sshd's process to that job's extern stepd, whichever is the newer. From a process
    of neither, the fake's "indeterminate" sends the module to action_unknown (newest): one of the two."""
    cluster, fake = stand_in
    for job_id in JOBS:  # what earlier logins had adopted
        fake.jobs[job_id].adopted.clear()
    since = len(cluster.syslog.messages())
    asked = fake.server.requests if fake.server else 0
    ssh = cluster.ssh_argv(OWNER, "echo pid $$ job $SLURM_JOB_ID; exec sleep 600")
    argv, pipes = cluster.inside(ssh, OWNER), {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    with (fake.spawn_in_job(source_job, argv, stdin=subprocess.DEVNULL, **pipes) if source_job
          else subprocess.Popen(argv, stdin=subprocess.DEVNULL, **pipes)) as login:
        try:
            first = shell_line(login, cluster.log_tails)
            shell, job = first.split()[1], int(first.split()[3])
            # The job pam_putenv names after a successful ADD_EXTERN_PID: the source job; from neither, the
            # one action_unknown picks (24.11 by its job cgroup's mtime, which the fake's jobs have none
            # of; 26.05 by the stepd socket's ctime).
            assert job == source_job if source_job else job in JOBS
            [adopted] = fake.adopted(job)
            assert all(fake.adopted(j) == [] for j in JOBS if j != job)
            # The process adopted is sshd's, whose session runs the remote shell.
            assert adopted in _ancestors(int(shell))
            assert Path(f"/proc/{adopted}/comm").read_text().startswith("sshd")
            assert cluster.runs_inside(adopted)
        finally:
            login.kill()
    assert fake.server is not None and fake.server.requests == asked + 1
    verdict = f"member of job {source_job}" if source_job else "unable to determine source job"
    cluster.syslog.wait_for(verdict, ident="pam_slurm_adopt", since=since)
