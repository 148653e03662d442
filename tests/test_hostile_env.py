"""The hook behind a real sshd with hostile variables in the PAM environment: nothing may change.

pam_exec hands its command the PAM environment and nothing else, so that is what an attacker would have
to reach. How a variable gets there before the account stack (tests/support/pam_inject.py): pam_env sets
variables in pam_sm_setcred only, which sshd calls after the account stack, and sshd does not run the
auth stack at all for public-key logins; a module that calls pam_putenv() in the account stage (or in
the auth stage of a keyboard-interactive login, whose PAM environment sshd carries over) does. The
control tests below show each of these routes, and that a client's SendEnv does not reach the stack.

One sshd serves the matrix. Its account stack is: the injector (reads the variables for the next login
from a file), a probe (pam_exec, writes the environment it got), the hook as the README runs it
(`<ENV>/bin/python3 -I -m adopt conf=... service=...`), then the injector again, removing the variables
before the session (where they would trouble bash, not the hook). For every variable Python 3.11
documents (PYTHONDUMPREFSFILE included, which `python3 --help-env` leaves out), and the others that
matter here, each of root, bob (no job) and alice (a job on the fake node) logs in once: the probe must
show the variable, the login must end exactly as without it, and none of the traps laid for foreign code
(sitecustomize, usercustomize, .pth files, a shadowing `adopt` package, a venv of the caller's, startup
files, fake programs on PATH, the bytecode cache, TMPDIR) may leave a marker.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fake_slurmd.controller import FakeSlurmd
from tests.support import pam_inject
from tests.support.deploy import hook_line
from tests.support.procs import installed_or_skip, need_programs, need_root
from tests.support.sessions import NO_JOBS
from tests.support.sshd import PROGRAMS as SSHD_PROGRAMS
from tests.support.sshd import Sshd

JOB = 700
USERS = ("root", "bob", "alice")
PYVER = f"python{sys.version_info.major}.{sys.version_info.minor}"
LATIN1_LOCALE = "de_DE.ISO-8859-1"

# Each documented variable (https://docs.python.org/3.11/using/cmdline.html#environment-variables, the
# debug-build ones included) with a value meant to hurt. {tree} is the directory of traps built below.
PYTHON_VARIABLES: dict[str, dict[str, str | bytes]] = {
    "PYTHONHOME": {"PYTHONHOME": "{tree}/no-such-home"},
    "PYTHONPATH": {"PYTHONPATH": "{tree}/pylib"},
    "PYTHONSAFEPATH": {"PYTHONSAFEPATH": "1"},
    "PYTHONPLATLIBDIR": {"PYTHONPLATLIBDIR": "no-such-libdir"},
    "PYTHONSTARTUP": {"PYTHONSTARTUP": "{tree}/startup.py"},
    "PYTHONOPTIMIZE": {"PYTHONOPTIMIZE": "2"},
    "PYTHONBREAKPOINT": {"PYTHONBREAKPOINT": "os.abort"},
    "PYTHONDEBUG": {"PYTHONDEBUG": "3"},
    "PYTHONINSPECT": {"PYTHONINSPECT": "1"},
    "PYTHONUNBUFFERED": {"PYTHONUNBUFFERED": "1"},
    "PYTHONVERBOSE": {"PYTHONVERBOSE": "3"},
    "PYTHONCASEOK": {"PYTHONCASEOK": "1"},
    "PYTHONDONTWRITEBYTECODE": {"PYTHONDONTWRITEBYTECODE": "1"},
    "PYTHONPYCACHEPREFIX": {"PYTHONPYCACHEPREFIX": "{tree}/pycache"},
    "PYTHONHASHSEED": {"PYTHONHASHSEED": "not-a-number"},
    "PYTHONINTMAXSTRDIGITS": {"PYTHONINTMAXSTRDIGITS": "1"},  # below 640: a fatal startup error
    "PYTHONIOENCODING-undefined": {"PYTHONIOENCODING": "undefined"},  # a codec that fails on every use
    "PYTHONIOENCODING-no-such-codec": {"PYTHONIOENCODING": "no-such-codec:strict"},
    "PYTHONNOUSERSITE": {"PYTHONNOUSERSITE": "1"},
    "PYTHONUSERBASE": {"PYTHONUSERBASE": "{tree}/userbase"},
    # Read even under -I since 3.11 (see tests/support/deploy.py): a venv of the caller's choosing.
    "PYTHONEXECUTABLE": {"PYTHONEXECUTABLE": "{tree}/evilvenv/bin/python3"},
    "PYTHONWARNINGS": {"PYTHONWARNINGS": "error"},
    "PYTHONFAULTHANDLER": {"PYTHONFAULTHANDLER": "1"},
    "PYTHONTRACEMALLOC": {"PYTHONTRACEMALLOC": "garbage"},
    "PYTHONPROFILEIMPORTTIME": {"PYTHONPROFILEIMPORTTIME": "1"},
    "PYTHONASYNCIODEBUG": {"PYTHONASYNCIODEBUG": "1"},
    "PYTHONMALLOC": {"PYTHONMALLOC": "garbage"},
    "PYTHONMALLOCSTATS": {"PYTHONMALLOCSTATS": "1"},
    "PYTHONLEGACYWINDOWSFSENCODING": {"PYTHONLEGACYWINDOWSFSENCODING": "1"},
    "PYTHONLEGACYWINDOWSSTDIO": {"PYTHONLEGACYWINDOWSSTDIO": "1"},
    "PYTHONCOERCECLOCALE": {"PYTHONCOERCECLOCALE": "warn"},
    "PYTHONCOERCECLOCALE-0-LC_ALL-C": {"PYTHONCOERCECLOCALE": "0", "LC_ALL": "C"},  # ASCII streams
    "PYTHONDEVMODE": {"PYTHONDEVMODE": "1"},
    "PYTHONUTF8": {"PYTHONUTF8": "garbage"},
    "PYTHONWARNDEFAULTENCODING": {"PYTHONWARNDEFAULTENCODING": "1"},
    "PYTHONWARNDEFAULTENCODING-PYTHONWARNINGS-error": {"PYTHONWARNDEFAULTENCODING": "1",
                                                       "PYTHONWARNINGS": "error"},
    "PYTHONNODEBUGRANGES": {"PYTHONNODEBUGRANGES": "1"},
    "PYTHONTHREADDEBUG": {"PYTHONTHREADDEBUG": "1"},
    "PYTHONDUMPREFS": {"PYTHONDUMPREFS": "1"},
    "PYTHONDUMPREFSFILE": {"PYTHONDUMPREFSFILE": "{tree}/markers/dumprefs"},  # 3.11; not in --help-env
}

OTHER_VARIABLES: dict[str, dict[str, str | bytes]] = {
    "__PYVENV_LAUNCHER__": {"__PYVENV_LAUNCHER__": "{tree}/evilvenv/bin/python3"},  # as PYTHONEXECUTABLE
    # slurm.conf comes from conf= (or the standard locations), the node name from nodename= or the host.
    "SLURM_CONF": {"SLURM_CONF": "{tree}/elsewhere.conf"},
    "SLURMD_NODENAME": {"SLURMD_NODENAME": "elsewhere"},
    "LC_ALL-C": {"LC_ALL": "C"},
    "LC_ALL-garbage": {"LC_ALL": b"no_SUCH.\xff\xfe"},
    "LC_ALL-latin-1": {"LOCPATH": "{tree}/locales", "LC_ALL": LATIN1_LOCALE},
    "LANG-C": {"LANG": "C"},
    "LANG-garbage": {"LANG": b"no_SUCH.\xff\xfe"},
    "LANG-latin-1": {"LOCPATH": "{tree}/locales", "LANG": LATIN1_LOCALE},
    "TMPDIR": {"TMPDIR": "{tree}/tmpdir"},
    "PATH": {"PATH": "{tree}/evilbin"},
    "HOME": {"HOME": "{tree}/evilhome"},  # ~/.local/lib/pythonX.Y/site-packages of the "user"
}


def _everything() -> dict[str, str | bytes]:
    """Every variable at once."""
    merged: dict[str, str | bytes] = {}
    for variables in (*PYTHON_VARIABLES.values(), *OTHER_VARIABLES.values()):
        merged.update(variables)
    return merged


CASES = {**PYTHON_VARIABLES, **OTHER_VARIABLES, "all-at-once": _everything()}


# -- the traps ------------------------------------------------------------------------------------------------


def _marker(markers: Path, name: str) -> str:
    """One line of Python (a module or a .pth line) that leaves a marker holding the uid it ran as."""
    return (f"import os; open(os.path.join({str(markers)!r}, {name!r} + '-' + str(os.getpid())), 'w')"
            ".write(str(os.getuid()))\n")


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)


def _site_traps(site: Path, markers: Path, where: str) -> None:
    for name in ("usercustomize", "sitecustomize"):
        _write(site / f"{name}.py", _marker(markers, f"{name}-{where}"))
    _write(site / "sat-trap.pth", _marker(markers, f"pth-{where}"))


def build_traps(tree: Path) -> None:
    """The directory every hostile value points into; `markers`, `pycache` and `tmpdir` must stay empty."""
    markers = tree / "markers"
    for directory, mode in (("markers", 0o755), ("pycache", 0o755), ("tmpdir", 0o1777)):
        (tree / directory).mkdir(mode=mode)
        os.chmod(tree / directory, mode)
    pylib = tree / "pylib"
    _write(pylib / "sitecustomize.py", _marker(markers, "sitecustomize-pythonpath"))
    _write(pylib / "usercustomize.py", _marker(markers, "usercustomize-pythonpath"))
    # A package that shadows the hook's own: it admits everyone (what an attacker would want).
    _write(pylib / "adopt" / "__init__.py", _marker(markers, "adopt-shadow"))
    _write(pylib / "adopt" / "__main__.py", "raise SystemExit(0)\n")
    _write(pylib / "adopt" / "hook.py", "def main():\n    return 0\n")
    _write(pylib / "slurmproto" / "__init__.py", _marker(markers, "slurmproto-shadow"))
    _write(tree / "startup.py", _marker(markers, "pythonstartup"))
    _site_traps(tree / "userbase" / "lib" / PYVER / "site-packages", markers, "pythonuserbase")
    _site_traps(tree / "evilhome" / ".local" / "lib" / PYVER / "site-packages", markers, "home")
    # A venv whose site-packages admit everyone, for the variables that choose the interpreter's venv.
    base = os.path.dirname(os.path.realpath(sys.executable))
    _write(tree / "evilvenv" / "pyvenv.cfg", f"home = {base}\ninclude-system-site-packages = false\n")
    evil_site = tree / "evilvenv" / "lib" / PYVER / "site-packages"
    _site_traps(evil_site, markers, "venv")
    _write(evil_site / "adopt" / "__init__.py", _marker(markers, "adopt-venv"))
    _write(evil_site / "adopt" / "__main__.py", "raise SystemExit(0)\n")
    for program in ("sh", "bash", "env", "python3", PYVER, "id", "ps", "getent", "munge", "unmunge", "scontrol",
                    "ip", "ss", "cat", "ls", "logger", "hostname", "uname"):
        _write(tree / "evilbin" / program, f"#!/bin/sh\necho \"$0 $*\" > {markers}/path-{program}-$$\n", 0o755)


def _compile_latin1_locale(tree: Path) -> None:
    """A latin-1 locale of our own (LOCPATH), so the case does not depend on the installed locales."""
    localedef = shutil.which("localedef")
    if localedef is None:
        return
    target = tree / "locales" / LATIN1_LOCALE
    target.parent.mkdir(mode=0o755)
    subprocess.run([localedef, "-i", "de_DE", "-f", "ISO-8859-1", str(target)], capture_output=True, timeout=60)


def _write_elsewhere_conf(fake: FakeSlurmd, tree: Path) -> None:
    """A slurm.conf that, if the hook followed SLURM_CONF, would show nobody any job (an empty spool)."""
    conf = fake.slurm_conf(tree / "fake.conf").read_text()
    (tree / "empty-spool").mkdir(mode=0o755)
    text = conf.replace(f"SlurmdSpoolDir={fake.spool_dir}", f"SlurmdSpoolDir={tree / 'empty-spool'}")
    assert text != conf
    _write(tree / "elsewhere.conf", text)


def expand(variables: Mapping[str, str | bytes], tree: Path) -> dict[str, str | bytes]:
    return {name: value.replace("{tree}", str(tree)) if isinstance(value, str) else value
            for name, value in variables.items()}


# -- the stack ------------------------------------------------------------------------------------------------


PROBE = ("#!/bin/sh\n# pam_exec probe: the environment a program run from this account stack gets.\n"
         'exec /usr/bin/env -0 > "$1"\n')


@dataclass
class Login:
    user: str
    result: subprocess.CompletedProcess[str]
    probe: dict[bytes, bytes]
    """The environment the probe (a pam_exec program just before the hook) was given."""
    adopted: list[int]
    """Processes put into alice's job during this login."""

    @property
    def banners(self) -> list[str]:
        """What the client printed, without ssh's host key chatter, ports left out (each sshd has its own)."""
        return [re.sub(r"port \d+", "port N", line) for line in self.result.stderr.splitlines()
                if not line.startswith("Warning: Permanently added")]


