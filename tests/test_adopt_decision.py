"""The adoption decision against an independent oracle: pam_slurm_adopt 26.05's flow written out as data,
case by case, and every option combination in every situation against a table of expected logins."""

from __future__ import annotations

import itertools
from typing import NamedTuple

import pytest

from adopt.decision import (
    ADOPTION_FAILURE,
    NO_JOBS,
    NO_SLURM_JOBS,
    UNKNOWN_SOURCE,
    Decision,
    Facts,
    NeedAdopt,
    NeedRpc,
    NeedSteps,
    Outcome,
    Rpc,
    Stage,
    Step,
    Verdict,
    decide,
    effective_ignore_root,
)
from adopt.options import Options, parse_options

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
    asked = False
    tried: tuple[int, ...] = ()
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


# --- the flow, case by case: one question to decide() and its answer ---------------------------------------

ALICE = Facts("sshd", "alice", 1001)
TWO = (Step(OLD, 100.0), Step(NEW, 200.0))
ONE = (Step(OLD, 100.0),)
TIED = (Step(OLD, 100.0), Step(NEW, 100.0))


def verdict(outcome: Outcome, message: str | None = None, job: int | None = None) -> tuple[object, ...]:
    return ("verdict", outcome, message, job)


def answer(decision: Decision) -> object:
    """A decision, without a verdict's reason (free text)."""
    if isinstance(decision, Verdict):
        return verdict(decision.outcome, decision.message, decision.job_id)
    return decision


def tried(*adoptions: tuple[Stage, int, bool]) -> tuple[tuple[Stage, int, bool], ...]:
    return adoptions


NOT_KNOWN = Rpc(None)


def two(rpc: Rpc | None = NOT_KNOWN, *adoptions: tuple[Stage, int, bool]) -> Facts:
    """alice with two jobs here (NEW the newest), the RPC's answer and the adoptions tried so far."""
    return ALICE._replace(steps=TWO, rpc=rpc, adoptions=adoptions)


