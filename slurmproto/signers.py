"""Who makes and checks the credentials of a request: munged (auth/munge), or auth/slurm tokens signed with
the node's key or obtained through the sack socket.

Every signer has `plugin_id`, `encode(payload, timeout=)` -> credential text, `decode(credential,
timeout=)` -> what it says (`.uid`, the signer; `.payload`, the body hash) and `close()`. `make_signer()`
picks one as Slurm's own clients would for AuthType: auth/slurm signs with slurm.key (or slurm.jwks)
when this process can read it (root, SlurmUser), and asks the sack socket otherwise.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from slurmproto.constants import AuthPlugin
from slurmproto.errors import AuthError, SackError

if TYPE_CHECKING:
    from slurmproto.sack import SackClient
    from slurmproto.slurmauth import Claims, KeyRing
    from slurmproto.versions import Release

# slurmauth (json, hmac, base64) is imported by the signers that need it: Settings, on the hook's RPC
# path, imports this module whatever the AuthType.
UID_ANY = 0xFFFFFFFF
"""SLURM_AUTH_UID_ANY: a request's credential may be verified by anyone (slurmauth.UID_ANY)."""
DEFAULT_TTL = 60
"""auth/slurm's token lifetime without AuthInfo ttl= (slurmauth.DEFAULT_TTL)."""


def key_files(conf_path: str, env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """Where slurm.key and slurm.jwks are for the slurm.conf at `conf_path` (here, not in authkeys: every
    configuration asks, and authkeys imports json and the token code)."""
    env = env or {}
    here = os.path.dirname(os.path.abspath(conf_path))
    return (env.get("SLURM_SACK_KEY") or os.path.join(here, "slurm.key"),
            env.get("SLURM_SACK_JWKS") or os.path.join(here, "slurm.jwks"))


class Credentials(Protocol):
    """What a decoded credential says (slurmproto.munge.Decoded and slurmauth.Claims have these)."""

    @property
    def payload(self) -> bytes: ...

    @property
    def uid(self) -> int: ...


class Signer(Protocol):
    @property
    def plugin_id(self) -> int: ...

    @property
    def description(self) -> str:
        """What signs, for messages and --check-config ("auth/munge, munged at ...")."""

    def encode(self, payload: bytes, *, timeout: float | None = None) -> bytes | str: ...

    def decode(self, credential: str, *, timeout: float | None = None) -> Credentials: ...

    def close(self) -> None: ...


@dataclass
class KeySigner:
    """auth/slurm with the node's key, as a daemon (or root with the key) signs and verifies."""

    keys: KeyRing
    ver: int
    ttl: int = DEFAULT_TTL
    cluster: str | None = None
    r_uid: int = UID_ANY
    plugin_id: int = AuthPlugin.AUTH_SLURM

    @property
    def description(self) -> str:
        return f"auth/slurm, signing with {self.keys.source}"

    def encode(self, payload: bytes, *, timeout: float | None = None) -> str:
        from slurmproto.slurmauth import sign

        return sign(payload, self.keys.default, uid=os.getuid(), gid=os.getgid(), host=short_hostname(),
                    ruid=self.r_uid, ver=self.ver, ttl=self.ttl, cluster=self.cluster)

    def decode(self, credential: str, *, timeout: float | None = None) -> Claims:
        from slurmproto.slurmauth import verify

        return verify(credential, self.keys, verifier_uid=os.getuid())

    def close(self) -> None:
        pass


@dataclass
class SackSigner:
    """auth/slurm through the sack socket, as a process that cannot read the key does."""

    client: SackClient
    plugin_id: int = AuthPlugin.AUTH_SLURM

    @property
    def description(self) -> str:
        return f"auth/slurm, through the sack socket ({', '.join(self.client.paths)})"

    def encode(self, payload: bytes, *, timeout: float | None = None) -> str:
        return self.client.create(payload, UID_ANY, timeout)

    def decode(self, credential: str, *, timeout: float | None = None) -> Claims:
        try:
            rc = self.client.verify(credential, timeout)
        except SackError as exc:
            raise AuthError(f"the sack socket did not verify the token: {exc}") from None
        if rc != 0:
            raise AuthError(f"the sack socket refused the token (rc {rc})")
        from slurmproto.slurmauth import parse

        return parse(credential).checked_claims()

    def close(self) -> None:
        pass


def short_hostname() -> str:
    return socket.gethostname().split(".", 1)[0]


@dataclass(frozen=True)
class AuthChoice:
    """What slurm.conf (and overrides) say about credentials: enough to make a signer."""

    auth_type: str = "auth/munge"
    munge_socket: str | None = None
    ttl: int | None = None
    """AuthInfo ttl= (None: munged's default, or auth/slurm's 60 s)."""
    key_file: str | None = None
    jwks_file: str | None = None
    cluster: str | None = None
    env: Mapping[str, str] | None = None
    """Where $SLURM_SACK_SOCKET is read (None: nowhere; the hook never reads its environment)."""

    def make_signer(self, release: Release, *, sack_timeout: float = 2.0) -> Signer:
        """The signer a client of `release` (the local Slurm's) uses; AuthError for another AuthType."""
        if self.auth_type == "auth/munge":
            from slurmproto.munge import MungeContext

            return MungeContext(self.munge_socket, ttl=self.ttl)
        if self.auth_type != "auth/slurm" or not release.auth_slurm.available:
            raise AuthError(f"AuthType={self.auth_type} is not supported with Slurm {release.name} (only "
                            "auth/munge, and auth/slurm from 23.11)")
        keys = self.readable_keys(release)
        if keys is not None:
            return KeySigner(keys, release.protocol_version, self.ttl or DEFAULT_TTL, self.cluster)
        from slurmproto.sack import SackClient, socket_paths

        paths = socket_paths(release.auth_slurm, self.cluster, self.env)
        return SackSigner(SackClient(paths, release.protocol_version, sack_timeout))

    def readable_keys(self, release: Release) -> KeyRing | None:
        """The node's keys, when this process may read them (None: it may not, or there are none); an
        insecure or malformed key file raises KeyFileError."""
        from slurmproto.authkeys import load_keyring

        if self.key_file is None:
            return None
        jwks = self.jwks_file if release.auth_slurm.jwks else None
        path = jwks if jwks is not None and os.path.lexists(jwks) else self.key_file
        if not os.path.lexists(path) or not os.access(path, os.R_OK):
            return None
        return load_keyring(self.key_file, jwks)
