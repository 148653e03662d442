"""slurm-adopt-agent as systemd runs it (tests/support/agent.py plays systemd's part): socket activation,
root-only callers, callers waiting for the concurrency cap, slurm.conf re-read when it changes,
stop/crash/restart, memory over 100,000 requests, and the systemd units themselves."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adopt import wire
from adopt.decision import NO_JOBS
from adopt.wire import Reply, Request
from tests.support.agent import AgentProcess
from tests.support.procs import installed_or_skip, need_root

UNITS = Path(__file__).resolve().parents[1] / "packaging" / "systemd"
pytestmark = pytest.mark.skipif(bool(need_root("slurm-adopt-agent")), reason=str(need_root("slurm-adopt-agent")))


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProcess]:
    installed_or_skip("slurm-adopt-agent")
    with AgentProcess(tmp_path / "run" / "agent.socket") as started:
        yield started.start()


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    """This host as node n1, with no steps at all."""
    spool = tmp_path / "spool"
    spool.mkdir()
    path = tmp_path / "slurm.conf"
    path.write_text(f"ClusterName=t\nSlurmctldHost=localhost\nSlurmdSpoolDir={spool}\nNodeName=n1 "
                    f"NodeHostname={socket.gethostname()} NodeAddr=127.0.0.1\n")
    return path


def request(*args: str, user: str | None = "alice", service: str | None = "sshd") -> Request:
    return Request(2000, os.getpid(), user, service, None, args)


def ask(agent: AgentProcess, req: Request, timeout: float = 5) -> Reply | None:
    return wire.ask(str(agent.path), req, timeout)


def test_socket_activated_agent_answers_as_the_hook_would(agent: AgentProcess, conf: Path) -> None:
    reply = ask(agent, request(f"conf={conf}", "nodename=n1", "log_level=debug"))
    assert reply is not None and (reply.status, reply.message) == (1, NO_JOBS)
    assert ("info", f"alice: PAM_PERM_DENIED, refused: uid {_uid('alice')} owns no jobs => deny") in reply.log
    ignored = ask(agent, request(service="login"))
    assert ignored == Reply(0, None, ())  # log_level=info keeps the debug line out
    assert ask(agent, request("log_level=debug", user="root")) == Reply(
        0, None, (("debug", "PAM_IGNORE: Ignoring root user"),))
    assert agent.answered() == 3


def _uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


def test_slurm_conf_is_read_again_when_it_changes(agent: AgentProcess, conf: Path) -> None:
    args = (f"conf={conf}",)
    assert ask(agent, request(*args)) == Reply(1, NO_JOBS, (("info", f"send_user_msg: {NO_JOBS}"), (
        "info", f"alice: PAM_PERM_DENIED, refused: uid {_uid('alice')} owns no jobs => deny")))
    good = conf.read_text()
    conf.write_text(good + "Include /nonexistent/part.conf\n")
    broken = ask(agent, request(*args))
    assert broken is not None and broken.status == 0 and broken.message is None  # action_generic_failure=ignore
    assert any(level == "error" and text.startswith("slurm.conf:") for level, text in broken.log), broken.log
    conf.write_text(good.replace(f"NodeHostname={socket.gethostname()}", "NodeHostname=elsewhere"))
    moved = ask(agent, request(*args))  # no node is this host any more
    assert moved is not None and ("error", "cannot determine this node's NodeName (set nodename=)") in moved.log


def test_problems_with_the_options_come_back_as_log_lines(agent: AgentProcess) -> None:
    reply = ask(agent, request("bogus=1", service="login"))
    assert reply == Reply(0, None, (("error", "ignoring unrecognized option 'bogus=1'"),))


def test_only_root_callers() -> None:
    """nobody connects and sends a good request: the connection is closed, nothing answered."""
    installed_or_skip("slurm-adopt-agent")
    with tempfile.TemporaryDirectory(dir="/tmp") as where, AgentProcess(Path(where) / "run" / "s") as agent:
        os.chmod(where, 0o711)  # pytest's tmp_path is root's alone
        agent.start()
        agent.path.parent.chmod(0o711)
        agent.path.chmod(0o666)  # only here: the unit's 0600 would stop nobody before the agent's own check
        script = ("import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
                  "s.sendall(bytes.fromhex(sys.argv[2])); s.shutdown(socket.SHUT_WR)\n"
                  "try: print(repr(s.recv(100)))\nexcept ConnectionResetError: print('reset')")
        payload = wire.encode_request(request(service="login")).hex()
        proc = subprocess.run([sys.executable, "-c", script, str(agent.path), payload], user="nobody",
                              capture_output=True, text=True, timeout=30)
        assert proc.stdout.strip() in ("b''", "reset"), proc.stderr  # closed unanswered
        assert "refused a caller of uid" in agent.log_text()


def test_the_pid_to_adopt_must_be_the_caller_or_its_parent(agent: AgentProcess) -> None:
    other = subprocess.Popen(["sleep", "30"])
    try:
        assert ask(agent, Request(2000, other.pid, "alice", "login", None, ())) is None
        assert ask(agent, Request(2000, os.getppid(), "alice", "login", None, ())) == Reply(0, None, ())
    finally:
        other.kill()
        other.wait()
    assert f"asked to adopt pid {other.pid}, neither itself nor its parent" in agent.log_text()


@pytest.mark.parametrize("holder_sends", ["nothing", "a byte now and then"])
def test_excess_callers_wait_for_a_free_slot(tmp_path: Path, holder_sends: str) -> None:
    """One slot, held by a root caller that never finishes its request: the next caller waits and is
    answered once the slot is free again, a read timeout (1 s) after the holder came, however it drips.
    A caller that stops waiting first is noted and asked nothing for."""
    installed_or_skip("slurm-adopt-agent")
    with AgentProcess(tmp_path / "run" / "agent.socket", args=("--max-clients", "1", "--verbose")) as agent:
        agent.start()
        stop = threading.Event()

        def hold() -> socket.socket:
            holder = socket.socket(socket.AF_UNIX)
            holder.connect(str(agent.path))
            if holder_sends != "nothing":
                threading.Thread(target=drip, args=(holder,), daemon=True).start()
            time.sleep(0.3)
            return holder

        def drip(holder: socket.socket) -> None:
            with contextlib.suppress(OSError):  # the agent closes on it
                while not stop.wait(0.2):
                    holder.send(b"x")

        holder = hold()
        try:
            assert ask(agent, request(service="login"), timeout=0.2) is None  # gave up before the slot freed
            assert ask(agent, request(service="login"), timeout=5) == Reply(0, None, ())
            assert agent.log_text().count("gave up waiting for its turn") == 1
            assert agent.answered() == 1
        finally:
            stop.set()
            holder.close()


def test_stop_crash_and_restart(agent: AgentProcess) -> None:
    login = request(service="login")
    assert ask(agent, login) == Reply(0, None, ())
    agent.kill()
    started = time.monotonic()
    assert ask(agent, login, timeout=0.5) is None  # the backlog holds it, nobody answers: the hook's timeout
    assert time.monotonic() - started < 0.5 + 1.0
    agent.start()
    assert ask(agent, login) == Reply(0, None, ())
    agent.pause()
    assert ask(agent, login, timeout=0.5) is None
    agent.resume()
    time.sleep(0.2)
    agent.stop()  # SIGTERM, as systemctl stop
    assert agent.proc is not None and agent.proc.returncode is not None
    agent.start()
    assert ask(agent, login) == Reply(0, None, ())


def test_without_systemd_it_binds_its_own_socket(tmp_path: Path) -> None:
    path = tmp_path / "own" / "agent.socket"
    installed_or_skip("slurm-adopt-agent")
    proc = subprocess.Popen([sys.executable, "-I", "-m", "adopt.agent", "--socket", str(path)],
                            stderr=subprocess.PIPE, text=True, env={"LISTEN_FDS": "1", "LISTEN_PID": "1"})
    try:
        assert proc.stderr is not None and "ready" in proc.stderr.readline()
        assert (path.stat().st_mode & 0o777, path.parent.stat().st_mode & 0o777) == (0o600, 0o700)
        assert wire.ask(str(path), request(service="login"), 5) == Reply(0, None, ())
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("fds", ["2", "0", "x"])
def test_anything_but_one_inherited_socket_is_an_error(tmp_path: Path, fds: str) -> None:
    installed_or_skip("slurm-adopt-agent")
    launch = ("import os, sys; os.environ.update(LISTEN_FDS=sys.argv[1], LISTEN_PID=str(os.getpid())); "
              "os.execv(sys.executable, [sys.executable, '-I', '-m', 'adopt.agent', '--socket', sys.argv[2]])")
    proc = subprocess.run([sys.executable, "-c", launch, fds, str(tmp_path / "s")], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode != 0 and f"LISTEN_FDS={fds!r}: expected exactly one socket" in proc.stderr


def test_fd_3_not_a_listening_socket_is_an_error(tmp_path: Path) -> None:
    installed_or_skip("slurm-adopt-agent")
    launch = ("import os, sys; r, w = os.pipe(); os.dup2(r, 3); os.set_inheritable(3, True); "
              "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid())); "
              "os.execv(sys.executable, [sys.executable, '-I', '-m', 'adopt.agent'])")
    proc = subprocess.run([sys.executable, "-c", launch], capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "fd 3 is not a listening UNIX stream socket" in proc.stderr


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_memory_is_bounded_over_100000_requests(agent: AgentProcess, conf: Path) -> None:
    """A tenth of them read slurm.conf (kept parsed) and the node's steps; RSS after 100,000 requests
    stays within 8 MiB of what it was after the first 2,000."""
    cheap, full = request(service="login"), request(f"conf={conf}", "nodename=n1")
    path = str(agent.path)
    baseline = 0
    for i in range(100_000):
        reply = wire.ask(path, full if i % 10 == 0 else cheap, 5)
        assert reply is not None and reply.status == (1 if i % 10 == 0 else 0), i
        if i == 2000:
            baseline = _rss_kib(agent.pid)
    grown = _rss_kib(agent.pid) - baseline
    assert grown < 8 * 1024, f"RSS grew by {grown} KiB"


# --- the units ------------------------------------------------------------------------------------------------


def test_units_parse(tmp_path: Path) -> None:
    """systemd-analyze verify, with ExecStart's interpreter pointed at one that exists here."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("needs systemd-analyze (apt-get install systemd)")
    for unit in UNITS.glob("slurm-adopt-agent.*"):  # fake-slurmd@.service has its own test
        (tmp_path / unit.name).write_text(unit.read_text().replace("/opt/slurm-adopt/bin/python3", sys.executable))
    proc = subprocess.run([analyze, "verify", *sorted(str(p) for p in tmp_path.iterdir())], capture_output=True,
                          text=True, timeout=60)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")


def test_units_say_what_the_agent_and_the_hook_expect() -> None:
    socket_unit = (UNITS / "slurm-adopt-agent.socket").read_text()
    service = (UNITS / "slurm-adopt-agent.service").read_text()
    for line in (f"ListenStream={wire.DEFAULT_SOCKET}", "SocketMode=0600", "SocketUser=root", "DirectoryMode=0700"):
        assert f"\n{line}\n" in socket_unit
    assert "\nExecStart=/opt/slurm-adopt/bin/python3 -I -m adopt.agent\n" in service


def test_check_config_says_whether_the_agent_answers(agent: AgentProcess, conf: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from adopt.admin import check_config

    check_config([f"conf={conf}", "nodename=n1", f"agent_socket={agent.path}"])
    assert f"ok: slurm-adopt-agent answers at {agent.path}\n" in capsys.readouterr().out
    agent.stop()
    check_config([f"conf={conf}", "nodename=n1", f"agent_socket={agent.path}", "deadline=0.5"])
    assert f"note: no slurm-adopt-agent answers at {agent.path}: the hook decides" in capsys.readouterr().out
