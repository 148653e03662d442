"""The release table: one row per Slurm release, holding every per-release fact the code uses.

A row states, with no defaults, its protocol version and acceptance window, the layout of messages in its
version (`Layout`), how its slurmd reads and refuses requests (`SlurmdRules`), and what its slurmstepd
dispatches and to whom (`StepdRules`). The codec, the clients and fake_slurmd ask the row ("does this
release check NULs?", "how does its slurmd refuse?"); no other module compares release names or versions.
Adding a release is adding a row (and a schema fork where its layout changes): see docs/development.md.

A protocol version is the release's sequence number shifted left 8 bits (22.05 is 38 << 8 = 0x2600).
A daemon accepts its own version and two older ones; from 24.11 on, three older ones.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from enum import Enum
from typing import NamedTuple

from slurmproto.constants import OtherStepRequest as _O
from slurmproto.constants import StepRequest as _S


class Refusal(Enum):
    """How a slurmd turns a request away."""

    CLOSE = "close"
    """No reply; 22.05-24.11 sleep 10 ms first ("discourage brute force")."""
    RC_1007 = "rc 1007"
    """RESPONSE_SLURM_RC 1007 in the daemon's own version, no credential."""
    HTTP_405 = "http 405"
    """25.11+: bytes that do not fingerprint as an RPC go to the HTTP listener, which answers 405."""


class Layout(NamedTuple):
    """How messages packed in a release's protocol version are laid out (its pack/unpack forks)."""

    extra_header_field: bool
    """The header carries a spare u16 after flags (20.11 and 21.08)."""
    forward_net_cred: bool
    """The forward block carries net_cred when the flags have SLURM_PACK_ADDRS (23.11+)."""
    forward_tree_depth: bool
    """The forward block ends with tree_depth (24.11+)."""
    step_id_replies: bool
    """RESPONSE_NETWORK_CALLERID / RESPONSE_JOB_ID carry a whole step id, not a job id (25.11+)."""


class SlurmdRules(NamedTuple):
    """How a release's slurmd reads a callerid request and refuses what it does not accept."""

    bad_version: Refusal
    """A header version outside its window."""
    bad_cred_unpack: Refusal
    """An unknown auth plugin id, or a credential that does not unpack."""
    bad_cred_verify: Refusal
    """A credential munged rejects (bad, expired, replayed, uid 99), or a message without one."""
    refusal_delay: float
    """Seconds it sleeps before closing on a refusal."""
    bad_auth_flags: int
    """Header flags of an RC 1007 auth refusal."""
    rc_with_credential: bool
    """22.05 signs its RC replies; 23.02+ set SLURM_NO_AUTH_CRED instead."""
    refuses_no_auth_cred: bool
    """A request flagged SLURM_NO_AUTH_CRED is refused as unauthenticated (23.02+; 22.05 does not know
    the flag and fails to unpack a credential from the body instead)."""
    exact_body_length: bool
    """False: bytes after the body are ignored (22.05.0-22.05.10, so 22.05.8)."""
    nul_check: bool
    """23.02+ reject a packstr without its NUL."""
    rejects_nobody: bool
    """23.02+ refuse credentials of uid or gid 99."""
    callerid_step: bool
    """26.05 reports the step holding the process; 25.11 sends the step-id layout with NO_VAL."""


class StepdRules(NamedTuple):
    """What a release's slurmstepd dispatches on its unix socket, and which peers (SO_PEERCRED) it serves."""

    requests: frozenset[int]
    """The request numbers it dispatches; any other number closes the connection unanswered."""
    slurmd_only: frozenset[int]
    """Requests its dispatch table (stepd_rpcs[], 25.11+) closes on unless the peer is root or SlurmUser.
    Before 25.11 handlers check for themselves: ADD_EXTERN_PID answers -1 to such a peer."""
    owner_only: frozenset[int]
    """Requests its dispatch table closes on unless the peer is the step's owner, root or SlurmUser."""
    ending_step_closes: bool
    """ADD_EXTERN_PID on a step CANCELLED or later closes before reading the pid (24.11.6+, 25.05.1+)."""
    ns_fd_count_reply: bool
    """GET_NS_FD answers an int (the fd, or 0) before any fd; False: only the (fd, SCM_RIGHTS) pairs, so
    nothing at all without a namespace plugin (25.11+)."""
    mem_limits_values: int
    """u64 values in the STEP_MEM_LIMITS reply: job_mem and step_mem, or job_mem alone (26.05)."""


