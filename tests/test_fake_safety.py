"""fake_slurmd as an admin meets it: a free port when nothing is configured, a slurm.conf that sends no
client to a real controller and is never written through a symlink, private spool dirs, --help and
--version, and an unknown address family answered like slurmd answers it."""

from __future__ import annotations

import dataclasses
import errno
import importlib.metadata
import os
import pwd
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fake_slurmd.controller import FakeSlurmd
from fake_slurmd.scenario import Job, NodeSpec, Scenario
from slurmproto.client import Endpoint, callerid_request
from slurmproto.codec import decode_stream, sign_and_encode
from slurmproto.constants import NO_VAL
from slurmproto.messages import NetworkCallerIdResponse
from slurmproto.munge import MungeContext
from tests.support.munged import Munged
from tests.support.procs import installed_or_skip, need_root

# --- the command ---------------------------------------------------------------------------------------


def _run(script: str, *args: str, cwd: Path | None = None) -> tuple[subprocess.Popen[str], list[str]]:
    """Start fake-slurmd; return it and the words of its first stdout line."""
    proc = subprocess.Popen([script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().split()


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return out, err


def test_nothing_configured_picks_a_free_port_and_prints_it(tmp_path: Path) -> None:
    script = installed_or_skip("fake-slurmd")
    proc, words = _run(script, cwd=tmp_path)
    try:
        assert words[:3] == ["listening", "node1", "127.0.0.1"] and words[3].isdigit(), words
        port = int(words[3])
        assert port not in (0, 6818)
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # it listens there
    finally:
        out, err = _stop(proc)
    assert out == ""  # nothing but the one line, ever
    assert f"fake-slurmd: serving node1 on 127.0.0.1:{port}; step sockets in " in err


def test_help_documents_the_port_line() -> None:
    script = installed_or_skip("fake-slurmd")
    proc = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stderr == ""
    assert "listening NAME ADDRESS PORT" in proc.stdout and "--version" in proc.stdout
    assert "never slurmd's 6818" in proc.stdout


def test_version_from_package_metadata() -> None:
    script = installed_or_skip("fake-slurmd")
    proc = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stdout) == (0, f"fake-slurmd {importlib.metadata.version('slurm-adopt-toolkit')}\n")


def test_cli_slurm_conf_through_a_symlink_leaves_the_victim(tmp_path: Path) -> None:
    script = installed_or_skip("fake-slurmd")
    victim = _victim(tmp_path)
    link = tmp_path / "slurm.conf"
    link.symlink_to(victim)
    proc, words = _run(script, "--slurm-conf", str(link))
    try:
        assert words and words[0] == "listening"
        assert f"SlurmdPort={words[3]}" in link.read_text() and not link.is_symlink()
    finally:
        _stop(proc)
    assert victim.read_text() == "root's own file\n" and stat.S_IMODE(victim.stat().st_mode) == 0o600


def test_cli_refuses_a_spool_dir_others_may_write(tmp_path: Path) -> None:
    script = installed_or_skip("fake-slurmd")
    spool = tmp_path / "spool"
    spool.mkdir()
    os.chmod(spool, 0o777)
    proc = subprocess.run([script, "--spool-dir", str(spool)], capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == f"fake-slurmd: [Errno 1] spool dir is writable by others (mode 0777): '{spool}'\n"
    assert stat.S_IMODE(spool.stat().st_mode) == 0o777  # refused, not changed


# --- slurm.conf -----------------------------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeSlurmd]:
    """No munged needed: nothing here sends a request."""
    with FakeSlurmd(Scenario([NodeSpec("node1", port=0)])) as running:
        yield running


def _conf(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and " " not in line)


def _victim(directory: Path) -> Path:
    victim = directory / "victim"
    victim.write_text("root's own file\n")
    os.chmod(victim, 0o600)
    return victim


def test_slurm_conf_names_no_live_controller(fake: FakeSlurmd, tmp_path: Path) -> None:
    conf = _conf(fake.slurm_conf(tmp_path / "slurm.conf"))
    assert conf["SlurmctldHost"] == "localhost(127.0.0.1)"
    port = int(conf["SlurmctldPort"])
    assert port not in (6817, fake.port)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)
    for address in ("127.0.0.1", "0.0.0.0"):  # nobody can start a controller there while the fake runs
        with socket.socket() as other, pytest.raises(OSError) as info:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            other.bind((address, port))
        assert info.value.errno == errno.EADDRINUSE
    assert _conf(fake.slurm_conf(tmp_path / "again.conf"))["SlurmctldPort"] == str(port)  # one port per fake


def test_slurm_conf_replaces_a_symlink_not_its_target(fake: FakeSlurmd, tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    link = tmp_path / "slurm.conf"
    link.symlink_to(victim)
    fake.slurm_conf(link)
    assert victim.read_text() == "root's own file\n" and stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert not link.is_symlink() and _conf(link)["SlurmdPort"] == str(fake.port)


def test_slurm_conf_dangling_symlink_creates_nothing_elsewhere(fake: FakeSlurmd, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    target = tmp_path / "elsewhere" / "created"
    link = tmp_path / "slurm.conf"
    link.symlink_to(target)
    fake.slurm_conf(link)
    assert not target.exists() and link.is_file() and not link.is_symlink()


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o444])
def test_slurm_conf_keeps_an_existing_files_mode(fake: FakeSlurmd, tmp_path: Path, mode: int) -> None:
    path = tmp_path / "slurm.conf"
    path.write_text("old\n")
    os.chmod(path, mode)
    fake.slurm_conf(path)
    assert stat.S_IMODE(path.stat().st_mode) == mode and "SlurmdPort=" in path.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slurm.conf"]  # no temp file left


def test_slurm_conf_new_file_is_readable_by_all(fake: FakeSlurmd, tmp_path: Path) -> None:
    path = fake.slurm_conf(tmp_path / "slurm.conf")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_slurm_conf_on_a_directory_fails_cleanly(fake: FakeSlurmd, tmp_path: Path) -> None:
    (tmp_path / "slurm.conf").mkdir()
    with pytest.raises(IsADirectoryError):
        fake.slurm_conf(tmp_path / "slurm.conf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slurm.conf"]


# --- spool dirs -----------------------------------------------------------------------------------------


def test_own_spool_dir_is_private(fake: FakeSlurmd) -> None:
    st = os.stat(fake.spool_dir)
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o700, os.geteuid())


