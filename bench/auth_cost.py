"""Credential cost per request: auth/munge (munged over its socket) against auth/slurm (HS256 with the node
key, and through a sack socket), sign + verify, measured alternately in one run so noise hits all alike.

`python bench/auth_cost.py` prints the table; bench/run.py puts it in docs/benchmarks.md.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slurmproto.auth import payload_hash
from slurmproto.signers import KeySigner
from slurmproto.slurmauth import Key, KeyRing
from slurmproto.versions import SLURM_26_05

PAYLOAD = payload_hash(bytes(52), 5035)


def _round_trip(signer: object) -> Callable[[], object]:
    def once() -> object:
        return signer.decode(signer.encode(PAYLOAD))  # type: ignore[attr-defined]
    return once


def auth_section(munge_socket: str, rounds: int = 15, number: int = 200) -> list[str]:
    from slurmproto.munge import MungeContext

    munge = MungeContext(munge_socket)
    ways = {"auth/munge: munge_encode + munge_decode (munged)": _round_trip(munge),
            "auth/slurm: HS256 sign + verify with slurm.key": _round_trip(KeySigner(KeyRing(Key(os.urandom(32)), {},
                                                                                            "slurm.key"), SLURM_26_05))}
    samples: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):  # interleaved: each round times every way once
        for name, once in ways.items():
            began = time.perf_counter()
            for _ in range(number):
                once()
            samples[name].append((time.perf_counter() - began) / number * 1e6)
    munge.close()
    base = statistics.median(samples[next(iter(ways))])
    rows = [f"Median of {rounds} interleaved rounds of {number} sign + verify round trips (one request's credential "
            "made and one reply's checked).", "", "| credentials | µs per request | vs munge |", "|---|---|---|"]
    for name, values in samples.items():
        rows.append(f"| {name} | {statistics.median(values):.1f} | {statistics.median(values) / base:.2f} |")
    return rows


if __name__ == "__main__":
    from fake_slurmd.munged import Munged

    with Munged() as munged:
        print("\n".join(auth_section(str(munged.socket))))
