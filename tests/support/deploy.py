"""The pam.d lines the README recommends for the hook, built in one place for the tests and the README check.

The hook's own line is fake_slurmd.pamexec's (hook_line, hook_command; that module says why it reads as it
does). The lock-out-safe stanza puts two pam_succeed_if lines in front, so that root and an admin group
never depend on the hook (a missing venv, a broken interpreter, a hook that crashes or hangs): `success=2`
jumps over the group line and the hook, `success=1` over the hook.
"""

from __future__ import annotations

from collections.abc import Sequence

from fake_slurmd.pamexec import INTERPRETER_HIJACKS, hook_command, hook_line, thin_hook_command

__all__ = ["DEBIAN_COMMON_ACCOUNT", "INTERPRETER_HIJACKS", "README_ADMIN_GROUP", "README_ENV", "find_stanza",
           "hook_command", "hook_line", "lockout_safe_stanza", "pam_python_line",
           "thin_hook_command"]

README_ENV = "/opt/slurm-adopt"
"""<ENV> and <ADMIN_GROUP> as the README shows them."""
README_ADMIN_GROUP = "slurm-admins"


def pam_python_line(module_file: str, options: Sequence[str] = ()) -> str:
    """The in-process module's control-less account line: libpam-python loading `module_file`."""
    return " ".join(["pam_python.so", module_file, *options])


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


def find_stanza(text: str) -> list[list[list[str]]]:
    """Each place `text` shows the README's stanza (lockout_safe_stanza for README_ENV and
    README_ADMIN_GROUP, with any hook options), as its three lines split into words."""
    expected = [line.split() for line in lockout_safe_stanza(README_ENV, README_ADMIN_GROUP)]
    lines = [line.split() for line in text.splitlines()]
    return [lines[i:i + 3] for i in range(len(lines) - 2)
            if lines[i] == expected[0] and lines[i + 1] == expected[1]
            and lines[i + 2][:len(expected[2])] == expected[2]]
