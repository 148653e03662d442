"""The PAM hook attacked directly: bad option values and bytes, hostile PAM environments, bad slurm.confs,
a stuck munged, a closed stdout. The hook runs as pam.d runs it (`python3 -I -m adopt`, as root, with
only a PAM environment); each case checks the exit status (the verdict), what the user would read, that
no traceback escapes, and that the deadline holds.
"""

from __future__ import annotations

import os
import pwd
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from fake_slurmd import pamexec
from fake_slurmd.controller import FakeSlurmd
from fake_slurmd.pamexec import HookRun
from tests.support.munged import Munged
from tests.support.procs import installed_or_skip
from tests.support.stuck_munged import StuckMunged
from tests.support.syslog import DevLogCatcher

NO_JOBS = b"Access denied by pam_slurm_adopt: you have no active jobs on this node"
Arg = pamexec.Arg


@pytest.fixture(scope="module")
def python() -> str:
    """The interpreter of the environment the project is installed in (the tox env)."""
    installed_or_skip("slurm-adopt")
    return sys.executable


def run_hook(python: str, args: Sequence[Arg], *, user: Arg = "bob", env: Mapping[Arg, Arg] | None = None,
             stage: Arg | None = "account", close_stdout: bool = False, timeout: float = 20) -> HookRun:
    """The hook with pam_exec's environment (`env` is the PAM environment), as root, from `python`'s venv."""
    return pamexec.run_hook(args, user=user, pam_env=env, stage=stage, close_stdout=close_stdout, timeout=timeout,
                            env_dir=os.path.dirname(os.path.dirname(python)))


def assert_clean(run: HookRun) -> None:
    """Nothing but the refusal message ever reaches the user: no traceback, nothing on stderr."""
    assert b"Traceback" not in run.stdout + run.stderr and run.stderr == b"", run


@pytest.fixture
def node(fake_slurmd: FakeSlurmd, tmp_path: Path) -> list[str]:
    """The fake node's slurm.conf and node name, as hook options."""
    tmp_path.chmod(0o755)
    return [f"conf={fake_slurmd.slurm_conf(tmp_path / 'slurm.conf')}", "nodename=node1"]


# --- bad option values and bytes ---------------------------------------------------------------------------

BAD_OPTIONS: list[tuple[Arg, int]] = [  # option, bob's exit status (no jobs: refused, unless it changes that)
    ("log_level=²", 1), ("log_level=99999999999999999999", 1), ("deadline=\u0661", 1), ("deadline=inf", 1),
    ("deadline=nan", 1), ("deadline=1e3", 1), ("deadline=-1", 1), ("deadline=", 1),
    ("action_no_jobs=\u00e9", 1), (b"action_no_jobs=\xff", 1), (b"nodename=\xff\xfe", 1), (b"\xff", 1),
    (b"frobnicate=\xff\n\x1b[2J", 1), ("ignore_root=²", 1), ("protocol_version=²²", 1),
    ("protocol_version=" + "9" * 5000, 1), ("x" * 100_000, 1),
    (b"service=\xff", 0),  # another service: PAM_IGNORE, as the module
    (b"conf=/nonexistent/\xff", 0),  # no slurm.conf: action_generic_failure=ignore
]


@pytest.mark.parametrize(("option", "bob"), BAD_OPTIONS, ids=[repr(o)[:40] for o, _ in BAD_OPTIONS])
def test_bad_option_never_locks_root_out(python: str, node: list[str], option: Arg, bob: int) -> None:
    root = run_hook(python, [*node, option], user="root")
    assert root.status == 0 and root.stdout == b"", root
    assert_clean(root)
    refused = run_hook(python, [*node, option], user="bob")
    assert refused.status == bob, refused
    assert refused.stdout == (NO_JOBS + b"\n" if bob else b""), refused
    assert_clean(refused)


def test_undecodable_bytes_are_logged_escaped(python: str, node: list[str], devlog: DevLogCatcher) -> None:
    since = devlog.mark()
    run = run_hook(python, [*node, b"frobnicate=\xff\nforged: line"], user="bob")
    assert run.status == 1
    logged = [r.message for r in devlog.messages(ident="slurm-adopt", since=since)]
    assert any("frobnicate=\\udcff\\nforged: line" in m for m in logged), logged
    assert not any(m.startswith("forged") for m in logged)


# --- hostile PAM environments -----------------------------------------------------------------------------