class Stack:
    """An sshd whose account stack is injector, probe, `hook`, then the injector again removing what it
    put in (the variables would change the user's session: bash complains about a locale, PATH finds no
    `id`); logins with chosen PAM variables."""

    def __init__(self, tree: Path, fake: FakeSlurmd, module: Path, hook: str, name: str, **sshd: Any) -> None:
        self.fake = fake
        self.inject = tree / f"{name}.inject"
        self.remove = tree / f"{name}.remove"
        self.probe_out = tree / f"{name}.probe"
        probe = tree / "probe.sh"
        if not probe.exists():
            _write(probe, PROBE, 0o755)
        lines = [f"required {module} {self.inject}", f"optional pam_exec.so {probe} {self.probe_out}", hook,
                 f"required {module} {self.remove}"]
        self.sshd = Sshd(lines, users=["alice", "bob"], **sshd)

    def __enter__(self) -> Stack:
        self.sshd.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sshd.stop()

    def login(self, user: str, variables: Mapping[str, str | bytes] | None = None, command: str = "id -un",
              keep: bool = False, **ssh: Any) -> Login:
        """`keep`: leave the variables in the PAM environment for the session."""
        pam_inject.write_env(self.inject, variables or {})
        pam_inject.write_env(self.remove, {} if keep else dict.fromkeys(variables or {}))
        self.probe_out.unlink(missing_ok=True)
        before = len(self.fake.adopted(JOB))
        result = self.sshd.ssh(user, command, **ssh)
        return Login(user, result, read_probe(self.probe_out), self.fake.adopted(JOB)[before:])