class AuthSlurmRules(NamedTuple):
    """What a release's auth/slurm plugin (AuthType=auth/slurm) and its sack socket do."""

    available: bool
    """The plugin exists (23.11+)."""
    jwks: bool
    """slurm.jwks (keys with a kid, an expiry and a default) is read when present, tokens carry the key's
    kid in their header, and $SLURM_SACK_JWKS names the file (24.05+)."""
    sack_lookup: bool
    """Clients look for the sack socket at $SLURM_SACK_SOCKET, then /run/slurm-<ClusterName>/sack.socket,
    before the daemons' own paths (25.05+)."""
    sack_verify_silent: bool
    """A failed sack VERIFY is answered by closing, with no return code (25.11+)."""
    absent_ids: frozenset[str]
    """The integer claims a verifying slurmd lets a token lack, reading them as -1 (iat, uid, gid wherever
    auth/slurm exists: copy_jwt_grants_to_cred() refuses only libjwt's EINVAL, and a missing grant is ENOENT;
    slurmproto.slurmauth.ABSENT_AS). Seen live on 24.11 and 26.05."""


class Release(NamedTuple):
    """One Slurm release series as it behaves on the wire. Every field is required."""

    name: str
    protocol_version: int
    back: int
    """How many older protocol versions its daemons accept (2 up to 24.05, 3 from 24.11)."""
    layout: Layout
    slurmd: SlurmdRules
    stepd: StepdRules
    auth_slurm: AuthSlurmRules

    @property
    def window(self) -> tuple[int, int]:
        """Lowest and highest header version its slurmd accepts (both included)."""
        return self.min_version, self.protocol_version

    @property
    def min_version(self) -> int:
        """SLURM_MIN_PROTOCOL_VERSION: also the lowest client its slurmstepd accepts."""
        return self.protocol_version - (self.back << 8)

    def accepts(self, version: int) -> bool:
        """Whether its slurmd accepts a request in this header version."""
        low, high = self.window
        return low <= version <= high and version & 0xFF == 0

    def stepd_accepts(self, version: int) -> bool:
        """Whether its slurmstepd accepts a client announcing this version (any at or above its minimum)."""
        return version >= self.min_version

    @property
    def answers_http(self) -> bool:
        """Its slurmd answers a refused version in HTTP (an HTTP answer rules out every other release)."""
        return self.slurmd.bad_version is Refusal.HTTP_405

    @property
    def refuses_in_own_version(self) -> bool:
        """Its slurmd sends RC 1007 refusals in its own version, whatever the request's: one in another
        version than the request's says the request's version was refused, and names the daemon's."""
        rules = self.slurmd
        return Refusal.RC_1007 in (rules.bad_version, rules.bad_cred_unpack, rules.bad_cred_verify)


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

OLDER_LAYOUT = Layout(extra_header_field=True, forward_net_cred=False, forward_tree_depth=False,
                      step_id_replies=False)
"""Headers of 20.11 and 21.08, which the oldest rows still accept (no row: no daemon of theirs is emulated)."""

# --- slurmstepd request sets (req.c of each release) --------------------------------------------------

_STEPD_COMMON = frozenset({
    # The cases of the 22.05-25.05 switch (and of the 25.11+ table) that every release has.
    _O.REQUEST_SIGNAL_CONTAINER, _S.REQUEST_STATE, _O.REQUEST_ATTACH, _S.REQUEST_PID_IN_CONTAINER,
    _S.REQUEST_DAEMON_PID, _O.REQUEST_STEP_SUSPEND, _O.REQUEST_STEP_RESUME, _O.REQUEST_STEP_TERMINATE,
    _O.REQUEST_STEP_TASK_INFO, _O.REQUEST_STEP_LIST_PIDS, _O.REQUEST_STEP_RECONFIGURE, _O.REQUEST_STEP_STAT,
    _O.REQUEST_STEP_COMPLETION, _O.REQUEST_STEP_MEM_LIMITS, _S.REQUEST_STEP_UID, _O.REQUEST_STEP_NODEID,
    _S.REQUEST_ADD_EXTERN_PID, _S.REQUEST_X11_DISPLAY, _O.REQUEST_GETPW, _O.REQUEST_GETGR,
    _S.REQUEST_GET_NS_FD, _O.REQUEST_GETHOST, _O.REQUEST_JOB_NOTIFY,
})
_STEPMGR_RELAYS = frozenset({
    # Unconditional switch cases in 24.05-25.05; 25.11 consults them only on a stepmgr extern step.
    _O.REQUEST_JOB_STEP_CREATE, _O.REQUEST_JOB_STEP_INFO, _O.REQUEST_CANCEL_JOB_STEP, _O.SRUN_JOB_COMPLETE,
    _O.SRUN_NODE_FAIL, _O.SRUN_TIMEOUT, _O.REQUEST_UPDATE_JOB_STEP, _O.REQUEST_STEP_LAYOUT,
    _O.REQUEST_JOB_SBCAST_CRED, _O.REQUEST_HET_JOB_ALLOC_INFO,
})
STEPD_REQUESTS_22_05 = _STEPD_COMMON
STEPD_REQUESTS_24_05 = _STEPD_COMMON | _STEPMGR_RELAYS
STEPD_REQUESTS_25_11 = _STEPD_COMMON | {_S.REQUEST_SLUID, _S.REQUEST_GET_NS_FDS, _O.REQUEST_GET_BPF_TOKEN}
STEPD_REQUESTS_26_05 = STEPD_REQUESTS_25_11 | {_O.REQUEST_STEP_UPDATE_MEM_LIMITS, _O.REQUEST_JOB_USAGE}

