"""slurm-adopt against a real Slurm 22.05 node, side by side with the real pam_slurm_adopt.so."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fake_slurmd.plugin import SshdFactory
from slurmproto.codec import decode_stream, sign_and_encode
from slurmproto.conf import parse_file
from slurmproto.constants import NO_VAL
from slurmproto.messages import NetworkCallerIdRequest
from slurmproto.munge import MungeContext
from slurmproto.versions import SLURM_22_05
from tests.support.deploy import hook_command
from tests.support.peers import DroppingHost
from tests.support.procs import installed_or_skip
from tests.support.sessions import CGROUP_JOB, NO_JOBS, PAM_SLURM_ADOPT
from tests.support.slurm_cluster import ConnectedJob, SlurmCluster, srun_argv
from tests.support.sshd import Sshd
from tests.support.syslog import DevLogCatcher


@pytest.fixture(scope="module")
def jobs(slurm_cluster: SlurmCluster) -> Iterator[tuple[int, int]]:
    """Two running jobs of alice's, the second started after the first."""
    first = slurm_cluster.submit("alice", "sleep 600")
    slurm_cluster.wait_running(first)
    second = slurm_cluster.submit("alice", "sleep 600")
    slurm_cluster.wait_running(second)
    yield first, second
    for job in (first, second):
        slurm_cluster.cancel(job)


@pytest.fixture(scope="module")
def hook() -> str:
    return installed_or_skip("slurm-adopt")


@pytest.fixture(scope="module")
def pam_hook(hook: str) -> str:
    """The command the README's pam.d line runs, with this environment's interpreter."""
    return hook_command(os.path.dirname(os.path.dirname(hook)))


@pytest.fixture
def sshds(slurm_cluster: SlurmCluster, sshd_factory: SshdFactory, pam_hook: str) -> dict[str, Sshd]:
    """The same node behind two sshds: one runs slurm-adopt through pam_exec, one the C module. Each stack
    starts with pam_unix, as real ones do: a stack whose only module answers PAM_IGNORE denies."""
    if not Path(PAM_SLURM_ADOPT).exists():
        pytest.skip(f"needs {PAM_SLURM_ADOPT} (apt-get install libpam-slurm-adopt)")
    conf = slurm_cluster.conf
    common = f"service={{service}} nodename={slurm_cluster.node_name}"
    return {
        "hook": sshd_factory(["required pam_unix.so",
                              f"required pam_exec.so stdout quiet {pam_hook} conf={conf} {common} log_level=debug"],
                             users=["alice", "bob"]),
        "module": sshd_factory(["required pam_unix.so", f"required {PAM_SLURM_ADOPT} {common}"],
                               env={"SLURM_CONF": str(conf)}, users=["alice", "bob"]),
    }


def newest_job(cluster: SlurmCluster, user: str) -> int:
    """The user's latest running job (the session's other tests may have started some too)."""
    running = cluster.run(["squeue", "-h", "-u", user, "-t", "R", "-o", "%i"]).stdout.split()
    return max(map(int, running))


def run_login(cluster: SlurmCluster, sshd: Sshd, user: str, job: int | None, command: str,
              host: str = "127.0.0.1") -> subprocess.CompletedProcess[str]:
    """ssh as `user` running `command`, from inside `job` (a step started with srun) or from outside any job."""
    argv = sshd.ssh_argv(user, command, host=host)
    if job is not None:
        argv = srun_argv(job, argv)
    return cluster.run(argv, user=user, check=False, timeout=60)


def landed_in(cgroups: str) -> int | None:
    """The job whose extern step /proc/self/cgroup's text names."""
    found = CGROUP_JOB.search(cgroups)
    return int(found.group(1)) if found else None


