"""Two real Slurm 22.05 compute nodes on one machine, each in network and UTS namespaces of its own.

    xn1 (netns sat-xn1-PID, hostname xn1)  --veth--  xn2 (netns sat-xn2-PID, hostname xn2)  --veth--  login
    10.77.0.1/24 fd77::1/64, and 10.77.0.11      10.77.0.2/24 fd77::2/64                            netns
    slurmctld, slurmd -N xn1, client commands    slurmd -N xn2; 10.77.1.2/24 ----------------- 10.77.1.9/24

The addresses exist only inside the namespaces: nothing the cluster sends can leave them. munged is the
tests' own (its unix socket is reachable from every network namespace). NodeName=xnN NodeHostname=xnN
NodeAddr=10.77.0.N, SlurmdSpoolDir=.../%n; CommunicationParameters=EnableIPv6, so both slurmds listen on
IPv4 and IPv6. 10.77.0.11 is an address of xn1 that is not its NodeAddr; the login namespace is a host that
is no node (nothing listens on its slurmd port). The node names are used by no other cluster here: Debian's
cgroup v1 paths are /sys/fs/cgroup/<controller>/slurm_<node>.

Jobs run `job_agent.py` as their batch script (`agent_job()`), so a test can start processes of a job on
xn1 (ssh to xn2) at any time, even while xn1's slurmd is stopped. Everything is stopped by the pid we
started; the namespaces, their pins and the node cgroup directories are removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fake_slurmd.network import add_veth, ip, nsenter_argv
from fake_slurmd.processes import stop_process
from tests.support.job_agent import read_all
from tests.support.munged import Munged
from tests.support.namespaces import CGROUP_V1, NetNs, pin_uts
from tests.support.procs import ensure_user
from tests.support.slurm_cluster import EXTERN_STEP, SlurmCluster, tail

NODES = ("xn1", "xn2")
SLURMCTLD_PORT = 6817
SLURMD_PORT = 6818
"""Fixed ports: the namespaces are ours alone."""
EXTRA_ADDR = "10.77.0.11"
"""An address of xn1 that is not its NodeAddr."""
LOGIN_ADDR = "10.77.1.9"
"""The login namespace's address: a host that is no node."""
NODE2_LOGIN_SIDE = "10.77.1.2"
"""xn2's address on the login namespace's link."""
_BOGUS_HOP = ("10.77.0.99", "02:00:00:00:00:99")
"""A next hop whose frames xn1 discards (the MAC is nobody's): packets routed there vanish."""
AGENT = Path(__file__).with_name("job_agent.py")


@dataclass
class Node:
    name: str
    netns: NetNs
    uts: Path
    addr: str
    addr6: str
    slurmd: subprocess.Popen[bytes] | None = None
    log: Path = field(default=Path())

    def enter(self, argv: Sequence[str], uts: Path | None = None) -> list[str]:
        """argv run in this node's namespaces (or with another host name: a UTS namespace of `uts`)."""
        return nsenter_argv(argv, net=self.netns.path, uts=uts or self.uts)


