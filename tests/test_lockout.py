"""The README's lock-out-safe stanza in a real sshd, with the hook working and broken in every way an
upgrade or a bad day can break it: root and the admin group still get in, everyone else is refused.

One sshd serves the module. Its account stack is Debian 12's (common-account, then the stanza in place of
pam_slurm_adopt's line); the stanza runs `<ENV>/bin/python3 -I -m adopt`, where <ENV> is a symlink
that each test points somewhere: the tox env (the working hook), nowhere (the venv removed), a venv
whose python3 is not executable, one without the project, one whose dependency raises at import, one
whose hook hangs, one whose hook dies with a traceback.
"""

from __future__ import annotations

import contextlib
import grp
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import adopt
from fake_slurmd.controller import FakeSlurmd
from tests.support.deploy import DEBIAN_COMMON_ACCOUNT, README_ADMIN_GROUP, README_ENV, find_stanza, lockout_safe_stanza
from tests.support.procs import ensure_user, installed_or_skip, need_programs, need_root
from tests.support.sessions import NO_JOBS
from tests.support.sshd import PROGRAMS as SSHD_PROGRAMS
from tests.support.sshd import Sshd

ADMIN_GROUP = "sat-admins"
ADMIN = "carol"
JOB = 710
PYVER = f"python{sys.version_info.major}.{sys.version_info.minor}"
HANG_SECONDS = 120  # the hanging hook ends by itself even if a test dies before killing it
README = Path(__file__).resolve().parent.parent / "README.md"


def ensure_admin() -> None:
    """The admin group and its member, created (as root) when missing."""
    try:
        grp.getgrnam(ADMIN_GROUP)
    except KeyError:
        subprocess.run(["groupadd", ADMIN_GROUP], check=True)
    ensure_user(ADMIN)
    if ADMIN not in grp.getgrnam(ADMIN_GROUP).gr_mem:
        subprocess.run(["usermod", "-a", "-G", ADMIN_GROUP, ADMIN], check=True)


# -- the states <ENV> can be in ------------------------------------------------------------------------------


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)


def fake_venv(path: Path, site: dict[str, str]) -> Path:
    """A venv by hand (bin/python3 and pyvenv.cfg, as `python3 -m venv` makes) with `site` in site-packages."""
    interpreter = os.path.realpath(sys.executable)
    (path / "bin").mkdir(mode=0o755, parents=True)
    (path / "bin" / "python3").symlink_to(interpreter)
    _write(path / "pyvenv.cfg", f"home = {os.path.dirname(interpreter)}\ninclude-system-site-packages = false\n")
    packages = path / "lib" / PYVER / "site-packages"
    packages.mkdir(mode=0o755, parents=True)
    for name, text in site.items():
        _write(packages / name, text)
    return path


def _not_executable(base: Path) -> Path:
    _write(base / "bin" / "python3", "#!/bin/sh\nexit 0\n", 0o644)
    return base


def _broken_dependency(base: Path) -> Path:
    """The project as installed, but a package it imports raises (a half-done upgrade)."""
    venv = fake_venv(base, {"slurmproto/__init__.py": "raise ImportError('slurmproto broken by an upgrade')\n"})
    shutil.copytree(Path(adopt.__file__).parent, venv / "lib" / PYVER / "site-packages" / "adopt")
    return venv


def _hanging(base: Path) -> Path:
    code = (f"import os, time\nwith open({str(base / 'hang.pids')!r}, 'a') as f:\n    f.write(f'{{os.getpid()}}\\n')\n"
            f"time.sleep({HANG_SECONDS})\n")
    return fake_venv(base, {"adopt/__init__.py": "", "adopt/__main__.py": code})


def _traceback(base: Path) -> Path:
    code = "def check():\n    raise RuntimeError('the hook crashed')\n\ncheck()\n"
    return fake_venv(base, {"adopt/__init__.py": "", "adopt/__main__.py": code})


BROKEN: dict[str, Callable[[Path], Path]] = {
    "env-missing": lambda base: base / "removed-by-an-upgrade",
    "python-not-executable": _not_executable,
    "project-missing": lambda base: fake_venv(base, {}),
    "dependency-raises-at-import": _broken_dependency,
    "hook-hangs": _hanging,
    "hook-prints-a-traceback": _traceback,
}


class Node:
    """The sshd with the stanza, and the <ENV> symlink it runs the hook through."""

    def __init__(self, base: Path, fake: FakeSlurmd, conf: Path) -> None:
        self.base = base
        self.fake = fake
        self.env = base / "env"
        options = [f"conf={conf}", "service={service}"]
        stack = [*DEBIAN_COMMON_ACCOUNT, *lockout_safe_stanza(str(self.env), ADMIN_GROUP, options)]
        self.sshd = Sshd(stack, users=["alice", "bob", ADMIN])

    def point_at(self, target: Path) -> None:
        """Repoint <ENV> in one rename, as an upgrade that swaps venvs would."""
        tmp = self.base / "env.new"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        os.replace(tmp, self.env)

    def login(self, user: str, timeout: float = 30) -> tuple[subprocess.CompletedProcess[str], float]:
        started = time.monotonic()
        result = self.sshd.ssh(user, "id -un", timeout=timeout)
        return result, time.monotonic() - started


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, fake_slurmd_munge_socket: str) -> Iterator[Node]:
    reason = need_root("running sshd with its own /etc/pam.d service") or need_programs(*SSHD_PROGRAMS)
    if reason:
        pytest.skip(reason)
    installed_or_skip("slurm-adopt")
    ensure_admin()
    base = tmp_path_factory.mktemp("lockout")
    with FakeSlurmd(munge_socket=fake_slurmd_munge_socket) as fake:
        fake.add_job({"job_id": JOB, "user": "alice"})
        conf = fake.slurm_conf(base / "slurm.conf")
        node = Node(base, fake, conf)
        node.point_at(Path(os.path.dirname(os.path.dirname(sys.executable))))
        with node.sshd:
            yield node


