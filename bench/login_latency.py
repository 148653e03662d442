"""What each account stack adds to `ssh true`: none, the real pam_slurm_adopt.so, and slurm-adopt, on a real
Slurm 22.05 node, with one job (no RPC) and two jobs (the RPC is asked). Imported by bench/run.py (root)."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from fake_slurmd.munged import Munged
from tests.support.deploy import hook_command
from tests.support.slurm_cluster import SlurmCluster
from tests.support.sshd import Sshd

PAM_SLURM_ADOPT = "/lib/security/pam_slurm_adopt.so"
STACKS = ("pam_unix only", "pam_slurm_adopt.so", "slurm-adopt")


def _time_login(sshd: Sshd, user: str) -> float:
    argv = ["runuser", "-u", user, "--", *sshd.ssh_argv(user, "true", log_level="ERROR")]
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"login failed through {sshd.service}: {proc.stderr}")
    return elapsed


def login_section(munged: Munged, runs: int) -> list[str]:
    hook = hook_command(str(Path(sys.executable).parent.parent))  # the README's pam.d form
    rows = []
    with SlurmCluster(munged) as cluster:
        common = f"service={{service}} nodename={cluster.node_name}"
        lines = {
            "pam_unix only": ["required pam_unix.so"],
            "pam_slurm_adopt.so": ["required pam_unix.so", f"required {PAM_SLURM_ADOPT} {common}"],
            "slurm-adopt": ["required pam_unix.so",
                            f"required pam_exec.so stdout quiet {hook} conf={cluster.conf} {common}"],
        }
        sshds = {name: Sshd(stack, env={"SLURM_CONF": str(cluster.conf)}, users=["alice"]).start()
                 for name, stack in lines.items()}
        try:
            jobs = []
            for count in (1, 2):
                while len(jobs) < count:
                    jobs.append(cluster.submit("alice", "sleep 3600"))
                    cluster.wait_running(jobs[-1])
                times: dict[str, list[float]] = {name: [] for name in STACKS}
                for i in range(runs + 3):  # interleaved; the first three rounds warm up
                    for name in STACKS:
                        elapsed = _time_login(sshds[name], "alice")
                        if i >= 3:
                            times[name].append(elapsed)
                medians = {name: statistics.median(t) * 1000 for name, t in times.items()}
                base = medians["pam_unix only"]
                added = {name: medians[name] - base for name in STACKS[1:]}
                rows.append((count, medians, added))
        finally:
            for sshd in sshds.values():
                sshd.stop()
            for job in jobs:
                cluster.cancel(job)
    out = [f"`ssh true` as alice through three sshds on the same node, {runs} interleaved logins each after 3 "
           "warm-up rounds; the login is made from outside any job, so with two jobs the RPC finds none and "
           "both fall back to the newest job. Medians in ms.", "",
           "| alice's jobs | pam_unix only | + pam_slurm_adopt.so | + slurm-adopt | added by the C module | "
           "added by slurm-adopt | ratio |", "|---|---|---|---|---|---|---|"]
    for count, medians, added in rows:
        ratio = added["slurm-adopt"] / added["pam_slurm_adopt.so"] if added["pam_slurm_adopt.so"] > 0 else float("nan")
        out.append(f"| {count} ({'no RPC' if count == 1 else 'RPC'}) | {medians['pam_unix only']:.1f} | "
                   f"{medians['pam_slurm_adopt.so']:.1f} | {medians['slurm-adopt']:.1f} | "
                   f"{added['pam_slurm_adopt.so']:.1f} | {added['slurm-adopt']:.1f} | {ratio:.2f} |")
    out += ["", "Goal: slurm-adopt adds no more than the C module (ratio 1.0 or less)."]
    return out