# stepd_rpcs[] of 25.11 and 26.05: from_slurmd (root or SlurmUser) and from_job_owner (also the owner).
SLURMD_ONLY_25_11 = frozenset({
    _O.REQUEST_ATTACH, _O.REQUEST_GET_BPF_TOKEN, _O.REQUEST_STEP_SUSPEND, _O.REQUEST_STEP_RESUME,
    _O.REQUEST_STEP_COMPLETION, _O.REQUEST_STEP_RECONFIGURE, _S.REQUEST_ADD_EXTERN_PID,
})
SLURMD_ONLY_26_05 = SLURMD_ONLY_25_11 | {_O.REQUEST_STEP_UPDATE_MEM_LIMITS, _O.REQUEST_JOB_USAGE}
OWNER_ONLY_25_11 = frozenset({
    _O.REQUEST_SIGNAL_CONTAINER, _O.REQUEST_STEP_TERMINATE, _O.REQUEST_STEP_STAT, _O.REQUEST_JOB_NOTIFY,
    _S.REQUEST_X11_DISPLAY, _S.REQUEST_GET_NS_FD, _S.REQUEST_GET_NS_FDS,
})
NOBODY: frozenset[int] = frozenset()

# --- the table -----------------------------------------------------------------------------------------

_C, _RC, _HTTP = Refusal.CLOSE, Refusal.RC_1007, Refusal.HTTP_405
_ABSENT_IDS = frozenset({"iat", "uid", "gid"})

