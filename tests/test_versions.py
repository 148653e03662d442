"""Release table, version parsing, the version-choice rule, and learning the local Slurm's version.

A hypothetical 26.11 row, whose facts differ from 26.05's on purpose, shows that the code reads every
fact from a release's row: nothing is inherited from the newest known release.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import pytest
from construct import Pass

from fake_slurmd.behaviour import behaviour_of, release_for
from fake_slurmd.scenario import Job, NodeSpec
from fake_slurmd.server import HTTP_405, CalleridServer
from fake_slurmd.stepd import FakeStepd
from slurmproto import versions
from slurmproto.codec import encode_frame
from slurmproto.constants import SLURM_EXTERN_CONT, OtherStepRequest
from slurmproto.header import HEADER, Forward, Header
from slurmproto.localslurm import libslurm_version
from slurmproto.messages import NetworkCallerIdRequest, NetworkCallerIdResponse
from slurmproto.primitives import WhereLayout
from slurmproto.stepd import StepdClient, StepdError
from slurmproto.versions import (
    BY_NAME,
    NEWEST,
    NOBODY,
    OLDER_LAYOUT,
    RELEASES,
    SLURM_21_08,
    SLURM_22_05,
    SLURM_23_11,
    SLURM_24_11,
    SLURM_25_11,
    SLURM_26_05,
    STEP_ID_REPLIES,
    STEPD_REQUESTS_22_05,
    STEPD_SLUID,
    AuthSlurmRules,
    Layout,
    Refusal,
    Release,
    SlurmdRules,
    StepdRules,
    accepting,
    layout_of,
    max_attempts,
    name_of,
    next_version,
    parse_version,
    possible_peers,
    refusal_names_version,
)

# Accepted header versions per slurmd release and the stepd minimum (each tag's SLURM_MIN_PROTOCOL_VERSION).
WINDOWS = {
    "22.05": (0x2400, 0x2600), "23.02": (0x2500, 0x2700), "23.11": (0x2600, 0x2800), "24.05": (0x2700, 0x2900),
    "24.11": (0x2700, 0x2A00), "25.05": (0x2800, 0x2B00), "25.11": (0x2900, 0x2C00), "26.05": (0x2A00, 0x2D00),
}


def test_release_table() -> None:
    assert {r.name: r.window for r in RELEASES} == WINDOWS
    assert [r.protocol_version for r in RELEASES] == [v << 8 for v in range(38, 46)]
    assert BY_NAME["26.05"].min_version == 0x2A00


def test_no_version_is_accepted_by_every_release() -> None:
    assert not any(len(accepting(v << 8)) == len(RELEASES) for v in range(36, 46))
    assert [r.name for r in accepting(SLURM_24_11)] == ["24.11", "25.05", "25.11", "26.05"]
    assert not accepting(0x2650)


@pytest.mark.parametrize(("text", "value"), [("22.05", 0x2600), ("0x2a00", 0x2A00), ("11520", 0x2D00)])
def test_parse_version(text: str, value: int) -> None:
    assert parse_version(text) == value


@pytest.mark.parametrize("text", ["21.99", "abc", "0x10000", "-1"])
def test_parse_version_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_version(text)


def test_names() -> None:
    assert name_of(SLURM_25_11) == "25.11" and name_of(0x2650) == "0x2650"


@pytest.mark.parametrize("start", [None, *(r.protocol_version for r in RELEASES)])
def test_three_tries_reach_every_release(start: int | None) -> None:
    for peer in RELEASES:
        rejected: list[int] = []
        while (version := next_version(rejected, start=start)) is not None and not peer.accepts(version):
            rejected.append(version)
        assert version is not None and len(rejected) <= 2, (start, peer.name, rejected)


def test_hints() -> None:
    assert next_version([SLURM_22_05], http_seen=True) in (SLURM_25_11, SLURM_26_05)
    assert [r.name for r in possible_peers([SLURM_22_05], http_seen=True)] == ["25.11", "26.05"]
    assert next_version([SLURM_22_05], peer_version=0x2B00) == 0x2B00
    assert next_version([SLURM_22_05, 0x2B00], peer_version=0x2B00) != 0x2B00
    assert next_version([SLURM_22_05], start=SLURM_26_05, http_seen=True) == SLURM_25_11
    every = [r.protocol_version for r in RELEASES]
    assert next_version(every) is None


def test_libslurm_soname(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for name in ("libslurm.so.38", "libslurm.so.38.0.0", "libslurmfull.so", "libslurm.so.99"):
        (tmp_path / "a" / name).touch()
    (tmp_path / "b" / "libslurm.so.45.0.0").touch()
    assert libslurm_version((str(tmp_path / "a"),)) == SLURM_22_05
    assert libslurm_version((str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "c"))) == SLURM_26_05
    assert libslurm_version((str(tmp_path / "c"),)) is None


# --- the table's derived facts ------------------------------------------------------------------------


def test_a_fork_names_a_layout_fact() -> None:
    with pytest.raises(ValueError, match="'step_ids' is not a Layout field"):
        WhereLayout("step_ids", Pass)


def test_derived_switches() -> None:
    assert STEP_ID_REPLIES == SLURM_25_11 and STEPD_SLUID == SLURM_25_11
    assert layout_of(SLURM_21_08) is OLDER_LAYOUT


@pytest.mark.parametrize(("version", "extra", "net_cred", "tree_depth", "step_id"), [
    (SLURM_21_08, True, False, False, False),  # older than every row
    (SLURM_22_05, False, False, False, False),
    (SLURM_23_11, False, True, False, False),
    (SLURM_24_11, False, True, True, False),
    (SLURM_25_11, False, True, True, True),
    (0x2E00, False, True, True, True),  # newer than every row: the newest row's layout
])
def test_layout_of(version: int, extra: bool, net_cred: bool, tree_depth: bool, step_id: bool) -> None:
    assert layout_of(version) == Layout(extra, net_cred, tree_depth, step_id)


@pytest.mark.parametrize(("version", "names"), [
    (SLURM_24_11, False), (0x2B00, True), (SLURM_25_11, True), (SLURM_26_05, True), (0x2300, False),
])
def test_refusal_names_version(version: int, names: bool) -> None:
    assert refusal_names_version(version) is names


# --- the retry bound ------------------------------------------------------------------------------------


def _tries(peer: Release, start: int | None, hinted: bool) -> int:
    """Drive next_version as the client does against `peer`: it refuses each version it does not accept
    in its own style (hinted), or by closing (not hinted, e.g. its HTTP listener disabled)."""
    rejected: list[int] = []
    http_seen, peer_version = False, None
    while True:
        version = next_version(rejected, start=start, http_seen=http_seen, peer_version=peer_version)
        assert version is not None, f"{peer.name} never reached from {start}"
        if peer.accepts(version):
            return len(rejected) + 1
        rejected.append(version)
        http_seen = http_seen or (hinted and peer.slurmd.bad_version is Refusal.HTTP_405)
        if hinted and peer.slurmd.bad_version is Refusal.RC_1007:
            peer_version = peer.protocol_version


@pytest.mark.parametrize("hinted", [False, True], ids=["silent", "hinted"])
@pytest.mark.parametrize("peer", RELEASES, ids=lambda r: r.name)
@pytest.mark.parametrize("start", [None, *(r.protocol_version for r in RELEASES)])
def test_retry_bound_covers_every_release(start: int | None, peer: Release, hinted: bool) -> None:
    assert _tries(peer, start, hinted) <= max_attempts()


def test_retry_bound_is_needed() -> None:
    # 22.05 asked first in 26.05's version: 26.05, 24.05, then 22.05 (as the real 22.05 test shows).
    assert _tries(BY_NAME["22.05"], SLURM_26_05, hinted=False) == max_attempts()


# --- a row states every fact ----------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "row", "missing"), [
    (type(part), part, name)
    for part in (NEWEST, NEWEST.layout, NEWEST.slurmd, NEWEST.stepd, NEWEST.auth_slurm) for name in type(part)._fields
], ids=lambda v: v if isinstance(v, str) else "")
def test_a_row_without_a_fact_is_refused(kind: type, row: NamedTuple, missing: str) -> None:
    fields = row._asdict()
    del fields[missing]
    with pytest.raises(TypeError, match=missing):
        kind(**fields)


SLURM_26_11 = 46 << 8
R26_11 = Release(
    "26.11", SLURM_26_11, back=3,
    # Deliberately unlike 26.05: no tree_depth, replies without a step id, a slurmd that closes on every
    # refusal and signs its RC replies, a stepd without SLUID or GET_NS_FDS that sends three memory limits.
    layout=Layout(extra_header_field=False, forward_net_cred=True, forward_tree_depth=False,
                  step_id_replies=False),
    slurmd=SlurmdRules(bad_version=Refusal.CLOSE, bad_cred_unpack=Refusal.CLOSE, bad_cred_verify=Refusal.CLOSE,
                       refusal_delay=0.0, bad_auth_flags=0x40, rc_with_credential=True,
                       refuses_no_auth_cred=True, exact_body_length=False, nul_check=False,
                       rejects_nobody=False, callerid_step=False),
    stepd=StepdRules(requests=STEPD_REQUESTS_22_05, slurmd_only=NOBODY, owner_only=NOBODY,
                     ending_step_closes=False, ns_fd_count_reply=True, mem_limits_values=3),
    auth_slurm=AuthSlurmRules(available=True, jwks=False, sack_lookup=False, sack_verify_silent=False,
                              absent_ids=frozenset()),
)


@pytest.fixture
def with_26_11(monkeypatch: pytest.MonkeyPatch) -> Iterator[Release]:
    """The table with the 26.11 row added (as a release would add it), for this test only."""
    monkeypatch.setattr(versions, "RELEASES", (*RELEASES, R26_11))
    yield R26_11


@pytest.mark.parametrize("field", SlurmdRules._fields)
def test_new_row_behaviour_is_its_own(with_26_11: Release, field: str) -> None:
    assert getattr(behaviour_of(with_26_11), field) == getattr(with_26_11.slurmd, field)


def test_new_row_serves_its_version(with_26_11: Release) -> None:
    assert release_for(SLURM_26_11) is with_26_11 and name_of(SLURM_26_11) == "26.11"
    assert parse_version("26.11") == SLURM_26_11


def test_unknown_version_is_refused_without_the_row() -> None:
    assert release_for(SLURM_26_11) is None and name_of(SLURM_26_11) == "0x2e00"


def test_new_row_hints(with_26_11: Release) -> None:
    assert not refusal_names_version(SLURM_26_11)  # 26.05's would (it refuses in its own version)
    assert with_26_11 not in possible_peers([SLURM_22_05], http_seen=True)
    assert with_26_11 in possible_peers([SLURM_22_05])


@pytest.mark.parametrize("hinted", [False, True], ids=["silent", "hinted"])
@pytest.mark.parametrize("start", [None, SLURM_22_05, SLURM_26_05, SLURM_26_11])
def test_retry_bound_follows_the_table(with_26_11: Release, start: int | None, hinted: bool) -> None:
    assert _tries(with_26_11, start, hinted) <= max_attempts()


@pytest.mark.parametrize(("table", "like"), [("known", SLURM_26_05), ("with 26.11", SLURM_24_11)])
def test_codec_reads_the_row(request: pytest.FixtureRequest, table: str, like: int) -> None:
    """0x2E00 is packed like the newest row (26.05: a step id) until a 26.11 row says otherwise (a job id)."""
    if table != "known":
        request.getfixturevalue("with_26_11")
    reply = NetworkCallerIdResponse(7, 0, "node1")
    body = reply.encode(SLURM_26_11)
    assert body == reply.encode(like)
    assert NetworkCallerIdResponse.decode(body, SLURM_26_11).job_id == 7
    compiled = NetworkCallerIdResponse.schema(compiled=True)
    assert compiled.build(reply, version=SLURM_26_11) == body


@pytest.mark.parametrize(("table", "like"), [("known", SLURM_26_05), ("with 26.11", SLURM_23_11)])
def test_header_reads_the_row(request: pytest.FixtureRequest, table: str, like: int) -> None:
    """A forward block in 0x2E00 ends with tree_depth like 26.05's, until a 26.11 row drops it (like 23.11)."""
    if table != "known":
        request.getfixturevalue("with_26_11")
    depth = 5 if layout_of(like).forward_tree_depth else None
    header = Header(SLURM_26_11, 0, 5035, 0, Forward(1, "n1", 1000, 1, None, depth))
    raw = HEADER.build(header, version=SLURM_26_11)
    assert raw[2:] == HEADER.build(replace(header, version=like), version=like)[2:]
    assert HEADER.parse(raw, version=SLURM_26_11) == header


