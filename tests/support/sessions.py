"""What an adopted ssh session sees: its /tmp, its environment, its mount namespace and its job.

The remote command of these logins is a probe that prints one JSON line about the session; `SessionView`
is that line parsed, next to ssh's verdict. `container_login` logs in from inside a job of a real node
with job_container/tmpfs (`SlurmCluster(job_container=True)`), through a fresh sshd whose account stack
is the line given, so any module (the C one, the hook, an in-process one) is compared on the same terms.
`fake_job_login` does the same from a process of a fake_slurmd job.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from fake_slurmd.controller import FakeSlurmd
from fake_slurmd.sshd import login_from_job
from tests.support.slurm_cluster import SlurmCluster, srun_argv
from tests.support.sshd import Sshd

if TYPE_CHECKING:  # fixtures imports this module
    from fake_slurmd.plugin import SshdFactory
    from tests.support.chroot_cluster import ChrootCluster

PAM_SLURM_ADOPT = "/lib/security/pam_slurm_adopt.so"
"""Debian's pam_slurm_adopt (libpam-slurm-adopt, Slurm 22.05)."""
NO_JOBS = "Access denied by pam_slurm_adopt: you have no active jobs on this node"
UNKNOWN = "Access denied by pam_slurm_adopt: unable to determine source job"
"""What pam_slurm_adopt (and the hook, in its words) tells a refused user: no job here; a job here, but which
one the connection comes from is unknown and action_unknown refuses."""
MARKER = "/tmp/job-marker"
"""Where `marker_job` writes in the job's /tmp, and what the probe reads."""
_WRITTEN = "marker-written"
CGROUP_JOB = re.compile(r"/job_(\d+)/step_extern")

_PROBE = """\
import json, os, re, sys
def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None
cgroup = read("/proc/self/cgroup") or ""
print(json.dumps({"tmp": sorted(os.listdir("/tmp")), "marker": read(sys.argv[1]), "env": dict(os.environ),
                  "mount_ns": os.readlink("/proc/self/ns/mnt"), "cgroup": cgroup}))
"""


@dataclass(frozen=True)
class SessionView:
    """ssh's verdict and, when the login ran, what its session saw."""

    status: int
    """ssh's exit status: 0 the probe ran, 255 ssh failed (a refusal by the account stack among others)."""
    stderr: str
    tmp: tuple[str, ...] = ()
    """The names in the session's /tmp."""
    marker: str | None = None
    """The marker file's content as the session reads it; None when it cannot."""
    env: dict[str, str] = field(default_factory=dict)
    """The session's environment (sshd puts the PAM environment there)."""
    mount_ns: str | None = None
    """readlink /proc/self/ns/mnt, e.g. "mnt:[4026531841]"."""
    job: int | None = None
    """The job whose extern step cgroup the session is in."""

    @property
    def allowed(self) -> bool:
        return self.status == 0 and self.mount_ns is not None


def probe_command(marker: str = MARKER) -> str:
    """The remote command: the probe, with the host's python3, reading `marker`."""
    return shlex.join(["/usr/bin/python3", "-I", "-c", _PROBE, marker])


def parse_session(proc: subprocess.CompletedProcess[str]) -> SessionView:
    """The probe's line from ssh's output (none after a refusal); anything else in stdout is an error."""
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        return SessionView(proc.returncode, proc.stderr)
    try:
        data = json.loads(lines[-1])
    except ValueError:
        raise AssertionError(f"not the probe's output: {proc.stdout!r} (stderr {proc.stderr!r})") from None
    found = CGROUP_JOB.search(data["cgroup"])
    return SessionView(proc.returncode, proc.stderr, tuple(data["tmp"]), data["marker"], dict(data["env"]),
                       data["mount_ns"], int(found.group(1)) if found else None)


def marker_text(job_id: int) -> str:
    """What `marker_job`'s job writes to MARKER."""
    return f"written by job {job_id}\n"


def marker_job(cluster: SlurmCluster | ChrootCluster, user: str = "alice") -> int:
    """A running batch job of `user` that wrote marker_text(job) to MARKER in its own /tmp; the caller
    cancels it. On a job_container cluster only the job's namespace has that file."""
    job_id = cluster.submit(user, f'echo "written by job $SLURM_JOB_ID" > {MARKER} && echo {_WRITTEN} && '
                                  "exec sleep 3600")
    cluster.wait_running(job_id)
    cluster.wait_output(job_id, _WRITTEN)
    return job_id


