"""The long fuzz run: 1,000,000 mutated frames through the codec, `decode` and fake_slurmd; writes docs/fuzz.md.

Run through tox (`tox -e fuzz`) or directly (`python bench/fuzz.py [--cases N] [--seed S]`). The cases are
those of tests/test_fuzz.py, ten times as many: the same seeds, mutator and targets
(tests/support/fuzzing.py, tests/support/fuzz_targets.py). Exits 1 when a case escapes.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slurmproto.errors import SlurmError  # noqa: E402
from tests.support import fuzz_targets as targets  # noqa: E402
from tests.support.fuzzing import Mutator, Report, fuzz  # noqa: E402

SHARES = {"codec.decode_frame": 0.40, "codec.Decoder": 0.25, "decode": 0.15, "fake_slurmd": 0.20}
WHAT = {
    "codec.decode_frame": "slurmproto.codec.decode_frame() on the frame after its prefix, strict or lenient",
    "codec.Decoder": "slurmproto.codec.Decoder fed in 1-4 pieces, checked against decode_stream()",
    "decode": "slurm-callerid decode (cli.main in process) on raw, hex, colon-hex or JSON input",
    "fake_slurmd": "fake_slurmd CalleridServer._serve_one(): request bytes to answer or close",
}


def run(name: str, count: int, seed: int, fake: targets.FakeTarget) -> Report:
    seeds = targets.decode_seeds() if name == "decode" else targets.frame_seeds()
    target = {"codec.decode_frame": targets.codec_one_shot, "codec.Decoder": targets.codec_incremental,
              "decode": targets.decode_command, "fake_slurmd": fake}[name]
    allowed = fake.allowed if name == "fake_slurmd" else (SlurmError,) if name.startswith("codec") else ()
    return fuzz(name, target, Mutator(seeds, seed), count, allowed=allowed)  # type: ignore[arg-type]


def document(reports: list[Report], seed: int, command: str, rss_mib: float) -> str:
    total = sum(r.cases for r in reports)
    escapes = [e for r in reports for e in r.escapes]
    escape_count = sum(r.escape_count for r in reports)
    lines = [
        "# Fuzzing",
        "",
        f"Written by `{command}` (bench/fuzz.py) on {datetime.date.today().isoformat()}: "
        f"{total:,} mutated frames, seed {seed}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs. tests/test_fuzz.py runs the first tenth of each target's cases in CI.",
        "",
        "Seeds: the captured exchanges of tests/vectors/*.json and frames our encoder makes for every release "
        "(each message type, with and without a credential, a forward block and a ret_list); `decode` also "
        "gets the JSON captures themselves. Each case applies 1-4 mutations (bit flips, byte inserts, deletes "
        "and overwrites, 16/32-bit field values, length-prefix edits, truncations, splices, repeated chunks, "
        "a second frame) and usually sets the length prefix right again.",
        "",
        "An escape is an exception outside the documented errors (slurmproto.errors.SlurmError for the codec; "
        "fake_slurmd's Close; for `decode`, any exception, an exit code other than 0/1, or exit 0 without "
        "JSON), a case using more than 2 s of CPU, or a sampled case (1 in 100, under tracemalloc) with a "
        "peak above 16 MiB.",
        "",
        "| target | what runs | cases | escapes | known (reported) | slowest case (CPU s) "
        "| tracemalloc peak of a case | seconds |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in reports:
        lines.append(f"| {r.target} | {WHAT[r.target]} | {r.cases:,} | {r.escape_count} | {r.known_count:,} | "
                     f"{r.slowest:.3f} | {r.peak_bytes / 1024:.0f} KiB ({r.sampled:,} sampled) | {r.seconds:.0f} |")
    lines += ["", f"Peak RSS of the whole run: {rss_mib:.0f} MiB. Escapes: {escape_count}. The RSS grows with "
              "the sampling, not with the targets: each tracemalloc start/stop leaves some of its tables "
              "behind (about 0.6 MiB per 25,000 cases at 1 in 100; without sampling 100,000 codec cases leave "
              "the RSS flat).", "",
              "How the cases ended (the most frequent outcomes):", ""]
    for r in reports:
        common = ", ".join(f"{k} {v:,}" for k, v in r.outcomes.most_common(8))
        lines.append(f"- {r.target}: {common}")
    if escapes:
        lines += ["", "Escapes (the first of each target; re-run one with `Mutator(seeds, seed).case(index)`):", ""]
        lines += [f"- {e}" for e in escapes[:50]]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7, help="the seed of tests/test_fuzz.py by default")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "fuzz.md")
    args = parser.parse_args()
    fake = targets.FakeTarget()
    reports = []
    try:
        for name, share in SHARES.items():
            report = run(name, round(args.cases * share), args.seed, fake)
            print(f"{name}: {report.cases:,} cases, {report.escape_count} escapes, {report.known_count} known, "
                  f"{report.seconds:.0f} s", flush=True)
            reports.append(report)
    finally:
        fake.close()
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    command = "tox -e fuzz" if args.cases == 1_000_000 else f"python bench/fuzz.py --cases {args.cases}"
    args.out.write_text(document(reports, args.seed, command, rss_mib))
    print(f"wrote {args.out}")
    return 1 if any(r.escape_count for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
