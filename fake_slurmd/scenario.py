"""Scenario files: the simulated nodes and their jobs, in TOML or JSON.

    release = "26.05"               # optional: behave exactly like this release (default: answer any)
    slurm_user = "slurm"            # optional: besides root, who may ask about any job (default root)
    spool_dir = "/tmp/fake/spool"   # optional: where the step sockets go (default: a temp dir)
    munge_socket = "/run/munge/munge.socket.2"   # optional (default: munge's default)
    client_timeout = 10             # optional: seconds a client may take to send its request

    [[nodes]]
    name = "node1"
    address = "127.0.0.1"           # default 127.0.0.1
    port = 6818                     # default 6818; 0 picks a free port
    netns = "ns1"                   # optional: listen inside /run/netns/ns1

    [[jobs]]
    job_id = 42
    user = "alice"                  # a name or a uid
    start_time = 1795960981         # optional, epoch seconds or a TOML datetime (default: now)
    nodes = ["node1"]               # optional (default: every node)
    steps = ["extern", "batch", 0]  # optional (default: extern and batch)
    pids = [1234]                   # processes of the job ...
    trees = [5678]                  # ... and everything below these
    cgroups = ["/sys/fs/cgroup/freezer/slurm/uid_1001/job_42"]   # ... and every process in these
    environ = true                  # ... and processes whose environment has SLURM_JOB_ID=42
    adopt_cgroup = "/sys/fs/cgroup/freezer/.../step_extern"      # ADD_EXTERN_PID also writes the pid here

JSON files have the same keys. Step sockets are created in start_time order, so their ctimes (which
the kernel sets, and which 26.05's pam_slurm_adopt sorts "newest" by) keep the jobs' order.
"""

from __future__ import annotations

import datetime
import json
import pwd
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slurmproto.constants import SLURM_BATCH_SCRIPT, SLURM_EXTERN_CONT, SLURM_INTERACTIVE_STEP
from slurmproto.versions import BY_NAME

STEP_WORDS = {"extern": SLURM_EXTERN_CONT, "batch": SLURM_BATCH_SCRIPT, "interactive": SLURM_INTERACTIVE_STEP}


