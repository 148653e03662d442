"""Cross-release logins: a 24.11 or 26.05 chroot node (tests/support/chroot_cluster.py) asked about a
connection from a node of another release.

The other node is fake_slurmd emulating that release (22.05, or the other chroot release) in a network
namespace of its own, or the other chroot release's real cluster, linked to the node's namespace by a veth
pair (tests/support/linked_node.py), with the same munge.key (auth/munge) or slurm.key (auth/slurm, where
both releases have it). A job of the other node has the id and owner of a real job of the node (`source`),
and a process of it there runs ssh to the node's sshd over the link. The node's account stack asks the other
node (the connection's source) which job that is, in the version it speaks; the other node answers in that
version when its release's window holds it, and closes unanswered otherwise (slurmproto/versions.py).
Known: the login is adopted into `source`; refused: "unable to determine source job", and action_unknown's
newest job (the hook's: `newest`, started after `source`; the module's: the one it names).

Each pairing is asked by three account stacks: the release's real pam_slurm_adopt (the chroot's sshd), the
hook with protocol_version=auto (the host's sshd in the node's namespaces, as tests/test_live_hook.py runs
it), and the hook pinned to the node's release, which speaks as the module does. Last, the node's scontrol
asks the real node of the other release and a fake of it the same question: the same answers, on the wire
too.
"""

from __future__ import annotations

import contextlib
import pwd
import re
import secrets
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fake_slurmd.scenario import Job, NodeSpec
from slurmproto.versions import Release, release_named, tries_to_reach
from tests.support.chroot_cluster import RELEASES, ChrootCluster, missing_reason
from tests.support.chroot_files import AUTHORIZED_KEYS, AUTHS, NODE, SLURMD_PORT, SSHD_PORT
from tests.support.deploy import hook_command
from tests.support.fixtures import LiveClusters
from tests.support.linked_node import LinkedNode, ask_scontrol, fake_for
from tests.support.namespaces import NetNs
from tests.support.packets import PacketCapture, callerid_rpcs
from tests.support.procs import installed_or_skip
from tests.support.sessions import shell_line
from tests.support.slurm_cluster import srun_argv
from tests.support.sshd import Sshd

OWNER = "alice"
OTHER_RELEASES = ("22.05", *RELEASES)
"""Releases a fake other node emulates: the machine's own Slurm and the chroots'."""
PAIRINGS = [(node, other, kind, auth) for auth in AUTHS
            for kind, others in (("fake", OTHER_RELEASES), ("real", RELEASES))
            for node in RELEASES for other in others
            if other != node and (auth != "slurm" or release_named(other).auth_slurm.available)]
"""(the node's release, the other node's, fake or real, the auth mode): auth/slurm where both have it."""
ADOPTERS = ("module", "hook", "hook-pinned")
UNKNOWN = "unable to determine source job"
PICKED = re.compile(r"(?:action_unknown: Picked job|Newest job) (\d+)$")
"""The job action_unknown=newest took, in 24.11's and 26.05's words."""
PIPES: dict[str, Any] = {"stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE,
                         "text": True}
Login = Callable[[Sequence[str]], "subprocess.Popen[str]"]
"""ssh's argv -> a process of `source` on the other node running it."""


@dataclass(frozen=True)
class Pairing:
    cluster: ChrootCluster
    """The node logged in to."""
    other: Release
    source: int
    """A real job of the owner's on the node, and the other node's job of the same id and owner."""
    newest: int
    """The owner's job started after it on the node."""
    address: str
    """The node's end of the link, where the logins go."""
    other_ns: NetNs
    interface: str
    """The other node's namespace, and its end of the link (where the RPCs are captured)."""
    login: Login
    keys_from: ChrootCluster
    """The cluster whose ssh and keys the logins use."""

    @property
    def node(self) -> Release:
        return release_named(self.cluster.release)


@dataclass(frozen=True)
class RealPair:
    """A real 24.11 and 26.05 cluster with the same munge.key or slurm.key, linked; the owner's jobs `jobs` on
    each (the same ids: both are fresh)."""

    clusters: dict[str, ChrootCluster]
    link: LinkedNode
    jobs: tuple[int, int]


