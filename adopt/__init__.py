"""pam_slurm_adopt's behaviour as a pam_exec hook (adopt.hook) or an in-process module (adopt.pam_module)."""

import os


def quiet_stderr() -> None:
    """Point stderr at /dev/null. pam_exec's `stdout` shows the hook's stderr to the user too: no
    warning or traceback of any thread may reach a terminal. Here, with nothing but os imported, so
    that `python3 -I -m adopt` can do it before importing anything that might fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
