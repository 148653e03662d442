"""Debian's real Slurm 24.11 and 26.05 with AuthType=auth/munge and auth/slurm, asked with their own tools only
(tests/support/chroot_cluster.py): scontrol callerid, slurmd's answer to a frame of the other auth plugin,
the sack socket, and the real pam_slurm_adopt adopting an ssh login into the job's extern cgroup.
"""

from __future__ import annotations

import ipaddress
import os
import stat
import subprocess
from collections.abc import Iterator

import pytest

from slurmproto.codec import sign_and_encode
from slurmproto.messages import NetworkCallerIdRequest
from slurmproto.munge import MungeContext
from slurmproto.versions import release_named
from tests.support.chroot_cluster import RELEASES, ChrootCluster, HeldConnection
from tests.support.chroot_files import AUTHS, ids_of
from tests.support.fixtures import LiveClusters
from tests.support.packets import msg_type
from tests.support.procs import installed_or_skip, wait_for
from tests.support.sessions import shell_line

OWNER, OTHER = "alice", "bob"


def _callerid(cluster: ChrootCluster, conn: HeldConnection, user: str, src_port: int | None = None
              ) -> tuple[int, str, str]:
    args = [conn.client[0], str(src_port or conn.client[1]), conn.server[0], str(conn.server[1])]
    proc = cluster.run(["scontrol", "callerid", *args], user=user, check=False)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("user", ["root", OWNER])
def test_callerid_names_the_job(cluster: ChrootCluster, held: HeldConnection, user: str) -> None:
    assert _callerid(cluster, held, user)[:2] == (0, f"{held.job_id} {cluster.node_name}\n")


@pytest.mark.parametrize("release", list(RELEASES))
@pytest.mark.parametrize(("user", "src_port"), [(OTHER, None), ("root", 1), (OWNER, 1)],
                         ids=["other-user", "unknown-root", "unknown-owner"])
def test_callerid_refusals_same_in_both_auth_modes(live_clusters: LiveClusters, release: str, user: str,
                                                   src_port: int | None) -> None:
    """What another user, or anyone asking about a connection no process has, gets: whatever it is, auth/slurm
    gives the same as auth/munge (and it never names the job)."""
    answers = {}
    for auth in AUTHS:
        conn = live_clusters.held(release, auth)
        answers[auth] = _callerid(live_clusters.get(release, auth), conn, user, src_port)
        assert str(conn.job_id) not in answers[auth][1]
    assert answers["slurm"] == answers["munge"]
    assert answers["munge"][0] != 0


def test_sack_socket_only_with_auth_slurm(cluster: ChrootCluster) -> None:
    """auth/slurm's slurmd serves sack (tokens for processes that cannot read slurm.key) at
    /run/slurm/sack.socket, open to every user; auth/munge's serves none."""
    if cluster.auth == "munge":
        assert not cluster.sack_socket.exists()
        return
    mode = os.stat(cluster.sack_socket).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o777, oct(mode)


def test_slurm_key_as_auth_slurm_wants_it(cluster: ChrootCluster) -> None:
    if cluster.auth != "slurm":
        assert not cluster.key_path.exists()
        return
    st = os.stat(cluster.key_path)
    assert st.st_size == 32 and stat.S_IMODE(st.st_mode) == 0o600
    assert (st.st_uid, st.st_gid) == ids_of(cluster.root, "slurm")
    assert cluster.key_path.parent == cluster.conf.parent
    assert "AuthType=auth/slurm\n" in cluster.conf.read_text()
    assert not (cluster.root / "run/munge/munge.socket.2").exists()


# -- a frame of the other auth plugin ------------------------------------------------------------------------


def _munge_frame(cluster: ChrootCluster, conn: HeldConnection) -> bytes:
    """A callerid request for `conn`, built by our codec and signed by the munge cluster's munged."""
    request = NetworkCallerIdRequest.for_connection(ipaddress.ip_address(conn.client[0]), conn.client[1],
                                                    ipaddress.ip_address(conn.server[0]), conn.server[1])
    with MungeContext(cluster.munge_socket) as munge:
        return sign_and_encode(request, release_named(cluster.release).protocol_version, munge.encode)


def _slurm_frame(cluster: ChrootCluster, conn: HeldConnection) -> bytes:
    """scontrol callerid's own request (an auth/slurm token), taken off the wire."""
    with cluster.capture() as cap:
        assert _callerid(cluster, conn, "root")[0] == 0
    [frame] = [e.requests[0] for e in cap.exchanges() if e.requests and msg_type(e.requests[0]) == 5035]
    return frame


