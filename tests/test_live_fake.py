"""fake_slurmd asked by Debian's real Slurm 24.11 and 26.05 (tests/support/chroot_cluster.py), in both auth
modes: the release's own `scontrol callerid`, run in the chroot, gets from the fake what it gets from the
real slurmd.

The fake runs in this process with the cluster's munged or slurm.key and listens inside the cluster's
network namespace. scontrol finds it through a copy of the cluster's slurm.conf beside the original (so
auth/slurm's slurm.key is the same file) whose SlurmdPort is the fake's; the real slurmd keeps 6818.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from fake_slurmd.controller import FakeSlurmd, JobConnection
from fake_slurmd.scenario import Job, NodeSpec, Scenario
from slurmproto.codec import decode_stream
from slurmproto.conf import parse_file
from slurmproto.constants import MsgType
from slurmproto.messages import Message, NetworkCallerIdResponse
from slurmproto.versions import release_named
from tests.support.chroot_cluster import CONF, ChrootCluster, HeldConnection
from tests.support.chroot_files import NODE, SLURMD_PORT, ids_of
from tests.support.packets import msg_type

OWNER, OTHER = "alice", "bob"
JOBS = (900001, 900002)
"""The fake's jobs: far above the ids the real controller hands out, so no answer can be the real one's."""
INDETERMINATE = "remote job id indeterminate"


def fake_for(cluster: ChrootCluster, jobs: dict[int, Job], port: int = 0, spool_dir: str | None = None
             ) -> FakeSlurmd:
    """A fake node1 of the cluster's release and auth, with its munged or slurm.key and ClusterName,
    listening on 127.0.0.1 inside its network namespace."""
    conf = parse_file(cluster.conf, env={})
    scenario = Scenario([NodeSpec(NODE, "127.0.0.1", port, str(cluster.ns.path))], jobs, release=cluster.release,
                        slurm_user=ids_of(cluster.root, "slurm")[0], cluster=conf.cluster_name,
                        client_timeout=5.0)
    if cluster.auth == "munge":
        return FakeSlurmd(scenario, munge_socket=str(cluster.munge_socket), spool_dir=spool_dir)
    return FakeSlurmd(scenario, auth="slurm", key=str(cluster.key_path), spool_dir=spool_dir)


@dataclass
class FakeNode:
    fake: FakeSlurmd
    conf: str
    """The slurm.conf (as the chroot sees it) that sends scontrol to the fake."""
    held: dict[int, JobConnection]
    """Per job: a process of it holding a connection in the namespace."""


@pytest.fixture(scope="module")
def node(cluster: ChrootCluster) -> Iterator[FakeNode]:
    uid = ids_of(cluster.root, OWNER)[0]
    jobs = {job_id: Job(job_id, uid) for job_id in JOBS}
    inside = f"{CONF.rpartition('/')[0]}/fake-slurmd.conf"
    with contextlib.ExitStack() as stack, fake_for(cluster, jobs) as fake:
        listener = stack.enter_context(contextlib.closing(cluster.ns.open_socket()))
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        held = {job_id: stack.enter_context(fake.connect_from_job(job_id, *listener.getsockname(), user=OWNER,
                                                                  netns=str(cluster.ns.path)))
                for job_id in JOBS}
        text = re.sub(r"(?m)^SlurmdPort=\d+$", f"SlurmdPort={fake.port}", cluster.conf.read_text())
        assert f"SlurmdPort={fake.port}\n" in text
        cluster.host_path(inside).write_text(text)
        stack.callback(cluster.host_path(inside).unlink)
        yield FakeNode(fake, inside, held)


@dataclass(frozen=True)
class Asked:
    """What scontrol printed, and what the daemon answered on the wire (each reply's header version, flags
    and message; the credential left out: each signs its own)."""

    code: int
    out: str
    err: str
    replies: list[tuple[int, int, Message]]


def scontrol_callerid(cluster: ChrootCluster, local: tuple[str, int], remote: tuple[str, int], user: str,
                      node: FakeNode | None = None) -> Asked:
    """The chroot's `scontrol callerid` about local -> remote (local: the job's end), asking the fake
    (`node`) or the real slurmd."""
    conf, port = (node.conf, node.fake.port) if node else (CONF, SLURMD_PORT)
    argv = ["env", f"SLURM_CONF={conf}", "scontrol", "callerid", local[0], str(local[1]), remote[0], str(remote[1])]
    with cluster.capture(port) as cap:
        proc = cluster.run(argv, user=user, check=False)
    # Only the callerid exchanges: slurmctld talks to the real slurmd's port as well.
    replies = [(f.header.version, f.header.flags, f.message) for e in cap.exchanges()
               if e.requests and msg_type(e.requests[0]) == MsgType.REQUEST_NETWORK_CALLERID
               for f in decode_stream(b"".join(e.replies))]
    return Asked(proc.returncode, proc.stdout, proc.stderr, replies)


@pytest.mark.parametrize("user", ["root", OWNER])
def test_scontrol_gets_the_fake_job_of_the_connection(cluster: ChrootCluster, node: FakeNode, user: str) -> None:
    """Each of the owner's two fake jobs holds a connection: the fake names the one holding it."""
    assert node.fake.server is not None
    for job_id, conn in node.held.items():
        asked = node.fake.server.requests
        answer = scontrol_callerid(cluster, conn.local, conn.remote, user, node)
        assert (answer.code, answer.out) == (0, f"{job_id} {NODE}\n"), (answer, cluster.log_tails())
        [(version, _, message)] = answer.replies
        assert isinstance(message, NetworkCallerIdResponse) and message.job_id == job_id
        assert version == release_named(cluster.release).protocol_version
        assert node.fake.server.requests == asked + 1


def _same_answers(ours: Asked, theirs: Asked) -> None:
    """The same output and the same replies, and no job named."""
    assert ours == theirs, (ours, theirs)
    assert len(ours.replies) == 1
    assert (ours.code, ours.out) == (1, "") and INDETERMINATE in ours.err


@pytest.mark.parametrize("user", ["root", OWNER])
def test_unknown_connection_like_the_real_slurmd(cluster: ChrootCluster, node: FakeNode, held: HeldConnection,
                                                 user: str) -> None:
    """A tuple no socket has (port 1), asked of the fake and of the real slurmd: the same answer."""
    conn = node.held[JOBS[0]]
    ours = scontrol_callerid(cluster, (conn.local[0], 1), conn.remote, user, node)
    theirs = scontrol_callerid(cluster, (held.client[0], 1), held.server, user)
    _same_answers(ours, theirs)


@pytest.mark.parametrize("user", ["root", OWNER])
def test_connection_of_no_job_like_the_real_slurmd(cluster: ChrootCluster, node: FakeNode,
                                                   held: HeldConnection, user: str) -> None:
    """Each daemon asked about the other's job connection: a process there holds it, but it is in none of
    the daemon's jobs."""
    conn = node.held[JOBS[0]]
    ours = scontrol_callerid(cluster, held.client, held.server, user, node)
    theirs = scontrol_callerid(cluster, conn.local, conn.remote, user)
    _same_answers(ours, theirs)


def test_other_user_like_the_real_slurmd(cluster: ChrootCluster, node: FakeNode, held: HeldConnection) -> None:
    """Someone else asking about the owner's job connection is not told."""
    conn = node.held[JOBS[0]]
    ours = scontrol_callerid(cluster, conn.local, conn.remote, OTHER, node)
    theirs = scontrol_callerid(cluster, held.client, held.server, OTHER)
    _same_answers(ours, theirs)

