"""Real sshd logins on a real Slurm 22.05 node through the quick hook (adopt/thin.py) and slurm-adopt-agent:
with the agent answering, hung, killed in the middle of a request, restarted, and absent. Whatever the
agent does, each login gets the verdict the hook alone would give, within the deadline."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fake_slurmd.plugin import SshdFactory
from tests.support.agent import AgentProcess
from tests.support.deploy import thin_hook_command
from tests.support.peers import DroppingHost
from tests.support.procs import installed_or_skip, wait_for
from tests.support.slurm_cluster import SlurmCluster
from tests.support.sshd import Sshd
from tests.test_adopt_real import NO_JOBS, _hook_sshd, jobs, login, newest_job  # noqa: F401 (jobs: a fixture)

DEADLINE = 3.0
SLACK = 2.0
"""srun's and ssh's own start-up, on top of the deadline."""


@pytest.fixture(scope="module")
def thin_hook() -> str:
    return thin_hook_command(os.path.dirname(os.path.dirname(installed_or_skip("slurm-adopt-agent"))))


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProcess]:
    with AgentProcess(tmp_path / "run" / "agent.socket") as started:
        yield started.start()


def hook_sshd(cluster: SlurmCluster, sshd_factory: SshdFactory, thin_hook: str, shared_dir: Path, socket: Path,
              slurmd_port: int | None = None) -> Sshd:
    return _hook_sshd(cluster, sshd_factory, thin_hook, shared_dir, f"agent_socket={socket}",
                      f"deadline={DEADLINE:g}", "log_level=debug", slurmd_port=slurmd_port,
                      users=("alice", "bob"))


def timed_login(cluster: SlurmCluster, sshd: Sshd, user: str, job: int | None) -> tuple[int, int | None, str, float]:
    started = time.monotonic()
    status, landed, err = login(cluster, sshd, user, job)
    return status, landed, err, time.monotonic() - started


def test_logins_through_the_agent(slurm_cluster: SlurmCluster, jobs: tuple[int, int],  # noqa: F811
                                  sshd_factory: SshdFactory, thin_hook: str, shared_dir: Path,
                                  agent: AgentProcess) -> None:
    sshd = hook_sshd(slurm_cluster, sshd_factory, thin_hook, shared_dir, agent.path)
    for job in jobs:  # two jobs: the RPC names the one the login comes from
        status, landed, err = login(slurm_cluster, sshd, "alice", job)
        assert (status, landed) == (0, job), (err, agent.log_text())
    status, landed, err = login(slurm_cluster, sshd, "alice", None)
    assert (status, landed) == (0, newest_job(slurm_cluster, "alice")), err
    status, landed, err = login(slurm_cluster, sshd, "bob", None)
    assert status == 255 and landed is None and NO_JOBS in err
    result = sshd.ssh("root", "id -u")
    assert (result.returncode, result.stdout.strip()) == (0, "0"), result.stderr
    assert agent.answered() == 5, agent.log_text()


def test_a_hung_agent(slurm_cluster: SlurmCluster, jobs: tuple[int, int], sshd_factory: SshdFactory,  # noqa: F811
                      thin_hook: str, shared_dir: Path, agent: AgentProcess) -> None:
    """The agent accepts nothing (SIGSTOP): after half the deadline the hook decides itself."""
    sshd = hook_sshd(slurm_cluster, sshd_factory, thin_hook, shared_dir, agent.path)
    agent.pause()
    try:
        status, landed, err, elapsed = timed_login(slurm_cluster, sshd, "alice", jobs[0])
        assert (status, landed) == (0, jobs[0]), err
        assert elapsed < DEADLINE + SLACK
        status, landed, err, elapsed = timed_login(slurm_cluster, sshd, "bob", None)
        assert status == 255 and NO_JOBS in err and elapsed < DEADLINE + SLACK
    finally:
        agent.resume()
    assert agent.answered() == 0


def test_an_agent_killed_in_the_middle_of_a_request(slurm_cluster: SlurmCluster, jobs: tuple[int, int],  # noqa: F811
                                                    sshd_factory: SshdFactory, thin_hook: str, shared_dir: Path,
                                                    agent: AgentProcess) -> None:
    """The source's slurmd drops the RPC, so the agent is still waiting for it when it is killed: the hook
    sees the connection close, decides itself and, the RPC failing again, adopts into the newest job."""
    with DroppingHost() as dropping:
        sshd = hook_sshd(slurm_cluster, sshd_factory, thin_hook, shared_dir, agent.path, slurmd_port=dropping.port)
        result: list[tuple[int, int | None, str, float]] = []
        thread = threading.Thread(target=lambda: result.append(timed_login(slurm_cluster, sshd, "alice", jobs[0])))
        thread.start()
        try:
            wait_for(lambda: "request for 'alice'" in agent.log_text(), 30, "the agent has the request")
            agent.kill()
        finally:
            thread.join(60)
    [(status, landed, err, elapsed)] = result
    assert (status, landed) == (0, newest_job(slurm_cluster, "alice")), err
    assert elapsed < DEADLINE + SLACK
    assert agent.answered() == 0


def test_a_restarted_agent(slurm_cluster: SlurmCluster, jobs: tuple[int, int], sshd_factory: SshdFactory,  # noqa: F811
                           thin_hook: str, shared_dir: Path, agent: AgentProcess) -> None:
    sshd = hook_sshd(slurm_cluster, sshd_factory, thin_hook, shared_dir, agent.path)
    agent.kill()
    status, landed, err = login(slurm_cluster, sshd, "alice", jobs[1])  # nobody accepts: the fallback
    assert (status, landed) == (0, jobs[1]), err
    agent.start()
    status, landed, err = login(slurm_cluster, sshd, "alice", jobs[0])
    assert (status, landed) == (0, jobs[0]), err
    assert agent.answered() == 1


def test_no_agent_at_all(slurm_cluster: SlurmCluster, jobs: tuple[int, int], sshd_factory: SshdFactory,  # noqa: F811
                         thin_hook: str, shared_dir: Path, tmp_path: Path) -> None:
    sshd = hook_sshd(slurm_cluster, sshd_factory, thin_hook, shared_dir, tmp_path / "absent.socket")
    status, landed, err = login(slurm_cluster, sshd, "alice", jobs[0])
    assert (status, landed) == (0, jobs[0]), err
    status, landed, err = login(slurm_cluster, sshd, "bob", None)
    assert status == 255 and NO_JOBS in err