@dataclass(frozen=True)
class AgentJob:
    """A running job whose batch script is job_agent.py on `node` (the first node of the job)."""

    job_id: int
    user: str
    node: str
    socket: Path

    def run(self, argv: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """argv run by the agent, as a process of the job; the result once it ended."""
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(timeout + 5)
            conn.connect(str(self.socket))
            conn.sendall(json.dumps({"argv": list(argv), "timeout": timeout}).encode())
            conn.shutdown(socket.SHUT_WR)
            reply = json.loads(read_all(conn))
        return subprocess.CompletedProcess(list(argv), reply["rc"], reply["stdout"], reply["stderr"])


class TwoNodes(SlurmCluster):
    """`with TwoNodes(munged) as c: job = c.agent_job("alice", nodes=2)`."""

    def __init__(self, munged: Munged, base: Path | None = None, users: Sequence[str] = ("alice", "bob"),
                 start_timeout: float = 45.0) -> None:
        super().__init__(munged, base, node_name=NODES[0], extra_conf=["CommunicationParameters=EnableIPv6"],
                         users=users, start_timeout=start_timeout)
        tag = os.getpid()
        self.nodes = {name: Node(name, NetNs(f"sat-{name}-{tag}"), self.base / f"{name}.uts",  # pinned at start
                                 f"10.77.0.{i}", f"fd77::{i}", log=self.base / f"slurmd-{name}.log")
                      for i, name in enumerate(NODES, 1)}
        self.login = NetNs(f"sat-xl-{tag}")
        self._pinned: list[Path] = []
        self._cgroup_dirs = [CGROUP_V1 / c / f"slurm_{n}" for c in ("freezer", "cpuset") for n in NODES]
        self.slurmd_port = SLURMD_PORT
        self.slurmctld_port = SLURMCTLD_PORT

    def node(self, name: str) -> Node:
        return self.nodes[name]

    # -- lifecycle ---------------------------------------------------------------------------------------

    def _start(self) -> None:
        for user in self.users:
            ensure_user(user)
        for d in (self.state_dir, self.out_dir, *(self.spool_dir / n for n in NODES)):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o755)
        os.chmod(self.out_dir, 0o1777)
        self._network()
        for node in self.nodes.values():
            node.uts = self.hostname_ns(node.name)
        xn1 = self.nodes[NODES[0]]
        self.client_prefix = xn1.enter([])
        self._write_config()
        self.env = self.client_env()
        self.slurmctld = self._spawn("slurmctld", xn1.enter([
            "/usr/sbin/slurmctld", "-D", "-c", "-f", str(self.conf)]))
        self._wait(self._ctld_up, "slurmctld answering scontrol ping", self.slurmctld)
        for node in self.nodes.values():
            self.start_slurmd(node.name)

    def _network(self) -> None:
        """The three namespaces and the two links; IPv6 without duplicate address detection (no wait)."""
        xn1, xn2 = (self.nodes[n].netns for n in NODES)
        for ns in (xn1, xn2, self.login):
            ns.create()
        add_veth(xn1.name, "vx", xn2.name, "vx")
        add_veth(xn2.name, "vl", self.login.name, "vl")
        for ns, args in (
            (xn1, ["addr", "add", "10.77.0.1/24", "dev", "vx"]),
            (xn1, ["addr", "add", f"{EXTRA_ADDR}/24", "dev", "vx"]),
            (xn1, ["addr", "add", "fd77::1/64", "dev", "vx", "nodad"]),
            (xn2, ["addr", "add", "10.77.0.2/24", "dev", "vx"]),
            (xn2, ["addr", "add", "fd77::2/64", "dev", "vx", "nodad"]),
            (xn2, ["addr", "add", f"{NODE2_LOGIN_SIDE}/24", "dev", "vl"]),
            (self.login, ["addr", "add", f"{LOGIN_ADDR}/24", "dev", "vl"]),
            (xn1, ["link", "set", "vx", "up"]),
            (xn2, ["link", "set", "vx", "up"]),
            (xn2, ["link", "set", "vl", "up"]),
            (self.login, ["link", "set", "vl", "up"]),
        ):
            ip(ns.name, *args)

    def hostname_ns(self, hostname: str) -> Path:
        """The pin of a UTS namespace with that host name (made on first use, removed at stop)."""
        path = self.base / f"{hostname}.uts"
        if path not in self._pinned:
            pin_uts(path, hostname)
            self._pinned.append(path)
        return path

    def start_slurmd(self, name: str) -> None:
        """(Re)start a node's slurmd and wait until the node is idle or allocated again."""
        node = self.nodes[name]
        node.slurmd = self._spawn(f"slurmd-{name}", node.enter(
            ["/usr/sbin/slurmd", "-D", "-f", str(self.conf), "-N", name]))
        self._wait(lambda: self._node_up(name), f"node {name} up in sinfo", node.slurmd)
        # After a restart sinfo may still show the node as before: wait for slurmd's own port as well.
        self._wait(lambda: self._listening(node), f"slurmd of {name} listening", node.slurmd)

    def stop_slurmd(self, name: str) -> None:
        node = self.nodes[name]
        if node.slurmd is not None:
            stop_process(node.slurmd)
            node.slurmd = None

    @staticmethod
    def _listening(node: Node) -> bool:
        try:
            node.netns.connect((node.addr, SLURMD_PORT), timeout=1).close()
        except OSError:
            return False
        return True

    def _node_up(self, name: str) -> bool:
        state = self.run(["sinfo", "-h", "-N", "-n", name, "-o", "%T"], check=False).stdout.strip()
        if state in ("allocated", "mixed"):
            return True
        return self._node_idle(name)

    def stop(self) -> None:
        try:
            if self.slurmctld is not None and self.slurmctld.poll() is None:
                self._cancel_everything()
        finally:
            for name in NODES:
                self.stop_slurmd(name)
            if self.slurmctld is not None:
                stop_process(self.slurmctld)
                self.slurmctld = None
            for path in self._pinned:
                subprocess.run(["umount", str(path)], check=False, capture_output=True)
            self._pinned.clear()
            for ns in (*(n.netns for n in self.nodes.values()), self.login):
                ns.remove()
            self._remove_node_cgroups()
            if self._own_base:
                shutil.rmtree(self.base, ignore_errors=True)

    def _remove_node_cgroups(self) -> None:
        """slurmd leaves slurm_<node> (and empty uid_N) directories behind; only empty ones can go."""
        for top in self._cgroup_dirs:
            for root, _, _ in sorted(os.walk(top), key=lambda w: len(w[0]), reverse=True):
                with contextlib.suppress(OSError):
                    os.rmdir(root)

    def conf_copy(self, name: str, change: Callable[[str], str]) -> Path:
        """slurm.conf as `change` rewrites it, with cgroup.conf beside it (Slurm reads that from slurm.conf's
        directory), in a directory of its own: what a PAM stack may read while the daemons keep theirs."""
        directory = self.base / f"conf-{name}"
        directory.mkdir(mode=0o755, exist_ok=True)
        text = self.conf.read_text()
        changed = change(text)
        if changed == text:
            raise ValueError(f"conf_copy {name!r}: the change changed nothing")
        (directory / "slurm.conf").write_text(changed)
        shutil.copyfile(self.cgroup_conf, directory / "cgroup.conf")
        for path in directory.iterdir():
            path.chmod(0o644)
        return directory / "slurm.conf"

    # -- jobs --------------------------------------------------------------------------------------------

    def agent_job(self, user: str, nodes: Sequence[str] = NODES) -> AgentJob:
        """A running job of `user` on `nodes` whose batch script (on the first of them) is job_agent.py."""
        sock = self.out_dir / f"agent-{secrets.token_hex(4)}.sock"
        job_id = self.submit(user, f"exec /usr/bin/python3 {shlex.quote(str(AGENT))} {shlex.quote(str(sock))}",
                             [f"--nodes={len(nodes)}", f"--nodelist={','.join(nodes)}"])

        def listening() -> bool:
            state = self.job_state(job_id)
            if state not in ("PENDING", "CONFIGURING", "RUNNING"):
                raise RuntimeError(f"job {job_id} is {state}\n{self.job_report(job_id)}")
            return sock.exists()

        self._wait(listening, f"job {job_id}'s agent listening on {sock}")
        return AgentJob(job_id, user, nodes[0], sock)

    # -- network faults ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def dropping_slurmd_traffic(self, on: str) -> Iterator[None]:
        """On node `on`, every TCP packet to a slurmd port is routed to a next hop that discards it.

        A policy rule of that namespace alone (no iptables or tc needed): connections to slurmds hang,
        as to a firewalled host, while ssh and everything else still flow.
        """
        ns = self.nodes[on].netns.name
        hop, mac = _BOGUS_HOP
        steps = [
            (["neigh", "add", hop, "lladdr", mac, "dev", "vx", "nud", "permanent"], ["neigh", "del", hop, "dev", "vx"]),
            (["route", "add", "10.77.0.0/24", "via", hop, "dev", "vx", "table", "77"],
             ["route", "flush", "table", "77"]),
            (["rule", "add", "ipproto", "tcp", "dport", str(SLURMD_PORT), "table", "77"],
             ["rule", "del", "ipproto", "tcp", "dport", str(SLURMD_PORT), "table", "77"]),
        ]
        with contextlib.ExitStack() as undo:
            for add, remove in steps:
                ip(ns, *add)
                undo.callback(subprocess.run, ["ip", "-n", ns, *remove], check=False, capture_output=True)
            yield

    # -- internals ---------------------------------------------------------------------------------------

    def _site_conf(self) -> list[str]:
        b = self.base
        cpus = os.cpu_count() or 1
        return [
            f"SlurmctldHost={NODES[0]}({self.nodes[NODES[0]].addr})",
            f"SlurmctldPort={SLURMCTLD_PORT}",
            f"SlurmdPort={SLURMD_PORT}",
            f"SlurmdSpoolDir={self.spool_dir}/%n",
            f"SlurmdPidFile={b}/slurmd-%n.pid",
            f"SlurmdLogFile={b}/slurmd-%n.log",
            *self.extra_conf,
            *(f"NodeName={n.name} NodeHostname={n.name} NodeAddr={n.addr} CPUs={cpus} State=UNKNOWN"
              for n in self.nodes.values()),
            f"PartitionName=debug Nodes={','.join(NODES)} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:8",
        ]

    def _stepd_sockets(self) -> list[Path]:
        return [p for n in NODES for p in (self.spool_dir / n).glob(f"{n}_*.*")]

    def extern_socket(self, job_id: int, node: str = NODES[0]) -> Path:
        return self.spool_dir / node / f"{node}_{job_id}.{EXTERN_STEP}"

    def log_tails(self, lines: int = 40) -> str:
        return "\n".join([tail(self.slurmctld_log, lines), tail(self.base / "slurmctld.out", 10),
                          *(tail(n.log, lines) for n in self.nodes.values()),
                          *(tail(self.base / f"slurmd-{n}.out", 10) for n in NODES)])
