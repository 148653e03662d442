"""slurm-adopt on Debian's real Slurm 24.11 and 26.05 nodes, with auth/munge and with auth/slurm
(tests/support/chroot_cluster.py): logins adopted into the real slurmstepd's extern step cgroup.

The node's sshd is the host's (tests/support/sshd.py), started in the cluster's cgroups and network, UTS and
cgroup namespaces but on the host's filesystem (ChrootCluster.node_sshd), with the README's pam.d line: the
hook runs through pam_exec from this environment's interpreter, as root. Users log in with the chroot's ssh,
from a step of their job (srun --overlap) or from outside any job. slurm.conf's paths are the chroot's, so
the hook is given `conf=` a copy of it whose SlurmdSpoolDir and munged socket are their host paths
(ChrootCluster.host_conf()), beside the real slurm.conf: auth/slurm's slurm.key is found where Slurm looks.
No nodename= either: the hook takes the node's name from the UTS namespace's hostname, as on a real node.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from slurmproto.versions import release_named
from tests.support.chroot_cluster import RELEASES, ChrootCluster
from tests.support.chroot_files import AUTHS
from tests.support.deploy import hook_command
from tests.support.fixtures import LiveClusters
from tests.support.packets import callerid_rpcs
from tests.support.procs import installed_or_skip, wait_for
from tests.support.sessions import NO_JOBS
from tests.support.slurm_cluster import srun_argv
from tests.support.sshd import Sshd

OWNER, OTHER = "alice", "bob"
COMBOS = [(release, auth) for release in RELEASES for auth in AUTHS]
REPORT = "echo pid $$; cat /proc/self/cgroup; {hook} --session-env; echo end"
"""What the remote shell prints: its pid, its cgroups, what the profile.d line would export."""


@pytest.fixture(scope="module", params=COMBOS, ids=[f"{r}-auth-{a}" for r, a in COMBOS])
def cluster(request: pytest.FixtureRequest, live_clusters: LiveClusters) -> ChrootCluster:
    release, auth = request.param
    return live_clusters.get(release, auth)


@pytest.fixture(scope="module")
def hook() -> str:
    return installed_or_skip("slurm-adopt", for_other_users=True)


@pytest.fixture(scope="module")
def sshd(cluster: ChrootCluster, hook: str) -> Iterator[Sshd]:
    """The node's sshd with pam_unix and the hook in its account stack."""
    command = hook_command(str(Path(hook).parents[1]))
    line = f"required pam_exec.so stdout quiet {command} conf={cluster.host_conf()} service={{service}} log_level=debug"
    node_sshd = cluster.node_sshd(["required pam_unix.so", line])
    yield node_sshd
    node_sshd.stop()


@pytest.fixture(scope="module")
def jobs(cluster: ChrootCluster) -> Iterator[tuple[int, int]]:
    """Two running jobs of the owner's, the second started after the first."""
    started: list[int] = []
    try:
        for _ in range(2):
            started.append(cluster.submit(OWNER, "exec sleep 600"))
            cluster.wait_running(started[-1])
        yield started[0], started[1]
    finally:
        for job in started:
            cluster.run(["scancel", str(job)], check=False)


def _login_argv(cluster: ChrootCluster, sshd: Sshd, user: str, job: int | None, command: str) -> list[str]:
    """ssh as `user` from a step of `job` (or from outside any job), run inside the chroot."""
    ssh = cluster.ssh_argv(user, command, port=sshd.port)
    if job is not None:
        ssh = srun_argv(job, ssh)
    return cluster.inside(ssh, user)


def report(text: str) -> tuple[int, dict[str, str], str]:
    """The remote shell's pid, cgroup path per controller, and --session-env's output."""
    match = re.search(r"^pid (\d+)\n(.*?)^([^\n]*)\nend$", text, re.M | re.S)
    assert match, text
    cgroups = {}
    for line in match.group(2).splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            cgroups[controller] = path
    return int(match.group(1)), cgroups, match.group(3)


