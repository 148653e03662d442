"""Another node beside a chroot cluster (tests/support/chroot_cluster.py), and fake_slurmd as a node of one.

`LinkedNode`: a network namespace of its own (or another cluster's) joined to the cluster's by a veth pair,
each end with a private address that exists only in the two namespaces (slurm-wire-facts.md §21):

    the cluster's namespace (node1): lo, xrN 10.79.N.1/24  --veth--  the other one: lo, xrN 10.79.N.2/24

The chroots' sshds and slurmds listen on every address of their namespace, so a login from the other side
reaches the cluster's sshd at `cluster_addr`, and the node's pam_slurm_adopt asks the slurmd at `address`
(the connection's source) which job it comes from. Removing a namespace of our own removes the veth pair
with it; another cluster's keeps its namespace and loses the veth.

`fake_for()`: a FakeSlurmd with the cluster's munged or slurm.key and ClusterName, as node1 in the cluster's
namespace, or as any node (another release's, in a linked namespace). `ask_scontrol()`: the chroot's
`scontrol callerid`, and the replies on the wire. (ChrootCluster.authorize lets a cluster's users in to
another sshd.)
"""

from __future__ import annotations

import itertools
import subprocess
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from fake_slurmd.controller import FakeSlurmd
from fake_slurmd.network import add_veth, ip
from fake_slurmd.scenario import Job, NodeSpec, Scenario
from slurmproto.codec import decode_stream
from slurmproto.conf import parse_file
from slurmproto.constants import MsgType
from slurmproto.messages import Message
from tests.support.chroot_cluster import CONF, ChrootCluster
from tests.support.chroot_files import NODE, ids_of
from tests.support.namespaces import NetNs
from tests.support.packets import PacketCapture, msg_type

_serial = itertools.count()


class LinkedNode:
    """`with LinkedNode(cluster[, other]) as link: ...`: link.ns (a namespace of ours, or `other`'s) at
    link.address, and the cluster's end at `cluster_addr`."""

    def __init__(self, cluster: ChrootCluster, other: ChrootCluster | None = None) -> None:
        self.cluster = cluster
        serial = next(_serial)
        if serial > 255:
            raise ValueError("more than 256 linked nodes in one session")
        self.interface = f"xr{serial}"
        """The veth's name, the same at both ends."""
        self._own = other is None
        self.ns = NetNs(f"{cluster.name}-l{serial}") if other is None else other.ns
        self.cluster_addr = f"10.79.{serial}.1"
        self.address = f"10.79.{serial}.2"

    def create(self) -> Self:
        try:
            if self._own:
                self.ns.create()  # it may fail after making the namespace: remove() then deletes it
            there, here = self.cluster.netns, self.ns.name
            add_veth(here, self.interface, there, self.interface)
            ip(there, "addr", "add", f"{self.cluster_addr}/24", "dev", self.interface)
            ip(here, "addr", "add", f"{self.address}/24", "dev", self.interface)
            ip(there, "link", "set", self.interface, "up")
            ip(here, "link", "set", self.interface, "up")
        except BaseException:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        if self._own:
            self.ns.remove()  # the veth pair goes with it, the cluster's end included
        else:  # deleting one end deletes both
            subprocess.run(["ip", "-n", self.ns.name, "link", "del", self.interface], check=False,
                           capture_output=True)

    def __enter__(self) -> Self:
        return self.create()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.remove()


def fake_for(cluster: ChrootCluster, jobs: dict[int, Job], port: int = 0, spool_dir: str | None = None,
             node: NodeSpec | None = None, release: str | None = None) -> FakeSlurmd:
    """A fake node of the cluster's auth (its munged or slurm.key) and ClusterName: node1 of the cluster's
    release listening on 127.0.0.1:`port` inside its network namespace, or `node` of `release`."""
    conf = parse_file(cluster.conf, env={})
    scenario = Scenario([node or NodeSpec(NODE, "127.0.0.1", port, str(cluster.ns.path))], jobs,
                        release=release or cluster.release, slurm_user=ids_of(cluster.root, "slurm")[0],
                        cluster=conf.cluster_name, client_timeout=5.0)
    if cluster.auth == "munge":
        return FakeSlurmd(scenario, munge_socket=str(cluster.munge_socket), spool_dir=spool_dir)
    return FakeSlurmd(scenario, auth="slurm", key=str(cluster.key_path), spool_dir=spool_dir)


@dataclass(frozen=True)
class Asked:
    """What scontrol printed, and what the daemon answered on the wire (each reply's header version, flags
    and message; the credential left out: each signs its own)."""

    code: int
    out: str
    err: str
    replies: list[tuple[int, int, Message]]


def ask_scontrol(cluster: ChrootCluster, local: tuple[str, int], remote: tuple[str, int], user: str,
                 capture: PacketCapture, conf: str = CONF) -> Asked:
    """The chroot's `scontrol callerid` about local -> remote (local: the job's end), asking the slurmd on
    local's host at slurm.conf's SlurmdPort; `capture` (not started) watches that port where it answers."""
    argv = ["env", f"SLURM_CONF={conf}", "scontrol", "callerid", local[0], str(local[1]), remote[0], str(remote[1])]
    with capture as cap:
        proc = cluster.run(argv, user=user, check=False)
    # Only the callerid exchanges: slurmctld talks to the real slurmd's port as well.
    replies = [(f.header.version, f.header.flags, f.message) for e in cap.exchanges()
               if e.requests and msg_type(e.requests[0]) == MsgType.REQUEST_NETWORK_CALLERID
               for f in decode_stream(b"".join(e.replies))]
    return Asked(proc.returncode, proc.stdout, proc.stderr, replies)
