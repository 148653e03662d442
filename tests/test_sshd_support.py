"""The SSH test infrastructure itself: real sshd, real PAM stacks, real ssh client, our own /dev/log."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fake_slurmd.pamexec import pam_exec_env, sshd_pam_env
from fake_slurmd.plugin import SshdFactory
from tests.support.procs import need_programs, need_root
from tests.support.sshd import PROGRAMS as SSHD_PROGRAMS
from tests.support.sshd import SSHD, Sshd
from tests.support.syslog import DevLogCatcher, DevLogUnavailable, parse

# A PAM account hook for pam_exec: records how it was run, then prints and exits as behaviour.json says.
# Python rather than sh so that its parent is pam_exec's process (sshd) with no shell in between; the
# environment is read from /proc because Python itself adds LC_CTYPE to os.environ (PEP 538).
HOOK = r'''#!/usr/bin/python3 -I
import json, os, sys

state = sys.argv[1]
ppid = os.getppid()
with open(f"/proc/{ppid}/stat") as f:
    grandparent = int(f.read().rsplit(")", 1)[1].split()[1])
with open("/proc/self/environ") as f:
    env = dict(item.split("=", 1) for item in f.read().split("\0") if "=" in item)
with open(f"/proc/{ppid}/comm") as f:
    parent_comm = f.read().strip()
record = {
    "argv": sys.argv[1:], "env": env, "uid": os.getuid(), "ppid": ppid, "parent_comm": parent_comm,
    "parent_exe": os.readlink(f"/proc/{ppid}/exe"), "grandparent": grandparent,
}
with open(os.path.join(state, "records.jsonl"), "a") as f:
    f.write(json.dumps(record) + "\n")
with open(os.path.join(state, "behaviour.json")) as f:
    behaviour = json.load(f)
print(behaviour["message"], flush=True)
sys.exit(behaviour["exit"])
'''

_CONNECTION = re.compile(r"Connection from (\S+) port (\d+) on (\S+) port (\d+)")


class Hook:
    """The hook script and its state in a world-readable temp dir (pam_exec runs it as root, but from sshd)."""

    def __init__(self, base: Path) -> None:
        self.dir = base
        self.script = base / "hook.py"
        self.script.write_text(HOOK)
        os.chmod(self.script, 0o755)
        self.behave("hello from the hook", 0)

    def behave(self, message: str, exit_status: int) -> None:
        (self.dir / "behaviour.json").write_text(json.dumps({"message": message, "exit": exit_status}))

    def records(self) -> list[dict[str, Any]]:
        path = self.dir / "records.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def account_line(self) -> str:
        # {service} is filled in by Sshd: the hook sees it as its second argument.
        return f"required pam_exec.so stdout {self.script} {self.dir} {{service}}"


@pytest.fixture
def hook() -> Iterator[Hook]:
    base = Path(tempfile.mkdtemp(prefix="sat-hook-"))
    os.chmod(base, 0o755)
    try:
        yield Hook(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def connections(sshd: Sshd) -> list[tuple[str, int, str, int]]:
    """(client ip, client port, server ip, server port) of each connection, from sshd's VERBOSE log."""
    return [(m[1], int(m[2]), m[3], int(m[4])) for m in _CONNECTION.finditer(sshd.log_text())]


# -- logging in -----------------------------------------------------------------------------------------------


def test_permit_lets_alice_and_root_in(sshd_factory: SshdFactory) -> None:
    sshd = sshd_factory(["required pam_permit.so"], users=["alice"])
    result = sshd.ssh("alice", 'id -un; echo "$SSH_CONNECTION"')
    assert result.returncode == 0, result.stderr
    name, connection = result.stdout.splitlines()
    assert name == "alice"
    assert connection.split()[2:] == ["127.0.0.1", str(sshd.port)]
    root = sshd.ssh("root", ["id", "-un"])
    assert (root.returncode, root.stdout) == (0, "root\n"), root.stderr


