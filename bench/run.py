"""Benchmarks: codec speed, whole-process slurm-callerid vs scontrol callerid, and import time.

Run as root through tox (`tox -e bench`) or directly (`python bench/run.py`); it starts its own munged and
Slurm 22.05 cluster on loopback, two 22.05 nodes in namespaces (bench/inprocess_login.py), and a Slurm 26.05
chroot cluster (bench/live_login.py), and writes docs/benchmarks.md. Runs of the commands compared are
interleaved, so machine noise hits them alike; medians are reported.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slurmproto.codec import decode_frame, encode_frame  # noqa: E402
from slurmproto.messages import NetworkCallerIdRequest, NetworkCallerIdResponse  # noqa: E402
from slurmproto.versions import SLURM_22_05  # noqa: E402

CRED = "MUNGE:" + "A" * 180 + ":"
SINGLE_GOAL = 3.0
"""A single slurm-callerid query: at most this many times scontrol callerid's whole run."""
BATCH_GOAL = 1.0
"""A query of `slurm-callerid batch`: at most this many times scontrol callerid's whole run."""


def per_call_us(func: Callable[[], object], repeat: int = 7, number: int = 2000) -> float:
    return min(timeit.repeat(func, repeat=repeat, number=number)) / number * 1e6


def codec_section() -> list[str]:
    request = NetworkCallerIdRequest(b"\x7f\0\0\1" + bytes(12), b"\x7f\0\0\1" + bytes(12), 40000, 22, 2)
    reply = NetworkCallerIdResponse(1234, 0, "node1")
    rows = ["| operation | interpreted construct (µs) | compiled construct (µs) |", "|---|---|---|"]
    for name, message in (("REQUEST_NETWORK_CALLERID", request), ("RESPONSE_NETWORK_CALLERID", reply)):
        cls = type(message)
        body = message.encode(SLURM_22_05)
        cells = []
        for compiled in (False, True):
            schema = cls.schema(compiled)
            encode = per_call_us(lambda s=schema, m=message: s.build(m, version=SLURM_22_05))
            decode = per_call_us(lambda s=schema, b=body: s.parse(b, version=SLURM_22_05, nul_check=True))
            cells.append((encode, decode))
        rows.append(f"| encode {name} body | {cells[0][0]:.1f} | {cells[1][0]:.1f} |")
        rows.append(f"| decode {name} body | {cells[0][1]:.1f} | {cells[1][1]:.1f} |")
    frame = encode_frame(reply, SLURM_22_05, credential=CRED)
    rows.append(f"| encode whole reply frame (header, auth, body) | {per_call_us(lambda: encode_frame(reply, SLURM_22_05, credential=CRED)):.1f} | |")  # noqa: E501
    rows.append(f"| decode whole reply frame | {per_call_us(lambda: decode_frame(frame[4:])):.1f} | |")
    return rows


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    return time.perf_counter() - started, proc


def interleaved(commands: dict[str, list[str]], env: dict[str, str], runs: int, warmup: int = 5) -> dict[str, list[float]]:  # noqa: E501
    times: dict[str, list[float]] = {name: [] for name in commands}
    for i in range(warmup + runs):
        for name, argv in commands.items():
            elapsed, proc = _run(argv, env)
            if proc.returncode != 0:
                raise RuntimeError(f"{name} failed: {proc.stderr}")
            if i >= warmup:
                times[name].append(elapsed)
    return times


