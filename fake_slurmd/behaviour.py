"""How each slurmd release reacts to what it receives (facts §1.3, §3.3, §2.3, §4, §6.2, §7, §17).

Pure data: the server looks up the release's row and acts on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from slurmproto.versions import BY_NAME, NEWEST, RELEASES, Release, release_at_or_below


class Refusal(Enum):
    CLOSE = "close"
    """No reply; 22.05-24.11 sleep 10 ms first ("discourage brute force")."""
    RC_1007 = "rc 1007"
    """RESPONSE_SLURM_RC 1007 in the daemon's own version, no credential."""
    HTTP_405 = "http 405"
    """25.11+: bytes that do not fingerprint as an RPC go to the HTTP listener, which answers 405."""


@dataclass(frozen=True)
class Behaviour:
    release: Release
    bad_version: Refusal
    bad_cred_unpack: Refusal
    """An unknown auth plugin id, or a credential that does not unpack."""
    bad_cred_verify: Refusal
    """A credential munged rejects (bad, expired, replayed, uid 99), or a message without one."""
    bad_auth_flags: int
    """Header flags of an RC 1007 auth refusal."""
    rc_with_credential: bool
    """22.05 signs its RC replies; 23.02+ set SLURM_NO_AUTH_CRED instead."""
    exact_body_length: bool
    """False: bytes after the body are ignored (22.05.0-22.05.10, so 22.05.8)."""
    nul_check: bool
    """23.02+ reject a packstr without its NUL."""
    rejects_nobody: bool
    """23.02+ refuse credentials of uid or gid 99."""
    callerid_step: bool
    """26.05 reports the step holding the process; 25.11 sends the step-id layout with NO_VAL."""
    refusal_delay: float = 0.0


def behaviour_of(release: Release) -> Behaviour:
    v = release.protocol_version
    name = release.name
    closes = v <= BY_NAME["24.11"].protocol_version
    if closes:
        bad_version, unpack, verify = Refusal.CLOSE, Refusal.CLOSE, Refusal.CLOSE
    elif name == "25.05":
        bad_version, unpack, verify = Refusal.RC_1007, Refusal.RC_1007, Refusal.RC_1007
    elif name == "25.11":
        bad_version, unpack, verify = Refusal.HTTP_405, Refusal.RC_1007, Refusal.RC_1007
    else:  # 26.05 closes on every unpack error but the authentication one
        bad_version, unpack, verify = Refusal.HTTP_405, Refusal.CLOSE, Refusal.RC_1007
    return Behaviour(
        release=release,
        bad_version=bad_version,
        bad_cred_unpack=unpack,
        bad_cred_verify=verify,
        bad_auth_flags=0x44 if name == "26.05" else 0x40,
        rc_with_credential=name == "22.05",
        exact_body_length=name != "22.05",
        nul_check=name != "22.05",
        rejects_nobody=name != "22.05",
        callerid_step=name == "26.05",
        refusal_delay=0.01 if closes else 0.0,
    )


BEHAVIOURS = {r.name: behaviour_of(r) for r in RELEASES}


def release_for(version: int) -> Release | None:
    """In "answer any client" mode: the release whose own version the request uses, or the newest one
    below it; None below 22.05's window or above 26.05's (no slurmd speaks those)."""
    return None if version > NEWEST.protocol_version else release_at_or_below(version)
