"""pam_slurm_adopt's decision (the 26.05 flow), as a pure function of the options and the facts.

`decide(opts, facts)` answers either a Verdict, or what it needs to know next: the user's steps on this
node (NeedSteps), the callerid RPC's answer (NeedRpc) or the result of adopting into a job (NeedAdopt).
The hook gathers that fact, adds it to the facts, and asks again; `--explain` does the same without
adopting. Nothing here does I/O.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple

from adopt.options import Action, Options

MODULE = "pam_slurm_adopt"
NO_JOBS = f"Access denied by {MODULE}: you have no active jobs on this node"
UNKNOWN_SOURCE = f"Access denied by {MODULE}: unable to determine source job"
ADOPTION_FAILURE = f"Access denied by {MODULE}: adoption failure"
NO_SLURM_JOBS = "No Slurm jobs found on node."


class Outcome(Enum):
    """The PAM result the module would return."""

    SUCCESS = "PAM_SUCCESS"
    PERM_DENIED = "PAM_PERM_DENIED"
    IGNORE = "PAM_IGNORE"
    SESSION_ERR = "PAM_SESSION_ERR"


class Stage(Enum):
    """Which adoption the flow tries: into the job the callerid RPC named, or into the newest (or only) job."""

    RPC = "rpc"
    NEWEST = "newest"


class Step(NamedTuple):
    """One of the user's extern steps on this node."""

    job_id: int
    start_time: float
    """The socket's ctime: when the job started here."""


class Rpc(NamedTuple):
    """What the callerid RPC told: the job (None: indeterminate), or why there is no answer."""

    job_id: int | None
    error: str | None = None


class Facts(NamedTuple):
    service: str | None
    user: str | None
    uid: int | None
    """None: no such user."""
    steps: tuple[Step, ...] | None = None
    """The user's extern steps here; None: not looked at yet."""
    node_known: bool = True
    """False: the node name (so where its steps are) could not be determined."""
    rpc: Rpc | None = None
    adoptions: tuple[tuple[Stage, int, bool], ...] = ()
    """(stage, job, adopted?) for each adoption tried."""

    def adopted(self, stage: Stage, job_id: int) -> bool | None:
        return next((ok for s, j, ok in self.adoptions if (s, j) == (stage, job_id)), None)


class Verdict(NamedTuple):
    outcome: Outcome
    reason: str
    message: str | None = None
    """What the user is shown (a deny message)."""
    job_id: int | None = None
    """The job the login was adopted into."""


class NeedSteps(NamedTuple):
    """Find the user's extern steps on this node."""


class NeedRpc(NamedTuple):
    """Ask the slurmd at the connection's source which job it comes from."""


class NeedAdopt(NamedTuple):
    """Adopt the login into this job (the answer goes into Facts.adoptions, with the stage)."""

    job_id: int
    stage: Stage


Decision = Verdict | NeedSteps | NeedRpc | NeedAdopt


def effective_ignore_root(opts: Options) -> bool:
    """The module's lock-out guard: ignore_root=0 only counts when every action lets people in.

    As action_no_jobs cannot be "allow", that is never: the module always forces ignore_root back on.
    """
    safe = (opts.action_unknown != Action.DENY and opts.action_no_jobs == Action.ALLOW
            and opts.action_adopt_failure == Action.ALLOW and opts.action_generic_failure == Action.ALLOW)
    return opts.ignore_root or not safe


def generic_failure(opts: Options) -> Outcome:
    return {Action.DENY: Outcome.PERM_DENIED, Action.ALLOW: Outcome.SUCCESS}.get(
        opts.action_generic_failure, Outcome.IGNORE)


def newest_first(steps: tuple[Step, ...]) -> list[Step]:
    """26.05's order: latest start first, then the highest job id."""
    return sorted(steps, key=lambda s: (s.start_time, s.job_id), reverse=True)


def decide(opts: Options, facts: Facts) -> Decision:
    allowed = opts.service
    if allowed != "*" and facts.service != allowed:
        return Verdict(Outcome.IGNORE, f"PAM service {facts.service!r} is not {allowed!r}: not adopting")
    if not facts.user:
        return Verdict(Outcome.SESSION_ERR, "no user name in PAM_USER")
    if facts.uid is None:
        return Verdict(Outcome.SESSION_ERR, f"no such user {facts.user!r}")
    if facts.uid == 0 and effective_ignore_root(opts):
        return Verdict(Outcome.IGNORE, "Ignoring root user")
    if not facts.node_known:
        return Verdict(generic_failure(opts), "the node name could not be determined: no steps to look at",
                       NO_SLURM_JOBS)
    if facts.steps is None:
        return NeedSteps()
    steps = newest_first(facts.steps)
    if not steps:
        if opts.action_no_jobs == Action.DENY:
            return Verdict(Outcome.PERM_DENIED, f"uid {facts.uid} owns no jobs => deny", NO_JOBS)
        return Verdict(Outcome.IGNORE, f"uid {facts.uid} owns no jobs but action_no_jobs=ignore")
    several = len(steps) > 1
    if not opts.single_job_skip_rpc or several:
        if facts.rpc is None:
            return NeedRpc()
        job = facts.rpc.job_id
        # Adopt into the job the source names, when it is one of this user's jobs here.
        if job is not None and any(s.job_id == job for s in steps):
            adopted = facts.adopted(Stage.RPC, job)
            if adopted is None:
                return NeedAdopt(job, Stage.RPC)
            if adopted:
                return Verdict(Outcome.SUCCESS, f"the connection comes from job {job}: adopted", job_id=job)
    if several:
        if opts.action_unknown == Action.ALLOW:
            return Verdict(Outcome.SUCCESS, "source job unknown and action_unknown=allow: no adoption")
        if opts.action_unknown == Action.DENY:
            return Verdict(Outcome.PERM_DENIED, f"uid {facts.uid} owns multiple jobs and action_unknown=deny => "
                           "deny", UNKNOWN_SOURCE)
    newest = steps[0].job_id
    adopted = facts.adopted(Stage.NEWEST, newest)
    if adopted is None:
        return NeedAdopt(newest, Stage.NEWEST)
    if adopted:
        which = "its only job" if not several else "the newest job"
        return Verdict(Outcome.SUCCESS, f"adopted into {which}, {newest}", job_id=newest)
    if opts.action_adopt_failure == Action.ALLOW:
        return Verdict(Outcome.SUCCESS, f"adoption into job {newest} failed; action_adopt_failure=allow")
    return Verdict(Outcome.PERM_DENIED, f"uid {facts.uid} failed to adopt into job {newest} and "
                   "action_adopt_failure=deny => deny", ADOPTION_FAILURE)
