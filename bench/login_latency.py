"""What each account stack adds to `ssh true` on a real Slurm 22.05 node, with one job (no RPC) and two jobs
(the RPC is asked): the real pam_slurm_adopt.so, and slurm-adopt in its forms: `python3 -I -m adopt`
alone, the quick form (adopt/thin.py under `python3 -I -S`) with slurm-adopt-agent answering, the same
without an agent (the fallback: the hook decides itself), and `-I -m adopt` with the agent. Imported by
bench/run.py (root).

Wall time: medians of interleaved logins. CPU time: what the sshd's logins used (its children's user+sys
time, /proc/PID/stat cutime+cstime, which takes in pam_exec's processes), plus the agent's own, per login.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from fake_slurmd.munged import Munged
from tests.support.agent import AgentProcess
from tests.support.deploy import hook_command, thin_hook_command
from tests.support.sessions import PAM_SLURM_ADOPT
from tests.support.slurm_cluster import SlurmCluster
from tests.support.sshd import Sshd

UNIX = "pam_unix only"
MODULE = "pam_slurm_adopt.so"
HOOK = "-I -m adopt, no agent"
AGENT = "quick hook + agent"
FALLBACK = "quick hook, no agent (fallback)"
M_AGENT = "-I -m adopt + agent"
TRUE = "pam_exec /bin/true"
PASS = "pam_exec python3 -I -S -c pass"
STACKS = (UNIX, MODULE, HOOK, AGENT, FALLBACK, M_AGENT, TRUE, PASS)
FLOORS = (TRUE, PASS)
"""What any pam_exec hook, and any Python one, costs at the least."""
USES_AGENT = (AGENT, M_AGENT)
TICK = os.sysconf("SC_CLK_TCK")
ANSWERED = re.compile(r": answered exit status \d in ([\d.]+) ms")


def _time_login(sshd: Sshd, user: str) -> float:
    argv = ["runuser", "-u", user, "--", *sshd.ssh_argv(user, "true", log_level="ERROR")]
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"login failed through {sshd.service}: {proc.stderr}")
    return elapsed


def cpu_seconds(pid: int, children: bool) -> float:
    """user+sys of the process (children=False) or of its waited-for children (True)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    first = 14 if children else 12  # cutime, cstime / utime, stime (fields 16, 17 / 14, 15; 0-based after ')')
    return (int(fields[first - 1]) + int(fields[first])) / TICK


def login_section(munged: Munged, runs: int) -> list[str]:
    env = str(Path(sys.executable).parent.parent)
    rows = []
    with SlurmCluster(munged) as cluster, AgentProcess(Path(cluster.out_dir) / "agent" / "agent.socket") as agent:
        agent.start()
        common = f"service={{service}} nodename={cluster.node_name} conf={cluster.conf}"
        absent = f"agent_socket={agent.path.parent / 'absent.socket'}"
        hooks = {HOOK: f"{hook_command(env)} {common} agent_socket=none",
                 AGENT: f"{thin_hook_command(env)} {common} agent_socket={agent.path}",
                 FALLBACK: f"{thin_hook_command(env)} {common} {absent}",
                 M_AGENT: f"{hook_command(env)} {common} agent_socket={agent.path}",
                 TRUE: "/bin/true", PASS: f"{sys.executable} -I -S -c pass"}
        lines = {UNIX: ["required pam_unix.so"],
                 MODULE: ["required pam_unix.so", f"required {PAM_SLURM_ADOPT} service={{service}} "
                          f"nodename={cluster.node_name}"],
                 **{name: ["required pam_unix.so", f"required pam_exec.so stdout quiet {command}"]
                    for name, command in hooks.items()}}
        sshds = {name: Sshd(stack, env={"SLURM_CONF": str(cluster.conf)}, users=["alice"]).start()
                 for name, stack in lines.items()}
        try:
            jobs: list[int] = []
            for count in (1, 2):
                while len(jobs) < count:
                    jobs.append(cluster.submit("alice", "sleep 3600"))
                    cluster.wait_running(jobs[-1])
                times: dict[str, list[float]] = {name: [] for name in STACKS}
                log_start = len(agent.log_text())
                cpu = dict.fromkeys(STACKS, 0.0)
                for i in range(runs + 3):  # interleaved; the first three rounds warm up
                    for name in STACKS:
                        pid = sshds[name].pid
                        assert pid is not None
                        before = cpu_seconds(pid, True) + (cpu_seconds(agent.pid, False) if name in USES_AGENT else 0)
                        elapsed = _time_login(sshds[name], "alice")
                        after = cpu_seconds(pid, True) + (cpu_seconds(agent.pid, False) if name in USES_AGENT else 0)
                        if i >= 3:
                            times[name].append(elapsed)
                            cpu[name] += after - before
                medians = {name: statistics.median(t) * 1000 for name, t in times.items()}
                cpu_ms = {name: total / runs * 1000 for name, total in cpu.items()}
                answers = [float(m) for m in ANSWERED.findall(agent.log_text()[log_start:])]
                rows.append((count, medians, cpu_ms, statistics.median(answers)))
            answered = agent.answered()
        finally:
            for sshd in sshds.values():
                sshd.stop()
            for job in jobs:
                cluster.cancel(job)
    return _table(rows, runs, answered)


def _table(rows: list[tuple[int, dict[str, float], dict[str, float], float]], runs: int, answered: int) -> list[str]:
    out = [f"`ssh true` as alice through {len(STACKS)} sshds on the same node, {runs} interleaved logins each "
           "after 3 warm-up rounds; the login is made from outside any job, so with two jobs the RPC finds none "
           "and every stack falls back to the newest job. Wall time: medians in ms, and what each adds to "
           "pam_unix alone; the ratio is that against the C module's. CPU: user+sys per login of the sshd's "
           "processes (and the agent's), ms, averaged over the logins (clock ticks of "
           f"{1000 / TICK:g} ms, summed).", "",
           "| alice's jobs | stack | median | added | ratio to the C module | CPU per login | CPU added |",
           "|---|---|---|---|---|---|---|"]
    for count, medians, cpu, _ in rows:
        base, module = medians[UNIX], medians[MODULE] - medians[UNIX]
        for name in STACKS:
            added = medians[name] - base
            ratio = f"{added / module:.2f}" if name not in (UNIX, MODULE) and module > 0 else ""
            out.append(f"| {count} ({'no RPC' if count == 1 else 'RPC'}) | {name} | {medians[name]:.1f} | "
                       f"{added:.1f} | {ratio} | {cpu[name]:.1f} | {cpu[name] - cpu[UNIX]:.1f} |")
    out += ["", f"The agent answered {answered} logins (those of the two `+ agent` stacks, warm-ups included), "
            "in a median of " + " and ".join(f"{agent_ms:.1f} ms with {count} job{'s' if count > 1 else ''}"
                                              for count, _, _, agent_ms in rows)
            + " (its own measure, from the request read to the answer ready). The last two stacks are floors: "
            "pam_exec running /bin/true, and an interpreter that does nothing.",
            "", "Goals: with the agent at most 1.5x what the C module adds, on the fallback at most 3x."]
    return out
