"""pam_slurm_adopt's account check as an in-process PAM module, loaded by libpam-python:

    account required pam_python.so /opt/slurm-adopt/lib/python3.11/site-packages/adopt/pam_module.py OPTIONS...

(`slurm-adopt --print-pam-module` prints this file's path.) OPTIONS are the hook's (adopt.options). The
decision and the gathering are the hook's own (adopt.hook.login); what differs is how the entry does it:
this runs inside sshd's privileged process, so it adopts that process itself (os.getpid(), as the C
module does), returns the module's PAM codes (PAM_IGNORE included), shows messages through the PAM
conversation, and after an adoption sets SLURM_JOB_ID (and DISPLAY, XAUTHORITY) in the PAM environment
and enters the job's namespaces (join_container).

Inside sshd nothing may escape or linger: every exception becomes the documented verdict (root: the
PAM_IGNORE root always gets; anyone else: action_generic_failure); the deadline is kept with socket
timeouts and the gatherer's deadline checks, never by a signal, an exit or a watchdog thread; nothing
is kept between calls (each call parses its options and builds its own gatherer).

This file finds the project itself: it is inside the installed `adopt` package, so the directory above
it (the venv's site-packages, or Debian's dist-packages) goes first on sys.path, and only the
interpreter's own directories stay (no current directory, no user site).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from typing import Any


def _guard_path() -> None:
    """sys.path: this file's package root first, then the interpreter's own directories only."""
    here = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    own = tuple(os.path.join(prefix, "") for prefix in {sys.base_prefix, sys.base_exec_prefix})
    kept = [p for p in sys.path if os.path.isabs(p) and p != here and os.path.join(p, "").startswith(own)]
    sys.path[:] = [here, *kept]


if __name__ != "adopt.pam_module":  # loaded by libpam-python (as "pam_module"), not imported from the package
    _guard_path()


def fallback_code(pamh: Any, argv: list[str]) -> int:
    """The verdict when the check itself fails (even to import): root gets the PAM_IGNORE it always gets,
    anyone else action_generic_failure (read here by hand, as the option table may be what failed)."""
    if item(pamh, "user") == "root":
        return int(pamh.PAM_IGNORE)
    action = "ignore"
    for arg in argv[1:]:
        name, _, value = arg.partition("=")
        if name.lower() == "action_generic_failure":
            action = next((a for a in ("allow", "ignore", "deny") if value.lower().startswith(a)), action)
    return int({"allow": pamh.PAM_SUCCESS, "deny": pamh.PAM_PERM_DENIED}.get(action, pamh.PAM_IGNORE))


def item(pamh: Any, name: str) -> str | None:
    """pamh.user, pamh.service, ... as text, or None."""
    try:
        value = getattr(pamh, name)
    except Exception:  # pam_python raises pamh.exception when PAM cannot give the item
        return None
    return value if isinstance(value, str) else None


def pam_sm_acct_mgmt(pamh: Any, flags: int, argv: list[str]) -> int:
    """libpam-python's account entry: argv[0] is this file, then the options. Never raises."""
    started = time.monotonic()
    try:
        from adopt.hook import log_internal_error, no_log
        from adopt.hookio import syslog_logger
        from adopt.inprocess import account
        from adopt.options import parse_options
    except BaseException:
        return fallback_code(pamh, argv)
    log: Callable[[str, str], None] = no_log
    try:
        opts, problems = parse_options(list(argv[1:]))
        log = syslog_logger(opts.log_level)
        for problem in problems:
            log("error", problem)
        return account(pamh, opts, log, started, service=item(pamh, "service"), user=item(pamh, "user"))
    except BaseException as exc:  # nothing may escape into sshd, nor a traceback reach the user
        code = fallback_code(pamh, argv)
        log_internal_error(log, exc, code)
        return code
    finally:
        _close_syslog()


def _close_syslog() -> None:
    """syslog's ident is the process's: give sshd its own back."""
    with contextlib.suppress(Exception):  # nothing to give back
        import syslog

        syslog.closelog()