def read_probe(path: Path) -> dict[bytes, bytes]:
    raw = path.read_bytes() if path.exists() else b""
    return dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)


def as_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Traps, confs, the probe's output: all used by root only (pam_exec's children)."""
    return tmp_path_factory.mktemp("hostile-env")


@pytest.fixture(scope="module")
def module(tree: Path) -> Path:
    reason = (need_root("running sshd with its own /etc/pam.d service") or need_programs(*SSHD_PROGRAMS)
              or pam_inject.need_compiler())
    if reason:
        pytest.skip(reason)
    return pam_inject.build(tree)


@pytest.fixture(scope="module")
def fake(module: Path, fake_slurmd_munge_socket: str) -> Iterator[FakeSlurmd]:
    """One simulated node1 for the module, with alice's job 700 on it."""
    with FakeSlurmd(munge_socket=fake_slurmd_munge_socket) as node:
        node.add_job({"job_id": JOB, "user": "alice"})
        yield node


@pytest.fixture(scope="module")
def env_dir() -> str:
    """<ENV>: the tox env this suite runs in, the project installed in it."""
    installed_or_skip("slurm-adopt")
    return os.path.dirname(os.path.dirname(sys.executable))


@pytest.fixture(scope="module")
def traps(tree: Path, fake: FakeSlurmd) -> Path:
    build_traps(tree)
    _compile_latin1_locale(tree)
    _write_elsewhere_conf(fake, tree)
    return tree


