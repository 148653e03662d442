"""A real Slurm 24.11 or 26.05 single-node cluster from Debian's packages, in a chroot + network namespace.

The chroots are built by scripts/build-chroots (under CHROOTS). Each cluster gets a network namespace of
its own holding only `lo` (127.0.0.1/8 plus 127.0.1.1/32: glibc's AI_ADDRCONFIG ignores 127.0.0.1 alone,
and without a second address slurmctld/slurmd cannot bind), so nothing it sends can leave it. Inside run a
private munged (the chroot's own key), slurmctld and slurmd; every Slurm command gets SLURM_CONF. Process
tracking is proctrack/linuxproc (no cgroups: the host's own Slurm keeps /sys/fs/cgroup to itself).
Everything started is stopped by the pid we started; the namespace and the mounts are removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shlex
import signal
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from fake_slurmd.processes import stop_process
from tests.support.lifecycle import Daemons
from tests.support.procs import ensure_user, wait_for

CHROOTS = Path(os.environ.get("SAT_CHROOTS", "/var/lib/slurm-adopt-toolkit/chroots"))
RELEASES = {"24.11": "2411", "26.05": "2605"}
"""Release name -> chroot directory name (scripts/build-chroots)."""
SLURMD_PORT = 6818
SLURMCTLD_PORT = 6817
NODE = "node1"
CONF = "/etc/slurm/slurm.conf"
MUNGE_SOCKET = "/run/munge/munge.socket.2"
SPOOL = "/var/lib/slurm/slurmd"
EXTERN_STEP = 0xFFFFFFFC
_PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"


def chroot_dir(release: str) -> Path:
    return CHROOTS / RELEASES[release]


def missing_reason(release: str) -> str | None:
    """Why this release's cluster cannot start here (None: it can)."""
    if os.geteuid() != 0:
        return f"the Slurm {release} chroot cluster needs root (CI runs as root)"
    if not (chroot_dir(release) / ".complete").exists():
        return f"no Slurm {release} chroot at {chroot_dir(release)} (run scripts/build-chroots)"
    return None


@dataclass(frozen=True)
class HeldConnection:
    """A TCP connection a job holds inside the namespace: its end and the listener's."""

    job_id: int
    client: tuple[str, int]
    server: tuple[str, int]


def _config(release: str) -> str:
    return "\n".join([
        f"ClusterName=peer{RELEASES[release]}",
        "SlurmctldHost=localhost(127.0.0.1)",
        f"SlurmctldPort={SLURMCTLD_PORT}",
        f"SlurmdPort={SLURMD_PORT}",
        "SlurmUser=slurm",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        "StateSaveLocation=/var/lib/slurm/slurmctld",
        f"SlurmdSpoolDir={SPOOL}",
        "SlurmctldPidFile=/run/slurm/slurmctld.pid",
        "SlurmdPidFile=/run/slurm/slurmd.pid",
        "SlurmctldLogFile=/var/log/slurm/slurmctld.log",
        "SlurmdLogFile=/var/log/slurm/slurmd.log",
        "SlurmctldDebug=debug",
        "SlurmdDebug=debug",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "PrologFlags=contain",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "SchedulerParameters=batch_sched_delay=0",
        "SlurmdParameters=config_overrides",
        "ReturnToService=2",
        "MpiDefault=none",
        "MailProg=/bin/true",
        "KillWait=2",
        f"NodeName={NODE} NodeAddr=127.0.0.1 NodeHostname={NODE} CPUs=2 State=UNKNOWN",
        f"PartitionName=debug Nodes={NODE} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:8",
    ]) + "\n"