class RealPairs:
    """The module's real pairs, one per auth mode, each started when first asked for."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self.stack = stack
        self.pairs: dict[str, RealPair] = {}

    def get(self, auth: str) -> RealPair:
        for release in RELEASES:
            reason = missing_reason(release)
            if reason:
                pytest.skip(reason)
        if auth not in self.pairs:
            key = secrets.token_bytes(1024 if auth == "munge" else 32)  # as the clusters' own would be
            clusters = {release: self.stack.enter_context(ChrootCluster(release, auth, auth_key=key))
                        for release in RELEASES}
            jobs = {release: owner_jobs(cluster, self.stack) for release, cluster in clusters.items()}
            if len(set(jobs.values())) != 1:
                raise RuntimeError(f"fresh clusters gave different job ids: {jobs}")
            first, second = clusters.values()
            link = self.stack.enter_context(LinkedNode(first, second))
            first.authorize(second.host_path(AUTHORIZED_KEYS))
            second.authorize(first.host_path(AUTHORIZED_KEYS))
            self.pairs[auth] = RealPair(clusters, link, jobs[first.release])
        return self.pairs[auth]


@pytest.fixture(scope="module")
def real_pairs() -> Iterator[RealPairs]:
    with contextlib.ExitStack() as stack:
        yield RealPairs(stack)


def owner_jobs(cluster: ChrootCluster, stack: contextlib.ExitStack) -> tuple[int, int]:
    """Two running jobs of the owner's, the second started after the first; cancelled when `stack` closes."""
    jobs = []
    for _ in range(2):
        jobs.append(cluster.submit(OWNER, "exec sleep 600"))
        stack.callback(cluster.run, ["scancel", str(jobs[-1])], check=False)
        cluster.wait_running(jobs[-1])
    return jobs[0], jobs[1]


def fake_pairing(cluster: ChrootCluster, other: str, stack: contextlib.ExitStack) -> Pairing:
    """The fake other node in a namespace of its own, its one job `source`: the chroot's ssh run there."""
    source, newest = owner_jobs(cluster, stack)
    link = stack.enter_context(LinkedNode(cluster))
    spec = NodeSpec(f"xr-{other.replace('.', '')}", link.address, SLURMD_PORT, str(link.ns.path))
    owner = pwd.getpwnam(OWNER).pw_uid  # the chroot's accounts have the host's ids
    fake = stack.enter_context(fake_for(cluster, {source: Job(source, owner)}, node=spec, release=other))

    def login(ssh: Sequence[str]) -> subprocess.Popen[str]:
        return fake.spawn_in_job(source, cluster.chrooted(ssh, OWNER), node=spec.name, **PIPES)

    return Pairing(cluster, release_named(other), source, newest, link.cluster_addr, link.ns, link.interface, login,
                   cluster)


def real_pairing(pair: RealPair, node: str, other: str) -> Pairing:
    """The other release's real cluster: ssh from a step of its job `source` (srun --overlap)."""
    cluster, there = pair.clusters[node], pair.clusters[other]
    link = pair.link
    address = link.cluster_addr if cluster is link.cluster else link.address
    source, newest = pair.jobs

    def login(ssh: Sequence[str]) -> subprocess.Popen[str]:
        step = srun_argv(source, ssh)
        return subprocess.Popen(there.inside(step, OWNER), **PIPES)

    return Pairing(cluster, release_named(other), source, newest, address, there.ns, link.interface, login, there)


@pytest.fixture(scope="module", params=PAIRINGS, ids=[f"{n}-asks-{o}-{kind}-auth-{a}" for n, o, kind, a in PAIRINGS])
def pairing(request: pytest.FixtureRequest, live_clusters: LiveClusters, real_pairs: RealPairs) -> Iterator[Pairing]:
    node, other, kind, auth = request.param
    if kind == "real":
        yield real_pairing(real_pairs.get(auth), node, other)
        return
    with contextlib.ExitStack() as stack:
        yield fake_pairing(live_clusters.get(node, auth), other, stack)


