"""Mutated frames through the codec, `slurm-callerid decode` and fake_slurmd's request path: no escapes.

100,000 cases per run in all (seeded: the same cases every run; `tox -e fuzz` runs 1,000,000 and writes
docs/fuzz.md). An escape is an exception outside the documented errors, a case using more than 2 s of CPU,
or a sampled case whose tracemalloc peak passes 16 MiB (tests/support/fuzzing.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from slurmproto.errors import SlurmError
from tests.support import fuzz_targets as targets
from tests.support.fuzzing import Escape, Mutator, Report, fuzz

SEED = 7
CASES = {"codec.decode_frame": 40_000, "codec.Decoder": 25_000, "decode": 15_000, "fake_slurmd": 20_000}


@pytest.fixture(scope="module")
def fake() -> Iterator[targets.FakeTarget]:
    target = targets.FakeTarget()
    yield target
    target.close()


def _run(name: str, fake: targets.FakeTarget, count: int, start: int = 0) -> Report:
    seeds = targets.decode_seeds() if name == "decode" else targets.frame_seeds()
    target: Callable[[bytes], object] = {
        "codec.decode_frame": targets.codec_one_shot, "codec.Decoder": targets.codec_incremental,
        "decode": targets.decode_command, "fake_slurmd": fake}[name]
    allowed = fake.allowed if name == "fake_slurmd" else (SlurmError,) if name.startswith("codec") else ()
    return fuzz(name, target, Mutator(seeds, SEED), count, start=start, allowed=allowed)


def test_at_least_100000_cases_per_run() -> None:
    assert sum(CASES.values()) >= 100_000


@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", list(CASES))
def test_no_escapes(name: str, fake: targets.FakeTarget) -> None:
    report = _run(name, fake, CASES[name])
    assert report.cases == CASES[name]
    assert [str(e) for e in report.escapes] == [] and report.escape_count == 0
    assert report.sampled == CASES[name] // 100
    # The mutations reach past the framing: no one outcome takes nine cases in ten.
    assert max(report.outcomes.values()) < 0.9 * report.cases, report.outcomes


def test_fake_answers_an_unknown_address_family(fake: targets.FakeTarget) -> None:
    """Once an escape of the fake's request path (a ValueError for af 0): slurmd answers whatever af says."""
    assert fake(targets.unknown_af_request()).startswith("answer: ")


# --- the driver itself: it must see what it is there to see ------------------------------------------


def test_cases_are_reproducible() -> None:
    seeds = targets.frame_seeds()
    first, again = Mutator(seeds, 3), Mutator(seeds, 3)
    cases = [first.case(i) for i in range(500)]
    assert cases == [again.case(i) for i in range(500)]
    assert cases != [Mutator(seeds, 4).case(i) for i in range(500)]
    assert len(set(cases)) > 480
    assert sum(case in seeds for case in cases) < 25


def _raises_value_error(data: bytes) -> None:
    if data[:1] == b"\0":
        raise ValueError("escaped")
    raise SlurmError("allowed")


def test_an_unexpected_exception_is_an_escape() -> None:
    report = fuzz("t", _raises_value_error, Mutator([b"\0\0\0\1x"], 1), 50, allowed=(SlurmError,),
                  memory_every=0)
    assert report.escapes and all(isinstance(e, Escape) and e.kind == "exception" for e in report.escapes)
    assert report.outcomes["SlurmError"] + report.escape_count == 50
    assert "ValueError: escaped" in report.escapes[0].trace
    assert Mutator([b"\0\0\0\1x"], 1).case(report.escapes[0].index) == report.escapes[0].data


def test_known_escapes_are_counted_apart() -> None:
    report = fuzz("t", _raises_value_error, Mutator([b"\0\0\0\1x"], 1), 50, allowed=(SlurmError,),
                  known=lambda exc: str(exc) == "escaped", memory_every=0)
    assert report.escapes == [] and report.known and report.known_count == len(report.known)


@pytest.mark.timeout(30)
def test_an_endless_loop_is_a_hang() -> None:
    def spin(data: bytes) -> None:
        while True:
            pass

    start = time.monotonic()
    report = fuzz("t", spin, Mutator([b"abcd"], 1), 2, slow=0.2, memory_every=0)
    assert [e.kind for e in report.escapes] == ["hang", "hang"]
    assert time.monotonic() - start < 5


def test_an_allocation_the_input_chooses_is_caught() -> None:
    def allocate(data: bytes) -> None:
        bytearray(len(data) << 20)  # 1 MiB per input byte

    report = fuzz("t", allocate, Mutator([b"x" * 20, b"x"], 1), 100, memory_every=1, max_bytes=16 << 20)
    assert {e.kind for e in report.escapes} == {"memory"}
    assert report.peak_bytes > 16 << 20
