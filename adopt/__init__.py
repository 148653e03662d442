"""pam_slurm_adopt's behaviour as a pam_exec hook (adopt.hook) or an in-process module (adopt.pam_module)."""

import posix  # not os: the quick hook's path stays clear of os and what it imports (a millisecond a login)


def quiet_stderr() -> None:
    """Point stderr at /dev/null. pam_exec's `stdout` shows the hook's stderr to the user too: no
    warning or traceback of any thread may reach a terminal. Here, with nothing but posix imported, so
    that `python3 -I -m adopt` can do it before importing anything that might fail."""
    devnull = posix.open("/dev/null", posix.O_WRONLY)
    posix.dup2(devnull, 2)
    posix.close(devnull)


def pam_item(name: str) -> str | None:
    """A variable of pam_exec's environment, decoded as os.environ decodes it."""
    value = posix.environ.get(name.encode())
    return None if value is None else value.decode("utf-8", "surrogateescape")