def login(cluster: SlurmCluster, sshd: Sshd, user: str, job: int | None,
          host: str = "127.0.0.1") -> tuple[int, int | None, str]:
    """Log in as `user` from inside `job` or from outside any job; returns the exit status, the job whose
    extern step the remote shell landed in (from its cgroups), and stderr."""
    proc = run_login(cluster, sshd, user, job, "cat /proc/self/cgroup", host)
    return proc.returncode, landed_in(proc.stdout), proc.stderr


@pytest.mark.parametrize("which", [0, 1], ids=["from-job-1", "from-job-2"])
def test_login_from_job_n_lands_in_job_n(slurm_cluster: SlurmCluster, jobs: tuple[int, int],
                                         sshds: dict[str, Sshd], which: int) -> None:
    job = jobs[which]
    for kind in ("hook", "module"):
        status, landed, err = login(slurm_cluster, sshds[kind], "alice", job)
        assert (status, landed) == (0, job), (kind, err, sshds[kind].log_text()[-2000:])
    # check=False: listpids exits 1 when the srun step of the login is still being torn down.
    listed = slurm_cluster.run(["scontrol", "listpids", str(job)], check=False).stdout
    assert re.search(rf"\b{job}\s+extern\b", listed), listed


def test_user_without_jobs_is_refused_by_both(slurm_cluster: SlurmCluster, jobs: tuple[int, int],
                                              sshds: dict[str, Sshd]) -> None:
    for kind in ("hook", "module"):
        status, landed, err = login(slurm_cluster, sshds[kind], "bob", None)
        assert status == 255 and landed is None and NO_JOBS in err, (kind, err)


def test_root_passes_both(slurm_cluster: SlurmCluster, jobs: tuple[int, int], sshds: dict[str, Sshd]) -> None:
    for kind in ("hook", "module"):
        result = sshds[kind].ssh("root", "id -u")
        assert (result.returncode, result.stdout.strip()) == (0, "0"), (kind, result.stderr)


def test_login_from_outside_lands_in_the_newest_job(slurm_cluster: SlurmCluster, jobs: tuple[int, int],
                                                    sshds: dict[str, Sshd]) -> None:
    """The RPC finds no job: 26.05's rule (what the hook follows) picks the latest started job. (22.05's C
    module orders by cgroup mtimes instead, which other steps can bump: not compared here.)"""
    status, landed, err = login(slurm_cluster, sshds["hook"], "alice", None)
    assert (status, landed) == (0, newest_job(slurm_cluster, "alice")), err
    status, landed, _ = login(slurm_cluster, sshds["module"], "alice", None)
    assert status == 0 and landed in jobs


def test_session_env(slurm_cluster: SlurmCluster, jobs: tuple[int, int], sshds: dict[str, Sshd], hook: str) -> None:
    """What pam_putenv would have set, for /etc/profile.d: the adopted shell learns its job."""
    argv = srun_argv(jobs[0], sshds["hook"].ssh_argv("alice", f"{hook} --session-env"))
    proc = slurm_cluster.run(argv, user="alice", check=False, timeout=60)
    assert proc.stdout.strip() == f"export SLURM_JOB_ID={jobs[0]}", proc.stderr


# --- where the C module is known to be wrong ------------------------------------------------------------


def test_ipv6_login_to_an_ipv4_slurmd(slurm_cluster: SlurmCluster, jobs: tuple[int, int], sshds: dict[str, Sshd],
                                      devlog: DevLogCatcher) -> None:
    """Over ::1 the source's slurmd (listening on IPv4 only) refuses the C module's RPC, which then guesses
    a job. The connection comes from this node: the hook asks its slurmd at NodeAddr, about the IPv6
    connection, and lands in the right job."""
    status, landed, err = login(slurm_cluster, sshds["hook"], "alice", jobs[0], host="::1")
    assert (status, landed) == (0, jobs[0]), err
    since = devlog.mark()
    status, _landed, err = login(slurm_cluster, sshds["module"], "alice", jobs[0], host="::1")
    assert status == 0, err
    module_lines = [r.message for r in devlog.messages(ident="pam_slurm_adopt", since=since)]
    assert any("as alice: unable to determine source job" in m for m in module_lines), module_lines


