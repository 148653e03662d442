"""`python3 -I -m adopt`: the form pam.d runs the hook in (isolated: no PYTHON* variable, no user site,
no current directory on the path can change what runs as root; pam.d puts `/usr/bin/env -u
PYTHONEXECUTABLE -u __PYVENV_LAUNCHER__` in front for the two variables -I does not cover).

Under pam_exec, stderr goes to /dev/null before anything else is imported: pam_exec's `stdout` shows
stderr to the user, and a broken installation must not show them a traceback. Then slurm-adopt-agent is
asked (adopt.hookio); without its answer the hook decides itself (adopt.hook). A hook that cannot even be
imported lets root pass and refuses everyone else.
"""

import sys
import time

from adopt import pam_item, quiet_stderr


def run(started: float | None = None) -> int:
    """`started`: time.monotonic() when the interpreter started running the hook (default now)."""
    started = time.monotonic() if started is None else started
    under_pam = pam_item("PAM_TYPE") is not None
    if under_pam:
        quiet_stderr()
        try:
            from adopt.hookio import agent_status

            status = agent_status(sys.argv[1:], started)
        except BaseException:  # the hook's own way is the fallback for anything that goes wrong here
            status = None
        if status is not None:
            return status
    try:
        if sys.flags.no_site:  # adopt/thin.py: what -S left out, the path `python3 -I -m adopt` would have
            import site

            site.main()
        from adopt.hook import main
    except BaseException:
        if not under_pam:
            raise
        return 0 if pam_item("PAM_USER") == "root" else 1
    return main(started=started)


if __name__ == "__main__":
    sys.exit(run())
