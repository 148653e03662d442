"""A real Slurm 24.11 or 26.05 single-node cluster from Debian's packages, in a chroot + namespaces of its own.

The chroots are built by scripts/build-chroots (under CHROOTS) and never written to: each cluster runs on an
overlay of its chroot (upper layer on a tmpfs of its own under STATE), so its users, keys, configs, state,
spool and logs are its own and several clusters of one chroot can run at once. Each cluster also gets:

* a mount namespace whose root is the overlay (pivot_root, not chroot: a job's namespace of the tmpfs plugin,
  unshared from it, must have the overlay as its root too, for the job and for a login that joins it);
  the mounts the daemons make stay in it;
* a network namespace holding only `lo` (tests/support/namespaces.py): nothing it sends can leave it;
* a UTS namespace whose hostname is the NodeName (pam_slurm_adopt finds stepds under gethostname());
* cgroup v1 freezer and cpuset directories /sys/fs/cgroup/<controller>/<name>, and a cgroup namespace
  rooted there in which those two hierarchies are mounted at the chroot's /sys/fs/cgroup. Slurm runs
  proctrack/cgroup and task/cgroup, so jobs get real job_N/step_extern cgroups; the machine's own Slurm
  (/sys/fs/cgroup/*/slurm_node1) never sees ours;
* auth/munge (a private munged with a fresh key) or auth/slurm (a fresh slurm.key, no munged; with
  jwks=True also a slurm.jwks of three keys, chroot_files.slurm_jwks, which the daemons use instead);
* sshd on port 2222 of every address of the namespace (127.0.0.1, and those of a link a test adds) with
  the chroot's real pam_slurm_adopt in its "sshd" PAM account stack, and a catcher on the chroot's /dev/log
  for what the module logs; sshd_beside() starts another with an account stack of the caller's, and
  install_project() puts the project's packages in, for the chroot's own libpam-python (the in-process
  module);
* with container=PLUGIN, one of the release's namespace plugins (CONTAINERS): each job in a mount namespace
  with a private /tmp and /dev/shm.

node_sshd() runs the host's sshd in the same cgroups and namespaces, on the host's filesystem, for PAM modules
of the host (the project's hook); host_conf() is slurm.conf with the host's paths of the spool dir and munged.

Every Slurm command gets SLURM_CONF. Everything started is stopped by the pid we started, then whatever is
left in our mount and network namespaces or cgroups; the namespaces, mounts and cgroups are removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from fake_slurmd.network import nsenter_argv
from fake_slurmd.processes import stop_process
from tests.support import chroot_files as files
from tests.support.chroot_files import AUTHS, NODE, SLURMD_PORT, SPOOL, SSHD_PORT
from tests.support.lifecycle import Daemons
from tests.support.namespaces import NetNs, OwnCgroups, pin_root, pin_uts, unmount_below
from tests.support.packets import PacketCapture
from tests.support.procs import ensure_user, wait_for
from tests.support.sshd import Sshd
from tests.support.syslog import DevLogCatcher

CHROOTS = Path(os.environ.get("SAT_CHROOTS", "/var/lib/slurm-adopt-toolkit/chroots"))
STATE = Path(os.environ.get("SAT_CLUSTER_STATE", "/run/slurm-adopt-toolkit"))
RELEASES = {"24.11": "2411", "26.05": "2605"}
"""Release name -> chroot directory name (scripts/build-chroots)."""
CONTAINER_BASE = "/var/lib/slurm/containers"
JOB_OUTPUT = "/var/lib/slurm/job-output"
"""submit()'s jobs write their output here, outside /tmp: namespace/linux opens it in the job's private /tmp."""


@dataclass(frozen=True)
class Container:
    """A plugin that gives each job a mount namespace with a private /tmp and /dev/shm: its slurm.conf line,
    its config file beside slurm.conf (BasePath created by slurmd: AutoBasePath) and a letter for names."""

    conf_line: str
    file: str
    text: str
    letter: str


_TMPFS_CONF = f"AutoBasePath=true\nBasePath={CONTAINER_BASE}\n"
CONTAINERS = {
    "24.11": {"job_container/tmpfs": Container("JobContainerType=job_container/tmpfs", "job_container.conf",
                                               _TMPFS_CONF, "t")},
    # 25.11 renamed job_container/tmpfs namespace/tmpfs (same config file) and added namespace/linux, which
    # its documentation says needs cgroup v2: on these clusters' cgroup v1 it runs jobs in namespaces as well.
    "26.05": {"namespace/tmpfs": Container("NamespaceType=namespace/tmpfs", "job_container.conf", _TMPFS_CONF, "t"),
              "namespace/linux": Container("NamespaceType=namespace/linux", "namespace.yaml",
                                           f"defaults:\n  auto_base_path: true\n  base_path: {CONTAINER_BASE}\n",
                                           "l")},
}
"""Each release's namespace plugins the tests run."""
PROJECT_DIR = "/opt/slurm-adopt"
"""Where install_project() puts the project's packages in the chroot."""
CONF = "/etc/slurm/slurm.conf"
MUNGE_SOCKET = "/run/munge/munge.socket.2"
SACK_SOCKET = "/run/slurm/sack.socket"
EXTERN_STEP = 0xFFFFFFFC
DAEMONS = ("slurmd", "slurmctld", "munged")
"""Stopped in this order, after the sshds."""
_PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
_serial = itertools.count()


