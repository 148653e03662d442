"""The real pam_slurm_adopt.so (Debian's 22.05) in a real sshd, against fake_slurmd's node and stepds, and the
in-process module (pam_python) beside it in the same stacks: each case runs for both, held to the same
assertions."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fake_slurmd.controller import FakeSlurmd
from fake_slurmd.plugin import SshdFactory
from fake_slurmd.sshd import login_from_job
from tests.support.deploy import pam_python_line
from tests.support.procs import need_programs, pam_module_or_skip
from tests.support.sessions import (
    MARKER,
    NO_JOBS,
    PAM_SLURM_ADOPT,
    UNKNOWN,
    fake_job_login,
    fake_node_sshd,
    host_mount_ns,
    mount_namespace,
)
from tests.support.sshd import Sshd
from tests.support.syslog import DevLogCatcher

MODULES = ["pam_slurm_adopt.so", "pam_python"]
"""The two modules that run inside sshd: Debian's C module, and the in-process one under libpam-python."""


@pytest.fixture(params=MODULES)
def module(request: pytest.FixtureRequest) -> str:
    """One of MODULES' account lines, options to follow (`{conf}`: the fake node's slurm.conf)."""
    if not Path(PAM_SLURM_ADOPT).exists():  # also the reference for the in-process module
        pytest.skip(f"needs {PAM_SLURM_ADOPT} (apt-get install libpam-slurm-adopt)")
    common = "service={service} nodename={nodename} log_level=debug"
    if request.param == "pam_python":
        return f"required {pam_python_line(pam_module_or_skip(), ['conf={conf}', common])}"
    return f"required {PAM_SLURM_ADOPT} {common}"


def module_sshd(fake: FakeSlurmd, sshd_factory: SshdFactory, shared_dir: Path, module: str,
                options: str = "") -> Sshd:
    """An sshd whose account stack is `module` (with `options`), pointed at the fake node."""
    return fake_node_sshd(fake, sshd_factory, shared_dir / f"pam-{fake.port}.conf", f"{module} {options}")


@pytest.fixture
def adopt_sshd(fake_slurmd: FakeSlurmd, sshd_factory: SshdFactory, shared_dir: Path, module: str) -> Sshd:
    return module_sshd(fake_slurmd, sshd_factory, shared_dir, module)


def test_login_from_job_2_is_adopted_into_job_2(fake_slurmd: FakeSlurmd, adopt_sshd: Sshd,
                                                devlog: DevLogCatcher) -> None:
    fake_slurmd.add_job({"job_id": 301, "user": "alice", "start_time": 1000})
    fake_slurmd.add_job({"job_id": 302, "user": "alice", "start_time": 2000})
    since = devlog.mark()
    login = login_from_job(fake_slurmd, adopt_sshd, 302, "alice", "cat /proc/self/status")
    assert login.returncode == 0, (login.stderr, adopt_sshd.log_text())
    # Two jobs: the module had to ask the callerid RPC, and adopted its sshd process into job 302.
    [adopted] = fake_slurmd.adopted(302)
    assert fake_slurmd.adopted(301) == []
    logged = [r.message for r in devlog.messages(since=since)]
    assert any("member of job 302" in m for m in logged), logged
    assert any(f"Process {adopted} adopted into job 302" in m for m in logged), logged


def test_login_from_job_1_is_adopted_into_job_1(fake_slurmd: FakeSlurmd, adopt_sshd: Sshd) -> None:
    fake_slurmd.add_job({"job_id": 311, "user": "alice", "start_time": 1000})
    fake_slurmd.add_job({"job_id": 312, "user": "alice", "start_time": 2000})
    login = login_from_job(fake_slurmd, adopt_sshd, 311, "alice", "cat /proc/self/status")
    assert login.returncode == 0, login.stderr
    assert len(fake_slurmd.adopted(311)) == 1 and fake_slurmd.adopted(312) == []


def test_user_without_jobs_is_refused(fake_slurmd: FakeSlurmd, adopt_sshd: Sshd) -> None:
    fake_slurmd.add_job({"job_id": 321, "user": "alice"})
    login = adopt_sshd.ssh("bob", "true")
    assert login.returncode == 255 and NO_JOBS in login.stderr
    assert fake_slurmd.adopted(321) == []


# --- what the adopted session gets: X11 and the job container ----------------------------------------------

