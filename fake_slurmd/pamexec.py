"""The hook as pam.d runs it, and `run_hook()`: one run of it exactly as pam_exec would start it.

    account required pam_exec.so stdout quiet /usr/bin/env -u PYTHONEXECUTABLE -u __PYVENV_LAUNCHER__ \
        <ENV>/bin/python3 -I -m adopt [OPTIONS...]

`-I` (isolated mode) makes Python ignore every PYTHON* variable, the user site and the current directory:
the PAM environment cannot change what runs as root. Not quite: CPython 3.11 and later read
PYTHONEXECUTABLE (documented as macOS-only, but not since 3.11) and __PYVENV_LAUNCHER__ on Linux even in
isolated mode (python/cpython gh-133525). They set sys.executable, so Python looks for pyvenv.cfg, and
hence site-packages and .pth files, where they point: code of the caller's choosing would run as root
before the hook's first line. Only removing them before the interpreter starts helps, which is why the
command starts with `/usr/bin/env -u`.

What pam_exec (Linux-PAM's modules/pam_exec/pam_exec.c, account stack) gives its command, and so run_hook:
- the environment is the PAM environment (pam_getenvlist), then the PAM items PAM_SERVICE, PAM_USER,
  PAM_TTY, PAM_RHOST and PAM_RUSER that are set (an unset item is left out, not empty), then PAM_TYPE;
  nothing of the caller's environment. A PAM variable named like an item comes first in that list, and
  getenv(3) and Python's os.environ keep the first of two equal names: the PAM environment's value wins.
- stdin is an empty pipe; with the `stdout` option stdout is a pipe whose lines reach the user (pam_info)
  and stderr goes there too; without it both are /dev/null. run_hook captures them separately, so that a
  test can tell what went to stderr.
- a new session (setsid), the caller's uid (root under sshd) and working directory (sshd's: /).
- exit status 0 is PAM_SUCCESS; any other status, or a signal, is PAM_SYSTEM_ERR.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

INTERPRETER_HIJACKS = ("PYTHONEXECUTABLE", "__PYVENV_LAUNCHER__")
"""Variables that choose the interpreter's venv in spite of -I."""

PAM_ITEMS = ("PAM_SERVICE", "PAM_USER", "PAM_TTY", "PAM_RHOST", "PAM_RUSER")
"""The PAM items pam_exec exports, in its order."""

Arg = str | bytes


def hook_command(env: str, options: Sequence[str] = ()) -> str:
    """pam_exec's command: /usr/bin/env (coreutils; no shell involved) removing INTERPRETER_HIJACKS, then
    the venv `env`'s interpreter in isolated mode, running the adopt package."""
    unset = [word for name in INTERPRETER_HIJACKS for word in ("-u", name)]
    return " ".join(["/usr/bin/env", *unset, os.path.join(env, "bin", "python3"), "-I", "-m", "adopt", *options])


def thin_hook_command(env: str, options: Sequence[str] = ()) -> str:
    """The quicker form: the same interpreter without the site module (-S), running adopt/thin.py."""
    unset = [word for name in INTERPRETER_HIJACKS for word in ("-u", name)]
    scripts = glob.glob(os.path.join(env, "lib", "python3*", "site-packages", "adopt", "thin.py"))
    if not scripts:
        raise FileNotFoundError(f"no adopt/thin.py under {env}")
    return " ".join(["/usr/bin/env", *unset, os.path.join(env, "bin", "python3"), "-I", "-S", scripts[0], *options])


def hook_line(env: str, options: Sequence[str] = ()) -> str:
    """The whole pam.d line the README recommends."""
    return f"account required pam_exec.so stdout quiet {hook_command(env, options)}"


def this_env() -> str:
    """The venv (or prefix) of the running interpreter: where the project is installed."""
    return os.path.dirname(os.path.dirname(sys.executable))


