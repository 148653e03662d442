"""Network namespaces for simulated nodes: joining one from a thread, and a cluster network of our own.

`in_netns(netns, fn)` calls fn in a short-lived thread that joined the namespace: sockets it opens and
processes it starts live there, the rest of the process stays where it was. `ClusterNetwork` makes one
namespace per node, each with `eth0` at its own address (and at fd78::N, where IPv6 works), and joins
them with a bridge in one more namespace: nothing of it touches the host's network, and another cluster
with the same subnet does not collide with it. Everything is made with `ip` (iproute2) and removed by
`remove()`. `nsenter_argv`, `ip`, `add_netns`, `add_veth` and `del_netns` are the pieces every other
namespace of the project (the tests' clusters among them) is built from as well.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from slurmproto.linuxns import CLONE_NEWNET, setns

T = TypeVar("T")
NETNS_DIR = "/run/netns"
LOOPBACK_BASE = ipaddress.IPv4Address("127.0.0.0")
"""Without namespaces, node N (from 1) is 127.0.0.N: every 127/8 address is this host's own."""
SUBNET6 = ipaddress.IPv6Network("fd78::/64")
"""A cluster's IPv6 addresses (a unique local prefix): node N is fd78::N, as well as its IPv4 address."""


def netns_path(name: str) -> str:
    return name if name.startswith("/") else f"{NETNS_DIR}/{name}"


def nsenter_argv(argv: Sequence[str], *, net: str | os.PathLike[str] | None = None,
                 uts: str | os.PathLike[str] | None = None, cgroup: str | os.PathLike[str] | None = None,
                 options: Sequence[str] = ()) -> list[str]:
    """argv started by nsenter in the namespaces given (`net`: a /run/netns name or a path; `uts`, `cgroup`:
    a namespace's pin file) with nsenter's other `options` (e.g. --setuid). nsenter execs argv: its pid is
    argv's own."""
    joins = [f"--net={netns_path(os.fspath(net))}"] if net is not None else []
    joins += [f"--uts={os.fspath(uts)}"] if uts is not None else []
    joins += [f"--cgroup={os.fspath(cgroup)}"] if cgroup is not None else []
    return ["nsenter", *joins, *options, "--", *argv]


def ip(netns: str, *args: str) -> None:
    """`ip -n NETNS ARGS`; an OSError with ip's message when it fails."""
    _run(["ip", "-n", netns, *args])


def add_netns(netns: str) -> None:
    """`ip netns add`, and its lo up (the namespace is gone again when that fails)."""
    _run(["ip", "netns", "add", netns])
    try:
        ip(netns, "link", "set", "lo", "up")
    except BaseException:
        del_netns(netns)
        raise


def del_netns(netns: str) -> None:
    """`ip netns del`: the namespace, its interfaces and their veth peers go (a missing one is no error)."""
    subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)


def add_veth(netns: str, name: str, peer_netns: str, peer_name: str) -> None:
    """A veth pair: `name` in `netns`, `peer_name` in `peer_netns` (made in netns: the peer goes straight to
    its own namespace, never into the host's)."""
    ip(netns, "link", "add", name, "type", "veth", "peer", "name", peer_name, "netns", peer_netns)


def enter_netns(name: str) -> None:
    """Move the calling thread into the network namespace `name` (a /run/netns name or a path); setns
    affects only this thread."""
    fd = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd, CLONE_NEWNET)
    except OSError as exc:
        raise OSError(exc.errno, f"setns into network namespace {name}: {exc.strerror}") from None
    finally:
        os.close(fd)


def in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    """fn() in a thread of ours inside `netns` (None: called here); its result or its exception."""
    if netns is None:
        return fn()
    result: list[T] = []
    error: list[BaseException] = []

    def thread() -> None:
        try:
            enter_netns(netns)
            result.append(fn())
        except BaseException as exc:  # handed to the caller's thread
            error.append(exc)

    worker = threading.Thread(target=thread, name=f"netns-{os.path.basename(netns)}")
    worker.start()
    worker.join()
    if error:
        raise error[0]
    return result[0]


def namespaces_unavailable() -> str | None:
    """Why this process cannot make network namespaces (None: it can)."""
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin") is None:
        return "no ip command (iproute2)"
    return None


def loopback_address(index: int) -> str:
    """Node `index` (from 0) on loopback: 127.0.0.<index + 1>."""
    return str(LOOPBACK_BASE + index + 1)


class ClusterNetwork:
    """A namespace per node (`<prefix>-<i>`, eth0 at subnet host i+1 and fd78::i+1) on a bridge in
    `<prefix>-sw`. `addresses6` is empty when IPv6 is off in the kernel."""

    def __init__(self, count: int, subnet: str) -> None:
        self.subnet = ipaddress.IPv4Network(subnet)
        hosts = self.subnet.num_addresses - 2
        if count > hosts:
            raise ValueError(f"{count} nodes do not fit in subnet {subnet} ({hosts} addresses)")
        self.prefix = f"fakeslurmd-{secrets.token_hex(4)}"
        self.switch = f"{self.prefix}-sw"
        self.namespaces = [f"{self.prefix}-{i}" for i in range(count)]
        self.addresses = [str(self.subnet.network_address + i + 1) for i in range(count)]
        self.addresses6 = [str(SUBNET6.network_address + i + 1) for i in range(count)]
        self._made: list[str] = []

    def create(self) -> ClusterNetwork:
        try:
            self._add(self.switch)
            ip(self.switch, "link", "add", "br0", "type", "bridge")
            ip(self.switch, "link", "set", "br0", "up")
            for i, (netns, address) in enumerate(zip(self.namespaces, self.addresses, strict=True)):
                self._add(netns)
                add_veth(self.switch, f"port{i}", netns, "eth0")
                ip(self.switch, "link", "set", f"port{i}", "master", "br0", "up")
                ip(netns, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0")
                if self.addresses6:
                    self._add6(netns, self.addresses6[i])
                ip(netns, "link", "set", "eth0", "up")
        except BaseException:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        """Delete every namespace made (their veths and the bridge go with them)."""
        for netns in reversed(self._made):
            del_netns(netns)
        self._made.clear()

    def _add6(self, netns: str, address: str) -> None:
        try:  # nodad: usable at once, no duplicate-address probe to wait for
            ip(netns, "addr", "add", f"{address}/{SUBNET6.prefixlen}", "dev", "eth0", "nodad")
        except OSError:
            if netns != self.namespaces[0]:
                raise
            self.addresses6 = []  # IPv6 is off (ipv6.disable=1): the cluster is IPv4 only

    def _add(self, netns: str) -> None:
        add_netns(netns)
        self._made.append(netns)


def _run(argv: Sequence[str]) -> None:
    done = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=30)
    if done.returncode != 0:
        raise OSError(f"{' '.join(argv)}: {done.stderr.strip() or f'exit {done.returncode}'}")
