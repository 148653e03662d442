"""Which simulated job, and which of its steps, a process belongs to.

A real slurmd asks each slurmstepd whether its container (proctrack) holds the pid. Here a job says
which processes are its own: listed pids, whole process trees, cgroups, or SLURM_JOB_ID in the
environment; pids adopted through REQUEST_ADD_EXTERN_PID belong to the extern step.

A process's parent and environment come from psutil. The scans run on every inode-index miss stay
plain /proc reads, several times faster than psutil's (see descendants, processes_of), and cgroups,
which psutil does not cover, are read from /proc/<pid>/cgroup and cgroup.procs. The hook never imports
this module.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import psutil

from fake_slurmd.scenario import Job
from slurmproto.constants import SLURM_BATCH_SCRIPT, SLURM_EXTERN_CONT

CGROUP_ROOT = "/sys/fs/cgroup"
MAX_DEPTH = 256


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def parent_of(pid: int) -> int | None:
    """The parent's pid (0 for init), or None when pid is gone or unreadable."""
    try:
        return int(psutil.Process(pid).ppid())
    except (psutil.Error, ValueError):
        return None


def ancestors(pid: int) -> list[int]:
    """pid, its parent, and so on up to init (bounded, in case of a pid reused mid-walk)."""
    chain: list[int] = []
    current: int | None = pid
    while current and current not in chain and len(chain) < MAX_DEPTH:
        chain.append(current)
        current = parent_of(current)
    return chain


def descendants(pid: int) -> set[int]:
    """pid and every process below it, from the kernel's /proc/<pid>/task/<tid>/children lists.

    Not psutil: its children() reads the whole process table (/proc/*/stat) for every tree, about 4x
    slower here on a 200-process tree, and this runs on every index miss.
    """
    found: set[int] = set()
    pending = [pid]
    while pending and len(found) < 1 << 20:
        current = pending.pop()
        if current in found or not os.path.exists(f"/proc/{current}"):
            continue
        found.add(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tasks:
            children = _read(f"/proc/{current}/task/{tid}/children") or b""
            pending.extend(int(child) for child in children.split())
    return found


def cgroup_relative(spec: str) -> str:
    """A cgroup as /proc/<pid>/cgroup shows it: /sys/fs/cgroup[/<v1 hierarchy>]/a/b -> /a/b."""
    spec = spec.rstrip("/") or "/"
    if not spec.startswith(CGROUP_ROOT + "/"):
        return spec
    rest = spec[len(CGROUP_ROOT):]
    first = rest.split("/")[1]
    if os.path.ismount(f"{CGROUP_ROOT}/{first}"):  # a v1 hierarchy (or the v2 "unified" one) mounted here
        rest = rest[len(first) + 1:] or "/"
    return rest


def cgroup_pids(spec: str) -> set[int]:
    """Processes in a cgroup directory and the cgroups below it."""
    if not spec.startswith(CGROUP_ROOT + "/"):
        return set()
    pids: set[int] = set()
    for directory, _dirs, files in os.walk(spec):
        if "cgroup.procs" in files:
            pids.update(int(p) for p in (_read(f"{directory}/cgroup.procs") or b"").split())
    return pids


def in_cgroups(pid: int, specs: Iterable[str]) -> bool:
    text = _read(f"/proc/{pid}/cgroup")
    if text is None:
        return False
    paths = [line.split(b":", 2)[2].decode(errors="replace") for line in text.splitlines() if line.count(b":") >= 2]
    for spec in specs:
        relative = cgroup_relative(spec)
        if any(path == relative or path.startswith(relative.rstrip("/") + "/") for path in paths):
            return True
    return False


def has_job_environ(pid: int, job_id: int) -> bool:
    """Whether the process's environment says SLURM_JOB_ID=<job_id>."""
    try:
        environ: dict[str, str] = psutil.Process(pid).environ()
    except (psutil.Error, ValueError):
        return False
    return environ.get("SLURM_JOB_ID") == str(job_id)


def adopted_on(job: Job, node: str | None) -> list[int]:
    """The pids adopted into the job on `node` (None: on any node)."""
    return job.adopted if node is None else job.adopted_on.get(node, [])


def trees_on(job: Job, node: str | None) -> set[int]:
    """The roots of the job's process trees on `node` (None: on any node)."""
    if node is None:
        return job.trees.union(*job.node_trees.values())
    return job.trees | job.node_trees.get(node, set())


def job_contains(job: Job, pid: int, node: str | None = None) -> bool:
    """Whether the job's container on `node` (None: on any node) holds pid."""
    if pid in job.pids or pid in adopted_on(job, node):
        return True
    trees = trees_on(job, node)
    if trees and not trees.isdisjoint(ancestors(pid)):
        return True
    if job.cgroups and in_cgroups(pid, job.cgroups):
        return True
    return job.environ and has_job_environ(pid, job.job_id)


def step_of(job: Job, pid: int) -> int:
    """The step holding a member pid: adopted pids are in the extern step; the rest in the batch step when
    the job has one, else in its first other step."""
    if pid in job.adopted or job.steps == (SLURM_EXTERN_CONT,):
        return SLURM_EXTERN_CONT
    if SLURM_BATCH_SCRIPT in job.steps:
        return SLURM_BATCH_SCRIPT
    return next(s for s in job.steps if s != SLURM_EXTERN_CONT)


def job_of(jobs: Mapping[int, Job], node: str, pid: int) -> Job | None:
    """The first job on `node` (by job id) whose container holds pid."""
    for job_id in sorted(jobs):
        job = jobs[job_id]
        if job.runs_on(node) and job_contains(job, pid, node):
            return job
    return None


def candidate_pids(jobs: Mapping[int, Job], node: str, uid: int | None) -> set[int]:
    """Processes worth searching for a socket's holder: the members the jobs name, plus, when a job
    counts SLURM_JOB_ID in the environment, every process of the socket's owner."""
    pids: set[int] = set()
    environ = False
    for job in jobs.values():
        if not job.runs_on(node):
            continue
        pids |= job.pids
        pids.update(adopted_on(job, node))
        for root in trees_on(job, node):
            pids |= descendants(root)
        for spec in job.cgroups:
            pids |= cgroup_pids(spec)
        environ = environ or job.environ
    if environ:
        pids |= processes_of(uid)
    return pids


def processes_of(uid: int | None) -> set[int]:
    """Every process owned by `uid` (its /proc directory's owner), or every process for None.

    Not psutil.process_iter: it builds a Process and reads /proc/<pid>/status for each, 30x slower than
    one stat() per directory, and this runs on every index miss of a job counted by its environment.
    """
    found: set[int] = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if uid is None or entry.stat().st_uid == uid:
                    found.add(int(entry.name))
            except OSError:
                continue
    return found
