"""Linux namespaces: the CLONE_NEW* flag of each kind (linux/sched.h, as a stepd's GET_NS_FDS reply
carries it) and setns(2), for the in-process module's join and fake_slurmd's network namespaces."""

from __future__ import annotations

import os

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
NAMESPACE_TYPES = {"mnt": CLONE_NEWNS, "cgroup": 0x02000000, "uts": 0x04000000, "ipc": 0x08000000,
                   "user": 0x10000000, "pid": 0x20000000, "net": CLONE_NEWNET, "time": 0x00000080}
"""Each namespace kind's CLONE_NEW* flag, by the name /proc/PID/ns gives it."""


def setns(fd: int, kind: int) -> None:
    """setns(2) for the calling thread (os.setns from Python 3.12; libc's before). OSError on failure."""
    call = getattr(os, "setns", None)
    if call is not None:
        call(fd, kind)
        return
    import ctypes  # only where os has no setns: the in-process module's interpreter may be 3.11

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(ctypes.c_int(fd), ctypes.c_int(kind)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
