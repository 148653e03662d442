"""The in-process module (adopt/pam_module.py) inside the chroot's own sshd, under the chroot's libpam-python and
python3 (3.13 on trixie, 3.14 on sid), on Debian's real Slurm 24.11 and 26.05 with auth/munge and auth/slurm,
side by side with the chroot's pam_slurm_adopt.so (tests/support/chroot_cluster.py).

The project's packages are copied into the cluster's overlay (ChrootCluster.install_project) and the module's
sshd has a PAM service of its own (ChrootCluster.sshd_beside); the cluster's sshd keeps pam_slurm_adopt.so
with the same options. Users log in with the chroot's ssh from a step of a job (srun --overlap) or from
outside any job. With auth/slurm the module signs the callerid RPC with slurm.key, as root inside sshd.
On the container clusters (job_container/tmpfs on 24.11; namespace/tmpfs and namespace/linux on 26.05) a
login that is adopted also enters the job's mount namespace and sees the job's private /tmp.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from slurmproto.k12 import kangarootwelve
from slurmproto.versions import release_named
from tests.support.chroot_cluster import CONTAINERS, PROJECT_DIR, ChrootCluster
from tests.support.chroot_files import ADOPT_OPTIONS, SSHD_PORT
from tests.support.fixtures import LiveClusters
from tests.support.packets import callerid_rpcs
from tests.support.sessions import CGROUP_JOB, SessionView, marker_job, marker_text, parse_session, probe_command
from tests.test_live_hook import NO_JOBS, jobs, lands_in, report, stays_until_cancelled

__all__ = ["jobs"]  # the two-job fixture, shared with test_live_hook
OWNER, OTHER = "alice", "bob"
SERVICE = "sat-pam-python"
PORT = 2223
"""The module's sshd; pam_slurm_adopt.so's is the cluster's, on SSHD_PORT."""
OPTIONS = f"{ADOPT_OPTIONS} service={SERVICE}"
"""The C module's options (the RPC always asked), and the PAM service, which ours checks."""
REPORT = "echo pid $$; cat /proc/self/cgroup; echo SLURM_JOB_ID=${SLURM_JOB_ID:-none}; echo end"


def module_line(cluster: ChrootCluster, options: str = OPTIONS) -> str:
    """The README's account line for the module in the chroot, once the project is in the overlay."""
    if not any(cluster.root.glob("usr/lib/*/security/pam_python.so")):
        pytest.skip(f"the Slurm {cluster.release} chroot has no libpam-python (rebuild it: scripts/build-chroots)")
    return f"required pam_python.so {cluster.install_project()} {options}"


@pytest.fixture(scope="module")
def module_port(cluster: ChrootCluster) -> Iterator[int]:
    """The port of the chroot's sshd with the module in its account stack."""
    with cluster.sshd_beside(SERVICE, [module_line(cluster)], PORT) as port:
        yield port


def ssh(cluster: ChrootCluster, port: int, user: str, job: int | None,
        command: str) -> subprocess.CompletedProcess[str]:
    """`user` logs in to the sshd on `port` from a step of `job` (or from outside any job)."""
    argv = cluster.ssh_argv(user, command, port=port)
    if job is not None:
        argv = ["srun", f"--jobid={job}", "--overlap", "-N1", "-n1", "--quiet", *argv]
    return cluster.run(argv, user=user, check=False, timeout=90)


def landed(cluster: ChrootCluster, port: int, user: str, job: int | None) -> tuple[int | None, str]:
    """The job whose extern step the login's shell is in (None: refused, or in none) and its SLURM_JOB_ID."""
    proc = ssh(cluster, port, user, job, REPORT)
    assert proc.returncode in (0, 255), (proc.returncode, proc.stderr, cluster.log_tails(10))
    if proc.returncode:
        return None, ""
    _pid, cgroups, env = report(proc.stdout)
    found = CGROUP_JOB.search(cgroups.get("freezer", ""))
    job_id = int(found.group(1)) if found else None
    return (job_id if job_id and lands_in(cluster, cgroups, job_id) else None), env.removeprefix("SLURM_JOB_ID=")


