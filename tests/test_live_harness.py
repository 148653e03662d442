"""The chroot cluster harness itself (tests/support/chroot_cluster.py, namespaces.py, packets.py): its own state
per cluster, everything removed at stop, and the frame reassembly."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from tests.support.chroot_cluster import ChrootCluster, missing_reason
from tests.support.packets import TCP_FIN, TCP_SYN, Segment, _Direction, parse_segment, split_frames


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


# -- reassembly, without root --------------------------------------------------------------------------------


def _packet(sport: int, dport: int, seq: int, flags: int, payload: bytes) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 65535, 0, 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, bytes([127, 0, 0, 1]),
                     bytes([127, 0, 0, 1]))
    return bytes(12) + b"\x08\x00" + ip + tcp


def test_segments_reassemble_in_order_once() -> None:
    direction = _Direction()
    for seq, flags, data in ((99, TCP_SYN, b""), (106, 0, b"world"), (100, 0, b"hello "), (100, 0, b"hello "),
                             (111, TCP_FIN, b"")):
        seg = parse_segment(_packet(40000, 6818, seq, flags, data))
        assert isinstance(seg, Segment) and seg.dst == ("127.0.0.1", 6818)
        direction.add(seg)
    assert direction.data() == b"hello world" and direction.fin


def test_split_frames_keeps_prefixes_and_drops_a_partial_tail() -> None:
    one, two = b"\x00\x00\x00\x02ab", b"\x00\x00\x00\x01c"
    assert split_frames(one + two + b"\x00\x00\x00\x09xy") == [one, two]
    assert split_frames(b"HTTP/1.1 405") == []


def test_other_packets_are_not_segments() -> None:
    assert parse_segment(bytes(12) + b"\x08\x06" + bytes(40)) is None  # ARP
    assert parse_segment(b"short") is None
