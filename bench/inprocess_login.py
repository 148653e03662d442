"""What the in-process module (adopt/pam_module.py through pam_python), pam_slurm_adopt.so and the pam_exec hook
add to `ssh true` on real Slurm 22.05 nodes, in wall time and in CPU time of sshd's processes. Imported by
bench/run.py (root).

Two sections: one node (tests/support/slurm_cluster.py), logged in to from outside any job, with one job
(no RPC) and two (the RPC is asked, finds none, and the newest job is taken); and two nodes
(tests/support/two_nodes.py), logged in to on xn2 from a process of one of two jobs spanning both nodes, so
that the RPC goes over the veth to xn1's slurmd and names that job.

CPU time: an sshd started with -D reaps every per-connection sshd it forks, and each of those reaps what it
forked (the privilege-separated children, pam_exec's hook), so the kernel adds the CPU time of the whole
connection's process tree to the listener's cutime and cstime (/proc/PID/stat) once its processes ended.
The listener's own and its children's user+sys over the timed rounds, divided by the logins, is the CPU a
login costs in sshd's processes; slurmd and slurmstepd answering the RPCs are not in it. The kernel counts
in clock ticks (10 ms), which the sum over all logins averages out.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from fake_slurmd.munged import Munged
from tests.support.deploy import hook_command
from tests.support.procs import wait_for
from tests.support.sessions import CGROUP_JOB, PAM_SLURM_ADOPT
from tests.support.slurm_cluster import SlurmCluster
from tests.support.sshd import Sshd
from tests.support.two_nodes import Node, TwoNodes

PAM_PYTHON = "/lib/security/pam_python.so"
USER = "alice"
BASE = "pam_unix only"
STACKS = (BASE, "pam_slurm_adopt.so", "pam_exec hook", "in-process module", "pam_python, empty module")
C_MODULE = STACKS[1]
EMPTY_MODULE = "def pam_sm_acct_mgmt(pamh, flags, argv):\n    return pamh.PAM_SUCCESS\n"
"""What libpam-python costs by itself: an interpreter in each connection's sshd, running one function."""
WARMUP = 3
TICK = os.sysconf("SC_CLK_TCK")

Login = Callable[[str], subprocess.CompletedProcess[str]]
"""Runs a command through one stack's sshd; the client's result."""


def missing_reason() -> str | None:
    for path, package in ((PAM_SLURM_ADOPT, "libpam-slurm-adopt"), (PAM_PYTHON, "libpam-python")):
        if not Path(path).exists():
            return f"needs {path} (apt-get install {package})"
    return None


