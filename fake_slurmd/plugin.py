"""pytest plugin (entry point `fake_slurmd`): running simulated nodes as fixtures.

`fake_slurmd` is one node, node1 on 127.0.0.1 (a free port), no jobs:

    def test_login(fake_slurmd):
        fake_slurmd.add_job({"job_id": 7, "user": "alice"})
        with fake_slurmd.connect_from_job(7, "127.0.0.1", 22) as conn:
            ...

`fake_node` is a factory for tests that need their own nodes, with given jobs (Job objects, or dicts with
the keys of a scenario's [[jobs]] table) and release; every node it made is stopped when the test ends:

    def test_refusal(fake_node):
        fake = fake_node([Job(5, 0)], release="25.05", client_timeout=1.0)
        ...

Keyword arguments are those of `FakeSlurmd` (`munge_socket` defaults to the plugin's munged), plus `nodes`
(NodeSpecs, default node1 on 127.0.0.1) and `client_timeout`.

`fake_cluster` is the same factory for a simulated cluster: nodes by name, each in a network namespace of
its own as root (10.78.0.N, port 6818), else on 127.0.0.N and one free port (`network="auto"`; the
instance's `network` says which):

    def test_cross_node(fake_cluster):
        cluster = fake_cluster(["node1", "node2"], [{"job_id": 7, "user": "alice"}])   # on both nodes
        listener = cluster.on_node("node2", socket.create_server, (cluster.node("node2").address, 0))
        with cluster.connect_from_job(7, *listener.getsockname(), node="node1", user="alice") as conn:
            ...                                   # node1's slurmd says the connection is job 7's

`sshd_factory` starts real sshds on loopback (root only), each with its own host and client keys, config
and PAM service (/etc/pam.d/sat-<hex>, removed afterwards) whose account stack is the lines given; `fake_sshd`
is one whose account stack is the project's hook (the README's pam.d line) deciding against the
`fake_slurmd` node, and `login_from_job` logs in from inside a job:

    def test_ssh_login(fake_slurmd, fake_sshd):
        fake_slurmd.add_job({"job_id": 7, "user": "alice"})
        sshd = fake_sshd()                            # hook options may be given: fake_sshd("action_no_jobs=allow")
        result = login_from_job(fake_slurmd, sshd, 7, "alice", "id -un")
        assert result.returncode == 0 and fake_slurmd.adopted(7)

`run_hook()` (fake_slurmd.pamexec) runs the hook once with exactly pam_exec's environment, without sshd.

It needs a munged: `--fake-slurmd-munge-socket PATH` (or $FAKE_SLURMD_MUNGE_SOCKET) names a running one;
otherwise, as root, the plugin starts a private munged for the session. Mark a test with
`@pytest.mark.fake_slurmd(release="24.11", scenario="path.toml")` to choose the release or scenario.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import pytest

from fake_slurmd.controller import FakeSlurmd
from fake_slurmd.munged import MUNGED, Munged
from fake_slurmd.pamexec import hook_command, this_env
from fake_slurmd.scenario import DEFAULT_SUBNET, Job, NodeSpec, Scenario, job_from_dict
from fake_slurmd.sshd import PROGRAMS as SSHD_PROGRAMS
from fake_slurmd.sshd import Sshd, login_from_job

__all__ = ["FakeClusterFactory", "FakeNodeFactory", "FakeSshdFactory", "SshdFactory", "login_from_job"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--fake-slurmd-munge-socket", default=os.environ.get("FAKE_SLURMD_MUNGE_SOCKET"),
                     help="munged socket for the fake_slurmd fixture (default: start a private munged as root)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fake_slurmd(release=None, scenario=None): configure the fake_slurmd fixture")


@pytest.fixture(scope="session")
def fake_slurmd_munge_socket(request: pytest.FixtureRequest) -> Iterator[str]:
    """The munged socket the fake_slurmd fixture verifies credentials with."""
    given = request.config.getoption("--fake-slurmd-munge-socket")
    if given:
        yield given
        return
    if os.geteuid() != 0:
        pytest.skip("fake_slurmd needs a munged: pass --fake-slurmd-munge-socket, or run as root to start one")
    if not os.access(MUNGED, os.X_OK):
        pytest.skip(f"fake_slurmd needs munged ({MUNGED}; Debian package munge)")
    with Munged() as daemon:
        yield str(daemon.socket)


@pytest.fixture
def fake_slurmd(request: pytest.FixtureRequest, fake_slurmd_munge_socket: str) -> Iterator[FakeSlurmd]:
    """A simulated node `node1` on 127.0.0.1 (a free port), no jobs unless the marker's scenario has some."""
    marker = request.node.get_closest_marker("fake_slurmd")
    options = dict(marker.kwargs) if marker else {}
    scenario = Scenario.load(options["scenario"]) if options.get("scenario") else Scenario([NodeSpec("node1", port=0)])
    with FakeSlurmd(scenario, release=options.get("release"), munge_socket=fake_slurmd_munge_socket) as fake:
        yield fake


class FakeNodeFactory(Protocol):
    """`fake_node(jobs, release=..., nodes=..., client_timeout=..., **FakeSlurmd options)`: a started node."""

    def __call__(self, jobs: Iterable[Job | Mapping[str, Any]] = (), *, release: str | None = None,
                 nodes: Sequence[NodeSpec] = (), client_timeout: float | None = None,
                 **options: Any) -> FakeSlurmd: ...