def _stack(account_line: str, conf: Path, nodename: str) -> list[str]:
    """pam_unix, as real stacks have (a stack of PAM_IGNORE alone denies), then the line under test."""
    return ["required pam_unix.so", account_line.replace("{conf}", str(conf)).replace("{nodename}", nodename)]


def container_sshd(cluster: SlurmCluster, sshd_factory: SshdFactory, account_line: str,
                   env: Mapping[str, str] | None = None, users: Sequence[str] = ("alice", "bob")) -> Sshd:
    """A started sshd whose account stack is pam_unix then `account_line` ("required MODULE ARGS", where
    `{service}`, `{conf}` and `{nodename}` become its PAM service, the cluster's slurm.conf and node name).
    Its keys live in the cluster's directory: the client runs inside a job, whose /tmp is not the host's.
    `env` is sshd's (default SLURM_CONF=the cluster's slurm.conf, which the C module reads)."""
    base = Path(tempfile.mkdtemp(prefix="sshd-", dir=cluster.base))
    return sshd_factory(_stack(account_line, cluster.conf, cluster.node_name), base=base, users=list(users),
                        env={"SLURM_CONF": str(cluster.conf)} if env is None else dict(env))


def fake_node_sshd(fake: FakeSlurmd, sshd_factory: SshdFactory, conf: Path, account_line: str,
                   env: Mapping[str, str] | None = None, users: Sequence[str] = ("alice", "bob")) -> Sshd:
    """container_sshd for a fake node: its slurm.conf is written to `conf` (in a directory every user can
    read), `{nodename}` is node1."""
    fake.slurm_conf(conf)
    return sshd_factory(_stack(account_line, conf, fake.node().name), users=list(users),
                        env={"SLURM_CONF": str(conf)} if env is None else dict(env))


def login_from_step(cluster: SlurmCluster, sshd: Sshd, job_id: int | None, user: str = "alice",
                   marker: str = MARKER, host: str = "127.0.0.1") -> SessionView:
    """`user` logs in to `sshd` from a step of `job_id` (srun --overlap), or from outside any job (None)."""
    argv = sshd.ssh_argv(user, probe_command(marker), host=host)
    if job_id is not None:
        argv = srun_argv(job_id, argv)
    return parse_session(cluster.run(argv, user=user, check=False, timeout=60))


def container_login(cluster: SlurmCluster, job_id: int, sshd_factory: SshdFactory, account_line: str, *,
                    user: str = "alice", marker: str = MARKER, env: Mapping[str, str] | None = None) -> SessionView:
    """container_sshd(account_line), then login_from_step: what a login from inside `job_id` sees."""
    sshd = container_sshd(cluster, sshd_factory, account_line, env=env, users=[user])
    return login_from_step(cluster, sshd, job_id, user, marker)


def fake_job_login(fake: FakeSlurmd, sshd: Sshd, job_id: int, user: str = "alice",
                   marker: str = MARKER) -> SessionView:
    """`user` logs in to `sshd` from a process of the fake node's job `job_id`."""
    return parse_session(login_from_job(fake, sshd, job_id, user, probe_command(marker)))


@contextlib.contextmanager
def mount_namespace(marker: str | None = None) -> Iterator[str]:
    """A mount namespace of its own (needs root), held by a process of ours while the context lasts: its
    /proc/PID/ns/mnt. With `marker`, its /tmp is a tmpfs of its own holding MARKER with that text."""
    setup = f'mount -t tmpfs -o mode=1777 tmpfs /tmp && printf %s "$1" > {MARKER} && ' if marker is not None else ""
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                             f"{setup}echo up && exec sleep 3600", "sh", marker or ""],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline() != "up\n":
            raise RuntimeError(f"unshare --mount failed (exit status {proc.wait()})")
        yield f"/proc/{proc.pid}/ns/mnt"
    finally:
        proc.kill()
        proc.wait()


def shell_line(login: subprocess.Popen[str], logs: Callable[[], str]) -> str:
    """The first line of a login whose remote command starts with `echo pid $$`; anything else (a refused
    login prints nothing) kills the login and fails the test with ssh's stderr and `logs()`."""
    assert login.stdout is not None and login.stderr is not None
    first = login.stdout.readline()
    if not first.startswith("pid "):
        login.kill()
        pytest.fail(f"the login printed {first!r}; ssh said {login.stderr.read()!r}\n{logs()}")
    return first


def host_mount_ns() -> str:
    """This process's mount namespace: the host's, where sshd runs."""
    return os.readlink("/proc/self/ns/mnt")
