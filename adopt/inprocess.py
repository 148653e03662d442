"""What the in-process module (adopt/pam_module.py, under libpam-python) does differently from the
pam_exec hook, as small adapters around the check they share (adopt.hook.login): the process adopted is
the caller itself (sshd's privileged process, os.getpid(), as the C module adopts it), the verdict is a
PAM code, messages go through the PAM conversation, and after ADD_EXTERN_PID the PAM environment gets
SLURM_JOB_ID (DISPLAY, XAUTHORITY) and the process enters the job's namespaces.

`pamh` is libpam-python's PamHandle (duck-typed: the tests pass their own). Its PAM environment is only
indexed, tested and assigned here: `type(pamh.env)` (so its repr, or an error message naming its type)
kills sshd's process with libpam-python 1.1.0~git20220701 on Python 3.11.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

from adopt.decision import Outcome
from adopt.gather import Gatherer, Log
from adopt.hook import login
from adopt.hookio import printable
from adopt.options import Options
from slurmproto.linuxns import CLONE_NEWNS, setns
from slurmproto.stepd import StepdClient, StepdError

OUTCOMES = tuple(outcome.value for outcome in Outcome)
"""Every code the check returns ("PAM_SUCCESS", "PAM_IGNORE", ...), as pamh attributes."""


def account(pamh: Any, opts: Options, log: Log, started: float, *, service: str | None, user: str | None) -> int:
    """The shared check (adopt.hook.login) with this entry's adapters; its verdict as a PAM code."""
    # The PAM environment holds what sshd put there (SSH_CONNECTION, checked against the sockets this
    # process holds before it is believed) and what modules before this one did: only that one is read.
    env = {"SSH_CONNECTION": _env(pamh, "SSH_CONNECTION") or ""}
    gather = InProcessGatherer(pamh, opts, env, log, adopt_pid=os.getpid(), deadline=started + opts.deadline)
    verdict = login(opts, service, user, gather, say=lambda text: say(pamh, text),
                    admitted=lambda outcome: outcome in (Outcome.SUCCESS, Outcome.IGNORE))
    return pam_code(pamh, verdict.outcome.value)


def pam_code(pamh: Any, outcome: str) -> int:
    """The PAM code named `outcome` ("PAM_SUCCESS", ...), as libpam-python has it."""
    if outcome not in OUTCOMES:
        raise ValueError(f"not an outcome of the check: {outcome!r}")
    return int(getattr(pamh, outcome))


def say(pamh: Any, text: str) -> None:
    """send_user_msg: one PAM_ERROR_MSG through the conversation; a failing conversation loses the
    message, never the verdict."""
    with contextlib.suppress(Exception):  # pamh.exception: the application cannot show it
        pamh.conversation(pamh.Message(pamh.PAM_ERROR_MSG, printable(text)))


def _env(pamh: Any, name: str) -> str | None:
    try:
        value = pamh.env[name]
    except Exception:  # KeyError: not set
        return None
    return value if isinstance(value, str) else None


class InProcessGatherer(Gatherer):
    """The hook's gatherer, doing what an in-process module does after ADD_EXTERN_PID."""

    def __init__(self, pamh: Any, opts: Options, env: dict[str, str], log: Log, *, adopt_pid: int,
                 deadline: float) -> None:
        super().__init__(opts, env, log, adopt_pid=adopt_pid, deadline=deadline)
        self.pamh = pamh

    def putenv(self, name: str, value: str) -> None:
        """pam_putenv; a failure is logged (the session then lacks the variable, as with the C module)."""
        try:
            self.pamh.env[name] = value
        except Exception as exc:
            self.log("error", f"pam_putenv({name}) failed: {exc}")

    def after_adoption(self, stepd: StepdClient, job_id: int) -> bool:
        """SLURM_JOB_ID; unless disable_x11, the job's DISPLAY and XAUTHORITY; with join_container, the
        job's namespaces. A namespace that cannot be had or entered fails the adoption, as up to 25.05
        (25.11 and 26.05 mean to, but lose that result to a shadowed variable)."""
        self.putenv("SLURM_JOB_ID", str(job_id))
        if not self.opts.disable_x11:
            try:
                display, xauthority = stepd.x11_display()
            except StepdError as exc:  # the module reads no display then, and carries on
                self.log("error", f"stepd_get_x11_display failed: {exc}")
                display, xauthority = 0, None
            if display:
                self.putenv("DISPLAY", f"localhost:{display}.0")
            if xauthority:
                self.putenv("XAUTHORITY", xauthority)
        if not self.opts.join_container:
            return True
        try:
            namespaces = stepd.namespace_fds()
        except StepdError as exc:
            self.log("error", f"stepd_get_ns_fds failed: {exc}")
            return False
        if not namespaces:
            self.log("debug2", "No ns_fd given back, expected if not running with a namespace plugin")
            return True
        return self.join(namespaces)

    def join(self, namespaces: list[tuple[int, int]]) -> bool:
        """setns() into each namespace (all are tried); the fds are closed whatever happens."""
        ok = True
        try:
            if any(kind in (0, CLONE_NEWNS) for kind, _fd in namespaces):
                self.single_threaded()
            for kind, fd in namespaces:
                try:
                    setns(fd, kind)
                except OSError as exc:
                    # EINVAL for a mount namespace: another thread shares the process's fs (see below).
                    self.log("error", f"setns({fd}, {kind}) failed: {exc.strerror or exc}")
                    ok = False
        finally:
            for _kind, fd in namespaces:
                os.close(fd)
        return ok

    def single_threaded(self) -> None:
        """Wait, until the deadline, for this process to have one thread: a mount namespace cannot be
        entered by a process whose fs another thread shares. A bounded munged or user-database call
        (slurmproto.deadline) signals its result before its thread has quite exited; one abandoned at
        the deadline runs until libmunge gives up, and the setns then fails."""
        while len(os.listdir("/proc/self/task")) > 1 and time.monotonic() < self.deadline:
            time.sleep(0.001)
