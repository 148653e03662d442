"""What the hook says and logs, and its agent path: ask slurm-adopt-agent and act on its reply.

Imports only posix, syslog and adopt.wire, so that a login the agent decides costs an interpreter start and
little more (tests/test_agent_imports.py holds it to that).
"""

from __future__ import annotations

import posix  # not os: see adopt/__init__.py
import time

from adopt import pam_item
from adopt.wire import AGENT_SHARE, LOG_LEVELS, Request, ask, hook_settings

TYPE_CHECKING = False  # see adopt.wire
if TYPE_CHECKING:
    from collections.abc import Callable

SYSLOG_PRIORITY = {"quiet": 2, "fatal": 2, "error": 3, "info": 6, "verbose": 6}  # debug*: 7 (LOG_DEBUG)
LOG_AUTHPRIV = 10 << 3
LOG_PID = 0x01
IDENT = "slurm-adopt"


def printable(text: str) -> str:
    """`text` safe for a log line or a terminal: no control characters (a forged line break), no
    undecodable bytes (os.environ and argv carry them as surrogates, which no codec can write)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def syslog_logger(level: int) -> Callable[[str, str], None]:
    """log(level, message) to syslog (LOG_AUTHPRIV, ident slurm-adopt[pid]) when the level is at or under
    `level`, with Slurm's prefixes ("error: ", "debug2: "). A failing syslog never changes a verdict."""
    import syslog

    syslog.openlog(IDENT, LOG_PID, LOG_AUTHPRIV)

    def log(name: str, message: str) -> None:
        if LOG_LEVELS.index(name) <= level:
            prefix = "" if name in ("info", "verbose") else f"{name}: "
            try:  # noqa: SIM105 (contextlib would cost milliseconds at each login)
                syslog.syslog(SYSLOG_PRIORITY.get(name, 7), printable(prefix + message))
            except Exception:  # nothing left to tell it to
                pass
    return log


def say(message: str) -> None:
    """The refusal message, as bytes: no locale or PYTHONIOENCODING can make writing it fail. A closed
    stdout loses the message, never the verdict."""
    try:  # noqa: SIM105
        posix.write(1, printable(message).encode("utf-8", "replace") + b"\n")
    except OSError:
        pass


def agent_status(args: list[str], started: float) -> int | None:
    """The exit status slurm-adopt-agent decided for this pam_exec account check, its message shown and
    its log lines logged; None when there is no agent answer to go by (the hook then decides itself, in
    the time left). `started`: time.monotonic() when the hook started."""
    if pam_item("PAM_TYPE") != "account":
        return None
    deadline, path = hook_settings(args)
    wait = deadline * AGENT_SHARE - (time.monotonic() - started)
    if wait <= 0:
        return None
    # The agent's budget ends a little before the hook stops waiting, so that its answer still arrives.
    request = Request(max(1, int((wait - min(0.1, wait / 10)) * 1000)), posix.getppid(), pam_item("PAM_USER"),
                      pam_item("PAM_SERVICE"), pam_item("SSH_CONNECTION"), tuple(args))
    reply = ask(path, request, wait)
    if reply is None:
        return None
    if reply.log:
        log = syslog_logger(len(LOG_LEVELS) - 1)  # the agent kept only the lines log_level lets through
        for level, text in reply.log:
            log(level, text)
    if reply.message:
        say(reply.message)
    return reply.status