def test_permit_over_ipv6(sshd_factory: SshdFactory) -> None:
    sshd = sshd_factory(["required pam_permit.so"], users=["alice"])
    if "::1" not in sshd.listen:
        pytest.skip("no ::1 on this machine")
    result = sshd.ssh("alice", 'id -un; echo "$SSH_CONNECTION"', host="::1")
    assert result.returncode == 0, result.stderr
    name, connection = result.stdout.splitlines()
    assert name == "alice"
    client_ip, _, server_ip, server_port = connection.split()
    assert (client_ip, server_ip, server_port) == ("::1", "::1", str(sshd.port))


def test_deny_refuses_and_sshd_logs_the_account_failure(sshd_factory: SshdFactory) -> None:
    sshd = sshd_factory(["required pam_deny.so"], users=["alice"])
    result = sshd.ssh("alice", "id -un")
    assert result.returncode == 255
    assert result.stdout == ""
    # The key is fine; PAM's account stack is what refuses.
    log = sshd.wait_for_log("Access denied for user alice by PAM account configuration [preauth]")
    assert "Failed publickey for alice from 127.0.0.1" in log


# -- pam_exec: messages, exit status, environment, parent --------------------------------------------------


def test_pam_exec_hook_refuses_with_a_message_then_admits(sshd_factory: SshdFactory, hook: Hook) -> None:
    sshd = sshd_factory([hook.account_line()], users=["alice"], env={"SAT_SSHD_ONLY": "1"})

    hook.behave("Access denied by test hook: no job of yours here", 1)
    refused = sshd.ssh("alice", "id -un")
    assert refused.returncode == 255
    assert refused.stdout == ""
    # The hook's stdout reaches the client as a banner; so does pam_exec's own error (unless "quiet").
    assert "Access denied by test hook: no job of yours here" in refused.stderr
    assert f"{hook.script} failed: exit code 1" in refused.stderr
    sshd.wait_for_log("Access denied for user alice by PAM account configuration [preauth]")
    # At LogLevel=ERROR ssh hides banners, PAM messages included.
    quiet = sshd.ssh("alice", "id -un", log_level="ERROR")
    assert quiet.returncode == 255
    assert "no job of yours" not in quiet.stderr

    hook.behave("welcome, alice", 0)
    admitted = sshd.ssh("alice", "id -un")
    assert (admitted.returncode, admitted.stdout) == (0, "alice\n"), admitted.stderr
    assert "welcome, alice" in admitted.stderr

    records = hook.records()
    # The account stack runs once per login (not for the key probe before the signature).
    assert len(records) == 3
    seen = connections(sshd)
    assert len(seen) == 3
    for record, (client_ip, client_port, server_ip, server_port) in zip(records, seen, strict=True):
        env = record["env"]
        assert env["PAM_USER"] == "alice"
        assert env["PAM_SERVICE"] == sshd.service
        assert env["PAM_TYPE"] == "account"
        assert env["PAM_RHOST"] == "127.0.0.1"
        assert env["SSH_CONNECTION"] == f"{client_ip} {client_port} {server_ip} {server_port}"
        assert (client_ip, server_ip, server_port) == ("127.0.0.1", "127.0.0.1", sshd.port)
        # pam_exec passes on the PAM environment only, not sshd's own.
        assert "SAT_SSHD_ONLY" not in env
        assert record["argv"] == [str(hook.dir), sshd.service]
        assert record["uid"] == 0
        # The parent is the per-connection sshd (monitor), child of the listener we started.
        assert record["parent_exe"] == SSHD
        assert record["parent_comm"] == sshd.service
        assert record["grandparent"] == sshd.pid


