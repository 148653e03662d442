"""slurm-adopt in a real sshd's account stack (pam_exec) against fake_slurmd's simulated node."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fake_slurmd.controller import FakeSlurmd
from fake_slurmd.plugin import FakeSshdFactory, SshdFactory
from fake_slurmd.sshd import login_from_job
from tests.support.peers import DroppingHost
from tests.support.sessions import NO_JOBS
from tests.support.slurm_cluster import free_port
from tests.support.sshd import Sshd
from tests.support.syslog import DevLogCatcher


@pytest.fixture
def make_sshd(fake_sshd: FakeSshdFactory) -> Callable[..., Sshd]:
    """An sshd whose account stack runs the hook against the fake node; extra hook options may be given."""
    return fake_sshd


def two_jobs(fake: FakeSlurmd, first: int, user: str = "alice") -> None:
    fake.add_job({"job_id": first, "user": user, "start_time": 1000})
    fake.add_job({"job_id": first + 1, "user": user, "start_time": 2000})


@pytest.mark.parametrize("which", [0, 1], ids=["from-job-1", "from-job-2"])
def test_login_lands_in_its_job(fake_slurmd: FakeSlurmd, make_sshd: Callable[..., Sshd], devlog: DevLogCatcher,
                                which: int) -> None:
    two_jobs(fake_slurmd, 400)
    sshd = make_sshd()
    since = devlog.mark()
    login = login_from_job(fake_slurmd, sshd, 400 + which)
    assert login.returncode == 0, (login.stderr, sshd.log_text())
    [adopted] = fake_slurmd.adopted(400 + which)
    assert fake_slurmd.adopted(401 - which) == []
    logged = [r.message for r in devlog.messages(ident="slurm-adopt", since=since)]
    assert any(f"as alice: member of job {400 + which}" in m for m in logged), logged
    assert f"Process {adopted} adopted into job {400 + which}" in logged
    assert "Access denied" not in login.stderr


def test_single_job_needs_no_rpc(fake_slurmd: FakeSlurmd, make_sshd: Callable[..., Sshd],
                                 devlog: DevLogCatcher) -> None:
    fake_slurmd.add_job({"job_id": 410, "user": "alice"})
    sshd = make_sshd()
    before = fake_slurmd.server.requests if fake_slurmd.server else 0
    login = login_from_job(fake_slurmd, sshd, None)
    assert login.returncode == 0, login.stderr
    assert len(fake_slurmd.adopted(410)) == 1
    assert fake_slurmd.server is not None and fake_slurmd.server.requests == before  # no RPC was sent


def test_user_without_jobs_is_refused(fake_slurmd: FakeSlurmd, make_sshd: Callable[..., Sshd]) -> None:
    fake_slurmd.add_job({"job_id": 420, "user": "alice"})
    login = make_sshd().ssh("bob", "true")
    assert login.returncode == 255 and NO_JOBS in login.stderr
    assert "pam_exec" not in login.stderr and "Traceback" not in login.stderr  # nothing but the message


def test_root_passes(fake_slurmd: FakeSlurmd, make_sshd: Callable[..., Sshd]) -> None:
    fake_slurmd.add_job({"job_id": 430, "user": "alice"})
    login = make_sshd("action_no_jobs=deny", "action_generic_failure=deny").ssh("root", "id -u")
    assert (login.returncode, login.stdout.strip()) == (0, "0"), login.stderr


def _timed_login(fake: FakeSlurmd, sshd: Sshd, job: int) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.monotonic()
    login = login_from_job(fake, sshd, job)
    return time.monotonic() - started, login


def test_dropping_source_host_costs_at_most_the_deadline(fake_slurmd: FakeSlurmd,
                                                          make_sshd: Callable[..., Sshd]) -> None:
    """The source's slurmd port drops packets: the RPC gives up at the deadline, and the newest job is
    chosen (action_unknown=newest), not a hung login."""
    two_jobs(fake_slurmd, 440)
    with DroppingHost() as dropping:
        sshd = make_sshd("deadline=1.5", conf_lines=[f"SlurmdPort={dropping.port}", "TCPTimeout=10"])
        baseline, _ = _timed_login(fake_slurmd, make_sshd(), 440)
        elapsed, login = _timed_login(fake_slurmd, sshd, 440)
    assert login.returncode == 0, login.stderr
    assert len(fake_slurmd.adopted(441)) == 1  # the newest, as the RPC could not tell
    assert elapsed - baseline < 1.5 + 0.5, (elapsed, baseline)


def test_refusing_source_host_fails_fast(fake_slurmd: FakeSlurmd, make_sshd: Callable[..., Sshd]) -> None:
    two_jobs(fake_slurmd, 450)
    sshd = make_sshd("deadline=3", conf_lines=[f"SlurmdPort={free_port()}"])
    baseline, _ = _timed_login(fake_slurmd, make_sshd(), 450)
    elapsed, login = _timed_login(fake_slurmd, sshd, 450)
    assert login.returncode == 0 and len(fake_slurmd.adopted(451)) == 1
    assert elapsed - baseline < 0.5, (elapsed, baseline)


@pytest.mark.parametrize(("action", "allowed"), [("deny", False), ("allow", True), ("ignore", True)])
def test_munged_down_is_a_generic_failure(fake_slurmd: FakeSlurmd, make_sshd: Callable[..., Sshd],
                                          devlog: DevLogCatcher, tmp_path: Path, action: str, allowed: bool) -> None:
    two_jobs(fake_slurmd, 460)
    sshd = make_sshd(f"munge_socket={tmp_path / 'no-munged'}", f"action_generic_failure={action}")
    since = devlog.mark()
    login = login_from_job(fake_slurmd, sshd, 460)
    assert (login.returncode == 0) is allowed, login.stderr
    assert fake_slurmd.adopted(460) == fake_slurmd.adopted(461) == []
    assert any("munge" in r.message for r in devlog.messages(ident="slurm-adopt", since=since))


def test_other_service_is_ignored(fake_slurmd: FakeSlurmd, sshd_factory: SshdFactory, shared_dir: Path,
                                  adopt_hook: str) -> None:
    """Without service=, only "sshd" is handled: this sshd's service has another name, so bob passes."""
    fake_slurmd.add_job({"job_id": 470, "user": "alice"})
    conf = fake_slurmd.slurm_conf(shared_dir / "adopt-service.conf")
    sshd = sshd_factory([f"required pam_exec.so stdout quiet {adopt_hook} conf={conf} nodename=node1"], users=["bob"])
    assert sshd.ssh("bob", "true").returncode == 0


def test_sufficient_style_stanza(fake_slurmd: FakeSlurmd, sshd_factory: SshdFactory, shared_dir: Path,
                                 adopt_hook: str) -> None:
    """`account sufficient pam_slurm_adopt.so` + a later module: with ignore_as=failure and
    [success=done default=ignore], PAM_IGNORE and denials fall through to the next module, as they do
    for the C module; an adoption ends the stack."""
    fake_slurmd.add_job({"job_id": 480, "user": "alice"})
    conf = fake_slurmd.slurm_conf(shared_dir / "adopt-sufficient.conf")
    line = (f"[success=done default=ignore] pam_exec.so stdout quiet {adopt_hook} conf={conf} nodename=node1 "
            "service={service} action_no_jobs=ignore ignore_as=failure")
    sshd = sshd_factory([line, "required pam_deny.so"], users=["alice", "bob"])
    assert sshd.ssh("alice", "true").returncode == 0  # adopted: done, pam_deny never runs
    assert len(fake_slurmd.adopted(480)) == 1
    refused = sshd.ssh("bob", "true")  # no jobs, ignored: the next module (pam_deny) decides
    assert refused.returncode == 255 and "Access denied by pam_slurm_adopt" not in refused.stderr