@pytest.fixture(scope="module")
def hook_sshds(pairing: Pairing) -> Iterator[dict[str, Sshd]]:
    """The node's host sshds on the link's address: the hook in auto mode, and pinned to the node's release."""
    command = hook_command(str(Path(installed_or_skip("slurm-adopt", for_other_users=True)).parents[1]))
    cluster = pairing.cluster
    line = f"required pam_exec.so stdout quiet {command} conf={cluster.host_conf()} service={{service}} log_level=debug"
    with contextlib.ExitStack() as stack:
        sshds = {}
        for adopter, extra in (("hook", ""), ("hook-pinned", f" protocol_version={cluster.release}")):
            sshds[adopter] = cluster.node_sshd(["required pam_unix.so", line + extra], listen=[pairing.address])
            stack.callback(sshds[adopter].stop)
            if pairing.keys_from is not cluster:
                pairing.keys_from.authorize(sshds[adopter].authorized_keys)
        yield sshds


def expected_answers(pairing: Pairing, adopter: str) -> list[int | None]:
    """The job each callerid reply of the other node names (None: refused): the module (and the pinned
    hook) ask once, in the node's own version; the hook in auto mode starts there and tries other releases'
    versions while refused (slurmproto.versions.next_version)."""
    own, other = pairing.node.protocol_version, pairing.other
    if adopter != "hook":
        return [pairing.source if other.accepts(own) else None]
    tries = tries_to_reach(other, start=own)
    assert tries is not None, f"the hook cannot reach {other.name}"
    return [None] * (tries - 1) + [pairing.source]


@pytest.mark.parametrize("adopter", ADOPTERS)
def test_login_from_a_node_of_another_release(pairing: Pairing, hook_sshds: dict[str, Sshd], adopter: str) -> None:
    """ssh from the other node's job process to the node: adopted into `source` when the other node
    understood the RPC, else into `newest`; the module logs which."""
    cluster = pairing.cluster
    port = SSHD_PORT if adopter == "module" else hook_sshds[adopter].port
    ssh = cluster.ssh_argv(OWNER, "echo pid $$; exec sleep 600", port=port, host=pairing.address)
    since = cluster.syslog.mark()
    with PacketCapture(pairing.other_ns, SLURMD_PORT, interface=pairing.interface) as cap, \
         pairing.login(ssh) as login:
        try:
            first = shell_line(login, lambda: cluster.log_tails(10) if adopter == "module"
                               else hook_sshds[adopter].log_text()[-2000:])
            shell = int(first.split()[1])
            landed = [job for job in (pairing.source, pairing.newest) if cluster.in_extern_step(shell, job)]
            where = cluster.cgroup_of(shell) or ""
        finally:
            login.kill()
    rpcs = callerid_rpcs(cap)
    expected = expected_answers(pairing, adopter)
    assert [job for _, job in rpcs] == expected, rpcs
    assert rpcs[0][0] == pairing.node.protocol_version
    assert all(pairing.other.accepts(version) == (job is not None) for version, job in rpcs), rpcs
    known = expected[-1] is not None
    if adopter != "module":
        assert landed == [pairing.source if known else pairing.newest], (rpcs, landed)
        return
    cluster.syslog.wait_for(f"member of job {pairing.source}" if known else UNKNOWN, ident="pam_slurm_adopt",
                            since=since)
    if known:
        assert landed == [pairing.source], (rpcs, landed)
        return
    # The module's own newest: 24.11 by the job cgroups' mtime; 26.05 means the extern stepd socket's ctime,
    # but its sort's comparator takes qsort's slots (pointers to the steps) for the steps themselves
    # (pam_slurm_adopt.c _sort_steps_by_start_time), so it compares other memory and its pick is any of the
    # owner's jobs on the node (the session's own jobs of OWNER's included): the login is where it says.
    record = cluster.syslog.wait_for(lambda r: PICKED.search(r.message) is not None, ident="pam_slurm_adopt",
                                     since=since)
    match = PICKED.search(record.message)
    assert match is not None
    extern = cluster.extern_cgroup(int(match.group(1)))
    assert where == extern or where.startswith(extern + "/"), (rpcs, where, record)


