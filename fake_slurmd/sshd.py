"""A real sshd on loopback with a PAM service of its own, for logging in through real PAM account stacks.

    with Sshd(["required pam_exec.so stdout /srv/hook"], users=["alice"]) as sshd:
        result = sshd.ssh("alice", "id -un")

Every instance gets a fresh PAM service name (`sat-<8 hex>`): sshd names its PAM service after the basename
of its argv[0], so running /usr/sbin/sshd through a symlink of that name in our temp dir makes it use
/etc/pam.d/<service>, a file we write and remove. Real services (/etc/pam.d/sshd) are never read or touched.
sshd gets its own config, host key, authorized keys and pid file in a temp dir, listens on loopback only,
and accepts public keys only (or, with `netns`, on addresses of a network namespace the caller made, e.g. a
simulated node's); with `keyboard_interactive=True` a login needs the key and then a
keyboard-interactive round, which is where sshd runs the PAM auth stack (`auth_lines`). Needs root (the
pam.d file, logins as other users). No pytest here: the plugin's `sshd_factory` and `fake_sshd` fixtures, the
project's tests and its demo script all use this.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import ipaddress
import os
import pwd
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fake_slurmd.lifecycle import Daemons
from fake_slurmd.network import in_netns, nsenter_argv
from fake_slurmd.processes import stop_process

if TYPE_CHECKING:
    from fake_slurmd.controller import FakeSlurmd

SSHD = "/usr/sbin/sshd"
SSH = "/usr/bin/ssh"
SSH_KEYGEN = "/usr/bin/ssh-keygen"
RUNUSER = "/usr/sbin/runuser"
PROGRAMS = (SSHD, SSH, SSH_KEYGEN, RUNUSER)
PAM_DIR = Path("/etc/pam.d")
# Compiled into sshd (_PATH_PRIVSEP_CHROOT_DIR); the pre-auth child chroots there. Debian's init scripts
# create it; without an init system nobody does, so we create it and remove it again when we did.
PRIVSEP_DIR = Path("/run/sshd")
SERVICE_PREFIX = "sat-"
_CLIENT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_LOG_LEVELS = ("VERBOSE", "DEBUG", "DEBUG1", "DEBUG2", "DEBUG3")


def _check_arguments(account_lines: Sequence[str], auth_lines: Sequence[str], loopback: Sequence[str],
                     log_level: str) -> None:
    """Sshd's arguments that would make a broken sshd, or one reachable from beyond this host."""
    if isinstance(account_lines, str):
        raise TypeError("account_lines is a sequence of lines, not one string")
    if not account_lines:
        raise ValueError("an empty account stack would let PAM fail every login (PAM_PERM_DENIED)")
    if isinstance(auth_lines, str) or not auth_lines:
        raise ValueError("auth_lines is a non-empty sequence of lines")
    for host in loopback:
        _check_loopback(host)
    if log_level.upper() not in _LOG_LEVELS:
        # Readiness is seen in "Server listening on ..." lines, logged at VERBOSE.
        raise ValueError(f"log_level must be one of {', '.join(_LOG_LEVELS)}")


def _check_loopback(host: str) -> None:
    """Refuse anything but a loopback address: tests never talk to the network."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"{host!r} is not a loopback address (tests talk to 127.0.0.1 and ::1 only)")


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bindable(host: str) -> bool:
    """Whether this machine has that address at all (IPv6 may be off)."""
    try:
        with socket.socket(_family(host), socket.SOCK_STREAM) as s:
            s.bind((host, 0))
    except OSError as e:
        if e.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            return False
        raise
    return True


def ensure_user(name: str) -> pwd.struct_passwd:
    """An ordinary local user for tests, created (as root) when missing."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
    return pwd.getpwnam(name)


def _free_port(hosts: Sequence[str], tries: int = 50) -> int:
    """A TCP port free on all `hosts` a moment ago (the kernel picks it on the first one)."""
    for _ in range(tries):
        with contextlib.ExitStack() as stack:
            first = stack.enter_context(socket.socket(_family(hosts[0]), socket.SOCK_STREAM))
            first.bind((hosts[0], 0))
            port = int(first.getsockname()[1])
            try:
                for host in hosts[1:]:
                    other = stack.enter_context(socket.socket(_family(host), socket.SOCK_STREAM))
                    other.bind((host, port))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    continue
                raise
            return port
    raise RuntimeError(f"no TCP port free on all of {', '.join(hosts)}")


def _new_service() -> str:
    """An unused PAM service name; at most 15 characters, so it is also the whole of /proc/PID/comm."""
    while True:
        name = SERVICE_PREFIX + secrets.token_hex(4)
        if not (PAM_DIR / name).exists():
            return name


