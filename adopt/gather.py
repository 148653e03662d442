"""Gathering the facts the decision needs, and adopting: the I/O of the hook.

Each method answers one need of adopt.decision, within the deadline, and logs what the module logs.
Failures that make a fact unknowable raise FactError, which the hook turns into action_generic_failure.
The callerid client (and with it construct and MUNGE) is imported only when the RPC is needed.
"""

from __future__ import annotations

import os
import pwd
import time
from collections.abc import Callable, Mapping
from typing import Any

from adopt.decision import Rpc, Step
from adopt.options import Options
from slurmproto.addresses import is_ip
from slurmproto.constants import SLURM_EXTERN_CONT
from slurmproto.stepd import StepdClient, StepdError, step_socket, stepd_available

Log = Callable[[str, str], None]
"""log(level, message): level is one of adopt.options.LOG_LEVELS."""


def parse_connection(text: str) -> tuple[str, int, str, int] | None:
    """SSH_CONNECTION's "RIP RPORT LIP LPORT" as (remote ip, port, local ip, port), or None if malformed:
    ports 1-65535 in ASCII digits, addresses IPv4 or IPv6 (a %scope allowed)."""
    fields = text.split()
    if len(fields) != 4 or not all(_is_port(f) for f in fields[1::2]) or not all(map(is_ip, fields[::2])):
        return None
    return fields[0], int(fields[1]), fields[2], int(fields[3])


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 5 and 0 < int(text) < 65536


class FactError(Exception):
    """A fact cannot be had (no slurm.conf, no usable connection, ...): a generic failure."""


