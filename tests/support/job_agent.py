"""Runs as a Slurm job's batch script: starts the commands a test sends, as processes of that job.

    python3 job_agent.py SOCKET

Listens on the unix socket SOCKET (created under a temporary name, then renamed: once it exists it accepts).
Each connection carries one JSON request {"argv": [...], "timeout": seconds}, ended by the client shutting
down its side, and gets back {"rc": N, "stdout": "...", "stderr": "..."} (rc -9 when the command ran past its
timeout, 127 when it cannot be started). The command runs in the job's cgroup, network and UTS namespaces, as
the job's user: what a user's process inside a job would do (ssh to another node of the job), even while
slurmd is down, which srun could not. Standard library only: the job runs the system's python3.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys


def read_all(conn: socket.socket) -> bytes:
    return b"".join(iter(lambda: conn.recv(65536), b""))


def serve(path: str) -> None:
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path + ".new")
        server.listen()
        os.rename(path + ".new", path)
        while True:
            conn, _ = server.accept()
            with conn:
                request = json.loads(read_all(conn))
                try:
                    proc = subprocess.run(request["argv"], stdin=subprocess.DEVNULL, capture_output=True,
                                          timeout=request["timeout"], check=False)
                    reply = {"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}
                except subprocess.TimeoutExpired as e:
                    reply = {"rc": -9, "stdout": e.stdout or b"", "stderr": e.stderr or b""}
                except OSError as e:  # no such program: the agent stays up for the next request
                    reply = {"rc": 127, "stdout": b"", "stderr": str(e)}
                conn.sendall(json.dumps({k: v.decode(errors="replace") if isinstance(v, bytes) else v
                                         for k, v in reply.items()}).encode())


if __name__ == "__main__":
    serve(sys.argv[1])
