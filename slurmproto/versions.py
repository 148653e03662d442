"""Slurm releases, their protocol version numbers and the versions each one accepts.

A protocol version is the release's sequence number shifted left 8 bits (22.05 is 38 << 8 = 0x2600).
A daemon accepts its own version and two older ones; from 24.11 on, three older ones.
"""

from __future__ import annotations

from typing import NamedTuple


class Release(NamedTuple):
    """One Slurm release series as it behaves on the wire."""

    name: str
    protocol_version: int
    back: int
    """How many older protocol versions its daemons accept (2 up to 24.05, 3 from 24.11)."""

    @property
    def window(self) -> tuple[int, int]:
        """Lowest and highest header version its slurmd accepts (both included)."""
        return self.min_version, self.protocol_version

    @property
    def min_version(self) -> int:
        """SLURM_MIN_PROTOCOL_VERSION: also the lowest client its slurmstepd accepts."""
        return self.protocol_version - (self.back << 8)

    def accepts(self, version: int) -> bool:
        low, high = self.window
        return low <= version <= high and version & 0xFF == 0


def _v(seq: int) -> int:
    return seq << 8


SLURM_20_11 = _v(36)
SLURM_21_08 = _v(37)
SLURM_22_05 = _v(38)
SLURM_23_02 = _v(39)
SLURM_23_11 = _v(40)
SLURM_24_05 = _v(41)
SLURM_24_11 = _v(42)
SLURM_25_05 = _v(43)
SLURM_25_11 = _v(44)
SLURM_26_05 = _v(45)

RELEASES: tuple[Release, ...] = (
    Release("22.05", SLURM_22_05, 2),
    Release("23.02", SLURM_23_02, 2),
    Release("23.11", SLURM_23_11, 2),
    Release("24.05", SLURM_24_05, 2),
    Release("24.11", SLURM_24_11, 3),
    Release("25.05", SLURM_25_05, 3),
    Release("25.11", SLURM_25_11, 3),
    Release("26.05", SLURM_26_05, 3),
)
BY_NAME: dict[str, Release] = {r.name: r for r in RELEASES}
OLDEST, NEWEST = RELEASES[0], RELEASES[-1]

# Layout switches (the first protocol version with the change).
NO_EXTRA_HEADER_FIELD = SLURM_22_05  # older headers carry a spare u16 after flags
NUL_CHECKED_STRINGS = SLURM_23_02  # receivers of 23.02+ reject a packstr without its NUL
PACK_ADDRS_NET_CRED = SLURM_23_11  # forward block carries net_cred when flags has SLURM_PACK_ADDRS
FORWARD_TREE_DEPTH = SLURM_24_11  # forward block ends with tree_depth
STEP_ID_REPLIES = SLURM_25_11  # RESPONSE_NETWORK_CALLERID / RESPONSE_JOB_ID carry a full step id
STEPD_SLUID = SLURM_25_11  # slurmstepd: REQUEST_SLUID and REQUEST_GET_NS_FDS exist

def release_of(version: int) -> Release | None:
    """The release whose own protocol version this is, if any."""
    for release in RELEASES:
        if release.protocol_version == version:
            return release
    return None


def release_at_or_below(version: int) -> Release | None:
    """The newest release whose own version is at or below `version` (22.05 for the older versions its
    window accepts), or None below every window: how a server "of the client's own release" picks one."""
    if version < OLDEST.min_version:
        return None
    return max((r for r in RELEASES if r.protocol_version <= version), key=lambda r: r.protocol_version,
               default=OLDEST)


def name_of(version: int) -> str:
    """Human name of a protocol version: '22.05' or '0x2650'."""
    release = release_of(version)
    return release.name if release else f"0x{version:04x}"


def parse_version(text: str) -> int:
    """A release name ('24.11'), or a number ('0x2a00', '10752'), as a protocol version."""
    text = text.strip()
    if text in BY_NAME:
        return BY_NAME[text].protocol_version
    try:
        value = int(text, 0)
    except ValueError:
        known = ", ".join(BY_NAME)
        raise ValueError(f"unknown Slurm release or protocol version {text!r} (known: {known})") from None
    if not 0 < value <= 0xFFFF:
        raise ValueError(f"protocol version {text!r} is not a 16-bit number")
    return value


def accepting(version: int) -> list[Release]:
    """The releases whose slurmd accepts a request in this header version."""
    return [r for r in RELEASES if r.accepts(version)]


def possible_peers(rejected: list[int], *, http_seen: bool = False) -> list[Release]:
    """The releases a slurmd may still be, after it refused the header versions in `rejected`.

    Only 25.11 and newer answer a refused version with HTTP.
    """
    possible = [r for r in RELEASES if not any(r.accepts(v) for v in rejected)]
    if http_seen:
        possible = [r for r in possible if r.protocol_version >= SLURM_25_11]
    return possible


def next_version(rejected: list[int], *, start: int | None = None, http_seen: bool = False,
                 peer_version: int | None = None) -> int | None:
    """The header version to try next against a slurmd of unknown release, or None if none is left.

    `start` is tried first (e.g. the local Slurm's version). `peer_version` is the daemon's own version
    when it told us (25.05/25.11 answer a refused version with RC 1007 in their own version). Otherwise
    take the version accepted by the most releases still possible, the newest on a tie: three tries
    reach every release from 22.05 to 26.05.
    """
    if peer_version is not None and peer_version not in rejected:
        return peer_version
    if start is not None and not rejected:
        return start
    possible = possible_peers(rejected, http_seen=http_seen)
    candidates = [r.protocol_version for r in RELEASES if r.protocol_version not in rejected]
    scored = [(sum(r.accepts(v) for r in possible), v) for v in candidates]
    best = max(scored, default=(0, 0))
    return best[1] if best[0] else None