@pytest.mark.parametrize("which", [0, 1], ids=["from-job-1", "from-job-2"])
def test_login_from_job_n_lands_in_job_n(cluster: ChrootCluster, module_port: int, jobs: tuple[int, int],
                                         which: int) -> None:
    """Two jobs: the module asks the slurmd which one the connection comes from (one callerid RPC, in the
    version of the node's slurmstepd) and the real slurmstepd of that job's extern step takes sshd's
    process; the session has SLURM_JOB_ID. pam_slurm_adopt.so, from the same job, lands there too."""
    job = jobs[which]
    with cluster.capture() as cap:
        ours = landed(cluster, module_port, OWNER, job)
    assert ours == (job, str(job)), cluster.log_tails(10)
    assert callerid_rpcs(cap) == [(release_named(cluster.release).protocol_version, job)]
    assert landed(cluster, SSHD_PORT, OWNER, job) == (job, str(job))


def test_login_from_outside_lands_in_the_newest_job(cluster: ChrootCluster, module_port: int,
                                                    jobs: tuple[int, int]) -> None:
    """The RPC finds no job for a connection from outside: the newest of the owner's running jobs."""
    newest = max(map(int, cluster.run(["squeue", "-h", "-u", OWNER, "-t", "R", "-o", "%i"]).stdout.split()))
    assert landed(cluster, module_port, OWNER, None) == (newest, str(newest))


def test_user_without_jobs_is_refused_as_by_the_c_module(cluster: ChrootCluster, module_port: int) -> None:
    """Refused by both with pam_slurm_adopt's message, shown through the PAM conversation."""
    for port in (module_port, SSHD_PORT):
        proc = ssh(cluster, port, OTHER, None, "true")
        assert proc.returncode == 255 and NO_JOBS in proc.stderr, (port, proc.stderr)


@pytest.mark.parametrize("which", ["pam_python", "pam_slurm_adopt.so"])
def test_refusal_is_pam_perm_denied(cluster: ChrootCluster, which: str) -> None:
    """The code itself: in a stack where only PAM_PERM_DENIED jumps over pam_deny onto pam_permit, the user
    without jobs gets in, through either module, and the owner of a job (PAM_SUCCESS) does not."""
    module = module_line(cluster, f"{ADOPT_OPTIONS} service=sat-code").removeprefix("required ") \
        if which == "pam_python" else f"pam_slurm_adopt.so {ADOPT_OPTIONS} service=sat-code"
    lines = [f"[perm_denied=1 default=die] {module}", "required pam_deny.so", "required pam_permit.so"]
    job = cluster.submit(OWNER, "exec sleep 600")
    try:
        cluster.wait_running(job)
        with cluster.sshd_beside("sat-code", lines, PORT + 1) as port:
            assert ssh(cluster, port, OTHER, None, "true").returncode == 0
            assert ssh(cluster, port, OWNER, job, "true").returncode == 255
    finally:
        cluster.run(["scancel", str(job)], check=False)


def test_adopted_login_stays_in_the_job_and_ends_with_it(cluster: ChrootCluster, module_port: int) -> None:
    job = cluster.submit(OWNER, "exec sleep 600")
    try:
        cluster.wait_running(job)
        ssh = cluster.ssh_argv(OWNER, "echo pid $$; exec sleep 600", port=module_port)
        stays_until_cancelled(cluster, job, cluster.inside(["srun", f"--jobid={job}", "--overlap", "-N1", "-n1",
                                                            "--quiet", *ssh], OWNER))
    finally:
        cluster.run(["scancel", str(job)], check=False)


