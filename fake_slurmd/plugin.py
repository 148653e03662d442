"""pytest plugin (entry point `fake_slurmd`): a `fake_slurmd` fixture, a running simulated node.

    def test_login(fake_slurmd):
        fake_slurmd.add_job({"job_id": 7, "user": "alice"})
        with fake_slurmd.connect_from_job(7, "127.0.0.1", 22) as conn:
            ...

It needs a munged: `--fake-slurmd-munge-socket PATH` (or $FAKE_SLURMD_MUNGE_SOCKET) names a running one;
otherwise, as root, the plugin starts a private munged for the session. Mark a test with
`@pytest.mark.fake_slurmd(release="24.11", scenario="path.toml")` to choose the release or scenario.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from fake_slurmd.controller import FakeSlurmd
from fake_slurmd.munged import MUNGED, Munged
from fake_slurmd.scenario import NodeSpec, Scenario


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
