"""Option parsing as pam_slurm_adopt 26.05 does it, and the options table behind the listing and the docs."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from adopt.options import INFO, OPTIONS, Action, Option, Options, parse_options


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


# --- the table drives the docs and the listing ------------------------------------------------------------

README = Path(__file__).resolve().parent.parent / "README.md"
README_HEADER = "| option | values (default first) | whose | what it does |"


def readme_row(option: Option[Any]) -> str:
    return f"| {option.name} | {option.values} | {'ours' if option.ours else 'module'} | {option.doc} |"


def readme_rows() -> list[str]:
    """The rows of the README's options table (after its header and rule)."""
    lines = README.read_text().splitlines()
    start = lines.index(README_HEADER) + 2
    return list(itertools.takewhile(lambda line: line.startswith("|"), lines[start:]))


@pytest.mark.parametrize("index", range(len(OPTIONS)), ids=[o.name for o in OPTIONS])
def test_readme_table_row_matches_the_options_table(index: int) -> None:
    rows = readme_rows()
    expected = "\n".join([README_HEADER, "|---|---|---|---|", *map(readme_row, OPTIONS)])
    assert len(rows) == len(OPTIONS), f"README.md's options table should read:\n{expected}"
    assert rows[index] == readme_row(OPTIONS[index]), f"README.md's options table should read:\n{expected}"


@pytest.mark.parametrize("option", OPTIONS, ids=[o.name for o in OPTIONS])
def test_each_option_is_described(option: Option[Any]) -> None:
    assert option.name and option.doc and "\n" not in option.doc and option.values
    assert getattr(Options(), option.name) == option.default
    if option.kind.spellings:  # the default comes first
        assert option.values.split(", ")[0] == option.kind.show(option.default)


@pytest.mark.parametrize(("args", "line"), [
    ([], "action_unknown=newest"), (["action_unknown=any"], "action_unknown=newest"),
    ([], "ignore_root=1"), (["ignore_root=0"], "ignore_root=0"), ([], "disable_x11=0"),
    ([], "join_container=true"), (["join_container=FALSE"], "join_container=false"),
    ([], "deadline=3"), (["deadline=0.5"], "deadline=0.5"),
    ([], "log_level=info"), (["log_level=7"], "log_level=debug3"),
    ([], "nodename="), (["nodename=node7"], "nodename=node7"), ([], "conf="), ([], "protocol_version=auto"),
    (["IGNORE_AS=Failure"], "ignore_as=failure"),
])
def test_listing_in_pam_syntax(args: list[str], line: str) -> None:
    opts, problems = parse_options(args)
    assert problems == [] and line in [option.pam(opts) for option in OPTIONS]


@pytest.mark.parametrize("args", [[], ["action_no_jobs=ignore", "ignore_root=0", "log_level=debug5", "deadline=2.5",
                                        "conf=/x", "protocol_version=24.11", "ignore_as=failure", "service=*"]])
def test_listing_reads_back_as_the_same_options(args: list[str]) -> None:
    """What --check-config prints is pam.d syntax that reads back to the same options."""
    opts = parse_options(args)[0]
    listing = [option.pam(opts) for option in OPTIONS]
    again, problems = parse_options(listing)
    assert problems == [] and [option.pam(again) for option in OPTIONS] == listing


def test_a_later_value_wins_and_a_bad_one_keeps_the_current() -> None:
    opts, problems = parse_options(["deadline=2", "deadline=0", "ignore_as=failure", "ignore_as=x"])
    assert (opts.deadline, opts.ignore_as) == (2.0, "failure")
    assert problems == ["unrecognized deadline=0 (seconds, above 0 and at most 300), keeping '2'",
                        "unrecognized ignore_as=x (expected success or failure), keeping 'failure'"]