def test_packages_work_under_the_chroots_python(cluster: ChrootCluster) -> None:
    """The copied packages under the chroot's python3 (the module's interpreter): K12 of a long input (the
    project's own tree mode) is the host's."""
    module_line(cluster)
    data = bytes(range(256)) * 40
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from slurmproto.k12 import kangarootwelve; "
            "print(kangarootwelve(bytes(range(256)) * 40, b'c').hex())")
    proc = cluster.run(["python3", "-I", "-c", code, PROJECT_DIR])
    assert proc.stdout.strip() == kangarootwelve(data, b"c").hex()


# -- the job's mount namespace (the release's tmpfs plugin) -------------------------------------------------


PLUGINS = [(release, plugin) for release, plugins in CONTAINERS.items() for plugin in plugins]


@pytest.fixture(scope="module", params=PLUGINS, ids=[f"{r}-{p}" for r, p in PLUGINS])
def container(request: pytest.FixtureRequest, live_clusters: LiveClusters) -> ChrootCluster:
    """Each release's cluster with each of its namespace plugins (auth/munge)."""
    release, plugin = request.param
    return live_clusters.get(release, "munge", container=plugin)


@pytest.fixture(scope="module")
def marker(container: ChrootCluster) -> Iterator[int]:
    """A running job of the owner's that wrote marker_text(job) into its private /tmp."""
    job = marker_job(container, OWNER)
    yield job
    container.run(["scancel", str(job)], check=False)


def session(cluster: ChrootCluster, lines: list[str], job: int) -> SessionView:
    """A login from inside `job` to an sshd whose account stack is `lines`: what its session sees."""
    with cluster.sshd_beside("sat-join", lines, PORT + 2) as port:
        return parse_session(ssh(cluster, port, OWNER, job, probe_command()))


def cluster_mount_ns(cluster: ChrootCluster) -> str:
    """The cluster's own mount namespace (its daemons' and sshd's), as readlink /proc/PID/ns/mnt shows it."""
    return f"mnt:[{os.stat(cluster.mnt).st_ino}]"


def test_joins_the_jobs_namespace_as_the_c_module_does(container: ChrootCluster, marker: int) -> None:
    """One job, no RPC (single_job_skip_rpc's default): both modules enter the job's mount namespace, the
    same one, where the job's marker is in /tmp."""
    ours = session(container, [module_line(container, "nodename=node1 service=sat-join")], marker)
    theirs = session(container, ["required pam_slurm_adopt.so nodename=node1 service=sat-join"], marker)
    for view in (ours, theirs):
        assert view.allowed and view.job == marker and view.env.get("SLURM_JOB_ID") == str(marker), \
            (view, container.log_tails(15))
        assert view.marker == marker_text(marker)
    assert ours.mount_ns == theirs.mount_ns != cluster_mount_ns(container)


def test_joins_on_the_rpc_path_where_the_c_module_does_not(container: ChrootCluster, marker: int) -> None:
    """With the RPC asked (single_job_skip_rpc=0) the module enters the job's namespace; pam_slurm_adopt.so
    adopts but stays in sshd's: on that path it hands X11_DISPLAY a zero protocol version, leaves the
    xauthority length unread, takes it for the namespace answer (0: "No ns_fd given back") and closes
    (slurm-wire-facts §10, the RPC path's wire quirk)."""
    ours = session(container, [module_line(container, f"{ADOPT_OPTIONS} service=sat-join")], marker)
    assert ours.job == marker and ours.marker == marker_text(marker), ours
    assert ours.mount_ns != cluster_mount_ns(container)
    since = container.syslog.mark()
    theirs = session(container, [f"required pam_slurm_adopt.so {ADOPT_OPTIONS} service=sat-join"], marker)
    assert theirs.job == marker and theirs.marker is None and theirs.mount_ns == cluster_mount_ns(container), theirs
    container.syslog.wait_for("No ns_fd given back", ident="pam_slurm_adopt", since=since)


def test_join_container_false_stays_outside(container: ChrootCluster, marker: int) -> None:
    view = session(container, [module_line(container, "nodename=node1 service=sat-join join_container=false")],
                   marker)
    assert view.job == marker and view.marker is None and view.mount_ns == cluster_mount_ns(container), view