def test_pam_exec_hook_sees_ipv6_connection(sshd_factory: SshdFactory, hook: Hook) -> None:
    sshd = sshd_factory([hook.account_line()], users=["bob"])
    if "::1" not in sshd.listen:
        pytest.skip("no ::1 on this machine")
    result = sshd.ssh("bob", "true", host="::1")
    assert result.returncode == 0, result.stderr
    [record] = hook.records()
    [(client_ip, client_port, server_ip, server_port)] = connections(sshd)
    assert record["env"]["SSH_CONNECTION"] == f"::1 {client_port} ::1 {sshd.port}"
    assert (client_ip, server_ip, server_port) == ("::1", "::1", sshd.port)
    assert record["env"]["PAM_RHOST"] == "::1"
    assert record["env"]["PAM_USER"] == "bob"


# -- syslog ---------------------------------------------------------------------------------------------------


def test_pam_module_syslog_is_caught(sshd_factory: SshdFactory, hook: Hook, devlog: DevLogCatcher) -> None:
    sshd = sshd_factory([hook.account_line()], users=["alice"])
    hook.behave("no", 1)
    mark = devlog.mark()
    assert sshd.ssh("alice", "true").returncode == 255
    record = devlog.wait_for("failed: exit code 1", ident=sshd.service, since=mark)
    # syslog(3) from inside sshd: no openlog(), so the ident is the program name (our symlink) and no pid.
    assert record.message == f"pam_exec({sshd.service}:account): {hook.script} failed: exit code 1"
    assert (record.facility_name, record.severity_name, record.pid) == ("authpriv", "err", None)


def test_devlog_parses_glibc_logger_and_raw_datagrams(devlog: DevLogCatcher) -> None:
    mark = devlog.mark()
    program = ("import syslog; syslog.openlog('sat-glibc', syslog.LOG_PID, syslog.LOG_AUTHPRIV); "
               "syslog.syslog(syslog.LOG_WARNING, 'from glibc: with [brackets]')")
    sender = subprocess.run(["/usr/bin/python3", "-c", program], check=True)
    assert sender.returncode == 0
    subprocess.run(["logger", "-u", "/dev/log", "-t", "sat-logger", "-p", "local3.notice", "from logger"], check=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"<38>Jan  2 03:04:05 sat-raw[42]: raw datagram\n", "/dev/log")

    glibc = devlog.wait_for("from glibc", ident="sat-glibc", since=mark)
    assert (glibc.facility_name, glibc.severity_name) == ("authpriv", "warning")
    assert glibc.pid is not None and glibc.pid > 0
    assert glibc.message == "from glibc: with [brackets]"
    logger = devlog.wait_for("from logger", ident="sat-logger", since=mark)
    assert (logger.facility_name, logger.severity_name, logger.message) == ("local3", "notice", "from logger")
    raw = devlog.wait_for(lambda r: r.ident == "sat-raw", since=mark)
    assert (raw.facility_name, raw.severity_name, raw.pid, raw.timestamp) == ("auth", "info", 42, "Jan  2 03:04:05")
    assert raw.message == "raw datagram"
    assert [r.message for r in devlog.messages("sat-raw", since=mark)] == ["raw datagram"]
    with pytest.raises(TimeoutError, match="never sent"):
        devlog.wait_for("never sent", 0.1, since=mark)


def test_parse() -> None:
    r = parse(b"<83>Nov 29 14:59:07 sat-1: pam_exec(sat-1:account): /x failed: exit code 1")
    assert (r.facility, r.severity, r.ident, r.pid, r.hostname) == (10, 3, "sat-1", None, None)
    assert r.message == "pam_exec(sat-1:account): /x failed: exit code 1"
    r = parse("<14>Nov  9 01:02:03 vm root: three")  # logger --rfc3164 adds the hostname
    assert (r.hostname, r.ident, r.message, r.timestamp) == ("vm", "root", "three", "Nov  9 01:02:03")
    r = parse('<14>1 2024-01-02T03:04:05+00:00 vm tag5 77 - [timeQuality tzKnown="1"] five')
    assert (r.ident, r.pid, r.hostname, r.message) == ("tag5", 77, "vm", "five")
    r = parse("<13>no header at all")
    assert (r.facility, r.severity, r.ident, r.message) == (1, 5, None, "no header at all")
    r = parse("garbage")
    assert (r.facility, r.message) == (-1, "garbage")


