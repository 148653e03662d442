"""fake_slurmd against the real slurmd 22.05 on the same machine: lookup latency on a loaded node,
a login storm, and memory over many requests. Imported by bench/run.py (needs root)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import shlex
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from fake_slurmd.controller import FakeSlurmd
from fake_slurmd.munged import Munged
from fake_slurmd.processes import stop_process
from fake_slurmd.scenario import Job, NodeSpec, Scenario
from slurmproto.client import Endpoint, callerid, callerid_request
from slurmproto.codec import decode_stream, sign_and_encode
from slurmproto.constants import NO_VAL
from slurmproto.messages import NetworkCallerIdResponse
from slurmproto.munge import MungeContext
from slurmproto.versions import SLURM_22_05
from tests.support.slurm_cluster import SlurmCluster

# The load: PROCS processes of the job each hold CONNS connections to a listener of ours.
LOADER = """
import os, socket, sys, time
host, port, procs, conns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for _ in range(procs):
    if os.fork() == 0:
        held = [socket.create_connection((host, port)) for _ in range(conns)]
        time.sleep(3600)
        os._exit(0)
time.sleep(3600)
"""


class Sink:
    """A listener that accepts and holds every connection, remembering each one's client end."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0), backlog=4096)
        self.address = self.server.getsockname()
        self.peers: list[tuple[str, int]] = []
        self._held: list[socket.socket] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, peer = self.server.accept()
            except OSError:
                return
            self._held.append(conn)
            self.peers.append(peer)

    def close(self) -> None:
        self.server.close()
        for conn in self._held:
            conn.close()


@contextlib.contextmanager
def loaded_node(munged: Munged, procs: int, conns: int) -> Iterator[tuple[SlurmCluster, int, Sink]]:
    """A real cluster whose job (of alice) holds procs x conns connections to a Sink."""
    sink = Sink()
    with SlurmCluster(munged) as cluster:
        script = cluster.out_dir / "loader.py"
        script.write_text(LOADER)
        script.chmod(0o644)
        args = f"{sink.address[0]} {sink.address[1]} {procs} {conns}"
        job = cluster.submit("alice", f"python3 {shlex.quote(str(script))} {args}")
        deadline = time.monotonic() + 120
        while len(sink.peers) < procs * conns:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(sink.peers)} connections arrived")
            time.sleep(0.2)
        try:
            yield cluster, job, sink
        finally:
            cluster.cancel(job)
            sink.close()


def _ask(port: int, munge_socket: str, peer: tuple[str, int], server: tuple[str, int]) -> tuple[float, int | None]:
    started = time.perf_counter()
    result = callerid(peer[0], peer[1], server[0], server[1], port=port, munge_socket=munge_socket,
                      version=SLURM_22_05)
    return time.perf_counter() - started, result.job_id


def lookup_section(munged: Munged, runs: int, procs: int = 500, conns: int = 10) -> list[str]:
    munge_socket = str(munged.socket)
    with loaded_node(munged, procs, conns) as (cluster, job, sink):
        scenario = Scenario([NodeSpec("node1", port=0)], {job: Job(job, _uid("alice"), environ=True)})
        with FakeSlurmd(scenario, munge_socket=munge_socket) as fake:
            rng = random.Random(7)
            first_fake, answer = _ask(fake.port, munge_socket, rng.choice(sink.peers), sink.address)
            assert answer == job, answer
            times: dict[str, list[float]] = {"real slurmd 22.05": [], "fake_slurmd": []}
            for _ in range(runs):  # interleaved, a different connection each time
                peer = rng.choice(sink.peers)
                for name, port in (("real slurmd 22.05", cluster.slurmd_port), ("fake_slurmd", fake.port)):
                    elapsed, answer = _ask(port, munge_socket, peer, sink.address)
                    assert answer == job, (name, answer)
                    times[name].append(elapsed)
    medians = {name: statistics.median(t) * 1000 for name, t in times.items()}
    ratio = medians["real slurmd 22.05"] / medians["fake_slurmd"]
    return [
        f"{procs * conns} established connections held by {procs} processes of one job; {runs} callerid "
        "requests to each, interleaved, each about a random one of them; round trips as the client sees them.",
        "", "| server | median (ms) | p90 (ms) |", "|---|---|---|",
        *(f"| {name} | {medians[name]:.2f} | {_pct(t, 90) * 1000:.2f} |" for name, t in times.items()),
        "", f"fake_slurmd is {ratio:.1f}x faster (goal: at least 5x). Its first request, which filled its "
        f"inode index by scanning the job's processes, took {first_fake * 1000:.1f} ms.",
    ]


def _uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


def _pct(samples: list[float], pct: int) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, len(ordered) * pct // 100)]


def _frames(munge_socket: str, count: int, peers: list[tuple[str, int]], server: tuple[str, int]) -> list[bytes]:
    with MungeContext(munge_socket) as munge:
        return [sign_and_encode(callerid_request(Endpoint.parse(p[0]), p[1], Endpoint.parse(server[0]), server[1]),
                                SLURM_22_05, munge.encode) for p in peers[:count]]


