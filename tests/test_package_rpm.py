"""The RPM of packaging/rpm/slurm-adopt-toolkit.spec, built by scripts/build-rpm (rpmbuild -bb): its file
list holds the three commands, the three packages and the man pages; it is noarch and asks for the
distribution's packages."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = "/usr/lib/python3/dist-packages"
"""Where Debian's python3 puts them (DEB_PYTHON_INSTALL_LAYOUT=deb); Fedora's would be its sitelib."""


def _query(rpm: Path, *args: str) -> list[str]:
    return subprocess.run(["rpm", "-qp", *args, str(rpm)], capture_output=True, text=True, check=True,
                          timeout=60).stdout.splitlines()


@pytest.fixture(scope="module")
def rpm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("rpmbuild") is None:
        pytest.skip("rpmbuild is not installed (scripts/setup installs rpm)")
    built = subprocess.run(["bash", str(ROOT / "scripts/build-rpm"), str(tmp_path_factory.mktemp("rpm"))],
                           capture_output=True, text=True, timeout=600, check=False)
    assert built.returncode == 0, built.stderr[-4000:]
    return Path(built.stdout.split()[-1])


def test_file_list(rpm: Path) -> None:
    files = set(_query(rpm, "-l"))
    wanted = {"/usr/bin/slurm-adopt", "/usr/bin/slurm-callerid", "/usr/bin/fake-slurmd", "/usr/bin/slurm-adopt-agent",
              "/usr/lib/systemd/system/slurm-adopt-agent.service", "/usr/lib/systemd/system/slurm-adopt-agent.socket",
              f"{SITE}/adopt/hook.py", f"{SITE}/adopt/__main__.py", f"{SITE}/slurmproto/cli.py",
              f"{SITE}/slurmproto/k12.py", f"{SITE}/fake_slurmd/cli.py", f"{SITE}/fake_slurmd/plugin.py"}
    assert wanted <= files, sorted(wanted - files)
    for page in ("man1/slurm-callerid.1", "man1/fake-slurmd.1", "man8/slurm-adopt.8"):
        assert any(f.startswith(f"/usr/share/man/{page}") for f in files), page
    assert any(f.endswith("/LICENSE") for f in files)
    assert not any("/tests/" in f for f in files)


def test_noarch_with_distribution_requires(rpm: Path) -> None:
    assert _query(rpm, "--qf", "%{ARCH}") == ["noarch"]
    requires = _query(rpm, "--requires")
    for needed in ("python3 >= 3.11", "python3-construct >= 2.10.68", "python3-psutil >= 5.9", "munge-libs"):
        assert needed in requires, requires
    assert not any("pycryptodome" in r for r in requires)