@pytest.mark.parametrize(("user", "status"), [(b"\xff\xfe", 1), ("", 1), ("no-such-user-here", 1),
                                              ("x" * 50_000, 1), ("root", 0)])
def test_odd_users(python: str, node: list[str], user: Arg, status: int) -> None:
    run = run_hook(python, node, user=user)
    assert run.status == status, run
    assert_clean(run)


@pytest.mark.parametrize("connection", [b"\xff 1 \xfe 2", "127.0.0.1 ²2 127.0.0.1 22", "127.0.0.1 0 127.0.0.1 22",
                                        "127.0.0.1 1 127.0.0.1", "::1 1 ::1 99999", "1.2.3.4.5 1 1.2.3.4 22",
                                        "x" * 100_000])
def test_malformed_ssh_connection_is_a_generic_failure(python: str, fake_slurmd: FakeSlurmd, node: list[str],
                                                       devlog: DevLogCatcher, connection: Arg) -> None:
    fake_slurmd.add_job({"job_id": 901, "user": "alice", "start_time": 1})
    fake_slurmd.add_job({"job_id": 902, "user": "alice", "start_time": 2})  # two jobs: the RPC path
    since = devlog.mark()
    run = run_hook(python, [*node, "action_generic_failure=deny"], user="alice",
                   env={"SSH_CONNECTION": connection})
    assert run.status == 1 and run.stdout == b"", run
    assert_clean(run)
    assert fake_slurmd.adopted(901) == fake_slurmd.adopted(902) == []
    errors = [r.message for r in devlog.messages(ident="slurm-adopt", since=since) if r.severity_name == "err"]
    assert any("no usable SSH_CONNECTION" in m for m in errors), errors


def test_slurm_conf_from_the_pam_environment_is_ignored(python: str, fake_slurmd: FakeSlurmd, node: list[str],
                                                        devlog: DevLogCatcher) -> None:
    """$SLURM_CONF and $SLURMD_NODENAME are the user's to set (pam_env, AcceptEnv): a conf naming a node
    where bob has a job must not be read; only conf= or the standard locations are."""
    fake_slurmd.add_job({"job_id": 911, "user": "bob"})
    evil_conf = node[0].removeprefix("conf=")
    since = devlog.mark()
    run = run_hook(python, ["action_generic_failure=deny"], user="bob",
                   env={"SLURM_CONF": evil_conf, "SLURMD_NODENAME": "node1"})
    assert run.status == 1 and fake_slurmd.adopted(911) == [], run
    logged = " ".join(r.message for r in devlog.messages(ident="slurm-adopt", since=since))
    assert evil_conf not in logged, logged


def test_slurmd_nodename_from_the_pam_environment_is_ignored(python: str, fake_slurmd: FakeSlurmd,
                                                             node: list[str]) -> None:
    """Without nodename=, the node is this host's (the fake's node1 claims this host's name)."""
    fake_slurmd.add_job({"job_id": 912, "user": "bob"})
    run = run_hook(python, [node[0]], user="bob", env={"SLURMD_NODENAME": "node-elsewhere"})
    assert run.status == 0 and len(fake_slurmd.adopted(912)) == 1, run


@pytest.mark.parametrize(("stage", "status"), [("auth", 1), ("session", 0), ("password", 0), (b"\xff", 0), ("", 0)])
def test_outside_the_account_stack_nothing_is_done(python: str, fake_slurmd: FakeSlurmd, node: list[str],
                                                   stage: Arg, status: int) -> None:
    """Never an adoption; in auth a failure status, since success there could stand in for a password."""
    fake_slurmd.add_job({"job_id": 921, "user": "bob"})
    run = run_hook(python, node, user="bob", stage=stage)
    assert run.status == status and fake_slurmd.adopted(921) == [], run
    assert_clean(run)


def test_without_pam_type_it_refuses_to_act(python: str, fake_slurmd: FakeSlurmd, node: list[str]) -> None:
    """Run by hand from a shell, the hook must not move the admin's shell into a job."""
    fake_slurmd.add_job({"job_id": 931, "user": "bob"})
    run = run_hook(python, node, user="bob", stage=None)
    assert run.status == 2 and fake_slurmd.adopted(931) == [], run
    assert b"not run by pam_exec" in run.stderr and b"--explain" in run.stderr


