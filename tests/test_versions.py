"""Release table, version parsing, the version-choice rule, and learning the local Slurm's version."""

from __future__ import annotations

from pathlib import Path

import pytest

from slurmproto.localslurm import libslurm_version
from slurmproto.versions import (
    BY_NAME,
    RELEASES,
    SLURM_22_05,
    SLURM_24_11,
    SLURM_25_11,
    SLURM_26_05,
    accepting,
    name_of,
    next_version,
    parse_version,
    possible_peers,
)

# Accepted header versions per slurmd release (facts §1.2) and the stepd minimum (§9.3).
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
