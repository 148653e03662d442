"""The files a chroot cluster (tests/support/chroot_cluster.py) writes into its overlay: slurm.conf,
cgroup.conf, keys, sshd's config and PAM service, and the test users' account entries."""

from __future__ import annotations

import base64
import json
import os
import pwd
import secrets
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from tests.support.slurm_cluster import JOB_CONF

AUTHS = ("munge", "slurm")
"""AuthType and CredType auth/X + cred/X: munge needs munged; slurm signs with slurm.key (no munged)."""
NODE = "node1"
SLURMD_PORT = 6818
SLURMCTLD_PORT = 6817
SSHD_PORT = 2222
SPOOL = "/var/lib/slurm/slurmd"
SSHD_CONFIG = "/etc/ssh/sat_sshd_config"
SSH_HOST_KEY = "/etc/ssh/sat_host_ed25519_key"
AUTHORIZED_KEYS = "/etc/ssh/sat_authorized_keys"
ADOPT_OPTIONS = f"single_job_skip_rpc=0 log_level=debug5 nodename={NODE}"
"""pam_slurm_adopt always asks slurmd (the RPC is what the tests watch), logs everything; our NodeName is
not the host's name."""


def slurm_conf(cluster_name: str, auth: str, extra: Sequence[str] = ()) -> str:
    return "\n".join([
        f"ClusterName={cluster_name}",
        "SlurmctldHost=localhost(127.0.0.1)",
        f"SlurmctldPort={SLURMCTLD_PORT}",
        f"SlurmdPort={SLURMD_PORT}",
        "SlurmUser=slurm",
        "SlurmdUser=root",
        f"AuthType=auth/{auth}",
        f"CredType=cred/{auth}",
        "StateSaveLocation=/var/lib/slurm/slurmctld",
        f"SlurmdSpoolDir={SPOOL}",
        "SlurmctldPidFile=/run/slurm/slurmctld.pid",
        "SlurmdPidFile=/run/slurm/slurmd.pid",
        "SlurmctldLogFile=/var/log/slurm/slurmctld.log",
        "SlurmdLogFile=/var/log/slurm/slurmd.log",
        "SlurmctldDebug=debug",
        "SlurmdDebug=debug",
        *JOB_CONF,
        *extra,
        f"NodeName={NODE} NodeAddr=127.0.0.1 NodeHostname={NODE} CPUs=2 State=UNKNOWN",
        f"PartitionName=debug Nodes={NODE} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:8",
    ]) + "\n"


# Containment only: cpuset (ConstrainCores) and freezer; memory and devices, where the machine's own
# limits live, are never touched.
CGROUP_CONF = """CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
ConstrainCores=yes
ConstrainRAMSpace=no
ConstrainSwapSpace=no
ConstrainDevices=no
"""


def sshd_config(port: int = SSHD_PORT, service: str = "sshd") -> str:
    """The config of the cluster's sshd (port SSHD_PORT, PAM service sshd), or of another one beside it."""
    return "\n".join([
        f"Port {port}",
        "ListenAddress 0.0.0.0",  # the namespace's: lo, and a link to another node a test adds
        f"HostKey {SSH_HOST_KEY}",
        f"PidFile /run/sat-{service}.pid",
        "UsePAM yes",
        # sshd's own default when "sshd": OpenSSH before 10 (Debian 12's) knows no PAMServiceName.
        *([f"PAMServiceName {service}"] if service != "sshd" else []),
        "AuthenticationMethods publickey",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin no",
        f"AuthorizedKeysFile {AUTHORIZED_KEYS}/%u",
        "StrictModes no",
        "UseDNS no",
        "PrintMotd no",
        "X11Forwarding no",
        "AllowTcpForwarding no",
        "LogLevel VERBOSE",
    ]) + "\n"


def pam_service(account_lines: list[str]) -> str:
    """A PAM service for our sshd: the account stack given ("required MODULE ARGS" each). sshd checks the
    key itself (AuthenticationMethods publickey) and never runs the auth stack."""
    return "".join(["auth     required pam_deny.so\n", *(f"account  {line}\n" for line in account_lines),
                    "session  required pam_permit.so\n", "password required pam_deny.so\n"])


PAM_SSHD = pam_service([f"required pam_slurm_adopt.so {ADOPT_OPTIONS}"])


STATE_PATHS = ("var/lib/slurm/slurmctld", SPOOL.lstrip("/"), "var/log/slurm", "var/log/munge", "var/lib/munge",
               "run/munge", "run/slurm", "run/slurmctld", "run/sshd", "tmp", "etc/slurm/slurm.key",
               "etc/slurm/slurm.jwks", "etc/munge/munge.key", SSH_HOST_KEY.lstrip("/"),
               SSH_HOST_KEY.lstrip("/") + ".pub")