XAUTHORITY = "/home/alice/.Xauthority-fake"


def test_x11_job_gives_display_and_xauthority(fake_slurmd: FakeSlurmd, adopt_sshd: Sshd) -> None:
    fake_slurmd.add_job({"job_id": 331, "user": "alice", "x11": {"display": 10, "xauthority": XAUTHORITY}})
    view = fake_job_login(fake_slurmd, adopt_sshd, 331)
    assert view.allowed, (view.stderr, adopt_sshd.log_text())
    assert (view.env.get("DISPLAY"), view.env.get("XAUTHORITY")) == ("localhost:10.0", XAUTHORITY)
    assert view.env.get("SLURM_JOB_ID") == "331"


def test_no_x11_sets_neither(fake_slurmd: FakeSlurmd, adopt_sshd: Sshd) -> None:
    fake_slurmd.add_job({"job_id": 332, "user": "alice"})
    view = fake_job_login(fake_slurmd, adopt_sshd, 332)
    assert view.allowed and view.env.get("SLURM_JOB_ID") == "332", view.stderr
    assert "DISPLAY" not in view.env and "XAUTHORITY" not in view.env


def test_xauthority_without_display(fake_slurmd: FakeSlurmd, adopt_sshd: Sshd) -> None:
    """The C module sets each variable on its own: XAUTHORITY whenever the stepd names a file."""
    fake_slurmd.add_job({"job_id": 337, "user": "alice", "x11": {"display": 0, "xauthority": XAUTHORITY}})
    view = fake_job_login(fake_slurmd, adopt_sshd, 337)
    assert view.allowed, view.stderr
    assert "DISPLAY" not in view.env and view.env.get("XAUTHORITY") == XAUTHORITY


def test_disable_x11_sets_neither(fake_slurmd: FakeSlurmd, sshd_factory: SshdFactory, shared_dir: Path,
                                  module: str) -> None:
    sshd = module_sshd(fake_slurmd, sshd_factory, shared_dir, module, "disable_x11=1")
    fake_slurmd.add_job({"job_id": 333, "user": "alice", "x11": {"display": 10, "xauthority": XAUTHORITY}})
    view = fake_job_login(fake_slurmd, sshd, 333)
    assert view.allowed and view.env.get("SLURM_JOB_ID") == "333", view.stderr
    assert "DISPLAY" not in view.env and "XAUTHORITY" not in view.env


@pytest.fixture
def job_namespace() -> Iterator[str]:
    """A mount namespace whose /tmp holds MARKER ("from the namespace"), standing in for a job container's."""
    reason = need_programs("unshare")
    if reason:
        pytest.skip(reason)
    with mount_namespace("from the namespace") as path:
        yield path


def test_login_joins_the_jobs_mount_namespace(fake_slurmd: FakeSlurmd, adopt_sshd: Sshd, job_namespace: str) -> None:
    """GET_NS_FD hands the module the namespace; it setns()es sshd into it, so the session sees its /tmp."""
    fake_slurmd.add_job({"job_id": 334, "user": "alice", "namespaces": {"mnt": job_namespace}})
    view = fake_job_login(fake_slurmd, adopt_sshd, 334)
    assert view.allowed, (view.stderr, adopt_sshd.log_text())
    assert view.marker == "from the namespace" and view.mount_ns == os.readlink(job_namespace)
    assert view.env.get("SLURM_JOB_ID") == "334"


def test_join_container_false_stays_in_the_hosts_namespace(fake_slurmd: FakeSlurmd, sshd_factory: SshdFactory,
                                                           shared_dir: Path, module: str, job_namespace: str) -> None:
    sshd = module_sshd(fake_slurmd, sshd_factory, shared_dir, module, "join_container=false")
    fake_slurmd.add_job({"job_id": 335, "user": "alice", "namespaces": {"mnt": job_namespace}})
    view = fake_job_login(fake_slurmd, sshd, 335)
    assert view.allowed and view.mount_ns == host_mount_ns(), view.stderr
    assert view.marker is None and not os.path.exists(MARKER)