def test_closed_stdout_keeps_the_refusal(python: str, node: list[str]) -> None:
    run = run_hook(python, node, user="bob", close_stdout=True)
    assert run.status == 1 and run.stderr == b"", run


# --- slurm.conf that cannot be read or is hostile --------------------------------------------------------

@pytest.fixture
def hostile_confs(tmp_path: Path) -> Iterator[dict[str, str]]:
    fifo = tmp_path / "fifo.conf"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.conf"
    loop.write_text(f"Include {loop}\n")
    big = tmp_path / "big.conf"
    with open(big, "wb") as f:
        f.truncate(1 << 30)  # sparse: 1 GiB of NULs
    zero = tmp_path / "zero.conf"
    zero.write_text("Include /dev/zero\n")
    yield {"dev-zero": "/dev/zero", "include-dev-zero": str(zero), "fifo": str(fifo), "directory": str(tmp_path),
           "include-loop": str(loop), "sparse-1GiB": str(big), "binary": sys.executable}


@pytest.mark.parametrize("which", ["dev-zero", "include-dev-zero", "fifo", "directory", "include-loop",
                                   "sparse-1GiB", "binary"])
def test_hostile_conf_ends_in_the_generic_verdict(python: str, hostile_confs: dict[str, str], which: str) -> None:
    conf = f"conf={hostile_confs[which]}"
    root = run_hook(python, [conf, "deadline=2"], user="root")
    assert root.status == 0, root
    for action, status in (("deny", 1), ("ignore", 0), ("allow", 0)):
        run = run_hook(python, [conf, "deadline=2", f"action_generic_failure={action}"], user="bob")
        assert run.status == status and run.stdout == b"", (action, run)
        assert run.seconds < 2.5, run
        assert_clean(run)


# --- deadlines ----------------------------------------------------------------------------------------------

@pytest.fixture
def held_connection() -> Iterator[str]:
    """A TCP connection whose both ends this process holds (it stands in for sshd, the hook's parent):
    SSH_CONNECTION for it."""
    with socket.create_server(("127.0.0.1", 0)) as listener, \
            socket.create_connection(listener.getsockname()) as client:
        accepted, _ = listener.accept()
        with accepted:
            rip, rport = client.getsockname()
            lip, lport = listener.getsockname()
            yield f"{rip} {rport} {lip} {lport}"


def test_stuck_munged_costs_at_most_the_deadline(python: str, fake_slurmd: FakeSlurmd, node: list[str],
                                                 stuck_munged: StuckMunged, held_connection: str,
                                                 devlog: DevLogCatcher) -> None:
    fake_slurmd.add_job({"job_id": 941, "user": "alice", "start_time": 1})
    fake_slurmd.add_job({"job_id": 942, "user": "alice", "start_time": 2})
    since = devlog.mark()
    run = run_hook(python, [*node, f"munge_socket={stuck_munged.path}", "deadline=1", "action_generic_failure=deny"],
                   user="alice", env={"SSH_CONNECTION": held_connection})
    assert run.status == 1 and run.seconds < 1.6, run
    assert_clean(run)
    assert fake_slurmd.adopted(941) == fake_slurmd.adopted(942) == []
    logged = [r.message for r in devlog.messages(ident="slurm-adopt", since=since)]
    # The client bounds munge by the RPC's share of the deadline: a specific error before the watchdog.
    assert any(m.startswith("error: munge: munged") and "did not answer within" in m for m in logged), logged


# --- logs an admin can count ----------------------------------------------------------------------------------

def test_every_refusal_is_logged_at_the_default_level(python: str, node: list[str], devlog: DevLogCatcher) -> None:
    since = devlog.mark()
    run = run_hook(python, node, user="bob")  # log_level left at its default (info)
    assert run.status == 1
    records = [r for r in devlog.messages(ident="slurm-adopt", since=since) if r.pid == run.pid]
    assert {r.facility_name for r in records} == {"authpriv"}, records
    messages = [r.message for r in records]
    assert f"send_user_msg: {NO_JOBS.decode()}" in messages, messages
    assert any(m.startswith("bob: PAM_PERM_DENIED, refused:") for m in messages), messages


def test_every_generic_failure_is_logged_with_its_reason(python: str, devlog: DevLogCatcher) -> None:
    since = devlog.mark()
    run = run_hook(python, ["conf=/nonexistent.conf"], user="bob")
    assert run.status == 0  # action_generic_failure=ignore
    errors = [r.message for r in devlog.messages(ident="slurm-adopt", since=since)
              if r.pid == run.pid and r.severity_name == "err"]
    assert any("slurm.conf" in m and "/nonexistent.conf" in m for m in errors), errors


