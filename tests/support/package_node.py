"""A clean Debian 12 node with the project's .deb installed by apt, in a chroot + namespaces of its own.

The chroot is scripts/build-chroots' deb12 (bookworm minbase, munge, OpenSSH and man-db; the .deb's
dependencies, libpam-python and Debian's python3 are in its apt cache, not installed). Each node is a
ChrootCluster overlay of it (tests/support/chroot_cluster.py: tmpfs upper layer, a network namespace holding
only `lo`, hostname node1, cgroups of its own), in which:

* apt installs the .deb and libpam-python, and what they need, from the cache (no network is needed, none is reachable);
* munged runs with a fresh key;
* the package's fake-slurmd simulates node1 on 127.0.0.1:6818 with JOBS (environ = true: a process is in a
  job when its environment has SLURM_JOB_ID=N) and writes slurm.conf for it;
* the chroot's sshd (127.0.0.1:2222) runs the package's hook in its "sshd" account stack, behind the
  README's lock-out-safe lines, with Debian's /usr/bin/python3 as the interpreter; or (module=True) the
  package's in-process module through libpam-python, on its own `account required` line, followed by
  PROBE (a pam_python module of the test's that records what the shared interpreter has loaded), and
  root may log in with a key.
"""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path

from tests.support import chroot_files as files
from tests.support.chroot_cluster import CHROOTS, CONF, MUNGE_SOCKET, ChrootCluster
from tests.support.chroot_files import NODE, SLURMD_PORT, SPOOL, SSHD_PORT
from tests.support.deploy import DEBIAN_COMMON_ACCOUNT, README_ADMIN_GROUP, lockout_safe_stanza, pam_python_line
from tests.support.namespaces import OwnCgroups

CHROOT = "deb12"
"""scripts/build-chroots' name for the clean Debian 12."""
PYTHON_PREFIX = "/usr"
"""Where the .deb's interpreter is: the pam.d line runs /usr/bin/python3."""
JOBS = {501: ("alice", 1000), 502: ("alice", 2000)}
"""job id -> (user, start time): two jobs, so the hook must ask fake-slurmd which one a login comes from."""
SCENARIO = "/etc/fake-slurmd/node1.toml"
HOOK_OPTIONS = ["action_adopt_failure=deny", "log_level=debug"]
PROBE = "/etc/security/sat_probe.py"
PROBE_LOG = "/run/sat-probe.log"
PROBE_SOURCE = f"""import json, os, sys


def pam_sm_acct_mgmt(pamh, flags, argv):
    # libpam-python runs every pam_python.so line in one interpreter: what the module imported is here.
    files = {{name: getattr(m, "__file__", None) for name, m in list(sys.modules.items())}}
    with open({PROBE_LOG!r}, "a") as log:
        log.write(json.dumps({{"user": pamh.user, "pid": os.getpid(), "path": sys.path, "prefix": sys.prefix,
                              "files": files}}) + "\\n")
    return pamh.PAM_SUCCESS
"""
"""Written into the module node's /etc/security; its JSON lines go to PROBE_LOG."""


def missing_reason() -> str | None:
    """Why the node cannot start here (None: it can)."""
    if os.geteuid() != 0:
        return "the Debian 12 package node needs root (CI runs as root)"
    if not (CHROOTS / CHROOT / ".complete").exists():
        return f"no Debian 12 chroot at {CHROOTS / CHROOT} (run scripts/build-chroots deb12)"
    return OwnCgroups.missing_reason()


def scenario() -> str:
    jobs = "".join(f'\n[[jobs]]\njob_id = {job}\nuser = "{user}"\nstart_time = {start}\nenviron = true\n'
                   for job, (user, start) in JOBS.items())
    return (f'spool_dir = "{SPOOL}"\nmunge_socket = "{MUNGE_SOCKET}"\n\n'
            f'[[nodes]]\nname = "{NODE}"\naddress = "127.0.0.1"\nport = {SLURMD_PORT}\n{jobs}')