def account_lines(conf: Path, options: str = "") -> dict[str, list[str]]:
    """Each stack's account lines as the README writes them (`{service}`: the sshd's PAM service); the empty
    module's file is written beside slurm.conf."""
    empty = conf.with_name("empty_pam_module.py")
    empty.write_text(EMPTY_MODULE)
    env = str(Path(sys.executable).parent.parent)
    module_file = subprocess.run([os.path.join(env, "bin", "slurm-adopt"), "--print-pam-module"],
                                 capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    common = f"service={{service}} {options}".strip()
    hook = hook_command(env)  # the README's pam.d form
    return {
        BASE: ["required pam_unix.so"],
        C_MODULE: ["required pam_unix.so", f"required {PAM_SLURM_ADOPT} {common}"],
        STACKS[2]: ["required pam_unix.so", f"required pam_exec.so stdout quiet {hook} conf={conf} {common}"],
        STACKS[3]: ["required pam_unix.so", f"required pam_python.so {module_file} conf={conf} {common}"],
        STACKS[4]: ["required pam_unix.so", f"required pam_python.so {empty}"],
    }


def cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime of a process (what it and its reaped descendants used)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / TICK


def _has_children(pid: int) -> bool:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if int(Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    return True
            except (OSError, IndexError, ValueError):
                continue
    return False


def _settled(sshd: Sshd) -> float:
    """The listener's CPU seconds once every connection's processes ended (and so are counted)."""
    assert sshd.pid is not None
    pid = sshd.pid
    wait_for(lambda: not _has_children(pid), 30, f"{sshd.service}'s sessions ended")
    return cpu_seconds(pid)


@dataclass
class Figures:
    wall_ms: dict[str, float]
    """Median wall time of a login per stack."""
    cpu_ms: dict[str, float]
    """Mean CPU time of sshd's processes per login."""


def measure(sshds: dict[str, Sshd], logins: dict[str, Login], runs: int) -> Figures:
    """Interleaved `true` logins through every stack, WARMUP rounds first; the per-stack figures."""
    times: dict[str, list[float]] = {name: [] for name in STACKS}
    cpu: dict[str, float] = {}
    for i in range(WARMUP + runs):
        if i == WARMUP:
            cpu = {name: _settled(sshd) for name, sshd in sshds.items()}
        for name in STACKS:
            started = time.perf_counter()
            proc = logins[name]("true")
            elapsed = time.perf_counter() - started
            if proc.returncode != 0:
                raise RuntimeError(f"login through {name} failed: {proc.stderr}\n{sshds[name].log_text()[-2000:]}")
            if i >= WARMUP:
                times[name].append(elapsed)
    return Figures({name: statistics.median(t) * 1000 for name, t in times.items()},
                   {name: (_settled(sshds[name]) - cpu[name]) / runs * 1000 for name in STACKS})


def landed(login: Login) -> int | None:
    """The job whose extern step a login lands in (None: none)."""
    found = CGROUP_JOB.search(login("cat /proc/self/cgroup").stdout)
    return int(found.group(1)) if found else None


def check_landings(logins: dict[str, Login], expected: dict[str, set[int | None]]) -> None:
    got = {name: landed(login) for name, login in logins.items()}
    wrong = {name: job for name, job in got.items() if job not in expected[name]}
    if wrong:
        raise RuntimeError(f"logins landed in {wrong}, expected {expected}")


def start_sshds(stack: ExitStack, lines: dict[str, list[str]], conf: Path, node: Node | None = None) -> dict[str, Sshd]:
    """One started sshd per stack (stopped with `stack`), on loopback or on a node's address in its namespaces."""
    sshds = {}
    for name in STACKS:
        sshd = (Sshd(lines[name], users=[USER], env={"SLURM_CONF": str(conf)}) if node is None else
                Sshd(lines[name], users=[USER], env={"SLURM_CONF": str(conf)}, listen=[node.addr],
                     netns=str(node.netns.path), uts=node.uts))
        stack.callback(sshd.stop)
        sshds[name] = sshd.start()
    return sshds


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}" if base > 0 else "n/a"


def table(rows: list[tuple[str, Figures]]) -> list[str]:
    """Wall medians, what each stack adds over pam_unix alone, CPU per login; ratios to the C module."""
    out = ["| alice's jobs | stack | login, median (ms) | added (ms) | ratio to the C module | "
           "CPU per login (ms) | CPU added (ms) | CPU ratio to the C module |", "|---|---|---|---|---|---|---|---|"]
    for label, f in rows:
        added = {name: f.wall_ms[name] - f.wall_ms[BASE] for name in STACKS}
        cpu_added = {name: f.cpu_ms[name] - f.cpu_ms[BASE] for name in STACKS}
        for name in STACKS:
            cells = ("", "", "", "") if name == BASE else (
                f"{added[name]:.1f}", _ratio(added[name], added[C_MODULE]), f"{cpu_added[name]:.1f}",
                _ratio(cpu_added[name], cpu_added[C_MODULE]))
            out.append(f"| {label} | {name} | {f.wall_ms[name]:.1f} | {cells[0]} | {cells[1]} | {f.cpu_ms[name]:.1f} "
                       f"| {cells[2]} | {cells[3]} |")
    return out


def _runuser_login(sshd: Sshd) -> Login:
    return lambda command: sshd.ssh(USER, command, log_level="ERROR", timeout=60)


def one_node_section(munged: Munged, runs: int) -> list[str]:
    rows = []
    with SlurmCluster(munged) as cluster, ExitStack() as stack:
        lines = account_lines(cluster.conf, f"nodename={cluster.node_name}")
        sshds = start_sshds(stack, lines, cluster.conf)
        logins = {name: _runuser_login(sshd) for name, sshd in sshds.items()}
        jobs: list[int] = []
        for count in (1, 2):
            while len(jobs) < count:
                jobs.append(cluster.submit(USER, "sleep 3600"))
                cluster.wait_running(jobs[-1])
            # 22.05's C module takes the job whose cgroup is newest by mtime (whole seconds): either.
            check_landings(logins, {BASE: {None}, C_MODULE: set(jobs), STACKS[2]: {jobs[-1]}, STACKS[3]: {jobs[-1]},
                                    STACKS[4]: {None}})
            rows.append((f"{count} ({'no RPC' if count == 1 else 'RPC'})", measure(sshds, logins, runs)))
    return [f"`ssh true` as {USER} from outside any job through five sshds on one node, {runs} interleaved "
            f"logins each after {WARMUP} warm-up rounds; with two jobs the RPC finds none and each falls back to "
            "a job of the user's. Login: median wall time; added: over pam_unix alone. CPU: user+sys of the "
            "sshd listener and everything it reaped (/proc/PID/stat utime, stime, cutime, cstime) over the timed "
            f"logins, per login (the kernel counts {1000 // TICK} ms ticks: {1000 / TICK / runs:.1f} ms resolution): "
            "the per-connection sshds, pam_exec's child and the in-process module's interpreter, not slurmd or "
            "slurmstepd. The empty module is a pam_python file whose account entry only "
            "returns PAM_SUCCESS: what libpam-python's interpreter in sshd costs before any code of ours.", "",
            *table(rows)]


def cross_node_section(munged: Munged, runs: int) -> list[str]:
    with TwoNodes(munged, users=[USER]) as cluster, ExitStack() as stack:
        xn2 = cluster.node("xn2")
        sshds = start_sshds(stack, account_lines(cluster.conf), cluster.conf, xn2)
        source = cluster.agent_job(USER)
        cluster.agent_job(USER)  # a second job on both nodes: the RPC is asked

        def through(sshd: Sshd) -> Login:
            return lambda command: source.run(sshd.ssh_argv(USER, command, host=xn2.addr, log_level="ERROR"),
                                              timeout=60)

        logins = {name: through(sshd) for name, sshd in sshds.items()}
        check_landings(logins, {BASE: {None}, C_MODULE: {source.job_id}, STACKS[2]: {source.job_id},
                                STACKS[3]: {source.job_id}, STACKS[4]: {None}})
        figures = measure(sshds, logins, runs)
    return [f"`ssh true` as {USER} from a process of one of her two jobs on xn1 and xn2 (its batch script on xn1, "
            f"tests/support/job_agent.py) to five sshds on xn2, {runs} interleaved logins each after {WARMUP} "
            "warm-up rounds: every adopting stack asks xn1's slurmd over the veth, which names the job, and adopts "
            "into it on xn2. Columns as in the one-node section; the login's wall time includes the agent's round "
            "trip, the same for every stack.", "", *table([("2 (RPC to xn1)", figures)])]


if __name__ == "__main__":  # PYTHONPATH=. python bench/inprocess_login.py one|cross [RUNS], the tox env's python
    section = {"one": one_node_section, "cross": cross_node_section}[sys.argv[1]]
    with Munged() as daemon:
        print("\n".join(section(daemon, int(sys.argv[2]) if len(sys.argv) > 2 else 30)))
