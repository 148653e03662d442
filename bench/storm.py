"""A login storm on a real Slurm 22.05 node: many concurrent `ssh` logins of a user with two jobs (so the
callerid RPC is asked), half from a step of each job, through the quick hook with slurm-adopt-agent and
through pam_slurm_adopt.so, one sshd each with the same configuration. Imported by bench/run.py (root).

Each login runs `cat /proc/self/cgroup`: it must succeed and its session must sit in the extern step of
the job it came from. Wall time is from the moment both jobs' steps start their logins (a FIFO each) to
the moment both report them all done. CPU: deltas of /proc/PID/stat over the storm for the agent, for
the sshd (its reaped children: the sessions and, for the hook, pam_exec's processes), and for slurmd
and the jobs' slurmstepds.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from login_latency import AGENT, ANSWERED, MODULE, PAM_SLURM_ADOPT, cpu_seconds

from fake_slurmd.munged import Munged
from tests.support.agent import AgentProcess
from tests.support.deploy import thin_hook_command
from tests.support.sessions import CGROUP_JOB
from tests.support.slurm_cluster import SlurmCluster, srun_argv
from tests.support.sshd import Sshd

SSHD_CONFIG = ("MaxStartups 400:30:800", "MaxSessions 400")
FILES = 65536
LONG_DEADLINE = 10
"""MessageTimeout's default: how long pam_slurm_adopt.so's RPC may take."""
LONG = f"quick hook + agent, deadline={LONG_DEADLINE}"
WARMUP = 10
"""Logins per stack before the storm (each job's first logins, the agent's first conf read)."""
STEP = """\
out=$1; count=$2; shift 2
read go < "$out/go"
i=0
while [ $i -lt "$count" ]; do
    ( "$@" > "$out/$i.out" 2> "$out/$i.err"; echo $? > "$out/$i.rc" ) &
    i=$((i + 1))
done
wait
echo done
"""
"""A step's part of the storm: wait for the word, start `count` logins at once, say when all ended."""


