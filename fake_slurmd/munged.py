"""A private munged: its own key and socket in a temporary directory, run as user munge (needs root)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from fake_slurmd.processes import stop_process

MUNGED = "/usr/sbin/munged"
MUNGEKEY = "/usr/sbin/mungekey"


class Munged:
    """Context manager: `with Munged() as m: m.socket`. Stops only the munged it started, by pid."""

    def __init__(self, base: Path | None = None, user: str = "munge") -> None:
        self.user = user
        self._own_base = base is None
        # /tmp is sticky, and munged refuses group/world-writable parents without it.
        self.base = Path(base or tempfile.mkdtemp(prefix="munged-"))
        self.socket = self.base / "munge.socket"
        self.key = self.base / "munge.key"
        self.log = self.base / "munged.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> Munged:
        self.base.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o755)
        subprocess.run([MUNGEKEY, "--create", f"--keyfile={self.key}", "--bits=1024"], check=True)
        entry = pwd.getpwnam(self.user)
        for path in (self.base, self.key):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        os.chmod(self.key, 0o600)
        with open(self.log, "ab") as log:  # in the foreground munged logs to stderr
            self.proc = subprocess.Popen(
                [MUNGED, "--foreground", f"--socket={self.socket}", f"--key-file={self.key}",
                 f"--pid-file={self.base / 'munged.pid'}", f"--seed-file={self.base / 'munged.seed'}",
                 "--num-threads=4"],
                user=self.user, group=self.user, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + timeout
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"munged did not start: {self.log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        if self._own_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> Munged:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.cleanup()