class FakeClusterFactory(Protocol):
    """`fake_cluster(nodes, jobs, network="auto", subnet=..., release=..., **FakeSlurmd options)`: started."""

    def __call__(self, nodes: Sequence[str] = ("node1", "node2"), jobs: Iterable[Job | Mapping[str, Any]] = (), *,
                 network: str = "auto", subnet: str = DEFAULT_SUBNET, release: str | None = None,
                 client_timeout: float | None = None, **options: Any) -> FakeSlurmd: ...


def _started(stack: contextlib.ExitStack, scenario: Scenario, jobs: Iterable[Job | Mapping[str, Any]],
             client_timeout: float | None, munge_socket: str, options: dict[str, Any]) -> FakeSlurmd:
    built = [job if isinstance(job, Job) else job_from_dict(dict(job)) for job in jobs]
    scenario.jobs = {job.job_id: job for job in built}
    if len(scenario.jobs) != len(built):
        raise ValueError(f"job ids repeat in {[job.job_id for job in built]}")
    if client_timeout is not None:
        scenario.client_timeout = client_timeout
    options.setdefault("munge_socket", munge_socket)
    return stack.enter_context(FakeSlurmd(scenario, **options))


@pytest.fixture
def fake_node(fake_slurmd_munge_socket: str) -> Iterator[FakeNodeFactory]:
    """A factory of started FakeSlurmd instances, each stopped at the end of the test (see the module's doc)."""
    with contextlib.ExitStack() as stack:
        def make(jobs: Iterable[Job | Mapping[str, Any]] = (), *, release: str | None = None,
                 nodes: Sequence[NodeSpec] = (), client_timeout: float | None = None,
                 **options: Any) -> FakeSlurmd:
            scenario = Scenario(list(nodes) or [NodeSpec("node1", port=0)], release=release)
            return _started(stack, scenario, jobs, client_timeout, fake_slurmd_munge_socket, options)

        yield make


@pytest.fixture
def fake_cluster(fake_slurmd_munge_socket: str) -> Iterator[FakeClusterFactory]:
    """A factory of started simulated clusters, each stopped at the end of the test (see the module's doc)."""
    with contextlib.ExitStack() as stack:
        def make(nodes: Sequence[str] = ("node1", "node2"), jobs: Iterable[Job | Mapping[str, Any]] = (), *,
                 network: str = "auto", subnet: str = DEFAULT_SUBNET, release: str | None = None,
                 client_timeout: float | None = None, **options: Any) -> FakeSlurmd:
            if network not in ("auto", "namespaces", "loopback"):
                raise ValueError(f"fake_cluster: network {network!r} is not auto, namespaces or loopback")
            subnets = {} if network == "loopback" else {"subnet": subnet}
            scenario = Scenario.from_dict({"nodes": [{"name": name} for name in nodes], "network": network,
                                           "release": release, **subnets}, "fake_cluster")
            return _started(stack, scenario, jobs, client_timeout, fake_slurmd_munge_socket, options)

        yield make


class SshdFactory(Protocol):
    """`sshd_factory(account_lines, **Sshd keyword arguments)`: a started `Sshd`."""

    def __call__(self, account_lines: Sequence[str], **kwargs: Any) -> Sshd: ...


class FakeSshdFactory(Protocol):
    """`fake_sshd(*hook options, conf_lines=(), users=("alice", "bob"))`: a started `Sshd` running the hook."""

    def __call__(self, *options: str, conf_lines: Sequence[str] = (), users: Sequence[str] = ("alice", "bob"),
                 **kwargs: Any) -> Sshd: ...


def _sshd_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "sshd_factory needs root (its own /etc/pam.d service, logins as other users)"
    missing = [path for path in SSHD_PROGRAMS if not os.access(path, os.X_OK)]
    return f"sshd_factory needs {', '.join(missing)} (Debian: openssh-server, openssh-client)" if missing else None


@pytest.fixture
def sshd_factory() -> Iterator[SshdFactory]:
    """Starts real sshds on loopback, each with its own PAM service; all are stopped (pam.d files gone) after."""
    reason = _sshd_unavailable()
    if reason:
        pytest.skip(reason)
    with contextlib.ExitStack() as stack:

        def make(account_lines: Sequence[str], **kwargs: Any) -> Sshd:
            sshd = Sshd(account_lines, **kwargs)
            stack.callback(sshd.stop)  # before start(): a failed start is cleaned up as well
            return sshd.start()

        yield make


@pytest.fixture(scope="session")
def adopt_hook() -> str:
    """The command the README's pam.d line runs (pam_exec), with this environment's interpreter."""
    if not os.access(os.path.join(this_env(), "bin", "slurm-adopt"), os.X_OK):
        pytest.skip(f"the project is not installed in {this_env()} (install it, or run the tests through tox)")
    return hook_command(this_env())


@pytest.fixture
def fake_sshd(fake_slurmd: FakeSlurmd, sshd_factory: SshdFactory, adopt_hook: str,
              tmp_path_factory: pytest.TempPathFactory) -> FakeSshdFactory:
    """sshds whose account stack is the hook against the `fake_slurmd` node (conf=, nodename=node1,
    service= the sshd's own, log_level=debug, then the options given)."""
    base = tmp_path_factory.mktemp("fake-sshd")

    def make(*options: str, conf_lines: Sequence[str] = (), users: Sequence[str] = ("alice", "bob"),
             **kwargs: Any) -> Sshd:
        conf = fake_slurmd.slurm_conf(base / f"slurm-{len(list(base.iterdir()))}.conf", conf_lines)
        line = (f"required pam_exec.so stdout quiet {adopt_hook} conf={conf} nodename=node1 service={{service}} "
                f"log_level=debug {' '.join(options)}")
        return sshd_factory([line], users=users, **kwargs)

    return make
