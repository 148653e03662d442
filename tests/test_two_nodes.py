"""Cross-node logins on two real Slurm 22.05 nodes (tests/support/two_nodes.py), the C module beside the hook
and the in-process module (which share one decision: "ours" below).

A process of a job on xn1 (the job's batch script, tests/support/job_agent.py) runs ssh to an sshd in xn2's
namespaces; that sshd's account stack asks xn1's slurmd over the veth which job the connection comes from
and adopts the login on xn2. Each case runs once per entry of ADOPTERS, each with its own sshd and stack;
what the entries must agree on is asserted the same way, and where the C module is wrong the comment says
so and only the right answer is asserted for the others.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fake_slurmd.network import nsenter_argv
from tests.support.deploy import hook_command, pam_python_line
from tests.support.procs import installed_or_skip, need_programs, pam_module_or_skip
from tests.support.sessions import PAM_SLURM_ADOPT, UNKNOWN
from tests.support.sshd import PROGRAMS as SSHD_PROGRAMS
from tests.support.sshd import Sshd
from tests.support.syslog import DevLogCatcher
from tests.support.two_nodes import EXTRA_ADDR, LOGIN_ADDR, NODE2_LOGIN_SIDE, AgentJob, TwoNodes

CGROUP = re.compile(r"^\d+:freezer:/slurm_(\w+)/uid_\d+/job_(\d+)/step_extern", re.M)
OTHER_HOSTNAME = "localhost"
"""A host name slurm.conf does not know. One /etc/hosts resolves: 22.05's module looks an unknown host name
up (slurm_conf_get_aliased_nodename), and for a name nothing resolves its get_addr_info retries
getaddrinfo for 10 s before giving up, each login, to the same outcome."""
DEADLINE = 2.0
"""Our deadline (the hook's and the in-process module's) where a source host hangs."""

AccountLines = Callable[[Path, str], list[str]]
"""(slurm.conf, the case's options) -> one adopter's PAM account lines (`{service}`: the sshd's service)."""


def module_lines(conf: Path, options: str) -> list[str]:
    """Debian's pam_slurm_adopt.so (it reads slurm.conf from $SLURM_CONF, which each sshd gets)."""
    if not Path(PAM_SLURM_ADOPT).exists():
        pytest.skip(f"needs {PAM_SLURM_ADOPT} (apt-get install libpam-slurm-adopt)")
    return ["required pam_unix.so", f"required {PAM_SLURM_ADOPT} service={{service}} {options}"]


def hook_lines(conf: Path, options: str) -> list[str]:
    """slurm-adopt through pam_exec, as the README's line runs it."""
    hook = hook_command(os.path.dirname(os.path.dirname(installed_or_skip("slurm-adopt"))))
    return ["required pam_unix.so",
            f"required pam_exec.so stdout quiet {hook} conf={conf} service={{service}} deadline={DEADLINE:g} "
            f"log_level=debug {options}"]


def inprocess_lines(conf: Path, options: str) -> list[str]:
    """The in-process module (adopt/pam_module.py under libpam-python), the hook's options."""
    module = pam_python_line(pam_module_or_skip(), [f"conf={conf}", "service={service}", f"deadline={DEADLINE:g}",
                                                    "log_level=debug", options])
    return ["required pam_unix.so", f"required {module}"]


ADOPTERS: dict[str, AccountLines] = {"module": module_lines, "hook": hook_lines, "inprocess": inprocess_lines}
"""Each entry is one implementation under test; a new one is one more entry (its account lines)."""
IDENTS = {"module": "pam_slurm_adopt", "hook": "slurm-adopt", "inprocess": "slurm-adopt"}
"""Their syslog idents (an entry without one is not checked for log lines)."""


@dataclass(frozen=True)
class Jobs:
    a: AgentJob
    """alice's, on xn1 and xn2."""
    b: AgentJob
    """alice's, on xn1 and xn2, started after a."""
    e: AgentJob
    """bob's, on xn1 only."""
    f: AgentJob
    """bob's, on xn2 only."""


@dataclass(frozen=True)
class Landing:
    status: int
    node: str | None
    """Where the remote shell's cgroup is (slurm_<node>), None when in no job's extern step."""
    job: int | None
    hostname: str
    stderr: str


@pytest.fixture(scope="module")
def jobs(two_nodes: TwoNodes) -> Iterator[Jobs]:
    made = Jobs(two_nodes.agent_job("alice"), two_nodes.agent_job("alice"),
                two_nodes.agent_job("bob", ["xn1"]), two_nodes.agent_job("bob", ["xn2"]))
    yield made
    for job in (made.a, made.b, made.e, made.f):
        two_nodes.cancel(job.job_id)


SshdFor = Callable[..., Sshd]


@pytest.fixture(scope="module")
def sshd_for(two_nodes: TwoNodes) -> Iterator[SshdFor]:
    """sshd_for(adopter, options="", *, node="xn2", hostname=None, conf=None): an sshd in that node's
    namespaces with that adopter's stack, listening on the node's addresses (one per distinct arguments,
    kept for the module). `hostname` runs it under another host name than the node's, `conf` gives its
    stack another slurm.conf than the cluster's."""
    reason = need_programs(*SSHD_PROGRAMS)
    if reason:
        pytest.skip(reason)
    made: dict[tuple[str, str, str, str | None, Path | None], Sshd] = {}
    with contextlib.ExitStack() as stack:

        def get(adopter: str, options: str = "", *, node: str = "xn2", hostname: str | None = None,
                conf: Path | None = None) -> Sshd:
            key = (adopter, options, node, hostname, conf)
            if key not in made:
                where = two_nodes.node(node)
                uts = where.uts if hostname is None else two_nodes.hostname_ns(hostname)
                conf = conf or two_nodes.conf
                listen = [where.addr, where.addr6, *([NODE2_LOGIN_SIDE] if node == "xn2" else [])]
                sshd = Sshd(ADOPTERS[adopter](conf, options), env={"SLURM_CONF": str(conf)}, users=["alice", "bob"],
                            listen=listen, netns=str(where.netns.path), uts=uts)
                stack.callback(sshd.stop)
                made[key] = sshd.start()
            return made[key]

        yield get


@pytest.fixture(params=list(ADOPTERS))
def adopter(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _landing(status: int, stdout: str, stderr: str) -> Landing:
    found = CGROUP.search(stdout)
    hostname = stdout.splitlines()[0] if stdout else ""
    if found is None:
        return Landing(status, None, None, hostname, stderr)
    return Landing(status, found.group(1), int(found.group(2)), hostname, stderr)


REMOTE = "hostname; cat /proc/self/cgroup"
"""What the login runs: where it is, and the cgroups the adopted sshd process handed down to it."""


def two_nodes_addr(node: str) -> str:
    return {"xn1": "10.77.0.1", "xn2": "10.77.0.2"}[node]


def login(job: AgentJob, sshd: Sshd, host: str = "10.77.0.2", options: tuple[str, ...] = ()) -> Landing:
    """ssh from a process of `job` on its first node to `host` (an address of xn2's sshd)."""
    proc = job.run(sshd.ssh_argv(job.user, REMOTE, host=host, options=options), timeout=40)
    return _landing(proc.returncode, proc.stdout, proc.stderr)


def login_from_outside(two_nodes: TwoNodes, sshd: Sshd, user: str) -> Landing:
    """ssh from the login namespace (a host that is no node) to xn2."""
    argv = nsenter_argv(["runuser", "-u", user, "--", *sshd.ssh_argv(user, REMOTE, host=NODE2_LOGIN_SIDE)],
                        net=two_nodes.login.path)
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=40, check=False)
    return _landing(proc.returncode, proc.stdout, proc.stderr)


class AdopterLog:
    """What the adopter logs to syslog from the test's start on. Checked last in a test: without a /dev/log
    of ours (another test run serves it) the test ends in a skip saying the verdict was checked, the log
    line not."""

    def __init__(self, catcher: DevLogCatcher | None, adopter: str, why: str) -> None:
        self.catcher, self.adopter, self.why = catcher, adopter, why
        self.since = catcher.mark() if catcher is not None else 0

    def expect(self, pattern: str) -> None:
        if self.adopter not in IDENTS:
            return
        if self.catcher is None:
            pytest.skip(f"verdict checked; log line {pattern!r} not: {self.why}")
        lines = [r.message for r in self.catcher.messages(ident=IDENTS[self.adopter], since=self.since)]
        assert any(re.search(pattern, m) for m in lines), lines


@pytest.fixture
def adopter_log(request: pytest.FixtureRequest, adopter: str) -> AdopterLog:
    try:
        catcher: DevLogCatcher = request.getfixturevalue("devlog")
    except pytest.skip.Exception as e:
        return AdopterLog(None, adopter, str(e))
    return AdopterLog(catcher, adopter, "")


# --- the RPC names the job ------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["a", "b"])
def test_from_either_of_two_jobs_spanning_both_nodes(two_nodes: TwoNodes, jobs: Jobs, sshd_for: SshdFor,
                                                     adopter: str, which: str, adopter_log: AdopterLog) -> None:
    """alice has two jobs on both nodes: from each, the login lands in that job's extern step on xn2."""
    job: AgentJob = getattr(jobs, which)
    landed = login(job, sshd_for(adopter))
    assert (landed.status, landed.node, landed.job, landed.hostname) == (0, "xn2", job.job_id, "xn2"), landed
    adopter_log.expect(rf"From 10\.77\.0\.1 port \d+ as alice: member of job {job.job_id}$")


def test_over_ipv6(jobs: Jobs, sshd_for: SshdFor, adopter: str, adopter_log: AdopterLog) -> None:
    """fd77::1 -> fd77::2: both slurmds listen on IPv6 too (EnableIPv6), the RPC goes to xn1 over IPv6."""
    landed = login(jobs.a, sshd_for(adopter), host="fd77::2")
    assert (landed.status, landed.node, landed.job) == (0, "xn2", jobs.a.job_id), landed
    adopter_log.expect(rf"From fd77::1 port \d+ as alice: member of job {jobs.a.job_id}$")


def test_from_an_address_that_is_not_the_nodeaddr(jobs: Jobs, sshd_for: SshdFor, adopter: str,
                                                  adopter_log: AdopterLog) -> None:
    """From 10.77.0.11, xn1's but not its NodeAddr: the RPC goes to that address, where xn1's slurmd
    (listening on every address) answers all the same."""
    landed = login(jobs.b, sshd_for(adopter), options=("-b", EXTRA_ADDR))
    assert (landed.status, landed.node, landed.job) == (0, "xn2", jobs.b.job_id), landed
    adopter_log.expect(rf"From {re.escape(EXTRA_ADDR)} port \d+ as alice: member of job {jobs.b.job_id}$")


# --- the RPC names a job that is not on this node ---------------------------------------------------------


@pytest.mark.parametrize("options", ["", "single_job_skip_rpc=0"], ids=["skip-rpc", "rpc"])
@pytest.mark.parametrize("direction", ["xn1-to-xn2", "xn2-to-xn1"])
def test_from_a_job_on_the_other_node_only(jobs: Jobs, sshd_for: SshdFor, adopter: str, options: str,
                                           direction: str, adopter_log: AdopterLog) -> None:
    """bob's job e is on xn1 only, his job f on xn2 only; he logs in from one to the other node. With one
    job there both adopt into it without asking; made to ask, the RPC names the job he comes from, which
    has no extern step on the node he logs in to: the module's adoption into it fails and it falls back to
    action_unknown, ours do not take a job that is not there; all end in the only job there."""
    source, target, node = (jobs.e, jobs.f, "xn2") if direction == "xn1-to-xn2" else (jobs.f, jobs.e, "xn1")
    landed = login(source, sshd_for(adopter, options, node=node), host=two_nodes_addr(node))
    assert (landed.status, landed.node, landed.job, landed.hostname) == (0, node, target.job_id, node), landed
    if options:
        adopter_log.expect(rf"as bob: member of job {source.job_id}$")


def test_from_a_job_on_the_other_node_only_with_action_unknown_deny(jobs: Jobs, sshd_for: SshdFor, adopter: str,
                                                                   adopter_log: AdopterLog) -> None:
    """As above, made to ask, with action_unknown=deny. 22.05's module sends every RPC that names no job
    here to action_unknown, one job or several, and refuses; 26.05's (which ours follow) applies
    action_unknown to several jobs only, and adopts into the only one, f. A difference of releases, not a
    mistake: each entry is held to its own rule."""
    landed = login(jobs.e, sshd_for(adopter, "single_job_skip_rpc=0 action_unknown=deny"))
    if adopter == "module":
        assert (landed.status, landed.job) == (255, None) and UNKNOWN in landed.stderr, landed
    else:
        assert (landed.status, landed.node, landed.job) == (0, "xn2", jobs.f.job_id), landed
    adopter_log.expect(rf"as bob: member of job {jobs.e.job_id}$")


# --- no answer from the source ----------------------------------------------------------------------------


@pytest.fixture(params=["stopped", "dropping"])
def xn1_slurmd(request: pytest.FixtureRequest, two_nodes: TwoNodes, jobs: Jobs) -> Iterator[str]:
    """xn1's slurmd stopped (its port refuses: a reset), or xn2 dropping everything it sends to slurmd
    ports (a policy route to a next hop that discards it; the namespaces have no iptables or tc). Per
    test: a module-scoped fixture would stay in place for the tests after it."""
    if request.param == "stopped":
        two_nodes.stop_slurmd("xn1")
        try:
            yield "stopped"
        finally:
            two_nodes.start_slurmd("xn1")
    else:
        with two_nodes.dropping_slurmd_traffic(on="xn2"):
            yield "dropping"


@pytest.mark.parametrize("options", ["action_unknown=deny", ""], ids=["deny", "newest"])
def test_source_slurmd_does_not_answer(jobs: Jobs, sshd_for: SshdFor, adopter: str, xn1_slurmd: str,
                                       options: str, adopter_log: AdopterLog) -> None:
    """alice has two jobs on xn2 and the RPC gets no answer: action_unknown. deny refuses; newest takes
    the latest started job (b) in ours, while 22.05's module takes the job whose cgroup directory on
    xn2 has the newest mtime (whole seconds, ties to the last listed): not the rule asserted here."""
    started = time.monotonic()
    landed = login(jobs.a, sshd_for(adopter, options))
    elapsed = time.monotonic() - started
    if options:
        assert (landed.status, landed.job) == (255, None) and UNKNOWN in landed.stderr, landed
    elif adopter == "module":
        assert (landed.status, landed.node) == (0, "xn2") and landed.job in (jobs.a.job_id, jobs.b.job_id), landed
    else:
        assert (landed.status, landed.node, landed.job) == (0, "xn2", jobs.b.job_id), landed
    if adopter != "module":
        assert elapsed < DEADLINE + 3.0, elapsed  # the deadline, plus ssh's own connection and the agent
    adopter_log.expect(r"From 10\.77\.0\.1 port \d+ as alice: unable to determine source job$")


@pytest.mark.parametrize("options", ["action_unknown=deny", ""], ids=["deny", "newest"])
def test_from_a_host_that_is_no_node(two_nodes: TwoNodes, jobs: Jobs, sshd_for: SshdFor, adopter: str,
                                     options: str, adopter_log: AdopterLog) -> None:
    """From the login namespace, where no slurmd listens: the RPC is refused at once, action_unknown."""
    landed = login_from_outside(two_nodes, sshd_for(adopter, options), "alice")
    if options:
        assert (landed.status, landed.job) == (255, None) and UNKNOWN in landed.stderr, landed
    elif adopter == "module":  # the newest cgroup mtime, see above
        assert landed.status == 0 and landed.job in (jobs.a.job_id, jobs.b.job_id), landed
    else:
        assert (landed.status, landed.node, landed.job) == (0, "xn2", jobs.b.job_id), landed
    adopter_log.expect(rf"From {re.escape(LOGIN_ADDR)} port \d+ as alice: unable to determine source job$")


# --- node names -------------------------------------------------------------------------------------------


def test_host_name_slurm_conf_does_not_know(jobs: Jobs, sshd_for: SshdFor, adopter: str,
                                            adopter_log: AdopterLog) -> None:
    """sshd on xn2 under a host name that is no NodeHostname, nodename=xn2 given. The RPC names job a
    for both. 22.05's module then connects to a's stepd with the node name guessed from the host name
    (its RPC path ignores nodename=), finds none, and falls back to action_unknown: the newest cgroup, a
    or b, a guess. Ours adopt into a, the job the connection comes from."""
    landed = login(jobs.a, sshd_for(adopter, "nodename=xn2", hostname=OTHER_HOSTNAME))
    assert landed.hostname == OTHER_HOSTNAME, landed
    if adopter == "module":
        assert (landed.status, landed.node) == (0, "xn2") and landed.job in (jobs.a.job_id, jobs.b.job_id), landed
    else:
        assert (landed.status, landed.node, landed.job) == (0, "xn2", jobs.a.job_id), landed
    adopter_log.expect(rf"From 10\.77\.0\.1 port \d+ as alice: member of job {jobs.a.job_id}$")


@pytest.mark.parametrize("hostname", ["xn2-os", "xn2.example.org"])
def test_host_name_that_maps_to_the_node(two_nodes: TwoNodes, jobs: Jobs, sshd_for: SshdFor, adopter: str,
                                         hostname: str) -> None:
    """No nodename=: the node is found from the host name, through NodeHostname (xn2-os, in the stack's
    slurm.conf only) or as a short name (xn2.example.org), on the RPC path as well: all adopt into b."""
    conf = None
    if "." not in hostname:
        conf = two_nodes.conf_copy(hostname, lambda text: text.replace(
            "NodeName=xn2 NodeHostname=xn2 ", f"NodeName=xn2 NodeHostname={hostname} "))
    landed = login(jobs.b, sshd_for(adopter, hostname=hostname, conf=conf))
    assert (landed.status, landed.node, landed.job, landed.hostname) == (0, "xn2", jobs.b.job_id, hostname), landed


def test_no_nodename_and_an_unknown_host_name(jobs: Jobs, sshd_for: SshdFor, adopter: str) -> None:
    """Without nodename= and under a host name slurm.conf does not know, neither can find this node's
    steps: the C module says "No Slurm jobs found on node." and ignores, ours say the same and end in
    action_generic_failure (ignore): the login passes, in no job."""
    landed = login(jobs.a, sshd_for(adopter, "", hostname=OTHER_HOSTNAME))
    assert (landed.status, landed.job, landed.hostname) == (0, None, OTHER_HOSTNAME), landed
    assert "No Slurm jobs found on node." in landed.stderr, landed
