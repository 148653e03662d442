"""A small mutation fuzzer: seeded and reproducible, and blind to what it feeds.

`Mutator(seeds, seed).case(i)` is the i-th input: one to four mutations of one seed (bit flips, byte
inserts, deletes and overwrites, "interesting" 16/32-bit values, edits of the 4-byte length prefix,
truncations, splices with another seed, repeated chunks), with the length prefix then usually set
right again so that most inputs get past the framing. The same (seeds, seed, i) always gives the
same bytes, so an escape found in a million cases is re-run alone from its index.

`fuzz(target, mutator, count, allowed=...)` calls `target(data)` for each case (a str it returns names the
case's outcome in the counts, as the class name of an allowed exception does). An *escape* is an
exception outside `allowed`, a case that runs longer than `slow` seconds of CPU (stopped by SIGVTALRM,
so a loop that never ends is caught too), or, on the sampled cases, a tracemalloc peak above
`max_bytes`. A `known` callback may name escapes that are already reported (counted apart, never
hidden).
"""

from __future__ import annotations

import contextlib
import random
import signal
import time
import traceback
import tracemalloc
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

KEEP = 100
INTERESTING_16 = (0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF)
INTERESTING_32 = (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF, 0x10000, 0x1000000, 0x40000000)


class Hang(Exception):
    """Raised into a case that used more CPU time than allowed."""


@dataclass
class Escape:
    target: str
    index: int
    """The case number: Mutator.case(index) gives the input again."""
    kind: str
    """"exception", "hang" or "memory"."""
    detail: str
    data: bytes
    trace: str = ""

    def __str__(self) -> str:
        return f"{self.target} case {self.index}: {self.kind}: {self.detail} (input {self.data[:96].hex()})"


@dataclass
class Report:
    target: str
    cases: int = 0
    seconds: float = 0.0
    slowest: float = 0.0
    """CPU seconds of the slowest case."""
    peak_bytes: int = 0
    """The largest tracemalloc peak of the sampled cases."""
    sampled: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    """How the cases ended: "ok" or the class name of the allowed exception."""
    escapes: list[Escape] = field(default_factory=list)
    """The first KEEP escapes (escape_count counts them all)."""
    escape_count: int = 0
    known: list[Escape] = field(default_factory=list)
    """The first KEEP known escapes (known_count counts them all)."""
    known_count: int = 0

    def add(self, escape: Escape, known: bool = False) -> None:
        if known:
            self.known_count += 1
            kept = self.known
        else:
            self.escape_count += 1
            kept = self.escapes
        if len(kept) < KEEP:
            kept.append(escape)


class Mutator:
    def __init__(self, seeds: Sequence[bytes], seed: int = 0) -> None:
        if not seeds:
            raise ValueError("no seeds")
        self.seeds = list(seeds)
        self.seed = seed

    def rng(self, index: int) -> random.Random:
        return random.Random(f"{self.seed}:{index}")

    def case(self, index: int) -> bytes:
        rng = self.rng(index)
        data = bytearray(rng.choice(self.seeds))
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
            rng.choice(_MUTATIONS)(rng, data, self.seeds)
        if len(data) >= 4 and rng.random() < 0.7:
            data[:4] = (len(data) - 4).to_bytes(4, "big")  # let most cases past the framing
        return bytes(data)


def _bit_flip(rng: random.Random, data: bytearray, seeds: list[bytes]) -> None:
    if data:
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)


def _byte_set(rng: random.Random, data: bytearray, seeds: list[bytes]) -> None:
    if data:
        data[rng.randrange(len(data))] = rng.choice((0, 0xFF, 0x7F, 0x80, 1, rng.randrange(256)))


def _insert(rng: random.Random, data: bytearray, seeds: list[bytes]) -> None:
    at = rng.randrange(len(data) + 1)
    data[at:at] = rng.randbytes(rng.choice((1, 1, 2, 4, 8, 64)))


def _delete(rng: random.Random, data: bytearray, seeds: list[bytes]) -> None:
    if data:
        at = rng.randrange(len(data))
        del data[at:at + rng.choice((1, 1, 2, 4, 16, 64))]


