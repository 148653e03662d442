"""slurm-adopt-agent started the way systemd starts it, for tests and the benchmark: this process plays
systemd's part (slurm-adopt-agent.socket, then .service).

    with AgentProcess(tmp_path / "run" / "agent.socket") as agent:
        agent.start()          # LISTEN_FDS=1, LISTEN_PID=<its pid>, the listening socket as fd 3, the unit's Nice=
        agent.kill(); agent.start()   # crashed and restarted: the same socket, as systemd keeps it

The listening socket (0600, in a 0700 directory, as the .socket unit makes it) belongs to this object and
outlives the agent processes, as systemd's does: connections made while no agent runs wait in its backlog.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Self

from fake_slurmd.processes import stop_process
from tests.support.procs import wait_for

SERVICE = Path(__file__).resolve().parents[2] / "packaging" / "systemd" / "slurm-adopt-agent.service"

LAUNCH = ("import os, sys; fd = int(sys.argv[1]); fd == 3 or (os.dup2(fd, 3), os.close(fd)); "
          "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid())); os.execv(sys.argv[2], sys.argv[2:])")
"""What systemd does between fork and exec: the socket to fd 3, LISTEN_PID set to the very process."""


def service_nice() -> int:
    """The Nice= of slurm-adopt-agent.service (0 without one)."""
    for line in SERVICE.read_text().splitlines():
        if line.startswith("Nice="):
            return int(line.removeprefix("Nice="))
    return 0


class AgentProcess:
    def __init__(self, path: Path, python: str = sys.executable, args: tuple[str, ...] = ("--verbose",)) -> None:
        self.path = path
        self.python = python
        self.args = args
        self.log = path.parent / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        umask = os.umask(0o177)
        try:
            self.listener.bind(str(path))
        finally:
            os.umask(umask)
        self.listener.listen(128)

    def start(self, env: dict[str, str] | None = None) -> Self:
        """A new agent on the socket; returns once it says it is ready."""
        assert self.proc is None or self.proc.poll() is not None, "an agent runs already"
        start = self.log.stat().st_size if self.log.exists() else 0
        fd = self.listener.fileno()
        argv = [self.python, "-c", LAUNCH, str(fd), self.python, "-I", "-m", "adopt.agent", *self.args]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, pass_fds=(fd,), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env=env if env is not None else {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        wait_for(lambda: "ready" in self.log_text(start), 30, "slurm-adopt-agent ready", self.proc)
        os.setpriority(os.PRIO_PROCESS, self.proc.pid, service_nice())
        return self

    def log_text(self, start: int = 0) -> str:
        """What the agents on this socket wrote to stderr, from byte `start` on."""
        return self.log.read_bytes()[start:].decode(errors="replace") if self.log.exists() else ""

    def answered(self) -> int:
        """How many requests the agents on this socket answered so far."""
        return self.log_text().count(": answered exit status")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        """SIGTERM, as systemctl stop does (stop_process waits for it)."""
        if self.proc is not None and self.proc.poll() is None:
            stop_process(self.proc)

    def kill(self) -> None:
        """A crash: SIGKILL, whatever it was doing."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def pause(self) -> None:
        """A hung agent: it accepts nothing more and answers nothing (connections wait in the backlog)."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.resume()
            self.stop()
        self.listener.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
