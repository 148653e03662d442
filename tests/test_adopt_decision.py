"""The adoption decision, table-tested: every option value against every situation."""

from __future__ import annotations

import itertools
from typing import NamedTuple

import pytest

from adopt.decision import (
    ADOPTION_FAILURE,
    NO_JOBS,
    NO_SLURM_JOBS,
    UNKNOWN_SOURCE,
    Facts,
    NeedAdopt,
    NeedRpc,
    NeedSteps,
    Outcome,
    Rpc,
    Step,
    Verdict,
    decide,
    effective_ignore_root,
)
from adopt.options import Action, Options, parse_options

OLD, NEW = 10, 11  # job ids; NEW started last


class World(NamedTuple):
    """A situation: who logs in, what is on the node, what the RPC and the stepds answer."""

    name: str
    service: str = "sshd"
    user: str | None = "alice"
    uid: int | None = 1001
    steps: tuple[Step, ...] | None = (Step(OLD, 100.0), Step(NEW, 200.0))
    rpc: Rpc = Rpc(OLD)
    adoptable: frozenset[int] = frozenset({OLD, NEW})


WORLDS = [
    World("other service", service="su"),
    World("no PAM_USER", user=None, uid=None),
    World("unknown user", uid=None),
    World("root", user="root", uid=0),
    World("node name unknown", steps=None),
    World("no jobs", steps=()),
    World("one job", steps=(Step(OLD, 100.0),)),
    World("one job, RPC indeterminate", steps=(Step(OLD, 100.0),), rpc=Rpc(None)),
    World("one job, adoption fails", steps=(Step(OLD, 100.0),), adoptable=frozenset()),
    World("two jobs, RPC names the old one", rpc=Rpc(OLD)),
    World("two jobs, RPC names the new one", rpc=Rpc(NEW)),
    World("two jobs, RPC indeterminate", rpc=Rpc(None)),
    World("two jobs, RPC failed", rpc=Rpc(None, "connect to slurmd at 10.0.0.1:6818: Connection refused")),
    World("two jobs, RPC names another user's job", rpc=Rpc(99)),
    World("two jobs, RPC job not adoptable", rpc=Rpc(OLD), adoptable=frozenset({NEW})),
    World("two jobs, nothing adoptable", rpc=Rpc(None), adoptable=frozenset()),
    World("two jobs started together", steps=(Step(NEW, 100.0), Step(OLD, 100.0)), rpc=Rpc(None)),
]

OPTION_VALUES = {
    "action_no_jobs": ["deny", "ignore"],
    "action_unknown": ["newest", "allow", "deny"],
    "action_adopt_failure": ["allow", "deny"],
    "action_generic_failure": ["ignore", "allow", "deny"],
    "single_job_skip_rpc": ["1", "0"],
    "ignore_root": ["1", "0"],
}


class Run(NamedTuple):
    verdict: Verdict
    asked_rpc: bool
    tried: tuple[int, ...]


def drive(opts: Options, world: World) -> Run:
    """Play the hook's loop against a world (what the hook's Gatherer would find)."""
    facts = Facts(world.service, world.user, world.uid)
    asked, tried = False, ()
    for _ in range(10):
        decision = decide(opts, facts)
        if isinstance(decision, Verdict):
            return Run(decision, asked, tried)
        if isinstance(decision, NeedSteps):
            facts = facts._replace(steps=world.steps or (), node_known=world.steps is not None)
        elif isinstance(decision, NeedRpc):
            asked = True
            facts = facts._replace(rpc=world.rpc)
        elif isinstance(decision, NeedAdopt):
            tried = (*tried, decision.job_id)
            facts = facts._replace(adoptions=(*facts.adoptions, (decision.stage, decision.job_id,
                                                                  decision.job_id in world.adoptable)))
    raise AssertionError("the decision did not settle")