RELEASES: tuple[Release, ...] = (
    Release("22.05", SLURM_22_05, back=2,
            layout=Layout(extra_header_field=False, forward_net_cred=False, forward_tree_depth=False,
                          step_id_replies=False),
            slurmd=SlurmdRules(bad_version=_C, bad_cred_unpack=_C, bad_cred_verify=_C, refusal_delay=0.01,
                               bad_auth_flags=0x40, rc_with_credential=True, refuses_no_auth_cred=False,
                               exact_body_length=False, nul_check=False, rejects_nobody=False,
                               callerid_step=False),
            stepd=StepdRules(requests=STEPD_REQUESTS_22_05, slurmd_only=NOBODY, owner_only=NOBODY,
                             ending_step_closes=False, ns_fd_count_reply=True, mem_limits_values=2),
            auth_slurm=AuthSlurmRules(available=False, jwks=False, sack_lookup=False, sack_verify_silent=False,
                                      absent_ids=frozenset())),
    Release("23.02", SLURM_23_02, back=2,
            layout=Layout(extra_header_field=False, forward_net_cred=False, forward_tree_depth=False,
                          step_id_replies=False),
            slurmd=SlurmdRules(bad_version=_C, bad_cred_unpack=_C, bad_cred_verify=_C, refusal_delay=0.01,
                               bad_auth_flags=0x40, rc_with_credential=False, refuses_no_auth_cred=True,
                               exact_body_length=True, nul_check=True, rejects_nobody=True,
                               callerid_step=False),
            stepd=StepdRules(requests=STEPD_REQUESTS_22_05, slurmd_only=NOBODY, owner_only=NOBODY,
                             ending_step_closes=False, ns_fd_count_reply=True, mem_limits_values=2),
            auth_slurm=AuthSlurmRules(available=False, jwks=False, sack_lookup=False, sack_verify_silent=False,
                                      absent_ids=frozenset())),
    Release("23.11", SLURM_23_11, back=2,
            layout=Layout(extra_header_field=False, forward_net_cred=True, forward_tree_depth=False,
                          step_id_replies=False),
            slurmd=SlurmdRules(bad_version=_C, bad_cred_unpack=_C, bad_cred_verify=_C, refusal_delay=0.01,
                               bad_auth_flags=0x40, rc_with_credential=False, refuses_no_auth_cred=True,
                               exact_body_length=True, nul_check=True, rejects_nobody=True,
                               callerid_step=False),
            stepd=StepdRules(requests=STEPD_REQUESTS_22_05, slurmd_only=NOBODY, owner_only=NOBODY,
                             ending_step_closes=False, ns_fd_count_reply=True, mem_limits_values=2),
            auth_slurm=AuthSlurmRules(available=True, jwks=False, sack_lookup=False, sack_verify_silent=False,
                                      absent_ids=_ABSENT_IDS)),
    Release("24.05", SLURM_24_05, back=2,
            layout=Layout(extra_header_field=False, forward_net_cred=True, forward_tree_depth=False,
                          step_id_replies=False),
            slurmd=SlurmdRules(bad_version=_C, bad_cred_unpack=_C, bad_cred_verify=_C, refusal_delay=0.01,
                               bad_auth_flags=0x40, rc_with_credential=False, refuses_no_auth_cred=True,
                               exact_body_length=True, nul_check=True, rejects_nobody=True,
                               callerid_step=False),
            stepd=StepdRules(requests=STEPD_REQUESTS_24_05, slurmd_only=NOBODY, owner_only=NOBODY,
                             ending_step_closes=False, ns_fd_count_reply=True, mem_limits_values=2),
            auth_slurm=AuthSlurmRules(available=True, jwks=True, sack_lookup=False, sack_verify_silent=False,
                                      absent_ids=_ABSENT_IDS)),
    Release("24.11", SLURM_24_11, back=3,
            layout=Layout(extra_header_field=False, forward_net_cred=True, forward_tree_depth=True,
                          step_id_replies=False),
            slurmd=SlurmdRules(bad_version=_C, bad_cred_unpack=_C, bad_cred_verify=_C, refusal_delay=0.01,
                               bad_auth_flags=0x40, rc_with_credential=False, refuses_no_auth_cred=True,
                               exact_body_length=True, nul_check=True, rejects_nobody=True,
                               callerid_step=False),
            stepd=StepdRules(requests=STEPD_REQUESTS_24_05, slurmd_only=NOBODY, owner_only=NOBODY,
                             ending_step_closes=True, ns_fd_count_reply=True, mem_limits_values=2),
            auth_slurm=AuthSlurmRules(available=True, jwks=True, sack_lookup=False, sack_verify_silent=False,
                                      absent_ids=_ABSENT_IDS)),
    Release("25.05", SLURM_25_05, back=3,
            layout=Layout(extra_header_field=False, forward_net_cred=True, forward_tree_depth=True,
                          step_id_replies=False),
            slurmd=SlurmdRules(bad_version=_RC, bad_cred_unpack=_RC, bad_cred_verify=_RC, refusal_delay=0.0,
                               bad_auth_flags=0x40, rc_with_credential=False, refuses_no_auth_cred=True,
                               exact_body_length=True, nul_check=True, rejects_nobody=True,
                               callerid_step=False),
            stepd=StepdRules(requests=STEPD_REQUESTS_24_05, slurmd_only=NOBODY, owner_only=NOBODY,
                             ending_step_closes=True, ns_fd_count_reply=True, mem_limits_values=2),
            auth_slurm=AuthSlurmRules(available=True, jwks=True, sack_lookup=True, sack_verify_silent=False,
                                      absent_ids=_ABSENT_IDS)),
    Release("25.11", SLURM_25_11, back=3,
            layout=Layout(extra_header_field=False, forward_net_cred=True, forward_tree_depth=True,
                          step_id_replies=True),
            slurmd=SlurmdRules(bad_version=_HTTP, bad_cred_unpack=_RC, bad_cred_verify=_RC, refusal_delay=0.0,
                               bad_auth_flags=0x40, rc_with_credential=False, refuses_no_auth_cred=True,
                               exact_body_length=True, nul_check=True, rejects_nobody=True,
                               callerid_step=False),
            stepd=StepdRules(requests=STEPD_REQUESTS_25_11, slurmd_only=SLURMD_ONLY_25_11,
                             owner_only=OWNER_ONLY_25_11, ending_step_closes=True, ns_fd_count_reply=False,
                             mem_limits_values=2),
            auth_slurm=AuthSlurmRules(available=True, jwks=True, sack_lookup=True, sack_verify_silent=True,
                                      absent_ids=_ABSENT_IDS)),
    Release("26.05", SLURM_26_05, back=3,
            layout=Layout(extra_header_field=False, forward_net_cred=True, forward_tree_depth=True,
                          step_id_replies=True),
            # 26.05 closes on every unpack error but the authentication one.
            slurmd=SlurmdRules(bad_version=_HTTP, bad_cred_unpack=_C, bad_cred_verify=_RC, refusal_delay=0.0,
                               bad_auth_flags=0x44, rc_with_credential=False, refuses_no_auth_cred=True,
                               exact_body_length=True, nul_check=True, rejects_nobody=True,
                               callerid_step=True),
            stepd=StepdRules(requests=STEPD_REQUESTS_26_05, slurmd_only=SLURMD_ONLY_26_05,
                             owner_only=OWNER_ONLY_25_11, ending_step_closes=True, ns_fd_count_reply=False,
                             mem_limits_values=1),
            auth_slurm=AuthSlurmRules(available=True, jwks=True, sack_lookup=True, sack_verify_silent=True,
                                      absent_ids=_ABSENT_IDS)),
)
BY_NAME: dict[str, Release] = {r.name: r for r in RELEASES}
OLDEST, NEWEST = RELEASES[0], RELEASES[-1]