def _int_field(rng: random.Random, data: bytearray, seeds: list[bytes]) -> None:
    """Overwrite a 16- or 32-bit big-endian field anywhere (counts, lengths, types, versions)."""
    size = rng.choice((2, 4))
    if len(data) < size:
        return
    at = rng.randrange(len(data) - size + 1)
    old = int.from_bytes(data[at:at + size], "big")
    values = INTERESTING_16 if size == 2 else INTERESTING_32
    value = rng.choice((*values, old + 1, old - 1, old + rng.randrange(1, 300), len(data))) % (1 << 8 * size)
    data[at:at + size] = value.to_bytes(size, "big")


def _length_prefix(rng: random.Random, data: bytearray, seeds: list[bytes]) -> None:
    if len(data) < 4:
        return
    length = len(data) - 4
    value = rng.choice((*INTERESTING_32, length + 1, length - 1, length + 4096, length // 2, 0x48545450))
    data[:4] = (value % (1 << 32)).to_bytes(4, "big")


def _truncate(rng: random.Random, data: bytearray, seeds: list[bytes]) -> None:
    del data[rng.randrange(len(data) + 1):]


def _splice(rng: random.Random, data: bytearray, seeds: list[bytes]) -> None:
    other = rng.choice(seeds)
    data[rng.randrange(len(data) + 1):] = other[rng.randrange(len(other) + 1):]


def _repeat(rng: random.Random, data: bytearray, seeds: list[bytes]) -> None:
    if data:
        at = rng.randrange(len(data))
        chunk = data[at:at + rng.choice((1, 4, 16, 256))]
        data[at:at] = chunk * rng.choice((1, 2, 16))


def _append_frame(rng: random.Random, data: bytearray, seeds: list[bytes]) -> None:
    data += rng.choice(seeds)  # a second frame on the same stream (the prefix fix-up then spans both)


_MUTATIONS = (_bit_flip, _bit_flip, _byte_set, _insert, _delete, _int_field, _int_field, _length_prefix,
              _truncate, _splice, _repeat, _append_frame)


def _on_alarm(signum: int, frame: object) -> None:
    raise Hang


def fuzz(name: str, target: Callable[[bytes], object], mutator: Mutator, count: int, *, start: int = 0,
         allowed: tuple[type[BaseException], ...] = (), known: Callable[[BaseException], bool] | None = None,
         slow: float = 2.0, memory_every: int = 100, max_bytes: int = 16 << 20) -> Report:
    """Run cases start .. start+count-1 of `mutator` through `target` (see the module docstring)."""
    report = Report(name)
    previous = signal.signal(signal.SIGVTALRM, _on_alarm)
    try:
        signal.setitimer(signal.ITIMER_VIRTUAL, slow)
        with contextlib.suppress(Exception):
            target(mutator.seeds[0])  # imports and caches come before the first measured case
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        began = time.perf_counter()
        for index in range(start, start + count):
            data = mutator.case(index)
            sample = memory_every > 0 and index % memory_every == 0
            _one(report, name, target, data, index, allowed, known, slow, sample, max_bytes)
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, previous)
    report.cases = count
    report.seconds = time.perf_counter() - began
    return report


def _one(report: Report, name: str, target: Callable[[bytes], object], data: bytes, index: int,
         allowed: tuple[type[BaseException], ...], known: Callable[[BaseException], bool] | None, slow: float,
         sample: bool, max_bytes: int) -> None:
    if sample:
        tracemalloc.start()
    cpu = time.process_time()
    signal.setitimer(signal.ITIMER_VIRTUAL, slow)
    try:
        outcome = target(data)
        report.outcomes[outcome if isinstance(outcome, str) else "ok"] += 1
    except Hang:
        report.add(Escape(name, index, "hang", f"more than {slow} s of CPU", data, traceback.format_exc()))
    except allowed as exc:
        report.outcomes[type(exc).__name__] += 1
    except Exception as exc:
        escape = Escape(name, index, "exception", f"{type(exc).__name__}: {exc}"[:300], data, traceback.format_exc())
        report.add(escape, known is not None and known(exc))
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        report.slowest = max(report.slowest, time.process_time() - cpu)
        if sample:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            report.sampled += 1
            report.peak_bytes = max(report.peak_bytes, peak)
            if peak > max_bytes:
                report.add(Escape(name, index, "memory", f"tracemalloc peak {peak} bytes", data))