def _more_files() -> None:
    """Enough descriptors for hundreds of connections in sshd, the agent and slurmd, which inherit ours."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FILES if hard == resource.RLIM_INFINITY else min(FILES, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _own_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):  # a stepd ended meanwhile
            total += cpu_seconds(pid, False)
    return total


class Storm:
    """One storm's set-up: the cluster, its two jobs, the agent and a place for the steps' files."""

    def __init__(self, cluster: SlurmCluster, jobs: list[int], agent: AgentProcess) -> None:
        self.cluster = cluster
        self.jobs = jobs
        self.agent = agent
        self.script = Path(cluster.out_dir) / "storm-step.sh"
        self.script.write_text(STEP)

    def cpu(self, sshd: Sshd) -> dict[str, float]:
        assert sshd.pid is not None and self.cluster.slurmd is not None
        slurmd = self.cluster.slurmd.pid
        return {"agent": cpu_seconds(self.agent.pid, False), "sshd": cpu_seconds(sshd.pid, True),
                "slurmd": cpu_seconds(slurmd, False) + cpu_seconds(slurmd, True),
                "stepd": _own_cpu(self.cluster.stepd_pids(self.jobs))}

    def run(self, sshd: Sshd, per_job: int) -> tuple[float, dict[str, float], list[str], int]:
        """Wall seconds, CPU seconds by part, the logins that went wrong, the requests the agent answered."""
        dirs = [Path(tempfile.mkdtemp(prefix=f"storm-{job}-", dir=self.cluster.out_dir)) for job in self.jobs]
        ssh = sshd.ssh_argv("alice", "cat /proc/self/cgroup", log_level="ERROR")
        steps = []
        for job, out in zip(self.jobs, dirs, strict=True):
            os.chmod(out, 0o777)
            os.mkfifo(out / "go", 0o666)
            os.chmod(out / "go", 0o666)
            argv = ["runuser", "-u", "alice", "--", "env", f"SLURM_CONF={self.cluster.conf}",
                    *srun_argv(job, ["sh", str(self.script), str(out), str(per_job), *ssh])]
            steps.append(subprocess.Popen(argv, env=self.cluster.env, cwd=self.cluster.out_dir,
                                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True))
        try:
            gos = [open(out / "go", "w") for out in dirs]  # noqa: SIM115 (each opens when its step reads)
            answered = self.agent.answered()
            before = self.cpu(sshd)
            started = time.perf_counter()
            for go in gos:
                go.write("go\n")
                go.close()
            for step in steps:
                assert step.stdout is not None
                line = step.stdout.readline()
                if line != "done\n":
                    raise RuntimeError(f"a storm step said {line!r} (exit status {step.wait()})")
            elapsed = time.perf_counter() - started
            after = self.cpu(sshd)
            answered = self.agent.answered() - answered
        finally:
            for step in steps:
                step.wait(60)
        wrong = []
        for job, out in zip(self.jobs, dirs, strict=True):
            for i in range(per_job):
                rc = (out / f"{i}.rc").read_text().strip()
                found = CGROUP_JOB.search((out / f"{i}.out").read_text())
                if rc != "0" or found is None or int(found.group(1)) != job:
                    wrong.append(f"job {job} login {i}: exit status {rc}, cgroup job "
                                 f"{found.group(1) if found else None}: {(out / f'{i}.err').read_text()!r}")
        return elapsed, {name: after[name] - before[name] for name in after}, wrong, answered


def storm_section(logins: int) -> list[str]:
    _more_files()
    env = str(Path(sys.executable).parent.parent)
    per_job = logins // 2
    with Munged() as munged, SlurmCluster(munged) as cluster, \
            AgentProcess(Path(cluster.out_dir) / "agent" / "agent.socket") as agent:
        agent.start()
        common = f"service={{service}} nodename={cluster.node_name}"
        hook = f"required pam_exec.so stdout quiet {thin_hook_command(env)} {common} conf={cluster.conf} " \
               f"agent_socket={agent.path}"
        lines = {MODULE: f"required {PAM_SLURM_ADOPT} {common}", AGENT: hook, LONG: f"{hook} deadline={LONG_DEADLINE}"}
        sshds = {name: Sshd(["required pam_unix.so", line], env={"SLURM_CONF": str(cluster.conf)}, users=["alice"],
                            extra_config=SSHD_CONFIG).start()
                 for name, line in lines.items()}
        jobs = []
        try:
            for _ in range(2):
                jobs.append(cluster.submit("alice", "sleep 3600"))
                cluster.wait_running(jobs[-1])
            storm = Storm(cluster, jobs, agent)
            results = {}
            for sshd in sshds.values():
                storm.run(sshd, WARMUP // 2)
            for name, sshd in sshds.items():
                results[name] = storm.run(sshd, per_job)
            log = agent.log_text()
        finally:
            for sshd in sshds.values():
                sshd.stop()
            for job in jobs:
                cluster.cancel(job)
    return _table(results, logins, log)


def _table(results: dict[str, tuple[float, dict[str, float], list[str], int]], logins: int, log: str) -> list[str]:
    out = [f"{logins} concurrent `ssh alice@127.0.0.1 cat /proc/self/cgroup` into one node, half from a step "
           "of each of alice's two jobs (so the callerid RPC is asked), through two sshds alike but for the "
           f"account stack ({', '.join(SSHD_CONFIG)}), each after {WARMUP} warm-up logins. A login is right when "
           "it succeeds and its session is in the extern step of the job it came from. Wall time: from the word "
           "to both steps' last login; CPU: user+sys seconds over the storm (/proc/PID/stat deltas).", "",
           "| stack | wall (s) | ratio to the C module | right logins | agent answered | CPU agent | "
           "CPU sshd's children | CPU slurmd | CPU slurmstepds |", "|---|---|---|---|---|---|---|---|---|"]
    module = results[MODULE][0]
    for name, (wall, cpu, wrong, answered) in results.items():
        ratio = f"{wall / module:.2f}" if name != MODULE else ""
        agent = str(answered) if name != MODULE else ""
        out.append(f"| {name} | {wall:.2f} | {ratio} | {logins - len(wrong)}/{logins} | {agent} | {cpu['agent']:.2f} "
                   f"| {cpu['sshd']:.2f} | {cpu['slurmd']:.2f} | {cpu['stepd']:.2f} |")
    wrong = [f"{name}: {line}" for name, (_, _, lines, _) in results.items() for line in lines]
    gave_up = log.count("gave up waiting for its turn")
    answers = sorted(float(ms) for ms in ANSWERED.findall(log))
    spread = f"{statistics.median(answers):.0f} ms median, {answers[-1]:.0f} ms at most" if answers else "none"
    out += ["", "Logins the agent did not answer (the hook decided itself): "
            f"{', '.join(f'{logins - results[name][3]} ({name})' for name in (AGENT, LONG))}; "
            f"callers the agent found gone when their turn came: {gave_up}, in both storms and warm-ups; its "
            f"answers took {spread} (its own measure, both stacks). The hook's default deadline (3 s) leaves the "
            "agent half of it and the RPC less: a slurmd slowed by the storm answers later, and the login then "
            "goes to the newest job (action_unknown), where the C module's RPC waits up to MessageTimeout. "
            "Goal: at most 1.5x the C module's wall time."]
    if wrong:
        out += ["", "Wrong logins (first 10):", "", *(f"- {shlex.quote(line)}" for line in wrong[:10])]
    return out