def cli_section(runs: int) -> list[str]:
    from tests.support.slurm_cluster import SlurmCluster

    script = str(Path(sys.executable).parent / "slurm-callerid")
    with SlurmCluster() as cluster, cluster.connected_job("alice") as job:
        args = [job.client[0], str(job.client[1]), job.server[0], str(job.server[1])]
        commands = {
            "scontrol callerid": ["scontrol", "callerid", *args],
            "slurm-callerid": [script, *args],
            "python -c pass (same interpreter)": [sys.executable, "-c", "pass"],
            "python -I -S -c pass": [sys.executable, "-I", "-S", "-c", "pass"],
            "python -c import construct (same interpreter)": [sys.executable, "-c", "import construct"],
        }
        outputs = {n: _run(a, cluster.env)[1].stdout.strip() for n, a in list(commands.items())[:2]}
        expected = f"{job.job_id} {cluster.node_name}"
        assert outputs["scontrol callerid"] == outputs["slurm-callerid"] == expected, outputs
        times = interleaved(commands, cluster.env, runs)
        _, verbose = _run([script, "-v", *args], cluster.env)
        batch = []
        for _ in range(5):
            started = time.perf_counter()
            proc = subprocess.run([script, "batch"], input=(" ".join(args) + "\n") * runs, env=cluster.env,
                                  capture_output=True, text=True, timeout=300, check=True)
            batch.append((time.perf_counter() - started) / runs)
            assert proc.stdout.splitlines() == [expected] * runs
    medians = {name: statistics.median(t) * 1000 for name, t in times.items()}
    base = medians["scontrol callerid"]
    rows = [f"Both print `{outputs['slurm-callerid']}`; {runs} interleaved runs each after 5 warm-ups.", "",
            "| command | median (ms) | p10 (ms) | p90 (ms) | ratio to scontrol |", "|---|---|---|---|---|"]
    for name, samples in times.items():
        ms = sorted(s * 1000 for s in samples)
        rows.append(f"| {name} | {medians[name]:.1f} | {ms[len(ms) // 10]:.1f} | {ms[len(ms) * 9 // 10]:.1f} | "
                    f"{medians[name] / base:.2f} |")
    per_query = statistics.median(batch) * 1000
    rows.append(f"| slurm-callerid batch, per query ({runs} queries a process, median of 5) | {per_query:.1f} "
                f"| | | {per_query / base:.2f} |")
    single = medians["slurm-callerid"] / base
    rows += ["", "| goal | measured | met |", "|---|---|---|",
             f"| a single query within {SINGLE_GOAL:g}x scontrol's whole run | {single:.2f}x | "
             f"{'yes' if single <= SINGLE_GOAL else 'no'} |",
             f"| a batch query within {BATCH_GOAL:g}x scontrol's whole run | {per_query / base:.2f}x | "
             f"{'yes' if per_query / base <= BATCH_GOAL else 'no'} |"]
    timing_line = next((line for line in verbose.stderr.splitlines() if line.startswith("timings:")), "")
    bare = medians["python -I -S -c pass"]
    floor = medians["python -c import construct (same interpreter)"]
    rows += ["", f"Inside one slurm-callerid run (`-v`): {timing_line.removeprefix('timings: ')}.", "",
             f"Reading: a bare interpreter start ({bare:.1f} ms with -I -S) is already {bare / base:.2f}x "
             f"scontrol's whole run, and importing construct alone ({floor:.1f} ms with the start) "
             f"{floor / base:.2f}x; a query adds to that the standard modules the rest needs (dataclasses, "
             "typing, enum, argparse, socket, ctypes), its own modules' schemas and classes, and the request "
             f"(munge, RPC, verify: about {per_query:.1f} ms, the batch figure). `slurm-callerid batch` and the "
             "library call in a long-running process cost only the request."]
    return rows


def import_section() -> list[str]:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c",
                           "import slurmproto.cli, slurmproto.client, slurmproto.conf, slurmproto.munge, "
                           "slurmproto.localslurm"], capture_output=True, text=True, check=True)
    cumulative: dict[str, int] = {}
    own: dict[str, int] = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line.removeprefix("import time:").split("|")
        own[name.strip()] = int(self_us)
        cumulative[name.strip()] = int(cumulative_us)
    out = [f"Sum of self times of everything the CLI imports: {sum(own.values()) / 1000:.1f} ms "
           "(`python -X importtime`, which itself adds overhead).", "",
           "| module (with what it imports first) | cumulative (ms) |", "|---|---|"]
    for name in ("slurmproto.client", "construct", "dataclasses", "slurmproto.header", "socket", "argparse",
                 "slurmproto.munge", "ctypes", "slurmproto.conf", "slurmproto.k12"):
        if name in cumulative:
            out.append(f"| {name} | {cumulative[name] / 1000:.1f} |")
    out += ["", "Largest self times:", "", "| module | self (ms) |", "|---|---|"]
    for name, us in sorted(own.items(), key=lambda item: -item[1])[:12]:
        out.append(f"| {name} | {us / 1000:.1f} |")
    return out


def fake_sections(runs: int, rss_requests: int) -> list[str]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import fake_node

    from fake_slurmd.munged import Munged

    with Munged() as munged:
        return ["## fake_slurmd vs the real slurmd 22.05", "", "### Lookup on a loaded node", "",
                *fake_node.lookup_section(munged, runs), "", "### Login storm", "",
                *fake_node.storm_section(munged), "", "### Memory over many requests", "",
                *fake_node.rss_section(munged, rss_requests), ""]


def auth_sections() -> list[str]:
    import auth_cost

    from fake_slurmd.munged import Munged

    with Munged() as munged:
        return ["## Credentials per request: auth/munge vs auth/slurm", "", *auth_cost.auth_section(str(munged.socket)),
                ""]


def login_sections(logins: int) -> list[str]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import login_latency

    from fake_slurmd.munged import Munged

    with Munged() as munged:
        return ["## Login latency: slurm-adopt vs pam_slurm_adopt.so", "", *login_latency.login_section(munged, logins),
                "", *_hook_imports(), ""]