def test_a_namespace_the_stepd_cannot_open_fails_the_adoption(fake_slurmd: FakeSlurmd, adopt_sshd: Sshd) -> None:
    """22.05's stepd answers -1: the module logs "stepd_get_ns_fd failed" and the adoption fails after the
    pid was added and SLURM_JOB_ID set; action_adopt_failure=allow (the default) lets the login in, in the
    host's namespace."""
    fake_slurmd.add_job({"job_id": 336, "user": "alice", "namespaces": {"mnt": "/nonexistent/ns"}})
    view = fake_job_login(fake_slurmd, adopt_sshd, 336)
    assert view.allowed and view.mount_ns == host_mount_ns(), view.stderr
    assert view.env.get("SLURM_JOB_ID") == "336" and len(fake_slurmd.adopted(336)) == 1


def test_a_namespace_the_stepd_cannot_open_with_action_adopt_failure_deny(
        fake_slurmd: FakeSlurmd, sshd_factory: SshdFactory, shared_dir: Path, module: str) -> None:
    """As above with action_adopt_failure=deny: the failed adoption refuses the login (the pid was added
    all the same: the stepd keeps it until sshd's process ends)."""
    sshd = module_sshd(fake_slurmd, sshd_factory, shared_dir, module, "action_adopt_failure=deny")
    fake_slurmd.add_job({"job_id": 338, "user": "alice", "namespaces": {"mnt": "/nonexistent/ns"}})
    view = fake_job_login(fake_slurmd, sshd, 338)
    assert not view.allowed and view.status == 255, view.stderr
    assert len(fake_slurmd.adopted(338)) == 1


# --- the RPC path (two jobs): what the C module gets wrong ------------------------------------------------


def test_rpc_path_and_the_jobs_mount_namespace(fake_slurmd: FakeSlurmd, adopt_sshd: Sshd, module: str,
                                               job_namespace: str) -> None:
    """Two jobs, so the job comes from the RPC. The C module asks X11_DISPLAY there with protocol version
    0 (its step_loc_t is zeroed), leaves the xauthority length unread and takes it for GET_NS_FD's answer
    (0: "no namespace"): the session stays in the host's namespace, as on the real job_container/tmpfs
    node (test_job_container_real). The in-process module reads the whole answer and joins."""
    fake_slurmd.add_job({"job_id": 341, "user": "alice", "start_time": 1000})
    fake_slurmd.add_job({"job_id": 342, "user": "alice", "start_time": 2000, "namespaces": {"mnt": job_namespace}})
    view = fake_job_login(fake_slurmd, adopt_sshd, 342)
    assert view.allowed and view.env.get("SLURM_JOB_ID") == "342", (view.stderr, adopt_sshd.log_text())
    assert len(fake_slurmd.adopted(342)) == 1 and fake_slurmd.adopted(341) == []
    if PAM_SLURM_ADOPT in module:
        assert view.marker is None and view.mount_ns == host_mount_ns()
    else:
        assert view.marker == "from the namespace" and view.mount_ns == os.readlink(job_namespace)


def test_rpc_path_and_x11(fake_slurmd: FakeSlurmd, sshd_factory: SshdFactory, shared_dir: Path, module: str) -> None:
    """Two jobs, the one the login comes from with X11, action_unknown=deny. The C module's unread
    xauthority length (see above) is not 0 here: GET_NS_FD takes it for an fd on its way, finds none
    ("stepd_get_ns_fd failed"), and the adoption fails after ADD_EXTERN_PID succeeded; the RPC path then
    falls through to action_unknown, which refuses. The in-process module adopts once and sets DISPLAY and
    XAUTHORITY, as the C module does for a single job."""
    sshd = module_sshd(fake_slurmd, sshd_factory, shared_dir, module, "action_unknown=deny")
    fake_slurmd.add_job({"job_id": 343, "user": "alice", "start_time": 1000})
    fake_slurmd.add_job({"job_id": 344, "user": "alice", "start_time": 2000,
                         "x11": {"display": 10, "xauthority": XAUTHORITY}})
    view = fake_job_login(fake_slurmd, sshd, 344)
    assert len(fake_slurmd.adopted(344)) == 1 and fake_slurmd.adopted(343) == []
    if PAM_SLURM_ADOPT in module:
        assert view.status == 255 and UNKNOWN in view.stderr, view.stderr
    else:
        assert view.allowed, (view.stderr, sshd.log_text())
        assert (view.env.get("DISPLAY"), view.env.get("XAUTHORITY")) == ("localhost:10.0", XAUTHORITY)
        assert view.env.get("SLURM_JOB_ID") == "344"