# (name, options, facts, answer): pam_slurm_adopt 26.05's flow, branch by branch, written out as data.
CASES: list[tuple[str, list[str], Facts, object]] = [
    # Preliminaries: the service, the user, root.
    ("another service", [], ALICE._replace(service="su"), verdict(Outcome.IGNORE)),
    ("no service", [], ALICE._replace(service=None), verdict(Outcome.IGNORE)),
    ("service=* takes any", ["service=*"], ALICE._replace(service="su"), NeedSteps()),
    ("service=su takes su", ["service=su"], ALICE._replace(service="su"), NeedSteps()),
    ("service=su, not sshd", ["service=su"], ALICE, verdict(Outcome.IGNORE)),
    ("no PAM_USER", [], ALICE._replace(user=None, uid=None), verdict(Outcome.SESSION_ERR)),
    ("empty PAM_USER", [], ALICE._replace(user="", uid=None), verdict(Outcome.SESSION_ERR)),
    ("no such user", [], ALICE._replace(uid=None), verdict(Outcome.SESSION_ERR)),
    ("root", [], Facts("sshd", "root", 0), verdict(Outcome.IGNORE)),
    ("root, ignore_root=0 forced back on",
     ["ignore_root=0", "action_unknown=allow", "action_no_jobs=ignore", "action_generic_failure=allow"],
     Facts("sshd", "root", 0), verdict(Outcome.IGNORE)),
    ("uid 0 by another name", [], Facts("sshd", "toor", 0), verdict(Outcome.IGNORE)),
    # The node's steps.
    ("steps not looked at yet", [], ALICE, NeedSteps()),
    ("node unknown, generic ignore", [], ALICE._replace(node_known=False, steps=()),
     verdict(Outcome.IGNORE, NO_SLURM_JOBS)),
    ("node unknown, generic allow", ["action_generic_failure=allow"], ALICE._replace(node_known=False),
     verdict(Outcome.SUCCESS, NO_SLURM_JOBS)),
    ("node unknown, generic deny", ["action_generic_failure=deny"], ALICE._replace(node_known=False),
     verdict(Outcome.PERM_DENIED, NO_SLURM_JOBS)),
    ("no jobs, deny", [], ALICE._replace(steps=()), verdict(Outcome.PERM_DENIED, NO_JOBS)),
    ("no jobs, ignore", ["action_no_jobs=ignore"], ALICE._replace(steps=()), verdict(Outcome.IGNORE)),
    # One job.
    ("one job: adopt it", [], ALICE._replace(steps=ONE), NeedAdopt(OLD, Stage.NEWEST)),
    ("one job adopted", [], ALICE._replace(steps=ONE, adoptions=tried((Stage.NEWEST, OLD, True))),
     verdict(Outcome.SUCCESS, job=OLD)),
    ("one job, adoption failed, allow", [], ALICE._replace(steps=ONE, adoptions=tried((Stage.NEWEST, OLD, False))),
     verdict(Outcome.SUCCESS)),
    ("one job, adoption failed, deny", ["action_adopt_failure=deny"],
     ALICE._replace(steps=ONE, adoptions=tried((Stage.NEWEST, OLD, False))),
     verdict(Outcome.PERM_DENIED, ADOPTION_FAILURE)),
    ("one job, skip_rpc=0: ask", ["single_job_skip_rpc=0"], ALICE._replace(steps=ONE), NeedRpc()),
    ("one job, skip_rpc=0, RPC names it", ["single_job_skip_rpc=0"], ALICE._replace(steps=ONE, rpc=Rpc(OLD)),
     NeedAdopt(OLD, Stage.RPC)),
    ("one job, skip_rpc=0, RPC adopted", ["single_job_skip_rpc=0"],
     ALICE._replace(steps=ONE, rpc=Rpc(OLD), adoptions=tried((Stage.RPC, OLD, True))),
     verdict(Outcome.SUCCESS, job=OLD)),
    ("one job, skip_rpc=0, RPC unknown: no action_unknown", ["single_job_skip_rpc=0", "action_unknown=deny"],
     ALICE._replace(steps=ONE, rpc=Rpc(None)), NeedAdopt(OLD, Stage.NEWEST)),
    ("one job, skip_rpc=0, RPC adoption failed: adopt again", ["single_job_skip_rpc=0"],
     ALICE._replace(steps=ONE, rpc=Rpc(OLD), adoptions=tried((Stage.RPC, OLD, False))),
     NeedAdopt(OLD, Stage.NEWEST)),
    # Several jobs: the RPC first, whatever single_job_skip_rpc says.
    ("two jobs: ask", [], two(None), NeedRpc()),
    ("two jobs, skip_rpc=0: ask", ["single_job_skip_rpc=0"], two(None), NeedRpc()),
    ("two jobs, RPC names the old", [], two(Rpc(OLD)), NeedAdopt(OLD, Stage.RPC)),
    ("two jobs, RPC names the new", [], two(Rpc(NEW)), NeedAdopt(NEW, Stage.RPC)),
    ("two jobs, RPC's job adopted", [], two(Rpc(OLD), (Stage.RPC, OLD, True)), verdict(Outcome.SUCCESS, job=OLD)),
    ("two jobs, RPC names another's job", [], two(Rpc(99)), NeedAdopt(NEW, Stage.NEWEST)),
    ("two jobs, RPC failed", [], two(Rpc(None, "refused")), NeedAdopt(NEW, Stage.NEWEST)),
    # Several jobs, the source unknown: action_unknown.
    ("unknown, newest", [], two(), NeedAdopt(NEW, Stage.NEWEST)),
    ("unknown, newest in any order", [], two()._replace(steps=TWO[::-1]), NeedAdopt(NEW, Stage.NEWEST)),
    ("unknown, newest of a tie: the higher id", [], two()._replace(steps=TIED), NeedAdopt(NEW, Stage.NEWEST)),
    ("unknown, newest by time, not id", [], two()._replace(steps=(Step(NEW, 100.0), Step(OLD, 200.0))),
     NeedAdopt(OLD, Stage.NEWEST)),
    ("unknown, allow", ["action_unknown=allow"], two(), verdict(Outcome.SUCCESS)),
    ("unknown, deny", ["action_unknown=deny"], two(), verdict(Outcome.PERM_DENIED, UNKNOWN_SOURCE)),
    ("RPC's job failed to adopt, allow", ["action_unknown=allow"], two(Rpc(OLD), (Stage.RPC, OLD, False)),
     verdict(Outcome.SUCCESS)),
    ("RPC's job failed to adopt, deny", ["action_unknown=deny"], two(Rpc(OLD), (Stage.RPC, OLD, False)),
     verdict(Outcome.PERM_DENIED, UNKNOWN_SOURCE)),
    ("RPC's job failed to adopt, newest", [], two(Rpc(OLD), (Stage.RPC, OLD, False)), NeedAdopt(NEW, Stage.NEWEST)),
    ("RPC's newest job failed, newest again", [], two(Rpc(NEW), (Stage.RPC, NEW, False)),
     NeedAdopt(NEW, Stage.NEWEST)),
    ("newest adopted", [], two(Rpc(None), (Stage.NEWEST, NEW, True)), verdict(Outcome.SUCCESS, job=NEW)),
    ("newest failed, allow", [], two(Rpc(None), (Stage.NEWEST, NEW, False)), verdict(Outcome.SUCCESS)),
    ("newest failed, deny", ["action_adopt_failure=deny"], two(Rpc(None), (Stage.NEWEST, NEW, False)),
     verdict(Outcome.PERM_DENIED, ADOPTION_FAILURE)),
]


