"""Cross-release logins: a 24.11 or 26.05 chroot node (tests/support/chroot_cluster.py) asked about a
connection from a node of another release.

The other node is fake_slurmd emulating that release (22.05, or the other chroot release) in a network
namespace of its own linked to the cluster's by a veth pair (tests/support/linked_node.py), with the
cluster's munged. Its one job has the id and owner of a real job of the cluster (`source`), and its process
there runs the chroot's ssh to the node's sshd over the link. The node's account stack asks the fake (the
connection's source) which job that is, in the version it speaks; the fake answers in that version when its
release's window holds it, and closes unanswered otherwise, as that release's slurmd does
(slurmproto/versions.py). Known: the login is adopted into `source`; refused: "unable to determine source
job", and action_unknown's newest job, `newest` (started after `source`).

Each pairing is asked by three account stacks: the release's real pam_slurm_adopt (the chroot's sshd), the
hook with protocol_version=auto (the host's sshd in the node's namespaces, as tests/test_live_hook.py runs
it), and the hook pinned to the node's release, which speaks as the module does.
"""

from __future__ import annotations

import contextlib
import pwd
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fake_slurmd.controller import FakeSlurmd
from fake_slurmd.scenario import Job, NodeSpec
from slurmproto.versions import Release, release_named, tries_to_reach
from tests.support.chroot_cluster import RELEASES, ChrootCluster
from tests.support.chroot_files import SLURMD_PORT, SSHD_PORT
from tests.support.deploy import hook_command
from tests.support.fixtures import LiveClusters
from tests.support.linked_node import LinkedNode, fake_for
from tests.support.packets import PacketCapture, callerid_rpcs
from tests.support.procs import installed_or_skip
from tests.support.sshd import Sshd

OWNER = "alice"
OTHER_RELEASES = ("22.05", *RELEASES)
"""Releases the other node may emulate: the machine's own Slurm and the chroots'."""
PAIRINGS = [(node, other) for node in RELEASES for other in OTHER_RELEASES if other != node]
ADOPTERS = ("module", "hook", "hook-pinned")
UNKNOWN = "unable to determine source job"


@dataclass(frozen=True)
class Pairing:
    cluster: ChrootCluster
    fake: FakeSlurmd
    """The other node (release `other`), at link.address."""
    link: LinkedNode
    other: Release
    source: int
    """A real job of the owner's on the chroot node, and the fake node's job of the same id and owner."""
    newest: int
    """The owner's job started after it, on the chroot node only."""

    @property
    def node(self) -> Release:
        return release_named(self.cluster.release)


@pytest.fixture(scope="module", params=PAIRINGS, ids=[f"{n}-asks-{o}" for n, o in PAIRINGS])
def pairing(request: pytest.FixtureRequest, live_clusters: LiveClusters) -> Iterator[Pairing]:
    release, other = request.param
    cluster = live_clusters.get(release, "munge")
    with contextlib.ExitStack() as stack:
        jobs = []
        for _ in range(2):
            jobs.append(cluster.submit(OWNER, "exec sleep 600"))
            stack.callback(cluster.run, ["scancel", str(jobs[-1])], check=False)
            cluster.wait_running(jobs[-1])
        link = stack.enter_context(LinkedNode(cluster))
        spec = NodeSpec(f"xr-{other.replace('.', '')}", link.address, SLURMD_PORT, str(link.ns.path))
        owner = pwd.getpwnam(OWNER).pw_uid  # the chroot's accounts have the host's ids
        fake = stack.enter_context(fake_for(cluster, {jobs[0]: Job(jobs[0], owner)}, node=spec, release=other))
        yield Pairing(cluster, fake, link, release_named(other), jobs[0], jobs[1])


@pytest.fixture(scope="module")
def hook_sshds(pairing: Pairing) -> Iterator[dict[str, Sshd]]:
    """The node's host sshds on the link's address: the hook in auto mode, and pinned to the node's release."""
    command = hook_command(str(Path(installed_or_skip("slurm-adopt", for_other_users=True)).parents[1]))
    cluster = pairing.cluster
    line = f"required pam_exec.so stdout quiet {command} conf={cluster.host_conf()} service={{service}} log_level=debug"
    with contextlib.ExitStack() as stack:
        sshds = {}
        for adopter, extra in (("hook", ""), ("hook-pinned", f" protocol_version={cluster.release}")):
            sshds[adopter] = cluster.node_sshd(["required pam_unix.so", line + extra],
                                               listen=[pairing.link.cluster_addr])
            stack.callback(sshds[adopter].stop)
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
    ssh = cluster.ssh_argv(OWNER, "echo pid $$; exec sleep 600", port=port, host=pairing.link.cluster_addr)
    since = cluster.syslog.mark()
    with PacketCapture(pairing.link.ns, SLURMD_PORT, interface=pairing.link.interface) as cap, \
         pairing.fake.spawn_in_job(pairing.source, cluster.chrooted(ssh, OWNER), node=pairing.fake.node().name,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True) as login:
        try:
            assert login.stdout is not None and login.stderr is not None
            first = login.stdout.readline()
            if not first.startswith("pid "):
                login.kill()
                logs = hook_sshds["hook"].log_text()[-2000:] if adopter != "module" else cluster.log_tails(10)
                pytest.fail(f"the login printed {first!r}; ssh said {login.stderr.read()!r}\n{logs}")
            shell = int(first.split()[1])
            landed = [job for job in (pairing.source, pairing.newest) if cluster.in_extern_step(shell, job)]
        finally:
            login.kill()
    rpcs = callerid_rpcs(cap)
    expected = expected_answers(pairing, adopter)
    assert [job for _, job in rpcs] == expected, rpcs
    assert rpcs[0][0] == pairing.node.protocol_version
    assert all(pairing.other.accepts(version) == (job is not None) for version, job in rpcs), rpcs
    known = expected[-1] is not None
    assert landed == [pairing.source if known else pairing.newest], (rpcs, landed)
    if adopter == "module":
        words = f"member of job {pairing.source}" if known else UNKNOWN
        cluster.syslog.wait_for(words, ident="pam_slurm_adopt", since=since)