@dataclass(frozen=True)
class HookRun:
    """One run: exit status (negative: killed by that signal), stdout, stderr, pam_exec's verdict."""

    status: int
    stdout: bytes
    stderr: bytes
    seconds: float
    pid: int

    @property
    def verdict(self) -> str:
        """What pam_exec returns to the account stack: PAM_SUCCESS or PAM_SYSTEM_ERR."""
        return "PAM_SUCCESS" if self.status == 0 else "PAM_SYSTEM_ERR"

    @property
    def allowed(self) -> bool:
        return self.status == 0

    @property
    def messages(self) -> list[str]:
        """The lines the user would read (pam_exec's `stdout`: one pam_info per line)."""
        return self.stdout.decode("utf-8", "replace").splitlines()


def sshd_pam_env(connection: str) -> dict[Arg, Arg]:
    """The PAM environment sshd (OpenSSH 9, Debian 12) has set up when its account stack runs, for a
    login on `connection` ("RIP RPORT LIP LPORT"): SSH_CONNECTION, then SSH_AUTH_INFO_0, empty there
    (tests/test_sshd_support.py compares a real one)."""
    return {"SSH_CONNECTION": connection, "SSH_AUTH_INFO_0": ""}


def pam_exec_env(user: Arg | None, *, service: Arg | None = "sshd", rhost: Arg | None = "127.0.0.1",
                 tty: Arg | None = "ssh", ruser: Arg | None = None, stage: Arg | None = "account",
                 pam_env: Mapping[Arg, Arg] | None = None) -> dict[Arg, Arg]:
    """The environment pam_exec builds: the PAM environment, the set items, PAM_TYPE (None: left out, which
    pam_exec never does; for testing the hook's refusal to act without it). sshd sets PAM_TTY to "ssh"
    and PAM_RHOST to the client's address; its PAM environment is sshd_pam_env()'s."""
    env: dict[Arg, Arg] = dict(pam_env or {})
    items = dict(zip(PAM_ITEMS, (service, user, tty, rhost, ruser), strict=True))
    for name, value in items.items():
        if value is not None:
            env.setdefault(name, value)  # the PAM environment's equal name comes first: it wins
    if stage is not None:
        env.setdefault("PAM_TYPE", stage)
    return env


def run_hook(options: Sequence[Arg] = (), *, user: Arg | None = "root", service: Arg | None = "sshd",
             rhost: Arg | None = "127.0.0.1", tty: Arg | None = "ssh", ruser: Arg | None = None,
             pam_env: Mapping[Arg, Arg] | None = None, connection: str | None = None,
             stage: Arg | None = "account", env_dir: str | None = None, close_stdout: bool = False,
             timeout: float = 30) -> HookRun:
    """Run the hook once, as pam_exec runs the README's line, with `options` (name=value, as in pam.d).

    `connection` ("RIP RPORT LIP LPORT") adds sshd's PAM environment for that login (sshd_pam_env) in
    front of `pam_env`. `env_dir` is the venv the project is installed in (default: the running
    interpreter's). The hook runs as the caller (root, for an adoption). `close_stdout` starts it with
    stdout closed (a broken pipe). On timeout the hook is killed and subprocess.TimeoutExpired raised.
    """
    argv: list[Arg] = [*hook_command(env_dir or this_env()).split(), *options]
    pam: dict[Arg, Arg] = {**(sshd_pam_env(connection) if connection is not None else {}), **(pam_env or {})}
    built = pam_exec_env(user, service=service, rhost=rhost, tty=tty, ruser=ruser, stage=stage, pam_env=pam)
    env = {os.fsencode(name): os.fsencode(value) for name, value in built.items()}  # bytes pass as they are
    began = time.monotonic()
    with subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          cwd="/", start_new_session=True,
                          preexec_fn=(lambda: os.close(1)) if close_stdout else None) as proc:
        try:
            out, err = proc.communicate(b"", timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    return HookRun(proc.returncode, out, err, time.monotonic() - began, proc.pid)
