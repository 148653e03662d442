"""Starting the daemons the tests own (stopping them: fake_slurmd.processes.stop_process, by the pid we started)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fake_slurmd.sshd import ensure_user

__all__ = ["chown_tree", "ensure_user", "installed_or_skip", "installed_script", "need_programs", "need_root",
           "runnable_by_others", "wait_for"]


def need_root(what: str) -> str | None:
    """A skip reason when not root, else None."""
    return None if os.geteuid() == 0 else f"{what} needs root (CI runs as root)"


def need_programs(*names: str) -> str | None:
    """A skip reason naming the missing programs and their Debian packages, else None."""
    missing = [n for n in names if shutil.which(n, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None]
    if missing:
        return f"needs {', '.join(missing)} (apt-get install munge slurmctld slurmd slurm-client openssh-server)"
    return None


def wait_for(check: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[Any] | None = None) -> None:
    """Poll `check` until true; fail with `what` if it times out or `proc` exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process {proc.pid} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not ready after {timeout} s")
        time.sleep(0.05)


def chown_tree(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, d) for d in dirs), *(os.path.join(root, f) for f in files)]:
            os.chown(name, entry.pw_uid, entry.pw_gid)


def installed_script(name: str) -> str | None:
    """The project's console script next to the running interpreter (the tox env), or None."""
    import sys

    path = os.path.join(os.path.dirname(sys.executable), name)
    return path if os.access(path, os.X_OK) else None


def runnable_by_others(path: str) -> bool:
    """Whether every directory up to `path` and the interpreter it runs can be used by other users."""
    import sys

    for target in (path, os.path.realpath(sys.executable)):
        current = os.path.realpath(target)
        while True:
            mode = os.stat(current).st_mode
            if not mode & 0o001:
                return False
            parent = os.path.dirname(current)
            if parent == current:
                break
            current = parent
    return True


def installed_or_skip(name: str, *, for_other_users: bool = False) -> str:
    """The console script `name` of this environment, or a pytest skip saying how to get it."""
    import pytest

    path = installed_script(name)
    if path is None:
        pytest.skip(f"{name} is not installed next to this interpreter (run the tests through tox)")
    if for_other_users and not runnable_by_others(path):
        pytest.skip(f"{path} cannot be run by other users (tox's work_dir must be world-traversable)")
    return path


PAM_PYTHON = "/lib/security/pam_python.so"
"""Debian's libpam-python, which loads the in-process module."""


def pam_module_or_skip() -> str:
    """The installed in-process module's file (`slurm-adopt --print-pam-module`), or a pytest skip saying
    what is missing (libpam-python, or the installed tools)."""
    import pytest

    if not os.path.exists(PAM_PYTHON):
        pytest.skip(f"needs {PAM_PYTHON} (apt-get install libpam-python)")
    script = installed_or_skip("slurm-adopt")
    return subprocess.run([script, "--print-pam-module"], capture_output=True, text=True, check=True,
                          timeout=30).stdout.strip()
