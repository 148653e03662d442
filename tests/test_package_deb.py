"""The Debian package: scripts/build-deb's .deb, installed by apt into a clean Debian 12 (a chroot of
scripts/build-chroots, no network), gives the three commands with Debian's python3, and the hook in that
system's real sshd adopts alice's login into the job it comes from and refuses bob (no jobs there)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from Crypto.Hash import KangarooTwelve

from tests.support.package_node import JOBS, PackageNode, missing_reason
from tests.support.sessions import NO_JOBS

ROOT = Path(__file__).resolve().parents[1]
VERSION = next(line.split("=", 1)[1].strip() for line in (ROOT / "setup.cfg").read_text().splitlines()
               if line.startswith("version"))
COMMANDS = ("slurm-adopt", "slurm-callerid", "fake-slurmd")


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The .deb, built once for the module by scripts/build-deb (a few seconds; as root it installs what
    the build needs)."""
    if os.geteuid() != 0 and (shutil.which("dpkg-checkbuilddeps") is None or subprocess.run(
            ["dpkg-checkbuilddeps"], cwd=ROOT, capture_output=True, check=False).returncode):
        pytest.skip("the .deb's build dependencies are missing and only root may install them (scripts/setup does)")
    built = subprocess.run(["bash", str(ROOT / "scripts/build-deb"), str(tmp_path_factory.mktemp("deb"))],
                           capture_output=True, text=True, timeout=600, check=False)
    assert built.returncode == 0, built.stderr[-4000:]
    return Path(built.stdout.split()[-1])


@pytest.fixture(scope="module")
def node(deb: Path) -> Iterator[PackageNode]:
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    with PackageNode(deb) as started:
        yield started


def test_package_declares_debian_dependencies(deb: Path) -> None:
    fields = {name: subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True,
                                   check=True).stdout for name in ("Depends", "Recommends", "Architecture")}
    for needed in ("python3 (>= 3.11)", "python3-construct", "python3-psutil", "libmunge2"):
        assert needed in fields["Depends"], fields
    assert "pycryptodome" not in fields["Depends"]  # slurmproto.k12 needs no library
    assert "libpam-python" in fields["Recommends"]
    assert fields["Architecture"].strip() == "all"
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    for path in [*(f"./usr/bin/{c}" for c in COMMANDS), "./usr/share/man/man8/slurm-adopt.8.gz",
                 "./usr/share/man/man1/slurm-callerid.1.gz", "./usr/share/man/man1/fake-slurmd.1.gz",
                 "./usr/lib/python3/dist-packages/adopt/hook.py", "./usr/share/doc/slurm-adopt-toolkit/copyright"]:
        assert f" {path}\n" in listing, path


def test_installed_with_debian_python(node: PackageNode) -> None:
    status = node.run(["dpkg-query", "-W", "-f", "${Package} ${Status}\n", "slurm-adopt-toolkit", "python3-construct",
                       "python3-psutil", "libmunge2", "libpam-python"]).stdout.splitlines()
    assert all(line.endswith(" install ok installed") for line in status) and len(status) == 5, status
    where = node.run(["/usr/bin/python3", "-I", "-c", "import adopt, fake_slurmd, slurmproto, sys; "
                      "print(sys.prefix, *(m.__file__ for m in (adopt, fake_slurmd, slurmproto)))"]).stdout.split()
    assert where[0] == "/usr" and all(f.startswith("/usr/lib/python3/dist-packages/") for f in where[1:]), where
    for command in COMMANDS:
        assert node.run(["head", "-n1", f"/usr/bin/{command}"]).stdout.strip() == "#!/usr/bin/python3"


def test_kangarootwelve_of_every_size_without_a_crypto_library(node: PackageNode) -> None:
    """Debian 12 has no K12 (hashlib, python3-pycryptodome 3.11): the package's own covers the tree mode."""
    code = ("import sys; from slurmproto.k12 import kangarootwelve; print(kangarootwelve(bytes(range(256)) * 100, "
            "b'c', 40).hex()); print([m for m in sys.modules if m.split('.')[0] in ('Crypto', 'Cryptodome')])")
    digest, imported = node.run(["/usr/bin/python3", "-I", "-c", code]).stdout.split()
    assert digest == KangarooTwelve.new(data=bytes(range(256)) * 100, custom=b"c").read(40).hex()
    assert imported == "[]"


def test_commands_run(node: PackageNode) -> None:
    assert node.run(["slurm-callerid", "--version"]).stdout.strip() == f"slurm-callerid {VERSION}"
    assert node.run(["fake-slurmd", "--version"]).stdout.strip() == f"fake-slurmd {VERSION}"
    helped = node.run(["slurm-adopt", "--help"])
    assert helped.stdout.startswith("usage: slurm-adopt") and "action_no_jobs" in helped.stdout
    checked = node.run(["slurm-adopt", "--check-config", "conf=/etc/slurm/slurm.conf"], check=False)
    assert checked.returncode == 0, (checked.stdout, checked.stderr)
    bare = node.run(["slurm-adopt"], check=False)  # at a shell: how to write the pam.d line, for this install
    assert bare.returncode == 2 and " /usr/bin/python3 -I -m adopt " in bare.stderr, bare.stderr


def _fake_log(node: PackageNode, event: str, **match: object) -> list[dict[str, object]]:
    """fake-slurmd's records (its JSON log) of `event` with the `match` fields."""
    records = [json.loads(line) for line in node.host_path("/var/log/slurmd.out").read_text().splitlines()
               if line.startswith("{")]
    return [r for r in records if r.get("event") == event and all(r.get(k) == v for k, v in match.items())]


def _adoptions(node: PackageNode) -> list[dict[str, object]]:
    return _fake_log(node, "request", request="REQUEST_ADD_EXTERN_PID", verdict="answered")


@pytest.mark.parametrize("job", sorted(JOBS))
def test_alice_adopted_into_her_job(node: PackageNode, job: int) -> None:
    """alice has two jobs on the node: the hook asks fake-slurmd (the callerid RPC) which one the login
    comes from, and the job's extern step receives sshd's process."""
    since, before = node.syslog.mark(), len(_adoptions(node))
    asked = len(_fake_log(node, "callerid", verdict=f"job {job}"))
    login = node.run(["/usr/bin/env", f"SLURM_JOB_ID={job}", *node.ssh_argv("alice", "echo logged-in")],
                     user="alice", check=False)
    assert (login.returncode, login.stdout.strip()) == (0, "logged-in"), (login.stderr, node.log_tails())
    assert len(_fake_log(node, "callerid", verdict=f"job {job}")) == asked + 1
    [adoption] = _adoptions(node)[before:]
    assert (adoption.get("job_id"), adoption.get("rc")) == (job, 0), adoption
    logged = [r.message for r in node.syslog.messages(ident="slurm-adopt", since=since)]
    assert f"Process {adoption.get('pid')} adopted into job {job}" in logged, logged


def test_bob_refused(node: PackageNode) -> None:
    before = len(_adoptions(node))
    login = node.run(node.ssh_argv("bob", "echo logged-in"), user="bob", check=False)
    assert login.returncode == 255 and NO_JOBS in login.stderr, (login.stderr, node.log_tails())
    assert "logged-in" not in login.stdout and "Traceback" not in login.stderr
    assert len(_adoptions(node)) == before