@pytest.mark.parametrize("release", list(RELEASES))
def test_slurmd_drops_a_frame_of_the_other_auth_plugin(live_clusters: LiveClusters, release: str) -> None:
    """A slurmd loads only its own AuthType: a plugin-101 frame sent to auth/slurm's slurmd, and a plugin-103
    frame sent to auth/munge's, get the connection closed without a byte. The same frames sent to the
    slurmd of their own auth type are answered (each names its job)."""
    frames = {"munge": _munge_frame(live_clusters.get(release, "munge"), live_clusters.held(release, "munge")),
              "slurm": _slurm_frame(live_clusters.get(release, "slurm"), live_clusters.held(release, "slurm"))}
    for auth, frame in frames.items():
        own = live_clusters.get(release, auth).exchange(frame)
        assert own and msg_type(own) == 5036, (auth, own)
        other = "slurm" if auth == "munge" else "munge"
        assert live_clusters.get(release, other).exchange(frame) == b"", f"auth/{other} answered a {auth} frame"


# -- the real pam_slurm_adopt ------------------------------------------------------------------------------


@pytest.fixture
def job(cluster: ChrootCluster) -> Iterator[int]:
    """A running batch job of the owner's, cancelled afterwards."""
    job_id = cluster.submit(OWNER, "exec sleep 600")
    try:
        cluster.wait_running(job_id)
        yield job_id
    finally:
        cluster.run(["scancel", str(job_id)], check=False)


def _freezer(cgroup_lines: str) -> str:
    [path] = [line.split(":", 2)[2] for line in cgroup_lines.splitlines() if line.split(":")[1] == "freezer"]
    return path


def _login_output(cluster: ChrootCluster, login: subprocess.Popen[str]) -> tuple[int, str]:
    """The remote shell's pid and /proc/self/cgroup, as it printed them before "end"."""
    first = shell_line(login, cluster.log_tails)
    assert login.stdout is not None
    lines = []
    while (line := login.stdout.readline()) not in ("end\n", ""):
        lines.append(line)
    return int(first.removeprefix("pid ")), "".join(lines)


def test_pam_slurm_adopt_adopts_a_login_from_inside_the_job(cluster: ChrootCluster, job: int) -> None:
    """alice runs ssh in a step of her job: sshd's pam_slurm_adopt asks slurmd which job the connection
    comes from and moves the login into that job's extern step; the remote shell is there, and stays."""
    assert not cluster.in_extern_step(os.getpid(), job)
    ssh = cluster.ssh_argv(OWNER, "echo pid $$; cat /proc/self/cgroup; echo end; exec sleep 600")
    argv = cluster.inside(["srun", f"--jobid={job}", "--overlap", "-n1", "-N1", *ssh], OWNER)
    with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as login:
        try:
            pid, cgroups = _login_output(cluster, login)
            assert _freezer(cgroups) == cluster.extern_cgroup(job) == cluster.cgroup_of(pid)
            assert cluster.in_extern_step(pid, job)
            assert str(pid) in cluster.run(["scontrol", "listpids", str(job)]).stdout
            cluster.syslog.wait_for(f"adopted into job {job}", ident="pam_slurm_adopt")
        finally:
            cluster.run(["scancel", str(job)], check=False)
            wait_for(lambda: login.poll() is not None, 30, "the adopted login to end with its job")


def test_pam_slurm_adopt_denies_a_user_without_jobs(cluster: ChrootCluster) -> None:
    proc = cluster.run(cluster.ssh_argv(OTHER, "true"), user=OTHER, check=False)
    assert proc.returncode == 255
    assert "Access denied by pam_slurm_adopt: you have no active jobs on this node" in proc.stderr


@pytest.mark.parametrize("user", ["root", OWNER, OTHER])
def test_slurm_callerid_answers_like_scontrol(cluster: ChrootCluster, held: HeldConnection, user: str) -> None:
    """The project's slurm-callerid in both auth modes: root signs with slurm.key (auth/slurm) or munged; a
    user asks the real slurmd's sack socket ($SLURM_SACK_SOCKET, as 25.05+ clients look first)."""
    cli = installed_or_skip("slurm-callerid", for_other_users=True)
    args = [held.client[0], str(held.client[1]), held.server[0], str(held.server[1])]
    munge = ["--munge-socket", str(cluster.munge_socket)] if cluster.auth == "munge" else []
    ours = cluster.run_host([cli, *munge, *args], user=user)
    theirs = _callerid(cluster, held, user)
    assert (ours.returncode == 0, ours.stdout) == (theirs[0] == 0, theirs[1]), ours.stderr
