"""What each quick path may import: the quick hook with the agent answering, the agent client function,
`python3 -I -m adopt` with the agent answering, and a single slurm-callerid query. Module lists, not
times (the times are in docs/benchmarks.md): each module a login imports costs it start-up time, and
importing construct alone costs more than the C module's whole check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.slurm_cluster import ConnectedJob, SlurmCluster
from tests.test_agent_wire import GOOD, fake_agent, sends

ROOT = Path(__file__).resolve().parents[1]
THIN = ROOT / "adopt" / "thin.py"
THIN_BUDGET = {"__future__", "adopt", "adopt.__main__", "adopt.hookio", "adopt.wire", "_socket", "syslog"}
"""Not even os (`python3 -I -S` has not imported it yet): posix, which has been, does."""
CLIENT_BUDGET = {"__future__", "adopt", "adopt.wire", "_socket"}
NEVER_ON_A_QUICK_PATH = ("construct", "ctypes", "slurmproto", "adopt.options", "adopt.hook", "adopt.gather",
                         "adopt.decision", "enum", "typing", "re", "socket", "contextlib", "psutil", "Crypto")
NEVER_IN_THE_CLI = ("adopt", "fake_slurmd", "psutil", "Crypto", "asyncio", "json", "email", "http", "urllib",
                    "xml", "logging", "subprocess", "multiprocessing", "concurrent", "tests", "importlib.metadata",
                    "shutil", "bz2", "lzma", "zipfile", "tempfile", "random", "uuid")
"""What a single auth/munge query has no use for (shutil and its compressors: argparse's width)."""
SLURMPROTO_IN_A_QUERY = {
    "slurmproto", "slurmproto.addresses", "slurmproto.auth", "slurmproto.client", "slurmproto.codec",
    "slurmproto.conf", "slurmproto.confsyntax", "slurmproto.constants", "slurmproto.deadline", "slurmproto.errors",
    "slurmproto.exchange", "slurmproto.header", "slurmproto.hostlist", "slurmproto.k12", "slurmproto.localslurm",
    "slurmproto.messages", "slurmproto.messages.base", "slurmproto.messages.callerid", "slurmproto.messages.job_id",
    "slurmproto.messages.return_code", "slurmproto.munge", "slurmproto.primitives", "slurmproto.settings",
    "slurmproto.signers", "slurmproto.versions"}
"""Every module of ours a single auth/munge query imports (slurmproto.cli itself aside): no more."""

RECORDER = """
import sys
out, what = sys.argv[1], sys.argv[2]
before = set(sys.modules)
try:
    if what == "script":
        sys.argv = sys.argv[3:]
        exec(compile(open(sys.argv[0]).read(), sys.argv[0], "exec"), {"__name__": "__main__", "__file__": sys.argv[0]})
    elif what == "module":
        import runpy
        before = set(sys.modules)
        sys.argv = [sys.argv[3], *sys.argv[4:]]
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    else:
        sys.path.insert(0, sys.argv[3])
        exec(what)
    status = 0
except SystemExit as exc:
    status = exc.code
with open(out, "w") as f:
    f.write(repr(status) + "\\n" + "\\n".join(sorted(set(sys.modules) - before)))
"""
"""Runs a script, a module or code, then writes its exit status and the modules it imported to `out`."""


def imported(tmp_path: Path, flags: list[str], what: str, *args: str,
             env: dict[str, str] | None = None) -> tuple[str, set[str]]:
    out = tmp_path / "modules"
    proc = subprocess.run([sys.executable, *flags, "-c", RECORDER, str(out), what, *args], capture_output=True,
                          text=True, timeout=60, env=env if env is not None else {})
    assert out.exists(), proc.stderr
    status, *modules = out.read_text().splitlines()
    return status, set(modules)


def _forbidden(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in names or m in names)


def pam_env(**extra: str) -> dict[str, str]:
    return {"PAM_TYPE": "account", "PAM_USER": "alice", "PAM_SERVICE": "sshd", **extra}


root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the hook believes root's agent only: needs root "
                                                         "(CI runs as root)")


@root_only
def test_the_quick_hook_with_the_agent_answering(tmp_path: Path) -> None:
    socket = tmp_path / "agent.socket"
    with fake_agent(socket, sends(GOOD)):
        status, modules = imported(tmp_path, ["-I", "-S"], "script", str(THIN), f"agent_socket={socket}",
                                   env=pam_env())
    assert status == "1"  # the agent's verdict
    assert modules <= THIN_BUDGET, sorted(modules - THIN_BUDGET)


def test_the_quick_hook_without_an_agent_decides_itself(tmp_path: Path) -> None:
    """No budget there: the fallback is the whole hook (here: no such user, a refusal)."""
    status, modules = imported(tmp_path, ["-I", "-S"], "script", str(THIN), f"agent_socket={tmp_path / 'none'}",
                               env=pam_env(PAM_USER="no-such-user-here"))
    assert status == "1"
    assert {"adopt.hook", "adopt.decision"} <= modules


def test_the_agent_client_function(tmp_path: Path) -> None:
    code = ("from adopt.wire import Request, ask; "
            f"assert ask({str(tmp_path / 'none')!r}, Request(1, 2, None, None, None, ()), 0.5) is None")
    status, modules = imported(tmp_path, ["-I", "-S"], code, str(ROOT))
    assert status == "0"
    assert modules <= CLIENT_BUDGET, sorted(modules - CLIENT_BUDGET)


@root_only
def test_python_m_adopt_with_the_agent_answering(tmp_path: Path) -> None:
    """The README's first form: site and runpy run anyway, but nothing of the decision's."""
    socket = tmp_path / "agent.socket"
    with fake_agent(socket, sends(GOOD)):
        status, modules = imported(tmp_path, ["-I"], "module", "adopt", f"agent_socket={socket}",
                                   env={**pam_env(), "PYTHONPATH": str(ROOT)})
    if not {"adopt.hookio"} <= modules:
        pytest.skip("adopt is not importable under -I here (run the tests through tox)")
    assert status == "1"
    assert not _forbidden(modules, NEVER_ON_A_QUICK_PATH), _forbidden(modules, NEVER_ON_A_QUICK_PATH)


def test_a_single_callerid_query(tmp_path: Path, slurm_cluster: SlurmCluster, connected_job: ConnectedJob) -> None:
    args = [connected_job.client[0], str(connected_job.client[1]), connected_job.server[0],
            str(connected_job.server[1])]
    status, modules = imported(tmp_path, [], "module", "slurmproto.cli", *args,
                               env={**slurm_cluster.env, "PYTHONPATH": str(ROOT)})
    assert status == "0"
    assert "slurmproto.client" in modules
    ours = {m for m in modules if m.split(".")[0] == "slurmproto"} - {"slurmproto.cli"}
    assert ours <= SLURMPROTO_IN_A_QUERY, sorted(ours - SLURMPROTO_IN_A_QUERY)
    assert not _forbidden(modules, NEVER_IN_THE_CLI), _forbidden(modules, NEVER_IN_THE_CLI)
