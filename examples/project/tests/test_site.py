"""A site's login tests against simulated nodes, through the installed plugin only."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fake_slurmd import FakeSlurmd
from fake_slurmd.pamexec import run_hook
from fake_slurmd.plugin import FakeNodeFactory, FakeSshdFactory, login_from_job

SCENARIO = Path(__file__).resolve().parents[1] / "scenario.toml"


def test_a_node_with_jobs(fake_node: FakeNodeFactory) -> None:
    fake = fake_node([{"job_id": 7, "user": "root"}, {"job_id": 8, "user": 0, "steps": ["extern"]}],
                     release="24.11")
    assert sorted(fake.jobs) == [7, 8]
    with socket.create_server(("127.0.0.1", 0)) as listener, \
            fake.connect_from_job(8, *listener.getsockname()) as conn:
        assert conn.job_id == 8 and conn.remote == listener.getsockname()


@pytest.mark.fake_slurmd(scenario=str(SCENARIO))
def test_callerid_names_the_job(fake_slurmd: FakeSlurmd, fake_slurmd_munge_socket: str, tmp_path: Path) -> None:
    conf = fake_slurmd.slurm_conf(tmp_path / "slurm.conf")
    command = shutil.which("slurm-callerid", path=os.path.dirname(sys.executable))
    assert command, "slurm-callerid is installed beside this interpreter"
    with socket.create_server(("127.0.0.1", 0)) as listener, \
            fake_slurmd.connect_from_job(42, *listener.getsockname()) as conn:
        (local_ip, local_port), (remote_ip, remote_port) = conn.local, conn.remote
        argv = [command, "--conf", str(conf), "--munge-socket", fake_slurmd_munge_socket,
                local_ip, str(local_port), remote_ip, str(remote_port)]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout) == (0, "42 node1\n"), result.stderr


def test_login_lands_in_the_job(fake_slurmd: FakeSlurmd, fake_sshd: FakeSshdFactory) -> None:
    sshd = fake_sshd()  # makes the users alice and bob when missing
    fake_slurmd.add_job({"job_id": 9, "user": "alice"})
    login = login_from_job(fake_slurmd, sshd, 9, "alice", "id -un")
    assert (login.returncode, login.stdout) == (0, "alice\n"), login.stderr
    assert len(fake_slurmd.adopted(9)) == 1
    refused = login_from_job(fake_slurmd, sshd, None, "bob", "true")
    assert refused.returncode == 255
    assert "you have no active jobs on this node" in refused.stderr


def test_hook_alone_with_pam_exec_environment(fake_slurmd: FakeSlurmd, tmp_path: Path) -> None:
    conf = fake_slurmd.slurm_conf(tmp_path / "slurm.conf")
    refused = run_hook([f"conf={conf}", "nodename=node1"], user="nobody")  # no job of nobody's
    assert (refused.status, refused.verdict, refused.stderr) == (1, "PAM_SYSTEM_ERR", b"")
    assert refused.messages == ["Access denied by pam_slurm_adopt: you have no active jobs on this node"]
    root = run_hook([f"conf={conf}", "nodename=node1"], user="root")  # root always passes
    assert (root.status, root.verdict, root.messages) == (0, "PAM_SUCCESS", [])
