"""slurm-adopt's PAM entry: pam_slurm_adopt's account check, run by pam_exec in sshd's account stack.

    account required pam_exec.so stdout quiet /usr/bin/env -u PYTHONEXECUTABLE -u __PYVENV_LAUNCHER__ \
        /opt/slurm-adopt/bin/python3 -I -m adopt [OPTIONS...]

adopt.__main__ (and adopt/thin.py, the same without the site module) first asks slurm-adopt-agent
(adopt.agent), which decides with login_status() below in a warm process; this module decides when it
does not answer.

OPTIONS are the module's and this hook's own, as in pam.d (name=value); adopt.options holds their table
(`slurm-adopt --help` lists it). Run without PAM_TYPE in its environment, it acts as the admin command
(adopt.admin: --explain, --check-config, --session-env, --help, --version) and adopts nothing.

What it reads from its environment: PAM_TYPE, PAM_SERVICE, PAM_USER and SSH_CONNECTION (pam_exec's and
sshd's); nothing else (no $SLURM_CONF, no $SLURMD_NODENAME). Exit status: 0 lets the login through
(PAM_SUCCESS; PAM_IGNORE, which pam_exec cannot return, unless ignore_as=failure), 1 refuses it (pam_exec
turns it into PAM_SYSTEM_ERR). Whatever fails, within the deadline: root passes, anyone else gets
action_generic_failure. The only output is the refusal message; nothing ever goes to stderr.

`login()` is the check itself, shared with the in-process module (adopt.pam_module, adopt.inprocess);
the rest of this file is what only a pam_exec child does: exit statuses, the watchdog, stdout.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Mapping

from adopt import quiet_stderr
from adopt.decision import Facts, NeedAdopt, NeedRpc, NeedSteps, Outcome, Verdict, decide, generic_failure
from adopt.gather import FactError, Gatherer, Log
from adopt.hookio import printable, syslog_logger
from adopt.hookio import say as _say
from adopt.options import Options, parse_options

ALLOW, DENY = 0, 1


def exit_status(outcome: Outcome, opts: Options) -> int:
    if outcome == Outcome.IGNORE:
        return ALLOW if opts.ignore_as == "success" else DENY
    return ALLOW if outcome == Outcome.SUCCESS else DENY


def failure_status(opts: Options, user: str | None) -> int:
    """The exit status when the hook itself fails: root passes (ignore_root is always on), anyone else
    gets action_generic_failure."""
    return ALLOW if user == "root" else exit_status(generic_failure(opts), opts)


def run(opts: Options, facts: Facts, gather: Gatherer, log: Log) -> Verdict:
    """Ask the decision, gather what it needs, until it decides; failures are generic failures."""
    while True:
        try:
            decision = decide(opts, facts)
            if isinstance(decision, Verdict):
                return decision
            if isinstance(decision, NeedSteps):
                assert facts.uid is not None
                steps = gather.steps(facts.uid)
                facts = facts._replace(steps=steps or (), node_known=steps is not None)
            elif isinstance(decision, NeedRpc):
                facts = facts._replace(rpc=gather.rpc(facts.user or ""))
            elif isinstance(decision, NeedAdopt):
                adopted = gather.adopt(decision.job_id)
                facts = facts._replace(adoptions=(*facts.adoptions, (decision.stage, decision.job_id, adopted)))
        except FactError as exc:
            log("error", str(exc))
            return Verdict(generic_failure(opts), f"{exc}; action_generic_failure={opts.action_generic_failure.value}")


def _watchdog(seconds: float, status: int, log: Log) -> None:
    """pam_exec has no timeout: end the hook after `seconds` whatever it is waiting for (a blocked NSS or
    munge call included), with the failure status. A C call that holds the GIL would keep this thread
    from running: half a second later SIGALRM, left at its default action, ends the process anyway
    (pam_exec then says PAM_SYSTEM_ERR; root never gets that far, it passes before any I/O)."""
    import _thread
    import signal

    def expire() -> None:
        time.sleep(seconds)
        log("error", f"deadline of {seconds:g} s passed: giving the action_generic_failure verdict")
        os._exit(status)

    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.setitimer(signal.ITIMER_REAL, seconds + 0.5)
    _thread.start_new_thread(expire, ())


def login(opts: Options, service: str | None, user: str | None, gather: Gatherer, *,
          say: Callable[[str], None], admitted: Callable[[Outcome], bool]) -> Verdict:
    """The account check both entries share (this pam_exec hook and adopt.pam_module): who the user is,
    then gather and decide until a verdict; the user is told its message through `say`. Every refusal
    (`admitted` says what the entry lets through) and failure is logged at info."""
    log = gather.log
    # root is uid 0 without asking NSS (LDAP or SSSD may hang): root's login never waits on them.
    uid = 0 if user == "root" else Gatherer.uid_of(user) if user else None
    verdict = run(opts, Facts(service, user, uid), gather, log)
    if verdict.message:
        log("info", f"send_user_msg: {verdict.message}")
        say(verdict.message)
    if not admitted(verdict.outcome):  # at the default level (generic failures also logged their error)
        log("info", f"{user or '(no user)'}: {verdict.outcome.value}, refused: {verdict.reason}")
    else:
        log("debug", f"{verdict.outcome.value}: {verdict.reason}")
    return verdict


def account(opts: Options, env: Mapping[str, str], log: Log, started: float | None = None) -> int:
    """pam_exec's account check, within opts.deadline of `started` (time.monotonic(); default now): the
    watchdog, then the shared check adopting the hook's parent (sshd's privileged process); the verdict
    becomes an exit status."""
    started = time.monotonic() if started is None else started
    user = env.get("PAM_USER")
    _watchdog(max(0.01, opts.deadline - (time.monotonic() - started)), failure_status(opts, user), log)
    status, message = login_status(opts, env, log, adopt_pid=os.getppid(), deadline=started + opts.deadline)
    if message:
        _say(message)
    return status


def login_status(opts: Options, env: Mapping[str, str], log: Log, *, adopt_pid: int, deadline: float,
                 gatherer: type[Gatherer] = Gatherer) -> tuple[int, str | None]:
    """login() adopting `adopt_pid`, as an exit status and the message for the user: the hook's and
    slurm-adopt-agent's way to a verdict (the in-process module calls login() with its own adapters)."""
    gather = gatherer(opts, env, log, adopt_pid=adopt_pid, deadline=deadline)
    verdict = login(opts, env.get("PAM_SERVICE"), env.get("PAM_USER"), gather, say=lambda _text: None,
                    admitted=lambda outcome: exit_status(outcome, opts) == ALLOW)
    return exit_status(verdict.outcome, opts), verdict.message


