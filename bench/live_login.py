"""What slurm-adopt and the release's own pam_slurm_adopt.so add to `ssh true` on a real Slurm 26.05 node with
auth/slurm (tests/support/chroot_cluster.py), with one job (no RPC) and two (the RPC is asked, signed with
slurm.key). Imported by bench/run.py (root).

The C module runs in the chroot's sshd, linked against the chroot's libslurm; the hook in the host's sshd
started in the cluster's namespaces and cgroups (ChrootCluster.node_sshd), as tests/test_live_hook.py runs
it. The two sshds are different OpenSSH releases, so each module's cost is measured against its own sshd
with pam_unix alone: four sshds, logged in to in turn by the chroot's ssh from inside the chroot.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from fake_slurmd.processes import stop_process
from tests.support import chroot_files as files
from tests.support.chroot_cluster import ChrootCluster
from tests.support.deploy import hook_command
from tests.support.procs import wait_for
from tests.support.sessions import CGROUP_JOB

RELEASE = "26.05"
"""PAMServiceName (OpenSSH 10.1+), which gives each of the chroot's sshds a PAM service of its own, is in
26.05's chroot (Debian unstable) only."""
USER = "alice"
STACKS = ("chroot sshd, pam_unix", "+ pam_slurm_adopt.so", "host sshd, pam_unix", "+ slurm-adopt")


@contextmanager
def chroot_sshd(cluster: ChrootCluster, service: str, port: int, account_lines: list[str]) -> Iterator[int]:
    """The chroot's sshd on `port` in the namespace, its PAM service `service` with these account lines."""
    pam = "\n".join(["auth     required pam_deny.so", *(f"account  {line}" for line in account_lines),
                     "session  required pam_permit.so", "password required pam_deny.so", ""])
    cluster.host_path(f"/etc/pam.d/{service}").write_text(pam)
    config = (files.sshd_config().replace(f"Port {files.SSHD_PORT}\n", f"Port {port}\n")
              .replace("PidFile /run/sat-sshd.pid", f"PidFile /run/{service}.pid") + f"PAMServiceName {service}\n")
    cluster.host_path(f"/etc/ssh/{service}_config").write_text(config)
    log = cluster.host_path(f"/var/log/{service}.log")
    proc = subprocess.Popen(cluster.inside(["/usr/sbin/sshd", "-D", "-f", f"/etc/ssh/{service}_config", "-E",
                                            f"/var/log/{service}.log"]), stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: log.exists() and f"port {port}" in log.read_text(), 10, f"{service} listening")
        yield port
    finally:
        stop_process(proc)


def _login(cluster: ChrootCluster, port: int, command: str = "true") -> tuple[float, str]:
    argv = cluster.inside(cluster.ssh_argv(USER, command, port=port), USER)
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"login failed through port {port}: {proc.stderr}\n{cluster.log_tails(10)}")
    return elapsed, proc.stdout


def _landed(cluster: ChrootCluster, port: int) -> int | None:
    """The job whose extern step a login through `port` lands in (None: none)."""
    found = CGROUP_JOB.search(_login(cluster, port, "cat /proc/self/cgroup")[1])
    return int(found.group(1)) if found else None


def live_login_section(runs: int) -> list[str]:
    hook = hook_command(str(Path(sys.executable).parent.parent))  # the README's pam.d form
    rows = []
    with ChrootCluster(RELEASE, "slurm") as cluster, ExitStack() as stack:
        ports = {
            STACKS[0]: stack.enter_context(chroot_sshd(cluster, "sat-unix", 2223, ["required pam_unix.so"])),
            STACKS[1]: stack.enter_context(chroot_sshd(cluster, "sat-module", 2224, [
                "required pam_unix.so", "required pam_slurm_adopt.so service=sat-module"])),
        }
        for name, lines in ((STACKS[2], ["required pam_unix.so"]),
                            (STACKS[3], ["required pam_unix.so", f"required pam_exec.so stdout quiet {hook} "
                                         f"conf={cluster.host_conf()} service={{service}}"])):
            sshd = cluster.node_sshd(lines)
            stack.callback(sshd.stop)
            ports[name] = sshd.port
        jobs: list[int] = []
        for count in (1, 2):
            while len(jobs) < count:
                jobs.append(cluster.submit(USER, "exec sleep 3600"))
                cluster.wait_running(jobs[-1])
            landed = {name: _landed(cluster, port) for name, port in ports.items()}
            expected = dict(zip(STACKS, (None, jobs[-1], None, jobs[-1]), strict=True))
            if landed != expected:
                raise RuntimeError(f"logins landed in {landed}, not in {expected}")
            times: dict[str, list[float]] = {name: [] for name in STACKS}
            for i in range(runs + 3):  # interleaved; the first three rounds warm up
                for name in STACKS:
                    elapsed = _login(cluster, ports[name])[0]
                    if i >= 3:
                        times[name].append(elapsed)
            rows.append((count, {name: statistics.median(t) * 1000 for name, t in times.items()}))
    out = [f"`ssh true` as {USER} from inside the chroot through four sshds of one Slurm {RELEASE} node with "
           f"AuthType=auth/slurm, {runs} interleaved logins each after 3 warm-up rounds; the login comes from "
           "outside any job, so with two jobs the RPC finds none and both fall back to the newest job. Medians "
           "in ms.", "",
           "| alice's jobs | chroot sshd | + pam_slurm_adopt.so | added by the C module | host sshd | "
           "+ slurm-adopt | added by slurm-adopt | ratio |", "|---|---|---|---|---|---|---|---|"]
    for count, m in rows:
        module, ours = m[STACKS[1]] - m[STACKS[0]], m[STACKS[3]] - m[STACKS[2]]
        ratio = f"{ours / module:.2f}" if module > 0 else "n/a"
        out.append(f"| {count} ({'no RPC' if count == 1 else 'RPC'}) | {m[STACKS[0]]:.1f} | {m[STACKS[1]]:.1f} | "
                   f"{module:.1f} | {m[STACKS[2]]:.1f} | {m[STACKS[3]]:.1f} | {ours:.1f} | {ratio} |")
    return out


if __name__ == "__main__":  # PYTHONPATH=. python bench/live_login.py [RUNS], with the tox env's python
    print("\n".join(live_login_section(int(sys.argv[1]) if len(sys.argv) > 1 else 30)))