def pam_sshd(module_file: str | None = None) -> str:
    """Debian 12's account modules, then the README's stanza with the package's interpreter; or, given the
    module's file, its own line (root too goes through it) and the probe."""
    account = [*DEBIAN_COMMON_ACCOUNT, *lockout_safe_stanza(PYTHON_PREFIX, README_ADMIN_GROUP, HOOK_OPTIONS)]
    if module_file:
        account = [*DEBIAN_COMMON_ACCOUNT, f"account required {pam_python_line(module_file, HOOK_OPTIONS)}",
                   f"account optional {pam_python_line(PROBE)}"]
    return "\n".join(["auth     required pam_deny.so", *account, "session  required pam_permit.so",
                      "password required pam_deny.so", ""])


class PackageNode(ChrootCluster):
    """`with PackageNode(deb) as node: node.run([...], user="alice")`: the installed package at work."""

    LOGS = ("/var/log/slurmd.out", "/var/log/munged.out", "/var/log/sshd.log")

    def __init__(self, deb: Path, module: bool = False, start_timeout: float = 120.0) -> None:
        super().__init__("Debian 12", users=("alice", "bob"), start_timeout=start_timeout, chroot=CHROOT)
        self.deb = deb
        self.module = module
        self.module_file = ""
        """The module's file as the installed `slurm-adopt --print-pam-module` names it (module=True)."""
        self.install_log = ""

    def __repr__(self) -> str:
        return f"<PackageNode {self.deb.name} {self.name}>"

    def _start(self) -> None:
        self._enter()
        self._prepare()
        self.syslog.start()
        # In our network namespace apt reaches no mirror: everything but the .deb comes from the chroot's
        # cache. (Not --no-download: apt 2.6 then fails on the local .deb, "Pathname to install is not
        # absolute".)
        installed = self.run(["/usr/bin/env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q",
                              f"/tmp/{self.deb.name}", "libpam-python"], timeout=300)
        self.install_log = installed.stdout + installed.stderr
        if "Need to get 0 B" not in installed.stdout:
            raise RuntimeError(f"apt needed more than the chroot's cache:\n{self.install_log}")
        if self.module:
            self.module_file = self.run(["slurm-adopt", "--print-pam-module"]).stdout.strip()
            self.host_path("/etc/pam.d/sshd").write_text(pam_sshd(self.module_file))
            self.host_path(PROBE).write_text(PROBE_SOURCE)
        self._start_munged()
        # Named slurmd: ChrootCluster.stop() stops it with the others.
        self._spawn("slurmd", ["/usr/bin/fake-slurmd", "--scenario", SCENARIO, "--slurm-conf", CONF,
                               "--log-format", "json", "--log-level", "debug"])
        self._wait(lambda: f"listening {NODE} " in self._read("/var/log/slurmd.out"), "fake-slurmd listening")
        self._spawn("sshd", ["/usr/sbin/sshd", "-D", "-f", files.SSHD_CONFIG, "-E", "/var/log/sshd.log"])
        self._wait(lambda: f"port {SSHD_PORT}" in self._read("/var/log/sshd.log"), "sshd listening")

    def _prepare(self) -> None:
        root = self.root
        entries = self._users_and_hosts()
        files.munge_key(root)
        # root's key where ssh_argv looks (/home/root/.ssh), used where root may log in (module=True)
        self.host_path("/home/root").mkdir(mode=0o700, exist_ok=True)
        files.sshd_files(root, [*entries, pwd.getpwuid(0)])
        if self.module:
            config = self.host_path(files.SSHD_CONFIG)
            config.write_text(config.read_text().replace("PermitRootLogin no", "PermitRootLogin prohibit-password"))
        self.host_path("/etc/pam.d/sshd").write_text(pam_sshd())
        for sub in ("etc/slurm", "etc/fake-slurmd", SPOOL.lstrip("/")):
            self.host_path(sub).mkdir(mode=0o755, parents=True, exist_ok=True)
        self.host_path(SCENARIO).write_text(scenario())
        shutil.copy(self.deb, self.host_path(f"/tmp/{self.deb.name}"))

    def log_tails(self, lines: int = 30) -> str:
        apt = f"--- apt:\n{self.install_log[-3000:]}\n" if self.install_log else ""
        return apt + super().log_tails(lines)
