"""The Debian package: scripts/build-deb's .deb, installed by apt with libpam-python into a clean Debian 12
(a chroot of scripts/build-chroots, no network), gives the three commands with Debian's python3 and man
pages that render; the hook in that system's real sshd adopts alice's login into the job it comes from and
refuses bob (no jobs there), and so does the in-process module under Debian's pam_python.so, which adopts
sshd's own process, puts SLURM_JOB_ID into the session, tells bob why through the PAM conversation, lets
root in and imports nothing but Debian's python3 and the package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from Crypto.Hash import KangarooTwelve

from tests.support.package_node import HOOK_OPTIONS, JOBS, PROBE, PROBE_LOG, PackageNode, missing_reason
from tests.support.sessions import NO_JOBS

ROOT = Path(__file__).resolve().parents[1]
VERSION = next(line.split("=", 1)[1].strip() for line in (ROOT / "setup.cfg").read_text().splitlines()
               if line.startswith("version"))
COMMANDS = ("slurm-adopt", "slurm-callerid", "fake-slurmd")
MAN_PAGES = {"/usr/share/man/man8/slurm-adopt.8.gz": "--print-pam-module",
             "/usr/share/man/man1/slurm-callerid.1.gz": "--version",
             "/usr/share/man/man1/fake-slurmd.1.gz": "--scenario"}
"""Each installed man page, and an option its rendering must show."""
DIST_PACKAGES = "/usr/lib/python3/dist-packages"
MODULE_FILE = f"{DIST_PACKAGES}/adopt/pam_module.py"
STDLIB = "/usr/lib/python3.11"


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


def _started(deb: Path, module: bool) -> Iterator[PackageNode]:
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    with PackageNode(deb, module=module) as started:
        yield started


@pytest.fixture(scope="module")
def node(deb: Path) -> Iterator[PackageNode]:
    """The hook (pam_exec) in the node's sshd."""
    yield from _started(deb, module=False)


@pytest.fixture(scope="module")
def module_node(deb: Path) -> Iterator[PackageNode]:
    """The in-process module (pam_python) in the node's sshd."""
    yield from _started(deb, module=True)


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


def test_man_pages_render(node: PackageNode) -> None:
    """man-db (a standard Debian system has it) renders each page with no groff warning."""
    if not node.host_path("/usr/bin/man").exists():
        pytest.skip("the Debian 12 chroot has no man-db (rebuild it: scripts/build-chroots deb12)")
    for page, option in MAN_PAGES.items():
        shown = node.run(["/usr/bin/env", "MANWIDTH=100", "man", "--warnings", "-E", "ascii", "-P", "cat",
                          "-l", page], check=False)
        name = Path(page).name.split(".")[0]
        assert (shown.returncode, shown.stderr) == (0, ""), (page, shown.stderr)
        assert shown.stdout.startswith(name.upper()) and "\nNAME\n" in shown.stdout, shown.stdout[:300]
        assert f"{name} -" in shown.stdout and option in shown.stdout, shown.stdout


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


def test_agent_units_shipped_for_debian_python_not_enabled(node: PackageNode) -> None:
    """slurm-adopt-agent and its socket and service units: for /usr/bin/python3, and enabled by nobody (the
    hook decides by itself until an admin enables the socket)."""
    service = node.host_path("/lib/systemd/system/slurm-adopt-agent.service").read_text()
    assert "ExecStart=/usr/bin/python3 -I -m adopt.agent\n" in service and "/opt/" not in service
    assert "ListenStream=/run/slurm-adopt/agent.socket" in node.host_path(
        "/lib/systemd/system/slurm-adopt-agent.socket").read_text()
    assert not list(node.host_path("/etc/systemd/system").glob("*.wants/slurm-adopt-agent*"))
    helped = node.run(["slurm-adopt-agent", "--help"])
    assert helped.stdout.startswith("usage: slurm-adopt-agent"), helped.stdout


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
    login = node.run(["/usr/bin/env", f"SLURM_JOB_ID={job}",
                      *node.ssh_argv("alice", "echo logged-in ${SLURM_JOB_ID:-none}")], user="alice", check=False)
    # ssh sends no environment, and a pam_exec hook cannot set the session's (the module does)
    assert (login.returncode, login.stdout.strip()) == (0, "logged-in none"), (login.stderr, node.log_tails())
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


# --- the in-process module under Debian's pam_python.so ---------------------------------------------------

SESSION = "echo SLURM_JOB_ID=${SLURM_JOB_ID:-none}; m=$(ps -o ppid= -p $PPID); echo MONITOR=$m; ps -o args= -p $m"
"""In the session: its SLURM_JOB_ID, and sshd's privileged process for the connection (the shell's
parent's parent, which ran the account stack) with its title."""


def _session(node: PackageNode, user: str, job: int | None = None) -> tuple[subprocess.CompletedProcess[str],
                                                                              dict[str, str]]:
    """Log `user` in (from job `job`'s processes, if given); the session's KEY=value lines and the title."""
    env = ["/usr/bin/env", f"SLURM_JOB_ID={job}"] if job else []
    login = node.run([*env, *node.ssh_argv(user, SESSION)], user=None if user == "root" else user, check=False)
    lines = login.stdout.splitlines()
    seen = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("sshd"))
    seen["title"] = next((line for line in lines if line.startswith("sshd")), "")
    return login, seen