class ScenarioError(ValueError):
    """A scenario file or value that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class NodeSpec:
    name: str
    address: str = "127.0.0.1"
    port: int = 6818
    netns: str | None = None


@dataclass
class Job:
    """A simulated job and the ways to tell which processes belong to it."""

    job_id: int
    uid: int
    start_time: float = field(default_factory=time.time)
    nodes: tuple[str, ...] | None = None
    steps: tuple[int, ...] = (SLURM_EXTERN_CONT, SLURM_BATCH_SCRIPT)
    pids: set[int] = field(default_factory=set)
    trees: set[int] = field(default_factory=set)
    cgroups: tuple[str, ...] = ()
    environ: bool = False
    adopt_cgroup: str | None = None
    adopted: list[int] = field(default_factory=list)
    """Pids added through REQUEST_ADD_EXTERN_PID, in order."""

    def runs_on(self, node: str) -> bool:
        return self.nodes is None or node in self.nodes


@dataclass
class Scenario:
    nodes: list[NodeSpec]
    jobs: dict[int, Job] = field(default_factory=dict)
    release: str | None = None
    slurm_user: int = 0
    spool_dir: str | None = None
    munge_socket: str | None = None
    client_timeout: float = 10.0

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ScenarioError(f"{path}: {exc.strerror}") from None
        try:
            if path.suffix == ".json" or text.lstrip().startswith("{"):
                data = json.loads(text)
            else:
                import tomllib

                data = tomllib.loads(text)
        except ValueError as exc:  # json.JSONDecodeError and tomllib.TOMLDecodeError
            raise ScenarioError(f"{path}: {exc}") from None
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "scenario") -> Scenario:
        known = {"release", "slurm_user", "spool_dir", "munge_socket", "client_timeout", "nodes", "jobs"}
        _no_unknown(data, known, where)
        release = data.get("release")
        if release is not None and release not in BY_NAME:
            raise ScenarioError(f"{where}: release {release!r} is not one of {', '.join(BY_NAME)}")
        nodes = [_node(n, f"{where}: nodes[{i}]") for i, n in enumerate(data.get("nodes") or [{"name": "node1"}])]
        if len({n.name for n in nodes}) != len(nodes):
            raise ScenarioError(f"{where}: node names repeat")
        jobs: dict[int, Job] = {}
        for i, raw in enumerate(data.get("jobs") or []):
            job = job_from_dict(raw, f"{where}: jobs[{i}]")
            if job.job_id in jobs:
                raise ScenarioError(f"{where}: jobs[{i}]: job {job.job_id} appears twice")
            jobs[job.job_id] = job
        return cls(nodes, jobs, release, _uid(data.get("slurm_user", 0), f"{where}: slurm_user"),
                   data.get("spool_dir"), data.get("munge_socket"),
                   float(_typed(data.get("client_timeout", 10.0), (int, float), f"{where}: client_timeout")))


def _no_unknown(data: dict[str, Any], known: set[str], where: str) -> None:
    if not isinstance(data, dict):
        raise ScenarioError(f"{where}: expected a table, got {type(data).__name__}")
    unknown = sorted(set(data) - known)
    if unknown:
        raise ScenarioError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")


def _typed(value: Any, kinds: type | tuple[type, ...], where: str) -> Any:
    allowed = kinds if isinstance(kinds, tuple) else (kinds,)
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        names = " or ".join(k.__name__ for k in allowed)
        raise ScenarioError(f"{where}: {value!r} is not a {names}")
    return value


def _uid(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        try:
            return pwd.getpwnam(value).pw_uid
        except KeyError:
            if value.isdigit():
                return int(value)
            raise ScenarioError(f"{where}: no such user {value!r}") from None
    raise ScenarioError(f"{where}: {value!r} is not a user name or uid")


def _node(data: dict[str, Any], where: str) -> NodeSpec:
    _no_unknown(data, {"name", "address", "port", "netns"}, where)
    name = _typed(data.get("name"), str, f"{where}: name")
    port = _typed(data.get("port", 6818), int, f"{where}: port")
    if not 0 <= port < 65536:
        raise ScenarioError(f"{where}: port {port} out of range")
    netns = data.get("netns")
    return NodeSpec(name, _typed(data.get("address", "127.0.0.1"), str, f"{where}: address"), port,
                    None if netns is None else _typed(netns, str, f"{where}: netns"))


def parse_step(value: Any, where: str) -> int:
    if isinstance(value, str) and value.lower() in STEP_WORDS:
        return STEP_WORDS[value.lower()]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0xFFFFFFFF:
        return value
    raise ScenarioError(f"{where}: step {value!r} is not extern, batch, interactive or a number")


def _time(value: Any, where: str) -> float:
    if isinstance(value, datetime.datetime):
        moment: datetime.datetime = value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
        return moment.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.datetime.fromisoformat(value).timestamp()
        except ValueError:
            pass
    raise ScenarioError(f"{where}: {value!r} is not a time")


def _ints(value: Any, where: str) -> set[int]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                              for v in value):
        raise ScenarioError(f"{where}: expected a list of pids")
    return set(value)


def job_from_dict(data: dict[str, Any], where: str = "job") -> Job:
    """A Job from the keys a scenario's [[jobs]] table takes."""
    _no_unknown(data, {"job_id", "user", "start_time", "nodes", "steps", "pids", "trees", "cgroups", "environ",
                       "adopt_cgroup"}, where)
    job_id = data.get("job_id")
    if not isinstance(job_id, int) or isinstance(job_id, bool) or not 0 < job_id < 0xFFFFFFF0:
        raise ScenarioError(f"{where}: job_id {job_id!r} is not a job id")
    if "user" not in data:
        raise ScenarioError(f"{where}: user is missing")
    steps = tuple(parse_step(s, f"{where}: steps") for s in data.get("steps", ["extern", "batch"]))
    nodes = data.get("nodes")
    if nodes is not None and not (isinstance(nodes, list) and all(isinstance(n, str) for n in nodes)):
        raise ScenarioError(f"{where}: nodes must be a list of node names")
    cgroups = data.get("cgroups", [])
    if not (isinstance(cgroups, list) and all(isinstance(c, str) for c in cgroups)):
        raise ScenarioError(f"{where}: cgroups must be a list of paths")
    adopt = data.get("adopt_cgroup")
    return Job(
        job_id=job_id,
        uid=_uid(data["user"], f"{where}: user"),
        start_time=_time(data["start_time"], f"{where}: start_time") if "start_time" in data else time.time(),
        nodes=None if nodes is None else tuple(nodes),
        steps=steps,
        pids=_ints(data.get("pids", []), f"{where}: pids"),
        trees=_ints(data.get("trees", []), f"{where}: trees"),
        cgroups=tuple(cgroups),
        environ=bool(_typed(data.get("environ", False), bool, f"{where}: environ")),
        adopt_cgroup=None if adopt is None else _typed(adopt, str, f"{where}: adopt_cgroup"),
    )
