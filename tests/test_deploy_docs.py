"""What docs/deploy.md hands an admin: the Ansible role (YAML that parses; its pam.d lines are the README's
tested stanza; its check runs --check-config with the hook's own options), the fake-slurmd@.service unit
(systemd parses it; its ExecStart, with the instance filled in, serves the sample scenario and stops on
SIGTERM; its ExecReload's SIGHUP reloads), and the stanza as deploy.md prints it."""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fake_slurmd.pamexec import this_env
from slurmproto.constants import SLURM_EXTERN_CONT
from tests.support.deploy import README_ADMIN_GROUP, README_ENV, find_stanza, lockout_safe_stanza
from tests.support.procs import installed_or_skip

yaml = pytest.importorskip("yaml", reason="the Ansible role test needs PyYAML (pip install '.[test]')")

ROOT = Path(__file__).resolve().parents[1]
ROLE = ROOT / "examples" / "ansible" / "roles" / "slurm_adopt"
UNIT = ROOT / "packaging" / "systemd" / "fake-slurmd@.service"
SAMPLE = ROOT / "packaging" / "fake-slurmd" / "example.toml"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def readme_stanza() -> list[list[str]]:
    [found, *_] = find_stanza((ROOT / "README.md").read_text())
    return found


def test_ansible_yaml_parses() -> None:
    files = sorted((ROOT / "examples" / "ansible").rglob("*.yml"))
    assert len(files) >= 3, files
    for path in files:
        assert load(path) is not None, path
    plays = load(ROOT / "examples" / "ansible" / "site.yml")
    assert [play["hosts"] for play in plays] == ["canary", "compute:!canary"]
    assert all(play["roles"] == ["slurm_adopt"] and play["become"] is True for play in plays)
    assert plays[1]["max_fail_percentage"] == 0  # a failed batch stops the rollout


def test_ansible_pam_lines_are_the_readmes() -> None:
    defaults = load(ROLE / "defaults" / "main.yml")
    lines = [line.split() for line in defaults["slurm_adopt_pam_lines"]]
    assert lines == readme_stanza()
    assert (defaults["slurm_adopt_env"], defaults["slurm_adopt_admin_group"]) == (README_ENV, README_ADMIN_GROUP)
    hook_words = len(lockout_safe_stanza(README_ENV, README_ADMIN_GROUP)[2].split())
    assert lines[2][hook_words:] == defaults["slurm_adopt_options"].split()


def test_ansible_checks_before_it_edits_pam() -> None:
    tasks = load(ROLE / "tasks" / "main.yml")
    names = [task["name"] for task in tasks]
    check = next(i for i, task in enumerate(tasks) if "--check-config" in str(task.get("ansible.builtin.command")))
    edits = [i for i, task in enumerate(tasks) if any(key in task for key in
                                                       ("ansible.builtin.replace", "ansible.builtin.blockinfile"))]
    assert edits and check < min(edits), names
    argv = tasks[check]["ansible.builtin.command"]["argv"]
    assert "slurm_adopt_options.split()" in argv and "/bin/slurm-adopt" in argv
    block = next(task["ansible.builtin.blockinfile"] for task in tasks if "ansible.builtin.blockinfile" in task)
    assert block["backup"] is True and "slurm_adopt_pam_lines" in block["block"]


def test_deploy_doc_prints_the_readmes_stanza() -> None:
    text = (ROOT / "docs" / "deploy.md").read_text()
    assert find_stanza(text) and find_stanza(text)[0] == readme_stanza()


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def test_unit_parses_and_names_the_scenario() -> None:
    parsed = unit()
    assert set(parsed.sections()) == {"Unit", "Service", "Install"}
    argv = shlex.split(parsed["Service"]["ExecStart"])
    assert argv[0] == f"{README_ENV}/bin/fake-slurmd"
    assert argv[argv.index("--scenario") + 1] == "/etc/fake-slurmd/%i.toml"
    assert parsed["Unit"]["ConditionPathExists"] == "/etc/fake-slurmd/%i.toml"
    assert parsed["Service"]["RestartPreventExitStatus"] == "2"  # a scenario error is not retried
    assert parsed["Service"]["ExecReload"] == "/bin/kill -HUP $MAINPID"


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is missing (Debian: systemd)")
    script = installed_or_skip("fake-slurmd")
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(f"{README_ENV}/bin/fake-slurmd", script))
    result = subprocess.run([analyze, "verify", "--man=no", f"{tmp_path}/fake-slurmd@example.service"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "fake-slurmd@" not in result.stderr, result.stderr  # no warning about this unit


def test_unit_execstart_serves_the_sample(fake_slurmd_munge_socket: str, tmp_path: Path) -> None:
    """ExecStart with %i = example, /etc/fake-slurmd and /run/fake-slurmd in a temp dir, the toolkit this
    environment's: it serves the sample scenario, reloads on SIGHUP and exits 0 on SIGTERM."""
    installed_or_skip("fake-slurmd")
    etc, run = tmp_path / "etc", tmp_path / "run"
    etc.mkdir()
    shutil.copy(SAMPLE, etc / "example.toml")
    (run / "example").mkdir(parents=True, mode=0o700)  # RuntimeDirectory=, RuntimeDirectoryMode=0700
    os.chmod(run / "example", 0o700)
    line = (unit()["Service"]["ExecStart"].replace("%i", "example").replace("/etc/fake-slurmd", str(etc))
            .replace("/run/fake-slurmd", str(run)).replace(README_ENV, this_env()))
    argv = [*shlex.split(line), "--munge-socket", fake_slurmd_munge_socket]  # the unit's default: munge's own
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("listening node1 127.0.0.1 "), proc.stderr
        assert (run / "example" / f"node1_1001.{SLURM_EXTERN_CONT}").exists()  # the sample's job, its extern step
        proc.send_signal(signal.SIGHUP)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
