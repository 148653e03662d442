"""A private munged: its own key and socket in a temporary directory, run as user munge."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from tests.support.procs import chown_tree, stop, wait_for

MUNGED = "/usr/sbin/munged"
MUNGEKEY = "/usr/sbin/mungekey"


class Munged:
    """Context manager: `with Munged() as m: m.socket`."""

    def __init__(self, base: Path | None = None, user: str = "munge") -> None:
        self.user = user
        self._own_base = base is None
        # /tmp is sticky, and munged refuses group/world-writable parents without it.
        self.base = Path(base or tempfile.mkdtemp(prefix="munged-"))
        self.socket = self.base / "munge.socket"
        self.key = self.base / "munge.key"
        self.log = self.base / "munged.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Munged:
        self.base.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o755)
        subprocess.run([MUNGEKEY, "--create", f"--keyfile={self.key}", "--bits=1024"], check=True)
        chown_tree(self.base, self.user)
        os.chmod(self.key, 0o600)
        # In the foreground munged logs to stderr.
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [MUNGED, "--foreground", f"--socket={self.socket}", f"--key-file={self.key}",
                 f"--pid-file={self.base / 'munged.pid'}", f"--seed-file={self.base / 'munged.seed'}",
                 "--num-threads=4"],
                user=self.user, group=self.user, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=log,
            )
        wait_for(self.socket.exists, 10, f"munged on {self.socket}", self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def cleanup(self) -> None:
        self.stop()
        if self._own_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> Munged:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.cleanup()