def first_version(has: Callable[[Release], bool]) -> int:
    """The protocol version of the oldest row that `has` a fact: for tests and documentation only (code
    asks the row, never compares versions)."""
    for release in RELEASES:
        if has(release):
            return release.protocol_version
    raise ValueError("no release has that fact")


STEP_ID_REPLIES = first_version(lambda r: r.layout.step_id_replies)
"""Derived from the rows: the first version whose replies carry a step id."""
STEPD_SLUID = first_version(lambda r: _S.REQUEST_SLUID in r.stepd.requests)
"""Derived from the rows: the first release whose slurmstepd has REQUEST_SLUID and REQUEST_GET_NS_FDS."""

# --- looking rows up ---------------------------------------------------------------------------------
# These read RELEASES when called (never a copy made at import), so a row added to the table (as the
# tests do) is seen everywhere. Lookups by version are memoised; the memo follows RELEASES.

_memo: dict[int, Release | None] = {}
_layouts: dict[int, Layout] = {}
_memo_table: list[tuple[Release, ...]] = [RELEASES]
_MEMO_SIZE = 1024


def _newest_at_or_below(version: int) -> Release | None:
    """The newest row whose own version is at or below `version` (None below every row)."""
    if _memo_table[0] is not RELEASES or len(_memo) > _MEMO_SIZE:
        _memo.clear()
        _layouts.clear()
        _memo_table[0] = RELEASES
    try:
        return _memo[version]
    except KeyError:
        found = max((r for r in RELEASES if r.protocol_version <= version), key=lambda r: r.protocol_version,
                    default=None)
        _memo[version] = found
        return found


def layout_of(version: int) -> Layout:
    """How a message packed in `version` is laid out: the layout of the newest release at or below it
    (OLDER_LAYOUT below every row). On every schema fork's path, hence its own memo."""
    if _memo_table[0] is RELEASES and (layout := _layouts.get(version)) is not None:
        return layout
    release = _newest_at_or_below(version)
    layout = _layouts[version] = release.layout if release is not None else OLDER_LAYOUT
    return layout


def release_of(version: int) -> Release | None:
    """The release whose own protocol version this is, if any."""
    for release in RELEASES:
        if release.protocol_version == version:
            return release
    return None


def release_at_or_below(version: int) -> Release | None:
    """The newest release whose own version is at or below `version` (the oldest for the older versions
    its window accepts), or None below every window: how a server "of the client's own release" picks one."""
    if version < RELEASES[0].min_version:
        return None
    return _newest_at_or_below(version) or RELEASES[0]


def release_answering(version: int) -> Release | None:
    """In "answer any client" mode: the release a request in `version` is served as (release_at_or_below),
    or None above the newest release's version (no slurmd speaks those)."""
    return None if version > RELEASES[-1].protocol_version else release_at_or_below(version)