async def _answer(release: Release, data: bytes) -> bytes:
    server = CalleridServer({}, release=release, client_timeout=2.0)
    try:
        port = await server.serve(NodeSpec("node1", "127.0.0.1", 0))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(data)
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        return reply
    finally:
        await server.close()


@pytest.mark.timeout(20)
@pytest.mark.parametrize(("table", "answer"), [("known", HTTP_405), ("with 26.11", b"")], ids=["26.05", "26.11"])
def test_fake_slurmd_refuses_as_the_row_says(request: pytest.FixtureRequest, table: str, answer: bytes) -> None:
    release = NEWEST if table == "known" else request.getfixturevalue("with_26_11")
    message = NetworkCallerIdRequest(bytes(16), bytes(16), 1, 2, 2)
    assert asyncio.run(_answer(release, encode_frame(message, SLURM_22_05))) == answer  # 22.05: outside both


async def _stepd_calls(release: Release, path: str) -> tuple[Release, bytes, list[tuple[int, int]], str]:
    stepd = FakeStepd(path, Job(9, 0), SLURM_EXTERN_CONT, release=release, contains=lambda pid: False)
    async with stepd:
        return await asyncio.to_thread(_client_calls, path, release.protocol_version)


def _client_calls(path: str, version: int) -> tuple[Release, bytes, list[tuple[int, int]], str]:
    with StepdClient(path, version=version) as stepd:
        stepd.sock.sendall(struct.pack("=i", OtherStepRequest.REQUEST_STEP_MEM_LIMITS))
        limits = stepd.sock.recv(64)
        namespaces = stepd.namespace_fds()
        try:
            sluid = str(stepd.sluid())
        except StepdError as exc:
            sluid = str(exc)
        return stepd.release, limits, namespaces, sluid


@pytest.mark.timeout(20)
def test_stepd_and_its_client_read_the_row(with_26_11: Release, tmp_path: Path) -> None:
    release, limits, namespaces, sluid = asyncio.run(_stepd_calls(with_26_11, str(tmp_path / "n_9.extern")))
    assert release is with_26_11
    assert limits == bytes(8 * with_26_11.stepd.mem_limits_values)
    assert namespaces == []  # asked with GET_NS_FD, answered 0 (26.05 would be asked GET_NS_FDS)
    assert sluid == "REQUEST_SLUID needs slurmstepd 25.11, 26.05 (this one speaks 0x2e00, taken as 26.11)"