# -- /run/sshd and cleanup at exit, shared by all instances of this process ---------------------------------

_lock = threading.RLock()
_live: set[Sshd] = set()
_services: set[str] = set()  # of every sshd this process started: their sessions may outlive the listener
_privsep_created = False


def _ensure_privsep_dir() -> None:
    global _privsep_created
    with _lock:
        try:
            PRIVSEP_DIR.mkdir(mode=0o755)
        except FileExistsError:
            return
        os.chmod(PRIVSEP_DIR, 0o755)  # whatever the umask
        _privsep_created = True


def _sshd_processes() -> list[tuple[int, str]]:
    """(pid, comm) of every running sshd on the machine, whatever it is called (read-only look at /proc)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry.name}/exe") != SSHD:
                continue
            comm = Path(f"/proc/{entry.name}/comm").read_text().strip()
        except OSError:
            continue
        found.append((int(entry.name), comm))
    return found


def _release_privsep_dir(wait: float = 3.0) -> None:
    """Remove /run/sshd if this process created it and no sshd needs it any more.

    Sessions of our own sshds may outlive their listener for a moment (the client got its answer before the
    per-connection sshd finished); wait for those. Any other sshd, another test run's or a real one, keeps
    the directory: rmdir under it would break its next login (its own run removes it later, if it made it).
    """
    global _privsep_created
    with _lock:
        if not _privsep_created or _live:
            return
        deadline = time.monotonic() + wait
        while True:
            running = _sshd_processes()
            if not running:
                break
            if any(comm not in _services for _, comm in running) or time.monotonic() > deadline:
                return
            time.sleep(0.05)
        with contextlib.suppress(FileNotFoundError):
            PRIVSEP_DIR.rmdir()
        _privsep_created = False


@atexit.register
def _stop_all() -> None:
    """Last resort when a caller forgot stop(): no pam.d file or sshd may outlive the process."""
    for sshd in list(_live):
        with contextlib.suppress(Exception):
            sshd.stop()
    with contextlib.suppress(Exception):
        _release_privsep_dir()


class Sshd(Daemons):
    """Context manager: a started sshd on `listen` (loopback) whose PAM account stack is `account_lines`.

    `account_lines` are the control and module of each account line ("required pam_permit.so"); `{service}`
    in a line becomes the service name. `env` is merged into sshd's environment, which PAM modules loaded
    by sshd see (pam_slurm_adopt reads SLURM_CONF there; pam_exec passes only the PAM environment on to its
    command). `users` get a client key each (root always has one). Addresses in `listen` that this machine
    lacks (IPv6 off) are dropped from `self.listen`. `prefix` is an argv prefix that execs sshd elsewhere
    (a cluster's namespaces: the pid stays sshd's; ssh() cannot reach it there). With `netns` (a /run/netns
    name or path), sshd runs in that network namespace and `listen` are addresses there (a simulated or a
    real node's), not loopback only; `uts` (a pinned UTS namespace) gives it the host name PAM modules see.
    `args` go to sshd after its own (-D -f CONFIG -E LOG): without them sshd re-executes itself for each
    connection (OpenSSH's default), so every login's PAM stack runs in a freshly started program; `-r`
    makes it fork the listener instead.

    The auth stack is `auth_lines` (default: pam_permit). sshd runs it only with `keyboard_interactive`,
    and then only after the public key was accepted (AuthenticationMethods publickey,keyboard-interactive):
    the key stays what lets anyone in, and the auth stack is a place to run modules before the account
    stack (sshd hands the PAM environment they set on to it).
    """

    def __init__(
        self,
        account_lines: Sequence[str],
        *,
        auth_lines: Sequence[str] = ("required pam_permit.so",),
        keyboard_interactive: bool = False,
        env: Mapping[str, str] | None = None,
        users: Sequence[str] = (),
        base: Path | None = None,
        listen: Sequence[str] = ("127.0.0.1", "::1"),
        log_level: str = "VERBOSE",
        extra_config: Sequence[str] = (),
        start_timeout: float = 10.0,
        prefix: Sequence[str] = (),
        netns: str | None = None,
        uts: Path | None = None,
        args: Sequence[str] = (),
    ) -> None:
        _check_arguments(account_lines, auth_lines, listen if netns is None else (), log_level)
        self.netns = netns
        self.uts = uts
        self.service = _new_service()
        self.account_lines = [self._stack_line("account", line) for line in account_lines]
        self.auth_lines = [self._stack_line("auth", line) for line in auth_lines]
        self.keyboard_interactive = keyboard_interactive
        self.env = dict(env or {})
        self.users = list(dict.fromkeys(["root", *users]))
        self.listen = list(listen)
        self.log_level = log_level.upper()
        self.extra_config = list(extra_config)
        self.start_timeout = start_timeout
        self.prefix = list(prefix)
        self.args = list(args)
        self._check_slurm_conf()
        self._own_base = base is None
        self.base = Path(base) if base is not None else Path(tempfile.mkdtemp(prefix=f"sshd-{self.service}-"))
        self.config = self.base / "sshd_config"
        self.host_key = self.base / "ssh_host_ed25519_key"
        self.pid_file = self.base / "sshd.pid"
        self.log = self.base / "sshd.log"
        self.program = self.base / "bin" / self.service  # symlink to sshd: its name is the PAM service
        self.authorized_keys = self.base / "authorized_keys"
        self.pam_file = PAM_DIR / self.service
        self.port = 0
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pam_written = False
        with _lock:
            _live.add(self)

    def _stack_line(self, stack: str, line: str) -> str:
        if "\n" in line or "\r" in line:
            raise ValueError(f"one PAM line per entry: {line!r}")
        words = line.split(None, 1)
        if words and words[0] == stack:  # tolerate a full line
            line = words[1] if len(words) > 1 else ""
        return line.replace("{service}", self.service).strip()

    def _check_slurm_conf(self) -> None:
        """pam_slurm_adopt without SLURM_CONF would read /etc/slurm or ask DNS (configless): never."""
        if not any("pam_slurm_adopt" in line for line in self.account_lines):
            return
        conf = self.env.get("SLURM_CONF", "")
        if not conf or not os.path.isfile(conf):
            raise ValueError("pam_slurm_adopt in the account stack needs env={'SLURM_CONF': <existing file>}, "
                             f"got {conf!r}")

    def __repr__(self) -> str:
        return f"<Sshd {self.service} pid={self.pid} port={self.port} listen={self.listen}>"

    # -- lifecycle ---------------------------------------------------------------------------------------

    def _start(self) -> None:
        """Write keys, config and /etc/pam.d/<service>; start sshd and wait until it listens."""
        self._prepare()
        self._write_pam()
        self._launch()

    def _prepare(self) -> None:
        self.listen = in_netns(self.netns, lambda: [host for host in self.listen if _bindable(host)])
        if not self.listen:
            raise RuntimeError("none of the listen addresses exists on this machine")
        # World-traversable: sshd reads authorized keys as the user logging in, clients run as their user.
        self.base.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o755)
        (self.base / "bin").mkdir(mode=0o755, exist_ok=True)
        self.authorized_keys.mkdir(mode=0o755, exist_ok=True)
        (self.base / "users").mkdir(mode=0o755, exist_ok=True)
        self.program.symlink_to(SSHD)
        self._keygen(self.host_key, f"{self.service} host key")
        for user in self.users:
            self._make_client_key(user)
        _ensure_privsep_dir()

    @staticmethod
    def _keygen(path: Path, comment: str) -> None:
        subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                       check=True, stdin=subprocess.DEVNULL, capture_output=True)

    def _make_client_key(self, user: str) -> None:
        entry = pwd.getpwnam(user) if user == "root" else ensure_user(user)
        home = self.base / "users" / user
        home.mkdir(mode=0o700)
        key = home / "id_ed25519"
        self._keygen(key, f"{user}@{self.service}")
        # ssh runs as the user: it must own its key, and refuses a key others may read.
        for path in (home, key, key.with_suffix(".pub")):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        os.chmod(home, 0o700)
        os.chmod(key, 0o600)
        keys = self.authorized_keys / user
        keys.write_text(key.with_suffix(".pub").read_text())
        os.chmod(keys, 0o644)

    def _write_pam(self) -> None:
        text = "\n".join([
            f"# PAM service of a test sshd (fake_slurmd/sshd.py, test process {os.getpid()}, dir {self.base}).",
            "# Written when that sshd starts and removed when it stops.",
            "#",
            "# auth: sshd checks the public key itself and runs this stack only for keyboard-interactive,",
            "# which that sshd asks for (if at all) after the key (AuthenticationMethods). pam_permit here",
            "# is acceptable only for that reason. Never use it where passwords are taken.",
            *(f"auth     {line}" for line in self.auth_lines),
            *(f"account  {line}" for line in self.account_lines),
            "session  required pam_permit.so",
            "password required pam_deny.so",
            "",
        ])
        # "x": never overwrite a file we did not write (a name clash would be a bug, not a reason to clobber).
        with open(self.pam_file, "x") as f:
            self._pam_written = True
            f.write(text)
        os.chmod(self.pam_file, 0o644)

    def _write_config(self) -> None:
        def q(path: Path) -> str:
            return '"' + str(path) + '"'

        lines = [
            f"# sshd of fake_slurmd/sshd.py; PAM service {self.service} (/etc/pam.d/{self.service}).",
            f"Port {self.port}",
            *(f"ListenAddress {host}" for host in self.listen),
            f"HostKey {q(self.host_key)}",
            f"PidFile {q(self.pid_file)}",
            "UsePAM yes",
            "# The public key first: the auth stack must never be the thing that lets anyone in.",
            f"AuthenticationMethods {self._methods()}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            f"KbdInteractiveAuthentication {'yes' if self.keyboard_interactive else 'no'}",
            "HostbasedAuthentication no",
            "GSSAPIAuthentication no",
            f"AuthorizedKeysFile {q(self.authorized_keys / '%u')}",
            "# The key files belong to root's temp dir, not to the users logging in.",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            "UseDNS no",
            f"LogLevel {self.log_level}",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "AllowAgentForwarding no",
            "AllowTcpForwarding no",
            "PermitTunnel no",
            "# Parallel test logins must not be dropped as a flood.",
            "MaxStartups 64:30:128",
            "LoginGraceTime 30",
            *self.extra_config,
            "",
        ]
        self.config.write_text("\n".join(lines))

    def _methods(self) -> str:
        return "publickey,keyboard-interactive" if self.keyboard_interactive else "publickey"

    def _launch(self) -> None:
        environ = {**os.environ, **self.env}
        for attempt in range(5):
            self.port = in_netns(self.netns, lambda: _free_port(self.listen))
            self._write_config()
            offset = self.log.stat().st_size if self.log.exists() else 0
            # Errors before sshd opens -E (bad config, missing /run/sshd) go to stderr: into the log as well.
            with open(self.log, "ab") as log:
                # nsenter execs sshd: the pid is sshd's.
                enter = [] if self.netns is None else nsenter_argv([], net=self.netns, uts=self.uts)
                self._proc = subprocess.Popen(
                    [*enter, *self.prefix, str(self.program), "-D", "-f", str(self.config), "-E", str(self.log),
                     *self.args],
                    env=environ, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                )
            self.pid = self._proc.pid
            with _lock:
                _services.add(self.service)
            outcome = self._wait_listening(offset)
            if outcome == "ready":
                return
            stop_process(self._proc)
            self._proc = None
            self.pid = None
            if outcome == "retry" and attempt < 4:
                _ensure_privsep_dir()  # another process may have removed it just now
                continue
            break
        raise RuntimeError(f"sshd {self.service} did not start:\n{self._log_since(offset)}")

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def _wait_listening(self, offset: int) -> str:
        """'ready' when sshd listens on every address; 'retry' for a lost port race or /run/sshd; else 'failed'."""
        assert self._proc is not None
        wanted = [f"Server listening on {host} port {self.port}." for host in self.listen]
        deadline = time.monotonic() + self.start_timeout
        while True:
            text = self._log_since(offset)
            # sshd carries on when only some ListenAddress fail: a half-bound sshd is a failed start.
            if "Address already in use" in text or "Missing privilege separation directory" in text:
                return "retry"
            if all(line in text for line in wanted):
                return "ready"
            if self._proc.poll() is not None or time.monotonic() > deadline:
                return "failed"
            time.sleep(0.005)

    def stop(self) -> None:
        """Stop sshd (by its pid), remove /etc/pam.d/<service> and our temp dir. Safe to call twice."""
        try:
            if self._proc is not None:
                stop_process(self._proc)
                self._proc = None
        finally:
            if self._pam_written:
                with contextlib.suppress(FileNotFoundError):
                    self.pam_file.unlink()
                self._pam_written = False
            if self._own_base:
                shutil.rmtree(self.base, ignore_errors=True)
            with _lock:
                _live.discard(self)
            _release_privsep_dir()

    # -- clients -----------------------------------------------------------------------------------------

    def client_key(self, user: str) -> Path:
        """The private key `user` logs in with (owned by that user, mode 0600)."""
        if user not in self.users:
            raise ValueError(f"no client key for {user!r}: pass users=[...] to Sshd (has {self.users})")
        return self.base / "users" / user / "id_ed25519"

    def ssh_argv(self, user: str, command: str | Sequence[str], *, host: str = "127.0.0.1",
                 log_level: str = "INFO", options: Sequence[str] = ()) -> list[str]:
        """The ssh command line logging `user` in to run `command`; to be run AS `user` (its key is theirs).

        A `command` sequence is quoted for the remote shell. At LogLevel INFO ssh prints the banners that
        carry PAM account messages ("Access denied by ..."); at ERROR it hides them. For a
        keyboard-interactive sshd, BatchMode is off (it would skip that method); the auth stack asks
        nothing, so the client is never prompted.
        """
        if host not in self.listen:  # sshd's own addresses are loopback or in a namespace of the tests
            _check_loopback(host)
        remote = command if isinstance(command, str) else shlex.join(command)
        batch = "no" if self.keyboard_interactive else "yes"
        return [
            SSH, "-F", "/dev/null",  # no user or system config: same behaviour everywhere, no ~/.ssh created
            "-i", str(self.client_key(user)), "-p", str(self.port),
            "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
            "-o", f"BatchMode={batch}", "-o", f"PreferredAuthentications={self._methods()}",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10",
            "-o", "ControlPath=none", "-o", f"LogLevel={log_level}", "-T",
            *options,
            f"{user}@{host}", remote,
        ]

    def ssh(self, user: str, command: str | Sequence[str], *, host: str = "127.0.0.1", timeout: float = 30,
            log_level: str = "INFO", input: str | None = None, options: Sequence[str] = (),
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Log `user` in and run `command`, as that user (runuser, unless root); the client's result.

        `options` go to ssh (e.g. ["-o", "SendEnv=NAME"]); `env` is added to the client's environment.
        On timeout the client is terminated (runuser passes SIGTERM on to ssh) and TimeoutExpired raised.
        """
        argv = self.ssh_argv(user, command, host=host, log_level=log_level, options=options)
        if user != "root":
            argv = [RUNUSER, "-u", user, "--", *argv]
        environ = {"PATH": _CLIENT_PATH, "LANG": "C.UTF-8", "HOME": pwd.getpwnam(user).pw_dir, **(env or {})}
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environ,
                                # What a hostile login prints must not crash the reader.
                                encoding="utf-8", errors="backslashreplace")
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process(proc, grace=5)
            out, err = proc.communicate()
            raise subprocess.TimeoutExpired(argv, timeout, out, err) from None
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def login_is_a_fork(self) -> bool:
        """Whether a login's sshd processes are forks of the listener (sshd -r) rather than a re-executed
        sshd (the default). A fork keeps the listener's memory layout, an exec gets its own (ASLR): compare
        where sshd's image is mapped in the listener and in root's session process."""
        with open(f"/proc/{self.pid}/maps") as f:
            listener = f.readline().split()[0]
        session = self.ssh("root", "head -n 1 /proc/$PPID/maps")
        if session.returncode != 0 or not session.stdout.strip():
            raise RuntimeError(f"root's login to read its sshd's mappings failed: {session.stderr}")
        return session.stdout.split()[0] == listener

    # -- logs --------------------------------------------------------------------------------------------

    def log_text(self) -> str:
        """sshd's log so far (-E: sshd's own messages; PAM modules log to syslog instead)."""
        return self._log_since(0)

    def wait_for_log(self, text: str, timeout: float = 5.0) -> str:
        """The log once it contains `text`. The per-connection sshd may still be writing when ssh returns."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.log_text()
            if text in log:
                return log
            if time.monotonic() > deadline:
                raise TimeoutError(f"{text!r} not in sshd log {self.log} after {timeout} s:\n{log}")
            time.sleep(0.02)


def login_from_job(fake: FakeSlurmd, sshd: Sshd, job_id: int | None, user: str = "alice", command: str = "true",
                   timeout: float = 60, *, node: str | None = None,
                   host: str = "127.0.0.1") -> subprocess.CompletedProcess[str]:
    """ssh as `user` to `sshd` at `host` from a process of the simulated node's job `job_id` (None: from
    outside any job); with `node`, from the job's process on that node of a cluster, bound to its address."""
    source = ["-b", fake.node(node).address] if node is not None else []
    argv = sshd.ssh_argv(user, command, host=host, options=source)
    env = {"HOME": pwd.getpwnam(user).pw_dir, "PATH": "/usr/bin:/bin"}
    options: dict[str, Any] = {"user": user, "stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE,
                               "stderr": subprocess.PIPE, "text": True, "env": env, "cwd": "/"}
    proc = (fake.spawn_in_job(job_id, argv, node=node, **options) if job_id is not None
            else subprocess.Popen(argv, **options))
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process(proc, grace=5)
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)
