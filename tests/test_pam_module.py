"""The in-process module (adopt/pam_module.py under libpam-python): its PAM codes, messages and PAM
environment through a stand-in PamHandle against fake_slurmd's stepds, then through a real sshd on the
real Slurm 22.05 node, side by side with pam_slurm_adopt.so in the same stacks."""

from __future__ import annotations

import os
import pwd
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import pytest

from adopt import pam_module
from adopt.admin import pam_module_path
from adopt.gather import Log
from adopt.inprocess import InProcessGatherer, account, pam_code
from adopt.options import parse_options
from fake_slurmd.controller import FakeStepds
from fake_slurmd.plugin import SshdFactory
from fake_slurmd.scenario import Job
from fake_slurmd.stepd import FakeStepd
from slurmproto.constants import SLURM_EXTERN_CONT
from tests.support.deploy import pam_python_line
from tests.support.peers import DroppingHost
from tests.support.procs import ensure_user, installed_or_skip, pam_module_or_skip, wait_for
from tests.support.sessions import NO_JOBS, PAM_SLURM_ADOPT
from tests.support.slurm_cluster import SlurmCluster, free_port
from tests.support.sshd import Sshd
from tests.support.stuck_munged import StuckMunged
from tests.support.syslog import DevLogCatcher
from tests.test_adopt_real import jobs, landed_in, newest_job, run_login

__all__ = ["jobs"]  # the two-job fixture, shared with test_adopt_real
# Linux-PAM's values (security/_pam_types.h), as libpam-python's PamHandle has them.
CODES = {"PAM_SUCCESS": 0, "PAM_SYSTEM_ERR": 4, "PAM_PERM_DENIED": 6, "PAM_USER_UNKNOWN": 10,
         "PAM_SESSION_ERR": 14, "PAM_IGNORE": 25}
PAM_ERROR_MSG = 3
ONE_JOB_USER = "carol"


class Message(NamedTuple):
    style: int
    text: str


class Pamh:
    """libpam-python's PamHandle as far as the module uses it: items, the PAM environment, the
    conversation (recorded) and the codes."""

    PAM_ERROR_MSG = PAM_ERROR_MSG
    Message = Message
    exception = RuntimeError

    def __init__(self, user: str | None, service: str | None = "sshd", env: dict[str, str] | None = None) -> None:
        self.user, self.service, self.rhost = user, service, "127.0.0.1"
        self.env = dict(env or {})
        self.said: list[Message] = []
        for name, value in CODES.items():
            setattr(self, name, value)

    def conversation(self, message: Message) -> None:
        self.said.append(message)


class Node(NamedTuple):
    conf: Path
    spool: Path
    stepds: FakeStepds
    user: str
    uid: int


@pytest.fixture
def node() -> Iterator[Node]:
    """A slurm.conf naming node1 and a spool dir (short, for unix socket paths) for fake stepds."""
    user = "alice" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    uid = ensure_user(user).pw_uid if os.geteuid() == 0 else os.geteuid()
    with tempfile.TemporaryDirectory(prefix="pm-", dir="/tmp") as base, FakeStepds() as stepds:
        conf = Path(base) / "slurm.conf"
        conf.write_text(f"ClusterName=t\nSlurmctldHost=localhost\nSlurmdSpoolDir={base}/spool\n"
                        "NodeName=node1 NodeAddr=127.0.0.1 CPUs=1\n")
        (Path(base) / "spool").mkdir()
        yield Node(conf, Path(base) / "spool", stepds, user, uid)


def add_job(node: Node, job_id: int) -> Job:
    job = Job(job_id=job_id, uid=node.uid)
    path = str(node.spool / f"node1_{job_id}.{SLURM_EXTERN_CONT}")
    node.stepds.add(FakeStepd(path, job, SLURM_EXTERN_CONT, release=None, slurm_uid=os.geteuid(),
                              contains=lambda pid: False))
    return job


def call(pamh: Pamh, *options: str) -> int:
    return pam_module.pam_sm_acct_mgmt(pamh, 0, [pam_module_path(), *options])


# --- the codes, table-tested (the flow's own cases are in test_adopt_decision) --------------------------

