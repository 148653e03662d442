"""slurm-callerid against a real Slurm 22.05 slurmd, side by side with the real `scontrol callerid`."""

from __future__ import annotations

import json
import time
from typing import Unpack

import pytest

from slurmproto.client import CallerIdResult, callerid
from slurmproto.conf import parse_file
from slurmproto.errors import ConnectError, Refused
from slurmproto.versions import SLURM_22_05, SLURM_24_05, SLURM_24_11, SLURM_26_05
from tests.support.callerid import CalleridOptions, ask_callerid
from tests.support.procs import installed_or_skip
from tests.support.slurm_cluster import ConnectedJob, SlurmCluster, free_port

INDETERMINATE = "remote job id indeterminate"


@pytest.fixture(scope="module")
def cli() -> str:
    return installed_or_skip("slurm-callerid", for_other_users=True)


def _both(cluster: SlurmCluster, cli: str, args: list[str], user: str | None) -> tuple[tuple[int, str], ...]:
    ours = cluster.run([cli, *args], user=user, check=False)
    theirs = cluster.run(["scontrol", "callerid", *args], user=user, check=False)
    return (ours.returncode, ours.stdout), (theirs.returncode, theirs.stdout), (ours.stderr, theirs.stderr)


def _tuple(job: ConnectedJob, src_port: int | None = None) -> list[str]:
    return [job.client[0], str(src_port or job.client[1]), job.server[0], str(job.server[1])]


@pytest.mark.parametrize("user", [None, "alice"], ids=["root", "owner"])
def test_names_the_job_like_scontrol(slurm_cluster: SlurmCluster, connected_job: ConnectedJob, cli: str,
                                     user: str | None) -> None:
    ours, theirs, errs = _both(slurm_cluster, cli, _tuple(connected_job), user)
    assert ours == theirs == (0, f"{connected_job.job_id} {slurm_cluster.node_name}\n"), errs


@pytest.mark.parametrize(("user", "unknown"), [("bob", False), (None, True), ("alice", True)],
                         ids=["other-user", "unknown-root", "unknown-owner"])
def test_indeterminate_like_scontrol(slurm_cluster: SlurmCluster, connected_job: ConnectedJob, cli: str,
                                     user: str | None, unknown: bool) -> None:
    args = _tuple(connected_job, free_port() if unknown else None)
    ours, theirs, (our_err, their_err) = _both(slurm_cluster, cli, args, user)
    assert ours == theirs == (1, "")
    assert INDETERMINATE in our_err and INDETERMINATE in their_err


def test_json_and_explicit_family(slurm_cluster: SlurmCluster, connected_job: ConnectedJob, cli: str) -> None:
    proc = slurm_cluster.run([cli, "--json", *_tuple(connected_job), "4"], user="alice", check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["job_id"] == connected_job.job_id and result["node_name"] == slurm_cluster.node_name
    assert result["release"] == "22.05" and result["step_id"] is None
    assert result["signer_uid"] == 0  # slurmd (root) signed the reply
    assert [a["version"] for a in result["attempts"]] == ["0x2600"]


def test_verbose_shows_frames(slurm_cluster: SlurmCluster, connected_job: ConnectedJob, cli: str) -> None:
    proc = slurm_cluster.run([cli, "-v", *_tuple(connected_job)], check=False)
    assert proc.returncode == 0
    assert "sent " in proc.stderr and "received " in proc.stderr and "timings:" in proc.stderr
    assert f"config: {slurm_cluster.conf}" in proc.stderr


def _ask(cluster: SlurmCluster, job: ConnectedJob, **options: Unpack[CalleridOptions]) -> CallerIdResult:
    conf = parse_file(cluster.conf)
    return ask_callerid(job.client, job.server, port=conf.slurmd_port, munge_socket=conf.munge_socket,
                        **options)


def test_client_api_result(slurm_cluster: SlurmCluster, connected_job: ConnectedJob) -> None:
    result = _ask(slurm_cluster, connected_job, version=SLURM_22_05)
    assert result.job_id == connected_job.job_id
    assert result.protocol_version == SLURM_22_05
    assert {"sign", "connect", "send", "receive", "verify", "total"} <= set(result.timings)


def test_ipv4_mapped_source_is_asked_over_ipv4(slurm_cluster: SlurmCluster, connected_job: ConnectedJob) -> None:
    conf = parse_file(slurm_cluster.conf)
    result = callerid("::ffff:" + connected_job.client[0], connected_job.client[1],
                      "::ffff:" + connected_job.server[0], connected_job.server[1], port=conf.slurmd_port,
                      munge_socket=conf.munge_socket)
    assert result.job_id == connected_job.job_id and result.slurmd[0] == "127.0.0.1"


def test_auto_version_falls_back_to_22_05(slurm_cluster: SlurmCluster, connected_job: ConnectedJob) -> None:
    """22.05 closes silently on 26.05 and 24.05 headers; the client tries two more versions at most."""
    result = _ask(slurm_cluster, connected_job, start_version=SLURM_26_05)
    assert result.job_id == connected_job.job_id
    versions = [a.version for a in result.attempts]
    assert versions == [SLURM_26_05, SLURM_24_05, SLURM_22_05]


def test_pinned_version_refused(slurm_cluster: SlurmCluster, connected_job: ConnectedJob) -> None:
    started = time.monotonic()
    with pytest.raises(Refused, match="closed the connection without answering") as info:
        _ask(slurm_cluster, connected_job, version=SLURM_24_11)
    assert len(info.value.attempts) == 1 and time.monotonic() - started < 2


def test_refused_connection_fails_fast(slurm_cluster: SlurmCluster, connected_job: ConnectedJob) -> None:
    conf = parse_file(slurm_cluster.conf)
    started = time.monotonic()
    with pytest.raises(ConnectError):
        callerid("127.0.0.1", connected_job.client[1], "127.0.0.1", connected_job.server[1], port=free_port(),
                 munge_socket=conf.munge_socket, timeout=5)
    assert time.monotonic() - started < 1


def test_batch_answers_in_order(slurm_cluster: SlurmCluster, connected_job: ConnectedJob, cli: str) -> None:
    queries = slurm_cluster.out_dir / "queries"  # readable by alice
    queries.write_text("\n".join([
        " ".join(_tuple(connected_job)),
        "# a comment, then a blank line",
        "",
        " ".join(_tuple(connected_job, free_port())),
        "127.0.0.1 1 ::1 2",
        " ".join(_tuple(connected_job)) + " 4",
    ]) + "\n")
    queries.chmod(0o644)
    proc = slurm_cluster.run([cli, "batch", str(queries)], user="alice", check=False)
    lines = proc.stdout.splitlines()
    assert lines[0] == lines[3] == f"{connected_job.job_id} {slurm_cluster.node_name}", proc.stderr
    assert lines[1] == "indeterminate" and lines[2].startswith("error: addresses of different families")
    assert len(lines) == 4 and proc.returncode == 1
