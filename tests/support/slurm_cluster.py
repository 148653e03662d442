"""A real single-node Slurm cluster on loopback: slurmctld + slurmd with all state in a temp dir.

Every Slurm command runs with SLURM_CONF pointing at our own slurm.conf: without a config Slurm would
look for one through DNS SRV queries, which must never leave this machine.
"""

from __future__ import annotations

import contextlib
import os
import random
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from fake_slurmd.processes import stop_process
from tests.support.lifecycle import Daemons
from tests.support.munged import Munged
from tests.support.procs import ensure_user, wait_for

SLURMCTLD = "/usr/sbin/slurmctld"
SLURMD = "/usr/sbin/slurmd"
PROGRAMS = (SLURMCTLD, SLURMD, "scontrol", "sbatch", "squeue", "sinfo", "scancel", "runuser")

# The extern step's id (SLURM_EXTERN_CONT); with PrologFlags=contain its stepd exists from allocation on.
EXTERN_STEP = 0xFFFFFFFC
# Environment variables that would change what the Slurm clients print or submit.
CLIENT_ENV_PREFIXES = ("SLURM_", "SBATCH_", "SQUEUE_", "SINFO_", "SALLOC_", "SRUN_", "SCANCEL_", "SCONTROL_")
_ENDED_STATES = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
                 "PREEMPTED", "TIMEOUT", "SPECIAL_EXIT", "REVOKED"}


JOB_CONF = (
    # Jobs in cgroups, their extern step started at allocation (what pam_slurm_adopt adopts into).
    "ProctrackType=proctrack/cgroup",
    "TaskPlugin=task/cgroup",
    "PrologFlags=contain",
    "JobAcctGatherType=jobacct_gather/none",
    "AccountingStorageType=accounting_storage/none",
    "JobCompType=jobcomp/none",
    "SelectType=select/cons_tres",
    # Cores only: memory as a consumable would let one job take the whole node.
    "SelectTypeParameters=CR_Core",
    "ReturnToService=2",
    "MpiDefault=none",
    "MailProg=/bin/true",
    # Cancelled jobs get SIGKILL 2 s after SIGTERM (default 30), so a stop is quick.
    "KillWait=2",
    # Start submitted batch jobs on slurmctld's next 1 s tick, not up to 3 s later. (The very first
    # scheduling pass still comes ~3 s after slurmctld starts: it reads this setting.)
    "SchedulerParameters=batch_sched_delay=0",
    # Don't drain the node when the hardware differs a little from what we declare.
    "SlurmdParameters=config_overrides",
)
"""slurm.conf's lines for how jobs are contained, scheduled and ended: the same for this 22.05 cluster and the
24.11/26.05 chroot clusters (tests/support/chroot_files.py). cgroup.conf is each one's own."""


@dataclass(frozen=True)
class ConnectedJob:
    job_id: int
    client: tuple[str, int]  # the job's end of the TCP connection
    server: tuple[str, int]  # our listener