@pytest.fixture(params=list(BROKEN))
def broken(request: pytest.FixtureRequest, node: Node, tmp_path: Path) -> Iterator[str]:
    """<ENV> broken one way; afterwards, any hook left hanging is ended (by the pid it recorded)."""
    base = tmp_path / "venv"
    node.point_at(BROKEN[request.param](base))
    try:
        yield request.param
    finally:
        pids = base / "hang.pids"
        for pid in (pids.read_text().split() if pids.exists() else ()):
            end_hook(int(pid), node)
        node.point_at(Path(os.path.dirname(os.path.dirname(sys.executable))))


def end_hook(pid: int, node: Node) -> None:
    """Kill a hook this module's sshd started (checked by its command line, in case the pid was reused)."""
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        if argv0 == str(node.env / "bin" / "python3").encode():
            os.kill(pid, signal.SIGKILL)


def assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    """Nothing of an interpreter's or pam_exec's reaches the client."""
    for text in ("Traceback", 'File "', "pam_exec", "Error"):
        assert text not in result.stderr, result.stderr


# -- the working hook --------------------------------------------------------------------------------------


@pytest.mark.parametrize("user", ["root", ADMIN])
def test_working_hook_root_and_admins_pass(node: Node, user: str) -> None:
    result, _ = node.login(user)
    assert (result.returncode, result.stdout) == (0, f"{user}\n"), result.stderr
    assert_clean(result)


def test_working_hook_refuses_bob(node: Node) -> None:
    result, _ = node.login("bob")
    assert (result.returncode, result.stdout) == (255, "") and NO_JOBS in result.stderr, result.stderr
    assert_clean(result)


def test_working_hook_adopts_alice(node: Node) -> None:
    before = len(node.fake.adopted(JOB))
    result, _ = node.login("alice")
    assert (result.returncode, result.stdout) == (0, "alice\n"), result.stderr
    assert len(node.fake.adopted(JOB)) == before + 1
    assert_clean(result)


# -- broken hooks ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("user", ["root", ADMIN])
def test_broken_hook_root_and_admins_still_pass(node: Node, broken: str, user: str) -> None:
    """They never run the hook: no wait on a hanging one either."""
    result, elapsed = node.login(user)
    assert (result.returncode, result.stdout) == (0, f"{user}\n"), result.stderr
    assert_clean(result)
    assert elapsed < 5, elapsed


@pytest.mark.parametrize("user", ["bob", "alice"])
def test_broken_hook_refuses_everyone_else(node: Node, broken: str, user: str) -> None:
    before = len(node.fake.adopted(JOB))
    if broken == "hook-hangs":  # pam_exec has no timeout: the login waits as long as the hook does
        with pytest.raises(subprocess.TimeoutExpired):
            node.login(user, timeout=3)
        return
    result, _ = node.login(user)
    assert (result.returncode, result.stdout) == (255, ""), result.stderr
    assert node.fake.adopted(JOB)[before:] == []
    if broken != "hook-prints-a-traceback":  # that one's output is shown below, and is not ours to stop
        assert_clean(result)


@pytest.mark.weakness
def test_pam_exec_stdout_shows_a_crashing_hooks_traceback(node: Node) -> None:
    """pam_exec's `stdout` hands the user the hook's stderr as well (and `log=` does not change that):
    only the hook itself can keep a traceback off a terminal, which is why it sends its stderr to
    /dev/null before importing anything that could fail."""
    node.point_at(_traceback(node.base / "crashing"))
    try:
        result, _ = node.login("bob")
    finally:
        node.point_at(Path(os.path.dirname(os.path.dirname(sys.executable))))
    assert result.returncode == 255
    assert "Traceback (most recent call last):" in result.stderr and "RuntimeError: the hook crashed" in result.stderr


def test_stanza_alone_refuses_root(node: Node, tmp_path: Path) -> None:
    """Why the stanza goes after the distribution's account modules, as the README places it: Linux-PAM
    does not count a jump as a success, so when root jumps over all there is, nothing has succeeded and
    PAM refuses (PAM_PERM_DENIED), hook or no hook."""
    stack = lockout_safe_stanza(str(node.env), ADMIN_GROUP, ["service={service}"])
    with Sshd(stack, base=tmp_path / "alone") as alone:
        result = alone.ssh("root", "id -un")
        assert result.returncode == 255, result.stderr
        alone.wait_for_log("Access denied for user root by PAM account configuration")


# -- the README ------------------------------------------------------------------------------------------------


def test_readme_shows_the_tested_stanza() -> None:
    """The README's three lines are these tests' stanza (columns aligned as the README likes)."""
    found = find_stanza(README.read_text())
    assert found, f"README.md has no {lockout_safe_stanza(README_ENV, README_ADMIN_GROUP)}"
    hook_words = len(lockout_safe_stanza(README_ENV, README_ADMIN_GROUP)[2].split())
    options = found[0][2][hook_words:]
    assert all(re.fullmatch(r"[a-z_]+=\S+", option) for option in options), options