CASES = [
    # (id, user, service, options, jobs, expected code, message shown)
    ("other-service", "alice", "login", (), 0, "PAM_IGNORE", None),
    ("any-service", "alice", "login", ("service=*",), 1, "PAM_SUCCESS", None),
    ("no-user", None, "sshd", (), 0, "PAM_SESSION_ERR", None),
    ("unknown-user", "no-such-user-pm", "sshd", (), 0, "PAM_SESSION_ERR", None),
    ("root", "root", "sshd", (), 1, "PAM_IGNORE", None),
    ("no-jobs", "alice", "sshd", (), 0, "PAM_PERM_DENIED", NO_JOBS),
    ("no-jobs-ignore", "alice", "sshd", ("action_no_jobs=ignore",), 0, "PAM_IGNORE", None),
    ("one-job", "alice", "sshd", (), 1, "PAM_SUCCESS", None),
    ("no-conf", "alice", "sshd", ("conf=/nonexistent/slurm.conf",), 0, "PAM_IGNORE", None),
    ("no-conf-allow", "alice", "sshd", ("conf=/nonexistent/slurm.conf", "action_generic_failure=allow"), 0,
     "PAM_SUCCESS", None),
    ("no-conf-deny", "alice", "sshd", ("conf=/nonexistent/slurm.conf", "action_generic_failure=deny"), 0,
     "PAM_PERM_DENIED", None),
    ("two-jobs-no-connection-deny", "alice", "sshd", ("action_generic_failure=deny",), 2, "PAM_PERM_DENIED",
     None),
]


