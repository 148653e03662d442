"""The settings a callerid asker takes from slurm.conf, in one object for every entry point.

`Settings.from_conf(conf, **overrides)` reads slurm.conf's keys once (SlurmdPort, TCPTimeout,
MessageTimeout, AuthType, AuthInfo's socket= and ttl=, CommunicationParameters' block_null_hash and
block_zero_hash, SlurmUser, SlurmdUser) and applies explicit overrides (command-line options, the hook's
options). Without a slurm.conf every value is the default an empty slurm.conf has: the defaults live in
slurmproto.conf's keys, nowhere else (DEFAULT_* below are read from there, for signatures and help texts).

Imported by slurm-callerid and by the hook on its RPC path only; it imports slurmproto.conf (which the
hook loads anyway) and slurmproto.signers, and nothing of the codec, construct or MUNGE until a signer
is made.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NamedTuple

from slurmproto.conf import parse_text
from slurmproto.signers import AuthChoice, key_files

if TYPE_CHECKING:
    from collections.abc import Mapping

    from slurmproto.conf import SlurmConf
    from slurmproto.signers import Signer

ROOT_ONLY = frozenset({0})
"""Whose credentials a reply may carry when SlurmdUser is root (its default)."""


class PayloadChecks(NamedTuple):
    """CommunicationParameters' options for a credential's payload (both off by default, as in Slurm)."""

    block_null_hash: bool = False
    """Refuse an empty payload."""
    block_zero_hash: bool = False
    """Refuse the "no hash" payload (type 1, msg_type only)."""


NO_PAYLOAD_CHECKS = PayloadChecks()


@dataclass(frozen=True)
class Settings:
    """What slurm.conf (and explicit overrides) say about asking a slurmd."""

    port: int
    """SlurmdPort."""
    connect_timeout: float
    """TCPTimeout, seconds."""
    message_timeout: float
    """MessageTimeout, seconds."""
    auth_type: str
    munge_socket: str | None
    """AuthInfo socket= (None: munge's default)."""
    munge_ttl: int | None
    """AuthInfo ttl= (None: munged's default)."""
    checks: PayloadChecks
    slurm_user: str
    slurmd_user: str
    """Whose credential slurmd's replies carry; its uid is looked up through `conf` (trusted_uids())."""
    conf: SlurmConf = field(repr=False, compare=False)
    """Where the values came from (an empty configuration when there is no slurm.conf)."""
    auth: AuthChoice = field(default_factory=AuthChoice)
    """What makes credentials: AuthType with its munged socket, or auth/slurm's key files and cluster."""

    @classmethod
    def from_conf(cls, conf: SlurmConf | None, *, port: int | None = None, munge_socket: str | None = None,
                  connect_timeout: float | None = None, message_timeout: float | None = None,
                  env: Mapping[str, str] | None = None) -> Settings:
        """The settings of `conf` (None: no slurm.conf, every default); an override given (not None, not
        empty: an empty --munge-socket is no socket named) wins. `env` is where $SLURM_SACK_KEY,
        $SLURM_SACK_JWKS and $SLURM_SACK_SOCKET are read (None: nowhere, as the hook does).

        Raises what slurmproto.conf's typed keys raise (ConfError).
        """
        source = conf if conf is not None else _empty()
        settings = cls(
            port=source.slurmd_port, connect_timeout=float(source.tcp_timeout),
            message_timeout=float(source.message_timeout), auth_type=source.auth_type,
            munge_socket=source.munge_socket, munge_ttl=source.auth_ttl,
            checks=PayloadChecks(source.has_communication_parameter("block_null_hash"),
                                 source.has_communication_parameter("block_zero_hash")),
            slurm_user=source.slurm_user, slurmd_user=source.slurmd_user, conf=source)
        overrides: dict[str, Any] = {"port": port, "munge_socket": munge_socket, "connect_timeout": connect_timeout,
                     "message_timeout": message_timeout}
        settings = replace(settings, **{k: v for k, v in overrides.items() if v not in (None, "")})
        return replace(settings, auth=_auth_choice(settings, conf, env))

    @property
    def timeout(self) -> float:
        """The default overall deadline of one query: TCPTimeout + MessageTimeout."""
        return self.connect_timeout + self.message_timeout

    def callerid_options(self) -> dict[str, Any]:
        """client.callerid()'s keyword arguments for these settings (trusted_uids apart: it needs a deadline)."""
        return {"port": self.port, "munge_socket": self.munge_socket, "munge_ttl": self.munge_ttl,
                "connect_timeout": self.connect_timeout, "message_timeout": self.message_timeout,
                "checks": self.checks}

    def signer(self, start_version: int | None) -> Signer:
        """What signs requests and checks replies, as a client of the local release (`start_version`, else
        the newest) would: munged, or auth/slurm with the key when readable, else through sack."""
        from slurmproto.versions import NEWEST, nearest_release

        release = nearest_release(start_version) if start_version is not None else NEWEST
        if self.auth.auth_type == "auth/slurm" and not release.auth_slurm.available:
            # slurm.conf says auth/slurm, so the cluster is 23.11+ whatever older libslurm this host has.
            release = NEWEST
        return self.auth.make_signer(release, sack_timeout=self.timeout)

    def trusted_uids(self, deadline: float) -> frozenset[int]:
        """Whose credentials a reply may carry: root and SlurmdUser, looked up within the deadline (root
        without asking NSS). LocalTimeout when the user database does not answer in time; ConfError when
        there is no such user."""
        if self.slurmd_user == "root":
            return ROOT_ONLY
        from slurmproto.deadline import call_within
        from slurmproto.errors import LocalTimeout

        left = deadline - time.monotonic()
        uid: int = call_within(left, lambda: LocalTimeout(
            f"looking up SlurmdUser {self.slurmd_user!r}: the user database did not answer within "
            f"{max(left, 0):.3g} s"), self.conf.slurmd_uid)
        return frozenset({0, uid})


def _auth_choice(settings: Settings, conf: SlurmConf | None, env: Mapping[str, str] | None) -> AuthChoice:
    key_file = jwks_file = None
    if conf is not None:
        key_file, jwks_file = key_files(conf.filename, env)
    cluster = settings.conf.cluster_name
    # Slurm lowercases ClusterName when it reads it (the sack path and the token's claim use that).
    return AuthChoice(settings.auth_type, settings.munge_socket, settings.munge_ttl, key_file, jwks_file,
                      cluster.lower() if cluster else None, env)


def _empty() -> SlurmConf:
    """A configuration without a single line: what Slurm assumes for every key."""
    return parse_text("", "<no slurm.conf>", env={})


DEFAULTS = Settings.from_conf(None)
"""Every setting as an empty slurm.conf has it."""
DEFAULT_SLURMD_PORT = DEFAULTS.port
DEFAULT_TCP_TIMEOUT = DEFAULTS.connect_timeout
DEFAULT_MESSAGE_TIMEOUT = DEFAULTS.message_timeout