@pytest.fixture(scope="module")
def stack(traps: Path, fake: FakeSlurmd, module: Path, env_dir: str) -> Iterator[Stack]:
    """The README's hook line (no nodename=: the node is found by host name, as by default)."""
    conf = fake.slurm_conf(traps / "hook.conf", ["NodeName=elsewhere NodeAddr=127.0.0.1"])
    hook = hook_line(env_dir, [f"conf={conf}", "service={service}"])
    with Stack(traps, fake, module, hook, "isolated", extra_config=["AcceptEnv SAT_SENT_BY_CLIENT"]) as started:
        yield started


@pytest.fixture(scope="module")
def baseline(stack: Stack) -> dict[str, Login]:
    """Each user's login with nothing injected: what every hostile login must look like."""
    return {user: stack.login(user) for user in USERS}


@pytest.fixture(autouse=True)
def empty_traps(request: pytest.FixtureRequest) -> Iterator[None]:
    """Markers of one test must not fail the next: empty the trap directories after each test."""
    yield
    if "traps" in request.fixturenames:
        tree: Path = request.getfixturevalue("traps")
        for directory in (tree / "markers", tree / "pycache", tree / "tmpdir"):
            for entry in directory.iterdir():
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def traces(tree: Path) -> list[str]:
    """What foreign code left behind: markers, bytecode in the cache prefix, files in TMPDIR."""
    return sorted(str(path.relative_to(tree)) for directory in ("markers", "pycache", "tmpdir")
                  for path in (tree / directory).rglob("*"))


