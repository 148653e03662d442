"""Namespaces and cgroups of our own for the chroot clusters (tests/support/chroot_cluster.py).

`NetNs`: a network namespace holding only `lo`, and sockets opened inside it from this process (a short-lived
thread joins the namespace, opens the socket and ends: the rest of the process stays where it was).
`OwnCgroups`: cgroup v1 directories of ours under /sys/fs/cgroup/<controller>/<name>, a cgroup namespace
rooted at them (pinned on a file), and the argv prefix that moves a command into both before it starts.
`pin_uts`: a UTS namespace with a hostname of our choice, pinned on a file; `pin_root`: a mount namespace
whose root is a directory of ours, pinned on a file. `unmount_below`: every mount
under a directory of ours. Everything is removed again by whoever made it; nothing here touches another
cgroup or namespace.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from fake_slurmd.network import add_netns, del_netns, in_netns, ip

T = TypeVar("T")
CGROUP_V1 = Path("/sys/fs/cgroup")
CONTROLLERS = ("freezer", "cpuset")
"""proctrack/cgroup needs freezer, task/cgroup's ConstrainCores cpuset; memory and devices stay untouched."""


class NetNs:
    """`ip netns add NAME` with lo up, 127.0.0.1/8 and 127.0.1.1/32.

    glibc's AI_ADDRCONFIG ignores 127.0.0.1 alone: without a second address slurmctld and slurmd cannot bind.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.path = Path("/run/netns") / name
        self._made = False

    def create(self) -> None:
        add_netns(self.name)
        self._made = True
        ip(self.name, "addr", "add", "127.0.1.1/32", "dev", "lo")

    def remove(self) -> None:
        if self._made:
            del_netns(self.name)
            self._made = False

    def run_inside(self, fn: Callable[[], T]) -> T:
        """fn() called in a thread of ours that joined the namespace (sockets it opens live there)."""
        return in_netns(str(self.path), fn)

    def open_socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM,
                    proto: int = 0) -> socket.socket:
        """A socket of the namespace (a TCP one by default)."""
        return self.run_inside(lambda: socket.socket(family, kind, proto))

    def connect(self, address: tuple[str, int], timeout: float = 10.0) -> socket.socket:
        """A TCP connection from inside the namespace."""
        sock = self.open_socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
        return sock


class OwnCgroups:
    """/sys/fs/cgroup/{freezer,cpuset}/<name> and a cgroup namespace rooted there, pinned on `ns_file`."""

    def __init__(self, name: str, ns_file: Path) -> None:
        self.name = name
        self.ns_file = ns_file
        self.dirs = [CGROUP_V1 / c / name for c in CONTROLLERS]
        self._made: list[Path] = []
        self._pinned = False

    @staticmethod
    def missing_reason() -> str | None:
        """Why our cgroups cannot work here (None: they can)."""
        for controller in CONTROLLERS:
            if not (CGROUP_V1 / controller / "cgroup.procs").exists():
                return f"no cgroup v1 {controller} hierarchy at {CGROUP_V1 / controller}"
        return None

    def create(self) -> None:
        for path in self.dirs:
            path.mkdir()
            self._made.append(path)
            if path.parent.name == "cpuset":  # an empty cpuset takes no tasks
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    (path / knob).write_text((path.parent / knob).read_text())
        self.ns_file.touch()
        subprocess.run([*self.enter_prefix(), "unshare", f"--cgroup={self.ns_file}", "true"], check=True)
        self._pinned = True

    def enter_prefix(self) -> list[str]:
        """argv prefix: the command (`exec "$@"`) starts in our cgroups, so inside our cgroup namespace its
        cgroup paths are relative to our directories (Slurm's cgroup/v1 joins the mount point and
        /proc/PID/cgroup)."""
        script = "".join(f'echo $$ > "{d}/cgroup.procs" && ' for d in self.dirs) + 'exec "$@"'
        return ["/bin/sh", "-c", script, "sat-cgroups"]

    def _tree(self, top: Path) -> list[Path]:
        """Every directory of a hierarchy below and including `top`, deepest first."""
        found = [Path(root) for root, _, _ in os.walk(top)]
        return sorted(found, key=lambda p: len(p.parts), reverse=True)

    def pids(self) -> set[int]:
        """Processes in our directories or below them."""
        found: set[int] = set()
        for top in self._made:
            for path in self._tree(top):
                with contextlib.suppress(OSError):
                    found.update(int(p) for p in (path / "cgroup.procs").read_text().split())
        return found

    def thaw(self) -> None:
        """A frozen job cgroup would hold SIGKILL back."""
        for top in self._made:
            for path in self._tree(top):
                with contextlib.suppress(OSError):
                    if (path / "freezer.state").exists():
                        (path / "freezer.state").write_text("THAWED")

    def relative(self, pid: int, controller: str = "freezer") -> str | None:
        """The pid's cgroup in `controller` as our cgroup namespace shows it; None when outside our tree."""
        top = f"/{self.name}"
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controller in controllers.split(","):
                if path == top or path.startswith(top + "/"):
                    return path[len(top):] or "/"
                return None
        return None

    def host_dir(self, relative: str, controller: str = "freezer") -> Path:
        return CGROUP_V1 / controller / self.name / relative.lstrip("/")

    def remove(self) -> list[str]:
        """Remove the pin and every directory (call once no process is left in them); what could not go."""
        problems: list[str] = []
        if self._pinned:
            if subprocess.run(["umount", str(self.ns_file)], check=False).returncode:
                problems.append(f"umount {self.ns_file}")
            self._pinned = False
        for top in reversed(self._made):
            for path in self._tree(top):
                try:
                    path.rmdir()
                except OSError as e:
                    problems.append(f"rmdir {path}: {e.strerror}")
        self._made.clear()
        return problems


