"""slurm-adopt's quickest pam_exec form: an interpreter without the site module, running this file.

    account required pam_exec.so stdout quiet /usr/bin/env -u PYTHONEXECUTABLE -u __PYVENV_LAUNCHER__ \
        <ENV>/bin/python3 -I -S <ENV>/lib/python3.X/site-packages/adopt/thin.py [OPTIONS...]

`-S` saves the site module's start-up (the venv's site-packages and .pth files) when slurm-adopt-agent
answers; `-I` keeps the script's directory off the path. So this file puts the directory its package
lives in on the path itself (name the file itself in pam.d, not a symlink to it), then runs what
`python3 -I -m adopt` runs (adopt.__main__), which loads the site module only to decide without the
agent. posix, not os: os and what it imports would cost each login a millisecond.
"""

import posix
import sys
import time


def _run() -> int:
    started = time.monotonic()
    try:
        sys.path.insert(0, __file__.rpartition("/")[0].rpartition("/")[0] or ".")
        from adopt.__main__ import run
    except BaseException:  # no traceback for the user to see (pam_exec shows stderr); root still passes
        if b"PAM_TYPE" not in posix.environ:
            raise
        return 0 if posix.environ.get(b"PAM_USER") == b"root" else 1
    return run(started)


if __name__ == "__main__":
    sys.exit(_run())