class SlurmCommandError(subprocess.CalledProcessError):
    """A Slurm client failed; unlike CalledProcessError its message carries stdout and stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout: {self.stdout!r}\nstderr: {self.stderr!r}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def srun_argv(job_id: int, argv: Sequence[str]) -> list[str]:
    """`argv` as a step of the running job (one task, sharing the job's resources with its other steps), as
    any release's srun takes it."""
    return ["srun", f"--jobid={job_id}", "--overlap", "-N1", "-n1", "--quiet", *argv]


def tail(path: Path, lines: int) -> str:
    """The last `lines` lines of a log file, under a line naming it (for failure messages)."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"--- {path.name}: (missing)"
    return f"--- {path.name} (last {lines} lines):\n" + "\n".join(text[-lines:])


class SlurmCluster(Daemons):
    """Context manager: `with SlurmCluster(munged) as c: job = c.submit("alice", "sleep 60")`."""

    def __init__(
        self,
        munged: Munged | None = None,
        base: Path | None = None,
        node_name: str = "node1",
        extra_conf: Sequence[str] = (),
        users: Sequence[str] = ("alice", "bob"),
        start_timeout: float = 30.0,
        job_container: bool = False,
    ) -> None:
        """`job_container`: JobContainerType=job_container/tmpfs, each job with a private /tmp and /dev/shm
        in a mount namespace of its own. Its default `base` is then under /var/tmp, since what the jobs
        and their logins reach (output files, working directory, ssh keys) must not sit in /tmp."""
        self._munged = munged
        self._own_munged = munged is None
        self._own_base = base is None
        self.job_container = job_container
        parent = "/var/tmp" if job_container else None
        self.base = Path(base or tempfile.mkdtemp(prefix="slurm-cluster-", dir=parent))
        self.node_name = node_name
        self.extra_conf = list(extra_conf)
        self.users = list(users)
        self.start_timeout = start_timeout
        self.conf = self.base / "slurm.conf"
        self.cgroup_conf = self.base / "cgroup.conf"
        self.job_container_conf = self.base / "job_container.conf"
        self.container_dir = self.base / "containers"
        """BasePath: the tmpfs plugin keeps <node>/<job>/ here (the job's /tmp, and .ns holding its namespace)."""
        self.state_dir = self.base / "state"
        self.spool_dir = self.base / "spool"
        # Job output lands here; the jobs' users must be able to write it.
        self.out_dir = self.base / "out"
        self.slurmctld_log = self.base / "slurmctld.log"
        self.slurmd_log = self.base / "slurmd.log"
        self.slurmctld_port = 0
        self.slurmd_port = 0
        self.env: dict[str, str] = {}
        self.jobs: list[int] = []
        self.slurmctld: subprocess.Popen[bytes] | None = None
        self.slurmd: subprocess.Popen[bytes] | None = None
        self.client_prefix: list[str] = []
        """What every client command (run()) starts with: e.g. nsenter into the cluster's namespaces."""

    # -- lifecycle ---------------------------------------------------------------------------------------

    def _start(self) -> None:
        """Write the configuration, start both daemons and wait until the node is idle."""
        for user in self.users:
            ensure_user(user)
        if self._munged is None:
            self._munged = Munged().start()
        for d in (self.state_dir, self.spool_dir, self.out_dir):
            d.mkdir(parents=True, exist_ok=True)
        # mkdtemp gives 0700; the test users must reach slurm.conf and their output directory.
        os.chmod(self.base, 0o755)
        os.chmod(self.out_dir, 0o1777)
        self.slurmctld_port = free_port()
        self.slurmd_port = free_port()
        while self.slurmd_port == self.slurmctld_port:
            self.slurmd_port = free_port()
        self._write_config()
        self.env = self.client_env()

        # -c: never pick up saved state (the directory is fresh anyway, but a reused `base` may not be).
        self.slurmctld = self._spawn("slurmctld", [SLURMCTLD, "-D", "-c", "-f", str(self.conf)])
        self._wait(self._ctld_up, "slurmctld answering scontrol ping", self.slurmctld)
        # Only now start slurmd: its first registration then succeeds, instead of waiting for a retry.
        self.slurmd = self._spawn("slurmd", [SLURMD, "-D", "-f", str(self.conf), "-N", self.node_name])
        self._wait(lambda: self._node_idle(self.node_name), f"node {self.node_name} idle in sinfo", self.slurmd)

    def stop(self) -> None:
        """Cancel all jobs, wait for their slurmstepds to end, stop the daemons, remove the temp dir."""
        try:
            if self.slurmctld is not None and self.slurmctld.poll() is None:
                self._cancel_everything()
        finally:
            # slurmd first: stopping slurmctld first would make slurmd log connection errors for nothing.
            for proc in (self.slurmd, self.slurmctld):
                if proc is not None:
                    stop_process(proc)
            self.slurmd = self.slurmctld = None
            if self._own_munged and self._munged is not None:
                self._munged.cleanup()
                self._munged = None
            if self._own_base:
                shutil.rmtree(self.base, ignore_errors=True)


    # -- clients -----------------------------------------------------------------------------------------

    def client_env(self) -> dict[str, str]:
        """Our environment without the variables Slurm's clients read (a job's own among them), and our
        SLURM_CONF."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(CLIENT_ENV_PREFIXES)}
        env["SLURM_CONF"] = str(self.conf)
        return env

    def run(self, argv: Sequence[str], user: str | None = None, check: bool = True,
            timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a command with our SLURM_CONF, as root or (through runuser) as `user`."""
        cmd = list(argv)
        if user is not None and user != "root":
            # runuser rebuilds part of the environment; `env` makes sure SLURM_CONF survives it.
            cmd = ["runuser", "-u", user, "--", "env", f"SLURM_CONF={self.conf}", *cmd]
        cmd = [*self.client_prefix, *cmd]
        proc = subprocess.run(cmd, env=self.env, cwd=self.out_dir, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise SlurmCommandError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def submit(self, user: str, wrap_command: str, extra_args: Sequence[str] = ()) -> int:
        """sbatch --wrap as `user`; returns the job id. Output goes to output_file(job_id)."""
        argv = ["sbatch", "--parsable", f"--chdir={self.out_dir}", f"--output={self.out_dir}/job-%j.out",
                *extra_args, "--wrap", wrap_command]
        out = self.run(argv, user=user)
        # --parsable prints "jobid" or "jobid;cluster".
        job_id = int(out.stdout.strip().split(";")[0])
        self.jobs.append(job_id)
        return job_id

    def output_file(self, job_id: int) -> Path:
        return self.out_dir / f"job-{job_id}.out"

    def wait_output(self, job_id: int, text: str, timeout: float = 15.0) -> None:
        """Wait until the job's output contains `text`."""
        def printed() -> bool:
            try:
                return text in self.output_file(job_id).read_text(errors="replace")
            except FileNotFoundError:
                return False
        self._wait(printed, f"job {job_id} printing {text!r}", timeout=timeout)

    def job_state(self, job_id: int) -> str | None:
        """The job's state as squeue reports it, or None once squeue no longer lists it."""
        out = self.run(["squeue", "-h", "--states=all", "-j", str(job_id), "-o", "%T"], check=False)
        state = out.stdout.strip()
        return state or None

    def wait_running(self, job_id: int, timeout: float = 15.0) -> None:
        """Wait until the job is RUNNING; fail early when it ended instead."""
        def running() -> bool:
            state = self.job_state(job_id)
            if state is None or state in _ENDED_STATES:
                raise RuntimeError(f"job {job_id} is {state or 'gone'}, not running\n"
                                   + self.job_report(job_id))
            return state == "RUNNING"
        self._wait(running, f"job {job_id} running", timeout=timeout)

    def cancel(self, job_id: int) -> None:
        self.run(["scancel", str(job_id)], check=False)

    @contextlib.contextmanager
    def connected_job(self, user: str, timeout: float = 30.0) -> Iterator[ConnectedJob]:
        """A batch job of `user` holding a TCP connection to a listener of ours on 127.0.0.1.

        Fails early, with the job's output and the daemon logs, if the job ends before connecting.
        The job is cancelled on exit.
        """
        with socket.create_server(("127.0.0.1", 0)) as listener:
            server = listener.getsockname()
            code = (f"import socket, time; s = socket.create_connection(({server[0]!r}, {server[1]})); "
                    "print('connected from', s.getsockname(), flush=True); time.sleep(3600)")
            job_id = self.submit(user, f"python3 -c {shlex.quote(code)}")
            try:
                listener.settimeout(0.1)
                deadline = time.monotonic() + timeout
                while True:
                    with contextlib.suppress(TimeoutError):
                        conn, client = listener.accept()
                        break
                    state = self.job_state(job_id)
                    if time.monotonic() > deadline or state not in ("PENDING", "CONFIGURING", "RUNNING"):
                        raise RuntimeError(f"job {job_id} ({state}) did not connect\n"
                                           + self.job_report(job_id))
                with conn:
                    yield ConnectedJob(job_id, client, server)
            finally:
                self.cancel(job_id)

    def extern_socket(self, job_id: int) -> Path:
        """The unix socket of the job's extern slurmstepd (what slurmd's callerid lookup talks to)."""
        return self.spool_dir / f"{self.node_name}_{job_id}.{EXTERN_STEP}"

    def job_report(self, job_id: int) -> str:
        """The end of a job's output and of the daemons' logs: what explains a job that went wrong."""
        return f"{tail(self.output_file(job_id), 20)}\n{self.log_tails()}"

    def log_tails(self, lines: int = 40) -> str:
        """The end of both daemons' log files and of their stderr (where errors before logging starts go)."""
        return "\n".join([tail(self.slurmctld_log, lines), tail(self.base / "slurmctld.out", 10),
                          tail(self.slurmd_log, lines), tail(self.base / "slurmd.out", 10)])

    # -- internals ---------------------------------------------------------------------------------------

    def _site_conf(self) -> list[str]:
        """Where the daemons are: the controller, ports, slurmd's files, the nodes and the partition."""
        b = self.base
        return [
            "SlurmctldHost=localhost(127.0.0.1)",
            f"SlurmctldPort={self.slurmctld_port}",
            f"SlurmdPort={self.slurmd_port}",
            f"SlurmdSpoolDir={self.spool_dir}",
            f"SlurmdPidFile={b / 'slurmd.pid'}",
            f"SlurmdLogFile={self.slurmd_log}",
            *self.extra_conf,
            (f"NodeName={self.node_name} NodeHostname={socket.gethostname()} NodeAddr=127.0.0.1 "
             f"CPUs={os.cpu_count() or 1} State=UNKNOWN"),
            (f"PartitionName=debug Nodes={self.node_name} Default=YES MaxTime=INFINITE State=UP "
             "OverSubscribe=FORCE:8"),
        ]

    def _write_config(self) -> None:
        assert self._munged is not None
        b = self.base
        lines = [
            "ClusterName=pytest",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            f"AuthInfo=socket={self._munged.socket}",
            "CredType=cred/munge",
            f"StateSaveLocation={self.state_dir}",
            f"SlurmctldPidFile={b / 'slurmctld.pid'}",
            f"SlurmctldLogFile={self.slurmctld_log}",
            "SlurmctldDebug=debug",
            "SlurmdDebug=debug",
            "MessageTimeout=10",
            # An empty plugstack of our own: no SPANK plugins from /etc/slurm/plugstack.conf.d.
            f"PlugStackConfig={b / 'plugstack.conf'}",
            *JOB_CONF,
            *(["JobContainerType=job_container/tmpfs"] if self.job_container else []),
            # The cgroup v1 paths (/sys/fs/cgroup/<controller>/slurm_<NodeName>/uid_U/job_J) are shared by all
            # clusters on this machine with our node name: random job ids keep them out of each other's way.
            f"FirstJobId={random.randrange(10_000, 50_000_000, 10_000)}",
            *self._site_conf(),
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        (b / "plugstack.conf").write_text("")
        # Slurm reads cgroup.conf from slurm.conf's directory.
        # Only containment (what pam_slurm_adopt and callerid need), no resource limits.
        self.cgroup_conf.write_text(
            "CgroupPlugin=cgroup/v1\n"
            "CgroupMountpoint=/sys/fs/cgroup\n"
            "CgroupAutomount=no\n"
            "ConstrainCores=no\n"
            "ConstrainRAMSpace=no\n"
            "ConstrainSwapSpace=no\n"
            "ConstrainDevices=no\n"
        )
        written = [self.conf, self.cgroup_conf, b / "plugstack.conf"]
        if self.job_container:
            # Read from slurm.conf's directory; AutoBasePath creates BasePath/<NodeName> when slurmd starts.
            self.job_container_conf.write_text(f"AutoBasePath=true\nBasePath={self.container_dir}\n")
            written.append(self.job_container_conf)
        for path in written:
            os.chmod(path, 0o644)

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with open(self.base / f"{name}.out", "ab") as out:
            return subprocess.Popen(argv, env=self.env, cwd=self.base, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT)

    def _wait(self, check: Callable[[], bool], what: str, proc: subprocess.Popen[bytes] | None = None,
              timeout: float | None = None) -> None:
        """wait_for, with the daemons' log tails in the error."""
        try:
            wait_for(check, self.start_timeout if timeout is None else timeout, what, proc)
        except (RuntimeError, TimeoutError) as e:
            if "\n--- " in str(e):
                raise
            raise type(e)(f"{e}\n{self.log_tails()}") from None

    def _ctld_up(self) -> bool:
        return self.run(["scontrol", "ping"], check=False, timeout=10).stdout.find("is UP") >= 0

    def _node_idle(self, name: str) -> bool:
        state = self.run(["sinfo", "-h", "-N", "-n", name, "-o", "%T"], check=False).stdout.strip()
        # "*" means not responding yet (still registering): only resume a node that answered but is unusable.
        if state.startswith(("down", "drain")) and not state.endswith("*"):
            self.run(["scontrol", "update", f"NodeName={name}", "State=RESUME"], check=False)
        return state == "idle"

    def stepd_pids(self, job_ids: Sequence[int] | None = None) -> list[int]:
        """Live slurmstepds of the given jobs (default: all we submitted), found by their process title."""
        wanted = {str(j) for j in (self.jobs if job_ids is None else job_ids)}
        pids = []
        for proc in Path("/proc").iterdir():
            try:
                title = (proc / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
                # A zombie has ended; only its parent (init: stepds are double-forked) has yet to reap it.
                zombie = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
            except (OSError, IndexError):
                continue
            # slurmstepd retitles itself "slurmstepd: [JOB.STEP]".
            if title.startswith("slurmstepd: [") and title[13:].split(".")[0] in wanted and not zombie:
                pids.append(int(proc.name))
        return pids

    def _stepd_sockets(self) -> list[Path]:
        return list(self.spool_dir.glob(f"{self.node_name}_*.*"))

    def _cancel_everything(self, timeout: float = 30.0) -> None:
        """Cancel our jobs and any other on this private cluster, then wait until their stepds are gone."""
        listed = self.run(["squeue", "-h", "-o", "%i"], check=False).stdout.split()
        ids = sorted({*self.jobs, *(int(j) for j in listed if j.isdigit())})
        if ids:
            self.run(["scancel", *map(str, ids)], check=False)

        # slurmstepds are not our children (slurmd double-forks them), so we wait for them rather than stop
        # them: their sockets gone, no live process titled after the jobs, and the jobs out of squeue (which
        # happens only once the node has run the epilog).
        def gone() -> bool:
            if self._stepd_sockets() or self.stepd_pids(ids):
                return False
            return not self.run(["squeue", "-h", "-o", "%i"], check=False).stdout.split()
        # On a timeout stop the daemons anyway; what is left is visible in the logs.
        with contextlib.suppress(TimeoutError):
            wait_for(gone, timeout, "cancelled jobs and their slurmstepds to end")
