"""slurm-adopt: pam_slurm_adopt's account check, run by pam_exec in sshd's account stack.

    account required pam_exec.so stdout quiet /usr/local/sbin/slurm-adopt [OPTIONS...]
    slurm-adopt --check-config [OPTIONS...]
    slurm-adopt --explain --user USER [--connection "RIP RPORT LIP LPORT"] [--pid PID] [--service S] [OPTIONS...]
    slurm-adopt --session-env

OPTIONS are the module's (action_no_jobs=, action_unknown=, action_adopt_failure=, action_generic_failure=,
ignore_root=, single_job_skip_rpc=, log_level=, nodename=, service=, disable_x11=, join_container=) and
this hook's (deadline=SECONDS, conf=PATH, munge_socket=PATH, protocol_version=auto|RELEASE,
ignore_as=success|failure).

Exit status: 0 lets the login through (PAM_SUCCESS; PAM_IGNORE, which pam_exec cannot return, unless
ignore_as=failure), 1 refuses it (pam_exec turns it into PAM_SYSTEM_ERR). The only output is the refusal
message.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping

from adopt.decision import Facts, NeedAdopt, NeedRpc, NeedSteps, Outcome, Verdict, decide, generic_failure
from adopt.gather import FactError, Gatherer, Log, parse_connection
from adopt.options import LOG_LEVELS, Options, parse_options

ALLOW, DENY = 0, 1
SYSLOG_PRIORITY = {"quiet": 2, "fatal": 2, "error": 3, "info": 6, "verbose": 6}  # debug*: 7 (LOG_DEBUG)
LOG_AUTHPRIV = 10 << 3


def exit_status(outcome: Outcome, opts: Options) -> int:
    if outcome == Outcome.IGNORE:
        return ALLOW if opts.ignore_as == "success" else DENY
    return ALLOW if outcome == Outcome.SUCCESS else DENY


def syslog_logger(level: int, ident: str = "slurm-adopt") -> Log:
    """log(level, message) to syslog (LOG_AUTHPRIV) when the level is at or under `level`, with Slurm's
    prefixes ("error: ", "debug2: ")."""
    import syslog

    syslog.openlog(ident, 0, LOG_AUTHPRIV)

    def log(name: str, message: str) -> None:
        if LOG_LEVELS.index(name) <= level:
            prefix = "" if name in ("info", "verbose") else f"{name}: "
            syslog.syslog(SYSLOG_PRIORITY.get(name, 7), prefix + message)
    return log


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
    munge call included), with the generic-failure status."""
    import _thread

    def expire() -> None:
        time.sleep(seconds)
        log("error", f"deadline of {seconds:g} s passed: giving the action_generic_failure verdict")
        os._exit(status)

    _thread.start_new_thread(expire, ())


def hook(args: list[str], env: Mapping[str, str]) -> int:
    """The pam_exec entry: PAM_SERVICE, PAM_USER, PAM_TYPE and SSH_CONNECTION come from the environment."""
    started = time.monotonic()
    opts, problems = parse_options(args)
    log = syslog_logger(opts.log_level)
    for problem in problems:
        log("error", problem)
    if env.get("PAM_TYPE", "account") != "account":
        log("error", f"only the account stack is supported, not {env.get('PAM_TYPE')!r}: letting it pass")
        return ALLOW
    _watchdog(opts.deadline, exit_status(generic_failure(opts), opts), log)
    user = env.get("PAM_USER")
    # root is uid 0 without asking NSS (LDAP or SSSD may hang): root's login never waits on them.
    uid = 0 if user == "root" else Gatherer.uid_of(user) if user else None
    facts = Facts(env.get("PAM_SERVICE"), user, uid)
    gather = Gatherer(opts, env, log, adopt_pid=os.getppid(), deadline=started + opts.deadline)
    verdict = run(opts, facts, gather, log)
    log("debug", f"{verdict.outcome.value}: {verdict.reason}")
    if verdict.message:
        print(verdict.message, flush=True)
    return exit_status(verdict.outcome, opts)


