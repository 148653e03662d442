"""The chroot cluster harness itself (tests/support/chroot_cluster.py, namespaces.py): its own state per
cluster, everything removed at stop. The reassembly behind its captures is tested in tests/test_pcap.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.chroot_cluster import ChrootCluster, missing_reason


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_second_cluster_of_one_chroot_has_its_own_state_and_leaves_nothing(slurm_2411: ChrootCluster) -> None:
    reason = missing_reason("24.11")
    if reason:
        pytest.skip(reason)
    with ChrootCluster("24.11", "munge") as second:
        assert second.root != slurm_2411.root and second.netns != slurm_2411.netns
        assert second.run(["sinfo", "-h", "-o", "%T"]).stdout == "idle\n"
        assert second.run(["squeue", "-h"]).stdout == ""  # none of the other cluster's jobs
        key = "/etc/munge/munge.key"
        assert second.host_path(key).read_bytes() != slurm_2411.host_path(key).read_bytes()
        assert second.host_path("/etc/ssh/sat_sshd_config").exists()
        assert not (second.chroot / "etc/ssh/sat_sshd_config").exists()  # the chroot itself is never written
        assert all(d.is_dir() for d in second.cgroups.dirs)
        pids = [proc.pid for proc in second.procs.values()]
        assert all(second.cgroup_of(pid) == "/" for pid in pids)  # the daemons run at our cgroups' root
        made = [second.ns.path, second.state, *second.cgroups.dirs]
    assert not any(map(_alive, pids))
    assert not any(path.exists() for path in made)
    assert str(second.state) not in Path("/proc/self/mountinfo").read_text()
    assert slurm_2411.run(["scontrol", "ping"]).returncode == 0  # the session's cluster is still up