class ChrootCluster(Daemons):
    """`with ChrootCluster("24.11") as c: c.run(["sinfo"])`: one release's cluster, in its own netns."""

    def __init__(self, release: str, users: Sequence[str] = ("alice", "bob"), start_timeout: float = 60.0) -> None:
        self.release = release
        self.root = chroot_dir(release)
        self.netns = f"sat-{RELEASES[release]}-{os.getpid()}"
        self.users = list(users)
        self.start_timeout = start_timeout
        self.node_name = NODE
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.jobs: list[int] = []
        self._lock: IO[bytes] | None = None
        self._mounted: list[Path] = []
        self._netns_made = False

    @property
    def conf(self) -> Path:
        """slurm.conf as the host sees it."""
        return self.root / CONF.lstrip("/")

    @property
    def munge_socket(self) -> Path:
        """The private munged's socket as the host sees it."""
        return self.root / MUNGE_SOCKET.lstrip("/")

    def host_path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")

    # -- lifecycle ---------------------------------------------------------------------------------------

    def _start(self) -> None:
        # One cluster per chroot at a time (its state, spool and munged socket live in the chroot).
        self._lock = open(self.root / ".lock", "wb")  # noqa: SIM115 - held until stop()
        wait_for(self._locked, self.start_timeout, f"the Slurm {self.release} chroot, in use by another test run")
        self._make_netns()
        self._mount()
        self._prepare()
        self._spawn("munged", ["setpriv", "--reuid=munge", "--regid=munge", "--init-groups",
                               "/usr/sbin/munged", "-F", "--force"])
        self._wait(self.munge_socket.exists, "munged socket")
        self._spawn("slurmctld", ["/usr/sbin/slurmctld", "-D", "-c", "-i"])
        self._wait(lambda: "is UP" in self.run(["scontrol", "ping"], check=False).stdout, "slurmctld up")
        self._spawn("slurmd", ["/usr/sbin/slurmd", "-D", "-N", NODE])
        self._wait(self._node_idle, f"{NODE} idle")

    def _locked(self) -> bool:
        assert self._lock is not None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _make_netns(self) -> None:
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        self._netns_made = True
        for args in (["link", "set", "lo", "up"], ["addr", "add", "127.0.1.1/32", "dev", "lo"]):
            subprocess.run(["ip", "-n", self.netns, *args], check=True)

    def _mount(self) -> None:
        for target, argv in (("proc", ["-t", "proc", "proc"]), ("dev/shm", ["-t", "tmpfs", "-o", "mode=1777", "shm"]),
                             ("dev/pts", ["-t", "devpts", "-o", "newinstance,ptmxmode=0666", "devpts"])):
            path = self.host_path(target)
            path.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", *argv, str(path)], check=True)
            self._mounted.append(path)

    def _chroot(self, argv: Sequence[str]) -> list[str]:
        return ["chroot", str(self.root), *argv]

    def _prepare(self) -> None:
        """Users with the host's uids, munge key and dirs, a fresh slurmctld state and spool, the config."""
        for user in self.users:
            self._chroot_user(ensure_user(user))
        if not self.host_path("/etc/munge/munge.key").exists():
            subprocess.run(self._chroot(["mungekey", "-c", "-k", "/etc/munge/munge.key"]), check=True)
        self.host_path("/etc/hosts").write_text(f"127.0.0.1 localhost {NODE}\n")
        self.conf.write_text(_config(self.release))
        self.host_path("/etc/slurm/cgroup.conf").write_text("CgroupPlugin=disabled\n")
        script = (f"rm -rf /var/lib/slurm/slurmctld {SPOOL} /run/munge/*; "
                  f"mkdir -p /run/munge /run/slurm /var/log/slurm /var/lib/slurm/slurmctld {SPOOL}; "
                  "chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge; "
                  "chmod 700 /etc/munge; chmod 600 /etc/munge/munge.key; chmod 755 /run/munge; "
                  "chown slurm:slurm /var/lib/slurm/slurmctld /var/log/slurm; : > /var/log/slurm/slurmd.log; "
                  ": > /var/log/slurm/slurmctld.log; chown slurm /var/log/slurm/slurmctld.log")
        subprocess.run(self._chroot(["sh", "-c", script]), check=True)

    def _chroot_user(self, entry: pwd.struct_passwd) -> None:
        """The host's user in the chroot, with the host's uid and gid (our host-side clients run as it)."""
        name, wanted = entry.pw_name, f"{entry.pw_uid}:{entry.pw_gid}"
        found = subprocess.run(self._chroot(["id", "-u", name]), capture_output=True, text=True).stdout.strip()
        group = subprocess.run(self._chroot(["id", "-g", name]), capture_output=True, text=True).stdout.strip()
        if f"{found}:{group}" == wanted:
            return
        if found:  # a chroot built on a machine where the user had other ids
            subprocess.run(self._chroot(["userdel", "-r", name]), capture_output=True, check=False)
            subprocess.run(self._chroot(["groupdel", name]), capture_output=True, check=False)
        subprocess.run(self._chroot(["groupadd", "-o", "-g", str(entry.pw_gid), name]), check=True)
        subprocess.run(self._chroot(["useradd", "-o", "-m", "-u", str(entry.pw_uid), "-g", str(entry.pw_gid),
                                     "-s", "/bin/bash", name]), check=True)

    def inside(self, argv: Sequence[str], user: str | None = None) -> list[str]:
        """argv run in the namespace and the chroot, with a clean environment and SLURM_CONF."""
        drop = [] if user in (None, "root") else ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"]
        return ["ip", "netns", "exec", self.netns, "chroot", str(self.root), *drop, "/usr/bin/env", "-i", _PATH,
                "LANG=C.UTF-8", f"SLURM_CONF={CONF}", *argv]

    def in_netns(self, argv: Sequence[str], user: str | None = None) -> list[str]:
        """A host program (e.g. our slurm-callerid) run inside the namespace, with SLURM_CONF = our conf."""
        drop = [] if user in (None, "root") else ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"]
        return ["ip", "netns", "exec", self.netns, *drop, "/usr/bin/env", f"SLURM_CONF={self.conf}", *argv]

    def _spawn(self, name: str, argv: Sequence[str]) -> None:
        with open(self.root / f"var/log/{name}.out", "wb") as out:
            # `ip netns exec`, chroot and env exec in turn: the pid is the daemon's own.
            self.procs[name] = subprocess.Popen(self.inside(argv), stdin=subprocess.DEVNULL, stdout=out,
                                                stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        try:
            if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
                self._cancel_everything()
        finally:
            for name in ("slurmd", "slurmctld", "munged"):
                if name in self.procs:
                    stop_process(self.procs.pop(name))
            self._stop_leftovers()
            for path in reversed(self._mounted):
                subprocess.run(["umount", "-l", str(path)], check=False)
            self._mounted.clear()
            if self._netns_made:
                subprocess.run(["ip", "netns", "del", self.netns], check=False)
                self._netns_made = False
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    def _our_pids(self) -> list[int]:
        """Processes in our namespace and chroot (slurmstepds, job tasks: double-forked by slurmd)."""
        ns = Path(f"/run/netns/{self.netns}")
        if not ns.exists():
            return []
        ino = ns.stat().st_ino
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if os.readlink(proc / "root") == str(self.root) and (proc / "ns/net").stat().st_ino == ino:
                    found.append(int(proc.name))
        return found

    def _stop_leftovers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self._our_pids()
            for pid in pids:
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
        """A command of the chroot, in the namespace, as root or `user`, with SLURM_CONF set."""
        return self._run(self.inside(argv, user), check, timeout)

    def run_host(self, argv: Sequence[str], user: str | None = None, check: bool = False,
                 timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """A host program in the namespace (SLURM_CONF = the chroot's slurm.conf, as the host sees it)."""
        return self._run(self.in_netns(argv, user), check, timeout)

    @staticmethod
    def _run(cmd: list[str], check: bool, timeout: float) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                              check=False)
        if check and proc.returncode:
            raise RuntimeError(f"{shlex.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def submit(self, user: str, wrap: str) -> int:
        """sbatch --wrap as `user` (the script runs under /bin/sh); the job id."""
        out = self.run(["sbatch", "--parsable", "--chdir=/tmp", "--output=/tmp/job-%j.out", "--wrap", wrap],
                       user=user)
        job_id = int(out.stdout.strip().split(";")[0])
        self.jobs.append(job_id)
        return job_id

    def job_state(self, job_id: int) -> str:
        return self.run(["squeue", "-h", "--states=all", "-j", str(job_id), "-o", "%T"], check=False).stdout.strip()

    @contextlib.contextmanager
    def held_connection(self, user: str, timeout: float = 30.0) -> Iterator[HeldConnection]:
        """A batch job of `user` holding a TCP connection to a listener in the namespace (bash's /dev/tcp:
        the chroots have no Python). The listener is the host's python3, run in the namespace."""
        code = (f"import socket,sys; s=socket.create_server(('127.0.0.1',0)); s.settimeout({timeout!r}); "
                "print(s.getsockname()[1], flush=True); c,a=s.accept(); print(a[1], flush=True); "
                "sys.stdin.read()")
        listener = subprocess.Popen(["ip", "netns", "exec", self.netns, "/usr/bin/python3", "-c", code],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert listener.stdout is not None and listener.stdin is not None
        job_id = None
        try:
            port = int(listener.stdout.readline())
            script = shlex.quote(f"exec 3<>/dev/tcp/127.0.0.1/{port}; exec sleep 3600")
            job_id = self.submit(user, f"exec bash -c {script}")
            answer = listener.stdout.readline().strip()  # empty once the listener timed out
            if not answer:
                raise RuntimeError(f"job {job_id} ({self.job_state(job_id)}) did not connect\n{self.log_tails()}")
            yield HeldConnection(job_id, ("127.0.0.1", int(answer)), ("127.0.0.1", port))
        finally:
            if job_id is not None:
                self.run(["scancel", str(job_id)], check=False)
            stop_process(listener, ask=listener.stdin.close)

    def extern_socket(self, job_id: int) -> Path:
        """The job's extern slurmstepd socket, as the host sees it."""
        return self.host_path(f"{SPOOL}/{NODE}_{job_id}.{EXTERN_STEP}")

    def log_tails(self, lines: int = 30) -> str:
        parts = []
        for name in ("var/log/slurm/slurmctld.log", "var/log/slurm/slurmd.log", "var/log/slurmctld.out",
                     "var/log/slurmd.out", "var/log/munged.out"):
            with contextlib.suppress(OSError):
                text = (self.root / name).read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {name}:\n" + "\n".join(text))
        return "\n".join(parts)

    def _node_idle(self) -> bool:
        state = self.run(["sinfo", "-h", "-N", "-n", NODE, "-o", "%T"], check=False).stdout.strip()
        return state == "idle"

    def _wait(self, check: Callable[[], bool], what: str) -> None:
        try:
            wait_for(check, self.start_timeout, f"Slurm {self.release}: {what}")
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n{self.log_tails()}") from None
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"Slurm {self.release}: {name} exited {proc.returncode}\n{self.log_tails()}")