def _probes(node: PackageNode, user: str) -> list[dict[str, object]]:
    """The probe's records of `user`'s logins (the probe runs after the module, in the same interpreter)."""
    path = node.host_path(PROBE_LOG)
    lines = path.read_text().splitlines() if path.exists() else []
    return [record for record in map(json.loads, lines) if record["user"] == user]


def test_print_pam_module_names_the_installed_file(module_node: PackageNode) -> None:
    """The file the pam.d line names is the package's, in Debian's dist-packages, and nobody but root
    can change it or a directory above it."""
    assert module_node.module_file == MODULE_FILE
    owner = module_node.run(["dpkg", "-S", MODULE_FILE]).stdout.strip()
    assert owner == f"slurm-adopt-toolkit: {MODULE_FILE}", owner
    paths = [MODULE_FILE, *(str(p) for p in Path(MODULE_FILE).parents)]
    stats = module_node.run(["stat", "-c", "%u %a %n", *paths]).stdout.splitlines()
    assert [line.split(" ", 2)[2] for line in stats] == paths, stats
    for line in stats:
        uid, mode, _ = line.split(" ", 2)
        assert uid == "0" and not int(mode, 8) & 0o022, line
    pam_d = module_node.host_path("/etc/pam.d/sshd").read_text()
    assert f"account required pam_python.so {MODULE_FILE} {' '.join(HOOK_OPTIONS)}\n" in pam_d, pam_d


@pytest.mark.parametrize("job", sorted(JOBS))
def test_module_adopts_sshd_itself_into_the_job(module_node: PackageNode, job: int) -> None:
    """alice logs in from one of her two jobs: the module asks fake-slurmd which, the job's extern step
    receives the pid of sshd's privileged process for the connection (getpid(), as the C module adopts),
    and the session has SLURM_JOB_ID from the PAM environment (ssh sends no environment here)."""
    node = module_node
    since, before = node.syslog.mark(), len(_adoptions(node))
    asked = len(_fake_log(node, "callerid", verdict=f"job {job}"))
    login, seen = _session(node, "alice", job)
    assert login.returncode == 0 and seen.get("SLURM_JOB_ID") == str(job), (login.stderr, node.log_tails())
    assert len(_fake_log(node, "callerid", verdict=f"job {job}")) == asked + 1
    [adoption] = _adoptions(node)[before:]
    assert (adoption.get("job_id"), adoption.get("rc")) == (job, 0), adoption
    assert adoption.get("pid") == int(seen["MONITOR"]) == _probes(node, "alice")[-1]["pid"], (adoption, seen)
    assert seen["title"] == "sshd: alice [priv]", seen
    [logged] = [r for r in node.syslog.messages(ident="slurm-adopt", since=since) if "adopted into job" in r.message]
    pid = adoption.get("pid")
    assert (logged.pid, logged.message) == (pid, f"Process {pid} adopted into job {job}"), logged


def test_module_refuses_bob_through_the_conversation(module_node: PackageNode) -> None:
    node = module_node
    since, before = node.syslog.mark(), len(_adoptions(node))
    login, seen = _session(node, "bob")
    assert login.returncode == 255 and NO_JOBS in login.stderr, (login.stderr, node.log_tails())
    assert "SLURM_JOB_ID" not in seen and "Traceback" not in login.stderr
    assert len(_adoptions(node)) == before
    node.syslog.wait_for(f"send_user_msg: {NO_JOBS}", ident="slurm-adopt", since=since)


def test_module_admits_root(module_node: PackageNode) -> None:
    """root goes through the module's own line (no pam_succeed_if in front): PAM_IGNORE, so the rest of
    the stack lets it in, in no job."""
    node = module_node
    before, probed = len(_adoptions(node)), len(_probes(node, "root"))
    login, seen = _session(node, "root")
    assert login.returncode == 0 and seen.get("SLURM_JOB_ID") == "none", (login.stderr, node.log_tails())
    assert len(_adoptions(node)) == before
    assert len(_probes(node, "root")) == probed + 1  # the account stack ran past the module


def test_module_imports_only_debian_python_and_the_package(module_node: PackageNode) -> None:
    """After a login that needs everything (the RPC, munge, the stepd), every module loaded in sshd's
    interpreter is Debian's python3's own or in dist-packages, the package's first on sys.path, and nothing
    outside Debian's python3 (/opt, a venv, a home) is on it; /usr/local's dist-packages, on Debian's own
    path, stays there but gives nothing."""
    node = module_node
    login, seen = _session(node, "alice", min(JOBS))
    assert login.returncode == 0 and seen.get("SLURM_JOB_ID") == str(min(JOBS)), login.stderr
    record = _probes(node, "alice")[-1]
    path, files = record["path"], record["files"]
    assert isinstance(path, list) and isinstance(files, dict) and record["prefix"] == "/usr", record
    assert path[0] == DIST_PACKAGES and all(p == DIST_PACKAGES or p.startswith(STDLIB) or p == "/usr/lib/python311.zip"
                                            or p.startswith("/usr/local/lib/python3") for p in path), path
    loaded = {name: file for name, file in files.items() if file and file != PROBE}
    for name in ("adopt.hook", "adopt.inprocess", "slurmproto.stepd", "slurmproto.munge", "construct"):
        assert str(loaded.get(name, "")).startswith(f"{DIST_PACKAGES}/"), (name, loaded.get(name))
    outside = {n: f for n, f in loaded.items() if not f.startswith((f"{DIST_PACKAGES}/", f"{STDLIB}/"))}
    assert outside == {}, outside