def test_given_spool_dir_is_made_private(tmp_path: Path) -> None:
    spool = tmp_path / "a" / "spool"
    with FakeSlurmd(Scenario([NodeSpec("node1", port=0)]), spool_dir=str(spool)):
        assert stat.S_IMODE(spool.stat().st_mode) == 0o700
    assert spool.is_dir()  # given, so kept


def test_existing_spool_dir_keeps_its_mode(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    os.chmod(spool, 0o750)
    with FakeSlurmd(Scenario([NodeSpec("node1", port=0)]), spool_dir=str(spool)):
        assert stat.S_IMODE(spool.stat().st_mode) == 0o750


def _nobodys(tmp_path: Path) -> Path:
    reason = need_root("a directory of another user's")
    if reason:
        pytest.skip(reason)
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o755)
    os.chown(spool, pwd.getpwnam("nobody").pw_uid, -1)
    return spool


def _writable(mode: int) -> Callable[[Path], Path]:
    def make(tmp_path: Path) -> Path:
        spool = tmp_path / "spool"
        spool.mkdir()
        os.chmod(spool, mode)
        return spool
    return make


def _a_file(tmp_path: Path) -> Path:
    (tmp_path / "spool").write_text("")
    return tmp_path / "spool"


@pytest.mark.parametrize(("make", "reason"), [
    (_writable(0o777), "spool dir is writable by others (mode 0777)"),
    (_writable(0o1777), "spool dir is writable by others (mode 1777)"),
    (_writable(0o770), "spool dir is writable by others (mode 0770)"),
    (_nobodys, "spool dir is owned by uid 65534, not by this user"),
    (_a_file, "spool dir is not a directory"),
], ids=["world-writable", "sticky", "group-writable", "another user's", "a file"])
def test_unsafe_spool_dir_is_refused(tmp_path: Path, make: Callable[[Path], Path], reason: str) -> None:
    spool = make(tmp_path)
    before = os.lstat(spool)
    with pytest.raises(OSError) as info:
        FakeSlurmd(Scenario([NodeSpec("node1", port=0)]), spool_dir=str(spool)).start()
    assert reason in str(info.value)
    after = os.lstat(spool)
    assert (after.st_mode, after.st_uid) == (before.st_mode, before.st_uid)  # refused, not changed
    assert not any(p.name.startswith("node1_") for p in spool.iterdir()) if spool.is_dir() else True


# --- an unknown address family --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0), backlog=16) as server:
        yield server


def _ask(fake: FakeSlurmd, munged: Munged, local: tuple[str, int], remote: tuple[str, int], af: int) -> int:
    message = dataclasses.replace(callerid_request(Endpoint.parse(local[0]), local[1], Endpoint.parse(remote[0]),
                                                   remote[1]), af=af)
    with MungeContext(munged.socket) as munge:
        frame = sign_and_encode(message, 0x2600, munge.encode)
    with socket.create_connection(("127.0.0.1", fake.port), timeout=10) as sock:
        sock.sendall(frame)
        reply = b"".join(iter(lambda: sock.recv(65536), b""))
    [answer] = decode_stream(reply)
    assert isinstance(answer.message, NetworkCallerIdResponse)
    return int(answer.message.job_id)


@pytest.mark.parametrize("af", [0, 1, 7, 0xFFFFFFFF])
def test_unknown_address_family_is_answered_like_slurmd(munged: Munged, listener: socket.socket, af: int,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """slurmd ignores af: it looks the addresses up in /proc/net/tcp (4 bytes), then tcp6 (16 bytes)."""
    scenario = Scenario([NodeSpec("node1", port=0)], {8: Job(8, 0)})
    caplog.set_level("DEBUG", logger="fake_slurmd")
    with FakeSlurmd(scenario, munge_socket=str(munged.socket)) as fake, \
            fake.connect_from_job(8, *listener.getsockname()) as conn:
        started = time.monotonic()
        assert _ask(fake, munged, conn.local, conn.remote, af) == 8
        assert _ask(fake, munged, ("127.0.0.1", 1), ("127.0.0.1", 2), af) == NO_VAL
        assert time.monotonic() - started < 5
    events = [(r.getMessage(), getattr(r, "fields", {})) for r in caplog.records if r.name == "fake_slurmd"]
    unknown = [f for m, f in events if m == "unknown address family"]
    assert len(unknown) == 2 and all(f["af"] == af for f in unknown)
    assert not [m for m, f in events if m == "error"]
    verdicts = [f["verdict"] for m, f in events if m == "request"]
    assert any(v.endswith(": job 8") for v in verdicts) and any("NO_VAL (no such connection)" in v for v in verdicts)