async def _storm(port: int, frames: list[bytes]) -> tuple[float, list[float], list[int | None]]:
    """Send every frame on its own connection at once; wall time, latencies and the job ids answered."""
    async def one(frame: bytes) -> tuple[float, int | None]:
        started = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(frame)
        await writer.drain()
        data = await reader.read()
        writer.close()
        [reply] = decode_stream(data)
        assert isinstance(reply.message, NetworkCallerIdResponse)
        return time.perf_counter() - started, reply.message.job_id

    started = time.perf_counter()
    results = await asyncio.gather(*(one(frame) for frame in frames))
    return time.perf_counter() - started, [r[0] for r in results], [r[1] for r in results]


def storm_section(munged: Munged, requests: int = 1000, rounds: int = 3) -> list[str]:
    munge_socket = str(munged.socket)
    with loaded_node(munged, 100, 10) as (cluster, job, sink):
        scenario = Scenario([NodeSpec("node1", port=0)], {job: Job(job, _uid("alice"), environ=True)})
        with FakeSlurmd(scenario, munge_socket=munge_socket) as fake:
            rows: dict[str, list[tuple[float, list[float], int]]] = {"real slurmd 22.05": [], "fake_slurmd": []}
            no_val = dict.fromkeys(rows, 0)
            for _ in range(rounds):  # interleaved; fresh credentials for every request (munged refuses replays)
                for name, port in (("real slurmd 22.05", cluster.slurmd_port), ("fake_slurmd", fake.port)):
                    frames = _frames(munge_socket, requests, sink.peers, sink.address)
                    wall, latencies, answers = asyncio.run(_storm(port, frames))
                    rows[name].append((wall, latencies, sum(answer == job for answer in answers)))
                    no_val[name] += sum(answer == NO_VAL for answer in answers)
            slurmd_errors = cluster.slurmd_log.read_text(errors="replace").count("Unexpected missing socket error")
    assert all(right == requests for _, _, right in rows["fake_slurmd"]), "fake_slurmd answered wrongly"
    out = [f"{requests} callerid requests sent at once on {requests} connections, {rounds} interleaved rounds "
           "each; every request asks about one of the 1000 connections the job holds.", "",
           "| server | right answers per round | wall time, median round (s) | p50 latency (ms) | p99 latency (ms) |",
           "|---|---|---|---|---|"]
    walls = {}
    for name, results in rows.items():
        walls[name] = statistics.median(w for w, _, _ in results)
        every = [lat for _, lats, _ in results for lat in lats]
        right = ", ".join(str(r) for _, _, r in results)
        out.append(f"| {name} | {right} | {walls[name]:.2f} | {_pct(every, 50) * 1000:.1f} | "
                   f"{_pct(every, 99) * 1000:.1f} |")
    out += ["", f"Wall-time ratio fake/real: {walls['fake_slurmd'] / walls['real slurmd 22.05']:.2f} (goal: 0.5 "
            f"or less). Of the real slurmd's wrong answers, {no_val['real slurmd 22.05']} were NO_VAL; its log "
            f"has {slurmd_errors} lines \"slurm_msg_sendto: ... Unexpected missing socket error\" from the storm."]
    return out


def rss_section(munged: Munged, requests: int = 100_000, batch: int = 200) -> list[str]:
    """fake-slurmd as a process: RSS before and after `requests` requests (NO_VAL answers: no such socket)."""
    munge_socket = str(munged.socket)
    script = str(Path(sys.executable).parent / "fake-slurmd")
    proc = subprocess.Popen([script, "--munge-socket", munge_socket, "--listen", "node1=127.0.0.1:0",
                             "--log-level", "error"], stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = next(line for line in proc.stderr if line.startswith("fake-slurmd:"))
        port = int(line.split("127.0.0.1:")[1].split(";")[0])
        peers = [("127.0.0.1", 1 + i % 60000) for i in range(batch)]
        warm = _frames(munge_socket, batch, peers, ("127.0.0.1", 2))
        asyncio.run(_storm(port, warm))
        before = _rss_kb(proc.pid)
        started = time.perf_counter()
        for _ in range(requests // batch):
            asyncio.run(_storm(port, _frames(munge_socket, batch, peers, ("127.0.0.1", 2))))
        elapsed = time.perf_counter() - started
        after = _rss_kb(proc.pid)
    finally:
        stop_process(proc, grace=30)
    return [f"fake-slurmd (its own process) answered {requests} requests, {batch} at a time, in {elapsed:.0f} s "
            f"({requests / elapsed:.0f}/s including munge encoding on the client side).", "",
            "| RSS before (MB) | RSS after (MB) | growth (MB) |", "|---|---|---|",
            f"| {before / 1024:.1f} | {after / 1024:.1f} | {(after - before) / 1024:.1f} |", "",
            "Goal: growth under 10 MB."]


def _rss_kb(pid: int) -> int:
    return int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0])

