"""Real exchanges with a chroot cluster's slurmd (tests/support/chroot_cluster.py), captured on the
namespace's lo: `scontrol callerid` as root, as the job's owner, as another user and for an unknown
connection, and pam_slurm_adopt's RPC for an ssh login from inside the job.

`record()` captures them into the JSON shape of tests/vectors/live/*.json (tests/vectors/live/README.md);
tests/test_live_frames.py checks fresh captures and the recorded files alike. Run as root,
`python -m tests.support.live_vectors [DIR]` records every release and auth mode into DIR (default
tests/vectors/live).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.chroot_cluster import RELEASES, ChrootCluster, HeldConnection
from tests.support.chroot_files import AUTHS, SSHD_PORT
from tests.support.packets import Exchange, conversation, msg_type, pcap_file, pcapng_file

OWNER, OTHER = "alice", "bob"
UNKNOWN_PORT = 1
"""A source port no socket of the namespace has."""
KEPT_TYPES = {5035, 2013}
"""REQUEST_NETWORK_CALLERID, and the REQUEST_JOB_ID slurmd sends itself to resolve the pid to a job."""
CALLERID_CASES = (("root", "root", False), ("owner", OWNER, False), ("other", OTHER, False),
                  ("unknown", "root", True))
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "live"
GOLDEN = Path(__file__).resolve().parents[1] / "vectors" / "slurm-22.05.8-callerid.json"


def _exchange_json(exchange: Exchange) -> dict[str, Any]:
    return {"client": list(exchange.client), "server": list(exchange.server),
            "request_hex": [f.hex() for f in exchange.requests], "response_hex": [f.hex() for f in exchange.replies],
            "server_closed": exchange.server_closed}


def _kept(exchanges: list[Exchange]) -> list[dict[str, Any]]:
    return [_exchange_json(e) for e in exchanges if e.requests and msg_type(e.requests[0]) in KEPT_TYPES]


def _case(name: str, who: str, what: str, result: Any, exchanges: list[Exchange]) -> dict[str, Any]:
    return {"case": name, "who": who, "what": what, "returncode": result.returncode, "stdout": result.stdout,
            "exchanges": _kept(exchanges)}


def record(cluster: ChrootCluster, held: HeldConnection) -> dict[str, Any]:
    """Every case, each under a capture of its own (so each exchange is known to be that client's)."""
    cases = []
    for name, who, unknown in CALLERID_CASES:
        src_port = UNKNOWN_PORT if unknown else held.client[1]
        args = [held.client[0], str(src_port), held.server[0], str(held.server[1])]
        with cluster.capture() as cap:
            result = cluster.run(["scontrol", "callerid", *args], user=who, check=False)
        cases.append(_case(name, who, f"scontrol callerid {' '.join(args)}", result, cap.exchanges()))
    ssh = cluster.ssh_argv(OWNER, "cat /proc/self/cgroup")
    with cluster.capture() as cap:
        result = cluster.run(["srun", f"--jobid={held.job_id}", "--overlap", "-n1", "-N1", *ssh], user=OWNER,
                             check=False)
    cases.append(_case("pam_slurm_adopt", "root", f"{OWNER} logs in over ssh (port {SSHD_PORT}) from a step of "
                       "the job; sshd's pam_slurm_adopt asks slurmd", result, cap.exchanges()))
    return _document(cluster, held, cases)


Exchanged = tuple[str, tuple[str, int], tuple[str, int], bytes, bytes]


def vector_exchanges() -> list[Exchanged]:
    """(name, client, server, bytes sent, bytes received) of every exchange of tests/vectors/live and of the
    22.05.8 golden vectors (which name no endpoints: each gets a client port of its own)."""
    found: list[Exchanged] = []
    for path in sorted(VECTORS.glob("*.json")):
        doc = json.loads(path.read_text())
        for case in doc["cases"]:
            for ex in case["exchanges"]:
                found.append((f"{path.stem}/{case['case']}", (ex["client"][0], ex["client"][1]),
                              (ex["server"][0], ex["server"][1]), b"".join(map(bytes.fromhex, ex["request_hex"])),
                              b"".join(map(bytes.fromhex, ex["response_hex"]))))
    for i, ex in enumerate(json.loads(GOLDEN.read_text())["exchanges"]):
        found.append((f"22.05.8/{i}", ("127.0.0.1", 40000 + i), ("127.0.0.1", 6818),
                      b"".join(map(bytes.fromhex, ex["request_hex"])),
                      b"".join(map(bytes.fromhex, ex["response_hex"]))))
    return found


def as_ipv6(end: tuple[str, int]) -> tuple[str, int]:
    """An IPv4 endpoint moved to IPv6 (loopback to ::1, others IPv4-mapped)."""
    return ("::1" if end[0] == "127.0.0.1" else f"::ffff:{end[0]}", end[1])


def vector_capture(linktype: int, ipv6: bool, form: str, **shape: Any) -> bytes:
    """Every vector exchange as a TCP connection of its own (`conversation(**shape)`), a second apart, in a
    capture file of `form`: "pcap", "pcap-ns" (nanosecond stamps, big-endian) or "pcapng"."""
    packets = []
    for i, (_, client, server, sent, received) in enumerate(vector_exchanges()):
        if ipv6:
            client, server = as_ipv6(client), as_ipv6(server)
        packets += conversation(client, server, sent, received, start=1_700_000_000 + i, linktype=linktype,
                                **shape)
    if form == "pcapng":
        return pcapng_file(packets, linktype)
    return pcap_file(packets, linktype, nanos=form == "pcap-ns", big_endian=form == "pcap-ns")


def callerid_capture(cluster: ChrootCluster, held: HeldConnection,
                     dumpcap: Path | None = None) -> tuple[bytes, list[Exchange]]:
    """`scontrol callerid` as root for the held connection, as a pcap file of what crossed lo, and the
    exchanges the capture reassembled. With `dumpcap`, Wireshark's dumpcap also captures lo into that
    file (pcapng, as libpcap sees it) meanwhile."""
    args = [held.client[0], str(held.client[1]), held.server[0], str(held.server[1])]
    with cluster.capture() as cap, _dumpcap(cluster, dumpcap):
        result = cluster.run(["scontrol", "callerid", *args], check=False)
    assert result.returncode == 0, result.stderr
    return pcap_file(cap.packets), cap.exchanges()


@contextlib.contextmanager
def _dumpcap(cluster: ChrootCluster, path: Path | None) -> Iterator[None]:
    if path is None:
        yield
        return
    argv = cluster.host_argv(["dumpcap", "-q", "-i", "lo", "-f", "tcp port 6818", "-w", str(path)])
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not (path.exists() and path.stat().st_size > 0):  # the section and interface blocks: capturing
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        yield
        time.sleep(0.5)  # what crossed lo reaches dumpcap's buffer
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: ip netns exec and dumpcap
        proc.communicate(timeout=20)


def _document(cluster: ChrootCluster, held: HeldConnection, cases: list[dict[str, Any]]) -> dict[str, Any]:
    versions = dict(line.split(" ", 1) for line in (cluster.chroot / ".versions").read_text().splitlines())
    doc: dict[str, Any] = {
        "source": f"Debian's Slurm {versions['slurmd']} in a chroot and network namespace, AuthType=auth/"
                  f"{cluster.auth}; frames captured on lo by tests/support/packets.py, whole TCP payloads "
                  "(each frame with its 4-byte length prefix)",
        "release": cluster.release, "versions": versions, "auth": cluster.auth,
        "cluster_name": f"peer{RELEASES[cluster.release]}", "node_name": cluster.node_name,
        "job_id": held.job_id, "job_owner": OWNER,
        "held_connection": {"client": list(held.client), "server": list(held.server)},
        "uids": {user: pwd.getpwnam(user).pw_uid for user in ("root", OWNER, OTHER)},
        "cases": cases,
    }
    if cluster.auth == "slurm":  # a throwaway key of that cluster: the tokens can be verified with it
        doc["slurm_key_hex"] = cluster.key_path.read_bytes().hex()
    return doc


def file_name(doc: dict[str, Any]) -> str:
    return f"slurm-{doc['versions']['slurmd']}-auth-{doc['auth']}.json".replace("+", "_").replace("~", "_")


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else VECTORS
    out.mkdir(parents=True, exist_ok=True)
    for release in RELEASES:
        for auth in AUTHS:
            with ChrootCluster(release, auth) as cluster, cluster.held_connection(OWNER) as held:
                doc = record(cluster, held)
            path = out / file_name(doc)
            path.write_text(json.dumps(doc, indent=1) + "\n")
            print(f"{path}: {len(doc['cases'])} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