def assert_verdict(login: Login) -> None:
    """root passes, bob (no job) gets the module's message, alice is adopted into her job."""
    result = login.result
    assert "Traceback" not in result.stderr and "pam_exec" not in result.stderr, result.stderr
    if login.user == "bob":
        assert (result.returncode, result.stdout) == (255, ""), result.stderr
        assert NO_JOBS in result.stderr
        assert login.adopted == []
    else:
        assert (result.returncode, result.stdout) == (0, f"{login.user}\n"), result.stderr
        assert len(login.adopted) == (1 if login.user == "alice" else 0), login.adopted


# -- how variables reach the account stack (controls) --------------------------------------------------------


def test_injected_variables_reach_pam_exec_and_the_session(stack: Stack) -> None:
    login = stack.login("root", {"SAT_CONTROL": "injected", "SAT_RAW": b"raw-\xff\xfe-bytes"},
                        command="printenv SAT_CONTROL", keep=True)
    assert login.probe[b"SAT_CONTROL"] == b"injected"
    assert login.probe[b"SAT_RAW"] == b"raw-\xff\xfe-bytes"  # not re-encoded on the way
    assert (login.result.returncode, login.result.stdout) == (0, "injected\n"), login.result.stderr


def test_client_sendenv_reaches_the_session_not_the_account_stack(stack: Stack) -> None:
    """AcceptEnv'd client variables arrive with the session request, after the account stack."""
    login = stack.login("alice", command="printenv SAT_SENT_BY_CLIENT", options=["-o", "SendEnv=SAT_SENT_BY_CLIENT"],
                        env={"SAT_SENT_BY_CLIENT": "from-client"})
    assert (login.result.returncode, login.result.stdout) == (0, "from-client\n"), login.result.stderr
    assert login.probe and b"SAT_SENT_BY_CLIENT" not in login.probe


def test_auth_stage_routes_under_keyboard_interactive(traps: Path, module: Path) -> None:
    """pam_env in the auth stack sets nothing before the account stack (it works in pam_sm_setcred,
    which sshd calls later); a module that calls pam_putenv() in pam_sm_authenticate does reach it."""
    _write(traps / "pam_env.conf", "SAT_FROM_PAM_ENV DEFAULT=pam_env\n")
    pam_inject.write_env(traps / "auth.inject", {"SAT_FROM_AUTH": "putenv"})
    auth = [f"required pam_env.so conffile={traps / 'pam_env.conf'} readenv=0 user_readenv=0",
            f"required {module} {traps / 'auth.inject'}", "required pam_permit.so"]
    probe = traps / "kbd.probe"
    account = [f"optional pam_exec.so {traps / 'probe.sh'} {probe}", "required pam_permit.so"]
    with Sshd(account, auth_lines=auth, keyboard_interactive=True, users=["alice"]) as sshd:
        result = sshd.ssh("alice", "env")
        assert result.returncode == 0, (result.stderr, sshd.log_text())
        sshd.wait_for_log("Accepted keyboard-interactive/pam for alice")
    seen = read_probe(probe)
    assert seen.get(b"SAT_FROM_AUTH") == b"putenv"
    assert b"SAT_FROM_PAM_ENV" not in seen
    session = result.stdout.splitlines()
    assert "SAT_FROM_PAM_ENV=pam_env" in session and "SAT_FROM_AUTH=putenv" in session


