"""scripts/check-tox-work-dir (run by scripts/setup): the tox work dir holds what the tests run as root, so
it must be root's alone; a root-owned one others may write is repaired, anything else is refused."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.procs import need_root

ROOT = Path(__file__).resolve().parent.parent
CHECK = ROOT / "scripts" / "check-tox-work-dir"
REFUSED = "remove it (as root) or set TOX_WORK_DIR to a directory only root can write"


@pytest.fixture(autouse=True)
def _as_root() -> None:
    reason = need_root("directories of root's and of other users'")
    if reason:
        pytest.skip(reason)


def _nobody() -> int:
    return pwd.getpwnam("nobody").pw_uid


def _check(directory: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CHECK), str(directory)], capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin"})


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _root_dir(mode: int) -> Callable[[Path], Path]:
    def make(base: Path) -> Path:
        work = base / "tox"
        work.mkdir()
        os.chmod(work, mode)
        return work
    return make


def test_missing_dir_is_created(tmp_path: Path) -> None:
    work = tmp_path / "new" / "tox"
    proc = _check(work)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert work.is_dir() and _mode(work) == 0o755 and os.stat(work).st_uid == 0


@pytest.mark.parametrize(("mode", "warned"), [(0o755, False), (0o700, False), (0o777, True), (0o775, True),
                                              (0o2777, True)])
def test_root_owned_dir_gets_mode_0755(tmp_path: Path, mode: int, warned: bool) -> None:
    work = _root_dir(mode)(tmp_path)
    proc = _check(work)
    assert proc.returncode == 0 and _mode(work) == 0o755
    assert ("now 0755" in proc.stderr) == warned, proc.stderr


def _nobodys_dir(base: Path) -> Path:
    work = _root_dir(0o755)(base)
    os.chown(work, _nobody(), -1)
    return work


def _symlink(base: Path) -> Path:
    target = _root_dir(0o755)(base)
    link = base / "link"
    link.symlink_to(target)
    return link


def _a_file(base: Path) -> Path:
    (base / "tox").write_text("")
    return base / "tox"


def _holding_nobodys_file(base: Path) -> Path:
    work = _root_dir(0o755)(base)
    (work / "planted").write_text("")
    os.chown(work / "planted", _nobody(), -1)
    return work


def _holding_writable_dir(base: Path) -> Path:
    work = _root_dir(0o755)(base)
    (work / "tests" / "bin").mkdir(parents=True)
    os.chmod(work / "tests" / "bin", 0o777)
    return work


def _in_nobodys_parent(base: Path) -> Path:
    parent = _root_dir(0o755)(base)
    os.chown(parent, _nobody(), -1)
    return parent / "tox"


def _in_writable_parent(base: Path) -> Path:
    parent = _root_dir(0o777)(base)
    return parent / "tox"


@pytest.mark.parametrize(("make", "reason"), [
    (_nobodys_dir, "is owned by uid 65534, not root"),
    (_symlink, "is a symlink"),
    (_a_file, "is not a directory"),
    (_holding_nobodys_file, "holds {work}/planted, which is not root's or is writable by group or others"),
    (_holding_writable_dir, "holds {work}/tests/bin, which is not root's or is writable by group or others"),
    (_in_nobodys_parent, "its parent {parent} is owned by uid 65534, not root"),
    (_in_writable_parent, "its parent {parent} is writable by group or others and not sticky (mode 777)"),
], ids=["another user's", "symlink", "a file", "holds another user's file", "holds a writable dir",
        "parent another user's", "parent writable"])
def test_refused(tmp_path: Path, make: Callable[[Path], Path], reason: str) -> None:
    work = make(tmp_path)
    before = os.lstat(work) if os.path.lexists(work) else None
    proc = _check(work)
    message = reason.format(work=work, parent=work.parent)
    assert proc.returncode == 1
    assert proc.stderr == f"check-tox-work-dir: {work}: {message}\ncheck-tox-work-dir: {REFUSED}\n"
    after = os.lstat(work) if os.path.lexists(work) else None
    assert (after and (after.st_mode, after.st_uid)) == (before and (before.st_mode, before.st_uid))  # untouched


def test_sticky_parent_is_fine(tmp_path: Path) -> None:
    parent = _root_dir(0o1777)(tmp_path)  # like /var/tmp: others cannot rename root's dir away
    assert _check(parent / "tox").returncode == 0


def test_relative_path_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run([str(CHECK), "tox"], capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert proc.returncode == 1 and "tox: not an absolute path" in proc.stderr
    assert not (tmp_path / "tox").exists()


def test_setup_stops_at_a_refused_work_dir(tmp_path: Path) -> None:
    """scripts/setup runs the check before it installs anything (so this stops before apt-get)."""
    work = _nobodys_dir(tmp_path)
    proc = subprocess.run([str(ROOT / "scripts" / "setup")], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "TOX_WORK_DIR": str(work)})
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"check-tox-work-dir: {work}: is owned by uid 65534, not root\n"), proc.stderr
    assert proc.stdout == ""