def expected(opts: Options, world: World) -> tuple[Outcome, int | None, str | None, bool]:
    """The 26.05 module's flow, read as a table: (outcome, adopted job, message, RPC asked)."""
    generic = {"ignore": Outcome.IGNORE, "allow": Outcome.SUCCESS, "deny": Outcome.PERM_DENIED}[
        opts.action_generic_failure.value]
    if world.service != "sshd":
        return Outcome.IGNORE, None, None, False
    if world.user is None or world.uid is None:
        return Outcome.SESSION_ERR, None, None, False
    if world.uid == 0:
        return Outcome.IGNORE, None, None, False  # ignore_root can never be turned off (see the lock-out rule)
    if world.steps is None:
        return generic, None, NO_SLURM_JOBS, False
    if not world.steps:
        if opts.action_no_jobs == Action.DENY:
            return Outcome.PERM_DENIED, None, NO_JOBS, False
        return Outcome.IGNORE, None, None, False
    several = len(world.steps) > 1
    asked = several or not opts.single_job_skip_rpc
    mine = {s.job_id for s in world.steps}
    if asked and world.rpc.job_id in mine and world.rpc.job_id in world.adoptable:
        return Outcome.SUCCESS, world.rpc.job_id, None, True
    if several and opts.action_unknown == Action.ALLOW:
        return Outcome.SUCCESS, None, None, asked
    if several and opts.action_unknown == Action.DENY:
        return Outcome.PERM_DENIED, None, UNKNOWN_SOURCE, asked
    newest = max(world.steps, key=lambda s: (s.start_time, s.job_id)).job_id
    if newest in world.adoptable:
        return Outcome.SUCCESS, newest, None, asked
    if opts.action_adopt_failure == Action.ALLOW:
        return Outcome.SUCCESS, None, None, asked
    return Outcome.PERM_DENIED, None, ADOPTION_FAILURE, asked


def _all_options() -> list[list[str]]:
    names = list(OPTION_VALUES)
    return [[f"{n}={v}" for n, v in zip(names, values, strict=True)]
            for values in itertools.product(*OPTION_VALUES.values())]


@pytest.mark.parametrize("world", WORLDS, ids=[w.name for w in WORLDS])
def test_every_option_combination(world: World) -> None:
    for args in _all_options():
        opts, problems = parse_options(args)
        assert not problems
        run = drive(opts, world)
        outcome, job, message, asked = expected(opts, world)
        got = (run.verdict.outcome, run.verdict.job_id, run.verdict.message, run.asked_rpc)
        assert got == (outcome, job, message, asked), (args, run.verdict.reason)


@pytest.mark.parametrize(("args", "world", "outcome", "job", "tried"), [
    # The defaults: several jobs, the RPC names the old one, which is adopted.
    ([], WORLDS[9], Outcome.SUCCESS, OLD, (OLD,)),
    # One job: no RPC, straight adoption; with single_job_skip_rpc=0 the RPC is asked first.
    ([], WORLDS[6], Outcome.SUCCESS, OLD, (OLD,)),
    # The RPC's job fails to adopt: the newest is tried next.
    ([], WORLDS[14], Outcome.SUCCESS, NEW, (OLD, NEW)),
    # Same start time: the higher job id is "newest".
    ([], WORLDS[16], Outcome.SUCCESS, NEW, (NEW,)),
    # Another user's job named by the RPC is never adopted into.
    ([], WORLDS[13], Outcome.SUCCESS, NEW, (NEW,)),
    (["action_unknown=deny"], WORLDS[11], Outcome.PERM_DENIED, None, ()),
    (["action_adopt_failure=deny"], WORLDS[15], Outcome.PERM_DENIED, None, (NEW,)),
])
def test_literal_rows(args: list[str], world: World, outcome: Outcome, job: int | None,
                      tried: tuple[int, ...]) -> None:
    run = drive(parse_options(args)[0], world)
    assert (run.verdict.outcome, run.verdict.job_id, run.tried) == (outcome, job, tried)


def test_single_job_rpc_order() -> None:
    run = drive(parse_options(["single_job_skip_rpc=0"])[0], WORLDS[7])
    assert run.asked_rpc and run.tried == (OLD,) and run.verdict.job_id == OLD


def test_service_star_and_named() -> None:
    assert drive(parse_options(["service=*"])[0], WORLDS[0]).verdict.outcome == Outcome.SUCCESS
    assert drive(parse_options(["service=su"])[0], WORLDS[0]).verdict.outcome == Outcome.SUCCESS
    assert drive(parse_options(["service=su"])[0], WORLDS[9]).verdict.outcome == Outcome.IGNORE


def test_root_is_never_locked_out() -> None:
    for args in _all_options():
        opts = parse_options(args)[0]
        assert effective_ignore_root(opts)
        assert drive(opts, WORLDS[3]).verdict.outcome == Outcome.IGNORE


def test_the_decision_asks_for_facts_lazily() -> None:
    opts = Options()
    assert decide(opts, Facts("sshd", "alice", 1001)) == NeedSteps()
    facts = Facts("sshd", "alice", 1001, steps=(Step(1, 1.0), Step(2, 2.0)))
    assert decide(opts, facts) == NeedRpc()
    assert decide(opts, facts._replace(rpc=Rpc(1))) == NeedAdopt(1, "rpc")
    assert decide(opts, facts._replace(rpc=Rpc(None))) == NeedAdopt(2, "newest")
