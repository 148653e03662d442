"""The pam.d lines the README recommends for the hook, built in one place for the tests and the README check.

    account required pam_exec.so stdout quiet /usr/bin/env -u PYTHONEXECUTABLE -u __PYVENV_LAUNCHER__ \
        <ENV>/bin/python3 -I -m adopt [OPTIONS...]

`-I` (isolated mode) makes Python ignore every PYTHON* variable, the user site and the current directory:
the PAM environment cannot change what runs as root. The lock-out-safe stanza puts two pam_succeed_if
lines in front, so that root and an admin group never depend on the hook (a missing venv, a broken
interpreter, a hook that crashes or hangs): `success=2` jumps over the group line and the hook,
`success=1` over the hook.

`-I` is not the whole story: CPython 3.11 and later read PYTHONEXECUTABLE (documented as macOS-only,
but not since 3.11) and __PYVENV_LAUNCHER__ on Linux even in isolated mode (python/cpython gh-133525).
They set sys.executable, so Python looks for pyvenv.cfg, and hence site-packages and .pth files, where
they point: code of the caller's choosing runs as root before the hook's first line. Only removing them
before the interpreter starts helps, which is why the command starts with `/usr/bin/env -u`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

README_ENV = "/opt/slurm-adopt"
"""<ENV> and <ADMIN_GROUP> as the README shows them."""
README_ADMIN_GROUP = "slurm-admins"


INTERPRETER_HIJACKS = ("PYTHONEXECUTABLE", "__PYVENV_LAUNCHER__")
"""Variables that choose the interpreter's venv in spite of -I."""


def hook_command(env: str, options: Sequence[str] = ()) -> str:
    """pam_exec's command: /usr/bin/env (coreutils; no shell involved) removing INTERPRETER_HIJACKS, then
    the venv's interpreter in isolated mode, running the adopt package."""
    unset = [word for name in INTERPRETER_HIJACKS for word in ("-u", name)]
    return " ".join(["/usr/bin/env", *unset, os.path.join(env, "bin", "python3"), "-I", "-m", "adopt", *options])


def thin_hook_command(env: str, options: Sequence[str] = ()) -> str:
    """The quicker form: the same interpreter without the site module (-S), running adopt/thin.py."""
    import glob

    unset = [word for name in INTERPRETER_HIJACKS for word in ("-u", name)]
    scripts = glob.glob(os.path.join(env, "lib", "python3*", "site-packages", "adopt", "thin.py"))
    if not scripts:
        raise FileNotFoundError(f"no adopt/thin.py under {env}")
    return " ".join(["/usr/bin/env", *unset, os.path.join(env, "bin", "python3"), "-I", "-S", scripts[0], *options])


def hook_line(env: str, options: Sequence[str] = ()) -> str:
    return f"account required pam_exec.so stdout quiet {hook_command(env, options)}"


DEBIAN_COMMON_ACCOUNT = [
    "account [success=1 new_authtok_reqd=done default=ignore] pam_unix.so",
    "account requisite pam_deny.so",
    "account required pam_permit.so",
]
"""Debian 12's /etc/pam.d/common-account, which its /etc/pam.d/sshd includes before the line the stanza
replaces. Something before the stanza must succeed: Linux-PAM does not count a jump (success=N) as a
success, so a stack in which root jumps over everything there is ends with PAM_PERM_DENIED."""


def lockout_safe_stanza(env: str, admin_group: str, options: Sequence[str] = ()) -> list[str]:
    """root, then members of `admin_group`, skip the hook; everyone else needs its success."""
    return [
        "account [success=2 default=ignore] pam_succeed_if.so quiet uid eq 0",
        f"account [success=1 default=ignore] pam_succeed_if.so quiet user ingroup {admin_group}",
        hook_line(env, options),
    ]