class Gatherer:
    def __init__(self, opts: Options, env: Mapping[str, str], log: Log, *, adopt_pid: int,
                 deadline: float, dry_run: bool = False) -> None:
        self.opts = opts
        self.env = env
        self.log = log
        self.adopt_pid = adopt_pid
        """The process to put into the job: sshd's privileged process (the hook's parent; the in-process
        module's own)."""
        self.deadline = deadline
        self.dry_run = dry_run
        self.conf: Any = None
        self.nodename: str | None = None
        self.spool: str | None = None
        self.stepd_version: int | None = None
        """The protocol version of this node's slurmstepd (its first handshake): where the RPC starts."""
        self.connection: tuple[str, int, str, int] | None = None

    def left(self, cap: float = 2.0) -> float:
        """Seconds left before the deadline, at most `cap` (one stepd or RPC call)."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise FactError("the deadline passed")
        return min(cap, remaining)

    def rpc_budget(self) -> float:
        """The RPC's share of what is left: a reserve stays for adopting into the newest job after it."""
        reserve = min(1.0, self.opts.deadline / 3)
        return max(0.05, self.left(cap=self.opts.deadline) - reserve)

    # --- who ---------------------------------------------------------------------------------------

    @staticmethod
    def uid_of(user: str) -> int | None:
        try:
            return pwd.getpwnam(user).pw_uid
        except KeyError:
            return None

    # --- the user's steps here ---------------------------------------------------------------------

    def load_conf(self) -> Any:
        if self.conf is None:
            from slurmproto.conf import ConfError

            try:
                self.conf = self.read_conf(self.opts.conf)
            except ConfError as exc:
                raise FactError(f"slurm.conf: {exc}") from None
        return self.conf

    def read_conf(self, path: str | None) -> Any:
        """slurm.conf at `path` (None: the usual places); slurm-adopt-agent keeps it parsed between logins."""
        from slurmproto.conf import load

        return load(path, env={})  # never from the PAM environment: $SLURM_CONF there is the user's to choose

    def steps(self, uid: int) -> tuple[Step, ...] | None:
        """The uid's extern steps on this node, or None when the node name cannot be determined."""
        conf = self.load_conf()
        self.nodename = self.opts.nodename or conf.guess_nodename(env={})  # not $SLURMD_NODENAME
        if self.nodename is None:
            self.log("error", "cannot determine this node's NodeName (set nodename=)")
            return None
        from slurmproto.conf import ConfError

        try:
            self.spool = conf.spool_dir(self.nodename)
        except ConfError as exc:
            raise FactError(f"SlurmdSpoolDir: {exc}") from None
        found = []
        for loc in stepd_available(self.spool, self.nodename):
            if loc.step_id != SLURM_EXTERN_CONT:
                continue
            self.log("debug4", f"found StepId={loc.job_id}.extern")
            try:
                with StepdClient(loc.path, timeout=self.left()) as stepd:
                    self.stepd_version = self.stepd_version or stepd.protocol_version
                    owner = stepd.step_uid()
            except StepdError as exc:  # steps end all the time: not an error
                self.log("debug3", f"unable to determine uid of StepId={loc.job_id}.extern: {exc}")
                continue
            if owner == uid:
                found.append(Step(loc.job_id, loc.ctime))
        self.log("debug", f"uid {uid} has {len(found)} job(s)")
        return tuple(found)

    # --- the callerid RPC --------------------------------------------------------------------------

    def checked_connection(self) -> tuple[str, int, str, int]:
        """SSH_CONNECTION's 4-tuple, once the process to adopt is seen to hold that very connection."""
        if self.connection is None:
            text = self.env.get("SSH_CONNECTION", "")
            parsed = parse_connection(text)
            if parsed is None:
                raise FactError(f"no usable SSH_CONNECTION in the PAM environment ({text!r})")
            rip, rport, lip, lport = parsed
            from slurmproto.sockets import find_tcp, socket_inodes

            try:
                found = find_tcp((lip, lport), (rip, rport))
            except (OSError, ValueError) as exc:
                raise FactError(f"looking up the connection {text}: {exc}") from None
            if found is None:
                raise FactError(f"no TCP connection {rip}:{rport} -> {lip}:{lport} exists")
            if found.inode not in socket_inodes(self.adopt_pid):
                raise FactError(f"process {self.adopt_pid} does not hold the connection {rip}:{rport} -> "
                                f"{lip}:{lport} (SSH_CONNECTION does not match)")
            self.connection = (rip, rport, lip, lport)
        return self.connection

    def rpc_options(self) -> dict[str, Any]:
        """callerid()'s settings from slurm.conf and the options (SlurmdUser looked up within the deadline)."""
        from slurmproto.conf import ConfError
        from slurmproto.errors import LocalTimeout, SlurmError
        from slurmproto.localslurm import libslurm_version
        from slurmproto.settings import Settings
        from slurmproto.versions import parse_version

        settings = Settings.from_conf(self.load_conf(), munge_socket=self.opts.munge_socket)
        version = None if self.opts.protocol_version == "auto" else parse_version(self.opts.protocol_version)
        try:
            trusted = settings.trusted_uids(self.deadline)
        except (ConfError, LocalTimeout) as exc:
            raise FactError(f"SlurmdUser: {exc}") from None
        # The running stepd says what this node's Slurm speaks; a libslurm.so of another release (the
        # distribution's beside a site build) would cost a refused attempt on every RPC.
        start = (self.stepd_version or libslurm_version()) if version is None else None
        options = {**settings.callerid_options(), "version": version, "start_version": start,
                   "trusted_uids": trusted}
        if settings.auth.auth_type != "auth/munge":  # as root: the node's key (no munged needed)
            try:
                options["signer"] = settings.signer(version or start)
            except SlurmError as exc:
                raise FactError(f"AuthType={settings.auth.auth_type}: {exc}") from None
        return options

    def rpc(self, user: str) -> Rpc:
        rip, rport, lip, lport = self.checked_connection()
        from slurmproto.client import callerid
        from slurmproto.errors import ConnectError, ForgedReply, SlurmError
        from slurmproto.munge import MungeError

        options = self.rpc_options()
        where = f"From {rip} port {rport} as {user}"
        try:
            try:
                result = callerid(rip, rport, lip, lport, timeout=self.rpc_budget(), **options)
            except ConnectError:
                # A connection from this very node over an address slurmd does not listen on (::1 while it
                # listens on IPv4 only): ask our own slurmd where it listens, about the same connection.
                fallback = self.own_address(rip)
                if fallback is None:
                    raise
                self.log("debug", f"slurmd unreachable at {rip}; {rip} is this node: asking it at {fallback}")
                result = callerid(rip, rport, lip, lport, timeout=self.rpc_budget(), slurmd=fallback, **options)
        except MungeError as exc:  # this node cannot sign a request: not the source's doing
            raise FactError(f"munge: {exc}") from None
        except ForgedReply as exc:  # never believed: as if the source had not answered
            self.log("error", f"{where}: {exc}")
            self.log("info", f"{where}: unable to determine source job")
            return Rpc(None, str(exc))
        except (SlurmError, OSError, ValueError) as exc:
            self.log("debug", f"{where}: unable to retrieve callerid data from remote slurmd ({exc})")
            self.log("info", f"{where}: unable to determine source job")
            return Rpc(None, str(exc))
        if result.job_id is None:
            self.log("debug", f"{where}: job indeterminate")
            self.log("info", f"{where}: unable to determine source job")
            return Rpc(None)
        self.log("info", f"{where}: member of job {result.job_id}")
        return Rpc(result.job_id)

    def own_address(self, address: str) -> str | None:
        """This node's NodeAddr when `address` is one of this host's own addresses (else None)."""
        import socket

        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.bind((address, 0))  # only an address of this host binds
        except OSError:
            return None
        node = self.load_conf().nodes.get(self.nodename or "")
        addr: str | None = node.addr if node is not None else None
        return addr if addr and addr != address else None

    # --- adoption -----------------------------------------------------------------------------------

    def adopt(self, job_id: int) -> bool:
        """Put the process into the job's extern step (REQUEST_ADD_EXTERN_PID); True if it is there."""
        assert self.spool is not None and self.nodename is not None
        pid = self.adopt_pid
        path = step_socket(self.spool, self.nodename, job_id, SLURM_EXTERN_CONT)
        self.log("debug", f"_adopt_process: trying to get StepId={job_id}.extern to adopt {pid}")
        if self.dry_run:
            self.log("info", f"would adopt process {pid} into job {job_id} (dry run: nothing done)")
            return True
        try:
            with StepdClient(path, timeout=self.left()) as stepd:
                ok = stepd.add_extern_pid(pid) == 0 and self.after_adoption(stepd, job_id)
        except StepdError as exc:
            self.log("debug3", f"unable to adopt into StepId={job_id}.extern: {exc}")
            ok = False
        if ok:
            self.log("info", f"Process {pid} adopted into job {job_id}")
        else:
            self.log("info", f"Process {pid} adoption FAILED for job {job_id}")
        return ok

    def after_adoption(self, stepd: StepdClient, job_id: int) -> bool:
        """What the module does once the process is in the job, as far as a pam_exec child can: it cannot
        set the PAM environment (SLURM_JOB_ID, DISPLAY, XAUTHORITY) nor move sshd into the job's namespaces,
        so it only logs them. False would make the adoption count as failed (adopt.pam_module's can)."""
        self.log("debug", f"SLURM_JOB_ID={job_id} (not exported: a pam_exec hook cannot set the PAM environment)")
        if not self.opts.disable_x11:
            display, xauthority = stepd.x11_display()
            if display:
                self.log("info", f"job {job_id} forwards X11 (DISPLAY=localhost:{display}.0, XAUTHORITY="
                         f"{xauthority}); a pam_exec hook cannot export it")
        if self.opts.join_container:
            try:
                namespaces = stepd.namespace_fds()
            except StepdError as exc:
                self.log("error", f"stepd_get_ns_fds failed: {exc}")
                return True
            for _kind, fd in namespaces:
                os.close(fd)
            if namespaces:
                self.log("error", f"job {job_id} has a job container; a pam_exec hook cannot move sshd into its "
                         "namespaces (use join_container=false, or the C module)")
            else:
                self.log("debug2", "No ns_fd given back, expected if not running with a namespace plugin")
        return True
