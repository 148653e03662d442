"""Session fixtures that start real daemons (skipped, with the reason, where they cannot run)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.munged import MUNGED, Munged
from tests.support.procs import need_programs, need_root
from tests.support.slurm_cluster import PROGRAMS as SLURM_PROGRAMS
from tests.support.slurm_cluster import ConnectedJob, SlurmCluster


@pytest.fixture(scope="session")
def munged() -> Iterator[Munged]:
    """A private munged (own key and socket in a temp dir), as user munge."""
    reason = need_root("starting munged as user munge") or need_programs(MUNGED)
    if reason:
        pytest.skip(reason)
    with Munged() as daemon:
        yield daemon


@pytest.fixture(scope="session")
def slurm_cluster(request: pytest.FixtureRequest) -> Iterator[SlurmCluster]:
    """A real single-node Slurm (slurmctld + slurmd on 127.0.0.1, state in a temp dir), session munged."""
    reason = need_root("running slurmctld/slurmd and jobs as alice/bob") or need_programs(*SLURM_PROGRAMS)
    if reason:
        pytest.skip(reason)
    # Requested only now, so a missing Slurm is reported as such rather than as a munged problem.
    daemon: Munged = request.getfixturevalue("munged")
    with SlurmCluster(daemon) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def connected_job(slurm_cluster: SlurmCluster) -> Iterator[ConnectedJob]:
    """A batch job of alice's holding a TCP connection to a listener of ours on 127.0.0.1."""
    with slurm_cluster.connected_job("alice") as job:
        yield job
