"""Demo of the callerid lookup on a real single-node Slurm 22.05 cluster on loopback (run as root).

It starts a private munged and a Slurm cluster (slurmctld + slurmd, all state in a temp dir), submits a
job as the user alice whose batch script opens a TCP connection to a listener here, then asks which job
holds that connection, with `slurm-callerid` and with Slurm's own `scontrol callerid`, as root, as alice
and as bob (who must not be told), and stops everything it started.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.slurm_cluster import SlurmCluster  # noqa: E402


def show(cluster: SlurmCluster, argv: list[str], user: str | None) -> None:
    proc = cluster.run(argv, user=user, check=False)
    who = user or "root"
    print(f"  {who}$ {' '.join(argv)}")
    for line in (proc.stdout + proc.stderr).strip().splitlines():
        print(f"      {line}")
    print(f"      (exit {proc.returncode})")


def main() -> int:
    if os.geteuid() != 0:
        print("the demo starts munged and Slurm daemons: run it as root", file=sys.stderr)
        return 1
    cli = str(Path(sys.executable).parent / "slurm-callerid")
    print("Starting munged and a Slurm 22.05 cluster on 127.0.0.1 ...")
    with SlurmCluster() as cluster, cluster.connected_job("alice") as job:
        (host, port), client = job.server, job.client
        print(f"Job {job.job_id} of alice connected from {client[0]}:{client[1]} to {host}:{port}.\n")
        args = [client[0], str(client[1]), host, str(port)]
        for user in (None, "alice", "bob"):
            show(cluster, [cli, *args], user)
            show(cluster, ["scontrol", "callerid", *args], user)
            print()
        result = cluster.run([cli, "--json", *args], check=False)
        print("slurm-callerid --json (as root):")
        print(json.dumps(json.loads(result.stdout), indent=2))
    print("\nStopped everything the demo started.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