# -- the matrix --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("user", USERS)
def test_baseline(baseline: dict[str, Login], traps: Path, user: str) -> None:
    assert_verdict(baseline[user])
    assert traces(traps) == []


@pytest.mark.parametrize("user", USERS)
@pytest.mark.parametrize("case", CASES)
def test_hostile_variable_changes_nothing(stack: Stack, baseline: dict[str, Login], traps: Path, case: str,
                                          user: str) -> None:
    variables = expand(CASES[case], traps)
    if "LOCPATH" in variables and not (traps / "locales" / LATIN1_LOCALE).is_dir():
        pytest.skip("could not compile a latin-1 locale (localedef, /usr/share/i18n)")
    login = stack.login(user, variables)
    assert {name: login.probe.get(name.encode()) for name in variables} == \
        {name: as_bytes(value) for name, value in variables.items()}  # the hook was given them
    assert_verdict(login)
    assert login.banners == baseline[user].banners
    assert traces(traps) == []


@pytest.fixture(scope="module")
def noconf_stack(traps: Path, fake: FakeSlurmd, module: Path, env_dir: str) -> Iterator[Stack]:
    """The hook without conf=: slurm.conf from the standard locations (none on a test machine)."""
    from slurmproto.conf import DEFAULT_SEARCH_PATHS

    if any(os.path.exists(path) for path in DEFAULT_SEARCH_PATHS):
        pytest.skip(f"this machine has a slurm.conf in {DEFAULT_SEARCH_PATHS}: the hook would read it")
    with Stack(traps, fake, module, hook_line(env_dir, ["service={service}"]), "noconf") as started:
        yield started


@pytest.mark.parametrize("user", ["bob", "alice"])
def test_slurm_conf_is_not_followed_without_conf_option(noconf_stack: Stack, traps: Path, user: str) -> None:
    """$SLURM_CONF naming the fake node's conf (where bob would be refused, alice adopted) changes nothing."""
    plain = noconf_stack.login(user)
    hostile = noconf_stack.login(user, {"SLURM_CONF": str(traps / "fake.conf")})
    assert hostile.probe[b"SLURM_CONF"] == str(traps / "fake.conf").encode()
    assert (hostile.result.returncode, hostile.banners) == (plain.result.returncode, plain.banners)
    assert NO_JOBS not in hostile.result.stderr and hostile.adopted == plain.adopted == []


@pytest.mark.weakness
def test_console_script_runs_foreign_code_from_pythonpath(traps: Path, fake: FakeSlurmd, module: Path,
                                                          env_dir: str) -> None:
    """Why the README runs `python3 -I -m adopt`: the console script <ENV>/bin/slurm-adopt (pip writes its
    shebang without -I) imports from $PYTHONPATH, as root: here a shadowing `adopt` package admits bob."""
    conf = fake.slurm_conf(traps / "script.conf")
    hook = f"required pam_exec.so stdout quiet {env_dir}/bin/slurm-adopt conf={conf} service={{service}}"
    with Stack(traps, fake, module, hook, "script") as stack:
        refused = stack.login("bob")
        attacked = stack.login("bob", {"PYTHONPATH": str(traps / "pylib")})
    assert refused.result.returncode == 255 and NO_JOBS in refused.result.stderr
    assert attacked.result.returncode == 0, attacked.result.stderr  # let in without a job
    ran = {path.name.rsplit("-", 1)[0]: path.read_text() for path in (traps / "markers").iterdir()}
    assert ran.get("adopt-shadow") == "0" and ran.get("sitecustomize-pythonpath") == "0", ran  # as uid 0
