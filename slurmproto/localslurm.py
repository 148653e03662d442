"""What the local Slurm installation speaks, learned without running any Slurm command."""

from __future__ import annotations

import os
import socket
import time

from slurmproto.versions import RELEASES

# libslurm's soname major number is Slurm's API_CURRENT, which is also the protocol sequence number
# (libslurm.so.38 is 22.05, whose protocol version is 38 << 8).
LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
            "/usr/local/lib", "/usr/local/lib64", "/opt/slurm/lib", "/opt/slurm/lib64")
KNOWN = {r.protocol_version for r in RELEASES}


def libslurm_version(dirs: tuple[str, ...] = LIB_DIRS) -> int | None:
    """Protocol version of the newest known libslurm.so.N found in `dirs`."""
    found = set()
    for directory in dirs:
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            if name.startswith("libslurm.so."):
                major = name[len("libslurm.so."):].split(".", 1)[0]
                if major.isdigit() and int(major) << 8 in KNOWN:
                    found.add(int(major) << 8)
    return max(found) if found else None


def stepd_version(spool_dir: str, timeout: float = 0.2, deadline: float | None = None) -> int | None:
    """Protocol version announced by any slurmstepd socket in the spool dir (handshake only).

    Each socket gets `timeout` seconds; none is tried after `deadline` (time.monotonic()).
    """
    try:
        names = os.listdir(spool_dir)
    except OSError:
        return None
    from slurmproto.stepd import StepdError, handshake

    for name in names:
        path = os.path.join(spool_dir, name)
        if "_" not in name or "." not in name:
            continue
        wait = timeout if deadline is None else min(timeout, deadline - time.monotonic())
        if wait <= 0:
            return None
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(wait)
                sock.connect(path)
                return handshake(sock)
        except (OSError, StepdError):
            continue
    return None


def local_protocol_version(spool_dir: str | None = None, deadline: float | None = None) -> int | None:
    """The local Slurm's protocol version: libslurm's soname, else a local slurmstepd's handshake
    (none begun after `deadline`, a time.monotonic() value)."""
    version = libslurm_version()
    if version is None and spool_dir:
        version = stepd_version(spool_dir, deadline=deadline)
    return version