# -- the fake of a release beside the real one, asked by the other release's scontrol -------------------------

REAL_DIRECTIONS = [(node, other, auth) for node, other, kind, auth in PAIRINGS if kind == "real"]


@dataclass(frozen=True)
class Twins:
    """The same kind of connection held on the real node of release `other` and on a fake of it, both node1
    and both linked to `cluster`: each as (the job's end, the cluster's end), with where its RPCs cross."""

    cluster: ChrootCluster
    other: Release
    source: int
    real: tuple[tuple[str, int], tuple[str, int], NetNs, str]
    fake: tuple[tuple[str, int], tuple[str, int], NetNs, str]


@pytest.fixture(scope="module", params=REAL_DIRECTIONS, ids=[f"{n}-asks-{o}-auth-{a}" for n, o, a in REAL_DIRECTIONS])
def twins(request: pytest.FixtureRequest, real_pairs: RealPairs) -> Iterator[Twins]:
    node, other, auth = request.param
    real_pair = real_pairs.get(auth)
    cluster, there, link = real_pair.clusters[node], real_pair.clusters[other], real_pair.link
    address = link.cluster_addr if cluster is link.cluster else link.address
    source = real_pair.jobs[0]
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(contextlib.closing(cluster.ns.open_socket()))
        listener.bind(("0.0.0.0", 0))
        listener.listen(4)
        listener.settimeout(30)
        port = int(listener.getsockname()[1])
        # The real node: a step of `source` holding a connection to the listener over the pair's link.
        script = f"exec 3<>/dev/tcp/{address}/{port}; exec sleep 600"
        step = srun_argv(source, ["bash", "-c", script])
        holder = stack.enter_context(subprocess.Popen(there.inside(step, OWNER), stdin=subprocess.DEVNULL))
        stack.callback(holder.kill)
        conn, peer = listener.accept()
        stack.enter_context(conn)
        # The fake: node1 of `other` in a namespace of its own, linked to the cluster's.
        fake_link = stack.enter_context(LinkedNode(cluster))
        spec = NodeSpec(NODE, fake_link.address, SLURMD_PORT, str(fake_link.ns.path))
        job = Job(source, pwd.getpwnam(OWNER).pw_uid)
        fake = stack.enter_context(fake_for(cluster, {source: job}, node=spec, release=other))
        held = stack.enter_context(fake.connect_from_job(source, fake_link.cluster_addr, port, node=NODE, user=OWNER))
        stack.enter_context(listener.accept()[0])
        yield Twins(cluster, release_named(other), source,
                    ((peer[0], int(peer[1])), (address, port), there.ns, link.interface),
                    (held.local, held.remote, fake_link.ns, fake_link.interface))


@pytest.mark.parametrize("user", ["root", OWNER], ids=["root", "owner"])
def test_fake_answers_another_release_like_the_real_node(twins: Twins, user: str) -> None:
    """The node's `scontrol callerid` (its release's slurm_network_callerid, as its pam_slurm_adopt calls it)
    about each connection: the fake prints and answers on the wire what the real node of its release does
    (the reply in the request's version, or a close)."""
    captures = [PacketCapture(ns, SLURMD_PORT, interface=interface)
                for _, _, ns, interface in (twins.real, twins.fake)]
    answers = [ask_scontrol(twins.cluster, local, remote, user, cap)
               for (local, remote, _, _), cap in zip((twins.real, twins.fake), captures, strict=True)]
    real, fake = answers
    assert fake == real, answers
    # And each ends its connection alike (a FIN, or a reset).
    ends = [[(e.server_closed, e.reset) for e in cap.exchanges()] for cap in captures]
    assert ends[1] == ends[0], ends
    if twins.other.accepts(release_named(twins.cluster.release).protocol_version):
        assert (real.code, real.out) == (0, f"{twins.source} {NODE}\n"), real
    else:
        assert real.code != 0 and real.replies == [], real