def storm_sections(logins: int) -> list[str]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import storm

    return ["## Login storm: slurm-adopt with its agent vs pam_slurm_adopt.so", "", *storm.storm_section(logins), ""]


def live_login_sections(logins: int) -> list[str]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import live_login

    from tests.support.chroot_cluster import missing_reason

    title = f"## Login latency on Slurm {live_login.RELEASE} with auth/slurm: slurm-adopt vs its pam_slurm_adopt.so"
    reason = missing_reason(live_login.RELEASE)
    return [title, "", f"Not measured: {reason}." if reason else "\n".join(live_login.live_login_section(logins)), ""]


def inprocess_login_sections(logins: int, cross_node: bool) -> list[str]:
    """The in-process module beside the hook and the C module: on one node, and across two (cross_node)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import inprocess_login

    from fake_slurmd.munged import Munged

    where = "across two nodes (the RPC to the other node)" if cross_node else "on one node"
    title = f"## Login latency and CPU {where}: the in-process module, the hook and pam_slurm_adopt.so"
    reason = inprocess_login.missing_reason()
    if reason:
        return [title, "", f"Not measured: {reason}.", ""]
    section = inprocess_login.cross_node_section if cross_node else inprocess_login.one_node_section
    with Munged() as munged:
        return [title, "", *section(munged, logins), ""]


def _hook_imports() -> list[str]:
    """What the hook's paths import, in wall time (an interpreter importing them and exiting)."""
    site_packages = str(Path(__import__("adopt").__file__).resolve().parent.parent)
    quick = f"import sys; sys.path.insert(0, {site_packages!r}); import adopt.__main__, adopt.hookio, _socket, syslog"
    candidates = {"python -c pass": ["-c", "pass"], "python -I -S -c pass": ["-I", "-S", "-c", "pass"],
                  "the quick hook's agent path (-I -S: the agent client)": ["-I", "-S", "-c", quick],
                  "the hook (no-RPC path)": ["-c", "import adopt.hook"],
                  "+ the RPC path (client, codec, munge)": ["-c", "import adopt.hook, slurmproto.client, "
                                                            "slurmproto.munge"]}
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(20):
        for name, args in candidates.items():
            elapsed, _proc = _run([sys.executable, *args], dict(os.environ))
            times[name].append(elapsed)
    rows = ["Interpreter start and imports of the hook (20 interleaved runs, median ms):", "",
            "| what | median (ms) |", "|---|---|"]
    rows += [f"| {name} | {statistics.median(t) * 1000:.1f} |" for name, t in times.items()]
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--output", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--skip-cli", action="store_true", help="no real cluster (not root)")
    parser.add_argument("--skip-fake", action="store_true", help="leave out the fake_slurmd benchmarks")
    parser.add_argument("--skip-login", action="store_true", help="leave out the login latency benchmark")
    parser.add_argument("--skip-live", action="store_true", help="leave out the login latency on a chroot cluster")
    parser.add_argument("--skip-inprocess", action="store_true",
                        help="leave out the in-process module's login latency on one node")
    parser.add_argument("--skip-cross-node", action="store_true",
                        help="leave out the login latency across two nodes")
    parser.add_argument("--logins", type=int, default=30, help="logins per stack and job count")
    parser.add_argument("--skip-storm", action="store_true", help="leave out the login storm")
    parser.add_argument("--storm-logins", type=int, default=200, help="concurrent logins of the storm")
    parser.add_argument("--rss-requests", type=int, default=100_000)
    args = parser.parse_args()
    command = "tox -e bench" + (f" -- --runs {args.runs}" if args.runs != 60 else "")
    lines = ["# Benchmarks", "", f"Made by `{command}` (bench/run.py) on {time.strftime('%Y-%m-%d')}, "
             f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
             "Slurm 22.05.8 (Debian 12). Figures from a noisy shared machine: compare within a table.", "",
             "## Codec (per call, best of 7 runs of 2000)", "", *codec_section(), ""]
    if not args.skip_cli:
        lines += ["## Whole process: slurm-callerid vs scontrol callerid", "", *cli_section(args.runs), ""]
    lines += ["## What the CLI imports", "", *import_section(), ""]
    lines += auth_sections()
    if not args.skip_fake:
        lines += fake_sections(args.runs, args.rss_requests)
    if not args.skip_login:
        lines += login_sections(args.logins)
    if not args.skip_storm:
        lines += storm_sections(args.storm_logins)
    if not args.skip_inprocess:
        lines += inprocess_login_sections(args.logins, cross_node=False)
    if not args.skip_cross_node:
        lines += inprocess_login_sections(args.logins, cross_node=True)
    if not args.skip_live:
        lines += live_login_sections(args.logins)
    Path(args.output).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
