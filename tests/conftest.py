import pytest

from tests.support.fixtures import *  # noqa: F403
from tests.support.fixtures import LIVE_CLUSTERS


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    LIVE_CLUSTERS.stop()