def pam_main(args: list[str], env: Mapping[str, str], started: float | None = None) -> int:
    """The pam_exec entry, deciding here (no agent asked). Never raises: any failure of the hook itself
    becomes failure_status(). `started`: when the hook started (time.monotonic()), default now."""
    user = env.get("PAM_USER")
    opts = Options()
    log: Log = no_log
    try:
        quiet_stderr()
        opts, problems = parse_options(args)
        log = syslog_logger(opts.log_level)
        for problem in problems:
            log("error", problem)
        stage = env.get("PAM_TYPE")
        if stage != "account":
            return _wrong_stage(stage, log)
        return account(opts, env, log, started)
    except BaseException as exc:  # the user must never see a traceback, nor get in by one
        status = failure_status(opts, user)
        log_internal_error(log, exc, status)
        return status


def _wrong_stage(stage: str | None, log: Log) -> int:
    """pam_exec in another stack than account: do nothing. In auth, exit 1: success there could stand in
    for a password (`auth sufficient`); elsewhere 0, which grants nothing."""
    status = DENY if stage == "auth" else ALLOW
    log("error", f"PAM_TYPE={printable(stage or '')!r}: slurm-adopt belongs in the account stack; doing nothing, "
                 f"exit status {status}")
    return status


def log_internal_error(log: Log, exc: BaseException, status: int) -> None:
    try:
        import traceback

        where = "".join(traceback.format_exception(exc, limit=-3)).replace("\n", " | ")
        log("error", f"internal error, exit status {status}: {exc!r}: {where}")
    except BaseException:  # a verdict is owed even if logging itself fails
        pass


def no_log(level: str, message: str) -> None:
    """Before syslog is set up there is nowhere to log to."""


def main(argv: list[str] | None = None, started: float | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "PAM_TYPE" not in os.environ:  # not run by pam_exec: an admin at a shell, never an adoption
        from adopt.admin import main as admin_main

        return admin_main(args)
    if not sys.flags.isolated:
        # Run as the console script, PYTHON* variables and the user site already had their say; the
        # documented stanza runs `python3 -I -m adopt`. Start over isolated all the same.
        with contextlib.suppress(OSError):
            os.execv(sys.executable, [sys.executable, "-I", "-m", "adopt", *args])
    return pam_main(args, os.environ, started)


if __name__ == "__main__":
    sys.exit(main())
