"""Smoke test of the real single-node Slurm cluster, and of what the callerid tests build on.

A job of alice's connects to a listener in this test; real `scontrol callerid` must then name that job
for root and alice, and call it indeterminate for bob and for a connection that does not exist.
"""

from __future__ import annotations

import pytest

from tests.support.slurm_cluster import ConnectedJob, SlurmCluster, free_port

INDETERMINATE = "slurm_network_callerid: remote job id indeterminate"


def _callerid(cluster: SlurmCluster, client: tuple[str, int], server: tuple[str, int],
              user: str | None = None) -> tuple[int, str, str]:
    """Real `scontrol callerid IP_SRC PORT_SRC IP_DST PORT_DST`: sent to the slurmd at IP_SRC."""
    argv = ["scontrol", "callerid", client[0], str(client[1]), server[0], str(server[1])]
    proc = cluster.run(argv, user=user, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def test_cluster_is_private_and_idle(slurm_cluster: SlurmCluster) -> None:
    assert slurm_cluster.env["SLURM_CONF"] == str(slurm_cluster.conf)
    assert {slurm_cluster.slurmctld_port, slurm_cluster.slurmd_port}.isdisjoint({6817, 6818})
    assert slurm_cluster.spool_dir.is_relative_to(slurm_cluster.base)
    out = slurm_cluster.run(["scontrol", "ping"]).stdout
    assert "is UP" in out
    state = slurm_cluster.run(["sinfo", "-h", "-N", "-n", slurm_cluster.node_name, "-o", "%T"]).stdout.strip()
    # Other tests' jobs may be running on the shared session cluster.
    assert state in ("idle", "mixed", "allocated"), state


def test_job_runs_and_has_extern_step(slurm_cluster: SlurmCluster, connected_job: ConnectedJob) -> None:
    assert connected_job.client[0] == "127.0.0.1"
    assert slurm_cluster.job_state(connected_job.job_id) == "RUNNING"
    # PrologFlags=contain: the extern stepd (and its socket) exist from allocation on.
    assert slurm_cluster.extern_socket(connected_job.job_id).is_socket()


@pytest.mark.parametrize("user", [None, "alice"], ids=["root", "owner"])
def test_callerid_names_the_job(slurm_cluster: SlurmCluster, connected_job: ConnectedJob,
                                user: str | None) -> None:
    rc, out, err = _callerid(slurm_cluster, connected_job.client, connected_job.server, user)
    assert (rc, out) == (0, f"{connected_job.job_id} {slurm_cluster.node_name}\n"), err


def test_callerid_other_user_is_indeterminate(slurm_cluster: SlurmCluster,
                                              connected_job: ConnectedJob) -> None:
    # slurmd finds the job but refuses to tell bob about alice's job.
    rc, out, err = _callerid(slurm_cluster, connected_job.client, connected_job.server, "bob")
    assert (rc, out) == (1, ""), err
    assert INDETERMINATE in err


@pytest.mark.parametrize("user", [None, "alice"], ids=["root", "alice"])
def test_callerid_unknown_connection_is_indeterminate(slurm_cluster: SlurmCluster,
                                                      connected_job: ConnectedJob, user: str | None) -> None:
    # A source port nobody has bound: no socket on the node has that local end.
    client = (connected_job.client[0], free_port())
    rc, out, err = _callerid(slurm_cluster, client, connected_job.server, user)
    assert (rc, out) == (1, ""), err
    assert INDETERMINATE in err
