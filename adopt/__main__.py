"""`python3 -I -m adopt`: the form pam.d runs the hook in (isolated: no PYTHON* variable, no user site,
no current directory on the path can change what runs as root; pam.d puts `/usr/bin/env -u
PYTHONEXECUTABLE -u __PYVENV_LAUNCHER__` in front for the two variables -I does not cover).

Under pam_exec, stderr goes to /dev/null before anything else is imported: pam_exec's `stdout` shows
stderr to the user, and a broken installation must not show them a traceback. A hook that cannot even
be imported lets root pass and refuses everyone else.
"""

import os
import sys

from adopt import quiet_stderr


def _run() -> int:
    under_pam = "PAM_TYPE" in os.environ
    if under_pam:
        quiet_stderr()
    try:
        from adopt.hook import main
    except BaseException:
        if not under_pam:
            raise
        return 0 if os.environ.get("PAM_USER") == "root" else 1
    return main()


sys.exit(_run())
