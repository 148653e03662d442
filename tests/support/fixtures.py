"""Session fixtures that start real daemons (skipped, with the reason, where they cannot run)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.chroot_cluster import RELEASES, ChrootCluster, HeldConnection, missing_reason
from tests.support.chroot_files import AUTHS
from tests.support.munged import MUNGED, Munged
from tests.support.procs import ensure_user, need_programs, need_root
from tests.support.sessions import marker_job
from tests.support.slurm_cluster import PROGRAMS as SLURM_PROGRAMS
from tests.support.slurm_cluster import ConnectedJob, SlurmCluster
from tests.support.stuck_munged import StuckMunged
from tests.support.syslog import DevLogCatcher, DevLogUnavailable
from tests.support.two_nodes import TwoNodes

TEST_USERS = ("alice", "bob")
STOP_WITHIN = 120.0
"""Seconds all chroot clusters get to stop together (each waits a few seconds for its jobs' stepds)."""


@pytest.fixture(scope="session", autouse=True)
def accounts() -> None:
    """The test users exist (as root) before any test or fixture names them, whatever runs first."""
    if os.geteuid() == 0:
        for user in TEST_USERS:
            ensure_user(user)


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
def container_cluster(request: pytest.FixtureRequest) -> Iterator[SlurmCluster]:
    """A second real node, tmpfs1, with JobContainerType=job_container/tmpfs (each job's /tmp and /dev/shm
    private, in a mount namespace of its own; state under /var/tmp). Its own daemons rather than a
    reconfigured slurm_cluster: jobs started before JobContainerType changes cannot run new steps."""
    reason = need_root("running slurmctld/slurmd with job_container/tmpfs") or need_programs(*SLURM_PROGRAMS)
    if reason:
        pytest.skip(reason)
    daemon: Munged = request.getfixturevalue("munged")
    with SlurmCluster(daemon, node_name="tmpfs1", job_container=True) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def container_job(container_cluster: SlurmCluster) -> Iterator[int]:
    """A running job of alice's on container_cluster that wrote sessions.marker_text(job) to
    sessions.MARKER in its private /tmp."""
    job_id = marker_job(container_cluster, "alice")
    yield job_id
    container_cluster.cancel(job_id)


@pytest.fixture(scope="session")
def two_nodes(request: pytest.FixtureRequest) -> Iterator[TwoNodes]:
    """Two real Slurm 22.05 nodes, xn1 and xn2, in namespaces of their own (tests/support/two_nodes.py)."""
    reason = (need_root("running two Slurm nodes in network namespaces")
              or need_programs(*SLURM_PROGRAMS, "ip", "nsenter", "unshare"))
    if reason:
        pytest.skip(reason)
    daemon: Munged = request.getfixturevalue("munged")
    with TwoNodes(daemon) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def connected_job(slurm_cluster: SlurmCluster) -> Iterator[ConnectedJob]:
    """A batch job of alice's holding a TCP connection to a listener of ours on 127.0.0.1."""
    with slurm_cluster.connected_job("alice") as job:
        yield job


@pytest.fixture(scope="session")
def devlog() -> Iterator[DevLogCatcher]:
    """Our own /dev/log for the session: what PAM modules (and anything else) send to syslog(3)."""
    reason = need_root("serving /dev/log")
    if reason:
        pytest.skip(reason)
    catcher = DevLogCatcher()
    try:
        catcher.start()
    except (DevLogUnavailable, OSError) as e:
        pytest.skip(f"cannot catch syslog messages: {e}")
    try:
        yield catcher
    finally:
        catcher.stop()


@pytest.fixture(scope="session")
def fake_slurmd_munge_socket(munged: Munged) -> str:
    """The fake_slurmd plugin's munged is the session's (one private munged for everything)."""
    return str(munged.socket)


@pytest.fixture
def stuck_munged(tmp_path: Path) -> Iterator[StuckMunged]:
    """A munged socket that accepts and never answers."""
    with StuckMunged(tmp_path / "stuck.socket") as stuck:
        yield stuck


@pytest.fixture(scope="session")
def shared_dir() -> Iterator[Path]:
    """A temp dir every test user can read (test users run Slurm clients with files from here)."""
    path = Path(tempfile.mkdtemp(prefix="sat-shared-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


class LiveClusters:
    """The session's chroot clusters (tests/support/chroot_cluster.py), one per (release, auth): each starts
    the first time a test asks for it and all stop together at the end of the session. Each runs on an
    overlay of its chroot with namespaces and cgroups of its own, so all four can be up at once."""

    def __init__(self) -> None:
        self._clusters: dict[tuple[str, str, bool, str | None], ChrootCluster] = {}
        self._failed: dict[tuple[str, str, bool, str | None], str] = {}
        self._held: dict[tuple[str, str, bool], HeldConnection] = {}
        self._jobs = contextlib.ExitStack()

    def get(self, release: str, auth: str = "munge", jwks: bool = False, container: str | None = None
            ) -> ChrootCluster:
        """The running cluster (auth/slurm with jwks: its slurm.jwks; container: each job in a mount namespace
        of that plugin, one of chroot_cluster.CONTAINERS); a skip naming what is missing where it cannot run."""
        reason = missing_reason(release)
        if reason:
            pytest.skip(reason)
        key = (release, auth, jwks, container)
        if key in self._failed:  # a start that failed once is not retried by every test
            raise RuntimeError(f"the Slurm {release} auth/{auth} cluster did not start:\n{self._failed[key]}")
        if key not in self._clusters:
            try:
                self._clusters[key] = ChrootCluster(release, auth, jwks=jwks, container=container).start()
            except Exception as e:
                self._failed[key] = str(e)
                raise
        return self._clusters[key]

    def held(self, release: str, auth: str = "munge", jwks: bool = False) -> HeldConnection:
        """A batch job of alice's holding a TCP connection in that cluster, for the whole session."""
        key = (release, auth, jwks)
        if key not in self._held:
            cluster = self.get(release, auth, jwks)
            self._held[key] = self._jobs.enter_context(cluster.held_connection(TEST_USERS[0]))
        return self._held[key]

    def stop(self) -> None:
        """Stop them all at once (each waits a few seconds for its jobs' stepds)."""
        self._held.clear()
        self._jobs.close()
        clusters = list(self._clusters.values())
        self._clusters.clear()
        errors: list[BaseException] = []

        def stop_one(cluster: ChrootCluster) -> None:
            try:
                cluster.stop()
            except BaseException as e:  # reported below, after the others stopped
                errors.append(e)

        threads = [threading.Thread(target=stop_one, args=(c,), daemon=True) for c in clusters]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + STOP_WITHIN
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in threads):
            raise RuntimeError(f"the chroot clusters did not stop within {STOP_WITHIN:g} s")
        if errors:
            raise errors[0]


LIVE_CLUSTERS = LiveClusters()
"""Stopped by pytest_sessionfinish (tests/conftest.py), not by a fixture's teardown: that would run inside
the last test's teardown and count against that test's own timeout."""


@pytest.fixture(scope="session")
def live_clusters() -> LiveClusters:
    return LIVE_CLUSTERS


@pytest.fixture(scope="session")
def slurm_2411(live_clusters: LiveClusters) -> ChrootCluster:
    """Debian 13's real Slurm 24.11 with auth/munge (its own munged) in a chroot and namespaces of its own."""
    return live_clusters.get("24.11", "munge")


@pytest.fixture(scope="session")
def slurm_2605(live_clusters: LiveClusters) -> ChrootCluster:
    """Debian unstable's real Slurm 26.05 with auth/munge."""
    return live_clusters.get("26.05", "munge")


@pytest.fixture(scope="session")
def slurm_2411_authslurm(live_clusters: LiveClusters) -> ChrootCluster:
    """Slurm 24.11 with auth/slurm and cred/slurm (a fresh slurm.key, no munged)."""
    return live_clusters.get("24.11", "slurm")


@pytest.fixture(scope="session")
def slurm_2605_authslurm(live_clusters: LiveClusters) -> ChrootCluster:
    """Slurm 26.05 with auth/slurm and cred/slurm."""
    return live_clusters.get("26.05", "slurm")



LIVE_COMBOS = [(release, auth) for release in RELEASES for auth in AUTHS]


@pytest.fixture(name="cluster", scope="module", params=LIVE_COMBOS, ids=[f"{r}-auth-{a}" for r, a in LIVE_COMBOS])
def each_live_cluster(request: pytest.FixtureRequest, live_clusters: LiveClusters) -> ChrootCluster:
    """`cluster`: each release's cluster in each auth mode in turn (a module's tests run against one, then
    the next)."""
    release, auth = request.param
    return live_clusters.get(release, auth)


@pytest.fixture(name="held", scope="module")
def each_live_held(cluster: ChrootCluster, live_clusters: LiveClusters) -> HeldConnection:
    """`held`: that cluster's batch job of alice's holding a TCP connection."""
    return live_clusters.held(cluster.release, cluster.auth)
