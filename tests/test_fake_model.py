"""fake_slurmd's pure parts: scenario files, the per-release behaviour table, job membership."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fake_slurmd.behaviour import BEHAVIOURS, Refusal, release_for
from fake_slurmd.membership import (
    ancestors,
    cgroup_relative,
    descendants,
    has_job_environ,
    job_contains,
    job_of,
    parent_of,
    step_of,
)
from fake_slurmd.processes import stop_process
from fake_slurmd.scenario import Job, Scenario, ScenarioError
from slurmproto.constants import SLURM_BATCH_SCRIPT, SLURM_EXTERN_CONT

TOML = """
release = "24.11"
slurm_user = 0
client_timeout = 2.5

[[nodes]]
name = "node1"
address = "127.0.0.2"
port = 0

[[nodes]]
name = "node2"

[[jobs]]
job_id = 42
user = "root"
start_time = 2026-11-29T10:00:00Z
nodes = ["node1"]
steps = ["extern", "batch", 0]
pids = [1]
environ = true

[[jobs]]
job_id = 43
user = 0
"""


def test_toml_and_json_scenarios(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(TOML)
    scenario = Scenario.load(path)
    assert scenario.release == "24.11" and scenario.client_timeout == 2.5
    assert [(n.name, n.address, n.port) for n in scenario.nodes] == [("node1", "127.0.0.2", 0),
                                                                     ("node2", "127.0.0.1", 6818)]
    job = scenario.jobs[42]
    assert job.steps == (SLURM_EXTERN_CONT, SLURM_BATCH_SCRIPT, 0) and job.nodes == ("node1",)
    assert job.start_time == 1795946400.0 and job.pids == {1} and job.environ
    assert scenario.jobs[43].steps == (SLURM_EXTERN_CONT, SLURM_BATCH_SCRIPT)
    assert scenario.jobs[43].start_time == pytest.approx(time.time(), abs=60)
    as_json = tmp_path / "node.json"
    as_json.write_text('{"nodes": [{"name": "n"}], "jobs": [{"job_id": 5, "user": "root", "start_time": 10}]}')
    assert Scenario.load(as_json).jobs[5].start_time == 10.0


BAD_SCENARIOS = [
    ('release = "21.08"', "release: expected a release (22.05, 23.02, 23.11, 24.05, 24.11, 25.05, 25.11, 26.05), "
                          "got '21.08'"),
    ("bogus = 1", "bogus: unknown key 'bogus' (known: auth, client_timeout, cluster, communication_parameters, "
                  "jobs, jwks, key, munge_socket, network, nodes, release, sack, slurm_user, spool_dir, subnet)"),
    ("[[jobs]]\njob_id = 0\nuser = 'root'", "jobs[0].job_id: expected a job id (an integer from 1 to 4294967279), "
                                            "got 0"),
    ("[[jobs]]\njob_id = 5", "jobs[0].user: missing"),
    ("[[jobs]]\njob_id = 5\nuser = 'no-such-user-here'", "jobs[0].user: no such user 'no-such-user-here'"),
    ("[[jobs]]\njob_id = 5\nuser = 'root'\nsteps = ['nope']",
     "jobs[0].steps[0]: expected a step (extern, batch, interactive or an integer from 0 to 4294967295), got 'nope'"),
    ("[[jobs]]\njob_id = 5\nuser = 'root'\npids = ['x']",
     "jobs[0].pids[0]: expected a pid (an integer from 1 to 4194304), got 'x'"),
    ("[[jobs]]\njob_id = 5\nuser = 'root'\n[[jobs]]\njob_id = 5\nuser = 'root'", "jobs[1].job_id: job 5 appears twice"),
    ("[[nodes]]\nname = 'a'\nport = 70000", "nodes[0].port: expected a port (an integer from 0 to 65535), got 70000"),
    ("[[nodes]]\nname = 'a'\n[[nodes]]\nname = 'a'", "nodes[1].name: node 'a' appears twice"),
    ("[[nodes]]\nname = 'a'\nport = true", "nodes[0].port: expected a port (an integer from 0 to 65535), got true"),
    ("not toml [", "Expected '=' after a key in a key/value pair (at line 1, column 5)"),
]


@pytest.mark.parametrize(("text", "message"), BAD_SCENARIOS)
def test_bad_scenarios(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "node.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as info:
        Scenario.load(path)
    assert str(info.value) == f"{path}: {message}"


def test_missing_scenario(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="No such file"):
        Scenario.load(tmp_path / "none.toml")


@pytest.mark.parametrize(("release", "version", "unpack", "verify", "rc_cred", "exact", "step"), [
    ("22.05", Refusal.CLOSE, Refusal.CLOSE, Refusal.CLOSE, True, False, False),
    ("23.02", Refusal.CLOSE, Refusal.CLOSE, Refusal.CLOSE, False, True, False),
    ("24.11", Refusal.CLOSE, Refusal.CLOSE, Refusal.CLOSE, False, True, False),
    ("25.05", Refusal.RC_1007, Refusal.RC_1007, Refusal.RC_1007, False, True, False),
    ("25.11", Refusal.HTTP_405, Refusal.RC_1007, Refusal.RC_1007, False, True, False),
    ("26.05", Refusal.HTTP_405, Refusal.CLOSE, Refusal.RC_1007, False, True, True),
])
def test_behaviour_table(release: str, version: Refusal, unpack: Refusal, verify: Refusal, rc_cred: bool,
                         exact: bool, step: bool) -> None:
    rules = BEHAVIOURS[release]
    assert (rules.bad_version, rules.bad_cred_unpack, rules.bad_cred_verify) == (version, unpack, verify)
    assert (rules.rc_with_credential, rules.exact_body_length, rules.callerid_step) == (rc_cred, exact, step)
    assert rules.bad_auth_flags == (0x44 if release == "26.05" else 0x40)


def _release_name(version: int) -> str | None:
    release = release_for(version)
    return release.name if release is not None else None


def test_release_for() -> None:
    assert _release_name(0x2600) == "22.05"
    assert _release_name(0x2400) == "22.05"
    assert _release_name(0x2A80) == "24.11"
    assert _release_name(0x2D00) == "26.05"
    assert release_for(0x2300) is None and release_for(0x2E00) is None


def test_process_facts_of_a_gone_process() -> None:
    """A pid nobody holds (a child just reaped) has no parent, no job environment, no tree."""
    with subprocess.Popen(["true"]) as proc:
        pass
    assert parent_of(os.getpid()) == os.getppid()
    assert parent_of(proc.pid) is None and ancestors(proc.pid) == [proc.pid]
    assert not has_job_environ(proc.pid, 1) and descendants(proc.pid) == set()


def test_membership_kinds(tmp_path: Path) -> None:
    env = {**os.environ, "SLURM_JOB_ID": "77"}
    # The child's pid is printed once it runs `sleep`: in the middle of its exec, /proc/PID/environ
    # cannot be read, and the environment check would fail for that instant.
    code = textwrap.dedent("""
        import subprocess, time
        c = subprocess.Popen(["sleep", "30"])
        for _ in range(5000):
            with open(f"/proc/{c.pid}/cmdline", "rb") as f:
                if f.read().startswith(b"sleep\\0"):
                    break
            time.sleep(0.001)
        print(c.pid, flush=True)
        time.sleep(30)
    """)
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env) as parent:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        try:
            assert descendants(parent.pid) >= {parent.pid, child}
            assert ancestors(child)[:2] == [child, parent.pid]
            by_tree = Job(1, 0, trees={parent.pid})
            by_pid = Job(2, 0, pids={child})
            by_environ = Job(77, 0, environ=True)
            by_cgroup = Job(4, 0, cgroups=("/sys/fs/cgroup/freezer/",))
            assert job_contains(by_tree, child) and job_contains(by_pid, child)
            assert job_contains(by_environ, parent.pid) and job_contains(by_environ, child)
            assert job_contains(by_cgroup, child)  # everything is in the root cgroup
            assert not job_contains(Job(5, 0, pids={1}), child)
            assert not job_contains(Job(6, 0, environ=True), child)
            assert job_of({2: by_pid, 1: by_tree}, "node1", child) is by_tree  # lowest job id first
            assert job_of({5: Job(5, 0, nodes=("other",), pids={child})}, "node1", child) is None
        finally:
            stop_process(parent)
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)  # the sleep our child started, left to init


def test_steps() -> None:
    job = Job(1, 0, pids={10}, adopted=[11])
    assert step_of(job, 11) == SLURM_EXTERN_CONT and step_of(job, 10) == SLURM_BATCH_SCRIPT
    assert step_of(Job(1, 0, steps=(SLURM_EXTERN_CONT, 0)), 10) == 0
    assert step_of(Job(1, 0, steps=(SLURM_EXTERN_CONT,)), 10) == SLURM_EXTERN_CONT


def test_cgroup_paths() -> None:
    assert cgroup_relative("/sys/fs/cgroup/freezer/slurm/uid_1/job_2") == "/slurm/uid_1/job_2"
    assert cgroup_relative("/slurm/uid_1/job_2/") == "/slurm/uid_1/job_2"
