"""slurm-adopt at an admin's shell (no PAM_TYPE in the environment): it explains and checks, never adopts.

    slurm-adopt --explain --user USER [--connection "RIP RPORT LIP LPORT"] [--pid PID] [--service S] [OPTIONS...]
    slurm-adopt --check-config [OPTIONS...]
    slurm-adopt --session-env
    slurm-adopt --print-pam-module
    slurm-adopt --help | --version

Exit status 2 is a usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time
from typing import Any

from adopt.decision import Facts
from adopt.gather import Gatherer, parse_connection
from adopt.hook import ALLOW, exit_status, run
from adopt.options import LOG_LEVELS, OPTIONS, Options, parse_options

USAGE = 2
NOT_UNDER_PAM = (  # {python}: this installation's interpreter (a venv's, or /usr/bin/python3 from a package)
    "slurm-adopt: not run by pam_exec (no PAM_TYPE in the environment): nothing done.\n"
    "  In /etc/pam.d/sshd:  account required pam_exec.so stdout quiet /usr/bin/env -u PYTHONEXECUTABLE "
    "-u __PYVENV_LAUNCHER__ {python} -I -m adopt [OPTIONS...]\n"
    "  To see what a login would get:  slurm-adopt --explain --user USER --connection \"RIP RPORT LIP LPORT\" "
    "[OPTIONS...]\n"
    "  To check this node:  slurm-adopt --check-config [OPTIONS...]")


def _connection(text: str) -> str:
    if text and parse_connection(text) is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not \"REMOTE_IP REMOTE_PORT LOCAL_IP LOCAL_PORT\" (as in SSH_CONNECTION)")
    return text


def options_help(width: int = 78) -> str:
    """The options, from the table: name, whose, values (default first), what it does."""
    lines = ["OPTIONS, as in pam.d (name=value): the module's, then this hook's own [ours]:"]
    for option in OPTIONS:
        head = f"{option.name}{' [ours]' if option.ours else ''}: {option.values} - "
        lines += textwrap.wrap(head + option.doc, width, initial_indent="  ", subsequent_indent="      ")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    from slurmproto import package_version

    parser = argparse.ArgumentParser(
        prog="slurm-adopt", description=textwrap.fill("pam_slurm_adopt as a pam_exec hook. Under pam_exec "
        "(PAM_TYPE set) it decides a login; at a shell it only explains and checks.", 78),
        epilog=options_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--explain", action="store_true", help="walk through a login's decision, adopting nothing")
    mode.add_argument("--check-config", action="store_true",
                      help="check this node (slurm.conf, NodeName, SlurmdSpoolDir, munged) and the options")
    mode.add_argument("--session-env", action="store_true",
                      help="print `export SLURM_JOB_ID=N` when run inside a job's extern step (for profile.d)")
    mode.add_argument("--print-pam-module", action="store_true",
                      help="print the in-process module's file, for `account required pam_python.so FILE "
                      "[OPTIONS...]`")
    parser.add_argument("--user", help="--explain: the user logging in")
    parser.add_argument("--connection", default="", type=_connection, metavar='"RIP RPORT LIP LPORT"',
                        help="--explain: the SSH connection (as SSH_CONNECTION); needed when the RPC is asked")
    parser.add_argument("--pid", type=int, help="--explain: the process that should hold the connection")
    parser.add_argument("--service", help="--explain: the PAM service (default: the one the options allow)")
    parser.add_argument("options", nargs="*", metavar="OPTION", help="the hook's options, as in pam.d")
    return parser


def main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_intermixed_args(argv)
    if args.explain:
        if not args.user:
            parser.error("--explain needs --user")
        return explain(args)
    if args.check_config:
        return check_config(args.options)
    if args.session_env:
        return session_env()
    if args.print_pam_module:
        print(pam_module_path())
        return 0
    print(NOT_UNDER_PAM.format(python=os.path.join(sys.prefix, "bin", "python3")), file=sys.stderr)
    return USAGE


def explain(args: argparse.Namespace) -> int:
    """The whole decision for a user and a connection, step by step, adopting nothing."""
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
        return None  # none given
    from slurmproto.sockets import find_tcp, pids_holding

    rip, rport, lip, lport = parsed
    try:
        found = find_tcp((lip, lport), (rip, rport))
    except (OSError, ValueError):  # the decision reports it
        return None
    holders = pids_holding(found.inode) if found else []
    return holders[0] if holders else None


# --- --check-config -------------------------------------------------------------------------------------


class _Report:
    def __init__(self) -> None:
        self.problems = 0

    def ok(self, message: str) -> None:
        print(f"ok: {message}")

    def problem(self, message: str) -> None:
        self.problems += 1
        print(f"problem: {message}", file=sys.stderr)

    def note(self, message: str) -> None:
        print(f"note: {message}")


def check_config(args: list[str]) -> int:
    """The options as the hook reads them (as pam.d would spell them), then the node as the hook will find
    it; 1 on any problem."""
    opts, problems = parse_options(args)
    report = _Report()
    for problem in problems:
        report.problem(f"option: {problem}")
    for option in OPTIONS:
        print(option.pam(opts))
    _check_node(opts, report)
    _check_agent(opts, report)
    return 1 if report.problems else 0


def _check_agent(opts: Options, report: _Report) -> None:
    """Whether slurm-adopt-agent answers (asked about a PAM service no hook acts for); none is no problem."""
    from adopt.wire import NO_AGENT, Request, ask

    path = opts.agent_socket
    if path == NO_AGENT:
        report.note("agent_socket=none: the hook decides every login itself")
    elif os.geteuid() != 0:
        report.note(f"slurm-adopt-agent at {path}: only root can ask it (run --check-config as root)")
    elif ask(path, Request(int(opts.deadline * 500), os.getpid(), None, "slurm-adopt --check-config", None, ()),
             opts.deadline / 2) is None:
        report.note(f"no slurm-adopt-agent answers at {path}: the hook decides every login itself (slower)")
    else:
        report.ok(f"slurm-adopt-agent answers at {path}")


def _check_node(opts: Options, report: _Report) -> None:
    from slurmproto.conf import ConfError, load

    try:
        conf = load(opts.conf, env={})
    except ConfError as exc:
        report.problem(f"slurm.conf: {exc}")
        return
    report.ok(f"slurm.conf {conf.path} read")
    nodename = opts.nodename or conf.guess_nodename(env={})
    if nodename is None:
        report.problem(f"this host ({os.uname().nodename}) matches no NodeName in slurm.conf: set nodename=")
        return
    if nodename not in conf.nodes:
        report.problem(f"nodename={nodename}: no such NodeName in slurm.conf")
    else:
        report.ok(f"NodeName {nodename}")
    try:
        spool = conf.spool_dir(nodename)
    except ConfError as exc:
        report.problem(f"SlurmdSpoolDir: {exc}")
    else:
        if os.path.isdir(spool):
            report.ok(f"SlurmdSpoolDir {spool}")
        else:
            report.problem(f"SlurmdSpoolDir {spool} is not a directory (is slurmd configured for this node?)")
    _check_auth(opts, conf, report)


def _check_auth(opts: Options, conf: Any, report: _Report) -> None:
    """The RPC path signs with munged: check that a credential can be made and read back, in bounded time
    (a munged that accepts and never answers would block libmunge for several seconds)."""
    from slurmproto.errors import SlurmError
    from slurmproto.munge import MungeContext
    from slurmproto.settings import Settings

    settings = Settings.from_conf(conf, munge_socket=opts.munge_socket)
    if settings.auth_type != "auth/munge":
        _check_slurm_auth(settings, report)
        return
    where = settings.munge_socket or "libmunge's default socket"
    deadline = time.monotonic() + opts.deadline
    try:
        with MungeContext(settings.munge_socket) as munge:
            credential = munge.encode(b"slurm-adopt --check-config", timeout=deadline - time.monotonic())
            munge.decode(credential, timeout=deadline - time.monotonic())
    except SlurmError as exc:
        report.problem(f"munged at {where}: {exc}")
    else:
        report.ok(f"munged at {where} signs and verifies credentials")


def _check_slurm_auth(settings: Any, report: _Report) -> None:
    """auth/slurm: which credentials the RPC path will use, and that they sign and verify."""
    from slurmproto.auth import payload_hash
    from slurmproto.errors import SlurmError
    from slurmproto.localslurm import libslurm_version

    try:
        signer = settings.signer(libslurm_version())
        signer.decode(signer.encode(payload_hash(b"slurm-adopt --check-config", 0)))
    except SlurmError as exc:
        report.problem(f"AuthType={settings.auth_type}: {exc}")
    else:
        report.ok(f"AuthType={settings.auth_type}: {signer.description} signs and verifies credentials")


def pam_module_path() -> str:
    """The absolute path of adopt/pam_module.py as installed (libpam-python loads it by path)."""
    return os.path.join(os.path.dirname(os.path.realpath(__file__)), "pam_module.py")


# --- --session-env --------------------------------------------------------------------------------------


def session_env() -> int:
    """`export SLURM_JOB_ID=N` when this process is in a job's extern step (cgroup), for /etc/profile.d:
    what the module puts in the PAM environment and a pam_exec hook cannot."""
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
