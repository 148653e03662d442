"""The real pam_slurm_adopt.so (Debian's 22.05) in a real sshd, against fake_slurmd's node and stepds."""

from __future__ import annotations

import pwd
import subprocess
from pathlib import Path

import pytest

from fake_slurmd.controller import FakeSlurmd
from tests.support.fixtures import SshdFactory
from tests.support.sshd import Sshd
from tests.support.syslog import DevLogCatcher

PAM_SLURM_ADOPT = "/lib/security/pam_slurm_adopt.so"
NO_JOBS = "Access denied by pam_slurm_adopt: you have no active jobs on this node"


@pytest.fixture
def adopt_sshd(fake_slurmd: FakeSlurmd, sshd_factory: SshdFactory, shared_dir: Path) -> Sshd:
    if not Path(PAM_SLURM_ADOPT).exists():
        pytest.skip(f"needs {PAM_SLURM_ADOPT} (apt-get install libpam-slurm-adopt)")
    conf = fake_slurmd.slurm_conf(shared_dir / f"pam-{fake_slurmd.port}.conf")
    return sshd_factory([f"required {PAM_SLURM_ADOPT} service={{service}} nodename=node1 log_level=debug"],
                        env={"SLURM_CONF": str(conf)}, users=["alice", "bob"])


def _login_from_job(fake: FakeSlurmd, sshd: Sshd, job_id: int, user: str) -> subprocess.CompletedProcess[str]:
    argv = sshd.ssh_argv(user, "cat /proc/self/status")
    home = pwd.getpwnam(user).pw_dir
    proc = fake.spawn_in_job(job_id, argv, user=user, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={"HOME": home, "PATH": "/usr/bin:/bin"},
                             cwd="/")
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def test_login_from_job_2_is_adopted_into_job_2(fake_slurmd: FakeSlurmd, adopt_sshd: Sshd,
                                                devlog: DevLogCatcher) -> None:
    fake_slurmd.add_job({"job_id": 301, "user": "alice", "start_time": 1000})
    fake_slurmd.add_job({"job_id": 302, "user": "alice", "start_time": 2000})
    since = devlog.mark()
    login = _login_from_job(fake_slurmd, adopt_sshd, 302, "alice")
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
    login = _login_from_job(fake_slurmd, adopt_sshd, 311, "alice")
    assert login.returncode == 0, login.stderr
    assert len(fake_slurmd.adopted(311)) == 1 and fake_slurmd.adopted(312) == []


def test_user_without_jobs_is_refused(fake_slurmd: FakeSlurmd, adopt_sshd: Sshd) -> None:
    fake_slurmd.add_job({"job_id": 321, "user": "alice"})
    login = adopt_sshd.ssh("bob", "true")
    assert login.returncode == 255 and NO_JOBS in login.stderr
    assert fake_slurmd.adopted(321) == []
