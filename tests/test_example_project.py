"""examples/project, a site's own tests written against the pytest plugin, run the way a site would: the
toolkit's wheel, built from this tree, installed into a fresh venv with nothing else of ours, and the
example's tests run there by pytest, as root (munged and sshd need it). pip reaches the package index for
the toolkit's dependencies, as any installation does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.procs import need_programs, need_root

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "project"


def run(argv: list[str], **options: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
                            **options)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{argv}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result  # type: ignore[no-any-return]


def test_example_project_passes_in_a_fresh_venv(tmp_path: Path) -> None:
    reason = need_root("the example's tests (munged, sshd)") or need_programs("munged", "sshd", "ssh")
    if reason:
        pytest.skip(reason)
    wheels = tmp_path / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(wheels),
         str(ROOT)])
    [wheel] = wheels.glob("slurm_adopt_toolkit-*.whl")
    # A fresh venv from the base interpreter: none of this environment's packages, none of this tree.
    venv = tmp_path / "venv"
    os.chmod(tmp_path, 0o755)  # the hook runs this venv's python from sshd (as root, but through its path)
    run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)])
    python = str(venv / "bin" / "python")
    run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel), "pytest>=7"])
    project = tmp_path / "project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    env = {"PATH": f"{venv / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}
    result = run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project, env=env)
    assert "4 passed" in result.stdout, result.stdout
    # The plugin came from the wheel, not from this tree.
    where = run([python, "-c", "import fake_slurmd.plugin as p; print(p.__file__)"], cwd=project, env=env)
    assert where.stdout.startswith(str(venv)), where.stdout