@pytest.mark.parametrize(("args", "facts", "want"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_flow_case_by_case(args: list[str], facts: Facts, want: object) -> None:
    opts, problems = parse_options(args)
    assert not problems
    assert answer(decide(opts, facts)) == want


# --- every option combination in every world, against a table written out by hand -------------------------


class Expect(NamedTuple):
    """What a whole login gets: the verdict, the job adopted into, the message, whether the RPC was asked,
    and the adoptions tried, in order."""

    outcome: Outcome
    job: int | None = None
    message: str | None = None
    asked: bool = False
    tried: tuple[int, ...] = ()


S, D, I = Outcome.SUCCESS, Outcome.PERM_DENIED, Outcome.IGNORE  # noqa: E741
UNKNOWN_SOURCE_RULES = [  # several jobs, the RPC adopts into none; NEW is the newest and adoptable
    ({"action_unknown": "allow"}, Expect(S, asked=True)),
    ({"action_unknown": "deny"}, Expect(D, message=UNKNOWN_SOURCE, asked=True)),
    ({"action_unknown": "newest"}, Expect(S, NEW, asked=True, tried=(NEW,))),
]

# World name -> rules: (the options that matter, what the login gets). An option a rule does not name does
# not change the result; every combination of options matches exactly one rule.
EXPECTED: dict[str, list[tuple[dict[str, str], Expect]]] = {
    "other service": [({}, Expect(I))],
    "no PAM_USER": [({}, Expect(Outcome.SESSION_ERR))],
    "unknown user": [({}, Expect(Outcome.SESSION_ERR))],
    "root": [({}, Expect(I))],  # ignore_root=0 never counts (action_no_jobs cannot be allow)
    "node name unknown": [
        ({"action_generic_failure": "ignore"}, Expect(I, message=NO_SLURM_JOBS)),
        ({"action_generic_failure": "allow"}, Expect(S, message=NO_SLURM_JOBS)),
        ({"action_generic_failure": "deny"}, Expect(D, message=NO_SLURM_JOBS)),
    ],
    "no jobs": [
        ({"action_no_jobs": "deny"}, Expect(D, message=NO_JOBS)),
        ({"action_no_jobs": "ignore"}, Expect(I)),
    ],
    "one job": [
        ({"single_job_skip_rpc": "1"}, Expect(S, OLD, tried=(OLD,))),
        ({"single_job_skip_rpc": "0"}, Expect(S, OLD, asked=True, tried=(OLD,))),
    ],
    "one job, RPC indeterminate": [
        ({"single_job_skip_rpc": "1"}, Expect(S, OLD, tried=(OLD,))),
        ({"single_job_skip_rpc": "0"}, Expect(S, OLD, asked=True, tried=(OLD,))),
    ],
    "one job, adoption fails": [
        ({"single_job_skip_rpc": "1", "action_adopt_failure": "allow"}, Expect(S, tried=(OLD,))),
        ({"single_job_skip_rpc": "1", "action_adopt_failure": "deny"},
         Expect(D, message=ADOPTION_FAILURE, tried=(OLD,))),
        ({"single_job_skip_rpc": "0", "action_adopt_failure": "allow"}, Expect(S, asked=True, tried=(OLD, OLD))),
        ({"single_job_skip_rpc": "0", "action_adopt_failure": "deny"},
         Expect(D, message=ADOPTION_FAILURE, asked=True, tried=(OLD, OLD))),
    ],
    "two jobs, RPC names the old one": [({}, Expect(S, OLD, asked=True, tried=(OLD,)))],
    "two jobs, RPC names the new one": [({}, Expect(S, NEW, asked=True, tried=(NEW,)))],
    "two jobs, RPC indeterminate": UNKNOWN_SOURCE_RULES,
    "two jobs, RPC failed": UNKNOWN_SOURCE_RULES,
    "two jobs, RPC names another user's job": UNKNOWN_SOURCE_RULES,
    "two jobs, RPC job not adoptable": [
        ({"action_unknown": "allow"}, Expect(S, asked=True, tried=(OLD,))),
        ({"action_unknown": "deny"}, Expect(D, message=UNKNOWN_SOURCE, asked=True, tried=(OLD,))),
        ({"action_unknown": "newest"}, Expect(S, NEW, asked=True, tried=(OLD, NEW))),
    ],
    "two jobs, nothing adoptable": [
        ({"action_unknown": "allow"}, Expect(S, asked=True)),
        ({"action_unknown": "deny"}, Expect(D, message=UNKNOWN_SOURCE, asked=True)),
        ({"action_unknown": "newest", "action_adopt_failure": "allow"}, Expect(S, asked=True, tried=(NEW,))),
        ({"action_unknown": "newest", "action_adopt_failure": "deny"},
         Expect(D, message=ADOPTION_FAILURE, asked=True, tried=(NEW,))),
    ],
    "two jobs started together": UNKNOWN_SOURCE_RULES,  # the higher id, NEW, is the newest
}


def _all_options() -> list[dict[str, str]]:
    return [dict(zip(OPTION_VALUES, values, strict=True)) for values in itertools.product(*OPTION_VALUES.values())]


def _args(chosen: dict[str, str]) -> list[str]:
    return [f"{name}={value}" for name, value in chosen.items()]


def test_every_world_has_expectations() -> None:
    assert sorted(EXPECTED) == sorted(w.name for w in WORLDS)


@pytest.mark.parametrize("chosen", _all_options(), ids=lambda chosen: "-".join(chosen.values()))
@pytest.mark.parametrize("world", WORLDS, ids=[w.name for w in WORLDS])
def test_every_option_combination(world: World, chosen: dict[str, str]) -> None:
    rules = [want for when, want in EXPECTED[world.name] if when.items() <= chosen.items()]
    assert len(rules) == 1, f"{len(rules)} rules of EXPECTED[{world.name!r}] match {chosen}"
    opts, problems = parse_options(_args(chosen))
    assert not problems
    run = drive(opts, world)
    got = Expect(run.verdict.outcome, run.verdict.job_id, run.verdict.message, run.asked_rpc, run.tried)
    assert got == rules[0], run.verdict.reason


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
    for chosen in _all_options():
        opts = parse_options(_args(chosen))[0]
        assert effective_ignore_root(opts)
        assert drive(opts, WORLDS[3]).verdict.outcome == Outcome.IGNORE


def test_the_decision_asks_for_facts_lazily() -> None:
    opts = Options()
    assert decide(opts, Facts("sshd", "alice", 1001)) == NeedSteps()
    facts = Facts("sshd", "alice", 1001, steps=(Step(1, 1.0), Step(2, 2.0)))
    assert decide(opts, facts) == NeedRpc()
    assert decide(opts, facts._replace(rpc=Rpc(1))) == NeedAdopt(1, Stage.RPC)
    assert decide(opts, facts._replace(rpc=Rpc(None))) == NeedAdopt(2, Stage.NEWEST)
