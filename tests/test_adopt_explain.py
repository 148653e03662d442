"""`slurm-adopt --explain` and `--session-env`, and what the hook imports on its no-RPC path."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from adopt.hook import main
from fake_slurmd.controller import FakeSlurmd

REPO = Path(__file__).resolve().parents[1]


def _explain(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    status = main(["--explain", *args])
    return status, capsys.readouterr().out


def test_explain_walks_the_decision(fake_slurmd: FakeSlurmd, capsys: pytest.CaptureFixture[str],
                                    tmp_path: Path) -> None:
    fake_slurmd.add_job({"job_id": 501, "user": "root", "start_time": 1})
    fake_slurmd.add_job({"job_id": 502, "user": "nobody", "start_time": 2})
    fake_slurmd.add_job({"job_id": 503, "user": "nobody", "start_time": 3})
    conf = fake_slurmd.slurm_conf(tmp_path / "slurm.conf")
    options = [f"conf={conf}", "nodename=node1", f"munge_socket={fake_slurmd.munge_socket}"]
    with socket.create_server(("127.0.0.1", 0)) as listener, \
            fake_slurmd.connect_from_job(502, *listener.getsockname()) as conn:
        accepted, _ = listener.accept()
        with accepted:
            connection = f"{conn.local[0]} {conn.local[1]} {conn.remote[0]} {conn.remote[1]}"
            status, out = _explain(capsys, "--user", "nobody", "--connection", connection, *options)
    assert status == 0, out
    assert "uid 65534 has 2 job(s)" in out
    assert "as nobody: member of job 502" in out
    assert "would adopt process" in out and "into job 502" in out
    assert "verdict: PAM_SUCCESS (login allowed)" in out
    assert fake_slurmd.adopted(502) == []  # nothing was adopted

    status, out = _explain(capsys, "--user", "daemon", *options)
    assert status == 1 and "you have no active jobs on this node" in out

    # Several jobs but no connection to ask about: a generic failure, whatever action_unknown says.
    status, out = _explain(capsys, "--user", "nobody", "action_unknown=deny", "--connection", "", *options)
    assert status == 0 and "no usable SSH_CONNECTION" in out and "action_generic_failure=ignore" in out
    status, out = _explain(capsys, "--user", "nobody", "action_generic_failure=deny", *options)
    assert status == 1 and "PAM_PERM_DENIED" in out


def test_explain_without_slurm_conf(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, out = _explain(capsys, "--user", "nobody", f"conf={tmp_path / 'none.conf'}",
                           "action_generic_failure=deny")
    assert status == 1 and "slurm.conf" in out and "PAM_PERM_DENIED" in out


def test_session_env_outside_a_job(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--session-env"]) == 1 and capsys.readouterr().out == ""


def test_no_rpc_path_imports_no_codec() -> None:
    """One job: no RPC, so no construct, no MUNGE, no callerid client, no psutil in the process."""
    code = ("import sys; from adopt import hook, gather, decision, options; "
            "print(' '.join(m for m in sys.modules if m.split('.')[0] in ('construct', 'Crypto', 'psutil', "
            "'fake_slurmd') "
            "or m in ('slurmproto.munge', 'slurmproto.client', 'slurmproto.codec', 'argparse', 'adopt.admin')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert proc.stdout.strip() == ""


@pytest.mark.parametrize("connection", ["10.0.0.1 port 10.0.0.2 22", "nonsense 1 10.0.0.2 22",
                                        "10.0.0.1 ²2 10.0.0.2 22", "10.0.0.1 70000 10.0.0.2 22", "10.0.0.1 1 10.0.0.2"])
def test_explain_rejects_a_malformed_connection(capsys: pytest.CaptureFixture[str], connection: str) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--explain", "--user", "nobody", "--connection", connection, "action_generic_failure=deny"])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert "is not \"REMOTE_IP REMOTE_PORT LOCAL_IP LOCAL_PORT\"" in captured.err and captured.out == ""