"""What a cluster's daemons write: removed from the overlay (whiteouts) before a start, so nothing that an
older harness left in the chroot itself (it wrote there directly) leaks into a fresh cluster."""


def clear_state(root: Path) -> None:
    for sub in STATE_PATHS:
        path = root / sub
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    (root / "tmp").mkdir(mode=0o1777)
    os.chmod(root / "tmp", 0o1777)


def ids_of(root: Path, name: str) -> tuple[int, int]:
    """uid and gid of the chroot's own `name` (its system users' ids are not the host's)."""
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2]), int(fields[3])
    raise KeyError(f"no user {name} in {root}/etc/passwd")


def _replace_line(path: Path, name: str, line: str) -> None:
    kept = [x for x in path.read_text().splitlines() if not x.startswith(f"{name}:")]
    path.write_text("\n".join([*kept, line]) + "\n")  # in place: mode and owner stay


def add_user(root: Path, entry: pwd.struct_passwd) -> None:
    """The host's user in the chroot with the host's uid and gid (host-side clients run as it too)."""
    name, uid, gid = entry.pw_name, entry.pw_uid, entry.pw_gid
    _replace_line(root / "etc/passwd", name, f"{name}:x:{uid}:{gid}::/home/{name}:/bin/bash")
    _replace_line(root / "etc/group", name, f"{name}:x:{gid}:")
    # "*": no password, not locked (sshd with UsePAM leaves account checks to PAM).
    _replace_line(root / "etc/shadow", name, f"{name}:*:20000:0:99999:7:::")
    home = root / "home" / name
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, uid, gid)
    os.chmod(home, 0o755)


def write_secret(path: Path, data: bytes, owner: tuple[int, int], mode: int = 0o600) -> None:
    """A key file created with `mode` from the start (never readable by others, not even for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, data)
        os.fchown(fd, *owner)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def munge_key(root: Path, key: bytes | None = None) -> None:
    """A fresh munge key unless `key` is given: each cluster's credentials are its own."""
    owner = ids_of(root, "munge")
    write_secret(root / "etc/munge/munge.key", key or secrets.token_bytes(1024), owner)
    os.chmod(root / "etc/munge", 0o700)
    for sub in ("run/munge", "var/lib/munge", "var/log/munge"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        os.chown(root / sub, *owner)
        os.chmod(root / sub, 0o755 if sub == "run/munge" else 0o700)


def slurm_key(root: Path, key: bytes | None = None) -> Path:
    """A fresh 32-byte slurm.key (unless `key` is given) beside slurm.conf, SlurmUser's, mode 0600 (auth/slurm
    refuses "other" bits)."""
    path = root / "etc/slurm/slurm.key"
    write_secret(path, key or secrets.token_bytes(32), ids_of(root, "slurm"))
    return path


JWKS_KIDS = ("k1", "k2", "old")
"""slurm_jwks()'s keys: k1 the default (daemons sign with it), k2 another, old expired an hour ago."""


def slurm_jwks(root: Path) -> Path:
    """A fresh slurm.jwks beside slurm.conf (24.05+: it wins over slurm.key), SlurmUser's, mode 0600."""
    def entry(kid: str) -> dict[str, object]:
        key = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")
        extra = {"k1": {"use": "default"}, "old": {"exp": int(time.time()) - 3600}}.get(kid, {})
        return {"kid": kid, "kty": "oct", "alg": "HS256", "k": key, **extra}
    path = root / "etc/slurm/slurm.jwks"
    write_secret(path, json.dumps({"keys": [entry(kid) for kid in JWKS_KIDS]}).encode(), ids_of(root, "slurm"))
    return path


def keygen(path: Path, comment: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL, capture_output=True)


def sshd_files(root: Path, users: list[pwd.struct_passwd]) -> None:
    """sshd's config, host key and PAM service; a client key per user in its home, authorized for it."""
    (root / SSHD_CONFIG.lstrip("/")).write_text(sshd_config())
    keygen(root / SSH_HOST_KEY.lstrip("/"), "chroot cluster host key")
    (root / "etc/pam.d/sshd").write_text(PAM_SSHD)
    (root / "run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    keys = root / AUTHORIZED_KEYS.lstrip("/")
    keys.mkdir(mode=0o755, exist_ok=True)
    for entry in users:
        ssh_dir = root / "home" / entry.pw_name / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        key = ssh_dir / "id_ed25519"
        keygen(key, f"{entry.pw_name}@chroot cluster")
        for path in (ssh_dir, key, key.with_suffix(".pub")):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        (keys / entry.pw_name).write_text(key.with_suffix(".pub").read_text())