# --- the hook's own failures ------------------------------------------------------------------------------------

class Broken(Exception):
    pass


@pytest.mark.parametrize("failure", [Broken("boom"), RecursionError(), MemoryError(), KeyboardInterrupt(),
                                     UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed")])
@pytest.mark.parametrize(("user", "action", "status"), [("root", "deny", 0), ("bob", "deny", 1), ("bob", "ignore", 0),
                                                        ("bob", "allow", 0)])
def test_an_internal_error_gives_the_documented_verdict(monkeypatch: pytest.MonkeyPatch, failure: BaseException,
                                                        user: str, action: str, status: int) -> None:
    """Whatever escapes the hook's own code: root passes, anyone else gets action_generic_failure."""
    from adopt import hook

    def explode(*args: object, **kwargs: object) -> None:
        raise failure

    logged: list[tuple[str, str]] = []
    monkeypatch.setattr(hook, "quiet_stderr", lambda: None)
    monkeypatch.setattr(hook, "syslog_logger", lambda level: lambda name, message: logged.append((name, message)))
    monkeypatch.setattr(hook, "account", explode)
    env = {"PAM_TYPE": "account", "PAM_USER": user, "PAM_SERVICE": "sshd"}
    assert hook.pam_main([f"action_generic_failure={action}"], env) == status
    assert any(name == "error" and "internal error" in message for name, message in logged), logged


# --- forged answers ------------------------------------------------------------------------------------------

def test_forged_callerid_answer_is_never_believed(python: str, fake_slurmd: FakeSlurmd, munged: Munged,
                                                  tmp_path: Path, held_connection: str,
                                                  devlog: DevLogCatcher) -> None:
    """A user's process listening on the slurmd port answers "job 952" with a credential of its own: a
    valid MUNGE credential, but not root's or SlurmdUser's. The hook refuses to believe it (the C module
    would adopt into the job it names)."""
    from slurmproto.messages import NetworkCallerIdResponse
    from tests.support.peers import ScriptedPeer, send
    from tests.test_hostile_client import forged

    alice = pwd.getpwnam("alice")
    fake_slurmd.add_job({"job_id": 951, "user": "alice", "start_time": 1})
    fake_slurmd.add_job({"job_id": 952, "user": "alice", "start_time": 2})
    answer = forged(NetworkCallerIdResponse(952, 0, "node1"), alice, munged)
    with ScriptedPeer(send(answer)) as peer:
        text = fake_slurmd.slurm_conf(tmp_path / "fake.conf").read_text()
        conf = tmp_path / "forged.conf"
        conf.write_text(re.sub(r"(?m)^SlurmdPort=\d+$", f"SlurmdPort={peer.port}", text))
        since = devlog.mark()
        run = run_hook(python, [f"conf={conf}", "nodename=node1", "protocol_version=24.11", "action_unknown=deny"],
                       user="alice", env={"SSH_CONNECTION": held_connection})
    assert peer.received, "the hook did not ask the forging peer"
    assert run.status == 1 and b"unable to determine source job" in run.stdout, run
    assert fake_slurmd.adopted(951) == fake_slurmd.adopted(952) == []
    errors = [r.message for r in devlog.messages(ident="slurm-adopt", since=since) if r.severity_name == "err"]
    assert any(f"signed by uid {alice.pw_uid}" in m for m in errors), errors


# --- the watchdog ---------------------------------------------------------------------------------------------

WATCHDOG = "from adopt.hook import _watchdog; _watchdog(0.3, 7, lambda level, message: None); "


@pytest.mark.parametrize(("work", "status"), [
    ("import time; time.sleep(30)", 7),  # waiting: the watchdog thread ends it with the failure status
    ("sum(range(10**12))", -14),  # one C call holding the GIL: SIGALRM's default action, 0.5 s later
], ids=["blocked", "gil-held"])
def test_watchdog_ends_the_hook_whatever_it_does(python: str, work: str, status: int) -> None:
    began = time.monotonic()
    proc = subprocess.run([python, "-I", "-c", WATCHDOG + work], capture_output=True, timeout=20)
    assert proc.returncode == status and time.monotonic() - began < 1.5, proc