def test_ipv4_mapped_connection(slurm_cluster: SlurmCluster, connected_job: ConnectedJob, hook: str) -> None:
    """Asked in the C module's way (af=10, the v4-mapped address), slurmd cannot find an IPv4 connection;
    the hook asks about it as IPv4 and names the job."""
    client, server = connected_job.client, connected_job.server
    mapped = socket.inet_pton(socket.AF_INET6, "::ffff:" + client[0])
    request = NetworkCallerIdRequest(mapped, socket.inet_pton(socket.AF_INET6, "::ffff:" + server[0]),
                                     client[1], server[1], 10)
    conf = parse_file(slurm_cluster.conf)
    with MungeContext(conf.munge_socket) as munge, \
            socket.create_connection(("127.0.0.1", conf.slurmd_port), timeout=10) as sock:
        sock.sendall(sign_and_encode(request, SLURM_22_05, munge.encode))
        reply = b"".join(iter(lambda: sock.recv(4096), b""))  # slurmd closes after its answer
    [frame] = decode_stream(reply)
    assert frame.message.job_id == NO_VAL  # type: ignore[attr-defined]
    connection = f"::ffff:{client[0]} {client[1]} ::ffff:{server[0]} {server[1]}"
    proc = subprocess.run([hook, "--explain", "--user", "alice", "--connection", connection,
                           f"conf={slurm_cluster.conf}", f"nodename={slurm_cluster.node_name}",
                           "single_job_skip_rpc=0"], capture_output=True, text=True, timeout=60)
    assert f"member of job {connected_job.job_id}" in proc.stdout, proc.stdout + proc.stderr


def _hook_sshd(cluster: SlurmCluster, sshd_factory: SshdFactory, pam_hook: str, shared_dir: Path, *options: str,
               slurmd_port: int | None = None, users: tuple[str, ...] = ("alice",)) -> Sshd:
    conf = cluster.conf
    if slurmd_port is not None:  # the same node, but its slurmd port is somewhere else
        conf = shared_dir / f"real-{slurmd_port}.conf"
        text = re.sub(r"(?m)^SlurmdPort=\d+$", f"SlurmdPort={slurmd_port}", cluster.conf.read_text())
        conf.write_text(text)
        conf.chmod(0o644)
    line = (f"required pam_exec.so stdout quiet {pam_hook} conf={conf} service={{service}} "
            f"nodename={cluster.node_name} {' '.join(options)}")
    return sshd_factory(["required pam_unix.so", line], users=list(users))


def test_dropping_source_host_real(slurm_cluster: SlurmCluster, jobs: tuple[int, int], sshd_factory: SshdFactory,
                                   pam_hook: str, shared_dir: Path) -> None:
    """The source's slurmd drops the RPC: within the deadline the hook falls back to the newest job."""
    with DroppingHost() as dropping:
        sshd = _hook_sshd(slurm_cluster, sshd_factory, pam_hook, shared_dir, "deadline=1.5",
                          slurmd_port=dropping.port)
        started = time.monotonic()
        status, landed, err = login(slurm_cluster, sshd, "alice", jobs[0])
        elapsed = time.monotonic() - started
    assert (status, landed) == (0, newest_job(slurm_cluster, "alice")), err  # the RPC could not tell
    assert elapsed < 1.5 + 2.0  # the deadline, plus srun's and ssh's own start-up


def test_munged_down_real(slurm_cluster: SlurmCluster, jobs: tuple[int, int], sshd_factory: SshdFactory,
                          pam_hook: str, shared_dir: Path) -> None:
    sshd = _hook_sshd(slurm_cluster, sshd_factory, pam_hook, shared_dir, f"munge_socket={shared_dir}/no-munged",
                      "action_generic_failure=deny")
    status, landed, _ = login(slurm_cluster, sshd, "alice", jobs[0])
    assert status == 255 and landed is None