def _drop_to(user: str | None) -> list[str]:
    """argv prefix: the rest runs as `user` with its groups (nothing for root or None)."""
    return [] if user in (None, "root") else ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"]


def chroot_dir(release: str) -> Path:
    return CHROOTS / RELEASES[release]


def missing_reason(release: str) -> str | None:
    """Why this release's cluster cannot start here (None: it can)."""
    if os.geteuid() != 0:
        return f"the Slurm {release} chroot cluster needs root (CI runs as root)"
    if not (chroot_dir(release) / ".complete").exists():
        return f"no Slurm {release} chroot at {chroot_dir(release)} (run scripts/build-chroots)"
    return OwnCgroups.missing_reason()


@dataclass(frozen=True)
class HeldConnection:
    """A TCP connection a job holds inside the namespace: its end and the listener's."""

    job_id: int
    client: tuple[str, int]
    server: tuple[str, int]


class ChrootCluster(Daemons):
    """`with ChrootCluster("24.11", auth="slurm") as c: c.run(["sinfo"])`: one release's cluster."""

    def __init__(self, release: str, auth: str = "munge", users: Sequence[str] = ("alice", "bob"),
                 start_timeout: float = 60.0, jwks: bool = False, chroot: str | None = None,
                 auth_key: bytes | None = None, container: str | None = None) -> None:
        """`chroot`: another chroot of scripts/build-chroots by its directory name (default: the release's).
        `container`: one of the release's namespace plugins (CONTAINERS), each job in a mount namespace."""
        if auth not in AUTHS:
            raise ValueError(f"auth must be one of {AUTHS}, not {auth!r}")
        if jwks and auth != "slurm":
            raise ValueError("a slurm.jwks needs auth/slurm")
        if auth_key is not None and jwks:
            raise ValueError("an auth key is slurm.key, not a slurm.jwks")
        self.release = release
        self.auth = auth
        self.jwks = jwks
        self.auth_key = auth_key
        """munge.key or slurm.key: a fresh one unless given (clusters whose nodes trust each other)."""
        self.container = container
        self._container = CONTAINERS[release][container] if container else None
        chroot = chroot or RELEASES[release]
        self.chroot = CHROOTS / chroot
        flags = auth[0] + ("j" if jwks else "") + (self._container.letter if self._container else "")
        self.name = f"sat-{chroot}{flags}-{os.getpid()}-{next(_serial)}"
        self.state = STATE / self.name
        self.root = self.state / "root"
        """The cluster's own root: the overlay of the chroot."""
        self.netns = self.name
        self.ns = NetNs(self.name)
        self.cgroups = OwnCgroups(self.name, self.state / "cgroup.ns")
        self.uts = self.state / "uts.ns"
        """A UTS namespace whose hostname is the NodeName, pinned on this file."""
        self.mnt = self.state / "mnt.ns"
        """A mount namespace whose root is `root`, pinned on this file."""
        self.users = list(users)
        self.start_timeout = start_timeout
        self.node_name = NODE
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.jobs: list[int] = []
        self.syslog = DevLogCatcher(self.root / "dev/log")
        self._lock: IO[bytes] | None = None
        self._state_mounted = False

    def __repr__(self) -> str:
        extras = (" jwks" if self.jwks else "") + (f" {self.container}" if self.container else "")
        return f"<ChrootCluster {self.release} auth/{self.auth}{extras} {self.name}>"

    @property
    def conf(self) -> Path:
        """slurm.conf as the host sees it."""
        return self.host_path(CONF)

    @property
    def munge_socket(self) -> Path:
        """The private munged's socket as the host sees it (auth/munge only)."""
        return self.host_path(MUNGE_SOCKET)

    @property
    def key_path(self) -> Path:
        """slurm.key as the host sees it (auth/slurm only)."""
        return self.host_path("/etc/slurm/slurm.key")

    @property
    def jwks_path(self) -> Path:
        """slurm.jwks as the host sees it (there only when jwks=True)."""
        return self.host_path("/etc/slurm/slurm.jwks")

    @property
    def sack_socket(self) -> Path:
        """slurmd's sack socket (the chroot's /run/slurm/sack.socket) as the host sees it."""
        return self.host_path(SACK_SOCKET)

    def host_path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")

    # -- lifecycle ---------------------------------------------------------------------------------------

    def _start(self) -> None:
        self._enter()
        self._prepare()
        self.syslog.start()
        if self.auth == "munge":
            self._start_munged()
        self._spawn("slurmctld", ["/usr/sbin/slurmctld", "-D", "-c", "-i"])
        self._wait(lambda: "is UP" in self.run(["scontrol", "ping"], check=False).stdout, "slurmctld up")
        self._spawn("slurmd", ["/usr/sbin/slurmd", "-D", "-N", NODE])
        self._spawn("sshd", ["/usr/sbin/sshd", "-D", "-f", files.SSHD_CONFIG, "-E", "/var/log/sshd.log"])
        self._wait(self._node_idle, f"{NODE} idle")
        self._wait(lambda: f"port {SSHD_PORT}" in self._read("/var/log/sshd.log"), "sshd listening")

    def _start_munged(self) -> None:
        """The chroot's munged, as the munge user, in the foreground (-F) like every daemon here."""
        self._spawn("munged", [*_drop_to("munge"), "/usr/sbin/munged", "-F", "--force"])
        self._wait(self.munge_socket.exists, "munged socket")

    def _enter(self) -> None:
        """The overlay, namespaces, cgroups and mounts: a node of our own, nothing started in it yet."""
        self._lock_chroot()
        self._mount_root()
        self.ns.create()
        pin_uts(self.uts, NODE)
        self.cgroups.create()
        self._mount_inside()
        pin_root(self.mnt, self.root)

    def _lock_chroot(self) -> None:
        """A shared lock on the chroot's .lock: scripts/build-chroots replaces a chroot only under an
        exclusive one. Retried when the file was replaced while we waited."""
        deadline = time.monotonic() + self.start_timeout
        while True:
            lock = open(self.chroot / ".lock", "ab")  # noqa: SIM115 - held until stop()
            try:
                while True:
                    try:
                        fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"the Slurm {self.release} chroot is being rebuilt or used by an "
                                               "older harness (exclusive lock on .lock)") from None
                        time.sleep(0.1)
                if os.fstat(lock.fileno()).st_ino == os.stat(self.chroot / ".lock").st_ino:
                    self._lock = lock
                    return
            except BaseException:
                lock.close()
                raise
            lock.close()

    def _mount_root(self) -> None:
        self.state.mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755,size=512m", self.name, str(self.state)],
                       check=True)
        subprocess.run(["mount", "--make-private", str(self.state)], check=True)  # for pin_root's pin
        self._state_mounted = True
        for sub in ("upper", "work", "root"):
            (self.state / sub).mkdir()
        layers = f"lowerdir={self.chroot},upperdir={self.state / 'upper'},workdir={self.state / 'work'}"
        subprocess.run(["mount", "-t", "overlay", "-o", layers, "overlay", str(self.root)], check=True)

    def _mount_inside(self) -> None:
        """proc; sysfs of our network namespace; the two cgroup hierarchies from inside our cgroup namespace
        (their root is then our directories); a private devpts and shm."""
        mounts: list[tuple[str, list[str], list[str]]] = [
            ("proc", ["-t", "proc", "proc"], []),
            ("sys", ["-t", "sysfs", "sysfs"], nsenter_argv([], net=self.ns.path)),
            ("sys/fs/cgroup", ["-t", "tmpfs", "-o", "mode=0755,size=1m", "cgroup_root"], []),
            *((f"sys/fs/cgroup/{d.parent.name}", ["-t", "cgroup", "-o", d.parent.name, "cgroup"],
               nsenter_argv([], cgroup=self.cgroups.ns_file)) for d in self.cgroups.dirs),
            ("dev/pts", ["-t", "devpts", "-o", "newinstance,ptmxmode=0666,mode=620", "devpts"], []),
            ("dev/shm", ["-t", "tmpfs", "-o", "mode=1777,size=64m", "shm"], []),
        ]
        for target, argv, prefix in mounts:
            path = self.host_path(target)
            path.mkdir(parents=True, exist_ok=True)
            subprocess.run([*prefix, "mount", *argv, str(path)], check=True)

    def _users_and_hosts(self) -> list[pwd.struct_passwd]:
        """No state of an earlier run; our users with the host's ids; /etc/hosts naming the node."""
        files.clear_state(self.root)
        entries = [ensure_user(user) for user in self.users]
        for entry in entries:
            files.add_user(self.root, entry)
        self.host_path("/etc/hosts").write_text(f"127.0.0.1 localhost {NODE}\n")
        return entries

    def _prepare(self) -> None:
        """Users with the host's ids, this cluster's key, config, sshd files, the daemons' dirs."""
        root = self.root
        entries = self._users_and_hosts()
        plugin = self._container
        extra = [plugin.conf_line] if plugin else []
        self.conf.write_text(files.slurm_conf(f"peer{RELEASES[self.release]}", self.auth, extra))
        self.host_path("/etc/slurm/cgroup.conf").write_text(files.CGROUP_CONF)
        if plugin:
            self.host_path(f"/etc/slurm/{plugin.file}").write_text(plugin.text)
        if self.auth == "munge":
            files.munge_key(root, self.auth_key)
        else:
            files.slurm_key(root, self.auth_key)
            if self.jwks:
                files.slurm_jwks(root)
        files.sshd_files(root, entries)
        slurm = files.ids_of(root, "slurm")
        for sub, owner in (("run/slurm", None), ("var/log/slurm", slurm), ("var/lib/slurm/slurmctld", slurm),
                           (SPOOL.lstrip("/"), None)):
            self.host_path(sub).mkdir(parents=True, exist_ok=True)
            if owner:
                os.chown(self.host_path(sub), *owner)
        self.host_path(JOB_OUTPUT).mkdir(parents=True, exist_ok=True)
        os.chmod(self.host_path(JOB_OUTPUT), 0o1777)

    def inside(self, argv: Sequence[str], user: str | None = None) -> list[str]:
        """argv run in our cgroups, the namespaces and the chroot, with a clean environment and SLURM_CONF."""
        return [*self.node_prefix(), *self.chrooted(argv, user)]

    def chrooted(self, argv: Sequence[str], user: str | None = None) -> list[str]:
        """argv run on our root (our mount namespace) as inside() runs it, but in the caller's other
        namespaces and cgroups (e.g. a process of another node's job using the chroot's ssh)."""
        drop = _drop_to(user)
        home = "/root" if user in (None, "root") else f"/home/{user}"
        return ["nsenter", f"--mount={self.mnt}", "--", *drop,
                "/usr/bin/env", "-i", _PATH, "LANG=C.UTF-8", f"HOME={home}", f"SLURM_CONF={CONF}", *argv]

    def node_prefix(self) -> list[str]:
        """argv prefix: the command starts in our cgroups and our network, UTS and cgroup namespaces (the
        node's, as its daemons have them) but on the host's filesystem. It execs in turn: the pid is the
        command's own."""
        return [*self.cgroups.enter_prefix(),
                *nsenter_argv([], net=self.ns.path, uts=self.uts, cgroup=self.cgroups.ns_file)]

    def host_conf(self) -> Path:
        """A copy of slurm.conf for a host program in node_prefix(): SlurmdSpoolDir and munged's socket
        (AuthInfo socket=) at their host paths, since slurm.conf's paths are the chroot's. Written beside
        slurm.conf, where auth/slurm's slurm.key is looked for."""
        path = self.host_path("/etc/slurm/slurm-host.conf")
        text = re.sub(r"(?m)^SlurmdSpoolDir=.*$", f"SlurmdSpoolDir={self.host_path(SPOOL)}", self.conf.read_text())
        if self.auth == "munge":
            text += f"AuthInfo=socket={self.munge_socket}\n"
        path.write_text(text)
        return path

    def host_argv(self, argv: Sequence[str], user: str | None = None) -> list[str]:
        """A host program (e.g. our slurm-callerid) run inside the namespace, with SLURM_CONF = our conf and,
        for auth/slurm, SLURM_SACK_SOCKET = slurmd's sack socket (where 25.05+ clients look first)."""
        drop = _drop_to(user)
        sack = [f"SLURM_SACK_SOCKET={self.sack_socket}"] if self.auth == "slurm" else []
        return ["ip", "netns", "exec", self.netns, *drop, "/usr/bin/env", f"SLURM_CONF={self.conf}", *sack, *argv]

    def _spawn(self, name: str, argv: Sequence[str]) -> None:
        with open(self.host_path(f"/var/log/{name}.out"), "wb") as out:
            # sh, nsenter, chroot and env exec in turn: the pid is the daemon's own.
            self.procs[name] = subprocess.Popen(self.inside(argv), stdin=subprocess.DEVNULL, stdout=out,
                                                stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        try:
            if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
                self._cancel_everything()
        finally:
            # The sshds first (the cluster's and any started beside it), then the daemons.
            sshds = [name for name in self.procs if name not in DAEMONS]
            for name in [*sshds, *DAEMONS]:
                if name in self.procs:
                    stop_process(self.procs.pop(name))
            self._stop_leftovers()
            self.syslog.stop()
            self._remove()

    def stop_slurmd(self) -> None:
        """Stop the real slurmd, leaving its port and SlurmdSpoolDir to a stand-in (the controller, munged
        and sshd keep running)."""
        if "slurmd" in self.procs:
            stop_process(self.procs.pop("slurmd"))

    def _remove(self) -> None:
        unmount_below(self.root)
        # The mount namespace's copies of the cgroup mounts would keep our cgroup directories busy.
        unmount_below(self.mnt)
        problems = self.cgroups.remove()
        self.ns.remove()
        if self._state_mounted:
            unmount_below(self.state)
            self._state_mounted = False
        with contextlib.suppress(FileNotFoundError):
            self.state.rmdir()
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        if problems:
            raise RuntimeError(f"{self}: could not remove " + "; ".join(problems))

    def _our_pids(self) -> set[int]:
        """Processes in our cgroups, or in our root and network namespace (slurmstepds, job tasks, sshd
        sessions: double-forked, not our children)."""
        found = self.cgroups.pids()
        if not (self.ns.path.exists() and self.mnt.exists()):
            return found
        ino = self.ns.path.stat().st_ino
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if self.runs_inside(int(proc.name)) and (proc / "ns/net").stat().st_ino == ino:
                    found.add(int(proc.name))
        return found

    def runs_inside(self, pid: int) -> bool:
        """Whether the process runs on our root: in our mount namespace (a job's, unshared from it, is not)."""
        try:
            return os.stat(f"/proc/{pid}/ns/mnt").st_ino == self.mnt.stat().st_ino
        except OSError:
            return False

    def _stop_leftovers(self) -> None:
        self.cgroups.thaw()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self._our_pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            with contextlib.suppress(TimeoutError):
                wait_for(lambda: not self._our_pids(), 5, "leftover processes to end")

    def _cancel_everything(self) -> None:
        listed = self.run(["squeue", "-h", "-o", "%i"], check=False).stdout.split()
        if listed:
            self.run(["scancel", *listed], check=False)
        spool = self.host_path(SPOOL)
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: not any(spool.glob(f"{NODE}_*.*")), 20, "job stepds to end")

    # -- clients -----------------------------------------------------------------------------------------

    def run(self, argv: Sequence[str], user: str | None = None, check: bool = True,
            timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """A command of the chroot, in the namespaces, as root or `user`, with SLURM_CONF set."""
        return self._run(self.inside(argv, user), check, timeout)

    def run_host(self, argv: Sequence[str], user: str | None = None, check: bool = False,
                 timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """A host program in the namespace (SLURM_CONF = the chroot's slurm.conf, as the host sees it)."""
        return self._run(self.host_argv(argv, user), check, timeout)

    @staticmethod
    def _run(cmd: list[str], check: bool, timeout: float) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                              check=False)
        if check and proc.returncode:
            raise RuntimeError(f"{shlex.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def submit(self, user: str, wrap: str) -> int:
        """sbatch --wrap as `user` (the script runs under /bin/sh); the job id."""
        out = self.run(["sbatch", "--parsable", "--chdir=/tmp", f"--output={JOB_OUTPUT}/job-%j.out", "--wrap", wrap],
                       user=user)
        job_id = int(out.stdout.strip().split(";")[0])
        self.jobs.append(job_id)
        return job_id

    def job_state(self, job_id: int) -> str:
        return self.run(["squeue", "-h", "--states=all", "-j", str(job_id), "-o", "%T"], check=False).stdout.strip()

    def wait_running(self, job_id: int, timeout: float = 30.0) -> None:
        """Until the job runs and its extern step's stepd and cgroup are there."""
        def ready() -> bool:
            return (self.job_state(job_id) == "RUNNING" and self.extern_socket(job_id).exists()
                    and bool(self._extern_dirs(job_id)))
        self._wait(ready, f"job {job_id} running", timeout)

    def wait_output(self, job_id: int, text: str, timeout: float = 30.0) -> None:
        """Until the job's output (submit()'s) has `text`."""
        self._wait(lambda: text in self._read(f"{JOB_OUTPUT}/job-{job_id}.out"), f"job {job_id} printing {text!r}",
                   timeout)

    @contextlib.contextmanager
    def held_connection(self, user: str, timeout: float = 30.0) -> Iterator[HeldConnection]:
        """A batch job of `user` holding a TCP connection (bash's /dev/tcp) to a listener of ours in the
        namespace."""
        with contextlib.closing(self.ns.open_socket()) as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(4)
            listener.settimeout(timeout)
            port = int(listener.getsockname()[1])
            script = shlex.quote(f"exec 3<>/dev/tcp/127.0.0.1/{port}; exec sleep 3600")
            job_id = self.submit(user, f"exec bash -c {script}")
            try:
                try:
                    conn, peer = listener.accept()
                except TimeoutError:
                    raise RuntimeError(f"job {job_id} ({self.job_state(job_id)}) did not connect\n"
                                       f"{self.log_tails()}") from None
                with conn:
                    yield HeldConnection(job_id, ("127.0.0.1", int(peer[1])), ("127.0.0.1", port))
            finally:
                self.run(["scancel", str(job_id)], check=False)

    def extern_socket(self, job_id: int) -> Path:
        """The job's extern slurmstepd socket, as the host sees it."""
        return self.host_path(f"{SPOOL}/{NODE}_{job_id}.{EXTERN_STEP}")

    # -- cgroups, sshd, the wire -------------------------------------------------------------------------

    def cgroup_of(self, pid: int, controller: str = "freezer") -> str | None:
        """The pid's cgroup as the cluster sees it (e.g. /slurm_node1/uid_1001/job_3/step_extern); None for a
        process outside our cgroups."""
        return self.cgroups.relative(pid, controller)

    def extern_cgroup(self, job_id: int) -> str:
        """The job's extern step cgroup (freezer) as the cluster sees it."""
        found = self._extern_dirs(job_id)
        if not found:
            raise LookupError(f"job {job_id} has no step_extern cgroup under {self.cgroups.host_dir('/')}")
        return "/" + str(found[0].relative_to(self.cgroups.host_dir("/")))

    def _extern_dirs(self, job_id: int) -> list[Path]:
        return sorted(self.cgroups.host_dir("/").glob(f"slurm_{NODE}/uid_*/job_{job_id}/step_extern"))

    def in_extern_step(self, pid: int, job_id: int) -> bool:
        where, extern = self.cgroup_of(pid), self.extern_cgroup(job_id)
        return where is not None and (where == extern or where.startswith(extern + "/"))

    def ssh_argv(self, user: str, command: str, port: int = SSHD_PORT, host: str = "127.0.0.1") -> list[str]:
        """ssh (the chroot's) logging `user` in to our sshd (or one at `port`, at `host`: an address of the
        namespace); to be run inside (or chrooted() from a namespace linked to ours), as `user`."""
        return ["ssh", "-F", "/dev/null", "-i", f"/home/{user}/.ssh/id_ed25519", "-p", str(port),
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "ConnectTimeout=10", "-o", "LogLevel=INFO", "-T", f"{user}@{host}", command]

    def node_sshd(self, account_lines: Sequence[str], listen: Sequence[str] = ("127.0.0.1",), **kwargs: Any) -> Sshd:
        """A started sshd of the host (tests/support/sshd.py) in node_prefix(), on the namespace's 127.0.0.1
        (or `listen`, addresses of the namespace), that our users log in to with their chroot keys: run
        ssh_argv(user, command, sshd.port) inside."""
        sshd = Sshd(account_lines, prefix=self.node_prefix(), listen=listen, netns=str(self.ns.path),
                    **kwargs).start()
        try:
            self.authorize(sshd.authorized_keys)
        except BaseException:
            sshd.stop()
            raise
        return sshd

    @contextlib.contextmanager
    def sshd_beside(self, service: str, account_lines: Sequence[str], port: int) -> Iterator[int]:
        """`with cluster.sshd_beside(service, lines, port):` another sshd of the chroot's on 127.0.0.1:`port`,
        with the PAM service `service` whose account stack is `account_lines` ("required MODULE ARGS" each);
        the same host key and users' keys as the cluster's sshd, which stays. Log in with
        ssh_argv(user, command, port)."""
        if service in self.procs or not re.fullmatch(r"[a-z][a-z0-9-]*", service):
            raise ValueError(f"{service!r}: not a new PAM service name")
        pam = self.host_path(f"/etc/pam.d/{service}")
        pam.write_text(files.pam_service(account_lines))
        config = f"/etc/ssh/{service}_config"
        self.host_path(config).write_text(files.sshd_config(port, service))
        log = f"/var/log/{service}.log"
        self.host_path(log).unlink(missing_ok=True)  # an earlier one's "listening" line
        self._spawn(service, ["/usr/sbin/sshd", "-D", "-f", config, "-E", log])
        try:
            self._wait(lambda: f"port {port}" in self._read(log), f"{service} listening")
            yield port
        finally:
            if service in self.procs:
                stop_process(self.procs.pop(service))
            pam.unlink()

    def install_project(self) -> str:
        """The project's packages (slurmproto, adopt: the ones this process imports) copied to PROJECT_DIR in
        the overlay, root's and read-only to others, for the chroot's own python3; the in-process module's
        file there, as the chroot sees it."""
        import adopt
        import slurmproto

        target = self.host_path(PROJECT_DIR)
        for package in (slurmproto, adopt):
            source = Path(package.__file__ or "").parent
            shutil.copytree(source, target / source.name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        # Compiled by the chroot's python3, as an installation is (libpam-python's interpreter writes none).
        self.run(["python3", "-I", "-m", "compileall", "-q", PROJECT_DIR])
        for path in (target, *target.rglob("*")):
            os.chown(path, 0, 0, follow_symlinks=False)
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        return f"{PROJECT_DIR}/adopt/pam_module.py"

    def authorize(self, keys: Path) -> None:
        """Let our users in with their chroot keys too: `keys` is an sshd's directory of authorized_keys
        files, one per user (AuthorizedKeysFile DIR/%u), which sshd reads only when no one else may write it."""
        for user in self.users:
            path = keys / user
            with open(path, "a") as out:
                out.write(self.host_path(f"/home/{user}/.ssh/id_ed25519.pub").read_text())
            path.chmod(0o644)

    def capture(self, port: int = SLURMD_PORT) -> PacketCapture:
        """`with cluster.capture() as cap: ...`: the TCP exchanges with `port` inside the namespace."""
        return PacketCapture(self.ns, port)

    def exchange(self, data: bytes, port: int = SLURMD_PORT, timeout: float = 10.0) -> bytes:
        """Send `data` to 127.0.0.1:`port` inside the namespace; everything the server sends until it closes.

        Our side stays open for writing: slurmd takes a half-closed connection for a client that gave up.
        """
        with contextlib.closing(self.ns.connect(("127.0.0.1", port), timeout)) as sock:
            sock.sendall(data)
            answer = bytearray()
            while chunk := sock.recv(65536):
                answer += chunk
        return bytes(answer)

    # -- diagnostics -------------------------------------------------------------------------------------

    def _read(self, inside: str) -> str:
        try:
            return self.host_path(inside).read_text(errors="replace")
        except OSError:
            return ""

    LOGS = ("/var/log/slurm/slurmctld.log", "/var/log/slurm/slurmd.log", "/var/log/slurmctld.out",
            "/var/log/slurmd.out", "/var/log/munged.out", "/var/log/sshd.log")
    """The daemons' logs, inside, that log_tails() shows."""

    def log_tails(self, lines: int = 30) -> str:
        parts = []
        beside = [f"/var/log/{name}.log" for name in self.procs if name not in (*DAEMONS, "sshd")]
        for name in (*self.LOGS, *beside):
            text = self._read(name).splitlines()[-lines:]
            if text:
                parts.append(f"--- {name}:\n" + "\n".join(text))
        logged = [str(r) for r in self.syslog.messages()][-lines:]
        if logged:
            parts.append("--- syslog:\n" + "\n".join(logged))
        return "\n".join(parts)

    def _node_idle(self) -> bool:
        state = self.run(["sinfo", "-h", "-N", "-n", NODE, "-o", "%T"], check=False).stdout.strip()
        return state == "idle"

    def _wait(self, check: Callable[[], bool], what: str, timeout: float | None = None) -> None:
        try:
            wait_for(check, timeout or self.start_timeout, f"Slurm {self.release} auth/{self.auth}: {what}")
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n{self.log_tails()}") from None
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"Slurm {self.release}: {name} exited {proc.returncode}\n{self.log_tails()}")