def nearest_release(version: int) -> Release:
    """The row whose facts apply to a peer that speaks `version`: the newest at or below it, else the
    oldest (a peer older than every row is taken for the oldest, which is as conservative)."""
    return _newest_at_or_below(version) or RELEASES[0]


def refusal_names_version(reply_version: int) -> bool:
    """Whether an RC 1007 in `reply_version` (not the request's) names the version of a slurmd that
    refused the request's: what its release's slurmd does (25.05+)."""
    return nearest_release(reply_version).refuses_in_own_version


def release_named(name: str) -> Release:
    """The row of a release name ('24.11'); ValueError naming the known ones otherwise."""
    for release in RELEASES:
        if release.name == name:
            return release
    raise ValueError(f"unknown Slurm release {name!r} (known: {', '.join(r.name for r in RELEASES)})")


def name_of(version: int) -> str:
    """Human name of a protocol version: '22.05' or '0x2650'."""
    release = release_of(version)
    return release.name if release else f"0x{version:04x}"


def parse_version(text: str) -> int:
    """A release name ('24.11'), or a number ('0x2a00', '10752'), as a protocol version."""
    text = text.strip()
    for release in RELEASES:
        if release.name == text:
            return release.protocol_version
    try:
        value = int(text, 0)
    except ValueError:
        known = ", ".join(r.name for r in RELEASES)
        raise ValueError(f"unknown Slurm release or protocol version {text!r} (known: {known})") from None
    if not 0 < value <= 0xFFFF:
        raise ValueError(f"protocol version {text!r} is not a 16-bit number")
    return value


# --- choosing a version to try --------------------------------------------------------------------------


def accepting(version: int) -> list[Release]:
    """The releases whose slurmd accepts a request in this header version."""
    return [r for r in RELEASES if r.accepts(version)]


def possible_peers(rejected: list[int], *, http_seen: bool = False) -> list[Release]:
    """The releases a slurmd may still be, after it refused the header versions in `rejected`.

    An HTTP answer leaves only the releases whose slurmd answers a refused version in HTTP.
    """
    possible = [r for r in RELEASES if not any(r.accepts(v) for v in rejected)]
    if http_seen:
        possible = [r for r in possible if r.answers_http]
    return possible


def next_version(rejected: list[int], *, start: int | None = None, http_seen: bool = False,
                 peer_version: int | None = None) -> int | None:
    """The header version to try next against a slurmd of unknown release, or None if none is left.

    `start` is tried first (e.g. the local Slurm's version). `peer_version` is the daemon's own version
    when it told us (a release that refuses in its own version, see refusal_names_version). Otherwise
    take the version accepted by the most releases still possible, the newest on a tie: max_attempts()
    tries reach every release.
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


def tries_to_reach(peer: Release, *, start: int | None = None, hints: bool = True) -> int | None:
    """How many versions next_version tries before `peer`'s slurmd accepts one (None: never).

    With `hints`, each refusal tells what the peer's refusal style tells a client (an HTTP answer, or RC
    1007 in the peer's own version); without, every refusal is a silent close (e.g. HTTP disabled).
    """
    rejected: list[int] = []
    http_seen, peer_version = False, None
    while (version := next_version(rejected, start=start, http_seen=http_seen,
                                   peer_version=peer_version)) is not None:
        if peer.accepts(version):
            return len(rejected) + 1
        rejected.append(version)
        if hints and peer.answers_http:
            http_seen = True
        elif hints and peer.slurmd.bad_version is Refusal.RC_1007:
            peer_version = peer.protocol_version
    return None


def max_attempts() -> int:
    """The retry bound of a client in auto mode: the most tries next_version needs to reach any release
    of the table, from any start (none, or any release's version), with or without refusal hints."""
    return _max_attempts(RELEASES)


@functools.cache
def _max_attempts(table: tuple[Release, ...]) -> int:
    # `table` is RELEASES, passed as the cache key: the bound is recomputed when the table changes.
    starts = [None, *(r.protocol_version for r in table)]
    needed = [tries_to_reach(peer, start=start, hints=hints) for peer in table for start in starts
              for hints in ((False, True) if peer.slurmd.bad_version is not Refusal.CLOSE else (False,))]
    if None in needed:
        raise ValueError("next_version cannot reach every release of the table")
    return max(n for n in needed if n is not None)