def login(cluster: ChrootCluster, sshd: Sshd, hook: str, user: str, job: int | None
          ) -> tuple[int, dict[str, str] | None, str, str]:
    """Exit status, the remote shell's cgroups (None when refused), --session-env's output, ssh's stderr."""
    argv = _login_argv(cluster, sshd, user, job, REPORT.format(hook=hook))
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=90, check=False)
    if proc.returncode != 0:
        return proc.returncode, None, "", proc.stderr
    _pid, cgroups, env = report(proc.stdout)
    return proc.returncode, cgroups, env, proc.stderr


def _diagnostics(cluster: ChrootCluster, sshd: Sshd) -> str:
    return f"{sshd.log_text()[-2000:]}\n{cluster.log_tails(10)}"


def lands_in(cluster: ChrootCluster, cgroups: dict[str, str] | None, job: int) -> bool:
    """In the job's extern step in both of Slurm's controllers here (proctrack's freezer, task's cpuset)."""
    extern = cluster.extern_cgroup(job)
    return cgroups is not None and cgroups.get("freezer") == extern and cgroups.get("cpuset") == extern


@pytest.mark.parametrize("which", [0, 1], ids=["from-job-1", "from-job-2"])
def test_login_from_job_n_lands_in_job_n(cluster: ChrootCluster, sshd: Sshd, hook: str, jobs: tuple[int, int],
                                         which: int) -> None:
    """Two jobs: the hook asks the slurmd which one the connection comes from (the real callerid RPC, signed
    by munged or with slurm.key) and the real slurmstepd of that job's extern step takes sshd's process.
    The RPC is asked once, in the version of the node's own slurmstepd (whatever libslurm.so this host has)."""
    job = jobs[which]
    with cluster.capture() as cap:
        status, cgroups, env, err = login(cluster, sshd, hook, OWNER, job)
    assert status == 0 and lands_in(cluster, cgroups, job), (cgroups, err, _diagnostics(cluster, sshd))
    assert callerid_rpcs(cap) == [(release_named(cluster.release).protocol_version, job)]
    assert env == f"export SLURM_JOB_ID={job}"


def test_login_from_outside_lands_in_the_newest_job(cluster: ChrootCluster, sshd: Sshd, hook: str,
                                                    jobs: tuple[int, int]) -> None:
    """The RPC finds no job for a connection from outside: the newest of the owner's jobs here (the
    session's other tests may have started one of the owner's after ours)."""
    with cluster.capture() as cap:
        status, cgroups, env, err = login(cluster, sshd, hook, OWNER, None)
    running = cluster.run(["squeue", "-h", "-u", OWNER, "-t", "R", "-o", "%i"]).stdout.split()
    newest = max(map(int, running))
    assert status == 0 and lands_in(cluster, cgroups, newest), (cgroups, err, _diagnostics(cluster, sshd))
    assert env == f"export SLURM_JOB_ID={newest}"
    assert callerid_rpcs(cap) == [(release_named(cluster.release).protocol_version, None)]


def test_user_without_jobs_is_refused(cluster: ChrootCluster, sshd: Sshd, hook: str, jobs: tuple[int, int]) -> None:
    status, cgroups, _env, err = login(cluster, sshd, hook, OTHER, None)
    assert status == 255 and cgroups is None and NO_JOBS in err, err


def stays_until_cancelled(cluster: ChrootCluster, job: int, argv: list[str]) -> None:
    """The login `argv`, from a step of `job`, whose remote shell prints "pid N" first and stays: that shell is
    in the job's extern step and one of its pids (scontrol listpids) until the job is cancelled, which ends
    the login."""
    with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()
            assert first.startswith("pid "), (first, cluster.log_tails(10))
            pid = int(first.split()[1])
            assert cluster.in_extern_step(pid, job)
            assert str(pid) in cluster.run(["scontrol", "listpids", str(job)]).stdout
        finally:
            cluster.run(["scancel", str(job)], check=False)
            wait_for(lambda: proc.poll() is not None, 30, "the adopted login to end with its job")


def test_adopted_login_stays_in_the_job_and_ends_with_it(cluster: ChrootCluster, sshd: Sshd, hook: str) -> None:
    job = cluster.submit(OWNER, "exec sleep 600")
    try:
        cluster.wait_running(job)
        stays_until_cancelled(cluster, job, _login_argv(cluster, sshd, OWNER, job,
                                                        REPORT.format(hook=hook) + "; exec sleep 600"))
    finally:
        cluster.run(["scancel", str(job)], check=False)
