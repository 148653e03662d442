"""Logins into a job of a real Slurm 22.05 node with job_container/tmpfs: what the session sees.

The C module joins the job's mount namespace (its private /tmp) and puts SLURM_JOB_ID into the PAM
environment, and so does the in-process module (pam_python), side by side with it; the pam_exec hook can
do neither (it is a child of sshd), so its sessions see the host's /tmp.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fake_slurmd.plugin import SshdFactory
from slurmproto.stepd import CLONE_NEWNS, StepdClient
from slurmproto.versions import SLURM_22_05
from tests.support.deploy import hook_command, pam_python_line
from tests.support.procs import installed_or_skip, pam_module_or_skip
from tests.support.sessions import (
    MARKER,
    PAM_SLURM_ADOPT,
    container_login,
    container_sshd,
    host_mount_ns,
    login_from_step,
    marker_job,
    marker_text,
)
from tests.support.slurm_cluster import SlurmCluster, srun_argv


@pytest.fixture(scope="module")
def c_module() -> str:
    if not Path(PAM_SLURM_ADOPT).exists():
        pytest.skip(f"needs {PAM_SLURM_ADOPT} (apt-get install libpam-slurm-adopt)")
    return PAM_SLURM_ADOPT


MODULES = ["pam_slurm_adopt.so", "pam_python"]


@pytest.fixture(params=MODULES)
def module(request: pytest.FixtureRequest, container_cluster: SlurmCluster) -> str:
    """The account line of one of the two modules that run inside sshd, options to follow."""
    common = f"service={{service}} nodename={container_cluster.node_name}"
    if request.param == "pam_python":
        return f"required {pam_python_line(pam_module_or_skip(), ['conf={conf}', 'log_level=debug', common])}"
    return f"required {request.getfixturevalue('c_module')} {common}"


def test_the_job_has_a_private_tmp(container_cluster: SlurmCluster, container_job: int) -> None:
    """The premise: the marker is in the job's namespace only."""
    assert not os.path.exists(MARKER)
    step = container_cluster.run(srun_argv(container_job, ["cat", MARKER]), user="alice")
    assert step.stdout == marker_text(container_job)


def test_the_stepd_hands_out_the_jobs_namespace(container_cluster: SlurmCluster, container_job: int) -> None:
    """What fake_slurmd's `namespaces` imitates: GET_NS_FD gives the namespace the job's steps run in."""
    step = container_cluster.run(srun_argv(container_job, ["readlink", "/proc/self/ns/mnt"]),
                                 user="alice")
    holder = container_cluster.container_dir / container_cluster.node_name / str(container_job) / ".ns"
    socket = str(container_cluster.extern_socket(container_job))
    with StepdClient(socket, version=SLURM_22_05) as client:
        assert client.x11_display() == (0, None)
        [(kind, fd)] = client.namespace_fds()
    try:
        assert kind == CLONE_NEWNS
        assert os.fstat(fd).st_ino == os.stat(holder).st_ino
        assert step.stdout.strip() == f"mnt:[{os.fstat(fd).st_ino}]"
    finally:
        os.close(fd)


def test_module_joins_the_jobs_namespace(container_cluster: SlurmCluster, container_job: int,
                                         sshd_factory: SshdFactory, module: str) -> None:
    """Both modules setns() sshd's process into the job's mount namespace: the session sees the job's
    private /tmp, and has SLURM_JOB_ID."""
    view = container_login(container_cluster, container_job, sshd_factory, module)
    assert view.allowed, view.stderr
    assert view.job == container_job
    assert view.marker == marker_text(container_job)
    assert view.mount_ns != host_mount_ns()
    assert view.env.get("SLURM_JOB_ID") == str(container_job)
    assert "DISPLAY" not in view.env and "XAUTHORITY" not in view.env  # the job has no X11


def test_module_without_join_container(container_cluster: SlurmCluster, container_job: int,
                                       sshd_factory: SshdFactory, module: str) -> None:
    view = container_login(container_cluster, container_job, sshd_factory, f"{module} join_container=false")
    assert view.allowed and view.job == container_job, view.stderr
    assert view.marker is None and view.mount_ns == host_mount_ns()
    assert view.env.get("SLURM_JOB_ID") == str(container_job)


def test_hook_adopts_but_sees_the_hosts_tmp(container_cluster: SlurmCluster, container_job: int,
                                            sshd_factory: SshdFactory) -> None:
    env = os.path.dirname(os.path.dirname(installed_or_skip("slurm-adopt")))
    line = (f"required pam_exec.so stdout quiet {hook_command(env)} conf={container_cluster.conf} "
            f"service={{service}} nodename={container_cluster.node_name}")
    view = container_login(container_cluster, container_job, sshd_factory, line)
    assert view.allowed and view.job == container_job, view.stderr
    assert view.marker is None and view.mount_ns == host_mount_ns()
    assert "SLURM_JOB_ID" not in view.env


def test_refused_login_reports_no_session(container_cluster: SlurmCluster, container_job: int,
                                          sshd_factory: SshdFactory, c_module: str) -> None:
    """bob has no job here: the same helper reports the refusal."""
    sshd = container_sshd(container_cluster, sshd_factory,
                          f"required {c_module} service={{service}} nodename={container_cluster.node_name}")
    view = login_from_step(container_cluster, sshd, None, user="bob")
    assert not view.allowed and view.status == 255
    assert "you have no active jobs on this node" in view.stderr


@pytest.fixture(scope="module")
def second_job(container_cluster: SlurmCluster, container_job: int) -> Iterator[int]:
    """Another marker job of alice's, started after container_job: with two jobs the modules ask the RPC
    (munged, from a thread of the in-process module's) before they enter a namespace."""
    job_id = marker_job(container_cluster, "alice")
    yield job_id
    container_cluster.cancel(job_id)


@pytest.mark.parametrize("which", ["first", "second"])
def test_module_joins_the_namespace_of_the_job_the_login_comes_from(
        container_cluster: SlurmCluster, container_job: int, second_job: int, sshd_factory: SshdFactory,
        module: str, which: str) -> None:
    """Two jobs: the RPC names the job, and both modules adopt into it. The C module is wrong about its
    namespace: on the RPC path it asks X11_DISPLAY with protocol version 0 (its step_loc_t is zeroed), so
    it leaves the xauthority length unread and takes that 0 for GET_NS_FD's answer ("no namespace"): the
    session stays in the host's mount namespace. The in-process module reads the whole answer and enters
    the job's namespace, as the C module does for a single job."""
    job = container_job if which == "first" else second_job
    view = container_login(container_cluster, job, sshd_factory, module)
    assert view.allowed and view.job == job, view.stderr
    assert view.env.get("SLURM_JOB_ID") == str(job)
    if PAM_SLURM_ADOPT in module:
        assert view.marker is None and view.mount_ns == host_mount_ns()
    else:
        assert view.marker == marker_text(job) and view.mount_ns != host_mount_ns()