def test_catcher_leaves_a_served_socket_alone_and_replaces_a_stale_one(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as served:
        served.bind(str(path))
        with pytest.raises(DevLogUnavailable, match="served by another process"):
            DevLogCatcher(path).start()
        assert path.exists()
    # The socket object is closed, its file remains: stale.
    with DevLogCatcher(path) as catcher:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"<13>Jan  1 00:00:00 t: hi", str(path))
        assert catcher.wait_for("hi", 2).ident == "t"
        with pytest.raises(DevLogUnavailable, match="another DevLogCatcher"):
            DevLogCatcher(path).start()
    assert not path.exists()
    path.write_text("not a socket")
    with pytest.raises(DevLogUnavailable, match="not a socket"):
        DevLogCatcher(path).start()
    assert path.read_text() == "not a socket"


# -- lifecycle ------------------------------------------------------------------------------------------------


def test_stop_removes_pam_file_dir_and_process(sshd_factory: SshdFactory) -> None:
    sshd = sshd_factory(["required pam_permit.so"])
    text = sshd.pam_file.read_text()
    assert "account  required pam_permit.so\n" in text
    assert "auth     required pam_permit.so\n" in text
    assert "password required pam_deny.so\n" in text
    assert Path(f"/proc/{sshd.pid}/exe").resolve() == Path(SSHD)
    pid = sshd.pid
    sshd.stop()
    assert not sshd.pam_file.exists()
    assert not sshd.base.exists()
    assert not Path(f"/proc/{pid}").exists()
    sshd.stop()  # twice is fine


def test_logins_re_exec_sshd_unless_told_not_to(sshd_factory: SshdFactory) -> None:
    """Each login's PAM stack runs in a freshly executed sshd (OpenSSH's default re-exec); `args=["-r"]`
    makes it a fork of the listener. Needs address space randomisation to tell them apart."""
    if Path("/proc/sys/kernel/randomize_va_space").read_text().strip() == "0":
        pytest.skip("address space randomisation is off (kernel.randomize_va_space=0): a fork and an exec "
                    "map sshd at the same place")
    assert not sshd_factory(["required pam_permit.so"]).login_is_a_fork()
    assert sshd_factory(["required pam_permit.so"], args=["-r"]).login_is_a_fork()


def test_failed_start_leaves_nothing_behind() -> None:
    reason = need_root("running sshd") or need_programs(*SSHD_PROGRAMS)
    if reason:
        pytest.skip(reason)
    sshd = Sshd(["required pam_permit.so"], extra_config=["NoSuchOption yes"])
    with pytest.raises(RuntimeError, match="Bad configuration option: NoSuchOption"):
        sshd.start()
    assert not sshd.pam_file.exists()
    assert not sshd.base.exists()


def test_arguments_are_checked_before_anything_is_created() -> None:
    with pytest.raises(ValueError, match="not a loopback address"):
        Sshd(["required pam_permit.so"], listen=["0.0.0.0"])
    with pytest.raises(ValueError, match="SLURM_CONF"):
        Sshd(["required pam_slurm_adopt.so"])
    with pytest.raises(TypeError):
        Sshd("required pam_permit.so")


def test_run_hook_gives_the_environment_pam_exec_gives(sshd_factory: SshdFactory, hook: Hook) -> None:
    """fake_slurmd.pamexec builds, name for name, value for value and in order, what a real sshd's
    pam_exec hands its command (sshd's own environment left out; the PAM environment first)."""
    sshd = sshd_factory([hook.account_line()], users=["alice"], env={"SAT_SSHD_ONLY": "1"})
    assert sshd.ssh("alice", "true").returncode == 0
    [record] = hook.records()
    real = record["env"]
    expected = pam_exec_env("alice", service=sshd.service, rhost="127.0.0.1", tty="ssh",
                            pam_env=sshd_pam_env(real.get("SSH_CONNECTION", "")))
    assert list(real.items()) == list(expected.items())