def explain(argv: list[str]) -> int:
    """--explain: the whole decision for a user and a connection, step by step, adopting nothing."""
    import argparse

    parser = argparse.ArgumentParser(prog="slurm-adopt --explain", description="Explain a login decision.")
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--user", required=True)
    parser.add_argument("--connection", default="", metavar='"RIP RPORT LIP LPORT"',
                        help="the SSH connection (as SSH_CONNECTION); needed when the RPC is asked")
    parser.add_argument("--pid", type=int, help="the process that should hold the connection (default: any)")
    parser.add_argument("--service", help="the PAM service (default: the one the options allow)")
    parser.add_argument("options", nargs="*", help="the hook's options, as in pam.d")
    args = parser.parse_intermixed_args(argv)
    opts, problems = parse_options(args.options)

    def log(level: str, message: str) -> None:
        if LOG_LEVELS.index(level) <= max(opts.log_level, LOG_LEVELS.index("debug4")):
            print(f"  {level:>7}: {message}")

    for problem in problems:
        log("error", problem)
    service = args.service or ("sshd" if opts.service == "*" else opts.service)
    uid = Gatherer.uid_of(args.user)
    print(f"user {args.user} (uid {uid}), service {service}, connection {args.connection or '(none given)'}")
    holder = args.pid if args.pid is not None else _holder(args.connection)
    gather = Gatherer(opts, {"SSH_CONNECTION": args.connection}, log, adopt_pid=holder or 0,
                      deadline=time.monotonic() + opts.deadline, dry_run=True)
    verdict = run(opts, Facts(service, args.user, uid), gather, log)
    allowed = exit_status(verdict.outcome, opts) == ALLOW
    print(f"verdict: {verdict.outcome.value} ({'login allowed' if allowed else 'login refused'})")
    print(f"because: {verdict.reason}")
    if verdict.message:
        print(f"the user would read: {verdict.message}")
    return exit_status(verdict.outcome, opts)


def _holder(connection: str) -> int | None:
    """The first process holding the connection's local end (sshd's), to stand in for the parent."""
    parsed = parse_connection(connection)
    if parsed is None:
        return None  # the decision reports it
    from slurmproto.sockets import find_tcp, pids_holding

    rip, rport, lip, lport = parsed
    try:
        found = find_tcp((lip, lport), (rip, rport))
    except (OSError, ValueError):  # the decision reports it
        return None
    holders = pids_holding(found.inode) if found else []
    return holders[0] if holders else None


def check_config(args: list[str]) -> int:
    opts, problems = parse_options(args)
    for problem in problems:
        print(f"slurm-adopt: {problem}", file=sys.stderr)
    for name, value in vars(opts).items():
        shown = value.value if hasattr(value, "value") else value
        print(f"{name}={shown}")
    return 1 if problems else 0


def session_env() -> int:
    """--session-env: `export SLURM_JOB_ID=N` when this process is in a job's extern step (cgroup), for
    /etc/profile.d: what the module puts in the PAM environment and a pam_exec hook cannot."""
    try:
        with open("/proc/self/cgroup") as cgroups:
            lines = cgroups.read().splitlines()
    except OSError:
        return 1
    for line in lines:
        parts = line.split(":", 2)[-1].split("/")
        for part in parts:
            if part.startswith("job_") and part[4:].isdigit() and "step_extern" in parts:
                print(f"export SLURM_JOB_ID={part[4:]}")
                return 0
    return 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--check-config" in argv:
        return check_config([a for a in argv if a != "--check-config"])
    if "--explain" in argv:
        return explain(argv)
    if argv[:1] == ["--session-env"]:
        return session_env()
    try:
        return hook(argv, os.environ)
    except Exception as exc:  # the user must never see a traceback: log it, give the generic verdict
        import traceback

        opts, _ = parse_options(argv)
        syslog_logger(opts.log_level)("error", f"internal error: {exc!r}: {traceback.format_exc()}")
        return exit_status(generic_failure(opts), opts)


if __name__ == "__main__":
    sys.exit(main())