@pytest.mark.parametrize(("user", "service", "options", "njobs", "code", "message"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_codes(node: Node, user: str | None, service: str, options: tuple[str, ...], njobs: int, code: str,
               message: str | None) -> None:
    user = node.user if user == "alice" else user
    added = [add_job(node, 500 + n) for n in range(njobs)]
    pamh = Pamh(user, service)
    assert call(pamh, f"conf={node.conf}", "nodename=node1", *options) == CODES[code]
    assert pamh.said == ([Message(PAM_ERROR_MSG, message)] if message else [])
    if code == "PAM_SUCCESS" and njobs:
        assert added[0].adopted == [os.getpid()]  # the caller itself, as the C module adopts getpid()
        assert pamh.env == {"SLURM_JOB_ID": str(added[0].job_id)}  # display 0: no DISPLAY, no XAUTHORITY
    else:
        assert all(job.adopted == [] for job in added) and "SLURM_JOB_ID" not in pamh.env


@pytest.mark.parametrize("connection", ["127.0.0.1 1 127.0.0.1 2", "not a connection", ""])
def test_ssh_connection_is_believed_only_when_held(node: Node, connection: str) -> None:
    """Two jobs need the RPC: an SSH_CONNECTION in the PAM environment that this process does not hold
    (or none, or garbage) is a generic failure, never a question to anyone."""
    add_job(node, 510)
    add_job(node, 511)
    pamh = Pamh(node.user, env={"SSH_CONNECTION": connection} if connection else {})
    assert call(pamh, f"conf={node.conf}", "nodename=node1", "action_generic_failure=deny") == CODES["PAM_PERM_DENIED"]
    assert pamh.said == [] and "SLURM_JOB_ID" not in pamh.env


def test_disable_x11_and_join_container_false(node: Node) -> None:
    job = add_job(node, 520)
    pamh = Pamh(node.user)
    assert call(pamh, f"conf={node.conf}", "nodename=node1", "disable_x11=1", "join_container=false") == 0
    assert job.adopted == [os.getpid()] and pamh.env == {"SLURM_JOB_ID": "520"}


def test_every_outcome_has_a_code() -> None:
    for outcome in ("PAM_SUCCESS", "PAM_IGNORE", "PAM_PERM_DENIED", "PAM_SESSION_ERR"):
        assert pam_code(Pamh("x"), outcome) == CODES[outcome]
    with pytest.raises(ValueError, match="not an outcome"):
        pam_code(Pamh("x"), "PAM_AUTH_ERR")


class Exploding(Pamh):
    """A handle whose PAM environment fails: an internal failure in the middle of the check."""

    @property  # type: ignore[override]
    def env(self) -> dict[str, str]:
        raise KeyboardInterrupt("the PAM environment exploded")

    @env.setter
    def env(self, value: dict[str, str]) -> None:
        pass


@pytest.mark.parametrize(("user", "options", "code"), [
    ("root", ("action_generic_failure=deny",), "PAM_IGNORE"),
    ("alice", (), "PAM_IGNORE"),
    ("alice", ("action_generic_failure=deny",), "PAM_PERM_DENIED"),
    ("alice", ("ACTION_GENERIC_FAILURE=Allow",), "PAM_SUCCESS"),
])
def test_internal_failure_is_the_documented_verdict(node: Node, user: str, options: tuple[str, ...],
                                                    code: str) -> None:
    """Nothing escapes (not even a BaseException): root gets its PAM_IGNORE, anyone else
    action_generic_failure, whatever failed."""
    add_job(node, 530)
    user = node.user if user == "alice" else user
    assert call(Exploding(user), f"conf={node.conf}", "nodename=node1", *options) == CODES[code]
    assert pam_module.fallback_code(Pamh(user), ["file", *options]) == CODES[code]


def test_no_state_between_handles(node: Node) -> None:
    """Two handles in one interpreter: the second gets its own verdict, nothing of the first's."""
    job = add_job(node, 540)
    first, second = Pamh(node.user), Pamh(node.user)
    assert call(first, f"conf={node.conf}", "nodename=node1") == 0
    node.stepds.remove(node.stepds.stepds[0])
    assert call(second, f"conf={node.conf}", "nodename=node1") == CODES["PAM_PERM_DENIED"]
    assert second.env == {} and second.said == [Message(PAM_ERROR_MSG, NO_JOBS)]
    assert job.adopted == [os.getpid()]


def test_deadline_without_signals(node: Node) -> None:
    """A stepd that never answers: the call ends within the deadline by socket timeouts alone (no
    SIGALRM, no watchdog thread, no exit), with the verdict for what could be seen."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stalled:
        stalled.bind(str(node.spool / f"node1_560.{SLURM_EXTERN_CONT}"))
        stalled.listen(1)  # never accepted: the handshake waits
        threads, handler = threading.active_count(), signal.getsignal(signal.SIGALRM)
        started = time.monotonic()
        pamh = Pamh(node.user)
        assert call(pamh, f"conf={node.conf}", "nodename=node1", "deadline=0.5") == CODES["PAM_PERM_DENIED"]
        assert time.monotonic() - started < 0.5 + 0.5
        assert threading.active_count() == threads and signal.getsignal(signal.SIGALRM) == handler
        assert pamh.said == [Message(PAM_ERROR_MSG, NO_JOBS)]


def test_stuck_munged_costs_at_most_the_deadline(node: Node) -> None:
    """Two jobs and a connection this process holds, so the RPC must sign with munged, which accepts and
    never answers: action_generic_failure within the deadline, nothing adopted, nothing asked of a slurmd.
    As documented, the munge call abandoned at the deadline runs on in its thread until libmunge gives up
    (here: once munged goes away)."""
    jobs = [add_job(node, 570), add_job(node, 571)]
    tasks = len(os.listdir("/proc/self/task"))
    with StuckMunged(node.spool.parent / "stuck.socket") as stuck:
        conf = node.conf.with_name("rpc.conf")  # SlurmdPort: nothing listens there
        conf.write_text(node.conf.read_text() + f"SlurmdPort={free_port()}\nAuthInfo=socket={stuck.path}\n")
        with socket.create_server(("127.0.0.1", 0)) as listener, \
                socket.create_connection(listener.getsockname()) as client, listener.accept()[0]:
            connection = "{} {} {} {}".format(*client.getsockname(), *listener.getsockname())
            pamh = Pamh(node.user, env={"SSH_CONNECTION": connection})
            opts, _ = parse_options([f"conf={conf}", "nodename=node1", "deadline=1", "action_generic_failure=deny"])
            logged: list[str] = []
            started = time.monotonic()
            code = account(pamh, opts, lambda level, message: logged.append(message), started, service="sshd",
                           user=node.user)
            elapsed = time.monotonic() - started
        assert len(os.listdir("/proc/self/task")) == tasks + 2  # the stuck munged's acceptor, the munge call
    assert code == CODES["PAM_PERM_DENIED"] and elapsed < 1 + 0.5, elapsed
    assert any(message.startswith("munge: ") for message in logged), logged
    assert all(job.adopted == [] for job in jobs) and "SLURM_JOB_ID" not in pamh.env
    wait_for(lambda: len(os.listdir("/proc/self/task")) == tasks, 15, "the abandoned munge call to end")


def _fds() -> dict[str, str]:
    return {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
            if os.path.exists(f"/proc/self/fd/{fd}")}


def test_no_thread_or_fd_left(node: Node) -> None:
    """Nothing of the call stays in the process (sshd's): no thread, no fd (the stepd connections and
    syslog's socket are closed)."""
    add_job(node, 550)
    stepd = node.stepds.stepds[0]
    threads, fds = threading.active_count(), _fds()
    assert call(Pamh(node.user), f"conf={node.conf}", "nodename=node1") == 0
    wait_for(lambda: stepd.connections == 0, 5, "the fake stepd to see its connections closed")
    assert threading.active_count() == threads and _fds() == fds


def _gatherer(log: Log, seconds: float = 3.0) -> InProcessGatherer:
    opts, _ = parse_options([])
    return InProcessGatherer(Pamh("x"), opts, {}, log, adopt_pid=os.getpid(), deadline=time.monotonic() + seconds)


@pytest.mark.skipif(os.geteuid() != 0, reason="setns() needs root (CAP_SYS_ADMIN)")
def test_join_enters_namespaces_and_closes_their_fds() -> None:
    """The process's own UTS namespace: setns succeeds (threads or not), and the fd is closed."""
    fd = os.open("/proc/self/ns/uts", os.O_RDONLY)
    assert _gatherer(lambda level, message: None).join([(0x04000000, fd)])  # CLONE_NEWUTS
    with pytest.raises(OSError):
        os.fstat(fd)


def test_join_failure_fails_the_adoption() -> None:
    """A mount namespace cannot be entered while another thread shares the process's fs (EINVAL, once the
    deadline ends the wait for it to go), nor without privilege (EPERM): adoption failed, the failure
    logged, every fd closed."""
    logged: list[tuple[str, str]] = []
    done = threading.Event()
    helper = threading.Thread(target=done.wait)
    helper.start()
    try:
        fds = [os.open("/proc/self/ns/mnt", os.O_RDONLY), os.open("/proc/self/ns/uts", os.O_RDONLY)]
        ok = _gatherer(lambda level, message: logged.append((level, message)), seconds=0.2).join(
            [(0x00020000, fds[0]), (0x04000000, fds[1])])
    finally:
        done.set()
        helper.join()
    assert not ok
    assert any(level == "error" and "setns" in message for level, message in logged), logged
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)


def test_print_pam_module() -> None:
    script = installed_or_skip("slurm-adopt")
    proc = subprocess.run([script, "--print-pam-module"], capture_output=True, text=True, timeout=30, env={})
    path = proc.stdout.strip()
    assert proc.returncode == 0 and os.path.isabs(path) and path.endswith("/adopt/pam_module.py"), proc
    site = os.path.dirname(os.path.dirname(path))
    assert Path(site, "adopt", "inprocess.py").is_file() and Path(site, "slurmproto").is_dir()


def test_the_loaded_file_puts_its_own_packages_first(tmp_path: Path) -> None:
    """Loaded by path as libpam-python loads it: its package root first, no current directory, nothing
    outside the interpreter's prefix; a planted `adopt` in the current directory is never imported."""
    (tmp_path / "adopt").mkdir()
    (tmp_path / "adopt" / "__init__.py").write_text("raise SystemExit('planted')\n")
    code = ("import importlib.util, sys; sys.path.insert(0, '/elsewhere'); "
            "spec = importlib.util.spec_from_file_location('pam_module', sys.argv[1]); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
            "import adopt.hook; print(sys.path[0]); print(adopt.hook.__file__); print('/elsewhere' in sys.path)")
    proc = subprocess.run(["/usr/bin/python3", "-I", "-c", code, pam_module_path()], cwd=tmp_path,
                          capture_output=True, text=True, timeout=30)
    root = os.path.dirname(os.path.dirname(pam_module_path()))
    assert proc.stdout.split("\n")[:3] == [root, os.path.join(root, "adopt", "hook.py"), "False"], proc


# --- through a real sshd on the real Slurm 22.05 node, next to pam_slurm_adopt.so ------------------------


@pytest.fixture(scope="module")
def module_file() -> str:
    """The installed module file, as `slurm-adopt --print-pam-module` names it."""
    if not Path(PAM_SLURM_ADOPT).exists():
        pytest.skip(f"needs {PAM_SLURM_ADOPT} (apt-get install libpam-slurm-adopt)")
    return pam_module_or_skip()


@pytest.fixture(scope="module")
def one_job(slurm_cluster: SlurmCluster) -> Iterator[int]:
    """A running job of the one-job user's."""
    ensure_user(ONE_JOB_USER)
    job = slurm_cluster.submit(ONE_JOB_USER, "sleep 600")
    slurm_cluster.wait_running(job)
    yield job
    slurm_cluster.cancel(job)


MODULES = ["pam_slurm_adopt.so", "pam_python"]
STACKS = {
    # name: the account stack, MODULE standing for the module's line (control and all)
    "required": ["required pam_unix.so", "required MODULE"],
    "sufficient": ["sufficient MODULE action_no_jobs=ignore", "required pam_deny.so"],
    "requisite": ["required pam_unix.so", "requisite MODULE", "required pam_permit.so"],
    # success jumps over pam_deny; an ignore falls onto it; a denial ends the stack
    "jump": ["[success=1 ignore=ignore default=die] MODULE", "required pam_deny.so", "required pam_permit.so"],
}
IGNORE_DENIED = ("sufficient", "jump")
"""The stacks in which PAM_IGNORE (root's) falls through to pam_deny."""
ENV_COMMAND = "echo SLURM_JOB_ID=${SLURM_JOB_ID:-none}; cat /proc/self/cgroup"


class Stack:
    """Starts an sshd whose account stack has one of the two modules in a stack's place."""

    def __init__(self, cluster: SlurmCluster, factory: SshdFactory, module_file: str, which: str) -> None:
        self.cluster, self.factory, self.module_file, self.which = cluster, factory, module_file, which

    def line(self, conf: Path, options: str = "") -> str:
        common = f"service={{service}} nodename={self.cluster.node_name} {options}".strip()
        if self.which == "pam_python":
            return pam_python_line(self.module_file, [f"conf={conf}", "log_level=debug", common])
        return f"{PAM_SLURM_ADOPT} {common}"

    def sshd(self, stack: str, options: str = "", conf: Path | None = None, args: Sequence[str] = ()) -> Sshd:
        """`args`: sshd's own extra arguments (tests.support.sshd.Sshd)."""
        conf = conf or self.cluster.conf
        lines = [line.replace("MODULE", self.line(conf, options)) for line in STACKS[stack]]
        return self.factory(lines, env={"SLURM_CONF": str(conf)}, users=["alice", "bob", ONE_JOB_USER], args=args)


@pytest.fixture(params=MODULES)
def stack(request: pytest.FixtureRequest, slurm_cluster: SlurmCluster, sshd_factory: SshdFactory,
          module_file: str) -> Stack:
    return Stack(slurm_cluster, sshd_factory, module_file, request.param)


def session(cluster: SlurmCluster, sshd: Sshd, user: str, job: int | None) -> tuple[int, int | None, str, str]:
    """Log in as tests.test_adopt_real.login() does; also the session's SLURM_JOB_ID ("none": unset)."""
    proc = run_login(cluster, sshd, user, job, ENV_COMMAND)
    env = re.search(r"SLURM_JOB_ID=(\S+)", proc.stdout)
    return proc.returncode, landed_in(proc.stdout), env.group(1) if env else "", proc.stderr


WHO = ["root", "no-jobs", "one-job", "two-jobs-from-job-1", "two-jobs-from-job-2"]


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("stack_name", list(STACKS))
def test_same_verdict(slurm_cluster: SlurmCluster, jobs: tuple[int, int], one_job: int, stack: Stack,
                      stack_name: str, who: str) -> None:
    sshd = stack.sshd(stack_name)
    user, job = {"root": ("root", None), "no-jobs": ("bob", None), "one-job": (ONE_JOB_USER, None),
                 "two-jobs-from-job-1": ("alice", jobs[0]), "two-jobs-from-job-2": ("alice", jobs[1])}[who]
    status, landed, env, err = session(slurm_cluster, sshd, user, job)
    expected_job = {"one-job": one_job, "two-jobs-from-job-1": jobs[0], "two-jobs-from-job-2": jobs[1]}.get(who)
    if who == "root":  # PAM_IGNORE: the rest of the stack decides (pam_deny after a sufficient or jump line)
        assert (status, landed, env) == ((255, None, "") if stack_name in IGNORE_DENIED else (0, None, "none")), err
    elif who == "no-jobs":  # denied; with action_no_jobs=ignore PAM_IGNORE, then pam_deny, silently
        assert (status, landed) == (255, None), err
        assert (NO_JOBS in err) == (stack_name != "sufficient"), err
    else:
        assert (status, landed, env) == (0, expected_job, str(expected_job)), (err, sshd.log_text()[-2000:])


def test_logins_in_a_row_through_an_sshd_that_does_not_re_exec(slurm_cluster: SlurmCluster, jobs: tuple[int, int],
                                                                stack: Stack) -> None:
    """sshd -r: each connection's process is a fork of the listener rather than a fresh sshd (the tests'
    sshds otherwise re-exec, OpenSSH's default). Logins in a row through it each get their own verdict
    and job, nothing of the one before."""
    sshd = stack.sshd("required", args=["-r"])
    assert sshd.login_is_a_fork()
    for user, job, expected in [("alice", jobs[0], jobs[0]), ("alice", jobs[1], jobs[1]), ("bob", None, None),
                                ("alice", jobs[0], jobs[0])]:
        status, landed, env, err = session(slurm_cluster, sshd, user, job)
        if expected is None:
            assert (status, landed) == (255, None) and NO_JOBS in err, err
        else:
            assert (status, landed, env) == (0, expected, str(expected)), (err, sshd.log_text()[-2000:])


def test_from_outside_any_job_lands_in_the_newest(slurm_cluster: SlurmCluster, jobs: tuple[int, int],
                                                  sshd_factory: SshdFactory, module_file: str) -> None:
    """Two jobs, a login from outside both: the RPC finds no job, and the module adopts into the latest
    started (26.05's rule; 22.05's C module goes by cgroup mtimes: see test_adopt_real)."""
    sshd = Stack(slurm_cluster, sshd_factory, module_file, "pam_python").sshd("required")
    status, landed, env, err = session(slurm_cluster, sshd, "alice", None)
    newest = newest_job(slurm_cluster, "alice")
    assert (status, landed, env) == (0, newest, str(newest)), err


def _conf_copy(cluster: SlurmCluster, directory: Path, name: str, **changes: str) -> Path:
    """The cluster's slurm.conf with some keys' values replaced, readable by everyone."""
    text = cluster.conf.read_text()
    for key, value in changes.items():
        text = re.sub(rf"(?m)^{key}=.*$", f"{key}={value}", text)
    path = directory / name
    path.write_text(text)
    path.chmod(0o644)
    return path


def test_dropping_source_host(slurm_cluster: SlurmCluster, jobs: tuple[int, int], stack: Stack,
                              shared_dir: Path) -> None:
    """The source's slurmd never answers (SYNs dropped): both fall back to a job of the user's (ours
    to the newest, within its deadline)."""
    with DroppingHost() as dropping:
        conf = _conf_copy(slurm_cluster, shared_dir, f"dropping-{dropping.port}.conf", SlurmdPort=str(dropping.port))
        sshd = stack.sshd("required", "deadline=1.5", conf=conf)
        started = time.monotonic()
        status, landed, env, err = session(slurm_cluster, sshd, "alice", jobs[0])
        elapsed = time.monotonic() - started
    assert status == 0 and landed in jobs and env == str(landed), err
    if stack.which == "pam_python":
        assert landed == newest_job(slurm_cluster, "alice")
        assert elapsed < 1.5 + 2.0  # the deadline, plus srun's and ssh's own start-up


def test_munged_down(slurm_cluster: SlurmCluster, jobs: tuple[int, int], stack: Stack, shared_dir: Path) -> None:
    """Two jobs, so the RPC is needed, and munged's socket is gone. The C module carries on to
    action_unknown (newest); ours gives action_generic_failure (deny here), as documented."""
    conf = _conf_copy(slurm_cluster, shared_dir, "munged-down.conf", AuthInfo=f"socket={shared_dir}/no-munged")
    sshd = stack.sshd("required", "action_generic_failure=deny", conf=conf)
    status, landed, _env, err = session(slurm_cluster, sshd, "alice", jobs[0])
    if stack.which == "pam_python":
        assert (status, landed) == (255, None), err
    else:
        assert status == 0 and landed in jobs, err
    assert sshd.ssh("root", "id -u").returncode == 0


def test_unusable_spool_dir(slurm_cluster: SlurmCluster, jobs: tuple[int, int], stack: Stack,
                            shared_dir: Path) -> None:
    """SlurmdSpoolDir is not a directory: no steps can be seen, so the user is refused; root is admitted."""
    spool = shared_dir / "spool-is-a-file"
    spool.write_text("")
    conf = _conf_copy(slurm_cluster, shared_dir, "bad-spool.conf", SlurmdSpoolDir=str(spool))
    sshd = stack.sshd("required", conf=conf)
    status, landed, _env, err = session(slurm_cluster, sshd, "alice", jobs[0])
    assert (status, landed) == (255, None) and NO_JOBS in err, err
    assert sshd.ssh("root", "id -u").stdout.strip() == "0"


def test_broken_installation_keeps_root_in(slurm_cluster: SlurmCluster, sshd_factory: SshdFactory,
                                           module_file: str, tmp_path: Path) -> None:
    """The module file without its packages (a half-removed installation): root still passes, anyone
    else gets action_generic_failure (deny here), and no traceback reaches anyone."""
    lonely = tmp_path / "site" / "adopt" / "pam_module.py"
    lonely.parent.mkdir(parents=True)
    lonely.write_text(Path(module_file).read_text())
    for path in (tmp_path, tmp_path / "site", lonely.parent, lonely):
        path.chmod(0o755)
    line = (f"required pam_python.so {lonely} conf={slurm_cluster.conf} service={{service}} "
            "action_generic_failure=deny")
    sshd = sshd_factory(["required pam_unix.so", line], users=["alice"])
    assert sshd.ssh("root", "id -u").stdout.strip() == "0"
    refused = sshd.ssh("alice", "true")
    assert refused.returncode == 255 and "Traceback" not in refused.stderr, refused.stderr



def test_module_logs_as_the_hook(slurm_cluster: SlurmCluster, one_job: int, sshd_factory: SshdFactory,
                                 module_file: str, devlog: DevLogCatcher) -> None:
    """The module's syslog lines are the hook's (authpriv, ident slurm-adopt, sshd's pid): the adoption,
    and a refusal in both its lines."""
    stack = Stack(slurm_cluster, sshd_factory, module_file, "pam_python")
    sshd = stack.sshd("required")
    since = devlog.mark()
    status, landed, _env, err = session(slurm_cluster, sshd, ONE_JOB_USER, None)
    assert (status, landed) == (0, one_job), err
    adopted = devlog.wait_for(f"adopted into job {one_job}", ident="slurm-adopt", since=since)
    # The process adopted is the one logging: sshd's own.
    assert (adopted.facility_name, adopted.message) == ("authpriv", f"Process {adopted.pid} adopted into job {one_job}")
    since = devlog.mark()
    assert session(slurm_cluster, sshd, "bob", None)[0] == 255
    devlog.wait_for(f"send_user_msg: {NO_JOBS}", ident="slurm-adopt", since=since)
    devlog.wait_for(lambda r: r.message.startswith("bob: PAM_PERM_DENIED, refused:"), ident="slurm-adopt",
                    since=since)