def pin_uts(ns_file: Path, hostname: str) -> None:
    """A UTS namespace whose hostname is `hostname`, pinned on `ns_file` (remove: umount the file).

    Slurm's clients and pam_slurm_adopt find a node's stepd sockets under the name gethostname() gives.
    """
    ns_file.touch()
    subprocess.run(["unshare", f"--uts={ns_file}", "hostname", hostname], check=True)


NS_GET_MNTNS_ID = 0x8008B705
"""ioctl(2) on a mount namespace's file: its 64-bit id (Linux 6.8+)."""


def mount_ns_id(path: Path | str) -> int | None:
    """The id of the mount namespace whose file is `path`; None where the kernel does not say."""
    try:
        with open(path, "rb") as f:
            return int.from_bytes(fcntl.ioctl(f.fileno(), NS_GET_MNTNS_ID, bytes(8)), sys.byteorder)
    except OSError:
        return None


def pin_root(ns_file: Path, root: Path) -> None:
    """A mount namespace whose root is `root` (pivot_root: unlike a chroot, setns() into it, or into a mount
    namespace unshared from it, lands in `root`), pinned on `ns_file` (remove: umount the file). It starts
    as a private copy of ours: what is mounted below `root` now is there, what is mounted in it stays in
    it. `ns_file` must be on a mount of private propagation.

    Its id is lower than that of any mount namespace made after it: Linux refuses (EINVAL) to bind-mount
    the file of a mount namespace whose id is not higher than the caller's (mnt_ns_loop), which is how
    job_container/tmpfs pins each job's namespace, and Linux 6.18 hands the ids out from per-CPU ranges
    (measured here: a namespace made later on the other CPU had a lower id about every other time). So
    one namespace is made on each CPU and the one of the lowest id is kept: each CPU's later ids are
    higher than its own."""
    made: list[tuple[int, Path]] = []
    try:
        for cpu in sorted(os.sched_getaffinity(0)):
            candidate = ns_file.with_name(f"{ns_file.name}.cpu{cpu}")
            candidate.touch()
            made.append((cpu, candidate))
            subprocess.run(["taskset", "-c", str(cpu), "unshare", f"--mount={candidate}", "--propagation",
                            "private", "/bin/sh", "-c", 'cd "$1" && pivot_root . . && umount -l .', "sat-pin-root",
                            str(root)], check=True)
        lowest = min(made, key=lambda m: mount_ns_id(m[1]) or 0)[1]
        ns_file.touch()
        subprocess.run(["mount", "--bind", str(lowest), str(ns_file)], check=True)
    finally:
        for _cpu, candidate in made:
            subprocess.run(["umount", str(candidate)], capture_output=True, check=False)
            candidate.unlink()


def unmount_below(top: Path) -> None:
    """Unmount everything mounted at or below `top`, deepest first (lazily when busy)."""
    prefix = str(top).rstrip("/") + "/"
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            target = line.split()[4].replace("\\040", " ")
            if target == str(top) or target.startswith(prefix):
                mounts.append(target)
    for target in sorted(mounts, key=len, reverse=True):
        if subprocess.run(["umount", target], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)

