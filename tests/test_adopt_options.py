"""Option parsing as pam_slurm_adopt 26.05 does it, and `slurm-adopt --check-config`."""

from __future__ import annotations

import pytest

from adopt.options import INFO, Action, Options, parse_options


def test_defaults_are_26_05s() -> None:
    opts = Options()
    assert (opts.action_no_jobs, opts.action_unknown, opts.action_adopt_failure, opts.action_generic_failure) == (
        Action.DENY, Action.NEWEST, Action.ALLOW, Action.IGNORE)
    assert (opts.ignore_root, opts.single_job_skip_rpc, opts.disable_x11, opts.join_container) == (
        True, True, False, True)
    assert (opts.log_level, opts.nodename, opts.service) == (INFO, None, "sshd")
    assert opts.deadline <= 3


@pytest.mark.parametrize(("arg", "name", "value"), [
    ("action_no_jobs=ignore", "action_no_jobs", Action.IGNORE),
    ("ACTION_NO_JOBS=Deny", "action_no_jobs", Action.DENY),
    ("action_unknown=allow", "action_unknown", Action.ALLOW),
    ("action_unknown=any", "action_unknown", Action.NEWEST),  # the older name
    ("action_unknown=newestly", "action_unknown", Action.NEWEST),  # prefix matching, as the module
    ("action_unknown=deny", "action_unknown", Action.DENY),
    ("action_adopt_failure=deny", "action_adopt_failure", Action.DENY),
    ("action_generic_failure=deny", "action_generic_failure", Action.DENY),
    ("action_generic_failure=allow", "action_generic_failure", Action.ALLOW),
    ("single_job_skip_rpc=0", "single_job_skip_rpc", False),
    ("ignore_root=0", "ignore_root", False),
    ("disable_x11=1", "disable_x11", True),
    ("join_container=false", "join_container", False),
    ("join_container=TRUE", "join_container", True),
    ("log_level=debug3", "log_level", 7),
    ("log_level=2", "log_level", 2),
    ("nodename=node7", "nodename", "node7"),
    ("service=*", "service", "*"),
    ("deadline=1.5", "deadline", 1.5),
    ("conf=/etc/slurm/other.conf", "conf", "/etc/slurm/other.conf"),
    ("munge_socket=/run/munge/x", "munge_socket", "/run/munge/x"),
    ("protocol_version=24.11", "protocol_version", "24.11"),
])
def test_each_option(arg: str, name: str, value: object) -> None:
    opts, problems = parse_options([arg])
    assert getattr(opts, name) == value and problems == []


@pytest.mark.parametrize(("arg", "name", "default", "problem"), [
    ("action_no_jobs=allow", "action_no_jobs", Action.DENY, "unrecognized action_no_jobs=allow"),
    ("action_unknown=maybe", "action_unknown", Action.NEWEST, "keeping 'newest'"),
    ("action_adopt_failure=ignore", "action_adopt_failure", Action.ALLOW, "keeping 'allow'"),
    ("action_generic_failure=x", "action_generic_failure", Action.IGNORE, "keeping 'ignore'"),
    ("ignore_root=yes", "ignore_root", True, "keeping '1'"),
    ("join_container=1", "join_container", True, "expected true or false"),
    ("log_level=loud", "log_level", 9, "setting to max"),
    ("log_level=42", "log_level", 9, "too high"),
    ("deadline=0", "deadline", 3.0, "keeping '3'"),
    ("deadline=soon", "deadline", 3.0, "unrecognized deadline"),
    ("protocol_version=19.05", "protocol_version", "auto", "keeping 'auto'"),
    ("frobnicate=1", None, None, "ignoring unrecognized option 'frobnicate=1'"),
    ("debug", None, None, "ignoring unrecognized option 'debug'"),
])
def test_bad_values_keep_the_default(arg: str, name: str | None, default: object, problem: str) -> None:
    opts, problems = parse_options([arg])
    assert len(problems) == 1 and problem in problems[0]
    if name:
        assert getattr(opts, name) == default
