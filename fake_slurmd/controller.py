"""FakeSlurmd: a simulated compute node (or several) running in a background thread.

    with FakeSlurmd(Scenario.load("node.toml")) as fake:
        with fake.connect_from_job(42, "127.0.0.1", 22) as conn:   # a process of job 42 holding a connection
            ...                                                    # real clients ask fake.port about it

A simulated cluster: the scenario's `network` ("namespaces", or "auto" as root) puts each node in a network
namespace of its own, and a job's process runs, and connects, from one of them:

    with FakeSlurmd(Scenario.load("cluster.toml")) as fake:   # network = "auto", nodes node1 and node2
        listener = fake.on_node("node2", socket.create_server, (fake.node("node2").address, 0))
        with fake.connect_from_job(42, *listener.getsockname(), node="node1") as conn:
            ...                                                    # node1's slurmd answers job 42

The same object backs the `fake-slurmd` command and the `fake_slurmd` pytest fixture. It owns an asyncio
loop in a thread (a LoopThread): the callerid responder on every node's address and one simulated
slurmstepd socket per step of every job, named like real ones in the spool dir. FakeStepds is the same kind
of controller for simulated slurmstepds alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from fake_slurmd.loop_thread import LoopThread
from fake_slurmd.membership import adopted_on, job_contains
from fake_slurmd.network import (
    ClusterNetwork,
    in_netns,
    loopback_address,
    namespaces_unavailable,
    netns_path,
    nsenter_argv,
)
from fake_slurmd.processes import stop_process
from fake_slurmd.sack import SackServer
from fake_slurmd.scenario import AUTH_MODES, Job, NodeSpec, Scenario, job_from_dict
from fake_slurmd.server import CalleridServer
from fake_slurmd.stepd import FakeStepd
from slurmproto.authkeys import load_keyring
from slurmproto.settings import DEFAULT_SLURMD_PORT
from slurmproto.stepd import step_socket
from slurmproto.versions import release_named

T = TypeVar("T")
LOGGER = logging.getLogger("fake_slurmd")
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

# A child that connects, reports its end of the connection, and holds it until its stdin closes.
_HOLDER = ("import socket, sys; source = (sys.argv[3], 0) if sys.argv[3] else None; "
           "s = socket.create_connection((sys.argv[1], int(sys.argv[2])), source_address=source); "
           "print(*s.getsockname()[:2], *s.getpeername()[:2], flush=True); sys.stdin.read()")


def log_event(event: str, level: str = "info", **fields: Any) -> None:
    """A structured log record: the event name as the message, the fields in `record.fields`."""
    LOGGER.log(LEVELS.get(level, logging.INFO), event, extra={"fields": fields})


@dataclass
class JobConnection:
    """A process of a simulated job holding a TCP connection (its end: `local`; the other: `remote`)."""

    job_id: int
    proc: subprocess.Popen[str]
    local: tuple[str, int]
    remote: tuple[str, int]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close(self) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        # The holder ends when its stdin closes; SIGKILL if it does not within the grace period.
        stop_process(self.proc, grace=5, ask=stdin.close)

    def __enter__(self) -> JobConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FakeSlurmd:
    def __init__(self, scenario: Scenario | None = None, *, release: str | None = None,
                 munge_socket: str | None = None, spool_dir: str | None = None, client_timeout: float | None = None,
                 max_connections: int = 20000, auth: str | None = None, key: str | None = None,
                 jwks: str | None = None, cluster: str | None = None, sack: str | None = None) -> None:
        self.scenario = scenario or Scenario([NodeSpec("node1", port=0)])
        self.auth = auth or self.scenario.auth
        if self.auth not in AUTH_MODES:
            raise ValueError(f"auth {self.auth!r} is not one of {', '.join(AUTH_MODES)}")
        key = key or self.scenario.key
        if self.auth == "slurm" and key is None:
            raise ValueError("auth/slurm needs the node's key file")
        # auth/slurm verifies and signs with the node's keys (slurm.jwks when given, as a slurmd reads it).
        self.keys = load_keyring(key, jwks or self.scenario.jwks) if self.auth == "slurm" and key else None
        self.cluster = cluster or self.scenario.cluster
        self.sack_path = sack or self.scenario.sack
        if self.sack_path is not None and self.keys is None:
            raise ValueError("a sack socket needs auth/slurm and the node's key")
        self.sack: SackServer | None = None
        name = release or self.scenario.release
        self.release = release_named(name) if name else None
        self.munge_socket = munge_socket or self.scenario.munge_socket
        self._own_spool = not (spool_dir or self.scenario.spool_dir)
        self.spool_dir = spool_dir or self.scenario.spool_dir or tempfile.mkdtemp(prefix="fake-slurmd-spool-")
        self.client_timeout = client_timeout or self.scenario.client_timeout
        self.max_connections = max_connections
        self.jobs: dict[int, Job] = dict(self.scenario.jobs)
        self.nodes: list[NodeSpec] = []
        """The nodes as they listen (addresses and ports assigned), once started."""
        self.network = self.scenario.network
        """Where the nodes are once started: host (as their [[nodes]] entries say), namespaces or loopback."""
        self.cluster_network: ClusterNetwork | None = None
        self._planned: list[NodeSpec] = []
        self.server: CalleridServer | None = None
        self._stepds: dict[str, FakeStepd] = {}
        self._runner = LoopThread("fake-slurmd", _loop_error)
        self._children: list[JobConnection] = []
        self._ctime_floor = 0  # ns: the newest step socket's ctime so far
        self._no_controller: socket.socket | None = None  # the SlurmctldPort slurm_conf() names (see there)

    # --- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> FakeSlurmd:
        for job in self.jobs.values():
            self._check_nodes(job)
        private_dir(self.spool_dir)
        try:
            self._planned = self._plan_nodes()
            self._runner.start()
            self._runner.run(self._start())
        except BaseException:
            self.stop()
            raise
        return self

    async def _start(self) -> None:
        self.server = CalleridServer(self.jobs, release=self.release, munge_socket=self.munge_socket,
                                     slurm_uid=self.scenario.slurm_user, client_timeout=self.client_timeout,
                                     max_connections=self.max_connections, log=log_event, keys=self.keys,
                                     cluster=self.cluster, hash_blocks=self.scenario.hash_blocks)
        shared_port = 0
        for node in self._planned:
            # Real clients use one SlurmdPort for every node: nodes asking for port 0 share one.
            port = await self.server.serve(replace(node, port=node.port or shared_port))
            shared_port = shared_port or (port if node.port == 0 else 0)
            self.nodes.append(replace(node, port=port))
        if self.sack_path is not None and self.keys is not None:
            self.sack = SackServer(self.sack_path, self.keys, release=self.release, cluster=self.cluster,
                                   timeout=self.client_timeout, log=log_event)
            await self.sack.start()
        for job in sorted(self.jobs.values(), key=lambda j: (j.start_time, j.job_id)):
            await self._start_stepds(job)

    async def _start_stepds(self, job: Job) -> None:
        # One after the other, in start order: the kernel stamps each socket's ctime as it is created, but
        # only to the clock tick, so a job's sockets are re-stamped until they are newer than earlier jobs'.
        floor = self._ctime_floor
        names = [node.name for node in self.scenario.nodes if job.runs_on(node.name)]
        for node_id, name in enumerate(names):
            for step in job.steps:
                path = step_socket(self.spool_dir, name, job.job_id, step)
                stepd = FakeStepd(path, job, step, release=self.release, slurm_uid=self.scenario.slurm_user,
                                  contains=functools.partial(job_contains, job, node=name), log=log_event,
                                  node_id=node_id, node=name)
                await stepd.start()
                self._stepds[path] = stepd
                self._ctime_floor = max(self._ctime_floor, await _stamp_after(path, floor))

    def _plan_nodes(self) -> list[NodeSpec]:
        """Where each node listens: as the scenario says, or at the addresses its network assigns."""
        network, nodes = self.scenario.network, self.scenario.nodes
        if network == "host":
            return list(nodes)
        why_not = None if network == "loopback" else namespaces_unavailable()
        if network == "namespaces" and why_not:
            raise PermissionError(errno.EPERM, f"network = \"namespaces\" needs network namespaces ({why_not})")
        if network == "loopback" or why_not:
            # One free port on 127.0.0.N: SlurmdPort is one port for every node.
            self.network = "loopback"
            log_event("network", level="warning" if why_not else "info", mode="loopback",
                      reason=f"no network namespaces: {why_not}" if why_not else "network = \"loopback\"",
                      addresses=f"127.0.0.1-{loopback_address(len(nodes) - 1)}")
            return [NodeSpec(node.name, loopback_address(i), 0) for i, node in enumerate(nodes)]
        self.network = "namespaces"
        self.cluster_network = ClusterNetwork(len(nodes), self.scenario.subnet).create()
        log_event("network", mode="namespaces", subnet=self.scenario.subnet, switch=self.cluster_network.switch)
        net = self.cluster_network
        return [NodeSpec(node.name, net.addresses[i], DEFAULT_SLURMD_PORT, netns_path(net.namespaces[i]),
                         net.addresses6[i] if net.addresses6 else None) for i, node in enumerate(nodes)]

    def _check_nodes(self, job: Job) -> None:
        names = [node.name for node in self.scenario.nodes]
        unknown = [name for name in job.nodes or () if name not in names]
        if unknown:
            raise ValueError(f"job {job.job_id}: no node {unknown[0]!r} (nodes: {', '.join(names)})")

    async def _stop_stepds(self, job_id: int) -> None:
        for path, stepd in list(self._stepds.items()):
            if stepd.job.job_id == job_id:
                await stepd.close()
                del self._stepds[path]

    async def _stop(self) -> None:
        for stepd in self._stepds.values():
            await stepd.close()
        self._stepds.clear()
        if self.server is not None:
            await self.server.close()
        if self.sack is not None:
            await self.sack.close()

    def stop(self) -> None:
        for child in self._children:
            child.close()
        self._children.clear()
        if self._runner.running:
            with contextlib.suppress(Exception):
                self._runner.run(self._stop(), timeout=30)
            self._runner.stop()
        if self._no_controller is not None:
            self._no_controller.close()
            self._no_controller = None
        if self.cluster_network is not None:
            self.cluster_network.remove()
            self.cluster_network = None
        if self._own_spool:
            shutil.rmtree(self.spool_dir, ignore_errors=True)

    def __enter__(self) -> FakeSlurmd:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # --- the simulated node ----------------------------------------------------------------------------

    def node(self, name: str | None = None) -> NodeSpec:
        """A node as it listens (the first one by default)."""
        for node in self.nodes:
            if name is None or node.name == name:
                return node
        raise KeyError(f"no node {name!r}")

    @property
    def port(self) -> int:
        return self.node().port

    def add_job(self, job: Job | dict[str, Any]) -> Job:
        """Add a job (a Job, or a dict with the keys of a scenario's [[jobs]] table); its stepds start now."""
        job = job if isinstance(job, Job) else job_from_dict(job)
        if job.job_id in self.jobs:
            raise ValueError(f"job {job.job_id} exists")
        self._check_nodes(job)
        self._set_jobs({**self.jobs, job.job_id: job})
        self._runner.run(self._start_stepds(job))
        return job

    def remove_job(self, job_id: int) -> None:
        self._runner.run(self._stop_stepds(job_id))
        self._set_jobs({k: v for k, v in self.jobs.items() if k != job_id})

    def reload(self, scenario: Scenario) -> None:
        """Replace the jobs with the scenario's (SIGHUP): changed or removed jobs lose their stepds."""
        for job_id in list(self.jobs):
            if self.jobs[job_id] != scenario.jobs.get(job_id):
                self.remove_job(job_id)
        for job in sorted(scenario.jobs.values(), key=lambda j: (j.start_time, j.job_id)):
            if job.job_id not in self.jobs:
                self.add_job(job)
        log_event("reloaded", jobs=sorted(self.jobs))

    def _set_jobs(self, jobs: dict[int, Job]) -> None:
        # Copy on write: worker threads read the mapping without locks.
        self.jobs = jobs
        if self.server is not None:
            self.server.jobs = jobs

    def on_node(self, node: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """fn(*args, **kwargs) called inside the node's network namespace (here, when it has none): sockets
        it opens and processes it starts are the node's."""
        return in_netns(self.node(node).netns, lambda: fn(*args, **kwargs))

    def spawn_in_job(self, job_id: int, argv: Sequence[str], *, node: str | None = None,
                     user: str | int | None = None, **popen: Any) -> subprocess.Popen[Any]:
        """Start a process that belongs to the job (as `user` when given): on every node of the job, or,
        with `node`, on that node only, inside its network namespace if it has one."""
        job = self.jobs[job_id]
        if node is None:
            proc: subprocess.Popen[Any] = subprocess.Popen(list(argv), user=user, **popen)
            job.pids.add(proc.pid)
            job.trees.add(proc.pid)  # and its children, as in a real job's container
            return proc
        if not job.runs_on(node):
            raise ValueError(f"job {job_id} does not run on {node}")
        proc = self.on_node(node, subprocess.Popen, list(argv), user=user, **popen)
        # Copy on write: lookup threads read node_trees without locks.
        job.node_trees = {**job.node_trees, node: job.node_trees.get(node, set()) | {proc.pid}}
        return proc

    def connect_from_job(self, job_id: int, host: str, port: int, *, node: str | None = None,
                         user: str | int | None = None, source: str | None = None, netns: str | None = None,
                         timeout: float = 10) -> JobConnection:
        """A process of the job (as `user`; with `node`, on that node) opens a TCP connection to host:port
        (from `source`; by default, with `node`, from the node's address) and holds it until closed. `netns`
        (a namespace path, not with `node`) runs it in a network namespace of the caller's, e.g. a real
        cluster's."""
        if node is not None and netns:
            raise ValueError("connect_from_job: a node or a netns, not both")
        source = source or (self.node(node).address if node is not None else "")
        argv = [sys.executable, "-c", _HOLDER, host, str(port), source]
        if netns:
            # nsenter joins the namespace while still privileged, drops to `user`, and execs the holder:
            # the job's pid is the holder's own.
            ids = _ids_of(user) if user is not None else None
            drop = ["--setuid", str(ids[0]), "--setgid", str(ids[1])] if ids else []
            argv, user = nsenter_argv(argv, net=netns, options=drop), None
        proc = self.spawn_in_job(job_id, argv, node=node, user=user, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, cwd="/")
        assert proc.stdout is not None
        line = _readline(proc, timeout)
        if not line:
            stop_process(proc, grace=5)
            raise RuntimeError(f"job {job_id}'s process could not connect to {host}:{port}: {proc.stderr.read()}")  # type: ignore[union-attr]
        local_host, local_port, remote_host, remote_port = line.split()
        connection = JobConnection(job_id, proc, (local_host, int(local_port)), (remote_host, int(remote_port)))
        self._children.append(connection)
        return connection

    def adopted(self, job_id: int, node: str | None = None) -> list[int]:
        """The pids REQUEST_ADD_EXTERN_PID put into the job's extern step (on `node`; None: on any)."""
        return list(adopted_on(self.jobs[job_id], node))

    def slurm_conf(self, path: str | Path, extra: Sequence[str] = ()) -> Path:
        """Write a slurm.conf that points real Slurm clients (scontrol, pam_slurm_adopt) at this fake.

        The file is replaced, never written through: a symlink at `path` is replaced, not followed, and an
        existing file keeps its mode (a new one is 0644: clients run as any user read it). With auth/slurm,
        clients look for slurm.key beside the file (or at $SLURM_SACK_KEY); those that cannot read one ask
        the sack socket.
        """
        path = Path(path)
        # pam_slurm_adopt up to 25.11 finds the step it adopts into on "this" node by guessing the node
        # name from the host name, so the first node claims this host's name.
        host = os.uname().nodename.split(".")[0]
        lines = [
            f"ClusterName={self.cluster or 'fake'}",
            # No controller: a client that asks one must fail at once and reach no real slurmctld. The port
            # is one this process holds bound and never listens on, so connecting is refused and nothing
            # else can bind it while the fake runs (the default 6817 may be a real slurmctld's).
            "SlurmctldHost=localhost(127.0.0.1)",
            f"SlurmctldPort={self._controller_port()}",
            f"SlurmdPort={self.port}",
            f"SlurmdSpoolDir={self.spool_dir}",
            f"AuthType=auth/{self.auth}",
            *([f"AuthInfo=socket={self.munge_socket}"] if self.munge_socket and self.auth == "munge" else []),
            f"CredType=cred/{self.auth}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SlurmUser=root",
            *(f"NodeName={n.name} NodeAddr={n.address} NodeHostname={host if i == 0 else n.name}"
              for i, n in enumerate(self.nodes)),
            *extra,
        ]
        replace_file(path, "\n".join(lines) + "\n")
        return path

    def _controller_port(self) -> int:
        if self._no_controller is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            sock.bind(("127.0.0.1", 0))  # no SO_REUSEADDR, no listen(): connections are refused
            self._no_controller = sock
        return int(self._no_controller.getsockname()[1])


class FakeStepds:
    """Simulated slurmstepds on their own, no callerid responder: a synchronous controller like FakeSlurmd.

        with FakeStepds() as stepds:
            stepd = stepds.add(FakeStepd(path, job, SLURM_EXTERN_CONT, release=None, contains=...))
            ...                                   # clients talk to stepd.path; stepds.remove(stepd) closes it

    Each stepd runs on the controller's loop thread; `stop()` closes every one still open.
    """

    def __init__(self) -> None:
        self.stepds: list[FakeStepd] = []
        self._runner = LoopThread("fake-stepds", _loop_error)

    def start(self) -> Self:
        self._runner.start()
        return self

    def add(self, stepd: FakeStepd) -> FakeStepd:
        """Start listening on the stepd's socket; it is closed by stop() unless removed before."""
        self._runner.run(stepd.start(), timeout=30)
        if stepd not in self.stepds:
            self.stepds.append(stepd)
        return stepd

    def remove(self, stepd: FakeStepd) -> None:
        """Close the stepd (its socket is unlinked); add() starts it again."""
        self._runner.run(stepd.close(), timeout=30)
        if stepd in self.stepds:
            self.stepds.remove(stepd)

    def stop(self) -> None:
        try:
            for stepd in list(self.stepds):
                self.remove(stepd)
        finally:
            self._runner.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def private_dir(path: str) -> None:
    """Make `path` (and its parents) if missing, the leaf 0700; refuse an existing one that another user
    owns or may write to: whoever can write the spool dir can plant a slurmstepd socket for any job."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(errno.ENOTDIR, "spool dir is not a directory", path) from None
    st = os.stat(path)
    if st.st_uid != os.geteuid():
        raise PermissionError(errno.EPERM, f"spool dir is owned by uid {st.st_uid}, not by this user", path)
    if st.st_mode & 0o022:
        raise PermissionError(errno.EPERM, f"spool dir is writable by others (mode {st.st_mode & 0o7777:04o})",
                              path)


def replace_file(path: Path, text: str) -> None:
    """Write `text` to a new file beside `path` and rename it over `path`: a symlink there is replaced, not
    followed; an existing regular file keeps its mode."""
    try:
        old = os.lstat(path)
        mode = stat.S_IMODE(old.st_mode) if stat.S_ISREG(old.st_mode) else 0o644
    except FileNotFoundError:
        mode = 0o644
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # O_EXCL, 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8", "surrogateescape"))  # paths are bytes to the kernel
            os.fchmod(handle.fileno(), mode)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """What asyncio would log with a traceback (an exception nobody retrieved, a transport failure): one line."""
    exc = context.get("exception")
    log_event("loop_error", level="error", message=str(context.get("message", "")),
              reason=repr(exc) if exc is not None else "")


async def _stamp_after(path: str, floor: int) -> int:
    """Re-stamp a socket's ctime (chmod sets it to now) until it is later than `floor` (ns); returns it."""
    ctime = os.stat(path).st_ctime_ns
    for _ in range(2000):  # a few clock ticks; bounded in case the clock was set back
        if ctime > floor:
            break
        await asyncio.sleep(0.001)
        os.chmod(path, 0o777)
        ctime = os.stat(path).st_ctime_ns
    return ctime


def _ids_of(user: str | int) -> tuple[int, int]:
    entry = pwd.getpwuid(user) if isinstance(user, int) else pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    """First line of the child's stdout, or "" if it exits or stays silent for `timeout`."""
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    return result[0].strip() if result else ""
