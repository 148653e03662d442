"""`slurm-adopt` at an admin's shell: --help, --version, --check-config checking the node for real, and
refusing to act without PAM_TYPE."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from adopt.admin import main
from adopt.options import OPTIONS, parse_options
from fake_slurmd.controller import FakeSlurmd
from slurmproto import package_version
from tests.support.procs import installed_or_skip
from tests.support.stuck_munged import StuckMunged


def check(capsys: pytest.CaptureFixture[str], *options: str) -> tuple[int, str, str]:
    status = main(["--check-config", *options])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def conf(fake_slurmd: FakeSlurmd, tmp_path: Path) -> Path:
    return fake_slurmd.slurm_conf(tmp_path / "slurm.conf")


def test_check_config_of_a_good_node(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = check(capsys, f"conf={conf}", "nodename=node1", "action_unknown=deny")
    assert status == 0 and err == "", (out, err)
    assert "action_unknown=deny" in out and "nodename=node1" in out
    assert f"ok: slurm.conf {conf} read" in out and "ok: NodeName node1" in out
    assert "ok: SlurmdSpoolDir" in out and "signs and verifies credentials" in out


def test_check_config_reports_bad_options(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = check(capsys, f"conf={conf}", "nodename=node1", "bogus=1", "ignore_root=maybe")
    assert status == 1
    assert "bogus=1" in err and "ignore_root=maybe" in err


def test_check_config_without_slurm_conf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = check(capsys, f"conf={tmp_path / 'none.conf'}")
    assert status == 1 and "problem: slurm.conf" in err and "none.conf" in err


def test_check_config_unknown_node(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = check(capsys, f"conf={conf}", "nodename=node9")
    assert status == 1 and "nodename=node9: no such NodeName" in err


def test_check_config_missing_spool(fake_slurmd: FakeSlurmd, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    conf = fake_slurmd.slurm_conf(tmp_path / "slurm.conf", [f"SlurmdSpoolDir={tmp_path / 'gone'}"])
    status, _, err = check(capsys, f"conf={conf}", "nodename=node1")
    assert status == 1 and "gone is not a directory" in err


@pytest.mark.parametrize("which", ["stuck", "absent"])
def test_check_config_munged_unusable(conf: Path, stuck_munged: StuckMunged, tmp_path: Path, which: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    socket_path = str(stuck_munged.path) if which == "stuck" else str(tmp_path / "no.socket")
    began = time.monotonic()
    status, _, err = check(capsys, f"conf={conf}", "nodename=node1", f"munge_socket={socket_path}", "deadline=1")
    assert time.monotonic() - began < 1.5
    assert status == 1 and f"problem: munged at {socket_path}" in err, err


def test_check_config_auth_slurm_is_reported(fake_slurmd: FakeSlurmd, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    conf = fake_slurmd.slurm_conf(tmp_path / "slurm.conf", ["AuthType=auth/slurm"])
    status, _, err = check(capsys, f"conf={conf}", "nodename=node1")
    # No key beside slurm.conf: the sack socket would be asked, and none answers here.
    assert status == 1 and "problem: AuthType=auth/slurm" in err and "sack" in err, err
    key = tmp_path / "slurm.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    status, out, err = check(capsys, f"conf={conf}", "nodename=node1")
    assert status == 0, err
    assert f"ok: AuthType=auth/slurm: auth/slurm, signing with {key} signs and verifies" in out
    key.chmod(0o644)
    status, _, err = check(capsys, f"conf={conf}", "nodename=node1")
    assert status == 1 and "insecure" in err


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0 and "--check-config" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out.strip() == f"slurm-adopt {package_version()}"


def test_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    lines = capsys.readouterr().out.splitlines()
    for option in OPTIONS:
        head = f"  {option.name}{' [ours]' if option.ours else ''}: "
        assert any(line.startswith(head) for line in lines), (head, lines)


def test_check_config_lists_the_options_in_pam_syntax(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [f"conf={tmp_path / 'none.conf'}", "action_unknown=Any", "log_level=2", "deadline=1.50"]
    status, out, _ = check(capsys, *args)
    assert status == 1
    assert out.splitlines()[:len(OPTIONS)] == [
        "action_no_jobs=deny", "action_unknown=newest", "action_adopt_failure=allow",
        "action_generic_failure=ignore", "ignore_root=1", "single_job_skip_rpc=1", "log_level=error",
        "nodename=", "service=sshd", "disable_x11=0", "join_container=true", "deadline=1.5",
        f"conf={tmp_path / 'none.conf'}", "munge_socket=", "protocol_version=auto",
        "agent_socket=/run/slurm-adopt/agent.socket", "ignore_as=success"]
    assert parse_options(out.splitlines()[:len(OPTIONS)])[1] == []


def test_no_mode_and_no_pam_type_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["action_no_jobs=deny"]) == 2
    err = capsys.readouterr().err
    assert "not run by pam_exec" in err and "--explain" in err


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["--explain"], ["--bogus"], []])
def test_installed_command_exit_codes(argv: list[str]) -> None:
    """The console script at a shell (no PAM_TYPE): help and version succeed, usage errors exit 2."""
    command = installed_or_skip("slurm-adopt")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAM_")}
    proc = subprocess.run([command, *argv], capture_output=True, text=True, env=env, timeout=30)
    assert proc.returncode == (0 if argv[:1] in (["--help"], ["--version"]) else 2), proc
    assert "Traceback" not in proc.stderr
    assert (proc.stdout if proc.returncode == 0 else proc.stderr).strip()
